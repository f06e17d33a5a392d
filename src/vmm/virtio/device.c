/*
 * Transport-independent virtio device logic (see device.h).
 */
#include "device.h"

#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

void virtio_dev_init(struct virtio_dev *d, const char *name, const struct virtio_dev_ops *ops,
		     void *priv, unsigned num_queues, uint16_t queue_max_size, uint64_t features,
		     const struct guest_memory *mem, struct evloop *loop)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	d->name = name;
	d->ops = ops;
	d->priv = priv;
	d->num_queues = num_queues;
	d->queue_max_size = queue_max_size;
	d->host_features = features | (1ULL << VIRTIO_F_VERSION_1);
	d->mem = mem;
	d->loop = loop;
	for (unsigned q = 0; q < num_queues; q++)
		d->vq[q].size = queue_max_size;
}

void virtio_dev_destroy(struct virtio_dev *d)
{
	pthread_mutex_destroy(&d->lock);
}

void virtio_dev_notify_used(struct virtio_dev *d, unsigned q)
{
	if (virtq_should_notify(&d->vq[q])) {
		d->isr |= 1;
		d->transport->signal_queue(d, q);
	}
}

void virtio_dev_config_changed(struct virtio_dev *d)
{
	d->config_generation++;
	d->isr |= 2;
	d->transport->signal_config(d);
}

void virtio_dev_fail(struct virtio_dev *d, const char *why)
{
	if (!d->reported_broken) {
		fprintf(stderr, "cvisor-vmm: %s: the driver broke the virtio rules (%s); the device "
				"needs a reset\n", d->name, why);
		d->reported_broken = true;
	}
	if (d->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	d->status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_dev_config_changed(d);
}

void virtio_dev_reset(struct virtio_dev *d)
{
	if (d->ops->reset)
		d->ops->reset(d);
	for (unsigned q = 0; q < d->num_queues; q++) {
		virtq_stop(&d->vq[q]);
		memset(&d->vq[q], 0, sizeof(d->vq[q]));
		d->vq[q].size = d->queue_max_size;
		d->queue_enabled[q] = false;
	}
	d->guest_features = 0;
	d->status = 0;
	d->isr = 0;
	d->reported_broken = false;
}

static void activate(struct virtio_dev *d)
{
	bool indirect = virtio_dev_has(d, VIRTIO_RING_F_INDIRECT_DESC);
	bool event_idx = virtio_dev_has(d, VIRTIO_RING_F_EVENT_IDX);
	for (unsigned q = 0; q < d->num_queues; q++) {
		if (!d->queue_enabled[q])
			continue;
		d->vq[q].indirect = indirect;
		d->vq[q].event_idx = event_idx;
		if (virtq_start(&d->vq[q], d->mem) < 0) {
			virtio_dev_fail(d, d->vq[q].error);
			return;
		}
	}
	if (d->ops->activate && d->ops->activate(d) < 0)
		virtio_dev_fail(d, "device could not start");
}

void virtio_dev_write_status(struct virtio_dev *d, uint8_t status)
{
	if (status == 0) {
		virtio_dev_reset(d);
		return;
	}
	uint8_t old = d->status;
	if ((status & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		/* Accept only what we offered, and only the modern interface. */
		bool ok = !(d->guest_features & ~d->host_features) &&
			  virtio_dev_has(d, VIRTIO_F_VERSION_1);
		if (!ok)
			status &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
	}
	/*
	 * The driver sets status bits one by one and clears them only by a reset (virtio 1.2,
	 * 2.1.2). A write that drops bits is ignored for those bits: otherwise a driver could
	 * take DRIVER_OK back and then disable queues that are running. NEEDS_RESET is ours.
	 */
	d->status = (uint8_t)(old | (status & ~VIRTIO_STATUS_NEEDS_RESET));
	if ((status & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) &&
	    (status & VIRTIO_STATUS_FEATURES_OK))
		activate(d);
}

/* I/O thread: the guest kicked a queue. */
static void on_kick(void *opaque, uint32_t events)
{
	struct virtio_kick *k = opaque;
	struct virtio_dev *d = k->dev;
	(void)events;
	uint64_t v;
	if (read(k->fd, &v, sizeof(v)) < 0)
		return;
	pthread_mutex_lock(&d->lock);
	/* Kicks for a queue that is not running are dropped: the device must not touch it. */
	if (virtio_dev_running(d) && d->vq[k->queue].started && d->ops->queue_notify)
		d->ops->queue_notify(d, k->queue);
	pthread_mutex_unlock(&d->lock);
}

int virtio_kick_init(struct virtio_kick *k, struct virtio_dev *d, unsigned q,
		     struct evloop *loop, struct cv_error *err)
{
	*k = (struct virtio_kick){ .fd = -1, .loop = loop, .dev = d, .queue = q };
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "%s: eventfd", d->name);
	k->handler = (struct evloop_handler){ .fd = fd, .fn = on_kick, .opaque = k };
	if (evloop_add(loop, &k->handler, EPOLLIN, err) < 0) {
		close(fd);
		return -1;
	}
	k->fd = fd;
	return 0;
}

void virtio_kick_signal(struct virtio_kick *k)
{
	uint64_t one = 1;
	if (write(k->fd, &one, sizeof(one)) < 0) {
		/* saturated counter: a kick is already pending */
	}
}

void virtio_kick_destroy(struct virtio_kick *k)
{
	if (k->fd < 0)
		return;
	evloop_remove(k->loop, &k->handler);
	close(k->fd);
	k->fd = -1;
}
