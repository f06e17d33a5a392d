/*
 * The guest memory file (see state.h): guest RAM byte for byte in host-mapping order (guest
 * physical 0 up to the MMIO hole, then from 4 GiB), so file offsets are page-aligned and a
 * restore maps it as is. Pages of zeroes are left as holes; the file reads the same and takes
 * only the space the guest used. For an anonymous RAM mapping, /proc/self/pagemap says which
 * pages were never touched (neither present nor swapped), and those are skipped unread.
 *
 * A diff snapshot's memory file (memfile_write_diff) has the same size and layout but only the
 * pages dirty since the last snapshot, zero pages included, and holes everywhere else;
 * `cvisor snapshot merge` (sparse_merge.h) applies it onto its base.
 *
 * Restore maps the file MAP_PRIVATE over the VM's RAM: pages fault in from the page cache when
 * the guest touches them and writes stay private, so the file is never modified and any number
 * of VMs can be restored from it, each costing only what it changes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot/state.h"
#include "util.h"
#include "vm.h"

#define PAGE 4096u
#define CHUNK_PAGES 512u              /* 2 MiB per pagemap read */
#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)

static bool same_file(const struct stat *st, const struct vm *vm)
{
	return vm->mem_file_ino && (uint64_t)st->st_dev == vm->mem_file_dev &&
	       (uint64_t)st->st_ino == vm->mem_file_ino;
}

/* Writes [off, off+len) of RAM at the same file offset. */
static int write_run(int fd, const uint8_t *base, uint64_t off, uint64_t len, const char *path,
		     struct cv_error *err)
{
	while (len) {
		ssize_t n = pwrite(fd, base + off, CV_MIN(len, (uint64_t)1 << 30), (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return cv_fail_errno(err, CV_EXIT_IOERR, "write memory file '%s'", path);
		}
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

int memfile_write(struct vm *vm, const char *path, struct cv_error *err)
{
	struct stat st;
	if (stat(path, &st) == 0 && same_file(&st, vm))
		return cv_fail(err, CV_EXIT_USAGE, "'%s' is the memory file this VM runs from; "
			       "write the snapshot's memory elsewhere", path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_IOERR, "create memory file '%s'", path);
	const uint8_t *base = vm->mem.host;
	uint64_t size = vm->mem.size;
	int rc = 0;
	if (ftruncate(fd, (off_t)size) < 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "size memory file '%s'", path);
	/* Untouched anonymous pages are zero: pagemap finds them without faulting them in. */
	int pm = vm->mem_file_ino ? -1 : open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t ent[CHUNK_PAGES];
	uint64_t run_start = 0, run_len = 0;
	for (uint64_t off = 0; rc == 0 && off < size; off += (uint64_t)CHUNK_PAGES * PAGE) {
		unsigned pages = (unsigned)CV_MIN((uint64_t)CHUNK_PAGES, (size - off) / PAGE);
		bool have_map = false;
		if (pm >= 0) {
			off_t where = (off_t)(((uintptr_t)(base + off) / PAGE) * sizeof(uint64_t));
			have_map = pread(pm, ent, pages * sizeof(uint64_t), where) ==
				   (ssize_t)(pages * sizeof(uint64_t));
		}
		for (unsigned i = 0; rc == 0 && i < pages; i++) {
			uint64_t p = off + (uint64_t)i * PAGE;
			bool data = have_map && !(ent[i] & (PM_PRESENT | PM_SWAPPED)) ?
					    false : !guest_page_is_zero(base + p);
			if (data && run_len && run_start + run_len == p) {
				run_len += PAGE;
				continue;
			}
			if (run_len)
				rc = write_run(fd, base, run_start, run_len, path, err);
			run_start = p;
			run_len = data ? PAGE : 0;
		}
	}
	if (rc == 0 && run_len)
		rc = write_run(fd, base, run_start, run_len, path, err);
	if (pm >= 0)
		close(pm);
	if (close(fd) < 0 && rc == 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "close memory file '%s'", path);
	if (rc < 0)
		unlink(path);
	return rc;
}

/* True if the file system reports [off, off+PAGE) of fd as a hole. */
static bool reports_hole(int fd, uint64_t off)
{
	off_t h = lseek(fd, (off_t)off, SEEK_HOLE);
	return h >= 0 && (uint64_t)h <= off;
}

int memfile_write_diff(struct vm *vm, const char *path, const uint64_t *dirty,
		       uint64_t *pages_written, struct cv_error *err)
{
	struct stat st;
	if (stat(path, &st) == 0 && same_file(&st, vm))
		return cv_fail(err, CV_EXIT_USAGE, "'%s' is the memory file this VM runs from; "
			       "write the snapshot's memory elsewhere", path);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_IOERR, "create memory file '%s'", path);
	const uint8_t *base = vm->mem.host;
	uint64_t size = vm->mem.size, pages = size / PAGE, n = 0;
	uint64_t first_clean = UINT64_MAX;
	int rc = 0;
	if (ftruncate(fd, (off_t)size) < 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "size memory file '%s'", path);
	/* Dirty pages are written even when they are zero: a hole means "unchanged". */
	for (uint64_t p = 0; rc == 0 && p < pages;) {
		if (!(dirty[p / 64] & (1ULL << (p % 64)))) {
			if (first_clean == UINT64_MAX)
				first_clean = p;
			p++;
			continue;
		}
		uint64_t q = p;
		while (q < pages && (dirty[q / 64] & (1ULL << (q % 64))))
			q++;
		rc = write_run(fd, base, p * PAGE, (q - p) * PAGE, path, err);
		n += q - p;
		p = q;
	}
	/*
	 * The diff is only as good as the holes the merge will find: a file system that reports
	 * none (SEEK_HOLE unsupported: all data) would have the merge overwrite the base with
	 * zeroes. Check one page known to be clean.
	 */
	if (rc == 0 && first_clean != UINT64_MAX && !reports_hole(fd, first_clean * PAGE))
		rc = cv_fail(err, CV_EXIT_IOERR, "the file system of '%s' does not report holes "
			     "(SEEK_HOLE), so a diff snapshot written there could not be applied; "
			     "write it to ext4, xfs, btrfs or tmpfs", path);
	if (close(fd) < 0 && rc == 0)
		rc = cv_fail_errno(err, CV_EXIT_IOERR, "close memory file '%s'", path);
	if (rc < 0)
		unlink(path);
	else if (pages_written)
		*pages_written = n;
	return rc;
}

int memfile_map(struct vm *vm, const char *path, struct cv_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cv_fail_errno(err, errno == ENOENT ? CV_EXIT_NOINPUT : CV_EXIT_IOERR,
				     "open memory file '%s'", path);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return cv_fail_errno(err, CV_EXIT_IOERR, "stat memory file '%s'", path);
	}
	if ((uint64_t)st.st_size != vm->mem.size) {
		close(fd);
		return cv_fail(err, CV_EXIT_DATAERR, "memory file '%s' is %llu bytes, the snapshot's "
			       "guest memory %llu", path, (unsigned long long)st.st_size,
			       (unsigned long long)vm->mem.size);
	}
	/*
	 * Same address as the anonymous RAM it replaces, so KVM's memory slots and every pointer
	 * into guest memory stay valid; KVM drops its old translations through its MMU notifier.
	 */
	void *p = mmap(vm->mem.host, vm->mem.size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED) {
		errno = e;
		return cv_fail_errno(err, CV_EXIT_OSERR, "map memory file '%s'", path);
	}
	vm->mem_file_dev = (uint64_t)st.st_dev;
	vm->mem_file_ino = (uint64_t)st.st_ino;
	/* Guest RAM is the file now: that is the base the next diff snapshot applies onto. */
	if (guest_memory_tracking(&vm->mem)) {
		uint64_t *scratch = calloc(guest_memory_dirty_words(&vm->mem), sizeof(uint64_t));
		if (!scratch || guest_memory_take_dirty(&vm->mem, vm->fd, scratch, err) < 0) {
			free(scratch);
			return scratch ? -1 : cv_fail(err, CV_EXIT_OSERR, "out of memory");
		}
		free(scratch);
		vm->has_diff_base = true;
	}
	return 0;
}
