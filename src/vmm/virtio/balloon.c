/*
 * virtio-balloon (memory balloon): placeholder until the device lands.
 */
#include "balloon.h"

int virtio_balloon_add(struct vm *vm, const struct balloon_config *cfg, struct cv_error *err)
{
	(void)vm;
	(void)cfg;

	return cv_fail(err, CV_EXIT_USAGE, "virtio-balloon (memory balloon) is not implemented yet");
}
