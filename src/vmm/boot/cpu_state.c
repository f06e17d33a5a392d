/*
 * Boot CPU state (see cpu_state.h). KVM's reset values are read first and only what the entry
 * protocol defines is changed, so fields we do not care about keep architectural defaults.
 */
#include "cpu_state.h"

#include <string.h>
#include <sys/ioctl.h>

#include "bytes.h"
#include "layout.h"
#include "util.h"

#define CR0_PE (1ULL << 0)
#define CR0_ET (1ULL << 4)
#define CR0_PG (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
#define PTE_PRESENT_RW 0x3ULL
#define PTE_HUGE 0x80ULL

static const uint64_t gdt[] = {
	0,                       /* null */
	0,                       /* unused */
	0x00af9b000000ffffULL,   /* 0x10: 64-bit code, execute/read */
	0x00cf93000000ffffULL,   /* 0x18: flat data, read/write */
	0x00cf9b000000ffffULL,   /* 0x20: flat 32-bit code, execute/read */
	0x00008b0000000067ULL,   /* 0x28: busy 32-bit TSS, base 0, limit 0x67 (as PVH requires) */
};

struct kvm_segment cpu_segment_from_descriptor(uint64_t d, uint16_t selector)
{
	struct kvm_segment s = {
		.base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24),
		.limit = (uint32_t)((d & 0xffff) | (((d >> 48) & 0xf) << 16)),
		.selector = selector,
		.type = (d >> 40) & 0xf,
		.present = (d >> 47) & 1,
		.dpl = (d >> 45) & 3,
		.db = (d >> 54) & 1,
		.s = (d >> 44) & 1,
		.l = (d >> 53) & 1,
		.g = (d >> 55) & 1,
		.avl = (d >> 52) & 1,
	};
	if (s.g)
		s.limit = (s.limit << 12) | 0xfff;
	return s;
}

int cpu_write_boot_tables(const struct guest_memory *gm, struct cv_error *err)
{
	uint8_t *g = guest_memory_ptr(gm, LAYOUT_GDT, sizeof(gdt));
	uint8_t *pml4 = guest_memory_ptr(gm, LAYOUT_PML4, 0x1000);
	uint8_t *pdpt = guest_memory_ptr(gm, LAYOUT_PDPT, 0x1000);
	uint8_t *pd = guest_memory_ptr(gm, LAYOUT_PD, 4 * 0x1000);
	if (!g || !pml4 || !pdpt || !pd)
		return cv_fail(err, CV_EXIT_SOFTWARE, "boot tables are not in RAM");
	for (size_t i = 0; i < CV_ARRAY_SIZE(gdt); i++)
		put_le64(g + 8 * i, gdt[i]);
	memset(pml4, 0, 0x1000);
	memset(pdpt, 0, 0x1000);
	put_le64(pml4, LAYOUT_PDPT | PTE_PRESENT_RW);
	/* 4 GiB identity map: 4 page directories of 512 x 2 MiB pages. */
	for (uint64_t i = 0; i < 4; i++) {
		put_le64(pdpt + 8 * i, (LAYOUT_PD + i * 0x1000) | PTE_PRESENT_RW);
		for (uint64_t j = 0; j < 512; j++)
			put_le64(pd + i * 0x1000 + 8 * j,
				 ((i * 512 + j) << 21) | PTE_PRESENT_RW | PTE_HUGE);
	}
	return 0;
}

int cpu_set_entry_state(int vcpu_fd, enum boot_entry mode, uint64_t entry, uint64_t params,
			struct cv_error *err)
{
	struct kvm_sregs sregs;
	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_GET_SREGS");
	struct kvm_segment data = cpu_segment_from_descriptor(gdt[GDT_SEL_DATA / 8], GDT_SEL_DATA);
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.tr = cpu_segment_from_descriptor(gdt[GDT_SEL_TSS / 8], GDT_SEL_TSS);
	sregs.gdt.base = LAYOUT_GDT;
	sregs.gdt.limit = sizeof(gdt) - 1;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;

	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;    /* reserved bit 1; interrupts off */
	regs.rip = entry;

	if (mode == BOOT_ENTRY_LINUX64) {
		sregs.cs = cpu_segment_from_descriptor(gdt[GDT_SEL_CODE64 / 8], GDT_SEL_CODE64);
		sregs.cr3 = LAYOUT_PML4;
		sregs.cr4 = CR4_PAE;
		sregs.efer = EFER_LME | EFER_LMA;
		sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
		regs.rsi = params;
		regs.rsp = regs.rbp = LAYOUT_BOOT_STACK;
	} else {
		sregs.cs = cpu_segment_from_descriptor(gdt[GDT_SEL_CODE32 / 8], GDT_SEL_CODE32);
		sregs.cr0 = CR0_PE | CR0_ET;
		sregs.cr3 = 0;
		sregs.cr4 = 0;
		sregs.efer = 0;
		regs.rbx = params;
	}
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_SET_SREGS");
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_SET_REGS");
	return 0;
}
