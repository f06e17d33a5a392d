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

/* A string as the snapshot formats write it: le32 length, then the bytes. */
static inline void seed_lstr(struct seed *s, const char *str)
{
	seed_u32(s, (uint32_t)strlen(str));
	seed_str(s, str);
}

/* CRC-32 (IEEE), as the snapshot formats use; written out so that generators stand alone. */
static inline uint32_t seed_crc32(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
	}
	return ~c;
}

/*
 * A section of a snapshot state file or a frame of the migration stream (the same header:
 * le32 type, le32 instance/aux, le64 length, le32 payload CRC, le32 header CRC), then the
 * payload (NULL: none).
 */
static inline void seed_frame(struct seed *s, uint32_t type, uint32_t aux,
			      const struct seed *payload)
{
	struct seed h = { 0 };
	seed_u32(&h, type);
	seed_u32(&h, aux);
	seed_u64(&h, payload ? payload->len : 0);
	seed_u32(&h, payload ? seed_crc32(payload->b, payload->len) : 0);
	seed_u32(&h, seed_crc32(h.b, 20));
	seed_bytes(s, h.b, h.len);
	if (payload)
		seed_bytes(s, payload->b, payload->len);
	free(h.b);
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

/* The same, then frees the seed's buffer. */
static inline int seed_save_free(const char *dir, const char *name, struct seed *s)
{
	int rc = seed_save(dir, name, s);
	free(s->b);
	*s = (struct seed){ 0 };
	return rc;
}

/* The same with only the seed's first CUT bytes (0: all of it), for truncated inputs. */
static inline int seed_save_cut(const char *dir, const char *name, struct seed *s, size_t cut)
{
	if (cut && cut < s->len)
		s->len = cut;
	return seed_save_free(dir, name, s);
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
