/*
 * cvisor-jailer: starts one cvisor-vmm (or another exec file) locked into its own jail - new
 * mount, PID, IPC and UTS namespaces (network optional), a private root built from the files
 * it needs, cgroup limits, resource limits - as an unprivileged uid/gid. The parts:
 *   main.c    options, the order of operations, waiting for the jailed process
 *   jailfs.c  the jail's root: exec file, shared libraries, bind mounts, /dev, pivot_root
 *   cgroup.c  the jail's cgroup (v1 controllers or the v2 unified tree)
 * docs/sandboxing.md describes the jail as a user sees it.
 */
#ifndef CVISOR_JAILER_H
#define CVISOR_JAILER_H

#include <stdbool.h>
#include <sys/types.h>

#include "error.h"

#define JAIL_MAX_ID 64
#define JAIL_MAX_BINDS 32
#define JAIL_MAX_CGROUP_SETTINGS 32
#define JAIL_MAX_LIBS 64
#define JAIL_PATH_MAX 4096

struct jail_bind {
	const char *src;             /* host path */
	char dst[JAIL_PATH_MAX];     /* absolute path inside the jail */
	bool read_only;
};

struct jail_cgroup_setting {
	char file[64];               /* e.g. "memory.max"; the controller is the part before '.' */
	const char *value;
};

/* ------------------------------------------------------------------------------------------ */
/* jailfs.c */

/*
 * The shared libraries the dynamic loader maps for `exec` (absolute host paths, the loader
 * itself included), found with the loader's own --list; none for a static executable.
 */
int jail_resolve_libs(const char *exec, char libs[][JAIL_PATH_MAX], unsigned *n,
		      struct cv_error *err);

/* Copies the exec file to root/name (mode 0755, owned by root). */
int jail_copy_exec(const char *exec, const char *root, const char *name, struct cv_error *err);

/*
 * In the current (new, private) mount namespace: makes root a mount point of its own, mounts
 * each library read-only at its own path and each bind at its destination, and gives the jail
 * a small tmpfs /dev with kvm, net/tun (owned by uid:gid), urandom and null. The root
 * directory itself is then handed to uid:gid, so the VMM can create its sockets there.
 */
int jail_build(const char *root, char libs[][JAIL_PATH_MAX], unsigned n_libs,
	       const struct jail_bind *binds, unsigned n_binds, uid_t uid, gid_t gid,
	       struct cv_error *err);

/* Makes root the root of the mount namespace (pivot_root) and the working directory. */
int jail_enter(const char *root, struct cv_error *err);

/* Checks that a jail path is absolute and has no "." or ".." component. */
bool jail_path_ok(const char *p);

/* ------------------------------------------------------------------------------------------ */
/* cgroup.c */

#define JAIL_MAX_CGROUP_DIRS 8

/* The cgroups created for one jail, kept open across pivot_root. */
struct jail_cgroups {
	unsigned n;
	int procs_fd[JAIL_MAX_CGROUP_DIRS];   /* cgroup.procs of each leaf */
	int parent_fd[JAIL_MAX_CGROUP_DIRS];  /* directory holding the leaf (for its removal) */
	char where[JAIL_MAX_CGROUP_DIRS][JAIL_PATH_MAX];   /* leaf path, for messages */
	char leaf[JAIL_MAX_ID + 1];
};

/* 1 or 2: the cgroup version mounted at /sys/fs/cgroup. */
int jail_cgroup_detect_version(void);

/*
 * Creates <own cgroup>/<parent>/<id> in every hierarchy the settings need (version 1: one
 * per controller; version 2: the unified tree, with the controllers enabled on the way down),
 * and writes the settings. Nesting under the jailer's own cgroup keeps the jail inside any
 * limit its caller is under. The process is added later (jail_cgroup_add).
 */
int jail_cgroup_setup(int version, const char *parent, const char *id,
		      const struct jail_cgroup_setting *set, unsigned n, struct jail_cgroups *cg,
		      struct cv_error *err);
int jail_cgroup_add(struct jail_cgroups *cg, pid_t pid, struct cv_error *err);
/* Removes the leaves once their processes are gone; closes everything. */
void jail_cgroup_remove(struct jail_cgroups *cg);
void jail_cgroup_close(struct jail_cgroups *cg);

#endif
