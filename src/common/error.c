/*
 * Error recording (see error.h). Messages are truncated rather than allocated so that reporting
 * an out-of-memory condition cannot itself fail.
 */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CV_MIN_SZ(a, b) ((a) < (b) ? (a) : (b))

__attribute__((format(printf, 4, 0))) static int vfail(struct cv_error *err, int code, int errnum,
						   const char *fmt, va_list ap)
{
	if (!err)
		return -1;
	err->code = code;
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (errnum && n >= 0 && (size_t)n < sizeof(err->msg))
		snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(errnum));
	return -1;
}

int cv_fail(struct cv_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(err, code, 0, fmt, ap);
	va_end(ap);
	return -1;
}

int cv_fail_errno(struct cv_error *err, int code, const char *fmt, ...)
{
	int errnum = errno;
	va_list ap;
	va_start(ap, fmt);
	vfail(err, code, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

int cv_error_wrap(struct cv_error *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char prefix[CV_ERROR_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	/* New message: prefix ": " old, cut to the buffer (the tail of the old text goes first). */
	size_t plen = CV_MIN_SZ((size_t)n, sizeof(err->msg) - 3);
	size_t olen = strnlen(err->msg, sizeof(err->msg) - 1);
	size_t keep = CV_MIN_SZ(olen, sizeof(err->msg) - 1 - plen - 2);
	memmove(err->msg + plen + 2, err->msg, keep);
	memcpy(err->msg, prefix, plen);
	err->msg[plen] = ':';
	err->msg[plen + 1] = ' ';
	err->msg[plen + 2 + keep] = 0;
	return -1;
}

void cv_error_print(const struct cv_error *err, const char *prog)
{
	fprintf(stderr, "%s: %s\n", prog, err->msg[0] ? err->msg : "unknown error");
}
