/*
 * Preparing guest memory for the first instruction of a Linux kernel: load the kernel, the
 * initrd (several files are concatenated, as the kernel accepts concatenated cpio archives), the
 * command line, and the boot parameters of the entry protocol the image uses (boot_params for
 * the 64-bit boot protocol, hvm_start_info for PVH), with the e820 map and the ACPI RSDP address.
 */
#ifndef CVISOR_VMM_BOOT_BOOT_H
#define CVISOR_VMM_BOOT_BOOT_H

#include "kernel.h"
#include "memory.h"

#define BOOT_MAX_INITRDS 8

struct boot_config {
	const char *kernel;
	const char *initrds[BOOT_MAX_INITRDS];
	unsigned n_initrds;
	const char *cmdline;        /* NULL: empty */
};

struct boot_plan {
	struct kernel_image kernel;
	enum boot_entry mode;
	uint64_t entry;
	uint64_t params;            /* boot_params (LINUX64) or hvm_start_info (PVH) */
	uint64_t initrd_addr;
	uint64_t initrd_size;
};

int boot_prepare(const struct boot_config *bc, const struct guest_memory *gm, uint64_t rsdp_gpa,
		 struct boot_plan *plan, struct cv_error *err);

/* The pieces of boot_prepare, exposed for tests. */
int boot_load_initrds(const struct boot_config *bc, const struct guest_memory *gm,
		      const struct kernel_image *k, struct boot_plan *plan, struct cv_error *err);
int boot_write_zero_page(const struct guest_memory *gm, const struct boot_plan *plan,
			 uint64_t rsdp_gpa, struct cv_error *err);
int boot_write_pvh_start_info(const struct guest_memory *gm, const struct boot_plan *plan,
			      uint64_t rsdp_gpa, struct cv_error *err);

#endif
