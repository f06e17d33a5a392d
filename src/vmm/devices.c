/*
 * Device assembly (see devices.h): one small constructor per device kind, each building the
 * device object and putting it on PCI through virtio-pci.
 */
#include "devices.h"

#include <stdlib.h>
#include <string.h>

#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/rng.h"
#include "virtio/vsock.h"
#include "vm.h"

int vm_virtio_plug(struct vm *vm, struct virtio_dev *dev, void *owner, void (*destroy)(void *),
		struct cv_error *err)
{
	if (vm->n_virtio == VM_MAX_VIRTIO) {
		destroy(owner);
		return cv_fail(err, CV_EXIT_USAGE, "at most %d virtio devices", VM_MAX_VIRTIO);
	}
	struct vm_virtio *v = calloc(1, sizeof(*v));
	if (!v) {
		destroy(owner);
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	}
	v->dev = dev;
	v->owner = owner;
	v->destroy = destroy;
	vm->virtio[vm->n_virtio++] = v;
	struct virtio_pci_env env = { .bus = &vm->pci, .irq = &vm->irq, .loop = &vm->loop,
				      .vm_fd = vm->fd };
	if (virtio_pci_init(&v->transport, dev, &env, err) < 0)
		return cv_error_wrap(err, "%s", dev->name);
	return 0;
}

static void rng_destroy(void *owner)
{
	struct virtio_rng *r = owner;
	virtio_dev_destroy(&r->dev);
	free(r);
}

static int add_rng(struct vm *vm, struct cv_error *err)
{
	struct virtio_rng *r = calloc(1, sizeof(*r));
	if (!r)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	virtio_rng_init(r, &vm->mem, &vm->loop);
	return vm_virtio_plug(vm, &r->dev, r, rng_destroy, err);
}

int vm_devices_create(struct vm *vm, const struct device_config *cfg, struct cv_error *err)
{
	if (cfg->rng && add_rng(vm, err) < 0)
		return -1;
	for (unsigned i = 0; i < cfg->n_disks; i++)
		if (virtio_blk_add(vm, &cfg->disks[i], i, err) < 0)
			return -1;
	for (unsigned i = 0; i < cfg->n_nets; i++)
		if (virtio_net_add(vm, &cfg->nets[i], i, err) < 0)
			return -1;
	if (cfg->vsock.enabled && virtio_vsock_add(vm, &cfg->vsock, err) < 0)
		return -1;
	if (cfg->balloon.enabled && virtio_balloon_add(vm, &cfg->balloon, err) < 0)
		return -1;
	return 0;
}

void vm_devices_destroy(struct vm *vm)
{
	for (unsigned i = 0; i < vm->n_virtio; i++) {
		struct vm_virtio *v = vm->virtio[i];
		pthread_mutex_lock(&v->dev->lock);
		virtio_dev_reset(v->dev);
		pthread_mutex_unlock(&v->dev->lock);
		virtio_pci_destroy(&v->transport);
		v->destroy(v->owner);
		free(v);
	}
	vm->n_virtio = 0;
}
