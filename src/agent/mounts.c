/*
 * Mount table parsing and classification for cvisor-agent (mounts.h). Everything here works on
 * text already read, with bounded allocations; the files come from the kernel but a malformed
 * line is skipped rather than trusted.
 */
#include "mounts.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The mount table of a busy host can be long; a guest's is a dozen lines. */
#define MOUNTS_MAX_BYTES (16u << 20)

void mounts_free(struct mount_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->v[i].source);
		free(t->v[i].path);
		free(t->v[i].type);
	}
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

/* Decodes the kernel's \ooo escapes (space, tab, newline, backslash) in place. */
static void unescape(char *s)
{
	char *w = s;
	for (const char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = 0;
}

static bool has_option(const char *opts, const char *want)
{
	size_t wl = strlen(want);
	for (const char *p = opts; *p;) {
		size_t l = strcspn(p, ",");
		if (l == wl && strncmp(p, want, wl) == 0)
			return true;
		p += l;
		if (*p == ',')
			p++;
	}
	return false;
}

int mounts_parse(const char *text, struct mount_table *out, struct cv_error *err)
{
	out->v = NULL;
	out->n = 0;
	size_t cap = 0;
	char *copy = strdup(text);
	if (!copy)
		return cv_fail(err, CV_EXIT_OSERR, "mount table: out of memory");
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* source path type options freq passno: fields never contain a raw space. */
		char *f[4];
		char *fs = NULL;
		size_t nf = 0;
		for (char *tok = strtok_r(line, " ", &fs); tok && nf < 4; tok = strtok_r(NULL, " ", &fs))
			f[nf++] = tok;
		if (nf < 4)
			continue;
		if (out->n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct mount_entry *n = realloc(out->v, ncap * sizeof(*n));
			if (!n)
				goto oom;
			out->v = n;
			cap = ncap;
		}
		unescape(f[0]);
		unescape(f[1]);
		unescape(f[2]);
		struct mount_entry *e = &out->v[out->n];
		e->source = strdup(f[0]);
		e->path = strdup(f[1]);
		e->type = strdup(f[2]);
		e->readonly = has_option(f[3], "ro");
		out->n++;
		if (!e->source || !e->path || !e->type)
			goto oom;
	}
	free(copy);
	return 0;
oom:
	free(copy);
	mounts_free(out);
	return cv_fail(err, CV_EXIT_OSERR, "mount table: out of memory");
}

int mounts_read(const char *path, struct mount_table *out, struct cv_error *err)
{
	struct cv_buf b;
	out->v = NULL;
	out->n = 0;
	if (cv_read_file(path, MOUNTS_MAX_BYTES, &b, err) < 0)
		return cv_error_wrap(err, "mount table");
	/* cv_read_file NUL-terminates; an embedded NUL only shortens what is parsed. */
	int rc = mounts_parse((const char *)b.data, out, err);
	cv_buf_free(&b);
	return rc;
}

bool mounts_hidden(const struct mount_table *t, size_t i)
{
	for (size_t j = i + 1; j < t->n; j++)
		if (strcmp(t->v[j].path, t->v[i].path) == 0)
			return true;
	return false;
}

bool mounts_type_is_pseudo(const char *type)
{
	static const char *const pseudo[] = {
		"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs",
		"tracefs", "pstore", "bpf", "mqueue", "hugetlbfs", "configfs", "fusectl",
		"binfmt_misc", "autofs", "efivarfs", "rpc_pipefs", "nsfs", "selinuxfs", "ramfs",
		"rootfs",
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(pseudo); i++)
		if (strcmp(type, pseudo[i]) == 0)
			return true;
	return false;
}

void fs_types_free(struct fs_types *t)
{
	mounts_free_paths(t->names);
	t->names = NULL;
	t->n = 0;
}

int fs_types_parse(const char *text, struct fs_types *out, struct cv_error *err)
{
	out->names = calloc(1, sizeof(char *));
	out->n = 0;
	if (!out->names)
		return cv_fail(err, CV_EXIT_OSERR, "filesystem types: out of memory");
	for (const char *line = text; *line;) {
		size_t len = strcspn(line, "\n");
		/* "nodev\tproc" or "\text4": a first field is only ever "nodev". */
		const char *tab = memchr(line, '\t', len);
		if (tab && tab == line) {
			size_t nl = len - 1;
			char **n = realloc(out->names, (out->n + 2) * sizeof(*n));
			if (!n)
				goto oom;
			out->names = n;
			n[out->n] = strndup(line + 1, nl);
			if (!n[out->n])
				goto oom;
			n[++out->n] = NULL;
		}
		line += len;
		if (*line == '\n')
			line++;
	}
	return 0;
oom:
	fs_types_free(out);
	return cv_fail(err, CV_EXIT_OSERR, "filesystem types: out of memory");
}

int fs_types_read(const char *path, struct fs_types *out, struct cv_error *err)
{
	struct cv_buf b;
	out->names = NULL;
	out->n = 0;
	if (cv_read_file(path, 1u << 20, &b, err) < 0)
		return cv_error_wrap(err, "filesystem types");
	int rc = fs_types_parse((const char *)b.data, out, err);
	cv_buf_free(&b);
	return rc;
}

bool fs_types_has(const struct fs_types *t, const char *type)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->names[i], type) == 0)
			return true;
	return false;
}

void mounts_free_paths(char **paths)
{
	if (!paths)
		return;
	for (char **p = paths; *p; p++)
		free(*p);
	free(paths);
}

int mounts_freezable(const struct mount_table *t, const struct fs_types *blk, char ***out,
		     struct cv_error *err)
{
	*out = NULL;
	char **list = calloc(t->n + 1, sizeof(*list));
	if (!list)
		return cv_fail(err, CV_EXIT_OSERR, "freezable filesystems: out of memory");
	size_t n = 0;
	for (size_t i = 0; i < t->n; i++) {
		const struct mount_entry *e = &t->v[i];
		if (e->readonly || e->path[0] != '/' || !fs_types_has(blk, e->type) ||
		    mounts_hidden(t, i))
			continue;
		list[n] = strdup(e->path);
		if (!list[n]) {
			mounts_free_paths(list);
			return cv_fail(err, CV_EXIT_OSERR, "freezable filesystems: out of memory");
		}
		n++;
	}
	*out = list;
	return 0;
}
