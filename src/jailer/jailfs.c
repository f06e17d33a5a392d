/*
 * The jail's file system (see jailer.h). The root directory is fresh (main.c refuses one that
 * exists, so nothing in it can be a planted symlink) and owned by root until everything is in
 * place. Files enter the jail by bind mounts in the jailer's private mount namespace, so they
 * vanish from the jail directory's view on the host when the jail ends, and the empty files
 * and directories that served as mount points stay behind for the caller to remove.
 */
#include "jailer.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define LDD_OUTPUT_MAX 65536

bool jail_path_ok(const char *p)
{
	if (p[0] != '/' || strlen(p) >= JAIL_PATH_MAX)
		return false;
	for (const char *c = p; *c;) {
		while (*c == '/')
			c++;
		size_t n = strcspn(c, "/");
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		c += n;
	}
	return true;
}

/* The PT_INTERP path of an ELF executable: 1 found, 0 static, -1 error. */
static int read_interp(const char *exec, char *interp, size_t len, struct cv_error *err)
{
	int fd = open(exec, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "open '%s'", exec);
	Elf64_Ehdr eh;
	int rc = -1;
	if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 128) {
		cv_fail(err, CV_EXIT_DATAERR, "'%s' is not a 64-bit ELF executable", exec);
		goto out;
	}
	rc = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) !=
		    (ssize_t)sizeof(ph)) {
			rc = cv_fail(err, CV_EXIT_DATAERR, "'%s': truncated program headers", exec);
			break;
		}
		if (ph.p_type != PT_INTERP)
			continue;
		if (ph.p_filesz < 2 || ph.p_filesz > len ||
		    pread(fd, interp, ph.p_filesz, (off_t)ph.p_offset) != (ssize_t)ph.p_filesz ||
		    interp[ph.p_filesz - 1] != 0 || !jail_path_ok(interp)) {
			rc = cv_fail(err, CV_EXIT_DATAERR, "'%s': bad PT_INTERP", exec);
			break;
		}
		rc = 1;
		break;
	}
out:
	close(fd);
	return rc;
}

/* Runs `interp --list exec` with an empty environment; its stdout into out. */
static int run_loader_list(const char *interp, const char *exec, char *out, size_t max,
			   struct cv_error *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "pipe");
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return cv_fail_errno(err, CV_EXIT_OSERR, "fork");
	}
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		char *argv[] = { (char *)interp, (char *)"--list", (char *)exec, NULL };
		char *envp[] = { NULL };
		execve(interp, argv, envp);
		_exit(127);
	}
	close(p[1]);
	size_t len = 0;
	for (;;) {
		ssize_t n = read(p[0], out + len, max - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == max - 1)
			break;
	}
	out[len] = 0;
	close(p[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return cv_fail(err, CV_EXIT_SOFTWARE, "'%s --list %s' failed (status %d)", interp,
			       exec, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return 0;
}

static int add_lib(char libs[][JAIL_PATH_MAX], unsigned *n, const char *path, size_t len,
		   struct cv_error *err)
{
	if (len == 0 || len >= JAIL_PATH_MAX)
		return cv_fail(err, CV_EXIT_DATAERR, "library path of %zu bytes", len);
	for (unsigned i = 0; i < *n; i++)
		if (strlen(libs[i]) == len && memcmp(libs[i], path, len) == 0)
			return 0;
	if (*n == JAIL_MAX_LIBS)
		return cv_fail(err, CV_EXIT_SOFTWARE, "more than %d shared libraries", JAIL_MAX_LIBS);
	memcpy(libs[*n], path, len);
	libs[*n][len] = 0;
	if (!jail_path_ok(libs[*n]))
		return cv_fail(err, CV_EXIT_DATAERR, "odd library path '%s'", libs[*n]);
	(*n)++;
	return 0;
}

int jail_resolve_libs(const char *exec, char libs[][JAIL_PATH_MAX], unsigned *n,
		      struct cv_error *err)
{
	*n = 0;
	char interp[PATH_MAX];
	int rc = read_interp(exec, interp, sizeof(interp), err);
	if (rc <= 0)
		return rc;
	char *out = malloc(LDD_OUTPUT_MAX);
	if (!out)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	rc = run_loader_list(interp, exec, out, LDD_OUTPUT_MAX, err);
	/*
	 * Lines: "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", the loader as
	 * "\t/lib64/ld-linux-x86-64.so.2 (0x...)", and the vDSO with no path at all.
	 */
	for (char *line = out; rc == 0 && line && *line;) {
		char *eol = strchr(line, '\n');
		if (eol)
			*eol = 0;
		char *s = line + strspn(line, " \t");
		char *arrow = strstr(s, " => ");
		char *path = arrow ? arrow + 4 : s;
		if (strncmp(path, "not found", 9) == 0) {
			rc = cv_fail(err, CV_EXIT_NOINPUT, "'%s' needs a library that is not found: %s",
				     exec, s);
		} else if (path[0] == '/') {
			char *end = strstr(path, " (");
			rc = add_lib(libs, n, path, end ? (size_t)(end - path) : strlen(path), err);
		}
		line = eol ? eol + 1 : NULL;
	}
	free(out);
	if (rc == 0)
		rc = add_lib(libs, n, interp, strlen(interp), err);
	return rc;
}

int jail_copy_exec(const char *exec, const char *root, const char *name, struct cv_error *err)
{
	char dst[JAIL_PATH_MAX];
	if (cv_format(dst, sizeof(dst), err, "%s/%s", root, name) < 0)
		return -1;
	int in = open(exec, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "open '%s'", exec);
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755);
	if (out < 0) {
		close(in);
		return cv_fail_errno(err, CV_EXIT_IOERR, "create '%s'", dst);
	}
	int rc = 0;
	char buf[65536];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = cv_fail_errno(err, CV_EXIT_IOERR, "read '%s'", exec);
			break;
		}
		if (n == 0)
			break;
		if (cv_write_full(out, buf, (size_t)n) < 0) {
			rc = cv_fail_errno(err, CV_EXIT_IOERR, "write '%s'", dst);
			break;
		}
	}
	if (rc == 0 && fchmod(out, 0755) < 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "chmod '%s'", dst);
	close(in);
	if (close(out) < 0 && rc == 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "write '%s'", dst);
	return rc;
}

/* mkdir -p of root + path's directory part (root exists). */
static int make_parents(const char *root, const char *path, struct cv_error *err)
{
	char buf[2 * JAIL_PATH_MAX];
	if (cv_format(buf, sizeof(buf), err, "%s%s", root, path) < 0)
		return -1;
	size_t skip = strlen(root);
	for (char *c = buf + skip + 1; (c = strchr(c, '/')); c++) {
		*c = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
			cv_fail_errno(err, CV_EXIT_IOERR, "mkdir '%s'", buf);
			*c = '/';
			return -1;
		}
		struct stat st;
		if (lstat(buf, &st) < 0 || !S_ISDIR(st.st_mode)) {
			cv_fail(err, CV_EXIT_IOERR, "'%s' is not a directory", buf);
			*c = '/';
			return -1;
		}
		*c = '/';
	}
	return 0;
}

/* Bind-mounts src at root+dst (creating the mount point), then applies the flags. */
static int bind_into(const char *root, const char *src, const char *dst, bool read_only,
		     struct cv_error *err)
{
	struct stat st;
	if (stat(src, &st) < 0)
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "'%s'", src);
	char target[2 * JAIL_PATH_MAX];
	if (cv_format(target, sizeof(target), err, "%s%s", root, dst) < 0 ||
	    make_parents(root, dst, err) < 0)
		return -1;
	if (S_ISDIR(st.st_mode)) {
		if (mkdir(target, 0755) < 0 && errno != EEXIST)
			return cv_fail_errno(err, CV_EXIT_IOERR, "mkdir '%s'", target);
	} else {
		int fd = open(target, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0444);
		if (fd < 0)
			return cv_fail_errno(err, CV_EXIT_IOERR, "create '%s'", target);
		close(fd);
	}
	if (mount(src, target, NULL, MS_BIND | MS_REC, NULL) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "bind '%s' to '%s'", src, target);
	unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV |
			      (read_only ? MS_RDONLY : 0);
	if (mount(NULL, target, NULL, flags, NULL) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "remount '%s'%s", target,
				     read_only ? " read-only" : "");
	return 0;
}

static int make_node(const char *root, const char *name, mode_t mode, unsigned maj, unsigned min,
		     uid_t uid, gid_t gid, struct cv_error *err)
{
	char path[JAIL_PATH_MAX + 32];
	if (cv_format(path, sizeof(path), err, "%s/dev/%s", root, name) < 0)
		return -1;
	if (mknod(path, S_IFCHR | mode, makedev(maj, min)) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "mknod '%s'", path);
	/* mknod's mode went through the umask; chown before chmod keeps it from widening. */
	if (chown(path, uid, gid) < 0 || chmod(path, mode) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "set owner and mode of '%s'", path);
	return 0;
}

int jail_build(const char *root, char libs[][JAIL_PATH_MAX], unsigned n_libs,
	       const struct jail_bind *binds, unsigned n_binds, uid_t uid, gid_t gid,
	       struct cv_error *err)
{
	/* Nothing done here may leak back into the caller's mount namespace. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "make mounts private");
	/* pivot_root needs the new root to be a mount point. */
	if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "bind '%s' onto itself", root);
	for (unsigned i = 0; i < n_libs; i++)
		if (bind_into(root, libs[i], libs[i], true, err) < 0)
			return cv_error_wrap(err, "shared library");
	for (unsigned i = 0; i < n_binds; i++)
		if (bind_into(root, binds[i].src, binds[i].dst, binds[i].read_only, err) < 0)
			return cv_error_wrap(err, "--bind");

	char dev[JAIL_PATH_MAX + 16];
	if (cv_format(dev, sizeof(dev), err, "%s/dev", root) < 0)
		return -1;
	if (mkdir(dev, 0755) < 0 && errno != EEXIST)
		return cv_fail_errno(err, CV_EXIT_IOERR, "mkdir '%s'", dev);
	if (mount("jail-dev", dev, "tmpfs", MS_NOSUID | MS_NOEXEC,
		  "mode=0755,size=64k,nr_inodes=32") < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "mount a tmpfs on '%s'", dev);
	char net[JAIL_PATH_MAX + 32];
	if (cv_format(net, sizeof(net), err, "%s/net", dev) < 0)
		return -1;
	if (mkdir(net, 0755) < 0)
		return cv_fail_errno(err, CV_EXIT_IOERR, "mkdir '%s'", net);
	/* The VMM's own devices are its alone; urandom and null are for anyone. */
	if (make_node(root, "kvm", 0600, 10, 232, uid, gid, err) < 0 ||
	    make_node(root, "net/tun", 0600, 10, 200, uid, gid, err) < 0 ||
	    make_node(root, "urandom", 0666, 1, 9, 0, 0, err) < 0 ||
	    make_node(root, "null", 0666, 1, 3, 0, 0, err) < 0)
		return -1;
	if (chown(root, uid, gid) < 0 || chmod(root, 0755) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "hand '%s' to %u:%u", root, (unsigned)uid,
				     (unsigned)gid);
	return 0;
}

int jail_enter(const char *root, struct cv_error *err)
{
	if (chdir(root) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "chdir '%s'", root);
	/* pivot_root(".", "."): the old root ends up stacked on "." and is detached at once. */
	if (syscall(SYS_pivot_root, ".", ".") == 0) {
		if (umount2(".", MNT_DETACH) < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "detach the old root");
	} else if (errno == EINVAL) {
		/*
		 * The current root cannot be pivoted (an initramfs root, for one): move the jail
		 * over it and chroot. The jailed process has no capability to chroot back out.
		 */
		if (mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "enter '%s' (pivot_root: EINVAL)",
					     root);
	} else {
		return cv_fail_errno(err, CV_EXIT_OSERR, "pivot_root into '%s'", root);
	}
	if (chdir("/") < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "chdir / in the jail");
	return 0;
}
