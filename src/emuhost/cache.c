/*
 * The emulated host's kernel and modules in the per-user cache (internal.h). prepare.sh (embedded
 * in the binary, so no source tree is needed) downloads Debian's stock kernel package once and
 * points <cache>/emuhost/current at the result; afterwards start works offline and never needs
 * to know the kernel version in advance.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "util.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

int cache_find_kernel(struct emuhost_kernel *k, struct cv_error *err)
{
	memset(k, 0, sizeof(*k));
	char cache[PATH_MAX], current[PATH_MAX];
	if (cv_cache_dir(cache, sizeof(cache), err) < 0 ||
	    cv_format(current, sizeof(current), err, "%s/emuhost/current", cache) < 0)
		return -1;
	if (!realpath(current, k->dir))
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "emulated host kernel '%s'", current);
	if (cv_format(k->vmlinuz, sizeof(k->vmlinuz), err, "%s/vmlinuz", k->dir) < 0 ||
	    cv_format(k->base_cpio, sizeof(k->base_cpio), err, "%s/base.cpio", k->dir) < 0)
		return -1;
	if (!is_file(k->vmlinuz) || !is_file(k->base_cpio))
		return cv_fail(err, CV_EXIT_NOINPUT,
			       "emulated host kernel in '%s' is incomplete (run 'cvisor emuhost prepare')",
			       k->dir);
	char rel[PATH_MAX];
	struct cv_buf buf;
	if (cv_format(rel, sizeof(rel), err, "%s/kernel.release", k->dir) == 0 &&
	    cv_read_file(rel, sizeof(k->release) - 1, &buf, err) == 0) {
		size_t n = strcspn((char *)buf.data, "\n");
		memcpy(k->release, buf.data, n);
		k->release[n] = 0;
		cv_buf_free(&buf);
	}
	return 0;
}

int cache_run_prepare(int stdout_fd, int log_fd, struct cv_error *err)
{
	char cache[PATH_MAX];
	if (cv_cache_dir(cache, sizeof(cache), err) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "prepare: fork");
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(stdout_fd, 1) < 0 ||
		    dup2(log_fd, 2) < 0)
			_exit(CV_EXIT_OSERR);
		syscall(SYS_close_range, 3u, ~0u, 0u);
		/* The script computes the same default; passing it keeps C and shell in agreement. */
		setenv("CVISOR_CACHE", cache, 1);
		execl("/bin/sh", "sh", "-c", emuhost_prepare_sh, "cvisor-emuhost-prepare", (char *)NULL);
		dprintf(2, "cvisor: exec /bin/sh: %s\n", strerror(errno));
		_exit(CV_EXIT_OSERR);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return cv_fail_errno(err, CV_EXIT_OSERR, "prepare: wait");
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFEXITED(st))
		return cv_fail(err, CV_EXIT_UNAVAILABLE,
			       "preparing the emulated host's kernel failed (exit status %d)",
			       WEXITSTATUS(st));
	return cv_fail(err, CV_EXIT_UNAVAILABLE,
		       "preparing the emulated host's kernel failed (killed by signal %d)",
		       WTERMSIG(st));
}
