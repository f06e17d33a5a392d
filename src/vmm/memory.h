/*
 * Guest RAM: one anonymous host mapping, registered with KVM as a slot below the 32-bit MMIO
 * hole and, for guests larger than the hole's start, a second slot from 4 GiB. Every access the
 * VMM makes on the guest's behalf goes through guest_memory_ptr(), which refuses ranges that are
 * not entirely RAM, so a guest-supplied address can never reach outside the mapping.
 */
#ifndef CVISOR_VMM_MEMORY_H
#define CVISOR_VMM_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define GUEST_MEMORY_MAX_REGIONS 2
#define GUEST_MEMORY_MIN (2ULL << 20)

struct guest_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *host;
};

struct guest_memory {
	uint64_t size;          /* total RAM bytes */
	uint8_t *host;          /* start of the single host mapping */
	struct guest_region regions[GUEST_MEMORY_MAX_REGIONS];
	unsigned n_regions;
	/*
	 * Dirty page tracking, NULL when off: one bit per 4 KiB page of the host mapping for what
	 * the VMM itself wrote on the guest's behalf (virtio rings and buffers, pages given back
	 * through the balloon), which KVM's dirty log cannot see. What the guest writes, KVM logs
	 * when the slots carry KVM_MEM_LOG_DIRTY_PAGES; guest_memory_take_dirty merges both. Two
	 * users: diff snapshots (on from the start, log_always) and live migration (on while it
	 * runs). Allocated once, published atomically, freed only with the memory: a device
	 * thread may be marking it at any time.
	 */
	uint64_t *dirty;
	uint64_t dirty_words;
	bool log_always;             /* slots are dirty-logged for the VM's whole life */
};

/* Maps `size` bytes (a multiple of 4 KiB, at least GUEST_MEMORY_MIN) and lays out regions. */
int guest_memory_init(struct guest_memory *gm, uint64_t size, struct cv_error *err);
void guest_memory_free(struct guest_memory *gm);

/* Registers the regions as KVM memory slots of vm_fd (dirty-logged with log_always). */
int guest_memory_register(const struct guest_memory *gm, int vm_fd, struct cv_error *err);

/*
 * Diff snapshots: tracking on for the VM's whole life. Call between guest_memory_init and
 * guest_memory_register.
 */
int guest_memory_track_dirty(struct guest_memory *gm, struct cv_error *err);

/* The VMM's bitmap, allocated (and published to device threads) if it is not yet. */
int guest_memory_dirty_bitmap(struct guest_memory *gm, struct cv_error *err);

/* Turns KVM's dirty logging of every slot on or off (off keeps it on with log_always). */
int guest_memory_dirty_logging(const struct guest_memory *gm, int vm_fd, bool on,
			       struct cv_error *err);

/* Diff snapshots possible: tracking has been on since the VM was built. */
static inline bool guest_memory_tracking(const struct guest_memory *gm)
{
	return gm->log_always;
}

/*
 * Records that the VMM wrote [host, host+len) of guest RAM (a pointer from guest_memory_ptr).
 * Safe from any thread; a no-op when tracking is off or the range is not guest RAM.
 */
void guest_memory_mark_dirty(const struct guest_memory *gm, const void *host, uint64_t len);

/*
 * Moves every page written since the last call - KVM's log of guest writes and the VMM's own
 * marks - into out (one bit per page of the host mapping, guest_memory_dirty_words() words,
 * OR'ed in) and starts both logs afresh. If the snapshot it was taken for fails, hand the bits
 * back with guest_memory_put_dirty so no write is forgotten.
 */
int guest_memory_take_dirty(const struct guest_memory *gm, int vm_fd, uint64_t *out,
			    struct cv_error *err);
void guest_memory_put_dirty(const struct guest_memory *gm, const uint64_t *bits);
static inline uint64_t guest_memory_dirty_words(const struct guest_memory *gm)
{
	return (gm->size / 4096 + 63) / 64;
}

/* True if the 4 KiB page (8-byte aligned) holds only zeroes: snapshots and migration skip it. */
bool guest_page_is_zero(const uint8_t *page);

/* Host pointer for [gpa, gpa+len) if it lies entirely inside one RAM region, else NULL. */
void *guest_memory_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len);

/* Copies into guest memory; -1 with err if the range is not RAM. */
int guest_memory_write(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len,
		       struct cv_error *err);

/*
 * Records that the VMM wrote [host, host+len) of guest RAM (a no-op unless a migration tracks
 * writes). Call after the write: a harvest between the write and the mark then still sees it.
 */
void guest_memory_mark_dirty(const struct guest_memory *gm, const void *host, uint64_t len);

/* Turns KVM's dirty page logging of every RAM slot on or off. */
int guest_memory_dirty_logging(const struct guest_memory *gm, int vm_fd, bool on,
			       struct cv_error *err);

/* End of RAM below the MMIO hole (exclusive). */
uint64_t guest_memory_low_end(const struct guest_memory *gm);

/* One entry of the BIOS e820 memory map. */
struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

#define E820_RAM      1
#define E820_RESERVED 2
#define E820_MAX_ENTRIES 8

/* The map the guest is told about: usable RAM and the reserved low areas. Returns entry count. */
unsigned guest_memory_e820(const struct guest_memory *gm, struct e820_entry *out, unsigned max);

#endif
