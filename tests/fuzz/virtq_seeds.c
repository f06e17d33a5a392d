/*
 * Writes the seed corpus of the virtqueue fuzz target: a few valid rings laid out as a driver
 * would (virtio-blk-like chains, indirect tables, a chain wrapping the table end, a full ring,
 * rings below the 3-4 GiB hole with buffers above it, a queue-long chain, index wrap by repeated
 * avail->idx moves, a maximal indirect table, a chain at the segment limit). Valid inputs give
 * the fuzzer the deep paths; its mutations then produce the hostile variants.
 * Usage: fuzz-virtq-seeds DIR
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "virtio/virtq.h"
#include "virtq_input.h"

#define R 0
#define W VIRTQ_DESC_F_WRITE
#define N VIRTQ_DESC_F_NEXT
#define I VIRTQ_DESC_F_INDIRECT

struct seed {
	uint8_t b[0x6000];
	size_t len;      /* bytes used so far */
	uint16_t qsize;
};

static void grow(struct seed *s, size_t end)
{
	if (end > sizeof(s->b)) {
		fprintf(stderr, "seed too large\n");
		exit(1);
	}
	if (end > s->len)
		s->len = end;
}

static void header(struct seed *s, unsigned size_log, uint8_t flags0, uint8_t flags1,
		   uint16_t desc, uint16_t avail, uint16_t used, uint16_t wmul)
{
	memset(s, 0, sizeof(*s));
	s->qsize = (uint16_t)(1u << size_log);
	s->b[0] = (uint8_t)(size_log | flags0);
	s->b[1] = flags1;
	put_le16(s->b + VQF_OFF_DESC, desc);
	put_le16(s->b + VQF_OFF_AVAIL, avail);
	put_le16(s->b + VQF_OFF_USED, used);
	put_le16(s->b + VQF_OFF_WRITTEN, wmul);
	grow(s, VQF_HEADER);
	/* Bytes past the input are zero in the image: the used ring needs no room here. */
	grow(s, (size_t)avail + 6 + 2ULL * s->qsize);
}

static void desc_at(struct seed *s, uint16_t table, unsigned i, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next)
{
	size_t o = table + 16ULL * i;
	grow(s, o + 16);
	put_le64(s->b + o, addr);
	put_le32(s->b + o + 8, len);
	put_le16(s->b + o + 12, flags);
	put_le16(s->b + o + 14, next);
}

static void fill(struct seed *s, uint16_t at, uint16_t count, uint64_t addr, uint32_t len,
		 uint16_t flags, uint16_t next)
{
	s->b[VQF_OFF_FILL] = VQF_FILL_ON | VQF_FILL_LAST_ENDS;
	put_le16(s->b + VQF_OFF_FILL_AT, at);
	put_le16(s->b + VQF_OFF_FILL_COUNT, count);
	put_le64(s->b + VQF_OFF_FILL_DESC, addr);
	put_le32(s->b + VQF_OFF_FILL_DESC + 8, len);
	put_le16(s->b + VQF_OFF_FILL_DESC + 12, flags);
	put_le16(s->b + VQF_OFF_FILL_DESC + 14, next);
}

static void avail(struct seed *s, const uint16_t *heads, unsigned n)
{
	uint16_t a = get_le16(s->b + VQF_OFF_AVAIL);
	for (unsigned i = 0; i < n; i++)
		put_le16(s->b + a + 4 + 2 * (i % s->qsize), heads[i]);
	put_le16(s->b + a + 2, (uint16_t)n);
}

static void used_event(struct seed *s, uint16_t v)
{
	uint16_t a = get_le16(s->b + VQF_OFF_AVAIL);
	put_le16(s->b + a + 4 + 2 * s->qsize, v);
}

static void bumps(struct seed *s, unsigned rounds_after, uint8_t by)
{
	s->b[1] = (uint8_t)(s->b[1] | (rounds_after << VQF_BUMPS_SHIFT));
	for (unsigned i = 0; i < rounds_after; i++)
		s->b[VQF_OFF_BUMPS + i] = by;
}

static int save(const char *dir, const char *name, const struct seed *s)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/seed-%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(s->b, 1, s->len, f) != s->len || fclose(f) != 0) {
		fprintf(stderr, "fuzz-virtq-seeds: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	static struct seed s;
	int rc = 0;

	/* virtio-blk read: header, data, status. */
	header(&s, 3, 0, 0, 0x100, 0x200, 0x300, 513);
	desc_at(&s, 0x100, 0, 0x1000, 16, R | N, 1);
	desc_at(&s, 0x100, 1, 0x2000, 512, W | N, 2);
	desc_at(&s, 0x100, 2, 0x3000, 1, W, 0);
	avail(&s, (uint16_t[]){ 0 }, 1);
	rc |= save(dir, "blk", &s);

	/* Indirect table plus a direct chain, event index, one later round. */
	header(&s, 2, VQF_INDIRECT | VQF_EVENT_IDX, 0, 0x100, 0x200, 0x300, 7);
	desc_at(&s, 0x100, 0, 0x800, 48, I, 0);
	desc_at(&s, 0x800, 0, 0x1000, 16, R | N, 1);
	desc_at(&s, 0x800, 1, 0x1100, 100, W | N, 2);
	desc_at(&s, 0x800, 2, 0x1200, 1, W, 0);
	desc_at(&s, 0x100, 1, 0x1300, 64, R | N, 2);
	desc_at(&s, 0x100, 2, 0x1400, 64, W, 0);
	avail(&s, (uint16_t[]){ 0, 1 }, 2);
	used_event(&s, 1);
	bumps(&s, 1, 1);
	rc |= save(dir, "indirect-event", &s);

	/* A chain that runs past the end of the descriptor table back to entry 0. */
	header(&s, 2, 0, VQF_UNPOP, 0x100, 0x200, 0x300, 3);
	desc_at(&s, 0x100, 3, 0x1000, 8, R | N, 0);
	desc_at(&s, 0x100, 0, 0x1008, 8, W, 0);
	avail(&s, (uint16_t[]){ 3 }, 1);
	rc |= save(dir, "wrap-table", &s);

	/* A full 16-entry ring, kicks toggled, unpop, notifications after each push. */
	header(&s, 4, VQF_TOGGLE, VQF_UNPOP | VQF_NOTIFY_EACH, 0x100, 0x400, 0x500, 1);
	uint16_t heads[16];
	for (unsigned i = 0; i < 16; i++) {
		desc_at(&s, 0x100, i, 0x1000 + 0x40ULL * i, 0x40, i & 1 ? W : R, 0);
		heads[i] = (uint16_t)(15 - i);
	}
	avail(&s, heads, 16);
	rc |= save(dir, "full-ring", &s);

	/* Rings right below the hole, buffers at both edges of it. */
	header(&s, 3, VQF_FAR | VQF_EVENT_IDX, 0, 0x100, 0x200, 0x300, 4096);
	desc_at(&s, 0x100, 0, LAYOUT_MMIO_HOLE - 0x100, 0x100, R | N, 1);
	desc_at(&s, 0x100, 1, LAYOUT_4GIB, 0x1000, W | N, 2);
	desc_at(&s, 0x100, 2, LAYOUT_4GIB + 0x10000 - 1, 1, W, 0);
	avail(&s, (uint16_t[]){ 0 }, 1);
	rc |= save(dir, "hole-edges", &s);

	/* One chain through all 256 descriptors of the queue. */
	header(&s, 8, 0, 0, 0x1000, 0x2000, 0x2400, 100);
	for (unsigned i = 0; i < 256; i++)
		desc_at(&s, 0x1000, i, 0x10000 + 16ULL * i, 16, (i < 128 ? R : W) | (i < 255 ? N : 0),
			(uint16_t)(i + 1));
	avail(&s, (uint16_t[]){ 0 }, 1);
	rc |= save(dir, "queue-long-chain", &s);

	/* Event index over many rounds, each adding one entry. */
	header(&s, 1, VQF_EVENT_IDX | VQF_TOGGLE, VQF_NOTIFY_EACH, 0x100, 0x200, 0x300, 2);
	desc_at(&s, 0x100, 0, 0x1000, 4, W, 0);
	desc_at(&s, 0x100, 1, 0x1004, 4, R, 0);
	avail(&s, (uint16_t[]){ 1, 0 }, 2);
	used_event(&s, 3);
	bumps(&s, 7, 1);
	rc |= save(dir, "event-rounds", &s);

	/* The largest indirect table, with one readable segment and the rest writable. */
	header(&s, 0, VQF_INDIRECT, 0, 0x100, 0x200, 0x300, 0xffff);
	desc_at(&s, 0x100, 0, 0x1000, 16 * VIRTQ_MAX_SEGS, I, 0);
	for (unsigned i = 0; i < VIRTQ_MAX_SEGS; i++)
		desc_at(&s, 0x1000, i, 0x100000 + 8ULL * i, 8,
			(i ? W : R) | (i + 1 < VIRTQ_MAX_SEGS ? N : 0), (uint16_t)(i + 1));
	avail(&s, (uint16_t[]){ 0 }, 1);
	rc |= save(dir, "max-indirect", &s);

	/*
	 * Exactly VIRTQ_MAX_SEGS segments, written by the header's fill, behind an empty head
	 * descriptor: any non-zero length there makes one segment too many, a mutation of one of
	 * four bytes. Once through an indirect table, once as a direct chain in a 2048-entry queue.
	 */
	header(&s, 1, VQF_INDIRECT, 0, 0x100, 0x200, 0x300, 5);
	desc_at(&s, 0x100, 0, 0x800, 0, R | N, 1);
	desc_at(&s, 0x100, 1, 0x1000, 16 * VIRTQ_MAX_SEGS, I, 0);
	fill(&s, 0x1000, VIRTQ_MAX_SEGS, 0x200000, 4, W | N, 1);
	avail(&s, (uint16_t[]){ 0 }, 1);
	rc |= save(dir, "segment-limit", &s);

	header(&s, 11, 0, 0, 0x2000, 0x100, 0xa000, 5);
	desc_at(&s, 0x2000, 0, 0x100000, 0, R | N, 1);
	fill(&s, 0x2010, VIRTQ_MAX_SEGS, 0x200000, 8, R | N, 2);
	avail(&s, (uint16_t[]){ 0 }, 1);
	rc |= save(dir, "direct-limit", &s);

	return rc ? 1 : 0;
}
