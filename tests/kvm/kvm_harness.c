/*
 * The shared part of the tiny-guest tests on /dev/kvm (see kvm_harness.h).
 */
#include "kvm_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot/cpu_state.h"
#include "vcpu.h"

void require_kvm(void)
{
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		cr_skip_test("no usable /dev/kvm");
}

void console_file(char *path, size_t len, const char *tag)
{
	snprintf(path, len, "/tmp/cvisor-%s-console-XXXXXX", tag);
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0, "mkstemp %s", path);
	close(fd);
}

void runner_init(struct runner *r, struct vm_config *cfg, const char *tag)
{
	memset(r, 0, sizeof(*r));
	console_file(r->console, sizeof(r->console), tag);
	cfg->console = (struct console_config){ .kind = CONSOLE_FILE, .path = r->console };
	struct cv_error err = { 0 };
	cr_assert_eq(vm_init(&r->vm, cfg, &err), 0, "vm_init: %s", err.msg);
}

void *runner_thread(void *runner)
{
	struct runner *r = runner;
	struct cv_error err = { 0 };
	r->status = vm_run(&r->vm, &err);
	return NULL;
}

void runner_start(struct runner *r)
{
	cr_assert_eq(pthread_create(&r->thread, NULL, runner_thread, r), 0);
	r->started = true;
}

void runner_boot(struct runner *r, const uint8_t *code, const uint8_t *end)
{
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_write(&r->vm.mem, KH_CODE_GPA, code, (uint64_t)(end - code),
					&err), 0, "%s", err.msg);
	cr_assert_eq(cpu_set_entry_state(r->vm.vcpus[0].fd, BOOT_ENTRY_LINUX64, KH_CODE_GPA, 0,
					 &err), 0, "%s", err.msg);
	runner_start(r);
}

void runner_finish(struct runner *r, int want)
{
	if (r->started) {
		guest_stop(&r->vm);
		pthread_join(r->thread, NULL);
		r->started = false;
		cr_assert_eq(r->status, want, "status %d: %s", r->status, r->vm.stop_reason);
	}
	vm_destroy(&r->vm);
	unlink(r->console);
}

volatile uint64_t *guest_ctrl(struct vm *vm)
{
	return guest_memory_ptr(&vm->mem, KH_CTRL_GPA, 16);
}

uint64_t guest_count(struct vm *vm)
{
	return __atomic_load_n(guest_ctrl(vm), __ATOMIC_RELAXED);
}

void guest_stop(struct vm *vm)
{
	__atomic_store_n(guest_ctrl(vm) + 1, 1, __ATOMIC_RELAXED);
}

uint64_t guest_wait_count(struct vm *vm, uint64_t above)
{
	for (int i = 0; i < 3000; i++) {
		uint64_t v = guest_count(vm);
		if (v > above)
			return v;
		usleep(10000);
	}
	return 0;
}

uint64_t wait_count(struct runner *r, uint64_t above)
{
	uint64_t v = guest_wait_count(&r->vm, above);
	if (!v)
		cr_assert_fail("the guest never counted past %llu", (unsigned long long)above);
	return v;
}

/* Work directory of the running test (each Criterion test runs in its own process). */
static char work_dir[64];

const char *work_path(const char *tag, const char *name, char *buf, size_t len)
{
	if (!work_dir[0]) {
		snprintf(work_dir, sizeof(work_dir), "/tmp/cvisor-%s-XXXXXX", tag);
		cr_assert_not_null(mkdtemp(work_dir), "mkdtemp %s", work_dir);
	}
	int n = snprintf(buf, len, "%s/%s", work_dir, name);
	cr_assert(n > 0 && (size_t)n < len, "path too long: %s/%s", work_dir, name);
	return buf;
}

void remove_work(void)
{
	if (!work_dir[0])
		return;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", work_dir);
	work_dir[0] = 0;
}
