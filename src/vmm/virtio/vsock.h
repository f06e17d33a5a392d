/*
 * virtio-vsock (host-guest stream sockets, virtio 1.2 section 5.10) without vhost: the device
 * model runs on the VM's I/O thread and the host side is the hybrid Unix-socket model of
 * vsock/mux.h (`--vsock cid=N,uds=PATH`). Three queues: rx (packets to the guest), tx (packets
 * from the guest) and event (buffers held, unused until snapshot restore needs
 * TRANSPORT_RESET). Config space: the guest's CID (le64).
 */
#ifndef CVISOR_VMM_VIRTIO_VSOCK_H
#define CVISOR_VMM_VIRTIO_VSOCK_H

#include "devices.h"
#include "error.h"
#include "virtio/device.h"
#include "vsock/mux.h"

#define VSOCK_QUEUE_SIZE 256
#define VSOCK_RXQ 0
#define VSOCK_TXQ 1
#define VSOCK_EVQ 2
#define VSOCK_EVENT_TRANSPORT_RESET 0     /* event queue: the only event id (5.10.6.7) */

struct virtio_vsock {
	struct virtio_dev dev;
	uint64_t guest_cid;
	struct vsock_mux mux;
	struct virtq_elem rx_elem;
	struct virtq_elem tx_elem;
};

struct vm;

/*
 * Builds the device (listening on cfg->uds_path) on the given memory and loop, without a
 * transport; virtio_vsock_add() puts it on the VM's PCI bus, tests attach their own.
 */
struct virtio_vsock *virtio_vsock_create(const struct vsock_config *cfg,
					 const struct guest_memory *mem, struct evloop *loop,
					 struct cv_error *err);
void virtio_vsock_destroy(void *owner);

int virtio_vsock_add(struct vm *vm, const struct vsock_config *cfg, struct cv_error *err);

#endif
