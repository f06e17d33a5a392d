/*
 * The CPUID table each vCPU sees: KVM's supported features, filtered to what a migratable,
 * non-nested guest should rely on, and completed with what only the VMM knows (APIC ID and
 * topology, the hypervisor bit, the TSC frequency leaf). A pure function, so it is unit-tested
 * against synthetic tables.
 */
#ifndef CVISOR_VMM_CPUID_H
#define CVISOR_VMM_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct cpuid_params {
	uint32_t apic_id;        /* this vCPU */
	unsigned n_cpus;         /* all vCPUs: one package, one core each, one thread per core */
	uint32_t tsc_khz;        /* 0 if unknown: no 0x40000010 leaf */
	bool tsc_deadline;       /* in-kernel LAPIC supports TSC-deadline mode */
};

/* Extra entries cpuid_build may add beyond its input. */
#define CPUID_EXTRA_ENTRIES 8

#define CPUID_LEAF_HYPERVISOR_BASE 0x40000000u
#define CPUID_LEAF_HYPERVISOR_TSC  0x40000010u
#define CPUID_1_ECX_VMX        (1u << 5)
#define CPUID_1_ECX_PDCM       (1u << 15)
#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)
#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_EDX_HTT        (1u << 28)
#define CPUID_6_EAX_ARAT       (1u << 2)
#define CPUID_80000001_ECX_SVM (1u << 2)

int cpuid_build(const struct kvm_cpuid_entry2 *in, unsigned n_in, const struct cpuid_params *p,
		struct kvm_cpuid_entry2 *out, unsigned cap, unsigned *n_out, struct cv_error *err);

/* The entry for (function, index) in a table, or NULL. */
const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid_entry2 *t, unsigned n,
					  uint32_t function, uint32_t index);

#endif
