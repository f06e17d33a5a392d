/*
 * The jail's cgroup (see jailer.h). A setting "memory.max=512M" names its controller before
 * the dot. Version 1 mounts each controller (or a few together) as its own hierarchy, so the
 * jail gets one leaf per hierarchy it touches; version 2 has one tree, where a controller must
 * be enabled in cgroup.subtree_control of every ancestor of the leaf. Leaves are placed under
 * the jailer's own cgroup (found in /proc/self/cgroup), never above it.
 */
#include "jailer.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

int jail_cgroup_detect_version(void)
{
	struct statfs s;
	if (statfs("/sys/fs/cgroup", &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC)
		return 2;
	return 1;
}

/* True if the comma-separated list has `word` as one of its items. */
static bool list_has(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		if (len == n && strncmp(p, word, n) == 0)
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

/*
 * The mount of a cgroup hierarchy: version 1 the one whose super options list `controller`,
 * version 2 the unified one (at /sys/fs/cgroup if there are several). Fills its mount point
 * and the hierarchy path it shows (its "root").
 */
static int find_mount(int version, const char *controller, char *mnt, char *mroot, size_t len,
		      struct cv_error *err)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return cv_fail_errno(err, CV_EXIT_OSERR, "open /proc/self/mountinfo");
	char line[4096];
	bool found = false;
	while (fgets(line, sizeof(line), f)) {
		char root[1024], point[1024], fstype[64], super[1024];
		char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %1023s %1023s", root, point) != 2 ||
		    sscanf(sep + 3, "%63s %*s %1023s", fstype, super) != 2)
			continue;
		bool match = version == 2 ? strcmp(fstype, "cgroup2") == 0
					  : strcmp(fstype, "cgroup") == 0 && list_has(super, controller);
		if (!match)
			continue;
		if (strlen(point) >= len || strlen(root) >= len)
			continue;
		if (!found || strcmp(point, "/sys/fs/cgroup") == 0) {
			strcpy(mnt, point);
			strcpy(mroot, root);
			found = true;
		}
	}
	fclose(f);
	if (!found)
		return version == 2
			       ? cv_fail(err, CV_EXIT_UNAVAILABLE, "no cgroup2 file system is mounted")
			       : cv_fail(err, CV_EXIT_UNAVAILABLE,
					 "no cgroup v1 hierarchy has the '%s' controller", controller);
	return 0;
}

/* This process's cgroup in the hierarchy of `controller` (v2: the unified one). */
static int own_cgroup(int version, const char *controller, char *out, size_t len,
		      struct cv_error *err)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return cv_fail_errno(err, CV_EXIT_OSERR, "open /proc/self/cgroup");
	char line[4096];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c1 = 0;
		*c2 = 0;
		const char *ctrls = c1 + 1, *path = c2 + 1;
		bool match = version == 2 ? strcmp(line, "0") == 0 && !*ctrls
					  : list_has(ctrls, controller);
		if (match && strlen(path) < len) {
			strcpy(out, path);
			found = true;
		}
	}
	fclose(f);
	if (!found)
		return cv_fail(err, CV_EXIT_UNAVAILABLE, "this process has no cgroup for '%s'",
			       version == 2 ? "the unified hierarchy" : controller);
	return 0;
}

static int write_file(const char *dir, const char *name, const char *value, struct cv_error *err)
{
	char path[JAIL_PATH_MAX + 80];
	if (cv_format(path, sizeof(path), err, "%s/%s", dir, name) < 0)
		return -1;
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "open '%s'", path);
	/* A cgroup file takes one value per write() call. */
	ssize_t n = write(fd, value, strlen(value));
	int e = errno;
	close(fd);
	if (n != (ssize_t)strlen(value)) {
		errno = n < 0 ? e : EIO;
		return cv_fail_errno(err, CV_EXIT_OSERR, "write '%s' to '%s'", value, path);
	}
	return 0;
}

static int read_small(const char *dir, const char *name, char *buf, size_t len)
{
	char path[JAIL_PATH_MAX + 80];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

/* v1 cpuset: a new cgroup starts with no CPUs and no memory nodes; inherit the parent's. */
static void cpuset_inherit(const char *dir)
{
	char parent[JAIL_PATH_MAX], v[1024];
	snprintf(parent, sizeof(parent), "%s", dir);
	char *slash = strrchr(parent, '/');
	if (!slash)
		return;
	*slash = 0;
	static const char *const files[] = { "cpuset.cpus", "cpuset.mems" };
	for (int i = 0; i < 2; i++) {
		char cur[1024];
		if (read_small(dir, files[i], cur, sizeof(cur)) == 0 && !cur[0] &&
		    read_small(parent, files[i], v, sizeof(v)) == 0 && v[0]) {
			struct cv_error ignored = { 0 };
			write_file(dir, files[i], v, &ignored);
		}
	}
}

/*
 * Creates base/parent and the leaf under it, directory by directory. Version 2 enables the
 * controllers in `ctrls` on the way (in base and each directory above the leaf).
 */
static int make_leaf(int version, const char *base, const char *parent, const char *id,
		     const char *const *ctrls, unsigned n_ctrls, bool cpuset, char *leaf_dir,
		     struct cv_error *err)
{
	char dir[JAIL_PATH_MAX];
	if (cv_format(dir, sizeof(dir), err, "%s", base) < 0)
		return -1;
	char rest[JAIL_PATH_MAX];
	if (cv_format(rest, sizeof(rest), err, "%s/%s", parent, id) < 0)
		return -1;
	for (char *comp = strtok(rest, "/"); comp; comp = strtok(NULL, "/")) {
		if (version == 2) {
			char have[1024] = "";
			read_small(dir, "cgroup.subtree_control", have, sizeof(have));
			for (unsigned i = 0; i < n_ctrls; i++) {
				char word[80];
				snprintf(word, sizeof(word), "%s", ctrls[i]);
				bool on = false;
				for (char *t = have; *t;) {
					size_t n = strcspn(t, " ");
					if (n == strlen(word) && strncmp(t, word, n) == 0)
						on = true;
					t += n;
					t += strspn(t, " ");
				}
				snprintf(word, sizeof(word), "+%s", ctrls[i]);
				if (!on && write_file(dir, "cgroup.subtree_control", word, err) < 0)
					return cv_error_wrap(
						err, "enable the %s controller below '%s'%s", ctrls[i], dir,
						errno == EBUSY ? " (the cgroup has processes of its own: "
								 "run the jailer from a cgroup meant for it)"
							       : "");
			}
		}
		size_t len = strlen(dir);
		if (len + 1 + strlen(comp) + 1 > sizeof(dir))
			return cv_fail(err, CV_EXIT_USAGE, "cgroup path too long");
		dir[len] = '/';
		strcpy(dir + len + 1, comp);
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return cv_fail_errno(err, CV_EXIT_OSERR, "create cgroup '%s'", dir);
		if (cpuset)
			cpuset_inherit(dir);
	}
	strcpy(leaf_dir, dir);
	return 0;
}

static void controller_of(const char *file, char *out, size_t len)
{
	size_t n = strcspn(file, ".");
	snprintf(out, len, "%.*s", (int)n, file);
}

static int open_leaf(struct jail_cgroups *cg, const char *leaf_dir, struct cv_error *err)
{
	for (unsigned i = 0; i < cg->n; i++)
		if (strcmp(cg->where[i], leaf_dir) == 0)
			return 0;   /* controllers mounted together share a leaf */
	if (cg->n == JAIL_MAX_CGROUP_DIRS)
		return cv_fail(err, CV_EXIT_USAGE, "too many cgroup hierarchies");
	char path[JAIL_PATH_MAX + 16];
	if (cv_format(path, sizeof(path), err, "%s/cgroup.procs", leaf_dir) < 0)
		return -1;
	int procs = open(path, O_WRONLY | O_CLOEXEC);
	if (procs < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "open '%s'", path);
	char parent[JAIL_PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", leaf_dir);
	*strrchr(parent, '/') = 0;
	int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0) {
		close(procs);
		return cv_fail_errno(err, CV_EXIT_OSERR, "open '%s'", parent);
	}
	cg->procs_fd[cg->n] = procs;
	cg->parent_fd[cg->n] = pfd;
	strcpy(cg->where[cg->n], leaf_dir);
	cg->n++;
	return 0;
}

int jail_cgroup_setup(int version, const char *parent, const char *id,
		      const struct jail_cgroup_setting *set, unsigned n, struct jail_cgroups *cg,
		      struct cv_error *err)
{
	memset(cg, 0, sizeof(*cg));
	snprintf(cg->leaf, sizeof(cg->leaf), "%s", id);
	if (n == 0)
		return 0;
	/* The distinct controllers the settings name. */
	char ctrl_buf[JAIL_MAX_CGROUP_SETTINGS][64];
	const char *ctrls[JAIL_MAX_CGROUP_SETTINGS];
	unsigned n_ctrls = 0;
	for (unsigned i = 0; i < n; i++) {
		char c[64];
		controller_of(set[i].file, c, sizeof(c));
		bool seen = false;
		for (unsigned j = 0; j < n_ctrls; j++)
			seen |= strcmp(ctrls[j], c) == 0;
		if (!seen) {
			strcpy(ctrl_buf[n_ctrls], c);
			ctrls[n_ctrls] = ctrl_buf[n_ctrls];
			n_ctrls++;
		}
	}
	for (unsigned i = 0; i < (version == 2 ? 1u : n_ctrls); i++) {
		char mnt[1024], mroot[1024], own[2048], base[JAIL_PATH_MAX], leaf[JAIL_PATH_MAX];
		const char *c = version == 2 ? "" : ctrls[i];
		if (find_mount(version, c, mnt, mroot, sizeof(mnt), err) < 0 ||
		    own_cgroup(version, c, own, sizeof(own), err) < 0)
			goto fail;
		/* /proc/self/cgroup paths are from the hierarchy's root; the mount shows mroot. */
		const char *rel = own;
		if (strcmp(mroot, "/") != 0 && strncmp(own, mroot, strlen(mroot)) == 0)
			rel = own + strlen(mroot);
		if (strcmp(rel, "/") == 0)
			rel = "";
		if (cv_format(base, sizeof(base), err, "%s%s", mnt, rel) < 0 ||
		    make_leaf(version, base, parent, id, version == 2 ? ctrls : &ctrls[i],
			      version == 2 ? n_ctrls : 1, version == 1 && strcmp(c, "cpuset") == 0,
			      leaf, err) < 0 ||
		    open_leaf(cg, leaf, err) < 0)
			goto fail;
		/* Version 1: this hierarchy's settings; version 2: all of them. */
		for (unsigned s = 0; s < n; s++) {
			char sc[64];
			controller_of(set[s].file, sc, sizeof(sc));
			if (version == 1 && strcmp(sc, c) != 0)
				continue;
			if (write_file(leaf, set[s].file, set[s].value, err) < 0)
				goto fail;
		}
	}
	return 0;
fail:
	jail_cgroup_remove(cg);
	return -1;
}

int jail_cgroup_add(struct jail_cgroups *cg, pid_t pid, struct cv_error *err)
{
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "%d\n", (int)pid);
	for (unsigned i = 0; i < cg->n; i++)
		if (write(cg->procs_fd[i], buf, (size_t)len) != len)
			return cv_fail_errno(err, CV_EXIT_OSERR, "move pid %d into cgroup '%s'",
					     (int)pid, cg->where[i]);
	return 0;
}

void jail_cgroup_close(struct jail_cgroups *cg)
{
	for (unsigned i = 0; i < cg->n; i++) {
		close(cg->procs_fd[i]);
		close(cg->parent_fd[i]);
	}
	cg->n = 0;
}

void jail_cgroup_remove(struct jail_cgroups *cg)
{
	for (unsigned i = 0; i < cg->n; i++) {
		/* The cgroup stays busy for a moment after its last process exits. */
		for (int tries = 0; tries < 100; tries++) {
			if (unlinkat(cg->parent_fd[i], cg->leaf, AT_REMOVEDIR) == 0 || errno != EBUSY)
				break;
			struct timespec ts = { 0, 20 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	jail_cgroup_close(cg);
}
