/*
 * Input format of the virtio-blk fuzz target (fuzz_blk.c), shared with its seed generator
 * (blk_seeds.c). An input is a small preamble and a stream of operations; every field is read
 * with the fuzz_driver.h helpers, so a short input simply ends early (missing bytes are zero).
 *
 *   preamble: u8 BLKF_* flags | u32 feature mask (bits 0-31 of what the guest accepts)
 *   then ops, each a u8 BLKF_OP_* (modulo BLKF_OPS) followed by its fields:
 *
 *   BLKF_OP_REQ    a request of any shape:
 *                  u8 n_out, u8 n_in (each modulo BLKF_MAX_SEGS + 1), u8 BLKF_REQ_* flags,
 *                  16 header bytes (le32 type, le32 reserved, le64 sector),
 *                  u8 n_ranges (modulo 33) + n_ranges * 16 bytes, written right after the header
 *                  (discard/write-zeroes segments; plain data for other types),
 *                  then one length code per segment (readable ones first), see blkf_len().
 *                  The rest of the readable bytes is a pattern; writable bytes start poisoned.
 *   BLKF_OP_RW     a request laid out as Linux does (header | data | status):
 *                  u8 kind (BLKF_KIND_*), le64 sector, le16 count (sectors, or for the range
 *                  kinds the segment's sector count), u8 range flags (range kinds only)
 *   BLKF_OP_KICK   kick the queue and wait until every posted request came back
 *   BLKF_OP_RESET  kick, then reset the device at once with whatever is in flight
 *   BLKF_OP_TRUNCATE  someone truncates the image file: le16 size (modulo the file size + 1);
 *                  the next batch runs on it (requests beyond the end may fail), then the file
 *                  gets its size back
 *   BLKF_OP_CONFIG the driver reads the configuration space: le16 offset (below 0x1000, the
 *                  transport's window), u8 length (1 to 8)
 *
 * The input ends with an implicit BLKF_OP_KICK.
 */
#ifndef CVISOR_TESTS_FUZZ_BLK_INPUT_H
#define CVISOR_TESTS_FUZZ_BLK_INPUT_H

#include <stdint.h>

/* Preamble flags. */
#define BLKF_READ_ONLY 0x01      /* use the read-only disk */
#define BLKF_NO_PUNCH 0x02       /* pretend the host file system cannot punch holes */
#define BLKF_NO_ZERO 0x04        /* ... nor zero ranges (then zeroes are written) */

enum {
	BLKF_OP_REQ,
	BLKF_OP_RW,
	BLKF_OP_KICK,
	BLKF_OP_RESET,
	BLKF_OP_TRUNCATE,
	BLKF_OP_CONFIG,
	BLKF_OPS,
};

#define BLKF_MAX_SEGS 40

/* BLKF_OP_REQ flags. */
#define BLKF_REQ_INDIRECT 0x01   /* through an indirect table (if negotiated) */

enum {
	BLKF_KIND_IN,
	BLKF_KIND_OUT,
	BLKF_KIND_FLUSH,
	BLKF_KIND_GET_ID,
	BLKF_KIND_DISCARD,
	BLKF_KIND_WRITE_ZEROES,
	BLKF_KINDS,
};

/*
 * Segment length codes: u8 c. c < 0x80: BLKF_LENGTHS[c % count]; c < 0xc0: le16 follows;
 * otherwise le32 follows. Lengths above BLKF_SEG_CAP are cut to it. Segments longer than
 * BLKF_FRESH_MAX point into a shared area instead of fresh buffers, so that a few descriptors
 * describe hundreds of MiB without touching them; those holding header or body bytes and the one
 * holding the status byte are always fresh.
 */
#define BLKF_SEG_CAP (16u << 20)
#define BLKF_FRESH_MAX (64u << 10)
static const uint32_t BLKF_LENGTHS[] = {
	0, 1, 2, 15, 16, 17, 19, 20, 21, 32, 48, 511, 512, 513, 1024, 1536, 4096, 4097,
	8192, 65536, 1u << 20, BLKF_SEG_CAP,
};

/* The disks: capacity in whole sectors plus a partial tail the guest cannot see. */
#define BLKF_SECTORS 129
#define BLKF_TAIL 100
#define BLKF_SERIAL "fuzz-serial-20-bytes"   /* exactly 20: not NUL-terminated on the wire */

#endif
