/*
 * Interrupt routing for devices: the KVM GSI routing table (the default ISA/IOAPIC routes plus
 * one MSI route per device vector) and irqfds, so a device raises an MSI by writing an eventfd
 * instead of an ioctl through the VMM. Thread-safe: vCPU threads reprogram MSI-X tables while
 * the I/O thread signals.
 */
#ifndef CVISOR_VMM_IRQ_H
#define CVISOR_VMM_IRQ_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct irq_routing {
	pthread_mutex_t lock;
	int vm_fd;
	struct kvm_irq_routing_entry *entries;
	unsigned n;
	unsigned cap;
	unsigned next_gsi;
	unsigned max_gsi;
};

/* One MSI source: a GSI with its route and the eventfd that injects it. */
struct msi_route {
	unsigned gsi;
	int irqfd;
	bool routed;
};

int irq_routing_init(struct irq_routing *r, int vm_fd, unsigned max_gsi, struct cv_error *err);
void irq_routing_destroy(struct irq_routing *r);

/* Allocates a GSI and its irqfd; the route is set later with irq_msi_route_set. */
int irq_msi_route_alloc(struct irq_routing *r, struct msi_route *m, struct cv_error *err);
/* Points the GSI at an MSI address/data pair and commits the table to KVM. */
int irq_msi_route_set(struct irq_routing *r, struct msi_route *m, uint64_t addr, uint32_t data,
		      struct cv_error *err);

/* Injects the MSI (non-blocking eventfd write). */
void irq_msi_trigger(const struct msi_route *m);

#endif
