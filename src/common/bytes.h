/*
 * Little-endian loads and stores at arbitrary alignment, for the byte layouts the x86 boot
 * protocol, ACPI, MP tables and virtio define. memcpy keeps them free of alignment and
 * strict-aliasing undefined behaviour; compilers turn them into single moves.
 */
#ifndef CVISOR_COMMON_BYTES_H
#define CVISOR_COMMON_BYTES_H

#include <stdint.h>
#include <endian.h>
#include <string.h>

static inline uint16_t get_le16(const void *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static inline uint32_t get_le32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static inline uint64_t get_le64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static inline void put_le16(void *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static inline void put_le32(void *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static inline void put_le64(void *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static inline void put_be32(void *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof(v));
}

static inline uint32_t get_be32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

#endif
