/*
 * Dirty page tracking for live migration (see dirty.h). KVM_GET_DIRTY_LOG returns and clears a
 * slot's log in one call and write-protects the pages again, so each harvest sees exactly the
 * writes since the previous one. The VMM's bitmap is drained word by word with an atomic
 * exchange, so a device thread marking a page concurrently is never lost.
 */
#include "migrate/dirty.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vm.h"

int mig_dirty_init(struct mig_dirty *d, struct vm *vm, struct cv_error *err)
{
	if (d->bits)
		return 0;
	d->vm = vm;
	d->pages = vm->mem.size / 4096;
	d->words = (size_t)((d->pages + 63) / 64);
	d->bits = calloc(d->words, 8);
	d->vmm = calloc(d->words, 8);
	d->scratch = calloc(d->words, 8);
	if (!d->bits || !d->vmm || !d->scratch) {
		mig_dirty_free(d);
		return cv_fail(err, CV_EXIT_OSERR, "out of memory for the dirty page bitmaps");
	}
	return 0;
}

void mig_dirty_free(struct mig_dirty *d)
{
	free(d->bits);
	free(d->vmm);
	free(d->scratch);
	d->bits = d->vmm = d->scratch = NULL;
}

static int harvest_kvm(struct mig_dirty *d, struct cv_error *err)
{
	struct vm *vm = d->vm;
	for (unsigned s = 0; s < vm->mem.n_regions; s++) {
		const struct guest_region *r = &vm->mem.regions[s];
		uint64_t first = (uint64_t)(r->host - vm->mem.host) / 4096;
		uint64_t n = r->size / 4096;
		size_t words = (size_t)((n + 63) / 64);
		memset(d->scratch, 0, words * 8);
		struct kvm_dirty_log log = { .slot = s, .dirty_bitmap = d->scratch };
		if (ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log) < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_DIRTY_LOG slot %u", s);
		if (first % 64 == 0) {
			for (size_t w = 0; w < words; w++)
				d->bits[first / 64 + w] |= d->scratch[w];
		} else {
			for (uint64_t p = 0; p < n; p++)
				if (d->scratch[p / 64] & (1ULL << (p % 64)))
					d->bits[(first + p) / 64] |= 1ULL << ((first + p) % 64);
		}
	}
	return 0;
}

int mig_dirty_start(struct mig_dirty *d, struct cv_error *err)
{
	if (guest_memory_dirty_logging(&d->vm->mem, d->vm->fd, true, err) < 0) {
		guest_memory_dirty_logging(&d->vm->mem, d->vm->fd, false, err);
		return cv_error_wrap(err, "dirty page logging");
	}
	d->logging = true;
	memset(d->vmm, 0, d->words * 8);
	__atomic_store_n(&d->vm->mem.vmm_dirty, d->vmm, __ATOMIC_RELEASE);
	/* Round 1 sends everything: start from a clean log. */
	int rc = harvest_kvm(d, err);
	memset(d->bits, 0, d->words * 8);
	return rc;
}

int mig_dirty_harvest(struct mig_dirty *d, struct cv_error *err)
{
	if (harvest_kvm(d, err) < 0)
		return -1;
	for (size_t w = 0; w < d->words; w++)
		d->bits[w] |= __atomic_exchange_n(&d->vmm[w], 0, __ATOMIC_ACQUIRE);
	return 0;
}

void mig_dirty_stop(struct mig_dirty *d)
{
	/* The bitmap itself stays allocated: a device thread may still be marking it. */
	__atomic_store_n(&d->vm->mem.vmm_dirty, NULL, __ATOMIC_RELEASE);
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
