/*
 * The state directory of an emulated host (internal.h): where it is, what it records (QEMU's
 * pidfile, the forwarded agent port, the agent's token, the console log), and whether the
 * recorded QEMU is still the one we started. A pid alone is not trusted: it may have been reused
 * after a crash or reboot, so the process must also carry our pidfile path on its command line.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emuhost.h"
#include "internal.h"
#include "util.h"

int emuhost_state_dir(const char *state_dir, char *out, size_t len, struct cv_error *err)
{
	if (state_dir && *state_dir)
		return cv_format(out, len, err, "%s", state_dir);
	const char *v = getenv("CVISOR_EMUHOST_DIR");
	if (v && *v)
		return cv_format(out, len, err, "%s", v);
	v = getenv("XDG_RUNTIME_DIR");
	if (v && *v)
		return cv_format(out, len, err, "%s/cvisor/emuhost", v);
	if (geteuid() == 0)
		return cv_format(out, len, err, "/run/cvisor/emuhost");
	return cv_format(out, len, err, "/tmp/cvisor-emuhost-%u", (unsigned)geteuid());
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *path, struct cv_error *err)
{
	char buf[PATH_MAX];
	if (cv_format(buf, sizeof(buf), err, "%s", path) < 0)
		return -1;
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == 0) {
			char c = *p;
			*p = 0;
			if (mkdir(buf, 0700) < 0 && errno != EEXIST)
				return cv_fail_errno(err, CV_EXIT_OSERR, "create state directory '%s'", buf);
			*p = c;
			if (!c)
				break;
		}
	}
	/* In a shared /tmp someone else may have planted the name first (or a symlink). */
	struct stat st;
	if (lstat(path, &st) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "state directory '%s'", path);
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return cv_fail(err, CV_EXIT_OSERR,
			       "state directory '%s' is not a directory owned by uid %u", path,
			       (unsigned)geteuid());
	return 0;
}

int state_path(const struct emuhost_state *st, const char *name, char *out, size_t len,
	       struct cv_error *err)
{
	return cv_format(out, len, err, "%s/%s", st->dir, name);
}

/* Reads a small state file as text (trailing whitespace cut); "" if absent or unreadable. */
static void read_small(const struct emuhost_state *st, const char *name, char *out, size_t len)
{
	out[0] = 0;
	char path[PATH_MAX];
	struct cv_error err;
	struct cv_buf buf;
	if (state_path(st, name, path, sizeof(path), &err) < 0 ||
	    cv_read_file(path, 4096, &buf, &err) < 0)
		return;
	size_t n = CV_MIN(buf.len, len - 1);
	memcpy(out, buf.data, n);
	out[n] = 0;
	while (n && (out[n - 1] == '\n' || out[n - 1] == ' ' || out[n - 1] == '\r'))
		out[--n] = 0;
	cv_buf_free(&buf);
}

int state_open(const char *state_dir, bool create, struct emuhost_state *st, struct cv_error *err)
{
	memset(st, 0, sizeof(*st));
	if (emuhost_state_dir(state_dir, st->dir, sizeof(st->dir), err) < 0)
		return -1;
	if (create && make_dirs(st->dir, err) < 0)
		return -1;
	char text[128];
	uint64_t v;
	read_small(st, "qemu.pid", text, sizeof(text));
	if (cv_parse_u64(text, 2, 0x7fffffff, &v))
		st->pid = (pid_t)v;
	read_small(st, "port", text, sizeof(text));
	if (cv_parse_u64(text, 1, 65535, &v))
		st->port = (unsigned)v;
	read_small(st, "token", st->token, sizeof(st->token));
	return 0;
}

bool state_qemu_alive(const struct emuhost_state *st)
{
	if (st->pid <= 0)
		return false;
	char path[64], pidfile[PATH_MAX];
	struct cv_error err;
	if (state_path(st, "qemu.pid", pidfile, sizeof(pidfile), &err) < 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)st->pid);
	struct cv_buf buf;
	/* A zombie or an unrelated process reusing the pid has no such argument. */
	if (cv_read_file(path, 1 << 20, &buf, &err) < 0)
		return false;
	bool found = false;
	for (size_t off = 0; off < buf.len; off += strlen((char *)buf.data + off) + 1)
		if (strcmp((char *)buf.data + off, pidfile) == 0)
			found = true;
	cv_buf_free(&buf);
	return found;
}

void state_clear(struct emuhost_state *st)
{
	static const char *const names[] = { "qemu.pid", "port", "token", "initramfs.cpio",
					     "qemu.log", "prepare.log", "monitor.sock" };
	for (size_t i = 0; i < CV_ARRAY_SIZE(names); i++) {
		char path[PATH_MAX];
		struct cv_error err;
		if (state_path(st, names[i], path, sizeof(path), &err) == 0)
			unlink(path);
	}
	st->pid = 0;
	st->port = 0;
	st->token[0] = 0;
}

void state_remove(struct emuhost_state *st)
{
	static const char *const extra[] = { "console.log", "lock" };
	state_clear(st);
	for (size_t i = 0; i < CV_ARRAY_SIZE(extra); i++) {
		char path[PATH_MAX];
		struct cv_error err;
		if (state_path(st, extra[i], path, sizeof(path), &err) == 0)
			unlink(path);
	}
	rmdir(st->dir);
}

int state_lock(const struct emuhost_state *st, struct cv_error *err)
{
	char path[PATH_MAX];
	if (state_path(st, "lock", path, sizeof(path), err) < 0)
		return -1;
	/* Close-on-exec matters: a lock inherited by the daemonized QEMU would never be released. */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "open '%s'", path);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			cv_fail_errno(err, CV_EXIT_OSERR, "lock '%s'", path);
			close(fd);
			return -1;
		}
	}
	return fd;
}

int state_write_file(const struct emuhost_state *st, const char *name, const char *text,
		     unsigned mode, struct cv_error *err)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	if (state_path(st, name, path, sizeof(path), err) < 0 ||
	    cv_format(tmp, sizeof(tmp), err, "%s.tmp", path) < 0)
		return -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "create '%s'", tmp);
	if (cv_write_full(fd, text, strlen(text)) < 0) {
		cv_fail_errno(err, CV_EXIT_IOERR, "write '%s'", tmp);
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "rename '%s'", tmp);
		unlink(tmp);
		return -1;
	}
	return 0;
}

void state_tail(const char *path, char *out, size_t len)
{
	out[0] = 0;
	struct cv_buf buf;
	struct cv_error err;
	if (len == 0 || cv_read_file(path, CV_MiB(64), &buf, &err) < 0)
		return;
	size_t n = buf.len;
	while (n && (buf.data[n - 1] == '\n' || buf.data[n - 1] == '\r' || buf.data[n - 1] == ' '))
		n--;
	size_t start = n > len - 1 ? n - (len - 1) : 0;
	size_t o = 0;
	for (size_t i = start; i < n; i++) {
		uint8_t c = buf.data[i];
		if (c == '\r')
			continue;
		/* One line for an error message; control bytes from a console are dropped. */
		out[o++] = c == '\n' ? '|' : (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
	}
	out[o] = 0;
	cv_buf_free(&buf);
}

bool state_find_line(const char *path, const char *needle, char *out, size_t len)
{
	struct cv_buf buf;
	struct cv_error err;
	if (len == 0 || cv_read_file(path, CV_MiB(64), &buf, &err) < 0)
		return false;
	char *hit = strstr((char *)buf.data, needle);
	if (hit) {
		size_t n = strcspn(hit, "\r\n");
		n = CV_MIN(n, len - 1);
		memcpy(out, hit, n);
		out[n] = 0;
	}
	cv_buf_free(&buf);
	return hit != NULL;
}
