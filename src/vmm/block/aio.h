/*
 * Asynchronous file I/O for block devices: one io_uring per disk whose completions signal an
 * eventfd, which the VM's I/O thread watches. Disk reads and writes go straight between the
 * image file and guest memory (the iovecs of a virtqueue chain), so neither the I/O thread nor a
 * vCPU ever waits for the disk.
 *
 * The number of operations in flight is bounded by `cap`; the submission queue has cap entries
 * and the completion queue twice that, so getting an SQE while blk_aio_room() > 0 always
 * succeeds and completions can never overflow. An operation is "in flight" from blk_aio_sqe()
 * until its completion has been passed to the callback of blk_aio_reap()/blk_aio_drain().
 *
 * Not thread-safe: the owner serialises all calls (virtio-blk holds its device lock).
 */
#ifndef CVISOR_VMM_BLOCK_AIO_H
#define CVISOR_VMM_BLOCK_AIO_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct blk_aio {
	struct io_uring ring;
	bool ring_ready;
	int efd;                     /* completion eventfd (non-blocking) */
	unsigned cap;
	unsigned inflight;
	bool submit_error_logged;
};

typedef void (*blk_aio_done_fn)(void *opaque, uint64_t user_data, int res);

/*
 * Sets up the ring and its eventfd and checks that the kernel supports every operation we use.
 * Fails (CV_EXIT_OSERR, "io_uring unavailable: ...") on kernels or sandboxes without a
 * working io_uring.
 */
int blk_aio_init(struct blk_aio *a, unsigned cap, struct cv_error *err);
/* Closes the ring; everything must have been drained. */
void blk_aio_destroy(struct blk_aio *a);

static inline unsigned blk_aio_room(const struct blk_aio *a)
{
	return a->cap - a->inflight;
}

/* An SQE tagged with user_data, counted in flight; NULL only when blk_aio_room() is 0. */
struct io_uring_sqe *blk_aio_sqe(struct blk_aio *a, uint64_t user_data);

/* Hands prepared SQEs to the kernel. Failures are transient: the SQEs stay queued for later. */
void blk_aio_submit(struct blk_aio *a);

/* Passes every available completion to fn; returns how many. Never waits. */
unsigned blk_aio_reap(struct blk_aio *a, blk_aio_done_fn fn, void *opaque);

/*
 * Waits until nothing is in flight, passing completions to fn (which may not queue new work).
 * After it returns the kernel no longer touches any buffer it was given.
 */
void blk_aio_drain(struct blk_aio *a, blk_aio_done_fn fn, void *opaque);

/* Empties the eventfd before reaping (the I/O thread's handler does this). */
void blk_aio_ack(struct blk_aio *a);

#endif
