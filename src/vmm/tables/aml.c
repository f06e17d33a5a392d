/*
 * AML builder (see aml.h). An open object reserves nothing: when it closes, its package length
 * (1-4 bytes depending on size) is inserted in front of the body.
 */
#include "aml.h"

#include <stdlib.h>
#include <string.h>

enum { OPEN_SCOPE, OPEN_DEVICE, OPEN_PACKAGE, OPEN_BUFFER };

void aml_init(struct aml *a)
{
	memset(a, 0, sizeof(*a));
}

void aml_free(struct aml *a)
{
	free(a->p);
	aml_init(a);
}

static bool reserve(struct aml *a, size_t n)
{
	if (a->failed)
		return false;
	if (a->len + n <= a->cap)
		return true;
	size_t ncap = a->cap ? a->cap * 2 : 256;
	while (ncap < a->len + n)
		ncap *= 2;
	uint8_t *p = realloc(a->p, ncap);
	if (!p) {
		a->failed = true;
		return false;
	}
	a->p = p;
	a->cap = ncap;
	return true;
}

void aml_bytes(struct aml *a, const void *b, size_t n)
{
	if (!reserve(a, n))
		return;
	memcpy(a->p + a->len, b, n);
	a->len += n;
}

static void byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

/* A NameSeg is exactly four characters, padded with '_'. */
static void name_seg(struct aml *a, const char *seg)
{
	char s[4] = { '_', '_', '_', '_' };
	for (int i = 0; i < 4 && seg[i]; i++)
		s[i] = seg[i];
	aml_bytes(a, s, 4);
}

/* A path like "\\_SB_" or "PCI0": root prefix, then one segment (all we need). */
static void name_string(struct aml *a, const char *path)
{
	if (*path == '\\') {
		byte(a, '\\');
		path++;
	}
	name_seg(a, path);
}

void aml_name(struct aml *a, const char *seg)
{
	byte(a, 0x08);               /* NameOp */
	name_seg(a, seg);
}

void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0) {
		byte(a, 0x00);           /* ZeroOp */
	} else if (v == 1) {
		byte(a, 0x01);           /* OneOp */
	} else if (v <= 0xff) {
		uint8_t b[2] = { 0x0a, (uint8_t)v };
		aml_bytes(a, b, 2);
	} else if (v <= 0xffff) {
		uint8_t b[3] = { 0x0b, (uint8_t)v, (uint8_t)(v >> 8) };
		aml_bytes(a, b, 3);
	} else if (v <= 0xffffffff) {
		uint8_t b[5] = { 0x0c, (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
				 (uint8_t)(v >> 24) };
		aml_bytes(a, b, 5);
	} else {
		byte(a, 0x0e);
		for (int i = 0; i < 8; i++)
			byte(a, (uint8_t)(v >> (8 * i)));
	}
}

void aml_eisaid(struct aml *a, const char *id)
{
	/* Three letters in 5 bits each, then four hex digits; the result is stored big-endian. */
	uint32_t v = ((uint32_t)(id[0] - 0x40) << 26) | ((uint32_t)(id[1] - 0x40) << 21) |
		     ((uint32_t)(id[2] - 0x40) << 16);
	for (int i = 3; i < 7; i++) {
		char c = id[i];
		uint32_t d = (uint32_t)(c >= 'A' ? c - 'A' + 10 : c - '0');
		v |= d << (4 * (6 - i));
	}
	uint8_t b[5] = { 0x0c, (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
			 (uint8_t)v };
	aml_bytes(a, b, 5);
}

static void open_object(struct aml *a, int kind)
{
	if (a->depth == AML_MAX_DEPTH) {
		a->failed = true;
		return;
	}
	a->open[a->depth].start = a->len;
	a->open[a->depth].kind = kind;
	a->depth++;
}

void aml_scope(struct aml *a, const char *path)
{
	byte(a, 0x10);               /* ScopeOp */
	open_object(a, OPEN_SCOPE);
	name_string(a, path);
}

void aml_device(struct aml *a, const char *seg)
{
	uint8_t op[2] = { 0x5b, 0x82 };  /* DeviceOp */
	aml_bytes(a, op, 2);
	open_object(a, OPEN_DEVICE);
	name_seg(a, seg);
}

void aml_package(struct aml *a, uint8_t n_elements)
{
	byte(a, 0x12);               /* PackageOp */
	open_object(a, OPEN_PACKAGE);
	byte(a, n_elements);
}

void aml_buffer(struct aml *a)
{
	byte(a, 0x11);               /* BufferOp */
	open_object(a, OPEN_BUFFER);
}

/* Inserts `n` bytes at `at`, shifting the tail. */
static void insert(struct aml *a, size_t at, const uint8_t *b, size_t n)
{
	if (!reserve(a, n))
		return;
	memmove(a->p + at + n, a->p + at, a->len - at);
	memcpy(a->p + at, b, n);
	a->len += n;
}

void aml_end(struct aml *a)
{
	if (a->depth == 0 || a->failed) {
		a->failed = true;
		return;
	}
	a->depth--;
	size_t start = a->open[a->depth].start;
	if (a->open[a->depth].kind == OPEN_BUFFER) {
		/* A buffer's body starts with its byte count, itself an integer term. */
		struct aml size;
		aml_init(&size);
		aml_integer(&size, a->len - start);
		if (size.failed) {
			a->failed = true;
		} else {
			insert(a, start, size.p, size.len);
		}
		aml_free(&size);
	}
	/* PkgLength counts itself: pick the smallest encoding that holds body + its own bytes. */
	size_t body = a->len - start;
	uint8_t enc[4];
	size_t n;
	if (body + 1 < 0x40) {
		n = 1;
		enc[0] = (uint8_t)(body + 1);
	} else {
		n = body + 2 < 0x1000 ? 2 : body + 3 < 0x100000 ? 3 : 4;
		size_t total = body + n;
		enc[0] = (uint8_t)(((n - 1) << 6) | (total & 0xf));
		for (size_t i = 1; i < n; i++)
			enc[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	insert(a, start, enc, n);
}
