/*
 * The machine shape section (see state.h): what a snapshot needs the restoring VM to be.
 * Payload: str cvisor version | u32 vCPUs | u64 memory bytes | u64 memory file bytes |
 * u32 snapshot type (0 full, 1 diff) | u32 virtio transport (1 PCI, 2 MMIO) | u32 devices | per
 * device (in creation order): u32 virtio device id | u32 queues | str name. A restore refuses
 * a VM that differs in any of these, naming the first difference, so a wrong command line fails
 * before any state is touched.
 */
#include <string.h>

#include "snapshot/state.h"
#include "vm.h"

void shape_save(struct vm *vm, uint32_t snapshot_type, struct snap_buf *out)
{
	snap_put_str(out, CVISOR_VERSION);
	snap_put_u32(out, vm->n_vcpus);
	snap_put_u64(out, vm->mem.size);
	snap_put_u64(out, vm->mem.size);
	snap_put_u32(out, snapshot_type);
	snap_put_u32(out, vm->virtio_mmio ? VIRTIO_TRANSPORT_MMIO : VIRTIO_TRANSPORT_PCI);
	snap_put_u32(out, vm->n_virtio);
	for (unsigned i = 0; i < vm->n_virtio; i++) {
		const struct virtio_dev *d = vm->virtio[i]->dev;
		snap_put_u32(out, d->ops->device_id);
		snap_put_u32(out, d->num_queues);
		snap_put_str(out, d->name);
	}
}

int shape_decode(struct snap_cur *in, struct snap_shape *s, struct cv_error *err)
{
	memset(s, 0, sizeof(*s));
	snap_get_str(in, s->version, sizeof(s->version));
	s->n_vcpus = snap_get_u32(in);
	s->memory_bytes = snap_get_u64(in);
	s->memory_file_size = snap_get_u64(in);
	s->snapshot_type = snap_get_u32(in);
	s->transport = snap_get_u32(in);
	s->n_devices = snap_get_u32(in);
	if (!in->bad && s->n_devices > SNAP_SHAPE_MAX_DEVICES)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %u devices (at most %d)",
			       s->n_devices, SNAP_SHAPE_MAX_DEVICES);
	for (uint32_t i = 0; i < s->n_devices && !in->bad; i++) {
		s->dev[i].device_id = snap_get_u32(in);
		s->dev[i].num_queues = snap_get_u32(in);
		snap_get_str(in, s->dev[i].name, sizeof(s->dev[i].name));
	}
	if (!snap_cur_done(in))
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: machine shape section is malformed");
	/*
	 * A diff's state file is complete; only its memory file is partial, and what is restored
	 * is the base memory file with the diff merged onto it (cvisor snapshot merge).
	 */
	if (s->snapshot_type != SNAP_TYPE_FULL && s->snapshot_type != SNAP_TYPE_DIFF)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: unknown snapshot type %u",
			       s->snapshot_type);
	if (s->transport != VIRTIO_TRANSPORT_PCI && s->transport != VIRTIO_TRANSPORT_MMIO)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: unknown virtio transport %u",
			       s->transport);
	if (s->memory_file_size != s->memory_bytes)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: memory file size %llu differs from "
			       "guest memory %llu", (unsigned long long)s->memory_file_size,
			       (unsigned long long)s->memory_bytes);
	return 0;
}

int shape_check(const struct snap_shape *s, struct vm *vm, struct cv_error *err)
{
	if (s->n_vcpus != vm->n_vcpus)
		return cv_fail(err, CV_EXIT_USAGE, "snapshot has %u vCPUs, this VM %u", s->n_vcpus,
			       vm->n_vcpus);
	uint32_t transport = vm->virtio_mmio ? VIRTIO_TRANSPORT_MMIO : VIRTIO_TRANSPORT_PCI;
	if (s->transport != transport)
		return cv_fail(err, CV_EXIT_USAGE, "snapshot's virtio devices are on %s, this VM's on "
			       "%s (--transport)", s->transport == VIRTIO_TRANSPORT_MMIO ? "mmio" : "pci",
			       transport == VIRTIO_TRANSPORT_MMIO ? "mmio" : "pci");
	if (s->memory_bytes != vm->mem.size)
		return cv_fail(err, CV_EXIT_USAGE, "snapshot has %llu MiB of memory, this VM %llu MiB",
			       (unsigned long long)(s->memory_bytes >> 20),
			       (unsigned long long)(vm->mem.size >> 20));
	for (unsigned i = 0; i < s->n_devices || i < vm->n_virtio; i++) {
		if (i >= vm->n_virtio)
			return cv_fail(err, CV_EXIT_USAGE, "snapshot has a %s this VM lacks (give the "
				       "same device options as the snapshotted VM)", s->dev[i].name);
		const struct virtio_dev *d = vm->virtio[i]->dev;
		if (i >= s->n_devices)
			return cv_fail(err, CV_EXIT_USAGE, "this VM has a %s the snapshot lacks (give "
				       "the same device options as the snapshotted VM)", d->name);
		if (s->dev[i].device_id != d->ops->device_id || strcmp(s->dev[i].name, d->name) != 0)
			return cv_fail(err, CV_EXIT_USAGE, "device %u is %s in the snapshot, %s here "
				       "(give the same device options in the same order)", i,
				       s->dev[i].name, d->name);
		if (s->dev[i].num_queues != d->num_queues)
			return cv_fail(err, CV_EXIT_USAGE, "%s has %u queues in the snapshot, %u here "
				       "(different device options, e.g. --balloon stats)", d->name,
				       s->dev[i].num_queues, d->num_queues);
	}
	return 0;
}
