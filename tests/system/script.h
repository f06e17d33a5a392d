/*
 * The guest-script runner shared by the system suites that drive real guests through host
 * scripts (devices, mmio, sandbox, snapshot). A test writes a host-side shell script (and guest
 * scripts) into a work directory under /tmp, runs it where guests can boot (sys_guest_host: in
 * the session's emulated host if there is one), and reads back the "KEY value" lines the script
 * printed. Host scripts keep sockets, TAPs and tmpfs images in a scratch directory in that
 * host's own /dev/shm (the /tmp share of the emulated host carries only regular files) and
 * remove it on exit.
 *
 * Each Criterion test runs in its own process, so "the work directory" is that process's: made
 * on first use, removed by remove_work, which every suite names as its .fini.
 *
 * A suite using this module defines its parameters once, as the object script_suite:
 *   const struct script_suite script_suite = { .tag = "devtest", ... };
 * Suites with host scripts of their own (fcapi, migrate, snapload) use only the work directory
 * and output helpers.
 */
#ifndef CVISOR_TESTS_SCRIPT_H
#define CVISOR_TESTS_SCRIPT_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "sys.h"

struct script_suite {
	/* Names the work directory /tmp/cvisor-TAG-XXXXXX and the scratch /dev/shm/cvisor-TAG.XXXXXX. */
	const char *tag;
	/* Host-side peer under tests/system/, as $PEER in host scripts (NULL: none). */
	const char *peer;
	/* How long `vm CMD...` in a host script lets CMD run (seconds). */
	unsigned vm_seconds;
	/* Work directory, scratch directory and guest archives readable by every uid (a VMM that
	 * a jailer runs as another user opens its bound files through them). */
	bool shared;
	/* Appended to the common head of every host script (shell functions), or NULL. */
	const char *head_extra;
};

/* Defined by the suite. */
extern const struct script_suite script_suite;

/* The running test's work directory, made on first use. */
const char *work(void);
/* Removes the work directory (a suite's .fini). */
void remove_work(void);

/* Writes TEXT to WORK/NAME with MODE. */
void put(const char *name, const char *text, mode_t mode);
/* At most MAX bytes of WORK/NAME, NUL-terminated (free it); *len gets the count. */
char *slurp_work(const char *name, size_t max, size_t *len);

/* Runs a shell command on this host and asserts it succeeded. */
#define host_ok(...)                                                                      \
	do {                                                                              \
		struct sys_result hr_ = sys_host(__VA_ARGS__);                            \
		cr_assert_eq(hr_.status, 0, "host command failed (%d): %s%s", hr_.status, \
			     hr_.out, hr_.err);                                           \
		sys_free(&hr_);                                                           \
	} while (0)

/*
 * Writes WORK/NAME from the common head and BODY and runs it where guests boot. The script
 * sees B (build directory), K (kernel directory), SRC (source tree), W (work directory), S
 * (scratch directory), PEER, and `vm`, which bounds a command's run.
 */
struct sys_result host_script(const char *name, const char *body);

/* Packs SCRIPT as /t.sh into WORK/NAME.cpio, an extra initramfs for cvisor-vmm runs. */
void guest_cpio(const char *name, const char *script);

/*
 * The value of the first output line "KEY value" (trailing CR/blanks removed) into buf; false
 * if there is none. A value longer than buf fails the test.
 */
bool field_opt(const struct sys_result *r, const char *key, char *buf, size_t len);
/* The same, but a missing line fails the test with the whole output. */
void field_n(const struct sys_result *r, const char *key, char *buf, size_t len);
#define field(r, key, buf) field_n((r), (key), (buf), sizeof(buf))

/* The value of "KEY value" into buf, or "" if there is no such line; returns buf. */
const char *field_or_empty(const struct sys_result *r, const char *key, char *buf, size_t len);
/*
 * The same into a buffer of its own: a compound literal, which lives until the end of the
 * enclosing block, so every val() in a function has its own and none is overwritten by another.
 */
#define val(r, key) field_or_empty((r), (key), (char[256]){ 0 }, 256)

/* The value of "KEY n" as a number; anything else fails the test. */
long long num(const struct sys_result *r, const char *key);

/* Asserts that the line "KEY value" has exactly WANT as value; shows both and all output if not. */
void expect(const struct sys_result *r, const char *key, const char *want, const char *why);

/* Asserts "KEY n" with n OP want (OP: == != < > >=); shows the value and all output if not. */
void expect_num(const struct sys_result *r, const char *key, const char *op, long long want,
		const char *why);

/* S is 64 lowercase hex digits. */
bool is_sha256(const char *s);

#endif
