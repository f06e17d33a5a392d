/*
 * MP table construction (see mptable.h). ISA IRQ n is routed to IOAPIC pin n, matching KVM's
 * default in-kernel routing; LINT0 is ExtINT (the 8259 path) and LINT1 NMI on every CPU.
 */
#include "mptable.h"

#include <string.h>

#include "bytes.h"
#include "layout.h"

#define FLOATING_SIZE 16
#define HEADER_SIZE 44
#define PROCESSOR_SIZE 20
#define ENTRY_SIZE 8
#define LAPIC_VERSION 0x14
#define IOAPIC_VERSION 0x11

enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_IOINTR = 3, MP_LINTR = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)(0 - sum);
}

int mptable_build(const struct mptable_params *p, uint8_t *buf, size_t cap, size_t *len,
		  struct cv_error *err)
{
	unsigned n_entries = p->n_cpus + 1 + 1 + MPTABLE_ISA_IRQS + 2;
	size_t table_len = HEADER_SIZE + PROCESSOR_SIZE * p->n_cpus +
			   ENTRY_SIZE * (1 + 1 + MPTABLE_ISA_IRQS + 2);
	size_t total = FLOATING_SIZE + table_len;
	if (total > cap || table_len > 0xffff)
		return cv_fail(err, CV_EXIT_USAGE, "MP table for %u CPUs does not fit", p->n_cpus);
	memset(buf, 0, total);

	uint8_t *fp = buf;
	uint8_t *t = buf + FLOATING_SIZE;
	memcpy(fp, "_MP_", 4);
	put_le32(fp + 4, (uint32_t)(p->base + FLOATING_SIZE));
	fp[8] = 1;           /* length in 16-byte units */
	fp[9] = 4;           /* spec revision 1.4 */
	/* feature bytes 0: a configuration table is present; virtual-wire mode (no IMCR). */
	fp[10] = checksum(fp, FLOATING_SIZE);

	memcpy(t, "PCMP", 4);
	put_le16(t + 4, (uint16_t)table_len);
	t[6] = 4;
	memcpy(t + 8, "CVISOR  ", 8);
	memcpy(t + 16, "CVISOR-VMM  ", 12);
	put_le16(t + 34, (uint16_t)n_entries);
	put_le32(t + 36, (uint32_t)LAYOUT_LAPIC);

	uint8_t *e = t + HEADER_SIZE;
	for (unsigned i = 0; i < p->n_cpus; i++, e += PROCESSOR_SIZE) {
		e[0] = MP_PROCESSOR;
		e[1] = (uint8_t)i;                       /* local APIC ID */
		e[2] = LAPIC_VERSION;
		e[3] = 1 | (i == 0 ? 2 : 0);             /* enabled, bootstrap processor */
		put_le32(e + 4, p->cpu_signature);
		put_le32(e + 8, p->cpu_features);
	}
	e[0] = MP_BUS;
	e[1] = 0;
	memcpy(e + 2, "ISA   ", 6);
	e += ENTRY_SIZE;
	e[0] = MP_IOAPIC;
	e[1] = p->ioapic_id;
	e[2] = IOAPIC_VERSION;
	e[3] = 1;                                        /* usable */
	put_le32(e + 4, (uint32_t)LAYOUT_IOAPIC);
	e += ENTRY_SIZE;
	for (unsigned irq = 0; irq < MPTABLE_ISA_IRQS; irq++, e += ENTRY_SIZE) {
		e[0] = MP_IOINTR;
		e[1] = MP_INT;
		/* Polarity/trigger conform to the bus (edge), except lines shared level-triggered. */
		put_le16(e + 2, (p->level_irqs & (1u << irq)) ? 0x000d : 0);
		e[4] = 0;                                /* source bus: ISA */
		e[5] = (uint8_t)irq;
		e[6] = p->ioapic_id;
		e[7] = (uint8_t)irq;                     /* IOAPIC pin */
	}
	const uint8_t lint_type[2] = { MP_EXTINT, MP_NMI };
	for (unsigned lint = 0; lint < 2; lint++, e += ENTRY_SIZE) {
		e[0] = MP_LINTR;
		e[1] = lint_type[lint];
		e[4] = 0;
		e[5] = 0;
		e[6] = 0xff;                             /* every local APIC */
		e[7] = (uint8_t)lint;
	}
	t[7] = checksum(t, table_len);
	*len = total;
	return 0;
}
