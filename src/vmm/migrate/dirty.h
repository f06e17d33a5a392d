/*
 * Which pages of guest RAM changed since the last look, for live migration: KVM's dirty page
 * log (writes by vCPUs, and by KVM itself: kvmclock, steal time) merged with the VMM's own
 * bitmap of pages devices wrote (guest_memory_mark_dirty, which KVM cannot see). One bit per
 * 4 KiB page in host-mapping order, the order of the migration stream's offsets.
 */
#ifndef CVISOR_VMM_MIGRATE_DIRTY_H
#define CVISOR_VMM_MIGRATE_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct vm;

struct mig_dirty {
	struct vm *vm;
	uint64_t pages;
	size_t words;
	uint64_t *bits;              /* harvested: pages to send */
	bool logging;
};

/* Allocates the bitmaps (guest memory's own stays allocated as long as the memory). */
int mig_dirty_init(struct mig_dirty *d, struct vm *vm, struct cv_error *err);
void mig_dirty_free(struct mig_dirty *d);
/* Turns logging on (KVM and VMM) and forgets whatever was logged before. */
int mig_dirty_start(struct mig_dirty *d, struct cv_error *err);
/* Adds what changed since the last harvest to d->bits and resets the logs. */
int mig_dirty_harvest(struct mig_dirty *d, struct cv_error *err);
void mig_dirty_stop(struct mig_dirty *d);
uint64_t mig_dirty_count(const struct mig_dirty *d);

#endif
