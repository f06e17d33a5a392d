/*
 * Boot preparation (see boot.h). Order matters only in that the initrd is placed after the kernel
 * is known: it goes as high in low memory as the kernel allows, far from where the kernel
 * decompresses and allocates early.
 */
#include "boot.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bootparams.h"
#include "bytes.h"
#include "layout.h"
#include "util.h"

#define KERNEL_FILE_MAX (512ULL << 20)

static int read_at(int fd, uint8_t *dst, uint64_t len)
{
	uint64_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, dst + done, len - done, (off_t)done);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		done += (uint64_t)r;
	}
	return done == len ? 0 : -2;
}

int boot_load_initrds(const struct boot_config *bc, const struct guest_memory *gm,
		      const struct kernel_image *k, struct boot_plan *plan, struct cv_error *err)
{
	int fds[BOOT_MAX_INITRDS];
	uint64_t sizes[BOOT_MAX_INITRDS];
	uint64_t total = 0;
	unsigned opened = 0;
	int rc = -1;

	plan->initrd_addr = plan->initrd_size = 0;
	if (bc->n_initrds == 0)
		return 0;
	if (bc->n_initrds > BOOT_MAX_INITRDS)
		return cv_fail(err, CV_EXIT_USAGE, "at most %d initrd files", BOOT_MAX_INITRDS);
	for (; opened < bc->n_initrds; opened++) {
		const char *path = bc->initrds[opened];
		fds[opened] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[opened] < 0) {
			cv_fail_errno(err, CV_EXIT_NOINPUT, "initrd: open '%s'", path);
			goto out;
		}
		struct stat st;
		if (fstat(fds[opened], &st) < 0 || !S_ISREG(st.st_mode)) {
			opened++;
			cv_fail(err, CV_EXIT_NOINPUT, "initrd '%s' is not a regular file", path);
			goto out;
		}
		sizes[opened] = (uint64_t)st.st_size;
		/* Archives after the first start 4-byte aligned, as the cpio unpacker expects. */
		total = CV_ALIGN_UP(total, 4) + sizes[opened];
		if (total > gm->size) {
			opened++;
			cv_fail(err, CV_EXIT_USAGE,
				"initrd '%s' (%llu MiB in all) is larger than guest memory (%llu MiB)",
				path, (unsigned long long)(total >> 20),
				(unsigned long long)(gm->size >> 20));
			goto out;
		}
	}

	uint64_t limit = CV_MIN(guest_memory_low_end(gm), k->initrd_addr_max + 1);
	uint64_t addr = total <= limit ? CV_ALIGN_DOWN(limit - total, 4096ULL) : 0;
	if (total > limit || addr < k->load_end) {
		cv_fail(err, CV_EXIT_USAGE,
			"initrd (%llu MiB) does not fit in guest memory (%llu MiB) above the kernel "
			"(which needs up to %llu MiB); raise --memory",
			(unsigned long long)((total + (1 << 20) - 1) >> 20),
			(unsigned long long)(gm->size >> 20),
			(unsigned long long)((k->load_end + (1 << 20) - 1) >> 20));
		goto out;
	}
	uint8_t *dst = guest_memory_ptr(gm, addr, total);
	if (!dst) {
		cv_fail(err, CV_EXIT_SOFTWARE, "initrd placement 0x%llx is not RAM",
			(unsigned long long)addr);
		goto out;
	}
	uint64_t off = 0;
	for (unsigned i = 0; i < bc->n_initrds; i++) {
		uint64_t start = CV_ALIGN_UP(off, 4);
		memset(dst + off, 0, start - off);
		int r = read_at(fds[i], dst + start, sizes[i]);
		if (r < 0) {
			if (r == -1)
				cv_fail_errno(err, CV_EXIT_IOERR, "initrd: read '%s'", bc->initrds[i]);
			else
				cv_fail(err, CV_EXIT_IOERR, "initrd '%s' shrank while being read",
					bc->initrds[i]);
			goto out;
		}
		off = start + sizes[i];
	}
	plan->initrd_addr = addr;
	plan->initrd_size = total;
	rc = 0;
out:
	for (unsigned i = 0; i < opened; i++)
		close(fds[i]);
	return rc;
}

int boot_write_zero_page(const struct guest_memory *gm, const struct boot_plan *plan,
			 uint64_t rsdp_gpa, struct cv_error *err)
{
	uint8_t *zp = guest_memory_ptr(gm, LAYOUT_ZERO_PAGE, BP_SIZE);
	if (!zp)
		return cv_fail(err, CV_EXIT_SOFTWARE, "zero page is not RAM");
	memset(zp, 0, BP_SIZE);
	const struct kernel_image *k = &plan->kernel;
	if (k->format == KERNEL_BZIMAGE) {
		memcpy(zp + HDR_SETUP_SECTS, k->setup_header, k->setup_header_len);
		put_le32(zp + HDR_CODE32_START, (uint32_t)BZIMAGE_LOAD_ADDR);
	} else {
		/* A bare vmlinux has no header of its own; describe ourselves as protocol 2.15. */
		put_le16(zp + HDR_BOOT_FLAG, HDR_BOOT_FLAG_VALUE);
		put_le32(zp + HDR_MAGIC, HDR_MAGIC_VALUE);
		put_le16(zp + HDR_VERSION, 0x020f);
		put_le32(zp + HDR_KERNEL_ALIGNMENT, 0x01000000);
	}
	zp[HDR_TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
	zp[HDR_LOADFLAGS] |= LOADFLAG_CAN_USE_HEAP;
	put_le16(zp + HDR_HEAP_END_PTR, 0xfe00 - 0x200);
	put_le32(zp + HDR_CMD_LINE_PTR, (uint32_t)LAYOUT_CMDLINE);
	put_le32(zp + BP_EXT_CMD_LINE_PTR, (uint32_t)(LAYOUT_CMDLINE >> 32));
	put_le32(zp + HDR_RAMDISK_IMAGE, (uint32_t)plan->initrd_addr);
	put_le32(zp + HDR_RAMDISK_SIZE, (uint32_t)plan->initrd_size);
	put_le32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(plan->initrd_addr >> 32));
	put_le32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)(plan->initrd_size >> 32));
	put_le64(zp + BP_ACPI_RSDP_ADDR, rsdp_gpa);

	struct e820_entry map[E820_MAX_ENTRIES];
	unsigned n = guest_memory_e820(gm, map, E820_MAX_ENTRIES);
	zp[BP_E820_ENTRIES] = (uint8_t)n;
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = zp + BP_E820_TABLE + 20 * i;
		put_le64(e, map[i].addr);
		put_le64(e + 8, map[i].size);
		put_le32(e + 16, map[i].type);
	}
	return 0;
}

int boot_write_pvh_start_info(const struct guest_memory *gm, const struct boot_plan *plan,
			      uint64_t rsdp_gpa, struct cv_error *err)
{
	const uint64_t modlist = LAYOUT_PVH_START_INFO + 0x40;
	const uint64_t memmap = LAYOUT_PVH_START_INFO + 0x80;
	uint8_t *si = guest_memory_ptr(gm, LAYOUT_PVH_START_INFO, 0x1000);
	if (!si)
		return cv_fail(err, CV_EXIT_SOFTWARE, "PVH start info is not RAM");
	memset(si, 0, 0x1000);
	put_le32(si + PVH_SI_MAGIC, PVH_START_MAGIC);
	put_le32(si + PVH_SI_VERSION, 1);    /* version 1 carries the memory map */
	put_le64(si + PVH_SI_CMDLINE_PADDR, LAYOUT_CMDLINE);
	put_le64(si + PVH_SI_RSDP_PADDR, rsdp_gpa);
	if (plan->initrd_size) {
		put_le32(si + PVH_SI_NR_MODULES, 1);
		put_le64(si + PVH_SI_MODLIST_PADDR, modlist);
		uint8_t *m = si + (modlist - LAYOUT_PVH_START_INFO);
		put_le64(m, plan->initrd_addr);
		put_le64(m + 8, plan->initrd_size);
	}
	struct e820_entry map[E820_MAX_ENTRIES];
	unsigned n = guest_memory_e820(gm, map, E820_MAX_ENTRIES);
	put_le64(si + PVH_SI_MEMMAP_PADDR, memmap);
	put_le32(si + PVH_SI_MEMMAP_ENTRIES, n);
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = si + (memmap - LAYOUT_PVH_START_INFO) + PVH_MEMMAP_ENTRY_SIZE * i;
		put_le64(e, map[i].addr);
		put_le64(e + 8, map[i].size);
		put_le32(e + 16, map[i].type);
	}
	return 0;
}

int boot_prepare(const struct boot_config *bc, const struct guest_memory *gm, uint64_t rsdp_gpa,
		 struct boot_plan *plan, struct cv_error *err)
{
	memset(plan, 0, sizeof(*plan));
	if (!bc->kernel)
		return cv_fail(err, CV_EXIT_USAGE, "no kernel given");
	struct cv_buf file;
	if (cv_read_file(bc->kernel, KERNEL_FILE_MAX, &file, err) < 0)
		return cv_error_wrap(err, "kernel");
	int rc = kernel_parse(file.data, file.len, &plan->kernel, err);
	if (rc == 0)
		rc = kernel_load(&plan->kernel, file.data, file.len, gm, err);
	cv_buf_free(&file);
	if (rc < 0)
		return cv_error_wrap(err, "kernel '%s'", bc->kernel);

	const struct kernel_image *k = &plan->kernel;
	const char *cmdline = bc->cmdline ? bc->cmdline : "";
	size_t cmdlen = strlen(cmdline);
	if (cmdlen > k->cmdline_max)
		return cv_fail(err, CV_EXIT_USAGE,
			       "kernel command line is %zu bytes; this kernel accepts at most %u",
			       cmdlen, k->cmdline_max);
	if (guest_memory_write(gm, LAYOUT_CMDLINE, cmdline, cmdlen + 1, err) < 0)
		return -1;

	if (boot_load_initrds(bc, gm, k, plan, err) < 0)
		return -1;

	plan->mode = k->entry_mode;
	plan->entry = k->entry;
	if (plan->mode == BOOT_ENTRY_PVH) {
		plan->params = LAYOUT_PVH_START_INFO;
		return boot_write_pvh_start_info(gm, plan, rsdp_gpa, err);
	}
	plan->params = LAYOUT_ZERO_PAGE;
	return boot_write_zero_page(gm, plan, rsdp_gpa, err);
}
