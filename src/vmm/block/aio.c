/*
 * io_uring backend for block devices (see aio.h).
 *
 * No IORING_SETUP_* flags on purpose: SINGLE_ISSUER/DEFER_TASKRUN would tie reaping to the
 * submitting thread, but a device reset drains the ring from whichever vCPU thread wrote the
 * status register, and COOP_TASKRUN could delay completions of a thread sleeping on a lock.
 */
#include "aio.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int unavailable(struct cv_error *err, int e, const char *what)
{
	return cv_fail(err, CV_EXIT_OSERR, "io_uring unavailable: %s: %s", what,
		       strerror(e));
}

int blk_aio_init(struct blk_aio *a, unsigned cap, struct cv_error *err)
{
	memset(a, 0, sizeof(*a));
	a->efd = -1;
	a->cap = cap;
	int rc = io_uring_queue_init(cap, &a->ring, 0);
	if (rc < 0)
		return unavailable(err, -rc, "io_uring_setup");
	a->ring_ready = true;
	if (a->ring.sq.ring_entries < cap || a->ring.cq.ring_entries < cap) {
		blk_aio_destroy(a);
		return cv_fail(err, CV_EXIT_OSERR, "io_uring unavailable: ring smaller than "
			       "the %u entries asked for", cap);
	}
	struct io_uring_probe *p = io_uring_get_probe_ring(&a->ring);
	if (!p) {
		blk_aio_destroy(a);
		return unavailable(err, ENOSYS, "probe opcodes");
	}
	static const struct { int op; const char *name; } needed[] = {
		{ IORING_OP_READV, "READV" }, { IORING_OP_WRITEV, "WRITEV" },
		{ IORING_OP_FSYNC, "FSYNC" }, { IORING_OP_FALLOCATE, "FALLOCATE" },
	};
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (!io_uring_opcode_supported(p, needed[i].op)) {
			io_uring_free_probe(p);
			blk_aio_destroy(a);
			return cv_fail(err, CV_EXIT_OSERR, "io_uring unavailable: the kernel "
				       "lacks IORING_OP_%s", needed[i].name);
		}
	}
	io_uring_free_probe(p);
	a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->efd < 0) {
		blk_aio_destroy(a);
		return cv_fail_errno(err, CV_EXIT_OSERR, "eventfd");
	}
	rc = io_uring_register_eventfd(&a->ring, a->efd);
	if (rc < 0) {
		blk_aio_destroy(a);
		return unavailable(err, -rc, "register eventfd");
	}
	return 0;
}

void blk_aio_destroy(struct blk_aio *a)
{
	if (a->ring_ready)
		io_uring_queue_exit(&a->ring);
	a->ring_ready = false;
	if (a->efd >= 0)
		close(a->efd);
	a->efd = -1;
}

struct io_uring_sqe *blk_aio_sqe(struct blk_aio *a, uint64_t user_data)
{
	if (blk_aio_room(a) == 0)
		return NULL;
	/* SQ entries >= cap >= prepared-but-unsubmitted SQEs, so the SQ cannot be full here. */
	struct io_uring_sqe *sqe = io_uring_get_sqe(&a->ring);
	if (!sqe)
		return NULL;
	io_uring_sqe_set_data64(sqe, user_data);
	a->inflight++;
	return sqe;
}

static int submit(struct blk_aio *a, unsigned wait)
{
	int rc = wait ? io_uring_submit_and_wait(&a->ring, wait) : io_uring_submit(&a->ring);
	if (rc >= 0 || rc == -EINTR)
		return 0;
	/*
	 * EAGAIN/ENOMEM: the kernel is short of memory; EBUSY: completions backed up (cannot
	 * happen with our bound). The SQEs stay in the ring and go with the next submission.
	 */
	if (!a->submit_error_logged) {
		fprintf(stderr, "cvisor-vmm: io_uring submit: %s (will retry)\n", strerror(-rc));
		a->submit_error_logged = true;
	}
	return rc;
}

void blk_aio_submit(struct blk_aio *a)
{
	if (io_uring_sq_ready(&a->ring))
		submit(a, 0);
}

unsigned blk_aio_reap(struct blk_aio *a, blk_aio_done_fn fn, void *opaque)
{
	unsigned n = 0;
	struct io_uring_cqe *cqe;
	while (io_uring_peek_cqe(&a->ring, &cqe) == 0 && cqe) {
		uint64_t ud = io_uring_cqe_get_data64(cqe);
		int res = cqe->res;
		io_uring_cqe_seen(&a->ring, cqe);
		if (a->inflight)
			a->inflight--;
		n++;
		fn(opaque, ud, res);
	}
	return n;
}

void blk_aio_drain(struct blk_aio *a, blk_aio_done_fn fn, void *opaque)
{
	while (a->inflight > 0) {
		if (blk_aio_reap(a, fn, opaque))
			continue;
		/* Submitting what is still queued and waiting are one system call. */
		int rc = submit(a, 1);
		if (rc < 0 && rc != -EINTR) {
			struct timespec ms = { 0, 1000000 };
			nanosleep(&ms, NULL);
		}
	}
}

void blk_aio_ack(struct blk_aio *a)
{
	uint64_t v;
	if (read(a->efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: already emptied; the CQ ring, not the counter, is the truth */
	}
}
