/*
 * virtio-rng (see rng.h). One request queue; each buffer is filled completely.
 */
#include "rng.h"

#include <sys/random.h>

#define RNG_QUEUE_SIZE 64

static void rng_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_rng *r = d->priv;
	struct virtq *vq = &d->vq[q];
	int got;
	bool used = false;
	while ((got = virtq_pop(vq, &r->elem)) == 1) {
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
	if (got < 0)
		virtio_dev_fail(d, vq->error);
	if (used)
		virtio_dev_notify_used(d, q);
}

static const struct virtio_dev_ops rng_ops = {
	.device_id = VIRTIO_ID_RNG,
	.pci_class = 0x00ff00,   /* unclassified device */
	.queue_notify = rng_notify,
};

void virtio_rng_init(struct virtio_rng *r, const struct guest_memory *mem, struct evloop *loop)
{
	virtio_dev_init(&r->dev, "virtio-rng", &rng_ops, r, 1, RNG_QUEUE_SIZE,
			(1ULL << VIRTIO_RING_F_INDIRECT_DESC) | (1ULL << VIRTIO_RING_F_EVENT_IDX), mem,
			loop);
}
