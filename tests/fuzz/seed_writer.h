/*
 * Helpers for the seed generators of the fuzz targets (*_seeds.c): an input is built field by
 * field in a growable buffer, little endian as the targets read it (fuzz_driver.h), and saved as
 * DIR/seed-NAME. Header-only so that each generator stays one file.
 */
#ifndef CVISOR_TESTS_FUZZ_SEED_WRITER_H
#define CVISOR_TESTS_FUZZ_SEED_WRITER_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seed {
	uint8_t *b;
	size_t len, cap;
};

static inline void seed_bytes(struct seed *s, const void *p, size_t n)
{
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap < s->len + n)
			cap *= 2;
		uint8_t *nb = realloc(s->b, cap);
		if (!nb) {
			fprintf(stderr, "seeds: out of memory\n");
			exit(1);
		}
		s->b = nb;
		s->cap = cap;
	}
	memcpy(s->b + s->len, p, n);
	s->len += n;
}

static inline void seed_u8(struct seed *s, uint8_t v)
{
	seed_bytes(s, &v, 1);
}

static inline void seed_u16(struct seed *s, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	seed_bytes(s, b, 2);
}

static inline void seed_u32(struct seed *s, uint32_t v)
{
	seed_u16(s, (uint16_t)v);
	seed_u16(s, (uint16_t)(v >> 16));
}

static inline void seed_u64(struct seed *s, uint64_t v)
{
	seed_u32(s, (uint32_t)v);
	seed_u32(s, (uint32_t)(v >> 32));
}

static inline void seed_str(struct seed *s, const char *str)
{
	seed_bytes(s, str, strlen(str));
}

static inline void seed_reset(struct seed *s)
{
	s->len = 0;
}

/* Writes the seed as DIR/seed-NAME; returns 0 or -1 (after a message). */
static inline int seed_save(const char *dir, const char *name, const struct seed *s)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/seed-%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || (s->len && fwrite(s->b, 1, s->len, f) != s->len) || fclose(f) != 0) {
		fprintf(stderr, "seeds: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* The usual main(): one argument, the directory. */
static inline const char *seed_dir(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		exit(2);
	}
	return argv[1];
}

#endif
