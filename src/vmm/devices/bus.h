/*
 * Address-decoded buses for port I/O and MMIO exits. A device claims a range once at setup; a
 * vCPU exit is routed to it by binary search. Ranges never overlap, and the table is not changed
 * while vCPUs run, so lookups need no lock (devices lock their own state).
 */
#ifndef CVISOR_VMM_DEVICES_BUS_H
#define CVISOR_VMM_DEVICES_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct io_ops {
	/* offset is relative to the range base; size is 1, 2, 4 or 8. */
	void (*read)(void *opaque, uint64_t offset, uint8_t *data, uint32_t size);
	void (*write)(void *opaque, uint64_t offset, const uint8_t *data, uint32_t size);
};

struct io_range {
	uint64_t base;
	uint64_t len;
	const struct io_ops *ops;
	void *opaque;
	const char *name;
};

struct io_bus {
	const char *name;     /* "pio" or "mmio", for messages */
	struct io_range *ranges;
	size_t n;
	size_t cap;
};

void io_bus_init(struct io_bus *bus, const char *name);
void io_bus_free(struct io_bus *bus);

/* Claims [base, base+len) for a device; fails if it overlaps a range already claimed. */
int io_bus_register(struct io_bus *bus, uint64_t base, uint64_t len, const struct io_ops *ops,
		    void *opaque, const char *name, struct cv_error *err);

/*
 * Performs one access. Returns false if no device claims addr (a read then yields all-ones, as a
 * bus master abort does on real hardware). Accesses straddling a range end are truncated to it.
 */
bool io_bus_access(const struct io_bus *bus, uint64_t addr, uint8_t *data, uint32_t size,
		   bool is_write);

#endif
