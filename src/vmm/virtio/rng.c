/*
 * virtio-rng (see rng.h). One request queue; each buffer is filled completely, and costs the
 * limiter its writable length and one operation before it is.
 */
#include "rng.h"

#include <sys/random.h>

#define RNG_QUEUE_SIZE 64

static uint64_t writable_bytes(const struct virtq_elem *e)
{
	uint64_t n = 0;
	for (unsigned i = e->n_out; i < e->n_out + e->n_in; i++)
		n += e->iov[i].iov_len;
	return n;
}

/* Lock held. */
static void process_queue(struct virtio_rng *r)
{
	struct virtio_dev *d = &r->dev;
	struct virtq *vq = &d->vq[0];
	int got = 0;
	bool used = false;
	while (!r->rl_wait && (got = virtq_pop(vq, &r->elem)) == 1) {
		uint64_t retry_at;
		if (!rate_limiter_consume(&r->rl, writable_bytes(&r->elem), 1, &retry_at)) {
			virtq_unpop(vq);
			r->rl_wait = true;
			r->throttled++;
			rl_timer_arm_at(&r->rl_timer, &r->rl, retry_at);
			break;
		}
		uint64_t written = 0;
		for (unsigned i = r->elem.n_out; i < r->elem.n_out + r->elem.n_in; i++) {
			struct iovec *v = &r->elem.iov[i];
			/* getrandom never returns short for reads up to 256 bytes; loop for the rest. */
			for (size_t off = 0; off < v->iov_len;) {
				ssize_t n = getrandom((uint8_t *)v->iov_base + off, v->iov_len - off, 0);
				if (n <= 0)
					break;
				off += (size_t)n;
				written += (uint64_t)n;
			}
		}
		virtq_push(vq, &r->elem, (uint32_t)written);
		r->bytes += written;
		used = true;
	}
	if (!r->rl_wait && got < 0)
		virtio_dev_fail(d, vq->error);
	if (used)
		virtio_dev_notify_used(d, 0);
}

static void rng_notify(struct virtio_dev *d, unsigned q)
{
	(void)q;
	process_queue(d->priv);
}

/* I/O thread, device lock held: a buffer that waited for tokens may be filled now. */
static void resume_throttled(void *opaque)
{
	struct virtio_rng *r = opaque;
	if (virtio_dev_running(&r->dev) && r->dev.vq[0].started)
		process_queue(r);
}

static void rng_reset(struct virtio_dev *d)
{
	struct virtio_rng *r = d->priv;
	/* The waiting buffer belonged to the old ring. */
	r->rl_wait = false;
	rl_timer_cancel(&r->rl_timer);
}

static unsigned rng_limiters(struct virtio_dev *d, struct rate_limiter **out)
{
	struct virtio_rng *r = d->priv;
	out[0] = &r->rl;
	return 1;
}

static const struct virtio_dev_ops rng_ops = {
	.device_id = VIRTIO_ID_RNG,
	.pci_class = 0x00ff00,   /* unclassified device */
	.reset = rng_reset,
	.queue_notify = rng_notify,
	.limiters = rng_limiters,
};

int virtio_rng_init(struct virtio_rng *r, const struct guest_memory *mem, struct evloop *loop,
		    const struct rate_limiter_config *limits, struct cv_error *err)
{
	rate_limiter_init(&r->rl, NULL, NULL);
	if (limits)
		rate_limiter_configure(&r->rl, limits);
	if (rl_timer_init(&r->rl_timer, loop, &r->dev.lock, &r->rl_wait, resume_throttled, r, err) < 0)
		return cv_error_wrap(err, "virtio-rng");
	virtio_dev_init(&r->dev, "virtio-rng", &rng_ops, r, 1, RNG_QUEUE_SIZE,
			(1ULL << VIRTIO_RING_F_INDIRECT_DESC) | (1ULL << VIRTIO_RING_F_EVENT_IDX), mem,
			loop);
	return 0;
}

void virtio_rng_destroy(struct virtio_rng *r)
{
	rl_timer_destroy(&r->rl_timer);
	virtio_dev_destroy(&r->dev);
}
