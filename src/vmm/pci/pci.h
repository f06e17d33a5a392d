/*
 * A PCI bus 0 with a host bridge, reached through configuration mechanism #1 (ports 0xcf8 and
 * 0xcfc), the way Linux probes PCI without firmware. cvisor plays firmware: it assigns every BAR
 * an address in the 32-bit MMIO window at setup; the guest may still move or disable BARs, and
 * devices hear about it through bar_mapped(). BAR accesses are dispatched under a read lock, so
 * config writes (which remap BARs) can run concurrently from other vCPUs.
 */
#ifndef CVISOR_VMM_PCI_PCI_H
#define CVISOR_VMM_PCI_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/bus.h"
#include "error.h"

#define PCI_SLOTS 32
#define PCI_BARS 6
#define PCI_CONFIG_SIZE 256

/* Standard configuration header offsets and bits. */
#define PCI_VENDOR_ID       0x00
#define PCI_DEVICE_ID       0x02
#define PCI_COMMAND         0x04
#define PCI_STATUS          0x06
#define PCI_REVISION        0x08
#define PCI_CLASS_PROG      0x09
#define PCI_HEADER_TYPE     0x0e
#define PCI_BAR0            0x10
#define PCI_SUBSYS_VENDOR   0x2c
#define PCI_SUBSYS_ID       0x2e
#define PCI_CAP_PTR         0x34
#define PCI_INTERRUPT_LINE  0x3c
#define PCI_INTERRUPT_PIN   0x3d
#define PCI_COMMAND_MEMORY  0x0002
#define PCI_COMMAND_MASTER  0x0004
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS_CAP_LIST 0x0010
#define PCI_BAR_MEM_64      0x04

struct pci_device;

struct pci_device_ops {
	/* A config write landed at [off, off+len); the new bytes are in d->config. */
	void (*config_written)(struct pci_device *d, uint32_t off, uint32_t len);
	/* BAR `bar` starts (mapped) or stops (!mapped) answering at addr. */
	void (*bar_mapped)(struct pci_device *d, unsigned bar, uint64_t addr, bool mapped);
};

struct pci_bar {
	uint64_t size;              /* power of two; 0 = BAR unused */
	bool is_64;                 /* occupies this and the next BAR register */
	const struct io_ops *ops;   /* accesses inside the BAR, offset from its start */
	void *opaque;
	bool mapped;                /* current decode state, as last reported */
	uint64_t mapped_addr;
};

struct pci_bus;

struct pci_device {
	const char *name;
	uint8_t config[PCI_CONFIG_SIZE];
	uint8_t wmask[PCI_CONFIG_SIZE];   /* bits the guest may change (BARs handled apart) */
	struct pci_bar bars[PCI_BARS];
	const struct pci_device_ops *ops;
	void *opaque;
	uint8_t last_cap;                  /* offset of the last capability, 0 if none */
	uint8_t cap_end;                   /* where the next capability goes */
	unsigned slot;
	struct pci_bus *bus;
};

struct pci_bus {
	pthread_rwlock_t lock;
	uint32_t config_address;           /* the 0xcf8 latch */
	struct pci_device *slots[PCI_SLOTS];
	struct pci_device host_bridge;
	uint64_t window_base;
	uint64_t window_size;
	uint64_t window_next;              /* BAR allocator */
};

/* Creates the bus and its host bridge; claims 0xcf8-0xcff and the MMIO window. */
int pci_bus_init(struct pci_bus *bus, struct io_bus *pio, struct io_bus *mmio,
		 uint64_t window_base, uint64_t window_size, struct cv_error *err);
void pci_bus_destroy(struct pci_bus *bus);

/* Fills the identity of a type-0 function; capabilities and BARs are added next. */
void pci_device_init(struct pci_device *d, const char *name, uint16_t vendor, uint16_t device,
		     uint32_t class_code, uint8_t revision, uint16_t subsys_vendor,
		     uint16_t subsys_id);

/* Declares a memory BAR. */
void pci_device_add_bar(struct pci_device *d, unsigned bar, uint64_t size, bool is_64,
			const struct io_ops *ops, void *opaque);

/*
 * Appends a capability: `id`, then body bytes (everything after the 2-byte header). Returns its
 * config offset, or 0 if config space is full.
 */
uint8_t pci_device_add_cap(struct pci_device *d, uint8_t id, const void *body, uint8_t body_len);

/* Plugs the device into the next free slot and assigns its BARs (memory decode left off). */
int pci_bus_add_device(struct pci_bus *bus, struct pci_device *d, struct cv_error *err);

/*
 * Snapshot restore: replaces the device's whole configuration space, re-evaluates where its
 * BARs decode (bar_mapped) and tells it what changed (config_written over the whole space).
 */
void pci_device_load_config(struct pci_bus *bus, struct pci_device *d,
			    const uint8_t config[PCI_CONFIG_SIZE]);

/* Raw config access, as the conf1 ports perform it (exposed for tests). */
void pci_config_read(struct pci_bus *bus, unsigned slot, uint32_t off, uint8_t *data, uint32_t len);
void pci_config_write(struct pci_bus *bus, unsigned slot, uint32_t off, const uint8_t *data,
		      uint32_t len);

#endif
