/*
 * Input format of the kernel loader fuzz target (fuzz_boot.c), shared with its seed generator
 * (boot_seeds.c): the kernel image file itself, byte for byte, followed by a 4-byte trailer with
 * the rest of the VM's boot configuration (inputs shorter than the trailer are images alone, with
 * the defaults). The image starts at offset 0 so that real kernels' first bytes are seeds as is.
 */
#ifndef CVISOR_TESTS_FUZZ_BOOT_INPUT_H
#define CVISOR_TESTS_FUZZ_BOOT_INPUT_H

#include <stdint.h>

#define BOOTF_TRAILER 4
/* trailer[0]: guest memory, BOOTF_MEM[b % count] */
static const uint64_t BOOTF_MEM[] = { 16ULL << 20, 40ULL << 20 };
/* trailer[1]: command line length, BOOTF_CMDLINE[b % count] */
static const uint32_t BOOTF_CMDLINE[] = { 0, 1, 255, 2047, 2048, 4095, 65535 };
/* trailer[2]: initrds, BOOTF_INITRD[b % count] bytes each; trailer[3] bit 0: two of them */
static const uint64_t BOOTF_INITRD[] = { 0, 1, 4095, 65537, 1ULL << 20, 24ULL << 20 };
#define BOOTF_TWO_INITRDS 0x01

#endif
