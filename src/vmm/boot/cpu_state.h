/*
 * The boot CPU's state at the kernel's first instruction: a flat GDT, identity page tables for
 * the first 4 GiB, and the registers each entry protocol prescribes (long mode with %rsi for the
 * 64-bit boot protocol, 32-bit protected mode without paging and %ebx for PVH).
 */
#ifndef CVISOR_VMM_BOOT_CPU_STATE_H
#define CVISOR_VMM_BOOT_CPU_STATE_H

#include <linux/kvm.h>
#include <stdint.h>

#include "error.h"
#include "kernel.h"
#include "memory.h"

/* GDT selectors, as the 64-bit boot protocol requires (__BOOT_CS 0x10, __BOOT_DS 0x18). */
#define GDT_SEL_CODE64 0x10
#define GDT_SEL_DATA   0x18
#define GDT_SEL_CODE32 0x20
#define GDT_SEL_TSS    0x28

/* Writes the GDT and page tables into guest memory (once per VM). */
int cpu_write_boot_tables(const struct guest_memory *gm, struct cv_error *err);

/* Segment register contents that a GDT descriptor implies; exposed for tests. */
struct kvm_segment cpu_segment_from_descriptor(uint64_t desc, uint16_t selector);

/* Sets registers and system registers of vcpu_fd to enter `entry` in `mode`. */
int cpu_set_entry_state(int vcpu_fd, enum boot_entry mode, uint64_t entry, uint64_t params,
			struct cv_error *err);

#endif
