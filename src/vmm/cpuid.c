/*
 * CPUID filtering (see cpuid.h). Topology is rewritten in every leaf that encodes it, Intel's
 * (1, 4, 0xB, 0x1F) and AMD's (0x80000008, 0x8000001E), so guests on either vendor agree on the
 * number of CPUs the ACPI/MP tables describe.
 */
#include "cpuid.h"

#include <string.h>

const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid_entry2 *t, unsigned n,
					  uint32_t function, uint32_t index)
{
	for (unsigned i = 0; i < n; i++)
		if (t[i].function == function &&
		    (!(t[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || t[i].index == index))
			return &t[i];
	return NULL;
}

/* Bits needed to number n things (x2APIC ID shift width). */
static uint32_t id_bits(unsigned n)
{
	uint32_t b = 0;
	while ((1u << b) < n)
		b++;
	return b;
}

/* Topology leaf 0xB / 0x1F, subleaf `index`: level 0 is SMT (1 thread), level 1 the package. */
static void topology_leaf(struct kvm_cpuid_entry2 *e, const struct cpuid_params *p)
{
	uint32_t index = e->index;
	e->edx = p->apic_id;
	if (index == 0) {
		e->eax = 0;
		e->ebx = 1;
		e->ecx = (1u << 8) | index;
	} else if (index == 1) {
		e->eax = id_bits(p->n_cpus);
		e->ebx = p->n_cpus;
		e->ecx = (2u << 8) | index;
	} else {
		e->eax = e->ebx = 0;
		e->ecx = index;
	}
}

static void filter_entry(struct kvm_cpuid_entry2 *e, const struct cpuid_params *p)
{
	uint32_t n = p->n_cpus;
	switch (e->function) {
	case 0x1:
		e->ebx = (p->apic_id << 24) | ((n > 255 ? 255 : n) << 16) | (8u << 8) |
			 (e->ebx & 0xff);
		e->ecx |= CPUID_1_ECX_HYPERVISOR;
		e->ecx &= ~(CPUID_1_ECX_VMX | CPUID_1_ECX_PDCM);
		if (p->tsc_deadline)
			e->ecx |= CPUID_1_ECX_TSC_DEADLINE;
		else
			e->ecx &= ~CPUID_1_ECX_TSC_DEADLINE;
		if (n > 1)
			e->edx |= CPUID_1_EDX_HTT;
		else
			e->edx &= ~CPUID_1_EDX_HTT;
		break;
	case 0x4: {
		uint32_t level = (e->eax >> 5) & 7;
		uint32_t sharing = level >= 3 ? n - 1 : 0;
		uint32_t cores = (n - 1) > 63 ? 63 : n - 1;
		e->eax = (e->eax & 0x3fff) | ((sharing & 0xfff) << 14) | (cores << 26);
		break;
	}
	case 0x6:     /* no thermal or power management; keep "APIC timer always runs" */
		e->eax &= CPUID_6_EAX_ARAT;
		e->ebx = e->ecx = e->edx = 0;
		break;
	case 0xa:     /* no PMU: perf counters would not survive migration */
		e->eax = e->ebx = e->ecx = e->edx = 0;
		break;
	case 0xb:
	case 0x1f:
		topology_leaf(e, p);
		break;
	case 0x80000001:
		e->ecx &= ~CPUID_80000001_ECX_SVM;
		break;
	case 0x80000008:
		e->ecx = (n - 1) & 0xff;   /* NC; ApicIdSize 0 means "derive from NC" */
		break;
	case 0x8000000a:   /* SVM features: no nested virtualization */
		e->eax = e->ebx = e->ecx = e->edx = 0;
		break;
	case 0x8000001e:
		e->eax = p->apic_id;
		e->ebx = p->apic_id & 0xff;     /* core ID; one thread per core */
		e->ecx = 0;                     /* node 0, one node */
		break;
	case CPUID_LEAF_HYPERVISOR_BASE:
		if (p->tsc_khz && e->eax < CPUID_LEAF_HYPERVISOR_TSC)
			e->eax = CPUID_LEAF_HYPERVISOR_TSC;
		break;
	}
}

int cpuid_build(const struct kvm_cpuid_entry2 *in, unsigned n_in, const struct cpuid_params *p,
		struct kvm_cpuid_entry2 *out, unsigned cap, unsigned *n_out, struct cv_error *err)
{
	if (p->n_cpus == 0 || p->apic_id >= p->n_cpus)
		return cv_fail(err, CV_EXIT_SOFTWARE, "cpuid: bad topology %u/%u", p->apic_id,
			       p->n_cpus);
	if (n_in + CPUID_EXTRA_ENTRIES > cap)
		return cv_fail(err, CV_EXIT_SOFTWARE, "cpuid: output table too small");
	unsigned n = 0;
	for (unsigned i = 0; i < n_in; i++) {
		out[n] = in[i];
		filter_entry(&out[n], p);
		n++;
	}
	/* The TSC frequency leaf (VMware/KVM convention): kHz of the TSC and of the APIC bus. */
	if (p->tsc_khz && !cpuid_find(out, n, CPUID_LEAF_HYPERVISOR_TSC, 0) &&
	    cpuid_find(out, n, CPUID_LEAF_HYPERVISOR_BASE, 0)) {
		memset(&out[n], 0, sizeof(out[n]));
		out[n].function = CPUID_LEAF_HYPERVISOR_TSC;
		out[n].eax = p->tsc_khz;
		out[n].ebx = 1000000;   /* KVM's LAPIC timer ticks at 1 GHz */
		n++;
	}
	*n_out = n;
	return 0;
}
