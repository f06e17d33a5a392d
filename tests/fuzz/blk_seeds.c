/*
 * Writes the seed corpus of the virtio-blk fuzz target (blk_input.h): what a Linux driver sends
 * (reads, writes, flush, GET_ID, discard and write-zeroes lists), the same requests at the end of
 * the disk and on the read-only disk, headers and status bytes split oddly over segments, a
 * request just above the announced maximum size, batches large enough to run out of io_uring
 * room, and a reset with I/O in flight. The fuzzer derives the hostile variants from these.
 * Usage: fuzz-blk-seeds DIR
 */
#include "blk_input.h"
#include "seed_writer.h"
#include "virtio/blk.h"

#define ALL_FEATURES 0xffffffffu

static void preamble(struct seed *s, uint8_t flags, uint32_t features)
{
	seed_reset(s);
	seed_u8(s, flags);
	seed_u32(s, features);
}

static void rw(struct seed *s, unsigned kind, uint64_t sector, uint16_t count, uint8_t rflags)
{
	seed_u8(s, BLKF_OP_RW);
	seed_u8(s, (uint8_t)kind);
	seed_u64(s, sector);
	seed_u16(s, count);
	if (kind == BLKF_KIND_DISCARD || kind == BLKF_KIND_WRITE_ZEROES)
		seed_u8(s, rflags);
}

/* Length code for an explicit 32-bit length. */
static void len32(struct seed *s, uint32_t len)
{
	seed_u8(s, 0xc0);
	seed_u32(s, len);
}

/* A BLKF_OP_REQ with explicit segment lengths and ranges. */
static void req(struct seed *s, uint32_t type, uint64_t sector, unsigned n_out, unsigned n_in,
		const uint32_t *lens, unsigned n_ranges, const uint64_t *rsec, const uint32_t *rcnt,
		uint32_t rflags, uint8_t flags)
{
	seed_u8(s, BLKF_OP_REQ);
	seed_u8(s, (uint8_t)n_out);
	seed_u8(s, (uint8_t)n_in);
	seed_u8(s, flags);
	seed_u32(s, type);
	seed_u32(s, 0);
	seed_u64(s, sector);
	seed_u8(s, (uint8_t)n_ranges);
	for (unsigned i = 0; i < n_ranges; i++) {
		seed_u64(s, rsec[i]);
		seed_u32(s, rcnt[i]);
		seed_u32(s, rflags);
	}
	for (unsigned i = 0; i < n_out + n_in; i++)
		len32(s, lens[i]);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	struct seed s = { 0 };
	int rc = 0;

	/* Write, read back, flush, GET_ID: the everyday path. */
	preamble(&s, 0, ALL_FEATURES);
	rw(&s, BLKF_KIND_OUT, 0, 8, 0);
	rw(&s, BLKF_KIND_OUT, 100, 2, 0);
	seed_u8(&s, BLKF_OP_KICK);
	rw(&s, BLKF_KIND_IN, 0, 8, 0);
	rw(&s, BLKF_KIND_FLUSH, 0, 0, 0);
	rw(&s, BLKF_KIND_GET_ID, 0, 0, 0);
	rc |= seed_save(dir, "linux-rw", &s);

	/* The last sector, one past it, a count that overflows the capacity. */
	preamble(&s, 0, ALL_FEATURES);
	rw(&s, BLKF_KIND_OUT, BLKF_SECTORS - 1, 1, 0);
	rw(&s, BLKF_KIND_IN, BLKF_SECTORS - 1, 2, 0);
	rw(&s, BLKF_KIND_IN, BLKF_SECTORS, 0, 0);
	rw(&s, BLKF_KIND_OUT, UINT64_MAX, 1, 0);
	rc |= seed_save(dir, "edges", &s);

	/* Discard and write-zeroes, with and without the unmap flag, on each host fallback. */
	for (unsigned f = 0; f < 4; f++) {
		preamble(&s, (uint8_t)(f << 1), ALL_FEATURES);
		rw(&s, BLKF_KIND_DISCARD, 8, 16, 0);
		rw(&s, BLKF_KIND_WRITE_ZEROES, 40, 9, 0);
		rw(&s, BLKF_KIND_WRITE_ZEROES, 60, 8, VIRTIO_BLK_WZ_UNMAP);
		seed_u8(&s, BLKF_OP_KICK);
		uint64_t sec[3] = { 0, 64, BLKF_SECTORS - 1 };
		uint32_t cnt[3] = { 1, 0, 1 };
		uint32_t lens[3] = { 16 + 3 * 16, 0, 1 };
		req(&s, VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 2, lens, 3, sec, cnt, 0, 0);
		char name[32];
		snprintf(name, sizeof(name), "ranges-%u", f);
		rc |= seed_save(dir, name, &s);
	}

	/* Header over three segments, data and status sharing the last one. */
	preamble(&s, 0, ALL_FEATURES);
	{
		uint32_t lens[4] = { 5, 11, 512, 1 };
		req(&s, VIRTIO_BLK_T_OUT, 3, 3, 1, lens, 0, NULL, NULL, 0, 0);
		req(&s, VIRTIO_BLK_T_IN, 3, 2, 2, (uint32_t[]){ 7, 9, 1000, 25 }, 0, NULL, NULL, 0,
		    BLKF_REQ_INDIRECT);
		req(&s, VIRTIO_BLK_T_GET_ID, 0, 1, 1, (uint32_t[]){ 16, 21 }, 0, NULL, NULL, 0, 0);
		req(&s, VIRTIO_BLK_T_FLUSH, 0, 1, 0, (uint32_t[]){ 16 }, 0, NULL, NULL, 0, 0);
	}
	rc |= seed_save(dir, "split", &s);

	/* The read-only disk refuses writes and zeroing, serves reads. */
	preamble(&s, BLKF_READ_ONLY, ALL_FEATURES);
	rw(&s, BLKF_KIND_OUT, 0, 1, 0);
	rw(&s, BLKF_KIND_DISCARD, 0, 1, 0);
	rw(&s, BLKF_KIND_IN, 0, 4, 0);
	rw(&s, BLKF_KIND_FLUSH, 0, 0, 0);
	rw(&s, BLKF_KIND_GET_ID, 0, 0, 0);
	rc |= seed_save(dir, "read-only", &s);

	/* 17 aliased 16 MiB segments: just above the 254 MiB a request may carry. */
	preamble(&s, 0, ALL_FEATURES);
	{
		uint32_t lens[19];
		lens[0] = 16;
		for (unsigned i = 1; i < 18; i++)
			lens[i] = BLKF_SEG_CAP;
		lens[18] = 1;
		req(&s, VIRTIO_BLK_T_OUT, 0, 18, 1, lens, 0, NULL, NULL, 0, BLKF_REQ_INDIRECT);
	}
	rc |= seed_save(dir, "oversize", &s);

	/* Ten requests of 32 ranges each: more operations than the io_uring takes at once. */
	preamble(&s, 0, ALL_FEATURES);
	{
		uint64_t sec[32];
		uint32_t cnt[32];
		for (unsigned i = 0; i < 32; i++) {
			sec[i] = 4 * i;
			cnt[i] = 1;
		}
		uint32_t lens[2] = { 16 + 32 * 16, 1 };
		for (unsigned r = 0; r < 10; r++)
			req(&s, VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 1, lens, 32, sec, cnt, 0, 0);
	}
	rc |= seed_save(dir, "no-room", &s);

	/* 256 operations in flight, then a write and a flush: both must wait for room. */
	preamble(&s, BLKF_NO_ZERO, ALL_FEATURES);
	{
		uint64_t sec[32];
		uint32_t cnt[32];
		for (unsigned i = 0; i < 32; i++) {
			sec[i] = 4 * i;
			cnt[i] = 1;
		}
		uint32_t lens[2] = { 16 + 32 * 16, 1 };
		for (unsigned r = 0; r < 8; r++)
			req(&s, VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 1, lens, 32, sec, cnt, 0, 0);
		rw(&s, BLKF_KIND_OUT, 1, 1, 0);
		rw(&s, BLKF_KIND_FLUSH, 0, 0, 0);
		rw(&s, BLKF_KIND_IN, 2, 1, 0);
	}
	rc |= seed_save(dir, "no-room-rw", &s);

	/* The image truncated under the device: reads past the end fail, short ones continue. */
	preamble(&s, 0, ALL_FEATURES);
	seed_u8(&s, BLKF_OP_TRUNCATE);
	seed_u16(&s, 40 * 512 + 100);
	rw(&s, BLKF_KIND_IN, 36, 8, 0);
	rw(&s, BLKF_KIND_IN, 60, 2, 0);
	rw(&s, BLKF_KIND_OUT, 50, 2, 0);
	seed_u8(&s, BLKF_OP_KICK);
	rw(&s, BLKF_KIND_IN, 36, 8, 0);
	rc |= seed_save(dir, "truncated", &s);

	/* The configuration space, in pieces and past its end. */
	preamble(&s, 0, ALL_FEATURES);
	for (unsigned off = 0; off < 64; off += 4) {
		seed_u8(&s, BLKF_OP_CONFIG);
		seed_u16(&s, (uint16_t)off);
		seed_u8(&s, 3);
	}
	rc |= seed_save(dir, "config", &s);

	/* Writes in flight when the driver resets. */
	preamble(&s, 0, ALL_FEATURES);
	for (unsigned i = 0; i < 16; i++)
		rw(&s, BLKF_KIND_OUT, 8ULL * i, 8, 0);
	seed_u8(&s, BLKF_OP_RESET);
	rw(&s, BLKF_KIND_IN, 0, 16, 0);
	rc |= seed_save(dir, "reset-inflight", &s);

	/* Without FLUSH (write-through), DISCARD or WRITE_ZEROES negotiated. */
	preamble(&s, 0, ALL_FEATURES & ~((1u << VIRTIO_BLK_F_FLUSH) | (1u << VIRTIO_BLK_F_DISCARD) |
					 (1u << VIRTIO_BLK_F_WRITE_ZEROES)));
	rw(&s, BLKF_KIND_OUT, 1, 1, 0);
	rw(&s, BLKF_KIND_DISCARD, 0, 1, 0);
	rw(&s, BLKF_KIND_WRITE_ZEROES, 0, 1, 0);
	rc |= seed_save(dir, "no-features", &s);

	free(s.b);
	return rc ? 1 : 0;
}
