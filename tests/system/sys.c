/*
 * System test helpers (see sys.h).
 */
#include "sys.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "open %s", path);
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 2) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
	}
	buf[len] = 0;
	fclose(f);
	return buf;
}

/*
 * Runs CMD with stdout and stderr in files and stdin from /dev/null. No shell sits between the
 * test and the command: a shell left behind by a test Criterion killed on timeout would keep the
 * runner's output pipe open and the whole suite would never end. The child also dies with the
 * test (PDEATHSIG); `cvisor emuhost exec` dying closes its connection, on which the emulated
 * host's agent kills the command it ran.
 */
__attribute__((format(printf, 2, 0))) static struct sys_result run(bool in_guest_host,
								     const char *fmt, va_list ap)
{
	char *cmd;
	cr_assert_geq(vasprintf(&cmd, fmt, ap), 0);
	char out[] = "/tmp/cvisor-sys-out-XXXXXX", err[] = "/tmp/cvisor-sys-err-XXXXXX";
	int ofd = mkstemp(out), efd = mkstemp(err);
	cr_assert(ofd >= 0 && efd >= 0, "mkstemp: %s", strerror(errno));
	const char *emu = getenv("CVISOR_TEST_EMUHOST");
	bool via_emuhost = in_guest_host && emu && strcmp(emu, "1") == 0;
	char cvisor[4096];
	snprintf(cvisor, sizeof(cvisor), "%s/cvisor", via_emuhost ? sys_build() : "");
	pid_t parent = getpid();
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int in = open("/dev/null", O_RDONLY);
		if (in < 0 || dup2(in, 0) < 0 || dup2(ofd, 1) < 0 || dup2(efd, 2) < 0)
			_exit(127);
		if (via_emuhost)
			execl(cvisor, "cvisor", "emuhost", "exec", "--", "sh", "-c", cmd, (char *)NULL);
		else
			execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		dprintf(2, "exec: %s\n", strerror(errno));
		_exit(127);
	}
	close(ofd);
	close(efd);
	int ws;
	while (waitpid(pid, &ws, 0) < 0)
		cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
	struct sys_result r = {
		.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws),
		.out = slurp(out),
		.err = slurp(err),
	};
	unlink(out);
	unlink(err);
	free(cmd);
	return r;
}

struct sys_result sys_host(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	struct sys_result r = run(false, fmt, ap);
	va_end(ap);
	return r;
}

struct sys_result sys_guest_host(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	struct sys_result r = run(true, fmt, ap);
	va_end(ap);
	return r;
}

void sys_free(struct sys_result *r)
{
	free(r->out);
	free(r->err);
}

static const char *env_or_skip(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		cr_skip_test("%s not set (run through scripts/test)", name);
	return v;
}

const char *sys_build(void)
{
	return env_or_skip("CVISOR_TEST_BUILD");
}

const char *sys_kernel_dir(void)
{
	return env_or_skip("CVISOR_TEST_KERNEL_DIR");
}

int sys_lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}
