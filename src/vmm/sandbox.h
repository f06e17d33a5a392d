/*
 * The VMM's sandbox after setup: a seccomp allow-list per thread role and no capabilities.
 *
 * Every thread of cvisor-vmm has one role - vCPU (KVM_RUN and the device emulation done on
 * exits), I/O (the epoll loop serving device backends), API (the HTTP control server) or main
 * (console input, signals and teardown) - and installs the filter of that role on itself once
 * its setup is done, at the start of its loop. Filters are per thread (no TSYNC), so each
 * thread gets only what its own code needs; a thread inherits the filter of the thread that
 * creates it, which is why threads are created before their creator locks itself down.
 *
 * Modes: off (nothing installed, capabilities kept), log (syscalls outside the list are
 * allowed but logged by the kernel, for finding what a new code path needs: see
 * docs/sandboxing.md) and kill (the default of cvisor-vmm: a syscall outside the list kills
 * the whole process with SIGSYS). A library user that builds a VM without asking for a
 * sandbox (tests, benchmarks) gets mode off, the zero value.
 */
#ifndef CVISOR_VMM_SANDBOX_H
#define CVISOR_VMM_SANDBOX_H

#include <stdbool.h>

#include "error.h"

enum vmm_sandbox_mode {
	VMM_SANDBOX_OFF = 0,
	VMM_SANDBOX_LOG,
	VMM_SANDBOX_KILL,
};

enum vmm_thread_role {
	VMM_ROLE_VCPU,
	VMM_ROLE_IO,
	VMM_ROLE_API,
	VMM_ROLE_MAIN,
	VMM_ROLE_MIGRATE,
	VMM_ROLE_COUNT,
};

/* "off", "log" or "kill" (the --seccomp option). */
int vmm_sandbox_mode_parse(const char *s, enum vmm_sandbox_mode *out, struct cv_error *err);
const char *vmm_sandbox_mode_name(enum vmm_sandbox_mode mode);
const char *vmm_thread_role_name(enum vmm_thread_role role);

/*
 * Locks the calling thread down for `role`: drops its capabilities, then installs the role's
 * filter. Nothing happens in mode off. On failure the thread is unchanged or only partly
 * restricted; the caller must not go on serving the guest.
 */
int vmm_sandbox_enter(enum vmm_thread_role role, enum vmm_sandbox_mode mode,
		      struct cv_error *err);

/*
 * Process-wide preparation, first thing in main(), before any thread exists: one malloc arena
 * for every thread. glibc returns memory of a thread's own arena by shrinking its heap, and the
 * first shrink opens /proc/sys/vm/overcommit_memory - a path a vCPU or I/O thread's filter must
 * refuse, which killed VMMs at random (whenever a thread happened to free enough memory). The
 * main arena gives memory back with brk and madvise, which every role allows.
 */
void vmm_sandbox_prepare_process(void);

/* The two halves of vmm_sandbox_enter, for tests. */
int vmm_seccomp_install(enum vmm_thread_role role, enum vmm_sandbox_mode mode,
			struct cv_error *err);
int vmm_caps_drop(struct cv_error *err);

struct vm;

/*
 * vmm_sandbox_enter with the VM's mode, for thread entry points. The thread first takes the
 * name `name` (if not NULL) itself: naming it from another thread goes through /proc, which a
 * jailed VMM has not, and the name is what seccomp log lines and /proc show. On failure the VM
 * is asked to stop with the reason and false is returned; the thread should then end.
 */
bool vm_sandbox_thread(struct vm *vm, enum vmm_thread_role role, const char *name);
/*
 * The same as thread-start hooks (ctx is the struct vm): of the I/O loop, and of the API
 * server, where it returns 0 (not yet: call again) until the VM runs with every thread
 * started (vm->sandbox_armed), then 1 once the thread is sandboxed, -1 on failure.
 */
bool vm_sandbox_io_start(void *ctx);
int vm_sandbox_api_start(void *ctx);

#endif
