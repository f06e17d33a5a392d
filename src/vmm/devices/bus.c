/*
 * Sorted range table for the I/O buses (see bus.h).
 */
#include "bus.h"

#include <stdlib.h>
#include <string.h>

void io_bus_init(struct io_bus *bus, const char *name)
{
	memset(bus, 0, sizeof(*bus));
	bus->name = name;
}

void io_bus_free(struct io_bus *bus)
{
	free(bus->ranges);
	io_bus_init(bus, bus->name);
}

int io_bus_register(struct io_bus *bus, uint64_t base, uint64_t len, const struct io_ops *ops,
		    void *opaque, const char *name, struct cv_error *err)
{
	if (len == 0 || base + len < base)
		return cv_fail(err, CV_EXIT_SOFTWARE, "%s: bad range for %s", bus->name, name);
	size_t pos = 0;
	while (pos < bus->n && bus->ranges[pos].base < base)
		pos++;
	if (pos > 0) {
		const struct io_range *prev = &bus->ranges[pos - 1];
		if (prev->base + prev->len > base)
			return cv_fail(err, CV_EXIT_SOFTWARE, "%s: %s at 0x%llx overlaps %s", bus->name,
				       name, (unsigned long long)base, prev->name);
	}
	if (pos < bus->n && base + len > bus->ranges[pos].base)
		return cv_fail(err, CV_EXIT_SOFTWARE, "%s: %s at 0x%llx overlaps %s", bus->name, name,
			       (unsigned long long)base, bus->ranges[pos].name);
	if (bus->n == bus->cap) {
		size_t ncap = bus->cap ? bus->cap * 2 : 16;
		struct io_range *n = realloc(bus->ranges, ncap * sizeof(*n));
		if (!n)
			return cv_fail(err, CV_EXIT_OSERR, "%s: out of memory", bus->name);
		bus->ranges = n;
		bus->cap = ncap;
	}
	memmove(&bus->ranges[pos + 1], &bus->ranges[pos], (bus->n - pos) * sizeof(bus->ranges[0]));
	bus->ranges[pos] = (struct io_range){ base, len, ops, opaque, name };
	bus->n++;
	return 0;
}

static const struct io_range *find(const struct io_bus *bus, uint64_t addr)
{
	size_t lo = 0, hi = bus->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct io_range *r = &bus->ranges[mid];
		if (addr < r->base)
			hi = mid;
		else if (addr - r->base >= r->len)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

bool io_bus_access(const struct io_bus *bus, uint64_t addr, uint8_t *data, uint32_t size,
		   bool is_write)
{
	const struct io_range *r = find(bus, addr);
	if (!r) {
		if (!is_write)
			memset(data, 0xff, size);
		return false;
	}
	uint64_t off = addr - r->base;
	if (size > r->len - off) {
		if (!is_write)
			memset(data, 0xff, size);
		size = (uint32_t)(r->len - off);
	}
	if (is_write) {
		if (r->ops->write)
			r->ops->write(r->opaque, off, data, size);
	} else if (r->ops->read) {
		r->ops->read(r->opaque, off, data, size);
	} else {
		memset(data, 0xff, size);
	}
	return true;
}
