/*
 * /dev/kvm probing (see kvm.h).
 */
#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static const struct {
	int cap;
	const char *name;
} required_caps[] = {
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
	{ KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING" },
};

static int get_supported_cpuid(struct kvm_system *k, struct cv_error *err)
{
	for (unsigned nent = 64; nent <= 4096; nent *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
		if (!c)
			return cv_fail(err, CV_EXIT_OSERR, "out of memory");
		c->nent = nent;
		if (ioctl(k->fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			k->cpuid = malloc(c->nent * sizeof(c->entries[0]));
			if (!k->cpuid) {
				free(c);
				return cv_fail(err, CV_EXIT_OSERR, "out of memory");
			}
			memcpy(k->cpuid, c->entries, c->nent * sizeof(c->entries[0]));
			k->n_cpuid = c->nent;
			free(c);
			return 0;
		}
		int e = errno;
		free(c);
		if (e != E2BIG) {
			errno = e;
			return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_SUPPORTED_CPUID");
		}
	}
	return cv_fail(err, CV_EXIT_OSERR, "KVM_GET_SUPPORTED_CPUID: table too large");
}

static int get_msr_list(struct kvm_system *k, struct cv_error *err)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };
	if (ioctl(k->fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_MSR_INDEX_LIST");
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
	if (!l)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	l->nmsrs = probe.nmsrs;
	if (ioctl(k->fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		free(l);
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_MSR_INDEX_LIST");
	}
	k->msrs = malloc((l->nmsrs ? l->nmsrs : 1) * sizeof(uint32_t));
	if (!k->msrs) {
		free(l);
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	}
	memcpy(k->msrs, l->indices, l->nmsrs * sizeof(uint32_t));
	k->n_msrs = l->nmsrs;
	free(l);
	return 0;
}

int kvm_system_open(struct kvm_system *k, struct cv_error *err)
{
	memset(k, 0, sizeof(*k));
	k->fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->fd < 0)
		return cv_fail_errno(err, CV_EXIT_UNAVAILABLE, "open /dev/kvm");
	int version = ioctl(k->fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		cv_fail(err, CV_EXIT_UNAVAILABLE, "/dev/kvm speaks API version %d, need %d", version,
			KVM_API_VERSION);
		goto fail;
	}
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++) {
		if (ioctl(k->fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			cv_fail(err, CV_EXIT_UNAVAILABLE, "/dev/kvm lacks %s", required_caps[i].name);
			goto fail;
		}
	}
	k->run_mmap_size = ioctl(k->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_mmap_size < (int)sizeof(struct kvm_run)) {
		cv_fail_errno(err, CV_EXIT_UNAVAILABLE, "KVM_GET_VCPU_MMAP_SIZE");
		goto fail;
	}
	int max = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (max <= 0)
		max = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	k->max_vcpus = max > 0 ? (unsigned)max : 1;
	k->immediate_exit = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) > 0;
	k->tsc_deadline = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	if (get_supported_cpuid(k, err) < 0 || get_msr_list(k, err) < 0)
		goto fail;
	return 0;
fail:
	kvm_system_close(k);
	return -1;
}

void kvm_system_close(struct kvm_system *k)
{
	if (k->fd >= 0)
		close(k->fd);
	free(k->cpuid);
	free(k->msrs);
	memset(k, 0, sizeof(*k));
	k->fd = -1;
}

bool kvm_system_has_msr(const struct kvm_system *k, uint32_t index)
{
	for (unsigned i = 0; i < k->n_msrs; i++)
		if (k->msrs[i] == index)
			return true;
	return false;
}
