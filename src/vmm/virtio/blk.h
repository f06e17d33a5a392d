/*
 * virtio-blk (block device). Not implemented yet: the constructor refuses the option with a clear error.
 */
#ifndef CVISOR_VMM_VIRTIO_BLK_H
#define CVISOR_VMM_VIRTIO_BLK_H

#include "devices.h"
#include "error.h"

struct vm;

int virtio_blk_add(struct vm *vm, const struct disk_config *cfg, unsigned index, struct cv_error *err);

#endif
