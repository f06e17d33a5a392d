/*
 * State file encoding and bounds-checked parsing (see format.h). All integers are little endian.
 * Section header: u32 type, u32 instance, u64 payload length, u32 CRC-32 of the payload, u32
 * CRC-32 of the 20 header bytes before it (so a corrupt length is caught before it is trusted).
 */
#include "format.h"

#include <stdlib.h>
#include <string.h>

#include "bytes.h"

/*
 * ---- CRC-32, slicing-by-8: eight table lookups per 8 bytes instead of one per byte, about five
 * times faster than the one-table form. Live migration checksums all of guest RAM that moves
 * (gigabytes), so this is on its critical path. ----
 */

static uint32_t crc_table_entry(uint32_t i)
{
	uint32_t c = i;
	for (int k = 0; k < 8; k++)
		c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
	return c;
}

uint32_t snap_crc32(uint32_t crc, const void *p, size_t n)
{
	/* Computed on first use; identical in every thread, so a race only repeats the work. */
	static uint32_t t[8][256];
	static volatile int ready;
	if (!ready) {
		for (uint32_t i = 0; i < 256; i++)
			t[0][i] = crc_table_entry(i);
		for (uint32_t i = 0; i < 256; i++)
			for (int k = 1; k < 8; k++)
				t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
		ready = 1;
	}
	const uint8_t *b = p;
	crc = ~crc;
	while (n >= 8) {
		uint32_t lo = crc ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
				     (uint32_t)b[3] << 24);
		uint32_t hi = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
			      (uint32_t)b[7] << 24;
		crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^
		      t[4][lo >> 24] ^ t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^
		      t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
		b += 8;
		n -= 8;
	}
	while (n--)
		crc = t[0][(crc ^ *b++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- writer ---- */

void snap_buf_free(struct snap_buf *s)
{
	free(s->b);
	memset(s, 0, sizeof(*s));
}

void snap_put_bytes(struct snap_buf *s, const void *p, size_t n)
{
	if (s->oom)
		return;
	if (n > s->cap - s->len) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap - s->len < n) {
			if (cap > SIZE_MAX / 2) {
				s->oom = true;
				return;
			}
			cap *= 2;
		}
		uint8_t *nb = realloc(s->b, cap);
		if (!nb) {
			s->oom = true;
			return;
		}
		s->b = nb;
		s->cap = cap;
	}
	if (n)
		memcpy(s->b + s->len, p, n);
	s->len += n;
}

void snap_put_u8(struct snap_buf *s, uint8_t v)
{
	snap_put_bytes(s, &v, 1);
}

void snap_put_u16(struct snap_buf *s, uint16_t v)
{
	uint8_t b[2];
	put_le16(b, v);
	snap_put_bytes(s, b, 2);
}

void snap_put_u32(struct snap_buf *s, uint32_t v)
{
	uint8_t b[4];
	put_le32(b, v);
	snap_put_bytes(s, b, 4);
}

void snap_put_u64(struct snap_buf *s, uint64_t v)
{
	uint8_t b[8];
	put_le64(b, v);
	snap_put_bytes(s, b, 8);
}

void snap_put_blob(struct snap_buf *s, const void *p, size_t n)
{
	if (n > UINT32_MAX) {
		s->oom = true;
		return;
	}
	snap_put_u32(s, (uint32_t)n);
	snap_put_bytes(s, p, n);
}

void snap_put_str(struct snap_buf *s, const char *str)
{
	snap_put_blob(s, str ? str : "", str ? strlen(str) : 0);
}

void snap_begin(struct snap_buf *s)
{
	snap_put_bytes(s, SNAP_MAGIC, 8);
	snap_put_u32(s, SNAP_FORMAT_VERSION);
	snap_put_u32(s, 0);
}

void snap_add_section(struct snap_buf *s, uint32_t type, uint32_t instance, const void *payload,
		      size_t len)
{
	uint8_t h[SNAP_SECTION_HDR_SIZE];
	put_le32(h, type);
	put_le32(h + 4, instance);
	put_le64(h + 8, len);
	put_le32(h + 16, snap_crc32(0, payload, len));
	put_le32(h + 20, snap_crc32(0, h, 20));
	snap_put_bytes(s, h, sizeof(h));
	snap_put_bytes(s, payload, len);
}

void snap_finish(struct snap_buf *s)
{
	snap_add_section(s, SNAP_SEC_END, 0, NULL, 0);
}

/* ---- field reader ---- */

void snap_cur_init(struct snap_cur *c, const void *p, size_t len)
{
	c->p = p;
	c->len = len;
	c->off = 0;
	c->bad = false;
}

/* Pointer to the next n bytes, or NULL (bad set) if fewer remain. */
static const uint8_t *take(struct snap_cur *c, size_t n)
{
	if (c->bad || n > c->len - c->off) {
		c->bad = true;
		return NULL;
	}
	const uint8_t *p = c->p + c->off;
	c->off += n;
	return p;
}

uint8_t snap_get_u8(struct snap_cur *c)
{
	const uint8_t *p = take(c, 1);
	return p ? p[0] : 0;
}

uint16_t snap_get_u16(struct snap_cur *c)
{
	const uint8_t *p = take(c, 2);
	return p ? get_le16(p) : 0;
}

uint32_t snap_get_u32(struct snap_cur *c)
{
	const uint8_t *p = take(c, 4);
	return p ? get_le32(p) : 0;
}

uint64_t snap_get_u64(struct snap_cur *c)
{
	const uint8_t *p = take(c, 8);
	return p ? get_le64(p) : 0;
}

void snap_get_bytes(struct snap_cur *c, void *out, size_t n)
{
	const uint8_t *p = take(c, n);
	if (p)
		memcpy(out, p, n);
	else
		memset(out, 0, n);
}

const uint8_t *snap_get_blob(struct snap_cur *c, size_t *len)
{
	uint32_t n = snap_get_u32(c);
	const uint8_t *p = take(c, n);
	*len = p ? n : 0;
	return p;
}

int snap_get_struct(struct snap_cur *c, void *dst, size_t size, const char *what,
		    struct cv_error *err)
{
	size_t n;
	const uint8_t *p = snap_get_blob(c, &n);
	if (!p || n != size)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s state is %zu bytes, expected %zu",
			       what, n, size);
	memcpy(dst, p, size);
	return 0;
}

void snap_get_str(struct snap_cur *c, char *out, size_t cap)
{
	size_t n;
	const uint8_t *p = snap_get_blob(c, &n);
	if (!p || n >= cap) {
		c->bad = true;
		if (cap)
			out[0] = 0;
		return;
	}
	memcpy(out, p, n);
	out[n] = 0;
	/* A NUL inside would silently shorten the string: treat it as corruption. */
	if (memchr(out, 0, n))
		c->bad = true;
}

bool snap_cur_done(const struct snap_cur *c)
{
	return !c->bad && c->off == c->len;
}

/* ---- file parser ---- */

/* Frees the partial section table and records a format error. */
#define FAIL(...)                                                          \
	do {                                                               \
		snap_file_free(out);                                       \
		return cv_fail(err, CV_EXIT_DATAERR, __VA_ARGS__);         \
	} while (0)

int snap_file_parse(const uint8_t *buf, size_t len, struct snap_file *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	if (len < SNAP_PREAMBLE_SIZE || memcmp(buf, SNAP_MAGIC, 8) != 0)
		return cv_fail(err, CV_EXIT_DATAERR, "not a cvisor snapshot state file (bad magic)");
	out->version = get_le32(buf + 8);
	if (out->version != SNAP_FORMAT_VERSION)
		return cv_fail(err, CV_EXIT_DATAERR,
			       "snapshot format version %u is not supported (this cvisor-vmm reads "
			       "version %u)", out->version, SNAP_FORMAT_VERSION);
	if (get_le32(buf + 12) != 0)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot preamble has unknown flags 0x%x",
			       get_le32(buf + 12));

	size_t off = SNAP_PREAMBLE_SIZE, cap = 0;
	bool ended = false;
	while (off < len) {
		if (ended)
			FAIL("snapshot has data after its END section (offset %zu)", off);
		if (len - off < SNAP_SECTION_HDR_SIZE)
			FAIL("snapshot truncated inside a section header at offset %zu", off);
		const uint8_t *h = buf + off;
		if (snap_crc32(0, h, 20) != get_le32(h + 20))
			FAIL("snapshot section header at offset %zu is corrupt (CRC mismatch)", off);
		uint32_t type = get_le32(h), instance = get_le32(h + 4);
		uint64_t plen = get_le64(h + 8);
		off += SNAP_SECTION_HDR_SIZE;
		if (plen > len - off)
			FAIL("snapshot truncated: section type %u at offset %zu needs %llu bytes, %zu "
			     "left", type, off - SNAP_SECTION_HDR_SIZE, (unsigned long long)plen,
			     len - off);
		if (snap_crc32(0, buf + off, (size_t)plen) != get_le32(h + 16))
			FAIL("snapshot section type %u instance %u at offset %zu is corrupt (CRC "
			     "mismatch)", type, instance, off - SNAP_SECTION_HDR_SIZE);
		if (out->n == 0 && type != SNAP_SEC_SHAPE)
			FAIL("snapshot does not start with its machine shape section");
		if (type == SNAP_SEC_END) {
			if (plen != 0 || instance != 0)
				FAIL("snapshot END section is not empty");
			ended = true;
		} else {
			if (out->n == SNAP_MAX_SECTIONS)
				FAIL("snapshot has more than %u sections", SNAP_MAX_SECTIONS);
			if (out->n == cap) {
				cap = cap ? cap * 2 : 16;
				struct snap_section *ns = realloc(out->sec, cap * sizeof(*ns));
				if (!ns) {
					snap_file_free(out);
					return cv_fail(err, CV_EXIT_OSERR, "out of memory");
				}
				out->sec = ns;
			}
			out->sec[out->n++] = (struct snap_section){
				.type = type, .instance = instance, .data = buf + off,
				.len = (size_t)plen };
		}
		off += (size_t)plen;
	}
	if (!ended)
		FAIL("snapshot truncated: no END section (%zu bytes)", len);
	return 0;
}

void snap_file_free(struct snap_file *f)
{
	free(f->sec);
	f->sec = NULL;
	f->n = 0;
}

const struct snap_section *snap_file_find(const struct snap_file *f, uint32_t type,
					  uint32_t instance)
{
	for (unsigned i = 0; i < f->n; i++)
		if (f->sec[i].type == type && f->sec[i].instance == instance)
			return &f->sec[i];
	return NULL;
}
