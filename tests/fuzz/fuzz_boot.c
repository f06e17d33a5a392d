/*
 * libFuzzer target for the kernel loader (src/vmm/boot/: loader.c's format detection and loading,
 * elf.c, bzimage.c, and boot.c's placement of command line, initrds and boot parameters). The
 * input is a kernel image file followed by a small trailer choosing guest memory, command-line
 * length and initrds (boot_input.h); boot_prepare loads it from a memfd into guest RAM that sits
 * between guard pages, exactly as cvisor-vmm does with --kernel.
 *
 * References written from the ELF specification and the x86 boot protocol
 * (Documentation/x86/boot.rst), with the rules kernel.h and the parsers document, decide what
 * must be accepted; these invariants abort on violation:
 *   - kernel_parse accepts exactly what the reference accepts, with the same format, entry mode,
 *     entry point, load range, command-line limit and initrd ceiling, and the entry point is
 *     inside what is loaded from the file;
 *   - an accepted image loads only if its whole load range is guest RAM, and then guest RAM
 *     holds every segment's bytes (zero-filled to its memory size, later segments winning where
 *     they overlap) or the bzImage payload at 1 MiB;
 *   - boot_prepare succeeds exactly when the command line fits the kernel's limit and the
 *     initrds fit above the kernel and below its ceiling; then the command line, the
 *     concatenated initrds (4-byte aligned) and the zero page or PVH start info say and hold
 *     what they must, nothing of it overlapping the kernel;
 *   - every failure carries a message and an exit code.
 */
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/bootparams.h"
#include "boot_input.h"
#include "bytes.h"
#include "layout.h"
#include "util.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)
#define PAGE 4096ULL
#define NMEM (sizeof(BOOTF_MEM) / sizeof(BOOTF_MEM[0]))
#define NINITRD (sizeof(BOOTF_INITRD) / sizeof(BOOTF_INITRD[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static _Noreturn void fail(int line, const char *what)
{
	fprintf(stderr, "fuzz_boot.c:%d: invariant broken: %s\n", line, what);
	abort();
}

static struct state {
	struct guest_memory mem[NMEM];
	int kernel_fd;
	char kernel_path[64];
	int initrd_fd[NINITRD];
	char initrd_path[NINITRD][64];
	char *cmdline;
	bool trace;
} *S;

static uint8_t initrd_byte(uint64_t i)
{
	return (uint8_t)(i * 13 + (i >> 12) + 1);
}

static int make_memfd(const char *name, char *path, size_t path_len)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	CHECK(fd >= 0);
	snprintf(path, path_len, "/proc/self/fd/%d", fd);
	return fd;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	S = calloc(1, sizeof(*S));
	CHECK(S != NULL);
	S->trace = getenv("BOOTF_TRACE") != NULL;
	for (unsigned m = 0; m < NMEM; m++) {
		struct cv_error err = { 0 };
		struct guest_memory *gm = &S->mem[m];
		CHECK(guest_memory_init(gm, BOOTF_MEM[m], &err) == 0);
		/* Guard pages on both sides: a write past RAM faults instead of passing. */
		uint8_t *res = mmap(NULL, gm->size + 2 * PAGE, PROT_NONE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		CHECK(res != MAP_FAILED);
		uint8_t *moved = mremap(gm->host, gm->size, gm->size, MREMAP_MAYMOVE | MREMAP_FIXED,
					res + PAGE);
		CHECK(moved == res + PAGE);
		gm->host = gm->regions[0].host = moved;
		CHECK(gm->n_regions == 1);
	}
	S->kernel_fd = make_memfd("fuzz-kernel", S->kernel_path, sizeof(S->kernel_path));
	static uint8_t chunk[1 << 16];
	for (unsigned i = 0; i < NINITRD; i++) {
		S->initrd_fd[i] = make_memfd("fuzz-initrd", S->initrd_path[i], sizeof(S->initrd_path[i]));
		for (uint64_t off = 0; off < BOOTF_INITRD[i]; off += sizeof(chunk)) {
			size_t n = (size_t)CV_MIN((uint64_t)sizeof(chunk), BOOTF_INITRD[i] - off);
			for (size_t j = 0; j < n; j++)
				chunk[j] = initrd_byte(off + j);
			CHECK(pwrite(S->initrd_fd[i], chunk, n, (off_t)off) == (ssize_t)n);
		}
	}
	S->cmdline = malloc(65536);
	CHECK(S->cmdline != NULL);
	return 0;
}

/* ---- references ---- */

struct ref {
	bool ok;
	enum kernel_format format;
	enum boot_entry mode;
	uint64_t entry, load_start, load_end, initrd_max, payload_offset;
	uint32_t cmdline_max, header_len;
	unsigned n;
	struct elf_segment seg[ELF_MAX_SEGMENTS];
};

static bool in_file(uint64_t off, uint64_t len, size_t size)
{
	return off <= size && len <= size - off;
}

/* The first Xen PVH entry note of a note segment; malformed notes end the scan. */
static bool ref_pvh(const uint8_t *p, uint64_t size, uint64_t *entry)
{
	uint64_t off = 0;
	while (size - off >= 12) {
		uint64_t namesz = get_le32(p + off), descsz = get_le32(p + off + 4);
		uint32_t type = get_le32(p + off + 8);
		uint64_t name = off + 12, desc = name + ((namesz + 3) & ~3ULL);
		uint64_t next = desc + ((descsz + 3) & ~3ULL);
		if (desc > size || next > size)
			return false;
		if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 && !memcmp(p + name, "Xen", 4)) {
			if (descsz != 4 && descsz != 8)
				return false;
			*entry = descsz == 4 ? get_le32(p + desc) : get_le64(p + desc);
			return true;
		}
		off = next;
	}
	return false;
}

static void ref_elf(const uint8_t *f, size_t size, struct ref *r)
{
	if (size < 64 || f[EI_CLASS] != ELFCLASS64 || f[EI_DATA] != ELFDATA2LSB ||
	    get_le16(f + 18) != EM_X86_64 || get_le16(f + 16) != ET_EXEC)
		return;
	uint64_t entry = get_le64(f + 24), phoff = get_le64(f + 32);
	unsigned phentsize = get_le16(f + 54), phnum = get_le16(f + 56);
	if (phentsize != 56 || phnum == 0 || phnum > 64 || !in_file(phoff, 56ULL * phnum, size))
		return;
	uint64_t lo = UINT64_MAX, hi = 0, pvh = 0, phys = 0;
	bool have_pvh = false;
	int found = 0;
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = f + phoff + 56ULL * i;
		uint32_t type = get_le32(ph);
		uint64_t off = get_le64(ph + 8), vaddr = get_le64(ph + 16), paddr = get_le64(ph + 24);
		uint64_t filesz = get_le64(ph + 32), memsz = get_le64(ph + 40);
		if (type == PT_NOTE) {
			if (!have_pvh && in_file(off, filesz, size))
				have_pvh = ref_pvh(f + off, filesz, &pvh);
			continue;
		}
		if (type != PT_LOAD || memsz == 0)
			continue;
		if (r->n == ELF_MAX_SEGMENTS || !in_file(off, filesz, size) || filesz > memsz ||
		    paddr + memsz < paddr)
			return;
		r->seg[r->n++] = (struct elf_segment){ off, filesz, paddr, memsz };
		lo = CV_MIN(lo, paddr);
		hi = CV_MAX(hi, paddr + memsz);
		if (entry >= paddr && entry - paddr < memsz) {
			phys = entry;
			found = 2;
		} else if (found < 2 && entry >= vaddr && entry - vaddr < memsz) {
			phys = entry - vaddr + paddr;
			found = 1;
		}
	}
	if (!r->n || lo < LAYOUT_HIGH_MEMORY)
		return;
	if (have_pvh ? pvh < lo || pvh >= hi : !found)
		return;
	r->ok = true;
	r->format = KERNEL_ELF;
	r->mode = have_pvh ? BOOT_ENTRY_PVH : BOOT_ENTRY_LINUX64;
	r->entry = have_pvh ? pvh : phys;
	r->load_start = lo;
	r->load_end = hi;
	r->cmdline_max = ELF_CMDLINE_MAX;
	r->initrd_max = LAYOUT_MMIO_HOLE - 1;
}

static void ref_bzimage(const uint8_t *f, size_t size, struct ref *r)
{
	if (size < HDR_INIT_SIZE + 4 || get_le16(f + HDR_BOOT_FLAG) != 0xaa55 ||
	    get_le32(f + HDR_MAGIC) != HDR_MAGIC_VALUE || get_le16(f + HDR_VERSION) < 0x020c ||
	    !(get_le16(f + HDR_XLOADFLAGS) & XLF_KERNEL_64) || !(f[HDR_LOADFLAGS] & 1))
		return;
	uint64_t setup = ((uint64_t)(f[HDR_SETUP_SECTS] ? f[HDR_SETUP_SECTS] : 4) + 1) * 512;
	uint64_t syssize = (uint64_t)get_le32(f + 0x1f4) * 16;
	uint32_t hdr_end = 0x202 + f[HDR_JUMP + 1];
	uint64_t init = get_le32(f + HDR_INIT_SIZE), pref = get_le64(f + HDR_PREF_ADDRESS);
	/* The protected-mode code must be all there, including its 64-bit entry at 0x200. */
	if (setup >= size || size - setup < syssize || size - setup <= 0x200 ||
	    hdr_end > HDR_END_MAX || hdr_end > size || hdr_end < HDR_INIT_SIZE + 4 ||
	    init == 0 || pref > LAYOUT_MMIO_HOLE || init > LAYOUT_MMIO_HOLE)
		return;
	r->ok = true;
	r->format = KERNEL_BZIMAGE;
	r->mode = BOOT_ENTRY_LINUX64;
	r->entry = BZIMAGE_LOAD_ADDR + 0x200;
	r->load_start = BZIMAGE_LOAD_ADDR;
	r->load_end = CV_MAX(CV_MAX(BZIMAGE_LOAD_ADDR, pref) + init, BZIMAGE_LOAD_ADDR + size - setup);
	r->payload_offset = setup;
	r->header_len = hdr_end - HDR_SETUP_SECTS;
	r->cmdline_max = get_le32(f + HDR_CMDLINE_SIZE);
	if (r->cmdline_max == 0 || r->cmdline_max >= LAYOUT_CMDLINE_MAX)
		r->cmdline_max = LAYOUT_CMDLINE_MAX - 1;
	r->initrd_max = (get_le16(f + HDR_XLOADFLAGS) & 2) ? LAYOUT_MMIO_HOLE - 1
							   : get_le32(f + HDR_INITRD_ADDR_MAX);
}

/* ---- checks of guest RAM ---- */

/* [a, b) minus the later segments of the list, checked against segment i's bytes. */
static void check_visible(const struct guest_memory *gm, const struct ref *r, const uint8_t *f,
			  unsigned i, uint64_t a, uint64_t b, unsigned later)
{
	if (a >= b)
		return;
	for (unsigned j = later; j < r->n; j++) {
		uint64_t s = r->seg[j].paddr, e = s + r->seg[j].memsz;
		if (e <= a || s >= b)
			continue;
		/* Split around the later segment, which wins where they overlap. */
		check_visible(gm, r, f, i, a, CV_MAX(a, s), j + 1);
		check_visible(gm, r, f, i, CV_MIN(b, e), b, j + 1);
		return;
	}
	const struct elf_segment *s = &r->seg[i];
	const uint8_t *ram = guest_memory_ptr(gm, a, b - a);
	CHECK(ram != NULL);
	for (uint64_t x = a; x < b; x++) {
		uint64_t k = x - s->paddr;
		CHECK(ram[x - a] == (k < s->filesz ? f[s->offset + k] : 0));
	}
}

static void check_loaded(const struct guest_memory *gm, const struct ref *r, const uint8_t *f,
			 size_t size)
{
	if (r->format == KERNEL_BZIMAGE) {
		uint64_t n = size - r->payload_offset;
		const uint8_t *ram = guest_memory_ptr(gm, BZIMAGE_LOAD_ADDR, n);
		CHECK(ram && memcmp(ram, f + r->payload_offset, n) == 0);
		return;
	}
	for (unsigned i = 0; i < r->n; i++)
		check_visible(gm, r, f, i, r->seg[i].paddr, r->seg[i].paddr + r->seg[i].memsz, i + 1);
}

static void check_e820(const uint8_t *e, unsigned n, size_t stride, const struct guest_memory *gm,
		       const struct ref *r)
{
	uint64_t ram = 0;
	bool kernel_in_ram = false;
	for (unsigned i = 0; i < n; i++, e += stride) {
		if (get_le32(e + 16) != E820_RAM)
			continue;
		uint64_t a = get_le64(e), len = get_le64(e + 8);
		ram += len;
		kernel_in_ram |= r->load_start >= a && r->load_end <= a + len;
	}
	/* The RAM there is (the EBDA and BIOS area held back), the kernel's footprint inside it. */
	CHECK(n >= 1 && ram <= gm->size && ram + LAYOUT_HIGH_MEMORY >= gm->size && kernel_in_ram);
}

static void check_booted(const struct guest_memory *gm, const struct boot_plan *plan,
			 const struct ref *r, const uint8_t *f, size_t cmdlen, uint64_t initrd_len,
			 unsigned n_initrds)
{
	CHECK(plan->mode == r->mode && plan->entry == r->entry);
	const char *cmd = guest_memory_ptr(gm, LAYOUT_CMDLINE, cmdlen + 1);
	CHECK(cmd && memcmp(cmd, S->cmdline, cmdlen) == 0 && cmd[cmdlen] == 0);
	uint64_t total = n_initrds ? (n_initrds == 2 ? CV_ALIGN_UP(initrd_len, 4) : 0) + initrd_len
				   : 0;
	CHECK(plan->initrd_size == total);
	if (total) {
		uint64_t a = plan->initrd_addr;
		CHECK(a % PAGE == 0 && a >= r->load_end && a + total - 1 <= r->initrd_max &&
		      a + total <= guest_memory_low_end(gm));
		const uint8_t *p = guest_memory_ptr(gm, a, total);
		CHECK(p != NULL);
		for (unsigned k = 0; k < n_initrds; k++) {
			uint64_t at = k ? CV_ALIGN_UP(initrd_len, 4) : 0;
			for (uint64_t i = 0; i < initrd_len; i += 997)
				CHECK(p[at + i] == initrd_byte(i));
			CHECK(p[at + initrd_len - 1] == initrd_byte(initrd_len - 1));
			if (k)
				for (uint64_t i = initrd_len; i < at; i++)
					CHECK(p[i] == 0);
		}
	}
	if (plan->mode == BOOT_ENTRY_PVH) {
		const uint8_t *si = guest_memory_ptr(gm, LAYOUT_PVH_START_INFO, 0x1000);
		CHECK(plan->params == LAYOUT_PVH_START_INFO);
		CHECK(get_le32(si + PVH_SI_MAGIC) == PVH_START_MAGIC);
		CHECK(get_le64(si + PVH_SI_CMDLINE_PADDR) == LAYOUT_CMDLINE);
		CHECK(get_le32(si + PVH_SI_NR_MODULES) == (total ? 1u : 0u));
		if (total) {
			const uint8_t *m = si + (get_le64(si + PVH_SI_MODLIST_PADDR) - LAYOUT_PVH_START_INFO);
			CHECK(get_le64(m) == plan->initrd_addr && get_le64(m + 8) == total);
		}
		uint64_t map = get_le64(si + PVH_SI_MEMMAP_PADDR);
		CHECK(map >= LAYOUT_PVH_START_INFO && map < LAYOUT_PVH_START_INFO + 0x1000);
		check_e820(si + (map - LAYOUT_PVH_START_INFO), get_le32(si + PVH_SI_MEMMAP_ENTRIES),
			   PVH_MEMMAP_ENTRY_SIZE, gm, r);
		return;
	}
	const uint8_t *zp = guest_memory_ptr(gm, LAYOUT_ZERO_PAGE, BP_SIZE);
	CHECK(plan->params == LAYOUT_ZERO_PAGE);
	CHECK(get_le16(zp + HDR_BOOT_FLAG) == HDR_BOOT_FLAG_VALUE);
	CHECK(get_le32(zp + HDR_MAGIC) == HDR_MAGIC_VALUE);
	if (r->format == KERNEL_BZIMAGE) {
		/* The kernel's own header, then what the loader fills in. */
		CHECK(memcmp(zp + HDR_SETUP_SECTS, f + HDR_SETUP_SECTS, 0x210 - HDR_SETUP_SECTS) == 0);
		CHECK(get_le32(zp + HDR_CODE32_START) == BZIMAGE_LOAD_ADDR);
		/* Past the kernel's header, up to the e820 table, nothing is written. */
		for (uint32_t i = HDR_SETUP_SECTS + r->header_len; i < BP_E820_TABLE; i++)
			CHECK(zp[i] == 0);
	}
	CHECK(zp[HDR_TYPE_OF_LOADER] == LOADER_TYPE_UNDEFINED);
	CHECK(get_le32(zp + HDR_CMD_LINE_PTR) == LAYOUT_CMDLINE);
	CHECK(get_le32(zp + HDR_RAMDISK_IMAGE) == (uint32_t)plan->initrd_addr);
	CHECK(get_le32(zp + HDR_RAMDISK_SIZE) == (uint32_t)total);
	check_e820(zp + BP_E820_TABLE, zp[BP_E820_ENTRIES], 20, gm, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t t[BOOTF_TRAILER] = { 0 };
	if (size >= BOOTF_TRAILER) {
		size -= BOOTF_TRAILER;
		memcpy(t, data + size, BOOTF_TRAILER);
	}
	const struct guest_memory *gm = &S->mem[t[0] % NMEM];
	size_t cmdlen = BOOTF_CMDLINE[t[1] % (sizeof(BOOTF_CMDLINE) / sizeof(BOOTF_CMDLINE[0]))];
	unsigned sel = t[2] % NINITRD;
	unsigned n_initrds = BOOTF_INITRD[sel] ? ((t[3] & BOOTF_TWO_INITRDS) ? 2 : 1) : 0;

	/* The parsers directly, against the references. */
	struct ref r = { 0 };
	if (size >= SELFMAG && memcmp(data, ELFMAG, SELFMAG) == 0)
		ref_elf(data, size, &r);
	else if (size >= HDR_MAGIC + 4 && get_le32(data + HDR_MAGIC) == HDR_MAGIC_VALUE)
		ref_bzimage(data, size, &r);
	struct kernel_image k;
	struct cv_error err = { 0 };
	int rc = kernel_parse(data, size, &k, &err);
	if (S->trace)
		fprintf(stderr, "bootf: parse %d (reference %d) %s\n", rc, r.ok, rc ? err.msg : "");
	CHECK((rc == 0) == r.ok);
	if (rc < 0) {
		CHECK(err.code != 0 && err.msg[0]);
		return 0;
	}
	CHECK(k.format == r.format && k.entry_mode == r.mode && k.entry == r.entry);
	CHECK(k.load_start == r.load_start && k.load_end == r.load_end);
	CHECK(k.cmdline_max == r.cmdline_max && k.initrd_addr_max == r.initrd_max);
	CHECK(k.entry >= k.load_start && k.entry < k.load_end);
	if (k.format == KERNEL_ELF) {
		CHECK(k.n_segments == r.n && memcmp(k.segments, r.seg, r.n * sizeof(r.seg[0])) == 0);
	} else {
		CHECK(k.payload_offset == r.payload_offset && k.payload_size == size - r.payload_offset);
		CHECK(k.entry - BZIMAGE_LOAD_ADDR < k.payload_size);   /* the entry is the file's */
		CHECK(k.setup_header_len == r.header_len && k.setup_header_len <= SETUP_HEADER_COPY_MAX);
	}

	/* The whole path of --kernel, from a file. */
	CHECK(ftruncate(S->kernel_fd, 0) == 0);
	CHECK(size == 0 || pwrite(S->kernel_fd, data, size, 0) == (ssize_t)size);
	memset(S->cmdline, 'c', cmdlen);
	S->cmdline[cmdlen] = 0;
	struct boot_config bc = { .kernel = S->kernel_path, .cmdline = S->cmdline,
				  .n_initrds = n_initrds };
	for (unsigned i = 0; i < n_initrds; i++)
		bc.initrds[i] = S->initrd_path[sel];
	struct boot_plan plan;
	rc = boot_prepare(&bc, gm, 0xe0000, &plan, &err);
	if (S->trace)
		fprintf(stderr, "bootf: boot_prepare %d %s\n", rc, rc ? err.msg : "");

	/* Loading works exactly when the kernel's whole footprint is RAM... */
	bool fits = guest_memory_ptr(gm, r.load_start, r.load_end - r.load_start) != NULL;
	/* ...the command line fits its limit, and the initrds fit between kernel and ceiling. */
	uint64_t len = BOOTF_INITRD[sel];
	uint64_t total = n_initrds == 2 ? CV_ALIGN_UP(len, 4) + len : n_initrds ? len : 0;
	uint64_t limit = CV_MIN(guest_memory_low_end(gm), r.initrd_max + 1);
	bool initrd_ok = !total || (total <= gm->size && total <= limit &&
				    CV_ALIGN_DOWN(limit - total, PAGE) >= r.load_end);
	bool want = fits && cmdlen <= r.cmdline_max && initrd_ok;
	CHECK((rc == 0) == want);
	if (fits)
		check_loaded(gm, &r, data, size);
	if (rc < 0) {
		CHECK(err.code != 0 && err.msg[0]);
		return 0;
	}
	check_booted(gm, &plan, &r, data, cmdlen, len, n_initrds);
	return 0;
}
