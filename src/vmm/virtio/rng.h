/*
 * virtio-rng (entropy device): fills the guest's buffers from the host's getrandom(), so a
 * freshly booted guest has good randomness without waiting for its own entropy. An optional
 * rate limiter (Firecracker's /entropy rate_limiter: bytes and requests) keeps one guest from
 * draining the host's entropy pool for its neighbours: a buffer that would exceed it stays in
 * the ring until the limiter's timer says it may be filled.
 */
#ifndef CVISOR_VMM_VIRTIO_RNG_H
#define CVISOR_VMM_VIRTIO_RNG_H

#include "ratelimit.h"
#include "virtio/device.h"

struct virtio_rng {
	struct virtio_dev dev;
	struct virtq_elem elem;
	uint64_t bytes;              /* served so far */
	struct rate_limiter rl;
	struct rl_timer rl_timer;
	bool rl_wait;                /* a buffer waits for tokens; rl_timer resumes the queue */
	uint64_t throttled;          /* times a buffer had to wait */
};

/* limits: NULL or disabled buckets for none (checked by the caller). */
int virtio_rng_init(struct virtio_rng *r, const struct guest_memory *mem, struct evloop *loop,
		    const struct rate_limiter_config *limits, struct cv_error *err);
void virtio_rng_destroy(struct virtio_rng *r);

#endif
