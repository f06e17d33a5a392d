/*
 * Sparse diff application (see sparse_merge.h).
 */
#include "sparse_merge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define COPY_CHUNK (1u << 20)

static int copy_range(int from, int to, uint64_t off, uint64_t end, uint8_t *buf,
		      const char *diff_path, const char *base_path, struct cv_error *err)
{
	while (off < end) {
		size_t want = (size_t)CV_MIN((uint64_t)COPY_CHUNK, end - off);
		ssize_t n = pread(from, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cv_fail_errno(err, CV_EXIT_IOERR, "read '%s'", diff_path);
		if (n == 0)
			return cv_fail(err, CV_EXIT_IOERR, "'%s' shrank while being merged", diff_path);
		for (size_t done = 0; done < (size_t)n;) {
			ssize_t w = pwrite(to, buf + done, (size_t)n - done, (off_t)(off + done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return cv_fail_errno(err, CV_EXIT_IOERR, "write '%s'", base_path);
			done += (size_t)w;
		}
		off += (uint64_t)n;
	}
	return 0;
}

int sparse_merge(const char *base_path, const char *diff_path, uint64_t *copied,
		 struct cv_error *err)
{
	int diff = open(diff_path, O_RDONLY | O_CLOEXEC);
	if (diff < 0)
		return cv_fail_errno(err, errno == ENOENT ? CV_EXIT_NOINPUT : CV_EXIT_IOERR,
				     "open diff '%s'", diff_path);
	int base = open(base_path, O_RDWR | O_CLOEXEC);
	if (base < 0) {
		int e = errno;
		close(diff);
		errno = e;
		return cv_fail_errno(err, e == ENOENT ? CV_EXIT_NOINPUT : CV_EXIT_IOERR,
				     "open base '%s'", base_path);
	}
	int rc = 0;
	uint64_t total = 0;
	uint8_t *buf = NULL;
	struct stat bs, ds;
	if (fstat(base, &bs) < 0 || fstat(diff, &ds) < 0) {
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "stat '%s' or '%s'", base_path, diff_path);
		goto out;
	}
	if (!S_ISREG(bs.st_mode) || !S_ISREG(ds.st_mode)) {
		rc = cv_fail(err, CV_EXIT_USAGE, "'%s' and '%s' must be regular files", base_path,
			     diff_path);
		goto out;
	}
	if (bs.st_dev == ds.st_dev && bs.st_ino == ds.st_ino) {
		rc = cv_fail(err, CV_EXIT_USAGE, "'%s' and '%s' are the same file", base_path,
			     diff_path);
		goto out;
	}
	if (bs.st_size != ds.st_size) {
		rc = cv_fail(err, CV_EXIT_DATAERR, "the diff '%s' is %lld bytes, the base '%s' %lld: "
			     "not a diff of this memory file", diff_path, (long long)ds.st_size,
			     base_path, (long long)bs.st_size);
		goto out;
	}
	uint64_t size = (uint64_t)ds.st_size;
	off_t first_hole = lseek(diff, 0, SEEK_HOLE);
	if (first_hole >= 0 && (uint64_t)first_hole >= size && (uint64_t)ds.st_blocks * 512 < size) {
		rc = cv_fail(err, CV_EXIT_IOERR, "the file system of '%s' does not report its holes "
			     "(SEEK_HOLE); copy it to one that does (cp --sparse=always) and merge "
			     "that", diff_path);
		goto out;
	}
	buf = malloc(COPY_CHUNK);
	if (!buf) {
		rc = cv_fail(err, CV_EXIT_OSERR, "out of memory");
		goto out;
	}
	for (uint64_t off = 0; rc == 0 && off < size;) {
		off_t data = lseek(diff, (off_t)off, SEEK_DATA);
		if (data < 0) {
			if (errno != ENXIO)   /* ENXIO: no data after off */
				rc = cv_fail_errno(err, CV_EXIT_IOERR, "SEEK_DATA in '%s'", diff_path);
			break;
		}
		off_t hole = lseek(diff, data, SEEK_HOLE);
		if (hole < 0) {
			rc = cv_fail_errno(err, CV_EXIT_IOERR, "SEEK_HOLE in '%s'", diff_path);
			break;
		}
		uint64_t end = CV_MIN((uint64_t)hole, size);
		rc = copy_range(diff, base, (uint64_t)data, end, buf, diff_path, base_path, err);
		total += end - (uint64_t)data;
		off = end;
	}
	if (rc == 0 && fsync(base) < 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "sync '%s'", base_path);
out:
	free(buf);
	if (close(base) < 0 && rc == 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "close '%s'", base_path);
	close(diff);
	if (rc == 0 && copied)
		*copied = total;
	return rc;
}
