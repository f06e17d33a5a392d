/*
 * virtio-pci modern transport (see pci.h). BAR 0 layout:
 *   0x0000 common configuration   0x1000 ISR status
 *   0x2000 device configuration   0x3000 notifications, 4 bytes per queue
 * BAR 1: MSI-X table at 0, pending bits at 0x800.
 */
#include "virtio_pci.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "bytes.h"
#include "util.h"

#define PCI_VENDOR_REDHAT_QUMRANET 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040
#define PCI_CAP_ID_VNDR 0x09

#define CFG_COMMON 1
#define CFG_NOTIFY 2
#define CFG_ISR 3
#define CFG_DEVICE 4

#define BAR0_SIZE 0x4000
#define COMMON_OFF 0x0000
#define COMMON_SIZE 0x38
#define ISR_OFF 0x1000
#define DEVICE_OFF 0x2000
#define DEVICE_SIZE 0x1000
#define NOTIFY_OFF 0x3000
#define NOTIFY_MULTIPLIER 4
#define BAR1_SIZE 0x1000
#define MSIX_TABLE_OFF 0x0
#define MSIX_PBA_OFF 0x800
#define NO_VECTOR 0xffff

/* Common configuration register offsets */
enum {
	C_DFSELECT = 0x00, C_DF = 0x04, C_GFSELECT = 0x08, C_GF = 0x0c, C_MSIX = 0x10,
	C_NUMQ = 0x12, C_STATUS = 0x14, C_CFGGEN = 0x15, C_QSELECT = 0x16, C_QSIZE = 0x18,
	C_QMSIX = 0x1a, C_QENABLE = 0x1c, C_QNOFF = 0x1e, C_QDESC = 0x20, C_QDRIVER = 0x28,
	C_QDEVICE = 0x30,
};

static struct virtq *selected(struct virtio_pci *vp)
{
	return vp->queue_select < vp->dev->num_queues ? &vp->dev->vq[vp->queue_select] : NULL;
}

/* Builds the common configuration as the guest would read it. Lock held. */
static void common_snapshot(struct virtio_pci *vp, uint8_t *c)
{
	struct virtio_dev *d = vp->dev;
	memset(c, 0, COMMON_SIZE);
	put_le32(c + C_DFSELECT, vp->device_feature_select);
	uint64_t f = vp->device_feature_select < 2 ? d->host_features : 0;
	put_le32(c + C_DF, (uint32_t)(f >> (32 * (vp->device_feature_select & 1))));
	put_le32(c + C_GFSELECT, vp->driver_feature_select);
	uint64_t g = vp->driver_feature_select < 2 ? d->guest_features : 0;
	put_le32(c + C_GF, (uint32_t)(g >> (32 * (vp->driver_feature_select & 1))));
	put_le16(c + C_MSIX, vp->msix_config);
	put_le16(c + C_NUMQ, (uint16_t)d->num_queues);
	c[C_STATUS] = d->status;
	c[C_CFGGEN] = d->config_generation;
	put_le16(c + C_QSELECT, vp->queue_select);
	struct virtq *vq = selected(vp);
	if (!vq)
		return;        /* a non-existent queue reads as size 0 */
	unsigned q = vp->queue_select;
	put_le16(c + C_QSIZE, vq->size);
	put_le16(c + C_QMSIX, vp->queue_msix[q]);
	put_le16(c + C_QENABLE, d->queue_enabled[q]);
	put_le16(c + C_QNOFF, (uint16_t)q);
	put_le64(c + C_QDESC, vq->desc_gpa);
	put_le64(c + C_QDRIVER, vq->avail_gpa);
	put_le64(c + C_QDEVICE, vq->used_gpa);
}

static uint16_t valid_vector(struct virtio_pci *vp, uint16_t v)
{
	return v < vp->msix.nvec ? v : NO_VECTOR;
}

/* Applies one field the guest wrote (value already merged from its bytes). Lock held. */
static void common_apply(struct virtio_pci *vp, unsigned field, uint64_t v)
{
	struct virtio_dev *d = vp->dev;
	struct virtq *vq = selected(vp);
	bool live = vq && !d->queue_enabled[vp->queue_select] && !(d->status & VIRTIO_STATUS_DRIVER_OK);
	switch (field) {
	case C_DFSELECT:
		vp->device_feature_select = (uint32_t)v;
		break;
	case C_GFSELECT:
		vp->driver_feature_select = (uint32_t)v;
		break;
	case C_GF:
		if (vp->driver_feature_select < 2 && !(d->status & VIRTIO_STATUS_FEATURES_OK)) {
			unsigned shift = 32 * vp->driver_feature_select;
			d->guest_features = (d->guest_features & ~(0xffffffffULL << shift)) |
					    ((v & 0xffffffffULL) << shift);
		}
		break;
	case C_MSIX:
		vp->msix_config = valid_vector(vp, (uint16_t)v);
		break;
	case C_STATUS:
		virtio_dev_write_status(d, (uint8_t)v);
		if (v == 0) {
			vp->msix_config = NO_VECTOR;
			for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
				vp->queue_msix[q] = NO_VECTOR;
		}
		break;
	case C_QSELECT:
		vp->queue_select = (uint16_t)v;
		break;
	case C_QSIZE:
		/* Smaller power-of-two sizes are the driver's right; anything else is ignored. */
		if (live && v && v <= d->queue_max_size && !(v & (v - 1)))
			vq->size = (uint16_t)v;
		break;
	case C_QMSIX:
		if (vq)
			vp->queue_msix[vp->queue_select] = valid_vector(vp, (uint16_t)v);
		break;
	case C_QENABLE:
		if (vq && v == 1 && !(d->status & VIRTIO_STATUS_DRIVER_OK))
			d->queue_enabled[vp->queue_select] = true;
		break;
	case C_QDESC:
		if (live)
			vq->desc_gpa = v;
		break;
	case C_QDRIVER:
		if (live)
			vq->avail_gpa = v;
		break;
	case C_QDEVICE:
		if (live)
			vq->used_gpa = v;
		break;
	}
}

static const struct {
	unsigned off, size;
} common_fields[] = {
	{ C_DFSELECT, 4 }, { C_GFSELECT, 4 }, { C_GF, 4 }, { C_MSIX, 2 }, { C_STATUS, 1 },
	{ C_QSELECT, 2 }, { C_QSIZE, 2 }, { C_QMSIX, 2 }, { C_QENABLE, 2 }, { C_QDESC, 8 },
	{ C_QDRIVER, 8 }, { C_QDEVICE, 8 },
};

static void common_write(struct virtio_pci *vp, uint64_t off, const uint8_t *data, uint32_t len)
{
	uint8_t c[COMMON_SIZE];
	common_snapshot(vp, c);
	for (size_t i = 0; i < CV_ARRAY_SIZE(common_fields); i++) {
		unsigned fo = common_fields[i].off, fs = common_fields[i].size;
		if (off + len <= fo || off >= fo + fs)
			continue;
		/* Merge the written bytes into the field: 64-bit addresses arrive as two dwords. */
		for (uint32_t k = 0; k < len; k++)
			if (off + k >= fo && off + k < fo + fs)
				c[off + k] = data[k];
		uint64_t v = 0;
		memcpy(&v, c + fo, fs);
		common_apply(vp, fo, le64toh(v));
	}
}

static void bar0_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
	struct virtio_pci *vp = opaque;
	struct virtio_dev *d = vp->dev;
	memset(data, 0, len);
	pthread_mutex_lock(&d->lock);
	if (off < COMMON_OFF + COMMON_SIZE && off + len <= COMMON_SIZE) {
		uint8_t c[COMMON_SIZE];
		common_snapshot(vp, c);
		memcpy(data, c + off, len);
	} else if (off == ISR_OFF) {
		data[0] = d->isr;       /* reading acknowledges */
		d->isr = 0;
	} else if (off >= DEVICE_OFF && off + len <= DEVICE_OFF + DEVICE_SIZE) {
		if (d->ops->config_read)
			d->ops->config_read(d, (uint32_t)(off - DEVICE_OFF), data, len);
	}
	pthread_mutex_unlock(&d->lock);
}

static void bar0_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
	struct virtio_pci *vp = opaque;
	struct virtio_dev *d = vp->dev;
	if (off >= NOTIFY_OFF && off < NOTIFY_OFF + (uint64_t)NOTIFY_MULTIPLIER * d->num_queues) {
		/* Reached only when the ioeventfd is not in place (wrong width, or unsupported). */
		virtio_kick_signal(&vp->notify[(off - NOTIFY_OFF) / NOTIFY_MULTIPLIER].kick);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (off < COMMON_SIZE && off + len <= COMMON_SIZE)
		common_write(vp, off, data, len);
	else if (off >= DEVICE_OFF && off + len <= DEVICE_OFF + DEVICE_SIZE && d->ops->config_write)
		d->ops->config_write(d, (uint32_t)(off - DEVICE_OFF), data, len);
	pthread_mutex_unlock(&d->lock);
}

static const struct io_ops bar0_ops = { .read = bar0_read, .write = bar0_write };

static void bar1_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
	struct virtio_pci *vp = opaque;
	if (off >= MSIX_PBA_OFF)
		msix_pba_read(&vp->msix, off - MSIX_PBA_OFF, data, len);
	else
		msix_table_read(&vp->msix, off, data, len);
}

static void bar1_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
	struct virtio_pci *vp = opaque;
	if (off < MSIX_PBA_OFF)
		msix_table_write(&vp->msix, off, data, len);
}

static const struct io_ops bar1_ops = { .read = bar1_read, .write = bar1_write };

static void signal_queue(struct virtio_dev *d, unsigned q)
{
	struct virtio_pci *vp = d->transport_priv;
	if (vp->queue_msix[q] != NO_VECTOR)
		msix_notify(&vp->msix, vp->queue_msix[q]);
}

static void signal_config(struct virtio_dev *d)
{
	struct virtio_pci *vp = d->transport_priv;
	if (vp->msix_config != NO_VECTOR)
		msix_notify(&vp->msix, vp->msix_config);
}

static const struct virtio_transport_ops transport_ops = {
	.signal_queue = signal_queue,
	.signal_config = signal_config,
};

static int ioeventfd(struct virtio_pci *vp, struct virtio_pci_notify *n, uint64_t addr, bool on)
{
	struct kvm_ioeventfd io = {
		.addr = addr, .len = 2, .fd = n->kick.fd,
		.flags = on ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};
	return ioctl(vp->vm_fd, KVM_IOEVENTFD, &io);
}

/* BAR 0 moved or its decoding toggled: move the ioeventfds with it. */
static void bar_mapped(struct pci_device *pd, unsigned bar, uint64_t addr, bool mapped)
{
	struct virtio_pci *vp = pd->opaque;
	if (bar != 0)
		return;
	for (unsigned q = 0; q < vp->dev->num_queues; q++) {
		struct virtio_pci_notify *n = &vp->notify[q];
		if (!mapped && n->ioeventfd_addr) {
			ioeventfd(vp, n, n->ioeventfd_addr, false);
			n->ioeventfd_addr = 0;
		} else if (mapped) {
			uint64_t a = addr + NOTIFY_OFF + (uint64_t)NOTIFY_MULTIPLIER * q;
			/* Without an ioeventfd the kick still works, through bar0_write. */
			if (ioeventfd(vp, n, a, true) == 0)
				n->ioeventfd_addr = a;
		}
	}
}

static void config_written(struct pci_device *pd, uint32_t off, uint32_t len)
{
	struct virtio_pci *vp = pd->opaque;
	msix_config_written(&vp->msix, off, len);
}

static const struct pci_device_ops pci_ops = {
	.config_written = config_written,
	.bar_mapped = bar_mapped,
};

static void add_virtio_cap(struct pci_device *pd, uint8_t type, uint32_t off, uint32_t len,
			   bool notify)
{
	uint8_t body[18] = { 0 };
	body[0] = notify ? 20 : 16;      /* cap_len, including the 2-byte header */
	body[1] = type;
	body[2] = 0;                     /* BAR 0 */
	put_le32(body + 6, off);
	put_le32(body + 10, len);
	if (notify)
		put_le32(body + 14, NOTIFY_MULTIPLIER);
	pci_device_add_cap(pd, PCI_CAP_ID_VNDR, body, notify ? 18 : 14);
}

int virtio_pci_init(struct virtio_pci *vp, struct virtio_dev *dev,
		    const struct virtio_pci_env *env, struct cv_error *err)
{
	memset(vp, 0, sizeof(*vp));
	vp->dev = dev;
	vp->vm_fd = env->vm_fd;
	vp->msix_config = NO_VECTOR;
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		vp->queue_msix[q] = NO_VECTOR;
		vp->notify[q].kick.fd = -1;
	}
	dev->transport = &transport_ops;
	dev->transport_priv = vp;

	struct pci_device *pd = &vp->pci;
	pci_device_init(pd, dev->name, PCI_VENDOR_REDHAT_QUMRANET,
			(uint16_t)(VIRTIO_PCI_DEVICE_BASE + dev->ops->device_id), dev->ops->pci_class,
			1, PCI_VENDOR_REDHAT_QUMRANET, 0x1100);
	pd->ops = &pci_ops;
	pd->opaque = vp;
	pci_device_add_bar(pd, 0, BAR0_SIZE, false, &bar0_ops, vp);
	pci_device_add_bar(pd, 1, BAR1_SIZE, false, &bar1_ops, vp);
	add_virtio_cap(pd, CFG_COMMON, COMMON_OFF, COMMON_SIZE, false);
	add_virtio_cap(pd, CFG_ISR, ISR_OFF, 1, false);
	add_virtio_cap(pd, CFG_DEVICE, DEVICE_OFF, DEVICE_SIZE, false);
	add_virtio_cap(pd, CFG_NOTIFY, NOTIFY_OFF, NOTIFY_MULTIPLIER * dev->num_queues, true);
	/* One vector per queue plus one for configuration changes. */
	if (msix_init(&vp->msix, pd, env->irq, dev->num_queues + 1, 1, MSIX_TABLE_OFF,
		      MSIX_PBA_OFF, err) < 0)
		return -1;

	for (unsigned q = 0; q < dev->num_queues; q++) {
		if (virtio_kick_init(&vp->notify[q].kick, dev, q, env->loop, err) < 0)
			return -1;
	}
	return pci_bus_add_device(env->bus, pd, err);
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		struct virtio_pci_notify *n = &vp->notify[q];
		if (n->ioeventfd_addr)
			ioeventfd(vp, n, n->ioeventfd_addr, false);
		virtio_kick_destroy(&n->kick);
	}
	msix_destroy(&vp->msix);
}
