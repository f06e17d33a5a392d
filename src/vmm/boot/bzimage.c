/*
 * bzImage parsing: the real-mode setup header tells where the protected-mode kernel starts in the
 * file, how much memory it needs once decompressed, and what the boot protocol lets the loader
 * set. We only use the 64-bit entry (boot protocol 2.12+ with XLF_KERNEL_64), so no real-mode
 * setup code ever runs.
 */
#include <string.h>

#include "bootparams.h"
#include "bytes.h"
#include "kernel.h"
#include "layout.h"
#include "util.h"

#define MIN_PROTOCOL 0x020c

static int bad(struct cv_error *err, const char *what)
{
	return cv_fail(err, CV_EXIT_DATAERR, "not a usable bzImage: %s", what);
}

int bzimage_parse(const uint8_t *file, size_t len, struct kernel_image *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	if (len < HDR_INIT_SIZE + 4)
		return bad(err, "file shorter than a setup header");
	if (get_le16(file + HDR_BOOT_FLAG) != HDR_BOOT_FLAG_VALUE ||
	    get_le32(file + HDR_MAGIC) != HDR_MAGIC_VALUE)
		return bad(err, "no boot sector signature / HdrS magic");
	uint16_t version = get_le16(file + HDR_VERSION);
	if (version < MIN_PROTOCOL)
		return cv_fail(err, CV_EXIT_DATAERR,
			       "bzImage boot protocol %u.%02u is too old (need 2.12+ for a 64-bit entry)",
			       version >> 8, version & 0xff);
	if (!(get_le16(file + HDR_XLOADFLAGS) & XLF_KERNEL_64))
		return bad(err, "kernel has no 64-bit entry point (XLF_KERNEL_64)");
	if (!(file[HDR_LOADFLAGS] & LOADFLAG_LOADED_HIGH))
		return bad(err, "zImage (loaded low) kernels are not supported");

	unsigned setup_sects = file[HDR_SETUP_SECTS] ? file[HDR_SETUP_SECTS] : 4;
	uint64_t setup_size = (uint64_t)(setup_sects + 1) * 512;
	if (setup_size >= len)
		return bad(err, "truncated: no protected-mode kernel after the setup code");
	/* syssize counts 16-byte paragraphs of protected-mode code: a shorter file is truncated. */
	uint64_t syssize = (uint64_t)get_le32(file + 0x1f4) * 16;
	if (len - setup_size < syssize)
		return bad(err, "truncated: file ends before the kernel its header describes");
	/* The 64-bit entry is 0x200 bytes into that code: a file without it has nothing to run. */
	if (len - setup_size <= 0x200)
		return bad(err, "truncated: protected-mode code ends before its 64-bit entry point");

	uint32_t hdr_end = 0x202 + file[HDR_JUMP + 1];
	if (hdr_end > HDR_END_MAX || hdr_end > len || hdr_end < HDR_INIT_SIZE + 4)
		return bad(err, "setup header length out of range");

	out->format = KERNEL_BZIMAGE;
	out->entry_mode = BOOT_ENTRY_LINUX64;
	out->protocol = version;
	out->payload_offset = setup_size;
	out->payload_size = len - setup_size;
	out->setup_header_len = hdr_end - HDR_SETUP_SECTS;
	memcpy(out->setup_header, file + HDR_SETUP_SECTS, out->setup_header_len);

	uint64_t init_size = get_le32(file + HDR_INIT_SIZE);
	uint64_t pref = get_le64(file + HDR_PREF_ADDRESS);
	/* The decompressor runs at max(load address, preferred address) and needs init_size there. */
	uint64_t run_start = CV_MAX(BZIMAGE_LOAD_ADDR, pref);
	if (init_size == 0 || pref > LAYOUT_MMIO_HOLE || init_size > LAYOUT_MMIO_HOLE)
		return bad(err, "implausible init_size or preferred address");
	out->load_start = BZIMAGE_LOAD_ADDR;
	out->load_end = CV_MAX(run_start + init_size, BZIMAGE_LOAD_ADDR + out->payload_size);
	out->entry = BZIMAGE_LOAD_ADDR + 0x200;
	out->cmdline_max = get_le32(file + HDR_CMDLINE_SIZE);
	if (out->cmdline_max == 0 || out->cmdline_max > LAYOUT_CMDLINE_MAX - 1)
		out->cmdline_max = LAYOUT_CMDLINE_MAX - 1;
	out->initrd_addr_max = get_le32(file + HDR_INITRD_ADDR_MAX);
	if (get_le16(file + HDR_XLOADFLAGS) & 0x02)   /* XLF_CAN_BE_LOADED_ABOVE_4G */
		out->initrd_addr_max = LAYOUT_MMIO_HOLE - 1;
	return 0;
}
