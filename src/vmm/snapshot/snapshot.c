/*
 * Snapshot create and restore (see snapshot.h): orders the per-part savers and loaders of
 * state.h around the state file format.
 *
 * Restore order: shape check (nothing touched yet), memory, VM-wide interrupt controllers and
 * PIT, platform devices, PCI configuration (BARs, MSI-X enable), virtio devices (which may
 * raise interrupts only into the restored controllers), vCPUs, and the KVM clock last, after
 * every vCPU's TSC.
 */
#include "snapshot/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "vcpu.h"
#include "virtio/device.h"
#include "vm.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Saves one section through a saver that reports errors; -1 leaves err set. */
static int add(struct snap_buf *file, uint32_t type, uint32_t instance, struct snap_buf *payload)
{
	snap_add_section(file, type, instance, payload->b, payload->len);
	bool oom = payload->oom;
	snap_buf_free(payload);
	return oom ? -1 : 0;
}

static int build_state(struct vm *vm, uint32_t type, struct snap_buf *f, struct cv_error *err)
{
	struct snap_buf s = { 0 };
	snap_begin(f);
	shape_save(vm, type, &s);
	if (add(f, SNAP_SEC_SHAPE, 0, &s) < 0)
		goto oom;
	config_save(&vm->devcfg, &s);
	if (add(f, SNAP_SEC_CONFIG, 0, &s) < 0)
		goto oom;
	if (vm_state_save(vm, &s, err) < 0) {
		snap_buf_free(&s);
		return -1;
	}
	if (add(f, SNAP_SEC_VM, 0, &s) < 0)
		goto oom;
	platform_state_save(vm, &s);
	if (add(f, SNAP_SEC_PLATFORM, 0, &s) < 0)
		goto oom;
	keyboard_state_save(&vm->i8042, &s);
	if (add(f, SNAP_SEC_KEYBOARD, 0, &s) < 0)
		goto oom;
	for (unsigned slot = 0; slot < PCI_SLOTS; slot++) {
		struct pci_device *d = vm->pci.slots[slot];
		if (!d)
			continue;
		pci_state_save(d, &s);
		if (add(f, SNAP_SEC_PCI, slot, &s) < 0)
			goto oom;
	}
	for (unsigned i = 0; i < vm->n_virtio; i++) {
		virtio_state_save(vm->virtio[i], &s);
		if (add(f, SNAP_SEC_VIRTIO, i, &s) < 0)
			goto oom;
		struct virtio_dev *d = vm->virtio[i]->dev;
		pthread_mutex_lock(&d->lock);
		bool has = limits_state_save(d, &s);
		pthread_mutex_unlock(&d->lock);
		if (has && add(f, SNAP_SEC_LIMITS, i, &s) < 0)
			goto oom;
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		if (vcpu_state_save(&vm->vcpus[i], &s, err) < 0) {
			snap_buf_free(&s);
			return cv_error_wrap(err, "snapshot");
		}
		if (add(f, SNAP_SEC_VCPU, i, &s) < 0)
			goto oom;
	}
	snap_finish(f);
	if (f->oom)
		goto oom;
	return 0;
oom:
	snap_buf_free(&s);
	return cv_fail(err, CV_EXIT_OSERR, "snapshot: out of memory");
}

/* Writes the state through PATH.tmp and a rename, so PATH is always whole. */
static int write_state(const char *path, const struct snap_buf *f, struct cv_error *err)
{
	char tmp[4096];
	if (cv_format(tmp, sizeof(tmp), err, "%s.tmp", path) < 0)
		return -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_IOERR, "create state file '%s'", tmp);
	int rc = 0;
	if (cv_write_full(fd, f->b, f->len) < 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "write state file '%s'", tmp);
	if (close(fd) < 0 && rc == 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "close state file '%s'", tmp);
	if (rc == 0 && rename(tmp, path) < 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "rename '%s' to '%s'", tmp, path);
	if (rc < 0)
		unlink(tmp);
	return rc;
}

int vm_snapshot_create(struct vm *vm, const char *state_path, const char *mem_path, bool diff,
		       struct snapshot_times *times, struct cv_error *err)
{
	struct snapshot_times t = { 0 };
	if (strcmp(state_path, mem_path) == 0)
		return cv_fail(err, CV_EXIT_USAGE, "the state file and the memory file must differ");
	pthread_mutex_lock(&vm->control_lock);
	if (!atomic_load(&vm->paused)) {
		pthread_mutex_unlock(&vm->control_lock);
		return cv_fail(err, CV_EXIT_USAGE, "the VM must be paused to create a snapshot");
	}
	bool tracking = guest_memory_tracking(&vm->mem);
	if (diff && !tracking) {
		pthread_mutex_unlock(&vm->control_lock);
		return cv_fail(err, CV_EXIT_USAGE, "diff snapshots need dirty page tracking, which "
			       "is off for this VM (track_dirty_pages / enable_diff_snapshots, or "
			       "--track-dirty-pages)");
	}
	if (diff && !vm->has_diff_base) {
		pthread_mutex_unlock(&vm->control_lock);
		return cv_fail(err, CV_EXIT_USAGE, "a diff snapshot needs a base: create a Full "
			       "snapshot first (or run a VM loaded from one)");
	}
	double t0 = now_ms();
	/*
	 * Every snapshot, full or diff, starts dirty tracking afresh: the next diff is relative to
	 * the memory file written now. The VM is paused, so nothing writes meanwhile.
	 */
	uint64_t *dirty = NULL;
	int rc = 0;
	if (tracking) {
		dirty = calloc(guest_memory_dirty_words(&vm->mem), sizeof(uint64_t));
		if (!dirty)
			rc = cv_fail(err, CV_EXIT_OSERR, "out of memory for the dirty page bitmap");
		else
			rc = guest_memory_take_dirty(&vm->mem, vm->fd, dirty, err);
	}
	if (rc == 0)
		rc = diff ? memfile_write_diff(vm, mem_path, dirty, &t.memory_pages_written, err)
			  : memfile_write(vm, mem_path, err);
	double t1 = now_ms();
	struct snap_buf f = { 0 };
	if (rc == 0)
		rc = build_state(vm, diff ? SNAP_TYPE_DIFF : SNAP_TYPE_FULL, &f, err);
	if (rc == 0)
		rc = write_state(state_path, &f, err);
	double t2 = now_ms();
	if (tracking && dirty) {
		if (rc < 0)
			guest_memory_put_dirty(&vm->mem, dirty);   /* the next diff must still see them */
		else
			vm->has_diff_base = true;
	}
	free(dirty);
	pthread_mutex_unlock(&vm->control_lock);
	t.memory_ms = t1 - t0;
	t.state_ms = t2 - t1;
	t.state_bytes = f.len;
	snap_buf_free(&f);
	if (times)
		*times = t;
	return rc;
}

static int read_file(const char *path, struct cv_buf *buf, struct snap_file *f,
		     struct cv_error *err)
{
	if (cv_read_file(path, SNAP_MAX_FILE, buf, err) < 0)
		return cv_error_wrap(err, "state file");
	if (snap_file_parse(buf->data, buf->len, f, err) < 0) {
		cv_buf_free(buf);
		return cv_error_wrap(err, "'%s'", path);
	}
	return 0;
}

/* Reads the shape, and the device configuration too when cfg is not NULL. */
static int read_description(const char *state_path, struct snap_shape *shape,
			    struct snap_config *cfg, struct cv_error *err)
{
	struct cv_buf buf;
	struct snap_file f;
	if (read_file(state_path, &buf, &f, err) < 0)
		return -1;
	struct snap_cur c;
	snap_cur_init(&c, f.sec[0].data, f.sec[0].len);
	int rc = shape_decode(&c, shape, err);
	if (rc == 0 && cfg) {
		const struct snap_section *s = snap_file_find(&f, SNAP_SEC_CONFIG, 0);
		if (!s) {
			rc = cv_fail(err, CV_EXIT_DATAERR, "snapshot has no device configuration "
				     "(an older cvisor-vmm wrote it): restore it with cvisor-vmm "
				     "--restore and the device options it had");
		} else {
			snap_cur_init(&c, s->data, s->len);
			rc = config_decode(&c, cfg, err);
		}
	}
	snap_file_free(&f);
	cv_buf_free(&buf);
	return rc < 0 ? cv_error_wrap(err, "'%s'", state_path) : 0;
}

int vm_snapshot_read_shape(const char *state_path, struct snap_shape *shape, struct cv_error *err)
{
	return read_description(state_path, shape, NULL, err);
}

int vm_snapshot_read_config(const char *state_path, struct snap_shape *shape,
			    struct snap_config *cfg, struct cv_error *err)
{
	return read_description(state_path, shape, cfg, err);
}

/* The payload of a section that must be there. */
static int need(const struct snap_file *f, uint32_t type, uint32_t instance, const char *what,
		struct snap_cur *c, struct cv_error *err)
{
	const struct snap_section *s = snap_file_find(f, type, instance);
	if (!s)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot has no %s section", what);
	snap_cur_init(c, s->data, s->len);
	return 0;
}

static int load_all(struct vm *vm, const struct snap_file *f, const char *mem_path,
		    struct cv_error *err)
{
	struct snap_cur c, clock;
	struct snap_shape shape;
	snap_cur_init(&c, f->sec[0].data, f->sec[0].len);
	if (shape_decode(&c, &shape, err) < 0 || shape_check(&shape, vm, err) < 0)
		return -1;
	if (mem_path && memfile_map(vm, mem_path, err) < 0)
		return -1;
	if (need(f, SNAP_SEC_VM, 0, "VM", &c, err) < 0 || vm_state_load(vm, &c, err) < 0)
		return -1;
	clock = c;          /* the clock follows the irqchips; it is set at the very end */
	if (need(f, SNAP_SEC_PLATFORM, 0, "platform", &c, err) < 0 ||
	    platform_state_load(vm, &c, err) < 0)
		return -1;
	const struct snap_section *kbd = snap_file_find(f, SNAP_SEC_KEYBOARD, 0);
	if (kbd) {
		snap_cur_init(&c, kbd->data, kbd->len);
		if (keyboard_state_load(&vm->i8042, &c, err) < 0)
			return -1;
	}
	for (unsigned slot = 0; slot < PCI_SLOTS; slot++) {
		struct pci_device *d = vm->pci.slots[slot];
		const struct snap_section *s = snap_file_find(f, SNAP_SEC_PCI, slot);
		if (!d != !s)
			return cv_fail(err, CV_EXIT_USAGE, "snapshot: PCI slot %u is %s in the "
				       "snapshot and %s here", slot, s ? "used" : "empty",
				       d ? "used" : "empty");
		if (!d)
			continue;
		snap_cur_init(&c, s->data, s->len);
		if (pci_state_load(&vm->pci, d, &c, err) < 0)
			return -1;
	}
	for (unsigned i = 0; i < vm->n_virtio; i++) {
		char what[48];
		snprintf(what, sizeof(what), "virtio device %u", i);
		const struct snap_section *lim = snap_file_find(f, SNAP_SEC_LIMITS, i);
		if (lim) {
			struct virtio_dev *d = vm->virtio[i]->dev;
			snap_cur_init(&c, lim->data, lim->len);
			pthread_mutex_lock(&d->lock);
			int rc = limits_state_load(d, &c, err);
			pthread_mutex_unlock(&d->lock);
			if (rc < 0)
				return -1;
		}
		if (need(f, SNAP_SEC_VIRTIO, i, what, &c, err) < 0 ||
		    virtio_state_load(vm->virtio[i], &c, err) < 0)
			return -1;
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		char what[32];
		snprintf(what, sizeof(what), "vCPU %u", i);
		if (need(f, SNAP_SEC_VCPU, i, what, &c, err) < 0 ||
		    vcpu_state_load(&vm->vcpus[i], &c, err) < 0)
			return -1;
	}
	if (vm_clock_load(vm, &clock, err) < 0)
		return -1;
	/*
	 * Interrupts the devices raised while loading (virtio-vsock's TRANSPORT_RESET event, a
	 * clone's MAC change) went into local APICs whose state vcpu_state_load has overwritten
	 * since. Raise one per running queue and configuration again: a virtio driver takes a
	 * spurious one as "look at the used ring", and without it the guest would never see the
	 * vsock event (no new CID, stale connections).
	 */
	for (unsigned i = 0; i < vm->n_virtio; i++) {
		struct virtio_dev *d = vm->virtio[i]->dev;
		pthread_mutex_lock(&d->lock);
		if (virtio_dev_running(d)) {
			for (unsigned q = 0; q < d->num_queues; q++)
				if (d->vq[q].started) {
					d->isr |= 1;
					d->transport->signal_queue(d, q);
				}
			if (d->isr & 2)
				d->transport->signal_config(d);
		}
		pthread_mutex_unlock(&d->lock);
	}
	return 0;
}

int vm_restore(struct vm *vm, const char *state_path, const char *mem_path, struct cv_error *err)
{
	for (unsigned i = 0; i < vm->created_vcpus; i++)
		if (vm->vcpus[i].thread_started)
			return cv_fail(err, CV_EXIT_USAGE, "restore: the VM has already run");
	double t0 = now_ms();
	struct cv_buf buf;
	struct snap_file f;
	if (read_file(state_path, &buf, &f, err) < 0)
		return -1;
	int rc = load_all(vm, &f, mem_path, err);
	snap_file_free(&f);
	cv_buf_free(&buf);
	if (rc < 0)
		return cv_error_wrap(err, "restore '%s'", state_path);
	const char *trace = getenv("CVISOR_VMM_TRACE");
	if (trace && strstr(trace, "snapshot"))
		fprintf(stderr, "cvisor-vmm: restore: state loaded in %.1f ms\n", now_ms() - t0);
	return 0;
}

int vm_snapshot_state(struct vm *vm, struct snap_buf *out, struct cv_error *err)
{
	pthread_mutex_lock(&vm->control_lock);
	int rc = atomic_load(&vm->paused) ? build_state(vm, SNAP_TYPE_FULL, out, err)
					  : cv_fail(err, CV_EXIT_USAGE, "the VM must be paused");
	pthread_mutex_unlock(&vm->control_lock);
	return rc;
}

int vm_restore_state(struct vm *vm, const uint8_t *buf, size_t len, struct cv_error *err)
{
	for (unsigned i = 0; i < vm->created_vcpus; i++)
		if (vm->vcpus[i].thread_started)
			return cv_fail(err, CV_EXIT_USAGE, "restore: the VM has already run");
	struct snap_file f;
	if (snap_file_parse(buf, len, &f, err) < 0)
		return cv_error_wrap(err, "VM state");
	int rc = load_all(vm, &f, NULL, err);
	snap_file_free(&f);
	return rc < 0 ? cv_error_wrap(err, "VM state") : 0;
}
