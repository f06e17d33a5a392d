/*
 * What the device fuzz targets (fuzz_blk.c, fuzz_net.c, fuzz_vsock.c) share: reading fields out of
 * the fuzzer's bytes, guest RAM between guard pages, and a small virtio driver that negotiates
 * features, lays out split virtqueues, posts descriptor chains, kicks the device as the virtio-pci
 * transport does (queue_notify with the device lock held) and reads the used rings back. The
 * VM's I/O thread is replaced by fz_pump, which dispatches the evloop's ready handlers on the
 * calling thread, so a whole input runs on one thread and replays identically.
 *
 * The chains this driver writes are always well-formed: the virtqueue core has its own target
 * (fuzz_virtq.c); here the fuzzer's bytes go into what the devices parse.
 */
#ifndef CVISOR_TESTS_FUZZ_DRIVER_H
#define CVISOR_TESTS_FUZZ_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evloop.h"
#include "memory.h"
#include "virtio/device.h"

/* Aborts (libFuzzer keeps the input) with the broken invariant's text and place. */
#define FZ_CHECK(c) do { if (!(c)) fz_fail(__FILE__, __LINE__, #c); } while (0)
_Noreturn void fz_fail(const char *file, int line, const char *what);

/* ---- the fuzzer's bytes as a stream of fields (zeros once exhausted) ---- */

struct fz_in {
	const uint8_t *p;
	size_t n;
};

static inline bool fz_more(const struct fz_in *in)
{
	return in->n > 0;
}

static inline uint8_t fz_u8(struct fz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

/* Copies up to len bytes, zero-filling what the input lacks; returns bytes taken. */
size_t fz_take(struct fz_in *in, void *dst, size_t len);
uint16_t fz_u16(struct fz_in *in);
uint32_t fz_u32(struct fz_in *in);
uint64_t fz_u64(struct fz_in *in);

/* ---- guest RAM ---- */

/* Maps `size` bytes of guest RAM (below the hole) between two PROT_NONE pages; exits on error. */
void fz_guest_memory(struct guest_memory *gm, uint64_t size);

/* ---- the driver ---- */

#define FZ_MAX_QUEUES 4
#define FZ_RING_BASE 0x10000ULL       /* queue q's rings at FZ_RING_BASE + q * FZ_RING_STRIDE */
#define FZ_RING_STRIDE 0x10000ULL     /* room for a 1024-entry split ring */
#define FZ_HEAP_BASE (FZ_RING_BASE + FZ_MAX_QUEUES * FZ_RING_STRIDE)

struct fz_vq {
	uint64_t desc, avail, used;
	uint16_t size;
	uint16_t avail_idx;          /* next avail entry we write */
	uint16_t used_seen;          /* next used entry we read */
	uint16_t n_free;
	uint16_t free_list[1024];    /* stack of free descriptor indices */
	uint16_t chain_len[1024];    /* by head: descriptors of the chain posted there */
	uint16_t next[1024];         /* our copy of each posted descriptor's next link */
	bool busy[1024];             /* by head: posted, not returned */
	unsigned outstanding;
};

struct fz_seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* Interrupts the device raised, by queue, and configuration interrupts. */
struct fz_irqs {
	unsigned queue[VIRTIO_MAX_QUEUES];
	unsigned config;
};

struct fz_driver {
	struct guest_memory *mem;
	struct virtio_dev *dev;
	struct fz_vq q[FZ_MAX_QUEUES];
	unsigned nq;
	bool indirect;               /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
	uint64_t heap, heap_end;     /* bump allocator for buffers and indirect tables */
	struct fz_irqs irqs;
};

/* Attaches the counting transport and remembers memory and device; the heap spans the RAM. */
void fz_driver_init(struct fz_driver *drv, struct guest_memory *mem, struct virtio_dev *dev);

/*
 * Resets the device (status 0, as a driver does) and brings it up again: features offered AND
 * `want` (VERSION_1 always), nq queues of the device's maximum size with zeroed rings, DRIVER_OK.
 * Also empties the heap. Returns false if the device refused (NEEDS_RESET or FEATURES_OK lost).
 */
bool fz_driver_start(struct fz_driver *drv, uint64_t want, unsigned nq);

/* Status 0 under the device lock: what a driver's reset does to the device. */
void fz_driver_reset(struct fz_driver *drv);

/* Bump-allocates guest buffer space; 0 when the heap is exhausted. */
uint64_t fz_alloc(struct fz_driver *drv, uint64_t len, uint64_t align);

/* Host pointer for a range the harness laid out (aborts if it is not RAM: a harness bug). */
uint8_t *fz_ptr(struct fz_driver *drv, uint64_t gpa, uint64_t len);

/*
 * Posts a chain on queue q (readable segments must come first) and makes it available; with
 * `indirect` (and the feature negotiated) through one indirect table. Returns false, posting
 * nothing, if the descriptor table or the heap has no room.
 */
bool fz_post(struct fz_driver *drv, unsigned q, const struct fz_seg *s, unsigned n, bool indirect,
	     uint16_t *head);

/* The transport's reaction to a kick: queue_notify under the lock if the queue runs. */
void fz_kick(struct fz_driver *drv, unsigned q);

/* Takes the next used entry of queue q and frees its descriptors; false if there is none. */
bool fz_used(struct fz_driver *drv, unsigned q, uint32_t *id, uint32_t *len);

/* Chains the driver posted on q that the device has not returned yet. */
unsigned fz_outstanding(const struct fz_driver *drv, unsigned q);

/*
 * Runs the handlers of loop `l` whose fds are ready, waiting up to timeout_ms for the first;
 * returns how many ran. Stands in for the I/O thread.
 */
int fz_pump(struct evloop *l, int timeout_ms);

/* Open file descriptors of this process (to catch leaks). */
unsigned fz_open_fds(void);

#endif
