/*
 * virtio-rng (entropy device): fills the guest's buffers from the host's getrandom(), so a
 * freshly booted guest has good randomness without waiting for its own entropy.
 */
#ifndef CVISOR_VMM_VIRTIO_RNG_H
#define CVISOR_VMM_VIRTIO_RNG_H

#include "virtio/device.h"

struct virtio_rng {
	struct virtio_dev dev;
	struct virtq_elem elem;
	uint64_t bytes;              /* served so far */
};

void virtio_rng_init(struct virtio_rng *r, const struct guest_memory *mem, struct evloop *loop);

#endif
