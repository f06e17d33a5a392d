/*
 * Firmware tables and the memory map: ACPI and MP tables must checksum, point at each other and
 * describe every vCPU; the e820 map must cover exactly the guest's RAM around the MMIO hole. When
 * iasl (acpica-tools) is installed the ACPI tables are also handed to it, an independent parser.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "iasl.h"
#include "layout.h"
#include "memory.h"
#include "tables/acpi.h"
#include "tables/mptable.h"
#include "util.h"

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

static uint8_t buf[LAYOUT_ACPI_MAX];

/* Table at guest address gpa, inside buf built for base. */
static const uint8_t *at(uint64_t gpa)
{
	cr_assert_geq(gpa, LAYOUT_ACPI_TABLES);
	cr_assert_lt(gpa - LAYOUT_ACPI_TABLES, sizeof(buf));
	return buf + (gpa - LAYOUT_ACPI_TABLES);
}

static void check_table(const uint8_t *t, const char *sig)
{
	cr_assert_arr_eq(t, sig, 4);
	cr_assert_eq(sum(t, get_le32(t + 4)), 0, "%s checksum", sig);
}

Test(acpi, tables_link_and_checksum)
{
	for (unsigned cpus = 1; cpus <= 254; cpus += 51) {
		struct acpi_params p = { .n_cpus = cpus, .ioapic_id = (uint8_t)cpus,
					 .base = LAYOUT_ACPI_TABLES };
		size_t len;
		struct cv_error err = { 0 };
		cr_assert_eq(acpi_build(&p, buf, sizeof(buf), &len, &err), 0, "%s", err.msg);
		const uint8_t *rsdp = buf;
		cr_assert_arr_eq(rsdp, "RSD PTR ", 8);
		cr_assert_eq(sum(rsdp, 20), 0);
		cr_assert_eq(sum(rsdp, 36), 0);
		cr_assert_eq(rsdp[15], 2);
		const uint8_t *xsdt = at(get_le64(rsdp + 24));
		check_table(xsdt, "XSDT");
		cr_assert_eq(get_le32(xsdt + 4), 36 + 16);
		const uint8_t *fadt = at(get_le64(xsdt + 36));
		const uint8_t *madt = at(get_le64(xsdt + 44));
		check_table(fadt, "FACP");
		check_table(madt, "APIC");
		const uint8_t *dsdt = at(get_le64(fadt + ACPI_FADT_X_DSDT));
		check_table(dsdt, "DSDT");
		cr_assert_eq(get_le32(fadt + 40), get_le64(fadt + ACPI_FADT_X_DSDT));

		uint32_t flags = get_le32(fadt + ACPI_FADT_FLAGS);
		cr_assert_not(flags & ACPI_FADT_HW_REDUCED, "legacy IRQs must stay (serial IRQ 4)");
		cr_assert(flags & ACPI_FADT_RESET_REG_SUP);
		cr_assert_eq(fadt[ACPI_FADT_RESET_REG], 1, "reset register in I/O space");
		cr_assert_eq(get_le64(fadt + ACPI_FADT_RESET_REG + 4), PORT_ACPI_RESET);
		cr_assert_eq(get_le32(fadt + ACPI_FADT_PM1A_CNT_BLK), PORT_ACPI_PM1A_CNT);
		cr_assert_eq(get_le64(fadt + ACPI_FADT_X_PM1A_CNT_BLK + 4), PORT_ACPI_PM1A_CNT);
		cr_assert_eq(get_le32(fadt + ACPI_FADT_PM1A_EVT_BLK), PORT_ACPI_PM1A_EVT);
		cr_assert_eq(fadt[ACPI_FADT_PM1_EVT_LEN], 4);
		cr_assert_eq(fadt[ACPI_FADT_PM1_CNT_LEN], 2);
		cr_assert_eq(get_le16(fadt + ACPI_FADT_SCI_INT), ACPI_SCI_IRQ);
		cr_assert_eq(get_le32(fadt + ACPI_FADT_SMI_CMD), 0, "always in ACPI mode");
		const uint8_t *facs = at(get_le32(fadt + ACPI_FADT_FIRMWARE_CTRL));
		cr_assert_arr_eq(facs, "FACS", 4);
		cr_assert_eq(get_le32(fadt + ACPI_FADT_FIRMWARE_CTRL) % 64, 0, "FACS 64-byte aligned");
		/* The DSDT's _S5 package holds the sleep type the power device expects. */
		cr_assert(memmem(dsdt + 36, get_le32(dsdt + 4) - 36, "_S5_", 4));

		/* MADT: one enabled local APIC per vCPU with IDs 0..n-1, then the IOAPIC. */
		uint32_t mlen = get_le32(madt + 4);
		cr_assert_eq(get_le32(madt + 36), LAYOUT_LAPIC);
		unsigned lapics = 0, ioapics = 0, overrides = 0;
		for (uint32_t off = 44; off < mlen;) {
			const uint8_t *e = madt + off;
			cr_assert_geq(e[1], 2);
			if (e[0] == 0) {
				cr_assert_eq(e[3], lapics, "APIC IDs in order");
				cr_assert_eq(get_le32(e + 4) & 1, 1);
				lapics++;
			} else if (e[0] == 1) {
				cr_assert_eq(e[2], cpus);
				cr_assert_eq(get_le32(e + 4), LAYOUT_IOAPIC);
				ioapics++;
			} else if (e[0] == 2) {
				/* Only the SCI is overridden: ISA IRQ n stays on pin n, as KVM routes it. */
				cr_assert_eq(e[3], ACPI_SCI_IRQ);
				cr_assert_eq(get_le32(e + 4), ACPI_SCI_IRQ);
				overrides++;
			}
			off += e[1];
		}
		cr_assert_eq(lapics, cpus);
		cr_assert_eq(ioapics, 1);
		cr_assert_eq(overrides, 1);
		cr_assert_leq(len, sizeof(buf));
	}
}

Test(acpi, refuses_too_small_buffer)
{
	struct acpi_params p = { .n_cpus = 200, .ioapic_id = 200, .base = LAYOUT_ACPI_TABLES };
	size_t len;
	struct cv_error err = { 0 };
	cr_assert_eq(acpi_build(&p, buf, 512, &len, &err), -1);
}

/* iasl disassembles each table; any "Error" or a checksum complaint fails the test. */
Test(acpi, iasl_accepts_tables)
{
	if (!iasl_available())
		cr_skip_test("iasl (acpica-tools) not installed");
	struct acpi_params p = { .n_cpus = 4, .ioapic_id = 4, .base = LAYOUT_ACPI_TABLES };
	size_t len;
	struct cv_error err = { 0 };
	cr_assert_eq(acpi_build(&p, buf, sizeof(buf), &len, &err), 0);
	char dir[] = "/tmp/cvisor-acpi-XXXXXX";
	cr_assert(mkdtemp(dir));
	const uint8_t *xsdt = at(get_le64(buf + 24));
	const uint8_t *fadt = at(get_le64(xsdt + 36));
	const struct { const char *name; const uint8_t *t; } tables[] = {
		{ "facp", fadt }, { "apic", at(get_le64(xsdt + 44)) },
		{ "facs", at(get_le32(fadt + ACPI_FADT_FIRMWARE_CTRL)) },
		{ "dsdt", at(get_le64(fadt + ACPI_FADT_X_DSDT)) }, { "xsdt", xsdt },
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(tables); i++)
		iasl_check_table(dir, tables[i].name, tables[i].t);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "grep -Eq 'Hardware Reduced.*: 0' %s/facp.dsl", dir);
	cr_assert_eq(system(cmd), 0, "iasl sees a hardware-reduced FADT");
	snprintf(cmd, sizeof(cmd), "grep -q '_S5' %s/dsdt.dsl", dir);
	cr_assert_eq(system(cmd), 0, "iasl does not find _S5 in the DSDT");
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(mptable, floating_pointer_and_entries)
{
	static uint8_t mp[LAYOUT_MPTABLE_MAX];
	struct mptable_params p = { .n_cpus = 8, .ioapic_id = 8, .cpu_signature = 0x800f12,
				    .cpu_features = 0x178bfbff, .base = LAYOUT_MPTABLE };
	size_t len;
	struct cv_error err = { 0 };
	cr_assert_eq(mptable_build(&p, mp, sizeof(mp), &len, &err), 0, "%s", err.msg);
	cr_assert_arr_eq(mp, "_MP_", 4);
	cr_assert_eq(sum(mp, 16), 0);
	cr_assert_eq(get_le32(mp + 4), LAYOUT_MPTABLE + 16);
	const uint8_t *t = mp + 16;
	cr_assert_arr_eq(t, "PCMP", 4);
	uint16_t tlen = get_le16(t + 4);
	cr_assert_eq(sum(t, tlen), 0);
	cr_assert_eq(16 + tlen, len);
	unsigned cpus = 0, bsp = 0, irqs = 0, count = get_le16(t + 34);
	const uint8_t *e = t + 44;
	for (unsigned i = 0; i < count; i++) {
		switch (e[0]) {
		case 0:
			cr_assert_eq(e[1], cpus);
			bsp += (e[3] & 2) != 0;
			cpus++;
			e += 20;
			break;
		case 3:
			cr_assert_eq(e[5], e[7], "ISA IRQ %u routed to pin %u", e[5], e[7]);
			cr_assert_eq(e[6], 8);
			irqs++;
			e += 8;
			break;
		default:
			e += 8;
		}
	}
	cr_assert_eq(e, t + tlen);
	cr_assert_eq(cpus, 8);
	cr_assert_eq(bsp, 1);
	cr_assert_eq(irqs, MPTABLE_ISA_IRQS);
}

static uint64_t ram_total(const struct e820_entry *m, unsigned n)
{
	uint64_t t = 0;
	for (unsigned i = 0; i < n; i++)
		if (m[i].type == E820_RAM)
			t += m[i].size;
	return t;
}

Test(e820, covers_ram_around_the_hole)
{
	const uint64_t sizes[] = { CV_MiB(32), CV_MiB(1024), LAYOUT_MMIO_HOLE, CV_GiB(4), CV_GiB(6) };
	for (size_t s = 0; s < CV_ARRAY_SIZE(sizes); s++) {
		struct guest_memory gm;
		struct cv_error err = { 0 };
		cr_assert_eq(guest_memory_init(&gm, sizes[s], &err), 0, "%s", err.msg);
		struct e820_entry m[E820_MAX_ENTRIES];
		unsigned n = guest_memory_e820(&gm, m, E820_MAX_ENTRIES);
		/* Usable RAM = all memory minus the reserved low areas (EBDA and BIOS). */
		uint64_t reserved_low = (0xa0000 - LAYOUT_EBDA) + (LAYOUT_HIGH_MEMORY - LAYOUT_BIOS_AREA);
		cr_assert_eq(ram_total(m, n), sizes[s] - reserved_low - (0xe0000 - 0xa0000),
			     "size %llu", (unsigned long long)sizes[s]);
		for (unsigned i = 0; i < n; i++) {
			cr_assert(m[i].addr + m[i].size <= LAYOUT_MMIO_HOLE || m[i].addr >= LAYOUT_4GIB,
				  "entry %u overlaps the MMIO hole", i);
			if (i)
				cr_assert_geq(m[i].addr, m[i - 1].addr + m[i - 1].size, "sorted, disjoint");
		}
		cr_assert_eq(gm.n_regions, sizes[s] > LAYOUT_MMIO_HOLE ? 2u : 1u);
		/* Every RAM byte the map promises is reachable through the bounds-checked accessor. */
		for (unsigned i = 0; i < n; i++)
			if (m[i].type == E820_RAM)
				cr_assert(guest_memory_ptr(&gm, m[i].addr, m[i].size));
		guest_memory_free(&gm);
	}
}

Test(memory, pointer_checks_refuse_ranges_outside_ram)
{
	struct guest_memory gm;
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&gm, CV_GiB(4), &err), 0);
	cr_assert(guest_memory_ptr(&gm, 0, 4096));
	cr_assert_null(guest_memory_ptr(&gm, LAYOUT_MMIO_HOLE - 8, 16), "straddles the hole");
	cr_assert_null(guest_memory_ptr(&gm, LAYOUT_MMIO_HOLE, 1), "inside the hole");
	cr_assert(guest_memory_ptr(&gm, LAYOUT_4GIB, 4096));
	cr_assert_null(guest_memory_ptr(&gm, LAYOUT_4GIB + CV_GiB(1), 1), "past the end");
	cr_assert_null(guest_memory_ptr(&gm, UINT64_MAX - 2, 8), "wrap-around");
	cr_assert_null(guest_memory_ptr(&gm, 16, UINT64_MAX), "huge length");
	guest_memory_free(&gm);
	cr_assert_eq(guest_memory_init(&gm, 12345, &err), -1);
	cr_assert_eq(guest_memory_init(&gm, 0, &err), -1);
}

/* The start and end of the mapping (VMA) that contains addr, from /proc/self/maps. */
static bool mapping_of(uintptr_t addr, uintptr_t *start, uintptr_t *end)
{
	FILE *f = fopen("/proc/self/maps", "r");
	cr_assert_not_null(f);
	char line[512];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx", &a, &b) == 2 && addr >= a && addr < b) {
			*start = a;
			*end = b;
			found = true;
		}
	}
	fclose(f);
	return found;
}

/*
 * Guest RAM starts on a 2 MiB boundary, so KVM can map it with huge pages (it needs host and
 * guest addresses congruent modulo 2 MiB), the whole size is usable, and the slack mapped to
 * find the boundary is given back: the mapping (its own VMA, being MADV_HUGEPAGE) is exactly
 * the guest's RAM.
 */
Test(memory, ram_is_2mib_aligned_and_the_slack_is_returned)
{
	for (int k = 0; k < 8; k++) {
		struct guest_memory gm;
		struct cv_error err = { 0 };
		uint64_t size = CV_MiB(64) + (uint64_t)k * 4096;
		cr_assert_eq(guest_memory_init(&gm, size, &err), 0, "%s", err.msg);
		cr_assert_eq((uintptr_t)gm.host & (CV_MiB(2) - 1), 0, "guest RAM at %p", (void *)gm.host);
		gm.host[0] = 1;
		gm.host[size - 1] = 2;
		uintptr_t start, end;
		cr_assert(mapping_of((uintptr_t)gm.host, &start, &end));
		cr_assert_eq(start, (uintptr_t)gm.host, "mapping starts %#lx before the RAM",
			     (unsigned long)((uintptr_t)gm.host - start));
		cr_assert_eq(end, (uintptr_t)gm.host + size, "mapping ends %#lx after the RAM",
			     (unsigned long)(end - (uintptr_t)gm.host - size));
		guest_memory_free(&gm);
	}
}
