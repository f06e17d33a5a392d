/*
 * virtio-vsock (host-guest sockets): placeholder until the device lands.
 */
#include "vsock.h"

int virtio_vsock_add(struct vm *vm, const struct vsock_config *cfg, struct cv_error *err)
{
	(void)vm;
	(void)cfg;

	return cv_fail(err, CV_EXIT_USAGE, "virtio-vsock (host-guest sockets) is not implemented yet");
}
