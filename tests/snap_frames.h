/*
 * Test helpers for the two framed formats of src/vmm: the snapshot state file
 * (snapshot/format.h) and the live-migration stream (migrate/stream.h). Both are a 16-byte
 * preamble followed by frames (sections) with the same 24-byte header:
 *   le32 type | le32 instance/aux | le64 payload length | le32 payload CRC | le32 header CRC
 * where the header CRC covers the first 20 bytes. Used by the fuzz targets (fuzz_snapshot.c,
 * fuzz_migrate.c) and the unit tests of the stream; header-only, so that each stays one file.
 */
#ifndef CVISOR_TESTS_SNAP_FRAMES_H
#define CVISOR_TESTS_SNAP_FRAMES_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "error.h"
#include "snapshot/format.h"

#define SNAP_FRAMES_HDR_SIZE 24

/*
 * Recomputes the payload and header CRCs of every frame after the first PREAMBLE bytes of b
 * whose header is complete (a payload cut short keeps its CRC), so that mutated input reaches
 * the decoders instead of dying at the checksum test.
 */
static inline void snap_frames_fix_crcs(uint8_t *b, size_t len, size_t preamble)
{
	size_t off = preamble;
	while (len >= off && len - off >= SNAP_FRAMES_HDR_SIZE) {
		uint8_t *h = b + off;
		uint64_t plen = get_le64(h + 8);
		off += SNAP_FRAMES_HDR_SIZE;
		if (plen <= len - off)
			put_le32(h + 16, snap_crc32(0, b + off, (size_t)plen));
		put_le32(h + 20, snap_crc32(0, h, 20));
		if (plen > len - off)
			break;
		off += (size_t)plen;
	}
}

/*
 * A fuzz target's input: u8 flags | bytes. Returns an exact-size copy of the bytes (ASan catches
 * any read past its end; free it), their CRCs repaired as above if flag SNAP_FRAMES_FIX_CRC is
 * set, and the flags and length; NULL for an empty input.
 */
#define SNAP_FRAMES_FIX_CRC 0x01
static inline uint8_t *snap_frames_input(const uint8_t *data, size_t size, size_t preamble,
					 uint8_t *flags, size_t *len)
{
	if (size < 1)
		return NULL;
	*flags = data[0];
	*len = size - 1;
	uint8_t *b = malloc(*len ? *len : 1);
	memcpy(b, data + 1, *len);
	if (*flags & SNAP_FRAMES_FIX_CRC)
		snap_frames_fix_crcs(b, *len, preamble);
	return b;
}

/* A byte stream read from memory, as a mig_reader's read function sees its peer. */
struct mem_input {
	const uint8_t *p;
	size_t len, off;
};

/* The read function over a struct mem_input: reading past its end is the peer hanging up. */
static inline int mem_input_read(void *ctx, void *buf, size_t n, struct cv_error *err)
{
	struct mem_input *in = ctx;
	if (n > in->len - in->off)
		return cv_fail(err, CV_EXIT_IOERR, "end of stream");
	memcpy(buf, in->p + in->off, n);
	in->off += n;
	return 0;
}

#endif
