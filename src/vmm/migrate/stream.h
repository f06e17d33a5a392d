/*
 * The live-migration stream (docs/migration-stream.md): what two cvisor-vmm processes say to
 * each other over one TCP connection. A preamble (magic, version) from each side, then frames
 * in both directions, each framed like a snapshot state-file section (format.h): u32 type,
 * u32 aux, u64 payload length, CRC-32 of the payload, CRC-32 of the header; a damaged length is
 * caught by the header CRC before it is trusted.
 *
 * This file knows nothing about KVM or sockets: frames are written into a snap_buf and read
 * through a caller-supplied read function, so the parser is unit-tested and fuzzed alone
 * (tests/fuzz/fuzz_migrate.c). Every length, offset and count that arrives is checked here
 * against the limits below and the receiver's guest memory size before anything uses it.
 */
#ifndef CVISOR_VMM_MIGRATE_STREAM_H
#define CVISOR_VMM_MIGRATE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "snapshot/format.h"

#define MIG_MAGIC "CVISORMG"             /* 8 bytes, no terminator */
#define MIG_VERSION 1
#define MIG_PREAMBLE_SIZE 16             /* magic, u32 version, u32 flags (0) */
#define MIG_HDR_SIZE 24
#define MIG_PAGE 4096u
#define MIG_MAX_RUN_PAGES 64u            /* data pages in one PAGES frame (256 KiB) */
#define MIG_MAX_STATE (SNAP_MAX_FILE)    /* the STATE frame: a whole snapshot state file */
#define MIG_MAX_SMALL 65536u             /* any other frame */

enum mig_frame_type {
	/* source -> destination */
	MIG_HELLO = 1,      /* u32 page size | blob machine shape (snapshot SHAPE payload) */
	MIG_PAGES = 2,      /* u64 byte offset in guest RAM | u32 n | n pages */
	MIG_ZERO = 3,       /* u64 byte offset | u64 n: n pages that are all zero */
	MIG_ROUND = 4,      /* u32 round | u64 pages sent in that round (PAGES + ZERO) */
	MIG_STATE = 5,      /* a snapshot state file (vCPUs, devices, platform), as is */
	MIG_GO = 6,         /* empty: run now (the source has stopped for good) */
	/* destination -> source */
	MIG_ACCEPT = 7,     /* empty: the shape matches, send memory */
	MIG_READY = 8,      /* empty: everything loaded, will run on GO */
	MIG_RESUMED = 9,    /* empty: the guest runs here */
	/* either way */
	MIG_ERROR = 10,     /* str: why the sender gives up */
};

/* One received frame; payload points into the reader's buffer until the next read. */
struct mig_frame {
	uint32_t type;
	uint32_t aux;
	const uint8_t *payload;
	size_t len;
};

/* Reads exactly n bytes or fails: 0, or -1 with err set (EOF is an error too). */
typedef int (*mig_read_fn)(void *ctx, void *buf, size_t n, struct cv_error *err);

struct mig_reader {
	mig_read_fn read;
	void *ctx;
	uint8_t *buf;
	size_t cap;
	uint64_t bytes;              /* received so far, preamble included */
};

/* ---- writing ---- */
void mig_put_preamble(struct snap_buf *out);
/* Appends one frame (header + payload copy). */
void mig_put_frame(struct snap_buf *out, uint32_t type, uint32_t aux, const void *payload,
		   size_t len);
/* Appends a PAGES frame whose n pages are copied from `pages` (CRC over the copy). */
void mig_put_pages(struct snap_buf *out, uint64_t offset, const uint8_t *pages, uint32_t n);
void mig_put_zero(struct snap_buf *out, uint64_t offset, uint64_t n);
void mig_put_round(struct snap_buf *out, uint32_t round, uint64_t pages);
void mig_put_error(struct snap_buf *out, const char *msg);

/* ---- reading ---- */
void mig_reader_init(struct mig_reader *r, mig_read_fn read, void *ctx);
void mig_reader_free(struct mig_reader *r);
/* Reads and checks the peer's preamble (magic, version, flags). */
int mig_read_preamble(struct mig_reader *r, struct cv_error *err);
/*
 * Reads one frame: header CRC, a known type, the length limit of that type, the payload and
 * its CRC. A MIG_ERROR frame from the peer is returned as an error carrying its message.
 */
int mig_read_frame(struct mig_reader *r, struct mig_frame *f, struct cv_error *err);
/* Reads one frame that must be of type `want` (an empty one for control frames). */
int mig_expect(struct mig_reader *r, uint32_t want, struct mig_frame *f, struct cv_error *err);

/* Decoded payloads; each refuses a payload of the wrong size or out of range values. */
struct mig_pages {
	uint64_t offset;             /* bytes from the start of guest RAM (host-mapping order) */
	uint64_t n;                  /* pages */
};
int mig_decode_hello(const struct mig_frame *f, struct snap_cur *shape, struct cv_error *err);
int mig_decode_round(const struct mig_frame *f, uint32_t *round, uint64_t *pages,
		     struct cv_error *err);

/*
 * The destination's memory phase: applies PAGES and ZERO frames to mem (mem_size bytes, the
 * guest RAM in host-mapping order) and checks each ROUND's page count, until the STATE frame,
 * which is returned (its payload valid until the reader reads again). Anything else, an
 * offset outside mem, a miscounted round or a STATE in mid-round is refused.
 */
struct mig_rx_stats {
	uint32_t rounds;
	uint64_t pages;
};
int mig_receive_memory(struct mig_reader *rd, uint8_t *mem, uint64_t mem_size,
		       struct mig_frame *state, struct mig_rx_stats *st, struct cv_error *err);

const char *mig_frame_name(uint32_t type);

/*
 * "tcp:HOST:PORT" (HOST an IPv4 address, [IPv6] or localhost) into a socket address; port 0
 * (any) only if any_port (for listening).
 */
struct sockaddr_storage;
int mig_parse_address(const char *spec, bool any_port, struct sockaddr_storage *sa,
		      unsigned *sa_len, struct cv_error *err);

#endif
