/*
 * virtio-vsock (host-guest sockets). Not implemented yet: the constructor refuses the option with a clear error.
 */
#ifndef CVISOR_VMM_VIRTIO_VSOCK_H
#define CVISOR_VMM_VIRTIO_VSOCK_H

#include "devices.h"
#include "error.h"

struct vm;

int virtio_vsock_add(struct vm *vm, const struct vsock_config *cfg, struct cv_error *err);

#endif
