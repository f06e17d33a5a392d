/*
 * virtio-mmio version 2 transport (see virtio_mmio.h). The register file is decoded here; the
 * state behind most registers (features, status, queues, InterruptStatus) is struct
 * virtio_dev's, changed only through the virtio_dev_* calls, exactly as virtio-pci does.
 *
 * Guest input rules (virtio 1.2, 4.2.2): control registers take 32-bit aligned accesses only,
 * so anything else reads as zero and is not written; configuration space (0x100 up) takes the
 * device's field widths and is bounded by the window. Writes the current state forbids -
 * DriverFeatures after FEATURES_OK, queue layout once the queue is ready or the device runs -
 * are ignored rather than failing the device: the driver reads back what took effect.
 */
#include "virtio_mmio.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/kvm.h>

#include "bytes.h"
#include "util.h"

int virtio_mmio_bus_init(struct virtio_mmio_bus *bus, const struct virtio_mmio_env *env,
			 struct cv_error *err)
{
	memset(bus, 0, sizeof(*bus));
	if (env->n_lines == 0 || env->n_lines > VIRTIO_MMIO_MAX_LINES)
		return cv_fail(err, CV_EXIT_SOFTWARE, "virtio-mmio: %u interrupt lines (1..%d)",
			       env->n_lines, VIRTIO_MMIO_MAX_LINES);
	if (env->max_devices > VIRTIO_MMIO_MAX_DEVICES)
		return cv_fail(err, CV_EXIT_SOFTWARE, "virtio-mmio: %u devices (at most %d)",
			       env->max_devices, VIRTIO_MMIO_MAX_DEVICES);
	bus->env = *env;
	pthread_mutex_init(&bus->lock, NULL);
	return 0;
}

void virtio_mmio_bus_destroy(struct virtio_mmio_bus *bus)
{
	pthread_mutex_destroy(&bus->lock);
}

/*
 * Sets this device's contribution to its (possibly shared) line. d->lock held. `force` drives
 * KVM even without a change of the OR, for when KVM's line may disagree with ours (restore).
 */
static void set_level(struct virtio_mmio *m, bool high, bool force)
{
	struct virtio_mmio_bus *b = m->bus;
	uint64_t bit = 1ULL << m->index;
	pthread_mutex_lock(&b->lock);
	uint64_t *a = &b->asserted[m->line];
	bool was = *a != 0;
	*a = high ? (*a | bit) : (*a & ~bit);
	bool now = *a != 0;
	/* Only edges of the OR reach KVM: a shared line stays up while any device wants it. */
	if ((was != now || force) && b->env.set_line)
		b->env.set_line(b->env.line_ctx, m->gsi, now);
	pthread_mutex_unlock(&b->lock);
}

/* The line follows InterruptStatus. */
static void update_line(struct virtio_mmio *m)
{
	set_level(m, m->dev->isr != 0, false);
}

void virtio_mmio_sync_irq(struct virtio_mmio *m)
{
	set_level(m, m->dev->isr != 0, true);
}

static void signal_queue(struct virtio_dev *d, unsigned q)
{
	(void)q;
	update_line(d->transport_priv);   /* device.c set the InterruptStatus bit already */
}

static void signal_config(struct virtio_dev *d)
{
	update_line(d->transport_priv);
}

static const struct virtio_transport_ops transport_ops = {
	.signal_queue = signal_queue,
	.signal_config = signal_config,
};

static struct virtq *selected(struct virtio_mmio *m)
{
	return m->regs.queue_sel < m->dev->num_queues ? &m->dev->vq[m->regs.queue_sel] : NULL;
}

/* The selected queue, if its layout may still change: not ready and the device not running. */
static struct virtq *configurable(struct virtio_mmio *m)
{
	struct virtq *vq = selected(m);
	if (!vq || m->dev->queue_enabled[m->regs.queue_sel] ||
	    (m->dev->status & VIRTIO_STATUS_DRIVER_OK))
		return NULL;
	return vq;
}

static uint32_t lo32(uint64_t v)
{
	return (uint32_t)v;
}

static uint32_t hi32(uint64_t v)
{
	return (uint32_t)(v >> 32);
}

static void set_lo32(uint64_t *v, uint32_t x)
{
	*v = (*v & 0xffffffff00000000ULL) | x;
}

static void set_hi32(uint64_t *v, uint32_t x)
{
	*v = (*v & 0xffffffffULL) | ((uint64_t)x << 32);
}

/* One 32-bit control register as the driver reads it. Lock held. */
static uint32_t reg_read(struct virtio_mmio *m, uint64_t off)
{
	struct virtio_dev *d = m->dev;
	struct virtq *vq = selected(m);
	uint32_t sel;
	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		return VIRTIO_MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION_REG:
		return VIRTIO_MMIO_VERSION;
	case VIRTIO_MMIO_DEVICE_ID:
		return d->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return VIRTIO_MMIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		sel = m->regs.device_features_sel;
		return sel < 2 ? (uint32_t)(d->host_features >> (32 * sel)) : 0;
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return vq ? d->queue_max_size : 0;   /* 0: no such queue */
	case VIRTIO_MMIO_QUEUE_NUM:
		return vq ? vq->size : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return vq && d->queue_enabled[m->regs.queue_sel];
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return d->isr;
	case VIRTIO_MMIO_STATUS:
		return d->status;
	/* The layout registers are write-only in the spec; reading back what took effect helps
	 * whoever debugs a driver and costs nothing. */
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
		return vq ? lo32(vq->desc_gpa) : 0;
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		return vq ? hi32(vq->desc_gpa) : 0;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
		return vq ? lo32(vq->avail_gpa) : 0;
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		return vq ? hi32(vq->avail_gpa) : 0;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
		return vq ? lo32(vq->used_gpa) : 0;
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		return vq ? hi32(vq->used_gpa) : 0;
	case VIRTIO_MMIO_SHM_LEN_LOW:
	case VIRTIO_MMIO_SHM_LEN_HIGH:
	case VIRTIO_MMIO_SHM_BASE_LOW:
	case VIRTIO_MMIO_SHM_BASE_HIGH:
		return 0xffffffffu;                   /* no shared memory regions: length -1 */
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return d->config_generation;
	default:
		return 0;                             /* write-only, reserved, QueueReset */
	}
}

/* One 32-bit control register write. Lock held. */
static void reg_write(struct virtio_mmio *m, uint64_t off, uint32_t v)
{
	struct virtio_dev *d = m->dev;
	struct virtq *vq;
	unsigned shift;
	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		m->regs.device_features_sel = v;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		m->regs.driver_features_sel = v;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		/* Features are fixed once FEATURES_OK is set; bits past 63 do not exist. */
		if (m->regs.driver_features_sel >= 2 || (d->status & VIRTIO_STATUS_FEATURES_OK))
			break;
		shift = 32 * m->regs.driver_features_sel;
		d->guest_features = (d->guest_features & ~(0xffffffffULL << shift)) |
				    ((uint64_t)v << shift);
		break;
	case VIRTIO_MMIO_QUEUE_SEL:
		m->regs.queue_sel = v;
		break;
	case VIRTIO_MMIO_QUEUE_NUM:
		/* A smaller power of two is the driver's choice (split rings need one). */
		vq = configurable(m);
		if (vq && v && v <= d->queue_max_size && !(v & (v - 1)))
			vq->size = (uint16_t)v;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		/*
		 * 1 readies the queue, 0 takes it back (Linux writes 0 when deleting queues and
		 * checks that it reads 0). A running device keeps its queues: without
		 * VIRTIO_F_RING_RESET only a device reset stops one.
		 */
		if (selected(m) && !(d->status & VIRTIO_STATUS_DRIVER_OK) && v <= 1)
			d->queue_enabled[m->regs.queue_sel] = v == 1;
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		d->isr &= (uint8_t)~v;
		update_line(m);
		break;
	case VIRTIO_MMIO_STATUS:
		/* Only the low byte is defined; a write with reserved bits must not become a reset. */
		if (v > 0xff)
			break;
		virtio_dev_write_status(d, (uint8_t)v);
		if (v == 0)
			memset(&m->regs, 0, sizeof(m->regs));
		update_line(m);                    /* a reset clears InterruptStatus */
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
		if ((vq = configurable(m)))
			set_lo32(&vq->desc_gpa, v);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if ((vq = configurable(m)))
			set_hi32(&vq->desc_gpa, v);
		break;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
		if ((vq = configurable(m)))
			set_lo32(&vq->avail_gpa, v);
		break;
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		if ((vq = configurable(m)))
			set_hi32(&vq->avail_gpa, v);
		break;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
		if ((vq = configurable(m)))
			set_lo32(&vq->used_gpa, v);
		break;
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		if ((vq = configurable(m)))
			set_hi32(&vq->used_gpa, v);
		break;
	case VIRTIO_MMIO_SHM_SEL:
		m->regs.shm_sel = v;
		break;
	default:
		break;                                /* read-only, reserved, QueueReset */
	}
}

static bool control_access(uint64_t off, uint32_t len)
{
	return off < VIRTIO_MMIO_CONFIG && len == 4 && (off & 3) == 0;
}

static bool config_access(uint64_t off, uint32_t len)
{
	return off >= VIRTIO_MMIO_CONFIG && len >= 1 && len <= 8 &&
	       off + len <= VIRTIO_MMIO_WINDOW;
}

static void mmio_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
	struct virtio_mmio *m = opaque;
	struct virtio_dev *d = m->dev;
	memset(data, 0, len);
	if (control_access(off, len)) {
		pthread_mutex_lock(&d->lock);
		put_le32(data, reg_read(m, off));
		pthread_mutex_unlock(&d->lock);
	} else if (config_access(off, len) && d->ops->config_read) {
		pthread_mutex_lock(&d->lock);
		d->ops->config_read(d, (uint32_t)(off - VIRTIO_MMIO_CONFIG), data, len);
		pthread_mutex_unlock(&d->lock);
	}
}

static void mmio_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
	struct virtio_mmio *m = opaque;
	struct virtio_dev *d = m->dev;
	if (control_access(off, len)) {
		uint32_t v = get_le32(data);
		if (off == VIRTIO_MMIO_QUEUE_NOTIFY) {
			/*
			 * Reached only when no ioeventfd matched (none registered, or a value that
			 * is not a queue index). The queue handler runs on the I/O thread either way.
			 */
			if (v < d->num_queues && m->notify[v].kick.fd >= 0)
				virtio_kick_signal(&m->notify[v].kick);
			return;
		}
		pthread_mutex_lock(&d->lock);
		reg_write(m, off, v);
		pthread_mutex_unlock(&d->lock);
	} else if (config_access(off, len) && d->ops->config_write) {
		pthread_mutex_lock(&d->lock);
		d->ops->config_write(d, (uint32_t)(off - VIRTIO_MMIO_CONFIG), data, len);
		pthread_mutex_unlock(&d->lock);
	}
}

const struct io_ops virtio_mmio_io_ops = { .read = mmio_read, .write = mmio_write };

static int ioeventfd(struct virtio_mmio *m, struct virtio_mmio_notify *n, bool on)
{
	struct kvm_ioeventfd io = {
		.datamatch = n->kick.queue,
		.addr = m->base + VIRTIO_MMIO_QUEUE_NOTIFY,
		.len = 4,
		.fd = n->kick.fd,
		.flags = KVM_IOEVENTFD_FLAG_DATAMATCH | (on ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
	};
	return ioctl(m->bus->env.vm_fd, KVM_IOEVENTFD, &io);
}

int virtio_mmio_init(struct virtio_mmio *m, struct virtio_dev *dev, struct virtio_mmio_bus *bus,
		     struct cv_error *err)
{
	memset(m, 0, sizeof(*m));
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		m->notify[q].kick.fd = -1;
	const struct virtio_mmio_env *env = &bus->env;
	if (bus->n_devices >= env->max_devices)
		return cv_fail(err, CV_EXIT_USAGE, "at most %u virtio-mmio devices", env->max_devices);
	m->dev = dev;
	m->bus = bus;
	m->index = bus->n_devices++;
	m->base = env->base + (uint64_t)m->index * VIRTIO_MMIO_WINDOW;
	m->line = m->index % env->n_lines;
	m->gsi = env->lines[m->line];
	dev->transport = &transport_ops;
	dev->transport_priv = m;

	for (unsigned q = 0; q < dev->num_queues; q++) {
		struct virtio_mmio_notify *n = &m->notify[q];
		if (virtio_kick_init(&n->kick, dev, q, env->loop, err) < 0)
			return -1;
		/* Without the ioeventfd the kick still works, through mmio_write. */
		n->ioeventfd = env->vm_fd >= 0 && ioeventfd(m, n, true) == 0;
	}
	return io_bus_register(env->mmio, m->base, VIRTIO_MMIO_WINDOW, &virtio_mmio_io_ops, m,
			       dev->name, err);
}

void virtio_mmio_destroy(struct virtio_mmio *m)
{
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		struct virtio_mmio_notify *n = &m->notify[q];
		if (n->ioeventfd)
			ioeventfd(m, n, false);
		virtio_kick_destroy(&n->kick);
		n->ioeventfd = false;
	}
}

int virtio_mmio_cmdline_param(const struct virtio_mmio *m, char *buf, size_t len)
{
	int n = snprintf(buf, len, "virtio_mmio.device=%uK@0x%llx:%u", VIRTIO_MMIO_WINDOW / 1024,
			 (unsigned long long)m->base, m->gsi);
	return n < 0 || (size_t)n >= len ? -1 : n;
}

bool virtio_mmio_cmdline_disables_pci(const char *cmdline)
{
	static const char prefix[] = "pci=", off_item[] = "off";
	bool off = false;
	const char *p = cmdline ? cmdline : "";
	for (;;) {
		while (*p && isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		/*
		 * One word, double quotes grouping spaces as in the kernel's parser. Scanned in one
		 * pass, without a copy: is it "--", and is it "pci=" followed by a comma-separated
		 * list with the item "off"?
		 */
		size_t k = 0, item_len = 0;
		bool quoted = false, dashes = true, pci = true, item_off = true;
		for (; *p && (quoted || !isspace((unsigned char)*p)); p++) {
			char c = *p;
			if (c == '"') {
				quoted = !quoted;
				continue;
			}
			dashes = dashes && k < 2 && c == '-';
			if (k < 4) {
				pci = pci && c == prefix[k];
			} else if (pci && c == ',') {
				off = off || (item_off && item_len == 3);
				item_len = 0;
				item_off = true;
			} else if (pci) {
				item_off = item_off && item_len < 3 && c == off_item[item_len];
				item_len++;
			}
			k++;
		}
		if (dashes && k == 2)
			break;                        /* the rest is init's */
		if (pci && k >= 4)
			off = off || (item_off && item_len == 3);
	}
	return off;
}
