/*
 * virtio-net (network device). Not implemented yet: the constructor refuses the option with a clear error.
 */
#ifndef CVISOR_VMM_VIRTIO_NET_H
#define CVISOR_VMM_VIRTIO_NET_H

#include "devices.h"
#include "error.h"

struct vm;

int virtio_net_add(struct vm *vm, const struct net_config *cfg, unsigned index, struct cv_error *err);

#endif
