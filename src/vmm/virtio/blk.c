/*
 * virtio-blk (see blk.h).
 *
 * Request life: process_queue pops a chain into a free request slot, start_request validates it
 * and either completes it at once (GET_ID, errors, empty transfers) or queues io_uring
 * operations tagged (slot << 8 | operation). Their completions arrive through the aio eventfd on
 * the I/O thread (on_completion), which finishes short transfers, falls back between fallocate
 * modes the host file system lacks, writes the status byte, pushes the chain and interrupts.
 *
 * Back-pressure: a request that needs more io_uring operations than there is room for goes back
 * into the ring (virtq_unpop) and the queue is looked at again when completions free room.
 * Rate limiting works the same way: a chain the limiter refuses goes back into the ring and
 * rl_timer fires when it can pass; while it waits, kicks and completions start nothing.
 *
 * Reset: every operation in flight is waited for (blk_aio_drain) before ops->reset returns, so
 * the kernel never writes into buffers the driver may reuse; their completions are dropped.
 *
 * Everything below runs with d->lock held: the transport calls queue_notify/reset/config_read
 * with it, and on_completion takes it.
 */
#include "blk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bytes.h"
#include "snapshot/format.h"
#include "util.h"
#include "vm.h"

#define HDR_SIZE 16                  /* le32 type, le32 reserved, le64 sector */
#define RANGE_SIZE 16                /* le64 sector, le32 num_sectors, le32 flags */
#define AIO_CAP 256                  /* io_uring operations in flight per disk */
#define ZEROES_SIZE (1u << 20)       /* write-zeroes fallback: zeroes written per operation */
#define HOST_ERRORS_LOGGED 10

/* How one discard/write-zeroes range is being carried out. */
enum range_mode { RANGE_PUNCH, RANGE_ZERO, RANGE_WRITE };

struct blk_range {
	uint64_t off;                /* bytes */
	uint64_t len;
	enum range_mode mode;
	struct iovec iov;            /* RANGE_WRITE: the zeroes in flight */
};

struct blk_req {
	uint32_t type;
	uint8_t status;
	uint8_t *status_ptr;         /* last writable byte of the chain, NULL if there is none */
	unsigned pending;            /* io_uring operations in flight */
	uint64_t bytes;              /* data length (statistics) */
	/* IN/OUT: what remains to transfer, inside elem.iov (advanced on short transfers). */
	struct iovec *iov;
	unsigned iovcnt;
	uint64_t offset;
	uint64_t remaining;
	/* DISCARD/WRITE_ZEROES */
	unsigned n_ranges;
	struct blk_range ranges[VIRTIO_BLK_MAX_RANGES];
	struct virtq_elem elem;
};

enum start_result {
	REQ_DONE,                    /* complete it now (status set) */
	REQ_STARTED,                 /* operations queued; completes from on_cqe */
	REQ_NO_ROOM,                 /* put it back into the ring for later */
	REQ_RETURNED,                /* no status byte: already handed back untouched */
};

static unsigned req_index(const struct virtio_blk *b, const struct blk_req *r)
{
	return (unsigned)(r - b->reqs);
}

static uint64_t tag(const struct virtio_blk *b, const struct blk_req *r, unsigned op)
{
	return ((uint64_t)req_index(b, r) << 8) | op;
}

static struct blk_req *req_alloc(struct virtio_blk *b)
{
	if (b->n_free == 0)
		return NULL;
	return &b->reqs[b->free_reqs[--b->n_free]];
}

static void req_free(struct virtio_blk *b, struct blk_req *r)
{
	b->free_reqs[b->n_free++] = (uint16_t)req_index(b, r);
}

/* A request the guest got wrong: explained only when tracing, the status tells the driver. */
static enum start_result reject(struct virtio_blk *b, struct blk_req *r, uint8_t status,
				const char *why)
{
	if (b->trace)
		fprintf(stderr, "cvisor-vmm: %s: request type %" PRIu32 " rejected: %s\n", b->name,
			r->type, why);
	r->status = status;
	return REQ_DONE;
}

static void host_error(struct virtio_blk *b, const char *what, uint64_t off, uint64_t len,
		       int res)
{
	if (b->host_errors_logged >= HOST_ERRORS_LOGGED)
		return;
	if (++b->host_errors_logged == HOST_ERRORS_LOGGED)
		fprintf(stderr, "cvisor-vmm: %s: %s of %" PRIu64 " bytes at offset %" PRIu64
			" in '%s': %s (further errors not shown)\n", b->name, what, len, off, b->path,
			strerror(-res));
	else
		fprintf(stderr, "cvisor-vmm: %s: %s of %" PRIu64 " bytes at offset %" PRIu64
			" in '%s': %s\n", b->name, what, len, off, b->path, strerror(-res));
}

static void count(struct virtio_blk *b, const struct blk_req *r)
{
	struct virtio_blk_stats *s = &b->stats;
	if (r->status == VIRTIO_BLK_S_IOERR) {
		s->ioerr++;
		return;
	}
	if (r->status == VIRTIO_BLK_S_UNSUPP) {
		s->unsupp++;
		return;
	}
	switch (r->type) {
	case VIRTIO_BLK_T_IN: s->reads++; s->read_bytes += r->bytes; break;
	case VIRTIO_BLK_T_OUT: s->writes++; s->written_bytes += r->bytes; break;
	case VIRTIO_BLK_T_FLUSH: s->flushes += r->bytes ? 1 : 0; break;
	case VIRTIO_BLK_T_GET_ID: s->get_ids++; break;
	case VIRTIO_BLK_T_DISCARD: s->discards++; break;
	case VIRTIO_BLK_T_WRITE_ZEROES: s->write_zeroes++; break;
	}
}

/* Writes the status, returns the chain to the driver and frees the slot. */
static void complete(struct virtio_blk *b, struct blk_req *r)
{
	count(b, r);
	if (r->status_ptr)
		*r->status_ptr = r->status;
	/* The device may have written anywhere in the writable part; the status is its end. */
	uint64_t written = r->elem.in_len > UINT32_MAX ? UINT32_MAX : r->elem.in_len;
	virtq_push(&b->dev.vq[0], &r->elem, (uint32_t)written);
	b->need_notify = true;
	req_free(b, r);
}

static bool range_ok(const struct virtio_blk *b, uint64_t sector, uint64_t n)
{
	return sector <= b->img.sectors && n <= b->img.sectors - sector;
}

/* Drops the first `skip` bytes of an iovec array in place; returns the new start. */
static struct iovec *iov_skip(struct iovec *iov, unsigned *n, uint64_t skip)
{
	while (*n && skip >= iov->iov_len) {
		skip -= iov->iov_len;
		iov++;
		(*n)--;
	}
	if (*n && skip) {
		iov->iov_base = (uint8_t *)iov->iov_base + skip;
		iov->iov_len -= skip;
	}
	return iov;
}

/*
 * A driver that did not negotiate VIRTIO_BLK_F_FLUSH cannot ask for write-back, so it must get a
 * write-through disk: its writes complete only once they are on stable storage.
 */
static int write_flags(const struct virtio_blk *b)
{
	return virtio_dev_has(&b->dev, VIRTIO_BLK_F_FLUSH) ? 0 : RWF_DSYNC;
}

static void submit_rw(struct virtio_blk *b, struct blk_req *r)
{
	struct io_uring_sqe *sqe = blk_aio_sqe(&b->aio, tag(b, r, 0));
	if (r->type == VIRTIO_BLK_T_IN)
		io_uring_prep_readv(sqe, b->img.fd, r->iov, r->iovcnt, r->offset);
	else
		io_uring_prep_writev2(sqe, b->img.fd, r->iov, r->iovcnt, r->offset, write_flags(b));
	r->pending++;
}

static void submit_range(struct virtio_blk *b, struct blk_req *r, unsigned i)
{
	struct blk_range *g = &r->ranges[i];
	struct io_uring_sqe *sqe = blk_aio_sqe(&b->aio, tag(b, r, i));
	switch (g->mode) {
	case RANGE_PUNCH:
		io_uring_prep_fallocate(sqe, b->img.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)g->off, (off_t)g->len);
		break;
	case RANGE_ZERO:
		io_uring_prep_fallocate(sqe, b->img.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
					(off_t)g->off, (off_t)g->len);
		break;
	case RANGE_WRITE:
		g->iov.iov_base = b->zeroes;
		g->iov.iov_len = g->len < ZEROES_SIZE ? g->len : ZEROES_SIZE;
		io_uring_prep_writev2(sqe, b->img.fd, &g->iov, 1, g->off, write_flags(b));
		break;
	}
	r->pending++;
}

/* The way to zero a range given what the host file system supports. */
static enum range_mode zero_mode(const struct virtio_blk *b, bool unmap)
{
	if (unmap && !b->no_punch_hole)
		return RANGE_PUNCH;
	if (!b->no_zero_range)
		return RANGE_ZERO;
	if (!b->no_punch_hole)
		return RANGE_PUNCH;
	return RANGE_WRITE;
}

static enum start_result start_ranges(struct virtio_blk *b, struct blk_req *r, uint64_t data_len)
{
	struct virtq_elem *e = &r->elem;
	bool discard = r->type == VIRTIO_BLK_T_DISCARD;
	unsigned feature = discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES;
	if (b->img.read_only)
		return reject(b, r, VIRTIO_BLK_S_IOERR, "read-only disk");
	if (!virtio_dev_has(&b->dev, feature))
		return reject(b, r, VIRTIO_BLK_S_UNSUPP, "feature not negotiated");
	if (e->in_len != 1)
		return reject(b, r, VIRTIO_BLK_S_IOERR, "writable bytes besides the status");
	if (data_len == 0 || data_len % RANGE_SIZE || data_len / RANGE_SIZE > VIRTIO_BLK_MAX_RANGES)
		return reject(b, r, VIRTIO_BLK_S_IOERR, "bad number of ranges");
	unsigned n = (unsigned)(data_len / RANGE_SIZE);
	r->n_ranges = 0;
	for (unsigned i = 0; i < n; i++) {
		uint8_t raw[RANGE_SIZE];
		iov_to_buf(e->iov, e->n_out, HDR_SIZE + (size_t)i * RANGE_SIZE, raw, RANGE_SIZE);
		uint64_t sector = get_le64(raw);
		uint32_t sectors = get_le32(raw + 8);
		uint32_t flags = get_le32(raw + 12);
		if (flags & ~VIRTIO_BLK_WZ_UNMAP)
			return reject(b, r, VIRTIO_BLK_S_UNSUPP, "reserved range flags");
		if (discard && (flags & VIRTIO_BLK_WZ_UNMAP))
			return reject(b, r, VIRTIO_BLK_S_UNSUPP, "unmap flag on a discard");
		if (sectors > VIRTIO_BLK_MAX_RANGE_SECTORS)
			return reject(b, r, VIRTIO_BLK_S_IOERR, "range larger than announced");
		if (!range_ok(b, sector, sectors))
			return reject(b, r, VIRTIO_BLK_S_IOERR, "range beyond the capacity");
		if (sectors == 0)
			continue;
		struct blk_range *g = &r->ranges[r->n_ranges];
		g->off = sector << BLK_SECTOR_SHIFT;
		g->len = (uint64_t)sectors << BLK_SECTOR_SHIFT;
		if (discard) {
			/* Discarding is a hint: without hole punching there is nothing to do. */
			if (b->no_punch_hole)
				continue;
			g->mode = RANGE_PUNCH;
		} else {
			g->mode = zero_mode(b, flags & VIRTIO_BLK_WZ_UNMAP);
		}
		r->n_ranges++;
	}
	if (r->n_ranges == 0)
		return REQ_DONE;
	if (blk_aio_room(&b->aio) < r->n_ranges)
		return REQ_NO_ROOM;
	if (zero_mode(b, false) == RANGE_WRITE && !b->zeroes) {
		b->zeroes = calloc(1, ZEROES_SIZE);
		if (!b->zeroes)
			return reject(b, r, VIRTIO_BLK_S_IOERR, "out of memory for zeroes");
	}
	for (unsigned i = 0; i < r->n_ranges; i++)
		submit_range(b, r, i);
	return REQ_STARTED;
}

/* Validates a popped chain and starts it. */
static enum start_result start_request(struct virtio_blk *b, struct blk_req *r)
{
	struct virtq_elem *e = &r->elem;
	r->type = UINT32_MAX;
	r->status = VIRTIO_BLK_S_OK;
	r->status_ptr = NULL;
	r->pending = 0;
	r->bytes = 0;
	r->n_ranges = 0;
	if (e->in_len == 0) {
		/* Nowhere to put a status: hand the chain back untouched. */
		if (b->trace)
			fprintf(stderr, "cvisor-vmm: %s: request without a writable status byte\n",
				b->name);
		b->stats.ioerr++;
		virtq_push(&b->dev.vq[0], e, 0);
		b->need_notify = true;
		return REQ_RETURNED;
	}
	/* The status is the last writable byte, wherever the driver's descriptors split. */
	struct iovec *last = &e->iov[e->n_out + e->n_in - 1];
	r->status_ptr = (uint8_t *)last->iov_base + last->iov_len - 1;
	uint64_t in_data = e->in_len - 1;
	if (e->out_len < HDR_SIZE)
		return reject(b, r, VIRTIO_BLK_S_IOERR, "header shorter than 16 bytes");
	uint8_t hdr[HDR_SIZE];
	iov_to_buf(e->iov, e->n_out, 0, hdr, HDR_SIZE);
	r->type = get_le32(hdr);
	uint64_t sector = get_le64(hdr + 8);
	uint64_t out_data = e->out_len - HDR_SIZE;

	switch (r->type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT: {
		bool in = r->type == VIRTIO_BLK_T_IN;
		uint64_t len = in ? in_data : out_data;
		if (!in && b->img.read_only)
			return reject(b, r, VIRTIO_BLK_S_IOERR, "write to a read-only disk");
		if (in ? out_data != 0 : in_data != 0)
			return reject(b, r, VIRTIO_BLK_S_IOERR, "data in the wrong direction");
		if (len % BLK_SECTOR_SIZE)
			return reject(b, r, VIRTIO_BLK_S_IOERR, "length not a multiple of 512");
		if (len > VIRTIO_BLK_MAX_DATA)
			return reject(b, r, VIRTIO_BLK_S_IOERR, "request larger than announced");
		if (!range_ok(b, sector, len >> BLK_SECTOR_SHIFT))
			return reject(b, r, VIRTIO_BLK_S_IOERR, "sectors beyond the capacity");
		r->bytes = len;
		if (len == 0)
			return REQ_DONE;
		if (blk_aio_room(&b->aio) == 0)
			return REQ_NO_ROOM;
		if (in) {
			/* The data is the writable part minus the status byte. */
			last->iov_len--;
			r->iov = &e->iov[e->n_out];
			r->iovcnt = e->n_in - (last->iov_len == 0 ? 1 : 0);
		} else {
			r->iovcnt = e->n_out;
			r->iov = iov_skip(e->iov, &r->iovcnt, HDR_SIZE);
		}
		r->offset = sector << BLK_SECTOR_SHIFT;
		r->remaining = len;
		submit_rw(b, r);
		return REQ_STARTED;
	}
	case VIRTIO_BLK_T_FLUSH: {
		if (out_data || in_data)
			return reject(b, r, VIRTIO_BLK_S_IOERR, "flush with data");
		/* A read-only image has nothing of ours to write back; Unsafe promises nothing. */
		if (b->img.read_only || b->cache_unsafe) {
			b->stats.flushes_ignored += !b->img.read_only;
			return REQ_DONE;
		}
		if (blk_aio_room(&b->aio) == 0)
			return REQ_NO_ROOM;
		r->bytes = 1;            /* counts as an fdatasync in the statistics */
		struct io_uring_sqe *sqe = blk_aio_sqe(&b->aio, tag(b, r, 0));
		io_uring_prep_fsync(sqe, b->img.fd, IORING_FSYNC_DATASYNC);
		r->pending++;
		return REQ_STARTED;
	}
	case VIRTIO_BLK_T_GET_ID:
		if (out_data || in_data < BLK_ID_BYTES)
			return reject(b, r, VIRTIO_BLK_S_IOERR, "GET_ID buffer is not 20 bytes");
		iov_from_buf(&e->iov[e->n_out], e->n_in, 0, b->img.serial, BLK_ID_BYTES);
		return REQ_DONE;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		return start_ranges(b, r, out_data);
	default:
		return reject(b, r, VIRTIO_BLK_S_UNSUPP, "unknown request type");
	}
}

static void finish_notify(struct virtio_blk *b)
{
	if (b->need_notify) {
		b->need_notify = false;
		virtio_dev_notify_used(&b->dev, 0);
	}
}

/*
 * What a chain costs the rate limiter in bytes: the data of a read or write as its header says.
 * Only a hint read before validation; a malformed request is refused later, costing its op.
 */
static uint64_t request_bytes(const struct virtq_elem *e)
{
	if (e->out_len < HDR_SIZE)
		return 0;
	uint8_t raw[4];
	iov_to_buf(e->iov, e->n_out, 0, raw, sizeof(raw));
	uint64_t len;
	switch (get_le32(raw)) {
	case VIRTIO_BLK_T_IN:
		len = e->in_len ? e->in_len - 1 : 0;
		break;
	case VIRTIO_BLK_T_OUT:
		len = e->out_len - HDR_SIZE;
		break;
	default:
		return 0;
	}
	return len <= VIRTIO_BLK_MAX_DATA ? len : 0;
}

/* Starts every chain the driver made available, as far as there is room and tokens. */
static void process_queue(struct virtio_blk *b)
{
	struct virtio_dev *d = &b->dev;
	struct virtq *vq = &d->vq[0];
	if (b->rl_wait)
		return;              /* rl_timer resumes */
	b->throttled = false;
	while (!b->draining) {
		struct blk_req *r = req_alloc(b);
		if (!r) {
			/* Only a driver reusing heads still in flight gets here; completions resume. */
			b->throttled = true;
			break;
		}
		int got = virtq_pop(vq, &r->elem);
		if (got <= 0) {
			req_free(b, r);
			if (got < 0)
				virtio_dev_fail(d, vq->error);
			break;
		}
		uint64_t retry_at;
		if (!rate_limiter_consume(&b->rl, request_bytes(&r->elem), 1, &retry_at)) {
			virtq_unpop(vq);
			req_free(b, r);
			b->rl_wait = true;
			rl_timer_arm_at(&b->rl_timer, &b->rl, retry_at);
			break;
		}
		enum start_result s = start_request(b, r);
		if (s == REQ_NO_ROOM) {
			/* Charged again when it is popped again. */
			rate_limiter_undo(&b->rl);
			virtq_unpop(vq);
			req_free(b, r);
			b->throttled = true;
			b->stats.requeued++;
			break;
		}
		if (s == REQ_DONE)
			complete(b, r);
		else if (s == REQ_RETURNED)
			req_free(b, r);
	}
	blk_aio_submit(&b->aio);
	finish_notify(b);
}

static void blk_queue_notify(struct virtio_dev *d, unsigned q)
{
	(void)q;
	process_queue(d->priv);
}

/* A finished IN/OUT operation: done, or continue a short transfer. */
static void rw_done(struct virtio_blk *b, struct blk_req *r, int res)
{
	bool in = r->type == VIRTIO_BLK_T_IN;
	if (res <= 0) {
		/* 0: end of file inside the capacity, i.e. someone truncated the image. */
		host_error(b, in ? "read" : "write", r->offset, r->remaining, res ? res : -EIO);
		r->status = VIRTIO_BLK_S_IOERR;
		return;
	}
	uint64_t n = (uint64_t)res;
	if (n >= r->remaining)
		return;
	r->offset += n;
	r->remaining -= n;
	r->iov = iov_skip(r->iov, &r->iovcnt, n);
	submit_rw(b, r);
}

static void range_done(struct virtio_blk *b, struct blk_req *r, unsigned i, int res)
{
	if (i >= r->n_ranges) {
		r->status = VIRTIO_BLK_S_IOERR;
		return;
	}
	struct blk_range *g = &r->ranges[i];
	bool discard = r->type == VIRTIO_BLK_T_DISCARD;
	if (res == -EOPNOTSUPP && g->mode != RANGE_WRITE) {
		/* Remember what the file system lacks and try the next way. */
		if (g->mode == RANGE_PUNCH) {
			b->no_punch_hole = true;
			if (discard)
				return;
			g->mode = b->no_zero_range ? RANGE_WRITE : RANGE_ZERO;
		} else {
			b->no_zero_range = true;
			g->mode = b->no_punch_hole ? RANGE_WRITE : RANGE_PUNCH;
		}
		if (g->mode == RANGE_WRITE && !b->zeroes)
			b->zeroes = calloc(1, ZEROES_SIZE);
		if (g->mode == RANGE_WRITE && !b->zeroes) {
			r->status = VIRTIO_BLK_S_IOERR;
			return;
		}
		submit_range(b, r, i);
		return;
	}
	if (res < 0 || (g->mode == RANGE_WRITE && res == 0)) {
		host_error(b, discard ? "discard" : "write-zeroes", g->off, g->len, res ? res : -EIO);
		r->status = VIRTIO_BLK_S_IOERR;
		return;
	}
	if (g->mode == RANGE_WRITE && (uint64_t)res < g->len) {
		g->off += (uint64_t)res;
		g->len -= (uint64_t)res;
		submit_range(b, r, i);
	}
}

static void on_cqe(void *opaque, uint64_t user_data, int res)
{
	struct virtio_blk *b = opaque;
	uint64_t slot = user_data >> 8;
	unsigned op = (unsigned)(user_data & 0xff);
	if (slot >= VIRTIO_BLK_QUEUE_SIZE)
		return;              /* not ours: cannot happen, but never index with it */
	struct blk_req *r = &b->reqs[slot];
	if (r->pending == 0)
		return;
	r->pending--;
	if (b->draining) {
		/* Reset: the chain belongs to nobody any more; no status, no push. */
		if (r->pending == 0)
			req_free(b, r);
		return;
	}
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		rw_done(b, r, res);
		break;
	case VIRTIO_BLK_T_FLUSH:
		if (res < 0) {
			host_error(b, "flush", 0, 0, res);
			r->status = VIRTIO_BLK_S_IOERR;
		}
		break;
	default:
		range_done(b, r, op, res);
		break;
	}
	if (r->pending == 0)
		complete(b, r);
}

/* I/O thread: the ring has completions. */
static void on_completion(void *opaque, uint32_t events)
{
	struct virtio_blk *b = opaque;
	(void)events;
	blk_aio_ack(&b->aio);
	pthread_mutex_lock(&b->dev.lock);
	blk_aio_reap(&b->aio, on_cqe, b);
	/* Continuations of short transfers and fallbacks were queued while reaping. */
	blk_aio_submit(&b->aio);
	if (b->throttled && virtio_dev_running(&b->dev) && b->dev.vq[0].started)
		process_queue(b);
	finish_notify(b);
	pthread_mutex_unlock(&b->dev.lock);
}

/* I/O thread, device lock held: a request that waited for tokens may pass now. */
static void resume_throttled(void *opaque)
{
	struct virtio_blk *b = opaque;
	if (virtio_dev_running(&b->dev) && b->dev.vq[0].started)
		process_queue(b);
}

int blk_set_rate_limiter(struct virtio_blk *b, const struct rate_limiter_config *cfg,
			 struct cv_error *err)
{
	if (rate_limiter_config_check(cfg, b->name, err) < 0)
		return -1;
	pthread_mutex_lock(&b->dev.lock);
	rate_limiter_configure(&b->rl, cfg);
	/* The waiting request is judged again under the new settings, on the I/O thread. */
	if (b->rl_wait)
		rl_timer_arm(&b->rl_timer, 0);
	pthread_mutex_unlock(&b->dev.lock);
	return 0;
}

static void blk_reset(struct virtio_dev *d)
{
	struct virtio_blk *b = d->priv;
	/* The waiting chain belonged to the old ring. */
	b->rl_wait = false;
	rl_timer_cancel(&b->rl_timer);
	b->draining = true;
	blk_aio_drain(&b->aio, on_cqe, b);
	b->draining = false;
	b->throttled = false;
	b->need_notify = false;
}

/* Pause: requests in flight finish and complete as usual, so none is left for a snapshot. */
static void blk_quiesce(struct virtio_dev *d)
{
	struct virtio_blk *b = d->priv;
	if (!b->aio.ring_ready)
		return;
	blk_aio_drain(&b->aio, on_cqe, b);
	finish_notify(b);
}

/* Snapshot: the disk's shape, checked against the image given at restore. */
static void blk_save(struct virtio_dev *d, struct snap_buf *out)
{
	struct virtio_blk *b = d->priv;
	snap_put_u64(out, b->img.sectors);
	snap_put_u8(out, b->img.read_only);
}

static int blk_load(struct virtio_dev *d, struct snap_cur *in, struct cv_error *err)
{
	struct virtio_blk *b = d->priv;
	uint64_t sectors = snap_get_u64(in);
	bool ro = snap_get_u8(in) != 0;
	if (in->bad)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: malformed state", b->name);
	if (sectors != b->img.sectors || ro != b->img.read_only)
		return cv_fail(err, CV_EXIT_USAGE, "snapshot: %s: the snapshot's disk has %llu sectors"
			       "%s, '%s' has %llu%s", b->name, (unsigned long long)sectors,
			       ro ? " (read-only)" : "", b->path, (unsigned long long)b->img.sectors,
			       b->img.read_only ? " (read-only)" : "");
	return 0;
}

static void blk_config(const struct virtio_blk *b, uint8_t c[VIRTIO_BLK_CFG_SIZE])
{
	memset(c, 0, VIRTIO_BLK_CFG_SIZE);
	put_le64(c + VIRTIO_BLK_CFG_CAPACITY, b->img.sectors);
	put_le32(c + VIRTIO_BLK_CFG_SIZE_MAX, VIRTIO_BLK_SIZE_MAX);
	put_le32(c + VIRTIO_BLK_CFG_SEG_MAX, VIRTIO_BLK_SEG_MAX);
	put_le32(c + VIRTIO_BLK_CFG_BLK_SIZE, b->img.block_size);
	put_le16(c + VIRTIO_BLK_CFG_NUM_QUEUES, 1);
	uint32_t align = b->img.block_size / BLK_SECTOR_SIZE;
	if (align < VIRTIO_BLK_DISCARD_ALIGN)
		align = VIRTIO_BLK_DISCARD_ALIGN;
	put_le32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS, VIRTIO_BLK_MAX_RANGE_SECTORS);
	put_le32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SEG, VIRTIO_BLK_MAX_RANGES);
	put_le32(c + VIRTIO_BLK_CFG_DISCARD_ALIGN, align);
	put_le32(c + VIRTIO_BLK_CFG_MAX_WZ_SECTORS, VIRTIO_BLK_MAX_RANGE_SECTORS);
	put_le32(c + VIRTIO_BLK_CFG_MAX_WZ_SEG, VIRTIO_BLK_MAX_RANGES);
	c[VIRTIO_BLK_CFG_WZ_MAY_UNMAP] = 1;
}

static void blk_config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	uint8_t c[VIRTIO_BLK_CFG_SIZE];
	blk_config(d->priv, c);
	for (uint32_t i = 0; i < len; i++)
		data[i] = (uint64_t)off + i < VIRTIO_BLK_CFG_SIZE ? c[off + i] : 0;
}

static unsigned blk_limiters(struct virtio_dev *d, struct rate_limiter **out)
{
	struct virtio_blk *b = d->priv;
	out[0] = &b->rl;
	return 1;
}

static const struct virtio_dev_ops blk_ops = {
	.device_id = VIRTIO_ID_BLOCK,
	.pci_class = 0x010000,       /* mass storage: SCSI (what virtio-blk has always used) */
	.config_read = blk_config_read,
	.reset = blk_reset,
	.queue_notify = blk_queue_notify,
	.quiesce = blk_quiesce,
	.save = blk_save,
	.load = blk_load,
	.limiters = blk_limiters,
};

static void print_stats(const struct virtio_blk *b)
{
	const struct virtio_blk_stats *s = &b->stats;
	fprintf(stderr, "cvisor-vmm: %s (%s): %" PRIu64 " reads (%" PRIu64 " bytes), %" PRIu64
		" writes (%" PRIu64 " bytes), %" PRIu64 " flushes (fdatasync), %" PRIu64
		" discards, %" PRIu64 " write-zeroes, %" PRIu64 " get-id, %" PRIu64 " ioerr, %"
		PRIu64 " unsupp, %" PRIu64 " rate-limited\n", b->name, b->path, s->reads,
		s->read_bytes, s->writes, s->written_bytes, s->flushes, s->discards, s->write_zeroes,
		s->get_ids, s->ioerr, s->unsupp, b->rl.throttled);
}

void virtio_blk_destroy(void *owner)
{
	struct virtio_blk *b = owner;
	if (!b)
		return;
	if (b->completion_watched)
		evloop_remove(b->dev.loop, &b->completion);
	rl_timer_destroy(&b->rl_timer);
	if (b->aio.ring_ready && b->reqs) {
		b->draining = true;
		blk_aio_drain(&b->aio, on_cqe, b);
	}
	if (b->trace && b->dev_ready)
		print_stats(b);
	blk_aio_destroy(&b->aio);
	blk_image_close(&b->img);
	if (b->dev_ready)
		virtio_dev_destroy(&b->dev);
	free(b->zeroes);
	free(b->free_reqs);
	free(b->reqs);
	free(b->path);
	free(b);
}

int virtio_blk_create(const struct disk_config *cfg, unsigned index,
		      const struct guest_memory *mem, struct evloop *loop, struct virtio_blk **out,
		      struct cv_error *err)
{
	*out = NULL;
	struct virtio_blk *b = calloc(1, sizeof(*b));
	if (!b)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	b->img.fd = -1;
	b->aio.efd = -1;
	b->rl_timer.fd = -1;
	rate_limiter_init(&b->rl, NULL, NULL);
	snprintf(b->name, sizeof(b->name), "virtio-blk%u", index);
	const char *trace = getenv("CVISOR_VMM_TRACE");
	b->trace = trace && strstr(trace, "blk");
	b->path = strdup(cfg->path);
	b->reqs = calloc(VIRTIO_BLK_QUEUE_SIZE, sizeof(*b->reqs));
	b->free_reqs = calloc(VIRTIO_BLK_QUEUE_SIZE, sizeof(*b->free_reqs));
	if (!b->path || !b->reqs || !b->free_reqs) {
		virtio_blk_destroy(b);
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	}
	for (unsigned i = 0; i < VIRTIO_BLK_QUEUE_SIZE; i++)
		b->free_reqs[b->n_free++] = (uint16_t)(VIRTIO_BLK_QUEUE_SIZE - 1 - i);
	if ((cfg->defer_lock ? blk_image_open_unlocked(&b->img, cfg->path, cfg->read_only,
						       cfg->serial, err)
			     : blk_image_open(&b->img, cfg->path, cfg->read_only, cfg->serial,
					      err)) < 0 ||
	    blk_aio_init(&b->aio, AIO_CAP, err) < 0) {
		virtio_blk_destroy(b);
		return cv_error_wrap(err, "--disk %s", cfg->path);
	}
	uint64_t features = (1ULL << VIRTIO_RING_F_INDIRECT_DESC) |
			    (1ULL << VIRTIO_RING_F_EVENT_IDX) | (1ULL << VIRTIO_BLK_F_SIZE_MAX) |
			    (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) |
			    (1ULL << VIRTIO_BLK_F_FLUSH);
	if (cfg->read_only)
		features |= 1ULL << VIRTIO_BLK_F_RO;
	else
		features |= (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
	virtio_dev_init(&b->dev, b->name, &blk_ops, b, 1, VIRTIO_BLK_QUEUE_SIZE, features, mem,
			loop);
	b->dev_ready = true;
	b->completion.fd = b->aio.efd;
	b->completion.fn = on_completion;
	b->completion.opaque = b;
	if (evloop_add(loop, &b->completion, EPOLLIN, err) < 0) {
		virtio_blk_destroy(b);
		return cv_error_wrap(err, "--disk %s", cfg->path);
	}
	b->completion_watched = true;
	if (rate_limiter_config_check(&cfg->rate_limiter, "rate limit", err) < 0 ||
	    rl_timer_init(&b->rl_timer, loop, &b->dev.lock, &b->rl_wait, resume_throttled, b, err) < 0) {
		virtio_blk_destroy(b);
		return cv_error_wrap(err, "--disk %s", cfg->path);
	}
	rate_limiter_configure(&b->rl, &cfg->rate_limiter);
	b->cache_unsafe = cfg->cache == DISK_CACHE_UNSAFE;
	*out = b;
	return 0;
}

int virtio_blk_replace_image(struct virtio_blk *b, const char *path, const char *serial,
			     struct cv_error *err)
{
	struct blk_image img;
	char *copy = strdup(path);
	if (!copy)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	pthread_mutex_lock(&b->dev.lock);
	if (blk_image_open(&img, path, b->img.read_only, serial, err) < 0) {
		pthread_mutex_unlock(&b->dev.lock);
		free(copy);
		return -1;
	}
	blk_image_close(&b->img);
	b->img = img;
	free(b->path);
	b->path = copy;
	if (virtio_dev_running(&b->dev))
		virtio_dev_config_changed(&b->dev);
	pthread_mutex_unlock(&b->dev.lock);
	return 0;
}

int virtio_blk_add(struct vm *vm, const struct disk_config *cfg, unsigned index, struct cv_error *err)
{
	struct virtio_blk *b;
	if (virtio_blk_create(cfg, index, &vm->mem, &vm->loop, &b, err) < 0)
		return -1;
	return vm_virtio_plug(vm, &b->dev, b, virtio_blk_destroy, err);
}

int virtio_blk_lock_images(struct vm *vm, bool lock, struct cv_error *err)
{
	for (unsigned i = 0; i < vm->n_virtio; i++) {
		struct virtio_dev *d = vm->virtio[i]->dev;
		if (d->ops != &blk_ops)
			continue;
		struct virtio_blk *b = d->priv;
		if (blk_image_set_lock(&b->img, lock, b->path, err) < 0)
			return -1;
	}
	return 0;
}
