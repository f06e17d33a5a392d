/*
 * Pause, snapshot and restore on this host's /dev/kvm with a tiny guest (snapshot_guests.S)
 * that counts in guest memory. The checks are what the guest itself shows: while paused the
 * counter does not move; a VM restored from the files in a fresh struct vm (as a new process
 * would build it) starts with exactly the count at the snapshot, goes on counting (its
 * registers came back, not just its memory) and powers off normally when told to; restoring
 * the same files twice gives the same start both times and never changes the memory file.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvm_harness.h"
#include "snapshot/snapshot.h"
#include "util.h"
#include "vm.h"

extern const uint8_t guest_counter_start[], guest_counter_end[];

#define MEM CV_MiB(32)

static void vm_make(struct runner *r, unsigned cpus)
{
	struct vm_config cfg = { .cpus = cpus, .memory_bytes = MEM };
	runner_init(r, &cfg, "snap");
}

static volatile uint64_t *counter(struct runner *r)
{
	return guest_ctrl(&r->vm);
}

static void paths(char *state, char *mem, size_t len)
{
	work_path("snap", "state", state, len);
	work_path("snap", "mem", mem, len);
}

TestSuite(snapshot, .fini = remove_work);

/* Boots the counter guest and snapshots it once it counts; returns the count in the files. */
static uint64_t boot_and_snapshot(unsigned cpus, const char *state, const char *mem)
{
	struct runner r;
	struct cv_error err = { 0 };
	vm_make(&r, cpus);
	runner_boot(&r, guest_counter_start, guest_counter_end);
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
	runner_finish(&r, CV_EXIT_OK);
	return paused;
}

static void restore_and_check(unsigned cpus, const char *state, const char *mem, uint64_t at)
{
	struct runner r;
	struct cv_error err = { 0 };
	vm_make(&r, cpus);
	cr_assert_eq(vm_restore(&r.vm, state, mem, &err), 0, "%s", err.msg);
	cr_assert_eq(*counter(&r), at, "the restored memory starts at the snapshot's count");
	runner_start(&r);
	wait_count(&r, at + 1000);
	runner_finish(&r, CV_EXIT_OK);
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
	runner_finish(&r, CV_EXIT_OK);

	/* A memory file of the wrong size is refused too, before anything runs. */
	vm_make(&r, 2);
	cr_assert_eq(truncate(mem, 4096), 0);
	cr_assert_eq(vm_restore(&r.vm, state, mem, &err), -1);
	cr_assert(strstr(err.msg, "memory file") != NULL, "%s", err.msg);
	runner_finish(&r, CV_EXIT_OK);
}

Test(snapshot, two_vcpus_snapshot_and_restore, .timeout = 120)
{
	require_kvm();
	char state[96], mem[96];
	paths(state, mem, sizeof(state));
	uint64_t at = boot_and_snapshot(2, state, mem);
	restore_and_check(2, state, mem, at);
}
