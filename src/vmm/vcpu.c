/*
 * vCPU creation and run loop (see vcpu.h). The loop is deliberately small: every exit is either
 * routed to a bus or ends the VM with a message naming the vCPU and where it was.
 */
#include "vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cpuid.h"
#include "layout.h"
#include "util.h"
#include "vm.h"

#define SIG_VCPU_KICK (SIGRTMIN)

#define MSR_IA32_SYSENTER_CS   0x174
#define MSR_IA32_SYSENTER_ESP  0x175
#define MSR_IA32_SYSENTER_EIP  0x176
#define MSR_IA32_MISC_ENABLE   0x1a0
#define MSR_MTRR_DEF_TYPE      0x2ff
#define MSR_STAR               0xc0000081
#define MSR_LSTAR              0xc0000082
#define MSR_CSTAR              0xc0000083
#define MSR_SYSCALL_MASK       0xc0000084
#define MSR_KERNEL_GS_BASE     0xc0000102
#define MISC_ENABLE_FAST_STRING 0x1
#define MTRR_ENABLE_WRITEBACK  ((1u << 11) | 6u)   /* MTRRs on, default type write-back */

#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_MODE_NMI    (4u << 8)
#define APIC_MODE_EXTINT (7u << 8)

static void kick_handler(int sig)
{
	(void)sig;
}

int vcpu_signals_init(struct cv_error *err)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;   /* no SA_RESTART: KVM_RUN must return EINTR */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIG_VCPU_KICK, &sa, NULL) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "sigaction(vCPU kick)");
	return 0;
}

static int set_cpuid(struct vcpu *v, struct cv_error *err)
{
	const struct kvm_system *k = &v->vm->kvm;
	unsigned cap = k->n_cpuid + CPUID_EXTRA_ENTRIES;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + cap * sizeof(c->entries[0]));
	if (!c)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	uint32_t tsc_khz = 0;
	int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	if (khz > 0)
		tsc_khz = (uint32_t)khz;
	struct cpuid_params p = {
		.apic_id = v->id,
		.n_cpus = v->vm->n_vcpus,
		.tsc_khz = tsc_khz,
		.tsc_deadline = k->tsc_deadline,
	};
	unsigned n = 0;
	int rc = cpuid_build(k->cpuid, k->n_cpuid, &p, c->entries, cap, &n, err);
	if (rc == 0) {
		c->nent = n;
		if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
			rc = cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_SET_CPUID2", v->id);
	}
	free(c);
	return rc;
}

/* Boot-time MSR values; ones this KVM does not know are skipped, as firmware would. */
static void set_msrs(struct vcpu *v)
{
	static const struct { uint32_t index; uint64_t value; } boot_msrs[] = {
		{ MSR_IA32_SYSENTER_CS, 0 }, { MSR_IA32_SYSENTER_ESP, 0 },
		{ MSR_IA32_SYSENTER_EIP, 0 }, { MSR_STAR, 0 }, { MSR_LSTAR, 0 },
		{ MSR_CSTAR, 0 }, { MSR_SYSCALL_MASK, 0 }, { MSR_KERNEL_GS_BASE, 0 },
		{ MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING },
		{ MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK },
	};
	/* One MSR per call, so a rejected one does not hide the others. */
	_Alignas(struct kvm_msrs) uint8_t buf[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
	for (size_t i = 0; i < sizeof(boot_msrs) / sizeof(boot_msrs[0]); i++) {
		memset(buf, 0, sizeof(buf));
		struct kvm_msrs *m = (struct kvm_msrs *)buf;
		m->nmsrs = 1;
		m->entries[0].index = boot_msrs[i].index;
		m->entries[0].data = boot_msrs[i].value;
		ioctl(v->fd, KVM_SET_MSRS, m);
	}
}

static int set_fpu(struct vcpu *v, struct cv_error *err)
{
	struct kvm_fpu fpu;
	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;       /* x87 reset value: all exceptions masked, 64-bit precision */
	fpu.mxcsr = 0x1f80;    /* SSE reset value */
	if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_SET_FPU", v->id);
	return 0;
}

/* Wires LINT0 to the 8259 (ExtINT) and LINT1 to NMI, as the MP table and MADT declare. */
static int set_lapic(struct vcpu *v, struct cv_error *err)
{
	struct kvm_lapic_state lapic;
	if (ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_GET_LAPIC", v->id);
	uint32_t lint0, lint1;
	memcpy(&lint0, lapic.regs + APIC_LVT_LINT0, 4);
	memcpy(&lint1, lapic.regs + APIC_LVT_LINT1, 4);
	lint0 = (lint0 & ~0x700u) | APIC_MODE_EXTINT;
	lint1 = (lint1 & ~0x700u) | APIC_MODE_NMI;
	memcpy(lapic.regs + APIC_LVT_LINT0, &lint0, 4);
	memcpy(lapic.regs + APIC_LVT_LINT1, &lint1, 4);
	if (ioctl(v->fd, KVM_SET_LAPIC, &lapic) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_SET_LAPIC", v->id);
	return 0;
}

int vcpu_create(struct vm *vm, unsigned id, struct vcpu *v, struct cv_error *err)
{
	memset(v, 0, sizeof(*v));
	v->vm = vm;
	v->id = id;
	v->run = MAP_FAILED;
	v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_CREATE_VCPU %u", id);
	v->run = mmap(NULL, (size_t)vm->kvm.run_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->fd, 0);
	if (v->run == MAP_FAILED)
		return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: map kvm_run", id);
	if (set_cpuid(v, err) < 0)
		return -1;
	set_msrs(v);
	if (set_fpu(v, err) < 0 || set_lapic(v, err) < 0)
		return -1;
	return 0;
}

void vcpu_destroy(struct vcpu *v)
{
	if (v->run && v->run != MAP_FAILED)
		munmap(v->run, (size_t)v->vm->kvm.run_mmap_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = MAP_FAILED;
	v->fd = -1;
}

static uint64_t current_rip(struct vcpu *v)
{
	struct kvm_regs regs;
	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
		return 0;
	return regs.rip;
}

static void unhandled(struct vcpu *v, const char *bus, uint64_t addr, uint32_t size, bool write)
{
	struct vm *vm = v->vm;
	atomic_fetch_add(&vm->unhandled_io, 1);
	if (vm->trace_io)
		fprintf(stderr, "cvisor-vmm: vCPU %u: unhandled %s %s 0x%llx size %u\n", v->id, bus,
			write ? "write" : "read", (unsigned long long)addr, size);
}

/* Returns false when the vCPU must stop. */
static bool handle_exit(struct vcpu *v)
{
	struct vm *vm = v->vm;
	struct kvm_run *run = v->run;
	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		atomic_fetch_add(&v->stats[VCPU_STAT_IO], 1);
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		bool write = run->io.direction == KVM_EXIT_IO_OUT;
		for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
			if (!io_bus_access(&vm->pio, run->io.port, data, run->io.size, write))
				unhandled(v, "port", run->io.port, run->io.size, write);
		return true;
	}
	case KVM_EXIT_MMIO:
		atomic_fetch_add(&v->stats[VCPU_STAT_MMIO], 1);
		if (run->mmio.len > sizeof(run->mmio.data))
			run->mmio.len = sizeof(run->mmio.data);
		if (!io_bus_access(&vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
				   run->mmio.is_write))
			unhandled(v, "mmio", run->mmio.phys_addr, run->mmio.len, run->mmio.is_write);
		return true;
	case KVM_EXIT_INTR:
		atomic_fetch_add(&v->stats[VCPU_STAT_INTR], 1);
		return true;
	case KVM_EXIT_SHUTDOWN:
		vm_request_stop(vm, CV_EXIT_GUEST_CRASH,
				"vCPU %u: triple fault (KVM_EXIT_SHUTDOWN) at rip 0x%llx", v->id,
				(unsigned long long)current_rip(v));
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			vm_request_stop(vm, CV_EXIT_OK, "guest powered off (KVM system event)");
			break;
		case KVM_SYSTEM_EVENT_RESET:
			vm_request_stop(vm, CV_EXIT_GUEST_REBOOT,
					"guest requested a reset (KVM system event)");
			break;
		default:
			vm_request_stop(vm, CV_EXIT_GUEST_CRASH, "vCPU %u: guest crash event %u",
					v->id, run->system_event.type);
		}
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		vm_request_stop(vm, CV_EXIT_KVM_ERROR,
				"vCPU %u: KVM could not enter the guest (hardware reason 0x%llx) at "
				"rip 0x%llx", v->id,
				(unsigned long long)run->fail_entry.hardware_entry_failure_reason,
				(unsigned long long)current_rip(v));
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		vm_request_stop(vm, CV_EXIT_KVM_ERROR,
				"vCPU %u: KVM internal error (suberror %u%s) at rip 0x%llx", v->id,
				run->internal.suberror,
				run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ?
					": instruction emulation failed" : "",
				(unsigned long long)current_rip(v));
		return false;
	default:
		atomic_fetch_add(&v->stats[VCPU_STAT_OTHER], 1);
		vm_request_stop(vm, CV_EXIT_KVM_ERROR,
				"vCPU %u: unexpected KVM exit reason %u at rip 0x%llx", v->id,
				run->exit_reason, (unsigned long long)current_rip(v));
		return false;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	sigset_t kick;
	sigemptyset(&kick);
	sigaddset(&kick, SIG_VCPU_KICK);
	pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", v->id);
	if (!vm_sandbox_thread(vm, VMM_ROLE_VCPU, name))
		return NULL;

	/* A VM paused before its vCPUs started (API request during start-up) keeps them parked. */
	if (atomic_load(&vm->pause_requested))
		vm_vcpu_park(vm);
	while (!atomic_load(&vm->stopping)) {
		/* Two vDSO clock reads per exit: cheap next to the exit itself. */
		uint64_t t0 = cv_monotonic_ns();
		int rc = ioctl(v->fd, KVM_RUN, 0);
		atomic_fetch_add(&v->run_ns, cv_monotonic_ns() - t0);
		if (rc < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				/*
				 * The last exit is complete now (KVM finishes it before looking at
				 * signals and immediate_exit): a safe point to park for a pause.
				 */
				__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
				if (atomic_load(&vm->pause_requested))
					vm_vcpu_park(vm);
				continue;
			}
			vm_request_stop(vm, CV_EXIT_KVM_ERROR, "vCPU %u: KVM_RUN: %s", v->id,
					strerror(errno));
			break;
		}
		if (!handle_exit(v))
			break;
	}
	return NULL;
}

int vcpu_start(struct vcpu *v, struct cv_error *err)
{
	int rc = pthread_create(&v->thread, NULL, vcpu_thread, v);
	if (rc != 0) {
		errno = rc;
		return cv_fail_errno(err, CV_EXIT_OSERR, "start vCPU %u thread", v->id);
	}
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", v->id);
	pthread_setname_np(v->thread, name);
	v->thread_started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	if (!v->thread_started)
		return;
	/* immediate_exit covers a kick that lands just before the thread enters KVM_RUN. */
	if (v->vm->kvm.immediate_exit)
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	pthread_kill(v->thread, SIG_VCPU_KICK);
}

void vcpu_join(struct vcpu *v)
{
	if (!v->thread_started)
		return;
	/* Without KVM_CAP_IMMEDIATE_EXIT a kick can be lost in a window; repeat until it lands. */
	for (;;) {
		vcpu_kick(v);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_timedjoin_np(v->thread, NULL, &ts) == 0)
			break;
	}
	v->thread_started = false;
}
