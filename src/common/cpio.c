/*
 * newc cpio writer (see cpio.h). Every entry is owned by root with mtime 0, so archives built
 * from the same inputs are byte-identical.
 */
#include "cpio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CPIO_NAME_MAX 4096

void cpio_init(struct cpio *c)
{
	memset(c, 0, sizeof(*c));
	c->next_ino = 1;
}

void cpio_free(struct cpio *c)
{
	free(c->data);
	cpio_init(c);
}

static int reserve(struct cpio *c, size_t more, struct cv_error *err)
{
	if (c->len + more <= c->cap)
		return 0;
	size_t ncap = c->cap ? c->cap : 4096;
	while (ncap < c->len + more)
		ncap *= 2;
	uint8_t *n = realloc(c->data, ncap);
	if (!n)
		return cv_fail(err, CV_EXIT_OSERR, "cpio: out of memory (%zu bytes)", ncap);
	c->data = n;
	c->cap = ncap;
	return 0;
}

static void put(struct cpio *c, const void *p, size_t n)
{
	memcpy(c->data + c->len, p, n);
	c->len += n;
}

static void pad4(struct cpio *c)
{
	while (c->len & 3)
		c->data[c->len++] = 0;
}

/* One record: 110-byte ASCII header, NUL-terminated name, body; name and body 4-byte aligned. */
static int add_entry(struct cpio *c, const char *name, uint32_t mode, unsigned rmaj, unsigned rmin,
		     const void *body, size_t body_len, struct cv_error *err)
{
	/* The kernel wants relative names ("dev/console"); accept either spelling. */
	while (*name == '/')
		name++;
	size_t namesize = strlen(name) + 1;
	if (namesize > CPIO_NAME_MAX)
		return cv_fail(err, CV_EXIT_USAGE, "cpio: name too long: '%.64s...'", name);
	if (body_len > UINT32_MAX)
		return cv_fail(err, CV_EXIT_USAGE, "cpio: '%s' is larger than 4 GiB", name);
	if (reserve(c, 110 + namesize + 3 + body_len + 3, err) < 0)
		return -1;
	char hdr[111];
	uint32_t ino = strcmp(name, "TRAILER!!!") == 0 ? 0 : c->next_ino++;
	snprintf(hdr, sizeof(hdr),
		 "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode, 0u, 0u,
		 S_ISDIR(mode) ? 2u : 1u, 0u, (unsigned)body_len, 0u, 0u, rmaj, rmin,
		 (unsigned)namesize, 0u);
	put(c, hdr, 110);
	put(c, name, namesize);
	pad4(c);
	if (body_len)
		put(c, body, body_len);
	pad4(c);
	return 0;
}

int cpio_add_dir(struct cpio *c, const char *name, uint32_t perm, struct cv_error *err)
{
	return add_entry(c, name, S_IFDIR | (perm & 07777), 0, 0, NULL, 0, err);
}

int cpio_add_file(struct cpio *c, const char *name, uint32_t perm, const void *data, size_t len,
		  struct cv_error *err)
{
	return add_entry(c, name, S_IFREG | (perm & 07777), 0, 0, data, len, err);
}

int cpio_add_symlink(struct cpio *c, const char *name, const char *target, struct cv_error *err)
{
	return add_entry(c, name, S_IFLNK | 0777, 0, 0, target, strlen(target), err);
}

int cpio_add_chardev(struct cpio *c, const char *name, uint32_t perm, unsigned major,
		     unsigned minor, struct cv_error *err)
{
	return add_entry(c, name, S_IFCHR | (perm & 07777), major, minor, NULL, 0, err);
}

int cpio_finish(struct cpio *c, struct cv_error *err)
{
	return add_entry(c, "TRAILER!!!", 0, 0, 0, NULL, 0, err);
}
