/*
 * The snapshot state file format (docs/snapshot-format.md): a fixed preamble (magic, format
 * version), then sections, each a 24-byte header (type, instance, payload length, CRC-32 of the
 * payload, CRC-32 of the header itself) and its payload; the first section is the machine shape,
 * the last an END marker, so truncation anywhere is detected. Guest memory is not in this file
 * but in a separate raw memory file the state file describes.
 *
 * Two halves: a writer (snap_buf, growable, little-endian put_* helpers) and a bounds-checked
 * reader (snap_file_parse validates every length and checksum before anything is decoded;
 * snap_cur reads fields and remembers an overrun instead of reading past the end). Nothing here
 * knows about KVM, so it is unit-tested and fuzzed on its own.
 */
#ifndef CVISOR_VMM_SNAPSHOT_FORMAT_H
#define CVISOR_VMM_SNAPSHOT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SNAP_MAGIC "CVISORSS"            /* 8 bytes, no terminator in the file */
#define SNAP_FORMAT_VERSION 1
#define SNAP_PREAMBLE_SIZE 16            /* magic, u32 version, u32 flags (0) */
#define SNAP_SECTION_HDR_SIZE 24
#define SNAP_MAX_SECTIONS 4096
#define SNAP_MAX_FILE (64u << 20)        /* refuse state files above 64 MiB unread */

enum snap_section_type {
	SNAP_SEC_SHAPE = 1,       /* machine shape: must come first */
	SNAP_SEC_VM = 2,          /* irqchips, PIT, KVM clock */
	SNAP_SEC_VCPU = 3,        /* instance = vCPU index */
	SNAP_SEC_PLATFORM = 4,    /* UART, ACPI PM */
	SNAP_SEC_PCI = 5,         /* instance = PCI slot: configuration space */
	SNAP_SEC_VIRTIO = 6,      /* instance = virtio device index */
	SNAP_SEC_CONFIG = 7,      /* device configuration, for PUT /snapshot/load */
	SNAP_SEC_KEYBOARD = 8,    /* i8042 controller and keyboard */
	SNAP_SEC_LIMITS = 9,      /* instance = virtio device index: its rate limiters */
	SNAP_SEC_END = 0x454e4421 /* "!DNE": must come last, empty */
};

/* Growable output buffer. Allocation failures are remembered (oom) and reported once at the end. */
struct snap_buf {
	uint8_t *b;
	size_t len, cap;
	bool oom;
};

void snap_buf_free(struct snap_buf *s);
void snap_put_bytes(struct snap_buf *s, const void *p, size_t n);
void snap_put_u8(struct snap_buf *s, uint8_t v);
void snap_put_u16(struct snap_buf *s, uint16_t v);
void snap_put_u32(struct snap_buf *s, uint32_t v);
void snap_put_u64(struct snap_buf *s, uint64_t v);
/* u32 length + bytes (no terminator); NULL is written as the empty string. */
void snap_put_str(struct snap_buf *s, const char *str);
/* u32 length + bytes. */
void snap_put_blob(struct snap_buf *s, const void *p, size_t n);

/* Writes the preamble into an empty buffer. */
void snap_begin(struct snap_buf *s);
/* Appends one section; the payload is copied. */
void snap_add_section(struct snap_buf *s, uint32_t type, uint32_t instance, const void *payload,
		      size_t len);
/* Appends the END section. */
void snap_finish(struct snap_buf *s);

/* Field reader over one payload. Reads past the end return zeroes and set `bad`. */
struct snap_cur {
	const uint8_t *p;
	size_t len, off;
	bool bad;
};

void snap_cur_init(struct snap_cur *c, const void *p, size_t len);
uint8_t snap_get_u8(struct snap_cur *c);
uint16_t snap_get_u16(struct snap_cur *c);
uint32_t snap_get_u32(struct snap_cur *c);
uint64_t snap_get_u64(struct snap_cur *c);
/* Copies n bytes (zeroes and bad if they are not there). */
void snap_get_bytes(struct snap_cur *c, void *out, size_t n);
/* A u32-length blob: pointer into the payload, or NULL (and bad) if it overruns. */
const uint8_t *snap_get_blob(struct snap_cur *c, size_t *len);
/*
 * A blob that must be exactly one fixed-size structure (a KVM state struct), copied into dst;
 * -1 with err naming `what` if its size differs.
 */
int snap_get_struct(struct snap_cur *c, void *dst, size_t size, const char *what,
		    struct cv_error *err);
/* A u32-length string copied into out (NUL-terminated); bad if longer than cap - 1. */
void snap_get_str(struct snap_cur *c, char *out, size_t cap);
/* True if every byte was consumed and nothing overran. */
bool snap_cur_done(const struct snap_cur *c);

struct snap_section {
	uint32_t type;
	uint32_t instance;
	const uint8_t *data;
	size_t len;
};

/* A parsed state file: the section table points into the caller's buffer. */
struct snap_file {
	uint32_t version;
	struct snap_section *sec;
	unsigned n;
};

/*
 * Checks the preamble, the format version, every section header and checksum, that SHAPE comes
 * first and END last with nothing after it. Errors are one line (CV_EXIT_DATAERR) naming the
 * problem and the byte offset. Never reads outside buf.
 */
int snap_file_parse(const uint8_t *buf, size_t len, struct snap_file *out, struct cv_error *err);
void snap_file_free(struct snap_file *f);

/* The section of that type and instance, or NULL. */
const struct snap_section *snap_file_find(const struct snap_file *f, uint32_t type,
					  uint32_t instance);

/* CRC-32 (IEEE 802.3, the polynomial zlib and gzip use), continuing from crc (0 to start). */
uint32_t snap_crc32(uint32_t crc, const void *p, size_t n);

#endif
