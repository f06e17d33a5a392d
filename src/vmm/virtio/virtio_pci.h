/*
 * The virtio-pci modern transport (virtio 1.2, section 4.1): a PCI function whose BAR 0 holds
 * the common, ISR, notify and device configuration structures and whose BAR 1 holds the MSI-X
 * table. Queue notifications are KVM ioeventfds on the notify addresses, so a guest kick wakes
 * the I/O thread without a trip through the VMM's vCPU loop; interrupts are MSI-X irqfds.
 */
#ifndef CVISOR_VMM_VIRTIO_VIRTIO_PCI_H
#define CVISOR_VMM_VIRTIO_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"
#include "irq.h"
#include "pci/msix.h"
#include "pci/pci.h"
#include "virtio/device.h"

/* What a virtio-pci function needs from the VM. */
struct virtio_pci_env {
	struct pci_bus *bus;
	struct irq_routing *irq;
	struct evloop *loop;
	int vm_fd;
};

struct virtio_pci_notify {
	struct virtio_kick kick;
	uint64_t ioeventfd_addr;       /* registered KVM ioeventfd address, 0 if none */
};

struct virtio_pci {
	struct pci_device pci;
	struct msix msix;
	struct virtio_dev *dev;
	int vm_fd;
	uint32_t device_feature_select;
	uint32_t driver_feature_select;
	uint16_t queue_select;
	uint16_t msix_config;
	uint16_t queue_msix[VIRTIO_MAX_QUEUES];
	struct virtio_pci_notify notify[VIRTIO_MAX_QUEUES];
};

int virtio_pci_init(struct virtio_pci *vp, struct virtio_dev *dev,
		    const struct virtio_pci_env *env, struct cv_error *err);
void virtio_pci_destroy(struct virtio_pci *vp);

#endif
