/*
 * Writes the seed corpus of the kernel loader fuzz target (boot_input.h): small vmlinux ELF files
 * (physical entry, virtual entry, PVH note with 4- and 8-byte descriptors, overlapping and
 * zero-filled segments, a note segment with junk before the PVH note) and bzImages (protocol 2.12
 * and 2.15, initrds allowed above 4 GiB or capped, preferred address above the load address),
 * each with a few boot configurations. The fuzzer derives the hostile variants from these.
 * Usage: fuzz-boot-seeds DIR
 */
#include <elf.h>

#include "boot/bootparams.h"
#include "boot/kernel.h"
#include "boot_input.h"
#include "bytes.h"
#include "seed_writer.h"

static uint8_t img[0x3000];

static void phdr(unsigned i, uint32_t type, uint64_t off, uint64_t vaddr, uint64_t paddr,
		 uint64_t filesz, uint64_t memsz)
{
	uint8_t *p = img + 64 + 56 * i;
	put_le32(p, type);
	put_le32(p + 4, 7);
	put_le64(p + 8, off);
	put_le64(p + 16, vaddr);
	put_le64(p + 24, paddr);
	put_le64(p + 32, filesz);
	put_le64(p + 40, memsz);
	put_le64(p + 48, 0x1000);
}

static void ehdr(uint64_t entry, unsigned phnum)
{
	memset(img, 0, sizeof(img));
	memcpy(img, ELFMAG, SELFMAG);
	img[EI_CLASS] = ELFCLASS64;
	img[EI_DATA] = ELFDATA2LSB;
	img[EI_VERSION] = EV_CURRENT;
	put_le16(img + 16, ET_EXEC);
	put_le16(img + 18, EM_X86_64);
	put_le32(img + 20, EV_CURRENT);
	put_le64(img + 24, entry);
	put_le64(img + 32, 64);
	put_le16(img + 52, 64);
	put_le16(img + 54, 56);
	put_le16(img + 56, (uint16_t)phnum);
	for (size_t i = 0x800; i < sizeof(img); i++)
		img[i] = (uint8_t)(i * 7 + 3);
}

static void pvh_note(size_t at, unsigned descsz, uint64_t entry)
{
	put_le32(img + at, 4);
	put_le32(img + at + 4, descsz);
	put_le32(img + at + 8, XEN_ELFNOTE_PHYS32_ENTRY);
	memcpy(img + at + 12, "Xen", 4);
	if (descsz == 4)
		put_le32(img + at + 16, (uint32_t)entry);
	else
		put_le64(img + at + 16, entry);
}

static int save(const char *dir, const char *name, size_t len, uint8_t mem, uint8_t cmd,
		uint8_t initrd, uint8_t flags)
{
	struct seed s = { 0 };
	seed_bytes(&s, img, len);
	seed_u8(&s, mem);
	seed_u8(&s, cmd);
	seed_u8(&s, initrd);
	seed_u8(&s, flags);
	return seed_save_free(dir, name, &s);
}

static void bzimage(uint16_t version, uint16_t xlf, uint32_t initrd_max, uint64_t pref,
		    uint32_t init_size, size_t payload)
{
	memset(img, 0, sizeof(img));
	img[HDR_SETUP_SECTS] = 1;
	put_le16(img + HDR_BOOT_FLAG, HDR_BOOT_FLAG_VALUE);
	img[HDR_JUMP] = 0xeb;
	img[HDR_JUMP + 1] = 0x66;
	put_le32(img + HDR_MAGIC, HDR_MAGIC_VALUE);
	put_le16(img + HDR_VERSION, version);
	img[HDR_LOADFLAGS] = LOADFLAG_LOADED_HIGH;
	put_le32(img + 0x1f4, (uint32_t)(payload / 16));
	put_le32(img + HDR_INITRD_ADDR_MAX, initrd_max);
	put_le32(img + HDR_KERNEL_ALIGNMENT, 0x200000);
	img[HDR_RELOCATABLE] = 1;
	put_le16(img + HDR_XLOADFLAGS, xlf);
	put_le32(img + HDR_CMDLINE_SIZE, 2047);
	put_le64(img + HDR_PREF_ADDRESS, pref);
	put_le32(img + HDR_INIT_SIZE, init_size);
	for (size_t i = 0; i < payload; i++)
		img[1024 + i] = (uint8_t)(i * 5 + 1);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	int rc = 0;

	/* Linux's vmlinux: physical entry in the first segment, bss zero-filled. */
	ehdr(0x1000000, 2);
	phdr(0, PT_LOAD, 0x800, 0xffffffff81000000ULL, 0x1000000, 0x800, 0x800);
	phdr(1, PT_LOAD, 0x1000, 0xffffffff81200000ULL, 0x1200000, 0x400, 0x10000);
	rc |= save(dir, "elf-linux", 0x1400, 0, 1, 1, 0);
	rc |= save(dir, "elf-linux-initrds", 0x1400, 1, 2, 2, BOOTF_TWO_INITRDS);

	/* Entry by virtual address; PVH notes, 4 and 8 bytes, after a foreign note. */
	ehdr(0xffffffff81000010ULL, 3);
	phdr(0, PT_LOAD, 0x800, 0xffffffff81000000ULL, 0x100000, 0x800, 0x1000);
	phdr(1, PT_NOTE, 0x200, 0, 0, 0x40, 0);
	phdr(2, PT_LOAD, 0x1000, 0xffffffff81001000ULL, 0x101000, 0x800, 0x800);
	rc |= save(dir, "elf-vaddr", 0x1800, 0, 3, 3, 0);
	put_le32(img + 0x200, 4);
	put_le32(img + 0x204, 4);
	put_le32(img + 0x208, 1);
	memcpy(img + 0x20c, "GNU", 4);
	pvh_note(0x214, 4, 0x100040);
	rc |= save(dir, "elf-pvh", 0x1800, 1, 1, 1, BOOTF_TWO_INITRDS);
	pvh_note(0x214, 8, 0x101040);
	rc |= save(dir, "elf-pvh8", 0x1800, 0, 0, 0, 0);

	/* Overlapping segments: the later one wins. */
	ehdr(0x200000, 2);
	phdr(0, PT_LOAD, 0x800, 0, 0x200000, 0x1000, 0x2000);
	phdr(1, PT_LOAD, 0x1000, 0, 0x200800, 0x800, 0x800);
	rc |= save(dir, "elf-overlap", 0x1800, 0, 1, 0, 0);

	/* bzImages: 2.15 with initrds anywhere, 2.12 capped, a preferred address above 1 MiB. */
	bzimage(0x020f, XLF_KERNEL_64 | 2, 0x7fffffff, 0x1000000, 0x400000, 0x1000);
	rc |= save(dir, "bzimage", 1024 + 0x1000, 1, 1, 4, 0);
	bzimage(0x020c, XLF_KERNEL_64, 0x37ffffff, 0x100000, 0x200000, 0x800);
	rc |= save(dir, "bzimage-212", 1024 + 0x800, 0, 3, 2, BOOTF_TWO_INITRDS);
	bzimage(0x020f, XLF_KERNEL_64, 0x1ffffff, 0x2000000, 0x100000, 0x800);
	rc |= save(dir, "bzimage-pref", 1024 + 0x800, 1, 4, 3, 0);
	return rc ? 1 : 0;
}
