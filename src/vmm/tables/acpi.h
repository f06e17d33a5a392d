/*
 * ACPI tables for the guest: RSDP, XSDT, FADT with FACS (PM1a event/control blocks and a reset
 * register, so the guest can power off and reboot), DSDT (the _S5 sleep package and, unless the
 * VM's virtio devices are on virtio-mmio, the PCI root bridge) and MADT (one local APIC per vCPU,
 * the IOAPIC, the SCI override, overrides making the virtio-mmio lines level-triggered, LINT1 as
 * NMI). Built into a buffer that the VMM copies to LAYOUT_ACPI_TABLES; the RSDP comes first so
 * its address is the buffer's address.
 *
 * The FADT is deliberately not "hardware-reduced": on x86 that mode makes Linux drop the 8259 and
 * every ISA interrupt mapping, and the serial console (IRQ 4) and command-line virtio-mmio
 * devices need those.
 */
#ifndef CVISOR_VMM_TABLES_ACPI_H
#define CVISOR_VMM_TABLES_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct acpi_params {
	unsigned n_cpus;        /* local APIC IDs 0 .. n_cpus-1 */
	uint8_t ioapic_id;
	uint64_t base;          /* guest physical address the buffer will be copied to */
	uint16_t level_irqs;    /* bit n: ISA IRQ n is level-triggered, active high (virtio-mmio);
				   each gets an interrupt source override */
	bool no_pci_root;       /* leave the PCI root bridge out of the DSDT (virtio-mmio VMs) */
};

/* Builds the tables into buf (cap bytes); *len receives the bytes used. */
int acpi_build(const struct acpi_params *p, uint8_t *buf, size_t cap, size_t *len,
	       struct cv_error *err);

/* Size of the standard ACPI table header, and the offsets tests and tools read. */
#define ACPI_HEADER_SIZE 36
#define ACPI_FADT_SIZE 276
#define ACPI_FADT_FIRMWARE_CTRL 36
#define ACPI_FADT_DSDT 40
#define ACPI_FADT_SCI_INT 46
#define ACPI_FADT_SMI_CMD 48
#define ACPI_FADT_PM1A_EVT_BLK 56
#define ACPI_FADT_PM1A_CNT_BLK 64
#define ACPI_FADT_PM1_EVT_LEN 88
#define ACPI_FADT_PM1_CNT_LEN 89
#define ACPI_FADT_IAPC_BOOT_ARCH 109
#define ACPI_FADT_FLAGS 112
#define ACPI_FADT_RESET_REG 116
#define ACPI_FADT_RESET_VALUE 128
#define ACPI_FADT_X_DSDT 140
#define ACPI_FADT_X_PM1A_EVT_BLK 148
#define ACPI_FADT_X_PM1A_CNT_BLK 172
#define ACPI_FADT_HW_REDUCED (1u << 20)
#define ACPI_FADT_RESET_REG_SUP (1u << 10)
#define ACPI_FACS_SIZE 64

#endif
