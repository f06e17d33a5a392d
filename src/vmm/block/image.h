/*
 * Raw disk images for virtio-blk: opening a regular file or a block device, its size in 512-byte
 * sectors, the advisory lock that keeps two VMs from writing one image, and the serial number
 * the guest reads with GET_ID. The image is byte-for-byte the disk (no format, no header).
 *
 * Sizes: a regular file whose size is not a multiple of 512 is accepted with a warning on stderr
 * and its trailing partial sector is invisible to the guest (rounded down), as a partial sector
 * cannot be addressed through the sector-based interface anyway. An image smaller than one
 * sector is refused.
 *
 * Locking: an open-file-description (OFD) lock over the whole file, exclusive for read-write and
 * shared for read-only, taken without waiting: any number of VMs may share an image read-only,
 * but a read-write user excludes everyone else. OFD locks (unlike classic POSIX locks) belong to
 * the open file, so no other code in the process closing an unrelated fd of the same file can
 * drop them, and they work across threads; they go away with the fd, i.e. when the VMM exits.
 */
#ifndef CVISOR_VMM_BLOCK_IMAGE_H
#define CVISOR_VMM_BLOCK_IMAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define BLK_SECTOR_SIZE 512u
#define BLK_SECTOR_SHIFT 9
#define BLK_ID_BYTES 20              /* virtio-blk GET_ID: serial string, NUL-padded */

struct blk_image {
	int fd;
	bool read_only;
	bool block_device;           /* a host block device rather than a regular file */
	uint64_t sectors;            /* capacity the guest sees */
	uint64_t tail_bytes;         /* bytes past the last whole sector (regular files only) */
	uint32_t block_size;         /* 512, or a block device's logical block size */
	char serial[BLK_ID_BYTES];   /* not NUL-terminated when all 20 bytes are used */
};

/*
 * Opens `path` (O_RDWR, or O_RDONLY when read_only; O_CLOEXEC), checks its kind and size and
 * locks it. `serial` (at most 20 bytes) or, if NULL, one derived from the file's device and
 * inode numbers, which stays the same across runs for the same file. Errors name the path.
 */
int blk_image_open(struct blk_image *img, const char *path, bool read_only, const char *serial,
		   struct cv_error *err);
/*
 * Live migration hands the lock from one VMM to the other: the source drops it (lock false)
 * once its guest is stopped for good, the destination, which opened the image with
 * blk_image_open_unlocked, takes it (lock true) before its guest runs.
 */
int blk_image_open_unlocked(struct blk_image *img, const char *path, bool read_only,
			    const char *serial, struct cv_error *err);
int blk_image_set_lock(struct blk_image *img, bool lock, const char *path, struct cv_error *err);
void blk_image_close(struct blk_image *img);

#endif
