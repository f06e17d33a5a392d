/*
 * VM-wide KVM state for snapshots (see state.h): the in-kernel 8259 pair and IOAPIC
 * (KVM_GET/SET_IRQCHIP, raw struct kvm_irqchip per chip), the PIT (struct kvm_pit_state2) and
 * the KVM clock (struct kvm_clock_data). Payload: blob PIC master | blob PIC slave | blob
 * IOAPIC | blob PIT | blob clock.
 *
 * The clock is loaded separately and last: setting it makes the guest's kvmclock continue from
 * the snapshot's time instead of jumping by however long the snapshot sat on disk.
 */
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "snapshot/state.h"
#include "vm.h"

static const struct {
	uint32_t id;
	const char *name;
} chips[] = {
	{ KVM_IRQCHIP_PIC_MASTER, "PIC master" },
	{ KVM_IRQCHIP_PIC_SLAVE, "PIC slave" },
	{ KVM_IRQCHIP_IOAPIC, "IOAPIC" },
};

int vm_state_save(struct vm *vm, struct snap_buf *out, struct cv_error *err)
{
	for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
		struct kvm_irqchip c;
		memset(&c, 0, sizeof(c));
		c.chip_id = chips[i].id;
		if (ioctl(vm->fd, KVM_GET_IRQCHIP, &c) < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_IRQCHIP (%s)", chips[i].name);
		snap_put_blob(out, &c, sizeof(c));
	}
	struct kvm_pit_state2 pit;
	memset(&pit, 0, sizeof(pit));
	if (ioctl(vm->fd, KVM_GET_PIT2, &pit) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_PIT2");
	snap_put_blob(out, &pit, sizeof(pit));
	struct kvm_clock_data clock;
	memset(&clock, 0, sizeof(clock));
	if (ioctl(vm->fd, KVM_GET_CLOCK, &clock) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_CLOCK");
	snap_put_blob(out, &clock, sizeof(clock));
	return 0;
}

int vm_state_load(struct vm *vm, struct snap_cur *in, struct cv_error *err)
{
	for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
		struct kvm_irqchip c;
		if (snap_get_struct(in, &c, sizeof(c), chips[i].name, err) < 0)
			return -1;
		if (c.chip_id != chips[i].id)
			return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s state names chip %u",
				       chips[i].name, c.chip_id);
		if (ioctl(vm->fd, KVM_SET_IRQCHIP, &c) < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_SET_IRQCHIP (%s)", chips[i].name);
	}
	struct kvm_pit_state2 pit;
	if (snap_get_struct(in, &pit, sizeof(pit), "PIT", err) < 0)
		return -1;
	if (ioctl(vm->fd, KVM_SET_PIT2, &pit) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_SET_PIT2");
	return 0;
}

int vm_clock_load(struct vm *vm, struct snap_cur *in, struct cv_error *err)
{
	struct kvm_clock_data clock;
	if (snap_get_struct(in, &clock, sizeof(clock), "KVM clock", err) < 0)
		return -1;
	if (!snap_cur_done(in))
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: VM state section is malformed");
	struct kvm_clock_data set;
	memset(&set, 0, sizeof(set));
	set.clock = clock.clock;      /* flags 0: just the guest's nanoseconds */
	if (ioctl(vm->fd, KVM_SET_CLOCK, &set) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_SET_CLOCK");
	return 0;
}
