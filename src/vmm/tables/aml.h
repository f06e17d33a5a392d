/*
 * A small builder for ACPI Machine Language (ACPI 6.x, section 20): enough to describe devices
 * in the DSDT (names, integers, EISA IDs, scopes, devices, packages, resource buffers). Nested
 * objects are opened and closed; their package lengths are computed when they close.
 */
#ifndef CVISOR_VMM_TABLES_AML_H
#define CVISOR_VMM_TABLES_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AML_MAX_DEPTH 8

struct aml {
	uint8_t *p;
	size_t len;
	size_t cap;
	bool failed;                 /* out of memory or nesting misuse: the result is unusable */
	struct {
		size_t start;            /* where the object's body begins */
		int kind;
	} open[AML_MAX_DEPTH];
	unsigned depth;
};

void aml_init(struct aml *a);
void aml_free(struct aml *a);

void aml_bytes(struct aml *a, const void *b, size_t n);
/* Name(seg, <next object>): the caller emits the object right after. */
void aml_name(struct aml *a, const char *seg);
/* The shortest integer encoding (Zero, One, Byte/Word/DWord/QWord constant). */
void aml_integer(struct aml *a, uint64_t v);
/* EisaId("PNP0A03") as a DWord constant. */
void aml_eisaid(struct aml *a, const char *id);
/* Scope(path) / Device(seg) / Package(n) / Buffer: close each with aml_end. */
void aml_scope(struct aml *a, const char *path);
void aml_device(struct aml *a, const char *seg);
void aml_package(struct aml *a, uint8_t n_elements);
void aml_buffer(struct aml *a);
void aml_end(struct aml *a);

#endif
