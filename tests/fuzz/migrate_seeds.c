/*
 * Writes the seed corpus of the migration stream fuzz target (fuzz_migrate.c): a complete
 * destination-side stream shaped like what cvisor-vmm sends (preamble, HELLO with a machine
 * shape, two memory rounds with PAGES and ZERO frames, a small snapshot state file, GO), the
 * same with checksums left to the harness, damaged variants (truncated, out-of-range offset,
 * miscounted round, wrong version, an ERROR frame), and a source-side exchange.
 * Usage: fuzz-migrate-seeds DIR
 */
#include <stdbool.h>

#include "seed_writer.h"

#define FIX_CRC 0x01
#define SOURCE_SIDE 0x02

static void preamble(struct seed *s, uint32_t version)
{
	seed_str(s, "CVISORMG");
	seed_u32(s, version);
	seed_u32(s, 0);
}

static void shape(struct seed *p)
{
	seed_lstr(p, "0.1.0");
	seed_u32(p, 1);
	seed_u64(p, 1u << 20);
	seed_u64(p, 1u << 20);
	seed_u32(p, 0);
	seed_u32(p, 1);
	seed_u32(p, 1);
	seed_u32(p, 4);
	seed_u32(p, 1);
	seed_lstr(p, "virtio-rng");
}

enum variant { GOOD, BAD_OFFSET, BAD_ROUND, PEER_ERROR };

static void stream(struct seed *s, uint32_t version, enum variant v)
{
	preamble(s, version);
	struct seed p = { 0 }, sh = { 0 };
	shape(&sh);
	seed_u32(&p, 4096);
	seed_u32(&p, (uint32_t)sh.len);
	seed_bytes(&p, sh.b, sh.len);
	seed_frame(s, 1, 0, &p);
	/* round 1: two data pages at 0x1000 */
	seed_reset(&p);
	seed_u64(&p, v == BAD_OFFSET ? (1u << 20) - 4096 : 0x1000);
	seed_u32(&p, 2);
	uint8_t page[4096];
	for (int i = 0; i < 2; i++) {
		memset(page, 0x41 + i, sizeof(page));
		seed_bytes(&p, page, sizeof(page));
	}
	seed_frame(s, 2, 0, &p);
	seed_reset(&p);
	seed_u32(&p, 1);
	seed_u64(&p, v == BAD_ROUND ? 3 : 2);
	seed_frame(s, 4, 0, &p);
	if (v == PEER_ERROR) {
		seed_reset(&p);
		seed_lstr(&p, "cancelled");
		seed_frame(s, 10, 0, &p);
	}
	/* round 2: a zero range and one page */
	seed_reset(&p);
	seed_u64(&p, 0x1000);
	seed_u64(&p, 1);
	seed_frame(s, 3, 0, &p);
	seed_reset(&p);
	seed_u64(&p, 0x10000);
	seed_u32(&p, 1);
	seed_bytes(&p, page, sizeof(page));
	seed_frame(s, 2, 0, &p);
	seed_reset(&p);
	seed_u32(&p, 2);
	seed_u64(&p, 2);
	seed_frame(s, 4, 0, &p);
	/* STATE: a snapshot state file with SHAPE and END */
	struct seed st = { 0 };
	seed_str(&st, "CVISORSS");
	seed_u32(&st, 1);
	seed_u32(&st, 0);
	seed_frame(&st, 1, 0, &sh);
	seed_frame(&st, 0x454e4421, 0, NULL);
	seed_frame(s, 5, 0, &st);
	seed_frame(s, 6, 0, NULL);
	free(st.b);
	free(p.b);
	free(sh.b);
}

static int one(const char *dir, const char *name, uint8_t flags, uint32_t version,
	       enum variant v, size_t cut)
{
	struct seed s = { 0 };
	seed_u8(&s, flags);
	stream(&s, version, v);
	return seed_save_cut(dir, name, &s, cut);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	int rc = 0;
	rc |= one(dir, "valid", 0, 1, GOOD, 0);
	rc |= one(dir, "valid-fixcrc", FIX_CRC, 1, GOOD, 0);
	rc |= one(dir, "truncated", 0, 1, GOOD, 5000);
	rc |= one(dir, "bad-offset", 0, 1, BAD_OFFSET, 0);
	rc |= one(dir, "bad-round", FIX_CRC, 1, BAD_ROUND, 0);
	rc |= one(dir, "version2", 0, 2, GOOD, 0);
	rc |= one(dir, "peer-error", 0, 1, PEER_ERROR, 0);
	struct seed s = { 0 };
	seed_u8(&s, SOURCE_SIDE);
	preamble(&s, 1);
	seed_frame(&s, 7, 0, NULL);
	seed_frame(&s, 8, 0, NULL);
	seed_frame(&s, 9, 0, NULL);
	rc |= seed_save(dir, "source-side", &s);
	free(s.b);
	return rc ? 1 : 0;
}
