/*
 * Filesystem freeze and thaw for the agent's "freeze"/"thaw" requests (FIFREEZE/FITHAW), used to
 * take consistent disk snapshots of a running guest. A freeze is all or nothing: if one
 * filesystem fails, those this request already froze are thawed before the answer goes out. A
 * connection remembers what it froze (struct freeze_hold) and thaws it when it ends, so a client
 * that dies between freeze and thaw does not leave the guest's disks blocked forever.
 */
#ifndef CVISOR_AGENT_FSFREEZE_H
#define CVISOR_AGENT_FSFREEZE_H

#include <sys/types.h>

#include "proto.h"

struct freeze_held {
	dev_t dev;
	int fd;            /* open directory on the frozen filesystem, close-on-exec */
	char *path;
};

struct freeze_hold {
	struct freeze_held *v;
	size_t n;
};

void freeze_hold_init(struct freeze_hold *h);
/* Thaws every filesystem still held (one already thawed elsewhere is fine) and empties h. */
void freeze_hold_release(struct freeze_hold *h);

/*
 * Freezes `paths` (NULL: the default set, see mounts_freezable) and fills *res. Per-path failures
 * go into res->errors; -1 only when the request could not be attempted at all (the mount table
 * unreadable, out of memory), with nothing frozen.
 */
int fs_freeze(char *const *paths, struct freeze_hold *hold, struct agent_fs_result *res,
	      struct cv_error *err);

/* Thaws `paths` (NULL: the default set). Thawing a filesystem that is not frozen succeeds. */
int fs_thaw(char *const *paths, struct freeze_hold *hold, struct agent_fs_result *res,
	    struct cv_error *err);

#endif
