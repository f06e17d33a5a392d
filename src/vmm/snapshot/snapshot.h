/*
 * Snapshots of a whole VM: a state file (format.h, docs/snapshot-format.md) and a memory file.
 *
 * vm_snapshot_create needs a paused VM (vm_pause) and leaves it paused. It writes the memory
 * file first and the state file last, through a temporary name, so a state file that exists
 * always has its complete memory file.
 *
 * vm_restore turns a VM built by vm_init (never run, no kernel loaded) with the snapshot's
 * shape - vCPUs, memory, the same device options in the same order; vm_snapshot_read_shape
 * tells what that is - into the snapshotted machine: guest RAM becomes a private mapping of the
 * memory file, then KVM, device and vCPU state are loaded. vm_run then resumes the guest where
 * it was. Any mismatch or damage is refused with a one-line error before the VM runs.
 */
#ifndef CVISOR_VMM_SNAPSHOT_SNAPSHOT_H
#define CVISOR_VMM_SNAPSHOT_SNAPSHOT_H

#include "error.h"
#include "snapshot/state.h"

struct vm;

struct snapshot_times {
	double state_ms;             /* capturing and writing the state file */
	double memory_ms;            /* writing the memory file */
	uint64_t state_bytes;
	uint64_t memory_bytes_written;   /* non-hole bytes */
	uint64_t memory_pages_written;   /* diff: dirty pages written */
};

/*
 * diff: write only the pages dirtied since the last snapshot (or since the restore), which
 * needs dirty page tracking (vm_config.track_dirty_pages) and such a base; see
 * docs/snapshot-format.md for applying it (snapshot_merge).
 */
int vm_snapshot_create(struct vm *vm, const char *state_path, const char *mem_path, bool diff,
		       struct snapshot_times *times, struct cv_error *err);

int vm_snapshot_read_shape(const char *state_path, struct snap_shape *shape, struct cv_error *err);

/* The shape and the device configuration (SNAP_SEC_CONFIG) a VM needs to load the snapshot. */
int vm_snapshot_read_config(const char *state_path, struct snap_shape *shape,
			    struct snap_config *cfg, struct cv_error *err);

int vm_restore(struct vm *vm, const char *state_path, const char *mem_path, struct cv_error *err);

/*
 * The state file alone, in memory, for live migration (which moves guest RAM itself): the
 * bytes vm_snapshot_create would write as the state file (VM paused), and their restore into
 * a VM built with the same shape whose RAM already holds the guest's memory.
 */
int vm_snapshot_state(struct vm *vm, struct snap_buf *out, struct cv_error *err);
int vm_restore_state(struct vm *vm, const uint8_t *buf, size_t len, struct cv_error *err);

#endif
