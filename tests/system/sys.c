/*
 * System test helpers (see sys.h).
 */
#include "sys.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Single-quotes s for sh. */
static char *quote(const char *s)
{
	size_t n = 2;
	for (const char *p = s; *p; p++)
		n += *p == '\'' ? 4 : 1;
	char *q = malloc(n + 1), *o = q;
	*o++ = '\'';
	for (const char *p = s; *p; p++) {
		if (*p == '\'') {
			memcpy(o, "'\\''", 4);
			o += 4;
		} else {
			*o++ = *p;
		}
	}
	*o++ = '\'';
	*o = 0;
	return q;
}

__attribute__((format(printf, 2, 0))) static struct sys_result run(bool in_guest_host,
								     const char *fmt, va_list ap)
{
	char *cmd;
	cr_assert_geq(vasprintf(&cmd, fmt, ap), 0);
	char out[] = "/tmp/cvisor-sys-out-XXXXXX", err[] = "/tmp/cvisor-sys-err-XXXXXX";
	close(mkstemp(out));
	close(mkstemp(err));
	char *q = quote(cmd), *full;
	const char *emu = getenv("CVISOR_TEST_EMUHOST");
	if (in_guest_host && emu && strcmp(emu, "1") == 0)
		cr_assert_geq(asprintf(&full, "'%s/cvisor' emuhost exec -- sh -c %s >%s 2>%s",
				       sys_build(), q, out, err), 0);
	else
		cr_assert_geq(asprintf(&full, "sh -c %s >%s 2>%s", q, out, err), 0);
	int ws = system(full);
	struct sys_result r = {
		.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws),
		.out = slurp(out),
		.err = slurp(err),
	};
	unlink(out);
	unlink(err);
	free(q);
	free(full);
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
