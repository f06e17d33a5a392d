/*
 * Idle VM holder (see kvm_hold.h). Every fd is close-on-exec, so commands the agent runs never
 * inherit it; the listening process keeps it until it exits.
 */
#include "kvm_hold.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

int kvm_hold_open(struct cv_error *err)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return cv_fail_errno(err, CV_EXIT_UNAVAILABLE, "hold a KVM VM: open /dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	close(kvm);
	if (vm < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "hold a KVM VM: KVM_CREATE_VM");
	/* The in-kernel LAPIC of a never-started vCPU stays software-disabled: that key stays up. */
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0 || ioctl(vm, KVM_CREATE_VCPU, 0UL) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "hold a KVM VM: create irqchip and vCPU");
		close(vm);
		return -1;
	}
	return 0;
}
