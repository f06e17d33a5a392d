/*
 * What every virtio device shares, independent of the transport (PCI or MMIO): feature
 * negotiation, the status state machine, the virtqueues and a lock. A device implements
 * virtio_dev_ops; the transport turns register accesses into the virtio_dev_* calls below and
 * delivers the device's interrupts.
 *
 * Locking: d->lock guards everything here and the device's own state. Transport handlers on
 * vCPU threads and queue handlers on the I/O thread both run with it held.
 */
#ifndef CVISOR_VMM_VIRTIO_DEVICE_H
#define CVISOR_VMM_VIRTIO_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"
#include "memory.h"
#include "virtq.h"

#define VIRTIO_MAX_QUEUES 16

/* Device IDs (virtio 1.2, section 5) */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_BALLOON 5
#define VIRTIO_ID_VSOCK 19

/* Device-independent feature bits */
#define VIRTIO_F_VERSION_1 32

/* Device status bits */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

struct virtio_dev;
struct snap_buf;
struct snap_cur;
struct rate_limiter;

struct virtio_dev_ops {
	uint32_t device_id;
	uint32_t pci_class;        /* PCI class code for the PCI transport */
	/* Device-specific configuration space. */
	void (*config_read)(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len);
	void (*config_write)(struct virtio_dev *d, uint32_t off, const uint8_t *data, uint32_t len);
	/* DRIVER_OK: the enabled queues are started. Return -1 to refuse (NEEDS_RESET). */
	int (*activate)(struct virtio_dev *d);
	/* The driver reset the device, or the VMM is tearing it down: drop all in-flight work. */
	void (*reset)(struct virtio_dev *d);
	/* The driver made buffers available on queue q (I/O thread). */
	void (*queue_notify)(struct virtio_dev *d, unsigned q);
	/*
	 * Pause and snapshots (src/vmm/snapshot/; all optional, lock held, VM paused).
	 * quiesce: finish work in flight that touches guest memory. held: how many chains of
	 * queue q the device popped and keeps unanswered; they are the last ones popped, and are
	 * saved as still available so a restored device pops them again. save: append the
	 * device's own state. load: after the core state is back and the device re-activated,
	 * apply what save wrote; -1 with err if it does not fit this device.
	 */
	void (*quiesce)(struct virtio_dev *d);
	unsigned (*held)(struct virtio_dev *d, unsigned q);
	void (*save)(struct virtio_dev *d, struct snap_buf *out);
	int (*load)(struct virtio_dev *d, struct snap_cur *in, struct cv_error *err);
	/*
	 * The device's rate limiters, in a fixed order (at most VIRTIO_MAX_LIMITERS), so that
	 * snapshots and migration carry their settings and levels; optional.
	 */
	unsigned (*limiters)(struct virtio_dev *d, struct rate_limiter **out);
};

#define VIRTIO_MAX_LIMITERS 2

struct virtio_transport_ops {
	void (*signal_queue)(struct virtio_dev *d, unsigned q);
	void (*signal_config)(struct virtio_dev *d);
};

struct virtio_dev {
	const char *name;
	const struct virtio_dev_ops *ops;
	void *priv;
	pthread_mutex_t lock;
	const struct guest_memory *mem;
	struct evloop *loop;

	uint64_t host_features;
	uint64_t guest_features;
	uint8_t status;
	uint8_t config_generation;
	uint8_t isr;                 /* bit 0 queue interrupt, bit 1 config change */
	unsigned num_queues;
	uint16_t queue_max_size;
	struct virtq vq[VIRTIO_MAX_QUEUES];
	bool queue_enabled[VIRTIO_MAX_QUEUES];

	const struct virtio_transport_ops *transport;
	void *transport_priv;
	bool reported_broken;        /* NEEDS_RESET message printed once */
};

void virtio_dev_init(struct virtio_dev *d, const char *name, const struct virtio_dev_ops *ops,
		     void *priv, unsigned num_queues, uint16_t queue_max_size, uint64_t features,
		     const struct guest_memory *mem, struct evloop *loop);
void virtio_dev_destroy(struct virtio_dev *d);

static inline bool virtio_dev_has(const struct virtio_dev *d, unsigned bit)
{
	return d->guest_features & (1ULL << bit);
}

static inline bool virtio_dev_running(const struct virtio_dev *d)
{
	return (d->status & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_NEEDS_RESET);
}

/* --- for devices (lock held) --- */

/* Interrupts the driver for queue q if it asked to be told about new used buffers. */
void virtio_dev_notify_used(struct virtio_dev *d, unsigned q);
/* The device config changed: bump the generation and interrupt. */
void virtio_dev_config_changed(struct virtio_dev *d);
/*
 * Queue q (or the device) met a driver error: stop using it and enter NEEDS_RESET, which the
 * driver learns through a config interrupt. `why` is logged once.
 */
void virtio_dev_fail(struct virtio_dev *d, const char *why);

/* --- for transports (lock held) --- */

/* Applies a driver status write: FEATURES_OK validation, DRIVER_OK activation, 0 = reset. */
void virtio_dev_write_status(struct virtio_dev *d, uint8_t status);
void virtio_dev_reset(struct virtio_dev *d);

/*
 * A queue's kick, the same on every transport: an eventfd that the guest's notify write
 * signals (through a KVM ioeventfd the transport places on its notify address, or through the
 * transport's trap handler when there is none), watched by the I/O thread, which then runs the
 * device's queue_notify. Only where the notify address is differs between transports.
 */
struct virtio_kick {
	int fd;                          /* -1 when not set up */
	struct evloop_handler handler;
	struct evloop *loop;
	struct virtio_dev *dev;
	unsigned queue;
};

/* Creates queue q's eventfd and watches it on loop. */
int virtio_kick_init(struct virtio_kick *k, struct virtio_dev *d, unsigned q,
		     struct evloop *loop, struct cv_error *err);
/* A notify write the transport trapped (no ioeventfd took it): signal the eventfd. */
void virtio_kick_signal(struct virtio_kick *k);
/* Stops watching and closes the eventfd; a kick never set up (fd -1) is left alone. */
void virtio_kick_destroy(struct virtio_kick *k);

#endif
