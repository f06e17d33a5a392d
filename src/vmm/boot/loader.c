/*
 * Kernel format detection and copying a parsed image into guest memory (see kernel.h).
 */
#include <elf.h>
#include <string.h>

#include "bootparams.h"
#include "bytes.h"
#include "kernel.h"

int kernel_parse(const uint8_t *file, size_t len, struct kernel_image *out, struct cv_error *err)
{
	if (len >= SELFMAG && memcmp(file, ELFMAG, SELFMAG) == 0)
		return elf_parse(file, len, out, err);
	if (len >= HDR_MAGIC + 4 && get_le32(file + HDR_MAGIC) == HDR_MAGIC_VALUE)
		return bzimage_parse(file, len, out, err);
	return cv_fail(err, CV_EXIT_DATAERR, "not a kernel image (neither a vmlinux ELF nor a bzImage)");
}

static int too_small(const struct guest_memory *gm, uint64_t end, struct cv_error *err)
{
	return cv_fail(err, CV_EXIT_USAGE,
		       "guest memory (%llu MiB) is too small for this kernel, which needs %llu MiB",
		       (unsigned long long)(gm->size >> 20),
		       (unsigned long long)((end + (1 << 20) - 1) >> 20));
}

int kernel_load(const struct kernel_image *k, const uint8_t *file, size_t len,
		const struct guest_memory *gm, struct cv_error *err)
{
	/* The whole run-time footprint must be RAM below the hole, not just the bytes we copy. */
	if (!guest_memory_ptr(gm, k->load_start, k->load_end - k->load_start))
		return too_small(gm, k->load_end, err);
	if (k->format == KERNEL_BZIMAGE) {
		if (k->payload_offset > len || k->payload_size > len - k->payload_offset)
			return cv_fail(err, CV_EXIT_SOFTWARE, "bzImage payload outside file");
		uint8_t *dst = guest_memory_ptr(gm, BZIMAGE_LOAD_ADDR, k->payload_size);
		memcpy(dst, file + k->payload_offset, k->payload_size);
		return 0;
	}
	for (unsigned i = 0; i < k->n_segments; i++) {
		const struct elf_segment *s = &k->segments[i];
		if (s->offset > len || s->filesz > len - s->offset)
			return cv_fail(err, CV_EXIT_SOFTWARE, "ELF segment outside file");
		uint8_t *dst = guest_memory_ptr(gm, s->paddr, s->memsz);
		if (!dst)
			return too_small(gm, s->paddr + s->memsz, err);
		memcpy(dst, file + s->offset, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	return 0;
}
