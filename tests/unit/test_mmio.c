/*
 * The virtio-mmio transport (src/vmm/virtio/virtio_mmio.c) driven register by register through
 * the MMIO bus decoder, as Linux's virtio_mmio driver does: probe, feature negotiation, queue
 * setup, kicks reaching the device on a real I/O thread, the level-triggered (and shared)
 * interrupt line, reset, and guest input that breaks the rules (odd widths and offsets, writes
 * the device state forbids). A fake device records what the transport asks of it; virtio-rng
 * then moves real bytes through a ring in guest memory. Also: the kernel command-line helpers
 * (pci=off detection, the virtio_mmio.device= parameter) and the ACPI/MP table entries that make
 * the lines level-triggered.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "devices.h"
#include "devices/bus.h"
#include "iasl.h"
#include "layout.h"
#include "memory.h"
#include "tables/acpi.h"
#include "tables/mptable.h"
#include "util.h"
#include "virtio/rng.h"
#include "virtio/virtio_mmio.h"

#define NDEV 3
#define FAKE_ID 42
#define FAKE_QUEUES 2
#define FAKE_QMAX 256
#define FAKE_F_EXTRA 5                /* a device feature bit in the low word */
#define FAKE_F_HIGH 40                /* one in the high word */
#define MEM_SIZE (16ULL << 20)

struct fake {
	struct virtio_dev dev;
	uint8_t config[16];
	atomic_uint notified[FAKE_QUEUES];
	unsigned activated;
	unsigned resets;
};

static void fake_config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	struct fake *f = d->priv;
	if (off < sizeof(f->config) && len <= sizeof(f->config) - off)
		memcpy(data, f->config + off, len);
}

static void fake_config_write(struct virtio_dev *d, uint32_t off, const uint8_t *data,
			      uint32_t len)
{
	struct fake *f = d->priv;
	if (off < sizeof(f->config) && len <= sizeof(f->config) - off)
		memcpy(f->config + off, data, len);
}

static int fake_activate(struct virtio_dev *d)
{
	((struct fake *)d->priv)->activated++;
	return 0;
}

static void fake_reset(struct virtio_dev *d)
{
	((struct fake *)d->priv)->resets++;
}

static void fake_notify(struct virtio_dev *d, unsigned q)
{
	atomic_fetch_add(&((struct fake *)d->priv)->notified[q], 1);
}

static const struct virtio_dev_ops fake_ops = {
	.device_id = FAKE_ID,
	.config_read = fake_config_read,
	.config_write = fake_config_write,
	.activate = fake_activate,
	.reset = fake_reset,
	.queue_notify = fake_notify,
};

static const uint8_t lines[] = { 5, 6 };   /* devices 0 and 2 share line 5 */

static struct {
	struct guest_memory mem;
	struct evloop loop;
	struct io_bus bus;
	struct virtio_mmio_bus mbus;
	struct virtio_mmio m[NDEV];
	struct fake f[NDEV];
	atomic_int level[16];
	atomic_uint raised[16];
} T;

static void set_line(void *ctx, unsigned gsi, int level)
{
	cr_assert_eq(ctx, &T);
	cr_assert_lt(gsi, 16);
	if (level && !atomic_load(&T.level[gsi]))
		atomic_fetch_add(&T.raised[gsi], 1);
	atomic_store(&T.level[gsi], level);
}

static void setup(void)
{
	memset(&T, 0, sizeof(T));
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&T.mem, MEM_SIZE, &err), 0, "%s", err.msg);
	cr_assert_eq(evloop_init(&T.loop, &err), 0, "%s", err.msg);
	io_bus_init(&T.bus, "MMIO");
	struct virtio_mmio_env env = {
		.mmio = &T.bus, .loop = &T.loop, .vm_fd = -1, .base = LAYOUT_VIRTIO_MMIO,
		.max_devices = NDEV + 1, .lines = lines, .n_lines = CV_ARRAY_SIZE(lines),
		.set_line = set_line, .line_ctx = &T,
	};
	cr_assert_eq(virtio_mmio_bus_init(&T.mbus, &env, &err), 0, "%s", err.msg);
	for (unsigned i = 0; i < NDEV; i++) {
		struct fake *f = &T.f[i];
		virtio_dev_init(&f->dev, "fake", &fake_ops, f, FAKE_QUEUES, FAKE_QMAX,
				(1ULL << FAKE_F_EXTRA) | (1ULL << FAKE_F_HIGH), &T.mem, &T.loop);
		for (unsigned k = 0; k < sizeof(f->config); k++)
			f->config[k] = (uint8_t)(0x10 * i + k);
		cr_assert_eq(virtio_mmio_init(&T.m[i], &f->dev, &T.mbus, &err), 0, "%s", err.msg);
	}
	cr_assert_eq(evloop_start(&T.loop, "io", &err), 0, "%s", err.msg);
}

static void teardown(void)
{
	evloop_stop(&T.loop);
	for (unsigned i = 0; i < NDEV; i++) {
		virtio_mmio_destroy(&T.m[i]);
		virtio_dev_destroy(&T.f[i].dev);
	}
	virtio_mmio_bus_destroy(&T.mbus);
	evloop_destroy(&T.loop);
	io_bus_free(&T.bus);
	guest_memory_free(&T.mem);
}

TestSuite(mmio, .init = setup, .fini = teardown, .timeout = 30);

static uint64_t base(unsigned dev)
{
	return LAYOUT_VIRTIO_MMIO + (uint64_t)dev * VIRTIO_MMIO_WINDOW;
}

/* 32-bit accesses through the bus, as the guest's readl/writel. */
static uint32_t rd(unsigned dev, uint64_t off)
{
	uint8_t b[4];
	cr_assert(io_bus_access(&T.bus, base(dev) + off, b, 4, false), "no device at 0x%llx",
		  (unsigned long long)(base(dev) + off));
	return get_le32(b);
}

static void wr(unsigned dev, uint64_t off, uint32_t v)
{
	uint8_t b[4];
	put_le32(b, v);
	cr_assert(io_bus_access(&T.bus, base(dev) + off, b, 4, true));
}

/* Any-width access, for the tests of odd widths. */
static uint64_t rdn(unsigned dev, uint64_t off, uint32_t len)
{
	uint8_t b[8];
	memset(b, 0xee, sizeof(b));
	io_bus_access(&T.bus, base(dev) + off, b, len, false);
	uint64_t v = 0;
	memcpy(&v, b, len);
	return le64toh(v);
}

static void wrn(unsigned dev, uint64_t off, uint64_t v, uint32_t len)
{
	uint8_t b[8];
	put_le64(b, v);
	io_bus_access(&T.bus, base(dev) + off, b, len, true);
}

static void wait_for(bool (*cond)(void *), void *arg, const char *what)
{
	for (int i = 0; i < 2000; i++) {
		if (cond(arg))
			return;
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	cr_assert_fail("timed out waiting for %s", what);
}

/* Linux's probe and virtio_dev_probe up to FEATURES_OK; returns the status read back. */
static uint32_t negotiate(unsigned dev, uint64_t want)
{
	wr(dev, VIRTIO_MMIO_STATUS, 0);
	wr(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(want >> 32));
	wr(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)want);
	wr(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				    VIRTIO_STATUS_FEATURES_OK);
	return rd(dev, VIRTIO_MMIO_STATUS);
}

/* Queue setup as vm_setup_vq does it (version 2). */
static void setup_queue(unsigned dev, unsigned q, uint32_t num, uint64_t desc, uint64_t avail,
			uint64_t used)
{
	wr(dev, VIRTIO_MMIO_QUEUE_SEL, q);
	cr_assert_eq(rd(dev, VIRTIO_MMIO_QUEUE_READY), 0);
	cr_assert_geq(rd(dev, VIRTIO_MMIO_QUEUE_NUM_MAX), num);
	wr(dev, VIRTIO_MMIO_QUEUE_NUM, num);
	wr(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
	wr(dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	wr(dev, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
	wr(dev, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
	wr(dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
	wr(dev, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
	wr(dev, VIRTIO_MMIO_QUEUE_READY, 1);
}

#define ALL_OK (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | \
		VIRTIO_STATUS_DRIVER_OK)

Test(mmio, probe_registers_identify_a_version_2_device)
{
	for (unsigned i = 0; i < NDEV; i++) {
		cr_assert_eq(rd(i, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976, "'virt'");
		cr_assert_eq(rd(i, VIRTIO_MMIO_VERSION_REG), 2);
		cr_assert_eq(rd(i, VIRTIO_MMIO_DEVICE_ID), FAKE_ID);
		cr_assert_eq(rd(i, VIRTIO_MMIO_VENDOR_ID), VIRTIO_MMIO_VENDOR);
		cr_assert_eq(T.m[i].base, base(i), "one 4 KiB window per device");
	}
	cr_assert_eq(T.m[0].gsi, 5);
	cr_assert_eq(T.m[1].gsi, 6);
	cr_assert_eq(T.m[2].gsi, 5, "lines are handed out round-robin");
	/* No shared memory regions: length reads as -1. */
	wr(0, VIRTIO_MMIO_SHM_SEL, 0);
	cr_assert_eq(rd(0, VIRTIO_MMIO_SHM_LEN_LOW), 0xffffffffu);
	cr_assert_eq(rd(0, VIRTIO_MMIO_SHM_LEN_HIGH), 0xffffffffu);
	/* Nothing decodes past the last window that was handed out. */
	uint8_t b[4];
	cr_assert_not(io_bus_access(&T.bus, base(NDEV), b, 4, false));
}

Test(mmio, feature_negotiation)
{
	wr(0, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	cr_assert_eq(rd(0, VIRTIO_MMIO_DEVICE_FEATURES), 1u << FAKE_F_EXTRA);
	wr(0, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	cr_assert_eq(rd(0, VIRTIO_MMIO_DEVICE_FEATURES),
		     (1u << (VIRTIO_F_VERSION_1 - 32)) | (1u << (FAKE_F_HIGH - 32)));
	wr(0, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
	cr_assert_eq(rd(0, VIRTIO_MMIO_DEVICE_FEATURES), 0, "no feature words past 64 bits");

	uint64_t want = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << FAKE_F_HIGH);
	cr_assert(negotiate(0, want) & VIRTIO_STATUS_FEATURES_OK);
	cr_assert_eq(T.f[0].dev.guest_features, want);

	/* Once FEATURES_OK is set, DriverFeatures no longer changes anything. */
	wr(0, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(0, VIRTIO_MMIO_DRIVER_FEATURES, 1u << FAKE_F_EXTRA);
	cr_assert_eq(T.f[0].dev.guest_features, want);

	/* A selector past the two words is ignored, not wrapped around. */
	wr(1, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 2);
	wr(1, VIRTIO_MMIO_DRIVER_FEATURES, 0xffffffffu);
	cr_assert_eq(T.f[1].dev.guest_features, 0);

	/* Features we never offered, or a driver without VERSION_1: FEATURES_OK does not stick. */
	cr_assert_not(negotiate(1, (1ULL << VIRTIO_F_VERSION_1) | (1ULL << 7)) &
		      VIRTIO_STATUS_FEATURES_OK);
	cr_assert_not(negotiate(2, 1ULL << FAKE_F_EXTRA) & VIRTIO_STATUS_FEATURES_OK);
}

Test(mmio, queue_setup_and_driver_ok_start_the_queue)
{
	cr_assert(negotiate(0, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
	wr(0, VIRTIO_MMIO_QUEUE_SEL, 0);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_NUM_MAX), FAKE_QMAX);
	/* Not a power of two, zero, above the maximum: ignored. */
	wr(0, VIRTIO_MMIO_QUEUE_NUM, 100);
	wr(0, VIRTIO_MMIO_QUEUE_NUM, 0);
	wr(0, VIRTIO_MMIO_QUEUE_NUM, 2 * FAKE_QMAX);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_NUM), FAKE_QMAX);
	setup_queue(0, 0, 64, 0x20000, 0x21000, 0x22000);
	struct virtq *vq = &T.f[0].dev.vq[0];
	cr_assert_eq(vq->size, 64);
	cr_assert_eq(vq->desc_gpa, 0x20000);
	cr_assert_eq(vq->avail_gpa, 0x21000);
	cr_assert_eq(vq->used_gpa, 0x22000);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_READY), 1);

	/* A ready queue's layout is fixed. */
	wr(0, VIRTIO_MMIO_QUEUE_NUM, 32);
	wr(0, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x50000);
	wr(0, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 1);
	cr_assert_eq(vq->size, 64);
	cr_assert_eq(vq->desc_gpa, 0x20000);
	cr_assert_eq(vq->avail_gpa, 0x21000);

	/* Queue 2 does not exist: its maximum reads 0 and nothing sticks. */
	wr(0, VIRTIO_MMIO_QUEUE_SEL, 2);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	wr(0, VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_READY), 0);

	/* 64-bit addresses arrive as two halves, in either order. */
	wr(0, VIRTIO_MMIO_QUEUE_SEL, 1);
	wr(0, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0x1);
	wr(0, VIRTIO_MMIO_QUEUE_DEVICE_LOW, 0x30000);
	cr_assert_eq(T.f[0].dev.vq[1].used_gpa, 0x100030000ULL);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_DEVICE_HIGH), 1);
	/* Linux takes a queue back by writing 0 and checks that it reads 0. */
	wr(0, VIRTIO_MMIO_QUEUE_READY, 1);
	wr(0, VIRTIO_MMIO_QUEUE_READY, 0);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_READY), 0);

	wr(0, VIRTIO_MMIO_STATUS, ALL_OK);
	cr_assert_eq(rd(0, VIRTIO_MMIO_STATUS), ALL_OK);
	cr_assert_eq(T.f[0].activated, 1);
	cr_assert(vq->started, "the ready queue runs");
	cr_assert_not(T.f[0].dev.vq[1].started, "the queue taken back does not");

	/* While the device runs, queues can be neither taken back nor re-laid out. */
	wr(0, VIRTIO_MMIO_QUEUE_SEL, 0);
	wr(0, VIRTIO_MMIO_QUEUE_READY, 0);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_READY), 1);
	wr(0, VIRTIO_MMIO_QUEUE_SEL, 1);
	wr(0, VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_READY), 0);
	wr(0, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x60000);
	cr_assert_eq(T.f[0].dev.vq[1].desc_gpa, 0);
}

static bool notified(void *arg)
{
	atomic_uint *n = arg;
	return atomic_load(n) > 0;
}

Test(mmio, queue_notify_reaches_the_device_on_the_io_thread)
{
	cr_assert(negotiate(0, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, 0, 16, 0x10000, 0x11000, 0x12000);
	setup_queue(0, 1, 16, 0x13000, 0x14000, 0x15000);

	/* Before DRIVER_OK a kick must not reach the device. */
	wr(0, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
	nanosleep(&(struct timespec){ .tv_nsec = 50000000 }, NULL);
	cr_assert_eq(atomic_load(&T.f[0].notified[1]), 0);

	wr(0, VIRTIO_MMIO_STATUS, ALL_OK);
	wr(0, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
	wait_for(notified, &T.f[0].notified[1], "queue 1's notification");
	wr(0, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	wait_for(notified, &T.f[0].notified[0], "queue 0's notification");
	/* Values that are not queue indices, and kicks of narrower width, do nothing. */
	wr(0, VIRTIO_MMIO_QUEUE_NOTIFY, FAKE_QUEUES);
	wr(0, VIRTIO_MMIO_QUEUE_NOTIFY, 0xffffffffu);
	wrn(0, VIRTIO_MMIO_QUEUE_NOTIFY, 0, 2);
	nanosleep(&(struct timespec){ .tv_nsec = 50000000 }, NULL);
	cr_assert_eq(atomic_load(&T.f[0].notified[0]), 1);
	cr_assert_eq(atomic_load(&T.f[0].notified[1]), 1);
	cr_assert_eq(atomic_load(&T.f[1].notified[0]), 0, "other devices are not involved");
}

static void raise_config(unsigned dev)
{
	struct virtio_dev *d = &T.f[dev].dev;
	pthread_mutex_lock(&d->lock);
	virtio_dev_config_changed(d);
	pthread_mutex_unlock(&d->lock);
}

Test(mmio, interrupt_status_ack_and_the_level_of_a_shared_line)
{
	raise_config(0);
	cr_assert_eq(rd(0, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
	cr_assert_eq(rd(0, VIRTIO_MMIO_CONFIG_GENERATION), 1);
	cr_assert_eq(atomic_load(&T.level[5]), 1);
	cr_assert_eq(atomic_load(&T.raised[5]), 1);
	/* Reading the status does not acknowledge it (unlike virtio-pci's ISR). */
	cr_assert_eq(rd(0, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
	cr_assert_eq(atomic_load(&T.level[5]), 1);

	/* Device 2 shares line 5: it is already up, and stays up until both acknowledged. */
	raise_config(2);
	cr_assert_eq(atomic_load(&T.raised[5]), 1);
	wr(0, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
	cr_assert_eq(rd(0, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	cr_assert_eq(atomic_load(&T.level[5]), 1, "device 2 still wants the shared line");
	/* Acknowledging a bit that is not set changes nothing. */
	wr(2, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
	cr_assert_eq(rd(2, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
	cr_assert_eq(atomic_load(&T.level[5]), 1);
	wr(2, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
	cr_assert_eq(atomic_load(&T.level[5]), 0);
	cr_assert_eq(atomic_load(&T.raised[6]), 0, "device 1's line never moved");

	/* Device 1 on its own line; its reset clears the status and lowers the line. */
	raise_config(1);
	cr_assert_eq(atomic_load(&T.level[6]), 1);
	wr(1, VIRTIO_MMIO_QUEUE_SEL, 1);
	wr(1, VIRTIO_MMIO_STATUS, 0);
	cr_assert_eq(rd(1, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	cr_assert_eq(atomic_load(&T.level[6]), 0);
	cr_assert_eq(T.m[1].regs.queue_sel, 0, "reset clears the selectors");
	cr_assert_eq(T.f[1].resets, 1);

	/* A snapshot restore re-derives the line from InterruptStatus. */
	T.f[1].dev.isr = VIRTIO_MMIO_INT_VRING;
	pthread_mutex_lock(&T.f[1].dev.lock);
	virtio_mmio_sync_irq(&T.m[1]);
	pthread_mutex_unlock(&T.f[1].dev.lock);
	cr_assert_eq(atomic_load(&T.level[6]), 1);
	/* ... and drives the line even when our record already says it is up (KVM's may not). */
	atomic_store(&T.level[6], 0);
	pthread_mutex_lock(&T.f[1].dev.lock);
	virtio_mmio_sync_irq(&T.m[1]);
	pthread_mutex_unlock(&T.f[1].dev.lock);
	cr_assert_eq(atomic_load(&T.level[6]), 1);
}

Test(mmio, device_config_space_at_0x100)
{
	cr_assert_eq(rdn(1, VIRTIO_MMIO_CONFIG, 1), 0x10);
	cr_assert_eq(rdn(1, VIRTIO_MMIO_CONFIG + 2, 2), 0x1312);
	cr_assert_eq(rdn(1, VIRTIO_MMIO_CONFIG + 4, 4), 0x17161514);
	cr_assert_eq(rdn(1, VIRTIO_MMIO_CONFIG + 8, 8), 0x1f1e1d1c1b1a1918ULL);
	wrn(1, VIRTIO_MMIO_CONFIG + 4, 0xa1b2c3d4, 4);
	cr_assert_eq(get_le32(T.f[1].config + 4), 0xa1b2c3d4);
	/* Beyond the device's config: its own bounds apply (zeros); beyond the window: ours. */
	cr_assert_eq(rdn(1, VIRTIO_MMIO_CONFIG + 0x400, 4), 0);
	uint8_t b[8];
	memset(b, 0xee, sizeof(b));
	virtio_mmio_io_ops.read(&T.m[1], VIRTIO_MMIO_WINDOW - 4, b, 8);
	cr_assert_eq(get_le64(b), 0, "a read crossing the window's end reads zero");
	virtio_mmio_io_ops.read(&T.m[1], 0x10000, b, 4);
	cr_assert_eq(get_le32(b), 0);
	memset(b, 0xff, sizeof(b));
	virtio_mmio_io_ops.write(&T.m[1], VIRTIO_MMIO_WINDOW - 4, b, 8);
	virtio_mmio_io_ops.write(&T.m[1], 0x10000, b, 4);
	virtio_mmio_io_ops.write(&T.m[1], VIRTIO_MMIO_CONFIG, b, 0);
	cr_assert_eq(get_le32(T.f[1].config + 4), 0xa1b2c3d4);
}

Test(mmio, odd_widths_offsets_and_values_are_harmless)
{
	/* Control registers: only aligned 32-bit accesses count. */
	cr_assert_eq(rdn(0, VIRTIO_MMIO_MAGIC_VALUE, 1), 0);
	cr_assert_eq(rdn(0, VIRTIO_MMIO_MAGIC_VALUE, 2), 0);
	cr_assert_eq(rdn(0, VIRTIO_MMIO_MAGIC_VALUE, 8), 0);
	cr_assert_eq(rdn(0, VIRTIO_MMIO_MAGIC_VALUE + 1, 4), 0);
	cr_assert_eq(rdn(0, 0x0fe, 4), 0, "straddles ConfigGeneration and the config space");
	/* Reserved offsets read zero. */
	cr_assert_eq(rd(0, 0x018), 0);
	cr_assert_eq(rd(0, 0x0f0), 0);

	wr(0, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	wrn(0, VIRTIO_MMIO_STATUS, 0, 1);
	wrn(0, VIRTIO_MMIO_STATUS, 0, 2);
	wrn(0, VIRTIO_MMIO_STATUS, 0, 8);
	wrn(0, VIRTIO_MMIO_STATUS + 1, 0, 4);
	cr_assert_eq(rd(0, VIRTIO_MMIO_STATUS), VIRTIO_STATUS_ACKNOWLEDGE, "no narrow reset");
	/* Reserved status bits: the write is dropped rather than truncated to a reset. */
	wr(0, VIRTIO_MMIO_STATUS, 0x100);
	cr_assert_eq(rd(0, VIRTIO_MMIO_STATUS), VIRTIO_STATUS_ACKNOWLEDGE);
	cr_assert_eq(T.f[0].resets, 0);

	/* Read-only registers ignore writes. */
	wr(0, VIRTIO_MMIO_MAGIC_VALUE, 0);
	wr(0, VIRTIO_MMIO_DEVICE_ID, 7);
	wr(0, VIRTIO_MMIO_QUEUE_NUM_MAX, 1);
	wr(0, VIRTIO_MMIO_INTERRUPT_STATUS, 3);
	wr(0, VIRTIO_MMIO_CONFIG_GENERATION, 9);
	wr(0, VIRTIO_MMIO_QUEUE_RESET, 1);
	cr_assert_eq(rd(0, VIRTIO_MMIO_MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
	cr_assert_eq(rd(0, VIRTIO_MMIO_DEVICE_ID), FAKE_ID);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_NUM_MAX), FAKE_QMAX);
	cr_assert_eq(rd(0, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	cr_assert_eq(rd(0, VIRTIO_MMIO_CONFIG_GENERATION), 0);
	cr_assert_eq(atomic_load(&T.level[5]), 0);

	/* Huge selectors select nothing. */
	wr(0, VIRTIO_MMIO_QUEUE_SEL, 0xffffffffu);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	wr(0, VIRTIO_MMIO_QUEUE_NUM, 16);
	wr(0, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
	wr(0, VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(rd(0, VIRTIO_MMIO_QUEUE_READY), 0);
	for (unsigned q = 0; q < FAKE_QUEUES; q++) {
		cr_assert_eq(T.f[0].dev.vq[q].desc_gpa, 0);
		cr_assert_not(T.f[0].dev.queue_enabled[q]);
	}
}

/* virtio-rng over the transport: a real ring in guest memory, the level line as the signal. */
static bool line5_up(void *arg)
{
	(void)arg;
	return atomic_load(&T.level[5]) == 1;
}

/* virtio-rng on a fresh bus with the same environment, set up as a driver would: queue 0 live. */
struct rng_rig {
	struct virtio_rng rng;
	struct virtio_mmio_bus mbus;
	struct virtio_mmio m;
	struct io_bus bus, saved;
};

#define RNG_DESC 0x10000ULL
#define RNG_AVAIL 0x11000ULL
#define RNG_USED 0x12000ULL
#define RNG_BUF 0x20000ULL

static void rng_rig_up(struct rng_rig *g, const struct rate_limiter_config *limits)
{
	io_bus_init(&g->bus, "MMIO");
	struct virtio_mmio_env env = T.mbus.env;
	env.mmio = &g->bus;
	struct cv_error err = { 0 };
	cr_assert_eq(virtio_mmio_bus_init(&g->mbus, &env, &err), 0, "%s", err.msg);
	cr_assert_eq(virtio_rng_init(&g->rng, &T.mem, &T.loop, limits, &err), 0, "%s", err.msg);
	cr_assert_eq(virtio_mmio_init(&g->m, &g->rng.dev, &g->mbus, &err), 0, "%s", err.msg);
	g->saved = T.bus;
	T.bus = g->bus;
	cr_assert_eq(rd(0, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_RNG);
	cr_assert(negotiate(0, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, 0, 16, RNG_DESC, RNG_AVAIL, RNG_USED);
	wr(0, VIRTIO_MMIO_STATUS, ALL_OK);
	cr_assert_eq(rd(0, VIRTIO_MMIO_STATUS), ALL_OK);
}

static void rng_rig_down(struct rng_rig *g)
{
	wr(0, VIRTIO_MMIO_STATUS, 0);
	T.bus = g->saved;
	virtio_mmio_destroy(&g->m);
	virtio_rng_destroy(&g->rng);
	virtio_mmio_bus_destroy(&g->mbus);
	io_bus_free(&g->bus);
}

/* Makes n buffers of 256 bytes available (descriptors 0..n-1) and kicks. */
static void rng_post(uint16_t n)
{
	for (uint16_t i = 0; i < n; i++) {
		uint8_t *d = guest_memory_ptr(&T.mem, RNG_DESC + 16u * i, 16);
		put_le64(d, RNG_BUF + 256u * i);
		put_le32(d + 8, 256);
		put_le16(d + 12, VIRTQ_DESC_F_WRITE);
		put_le16(guest_memory_ptr(&T.mem, RNG_AVAIL + 4 + 2u * i, 2), i);
	}
	put_le16(guest_memory_ptr(&T.mem, RNG_AVAIL + 2, 2), n);
	wr(0, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static uint16_t rng_used_idx(void)
{
	return get_le16((const uint8_t *)guest_memory_ptr(&T.mem, RNG_USED + 2, 2));
}

static bool rng_used_two(void *arg)
{
	(void)arg;
	return rng_used_idx() == 2;
}

Test(mmio, rng_fills_a_buffer_posted_through_the_registers)
{
	static struct rng_rig g;
	rng_rig_up(&g, NULL);
	rng_post(1);
	wait_for(line5_up, NULL, "the rng's interrupt");

	cr_assert_eq(rd(0, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
	const uint8_t *u = guest_memory_ptr(&T.mem, RNG_USED, 16);
	cr_assert_eq(get_le16(u + 2), 1, "one used entry");
	cr_assert_eq(get_le32(u + 4), 0, "for descriptor 0");
	cr_assert_eq(get_le32(u + 8), 256, "256 bytes written");
	const uint8_t *p = guest_memory_ptr(&T.mem, RNG_BUF, 256);
	unsigned zeros = 0;
	for (unsigned i = 0; i < 256; i++)
		zeros += p[i] == 0;
	cr_assert_lt(zeros, 16, "the buffer holds random bytes (%u zeros)", zeros);
	wr(0, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
	cr_assert_eq(atomic_load(&T.level[5]), 0);
	rng_rig_down(&g);
}

/* /entropy's rate_limiter: one request per 300 ms lets the second buffer wait for its timer. */
Test(mmio, rng_rate_limiter_holds_a_buffer_until_its_timer)
{
	static struct rng_rig g;
	struct rate_limiter_config one_per_300ms = {
		.ops = { .size = 1, .refill_time_ms = 300, .enabled = true },
	};
	rng_rig_up(&g, &one_per_300ms);
	rng_post(2);
	wait_for(line5_up, NULL, "the rng's interrupt");
	pthread_mutex_lock(&g.rng.dev.lock);
	uint16_t first = rng_used_idx();
	bool waiting = g.rng.rl_wait;
	uint64_t throttled = g.rng.throttled;
	pthread_mutex_unlock(&g.rng.dev.lock);
	/* Both were there at the kick: the device took one and left the other for the timer. */
	cr_assert_eq(first, 1, "the limiter let %u buffers through at once", first);
	cr_assert(waiting);
	cr_assert_eq(throttled, 1);
	wr(0, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
	wait_for(rng_used_two, NULL, "the second buffer, after the refill");
	cr_assert_eq(g.rng.bytes, 512);
	rng_rig_down(&g);
}

Test(mmio, window_and_device_limits)
{
	struct virtio_mmio extra, over;
	struct fake f;
	memset(&f, 0, sizeof(f));
	virtio_dev_init(&f.dev, "extra", &fake_ops, &f, 1, 16, 0, &T.mem, &T.loop);
	struct cv_error err = { 0 };
	cr_assert_eq(virtio_mmio_init(&extra, &f.dev, &T.mbus, &err), 0, "%s", err.msg);
	cr_assert_eq(extra.base, base(NDEV));
	cr_assert_eq(virtio_mmio_init(&over, &f.dev, &T.mbus, &err), -1, "max_devices is enforced");
	cr_assert(strstr(err.msg, "virtio-mmio devices"), "%s", err.msg);
	virtio_mmio_destroy(&extra);
	virtio_mmio_destroy(&over);
	virtio_dev_destroy(&f.dev);
}

/* ---- kernel command line ---- */

Test(mmio_cmdline, device_parameter)
{
	char buf[64];
	cr_assert_gt(virtio_mmio_cmdline_param(&(struct virtio_mmio){ .base = 0xd0002000,
								      .gsi = 7 },
					       buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "virtio_mmio.device=4K@0xd0002000:7");
	cr_assert_eq(virtio_mmio_cmdline_param(&(struct virtio_mmio){ .base = 0xd0002000 }, buf,
					       10), -1, "truncation is an error");
}

Test(mmio_cmdline, pci_off_detection)
{
	static const struct {
		const char *cmdline;
		bool off;
	} cases[] = {
		{ NULL, false },
		{ "", false },
		{ "console=ttyS0", false },
		{ "pci=off", true },
		{ "console=ttyS0 reboot=k panic=1 pci=off", true },
		{ "  pci=off  ", true },
		{ "pci=nomsi,off", true },
		{ "pci=off,nomsi", true },
		{ "pci=nomsi", false },
		{ "pci=offx", false },
		{ "pci=of", false },
		{ "pci=nooff", false },
		{ "pci=,off,", true },
		{ "xpci=off", false },
		{ "pci= off", false },
		{ "pcioff", false },
		{ "\"pci=off\"", true },
		{ "pci=\"off\"", true },
		{ "a=\"x y\" pci=off", true },
		{ "a=\"x -- y\" pci=off", true },
		{ "a=\"x pci=off\"", false },
		{ "console=ttyS0 -- pci=off", false },
		{ "console=ttyS0 --x pci=off", true },
		{ "pci=off -- sh", true },
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(cases); i++)
		cr_expect_eq(virtio_mmio_cmdline_disables_pci(cases[i].cmdline), cases[i].off,
			     "'%s'", cases[i].cmdline ? cases[i].cmdline : "(null)");
}

Test(mmio_cmdline, transport_resolution)
{
	cr_assert_eq(virtio_transport_resolve(VIRTIO_TRANSPORT_AUTO, "console=ttyS0"),
		     VIRTIO_TRANSPORT_PCI);
	cr_assert_eq(virtio_transport_resolve(VIRTIO_TRANSPORT_AUTO, "console=ttyS0 pci=off"),
		     VIRTIO_TRANSPORT_MMIO);
	cr_assert_eq(virtio_transport_resolve(VIRTIO_TRANSPORT_AUTO, NULL), VIRTIO_TRANSPORT_PCI);
	cr_assert_eq(virtio_transport_resolve(VIRTIO_TRANSPORT_MMIO, "console=ttyS0"),
		     VIRTIO_TRANSPORT_MMIO);
	cr_assert_eq(virtio_transport_resolve(VIRTIO_TRANSPORT_PCI, "pci=off"),
		     VIRTIO_TRANSPORT_PCI, "an explicit choice wins");
	struct device_config dc = { .transport = VIRTIO_TRANSPORT_MMIO };
	cr_assert_eq(vm_devices_level_irqs(&dc), (1u << 5) | (1u << 6) | (1u << 7) | (1u << 10) |
						 (1u << 11) | (1u << 14) | (1u << 15));
	dc.transport = VIRTIO_TRANSPORT_PCI;
	cr_assert_eq(vm_devices_level_irqs(&dc), 0, "PCI mode leaves the ISA lines as they were");
}

/* ---- firmware tables: the lines are level-triggered, active high ---- */

static uint8_t tables[LAYOUT_ACPI_MAX];

Test(mmio_tables, level_lines_in_madt_and_mp_table_and_no_pci_root)
{
	uint16_t mask = (1u << 5) | (1u << 9) | (1u << 14);
	struct acpi_params ap = { .n_cpus = 2, .ioapic_id = 2, .base = LAYOUT_ACPI_TABLES,
				  .level_irqs = mask };
	size_t len;
	struct cv_error err = { 0 };
	cr_assert_eq(acpi_build(&ap, tables, sizeof(tables), &len, &err), 0, "%s", err.msg);
	const uint8_t *xsdt = tables + (get_le64(tables + 24) - LAYOUT_ACPI_TABLES);
	const uint8_t *madt = tables + (get_le64(xsdt + 44) - LAYOUT_ACPI_TABLES);
	uint32_t mlen = get_le32(madt + 4);
	uint8_t sum = 0;
	for (uint32_t i = 0; i < mlen; i++)
		sum = (uint8_t)(sum + madt[i]);
	cr_assert_eq(sum, 0, "MADT checksum");
	uint16_t seen = 0;
	unsigned overrides = 0;
	for (uint32_t off = 44; off < mlen;) {
		const uint8_t *e = madt + off;
		cr_assert_geq(e[1], 2);
		if (e[0] == 2) {
			cr_assert_eq(e[2], 0, "ISA bus");
			cr_assert_eq(get_le32(e + 4), e[3], "IRQ n stays on pin n");
			cr_assert_eq(get_le16(e + 8), 0x000d, "active high, level");
			seen |= (uint16_t)(1u << e[3]);
			overrides++;
		}
		off += e[1];
	}
	cr_assert_eq(seen, mask, "one override per line (the SCI's counts once)");
	cr_assert_eq(overrides, 3);

	/* The PCI root bridge is in the DSDT unless the VM is on virtio-mmio. */
	for (int no_pci = 0; no_pci < 2; no_pci++) {
		ap.no_pci_root = no_pci;
		cr_assert_eq(acpi_build(&ap, tables, sizeof(tables), &len, &err), 0, "%s", err.msg);
		xsdt = tables + (get_le64(tables + 24) - LAYOUT_ACPI_TABLES);
		const uint8_t *fadt = tables + (get_le64(xsdt + 36) - LAYOUT_ACPI_TABLES);
		const uint8_t *dsdt = tables + (get_le64(fadt + ACPI_FADT_X_DSDT) - LAYOUT_ACPI_TABLES);
		uint32_t dlen = get_le32(dsdt + 4);
		sum = 0;
		for (uint32_t i = 0; i < dlen; i++)
			sum = (uint8_t)(sum + dsdt[i]);
		cr_assert_eq(sum, 0, "DSDT checksum");
		cr_assert(memmem(dsdt + 36, dlen - 36, "_S5_", 4), "_S5 stays");
		cr_assert_eq(memmem(dsdt + 36, dlen - 36, "PCI0", 4) != NULL, !no_pci,
			     "PCI0 %s", no_pci ? "dropped" : "kept");
	}

	/* iasl (if installed) accepts the MADT with the overrides and the DSDT without PCI0. */
	if (iasl_available()) {
		char dir[] = "/tmp/cvisor-mmio-acpi-XXXXXX";
		cr_assert(mkdtemp(dir));
		const uint8_t *fadt = tables + (get_le64(xsdt + 36) - LAYOUT_ACPI_TABLES);
		const struct { const char *name; const uint8_t *t; } tabs[] = {
			{ "apic", tables + (get_le64(xsdt + 44) - LAYOUT_ACPI_TABLES) },
			{ "dsdt", tables + (get_le64(fadt + ACPI_FADT_X_DSDT) - LAYOUT_ACPI_TABLES) },
		};
		for (size_t i = 0; i < CV_ARRAY_SIZE(tabs); i++)
			iasl_check_table(dir, tabs[i].name, tabs[i].t);
		char cmd[512];
		snprintf(cmd, sizeof(cmd), "test $(grep -c 'Trigger Mode : 3' %s/apic.dsl) -eq 3",
			 dir);
		cr_assert_eq(system(cmd), 0, "iasl does not see 3 level-triggered overrides (%s)", dir);
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		cr_assert_eq(system(cmd), 0);
	}

	static uint8_t mp[LAYOUT_MPTABLE_MAX];
	struct mptable_params mpp = { .n_cpus = 2, .ioapic_id = 2, .base = LAYOUT_MPTABLE,
				      .level_irqs = (1u << 5) | (1u << 14) };
	cr_assert_eq(mptable_build(&mpp, mp, sizeof(mp), &len, &err), 0, "%s", err.msg);
	const uint8_t *t = mp + 16;
	unsigned count = get_le16(t + 34), level = 0;
	const uint8_t *e = t + 44;
	for (unsigned i = 0; i < count; i++) {
		if (e[0] == 0) {
			e += 20;
			continue;
		}
		if (e[0] == 3) {
			bool want = e[5] == 5 || e[5] == 14;
			cr_assert_eq(get_le16(e + 2), want ? 0x000d : 0, "IRQ %u flags", e[5]);
			level += want;
		}
		e += 8;
	}
	cr_assert_eq(level, 2);
	uint8_t s = 0;
	for (unsigned i = 0; i < get_le16(t + 4); i++)
		s = (uint8_t)(s + t[i]);
	cr_assert_eq(s, 0, "MP table checksum");
}
