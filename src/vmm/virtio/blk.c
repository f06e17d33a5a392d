/*
 * virtio-blk (block device): placeholder until the device lands.
 */
#include "blk.h"

int virtio_blk_add(struct vm *vm, const struct disk_config *cfg, unsigned index, struct cv_error *err)
{
	(void)vm;
	(void)cfg;
	(void)index;
	return cv_fail(err, CV_EXIT_USAGE, "virtio-blk (block device) is not implemented yet");
}
