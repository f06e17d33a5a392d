/*
 * Guest RAM allocation, slot registration, bounds-checked access and the e820 map (see memory.h).
 */
#include "memory.h"

#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "layout.h"
#include "util.h"

#define PAGE_SIZE 4096u
#define GUEST_MEMORY_ALIGN (2u << 20)

int guest_memory_init(struct guest_memory *gm, uint64_t size, struct cv_error *err)
{
	memset(gm, 0, sizeof(*gm));
	if (size < GUEST_MEMORY_MIN || (size & 0xfff))
		return cv_fail(err, CV_EXIT_USAGE,
			       "guest memory must be a multiple of 4 KiB and at least %llu MiB",
			       GUEST_MEMORY_MIN >> 20);
	/*
	 * NORESERVE: RAM the guest never touches costs nothing; overcommit is the host's call.
	 * Aligned to 2 MiB: KVM backs guest memory with huge pages only where host and guest
	 * addresses agree modulo 2 MiB, and mmap promises 4 KiB. Unaligned, every 4 KiB of guest
	 * RAM costs its own nested page fault and TLB entry (in the emulated host a guest filling
	 * 512 MiB took 58,000 nested faults per 10 s and 8x QEMU's time, whose RAM is aligned).
	 */
	size_t span = size + GUEST_MEMORY_ALIGN;
	uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return cv_fail_errno(err, CV_EXIT_OSERR, "map %llu MiB of guest memory",
				     (unsigned long long)(size >> 20));
	uint8_t *p = (uint8_t *)(((uintptr_t)raw + GUEST_MEMORY_ALIGN - 1) &
				 ~(uintptr_t)(GUEST_MEMORY_ALIGN - 1));
	size_t head = (size_t)(p - raw), tail = span - head - size;
	if (head)
		munmap(raw, head);
	if (tail)
		munmap(p + size, tail);
	/* Transparent huge pages cut TLB misses for the guest's working set; advisory only. */
	madvise(p, size, MADV_HUGEPAGE);
	gm->host = p;
	gm->size = size;
	uint64_t low = CV_MIN(size, LAYOUT_MMIO_HOLE);
	gm->regions[0] = (struct guest_region){ .gpa = 0, .size = low, .host = gm->host };
	gm->n_regions = 1;
	if (size > low) {
		gm->regions[1] = (struct guest_region){
			.gpa = LAYOUT_4GIB, .size = size - low, .host = gm->host + low };
		gm->n_regions = 2;
	}
	return 0;
}

void guest_memory_free(struct guest_memory *gm)
{
	if (gm->host)
		munmap(gm->host, gm->size);
	free(gm->dirty);
	memset(gm, 0, sizeof(*gm));
}

static int register_slots(const struct guest_memory *gm, int vm_fd, uint32_t flags,
			  struct cv_error *err)
{
	for (unsigned i = 0; i < gm->n_regions; i++) {
		const struct guest_region *r = &gm->regions[i];
		struct kvm_userspace_memory_region slot = {
			.slot = i,
			.flags = flags,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uint64_t)(uintptr_t)r->host,
		};
		if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR,
					     "KVM_SET_USER_MEMORY_REGION slot %u (gpa 0x%llx, %llu MiB)",
					     i, (unsigned long long)r->gpa,
					     (unsigned long long)(r->size >> 20));
	}
	return 0;
}

int guest_memory_dirty_bitmap(struct guest_memory *gm, struct cv_error *err)
{
	if (__atomic_load_n(&gm->dirty, __ATOMIC_ACQUIRE))
		return 0;
	gm->dirty_words = guest_memory_dirty_words(gm);
	uint64_t *bits = calloc(gm->dirty_words, sizeof(uint64_t));
	if (!bits)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory for the dirty page bitmap");
	__atomic_store_n(&gm->dirty, bits, __ATOMIC_RELEASE);
	return 0;
}

int guest_memory_track_dirty(struct guest_memory *gm, struct cv_error *err)
{
	if (guest_memory_dirty_bitmap(gm, err) < 0)
		return -1;
	gm->log_always = true;
	return 0;
}

int guest_memory_register(const struct guest_memory *gm, int vm_fd, struct cv_error *err)
{
	return register_slots(gm, vm_fd, gm->log_always ? KVM_MEM_LOG_DIRTY_PAGES : 0, err);
}

int guest_memory_dirty_logging(const struct guest_memory *gm, int vm_fd, bool on,
			       struct cv_error *err)
{
	/* Changing only the flags of a slot is allowed while vCPUs run. */
	return register_slots(gm, vm_fd, on || gm->log_always ? KVM_MEM_LOG_DIRTY_PAGES : 0, err);
}

void guest_memory_mark_dirty(const struct guest_memory *gm, const void *host, uint64_t len)
{
	uint64_t *bits = __atomic_load_n(&gm->dirty, __ATOMIC_ACQUIRE);
	if (!bits || !len)
		return;
	const uint8_t *p = host;
	if (p < gm->host || (uint64_t)(p - gm->host) >= gm->size)
		return;
	uint64_t first = (uint64_t)(p - gm->host) / PAGE_SIZE;
	uint64_t last = CV_MIN((uint64_t)(p - gm->host) + len - 1, gm->size - 1) / PAGE_SIZE;
	/* Release: whoever takes the bit (acquire) then reads the data written before it. */
	for (uint64_t pg = first; pg <= last; pg++)
		__atomic_fetch_or(&bits[pg / 64], 1ULL << (pg % 64), __ATOMIC_RELEASE);
}

void guest_memory_put_dirty(const struct guest_memory *gm, const uint64_t *bits)
{
	if (!gm->dirty)
		return;
	for (uint64_t i = 0; i < gm->dirty_words; i++)
		if (bits[i])
			__atomic_fetch_or(&gm->dirty[i], bits[i], __ATOMIC_RELAXED);
}

int guest_memory_take_dirty(const struct guest_memory *gm, int vm_fd, uint64_t *out,
			    struct cv_error *err)
{
	if (!gm->dirty)
		return cv_fail(err, CV_EXIT_USAGE, "dirty page tracking is off");
	for (unsigned i = 0; i < gm->n_regions; i++) {
		const struct guest_region *r = &gm->regions[i];
		uint64_t pages = r->size / PAGE_SIZE, words = (pages + 63) / 64;
		uint64_t *log = calloc(words, sizeof(uint64_t));
		if (!log)
			return cv_fail(err, CV_EXIT_OSERR, "out of memory for the dirty log");
		/* Without manual protection, KVM_GET_DIRTY_LOG also starts the log afresh. */
		struct kvm_dirty_log dl = { .slot = i, .dirty_bitmap = log };
		if (ioctl(vm_fd, KVM_GET_DIRTY_LOG, &dl) < 0) {
			free(log);
			return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_DIRTY_LOG slot %u", i);
		}
		uint64_t base = (uint64_t)(r->host - gm->host) / PAGE_SIZE;
		for (uint64_t w = 0; w < words; w++) {
			uint64_t bits = log[w];
			while (bits) {
				unsigned b = (unsigned)__builtin_ctzll(bits);
				bits &= bits - 1;
				uint64_t pg = base + w * 64 + b;
				out[pg / 64] |= 1ULL << (pg % 64);
			}
		}
		free(log);
	}
	for (uint64_t i = 0; i < gm->dirty_words; i++)
		out[i] |= __atomic_exchange_n(&gm->dirty[i], 0, __ATOMIC_ACQUIRE);
	return 0;
}

bool guest_page_is_zero(const uint8_t *page)
{
	const uint64_t *w = (const uint64_t *)page;
	uint64_t acc = 0;
	/* Eight words per step: one branch per cache line, and the compiler vectorises it. */
	for (unsigned i = 0; i < PAGE_SIZE / 8; i += 8)
		acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		       w[i + 7];
	return acc == 0;
}

void *guest_memory_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < gm->n_regions; i++) {
		const struct guest_region *r = &gm->regions[i];
		/* Written to avoid overflow: gpa and len come from the guest. */
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

int guest_memory_write(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len,
		       struct cv_error *err)
{
	void *dst = guest_memory_ptr(gm, gpa, len);
	if (!dst)
		return cv_fail(err, CV_EXIT_SOFTWARE,
			       "guest range 0x%llx+0x%llx is not RAM", (unsigned long long)gpa,
			       (unsigned long long)len);
	memcpy(dst, src, len);
	return 0;
}

uint64_t guest_memory_low_end(const struct guest_memory *gm)
{
	return gm->regions[0].size;
}

unsigned guest_memory_e820(const struct guest_memory *gm, struct e820_entry *out, unsigned max)
{
	struct e820_entry map[E820_MAX_ENTRIES];
	unsigned n = 0;
	uint64_t low_end = guest_memory_low_end(gm);

	map[n++] = (struct e820_entry){ 0, CV_MIN(low_end, LAYOUT_EBDA), E820_RAM };
	if (low_end > LAYOUT_EBDA)
		map[n++] = (struct e820_entry){ LAYOUT_EBDA, 0xa0000 - LAYOUT_EBDA, E820_RESERVED };
	if (low_end > LAYOUT_BIOS_AREA)
		map[n++] = (struct e820_entry){ LAYOUT_BIOS_AREA, LAYOUT_HIGH_MEMORY - LAYOUT_BIOS_AREA,
					       E820_RESERVED };
	if (low_end > LAYOUT_HIGH_MEMORY)
		map[n++] = (struct e820_entry){ LAYOUT_HIGH_MEMORY, low_end - LAYOUT_HIGH_MEMORY,
					       E820_RAM };
	if (gm->n_regions > 1)
		map[n++] = (struct e820_entry){ gm->regions[1].gpa, gm->regions[1].size, E820_RAM };

	n = CV_MIN(n, max);
	memcpy(out, map, n * sizeof(map[0]));
	return n;
}
