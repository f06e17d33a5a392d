/*
 * Error values with context. A failing function fills a caller-provided struct cv_error with an
 * exit code and a message, and callers prepend what they were doing, so the user sees one line
 * such as "load kernel 'x': open: No such file or directory" and a distinct exit status.
 */
#ifndef CVISOR_COMMON_ERROR_H
#define CVISOR_COMMON_ERROR_H

#include <stddef.h>

#include "exitcodes.h"

#define CV_ERROR_MAX 512

struct cv_error {
	int code;                 /* an enum cv_exit value; 0 while no error is recorded */
	char msg[CV_ERROR_MAX];
};

#define CV_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/* Records an error and returns -1 so callers can write `return cv_fail(err, ...)`. */
int cv_fail(struct cv_error *err, int code, const char *fmt, ...) CV_PRINTF(3, 4);

/* Like cv_fail, with ": strerror(errno)" appended (errno is read before formatting). */
int cv_fail_errno(struct cv_error *err, int code, const char *fmt, ...) CV_PRINTF(3, 4);

/* Prepends "context: " to the recorded message; returns -1. */
int cv_error_wrap(struct cv_error *err, const char *fmt, ...) CV_PRINTF(2, 3);

/* Prints "prog: message" on stderr. */
void cv_error_print(const struct cv_error *err, const char *prog);

#endif
