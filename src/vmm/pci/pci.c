/*
 * PCI bus 0 (see pci.h). Config space is kept as the guest sees it, with a write mask per byte;
 * BAR registers follow the sizing protocol (writes of all-ones read back the size mask).
 */
#include "pci.h"

#include <stdatomic.h>
#include <string.h>

#include "bytes.h"
#include "util.h"

#define CONF1_ADDRESS 0xcf8
#define CONF1_DATA    0xcfc
#define CONF1_ENABLE  0x80000000u
#define BAR_END       (PCI_BAR0 + 4 * PCI_BARS)

void pci_device_init(struct pci_device *d, const char *name, uint16_t vendor, uint16_t device,
		     uint32_t class_code, uint8_t revision, uint16_t subsys_vendor,
		     uint16_t subsys_id)
{
	memset(d, 0, sizeof(*d));
	d->name = name;
	put_le16(d->config + PCI_VENDOR_ID, vendor);
	put_le16(d->config + PCI_DEVICE_ID, device);
	d->config[PCI_REVISION] = revision;
	d->config[PCI_CLASS_PROG] = (uint8_t)class_code;
	d->config[PCI_CLASS_PROG + 1] = (uint8_t)(class_code >> 8);
	d->config[PCI_CLASS_PROG + 2] = (uint8_t)(class_code >> 16);
	put_le16(d->config + PCI_SUBSYS_VENDOR, subsys_vendor);
	put_le16(d->config + PCI_SUBSYS_ID, subsys_id);
	/* command: I/O, memory, bus master, parity, SERR, INTx disable */
	put_le16(d->wmask + PCI_COMMAND, 0x0547);
	d->wmask[0x0c] = 0xff;              /* cache line size */
	d->wmask[0x0d] = 0xff;              /* latency timer */
	d->wmask[PCI_INTERRUPT_LINE] = 0xff;
	d->cap_end = 0x40;
}

void pci_device_add_bar(struct pci_device *d, unsigned bar, uint64_t size, bool is_64,
			const struct io_ops *ops, void *opaque)
{
	d->bars[bar] = (struct pci_bar){ .size = size, .is_64 = is_64, .ops = ops, .opaque = opaque };
	d->config[PCI_BAR0 + 4 * bar] = is_64 ? PCI_BAR_MEM_64 : 0;
}

uint8_t pci_device_add_cap(struct pci_device *d, uint8_t id, const void *body, uint8_t body_len)
{
	unsigned off = d->cap_end;
	if (off + 2u + body_len > PCI_CONFIG_SIZE)
		return 0;
	d->config[off] = id;
	d->config[off + 1] = 0;
	memcpy(d->config + off + 2, body, body_len);
	if (d->last_cap)
		d->config[d->last_cap + 1] = (uint8_t)off;
	else
		d->config[PCI_CAP_PTR] = (uint8_t)off;
	d->config[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
	d->last_cap = (uint8_t)off;
	d->cap_end = (uint8_t)CV_MIN(CV_ALIGN_UP(off + 2u + body_len, 4u), 0xffu);
	return (uint8_t)off;
}

static uint64_t bar_address(const struct pci_device *d, unsigned i)
{
	uint64_t a = get_le32(d->config + PCI_BAR0 + 4 * i) & ~0xfULL;
	if (d->bars[i].is_64 && i + 1 < PCI_BARS)
		a |= (uint64_t)get_le32(d->config + PCI_BAR0 + 4 * (i + 1)) << 32;
	return a;
}

/* Re-evaluates where each BAR decodes and tells the device about changes. Bus write-locked. */
static void update_mappings(struct pci_bus *bus, struct pci_device *d)
{
	bool decode = get_le16(d->config + PCI_COMMAND) & PCI_COMMAND_MEMORY;
	for (unsigned i = 0; i < PCI_BARS; i++) {
		struct pci_bar *b = &d->bars[i];
		if (!b->size)
			continue;
		uint64_t a = bar_address(d, i);
		/* Only BARs inside our window are reachable: that is the range we claimed. */
		bool on = decode && a && (a & (b->size - 1)) == 0 && a >= bus->window_base &&
			  a - bus->window_base <= bus->window_size - b->size;
		if (on == b->mapped && (!on || a == b->mapped_addr))
			continue;
		if (b->mapped && d->ops && d->ops->bar_mapped)
			d->ops->bar_mapped(d, i, b->mapped_addr, false);
		b->mapped = on;
		b->mapped_addr = on ? a : 0;
		if (on && d->ops && d->ops->bar_mapped)
			d->ops->bar_mapped(d, i, a, true);
	}
}

/* Applies a write to one BAR dword: address bits below the size stay zero, flags stay put. */
static void write_bar_dword(struct pci_device *d, unsigned reg, uint32_t v)
{
	unsigned i = reg;
	bool high = false;
	if (i > 0 && d->bars[i - 1].is_64 && !d->bars[i].size) {
		i--;
		high = true;
	}
	const struct pci_bar *b = &d->bars[i];
	if (!b->size)
		return;
	uint8_t *p = d->config + PCI_BAR0 + 4 * reg;
	if (high) {
		uint64_t mask = ~(b->size - 1);
		put_le32(p, v & (uint32_t)(mask >> 32));
		return;
	}
	uint32_t flags = get_le32(p) & 0xf;
	put_le32(p, (v & (uint32_t)~(b->size - 1) & ~0xfu) | flags);
}

void pci_config_read(struct pci_bus *bus, unsigned slot, uint32_t off, uint8_t *data, uint32_t len)
{
	pthread_rwlock_rdlock(&bus->lock);
	struct pci_device *d = slot < PCI_SLOTS ? bus->slots[slot] : NULL;
	for (uint32_t i = 0; i < len; i++)
		data[i] = d && off + i < PCI_CONFIG_SIZE ? d->config[off + i] : 0xff;
	pthread_rwlock_unlock(&bus->lock);
}

void pci_config_write(struct pci_bus *bus, unsigned slot, uint32_t off, const uint8_t *data,
		      uint32_t len)
{
	pthread_rwlock_wrlock(&bus->lock);
	struct pci_device *d = slot < PCI_SLOTS ? bus->slots[slot] : NULL;
	if (!d || off >= PCI_CONFIG_SIZE) {
		pthread_rwlock_unlock(&bus->lock);
		return;
	}
	len = CV_MIN(len, PCI_CONFIG_SIZE - off);
	bool bars_touched = false;
	for (uint32_t i = 0; i < len; i++) {
		uint32_t o = off + i;
		if (o >= PCI_BAR0 && o < BAR_END) {
			bars_touched = true;
			continue;
		}
		d->config[o] = (uint8_t)((d->config[o] & ~d->wmask[o]) | (data[i] & d->wmask[o]));
	}
	if (bars_touched) {
		/* BAR writes are dword-wide in practice; merge partial ones into the dword. */
		for (uint32_t reg = 0; reg < PCI_BARS; reg++) {
			uint32_t start = PCI_BAR0 + 4 * reg;
			if (off + len <= start || off >= start + 4)
				continue;
			uint8_t dw[4];
			memcpy(dw, d->config + start, 4);
			for (uint32_t k = 0; k < 4; k++)
				if (start + k >= off && start + k < off + len)
					dw[k] = data[start + k - off];
			write_bar_dword(d, reg, get_le32(dw));
		}
	}
	if (bars_touched || (off < PCI_COMMAND + 2 && off + len > PCI_COMMAND))
		update_mappings(bus, d);
	if (d->ops && d->ops->config_written)
		d->ops->config_written(d, off, len);
	pthread_rwlock_unlock(&bus->lock);
}

void pci_device_load_config(struct pci_bus *bus, struct pci_device *d,
			    const uint8_t config[PCI_CONFIG_SIZE])
{
	pthread_rwlock_wrlock(&bus->lock);
	memcpy(d->config, config, PCI_CONFIG_SIZE);
	update_mappings(bus, d);
	if (d->ops && d->ops->config_written)
		d->ops->config_written(d, 0, PCI_CONFIG_SIZE);
	pthread_rwlock_unlock(&bus->lock);
}

/* Ports 0xcf8 (address latch, dword) and 0xcfc-0xcff (data window). */
static void conf1_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t size)
{
	struct pci_bus *bus = opaque;
	uint32_t addr = atomic_load((_Atomic uint32_t *)&bus->config_address);
	if (offset < 4) {
		uint8_t raw[4];
		put_le32(raw, addr);
		for (uint32_t i = 0; i < size; i++)
			data[i] = offset + i < 4 ? raw[offset + i] : 0xff;
		return;
	}
	unsigned bus_nr = (addr >> 16) & 0xff, slot = (addr >> 11) & 0x1f, fn = (addr >> 8) & 7;
	if (!(addr & CONF1_ENABLE) || bus_nr != 0 || fn != 0) {
		memset(data, 0xff, size);
		return;
	}
	pci_config_read(bus, slot, (addr & 0xfc) + (uint32_t)(offset - 4), data, size);
}

static void conf1_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t size)
{
	struct pci_bus *bus = opaque;
	if (offset < 4) {
		/* Only full dword writes set the latch; byte writes to 0xcf8 are other hardware's. */
		if (offset == 0 && size == 4)
			atomic_store((_Atomic uint32_t *)&bus->config_address, get_le32(data));
		return;
	}
	uint32_t addr = atomic_load((_Atomic uint32_t *)&bus->config_address);
	unsigned bus_nr = (addr >> 16) & 0xff, slot = (addr >> 11) & 0x1f, fn = (addr >> 8) & 7;
	if (!(addr & CONF1_ENABLE) || bus_nr != 0 || fn != 0)
		return;
	pci_config_write(bus, slot, (addr & 0xfc) + (uint32_t)(offset - 4), data, size);
}

static const struct io_ops conf1_ops = { .read = conf1_read, .write = conf1_write };

/* The MMIO window: find the mapped BAR that holds the address. */
static struct pci_bar *find_bar(struct pci_bus *bus, uint64_t addr, uint64_t *off)
{
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		struct pci_device *d = bus->slots[s];
		if (!d)
			continue;
		for (unsigned i = 0; i < PCI_BARS; i++) {
			struct pci_bar *b = &d->bars[i];
			if (b->mapped && addr >= b->mapped_addr && addr - b->mapped_addr < b->size) {
				*off = addr - b->mapped_addr;
				return b;
			}
		}
	}
	return NULL;
}

static void window_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t size)
{
	struct pci_bus *bus = opaque;
	uint64_t off;
	pthread_rwlock_rdlock(&bus->lock);
	struct pci_bar *b = find_bar(bus, bus->window_base + offset, &off);
	if (b && b->ops->read && size <= b->size - off)
		b->ops->read(b->opaque, off, data, size);
	else
		memset(data, 0xff, size);
	pthread_rwlock_unlock(&bus->lock);
}

static void window_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t size)
{
	struct pci_bus *bus = opaque;
	uint64_t off;
	pthread_rwlock_rdlock(&bus->lock);
	struct pci_bar *b = find_bar(bus, bus->window_base + offset, &off);
	if (b && b->ops->write && size <= b->size - off)
		b->ops->write(b->opaque, off, data, size);
	pthread_rwlock_unlock(&bus->lock);
}

static const struct io_ops window_ops = { .read = window_read, .write = window_write };

int pci_bus_init(struct pci_bus *bus, struct io_bus *pio, struct io_bus *mmio,
		 uint64_t window_base, uint64_t window_size, struct cv_error *err)
{
	memset(bus, 0, sizeof(*bus));
	pthread_rwlock_init(&bus->lock, NULL);
	bus->window_base = bus->window_next = window_base;
	bus->window_size = window_size;
	/* A host bridge at 00:00.0: Linux's conf1 sanity check looks for one. */
	pci_device_init(&bus->host_bridge, "host-bridge", 0x1b36, 0x0008, 0x060000, 0, 0x1b36,
			0x0008);
	bus->slots[0] = &bus->host_bridge;
	if (io_bus_register(pio, CONF1_ADDRESS, 8, &conf1_ops, bus, "pci-conf1", err) < 0 ||
	    io_bus_register(mmio, window_base, window_size, &window_ops, bus, "pci-window", err) < 0)
		return -1;
	return 0;
}

void pci_bus_destroy(struct pci_bus *bus)
{
	pthread_rwlock_destroy(&bus->lock);
}

int pci_bus_add_device(struct pci_bus *bus, struct pci_device *d, struct cv_error *err)
{
	pthread_rwlock_wrlock(&bus->lock);
	unsigned slot = 1;
	while (slot < PCI_SLOTS && bus->slots[slot])
		slot++;
	if (slot == PCI_SLOTS) {
		pthread_rwlock_unlock(&bus->lock);
		return cv_fail(err, CV_EXIT_USAGE, "PCI bus full: at most %d devices", PCI_SLOTS - 1);
	}
	/* Firmware's job: give every BAR a naturally aligned address in the window. */
	for (unsigned i = 0; i < PCI_BARS; i++) {
		struct pci_bar *b = &d->bars[i];
		if (!b->size)
			continue;
		uint64_t a = CV_ALIGN_UP(bus->window_next, b->size);
		if (a + b->size > bus->window_base + bus->window_size) {
			pthread_rwlock_unlock(&bus->lock);
			return cv_fail(err, CV_EXIT_USAGE, "PCI MMIO window full adding %s", d->name);
		}
		bus->window_next = a + b->size;
		uint32_t flags = get_le32(d->config + PCI_BAR0 + 4 * i) & 0xf;
		put_le32(d->config + PCI_BAR0 + 4 * i, (uint32_t)a | flags);
		if (b->is_64)
			put_le32(d->config + PCI_BAR0 + 4 * (i + 1), (uint32_t)(a >> 32));
	}
	d->slot = slot;
	d->bus = bus;
	bus->slots[slot] = d;
	pthread_rwlock_unlock(&bus->lock);
	return 0;
}
