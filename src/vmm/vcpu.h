/*
 * A vCPU: its KVM file descriptor and shared run structure, the thread that runs it, and the
 * exit dispatch loop (port I/O and MMIO to the buses; shutdown and errors end the VM). The
 * architectural state a vCPU starts with (CPUID, MSRs, FPU, LAPIC wiring) is set at creation.
 */
#ifndef CVISOR_VMM_VCPU_H
#define CVISOR_VMM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct vm;

/* Exit counters, one per KVM exit reason we distinguish. */
enum vcpu_stat {
	VCPU_STAT_IO, VCPU_STAT_MMIO, VCPU_STAT_INTR, VCPU_STAT_OTHER, VCPU_STAT_COUNT
};

struct vcpu {
	struct vm *vm;
	unsigned id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	atomic_uint_fast64_t stats[VCPU_STAT_COUNT];
	atomic_uint_fast64_t run_ns;     /* time spent inside KVM_RUN (metrics) */
};

int vcpu_create(struct vm *vm, unsigned id, struct vcpu *v, struct cv_error *err);
void vcpu_destroy(struct vcpu *v);

/* Starts the vCPU thread (blocks the process signals the main loop handles). */
int vcpu_start(struct vcpu *v, struct cv_error *err);

/* Makes a running KVM_RUN return so the thread notices the VM is stopping. */
void vcpu_kick(struct vcpu *v);

/* Waits for the thread to end, kicking it until it does; call after the VM is stopping. */
void vcpu_join(struct vcpu *v);

/* Installs the no-op handler of the kick signal; once per process, before vcpu_start. */
int vcpu_signals_init(struct cv_error *err);

#endif
