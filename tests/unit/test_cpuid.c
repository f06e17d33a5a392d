/*
 * CPUID filtering against a synthetic "supported" table: topology in every leaf that encodes it,
 * hypervisor and TSC leaves, and the features we hide (nested virtualization, PMU, power mgmt).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "cpuid.h"

static struct kvm_cpuid_entry2 entry(uint32_t fn, uint32_t idx, bool indexed, uint32_t a,
				     uint32_t b, uint32_t c, uint32_t d)
{
	struct kvm_cpuid_entry2 e;
	memset(&e, 0, sizeof(e));
	e.function = fn;
	e.index = idx;
	e.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
	e.eax = a;
	e.ebx = b;
	e.ecx = c;
	e.edx = d;
	return e;
}

static struct kvm_cpuid_entry2 supported[16];
static unsigned n_supported;

static void setup(void)
{
	unsigned n = 0;
	supported[n++] = entry(0, 0, false, 0xd, 0x68747541, 0x444d4163, 0x69746e65);
	supported[n++] = entry(1, 0, false, 0x800f12, 0x00000800,
			       CPUID_1_ECX_VMX | CPUID_1_ECX_PDCM | (1u << 0), 0x178bfbff);
	supported[n++] = entry(4, 0, true, (1u << 5) | 0x1, 0, 0, 0);        /* L1 */
	supported[n++] = entry(4, 3, true, (3u << 5) | 0x3, 0, 0, 0);        /* L3 */
	supported[n++] = entry(6, 0, false, 0x77, 0x2, 0x9, 0);
	supported[n++] = entry(0xa, 0, false, 0x07300403, 0, 0, 0x603);
	supported[n++] = entry(0xb, 0, true, 1, 2, 0x100, 7);
	supported[n++] = entry(0xb, 1, true, 4, 16, 0x201, 7);
	supported[n++] = entry(0x40000000, 0, false, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d);
	supported[n++] = entry(0x40000001, 0, false, 0x01007afb, 0, 0, 0);
	supported[n++] = entry(0x80000001, 0, false, 0, 0, 0x4 | 0x1, 0);
	supported[n++] = entry(0x80000008, 0, false, 0x3030, 0, 0x700f, 0);
	supported[n++] = entry(0x8000000a, 0, false, 1, 0x8000, 0, 0xff);
	n_supported = n;
}

TestSuite(cpuid, .init = setup);

static const struct kvm_cpuid_entry2 *build(unsigned apic, unsigned n, uint32_t tsc_khz,
					    struct kvm_cpuid_entry2 *out, unsigned *n_out)
{
	struct cpuid_params p = { .apic_id = apic, .n_cpus = n, .tsc_khz = tsc_khz,
				  .tsc_deadline = true };
	struct cv_error err = { 0 };
	cr_assert_eq(cpuid_build(supported, n_supported, &p, out, 32, n_out, &err), 0, "%s",
		     err.msg);
	return out;
}

Test(cpuid, topology_for_each_vcpu)
{
	struct kvm_cpuid_entry2 out[32];
	unsigned n;
	for (unsigned apic = 0; apic < 6; apic++) {
		build(apic, 6, 0, out, &n);
		const struct kvm_cpuid_entry2 *l1 = cpuid_find(out, n, 1, 0);
		cr_assert_eq(l1->ebx >> 24, apic, "initial APIC ID");
		cr_assert_eq((l1->ebx >> 16) & 0xff, 6, "logical processor count");
		cr_assert(l1->edx & CPUID_1_EDX_HTT);
		const struct kvm_cpuid_entry2 *smt = cpuid_find(out, n, 0xb, 0);
		const struct kvm_cpuid_entry2 *core = cpuid_find(out, n, 0xb, 1);
		cr_assert_eq(smt->edx, apic);
		cr_assert_eq(smt->ebx, 1);
		cr_assert_eq(core->ebx, 6);
		cr_assert_eq(core->eax, 3, "x2APIC shift covers 6 IDs");
		cr_assert_eq((core->ecx >> 8) & 0xff, 2, "level type core");
		cr_assert_eq(cpuid_find(out, n, 4, 0)->eax >> 26, 5, "cores per package - 1");
		cr_assert_eq((cpuid_find(out, n, 4, 3)->eax >> 14) & 0xfff, 5, "L3 shared by all");
		cr_assert_eq((cpuid_find(out, n, 4, 0)->eax >> 14) & 0xfff, 0, "L1 private");
		cr_assert_eq(cpuid_find(out, n, 0x80000008, 0)->ecx & 0xff, 5);
	}
	build(0, 1, 0, out, &n);
	cr_assert_not(cpuid_find(out, n, 1, 0)->edx & CPUID_1_EDX_HTT, "single CPU: no HTT");
}

Test(cpuid, hides_nested_pmu_and_power_features)
{
	struct kvm_cpuid_entry2 out[32];
	unsigned n;
	build(0, 2, 0, out, &n);
	const struct kvm_cpuid_entry2 *l1 = cpuid_find(out, n, 1, 0);
	cr_assert(l1->ecx & CPUID_1_ECX_HYPERVISOR);
	cr_assert_not(l1->ecx & CPUID_1_ECX_VMX);
	cr_assert_not(l1->ecx & CPUID_1_ECX_PDCM);
	cr_assert(l1->ecx & 1, "unrelated features kept (SSE3)");
	cr_assert(l1->ecx & CPUID_1_ECX_TSC_DEADLINE);
	cr_assert_eq(cpuid_find(out, n, 0xa, 0)->eax, 0, "no PMU");
	cr_assert_eq(cpuid_find(out, n, 6, 0)->eax, CPUID_6_EAX_ARAT);
	cr_assert_eq(cpuid_find(out, n, 6, 0)->ecx, 0);
	cr_assert_not(cpuid_find(out, n, 0x80000001, 0)->ecx & CPUID_80000001_ECX_SVM);
	cr_assert(cpuid_find(out, n, 0x80000001, 0)->ecx & 1, "LAHF kept");
	cr_assert_eq(cpuid_find(out, n, 0x8000000a, 0)->eax, 0);
}

Test(cpuid, tsc_frequency_leaf)
{
	struct kvm_cpuid_entry2 out[32];
	unsigned n;
	build(0, 1, 2596148, out, &n);
	cr_assert_eq(n, n_supported + 1);
	cr_assert_eq(cpuid_find(out, n, 0x40000000, 0)->eax, 0x40000010);
	const struct kvm_cpuid_entry2 *t = cpuid_find(out, n, 0x40000010, 0);
	cr_assert_not_null(t);
	cr_assert_eq(t->eax, 2596148);
	cr_assert_eq(cpuid_find(out, n, 0x40000001, 0)->eax, 0x01007afb, "kvmclock features kept");
	build(0, 1, 0, out, &n);
	cr_assert_eq(n, n_supported, "no frequency known: no leaf");
	cr_assert_eq(cpuid_find(out, n, 0x40000000, 0)->eax, 0x40000001);
}

Test(cpuid, rejects_bad_parameters)
{
	struct kvm_cpuid_entry2 out[32];
	unsigned n;
	struct cv_error err = { 0 };
	struct cpuid_params p = { .apic_id = 3, .n_cpus = 2 };
	cr_assert_eq(cpuid_build(supported, n_supported, &p, out, 32, &n, &err), -1);
	p.apic_id = 0;
	cr_assert_eq(cpuid_build(supported, n_supported, &p, out, n_supported, &n, &err), -1,
		     "output too small");
}
