/*
 * GSI routing and irqfds (see irq.h). KVM replaces the whole routing table on every
 * KVM_SET_GSI_ROUTING, so we keep the full table here and resubmit it; it starts as a copy of
 * KVM's default: ISA IRQs 0-15 on both 8259s and the IOAPIC, 16-23 on the IOAPIC.
 */
#include "irq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "layout.h"

#define FIRST_MSI_GSI GSI_COUNT

static int add_entry(struct irq_routing *r, const struct kvm_irq_routing_entry *e,
		     struct cv_error *err)
{
	if (r->n == r->cap) {
		unsigned ncap = r->cap ? r->cap * 2 : 64;
		struct kvm_irq_routing_entry *n = realloc(r->entries, ncap * sizeof(*n));
		if (!n)
			return cv_fail(err, CV_EXIT_OSERR, "out of memory");
		r->entries = n;
		r->cap = ncap;
	}
	r->entries[r->n++] = *e;
	return 0;
}

static int commit(struct irq_routing *r, struct cv_error *err)
{
	size_t size = sizeof(struct kvm_irq_routing) + r->n * sizeof(struct kvm_irq_routing_entry);
	struct kvm_irq_routing *t = calloc(1, size);
	if (!t)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	t->nr = r->n;
	memcpy(t->entries, r->entries, r->n * sizeof(r->entries[0]));
	int rc = ioctl(r->vm_fd, KVM_SET_GSI_ROUTING, t);
	free(t);
	if (rc < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_SET_GSI_ROUTING (%u entries)", r->n);
	return 0;
}

int irq_routing_init(struct irq_routing *r, int vm_fd, unsigned max_gsi, struct cv_error *err)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->vm_fd = vm_fd;
	r->next_gsi = FIRST_MSI_GSI;
	r->max_gsi = max_gsi;
	for (unsigned gsi = 0; gsi < GSI_COUNT; gsi++) {
		struct kvm_irq_routing_entry e = { .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP };
		if (gsi < 16) {
			e.u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
			e.u.irqchip.pin = gsi % 8;
			if (add_entry(r, &e, err) < 0)
				return -1;
		}
		e.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		e.u.irqchip.pin = gsi;
		if (add_entry(r, &e, err) < 0)
			return -1;
	}
	return commit(r, err);
}

void irq_routing_destroy(struct irq_routing *r)
{
	free(r->entries);
	r->entries = NULL;
	r->n = r->cap = 0;
	pthread_mutex_destroy(&r->lock);
}

int irq_msi_route_alloc(struct irq_routing *r, struct msi_route *m, struct cv_error *err)
{
	memset(m, 0, sizeof(*m));
	m->irqfd = -1;
	pthread_mutex_lock(&r->lock);
	if (r->next_gsi >= r->max_gsi) {
		pthread_mutex_unlock(&r->lock);
		return cv_fail(err, CV_EXIT_OSERR, "out of interrupt routes (KVM allows %u)",
			       r->max_gsi);
	}
	m->gsi = r->next_gsi++;
	pthread_mutex_unlock(&r->lock);
	m->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->irqfd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "eventfd for GSI %u", m->gsi);
	struct kvm_irqfd fd = { .fd = (uint32_t)m->irqfd, .gsi = m->gsi };
	if (ioctl(r->vm_fd, KVM_IRQFD, &fd) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "KVM_IRQFD for GSI %u", m->gsi);
		close(m->irqfd);
		m->irqfd = -1;
		return -1;
	}
	return 0;
}

int irq_msi_route_set(struct irq_routing *r, struct msi_route *m, uint64_t addr, uint32_t data,
		      struct cv_error *err)
{
	struct kvm_irq_routing_entry e = {
		.gsi = m->gsi,
		.type = KVM_IRQ_ROUTING_MSI,
		.u.msi = { .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32),
			   .data = data },
	};
	pthread_mutex_lock(&r->lock);
	int rc = 0;
	if (m->routed) {
		for (unsigned i = 0; i < r->n; i++)
			if (r->entries[i].gsi == m->gsi && r->entries[i].type == KVM_IRQ_ROUTING_MSI)
				r->entries[i] = e;
	} else {
		rc = add_entry(r, &e, err);
		m->routed = rc == 0;
	}
	if (rc == 0)
		rc = commit(r, err);
	pthread_mutex_unlock(&r->lock);
	return rc;
}

void irq_msi_trigger(const struct msi_route *m)
{
	uint64_t one = 1;
	if (m->irqfd >= 0 && write(m->irqfd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, so an interrupt is pending anyway */
	}
}
