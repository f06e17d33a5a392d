/*
 * Writer for the "newc" cpio format the kernel unpacks as an initramfs. cvisor builds its default
 * initramfs with it at build time and appends small archives at run time (the command a guest
 * should run, the emulated host's agent); the kernel unpacks concatenated archives in order.
 */
#ifndef CVISOR_COMMON_CPIO_H
#define CVISOR_COMMON_CPIO_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct cpio {
	uint8_t *data;
	size_t len;
	size_t cap;
	uint32_t next_ino;
};

void cpio_init(struct cpio *c);
void cpio_free(struct cpio *c);

/* Each adder returns 0, or -1 with err filled (name too long, out of memory). */
int cpio_add_dir(struct cpio *c, const char *name, uint32_t perm, struct cv_error *err);
int cpio_add_file(struct cpio *c, const char *name, uint32_t perm, const void *data, size_t len,
		  struct cv_error *err);
int cpio_add_symlink(struct cpio *c, const char *name, const char *target, struct cv_error *err);
int cpio_add_chardev(struct cpio *c, const char *name, uint32_t perm, unsigned major,
		     unsigned minor, struct cv_error *err);

/* Appends the TRAILER!!! record; the archive in c->data is then complete. */
int cpio_finish(struct cpio *c, struct cv_error *err);

#endif
