/*
 * MSI-X emulation (see msix.h).
 */
#include "msix.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "util.h"

#define ENTRY_ADDR_LO 0
#define ENTRY_ADDR_HI 4
#define ENTRY_DATA 8
#define ENTRY_CTRL 12
#define ENTRY_MASKED 0x1

int msix_init(struct msix *m, struct pci_device *dev, struct irq_routing *irq, unsigned nvec,
	      unsigned bar, uint32_t table_off, uint32_t pba_off, struct cv_error *err)
{
	memset(m, 0, sizeof(*m));
	if (nvec == 0 || nvec > MSIX_MAX_VECTORS)
		return cv_fail(err, CV_EXIT_SOFTWARE, "MSI-X: %u vectors", nvec);
	pthread_mutex_init(&m->lock, NULL);
	m->dev = dev;
	m->irq = irq;
	m->nvec = nvec;
	for (unsigned v = 0; v < nvec; v++) {
		m->routes[v].irqfd = -1;
		m->table[v * MSIX_ENTRY_SIZE + ENTRY_CTRL] = ENTRY_MASKED;   /* reset state */
	}
	uint8_t body[10];
	put_le16(body, (uint16_t)(nvec - 1));            /* message control: table size - 1 */
	put_le32(body + 2, table_off | bar);
	put_le32(body + 6, pba_off | bar);
	m->cap = pci_device_add_cap(dev, PCI_CAP_ID_MSIX, body, sizeof(body));
	if (!m->cap)
		return cv_fail(err, CV_EXIT_SOFTWARE, "MSI-X: no room in config space");
	/* The guest may only flip enable and function mask. */
	put_le16(dev->wmask + m->cap + 2, MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK);
	return 0;
}

void msix_destroy(struct msix *m)
{
	for (unsigned v = 0; v < m->nvec; v++)
		if (m->routes[v].irqfd >= 0)
			close(m->routes[v].irqfd);
	pthread_mutex_destroy(&m->lock);
}

static bool vector_masked(const struct msix *m, unsigned v)
{
	return !m->enabled || m->function_masked ||
	       (m->table[v * MSIX_ENTRY_SIZE + ENTRY_CTRL] & ENTRY_MASKED);
}

/* Makes sure vector v has a KVM route matching its table entry. Lock held. */
static bool ensure_route(struct msix *m, unsigned v)
{
	if (m->route_ok[v])
		return true;
	const uint8_t *e = m->table + v * MSIX_ENTRY_SIZE;
	uint64_t addr = get_le32(e + ENTRY_ADDR_LO) | (uint64_t)get_le32(e + ENTRY_ADDR_HI) << 32;
	struct cv_error err = { 0 };
	if (m->routes[v].irqfd < 0 && irq_msi_route_alloc(m->irq, &m->routes[v], &err) < 0) {
		fprintf(stderr, "cvisor-vmm: %s: MSI-X vector %u: %s\n", m->dev->name, v, err.msg);
		return false;
	}
	if (irq_msi_route_set(m->irq, &m->routes[v], addr, get_le32(e + ENTRY_DATA), &err) < 0) {
		fprintf(stderr, "cvisor-vmm: %s: MSI-X vector %u: %s\n", m->dev->name, v, err.msg);
		return false;
	}
	m->route_ok[v] = true;
	return true;
}

/* Delivers pending vectors that are no longer masked. Lock held. */
static void deliver_pending(struct msix *m)
{
	for (unsigned v = 0; v < m->nvec; v++) {
		if (!(m->pending & (1ULL << v)) || vector_masked(m, v))
			continue;
		if (ensure_route(m, v)) {
			m->pending &= ~(1ULL << v);
			irq_msi_trigger(&m->routes[v]);
		}
	}
}

void msix_table_read(struct msix *m, uint64_t off, uint8_t *data, uint32_t len)
{
	pthread_mutex_lock(&m->lock);
	for (uint32_t i = 0; i < len; i++)
		data[i] = off + i < m->nvec * MSIX_ENTRY_SIZE ? m->table[off + i] : 0;
	pthread_mutex_unlock(&m->lock);
}

void msix_table_write(struct msix *m, uint64_t off, const uint8_t *data, uint32_t len)
{
	pthread_mutex_lock(&m->lock);
	for (uint32_t i = 0; i < len; i++) {
		uint64_t o = off + i;
		if (o >= m->nvec * MSIX_ENTRY_SIZE)
			break;
		unsigned v = (unsigned)(o / MSIX_ENTRY_SIZE);
		unsigned field = (unsigned)(o % MSIX_ENTRY_SIZE);
		if (field >= ENTRY_CTRL + 1)
			continue;               /* reserved control bits are read-only zero */
		if (field == ENTRY_CTRL) {
			m->table[o] = data[i] & ENTRY_MASKED;
			continue;
		}
		if (m->table[o] != data[i]) {
			m->table[o] = data[i];
			m->route_ok[v] = false;  /* address or data changed: reprogram on use */
		}
	}
	deliver_pending(m);
	pthread_mutex_unlock(&m->lock);
}

void msix_pba_read(struct msix *m, uint64_t off, uint8_t *data, uint32_t len)
{
	pthread_mutex_lock(&m->lock);
	uint8_t raw[8];
	put_le64(raw, m->pending);
	for (uint32_t i = 0; i < len; i++)
		data[i] = off + i < sizeof(raw) ? raw[off + i] : 0;
	pthread_mutex_unlock(&m->lock);
}

void msix_config_written(struct msix *m, uint32_t off, uint32_t len)
{
	if (off + len <= m->cap + 2u || off >= m->cap + 4u)
		return;
	pthread_mutex_lock(&m->lock);
	uint16_t ctrl = get_le16(m->dev->config + m->cap + 2);
	m->enabled = ctrl & MSIX_CTRL_ENABLE;
	m->function_masked = ctrl & MSIX_CTRL_FUNCTION_MASK;
	deliver_pending(m);
	pthread_mutex_unlock(&m->lock);
}

void msix_notify(struct msix *m, unsigned vector)
{
	if (vector >= m->nvec)
		return;
	pthread_mutex_lock(&m->lock);
	if (vector_masked(m, vector) || !ensure_route(m, vector))
		m->pending |= 1ULL << vector;
	else
		irq_msi_trigger(&m->routes[vector]);
	pthread_mutex_unlock(&m->lock);
}

bool msix_enabled(struct msix *m)
{
	pthread_mutex_lock(&m->lock);
	bool on = m->enabled;
	pthread_mutex_unlock(&m->lock);
	return on;
}
