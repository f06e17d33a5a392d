/*
 * vmlinux (ELF64) parsing. Only what booting needs is read: PT_LOAD segments, placed at their
 * physical addresses, and the Xen PVH entry note. All offsets and sizes are checked against the
 * file before use, since the image is outside input.
 */
#include <elf.h>
#include <string.h>

#include "bytes.h"
#include "kernel.h"
#include "bootparams.h"
#include "layout.h"
#include "util.h"

#define ELF_MAX_PHDRS 64

static int bad(struct cv_error *err, const char *what)
{
	return cv_fail(err, CV_EXIT_DATAERR, "not a usable vmlinux: %s", what);
}

/* True if [off, off+size) lies inside a file of len bytes. */
static int in_file(uint64_t off, uint64_t size, size_t len)
{
	return off <= len && size <= len - off;
}

/* Scans one PT_NOTE segment for XEN_ELFNOTE_PHYS32_ENTRY ("Xen" owner). */
static int find_pvh_note(const uint8_t *p, uint64_t size, uint64_t *entry)
{
	uint64_t off = 0;
	while (size - off >= 12) {
		uint32_t namesz = get_le32(p + off);
		uint32_t descsz = get_le32(p + off + 4);
		uint32_t type = get_le32(p + off + 8);
		uint64_t name_off = off + 12;
		uint64_t desc_off = name_off + CV_ALIGN_UP((uint64_t)namesz, 4);
		uint64_t next = desc_off + CV_ALIGN_UP((uint64_t)descsz, 4);
		if (desc_off > size || next > size)
			return 0;   /* malformed note: treat as absent rather than trusting it */
		if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
		    memcmp(p + name_off, "Xen", 4) == 0) {
			if (descsz == 4)
				*entry = get_le32(p + desc_off);
			else if (descsz == 8)
				*entry = get_le64(p + desc_off);
			else
				return 0;
			return 1;
		}
		off = next;
	}
	return 0;
}

int elf_parse(const uint8_t *file, size_t len, struct kernel_image *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	if (len < sizeof(Elf64_Ehdr))
		return bad(err, "file shorter than an ELF header");
	Elf64_Ehdr eh;
	memcpy(&eh, file, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
		return bad(err, "no ELF magic");
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
		return bad(err, "not a little-endian 64-bit ELF");
	if (eh.e_machine != EM_X86_64)
		return bad(err, "not an x86-64 ELF");
	if (eh.e_type != ET_EXEC)
		return bad(err, "not an executable ELF");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > ELF_MAX_PHDRS)
		return bad(err, "bad program header table");
	if (!in_file(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr), len))
		return bad(err, "program headers beyond end of file (truncated?)");

	uint64_t lo = UINT64_MAX, hi = 0, pvh_entry = 0, entry_phys = 0;
	int have_pvh = 0, entry_found = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, file + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_NOTE) {
			if (in_file(ph.p_offset, ph.p_filesz, len) && !have_pvh)
				have_pvh = find_pvh_note(file + ph.p_offset, ph.p_filesz, &pvh_entry);
			continue;
		}
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (out->n_segments == ELF_MAX_SEGMENTS)
			return bad(err, "too many loadable segments");
		if (!in_file(ph.p_offset, ph.p_filesz, len))
			return bad(err, "segment data beyond end of file (truncated?)");
		if (ph.p_filesz > ph.p_memsz || ph.p_paddr + ph.p_memsz < ph.p_paddr)
			return bad(err, "segment sizes inconsistent");
		out->segments[out->n_segments++] = (struct elf_segment){
			ph.p_offset, ph.p_filesz, ph.p_paddr, ph.p_memsz };
		lo = CV_MIN(lo, ph.p_paddr);
		hi = CV_MAX(hi, ph.p_paddr + ph.p_memsz);
		/* e_entry may be virtual; a physical match wins, else translate through the segment. */
		if (eh.e_entry >= ph.p_paddr && eh.e_entry - ph.p_paddr < ph.p_memsz) {
			entry_phys = eh.e_entry;   /* Linux's vmlinux: physical (phys_startup_64) */
			entry_found = 2;
		} else if (entry_found < 2 && eh.e_entry >= ph.p_vaddr &&
			   eh.e_entry - ph.p_vaddr < ph.p_memsz) {
			entry_phys = eh.e_entry - ph.p_vaddr + ph.p_paddr;
			entry_found = 1;
		}
	}
	if (out->n_segments == 0)
		return bad(err, "no loadable segments");
	if (lo < LAYOUT_HIGH_MEMORY)
		return bad(err, "segment below 1 MiB would overwrite boot structures");

	out->format = KERNEL_ELF;
	out->load_start = lo;
	out->load_end = hi;
	out->cmdline_max = ELF_CMDLINE_MAX;
	out->initrd_addr_max = LAYOUT_MMIO_HOLE - 1;
	if (have_pvh) {
		if (pvh_entry < lo || pvh_entry >= hi)
			return bad(err, "PVH entry point outside the loaded image");
		out->entry_mode = BOOT_ENTRY_PVH;
		out->entry = pvh_entry;
	} else {
		if (!entry_found)
			return bad(err, "entry point outside every loadable segment");
		out->entry_mode = BOOT_ENTRY_LINUX64;
		out->entry = entry_phys;
	}
	return 0;
}
