/*
 * Guest physical address map. Low memory holds the structures the VMM writes before the first
 * instruction (GDT, page tables, boot parameters, command line) and the firmware-style tables the
 * kernel looks for in the BIOS area; RAM runs from 0 up to the 32-bit MMIO hole and resumes at
 * 4 GiB. Everything here must stay below 1 MiB or inside the hole, which Linux never uses as RAM.
 */
#ifndef CVISOR_VMM_LAYOUT_H
#define CVISOR_VMM_LAYOUT_H

#include <stdint.h>

#define LAYOUT_GDT            0x500ULL     /* boot GDT, 8 entries */
#define LAYOUT_PVH_START_INFO 0x6000ULL    /* hvm_start_info + module list + memory map */
#define LAYOUT_ZERO_PAGE      0x7000ULL    /* Linux boot_params */
#define LAYOUT_BOOT_STACK     0x8ff0ULL
#define LAYOUT_PML4           0x9000ULL    /* identity map of the first 4 GiB, 2 MiB pages */
#define LAYOUT_PDPT           0xa000ULL
#define LAYOUT_PD             0xb000ULL    /* four page directories: 0xb000-0xefff */
#define LAYOUT_CMDLINE        0x20000ULL
#define LAYOUT_CMDLINE_MAX    0x10000ULL
#define LAYOUT_EBDA           0x9fc00ULL   /* end of conventional memory */
#define LAYOUT_BIOS_AREA      0xe0000ULL   /* reserved: ACPI tables from here ... */
#define LAYOUT_ACPI_TABLES    0xe0000ULL
#define LAYOUT_ACPI_MAX       0x10000ULL
#define LAYOUT_MPTABLE        0xf0000ULL   /* ... and the MP table here, both found by BIOS scans */
#define LAYOUT_MPTABLE_MAX    0x10000ULL
#define LAYOUT_HIGH_MEMORY    0x100000ULL  /* kernels are loaded from 1 MiB up */

#define LAYOUT_MMIO_HOLE      0xc0000000ULL  /* RAM stops here below 4 GiB */
#define LAYOUT_PCI_WINDOW     0xc0000000ULL  /* 32-bit PCI BARs */
#define LAYOUT_PCI_WINDOW_SIZE 0x10000000ULL
#define LAYOUT_VIRTIO_MMIO    0xd0000000ULL  /* virtio-mmio windows, right after the PCI window */
#define LAYOUT_VIRTIO_MMIO_SIZE 0x20000ULL   /* 32 devices of 4 KiB */
#define LAYOUT_4GIB           0x100000000ULL
#define LAYOUT_IOAPIC         0xfec00000ULL
#define LAYOUT_LAPIC          0xfee00000ULL
#define LAYOUT_KVM_IDENTITY   0xfeffc000ULL  /* Intel-only KVM scratch pages, inside the hole */
#define LAYOUT_KVM_TSS        0xfeffd000ULL

/* I/O ports of the ACPI power-management registers the FADT describes. */
#define PORT_ACPI_PM_BASE       0x600
#define PORT_ACPI_PM1A_EVT      0x600      /* PM1 status (2 bytes) + enable (2 bytes) */
#define ACPI_PM1_EVT_LEN        4
#define PORT_ACPI_PM1A_CNT      0x604      /* PM1 control, 2 bytes */
#define ACPI_PM1_CNT_LEN        2
#define PORT_ACPI_RESET         0x608
#define ACPI_PM_PORTS           9          /* 0x600..0x608 */
#define ACPI_RESET_VALUE        0x01
#define ACPI_S5_SLEEP_TYPE      5          /* the _S5 package in our DSDT */
#define ACPI_SCI_IRQ            9

#define PORT_COM1  0x3f8
#define IRQ_COM1   4
#define IRQ_I8042_KBD 1
#define PORT_I8042_DATA    0x60
#define PORT_I8042_COMMAND 0x64

#define GSI_COUNT 24                        /* pins of the in-kernel IOAPIC */

/*
 * Interrupt lines for virtio-mmio devices: ISA IRQs that no device a guest may probe uses (left
 * alone: 0 PIT, 1/12 i8042, 2 cascade, 3/4 COM ports, 8 RTC, 9 SCI, 13 FPU). When ACPI describes
 * the machine, Linux has IRQ numbers only for the 16 ISA lines, so devices share these
 * (level-triggered) rather than using IOAPIC pins 16-23.
 */
#define LAYOUT_VIRTIO_MMIO_IRQS { 5, 6, 7, 10, 11, 14, 15 }

#endif
