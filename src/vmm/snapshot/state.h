/*
 * Capture and restore of each part of a paused VM, one file per concept, each writing and
 * reading one section payload of the state file (format.h):
 *   vcpu_state.c      one vCPU's architectural state (SNAP_SEC_VCPU)
 *   vm_state.c        in-kernel PIC/IOAPIC, PIT and KVM clock (SNAP_SEC_VM)
 *   platform_state.c  UART and ACPI PM registers (SNAP_SEC_PLATFORM), the i8042
 *                     (SNAP_SEC_KEYBOARD), PCI config space
 *   limits_state.c    the virtio devices' rate limiters (SNAP_SEC_LIMITS)
 *   virtio_state.c    virtio core, virtio-pci transport and the device's own state
 *   shape.c           machine shape and compatibility checks (SNAP_SEC_SHAPE)
 *   memfile.c         the guest memory file
 * Savers append to a snap_buf and report failures through err; loaders read a snap_cur,
 * reject anything malformed or not matching this VM with a one-line error, and never read
 * beyond the payload.
 */
#ifndef CVISOR_VMM_SNAPSHOT_STATE_H
#define CVISOR_VMM_SNAPSHOT_STATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "devices.h"
#include "snapshot/format.h"

struct vm;
struct vcpu;
struct vm_virtio;
struct pci_device;
struct pci_bus;
struct i8042;
struct virtio_dev;

int vcpu_state_save(struct vcpu *v, struct snap_buf *out, struct cv_error *err);
int vcpu_state_load(struct vcpu *v, struct snap_cur *in, struct cv_error *err);

/* The clock is separate: it is set last, after every vCPU's TSC. */
int vm_state_save(struct vm *vm, struct snap_buf *out, struct cv_error *err);
int vm_state_load(struct vm *vm, struct snap_cur *in, struct cv_error *err);
int vm_clock_load(struct vm *vm, struct snap_cur *in, struct cv_error *err);

void platform_state_save(struct vm *vm, struct snap_buf *out);
int platform_state_load(struct vm *vm, struct snap_cur *in, struct cv_error *err);
/* Optional on load: files from before it was saved leave the keyboard as powered on. */
void keyboard_state_save(struct i8042 *k, struct snap_buf *out);
int keyboard_state_load(struct i8042 *k, struct snap_cur *in, struct cv_error *err);
/* False (nothing written) for a device without rate limiters. Call with the device lock held. */
bool limits_state_save(struct virtio_dev *d, struct snap_buf *out);
/* Optional on load: a file without the section leaves the limiters as configured here. */
int limits_state_load(struct virtio_dev *d, struct snap_cur *in, struct cv_error *err);
void pci_state_save(struct pci_device *d, struct snap_buf *out);
int pci_state_load(struct pci_bus *bus, struct pci_device *d, struct snap_cur *in,
		   struct cv_error *err);

void virtio_state_save(struct vm_virtio *v, struct snap_buf *out);
int virtio_state_load(struct vm_virtio *v, struct snap_cur *in, struct cv_error *err);

#define SNAP_TYPE_FULL 0
#define SNAP_TYPE_DIFF 1         /* the memory file holds only the pages dirtied since the base */

/* What the state file says about the machine it came from. */
#define SNAP_SHAPE_MAX_DEVICES 64
struct snap_shape {
	char version[32];            /* cvisor version that wrote it */
	uint32_t n_vcpus;
	uint64_t memory_bytes;
	uint64_t memory_file_size;
	uint32_t snapshot_type;      /* SNAP_TYPE_FULL or SNAP_TYPE_DIFF */
	uint32_t transport;          /* enum virtio_transport: PCI or MMIO */
	uint32_t n_devices;
	struct {
		uint32_t device_id;
		uint32_t num_queues;
		char name[32];
	} dev[SNAP_SHAPE_MAX_DEVICES];
};

/* snapshot_type: SNAP_TYPE_FULL or SNAP_TYPE_DIFF. */
void shape_save(struct vm *vm, uint32_t snapshot_type, struct snap_buf *out);
int shape_decode(struct snap_cur *in, struct snap_shape *out, struct cv_error *err);
/* One-line error naming the first difference between the snapshot's machine and vm. */
int shape_check(const struct snap_shape *s, struct vm *vm, struct cv_error *err);

/*
 * The device configuration (config_state.c, SNAP_SEC_CONFIG). Decoded strings live in the
 * struct; dev points into it, so it must outlive a VM built from dev.
 */
#define SNAP_CONFIG_ID_MAX 64
#define SNAP_CONFIG_PATH_MAX 4096
struct snap_config {
	struct device_config dev;
	char disk_id[VM_MAX_DISKS][SNAP_CONFIG_ID_MAX];
	char disk_path[VM_MAX_DISKS][SNAP_CONFIG_PATH_MAX];
	char disk_serial[VM_MAX_DISKS][SNAP_CONFIG_ID_MAX];
	char net_id[VM_MAX_NETS][SNAP_CONFIG_ID_MAX];
	char net_tap[VM_MAX_NETS][SNAP_CONFIG_ID_MAX];
	char vsock_path[SNAP_CONFIG_PATH_MAX];
};
void config_save(const struct device_config *dc, struct snap_buf *out);
int config_decode(struct snap_cur *in, struct snap_config *out, struct cv_error *err);

/* Writes guest RAM to path (sparse: pages of zeroes become holes). */
int memfile_write(struct vm *vm, const char *path, struct cv_error *err);
/*
 * Writes only the pages set in `dirty` (one bit per page, memory.h), zero pages included, at
 * their offsets in a sparse file of the full size; everything else stays a hole. Refuses a
 * file system that does not report the holes (SEEK_HOLE): the diff could not be applied.
 */
int memfile_write_diff(struct vm *vm, const char *path, const uint64_t *dirty,
		       uint64_t *pages_written, struct cv_error *err);
/* Replaces guest RAM with a private (copy-on-write, lazily faulted) mapping of path. */
int memfile_map(struct vm *vm, const char *path, struct cv_error *err);

#endif
