/*
 * virtio-vsock device (see vsock.h): moves packets between the virtqueues and the mux.
 *
 * Everything runs with d->lock held: queue notifications (I/O thread, from the transport) and
 * the mux's socket handlers (I/O thread) both end in service(), which takes what the guest sent
 * and then hands it whatever the mux has for it.
 */
#include "vsock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "snapshot/format.h"
#include "vm.h"

/* Takes tx packets; returns true if it stopped because the mux cannot take more yet. */
static bool process_tx(struct virtio_vsock *v)
{
	struct virtio_dev *d = &v->dev;
	struct virtq *vq = &d->vq[VSOCK_TXQ];
	bool used = false, blocked = false;
	while (virtio_dev_running(d)) {
		if (!vsock_mux_can_take(&v->mux)) {
			blocked = true;
			break;
		}
		int r = virtq_pop(vq, &v->tx_elem);
		if (r < 0)
			virtio_dev_fail(d, vq->error);
		if (r <= 0)
			break;
		vsock_mux_guest_packet(&v->mux, &v->tx_elem);
		virtq_push(vq, &v->tx_elem, 0);
		used = true;
	}
	if (used)
		virtio_dev_notify_used(d, VSOCK_TXQ);
	return blocked;
}

static void process_rx(struct virtio_vsock *v)
{
	struct virtio_dev *d = &v->dev;
	struct virtq *vq = &d->vq[VSOCK_RXQ];
	bool used = false;
	while (virtio_dev_running(d) && vsock_mux_has_rx(&v->mux)) {
		int r = virtq_pop(vq, &v->rx_elem);
		if (r < 0)
			virtio_dev_fail(d, vq->error);
		if (r <= 0)
			break;
		if (v->rx_elem.in_len < VSOCK_HDR_SIZE) {
			virtq_unpop(vq);
			virtio_dev_fail(d, "rx buffer smaller than a packet header");
			break;
		}
		uint32_t n = vsock_mux_fill(&v->mux, &v->rx_elem);
		if (!n) {
			virtq_unpop(vq);
			break;
		}
		virtq_push(vq, &v->rx_elem, n);
		used = true;
	}
	if (used)
		virtio_dev_notify_used(d, VSOCK_RXQ);
}

static void service(struct virtio_vsock *v)
{
	/*
	 * A full RST ring stops tx; rx drains it, after which tx may go on. Bounded, because a
	 * guest that gives no rx buffers must not keep us here.
	 */
	for (int round = 0; round < 8 && virtio_dev_running(&v->dev); round++) {
		bool blocked = process_tx(v);
		process_rx(v);
		if (!blocked || !vsock_mux_can_take(&v->mux))
			break;
	}
}

static void mux_wake(void *opaque)
{
	service(opaque);
}

static void vsock_notify(struct virtio_dev *d, unsigned q)
{
	/* Event queue buffers are kept for a future TRANSPORT_RESET; nothing to do. */
	if (q == VSOCK_RXQ || q == VSOCK_TXQ)
		service(d->priv);
}

static void vsock_config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	struct virtio_vsock *v = d->priv;
	uint8_t cfg[8];
	put_le64(cfg, v->guest_cid);
	for (uint32_t i = 0; i < len; i++)
		data[i] = (uint64_t)off + i < sizeof(cfg) ? cfg[off + i] : 0;
}

static void vsock_config_write(struct virtio_dev *d, uint32_t off, const uint8_t *data,
			       uint32_t len)
{
	/* guest_cid is read-only */
	(void)d;
	(void)off;
	(void)data;
	(void)len;
}

static int vsock_activate(struct virtio_dev *d)
{
	struct virtio_vsock *v = d->priv;
	vsock_mux_start(&v->mux);
	service(v);
	return 0;
}

static void vsock_reset(struct virtio_dev *d)
{
	struct virtio_vsock *v = d->priv;
	vsock_mux_reset(&v->mux);
}

/* Snapshot: the CID the guest knew (a restored VM may get another one). */
static void vsock_save(struct virtio_dev *d, struct snap_buf *out)
{
	struct virtio_vsock *v = d->priv;
	snap_put_u64(out, v->guest_cid);
}

/*
 * Restore: the host sockets of the snapshotted VM are gone, so every guest connection is. The
 * guest learns it from a TRANSPORT_RESET event (5.10.6.7): it resets its connected sockets and
 * re-reads its CID, which may have changed. Listening sockets survive, so new connections work.
 */
static int vsock_load(struct virtio_dev *d, struct snap_cur *in, struct cv_error *err)
{
	(void)snap_get_u64(in);
	if (in->bad)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: virtio-vsock: malformed state");
	struct virtio_vsock *v = d->priv;
	struct virtq *vq = &d->vq[VSOCK_EVQ];
	if (!virtio_dev_running(d) || !vq->started)
		return 0;
	int r = virtq_pop(vq, &v->rx_elem);
	if (r < 0) {
		virtio_dev_fail(d, vq->error);
		return 0;
	}
	if (r == 0 || v->rx_elem.in_len < 4) {
		if (r == 1)
			virtq_push(vq, &v->rx_elem, 0);
		fprintf(stderr, "cvisor-vmm: virtio-vsock: no event buffer to tell the guest its "
			"connections were reset\n");
		return 0;
	}
	uint8_t ev[4];
	put_le32(ev, VSOCK_EVENT_TRANSPORT_RESET);
	iov_from_buf(&v->rx_elem.iov[v->rx_elem.n_out], v->rx_elem.n_in, 0, ev, sizeof(ev));
	virtq_push(vq, &v->rx_elem, sizeof(ev));
	virtio_dev_notify_used(d, VSOCK_EVQ);
	return 0;
}

static const struct virtio_dev_ops vsock_ops = {
	.device_id = VIRTIO_ID_VSOCK,
	.pci_class = 0x078000,   /* communication controller, other */
	.config_read = vsock_config_read,
	.config_write = vsock_config_write,
	.activate = vsock_activate,
	.reset = vsock_reset,
	.queue_notify = vsock_notify,
	.save = vsock_save,
	.load = vsock_load,
};

struct virtio_vsock *virtio_vsock_create(const struct vsock_config *cfg,
					 const struct guest_memory *mem, struct evloop *loop,
					 struct cv_error *err)
{
	/* CIDs 0-2 are reserved (hypervisor, local, host) and 0xffffffff is VMADDR_CID_ANY. */
	if (cfg->cid < 3 || cfg->cid == 0xffffffffu) {
		cv_fail(err, CV_EXIT_USAGE, "--vsock: cid %u is reserved", cfg->cid);
		return NULL;
	}
	struct virtio_vsock *v = calloc(1, sizeof(*v));
	if (!v) {
		cv_fail(err, CV_EXIT_OSERR, "out of memory");
		return NULL;
	}
	v->guest_cid = cfg->cid;
	virtio_dev_init(&v->dev, "virtio-vsock", &vsock_ops, v, 3, VSOCK_QUEUE_SIZE,
			(1ULL << VIRTIO_RING_F_INDIRECT_DESC) | (1ULL << VIRTIO_RING_F_EVENT_IDX), mem,
			loop);
	if (vsock_mux_init(&v->mux, cfg->cid, cfg->uds_path, &v->dev.lock, loop, mux_wake, v,
			   err) < 0) {
		cv_error_wrap(err, "vsock");
		virtio_dev_destroy(&v->dev);
		free(v);
		return NULL;
	}
	return v;
}

void virtio_vsock_destroy(void *owner)
{
	struct virtio_vsock *v = owner;
	vsock_mux_destroy(&v->mux);
	virtio_dev_destroy(&v->dev);
	free(v);
}

int virtio_vsock_add(struct vm *vm, const struct vsock_config *cfg, struct cv_error *err)
{
	struct virtio_vsock *v = virtio_vsock_create(cfg, &vm->mem, &vm->loop, err);
	if (!v)
		return -1;
	return vm_virtio_plug(vm, &v->dev, v, virtio_vsock_destroy, err);
}
