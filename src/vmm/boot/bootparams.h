/*
 * Byte offsets of the Linux x86 boot protocol structures we read or write: the bzImage setup
 * header (which the kernel also expects copied into boot_params at the same offsets) and the
 * "zero page" (struct boot_params). Kept as offsets, not a packed struct, because we read them
 * out of untrusted files and write them into guest memory; see Documentation/x86/boot.rst.
 */
#ifndef CVISOR_VMM_BOOT_BOOTPARAMS_H
#define CVISOR_VMM_BOOT_BOOTPARAMS_H

/* setup header, offsets from the start of the bzImage / boot_params */
#define HDR_SETUP_SECTS        0x1f1  /* u8 */
#define HDR_BOOT_FLAG          0x1fe  /* u16 0xAA55 */
#define HDR_JUMP               0x200  /* u16; its high byte + 0x202 = end of header */
#define HDR_MAGIC              0x202  /* u32 "HdrS" */
#define HDR_VERSION            0x206  /* u16 */
#define HDR_TYPE_OF_LOADER     0x210  /* u8 */
#define HDR_LOADFLAGS          0x211  /* u8 */
#define HDR_CODE32_START       0x214  /* u32 */
#define HDR_RAMDISK_IMAGE      0x218  /* u32 */
#define HDR_RAMDISK_SIZE       0x21c  /* u32 */
#define HDR_HEAP_END_PTR       0x224  /* u16 */
#define HDR_CMD_LINE_PTR       0x228  /* u32 */
#define HDR_INITRD_ADDR_MAX    0x22c  /* u32 */
#define HDR_KERNEL_ALIGNMENT   0x230  /* u32 */
#define HDR_RELOCATABLE        0x234  /* u8 */
#define HDR_XLOADFLAGS         0x236  /* u16 */
#define HDR_CMDLINE_SIZE       0x238  /* u32 */
#define HDR_PREF_ADDRESS       0x258  /* u64 */
#define HDR_INIT_SIZE          0x260  /* u32 */
#define HDR_END_MAX            0x280  /* headers never extend past this */

#define HDR_MAGIC_VALUE        0x53726448u   /* "HdrS" little-endian */
#define HDR_BOOT_FLAG_VALUE    0xaa55
#define LOADFLAG_LOADED_HIGH   0x01
#define LOADFLAG_CAN_USE_HEAP  0x80
#define XLF_KERNEL_64          0x01
#define LOADER_TYPE_UNDEFINED  0xff

/* boot_params (zero page) fields outside the setup header */
#define BP_ACPI_RSDP_ADDR      0x070  /* u64, protocol 2.14+ */
#define BP_EXT_RAMDISK_IMAGE   0x0c0  /* u32: bits 32-63 */
#define BP_EXT_RAMDISK_SIZE    0x0c4
#define BP_EXT_CMD_LINE_PTR    0x0c8
#define BP_E820_ENTRIES        0x1e8  /* u8 */
#define BP_E820_TABLE          0x2d0  /* 20-byte entries */
#define BP_E820_MAX            128
#define BP_SIZE                0x1000

/* PVH boot: the start_info block the kernel receives in %ebx (xen/include/public/arch-x86/hvm/start_info.h) */
#define PVH_START_MAGIC        0x336ec578u
#define PVH_SI_MAGIC           0x00   /* u32 */
#define PVH_SI_VERSION         0x04   /* u32 */
#define PVH_SI_FLAGS           0x08
#define PVH_SI_NR_MODULES      0x0c
#define PVH_SI_MODLIST_PADDR   0x10   /* u64 */
#define PVH_SI_CMDLINE_PADDR   0x18
#define PVH_SI_RSDP_PADDR      0x20
#define PVH_SI_MEMMAP_PADDR    0x28
#define PVH_SI_MEMMAP_ENTRIES  0x30   /* u32 */
#define PVH_SI_SIZE            0x38
#define PVH_MODLIST_ENTRY_SIZE 0x20   /* paddr, size, cmdline_paddr, reserved */
#define PVH_MEMMAP_ENTRY_SIZE  0x18   /* addr, size, type, reserved */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#endif
