/*
 * Helpers for system tests that drive the built programs from the outside, as a user would:
 * run a shell command (inside the emulated host when the test run uses one), capture its stdout,
 * stderr and exit status. The test runner (scripts/test) provides:
 *   CVISOR_TEST_BUILD       absolute path of the build directory
 *   CVISOR_TEST_KERNEL_DIR  directory with the default guest's vmlinux, bzImage, kernel.release
 *   CVISOR_TEST_EMUHOST     "1" if guests must run inside the session's emulated host
 */
#ifndef CVISOR_TESTS_SYS_H
#define CVISOR_TESTS_SYS_H

#include <stdbool.h>

struct sys_result {
	int status;      /* exit status, or 128+N if killed by signal N */
	char *out;
	char *err;
};

/* Runs `sh -c CMD` (printf-style) on this host. */
struct sys_result sys_host(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs `sh -c CMD` where guests can boot: in the emulated host if the run uses one. */
struct sys_result sys_guest_host(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void sys_free(struct sys_result *r);

/* Environment-provided paths; the test is skipped when they are missing. */
const char *sys_build(void);
const char *sys_kernel_dir(void);

/* Number of lines in s. */
int sys_lines(const char *s);

#endif
