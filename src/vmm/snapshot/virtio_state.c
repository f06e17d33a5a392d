/*
 * Virtio devices for snapshots (see state.h): the transport-independent core, the transport
 * (virtio-pci or virtio-mmio) and, through virtio_dev_ops.save/load, the device's own state.
 * Payload:
 *   core:   u32 device id | u32 queues | u64 offered features | u64 driver features |
 *           u8 status | u8 config generation | u8 ISR |
 *           per queue: u16 size | u8 enabled | u64 desc, avail, used | u8 started |
 *           u16 last_avail | u16 used_idx | u16 signalled_used | u8 signalled_valid |
 *           u8 kicks_wanted
 *   pci:    u32 transport (1) | u32 device feature select | u32 driver feature select |
 *           u16 queue select | u16 config vector | u16 vector per queue |
 *           u32 MSI-X vectors | blob MSI-X table | u64 pending bits
 *   mmio:   u32 transport (2) | u32 device features select | u32 driver features select |
 *           u32 queue select | u32 shared memory select
 *           (the interrupt line is re-derived from the restored ISR)
 *   device: blob (what ops->save wrote)
 *
 * The device is quiesced when saved (nothing in flight); chains it keeps popped (ops->held)
 * are saved as still available, so last_avail is rewound over them. Restoring replays what
 * the driver did: features and queue addresses, then activation as at DRIVER_OK, then the ring
 * positions; each queue's notification eventfd is then signalled once, since kicks pending in
 * the old process are gone and the device must look at every ring when the VM runs.
 */
#include <string.h>

#include "snapshot/state.h"
#include "util.h"
#include "vm.h"

#define TRANSPORT_PCI 1
#define TRANSPORT_MMIO 2

static void core_save(struct virtio_dev *d, struct snap_buf *out)
{
	snap_put_u32(out, d->ops->device_id);
	snap_put_u32(out, d->num_queues);
	snap_put_u64(out, d->host_features);
	snap_put_u64(out, d->guest_features);
	snap_put_u8(out, d->status);
	snap_put_u8(out, d->config_generation);
	snap_put_u8(out, d->isr);
	for (unsigned q = 0; q < d->num_queues; q++) {
		const struct virtq *vq = &d->vq[q];
		unsigned held = vq->started && d->ops->held ? d->ops->held(d, q) : 0;
		snap_put_u16(out, vq->size);
		snap_put_u8(out, d->queue_enabled[q]);
		snap_put_u64(out, vq->desc_gpa);
		snap_put_u64(out, vq->avail_gpa);
		snap_put_u64(out, vq->used_gpa);
		snap_put_u8(out, vq->started && !vq->broken);
		snap_put_u16(out, (uint16_t)(vq->last_avail - held));
		snap_put_u16(out, vq->used_idx);
		snap_put_u16(out, vq->signalled_used);
		snap_put_u8(out, vq->signalled_valid);
		snap_put_u8(out, vq->kicks_wanted);
	}
}

static void pci_save(struct virtio_pci *vp, struct snap_buf *out)
{
	snap_put_u32(out, TRANSPORT_PCI);
	snap_put_u32(out, vp->device_feature_select);
	snap_put_u32(out, vp->driver_feature_select);
	snap_put_u16(out, vp->queue_select);
	snap_put_u16(out, vp->msix_config);
	for (unsigned q = 0; q < vp->dev->num_queues; q++)
		snap_put_u16(out, vp->queue_msix[q]);
	struct msix *m = &vp->msix;
	pthread_mutex_lock(&m->lock);
	snap_put_u32(out, m->nvec);
	snap_put_blob(out, m->table, (size_t)m->nvec * MSIX_ENTRY_SIZE);
	snap_put_u64(out, m->pending);
	pthread_mutex_unlock(&m->lock);
}

static void mmio_save(struct virtio_mmio *m, struct snap_buf *out)
{
	snap_put_u32(out, TRANSPORT_MMIO);
	snap_put_u32(out, m->regs.device_features_sel);
	snap_put_u32(out, m->regs.driver_features_sel);
	snap_put_u32(out, m->regs.queue_sel);
	snap_put_u32(out, m->regs.shm_sel);
}

void virtio_state_save(struct vm_virtio *v, struct snap_buf *out)
{
	struct virtio_dev *d = v->dev;
	pthread_mutex_lock(&d->lock);
	core_save(d, out);
	if (v->kind == VIRTIO_TRANSPORT_MMIO)
		mmio_save(&v->transport.mmio, out);
	else
		pci_save(&v->transport.pci, out);
	struct snap_buf dev = { 0 };
	if (d->ops->save)
		d->ops->save(d, &dev);
	if (dev.oom)
		out->oom = true;
	snap_put_blob(out, dev.b, dev.len);
	snap_buf_free(&dev);
	pthread_mutex_unlock(&d->lock);
}

/* Ring positions read from the snapshot, applied once the queue is started. */
struct queue_pos {
	bool started;
	uint16_t last_avail, used_idx, signalled_used;
	bool signalled_valid, kicks_wanted;
};

static int core_load(struct virtio_dev *d, struct snap_cur *in, struct queue_pos *pos,
		     struct cv_error *err)
{
	uint32_t id = snap_get_u32(in), nq = snap_get_u32(in);
	uint64_t offered = snap_get_u64(in), features = snap_get_u64(in);
	uint8_t status = snap_get_u8(in), gen = snap_get_u8(in), isr = snap_get_u8(in);
	if (in->bad)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: truncated state", d->name);
	if (id != d->ops->device_id || nq != d->num_queues)
		return cv_fail(err, CV_EXIT_USAGE, "snapshot: %s: the snapshot has device type %u with "
			       "%u queues here, this VM type %u with %u (different device options?)",
			       d->name, id, nq, d->ops->device_id, d->num_queues);
	if (features & ~d->host_features)
		return cv_fail(err, CV_EXIT_USAGE, "snapshot: %s: the guest driver uses features "
			       "0x%llx this device cannot offer here (offered 0x%llx there, 0x%llx "
			       "here)", d->name, (unsigned long long)(features & ~d->host_features),
			       (unsigned long long)offered, (unsigned long long)d->host_features);
	d->guest_features = features;
	d->status = status;
	d->config_generation = gen;
	d->isr = isr & 3;
	for (unsigned q = 0; q < nq; q++) {
		struct virtq *vq = &d->vq[q];
		uint16_t size = snap_get_u16(in);
		bool enabled = snap_get_u8(in);
		vq->desc_gpa = snap_get_u64(in);
		vq->avail_gpa = snap_get_u64(in);
		vq->used_gpa = snap_get_u64(in);
		pos[q].started = snap_get_u8(in);
		pos[q].last_avail = snap_get_u16(in);
		pos[q].used_idx = snap_get_u16(in);
		pos[q].signalled_used = snap_get_u16(in);
		pos[q].signalled_valid = snap_get_u8(in);
		pos[q].kicks_wanted = snap_get_u8(in);
		if (size == 0 || size > d->queue_max_size || (size & (size - 1)))
			return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: queue %u has size %u",
				       d->name, q, size);
		vq->size = size;
		d->queue_enabled[q] = enabled;
	}
	if (in->bad)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: truncated queue state", d->name);
	return 0;
}

static int pci_load(struct virtio_pci *vp, struct snap_cur *in, struct cv_error *err)
{
	struct virtio_dev *d = vp->dev;
	if (snap_get_u32(in) != TRANSPORT_PCI)
		return cv_fail(err, CV_EXIT_USAGE, "snapshot: %s: saved with another transport than "
			       "virtio-pci", d->name);
	vp->device_feature_select = snap_get_u32(in);
	vp->driver_feature_select = snap_get_u32(in);
	vp->queue_select = snap_get_u16(in);
	uint16_t cfg_vec = snap_get_u16(in);
	uint16_t qvec[VIRTIO_MAX_QUEUES];
	for (unsigned q = 0; q < d->num_queues; q++)
		qvec[q] = snap_get_u16(in);
	uint32_t nvec = snap_get_u32(in);
	size_t tlen;
	const uint8_t *table = snap_get_blob(in, &tlen);
	uint64_t pending = snap_get_u64(in);
	struct msix *m = &vp->msix;
	if (in->bad || !table || nvec != m->nvec || tlen != (size_t)nvec * MSIX_ENTRY_SIZE)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: malformed MSI-X state", d->name);
	/* Vectors beyond the table read as "none", as the transport itself would store them. */
	vp->msix_config = cfg_vec < nvec ? cfg_vec : 0xffff;
	for (unsigned q = 0; q < d->num_queues; q++)
		vp->queue_msix[q] = qvec[q] < nvec ? qvec[q] : 0xffff;
	pthread_mutex_lock(&m->lock);
	memcpy(m->table, table, tlen);
	for (unsigned v = 0; v < nvec; v++) {
		m->table[v * MSIX_ENTRY_SIZE + 12] &= 1;   /* only the mask bit is writable */
		m->route_ok[v] = false;                    /* routes are made on first use */
	}
	m->pending = pending & (nvec < 64 ? (1ULL << nvec) - 1 : ~0ULL);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int mmio_load(struct virtio_mmio *m, struct snap_cur *in, struct cv_error *err)
{
	if (snap_get_u32(in) != TRANSPORT_MMIO)
		return cv_fail(err, CV_EXIT_USAGE, "snapshot: %s: saved with another transport than "
			       "virtio-mmio", m->dev->name);
	m->regs.device_features_sel = snap_get_u32(in);
	m->regs.driver_features_sel = snap_get_u32(in);
	m->regs.queue_sel = snap_get_u32(in);
	m->regs.shm_sel = snap_get_u32(in);
	if (in->bad)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: malformed transport state",
			       m->dev->name);
	return 0;
}

/* Starts the queues and the device as DRIVER_OK did, then puts the rings where they were. */
static int activate(struct virtio_dev *d, const struct queue_pos *pos, struct cv_error *err)
{
	bool indirect = virtio_dev_has(d, VIRTIO_RING_F_INDIRECT_DESC);
	bool event_idx = virtio_dev_has(d, VIRTIO_RING_F_EVENT_IDX);
	for (unsigned q = 0; q < d->num_queues; q++) {
		struct virtq *vq = &d->vq[q];
		if (!d->queue_enabled[q] || !pos[q].started)
			continue;
		vq->indirect = indirect;
		vq->event_idx = event_idx;
		if (virtq_start(vq, d->mem) < 0)
			return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: queue %u: %s", d->name, q,
				       vq->error);
		vq->last_avail = pos[q].last_avail;
		vq->used_idx = pos[q].used_idx;
		vq->signalled_used = pos[q].signalled_used;
		vq->signalled_valid = pos[q].signalled_valid;
		vq->kicks_wanted = pos[q].kicks_wanted;
	}
	if (d->ops->activate && d->ops->activate(d) < 0)
		return cv_fail(err, CV_EXIT_OSERR, "snapshot: %s: the device could not start", d->name);
	return 0;
}

int virtio_state_load(struct vm_virtio *v, struct snap_cur *in, struct cv_error *err)
{
	struct virtio_dev *d = v->dev;
	struct queue_pos pos[VIRTIO_MAX_QUEUES];
	memset(pos, 0, sizeof(pos));
	pthread_mutex_lock(&d->lock);
	int rc = core_load(d, in, pos, err);
	bool mmio = v->kind == VIRTIO_TRANSPORT_MMIO;
	if (rc == 0)
		rc = mmio ? mmio_load(&v->transport.mmio, in, err)
			  : pci_load(&v->transport.pci, in, err);
	bool running = (d->status & VIRTIO_STATUS_DRIVER_OK) &&
		       (d->status & VIRTIO_STATUS_FEATURES_OK) &&
		       !(d->status & VIRTIO_STATUS_NEEDS_RESET);
	if (rc == 0 && running)
		rc = activate(d, pos, err);
	size_t n = 0;
	const uint8_t *blob = rc == 0 ? snap_get_blob(in, &n) : NULL;
	if (rc == 0 && (!blob || !snap_cur_done(in)))
		rc = cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: malformed device state", d->name);
	if (rc == 0 && d->ops->load) {
		struct snap_cur dc;
		snap_cur_init(&dc, blob, n);
		rc = d->ops->load(d, &dc, err);
		if (rc == 0 && !snap_cur_done(&dc))
			rc = cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: malformed device state",
				     d->name);
	}
	if (rc == 0 && mmio)
		virtio_mmio_sync_irq(&v->transport.mmio);
	pthread_mutex_unlock(&d->lock);
	if (rc < 0)
		return -1;
	if (running) {
		for (unsigned q = 0; q < d->num_queues; q++) {
			struct virtio_kick *k = mmio ? &v->transport.mmio.notify[q].kick
						     : &v->transport.pci.notify[q].kick;
			if (d->vq[q].started && k->fd >= 0)
				virtio_kick_signal(k);
		}
	}
	return 0;
}
