/*
 * Intel MultiProcessor Specification 1.4 table: how guests without ACPI (acpi=off, or kernels
 * built without it) learn about the vCPUs, the IOAPIC and ISA interrupt routing. The floating
 * pointer lives in the BIOS area the kernel scans; the configuration table follows it.
 */
#ifndef CVISOR_VMM_TABLES_MPTABLE_H
#define CVISOR_VMM_TABLES_MPTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct mptable_params {
	unsigned n_cpus;
	uint8_t ioapic_id;
	uint32_t cpu_signature;   /* CPUID.1:EAX */
	uint32_t cpu_features;    /* CPUID.1:EDX */
	uint64_t base;            /* guest physical address of the buffer */
	uint16_t level_irqs;      /* bit n: ISA IRQ n is level-triggered, active high (virtio-mmio) */
};

#define MPTABLE_ISA_IRQS 16

int mptable_build(const struct mptable_params *p, uint8_t *buf, size_t cap, size_t *len,
		  struct cv_error *err);

#endif
