/*
 * The split virtqueue core (src/vmm/virtio/virtq.c) driven from the device side. This file plays
 * the guest driver: it lays out descriptor tables, avail rings (with used_event) and used rings
 * (with avail_event) inside a real guest_memory exactly as a guest would, then checks what
 * virtq_pop hands the device and what virtq_push / the notification calls write back.
 *
 * Hostile rings (loops, out-of-range indices and addresses, malformed indirect tables) must break
 * the queue, never crash or reach outside guest RAM. To make a stray access visible, guest RAM is
 * moved between two PROT_NONE guard pages: reading one byte past either end kills the test.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bytes.h"
#include "layout.h"
#include "memory.h"
#include "virtio/virtq.h"

#define PAGE 4096ULL
#define MEM_SIZE (4ULL << 20)
/* Driver layout in guest RAM; large enough for a 32768-entry queue. */
#define DESC_GPA 0x1000ULL      /* up to 512 KiB */
#define AVAIL_GPA 0x90000ULL    /* up to 64 KiB + 6 */
#define USED_GPA 0xb0000ULL     /* up to 256 KiB + 6 */
#define TABLE_GPA 0x100000ULL   /* indirect tables */
#define DATA_GPA 0x200000ULL    /* buffers */
/* A guest with RAM on both sides of the 3-4 GiB hole; cheap because mappings are NORESERVE. */
#define BIG_MEM_SIZE (LAYOUT_MMIO_HOLE + MEM_SIZE)

#define R 0                      /* device-readable */
#define W VIRTQ_DESC_F_WRITE
#define N VIRTQ_DESC_F_NEXT
#define I VIRTQ_DESC_F_INDIRECT

/* The "guest": its RAM, the queue under test and the driver's private ring state. */
struct drv {
	struct guest_memory mem;
	uint8_t *reserve;        /* mapping holding the guard pages around RAM */
	struct virtq vq;
	uint16_t avail_idx;      /* driver's next avail index (what it last published) */
};

static struct drv D;
static struct virtq_elem E;     /* 16 KiB: static, as devices embed it */

/* ---- guest RAM with guard pages ---- */

static void ram_setup_size(uint64_t size)
{
	memset(&D, 0, sizeof(D));
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&D.mem, size, &err), 0, "%s", err.msg);
	/* Reserve RAM + 2 pages, then move RAM into the middle: the ends stay PROT_NONE. */
	uint8_t *res = mmap(NULL, size + 2 * PAGE, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	cr_assert_neq(res, MAP_FAILED);
	uint8_t *moved = mremap(D.mem.host, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, res + PAGE);
	cr_assert_eq(moved, res + PAGE);
	for (unsigned i = 0; i < D.mem.n_regions; i++)
		D.mem.regions[i].host = moved + (D.mem.regions[i].host - D.mem.host);
	D.mem.host = moved;
	D.reserve = res;
}

static void ram_setup(void)
{
	ram_setup_size(MEM_SIZE);
}

static void ram_setup_big(void)
{
	ram_setup_size(BIG_MEM_SIZE);
}

static void ram_teardown(void)
{
	uint64_t size = D.mem.size;
	guest_memory_free(&D.mem);
	munmap(D.reserve, PAGE);
	munmap(D.reserve + PAGE + size, PAGE);
}

static uint8_t *gptr(uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_memory_ptr(&D.mem, gpa, len);
	cr_assert_not_null(p, "test bug: 0x%llx+%llu is not RAM", (unsigned long long)gpa,
			   (unsigned long long)len);
	return p;
}

/* ---- the driver's side of the rings ---- */

static void queue_config(uint16_t size, bool indirect, bool event_idx, uint64_t desc,
			 uint64_t avail, uint64_t used)
{
	memset(&D.vq, 0, sizeof(D.vq));
	D.vq.size = size;
	D.vq.desc_gpa = desc;
	D.vq.avail_gpa = avail;
	D.vq.used_gpa = used;
	D.vq.indirect = indirect;
	D.vq.event_idx = event_idx;
	D.avail_idx = 0;
}

static void queue_start(uint16_t size, bool indirect, bool event_idx)
{
	queue_config(size, indirect, event_idx, DESC_GPA, AVAIL_GPA, USED_GPA);
	cr_assert_eq(virtq_start(&D.vq, &D.mem), 0, "start: %s", D.vq.error);
	cr_assert(!D.vq.broken);
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *p = gptr(table + 16ULL * i, 16);
	put_le64(p, addr);
	put_le32(p + 8, len);
	put_le16(p + 12, flags);
	put_le16(p + 14, next);
}

static void set_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	put_desc(D.vq.desc_gpa, i, addr, len, flags, next);
}

static void avail_publish(uint16_t idx)
{
	D.avail_idx = idx;
	__atomic_store_n((uint16_t *)gptr(D.vq.avail_gpa + 2, 2), htole16(idx), __ATOMIC_RELEASE);
}

/* Writes the ring entry only; avail_publish makes it visible. */
static void avail_put(uint16_t slot, uint16_t head)
{
	put_le16(gptr(D.vq.avail_gpa + 4 + 2ULL * (slot % D.vq.size), 2), head);
}

static void avail_add(uint16_t head)
{
	avail_put(D.avail_idx, head);
	avail_publish((uint16_t)(D.avail_idx + 1));
}

static void set_avail_flags(uint16_t f)
{
	put_le16(gptr(D.vq.avail_gpa, 2), f);
}

static void set_used_event(uint16_t v)
{
	__atomic_store_n((uint16_t *)gptr(D.vq.avail_gpa + 4 + 2ULL * D.vq.size, 2), htole16(v),
			 __ATOMIC_RELEASE);
}

static uint16_t used_idx(void)
{
	return le16toh(__atomic_load_n((uint16_t *)gptr(D.vq.used_gpa + 2, 2), __ATOMIC_ACQUIRE));
}

static uint16_t used_flags(void)
{
	return le16toh(__atomic_load_n((uint16_t *)gptr(D.vq.used_gpa, 2), __ATOMIC_ACQUIRE));
}

static uint16_t avail_event(void)
{
	return le16toh(__atomic_load_n((uint16_t *)gptr(D.vq.used_gpa + 4 + 8ULL * D.vq.size, 2),
				       __ATOMIC_ACQUIRE));
}

static void set_avail_event(uint16_t v)
{
	put_le16(gptr(D.vq.used_gpa + 4 + 8ULL * D.vq.size, 2), v);
}

static void used_elem(uint16_t idx, uint32_t *id, uint32_t *len)
{
	const uint8_t *p = gptr(D.vq.used_gpa + 4 + 8ULL * (idx % D.vq.size), 8);
	*id = get_le32(p);
	*len = get_le32(p + 4);
}

static void expect_used(uint16_t idx, uint32_t id, uint32_t len)
{
	uint32_t got_id, got_len;
	used_elem(idx, &got_id, &got_len);
	cr_assert_eq(got_id, id, "used[%u].id = %u, want %u", idx, got_id, id);
	cr_assert_eq(got_len, len, "used[%u].len = %u, want %u", idx, got_len, len);
}

/* ---- device-side checks ---- */

static int pop(void)
{
	return virtq_pop(&D.vq, &E);
}

/* Every segment lies inside one RAM region (a segment may not bridge the 3-4 GiB hole). */
static void assert_iov_in_ram(const struct virtq_elem *e)
{
	cr_assert_leq(e->n_out + e->n_in, VIRTQ_MAX_SEGS);
	uint64_t out = 0, in = 0;
	for (unsigned i = 0; i < e->n_out + e->n_in; i++) {
		const uint8_t *b = e->iov[i].iov_base;
		size_t len = e->iov[i].iov_len;
		bool inside = false;
		for (unsigned r = 0; r < D.mem.n_regions; r++) {
			const struct guest_region *g = &D.mem.regions[r];
			if (b >= g->host && len <= g->size && (uint64_t)(b - g->host) <= g->size - len)
				inside = true;
		}
		cr_assert(inside, "segment %u (%p+%zu) is not inside guest RAM", i, (void *)b, len);
		*(i < e->n_out ? &out : &in) += len;
	}
	cr_assert_eq(out, e->out_len);
	cr_assert_eq(in, e->in_len);
}

static void expect_seg(unsigned i, uint64_t gpa, size_t len)
{
	cr_assert_lt(i, E.n_out + E.n_in);
	cr_assert_eq(E.iov[i].iov_base, gptr(gpa, len), "segment %u is not gpa 0x%llx", i,
		     (unsigned long long)gpa);
	cr_assert_eq(E.iov[i].iov_len, len, "segment %u: %zu bytes, want %zu", i, E.iov[i].iov_len,
		     len);
}

static void expect_pop(uint16_t head, unsigned n_out, unsigned n_in)
{
	int r = pop();
	cr_assert_eq(r, 1, "pop = %d (%s)", r, D.vq.error ? D.vq.error : "-");
	cr_assert_eq(E.head, head, "head %u, want %u", E.head, head);
	cr_assert_eq(E.n_out, n_out, "n_out %u, want %u", E.n_out, n_out);
	cr_assert_eq(E.n_in, n_in, "n_in %u, want %u", E.n_in, n_in);
	assert_iov_in_ram(&E);
}

/* The ring is refused: -1 with a reason, the queue stays broken, the driver gets nothing back. */
static void expect_broken(const char *why)
{
	uint16_t before = used_idx();
	cr_assert_eq(pop(), -1, "hostile ring accepted (want '%s')", why);
	cr_assert(D.vq.broken);
	cr_assert_not_null(D.vq.error);
	cr_assert(strstr(D.vq.error, why), "error '%s' does not say '%s'", D.vq.error, why);
	cr_assert_eq(pop(), -1, "a broken queue must stay broken");
	cr_assert_eq(used_idx(), before);
}

static void expect_start_fails(const char *why)
{
	cr_assert_eq(virtq_start(&D.vq, &D.mem), -1, "start accepted a bad ring (want '%s')", why);
	cr_assert(D.vq.broken);
	cr_assert(!D.vq.started);
	cr_assert(strstr(D.vq.error, why), "error '%s' does not say '%s'", D.vq.error, why);
	cr_assert_eq(pop(), -1);
}

TestSuite(virtq, .init = ram_setup, .fini = ram_teardown, .timeout = 30);
TestSuite(virtq_hostile, .init = ram_setup, .fini = ram_teardown, .timeout = 30);
TestSuite(virtq_hole, .init = ram_setup_big, .fini = ram_teardown, .timeout = 30);

/* ================================ well-formed rings ================================ */

Test(virtq, empty_ring_and_unstarted_queue_pop_nothing)
{
	queue_config(8, false, false, DESC_GPA, AVAIL_GPA, USED_GPA);
	cr_assert_eq(pop(), 0, "a queue that was never started has nothing");
	queue_start(8, false, false);
	cr_assert_eq(pop(), 0);
	cr_assert_eq(used_idx(), 0);
}

Test(virtq, single_readable_descriptor)
{
	queue_start(8, false, false);
	set_desc(5, DATA_GPA + 0x40, 100, R, 0);
	avail_add(5);
	expect_pop(5, 1, 0);
	expect_seg(0, DATA_GPA + 0x40, 100);
	cr_assert_eq(E.out_len, 100);
	cr_assert_eq(E.in_len, 0);
	cr_assert_eq(pop(), 0);
	virtq_push(&D.vq, &E, 0);
	cr_assert_eq(used_idx(), 1);
	expect_used(0, 5, 0);
}

Test(virtq, blk_like_chain_readable_then_writable_moves_real_bytes)
{
	queue_start(16, false, false);
	/* virtio-blk write: 16-byte header, 4 KiB data (both readable), 1-byte status (writable). */
	uint8_t *hdr = gptr(DATA_GPA, 16), *data = gptr(DATA_GPA + 0x1000, 4096);
	for (unsigned i = 0; i < 16; i++)
		hdr[i] = (uint8_t)(0xa0 + i);
	uint32_t sum = 0;
	for (unsigned i = 0; i < 4096; i++) {
		data[i] = (uint8_t)(i * 7 + 3);
		sum += data[i];
	}
	set_desc(3, DATA_GPA, 16, R | N, 9);
	set_desc(9, DATA_GPA + 0x1000, 4096, R | N, 0);
	set_desc(0, DATA_GPA + 0x3000, 1, W, 0);
	avail_add(3);
	expect_pop(3, 2, 1);
	cr_assert_eq(E.out_len, 4112);
	cr_assert_eq(E.in_len, 1);

	/* The device sees exactly the driver's bytes through the iovecs ... */
	static uint8_t flat[4112];
	cr_assert_eq(iov_to_buf(E.iov, E.n_out, 0, flat, sizeof(flat)), 4112);
	cr_assert_eq(memcmp(flat, hdr, 16), 0);
	uint32_t got = 0;
	for (unsigned i = 16; i < 4112; i++)
		got += flat[i];
	cr_assert_eq(got, sum);
	/* ... and its status byte lands where the driver will look. */
	uint8_t status = 0x5a;
	cr_assert_eq(iov_from_buf(E.iov + E.n_out, E.n_in, 0, &status, 1), 1);
	virtq_push(&D.vq, &E, 1);
	cr_assert_eq(*gptr(DATA_GPA + 0x3000, 1), 0x5a);
	cr_assert_eq(used_idx(), 1);
	expect_used(0, 3, 1);
}

Test(virtq, device_fills_scattered_writable_segments)
{
	queue_start(8, false, false);
	/* A read request: header, then data scattered over three writable pieces, then status. */
	set_desc(0, DATA_GPA, 16, R | N, 1);
	set_desc(1, DATA_GPA + 0x10000, 1000, W | N, 2);
	set_desc(2, DATA_GPA + 0x20003, 3000, W | N, 3);
	set_desc(3, DATA_GPA + 0x30000, 96, W | N, 4);
	set_desc(4, DATA_GPA + 0x40000, 1, W, 0);
	avail_add(0);
	expect_pop(0, 1, 4);
	cr_assert_eq(E.in_len, 4097);
	static uint8_t pattern[4097];
	for (unsigned i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i ^ (i >> 8));
	cr_assert_eq(iov_from_buf(E.iov + E.n_out, E.n_in, 0, pattern, sizeof(pattern)), 4097);
	virtq_push(&D.vq, &E, 4097);
	cr_assert_eq(memcmp(gptr(DATA_GPA + 0x10000, 1000), pattern, 1000), 0);
	cr_assert_eq(memcmp(gptr(DATA_GPA + 0x20003, 3000), pattern + 1000, 3000), 0);
	cr_assert_eq(memcmp(gptr(DATA_GPA + 0x30000, 96), pattern + 4000, 96), 0);
	cr_assert_eq(*gptr(DATA_GPA + 0x40000, 1), pattern[4096]);
	/* Nothing beyond the segments was written. */
	cr_assert_eq(*gptr(DATA_GPA + 0x10000 + 1000, 1), 0);
	cr_assert_eq(*gptr(DATA_GPA + 0x20003 - 1, 1), 0);
	expect_used(0, 0, 4097);
}

static bool page_dirty(uint64_t gpa)
{
	uint64_t pg = gpa / PAGE;
	return (D.mem.dirty[pg / 64] >> (pg % 64)) & 1;
}

/*
 * Diff snapshots and live migration: what the device may have written through the rings - the
 * used ring and every writable segment (a device can write more than the length it reports) -
 * is marked dirty in the VMM's bitmap (KVM's log never sees VMM writes); readable segments and
 * pages outside the chain are not.
 */
Test(virtq, push_marks_the_written_pages_and_the_used_ring_dirty)
{
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_track_dirty(&D.mem, &err), 0, "%s", err.msg);
	queue_start(8, false, false);
	set_desc(0, DATA_GPA, 16, R | N, 1);
	set_desc(1, DATA_GPA + 0x10000, 1000, W | N, 2);
	set_desc(2, DATA_GPA + 0x20ff0, 3000, W | N, 3);
	set_desc(3, DATA_GPA + 0x30000, 96, W, 0);
	avail_add(0);
	expect_pop(0, 1, 3);
	for (uint64_t i = 0; i < D.mem.dirty_words; i++)
		cr_assert_eq(D.mem.dirty[i], 0, "popping writes nothing");
	virtq_push(&D.vq, &E, 1100);   /* 1000 bytes, then 100 across a page boundary */
	cr_assert(page_dirty(USED_GPA), "the used ring");
	cr_assert(page_dirty(DATA_GPA + 0x10000));
	cr_assert(page_dirty(DATA_GPA + 0x20ff0));
	cr_assert(page_dirty(DATA_GPA + 0x21000), "the 100 bytes cross into the next page");
	cr_assert_not(page_dirty(DATA_GPA + 0x22000), "the segment ends before");
	cr_assert(page_dirty(DATA_GPA + 0x30000), "writable, though past the length reported");
	cr_assert_not(page_dirty(DATA_GPA), "the device only read this page");
	cr_assert_not(page_dirty(DESC_GPA));
	/* Outside RAM or with tracking off, marking is a harmless no-op. */
	guest_memory_mark_dirty(&D.mem, D.mem.host + D.mem.size, 4096);
	guest_memory_mark_dirty(&D.mem, D.mem.host - 4096, 4096);
}

Test(virtq, push_clamps_written_to_the_writable_length)
{
	queue_start(4, false, false);
	set_desc(0, DATA_GPA, 10, R | N, 1);
	set_desc(1, DATA_GPA + 0x100, 100, W, 0);
	set_desc(2, DATA_GPA + 0x200, 50, R, 0);
	avail_add(0);
	avail_add(2);
	expect_pop(0, 1, 1);
	virtq_push(&D.vq, &E, 1000);
	expect_used(0, 0, 100);
	expect_pop(2, 1, 0);
	virtq_push(&D.vq, &E, 5);
	expect_used(1, 2, 0);
	cr_assert_eq(used_idx(), 2);
}

Test(virtq, several_chains_pop_in_avail_order_and_complete_out_of_order)
{
	queue_start(8, false, false);
	set_desc(0, DATA_GPA, 1, R | N, 1);
	set_desc(1, DATA_GPA + 1, 2, W, 0);
	set_desc(2, DATA_GPA + 0x100, 3, R, 0);
	set_desc(3, DATA_GPA + 0x200, 4, W, 0);
	avail_add(3);
	avail_add(0);
	avail_add(2);
	static struct virtq_elem got[3];
	for (unsigned i = 0; i < 3; i++)
		cr_assert_eq(virtq_pop(&D.vq, &got[i]), 1);
	cr_assert_eq(pop(), 0);
	cr_assert_eq(got[0].head, 3);
	cr_assert_eq(got[0].n_in, 1);
	cr_assert_eq(got[1].head, 0);
	cr_assert_eq(got[1].n_out + got[1].n_in, 2);
	cr_assert_eq(got[2].head, 2);
	/* Completion order is the device's choice; the used ring records it. */
	virtq_push(&D.vq, &got[2], 0);
	virtq_push(&D.vq, &got[0], 4);
	virtq_push(&D.vq, &got[1], 2);
	cr_assert_eq(used_idx(), 3);
	expect_used(0, 2, 0);
	expect_used(1, 3, 4);
	expect_used(2, 0, 2);
}

Test(virtq, chain_wraps_past_the_end_of_the_table)
{
	queue_start(8, false, false);
	set_desc(6, DATA_GPA, 8, R | N, 7);
	set_desc(7, DATA_GPA + 8, 8, R | N, 0);
	set_desc(0, DATA_GPA + 16, 8, W | N, 1);
	set_desc(1, DATA_GPA + 24, 8, W, 0);
	avail_add(6);
	expect_pop(6, 2, 2);
	for (unsigned i = 0; i < 4; i++)
		expect_seg(i, DATA_GPA + 8 * i, 8);
}

Test(virtq, chain_as_long_as_the_queue_is_not_a_loop)
{
	queue_start(256, false, false);
	for (unsigned i = 0; i < 256; i++)
		set_desc(i, DATA_GPA + i, 1, (i < 128 ? R : W) | (i < 255 ? N : 0), (uint16_t)(i + 1));
	avail_add(0);
	expect_pop(0, 128, 128);
	for (unsigned i = 0; i < 256; i++)
		expect_seg(i, DATA_GPA + i, 1);
}

Test(virtq, zero_length_descriptors_give_no_segment)
{
	queue_start(8, false, false);
	set_desc(0, 0xdead0000000ULL, 0, R | N, 1);   /* address of an empty buffer is never used */
	set_desc(1, DATA_GPA, 4, R | N, 2);
	set_desc(2, 0, 0, W | N, 3);
	set_desc(3, DATA_GPA + 4, 4, W, 0);
	avail_add(0);
	expect_pop(0, 1, 1);
	expect_seg(0, DATA_GPA, 4);
	expect_seg(1, DATA_GPA + 4, 4);
}

Test(virtq, minimum_ring_alignments_are_enough)
{
	/* virtio 1.x: descriptors 16-byte, avail 2-byte, used 4-byte aligned; no page alignment. */
	queue_config(4, false, true, DESC_GPA + 16, AVAIL_GPA + 2, USED_GPA + 4);
	cr_assert_eq(virtq_start(&D.vq, &D.mem), 0, "%s", D.vq.error);
	set_desc(2, DATA_GPA, 5, W, 0);
	avail_add(2);
	expect_pop(2, 0, 1);
	virtq_push(&D.vq, &E, 5);
	expect_used(0, 2, 5);
	cr_assert_eq(le16toh(*(uint16_t *)gptr(USED_GPA + 4 + 2, 2)), 1, "used idx at used_gpa+2");
}

Test(virtq, rings_ending_exactly_at_the_end_of_ram)
{
	/* Each ring in turn is the last thing in RAM; a one-byte overrun hits the guard page. */
	const uint16_t n = 64;
	uint64_t desc_len = 16ULL * n, avail_len = 4 + 2ULL * n + 2, used_len = 4 + 8ULL * n + 2;
	for (int which = 0; which < 3; which++) {
		uint64_t desc = DESC_GPA, avail = AVAIL_GPA, used = USED_GPA;
		if (which == 0)
			desc = MEM_SIZE - desc_len;
		else if (which == 1)
			avail = MEM_SIZE - avail_len;
		else
			used = (MEM_SIZE - used_len) & ~3ULL;   /* 2 bytes before the end */
		queue_config(n, true, true, desc, avail, used);
		memset(gptr(avail, avail_len), 0, avail_len);
		memset(gptr(used, used_len), 0, used_len);
		cr_assert_eq(virtq_start(&D.vq, &D.mem), 0, "ring %d: %s", which, D.vq.error);
		for (unsigned k = 0; k < n; k++)
			set_desc(k, DATA_GPA + 64ULL * k, 64, k == n - 1 ? W : R | N, (uint16_t)(k + 1));
		set_used_event(0xffff);
		for (unsigned round = 0; round < 3; round++) {
			avail_add((uint16_t)(n - 2));
			expect_pop((uint16_t)(n - 2), 1, 1);
			virtq_push(&D.vq, &E, 64);
			(void)virtq_should_notify(&D.vq);
			cr_assert_eq(pop(), 0);
			cr_assert_eq(avail_event(), round + 1);
		}
		virtq_stop(&D.vq);
	}
}

Test(virtq, unpop_returns_the_same_chain_again)
{
	for (int evt = 0; evt < 2; evt++) {
		queue_start(4, false, evt);
		set_desc(1, DATA_GPA, 7, R | N, 2);
		set_desc(2, DATA_GPA + 0x100, 9, W, 0);
		set_desc(3, DATA_GPA + 0x200, 11, W, 0);
		avail_add(1);
		avail_add(3);
		expect_pop(1, 1, 1);
		virtq_unpop(&D.vq);
		expect_pop(1, 1, 1);
		expect_seg(0, DATA_GPA, 7);
		expect_seg(1, DATA_GPA + 0x100, 9);
		virtq_push(&D.vq, &E, 9);
		expect_pop(3, 0, 1);
		virtq_unpop(&D.vq);
		expect_pop(3, 0, 1);
		virtq_push(&D.vq, &E, 11);
		cr_assert_eq(pop(), 0);
		cr_assert_eq(used_idx(), 2);
		expect_used(0, 1, 9);
		expect_used(1, 3, 11);
		virtq_stop(&D.vq);
		memset(gptr(USED_GPA, 64), 0, 64);
	}
}

Test(virtq, stopped_queue_pops_nothing_and_writes_nothing)
{
	queue_start(4, false, false);
	set_desc(0, DATA_GPA, 4, W, 0);
	avail_add(0);
	expect_pop(0, 0, 1);
	virtq_stop(&D.vq);
	virtq_push(&D.vq, &E, 4);
	cr_assert_eq(used_idx(), 0, "push after stop wrote the used ring");
	avail_add(0);
	cr_assert_eq(pop(), 0);
	cr_assert(!virtq_should_notify(&D.vq));
}

Test(virtq, restart_clears_a_broken_queue)
{
	queue_start(4, false, false);
	avail_add(9);
	expect_broken("beyond the queue");
	/* The driver resets the device and sets the queue up again. */
	memset(gptr(AVAIL_GPA, 64), 0, 64);
	queue_start(4, false, false);
	set_desc(0, DATA_GPA, 4, R, 0);
	avail_add(0);
	expect_pop(0, 1, 0);
}

/* ---------------------------------- indirect tables --------------------------------- */

Test(virtq, indirect_table_is_the_chain)
{
	queue_start(8, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA, 16, R | N, 1);
	put_desc(TABLE_GPA, 1, DATA_GPA + 0x1000, 512, W | N, 2);
	put_desc(TABLE_GPA, 2, DATA_GPA + 0x2000, 1, W, 0);
	set_desc(4, TABLE_GPA, 48, I, 0);
	avail_add(4);
	expect_pop(4, 1, 2);
	expect_seg(0, DATA_GPA, 16);
	expect_seg(1, DATA_GPA + 0x1000, 512);
	expect_seg(2, DATA_GPA + 0x2000, 1);
	cr_assert_eq(E.out_len, 16);
	cr_assert_eq(E.in_len, 513);
	virtq_push(&D.vq, &E, 513);
	expect_used(0, 4, 513);
}

Test(virtq, indirect_chain_follows_next_not_table_order)
{
	queue_start(2, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA, 1, R | N, 3);
	put_desc(TABLE_GPA, 3, DATA_GPA + 3, 1, R | N, 1);
	put_desc(TABLE_GPA, 1, DATA_GPA + 1, 1, W, 0);
	put_desc(TABLE_GPA, 2, 0xffffffffffff0000ULL, 0xffff, R, 0);   /* not in the chain */
	set_desc(1, TABLE_GPA, 64, I, 0);
	avail_add(1);
	expect_pop(1, 2, 1);
	expect_seg(0, DATA_GPA, 1);
	expect_seg(1, DATA_GPA + 3, 1);
	expect_seg(2, DATA_GPA + 1, 1);
}

Test(virtq, write_flag_on_the_indirect_descriptor_is_ignored)
{
	queue_start(4, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA, 8, R | N, 1);
	put_desc(TABLE_GPA, 1, DATA_GPA + 8, 8, W, 0);
	set_desc(0, TABLE_GPA, 32, I | W, 0);
	avail_add(0);
	expect_pop(0, 1, 1);
}

Test(virtq, indirect_table_of_the_maximum_length)
{
	queue_start(1, true, false);
	for (unsigned i = 0; i < VIRTQ_MAX_SEGS; i++)
		put_desc(TABLE_GPA, i, DATA_GPA + 2ULL * i, 2, (i < 100 ? R : W) | N,
			 (uint16_t)(i + 1));
	put_desc(TABLE_GPA, VIRTQ_MAX_SEGS - 1, DATA_GPA + 2ULL * (VIRTQ_MAX_SEGS - 1), 2, W, 0);
	set_desc(0, TABLE_GPA, 16 * VIRTQ_MAX_SEGS, I, 0);
	avail_add(0);
	expect_pop(0, 100, VIRTQ_MAX_SEGS - 100);
	cr_assert_eq(E.out_len, 200);
	cr_assert_eq(E.in_len, 2 * (VIRTQ_MAX_SEGS - 100));
}

Test(virtq, direct_descriptors_then_an_indirect_table)
{
	/* The spec forbids NEXT on an indirect descriptor, not a chain that ends in one. */
	queue_start(4, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA + 0x100, 4, W, 0);
	set_desc(2, DATA_GPA, 16, R | N, 3);
	set_desc(3, TABLE_GPA, 16, I, 0);
	avail_add(2);
	expect_pop(2, 1, 1);
	expect_seg(0, DATA_GPA, 16);
	expect_seg(1, DATA_GPA + 0x100, 4);
}

/* ----------------------------------- queue sizes ----------------------------------- */

Test(virtq, every_power_of_two_size_fills_and_drains, .timeout = 60)
{
	for (unsigned lg = 0; lg <= 15; lg++) {
		uint16_t n = (uint16_t)(1u << lg);
		memset(gptr(AVAIL_GPA, USED_GPA - AVAIL_GPA), 0, USED_GPA - AVAIL_GPA);
		memset(gptr(USED_GPA, TABLE_GPA - USED_GPA), 0, TABLE_GPA - USED_GPA);
		queue_start(n, false, lg & 1);
		for (unsigned i = 0; i < n; i++)
			set_desc(i, DATA_GPA + 2ULL * i, 1 + i % 2, i % 3 ? W : R, 0);
		/* A completely full ring (pending == size) in reverse order, published at once. */
		for (unsigned i = 0; i < n; i++)
			avail_put((uint16_t)i, (uint16_t)(n - 1 - i));
		avail_publish(n);
		for (unsigned i = 0; i < n; i++) {
			uint16_t head = (uint16_t)(n - 1 - i);
			expect_pop(head, head % 3 ? 0 : 1, head % 3 ? 1 : 0);
			expect_seg(0, DATA_GPA + 2ULL * head, 1 + head % 2);
			virtq_push(&D.vq, &E, 1);
		}
		cr_assert_eq(pop(), 0, "size %u", n);
		cr_assert_eq(used_idx(), n);
		for (unsigned i = 0; i < n; i++)
			expect_used((uint16_t)i, n - 1 - i, (n - 1 - i) % 3 ? 1 : 0);
		virtq_stop(&D.vq);
	}
}

Test(virtq, sizes_that_are_not_powers_of_two_are_refused)
{
	const uint16_t bad[] = { 0, 3, 6, 12, 1000, 32767, 32769, 49152, 65535 };
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		queue_config(bad[i], false, false, DESC_GPA, AVAIL_GPA, USED_GPA);
		expect_start_fails("power of two");
	}
	queue_config(32768, false, false, DESC_GPA, AVAIL_GPA, USED_GPA);
	cr_assert_eq(virtq_start(&D.vq, &D.mem), 0);
}

/* ------------------------------ index wrap-around ------------------------------ */

Test(virtq, indices_wrap_past_65536_one_request_at_a_time, .timeout = 60)
{
	queue_start(4, false, true);
	for (unsigned i = 0; i < 4; i++)
		set_desc(i, DATA_GPA + 64ULL * i, 64, W, 0);
	for (uint32_t k = 0; k < 70000; k++) {
		uint16_t head = (uint16_t)((k * 3) % 4);
		avail_add(head);
		int r = pop();
		cr_assert_eq(r, 1, "request %u: pop %d (%s)", k, r, D.vq.error);
		cr_assert_eq(E.head, head);
		virtq_push(&D.vq, &E, k % 65);
		cr_assert_eq(used_idx(), (uint16_t)(k + 1));
		expect_used((uint16_t)k, head, k % 65);
		cr_assert_eq(pop(), 0);
		/* The empty pop asked for a kick at the next entry, wrapping with the index. */
		cr_assert_eq(avail_event(), (uint16_t)(k + 1));
	}
	cr_assert_eq(D.vq.last_avail, (uint16_t)70000);
}

Test(virtq, indices_wrap_past_65536_with_full_batches, .timeout = 60)
{
	queue_start(8, false, false);
	for (unsigned i = 0; i < 8; i++)
		set_desc(i, DATA_GPA + 64ULL * i, 64, W, 0);
	static struct virtq_elem batch[8];
	uint32_t total = 0;
	for (unsigned round = 0; round < 9000; round++) {
		for (unsigned i = 0; i < 8; i++)
			avail_put((uint16_t)(D.avail_idx + i), (uint16_t)((i + round) % 8));
		avail_publish((uint16_t)(D.avail_idx + 8));
		for (unsigned i = 0; i < 8; i++) {
			cr_assert_eq(virtq_pop(&D.vq, &batch[i]), 1, "round %u: %s", round, D.vq.error);
			cr_assert_eq(batch[i].head, (i + round) % 8);
		}
		cr_assert_eq(pop(), 0);
		uint16_t u0 = used_idx();
		for (unsigned i = 8; i-- > 0;)
			virtq_push(&D.vq, &batch[i], i);
		for (unsigned i = 0; i < 8; i++)
			expect_used((uint16_t)(u0 + i), (7 - i + round) % 8, 7 - i);
		total += 8;
	}
	cr_assert_eq(used_idx(), (uint16_t)total);
	cr_assert_gt(total, 65536);
}

/* ------------------------------ notification suppression ------------------------------ */

static void one_request(void)
{
	cr_assert_eq(pop(), 1, "%s", D.vq.error);
	virtq_push(&D.vq, &E, 0);
}

Test(virtq, no_interrupt_flag_without_event_idx)
{
	queue_start(8, false, false);
	for (unsigned i = 0; i < 8; i++)
		set_desc(i, DATA_GPA, 1, W, 0);
	for (unsigned i = 0; i < 4; i++)
		avail_add((uint16_t)i);
	/* used_event is ignored without the feature, whatever it says. */
	set_used_event(100);
	one_request();
	cr_assert(virtq_should_notify(&D.vq));
	set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT);
	one_request();
	cr_assert(!virtq_should_notify(&D.vq));
	one_request();
	cr_assert(!virtq_should_notify(&D.vq));
	set_avail_flags(0);
	one_request();
	cr_assert(virtq_should_notify(&D.vq));
}

Test(virtq, used_event_decides_interrupts)
{
	queue_start(16, false, true);
	for (unsigned i = 0; i < 16; i++) {
		set_desc(i, DATA_GPA, 1, W, 0);
		avail_add((uint16_t)i);
	}
	/* NO_INTERRUPT means nothing once event index is negotiated. */
	set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT);
	set_used_event(0);
	one_request();                                   /* used 0 -> 1 */
	cr_assert(virtq_should_notify(&D.vq), "the first interrupt is always sent");
	set_used_event(2);                               /* "tell me when entry 2 is used" */
	one_request();                                   /* entry 1 */
	cr_assert(!virtq_should_notify(&D.vq));
	one_request();                                   /* entry 2 */
	cr_assert(virtq_should_notify(&D.vq));
	one_request();                                   /* entry 3 */
	cr_assert(!virtq_should_notify(&D.vq));
	set_used_event(5);
	one_request();                                   /* entries 4, 5, 6 in one batch */
	one_request();
	one_request();
	cr_assert(virtq_should_notify(&D.vq));
	cr_assert(!virtq_should_notify(&D.vq), "nothing new was used");
	set_used_event(6);                               /* already passed */
	one_request();                                   /* entry 7 */
	cr_assert(!virtq_should_notify(&D.vq));
}

/* Reference for event index: an interrupt is due iff one of the used entries written since the
 * last interrupt, old .. now-1 (mod 2^16), is the one the driver named in used_event. */
static bool due(uint16_t old, uint16_t now, uint16_t event)
{
	for (uint16_t k = old; k != now; k++)
		if (k == event)
			return true;
	return false;
}

Test(virtq, used_event_across_index_wrap, .timeout = 60)
{
	queue_start(8, false, true);
	for (unsigned i = 0; i < 8; i++)
		set_desc(i, DATA_GPA, 1, W, 0);
	uint16_t last_signal = 0;
	bool first = true;
	unsigned interrupts = 0;
	uint32_t k = 0;
	/* Batches of 1..7 requests; used_event moves around, including across 65535 -> 0. */
	const uint16_t events[] = { 0xfffe, 0xffff, 0, 3, 0xfff0, 0x8000, 7 };
	for (unsigned round = 0; k < 140000; round++) {
		unsigned batch = 1 + round % 7;
		uint16_t event = (uint16_t)(k + (round % 5 == 0 ? 0xfff0 : round % 9));
		if (k > 65500 && k < 65600)
			event = events[round % 7];
		set_used_event(event);
		for (unsigned b = 0; b < batch; b++) {
			avail_add((uint16_t)(k % 8));
			one_request();
			k++;
		}
		uint16_t now = used_idx();
		bool want = first || due(last_signal, now, event);
		bool got = virtq_should_notify(&D.vq);
		cr_assert_eq(got, want, "k=%u old=%u now=%u event=%u: notify %d, want %d", k,
			     last_signal, now, event, got, want);
		last_signal = now;
		first = false;
		interrupts += got;
	}
	cr_assert_gt(interrupts, 1000);
	cr_assert_lt(interrupts, 20000);
}

Test(virtq, set_notification_without_event_idx_uses_the_used_flags)
{
	queue_start(8, false, false);
	set_desc(0, DATA_GPA, 1, W, 0);
	cr_assert_eq(used_flags(), 0, "kicks are wanted from the start");
	cr_assert(!virtq_set_notification(&D.vq, false));
	cr_assert_eq(used_flags(), VIRTQ_USED_F_NO_NOTIFY);
	cr_assert(virtq_set_notification(&D.vq, true), "ring is empty");
	cr_assert_eq(used_flags(), 0);
	/* A buffer added while kicks were off: enabling reports it so the device pops again. */
	cr_assert(!virtq_set_notification(&D.vq, false));
	avail_add(0);
	cr_assert(!virtq_set_notification(&D.vq, true), "a buffer is waiting");
	cr_assert_eq(used_flags(), 0);
	one_request();
	cr_assert(virtq_set_notification(&D.vq, true));
}

Test(virtq, avail_event_is_published_before_looking)
{
	queue_start(8, false, true);
	for (unsigned i = 0; i < 8; i++)
		set_desc(i, DATA_GPA, 1, W, 0);
	set_avail_event(0xbeef);
	cr_assert_eq(pop(), 0);
	cr_assert_eq(avail_event(), 0, "an empty pop asks for a kick at the next entry");
	avail_add(0);
	avail_add(1);
	avail_add(2);
	set_avail_event(0xbeef);
	one_request();
	/* Published before avail->idx was read, so it names the entry this pop then consumed. */
	cr_assert_eq(avail_event(), 0);
	one_request();
	cr_assert_eq(avail_event(), 1);
	one_request();
	cr_assert_eq(avail_event(), 2);
	cr_assert_eq(pop(), 0);
	cr_assert_eq(avail_event(), 3);
	cr_assert_eq(used_flags(), 0, "used flags are not used with event index");

	/* Kicks off: pops leave avail_event alone, so the driver stops kicking after it passes. */
	cr_assert(!virtq_set_notification(&D.vq, false));
	set_avail_event(0xbeef);
	avail_add(3);
	avail_add(4);
	one_request();
	one_request();
	cr_assert_eq(pop(), 0);
	cr_assert_eq(avail_event(), 0xbeef);
	/* Kicks on again: avail_event = next entry; true because nothing is waiting. */
	cr_assert(virtq_set_notification(&D.vq, true));
	cr_assert_eq(avail_event(), 5);
	cr_assert(!virtq_set_notification(&D.vq, false));
	avail_add(5);
	cr_assert(!virtq_set_notification(&D.vq, true), "a buffer is waiting");
	cr_assert_eq(avail_event(), 5);
	one_request();
	cr_assert_eq(avail_event(), 5);
	cr_assert_eq(pop(), 0);
	cr_assert_eq(avail_event(), 6);
}

/*
 * Ordering, deterministically: the avail ring's page is made inaccessible, so the core's first
 * look at avail->idx faults; the handler records what the used ring (avail_event, flags) said at
 * that instant, opens the page and lets the load run again. A kick request published after the
 * driver's index was read would let a buffer slip in unannounced (a lost wakeup).
 */
static struct {
	uint8_t *page;
	const uint8_t *watch;     /* avail_event or used->flags */
	unsigned faults;
	uint16_t seen;
} snap;

static void snap_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	uint8_t *a = si->si_addr;
	if (a < snap.page || a >= snap.page + PAGE)
		abort();          /* a genuine crash: do not mask it */
	snap.faults++;
	snap.seen = get_le16(snap.watch);
	mprotect(snap.page, PAGE, PROT_READ | PROT_WRITE);
}

static void snap_arm(const uint8_t *watch)
{
	snap.page = gptr(AVAIL_GPA, PAGE);
	snap.watch = watch;
	snap.faults = 0;
	snap.seen = 0xdead;
	struct sigaction sa = { .sa_sigaction = snap_handler, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGSEGV, &sa, NULL), 0);
	cr_assert_eq(mprotect(snap.page, PAGE, PROT_NONE), 0);
}

Test(virtq, kick_request_is_visible_before_avail_idx_is_read)
{
	queue_start(8, false, true);
	for (unsigned i = 0; i < 8; i++)
		set_desc(i, DATA_GPA, 1, W, 0);
	avail_add(0);
	avail_add(1);
	avail_add(2);
	one_request();
	uint8_t *ev = gptr(USED_GPA + 4 + 8 * 8, 2);

	/* pop, ring not empty: avail_event = 1 already visible when avail->idx is read. */
	set_avail_event(0xbeef);
	snap_arm(ev);
	one_request();
	cr_assert_geq(snap.faults, 1);
	cr_assert_eq(snap.seen, 1, "avail_event was %#x when avail->idx was read", snap.seen);
	/* pop, ring empty after the last entry. */
	one_request();
	set_avail_event(0xbeef);
	snap_arm(ev);
	cr_assert_eq(pop(), 0);
	cr_assert_eq(snap.seen, 3, "avail_event was %#x when avail->idx was read", snap.seen);
	/* Re-enabling kicks. */
	cr_assert(!virtq_set_notification(&D.vq, false));
	set_avail_event(0xbeef);
	snap_arm(ev);
	cr_assert(virtq_set_notification(&D.vq, true));
	cr_assert_eq(snap.faults, 1);
	cr_assert_eq(snap.seen, 3, "avail_event was %#x when avail->idx was read", snap.seen);
}

Test(virtq, kick_flag_is_cleared_before_avail_idx_is_read)
{
	queue_start(8, false, false);
	cr_assert(!virtq_set_notification(&D.vq, false));
	snap_arm(gptr(USED_GPA, 2));
	cr_assert(virtq_set_notification(&D.vq, true));
	cr_assert_eq(snap.faults, 1);
	cr_assert_eq(snap.seen, 0, "used->flags was %#x when avail->idx was read", snap.seen);
}

/*
 * Lost-wakeup stress: a driver thread adds buffers and kicks exactly when the protocol says so
 * (event index or used flags), the device sleeps on the kick whenever its ring looks empty. If
 * the core published its kick request after looking at avail->idx, or forgot to, the device
 * would sleep forever on a non-empty ring; the poll timeout turns that into a failure.
 */
struct race {
	uint32_t n;
	int kick_fd;
	bool event_idx;
	uint32_t kicks;
};

static void *race_driver(void *arg)
{
	struct race *r = arg;
	uint16_t size = D.vq.size;
	for (uint32_t k = 0; k < r->n; k++) {
		while ((uint16_t)(D.avail_idx - used_idx()) >= size)
			sched_yield();
		uint16_t old = D.avail_idx;
		avail_add((uint16_t)(old % size));
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		bool kick;
		if (r->event_idx) {
			uint16_t ev = avail_event();
			kick = (uint16_t)(D.avail_idx - ev - 1) < (uint16_t)(D.avail_idx - old);
		} else {
			kick = !(used_flags() & VIRTQ_USED_F_NO_NOTIFY);
		}
		if (kick) {
			/* No cr_assert here: Criterion asserts only work on the test's own thread. */
			uint64_t one = 1;
			if (write(r->kick_fd, &one, 8) != 8)
				abort();
			r->kicks++;
		}
	}
	return NULL;
}

static void race_run(bool event_idx, bool toggle_kicks)
{
	queue_start(16, false, event_idx);
	for (unsigned i = 0; i < 16; i++)
		set_desc(i, DATA_GPA + 8ULL * i, 8, W, 0);
	struct race r = { .n = 100000, .event_idx = event_idx };
	r.kick_fd = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(r.kick_fd, 0);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, race_driver, &r), 0);
	uint32_t done = 0, sleeps = 0;
	while (done < r.n) {
		if (toggle_kicks)
			virtq_set_notification(&D.vq, false);
		int got;
		while ((got = pop()) == 1) {
			cr_assert_eq(E.head, done % 16);
			virtq_push(&D.vq, &E, 8);
			done++;
		}
		cr_assert_eq(got, 0, "%s", D.vq.error);
		if (toggle_kicks && !virtq_set_notification(&D.vq, true))
			continue;       /* buffers arrived while kicks were off */
		if (done == r.n)
			break;
		struct pollfd p = { .fd = r.kick_fd, .events = POLLIN };
		int pr = poll(&p, 1, 10000);
		cr_assert_eq(pr, 1, "lost wakeup: device consumed %u of %u, ring %u ahead, no kick",
			     done, r.n, (uint16_t)(D.avail_idx - D.vq.last_avail));
		uint64_t v;
		cr_assert_eq(read(r.kick_fd, &v, 8), 8);
		sleeps++;
	}
	pthread_join(t, NULL);
	close(r.kick_fd);
	cr_assert_eq(used_idx(), (uint16_t)r.n);
	cr_log_info("event_idx=%d toggle=%d: %u requests, %u kicks, %u sleeps", event_idx,
		    toggle_kicks, r.n, r.kicks, sleeps);
}

Test(virtq, no_lost_wakeup_event_idx, .timeout = 120)
{
	race_run(true, false);
}

Test(virtq, no_lost_wakeup_event_idx_with_kicks_toggled, .timeout = 120)
{
	race_run(true, true);
}

Test(virtq, no_lost_wakeup_used_flags, .timeout = 120)
{
	race_run(false, true);
}

/* ------------------------------------ iov helpers ------------------------------------ */

Test(virtq, iov_copies_across_segment_boundaries)
{
	uint8_t a[3], b[5], c[7];
	struct iovec iov[4] = { { a, 3 }, { NULL, 0 }, { b, 5 }, { c, 7 } };
	uint8_t src[15], dst[20];
	for (unsigned i = 0; i < 15; i++)
		src[i] = (uint8_t)(0x10 + i);

	cr_assert_eq(iov_from_buf(iov, 4, 0, src, 15), 15);
	cr_assert_eq(memcmp(a, src, 3), 0);
	cr_assert_eq(memcmp(b, src + 3, 5), 0);
	cr_assert_eq(memcmp(c, src + 8, 7), 0);

	for (size_t off = 0; off <= 16; off++) {
		for (size_t len = 0; len <= 16; len++) {
			memset(dst, 0xee, sizeof(dst));
			size_t want = off >= 15 ? 0 : (len < 15 - off ? len : 15 - off);
			cr_assert_eq(iov_to_buf(iov, 4, off, dst, len), want, "off %zu len %zu", off,
				     len);
			cr_assert_eq(memcmp(dst, src + (off < 15 ? off : 0), want), 0);
			cr_assert_eq(dst[want], 0xee, "copied past the requested length");
		}
	}
	/* Writing at an offset that starts inside the second segment and ends in the third. */
	uint8_t patch[6] = { 1, 2, 3, 4, 5, 6 };
	cr_assert_eq(iov_from_buf(iov, 4, 5, patch, 6), 6);
	cr_assert_eq(memcmp(a, src, 3), 0);
	uint8_t want_b[5] = { src[3], src[4], 1, 2, 3 };
	uint8_t want_c[7] = { 4, 5, 6, src[11], src[12], src[13], src[14] };
	cr_assert_eq(memcmp(b, want_b, 5), 0);
	cr_assert_eq(memcmp(c, want_c, 7), 0);
	/* More than fits: stops at the end of the last segment. */
	uint8_t big[32] = { 0 };
	cr_assert_eq(iov_from_buf(iov, 4, 10, big, sizeof(big)), 5);
	cr_assert_eq(iov_from_buf(iov, 4, 15, big, sizeof(big)), 0);
	cr_assert_eq(iov_to_buf(iov, 0, 0, dst, 10), 0);
}

/* ================================== hostile rings ================================== */

Test(virtq_hostile, descriptor_self_loop)
{
	queue_start(8, false, false);
	set_desc(0, DATA_GPA, 1, R | N, 0);
	avail_add(0);
	expect_broken("loops");
}

Test(virtq_hostile, descriptor_cycle_after_a_prefix)
{
	queue_start(8, false, false);
	set_desc(0, DATA_GPA, 1, R | N, 1);
	set_desc(1, DATA_GPA, 1, R | N, 2);
	set_desc(2, DATA_GPA, 1, R | N, 3);
	set_desc(3, DATA_GPA, 1, R | N, 1);
	avail_add(0);
	expect_broken("loops");
}

Test(virtq_hostile, loop_of_empty_descriptors)
{
	/* Zero-length descriptors add no segment, so only the loop check can stop them. */
	queue_start(4, false, false);
	set_desc(0, 0, 0, R | N, 1);
	set_desc(1, 0, 0, W | N, 0);
	avail_add(0);
	expect_broken("loops");
}

Test(virtq_hostile, loop_through_every_descriptor_of_the_largest_queue, .timeout = 30)
{
	queue_start(VIRTQ_MAX_SIZE, false, false);
	for (unsigned i = 0; i < VIRTQ_MAX_SIZE; i++)
		set_desc(i, DATA_GPA, 0, R | N, (uint16_t)((i + 1) % VIRTQ_MAX_SIZE));
	avail_add(0);
	expect_broken("loops");
}

Test(virtq_hostile, loop_inside_an_indirect_table)
{
	queue_start(4, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA, 1, R | N, 1);
	put_desc(TABLE_GPA, 1, DATA_GPA, 1, R | N, 2);
	put_desc(TABLE_GPA, 2, DATA_GPA, 0, R | N, 3);
	put_desc(TABLE_GPA, 3, DATA_GPA, 1, R | N, 1);
	set_desc(0, TABLE_GPA, 64, I, 0);
	avail_add(0);
	expect_broken("loops");
}

Test(virtq_hostile, next_index_beyond_the_queue)
{
	queue_start(8, false, false);
	set_desc(0, DATA_GPA, 1, R | N, 8);
	avail_add(0);
	expect_broken("leaves its table");
}

Test(virtq_hostile, next_index_beyond_the_indirect_table)
{
	queue_start(8, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA, 1, R | N, 1);
	put_desc(TABLE_GPA, 1, DATA_GPA, 1, R | N, 2);   /* a 2-entry table has no entry 2 */
	put_desc(TABLE_GPA, 2, DATA_GPA, 1, R, 0);
	set_desc(0, TABLE_GPA, 32, I, 0);
	avail_add(0);
	expect_broken("leaves its table");
}

Test(virtq_hostile, head_beyond_the_queue)
{
	const uint16_t heads[] = { 8, 9, 0x8000, 0xffff };
	for (unsigned i = 0; i < 4; i++) {
		memset(gptr(AVAIL_GPA, 64), 0, 64);
		queue_start(8, false, false);
		avail_add(heads[i]);
		expect_broken("beyond the queue");
	}
}

Test(virtq_hostile, avail_index_more_than_a_queue_ahead)
{
	queue_start(8, false, false);
	for (unsigned i = 0; i < 8; i++)
		set_desc(i, DATA_GPA, 1, R, 0);
	avail_publish(3);
	for (unsigned i = 0; i < 3; i++)
		expect_pop(0, 1, 0);
	avail_publish(3 + 8);                 /* exactly a full ring: fine */
	expect_pop(0, 1, 0);
	virtq_unpop(&D.vq);
	avail_publish(3 + 9);                 /* one more than the ring holds */
	expect_broken("more than a queue ahead");
}

Test(virtq_hostile, avail_index_moved_backwards)
{
	queue_start(8, false, false);
	set_desc(0, DATA_GPA, 1, R, 0);
	avail_publish(2);
	expect_pop(0, 1, 0);
	expect_pop(0, 1, 0);
	avail_publish(1);                     /* driver "takes back" an entry: 65535 pending */
	expect_broken("more than a queue ahead");
}

Test(virtq_hostile, indirect_without_the_feature)
{
	queue_start(4, false, false);
	put_desc(TABLE_GPA, 0, DATA_GPA, 8, R, 0);
	set_desc(0, TABLE_GPA, 16, I, 0);
	avail_add(0);
	expect_broken("INDIRECT_DESC");
}

Test(virtq_hostile, indirect_inside_indirect)
{
	queue_start(4, true, false);
	put_desc(TABLE_GPA + 0x1000, 0, DATA_GPA, 8, R, 0);
	put_desc(TABLE_GPA, 0, DATA_GPA, 8, R | N, 1);
	put_desc(TABLE_GPA, 1, TABLE_GPA + 0x1000, 16, I, 0);
	set_desc(0, TABLE_GPA, 32, I, 0);
	avail_add(0);
	expect_broken("inside an indirect table");
}

Test(virtq_hostile, indirect_pointing_at_its_own_table)
{
	queue_start(4, true, false);
	put_desc(TABLE_GPA, 0, TABLE_GPA, 16, I, 0);
	set_desc(0, TABLE_GPA, 16, I, 0);
	avail_add(0);
	expect_broken("inside an indirect table");
}

Test(virtq_hostile, indirect_with_next)
{
	queue_start(4, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA, 8, R, 0);
	set_desc(0, TABLE_GPA, 16, I | N, 1);
	set_desc(1, DATA_GPA, 8, W, 0);
	avail_add(0);
	expect_broken("with NEXT");
}

Test(virtq_hostile, indirect_table_lengths)
{
	const uint32_t bad[] = { 0, 8, 24, 17, 16 * VIRTQ_MAX_SEGS + 16, 0xfffffff0u, 0xffffffffu };
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(gptr(AVAIL_GPA, 64), 0, 64);
		queue_start(4, true, false);
		set_desc(0, TABLE_GPA, bad[i], I, 0);
		avail_add(0);
		expect_broken("indirect table length");
	}
}

Test(virtq_hostile, indirect_table_outside_ram)
{
	const uint64_t addr[] = { MEM_SIZE, MEM_SIZE - 16, 0xfffffffffffffff0ULL, LAYOUT_4GIB };
	for (unsigned i = 0; i < 4; i++) {
		memset(gptr(AVAIL_GPA, 64), 0, 64);
		queue_start(4, true, false);
		set_desc(0, addr[i], 32, I, 0);
		avail_add(0);
		expect_broken("indirect table outside guest RAM");
	}
}

Test(virtq_hostile, readable_after_writable)
{
	queue_start(4, false, false);
	set_desc(0, DATA_GPA, 8, R | N, 1);
	set_desc(1, DATA_GPA + 8, 8, W | N, 2);
	set_desc(2, DATA_GPA + 16, 8, R, 0);
	avail_add(0);
	expect_broken("after a writable");
}

Test(virtq_hostile, readable_after_writable_inside_indirect)
{
	queue_start(4, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA, 8, W | N, 1);
	put_desc(TABLE_GPA, 1, DATA_GPA + 8, 8, R, 0);
	set_desc(0, TABLE_GPA, 32, I, 0);
	avail_add(0);
	expect_broken("after a writable");
}

Test(virtq_hostile, readable_in_indirect_after_writable_direct)
{
	queue_start(4, true, false);
	put_desc(TABLE_GPA, 0, DATA_GPA + 8, 8, R, 0);
	set_desc(0, DATA_GPA, 8, W | N, 1);
	set_desc(1, TABLE_GPA, 16, I, 0);
	avail_add(0);
	expect_broken("after a writable");
}

Test(virtq_hostile, too_many_segments_in_a_direct_chain)
{
	queue_start(2048, false, false);
	for (unsigned i = 0; i <= VIRTQ_MAX_SEGS; i++)
		set_desc(i, DATA_GPA + i, 1, R | (i < VIRTQ_MAX_SEGS ? N : 0), (uint16_t)(i + 1));
	avail_add(0);
	expect_broken("too many segments");
}

Test(virtq_hostile, exactly_max_segments_plus_empty_ones_is_fine)
{
	queue_start(2048, false, false);
	for (unsigned i = 0; i < 1200; i++)
		set_desc(i, DATA_GPA + i, i % 13 == 5 ? 0 : 1, R | N, (uint16_t)(i + 1));
	unsigned segs = 0, last = 0;
	for (unsigned i = 0; i < 1200 && segs < VIRTQ_MAX_SEGS; i++)
		if (i % 13 != 5) {
			segs++;
			last = i;
		}
	cr_assert_eq(segs, VIRTQ_MAX_SEGS, "test bug: chain too short");
	set_desc(last, DATA_GPA + last, 1, R, 0);
	avail_add(0);
	expect_pop(0, VIRTQ_MAX_SEGS, 0);
}

Test(virtq_hostile, too_many_segments_direct_plus_indirect)
{
	queue_start(4, true, false);
	for (unsigned i = 0; i < VIRTQ_MAX_SEGS; i++)
		put_desc(TABLE_GPA, i, DATA_GPA + i, 1, W | (i + 1 < VIRTQ_MAX_SEGS ? N : 0),
			 (uint16_t)(i + 1));
	set_desc(0, DATA_GPA, 16, R | N, 1);
	set_desc(1, TABLE_GPA, 16 * VIRTQ_MAX_SEGS, I, 0);
	avail_add(0);
	expect_broken("too many segments");
}

Test(virtq_hostile, buffers_outside_ram)
{
	struct { uint64_t addr; uint32_t len; } bad[] = {
		{ MEM_SIZE, 1 },                       /* just past the end */
		{ MEM_SIZE - 8, 16 },                  /* straddling the end */
		{ MEM_SIZE - 1, 2 },
		{ 0, 0xffffffffu },                    /* longer than RAM */
		{ 0xfffffffffffffff0ULL, 0x20 },       /* addr + len wraps to a small number */
		{ 0xffffffffffffffffULL, 1 },
		{ LAYOUT_4GIB, 16 },                   /* no RAM above 4 GiB in this guest */
		{ LAYOUT_MMIO_HOLE - 8, 16 },
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int writable = 0; writable < 2; writable++) {
			memset(gptr(AVAIL_GPA, 64), 0, 64);
			queue_start(4, false, false);
			set_desc(0, DATA_GPA, 8, R | N, 1);
			set_desc(1, bad[i].addr, bad[i].len, writable ? W : R, 0);
			avail_add(0);
			expect_broken("buffer outside guest RAM");
		}
	}
	/* Control: the last byte of RAM is fine. */
	memset(gptr(AVAIL_GPA, 64), 0, 64);
	queue_start(4, false, false);
	set_desc(0, MEM_SIZE - 1, 1, W, 0);
	avail_add(0);
	expect_pop(0, 0, 1);
	uint8_t v = 0x77;
	cr_assert_eq(iov_from_buf(E.iov, 1, 0, &v, 1), 1);
	cr_assert_eq(*gptr(MEM_SIZE - 1, 1), 0x77);
}

Test(virtq_hostile, misaligned_rings_are_refused)
{
	const uint64_t d[] = { DESC_GPA + 8, DESC_GPA + 1, DESC_GPA + 4 };
	for (unsigned i = 0; i < 3; i++) {
		queue_config(8, false, false, d[i], AVAIL_GPA, USED_GPA);
		expect_start_fails("misaligned");
	}
	queue_config(8, false, false, DESC_GPA, AVAIL_GPA + 1, USED_GPA);
	expect_start_fails("misaligned");
	queue_config(8, false, false, DESC_GPA, AVAIL_GPA, USED_GPA + 2);
	expect_start_fails("misaligned");
	queue_config(8, false, false, DESC_GPA, AVAIL_GPA, USED_GPA + 1);
	expect_start_fails("misaligned");
}

Test(virtq_hostile, rings_outside_ram_are_refused)
{
	const uint16_t n = 64;
	const uint64_t far = 0xfffffffffffffff0ULL;
	/* Each ring just past the end, straddling the end by its last byte(s), and wrapping. */
	const uint64_t desc_bad[] = { MEM_SIZE, MEM_SIZE - 16ULL * n + 16, far };
	const uint64_t avail_bad[] = { MEM_SIZE, MEM_SIZE - (4 + 2ULL * n + 2) + 2, far };
	const uint64_t used_bad[] = { MEM_SIZE, MEM_SIZE - (4 + 8ULL * n + 2) + 2, far };
	for (unsigned i = 0; i < 3; i++) {
		queue_config(n, false, false, desc_bad[i], AVAIL_GPA, USED_GPA);
		expect_start_fails("outside guest RAM");
		queue_config(n, false, false, DESC_GPA, avail_bad[i], USED_GPA);
		expect_start_fails("outside guest RAM");
		queue_config(n, false, false, DESC_GPA, AVAIL_GPA, used_bad[i]);
		expect_start_fails("outside guest RAM");
	}
	/* The event fields count: a used ring whose avail_event would be past RAM is refused even
	 * without VIRTIO_RING_F_EVENT_IDX (it cannot be negotiated later without a restart). */
	queue_config(n, false, false, DESC_GPA, AVAIL_GPA, (MEM_SIZE - (4 + 8ULL * n)) & ~3ULL);
	expect_start_fails("outside guest RAM");
}

/* ================================ the 3-4 GiB hole ================================ */

Test(virtq_hole, buffers_up_to_the_hole_and_from_4gib_are_ram)
{
	queue_start(4, false, false);
	set_desc(0, LAYOUT_MMIO_HOLE - 16, 16, R | N, 1);
	set_desc(1, LAYOUT_4GIB, 16, W | N, 2);
	set_desc(2, BIG_MEM_SIZE - LAYOUT_MMIO_HOLE + LAYOUT_4GIB - 8, 8, W, 0);
	avail_add(0);
	expect_pop(0, 1, 2);
	cr_assert_eq(E.iov[0].iov_base, D.mem.host + LAYOUT_MMIO_HOLE - 16);
	cr_assert_eq(E.iov[1].iov_base, D.mem.host + LAYOUT_MMIO_HOLE);
	cr_assert_eq(E.iov[2].iov_base, D.mem.host + D.mem.size - 8);
	static const uint8_t fill[24] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
					  17, 18, 19, 20, 21, 22, 23, 24 };
	cr_assert_eq(iov_from_buf(E.iov + 1, 2, 0, fill, 24), 24);
	cr_assert_eq(memcmp(gptr(LAYOUT_4GIB, 16), fill, 16), 0);
	cr_assert_eq(memcmp(D.mem.host + D.mem.size - 8, fill + 16, 8), 0);
}

Test(virtq_hole, buffers_touching_the_hole_are_refused)
{
	struct { uint64_t addr; uint32_t len; } bad[] = {
		{ LAYOUT_MMIO_HOLE - 8, 16 },                  /* straddles 3 GiB */
		{ LAYOUT_MMIO_HOLE, 1 },                       /* inside the hole */
		{ 0xd0000000ULL, 0x1000 },
		{ LAYOUT_4GIB - 1, 2 },                        /* straddles 4 GiB from below */
		{ LAYOUT_MMIO_HOLE - 0x1000, 0x40001000u },    /* spans the whole hole */
		{ LAYOUT_4GIB + (BIG_MEM_SIZE - LAYOUT_MMIO_HOLE) - 8, 16 },   /* past the top */
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(gptr(AVAIL_GPA, 64), 0, 64);
		queue_start(4, true, false);
		set_desc(0, bad[i].addr, bad[i].len, W, 0);
		avail_add(0);
		expect_broken("buffer outside guest RAM");
		/* The same range as an indirect table (lengths rounded to whole descriptors). */
		memset(gptr(AVAIL_GPA, 64), 0, 64);
		queue_start(4, true, false);
		uint32_t tl = (bad[i].len + 15) & ~15u;
		if (tl / 16 > VIRTQ_MAX_SEGS)
			continue;
		set_desc(0, bad[i].addr, tl, I, 0);
		avail_add(0);
		expect_broken("indirect table outside guest RAM");
	}
}

Test(virtq_hole, rings_in_or_across_the_hole_are_refused)
{
	queue_config(64, false, false, LAYOUT_MMIO_HOLE - 512, AVAIL_GPA, USED_GPA);
	expect_start_fails("outside guest RAM");
	queue_config(64, false, false, DESC_GPA, LAYOUT_MMIO_HOLE + 0x1000, USED_GPA);
	expect_start_fails("outside guest RAM");
	queue_config(64, false, false, DESC_GPA, AVAIL_GPA, LAYOUT_4GIB - 256);
	expect_start_fails("outside guest RAM");
	/* Rings in high RAM work. */
	queue_config(64, false, false, LAYOUT_4GIB, LAYOUT_4GIB + 0x1000, LAYOUT_4GIB + 0x2000);
	cr_assert_eq(virtq_start(&D.vq, &D.mem), 0, "%s", D.vq.error);
	set_desc(63, LAYOUT_4GIB + 0x10000, 4, W, 0);
	avail_add(63);
	expect_pop(63, 0, 1);
	virtq_push(&D.vq, &E, 4);
	expect_used(0, 63, 4);
}
