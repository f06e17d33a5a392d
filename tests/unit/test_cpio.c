/*
 * The newc writer: archives must be accepted by GNU cpio (an independent reader) with names,
 * modes, symlinks, device numbers and contents intact; also the shared util helpers.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cpio.h"
#include "error.h"
#include "util.h"

Test(cpio, gnu_cpio_extracts_what_we_wrote)
{
	if (system("command -v cpio >/dev/null 2>&1") != 0)
		cr_skip_test("cpio not installed");
	struct cpio c;
	struct cv_error err = { 0 };
	cpio_init(&c);
	static const char body[] = "arg=uname\0arg=-a\0";
	cr_assert_eq(cpio_add_dir(&c, "/cvisor", 0755, &err), 0);
	cr_assert_eq(cpio_add_file(&c, "cvisor/run", 0600, body, sizeof(body) - 1, &err), 0);
	cr_assert_eq(cpio_add_file(&c, "odd", 0644, "x", 1, &err), 0);   /* forces padding */
	cr_assert_eq(cpio_add_symlink(&c, "bin/sh", "/bin/busybox", &err), 0);
	cr_assert_eq(cpio_add_chardev(&c, "dev/null", 0666, 1, 3, &err), 0);
	cr_assert_eq(cpio_finish(&c, &err), 0);
	cr_assert_eq(c.len % 4, 0);

	char dir[] = "/tmp/cvisor-cpio-XXXXXX";
	cr_assert(mkdtemp(dir));
	char path[512], cmd[1024];
	snprintf(path, sizeof(path), "%s/a.cpio", dir);
	FILE *f = fopen(path, "wb");
	fwrite(c.data, 1, c.len, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "cd %s && mkdir x bin && cd x && cpio -idm --quiet < ../a.cpio",
		 dir);
	cr_assert_eq(system(cmd), 0, "cpio rejected the archive");

	struct cv_buf b;
	snprintf(path, sizeof(path), "%s/x/cvisor/run", dir);
	cr_assert_eq(cv_read_file(path, 4096, &b, &err), 0, "%s", err.msg);
	cr_assert_eq(b.len, sizeof(body) - 1);
	cr_assert_arr_eq(b.data, body, b.len);
	cv_buf_free(&b);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	snprintf(path, sizeof(path), "%s/x/bin/sh", dir);
	char target[64] = { 0 };
	cr_assert_gt(readlink(path, target, sizeof(target) - 1), 0);
	cr_assert_str_eq(target, "/bin/busybox");
	snprintf(path, sizeof(path), "%s/x/dev/null", dir);
	cr_assert_eq(lstat(path, &st), 0);
	cr_assert(S_ISCHR(st.st_mode));
	cr_assert_eq(major(st.st_rdev), 1);
	cr_assert_eq(minor(st.st_rdev), 3);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
	cpio_free(&c);
}

Test(util, parse_u64_is_strict)
{
	uint64_t v;
	cr_assert(cv_parse_u64("1024", 1, 2048, &v));
	cr_assert_eq(v, 1024);
	cr_assert_not(cv_parse_u64("0", 1, 10, &v));
	cr_assert_not(cv_parse_u64("11", 1, 10, &v));
	cr_assert_not(cv_parse_u64("-1", 0, 10, &v));
	cr_assert_not(cv_parse_u64("1x", 0, 10, &v));
	cr_assert_not(cv_parse_u64("", 0, 10, &v));
	cr_assert_not(cv_parse_u64(" 1", 0, 10, &v));
	cr_assert_not(cv_parse_u64("99999999999999999999999", 0, UINT64_MAX, &v));
	cr_assert(cv_parse_u64("18446744073709551615", 0, UINT64_MAX, &v));
}

Test(util, error_wrap_prepends_context)
{
	struct cv_error err = { 0 };
	errno = ENOENT;
	cv_fail_errno(&err, CV_EXIT_NOINPUT, "open '%s'", "/x");
	cv_error_wrap(&err, "kernel");
	cr_assert_str_eq(err.msg, "kernel: open '/x': No such file or directory");
	cr_assert_eq(err.code, CV_EXIT_NOINPUT);
	char long_prefix[1000];
	memset(long_prefix, 'p', sizeof(long_prefix) - 1);
	long_prefix[sizeof(long_prefix) - 1] = 0;
	cv_error_wrap(&err, "%s", long_prefix);
	cr_assert_eq(strlen(err.msg), CV_ERROR_MAX - 1, "truncated, terminated");
}

Test(util, read_file_limits)
{
	struct cv_buf b;
	struct cv_error err = { 0 };
	cr_assert_eq(cv_read_file("/proc/self/status", 1 << 20, &b, &err), 0, "%s", err.msg);
	cr_assert(strstr((char *)b.data, "Name:"));
	cv_buf_free(&b);
	cr_assert_eq(cv_read_file("/proc/self/status", 16, &b, &err), -1, "non-regular over limit");
	cr_assert_eq(err.code, CV_EXIT_DATAERR);
	cr_assert_eq(cv_read_file("/", 16, &b, &err), -1);
	cr_assert_eq(cv_read_file("/nonexistent", 16, &b, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_NOINPUT);
}
