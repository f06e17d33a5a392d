/*
 * Pause, snapshot and restore on this host's /dev/kvm with a tiny guest (snapshot_guests.S)
 * that counts in guest memory. The checks are what the guest itself shows: while paused the
 * counter does not move; a VM restored from the files in a fresh struct vm (as a new process
 * would build it) starts with exactly the count at the snapshot, goes on counting (its
 * registers came back, not just its memory) and powers off normally when told to; restoring
 * the same files twice gives the same start both times and never changes the memory file.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot/cpu_state.h"
#include "snapshot/snapshot.h"
#include "util.h"
#include "vcpu.h"
#include "vm.h"

extern const uint8_t guest_counter_start[], guest_counter_end[];

#define CODE_GPA 0x100000ULL
#define COUNTER_GPA 0x200000ULL
#define MEM CV_MiB(32)

struct runner {
	struct vm vm;
	char console[64];
	pthread_t thread;
	int status;
};

static void require_kvm(void)
{
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		cr_skip_test("no usable /dev/kvm");
}

static void vm_make(struct runner *r, unsigned cpus)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->console, sizeof(r->console), "/tmp/cvisor-snap-console-XXXXXX");
	int fd = mkstemp(r->console);
	cr_assert_geq(fd, 0);
	close(fd);
	struct vm_config cfg = {
		.cpus = cpus, .memory_bytes = MEM,
		.console = { .kind = CONSOLE_FILE, .path = r->console },
	};
	struct cv_error err = { 0 };
	cr_assert_eq(vm_init(&r->vm, &cfg, &err), 0, "vm_init: %s", err.msg);
}

static void *run_thread(void *arg)
{
	struct runner *r = arg;
	struct cv_error err = { 0 };
	r->status = vm_run(&r->vm, &err);
	return NULL;
}

static void start(struct runner *r)
{
	cr_assert_eq(pthread_create(&r->thread, NULL, run_thread, r), 0);
}

static volatile uint64_t *counter(struct runner *r)
{
	return guest_memory_ptr(&r->vm.mem, COUNTER_GPA, 16);
}

/* Waits until the guest counted past `above` (it runs; PVM is slow, so be patient). */
static uint64_t wait_count(struct runner *r, uint64_t above)
{
	for (int i = 0; i < 3000; i++) {
		uint64_t v = __atomic_load_n(counter(r), __ATOMIC_RELAXED);
		if (v > above)
			return v;
		usleep(10000);
	}
	cr_assert_fail("the guest never counted past %llu", (unsigned long long)above);
	return 0;
}

/* Tells the guest to power off and checks that it did. */
static void finish(struct runner *r)
{
	__atomic_store_n(counter(r) + 1, 1, __ATOMIC_RELAXED);
	pthread_join(r->thread, NULL);
	cr_assert_eq(r->status, CV_EXIT_OK, "status %d: %s", r->status, r->vm.stop_reason);
	vm_destroy(&r->vm);
	unlink(r->console);
}

static char work[64];

static void paths(char *state, char *mem, size_t len)
{
	if (!work[0]) {
		snprintf(work, sizeof(work), "/tmp/cvisor-snap-XXXXXX");
		cr_assert_not_null(mkdtemp(work));
	}
	snprintf(state, len, "%s/state", work);
	snprintf(mem, len, "%s/mem", work);
}

static void cleanup(void)
{
	if (work[0]) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", work);
	}
}

TestSuite(snapshot, .fini = cleanup);

/* Boots the counter guest and snapshots it once it counts; returns the count in the files. */
static uint64_t boot_and_snapshot(unsigned cpus, const char *state, const char *mem)
{
	struct runner r;
	struct cv_error err = { 0 };
	vm_make(&r, cpus);
	cr_assert_eq(guest_memory_write(&r.vm.mem, CODE_GPA, guest_counter_start,
					(uint64_t)(guest_counter_end - guest_counter_start), &err), 0);
	cr_assert_eq(cpu_set_entry_state(r.vm.vcpus[0].fd, BOOT_ENTRY_LINUX64, CODE_GPA, 0, &err), 0,
		     "%s", err.msg);
	start(&r);
	wait_count(&r, 1000);

	cr_assert_eq(vm_snapshot_create(&r.vm, state, mem, false, NULL, &err), -1,
		     "a running VM must not be snapshotted");
	cr_assert_eq(vm_pause(&r.vm, &err), 0, "%s", err.msg);
	cr_assert(vm_is_paused(&r.vm));
	uint64_t paused = *counter(&r);
	usleep(200000);
	cr_assert_eq(*counter(&r), paused, "the counter moved while paused");
	cr_assert_eq(vm_pause(&r.vm, &err), 0, "pausing twice is harmless");
	cr_assert_eq(vm_snapshot_create(&r.vm, state, mem, false, NULL, &err), 0, "%s", err.msg);
	cr_assert_eq(*counter(&r), paused, "the counter moved during the snapshot");

	/* The snapshotted VM itself resumes and goes on. */
	vm_resume(&r.vm);
	wait_count(&r, paused + 1000);
	finish(&r);
	return paused;
}

static void restore_and_check(unsigned cpus, const char *state, const char *mem, uint64_t at)
{
	struct runner r;
	struct cv_error err = { 0 };
	vm_make(&r, cpus);
	cr_assert_eq(vm_restore(&r.vm, state, mem, &err), 0, "%s", err.msg);
	cr_assert_eq(*counter(&r), at, "the restored memory starts at the snapshot's count");
	start(&r);
	wait_count(&r, at + 1000);
	finish(&r);
}

Test(snapshot, counter_continues_after_restore_twice, .timeout = 120)
{
	require_kvm();
	char state[96], mem[96];
	paths(state, mem, sizeof(state));
	uint64_t at = boot_and_snapshot(1, state, mem);
	struct stat st1, st2;
	cr_assert_eq(stat(mem, &st1), 0);
	cr_assert_eq((uint64_t)st1.st_size, MEM, "the memory file holds all of guest RAM");
	restore_and_check(1, state, mem, at);
	restore_and_check(1, state, mem, at);
	cr_assert_eq(stat(mem, &st2), 0);
	cr_assert_eq(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec, "restores never write the memory file");
	cr_assert_eq(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
}

Test(snapshot, restore_refuses_another_machine_shape, .timeout = 120)
{
	require_kvm();
	char state[96], mem[96];
	paths(state, mem, sizeof(state));
	boot_and_snapshot(2, state, mem);
	struct runner r;
	struct cv_error err = { 0 };
	vm_make(&r, 1);
	cr_assert_eq(vm_restore(&r.vm, state, mem, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_USAGE);
	cr_assert(strstr(err.msg, "2 vCPUs") != NULL, "%s", err.msg);
	cr_assert_null(strchr(err.msg, '\n'), "one line: %s", err.msg);
	vm_destroy(&r.vm);
	unlink(r.console);

	/* A memory file of the wrong size is refused too, before anything runs. */
	vm_make(&r, 2);
	cr_assert_eq(truncate(mem, 4096), 0);
	cr_assert_eq(vm_restore(&r.vm, state, mem, &err), -1);
	cr_assert(strstr(err.msg, "memory file") != NULL, "%s", err.msg);
	vm_destroy(&r.vm);
	unlink(r.console);
}

Test(snapshot, two_vcpus_snapshot_and_restore, .timeout = 120)
{
	require_kvm();
	char state[96], mem[96];
	paths(state, mem, sizeof(state));
	uint64_t at = boot_and_snapshot(2, state, mem);
	restore_and_check(2, state, mem, at);
}
