/*
 * What the tiny-guest tests on this host's /dev/kvm share (test_kvm.c, test_fcapi.c,
 * test_snapshot.c, test_snapload.c, test_migrate.c): skipping without KVM, console files, a VM
 * run on a thread of its own (struct runner), the control words of the counting guests
 * (snapshot_guests.S, migrate_guests.S) and a work directory for the files a test makes.
 *
 * Each Criterion test runs in its own process, so "the work directory" is that process's: made
 * on first use, removed by remove_work, which a suite using it names as its .fini.
 */
#ifndef CVISOR_TESTS_KVM_HARNESS_H
#define CVISOR_TESTS_KVM_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm.h"

/* Where runner_boot loads guest code and enters it. */
#define KH_CODE_GPA 0x100000ULL
/* The counting guests' control words: u64 count (or last sweep), u64 stop word at +8. */
#define KH_CTRL_GPA 0x200000ULL

/* Skips the test when /dev/kvm is not usable. */
void require_kvm(void);

/* Makes an empty file /tmp/cvisor-TAG-console-XXXXXX for a VM's console; its name into path. */
void console_file(char *path, size_t len, const char *tag);

/* A VM and the thread that runs it. */
struct runner {
	struct vm vm;
	char console[64];
	pthread_t thread;
	bool started;
	int status;
};

/* Clears r, gives it a console file and initialises its VM from cfg, whose console it sets. */
void runner_init(struct runner *r, struct vm_config *cfg, const char *tag);
/* Thread function: vm_run of the struct runner *, its status into ->status. */
void *runner_thread(void *runner);
/* Runs r's VM on r->thread. */
void runner_start(struct runner *r);
/* Loads [code, end) at KH_CODE_GPA, enters it in long mode on vCPU 0 and starts r. */
void runner_boot(struct runner *r, const uint8_t *code, const uint8_t *end);
/*
 * If r was started: sets the guest's stop word, waits for the VM to end and checks that its
 * status is want. Then destroys the VM and removes the console file.
 */
void runner_finish(struct runner *r, int want);

/* The control words of a counting guest. */
volatile uint64_t *guest_ctrl(struct vm *vm);
/* Its count. */
uint64_t guest_count(struct vm *vm);
/* Tells it to power off. */
void guest_stop(struct vm *vm);
/* Waits (up to 30 s: PVM is slow) until it counted past above; the count, or 0 on timeout. */
uint64_t guest_wait_count(struct vm *vm, uint64_t above);
/* The same, but a timeout fails the test. */
uint64_t wait_count(struct runner *r, uint64_t above);

/* WORK/NAME into buf, WORK the test's directory /tmp/cvisor-TAG-XXXXXX (made on first use). */
const char *work_path(const char *tag, const char *name, char *buf, size_t len);
/* Removes the work directory (a suite's .fini). */
void remove_work(void);

#endif
