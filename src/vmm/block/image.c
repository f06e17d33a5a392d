/*
 * Raw disk images (see image.h).
 */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* FNV-1a: a stable, well-spread 64-bit mix of the identifying numbers. */
static uint64_t fnv1a(uint64_t h, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		h ^= (v >> (8 * i)) & 0xff;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int lock_image(int fd, bool read_only, const char *path, struct cv_error *err)
{
	struct flock fl = {
		.l_type = read_only ? F_RDLCK : F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = 0,
		.l_len = 0,              /* to the end of the file, however it grows */
	};
	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES) {
		return cv_fail(err, CV_EXIT_NOINPUT,
			       "disk image '%s' is in use by another process (it holds a %s lock; "
			       "a read-write disk cannot be shared, a read-only one only with "
			       "other read-only users)",
			       path, read_only ? "write" : "read or write");
	}
	return cv_fail_errno(err, CV_EXIT_OSERR, "lock disk image '%s'", path);
}

static int image_open(struct blk_image *img, const char *path, bool read_only, const char *serial,
		      bool lock, struct cv_error *err)
{
	memset(img, 0, sizeof(*img));
	img->fd = -1;
	img->read_only = read_only;
	img->block_size = BLK_SECTOR_SIZE;
	int fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (!read_only && (e == EROFS || e == EACCES || e == EPERM)) {
			errno = e;
			return cv_fail_errno(err, CV_EXIT_NOINPUT,
					     "open disk image '%s' read-write (add ',ro' for a "
					     "read-only disk)", path);
		}
		errno = e;
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "open disk image '%s'", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "stat disk image '%s'", path);
		goto fail;
	}
	uint64_t bytes;
	if (S_ISREG(st.st_mode)) {
		bytes = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		img->block_device = true;
		if (ioctl(fd, BLKGETSIZE64, &bytes) < 0) {
			cv_fail_errno(err, CV_EXIT_OSERR, "disk image '%s': size of block device",
				      path);
			goto fail;
		}
		/* Guests that know the device's sector size send I/O it can do (4Kn disks). */
		int lbs;
		if (ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs >= (int)BLK_SECTOR_SIZE && lbs <= 65536 &&
		    !(lbs & (lbs - 1)))
			img->block_size = (uint32_t)lbs;
	} else {
		cv_fail(err, CV_EXIT_NOINPUT,
			"disk image '%s' is neither a regular file nor a block device", path);
		goto fail;
	}
	if (bytes < BLK_SECTOR_SIZE) {
		cv_fail(err, CV_EXIT_DATAERR,
			"disk image '%s' is smaller than one 512-byte sector (%" PRIu64 " bytes)",
			path, bytes);
		goto fail;
	}
	img->sectors = bytes >> BLK_SECTOR_SHIFT;
	img->tail_bytes = bytes & (BLK_SECTOR_SIZE - 1);
	if (img->tail_bytes)
		fprintf(stderr, "cvisor-vmm: warning: disk image '%s' is %" PRIu64 " bytes, not a "
				"multiple of 512; the guest sees %" PRIu64 " sectors and not the last %"
				PRIu64 " bytes\n", path, bytes, img->sectors, img->tail_bytes);
	if (lock && lock_image(fd, read_only, path, err) < 0)
		goto fail;

	memset(img->serial, 0, sizeof(img->serial));
	if (serial) {
		size_t n = strlen(serial);
		memcpy(img->serial, serial, n < BLK_ID_BYTES ? n : BLK_ID_BYTES);
	} else {
		/* "cv" + 16 hex digits: same file, same serial, run after run. */
		uint64_t h = fnv1a(fnv1a(0xcbf29ce484222325ULL, (uint64_t)st.st_dev),
				   (uint64_t)st.st_ino);
		char s[24];
		snprintf(s, sizeof(s), "cv%016" PRIx64, h);
		memcpy(img->serial, s, strlen(s));
	}
	img->fd = fd;
	return 0;
fail:
	close(fd);
	return -1;
}

void blk_image_close(struct blk_image *img)
{
	if (img->fd >= 0)
		close(img->fd);
	img->fd = -1;
}

int blk_image_open(struct blk_image *img, const char *path, bool read_only, const char *serial,
		   struct cv_error *err)
{
	return image_open(img, path, read_only, serial, true, err);
}

int blk_image_open_unlocked(struct blk_image *img, const char *path, bool read_only,
			    const char *serial, struct cv_error *err)
{
	return image_open(img, path, read_only, serial, false, err);
}

int blk_image_set_lock(struct blk_image *img, bool lock, const char *path, struct cv_error *err)
{
	if (lock)
		return lock_image(img->fd, img->read_only, path, err);
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	if (fcntl(img->fd, F_OFD_SETLK, &fl) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "unlock disk image '%s'", path);
	return 0;
}
