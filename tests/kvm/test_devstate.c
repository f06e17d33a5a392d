/*
 * Device state that lives outside the virtio rings must survive a snapshot too: a disk's rate
 * limiter (settings changed live, buckets part spent) and the i8042 (command byte, a byte
 * waiting for the guest). The VM here never runs guest code - what is checked is what the
 * restored devices hold and answer, in a fresh struct vm built without the limits (as a
 * `--restore` without --disk rate options would build it).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvm_harness.h"
#include "ratelimit.h"
#include "snapshot/snapshot.h"
#include "util.h"
#include "virtio/blk.h"
#include "vm.h"

#define SLOW_REFILL_MS 100000ULL      /* 100 s per bucket: the test's own time earns little */

TestSuite(devstate, .fini = remove_work);

static void build(struct vm *vm, const char *image, const char *console,
		  const struct rate_limiter_config *limits)
{
	struct vm_config cfg = {
		.cpus = 1, .memory_bytes = CV_MiB(32),
		.console = { .kind = CONSOLE_FILE, .path = console },
		.sandbox = VMM_SANDBOX_OFF,
		.devices = { .transport = VIRTIO_TRANSPORT_PCI, .n_disks = 1 },
	};
	cfg.devices.disks[0] = (struct disk_config){ .id = "rootfs", .path = image };
	if (limits)
		cfg.devices.disks[0].rate_limiter = *limits;
	struct cv_error err = { 0 };
	memset(vm, 0, sizeof(*vm));
	cr_assert_eq(vm_init(vm, &cfg, &err), 0, "vm_init: %s", err.msg);
}

static struct virtio_blk *disk_of(struct vm *vm)
{
	cr_assert_eq(vm->n_virtio, 1);
	return vm->virtio[0]->dev->priv;
}

static void port_write(struct vm *vm, uint64_t offset, uint8_t v)
{
	i8042_io_ops.write(&vm->i8042, offset, &v, 1);
}

static uint8_t port_read(struct vm *vm, uint64_t offset)
{
	uint8_t v = 0;
	i8042_io_ops.read(&vm->i8042, offset, &v, 1);
	return v;
}

Test(devstate, rate_limiter_and_keyboard_come_back_from_a_snapshot)
{
	require_kvm();
	char image[128], console[128], state[128], mem[128];
	work_path("devstate", "disk.img", image, sizeof(image));
	work_path("devstate", "console", console, sizeof(console));
	work_path("devstate", "state", state, sizeof(state));
	work_path("devstate", "mem", mem, sizeof(mem));
	int fd = open(image, O_CREAT | O_WRONLY, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, CV_MiB(1)), 0);
	close(fd);

	struct rate_limiter_config limits = {
		.bandwidth = { .size = CV_MiB(1), .one_time_burst = 8192,
			       .refill_time_ms = SLOW_REFILL_MS, .enabled = true },
		.ops = { .size = 100, .refill_time_ms = SLOW_REFILL_MS, .enabled = true },
	};
	struct vm *vm = calloc(1, sizeof(*vm));
	build(vm, image, console, &limits);
	struct virtio_blk *b = disk_of(vm);
	/* A live change of the ops bucket (PATCH /drives): it starts afresh with 50. */
	struct rate_limiter_config changed = limits;
	changed.ops.size = 50;
	struct cv_error err = { 0 };
	cr_assert_eq(blk_set_rate_limiter(b, &changed, &err), 0, "%s", err.msg);
	uint64_t retry;
	cr_assert(rate_limiter_consume(&b->rl, CV_KiB(512), 20, &retry));
	int64_t bw_before = token_bucket_available(&b->rl.bw, rl_clock_monotonic(NULL));
	int64_t ops_before = token_bucket_available(&b->rl.ops, rl_clock_monotonic(NULL));
	cr_assert_lt(bw_before, (int64_t)CV_MiB(1), "the burst and part of the bucket are spent");
	cr_assert_eq(ops_before, 30);

	port_write(vm, 4, 0x60);             /* write the command byte: no keyboard interrupts */
	port_write(vm, 0, 0x44);
	port_write(vm, 4, 0xd2);             /* a byte in the keyboard's output buffer */
	port_write(vm, 0, 0x99);

	cr_assert_eq(vm_pause(vm, &err), 0, "%s", err.msg);
	cr_assert_eq(vm_snapshot_create(vm, state, mem, false, NULL, &err), 0, "%s", err.msg);
	vm_destroy(vm);
	free(vm);

	struct vm *back = calloc(1, sizeof(*back));
	build(back, image, console, NULL);
	b = disk_of(back);
	cr_assert_not(rate_limiter_active(&b->rl), "built without limits");
	cr_assert_eq(vm_restore(back, state, mem, &err), 0, "%s", err.msg);

	cr_assert(rate_limiter_active(&b->rl), "the limits came back with the snapshot");
	cr_assert_eq(b->rl.bw.cfg.size, CV_MiB(1));
	cr_assert_eq(b->rl.ops.cfg.size, 50, "the live change, not the boot-time setting");
	int64_t bw_after = token_bucket_available(&b->rl.bw, rl_clock_monotonic(NULL));
	int64_t ops_after = token_bucket_available(&b->rl.ops, rl_clock_monotonic(NULL));
	/* Not a fresh bucket; what refilled meanwhile is at most ~10 KiB per second elapsed. */
	cr_assert_geq(bw_after, bw_before);
	cr_assert_lt(bw_after, bw_before + (int64_t)CV_KiB(64), "%lld then %lld",
		     (long long)bw_before, (long long)bw_after);
	cr_assert_geq(ops_after, 30);
	cr_assert_leq(ops_after, 31);

	cr_assert(port_read(back, 4) & 0x01, "the queued byte is still waiting");
	cr_assert_eq(port_read(back, 0), 0x99);
	cr_assert_not(port_read(back, 4) & 0x01);
	port_write(back, 4, 0x20);           /* read the command byte back */
	cr_assert_eq(port_read(back, 0), 0x44);
	vm_destroy(back);
	free(back);
}
