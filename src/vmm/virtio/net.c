/*
 * virtio-net (network device): placeholder until the device lands.
 */
#include "net.h"

int virtio_net_add(struct vm *vm, const struct net_config *cfg, unsigned index, struct cv_error *err)
{
	(void)vm;
	(void)cfg;
	(void)index;
	return cv_fail(err, CV_EXIT_USAGE, "virtio-net (network device) is not implemented yet");
}
