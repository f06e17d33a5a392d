/*
 * FIFREEZE/FITHAW for cvisor-agent (fsfreeze.h). The agent itself writes nothing to disk while
 * filesystems are frozen: paths are opened read-only (atime updates are skipped on a frozen
 * filesystem), and every answer goes to the client socket. Each filesystem is handled once per
 * request even if several paths lead to it, because a second FIFREEZE would fail with EBUSY.
 */
#include "fsfreeze.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mounts.h"
#include "util.h"

/* One path of a request, opened. */
struct target {
	const char *path;
	int fd;
	dev_t dev;
	bool first;        /* the first path of this request on its filesystem */
	bool frozen;       /* frozen by this request */
	bool failed;       /* thaw: FITHAW failed on this filesystem */
};

void freeze_hold_init(struct freeze_hold *h)
{
	h->v = NULL;
	h->n = 0;
}

static void held_drop(struct freeze_hold *h, size_t i)
{
	close(h->v[i].fd);
	free(h->v[i].path);
	h->v[i] = h->v[--h->n];
}

void freeze_hold_release(struct freeze_hold *h)
{
	/* Reverse order: whatever is mounted under another filesystem thaws before it. */
	while (h->n > 0) {
		size_t i = h->n - 1;
		if (ioctl(h->v[i].fd, FITHAW, 0) == 0)
			fprintf(stderr, "cvisor-agent: thawed %s (its connection ended while frozen)\n",
				h->v[i].path);
		held_drop(h, i);
	}
	free(h->v);
	freeze_hold_init(h);
}

static int default_paths(char ***out, struct cv_error *err)
{
	struct mount_table t;
	struct fs_types blk;
	if (mounts_read(MOUNTS_PATH, &t, err) < 0)
		return -1;
	if (fs_types_read(FILESYSTEMS_PATH, &blk, err) < 0) {
		mounts_free(&t);
		return -1;
	}
	int rc = mounts_freezable(&t, &blk, out, err);
	fs_types_free(&blk);
	mounts_free(&t);
	return rc;
}

static const char *freeze_reason(int e)
{
	switch (e) {
	case EBUSY:
		return "already frozen";
	case EOPNOTSUPP:
		return "this filesystem type cannot be frozen";
	case EPERM:
		return "not permitted (needs CAP_SYS_ADMIN)";
	default:
		return strerror(e);
	}
}

/* Opens every path; marks the first of each filesystem. Open failures become result errors. */
static int open_targets(char *const *paths, struct target **out, size_t *count,
			struct agent_fs_result *res, struct cv_error *err)
{
	size_t n = 0;
	while (paths[n])
		n++;
	struct target *t = calloc(n ? n : 1, sizeof(*t));
	if (!t)
		return cv_fail(err, CV_EXIT_OSERR, "freeze: out of memory");
	for (size_t i = 0; i < n; i++)
		t[i].fd = -1;
	for (size_t i = 0; i < n; i++) {
		t[i].path = paths[i];
		/* O_DIRECTORY: opening an arbitrary device node could have side effects. */
		t[i].fd = open(paths[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		struct stat st;
		if (t[i].fd < 0 || fstat(t[i].fd, &st) < 0) {
			char msg[256];
			snprintf(msg, sizeof(msg), "cannot open as a directory: %s", strerror(errno));
			if (t[i].fd >= 0)
				close(t[i].fd);
			t[i].fd = -1;
			if (agent_fs_result_add_error(res, paths[i], msg, err) < 0) {
				*out = t;
				*count = i + 1;
				return -1;
			}
			continue;
		}
		t[i].dev = st.st_dev;
		t[i].first = true;
		for (size_t j = 0; j < i; j++)
			if (t[j].fd >= 0 && t[j].dev == st.st_dev)
				t[i].first = false;
	}
	*out = t;
	*count = n;
	return 0;
}

static void close_targets(struct target *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].fd >= 0)
			close(t[i].fd);
	free(t);
}

/* Thaws what this request froze, newest first; a failure to do so is reported, not hidden. */
static void roll_back(struct target *t, size_t n, struct agent_fs_result *res)
{
	for (size_t i = n; i-- > 0;) {
		if (!t[i].frozen)
			continue;
		if (ioctl(t[i].fd, FITHAW, 0) < 0 && errno != EINVAL) {
			char msg[256];
			snprintf(msg, sizeof(msg), "STILL FROZEN: thawing after the failed freeze: %s",
				 strerror(errno));
			struct cv_error ignored;
			agent_fs_result_add_error(res, t[i].path, msg, &ignored);
			fprintf(stderr, "cvisor-agent: %s: %s\n", t[i].path, msg);
		}
		t[i].frozen = false;
	}
}

/* An always-present, possibly empty path list: clients can rely on "paths" being an array. */
static int ensure_paths(struct agent_fs_result *res, struct cv_error *err)
{
	if (!res->paths && !(res->paths = calloc(1, sizeof(char *))))
		return cv_fail(err, CV_EXIT_OSERR, "fs result: out of memory");
	return 0;
}

/*
 * Everything that can fail for lack of memory happens before the first FIFREEZE: the answer's
 * path list and room in the hold. After that, success is reported without allocating.
 */
static int prepare(struct target *t, size_t n, struct freeze_hold *hold, char **held_paths,
		   struct agent_fs_result *res, struct cv_error *err)
{
	for (size_t i = 0; i < n; i++)
		if (agent_fs_result_add_path(res, t[i].path, err) < 0)
			return -1;
	struct freeze_held *v = realloc(hold->v, (hold->n + n + 1) * sizeof(*v));
	if (!v)
		return cv_fail(err, CV_EXIT_OSERR, "freeze: out of memory");
	hold->v = v;
	for (size_t i = 0; i < n; i++)
		if (t[i].first && !(held_paths[i] = strdup(t[i].path)))
			return cv_fail(err, CV_EXIT_OSERR, "freeze: out of memory");
	return 0;
}

int fs_freeze(char *const *paths, struct freeze_hold *hold, struct agent_fs_result *res,
	      struct cv_error *err)
{
	memset(res, 0, sizeof(*res));
	char **defaults = NULL;
	if (!paths) {
		if (default_paths(&defaults, err) < 0)
			return cv_error_wrap(err, "freeze");
		paths = defaults;
	}
	struct target *t = NULL;
	char **held_paths = NULL;
	size_t n = 0;
	int rc = open_targets(paths, &t, &n, res, err);
	if (rc == 0 && res->nerrors == 0) {
		held_paths = calloc(n + 1, sizeof(*held_paths));
		rc = held_paths ? prepare(t, n, hold, held_paths, res, err)
				: cv_fail(err, CV_EXIT_OSERR, "freeze: out of memory");
	}
	for (size_t i = 0; rc == 0 && res->nerrors == 0 && i < n; i++) {
		if (!t[i].first)
			continue;
		if (ioctl(t[i].fd, FIFREEZE, 0) < 0) {
			rc = agent_fs_result_add_error(res, t[i].path, freeze_reason(errno), err);
			break;
		}
		t[i].frozen = true;
	}
	if (rc < 0 || res->nerrors > 0) {
		/* All or nothing: once anything failed, no path counts as frozen. */
		roll_back(t, n, res);
		mounts_free_paths(res->paths);
		res->paths = NULL;
		res->npaths = 0;
	} else {
		for (size_t i = 0; i < n; i++) {
			if (!t[i].frozen)
				continue;
			hold->v[hold->n++] = (struct freeze_held){ .dev = t[i].dev, .fd = t[i].fd,
								   .path = held_paths[i] };
			held_paths[i] = NULL;
			t[i].fd = -1;
		}
	}
	if (rc == 0)
		rc = ensure_paths(res, err);
	for (size_t i = 0; held_paths && i < n; i++)
		free(held_paths[i]);
	free(held_paths);
	close_targets(t, n);
	mounts_free_paths(defaults);
	return rc;
}

int fs_thaw(char *const *paths, struct freeze_hold *hold, struct agent_fs_result *res,
	    struct cv_error *err)
{
	memset(res, 0, sizeof(*res));
	res->thaw = true;
	char **defaults = NULL;
	if (!paths) {
		if (default_paths(&defaults, err) < 0)
			return cv_error_wrap(err, "thaw");
		paths = defaults;
	}
	struct target *t = NULL;
	size_t n = 0;
	int rc = open_targets(paths, &t, &n, res, err);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (t[i].fd < 0)
			continue;
		if (t[i].first) {
			/* EINVAL: not frozen. Thaw is idempotent, so that is success. */
			if (ioctl(t[i].fd, FITHAW, 0) < 0 && errno != EINVAL) {
				t[i].failed = true;
				rc = agent_fs_result_add_error(res, t[i].path, strerror(errno), err);
				continue;
			}
		} else {
			/* Another path of this request led to the same filesystem: share its outcome. */
			for (size_t j = 0; j < i; j++)
				if (t[j].first && t[j].dev == t[i].dev)
					t[i].failed = t[j].failed;
			if (t[i].failed) {
				rc = agent_fs_result_add_error(res, t[i].path,
							       "its filesystem could not be thawed", err);
				continue;
			}
		}
		for (size_t j = hold->n; j-- > 0;)
			if (hold->v[j].dev == t[i].dev)
				held_drop(hold, j);
		rc = agent_fs_result_add_path(res, t[i].path, err);
	}
	close_targets(t, n);
	mounts_free_paths(defaults);
	if (rc == 0)
		rc = ensure_paths(res, err);
	return rc;
}
