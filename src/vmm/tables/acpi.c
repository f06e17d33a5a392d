/*
 * ACPI table construction (see acpi.h). Table layouts follow the ACPI 6.x specification; each
 * table is written field by field at its spec offset, then checksummed.
 */
#include "acpi.h"

#include <string.h>

#include "aml.h"
#include "bytes.h"
#include "layout.h"
#include "util.h"

#define OEM_ID "CVISOR"
#define OEM_TABLE_ID "CVISORVM"
#define CREATOR_ID "CVSR"

/* Cursor over the output buffer; tables are placed 16-byte aligned one after another. */
struct acpi_out {
	uint8_t *buf;
	size_t cap;
	size_t len;
	uint64_t base;
};

static uint8_t *alloc_table(struct acpi_out *o, size_t size, uint64_t *gpa, struct cv_error *err)
{
	/* 64-byte alignment satisfies the FACS, the strictest of the tables. */
	size_t off = CV_ALIGN_UP(o->len, (size_t)64);
	if (off + size > o->cap) {
		cv_fail(err, CV_EXIT_USAGE, "ACPI tables do not fit in %zu bytes", o->cap);
		return NULL;
	}
	memset(o->buf + off, 0, size);
	o->len = off + size;
	*gpa = o->base + off;
	return o->buf + off;
}

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)(0 - sum);
}

static void header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	put_le32(t + 4, len);
	t[8] = rev;
	memcpy(t + 10, OEM_ID, 6);
	memcpy(t + 16, OEM_TABLE_ID, 8);
	put_le32(t + 24, 1);                   /* OEM revision */
	memcpy(t + 28, CREATOR_ID, 4);
	put_le32(t + 32, 1);                   /* creator revision */
}

static void finish(uint8_t *t, uint32_t len)
{
	t[9] = 0;
	t[9] = checksum(t, len);
}

/* Generic Address Structure for a register of `bits` in I/O space. */
static void gas_io(uint8_t *p, uint16_t port, uint8_t bits, uint8_t access_size)
{
	p[0] = 1;        /* SystemIO */
	p[1] = bits;
	p[2] = 0;        /* bit offset */
	p[3] = access_size;   /* 1 byte, 2 word, 3 dword */
	put_le64(p + 4, port);
}

static void put16(uint8_t *p, uint16_t v)
{
	put_le16(p, v);
}

/* WordBusNumber / WordIO: a 16-bit address space descriptor the bridge produces. */
static void word_space(struct aml *a, uint8_t type, uint8_t type_flags, uint16_t min,
		       uint16_t max)
{
	uint8_t d[16] = { 0x88, 13, 0, type, 0x0c /* min and max fixed */, type_flags };
	put16(d + 8, min);
	put16(d + 10, max);
	put16(d + 14, (uint16_t)(max - min + 1));
	aml_bytes(a, d, sizeof(d));
}

/*
 * The DSDT: the _S5 sleep package our PM1a control register expects, and the PCI root bridge
 * (PNP0A03) with the windows it decodes. With ACPI on, Linux scans only the root bridges the
 * DSDT names: without this one it would never see the devices on bus 0. A VM whose devices are
 * on virtio-mmio goes without: its guest (often booted with pci=off) then neither sets up a
 * bridge it cannot reach nor spends boot time on it.
 */
static void build_dsdt(struct aml *a, bool pci_root)
{
	aml_name(a, "_S5_");
	aml_package(a, 4);
	aml_integer(a, ACPI_S5_SLEEP_TYPE);
	aml_integer(a, 0);
	aml_integer(a, 0);
	aml_integer(a, 0);
	aml_end(a);
	if (!pci_root)
		return;

	aml_scope(a, "\\_SB_");
	aml_device(a, "PCI0");
	aml_name(a, "_HID");
	aml_eisaid(a, "PNP0A03");
	aml_name(a, "_UID");
	aml_integer(a, 0);
	aml_name(a, "_SEG");
	aml_integer(a, 0);
	aml_name(a, "_BBN");
	aml_integer(a, 0);
	aml_name(a, "_CRS");
	aml_buffer(a);
	word_space(a, 2, 0, 0, 0);                       /* bus 0 only */
	static const uint8_t conf1[8] = { 0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8 };
	aml_bytes(a, conf1, sizeof(conf1));               /* the config ports themselves */
	word_space(a, 1, 3, 0x0000, 0x0cf7);             /* I/O below and above them */
	word_space(a, 1, 3, 0x0d00, 0xffff);
	uint8_t mem[26] = { 0x87, 23, 0, 0 /* memory */, 0x0c, 1 /* read-write */ };
	put_le32(mem + 10, (uint32_t)LAYOUT_PCI_WINDOW);
	put_le32(mem + 14, (uint32_t)(LAYOUT_PCI_WINDOW + LAYOUT_PCI_WINDOW_SIZE - 1));
	put_le32(mem + 22, (uint32_t)LAYOUT_PCI_WINDOW_SIZE);
	aml_bytes(a, mem, sizeof(mem));
	static const uint8_t end_tag[2] = { 0x79, 0 };
	aml_bytes(a, end_tag, sizeof(end_tag));
	aml_end(a);                                       /* _CRS buffer */
	aml_end(a);                                       /* PCI0 */
	aml_end(a);                                       /* \_SB */
}

int acpi_build(const struct acpi_params *p, uint8_t *buf, size_t cap, size_t *len,
	       struct cv_error *err)
{
	struct acpi_out o = { .buf = buf, .cap = cap, .base = p->base };
	uint64_t rsdp_gpa, xsdt_gpa, fadt_gpa, facs_gpa, dsdt_gpa, madt_gpa;

	uint8_t *rsdp = alloc_table(&o, 36, &rsdp_gpa, err);
	uint8_t *xsdt = rsdp ? alloc_table(&o, ACPI_HEADER_SIZE + 2 * 8, &xsdt_gpa, err) : NULL;
	uint8_t *fadt = xsdt ? alloc_table(&o, ACPI_FADT_SIZE, &fadt_gpa, err) : NULL;
	uint8_t *facs = fadt ? alloc_table(&o, ACPI_FACS_SIZE, &facs_gpa, err) : NULL;
	struct aml aml;
	aml_init(&aml);
	build_dsdt(&aml, !p->no_pci_root);
	if (aml.failed || aml.depth) {
		aml_free(&aml);
		return cv_fail(err, CV_EXIT_SOFTWARE, "DSDT: AML construction failed");
	}
	uint32_t dsdt_len = ACPI_HEADER_SIZE + (uint32_t)aml.len;
	uint8_t *dsdt = facs ? alloc_table(&o, dsdt_len, &dsdt_gpa, err) : NULL;
	/*
	 * MADT: header, LAPIC address + flags, n local APICs, IOAPIC, SCI override, overrides for
	 * the other level-triggered ISA lines, LAPIC NMI.
	 */
	unsigned n_level = 0;
	for (unsigned irq = 0; irq < 16; irq++)
		n_level += irq != ACPI_SCI_IRQ && (p->level_irqs & (1u << irq));
	uint32_t madt_len = ACPI_HEADER_SIZE + 8 + 8 * p->n_cpus + 12 + 10 + 10 * n_level + 6;
	uint8_t *madt = dsdt ? alloc_table(&o, madt_len, &madt_gpa, err) : NULL;
	if (!madt) {
		aml_free(&aml);
		return -1;
	}

	/* FACS: no firmware waking vector, no global lock owner; it has no checksum. */
	memcpy(facs, "FACS", 4);
	put_le32(facs + 4, ACPI_FACS_SIZE);
	facs[32] = 2;                                    /* version */

	/* DSDT */
	header(dsdt, "DSDT", dsdt_len, 2);
	memcpy(dsdt + ACPI_HEADER_SIZE, aml.p, aml.len);
	aml_free(&aml);
	finish(dsdt, dsdt_len);

	/* FADT, revision 6. SMI_CMD 0: the machine is always in ACPI mode, nothing to enable. */
	header(fadt, "FACP", ACPI_FADT_SIZE, 6);
	put_le32(fadt + ACPI_FADT_FIRMWARE_CTRL, (uint32_t)facs_gpa);
	put_le32(fadt + ACPI_FADT_DSDT, (uint32_t)dsdt_gpa);
	put_le16(fadt + ACPI_FADT_SCI_INT, ACPI_SCI_IRQ);
	put_le32(fadt + ACPI_FADT_SMI_CMD, 0);
	put_le32(fadt + ACPI_FADT_PM1A_EVT_BLK, PORT_ACPI_PM1A_EVT);
	put_le32(fadt + ACPI_FADT_PM1A_CNT_BLK, PORT_ACPI_PM1A_CNT);
	fadt[ACPI_FADT_PM1_EVT_LEN] = ACPI_PM1_EVT_LEN;
	fadt[ACPI_FADT_PM1_CNT_LEN] = ACPI_PM1_CNT_LEN;
	/*
	 * No "8042 present" bit although there is one (devices/i8042.h): Linux then probes it
	 * only when told to (i8042.nopnp, as in Firecracker's default boot arguments), and other
	 * guests boot as before, without a keyboard probe.
	 */
	put_le16(fadt + ACPI_FADT_IAPC_BOOT_ARCH,
		 (1u << 2) | (1u << 5));                 /* no VGA, no CMOS RTC */
	put_le32(fadt + ACPI_FADT_FLAGS,
		 1u |                                    /* WBINVD works */
		 (1u << 4) | (1u << 5) |                 /* no fixed power/sleep buttons */
		 ACPI_FADT_RESET_REG_SUP);
	gas_io(fadt + ACPI_FADT_RESET_REG, PORT_ACPI_RESET, 8, 1);
	fadt[ACPI_FADT_RESET_VALUE] = ACPI_RESET_VALUE;
	put_le64(fadt + ACPI_FADT_X_DSDT, dsdt_gpa);
	gas_io(fadt + ACPI_FADT_X_PM1A_EVT_BLK, PORT_ACPI_PM1A_EVT, 8 * ACPI_PM1_EVT_LEN, 2);
	gas_io(fadt + ACPI_FADT_X_PM1A_CNT_BLK, PORT_ACPI_PM1A_CNT, 8 * ACPI_PM1_CNT_LEN, 2);
	memcpy(fadt + 268, "CVISOR\0\0", 8);             /* hypervisor vendor identity */
	finish(fadt, ACPI_FADT_SIZE);

	/* MADT */
	header(madt, "APIC", madt_len, 5);
	put_le32(madt + 36, (uint32_t)LAYOUT_LAPIC);
	put_le32(madt + 40, 1);                          /* PCAT_COMPAT: 8259s present */
	uint8_t *e = madt + 44;
	for (unsigned i = 0; i < p->n_cpus; i++, e += 8) {
		e[0] = 0;                                /* processor local APIC */
		e[1] = 8;
		e[2] = (uint8_t)i;                       /* ACPI processor UID */
		e[3] = (uint8_t)i;                       /* APIC ID */
		put_le32(e + 4, 1);                      /* enabled */
	}
	e[0] = 1;                                        /* I/O APIC */
	e[1] = 12;
	e[2] = p->ioapic_id;
	put_le32(e + 4, (uint32_t)LAYOUT_IOAPIC);
	put_le32(e + 8, 0);                              /* GSI base */
	e += 12;
	e[0] = 2;                                        /* interrupt source override: the SCI */
	e[1] = 10;
	e[2] = 0;                                        /* ISA bus */
	e[3] = ACPI_SCI_IRQ;
	put_le32(e + 4, ACPI_SCI_IRQ);
	put_le16(e + 8, 0x000d);                         /* active high, level triggered */
	e += 10;
	for (unsigned irq = 0; irq < 16; irq++) {
		if (irq == ACPI_SCI_IRQ || !(p->level_irqs & (1u << irq)))
			continue;
		/* Same pin, level-triggered: with ISA's edge default, a line that another device
		 * holds up would hide this device's interrupts. */
		e[0] = 2;
		e[1] = 10;
		e[2] = 0;
		e[3] = (uint8_t)irq;
		put_le32(e + 4, irq);
		put_le16(e + 8, 0x000d);
		e += 10;
	}
	e[0] = 4;                                        /* local APIC NMI */
	e[1] = 6;
	e[2] = 0xff;                                     /* all processors */
	put_le16(e + 3, 0);
	e[5] = 1;                                        /* LINT1 */
	finish(madt, madt_len);

	/* XSDT */
	uint32_t xsdt_len = ACPI_HEADER_SIZE + 2 * 8;
	header(xsdt, "XSDT", xsdt_len, 1);
	put_le64(xsdt + 36, fadt_gpa);
	put_le64(xsdt + 44, madt_gpa);
	finish(xsdt, xsdt_len);

	/* RSDP (ACPI 2.0+): the first checksum covers 20 bytes, the extended one all 36. */
	memcpy(rsdp, "RSD PTR ", 8);
	memcpy(rsdp + 9, OEM_ID, 6);
	rsdp[15] = 2;
	put_le32(rsdp + 20, 36);
	put_le64(rsdp + 24, xsdt_gpa);
	rsdp[8] = checksum(rsdp, 20);
	rsdp[32] = checksum(rsdp, 36);

	*len = o.len;
	return 0;
}
