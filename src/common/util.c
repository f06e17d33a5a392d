/*
 * Implementation of the helpers in util.h. Nothing here keeps state between calls.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cv_read_file(const char *path, size_t max_len, struct cv_buf *out, struct cv_error *err)
{
	out->data = NULL;
	out->len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "open '%s'", path);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		cv_fail_errno(err, CV_EXIT_IOERR, "stat '%s'", path);
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		cv_fail(err, CV_EXIT_NOINPUT, "'%s' is a directory", path);
		goto fail;
	}
	/* Regular files are sized up front; pipes and /proc files are read until EOF. */
	size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size : 65536;
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_len) {
		cv_fail(err, CV_EXIT_DATAERR, "'%s' is too large (%" PRIu64 " bytes, limit %zu)", path,
			(uint64_t)st.st_size, max_len);
		goto fail;
	}
	uint8_t *data = malloc(cap + 1);
	if (!data) {
		cv_fail(err, CV_EXIT_OSERR, "read '%s': out of memory", path);
		goto fail;
	}
	size_t len = 0;
	for (;;) {
		if (len == cap) {
			if (cap >= max_len) {
				free(data);
				cv_fail(err, CV_EXIT_DATAERR, "'%s' is larger than the limit of %zu bytes",
					path, max_len);
				goto fail;
			}
			size_t ncap = CV_MIN(cap ? cap * 2 : 65536, max_len);
			uint8_t *n = realloc(data, ncap + 1);
			if (!n) {
				free(data);
				cv_fail(err, CV_EXIT_OSERR, "read '%s': out of memory", path);
				goto fail;
			}
			data = n;
			cap = ncap;
		}
		ssize_t r = read(fd, data + len, cap - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			free(data);
			cv_fail_errno(err, CV_EXIT_IOERR, "read '%s'", path);
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	data[len] = 0;
	close(fd);
	out->data = data;
	out->len = len;
	return 0;
fail:
	close(fd);
	return -1;
}

void cv_buf_free(struct cv_buf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
}

int cv_write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

ssize_t cv_read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t done = 0;
	while (done < len) {
		ssize_t r = read(fd, p + done, len - done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

bool cv_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return false;
	uint64_t v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

int cv_format(char *out, size_t len, struct cv_error *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len)
		return cv_fail(err, CV_EXIT_USAGE, "path or value too long (%d bytes)", n);
	return 0;
}

int cv_self_dir(char *out, size_t len, struct cv_error *err)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "readlink /proc/self/exe");
	exe[n] = 0;
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	return cv_format(out, len, err, "%s", exe);
}

int cv_cache_dir(char *out, size_t len, struct cv_error *err)
{
	const char *v = getenv("CVISOR_CACHE");
	if (v && *v)
		return cv_format(out, len, err, "%s", v);
	v = getenv("XDG_CACHE_HOME");
	if (v && *v)
		return cv_format(out, len, err, "%s/cvisor", v);
	v = getenv("HOME");
	if (v && *v)
		return cv_format(out, len, err, "%s/.cache/cvisor", v);
	return cv_fail(err, CV_EXIT_USAGE, "cannot locate the cache: set HOME or CVISOR_CACHE");
}

uint64_t cv_host_memory_bytes(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	if (!f)
		return 0;
	char line[256];
	uint64_t kib = 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemTotal: %" SCNu64 " kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib * 1024;
}

uint64_t cv_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
