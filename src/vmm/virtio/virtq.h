/*
 * Split virtqueues (virtio 1.x, section 2.7) from the device side. The rings live in guest memory
 * and the guest may change them at any moment, so every index, address and length is read once,
 * checked, and only then used: a lying driver makes virtq_pop fail (the device then enters
 * NEEDS_RESET), never makes the VMM touch memory outside guest RAM, loop, or crash. Supports
 * descriptor chains, indirect tables and event-index notification suppression.
 *
 * Not thread-safe: one thread (the device's) processes a queue at a time.
 */
#ifndef CVISOR_VMM_VIRTIO_VIRTQ_H
#define CVISOR_VMM_VIRTIO_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "memory.h"

#define VIRTQ_MAX_SIZE 32768
#define VIRTQ_MAX_SEGS 1024         /* segments in one chain, indirect tables included */

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

/* Feature bits that concern the ring itself. */
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29

struct virtq {
	/* Set by the driver through the transport. */
	uint16_t size;
	uint64_t desc_gpa;
	uint64_t avail_gpa;
	uint64_t used_gpa;
	/* Negotiated ring features. */
	bool indirect;
	bool event_idx;

	/* Device state, valid after virtq_start. */
	bool started;
	const struct guest_memory *mem;
	uint8_t *desc;               /* host pointers into guest RAM, checked at start */
	uint8_t *avail;
	uint8_t *used;
	uint16_t last_avail;         /* next avail entry to consume */
	uint16_t used_idx;           /* our copy of used->idx */
	uint16_t signalled_used;     /* used idx at the last interrupt (event index) */
	bool signalled_valid;
	bool kicks_wanted;           /* we ask the driver to notify us (default on) */
	bool broken;                 /* the driver violated the spec; see virtq_error */
	const char *error;           /* why the queue broke */
};

/* A chain taken from the avail ring: device-readable segments, then device-writable ones. */
struct virtq_elem {
	uint16_t head;
	unsigned n_out;
	unsigned n_in;
	uint64_t out_len;            /* bytes the device may read */
	uint64_t in_len;             /* bytes the device may write */
	struct iovec iov[VIRTQ_MAX_SEGS];   /* out segments [0, n_out), in [n_out, n_out+n_in) */
};

/*
 * Validates the ring addresses and sizes against guest RAM and starts the queue. Returns -1
 * (queue marked broken) if the rings do not lie in RAM or are misaligned.
 */
int virtq_start(struct virtq *vq, const struct guest_memory *mem);
void virtq_stop(struct virtq *vq);

/* Takes the next available chain: 1 got one, 0 ring empty, -1 the driver broke the rules. */
int virtq_pop(struct virtq *vq, struct virtq_elem *elem);

/* Puts a chain back so the next pop returns it again (the device could not serve it yet). */
void virtq_unpop(struct virtq *vq);

/* Returns a chain to the driver with `written` bytes stored in its writable part. */
void virtq_push(struct virtq *vq, const struct virtq_elem *elem, uint32_t written);

/* True if the driver wants an interrupt for what was pushed since the last one. */
bool virtq_should_notify(struct virtq *vq);

/*
 * Asks the driver to (not) kick us for new buffers. After enabling, callers must pop again:
 * buffers added while notifications were off raise no kick. Returns true if the ring is empty.
 */
bool virtq_set_notification(struct virtq *vq, bool enable);

/* Copies between an iovec range and a flat buffer; return bytes copied. */
size_t iov_to_buf(const struct iovec *iov, unsigned n, size_t offset, void *buf, size_t len);
size_t iov_from_buf(const struct iovec *iov, unsigned n, size_t offset, const void *buf,
		    size_t len);

#endif
