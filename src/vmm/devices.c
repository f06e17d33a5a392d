/*
 * Device assembly (see devices.h): one small constructor per device kind, each building the
 * device object and putting it on the VM's transport, virtio-pci or virtio-mmio.
 */
#include "devices.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout.h"
#include "util.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/rng.h"
#include "virtio/vsock.h"
#include "vm.h"

static const uint8_t mmio_lines[] = LAYOUT_VIRTIO_MMIO_IRQS;

static void mmio_set_line(void *ctx, unsigned gsi, int level)
{
	vm_set_irq_line(ctx, gsi, level);
}

uint16_t vm_devices_level_irqs(const struct device_config *cfg)
{
	uint16_t mask = 0;
	if (cfg->transport == VIRTIO_TRANSPORT_MMIO)
		for (size_t i = 0; i < CV_ARRAY_SIZE(mmio_lines); i++)
			mask |= (uint16_t)(1u << mmio_lines[i]);
	return mask;
}

enum virtio_transport virtio_transport_resolve(enum virtio_transport requested,
					       const char *cmdline)
{
	if (requested != VIRTIO_TRANSPORT_AUTO)
		return requested;
	return virtio_mmio_cmdline_disables_pci(cmdline) ? VIRTIO_TRANSPORT_MMIO
							 : VIRTIO_TRANSPORT_PCI;
}

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
	if (vm->virtio_mmio) {
		v->kind = VIRTIO_TRANSPORT_MMIO;
		if (virtio_mmio_init(&v->transport.mmio, dev, vm->virtio_mmio, err) < 0)
			return cv_error_wrap(err, "%s", dev->name);
		return 0;
	}
	v->kind = VIRTIO_TRANSPORT_PCI;
	struct virtio_pci_env env = { .bus = &vm->pci, .irq = &vm->irq, .loop = &vm->loop,
				      .vm_fd = vm->fd };
	if (virtio_pci_init(&v->transport.pci, dev, &env, err) < 0)
		return cv_error_wrap(err, "%s", dev->name);
	return 0;
}

static void rng_destroy(void *owner)
{
	struct virtio_rng *r = owner;
	virtio_rng_destroy(r);
	free(r);
}

static int add_rng(struct vm *vm, const struct rate_limiter_config *limits,
		   struct cv_error *err)
{
	if (rate_limiter_config_check(limits, "entropy device", err) < 0)
		return -1;
	struct virtio_rng *r = calloc(1, sizeof(*r));
	if (!r)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	if (virtio_rng_init(r, &vm->mem, &vm->loop, limits, err) < 0) {
		free(r);
		return -1;
	}
	return vm_virtio_plug(vm, &r->dev, r, rng_destroy, err);
}

/* MMIO mode: the windows and lines every device will take a share of. */
static int mmio_bus_create(struct vm *vm, struct cv_error *err)
{
	struct virtio_mmio_bus *bus = calloc(1, sizeof(*bus));
	if (!bus)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	struct virtio_mmio_env env = {
		.mmio = &vm->mmio, .loop = &vm->loop, .vm_fd = vm->fd,
		.base = LAYOUT_VIRTIO_MMIO,
		.max_devices = (unsigned)(LAYOUT_VIRTIO_MMIO_SIZE / VIRTIO_MMIO_WINDOW),
		.lines = mmio_lines, .n_lines = CV_ARRAY_SIZE(mmio_lines),
		.set_line = mmio_set_line, .line_ctx = vm,
	};
	if (virtio_mmio_bus_init(bus, &env, err) < 0) {
		free(bus);
		return -1;
	}
	vm->virtio_mmio = bus;
	return 0;
}

int vm_devices_create(struct vm *vm, const struct device_config *cfg, struct cv_error *err)
{
	if (cfg->transport == VIRTIO_TRANSPORT_MMIO && mmio_bus_create(vm, err) < 0)
		return -1;
	if (cfg->rng && add_rng(vm, &cfg->rng_rate_limiter, err) < 0)
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
		if (v->kind == VIRTIO_TRANSPORT_MMIO)
			virtio_mmio_destroy(&v->transport.mmio);
		else
			virtio_pci_destroy(&v->transport.pci);
		v->destroy(v->owner);
		free(v);
	}
	vm->n_virtio = 0;
	if (vm->virtio_mmio) {
		virtio_mmio_bus_destroy(vm->virtio_mmio);
		free(vm->virtio_mmio);
		vm->virtio_mmio = NULL;
	}
}

int vm_devices_cmdline(const struct vm *vm, const char *cmdline, char **out, struct cv_error *err)
{
	*out = NULL;
	if (!vm->virtio_mmio)
		return 0;
	const char *user = cmdline ? cmdline : "";
	/* A parameter and its space take at most 37 bytes ("virtio_mmio.device=4K@0xd001f000:15 "). */
	size_t cap = strlen(user) + 1 + (size_t)vm->n_virtio * 64;
	char *s = malloc(cap);
	if (!s)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	size_t len = 0;
	for (unsigned i = 0; i < vm->n_virtio; i++) {
		const struct vm_virtio *v = vm->virtio[i];
		if (v->kind != VIRTIO_TRANSPORT_MMIO)
			continue;
		int n = virtio_mmio_cmdline_param(&v->transport.mmio, s + len, cap - len - 1);
		if (n < 0) {
			free(s);
			return cv_fail(err, CV_EXIT_SOFTWARE, "kernel command line: no room for %s",
				       v->dev->name);
		}
		len += (size_t)n;
		s[len++] = ' ';
	}
	snprintf(s + len, cap - len, "%s", user);
	*out = s;
	return 0;
}
