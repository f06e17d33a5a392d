/*
 * virtio-blk (virtio 1.2, section 5.2): a disk backed by a raw image file or host block device.
 * One request queue; requests run asynchronously on an io_uring (block/aio.h) straight between
 * the image and guest memory, and complete from the VM's I/O thread. Supports read, write,
 * flush (fdatasync), GET_ID, discard and write-zeroes (hole punching / zero ranges) and
 * read-only disks. Every request is validated; a malformed one completes with IOERR or UNSUPP
 * and only a broken ring puts the device into NEEDS_RESET.
 *
 * virtio_blk_create builds a device without a VM (the unit tests drive it through a host-side
 * ring); virtio_blk_add creates one for a VM and plugs it into PCI as "virtio-blk<index>".
 * CVISOR_VMM_TRACE containing "blk" logs malformed requests and prints each disk's request
 * counters (flushes included) on stderr at exit.
 *
 * Rate limiting (ratelimit.h): every request costs one operation, reads and writes also their
 * data bytes. A request the limiter refuses stays in the ring, unpopped, and a timer on the I/O
 * thread brings the queue back when the tokens are there: requests complete in order, later,
 * and a paused or snapshotted VM finds them still available.
 */
#ifndef CVISOR_VMM_VIRTIO_BLK_H
#define CVISOR_VMM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "block/aio.h"
#include "block/image.h"
#include "devices.h"
#include "error.h"
#include "evloop.h"
#include "ratelimit.h"
#include "virtio/device.h"

/* Request types and status values (virtio 1.2, 5.2.6) */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_WZ_UNMAP 1u       /* discard/write-zeroes segment flag */

/* Feature bits */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Limits the device announces in its configuration space. */
#define VIRTIO_BLK_QUEUE_SIZE 256
#define VIRTIO_BLK_SEG_MAX 254                 /* data segments per request */
#define VIRTIO_BLK_SIZE_MAX (1u << 20)         /* bytes per segment */
#define VIRTIO_BLK_MAX_RANGES 32               /* discard/write-zeroes segments per request */
#define VIRTIO_BLK_MAX_RANGE_SECTORS (1u << 22) /* 2 GiB per discard/write-zeroes segment */
#define VIRTIO_BLK_DISCARD_ALIGN 8             /* sectors (4 KiB): typical host fs block */
/* Largest read/write: what seg_max segments of size_max bytes can carry. */
#define VIRTIO_BLK_MAX_DATA ((uint64_t)VIRTIO_BLK_SEG_MAX * VIRTIO_BLK_SIZE_MAX)

/* Configuration space offsets (struct virtio_blk_config) */
#define VIRTIO_BLK_CFG_CAPACITY 0
#define VIRTIO_BLK_CFG_SIZE_MAX 8
#define VIRTIO_BLK_CFG_SEG_MAX 12
#define VIRTIO_BLK_CFG_BLK_SIZE 20
#define VIRTIO_BLK_CFG_NUM_QUEUES 34
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS 36
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG 40
#define VIRTIO_BLK_CFG_DISCARD_ALIGN 44
#define VIRTIO_BLK_CFG_MAX_WZ_SECTORS 48
#define VIRTIO_BLK_CFG_MAX_WZ_SEG 52
#define VIRTIO_BLK_CFG_WZ_MAY_UNMAP 56
#define VIRTIO_BLK_CFG_SIZE 60

/* Completed requests by kind (status OK), and failures. */
struct virtio_blk_stats {
	uint64_t reads, read_bytes;
	uint64_t writes, written_bytes;
	uint64_t flushes;            /* fdatasync calls that succeeded */
	uint64_t flushes_ignored;    /* acknowledged without fdatasync (cache_type Unsafe) */
	uint64_t discards, write_zeroes, get_ids;
	uint64_t ioerr, unsupp;
	uint64_t requeued;           /* chains put back into the ring for lack of io_uring room */
};

struct blk_req;

struct virtio_blk {
	struct virtio_dev dev;
	char name[24];
	char *path;
	struct blk_image img;
	struct blk_aio aio;
	struct evloop_handler completion;   /* the aio eventfd on the I/O thread */
	bool completion_watched;
	bool dev_ready;

	struct blk_req *reqs;               /* one per descriptor the queue can hold */
	uint16_t *free_reqs;                /* stack of free indices */
	unsigned n_free;
	bool throttled;                     /* chains left in the ring for lack of room */
	struct rate_limiter rl;
	struct rl_timer rl_timer;
	bool rl_wait;                       /* the next chain waits for tokens; the timer resumes */
	bool draining;                      /* reset: drop completions, start nothing */
	bool cache_unsafe;                  /* cache_type Unsafe: flushes are acknowledged only */
	bool need_notify;

	/* Host file system support for fallocate modes, learned from EOPNOTSUPP. */
	bool no_punch_hole;
	bool no_zero_range;
	uint8_t *zeroes;                    /* write-zeroes fallback buffer, allocated on need */

	bool trace;
	unsigned host_errors_logged;
	struct virtio_blk_stats stats;
};

/*
 * Opens the image and the io_uring and sets the device up on `mem`/`loop` (the completion
 * eventfd is added to the loop). Errors read "--disk PATH: ...".
 */
int virtio_blk_create(const struct disk_config *cfg, unsigned index,
		      const struct guest_memory *mem, struct evloop *loop, struct virtio_blk **out,
		      struct cv_error *err);
/*
 * Replaces the disk's rate limiter settings, from any thread (takes the device lock); a request
 * waiting for tokens is looked at again under the new settings at once.
 */
int blk_set_rate_limiter(struct virtio_blk *b, const struct rate_limiter_config *cfg,
			 struct cv_error *err);
/* Waits for in-flight I/O and frees the device (the owner callback of vm_virtio_plug). */
void virtio_blk_destroy(void *owner);

/*
 * PATCH /drives/ID {"path_on_host"}: the device continues on the image at `path`, opened with
 * the same read-only mode and serial source, and the driver is told the capacity may have
 * changed (configuration interrupt). Call with the VM paused (no request in flight); on failure
 * the old image stays.
 */
int virtio_blk_replace_image(struct virtio_blk *b, const char *path, const char *serial,
			     struct cv_error *err);

struct vm;

int virtio_blk_add(struct vm *vm, const struct disk_config *cfg, unsigned index, struct cv_error *err);

/*
 * Takes (lock) or drops every disk image lock of the VM: live migration hands them from the
 * source to the destination at the switch (block/image.h).
 */
struct vm;
int virtio_blk_lock_images(struct vm *vm, bool lock, struct cv_error *err);

#endif
