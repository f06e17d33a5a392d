/*
 * virtio-balloon (memory balloon). Not implemented yet: the constructor refuses the option with a clear error.
 */
#ifndef CVISOR_VMM_VIRTIO_BALLOON_H
#define CVISOR_VMM_VIRTIO_BALLOON_H

#include "devices.h"
#include "error.h"

struct vm;

int virtio_balloon_add(struct vm *vm, const struct balloon_config *cfg, struct cv_error *err);

#endif
