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
	 * While a live migration runs (migrate/dirty.c): one bit per 4 KiB page, in host-mapping
	 * order, for pages the VMM wrote on the guest's behalf (device DMA), which KVM's dirty log
	 * does not see. NULL otherwise. Accessed with __atomic builtins only.
	 */
	uint64_t *vmm_dirty;
};

/* Maps `size` bytes (a multiple of 4 KiB, at least GUEST_MEMORY_MIN) and lays out regions. */
int guest_memory_init(struct guest_memory *gm, uint64_t size, struct cv_error *err);
void guest_memory_free(struct guest_memory *gm);

/* Registers the regions as KVM memory slots of vm_fd. */
int guest_memory_register(const struct guest_memory *gm, int vm_fd, struct cv_error *err);

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
