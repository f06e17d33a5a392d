/*
 * Dirty page tracking for live migration (see dirty.h), on top of guest memory's own tracking
 * (memory.h): KVM_GET_DIRTY_LOG returns and clears a slot's log in one call and write-protects
 * the pages again, and the VMM's bitmap is drained word by word with an atomic exchange, so
 * each harvest sees exactly the writes since the previous one and a device thread marking a
 * page concurrently is never lost.
 *
 * Both logs are shared with diff snapshots: what a migration harvests, the next diff snapshot
 * would no longer see, so starting a migration forgets the diff base (the next snapshot of a
 * VM that stayed here must be Full).
 */
#include "migrate/dirty.h"

#include <stdlib.h>
#include <string.h>

#include "vm.h"

int mig_dirty_init(struct mig_dirty *d, struct vm *vm, struct cv_error *err)
{
	if (d->bits)
		return 0;
	d->vm = vm;
	d->pages = vm->mem.size / 4096;
	d->words = (size_t)guest_memory_dirty_words(&vm->mem);
	d->bits = calloc(d->words, 8);
	if (!d->bits)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory for the dirty page bitmap");
	if (guest_memory_dirty_bitmap(&vm->mem, err) < 0) {
		mig_dirty_free(d);
		return -1;
	}
	return 0;
}

void mig_dirty_free(struct mig_dirty *d)
{
	free(d->bits);
	d->bits = NULL;
}

int mig_dirty_start(struct mig_dirty *d, struct cv_error *err)
{
	struct vm *vm = d->vm;
	if (guest_memory_dirty_logging(&vm->mem, vm->fd, true, err) < 0) {
		struct cv_error ignored = { 0 };
		guest_memory_dirty_logging(&vm->mem, vm->fd, false, &ignored);
		return cv_error_wrap(err, "dirty page logging");
	}
	d->logging = true;
	vm->has_diff_base = false;
	/* Round 1 sends everything: start from clean logs. */
	int rc = guest_memory_take_dirty(&vm->mem, vm->fd, d->bits, err);
	memset(d->bits, 0, d->words * 8);
	return rc;
}

int mig_dirty_harvest(struct mig_dirty *d, struct cv_error *err)
{
	return guest_memory_take_dirty(&d->vm->mem, d->vm->fd, d->bits, err);
}

void mig_dirty_stop(struct mig_dirty *d)
{
	if (d->logging) {
		struct cv_error err = { 0 };
		guest_memory_dirty_logging(&d->vm->mem, d->vm->fd, false, &err);
		d->logging = false;
	}
}

uint64_t mig_dirty_count(const struct mig_dirty *d)
{
	uint64_t n = 0;
	for (size_t w = 0; w < d->words; w++)
		n += (uint64_t)__builtin_popcountll(d->bits[w]);
	return n;
}
