/*
 * Kernel images cvisor boots: an uncompressed vmlinux ELF (entered through its PVH note if it has
 * one, else at its ELF entry with the 64-bit boot protocol) or a bzImage (64-bit boot protocol).
 * Parsing validates everything against the file's size before anything is trusted; loading then
 * checks every destination against guest RAM.
 */
#ifndef CVISOR_VMM_BOOT_KERNEL_H
#define CVISOR_VMM_BOOT_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "memory.h"

enum kernel_format { KERNEL_ELF, KERNEL_BZIMAGE };

enum boot_entry {
	BOOT_ENTRY_LINUX64,   /* long mode, %rsi = boot_params */
	BOOT_ENTRY_PVH,       /* 32-bit protected mode, paging off, %ebx = hvm_start_info */
};

#define ELF_MAX_SEGMENTS 16
#define SETUP_HEADER_COPY_MAX 0x90   /* 0x1f1 .. 0x280 */

struct elf_segment {
	uint64_t offset;     /* in the file */
	uint64_t filesz;
	uint64_t paddr;
	uint64_t memsz;
};

struct kernel_image {
	enum kernel_format format;
	enum boot_entry entry_mode;
	uint64_t entry;             /* guest physical */
	uint64_t load_start;        /* guest physical range the kernel needs */
	uint64_t load_end;
	uint32_t cmdline_max;       /* longest command line the kernel accepts, excluding NUL */
	uint64_t initrd_addr_max;   /* highest address the initrd may end at (inclusive) */
	uint16_t protocol;          /* boot protocol version (bzImage), 0 for ELF */

	/* ELF */
	struct elf_segment segments[ELF_MAX_SEGMENTS];
	unsigned n_segments;

	/* bzImage */
	uint64_t payload_offset;    /* protected-mode code in the file */
	uint64_t payload_size;
	uint8_t setup_header[SETUP_HEADER_COPY_MAX];   /* bytes 0x1f1.. of the file */
	uint32_t setup_header_len;
};

/* Identifies and validates an image held in memory. */
int kernel_parse(const uint8_t *file, size_t len, struct kernel_image *out, struct cv_error *err);
int elf_parse(const uint8_t *file, size_t len, struct kernel_image *out, struct cv_error *err);
int bzimage_parse(const uint8_t *file, size_t len, struct kernel_image *out, struct cv_error *err);

/* Copies a parsed image into guest memory at its load addresses. */
int kernel_load(const struct kernel_image *k, const uint8_t *file, size_t len,
		const struct guest_memory *gm, struct cv_error *err);

/* Where a bzImage's protected-mode code is placed (its 64-bit entry is 0x200 past it). */
#define BZIMAGE_LOAD_ADDR 0x100000ULL
#define ELF_CMDLINE_MAX 2047     /* x86 COMMAND_LINE_SIZE - 1 */

#endif
