/*
 * libFuzzer target for the virtio-mmio transport (src/vmm/virtio/virtio_mmio.c): the guest's
 * register accesses at any offset and width through the MMIO bus decoder, interleaved with the
 * I/O thread's queue work, device-side interrupts, guest RAM contents and a well-behaved driver's
 * bring-up and buffer posts, in the order the fuzzer's bytes say (mmio_input.h). Three devices
 * on two lines: virtio-rng (queue work on rings the fuzzer can corrupt) and two recording
 * devices that check how the transport calls them; devices 0 and 2 share a line. The I/O thread
 * is fz_pump, so everything runs on this thread.
 *
 * Invariants (abort on violation), checked after every operation:
 *   - each line's level is the OR of InterruptStatus != 0 over its devices, and the transport
 *     drives KVM only on changes of that OR;
 *   - InterruptStatus holds only the queue and config bits; queue sizes stay powers of two within
 *     the device maximum; a started queue is one the driver made ready; FEATURES_OK implies
 *     features we offered, VERSION_1 included;
 *   - a device's queue_notify runs only while it runs, for a started queue; config accesses
 *     reach the device with a width of 1-8 bytes inside the config space;
 *   - control registers read as zero unless accessed 32 bits wide and aligned, and otherwise
 *     read what the device state says (magic, version, status, InterruptStatus, generation,
 *     QueueNumMax for the selected queue);
 *   - a status write of 0 leaves InterruptStatus 0 and no queue ready.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "devices/bus.h"
#include "fuzz_driver.h"
#include "layout.h"
#include "mmio_input.h"
#include "util.h"
#include "virtio/rng.h"
#include "virtio/virtio_mmio.h"

#define RAM_SIZE (2ULL << 20)
#define REC_QUEUES 2
#define REC_QMAX 256
#define BUF_GPA 0x80000u             /* MMF_OP_POST buffers: 256 bytes per descriptor index */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A device that checks how the transport calls it and returns every chain it is given. */
struct rec {
	struct virtio_dev dev;
	uint8_t config[24];
	struct virtq_elem elem;
};

static const uint8_t lines[] = { 5, 6 };

static struct state {
	struct guest_memory mem;
	struct evloop loop;
	struct io_bus bus;
	struct virtio_mmio_bus mbus;
	struct virtio_mmio m[MMF_DEVICES];
	struct virtio_rng rng;
	struct rec rec[2];
	struct virtio_dev *dev[MMF_DEVICES];
	int level[16];
	uint16_t qsize[MMF_DEVICES];     /* queue 0's size after MMF_OP_UP, 0 if not up */
	uint16_t avail_idx[MMF_DEVICES];
} *S;

static void set_line(void *ctx, unsigned gsi, int level)
{
	FZ_CHECK(ctx == S);
	FZ_CHECK(gsi < 16);
	FZ_CHECK(S->level[gsi] != level);            /* only changes reach KVM */
	S->level[gsi] = level;
}

static void rec_config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	struct rec *r = d->priv;
	FZ_CHECK(len >= 1 && len <= 8 && off + len <= VIRTIO_MMIO_WINDOW - VIRTIO_MMIO_CONFIG);
	if (off < sizeof(r->config) && len <= sizeof(r->config) - off)
		memcpy(data, r->config + off, len);
}

static void rec_config_write(struct virtio_dev *d, uint32_t off, const uint8_t *data,
			     uint32_t len)
{
	struct rec *r = d->priv;
	FZ_CHECK(len >= 1 && len <= 8 && off + len <= VIRTIO_MMIO_WINDOW - VIRTIO_MMIO_CONFIG);
	if (off < sizeof(r->config) && len <= sizeof(r->config) - off)
		memcpy(r->config + off, data, len);
}

static int rec_activate(struct virtio_dev *d)
{
	FZ_CHECK(d->status & VIRTIO_STATUS_FEATURES_OK);
	for (unsigned q = 0; q < d->num_queues; q++)
		FZ_CHECK(!d->vq[q].started || d->queue_enabled[q]);
	return 0;
}

static void rec_notify(struct virtio_dev *d, unsigned q)
{
	struct rec *r = d->priv;
	FZ_CHECK(q < d->num_queues);
	FZ_CHECK(virtio_dev_running(d) && d->vq[q].started && d->queue_enabled[q]);
	struct virtq *vq = &d->vq[q];
	int got;
	bool used = false;
	while ((got = virtq_pop(vq, &r->elem)) == 1) {
		virtq_push(vq, &r->elem, 0);
		used = true;
	}
	if (got < 0)
		virtio_dev_fail(d, vq->error);
	if (used)
		virtio_dev_notify_used(d, q);
}

static const struct virtio_dev_ops rec_ops = {
	.device_id = 0x7e,
	.config_read = rec_config_read,
	.config_write = rec_config_write,
	.activate = rec_activate,
	.queue_notify = rec_notify,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	S = calloc(1, sizeof(*S));
	FZ_CHECK(S != NULL);
	fz_guest_memory(&S->mem, RAM_SIZE);
	struct cv_error err = { 0 };
	FZ_CHECK(evloop_init(&S->loop, &err) == 0);
	io_bus_init(&S->bus, "MMIO");
	struct virtio_mmio_env env = {
		.mmio = &S->bus, .loop = &S->loop, .vm_fd = -1, .base = LAYOUT_VIRTIO_MMIO,
		.max_devices = MMF_DEVICES, .lines = lines, .n_lines = CV_ARRAY_SIZE(lines),
		.set_line = set_line, .line_ctx = S,
	};
	FZ_CHECK(virtio_mmio_bus_init(&S->mbus, &env, &err) == 0);
	FZ_CHECK(virtio_rng_init(&S->rng, &S->mem, &S->loop, NULL, &err) == 0);
	S->dev[0] = &S->rng.dev;
	for (unsigned i = 0; i < 2; i++) {
		virtio_dev_init(&S->rec[i].dev, "rec", &rec_ops, &S->rec[i], REC_QUEUES, REC_QMAX,
				(1ULL << VIRTIO_RING_F_INDIRECT_DESC) |
				(1ULL << VIRTIO_RING_F_EVENT_IDX) | (1ULL << 3),
				&S->mem, &S->loop);
		S->dev[1 + i] = &S->rec[i].dev;
	}
	for (unsigned i = 0; i < MMF_DEVICES; i++)
		FZ_CHECK(virtio_mmio_init(&S->m[i], S->dev[i], &S->mbus, &err) == 0);
	return 0;
}

static uint64_t window(unsigned dev)
{
	return LAYOUT_VIRTIO_MMIO + (uint64_t)dev * VIRTIO_MMIO_WINDOW;
}

static void reg_write(unsigned dev, uint32_t off, uint32_t v)
{
	uint8_t b[4];
	put_le32(b, v);
	io_bus_access(&S->bus, window(dev) + off, b, 4, true);
}

static uint32_t reg_read(unsigned dev, uint32_t off)
{
	uint8_t b[4];
	io_bus_access(&S->bus, window(dev) + off, b, 4, false);
	return get_le32(b);
}

static void check_all(void)
{
	int want[16] = { 0 };
	for (unsigned i = 0; i < MMF_DEVICES; i++) {
		struct virtio_dev *d = S->dev[i];
		FZ_CHECK((d->isr & ~3u) == 0);
		if (d->isr)
			want[S->m[i].gsi] = 1;
		for (unsigned q = 0; q < d->num_queues; q++) {
			uint16_t n = d->vq[q].size;
			FZ_CHECK(n && !(n & (n - 1)) && n <= d->queue_max_size);
			FZ_CHECK(!d->vq[q].started || d->queue_enabled[q]);
		}
		if (d->status & VIRTIO_STATUS_FEATURES_OK) {
			FZ_CHECK(!(d->guest_features & ~d->host_features));
			FZ_CHECK(virtio_dev_has(d, VIRTIO_F_VERSION_1));
		}
	}
	for (unsigned g = 0; g < 16; g++)
		FZ_CHECK(S->level[g] == want[g]);
}

/* A read through the bus, compared with what the device state says. */
static void do_read(unsigned dev, uint32_t off, unsigned width)
{
	uint8_t b[8];
	memset(b, 0xa5, sizeof(b));
	io_bus_access(&S->bus, window(dev) + off, b, width, false);
	uint64_t at = (uint64_t)dev * VIRTIO_MMIO_WINDOW + off;
	unsigned t = (unsigned)(at / VIRTIO_MMIO_WINDOW);
	uint32_t o = (uint32_t)(at % VIRTIO_MMIO_WINDOW);
	if (t >= MMF_DEVICES || o + width > VIRTIO_MMIO_WINDOW)
		return;                      /* nothing there, or truncated at the window's end */
	if (o >= VIRTIO_MMIO_CONFIG)
		return;
	if (width != 4 || (o & 3)) {
		for (unsigned i = 0; i < width; i++)
			FZ_CHECK(b[i] == 0);
		return;
	}
	struct virtio_dev *d = S->dev[t];
	uint32_t v = get_le32(b);
	switch (o) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		FZ_CHECK(v == VIRTIO_MMIO_MAGIC);
		break;
	case VIRTIO_MMIO_VERSION_REG:
		FZ_CHECK(v == 2);
		break;
	case VIRTIO_MMIO_DEVICE_ID:
		FZ_CHECK(v == d->ops->device_id);
		break;
	case VIRTIO_MMIO_STATUS:
		FZ_CHECK(v == d->status);
		break;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		FZ_CHECK(v == d->isr);
		break;
	case VIRTIO_MMIO_CONFIG_GENERATION:
		FZ_CHECK(v == d->config_generation);
		break;
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		FZ_CHECK(v == (S->m[t].regs.queue_sel < d->num_queues ? d->queue_max_size : 0u));
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		FZ_CHECK(v == (S->m[t].regs.queue_sel < d->num_queues &&
			       d->queue_enabled[S->m[t].regs.queue_sel]));
		break;
	default:
		break;
	}
}

static void status_write(unsigned dev, uint32_t v)
{
	reg_write(dev, VIRTIO_MMIO_STATUS, v);
	if (v != 0)
		return;
	struct virtio_dev *d = S->dev[dev];
	FZ_CHECK(d->isr == 0 && d->status == 0);
	for (unsigned q = 0; q < d->num_queues; q++)
		FZ_CHECK(!d->queue_enabled[q] && !d->vq[q].started);
	S->qsize[dev] = 0;
}

/* The Linux driver's bring-up with every offered feature and all queues ready. */
static void bring_up(unsigned dev, unsigned size_log)
{
	struct virtio_dev *d = S->dev[dev];
	status_write(dev, 0);
	reg_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	reg_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	uint64_t f = 0;
	for (uint32_t sel = 0; sel < 2; sel++) {
		reg_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
		f |= (uint64_t)reg_read(dev, VIRTIO_MMIO_DEVICE_FEATURES) << (32 * sel);
	}
	FZ_CHECK(f == d->host_features);
	for (uint32_t sel = 0; sel < 2; sel++) {
		reg_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
		reg_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(f >> (32 * sel)));
	}
	uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	reg_write(dev, VIRTIO_MMIO_STATUS, st);
	FZ_CHECK(reg_read(dev, VIRTIO_MMIO_STATUS) == st);
	uint32_t size = 1u << (size_log % 9);                  /* 1 .. 256 */
	if (size > d->queue_max_size)
		size = d->queue_max_size;
	for (unsigned q = 0; q < d->num_queues; q++) {
		uint64_t ring = MMF_RING_GPA + (uint64_t)(dev * 4 + q) * 0x4000;
		memset(guest_memory_ptr(&S->mem, ring, 0x4000), 0, 0x4000);
		reg_write(dev, VIRTIO_MMIO_QUEUE_SEL, q);
		FZ_CHECK(reg_read(dev, VIRTIO_MMIO_QUEUE_READY) == 0);
		FZ_CHECK(reg_read(dev, VIRTIO_MMIO_QUEUE_NUM_MAX) == d->queue_max_size);
		reg_write(dev, VIRTIO_MMIO_QUEUE_NUM, size);
		reg_write(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)ring);
		reg_write(dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
		reg_write(dev, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)ring + 0x1000);
		reg_write(dev, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
		reg_write(dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)ring + 0x2000);
		reg_write(dev, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
		reg_write(dev, VIRTIO_MMIO_QUEUE_READY, 1);
		FZ_CHECK(d->vq[q].size == size);
	}
	st |= VIRTIO_STATUS_DRIVER_OK;
	reg_write(dev, VIRTIO_MMIO_STATUS, st);
	FZ_CHECK(reg_read(dev, VIRTIO_MMIO_STATUS) == st);
	for (unsigned q = 0; q < d->num_queues; q++)
		FZ_CHECK(d->vq[q].started);
	S->qsize[dev] = (uint16_t)size;
	S->avail_idx[dev] = 0;
}

/* One descriptor on queue 0 (as laid out by bring_up), made available and kicked. */
static void post(unsigned dev, uint16_t idx, uint32_t len, uint8_t flags)
{
	uint16_t n = S->qsize[dev];
	if (!n)
		return;
	idx %= n;
	uint64_t ring = MMF_RING_GPA + (uint64_t)dev * 4 * 0x4000;
	uint8_t *desc = guest_memory_ptr(&S->mem, ring + 16ULL * idx, 16);
	put_le64(desc, BUF_GPA + (uint64_t)idx * 0x100);
	put_le32(desc + 8, len);
	put_le16(desc + 12, flags);
	put_le16(desc + 14, (uint16_t)((idx + 1) % n));
	uint8_t *avail = guest_memory_ptr(&S->mem, ring + 0x1000, 4 + 2ULL * n);
	put_le16(avail + 4 + 2 * (S->avail_idx[dev] % n), idx);
	S->avail_idx[dev]++;
	put_le16(avail + 2, S->avail_idx[dev]);
	reg_write(dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static void device_irq(unsigned dev, uint8_t what)
{
	struct virtio_dev *d = S->dev[dev];
	pthread_mutex_lock(&d->lock);
	if (what & 1) {
		virtio_dev_config_changed(d);
	} else {
		unsigned q = (unsigned)(what >> 1) % d->num_queues;
		if (d->vq[q].started)
			virtio_dev_notify_used(d, q);
	}
	pthread_mutex_unlock(&d->lock);
}

static void pump_all(void)
{
	while (fz_pump(&S->loop, 0) > 0) {
	}
}

/* Back to power-on: devices reset, kicks drained, RAM and config contents as at start. */
static void reset_all(void)
{
	for (unsigned i = 0; i < MMF_DEVICES; i++) {
		status_write(i, 0);
		S->dev[i]->config_generation = 0;
	}
	pump_all();
	memset(guest_memory_ptr(&S->mem, 0, MMF_MEM_WINDOW), 0, MMF_MEM_WINDOW);
	for (unsigned i = 0; i < 2; i++)
		for (unsigned k = 0; k < sizeof(S->rec[i].config); k++)
			S->rec[i].config[k] = (uint8_t)(k * 17 + i);
	check_all();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	reset_all();
	unsigned steps = 0;
	while (fz_more(&in) && steps++ < 4096) {
		uint8_t op = fz_u8(&in) % MMF_OPS;
		unsigned dev;
		uint32_t off;
		uint8_t w;
		switch (op) {
		case MMF_OP_WRITE32:
			dev = fz_u8(&in) % MMF_DEVICES;
			off = fz_u16(&in);
			reg_write(dev, off, fz_u32(&in));
			break;
		case MMF_OP_READ:
			dev = fz_u8(&in) % MMF_DEVICES;
			off = fz_u16(&in);
			do_read(dev, off, 1u << (fz_u8(&in) & 3));
			break;
		case MMF_OP_WRITE: {
			dev = fz_u8(&in) % MMF_DEVICES;
			off = fz_u16(&in);
			w = (uint8_t)(1u << (fz_u8(&in) & 3));
			uint8_t b[8];
			put_le64(b, fz_u64(&in));
			io_bus_access(&S->bus, window(dev) + off, b, w, true);
			break;
		}
		case MMF_OP_PUMP:
			pump_all();
			break;
		case MMF_OP_IRQ:
			dev = fz_u8(&in) % MMF_DEVICES;
			device_irq(dev, fz_u8(&in));
			break;
		case MMF_OP_MEM: {
			uint64_t gpa = (uint64_t)fz_u16(&in) * 16;
			uint8_t len = fz_u8(&in);
			uint8_t buf[255];
			size_t got = fz_take(&in, buf, len);
			if (gpa + got <= MMF_MEM_WINDOW)
				memcpy(guest_memory_ptr(&S->mem, gpa, got ? got : 1), buf, got);
			break;
		}
		case MMF_OP_UP:
			dev = fz_u8(&in) % MMF_DEVICES;
			bring_up(dev, fz_u8(&in));
			break;
		case MMF_OP_POST: {
			dev = fz_u8(&in) % MMF_DEVICES;
			uint16_t idx = fz_u16(&in);
			uint32_t len = fz_u32(&in);
			post(dev, idx, len, fz_u8(&in));
			break;
		}
		}
		check_all();
	}
	pump_all();
	check_all();
	return 0;
}
