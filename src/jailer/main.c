/*
 * cvisor-jailer's command line and the order of operations (see jailer.h):
 *   1. check everything given; close inherited descriptors; build an empty environment
 *   2. create <base>/<exec name>/<id>/root (it must not exist) and copy the exec file there
 *   3. resource limits; the cgroup leaves with their settings
 *   4. new mount, PID, IPC, UTS (and optionally network) namespaces, or join --netns
 *   5. the jail's root: libraries, --bind files, /dev nodes; pivot_root into it
 *   6. fork: the child is PID 1 of the new PID namespace; the parent moves it into the cgroups,
 *      writes /<exec name>.pid in the jail, and lets it go on
 *   7. the child drops every capability and becomes uid:gid, then execs /<exec name> with the
 *      arguments after "--"
 *   8. the parent waits (forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT), removes the cgroup leaves
 *      and exits with the child's status; with --daemonize it exits at once instead.
 * The option names follow Firecracker's jailer where both have the feature.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jailer.h"
#include "util.h"

#define DEFAULT_BASE "/srv/cvisor-jailer"
#define DEFAULT_PARENT_CGROUP "cvisor"
#define DEFAULT_NOFILE 2048

struct options {
	const char *id;
	const char *exec_file;
	uid_t uid;
	gid_t gid;
	bool have_uid, have_gid;
	const char *base;
	const char *netns;
	bool new_netns;
	bool daemonize;
	int cgroup_version;          /* 0: detect */
	const char *parent_cgroup;
	struct jail_cgroup_setting cgroups[JAIL_MAX_CGROUP_SETTINGS];
	unsigned n_cgroups;
	struct jail_bind binds[JAIL_MAX_BINDS];
	unsigned n_binds;
	rlim_t fsize;                /* RLIM_INFINITY: not set */
	rlim_t nofile;
	char **vmm_argv;             /* after "--" */
	int vmm_argc;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cvisor-jailer --id ID --exec-file PATH --uid UID --gid GID [options]\n"
		"                     [-- ARGS FOR THE EXEC FILE...]\n"
		"\n"
		"Runs PATH (normally cvisor-vmm) in a jail: new mount, PID, IPC and UTS namespaces,\n"
		"the root directory <base>/<name of PATH>/ID/root holding only what it needs, a cgroup\n"
		"of its own, as UID:GID with no capabilities. Must be started as root.\n"
		"\n"
		"  --id ID                  the jail's name: 1-%d letters, digits and '-'\n"
		"  --exec-file PATH         the program to run (copied into the jail; its shared\n"
		"                           libraries are bind-mounted read-only)\n"
		"  --uid UID, --gid GID     unprivileged user and group to run it as (not 0)\n"
		"  --chroot-base-dir DIR    where jails are built (default %s)\n"
		"  --bind SRC[:DST][:ro]    make host file or directory SRC visible at DST inside the\n"
		"                           jail (default: the same path); :ro for read-only. Kernel,\n"
		"                           initrd and disk images come in this way; repeatable\n"
		"  --netns PATH             join this network namespace (e.g. /var/run/netns/NAME)\n"
		"  --new-netns              a new, empty network namespace (no TAP devices)\n"
		"  --cgroup FILE=VALUE      write VALUE to FILE of the jail's cgroup, e.g.\n"
		"                           memory.max=1G, pids.max=64, cpu.max=\"50000 100000\" (v2) or\n"
		"                           memory.limit_in_bytes=1G, cpu.cfs_quota_us=50000 (v1);\n"
		"                           repeatable\n"
		"  --cgroup-version 1|2     default: the version mounted at /sys/fs/cgroup\n"
		"  --parent-cgroup PATH     the jail's cgroup is <jailer's cgroup>/PATH/ID\n"
		"                           (default %s)\n"
		"  --resource-limit fsize=BYTES|no-file=N   setrlimit before exec (default no-file=%d)\n"
		"  --daemonize              detach (new session, stdio to /dev/null) and exit once the\n"
		"                           program runs; its host PID is in the jail's /<name>.pid\n"
		"  --new-pid-ns             accepted for Firecracker compatibility: the PID namespace\n"
		"                           is always new\n"
		"  --help, --version\n"
		"\n"
		"Without --daemonize the jailer waits and exits with the program's status (128+N if\n"
		"a signal N ended it), then removes the jail's cgroup. The jail directory stays for\n"
		"the caller to remove.\n",
		JAIL_MAX_ID, DEFAULT_BASE, DEFAULT_PARENT_CGROUP, DEFAULT_NOFILE);
}

static bool id_ok(const char *id)
{
	size_t n = strlen(id);
	return n >= 1 && n <= JAIL_MAX_ID &&
	       strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == n;
}

static int parse_bind(char *arg, struct jail_bind *b, struct cv_error *err)
{
	memset(b, 0, sizeof(*b));
	char *dst = strchr(arg, ':');
	if (dst)
		*dst++ = 0;
	if (dst) {
		char *flag = strchr(dst, ':');
		if (flag)
			*flag++ = 0;
		if (flag && strcmp(flag, "ro") == 0)
			b->read_only = true;
		else if (flag)
			return cv_fail(err, CV_EXIT_USAGE, "--bind: unknown flag '%s' (only ro)", flag);
		if (!*dst) {
			dst = NULL;
		} else if (strcmp(dst, "ro") == 0 && !flag) {
			b->read_only = true;
			dst = NULL;
		}
	}
	if (arg[0] != '/')
		return cv_fail(err, CV_EXIT_USAGE, "--bind '%s': the source must be absolute", arg);
	b->src = arg;
	const char *d = dst ? dst : arg;
	if (!jail_path_ok(d) || strcmp(d, "/") == 0 || strncmp(d, "/dev", 4) == 0)
		return cv_fail(err, CV_EXIT_USAGE,
			       "--bind: '%s' is not a usable jail path (absolute, no '.' or '..', "
			       "not / or /dev)", d);
	snprintf(b->dst, sizeof(b->dst), "%s", d);
	return 0;
}

static int parse_cgroup(const char *arg, struct jail_cgroup_setting *c, struct cv_error *err)
{
	const char *eq = strchr(arg, '=');
	size_t n = eq ? (size_t)(eq - arg) : 0;
	if (!eq || n == 0 || n >= sizeof(c->file) || !eq[1])
		return cv_fail(err, CV_EXIT_USAGE, "--cgroup '%s': expected FILE=VALUE", arg);
	memcpy(c->file, arg, n);
	c->file[n] = 0;
	/* A plain file name of the form controller.name: nothing that walks the tree. */
	if (strchr(c->file, '/') || !strchr(c->file, '.') || c->file[0] == '.' ||
	    strncmp(c->file, "cgroup.", 7) == 0)
		return cv_fail(err, CV_EXIT_USAGE, "--cgroup '%s': not a controller file", arg);
	c->value = eq + 1;
	return 0;
}

static int parse_rlimit(const char *arg, struct options *o, struct cv_error *err)
{
	uint64_t v;
	if (strncmp(arg, "fsize=", 6) == 0 && cv_parse_u64(arg + 6, 0, UINT64_MAX / 2, &v))
		o->fsize = (rlim_t)v;
	else if (strncmp(arg, "no-file=", 8) == 0 && cv_parse_u64(arg + 8, 1, 1 << 20, &v))
		o->nofile = (rlim_t)v;
	else
		return cv_fail(err, CV_EXIT_USAGE,
			       "--resource-limit '%s': expected fsize=BYTES or no-file=N", arg);
	return 0;
}

static int parse_args(int argc, char **argv, struct options *o, struct cv_error *err)
{
	enum { OPT_ID = 1, OPT_EXEC, OPT_UID, OPT_GID, OPT_BASE, OPT_BIND, OPT_NETNS, OPT_NEW_NETNS,
	       OPT_CGROUP, OPT_CGROUP_VERSION, OPT_PARENT_CGROUP, OPT_RLIMIT, OPT_DAEMONIZE,
	       OPT_NEW_PID_NS, OPT_HELP, OPT_VERSION };
	static const struct option longopts[] = {
		{ "id", required_argument, NULL, OPT_ID },
		{ "exec-file", required_argument, NULL, OPT_EXEC },
		{ "uid", required_argument, NULL, OPT_UID },
		{ "gid", required_argument, NULL, OPT_GID },
		{ "chroot-base-dir", required_argument, NULL, OPT_BASE },
		{ "bind", required_argument, NULL, OPT_BIND },
		{ "netns", required_argument, NULL, OPT_NETNS },
		{ "new-netns", no_argument, NULL, OPT_NEW_NETNS },
		{ "cgroup", required_argument, NULL, OPT_CGROUP },
		{ "cgroup-version", required_argument, NULL, OPT_CGROUP_VERSION },
		{ "parent-cgroup", required_argument, NULL, OPT_PARENT_CGROUP },
		{ "resource-limit", required_argument, NULL, OPT_RLIMIT },
		{ "daemonize", no_argument, NULL, OPT_DAEMONIZE },
		{ "new-pid-ns", no_argument, NULL, OPT_NEW_PID_NS },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	memset(o, 0, sizeof(*o));
	o->base = DEFAULT_BASE;
	o->parent_cgroup = DEFAULT_PARENT_CGROUP;
	o->fsize = RLIM_INFINITY;
	o->nofile = DEFAULT_NOFILE;
	opterr = 0;
	int c;
	/* "+": stop at the first non-option, so nothing after "--" is taken for ours. */
	while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		uint64_t v;
		switch (c) {
		case OPT_ID:
			if (!id_ok(optarg))
				return cv_fail(err, CV_EXIT_USAGE,
					       "--id '%s': 1 to %d letters, digits or '-'", optarg,
					       JAIL_MAX_ID);
			o->id = optarg;
			break;
		case OPT_EXEC:
			o->exec_file = optarg;
			break;
		case OPT_UID:
		case OPT_GID:
			if (!cv_parse_u64(optarg, 1, 0xfffffffeu, &v))
				return cv_fail(err, CV_EXIT_USAGE,
					       "--%s '%s': expected a number other than 0 (the jailed "
					       "program runs unprivileged)",
					       c == OPT_UID ? "uid" : "gid", optarg);
			if (c == OPT_UID) {
				o->uid = (uid_t)v;
				o->have_uid = true;
			} else {
				o->gid = (gid_t)v;
				o->have_gid = true;
			}
			break;
		case OPT_BASE:
			if (!jail_path_ok(optarg))
				return cv_fail(err, CV_EXIT_USAGE, "--chroot-base-dir '%s': must be "
					       "absolute, without '.' or '..'", optarg);
			o->base = optarg;
			break;
		case OPT_BIND:
			if (o->n_binds == JAIL_MAX_BINDS)
				return cv_fail(err, CV_EXIT_USAGE, "at most %d --bind", JAIL_MAX_BINDS);
			if (parse_bind(optarg, &o->binds[o->n_binds++], err) < 0)
				return -1;
			break;
		case OPT_NETNS:
			o->netns = optarg;
			break;
		case OPT_NEW_NETNS:
			o->new_netns = true;
			break;
		case OPT_CGROUP:
			if (o->n_cgroups == JAIL_MAX_CGROUP_SETTINGS)
				return cv_fail(err, CV_EXIT_USAGE, "at most %d --cgroup",
					       JAIL_MAX_CGROUP_SETTINGS);
			if (parse_cgroup(optarg, &o->cgroups[o->n_cgroups++], err) < 0)
				return -1;
			break;
		case OPT_CGROUP_VERSION:
			if (strcmp(optarg, "1") != 0 && strcmp(optarg, "2") != 0)
				return cv_fail(err, CV_EXIT_USAGE, "--cgroup-version '%s': 1 or 2",
					       optarg);
			o->cgroup_version = optarg[0] - '0';
			break;
		case OPT_PARENT_CGROUP:
			o->parent_cgroup = optarg;   /* checked below */
			break;
		case OPT_RLIMIT:
			if (parse_rlimit(optarg, o, err) < 0)
				return -1;
			break;
		case OPT_DAEMONIZE:
			o->daemonize = true;
			break;
		case OPT_NEW_PID_NS:
			break;
		case OPT_HELP:
			usage(stdout);
			exit(0);
		case OPT_VERSION:
			printf("cvisor-jailer %s\n", CVISOR_VERSION);
			exit(0);
		default:
			return cv_fail(err, CV_EXIT_USAGE, "unknown or incomplete option '%s' (see --help)",
				       argv[optind - 1]);
		}
	}
	o->vmm_argv = argv + optind;
	o->vmm_argc = argc - optind;
	if (!o->id || !o->exec_file || !o->have_uid || !o->have_gid)
		return cv_fail(err, CV_EXIT_USAGE, "--id, --exec-file, --uid and --gid are required "
			       "(see --help)");
	if (o->netns && o->new_netns)
		return cv_fail(err, CV_EXIT_USAGE, "--netns and --new-netns exclude each other");
	/* The parent cgroup path, checked as if it were a jail path. */
	char probe[JAIL_PATH_MAX];
	snprintf(probe, sizeof(probe), "/%s", o->parent_cgroup);
	if (o->parent_cgroup[0] == '/' || !o->parent_cgroup[0] || !jail_path_ok(probe))
		return cv_fail(err, CV_EXIT_USAGE, "--parent-cgroup '%s': a relative path without "
			       "'.' or '..'", o->parent_cgroup);
	/* A bind inside another directory bind would put its mount point into the host's tree. */
	for (unsigned i = 0; i < o->n_binds; i++)
		for (unsigned j = 0; j < o->n_binds; j++) {
			size_t n = strlen(o->binds[j].dst);
			if (i != j && strncmp(o->binds[i].dst, o->binds[j].dst, n) == 0 &&
			    (o->binds[i].dst[n] == '/' || o->binds[i].dst[n] == 0))
				return cv_fail(err, CV_EXIT_USAGE, "--bind: '%s' is at or inside '%s'",
					       o->binds[i].dst, o->binds[j].dst);
		}
	return 0;
}

/* ------------------------------------------------------------------------------------------ */

static pid_t forward_to = -1;

static void forward_signal(int sig)
{
	if (forward_to > 0)
		kill(forward_to, sig);
}

static int set_limits(const struct options *o, struct cv_error *err)
{
	struct rlimit nofile = { o->nofile, o->nofile };
	if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "setrlimit no-file=%llu",
				     (unsigned long long)o->nofile);
	if (o->fsize != RLIM_INFINITY) {
		struct rlimit fsize = { o->fsize, o->fsize };
		if (setrlimit(RLIMIT_FSIZE, &fsize) < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "setrlimit fsize");
	}
	return 0;
}

/* The child, PID 1 of the jail: waits for the parent's go, drops everything, execs. */
static void child(const struct options *o, const char *name, int go_fd, int devnull)
{
	struct cv_error err = { 0 };
	char c;
	if (read(go_fd, &c, 1) != 1)
		_exit(CV_EXIT_OSERR);   /* the parent failed and reported it */
	close(go_fd);
	if (o->daemonize) {
		if (setsid() < 0) {
			cv_fail_errno(&err, CV_EXIT_OSERR, "setsid");
			goto fail;
		}
		dup2(devnull, STDIN_FILENO);
		dup2(devnull, STDOUT_FILENO);
		dup2(devnull, STDERR_FILENO);
	}
	if (devnull >= 0)
		close(devnull);
	/* Nothing the program could exec may regain a capability. */
	for (unsigned long cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL)
			break;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		cv_fail_errno(&err, CV_EXIT_OSERR, "PR_SET_NO_NEW_PRIVS");
		goto fail;
	}
	if (setgroups(0, NULL) < 0 || setresgid(o->gid, o->gid, o->gid) < 0 ||
	    setresuid(o->uid, o->uid, o->uid) < 0) {
		cv_fail_errno(&err, CV_EXIT_OSERR, "become %u:%u", (unsigned)o->uid, (unsigned)o->gid);
		goto fail;
	}
	if (setuid(0) == 0) {
		cv_fail(&err, CV_EXIT_SOFTWARE, "could become root again after dropping privileges");
		goto fail;
	}
	char path[JAIL_PATH_MAX];
	snprintf(path, sizeof(path), "/%s", name);
	char **argv = calloc((size_t)o->vmm_argc + 2, sizeof(char *));
	if (!argv) {
		cv_fail(&err, CV_EXIT_OSERR, "out of memory");
		goto fail;
	}
	argv[0] = path;
	for (int i = 0; i < o->vmm_argc; i++)
		argv[i + 1] = o->vmm_argv[i];
	char *envp[] = { NULL };
	execve(path, argv, envp);
	cv_fail_errno(&err, CV_EXIT_CANNOT_EXEC, "exec '%s' in the jail", path);
fail:
	cv_error_print(&err, "cvisor-jailer");
	_exit(err.code);
}

static int run(const struct options *o, struct cv_error *err)
{
	char exec[PATH_MAX];
	if (!realpath(o->exec_file, exec))
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "--exec-file '%s'", o->exec_file);
	struct stat st;
	if (stat(exec, &st) < 0 || !S_ISREG(st.st_mode) || !(st.st_mode & S_IXUSR))
		return cv_fail(err, CV_EXIT_NOINPUT, "--exec-file '%s' is not an executable file",
			       o->exec_file);
	const char *name = strrchr(exec, '/') + 1;
	for (unsigned i = 0; i < o->n_binds; i++)
		if (strcmp(o->binds[i].dst + 1, name) == 0)
			return cv_fail(err, CV_EXIT_USAGE, "--bind: '/%s' is where the exec file goes",
				       name);

	char dir[JAIL_PATH_MAX], root[JAIL_PATH_MAX];
	if (cv_format(dir, sizeof(dir), err, "%s/%s", o->base, name) < 0)
		return -1;
	/* <base> and <base>/<name> are shared by jails; <id> is this jail's alone. */
	char part[JAIL_PATH_MAX];
	snprintf(part, sizeof(part), "%s", dir);
	for (char *c = part + 1; ; c++) {
		bool end = *c == 0;
		if (*c == '/' || end) {
			*c = 0;
			if (mkdir(part, 0755) < 0 && errno != EEXIST)
				return cv_fail_errno(err, CV_EXIT_IOERR, "mkdir '%s'", part);
			if (end)
				break;
			*c = '/';
		}
	}
	if (cv_format(dir, sizeof(dir), err, "%s/%s/%s", o->base, name, o->id) < 0 ||
	    cv_format(root, sizeof(root), err, "%s/root", dir) < 0)
		return -1;
	if (mkdir(dir, 0700) < 0)
		return cv_fail_errno(err, errno == EEXIST ? CV_EXIT_USAGE : CV_EXIT_IOERR,
				     "jail directory '%s'%s", dir,
				     errno == EEXIST ? " (the id is in use, or a jail's leftovers: "
						       "remove it)" : "");
	if (mkdir(root, 0755) < 0)
		return cv_fail_errno(err, CV_EXIT_IOERR, "mkdir '%s'", root);

	static char libs[JAIL_MAX_LIBS][JAIL_PATH_MAX];
	unsigned n_libs = 0;
	if (jail_copy_exec(exec, root, name, err) < 0 ||
	    jail_resolve_libs(exec, libs, &n_libs, err) < 0 || set_limits(o, err) < 0)
		return -1;

	int version = o->cgroup_version ? o->cgroup_version : jail_cgroup_detect_version();
	struct jail_cgroups cg;
	if (jail_cgroup_setup(version, o->parent_cgroup, o->id, o->cgroups, o->n_cgroups, &cg,
			      err) < 0)
		return cv_error_wrap(err, "cgroup v%d", version);

	int netns_fd = -1, devnull = -1, go[2] = { -1, -1 };
	int rc = -1;
	if (o->netns && (netns_fd = open(o->netns, O_RDONLY | O_CLOEXEC)) < 0) {
		cv_fail_errno(err, CV_EXIT_NOINPUT, "--netns '%s'", o->netns);
		goto out;
	}
	if (o->daemonize && (devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "open /dev/null");
		goto out;
	}
	if (pipe2(go, O_CLOEXEC) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "pipe");
		goto out;
	}
	int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
		    (o->new_netns ? CLONE_NEWNET : 0);
	if (unshare(flags) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "new namespaces");
		goto out;
	}
	if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "join network namespace '%s'", o->netns);
		goto out;
	}
	if (sethostname(o->id, strlen(o->id)) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "sethostname");
		goto out;
	}
	if (jail_build(root, libs, n_libs, o->binds, o->n_binds, o->uid, o->gid, err) < 0 ||
	    jail_enter(root, err) < 0)
		goto out;

	pid_t pid = fork();
	if (pid < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "fork");
		goto out;
	}
	if (pid == 0) {
		close(go[1]);
		child(o, name, go[0], devnull);
	}
	close(go[0]);
	go[0] = -1;
	forward_to = pid;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward_signal;
	sigemptyset(&sa.sa_mask);
	static const int fwd[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++)
		sigaction(fwd[i], &sa, NULL);

	char pidfile[JAIL_PATH_MAX];
	snprintf(pidfile, sizeof(pidfile), "/%s.pid", name);
	int pf = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (jail_cgroup_add(&cg, pid, err) < 0 || pf < 0 || dprintf(pf, "%d\n", (int)pid) < 0) {
		if (pf < 0 && !err->code)
			cv_fail_errno(err, CV_EXIT_IOERR, "write the pid file");
		if (pf >= 0)
			close(pf);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		goto out;
	}
	close(pf);
	if (write(go[1], "g", 1) != 1) {
		cv_fail_errno(err, CV_EXIT_OSERR, "start the jailed process");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		goto out;
	}
	if (o->daemonize) {
		jail_cgroup_close(&cg);   /* the cgroup outlives us: the caller removes it */
		rc = 0;
		goto out;
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			cv_fail_errno(err, CV_EXIT_OSERR, "wait for the jailed process");
			goto out;
		}
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
out:
	jail_cgroup_remove(&cg);
	if (netns_fd >= 0)
		close(netns_fd);
	if (devnull >= 0)
		close(devnull);
	if (go[0] >= 0)
		close(go[0]);
	if (go[1] >= 0)
		close(go[1]);
	return rc;
}

int main(int argc, char **argv)
{
	struct cv_error err = { 0 };
	struct options o;
	if (parse_args(argc, argv, &o, &err) < 0) {
		cv_error_print(&err, "cvisor-jailer");
		return err.code;
	}
	if (geteuid() != 0) {
		cv_fail(&err, CV_EXIT_USAGE, "must be started as root (it builds namespaces, mounts "
			"and cgroups, then drops to --uid/--gid)");
		cv_error_print(&err, "cvisor-jailer");
		return err.code;
	}
	/* Nothing the caller had open may follow the program into the jail. */
	closefrom(STDERR_FILENO + 1);
	umask(022);
	int rc = run(&o, &err);
	if (rc < 0) {
		cv_error_print(&err, "cvisor-jailer");
		return err.code ? err.code : CV_EXIT_SOFTWARE;
	}
	return rc;
}
