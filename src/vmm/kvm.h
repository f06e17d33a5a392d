/*
 * The host side of KVM that does not depend on a VM: /dev/kvm, its API version, the capabilities
 * cvisor needs, the CPUID features and MSRs it supports. Read once per process.
 */
#ifndef CVISOR_VMM_KVM_H
#define CVISOR_VMM_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct kvm_system {
	int fd;
	int run_mmap_size;
	unsigned max_vcpus;
	bool immediate_exit;
	bool tsc_deadline;
	struct kvm_cpuid_entry2 *cpuid;    /* KVM_GET_SUPPORTED_CPUID */
	unsigned n_cpuid;
	uint32_t *msrs;                    /* KVM_GET_MSR_INDEX_LIST */
	unsigned n_msrs;
};

/* Opens /dev/kvm and checks every capability cvisor relies on; the error names the missing one. */
int kvm_system_open(struct kvm_system *k, struct cv_error *err);
void kvm_system_close(struct kvm_system *k);

bool kvm_system_has_msr(const struct kvm_system *k, uint32_t index);

#endif
