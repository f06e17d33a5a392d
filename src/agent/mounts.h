/*
 * The mount table as cvisor-agent sees it (/proc/self/mounts) and the two questions the agent
 * asks of it: which mounts have storage worth reporting (info), and which filesystems are frozen
 * by default (freeze/thaw). Parsing takes text, not a path, so the rules are testable without
 * touching the machine's real mounts.
 */
#ifndef CVISOR_AGENT_MOUNTS_H
#define CVISOR_AGENT_MOUNTS_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define MOUNTS_PATH "/proc/self/mounts"
#define FILESYSTEMS_PATH "/proc/filesystems"

struct mount_entry {
	char *source;
	char *path;      /* mount point, octal escapes (\040 etc.) decoded */
	char *type;
	bool readonly;   /* "ro" among the mount options */
};

struct mount_table {
	struct mount_entry *v;
	size_t n;
};

/* Parses /proc/self/mounts text; malformed lines are skipped (the kernel never writes them). */
int mounts_parse(const char *text, struct mount_table *out, struct cv_error *err);
int mounts_read(const char *path, struct mount_table *out, struct cv_error *err);
void mounts_free(struct mount_table *t);

/* True if a later entry mounts over the same point, so this one cannot be reached by its path. */
bool mounts_hidden(const struct mount_table *t, size_t i);

/* Filesystems that have no storage of their own (proc, sysfs, devpts, cgroup...). */
bool mounts_type_is_pseudo(const char *type);

/*
 * The filesystem types that need a block device, from /proc/filesystems text: the lines without
 * "nodev". These are the kernel's own "real" filesystems, the ones FIFREEZE is meant for.
 */
struct fs_types {
	char **names;
	size_t n;
};

int fs_types_parse(const char *text, struct fs_types *out, struct cv_error *err);
int fs_types_read(const char *path, struct fs_types *out, struct cv_error *err);
bool fs_types_has(const struct fs_types *t, const char *type);
void fs_types_free(struct fs_types *t);

/*
 * The default freeze/thaw set: mount points of writable, reachable mounts whose type needs a block
 * device, in mount order (so "/" comes before what is mounted under it). *out is a
 * NULL-terminated list of copies (possibly empty), freed with mounts_free_paths.
 */
int mounts_freezable(const struct mount_table *t, const struct fs_types *blk, char ***out,
		     struct cv_error *err);
void mounts_free_paths(char **paths);

#endif
