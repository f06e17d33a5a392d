/*
 * Kernel image parsing and loading: synthetic ELF and bzImage files exercise every validation
 * path (truncation, bad magic, segments that do not fit), and when the real default kernels are
 * available (CVISOR_TEST_KERNEL_DIR) they must parse the way the boot protocol says.
 */
#include <criterion/criterion.h>
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/bootparams.h"
#include "bytes.h"
#include "layout.h"
#include "util.h"

/* A minimal vmlinux: one PT_LOAD at paddr 16 MiB (payload bytes) and optionally a PVH note. */
static size_t make_elf(uint8_t *buf, size_t cap, bool pvh, uint64_t entry, uint64_t paddr,
		       uint64_t memsz)
{
	memset(buf, 0, cap);
	Elf64_Ehdr eh = { 0 };
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_entry = entry;
	eh.e_phoff = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = pvh ? 2 : 1;
	memcpy(buf, &eh, sizeof(eh));
	Elf64_Phdr load = { .p_type = PT_LOAD, .p_offset = 0x200, .p_vaddr = 0xffffffff81000000ULL,
			    .p_paddr = paddr, .p_filesz = 0x100, .p_memsz = memsz };
	memcpy(buf + sizeof(eh), &load, sizeof(load));
	for (int i = 0; i < 0x100; i++)
		buf[0x200 + i] = (uint8_t)(i ^ 0x5a);
	if (pvh) {
		uint8_t *n = buf + 0x180;
		put_le32(n, 4);                   /* namesz */
		put_le32(n + 4, 4);               /* descsz */
		put_le32(n + 8, XEN_ELFNOTE_PHYS32_ENTRY);
		memcpy(n + 12, "Xen", 4);
		put_le32(n + 16, (uint32_t)(paddr + 0x40));
		Elf64_Phdr note = { .p_type = PT_NOTE, .p_offset = 0x180, .p_filesz = 20 };
		memcpy(buf + sizeof(eh) + sizeof(load), &note, sizeof(note));
	}
	return 0x300;
}

/* A minimal bzImage: setup header (protocol 2.15) + payload. */
static size_t make_bzimage(uint8_t *buf, size_t cap, size_t payload, uint32_t init_size)
{
	memset(buf, 0, cap);
	buf[HDR_SETUP_SECTS] = 4;
	put_le16(buf + HDR_BOOT_FLAG, HDR_BOOT_FLAG_VALUE);
	buf[HDR_JUMP] = 0xeb;
	buf[HDR_JUMP + 1] = 0x66;
	put_le32(buf + HDR_MAGIC, HDR_MAGIC_VALUE);
	put_le16(buf + HDR_VERSION, 0x020f);
	buf[HDR_LOADFLAGS] = LOADFLAG_LOADED_HIGH;
	put_le32(buf + 0x1f4, (uint32_t)(payload / 16));   /* syssize */
	put_le32(buf + HDR_INITRD_ADDR_MAX, 0x7fffffff);
	put_le32(buf + HDR_KERNEL_ALIGNMENT, 0x200000);
	buf[HDR_RELOCATABLE] = 1;
	put_le16(buf + HDR_XLOADFLAGS, XLF_KERNEL_64);
	put_le32(buf + HDR_CMDLINE_SIZE, 2047);
	put_le64(buf + HDR_PREF_ADDRESS, 0x1000000);
	put_le32(buf + HDR_INIT_SIZE, init_size);
	size_t setup = 5 * 512;
	for (size_t i = 0; i < payload; i++)
		buf[setup + i] = (uint8_t)(i * 7);
	return setup + payload;
}

static uint8_t file[1 << 16];

Test(elf, pvh_note_selects_pvh_entry)
{
	size_t len = make_elf(file, sizeof(file), true, 0x1000000, 0x1000000, 0x1000);
	struct kernel_image k;
	struct cv_error err = { 0 };
	cr_assert_eq(kernel_parse(file, len, &k, &err), 0, "%s", err.msg);
	cr_assert_eq(k.format, KERNEL_ELF);
	cr_assert_eq(k.entry_mode, BOOT_ENTRY_PVH);
	cr_assert_eq(k.entry, 0x1000040);
	cr_assert_eq(k.load_start, 0x1000000);
	cr_assert_eq(k.load_end, 0x1001000);
}

Test(elf, no_note_uses_64bit_entry_translated_from_virtual)
{
	size_t len = make_elf(file, sizeof(file), false, 0xffffffff81000010ULL, 0x1000000, 0x1000);
	struct kernel_image k;
	struct cv_error err = { 0 };
	cr_assert_eq(kernel_parse(file, len, &k, &err), 0, "%s", err.msg);
	cr_assert_eq(k.entry_mode, BOOT_ENTRY_LINUX64);
	cr_assert_eq(k.entry, 0x1000010);
}

Test(elf, rejects_truncated_and_hostile_headers)
{
	struct kernel_image k;
	struct cv_error err = { 0 };
	size_t len = make_elf(file, sizeof(file), true, 0x1000000, 0x1000000, 0x1000);
	/* Cut inside the segment data. */
	cr_assert_eq(kernel_parse(file, 0x250, &k, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_DATAERR);
	cr_assert(strstr(err.msg, "truncated"), "%s", err.msg);
	/* Program header table pointing past the end. */
	Elf64_Ehdr eh;
	memcpy(&eh, file, sizeof(eh));
	eh.e_phoff = 0xfffffffffffffff0ULL;
	memcpy(file, &eh, sizeof(eh));
	cr_assert_eq(kernel_parse(file, len, &k, &err), -1);
	/* A segment whose filesz exceeds memsz. */
	make_elf(file, sizeof(file), false, 0x1000000, 0x1000000, 0x10);
	cr_assert_eq(kernel_parse(file, len, &k, &err), -1);
	cr_assert(strstr(err.msg, "inconsistent"), "%s", err.msg);
	/* A segment in low memory would overwrite the boot structures. */
	make_elf(file, sizeof(file), false, 0x8000, 0x8000, 0x1000);
	cr_assert_eq(kernel_parse(file, len, &k, &err), -1);
	/* Wrong machine. */
	make_elf(file, sizeof(file), false, 0x1000000, 0x1000000, 0x1000);
	file[offsetof(Elf64_Ehdr, e_machine)] = EM_386;
	cr_assert_eq(kernel_parse(file, len, &k, &err), -1);
}

Test(bzimage, parses_header_and_entry)
{
	size_t len = make_bzimage(file, sizeof(file), 0x4000, 0x800000);
	struct kernel_image k;
	struct cv_error err = { 0 };
	cr_assert_eq(kernel_parse(file, len, &k, &err), 0, "%s", err.msg);
	cr_assert_eq(k.format, KERNEL_BZIMAGE);
	cr_assert_eq(k.entry_mode, BOOT_ENTRY_LINUX64);
	cr_assert_eq(k.entry, BZIMAGE_LOAD_ADDR + 0x200);
	cr_assert_eq(k.payload_offset, 5 * 512);
	cr_assert_eq(k.payload_size, 0x4000);
	/* Decompression runs at the preferred address and needs init_size there. */
	cr_assert_eq(k.load_end, 0x1000000 + 0x800000);
	cr_assert_eq(k.cmdline_max, 2047);
	cr_assert_eq(k.protocol, 0x020f);
}

Test(bzimage, rejects_bad_images)
{
	struct kernel_image k;
	struct cv_error err = { 0 };
	size_t len = make_bzimage(file, sizeof(file), 0x4000, 0x800000);
	cr_assert_eq(kernel_parse(file, len - 16, &k, &err), -1, "truncated payload accepted");
	cr_assert(strstr(err.msg, "truncated"), "%s", err.msg);
	cr_assert_eq(kernel_parse(file, 0x300, &k, &err), -1, "header-only file accepted");
	put_le16(file + HDR_XLOADFLAGS, 0);
	cr_assert_eq(kernel_parse(file, len, &k, &err), -1);
	cr_assert(strstr(err.msg, "64-bit"), "%s", err.msg);
	make_bzimage(file, sizeof(file), 0x4000, 0x800000);
	put_le16(file + HDR_VERSION, 0x0204);
	cr_assert_eq(kernel_parse(file, len, &k, &err), -1);
	cr_assert(strstr(err.msg, "too old"), "%s", err.msg);
}

/*
 * Found by fuzz-boot: a header whose syssize is small enough let a file whose protected-mode
 * code stops before offset 0x200 through, so the VM would have started at the 64-bit entry in
 * bytes the file never had.
 */
Test(bzimage, rejects_payload_without_entry_point)
{
	struct kernel_image k;
	struct cv_error err = { 0 };
	size_t len = make_bzimage(file, sizeof(file), 0x200, 0x200);
	cr_assert_eq(kernel_parse(file, len, &k, &err), -1, "entry point beyond the file accepted");
	cr_assert(strstr(err.msg, "entry point"), "%s", err.msg);
	len = make_bzimage(file, sizeof(file), 0x210, 0x200);
	cr_assert_eq(kernel_parse(file, len, &k, &err), 0, "%s", err.msg);
	cr_assert_lt(k.entry - BZIMAGE_LOAD_ADDR, k.payload_size);
}

Test(kernel, rejects_garbage_and_empty_files)
{
	struct kernel_image k;
	struct cv_error err = { 0 };
	for (size_t i = 0; i < 4096; i++)
		file[i] = (uint8_t)(i * 31 + 7);
	cr_assert_eq(kernel_parse(file, 4096, &k, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_DATAERR);
	cr_assert(strstr(err.msg, "not a kernel image"), "%s", err.msg);
	cr_assert_eq(kernel_parse(file, 0, &k, &err), -1);
	memcpy(file, ELFMAG, SELFMAG);
	cr_assert_eq(kernel_parse(file, 10, &k, &err), -1);
}

Test(kernel, load_checks_guest_memory)
{
	struct guest_memory gm;
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&gm, CV_MiB(32), &err), 0, "%s", err.msg);
	size_t len = make_elf(file, sizeof(file), true, 0x1000000, 0x1000000, 0x1000);
	struct kernel_image k;
	cr_assert_eq(kernel_parse(file, len, &k, &err), 0);
	cr_assert_eq(kernel_load(&k, file, len, &gm, &err), 0, "%s", err.msg);
	cr_assert_arr_eq(gm.host + 0x1000000, file + 0x200, 0x100);
	cr_assert_eq(gm.host[0x1000000 + 0x100], 0, "bss not zeroed");
	/* A kernel needing more than the guest has. */
	make_elf(file, sizeof(file), true, 0x1000000, 0x1000000, CV_MiB(64));
	cr_assert_eq(kernel_parse(file, len, &k, &err), 0);
	cr_assert_eq(kernel_load(&k, file, len, &gm, &err), -1);
	cr_assert(strstr(err.msg, "too small"), "%s", err.msg);
	guest_memory_free(&gm);
}

static char *write_temp(const void *data, size_t len)
{
	char *path = strdup("/tmp/cvisor-test-XXXXXX");
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

Test(boot, zero_page_and_initrds_for_bzimage)
{
	struct guest_memory gm;
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&gm, CV_MiB(64), &err), 0);
	size_t len = make_bzimage(file, sizeof(file), 0x4000, 0x800000);
	char *kpath = write_temp(file, len);
	char *i1 = write_temp("first", 5);
	char *i2 = write_temp("second-archive", 14);
	struct boot_config bc = { .kernel = kpath, .initrds = { i1, i2 }, .n_initrds = 2,
				  .cmdline = "console=ttyS0 hello" };
	struct boot_plan plan;
	cr_assert_eq(boot_prepare(&bc, &gm, 0xe0000, &plan, &err), 0, "%s", err.msg);
	cr_assert_eq(plan.mode, BOOT_ENTRY_LINUX64);
	cr_assert_eq(plan.params, LAYOUT_ZERO_PAGE);
	/* Two archives, the second 4-byte aligned: 5 + pad 3 + 14. */
	cr_assert_eq(plan.initrd_size, 22);
	cr_assert_eq(plan.initrd_addr % 4096, 0);
	cr_assert_geq(plan.initrd_addr, plan.kernel.load_end);
	cr_assert_leq(plan.initrd_addr + plan.initrd_size, CV_MiB(64));
	cr_assert_arr_eq(gm.host + plan.initrd_addr, "first\0\0\0second-archive", 22);

	const uint8_t *zp = gm.host + LAYOUT_ZERO_PAGE;
	cr_assert_eq(get_le32(zp + HDR_MAGIC), HDR_MAGIC_VALUE);
	cr_assert_eq(zp[HDR_TYPE_OF_LOADER], LOADER_TYPE_UNDEFINED);
	cr_assert_eq(get_le32(zp + HDR_RAMDISK_IMAGE), plan.initrd_addr);
	cr_assert_eq(get_le32(zp + HDR_RAMDISK_SIZE), 22);
	cr_assert_eq(get_le32(zp + HDR_CMD_LINE_PTR), LAYOUT_CMDLINE);
	cr_assert_str_eq((const char *)gm.host + LAYOUT_CMDLINE, "console=ttyS0 hello");
	cr_assert_eq(get_le64(zp + BP_ACPI_RSDP_ADDR), 0xe0000);
	cr_assert_eq(zp[BP_E820_ENTRIES], 4);
	cr_assert_arr_eq(gm.host + BZIMAGE_LOAD_ADDR, file + 5 * 512, 0x4000);
	unlink(kpath);
	unlink(i1);
	unlink(i2);
	free(kpath);
	free(i1);
	free(i2);
	guest_memory_free(&gm);
}

Test(boot, pvh_start_info)
{
	struct guest_memory gm;
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&gm, CV_MiB(64), &err), 0);
	size_t len = make_elf(file, sizeof(file), true, 0x1000000, 0x1000000, 0x1000);
	char *kpath = write_temp(file, len);
	char *i1 = write_temp("initrd", 6);
	struct boot_config bc = { .kernel = kpath, .initrds = { i1 }, .n_initrds = 1 };
	struct boot_plan plan;
	cr_assert_eq(boot_prepare(&bc, &gm, 0xe0000, &plan, &err), 0, "%s", err.msg);
	cr_assert_eq(plan.mode, BOOT_ENTRY_PVH);
	const uint8_t *si = gm.host + LAYOUT_PVH_START_INFO;
	cr_assert_eq(get_le32(si + PVH_SI_MAGIC), PVH_START_MAGIC);
	cr_assert_eq(get_le32(si + PVH_SI_NR_MODULES), 1);
	const uint8_t *mod = gm.host + get_le64(si + PVH_SI_MODLIST_PADDR);
	cr_assert_eq(get_le64(mod), plan.initrd_addr);
	cr_assert_eq(get_le64(mod + 8), 6);
	cr_assert_eq(get_le64(si + PVH_SI_RSDP_PADDR), 0xe0000);
	cr_assert_eq(get_le32(si + PVH_SI_MEMMAP_ENTRIES), 4);
	const uint8_t *mm = gm.host + get_le64(si + PVH_SI_MEMMAP_PADDR);
	cr_assert_eq(get_le64(mm + 3 * PVH_MEMMAP_ENTRY_SIZE), 0x100000);   /* RAM from 1 MiB */
	cr_assert_eq(get_le32(mm + 3 * PVH_MEMMAP_ENTRY_SIZE + 16), E820_RAM);
	unlink(kpath);
	unlink(i1);
	free(kpath);
	free(i1);
	guest_memory_free(&gm);
}

Test(boot, refuses_initrd_larger_than_memory_and_long_cmdline)
{
	struct guest_memory gm;
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&gm, CV_MiB(32), &err), 0);
	size_t len = make_elf(file, sizeof(file), true, 0x1000000, 0x1000000, 0x1000);
	char *kpath = write_temp(file, len);
	char big[] = "/tmp/cvisor-test-big-XXXXXX";
	int fd = mkstemp(big);
	cr_assert_eq(ftruncate(fd, (off_t)CV_MiB(40)), 0);
	close(fd);
	struct boot_config bc = { .kernel = kpath, .initrds = { big }, .n_initrds = 1 };
	struct boot_plan plan;
	cr_assert_eq(boot_prepare(&bc, &gm, 0, &plan, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_USAGE);
	cr_assert(strstr(err.msg, "larger than guest memory"), "%s", err.msg);

	/* Fits in memory but not above a kernel that ends at 16 MiB + 4 KiB: 20 MiB of 32. */
	cr_assert_eq(truncate(big, (off_t)CV_MiB(20)), 0);
	cr_assert_eq(boot_prepare(&bc, &gm, 0, &plan, &err), -1);
	cr_assert(strstr(err.msg, "does not fit"), "%s", err.msg);

	char cmdline[3000];
	memset(cmdline, 'a', sizeof(cmdline) - 1);
	cmdline[sizeof(cmdline) - 1] = 0;
	struct boot_config bc2 = { .kernel = kpath, .cmdline = cmdline };
	cr_assert_eq(boot_prepare(&bc2, &gm, 0, &plan, &err), -1);
	cr_assert(strstr(err.msg, "command line"), "%s", err.msg);

	struct boot_config bc3 = { .kernel = "/nonexistent/vmlinux" };
	cr_assert_eq(boot_prepare(&bc3, &gm, 0, &plan, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_NOINPUT);
	cr_assert(strstr(err.msg, "/nonexistent/vmlinux") && strstr(err.msg, "No such file"), "%s",
		  err.msg);
	unlink(big);
	unlink(kpath);
	free(kpath);
	guest_memory_free(&gm);
}

/* The real kernels built by guest/kernel/build.sh, when the test run provides them. */
Test(kernel, real_default_kernels_parse)
{
	const char *dir = getenv("CVISOR_TEST_KERNEL_DIR");
	if (!dir || !*dir)
		cr_skip_test("CVISOR_TEST_KERNEL_DIR not set");
	char path[4096];
	struct cv_buf b;
	struct kernel_image k;
	struct cv_error err = { 0 };
	snprintf(path, sizeof(path), "%s/vmlinux", dir);
	cr_assert_eq(cv_read_file(path, 1u << 30, &b, &err), 0, "%s", err.msg);
	cr_assert_eq(kernel_parse(b.data, b.len, &k, &err), 0, "%s", err.msg);
	cr_assert_eq(k.entry_mode, BOOT_ENTRY_PVH, "our config enables CONFIG_PVH");
	cr_assert_eq(k.load_start, 0x1000000);
	/* Every truncation inside the loadable data must be refused, never crash. */
	size_t needed = 0;
	for (unsigned i = 0; i < k.n_segments; i++)
		needed = CV_MAX(needed, (size_t)(k.segments[i].offset + k.segments[i].filesz));
	for (size_t cut = 64; cut < needed; cut = cut * 3 + 1) {
		struct kernel_image t;
		cr_assert_eq(kernel_parse(b.data, cut, &t, &err), -1, "vmlinux cut at %zu accepted", cut);
	}
	cv_buf_free(&b);
	snprintf(path, sizeof(path), "%s/bzImage", dir);
	cr_assert_eq(cv_read_file(path, 1u << 30, &b, &err), 0, "%s", err.msg);
	cr_assert_eq(kernel_parse(b.data, b.len, &k, &err), 0, "%s", err.msg);
	cr_assert_eq(k.format, KERNEL_BZIMAGE);
	cr_assert_geq(k.protocol, 0x020f);
	for (size_t cut = 64; cut + 16 < b.len; cut = cut * 3 + 1) {
		struct kernel_image t;
		cr_assert_eq(kernel_parse(b.data, cut, &t, &err), -1, "bzImage cut at %zu accepted", cut);
	}
	cv_buf_free(&b);
}
