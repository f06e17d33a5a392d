/*
 * bench-virtq: host-side cost of the split virtqueue core (src/vmm/virtio/virtq.c) on one core.
 * A driver in this program lays out the rings inside a guest_memory the way Linux's virtio_ring
 * does (a free list of descriptors, optional indirect tables, optional event index), adds a batch
 * of requests and publishes them with one avail->idx store; the device side pops every chain,
 * touches what a real device touches (virtio-blk: reads the 16-byte header, writes the status
 * byte), pushes it back and asks whether to interrupt; the driver then reclaims the descriptors.
 *
 * Reports, per configuration, the device's time per request (pop + push + notification check),
 * the whole round trip per request (driver included), and how many kicks and interrupts the
 * suppression scheme leaves per request. Figures only, no assertions: read the best of the runs.
 *   bench-virtq [-n requests] [-b batch] [-q queue size] [-r runs]
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "memory.h"
#include "virtio/virtq.h"

#define MEM_SIZE (64ULL << 20)
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x40000ULL
#define USED_GPA 0x50000ULL
#define TABLE_GPA 0x100000ULL      /* one 3-entry indirect table per head */
#define HDR_GPA 0x200000ULL        /* 16-byte request headers, one per head */
#define STATUS_GPA 0x300000ULL     /* status bytes */
#define DATA_GPA 0x1000000ULL      /* 4 KiB data buffers, one per head */
#define DATA_LEN 4096

struct config {
	const char *name;
	unsigned segs;                 /* 1: one writable 4 KiB buffer; 3: blk header/data/status */
	bool indirect;
	bool event_idx;
};

/* The driver: its view of the rings and its descriptor free list. */
struct driver {
	struct guest_memory *mem;
	uint8_t *desc, *avail, *used;
	uint16_t size;
	uint16_t avail_idx;            /* next avail index to publish */
	uint16_t used_seen;            /* used entries reclaimed so far */
	uint16_t free_head[VIRTQ_MAX_SIZE];   /* stack of free descriptor indices */
	unsigned n_free;
	uint8_t chain_len[VIRTQ_MAX_SIZE];    /* descriptors a head's chain holds */
	uint16_t chain_next[VIRTQ_MAX_SIZE];  /* the driver's own copy of each next field */
};

struct result {
	double device_ns;              /* per request */
	double total_ns;
	double kicks, irqs;            /* per request */
};

static struct virtq vq;
static struct virtq_elem elem;
static struct driver drv;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint8_t *gp(uint64_t gpa)
{
	return guest_memory_ptr(drv.mem, gpa, 1);
}

static void put_desc(uint8_t *table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *p = table + 16 * i;
	put_le64(p, addr);
	put_le32(p + 8, len);
	put_le16(p + 12, flags);
	put_le16(p + 14, next);
}

static void driver_init(struct guest_memory *mem, uint16_t size)
{
	memset(&drv, 0, sizeof(drv));
	drv.mem = mem;
	drv.size = size;
	drv.desc = gp(DESC_GPA);
	drv.avail = gp(AVAIL_GPA);
	drv.used = gp(USED_GPA);
	memset(drv.avail, 0, 6 + 2 * (size_t)size);
	memset(drv.used, 0, 6 + 8 * (size_t)size);
	for (unsigned i = 0; i < size; i++)
		drv.free_head[drv.n_free++] = (uint16_t)(size - 1 - i);
}

/* Adds one request; false if the descriptors ran out. */
static bool driver_add(const struct config *c)
{
	unsigned need = c->indirect ? 1 : c->segs;
	if (drv.n_free < need)
		return false;
	uint16_t ids[3] = { 0 };
	for (unsigned k = 0; k < need; k++)
		ids[k] = drv.free_head[--drv.n_free];
	uint16_t head = ids[0];
	uint64_t hdr = HDR_GPA + 16ULL * head, data = DATA_GPA + (uint64_t)DATA_LEN * head;
	uint64_t status = STATUS_GPA + head;
	if (c->indirect) {
		uint64_t t = TABLE_GPA + 48ULL * head;
		uint8_t *tp = gp(t);
		if (c->segs == 3) {
			put_desc(tp, 0, hdr, 16, VIRTQ_DESC_F_NEXT, 1);
			put_desc(tp, 1, data, DATA_LEN, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
			put_desc(tp, 2, status, 1, VIRTQ_DESC_F_WRITE, 0);
		} else {
			put_desc(tp, 0, data, DATA_LEN, VIRTQ_DESC_F_WRITE, 0);
		}
		put_desc(drv.desc, head, t, 16 * c->segs, VIRTQ_DESC_F_INDIRECT, 0);
	} else if (c->segs == 3) {
		put_desc(drv.desc, ids[0], hdr, 16, VIRTQ_DESC_F_NEXT, ids[1]);
		put_desc(drv.desc, ids[1], data, DATA_LEN, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
			 ids[2]);
		put_desc(drv.desc, ids[2], status, 1, VIRTQ_DESC_F_WRITE, 0);
		drv.chain_next[ids[0]] = ids[1];
		drv.chain_next[ids[1]] = ids[2];
	} else {
		put_desc(drv.desc, head, data, DATA_LEN, VIRTQ_DESC_F_WRITE, 0);
	}
	drv.chain_len[head] = (uint8_t)need;
	/* The header a block driver would fill in: type, reserved, sector. */
	if (c->segs == 3) {
		uint8_t *h = gp(hdr);
		put_le32(h, 1);
		put_le32(h + 4, 0);
		put_le64(h + 8, head);
	}
	put_le16(drv.avail + 4 + 2 * (drv.avail_idx & (drv.size - 1)), head);
	drv.avail_idx++;
	return true;
}

/* Publishes the batch; returns whether the device asked to be kicked for it. */
static bool driver_publish(const struct config *c, uint16_t old)
{
	__atomic_store_n((uint16_t *)(drv.avail + 2), htole16(drv.avail_idx), __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (c->event_idx) {
		uint16_t ev = le16toh(__atomic_load_n((uint16_t *)(drv.used + 4 + 8 * drv.size),
						      __ATOMIC_ACQUIRE));
		return (uint16_t)(drv.avail_idx - ev - 1) < (uint16_t)(drv.avail_idx - old);
	}
	return !(le16toh(__atomic_load_n((uint16_t *)drv.used, __ATOMIC_ACQUIRE)) &
		 VIRTQ_USED_F_NO_NOTIFY);
}

/* Takes back completed chains; returns how many. */
static unsigned driver_reclaim(void)
{
	uint16_t idx = le16toh(__atomic_load_n((uint16_t *)(drv.used + 2), __ATOMIC_ACQUIRE));
	unsigned n = 0;
	while (drv.used_seen != idx) {
		const uint8_t *e = drv.used + 4 + 8 * (drv.used_seen & (drv.size - 1));
		uint16_t id = (uint16_t)get_le32(e);
		uint16_t d = id;
		for (unsigned k = 0; k < drv.chain_len[id]; k++) {
			drv.free_head[drv.n_free++] = d;
			d = drv.chain_next[d];
		}
		drv.used_seen++;
		n++;
	}
	/* Callbacks back on, as Linux's virtqueue_enable_cb: interrupt me at the next completion
	 * (used_event; with event index) or leave avail->flags clear (without). */
	put_le16(drv.avail + 4 + 2 * drv.size, drv.used_seen);
	return n;
}

/* The device: everything it does for the requests of one notification. */
static unsigned device_run(const struct config *c, unsigned *irqs)
{
	unsigned done = 0;
	int r;
	while ((r = virtq_pop(&vq, &elem)) == 1) {
		uint32_t written = 0;
		if (c->segs == 3) {
			uint8_t hdr[16];
			if (iov_to_buf(elem.iov, elem.n_out, 0, hdr, sizeof(hdr)) != sizeof(hdr))
				abort();
			uint8_t status = 0;
			iov_from_buf(elem.iov + elem.n_out, elem.n_in, elem.in_len - 1, &status, 1);
			written = (uint32_t)elem.in_len;
		} else {
			written = (uint32_t)elem.in_len;
		}
		virtq_push(&vq, &elem, written);
		done++;
	}
	if (r < 0) {
		fprintf(stderr, "bench-virtq: queue broke: %s\n", vq.error);
		exit(1);
	}
	if (done && virtq_should_notify(&vq))
		(*irqs)++;
	return done;
}

static struct result run(struct guest_memory *mem, const struct config *c, uint16_t qsize,
			 unsigned batch, uint64_t requests)
{
	driver_init(mem, qsize);
	memset(&vq, 0, sizeof(vq));
	vq.size = qsize;
	vq.desc_gpa = DESC_GPA;
	vq.avail_gpa = AVAIL_GPA;
	vq.used_gpa = USED_GPA;
	vq.indirect = c->indirect;
	vq.event_idx = c->event_idx;
	if (virtq_start(&vq, mem) < 0) {
		fprintf(stderr, "bench-virtq: start: %s\n", vq.error);
		exit(1);
	}
	/* The device asks for kicks once at start (what a device does after DRIVER_OK). */
	virtq_set_notification(&vq, true);

	uint64_t added = 0, completed = 0, device_time = 0;
	unsigned kicks = 0, irqs = 0;
	uint64_t t0 = now_ns();
	while (completed < requests) {
		completed += driver_reclaim();
		uint16_t old = drv.avail_idx;
		unsigned n = 0;
		while (n < batch && added < requests && driver_add(c)) {
			n++;
			added++;
		}
		if (n && driver_publish(c, old))
			kicks++;
		uint64_t d0 = now_ns();
		device_run(c, &irqs);
		device_time += now_ns() - d0;
	}
	uint64_t total = now_ns() - t0;
	virtq_stop(&vq);
	return (struct result){
		.device_ns = (double)device_time / (double)requests,
		.total_ns = (double)total / (double)requests,
		.kicks = (double)kicks / (double)requests,
		.irqs = (double)irqs / (double)requests,
	};
}

int main(int argc, char **argv)
{
	uint64_t requests = 2000000;
	unsigned batch = 32, runs = 3;
	unsigned long qsize = 256;
	int opt;
	while ((opt = getopt(argc, argv, "n:b:q:r:h")) != -1) {
		switch (opt) {
		case 'n': requests = strtoull(optarg, NULL, 0); break;
		case 'b': batch = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'q': qsize = strtoul(optarg, NULL, 0); break;
		case 'r': runs = (unsigned)strtoul(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: %s [-n requests] [-b batch] [-q queue size] [-r runs]\n",
				argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (!requests || !batch || !runs || qsize < 4 || qsize > VIRTQ_MAX_SIZE ||
	    (qsize & (qsize - 1)) || qsize > 4096) {
		fprintf(stderr, "bench-virtq: need requests, batch, runs > 0 and a power-of-two queue "
			"size 4..4096\n");
		return 2;
	}
	struct guest_memory mem;
	struct cv_error err = { 0 };
	if (guest_memory_init(&mem, MEM_SIZE, &err) < 0) {
		fprintf(stderr, "bench-virtq: %s\n", err.msg);
		return 1;
	}
	/* Fault the rings, tables and buffers in before timing anything. */
	memset(mem.host, 0, DATA_GPA + (uint64_t)DATA_LEN * qsize);

	static const struct config configs[] = {
		{ "1 desc", 1, false, false },
		{ "1 desc", 1, false, true },
		{ "1 desc", 1, true, false },
		{ "1 desc", 1, true, true },
		{ "blk 3 desc", 3, false, false },
		{ "blk 3 desc", 3, false, true },
		{ "blk 3 desc", 3, true, false },
		{ "blk 3 desc", 3, true, true },
	};
	printf("virtq microbenchmark: queue %lu, batch %u, %llu requests per run, best of %u runs\n",
	       qsize, batch, (unsigned long long)requests, runs);
	printf("device = pop + push + interrupt check (+ blk header read, status write); "
	       "round trip adds the driver\n\n");
	printf("%-11s %-8s %-9s %13s %10s %16s %10s %9s\n", "chain", "indirect", "event_idx",
	       "device ns/req", "Mreq/s", "round trip ns/req", "kicks/req", "irqs/req");
	for (unsigned i = 0; i < sizeof(configs) / sizeof(configs[0]); i++) {
		const struct config *c = &configs[i];
		struct result best = { 0 };
		for (unsigned k = 0; k < runs; k++) {
			struct result r = run(&mem, c, (uint16_t)qsize, batch, requests);
			if (k == 0 || r.device_ns < best.device_ns)
				best = r;
		}
		printf("%-11s %-8s %-9s %13.1f %10.2f %16.1f %10.3f %9.3f\n", c->name,
		       c->indirect ? "yes" : "no", c->event_idx ? "yes" : "no", best.device_ns,
		       1000.0 / best.device_ns, best.total_ns, best.kicks, best.irqs);
	}
	guest_memory_free(&mem);
	return 0;
}
