/*
 * MSI-X for a PCI function: the capability, the vector table and pending-bit array the guest
 * programs through a BAR, and delivery. Each vector gets a KVM MSI route and an irqfd the first
 * time it is unmasked with an address; notifying a masked vector only sets its pending bit, and
 * unmasking delivers what is pending, as the PCI spec requires.
 */
#ifndef CVISOR_VMM_PCI_MSIX_H
#define CVISOR_VMM_PCI_MSIX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "irq.h"
#include "pci.h"

#define MSIX_MAX_VECTORS 64
#define MSIX_ENTRY_SIZE 16
#define PCI_CAP_ID_MSIX 0x11
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_FUNCTION_MASK 0x4000

struct msix {
	pthread_mutex_t lock;
	struct pci_device *dev;
	struct irq_routing *irq;
	unsigned nvec;
	uint8_t cap;                                   /* capability offset in config space */
	uint8_t table[MSIX_MAX_VECTORS * MSIX_ENTRY_SIZE];
	uint64_t pending;                              /* PBA: bit per vector */
	struct msi_route routes[MSIX_MAX_VECTORS];
	bool route_ok[MSIX_MAX_VECTORS];               /* route programmed with the table entry */
	bool enabled;
	bool function_masked;
};

/*
 * Adds the capability to dev: table at table_off and PBA at pba_off, both in BAR `bar`, which
 * the caller declares and whose accesses it forwards to msix_table_read/write.
 */
int msix_init(struct msix *m, struct pci_device *dev, struct irq_routing *irq, unsigned nvec,
	      unsigned bar, uint32_t table_off, uint32_t pba_off, struct cv_error *err);
void msix_destroy(struct msix *m);

/* Table (off < nvec*16) and PBA accesses, offsets relative to the table start / PBA start. */
void msix_table_read(struct msix *m, uint64_t off, uint8_t *data, uint32_t len);
void msix_table_write(struct msix *m, uint64_t off, const uint8_t *data, uint32_t len);
void msix_pba_read(struct msix *m, uint64_t off, uint8_t *data, uint32_t len);

/* Call from the device's config_written hook: picks up enable/function-mask changes. */
void msix_config_written(struct msix *m, uint32_t off, uint32_t len);

/* Raises vector (or marks it pending if masked). Out-of-range vectors are ignored. */
void msix_notify(struct msix *m, unsigned vector);

/* True if the guest enabled MSI-X. */
bool msix_enabled(struct msix *m);

#endif
