/*
 * virtio-blk (src/vmm/virtio/blk.c, src/vmm/block/) driven without a VM. This file is the guest
 * driver: it lays out a split virtqueue in a real guest_memory, negotiates features through the
 * generic virtio_dev calls, posts request chains and "kicks" by calling queue_notify under the
 * device lock, exactly as the virtio-pci transport does on the I/O thread. Completions arrive
 * through the device's io_uring eventfd on a real evloop thread, so the asynchronous path is the
 * one a VM uses. Results are checked on both ends: the status byte and data in guest memory, and
 * the bytes and allocated blocks of the image file on the host.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "memory.h"
#include "virtio/blk.h"
#include "virtio/device.h"

#define MEM_SIZE (256ULL << 20)
#define QSIZE VIRTIO_BLK_QUEUE_SIZE
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define BUF_GPA 0x100000ULL
#define IMG_SIZE (16ULL << 20)
#define SECTORS (IMG_SIZE / 512)

#define RD false
#define WR true

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* The test "guest" and its device. */
static struct {
	struct guest_memory mem;
	bool mem_ready;
	struct evloop loop;
	bool loop_ready;
	struct virtio_blk *b;
	struct virtio_transport_ops tops;
	int irqs;
	char dir[512];
	char img[PATH_MAX];
	uint16_t avail_idx;
	uint16_t next_desc;
	uint64_t next_buf;
} T;

/*
 * Checks inside the harness. A forked child must not talk to the Criterion runner (even a
 * passing assertion is reported to it), so there a failed check is an exit status instead.
 */
static bool in_child;
#define need(cond, ...)                                   \
	do {                                              \
		if (!(cond)) {                            \
			if (in_child)                     \
				_exit(3);                 \
			cr_assert_fail(__VA_ARGS__);      \
		}                                         \
	} while (0)

/* ---- host side: files ---- */

static void make_dir(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(T.dir, sizeof(T.dir), "%s/cvisor-blk-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	cr_assert_not_null(mkdtemp(T.dir), "mkdtemp: %s", strerror(errno));
}

static void path_in_dir(char *out, const char *name)
{
	snprintf(out, PATH_MAX, "%s/%s", T.dir, name);
}

/* A sparse image of `size` bytes. */
static void make_image(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static void file_pwrite(const char *path, uint64_t off, const void *buf, size_t len, bool sync)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
	if (sync)
		cr_assert_eq(fsync(fd), 0);
	close(fd);
}

static void file_pread(const char *path, uint64_t off, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static uint64_t file_blocks(const char *path)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	return (uint64_t)st.st_blocks;
}

/* At least 90% of `sectors` were deallocated (the rest may go to extent-tree metadata). */
static void assert_freed(uint64_t before, uint64_t after, uint64_t sectors)
{
	cr_assert(after <= before && before - after >= sectors * 9 / 10,
		  "st_blocks %llu -> %llu: expected about %llu fewer (no hole?)",
		  (unsigned long long)before, (unsigned long long)after, (unsigned long long)sectors);
}

static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 9)) ^ seed);
}

/* ---- guest side: memory and the rings ---- */

static uint8_t *gp(uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_memory_ptr(&T.mem, gpa, len);
	need(p, "test bug: 0x%llx+%llu", (unsigned long long)gpa, (unsigned long long)len);
	return p;
}

static uint64_t galloc(uint64_t len)
{
	uint64_t at = T.next_buf;
	T.next_buf = (T.next_buf + len + 63) & ~63ULL;
	need(T.next_buf <= MEM_SIZE, "test bug: guest buffers exhausted");
	return at;
}

static uint16_t used_idx(void)
{
	return le16toh(__atomic_load_n((uint16_t *)gp(USED_GPA + 2, 2), __ATOMIC_ACQUIRE));
}

static uint32_t used_len(uint16_t i)
{
	return get_le32(gp(USED_GPA + 4 + 8 * (uint64_t)(i % QSIZE) + 4, 4));
}

static uint32_t used_id(uint16_t i)
{
	return get_le32(gp(USED_GPA + 4 + 8 * (uint64_t)(i % QSIZE), 4));
}

/* Writes a chain into the descriptor table and makes it available; returns its head. */
static uint16_t post(const struct seg *s, unsigned n)
{
	uint16_t head = T.next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)((T.next_desc + i) % QSIZE);
		uint8_t *d = gp(DESC_GPA + 16 * (uint64_t)idx, 16);
		put_le64(d, s[i].gpa);
		put_le32(d + 8, s[i].len);
		uint16_t flags = (uint16_t)((s[i].write ? VIRTQ_DESC_F_WRITE : 0) |
					    (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		put_le16(d + 12, flags);
		put_le16(d + 14, (uint16_t)((idx + 1) % QSIZE));
	}
	T.next_desc = (uint16_t)((T.next_desc + n) % QSIZE);
	put_le16(gp(AVAIL_GPA + 4 + 2 * (uint64_t)(T.avail_idx % QSIZE), 2), head);
	T.avail_idx++;
	__atomic_store_n((uint16_t *)gp(AVAIL_GPA + 2, 2), htole16(T.avail_idx), __ATOMIC_RELEASE);
	return head;
}

/* What the transport's ioeventfd handler does on a guest kick. */
static void kick(void)
{
	struct virtio_dev *d = &T.b->dev;
	pthread_mutex_lock(&d->lock);
	if (virtio_dev_running(d) && d->vq[0].started)
		d->ops->queue_notify(d, 0);
	pthread_mutex_unlock(&d->lock);
}

static void wait_used(uint16_t target)
{
	for (int i = 0; i < 20000; i++) {
		if (used_idx() == target)
			return;
		struct timespec ts = { 0, 500000 };
		nanosleep(&ts, NULL);
	}
	need(false, "timeout: used idx %u, expected %u (inflight %u)", used_idx(), target,
	     T.b->aio.inflight);
}

/* Everything posted has come back: descriptors and buffers can be reused. */
static void idle(void)
{
	wait_used(T.avail_idx);
	T.next_desc = 0;
	T.next_buf = BUF_GPA;
}

/* ---- the device ---- */

static void signal_queue(struct virtio_dev *d, unsigned q)
{
	(void)d;
	(void)q;
	__atomic_fetch_add(&T.irqs, 1, __ATOMIC_RELAXED);
}

static void signal_config(struct virtio_dev *d)
{
	(void)d;
}

/* The driver's initialisation: queue 0 at our addresses, every offered feature, DRIVER_OK. */
static void driver_init(uint64_t features_mask)
{
	struct virtio_dev *d = &T.b->dev;
	memset(gp(DESC_GPA, 16 * QSIZE), 0, 16 * QSIZE);
	memset(gp(AVAIL_GPA, 6 + 2 * QSIZE), 0, 6 + 2 * QSIZE);
	memset(gp(USED_GPA, 6 + 8 * QSIZE), 0, 6 + 8 * QSIZE);
	T.avail_idx = 0;
	T.next_desc = 0;
	T.next_buf = BUF_GPA;
	pthread_mutex_lock(&d->lock);
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	d->guest_features = d->host_features & features_mask;
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			       VIRTIO_STATUS_FEATURES_OK);
	d->vq[0].size = QSIZE;
	d->vq[0].desc_gpa = DESC_GPA;
	d->vq[0].avail_gpa = AVAIL_GPA;
	d->vq[0].used_gpa = USED_GPA;
	d->queue_enabled[0] = true;
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	need(virtio_dev_running(d), "device did not start (status 0x%x)", d->status);
	pthread_mutex_unlock(&d->lock);
}

static int open_dev(const struct disk_config *cfg, struct virtio_blk **out, struct cv_error *err)
{
	return virtio_blk_create(cfg, 0, &T.mem, &T.loop, out, err);
}

static void start_dev(const char *path, bool ro, const char *serial)
{
	struct disk_config cfg = { .path = path, .read_only = ro, .serial = serial };
	struct cv_error err = { 0 };
	need(open_dev(&cfg, &T.b, &err) == 0, "create: %s", err.msg);
	T.b->dev.transport = &T.tops;
	driver_init(~0ULL);
}

static void env_setup(void)
{
	memset(&T, 0, sizeof(T));
	T.tops.signal_queue = signal_queue;
	T.tops.signal_config = signal_config;
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&T.mem, MEM_SIZE, &err), 0, "%s", err.msg);
	T.mem_ready = true;
	cr_assert_eq(evloop_init(&T.loop, &err), 0, "%s", err.msg);
	cr_assert_eq(evloop_start(&T.loop, "blk-test-io", &err), 0, "%s", err.msg);
	T.loop_ready = true;
	make_dir();
	path_in_dir(T.img, "disk.img");
}

static void rw_setup(void)
{
	env_setup();
	make_image(T.img, IMG_SIZE);
	start_dev(T.img, false, NULL);
}

/* VM teardown order: I/O thread stopped, device reset (lock held), device destroyed. */
static void stop_dev(void)
{
	if (!T.b)
		return;
	pthread_mutex_lock(&T.b->dev.lock);
	virtio_dev_reset(&T.b->dev);
	pthread_mutex_unlock(&T.b->dev.lock);
	virtio_blk_destroy(T.b);
	T.b = NULL;
}

static void teardown(void)
{
	if (T.loop_ready)
		evloop_stop(&T.loop);
	stop_dev();
	if (T.loop_ready)
		evloop_destroy(&T.loop);
	if (T.mem_ready)
		guest_memory_free(&T.mem);
	if (T.dir[0]) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", T.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", T.dir);
	}
}

/* ---- requests ---- */

struct req {
	uint64_t hdr, out, in, status;
	uint32_t out_len, in_len;
};

/* Lays out header, data and status as a Linux driver would (one descriptor each). */
static struct req make_req(uint32_t type, uint64_t sector, const void *out, uint32_t out_len,
			   uint32_t in_len)
{
	struct req r = { .out_len = out_len, .in_len = in_len };
	r.hdr = galloc(16);
	put_le32(gp(r.hdr, 16), type);
	put_le32(gp(r.hdr, 16) + 4, 0);
	put_le64(gp(r.hdr, 16) + 8, sector);
	if (out_len) {
		r.out = galloc(out_len);
		memcpy(gp(r.out, out_len), out, out_len);
	}
	if (in_len) {
		r.in = galloc(in_len);
		memset(gp(r.in, in_len), 0xee, in_len);
	}
	r.status = galloc(1);
	*gp(r.status, 1) = 0xff;
	return r;
}

static void post_req(const struct req *r)
{
	struct seg s[4];
	unsigned n = 0;
	s[n++] = (struct seg){ r->hdr, 16, RD };
	if (r->out_len)
		s[n++] = (struct seg){ r->out, r->out_len, RD };
	if (r->in_len)
		s[n++] = (struct seg){ r->in, r->in_len, WR };
	s[n++] = (struct seg){ r->status, 1, WR };
	post(s, n);
}

static uint8_t status_of(const struct req *r)
{
	return *gp(r->status, 1);
}

/* One synchronous request; `in` receives what the device wrote. */
static uint8_t io(uint32_t type, uint64_t sector, const void *out, uint32_t out_len, void *in,
		  uint32_t in_len)
{
	struct req r = make_req(type, sector, out, out_len, in_len);
	post_req(&r);
	kick();
	idle();
	if (in_len && in)
		memcpy(in, gp(r.in, in_len), in_len);
	return status_of(&r);
}

static uint8_t ranges_io(uint32_t type, const uint64_t *sector, const uint32_t *num,
			 const uint32_t *flags, unsigned n)
{
	uint8_t buf[VIRTIO_BLK_MAX_RANGES * 16 + 16];
	cr_assert_leq(n * 16, sizeof(buf));
	for (unsigned i = 0; i < n; i++) {
		put_le64(buf + 16 * i, sector[i]);
		put_le32(buf + 16 * i + 8, num[i]);
		put_le32(buf + 16 * i + 12, flags ? flags[i] : 0);
	}
	return io(type, 0, buf, n * 16, NULL, 0);
}

static uint8_t range_io(uint32_t type, uint64_t sector, uint32_t num, uint32_t flags)
{
	return ranges_io(type, &sector, &num, &flags, 1);
}

static bool all_equal(const uint8_t *p, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != v)
			return false;
	return true;
}

static bool needs_reset(void)
{
	return T.b->dev.status & VIRTIO_STATUS_NEEDS_RESET;
}

/* ======================= read / write / flush ======================= */

TestSuite(blk, .init = rw_setup, .fini = teardown, .timeout = 60);

Test(blk, write_lands_in_the_image_and_reads_back)
{
	uint8_t data[3 * 512], back[3 * 512], disk[3 * 512];
	fill_pattern(data, sizeof(data), 1);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 10, data, sizeof(data), NULL, 0), VIRTIO_BLK_S_OK);
	file_pread(T.img, 10 * 512, disk, sizeof(disk));
	cr_assert_arr_eq(disk, data, sizeof(data), "bytes on disk differ from what was written");

	cr_assert_eq(io(VIRTIO_BLK_T_IN, 10, NULL, 0, back, sizeof(back)), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(back, data, sizeof(data));
	/* The chain comes back whole: data plus status byte. */
	cr_assert_eq(used_len((uint16_t)(T.avail_idx - 1)), sizeof(back) + 1);
	cr_assert_gt(__atomic_load_n(&T.irqs, __ATOMIC_RELAXED), 0, "no interrupt raised");

	/* Bytes the host puts into the image are what the guest reads. */
	uint8_t host[512];
	fill_pattern(host, sizeof(host), 77);
	file_pwrite(T.img, (SECTORS - 1) * 512, host, sizeof(host), false);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, SECTORS - 1, NULL, 0, back, 512), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(back, host, 512);
	cr_assert_eq(T.b->stats.reads, 2);
	cr_assert_eq(T.b->stats.writes, 1);
	cr_assert_eq(T.b->stats.written_bytes, sizeof(data));
}

Test(blk, scattered_segments_and_split_header)
{
	/* 64 data segments of 4 KiB scattered in guest RAM, header split over two descriptors. */
	enum { NSEG = 64, SEGLEN = 4096 };
	static uint8_t data[NSEG * SEGLEN], disk[NSEG * SEGLEN];
	fill_pattern(data, sizeof(data), 9);
	struct seg s[NSEG + 3];
	uint64_t hdr = galloc(16);
	put_le32(gp(hdr, 16), VIRTIO_BLK_T_OUT);
	put_le32(gp(hdr, 16) + 4, 0);
	put_le64(gp(hdr, 16) + 8, 100);
	s[0] = (struct seg){ hdr, 8, RD };
	s[1] = (struct seg){ hdr + 8, 8, RD };
	for (unsigned i = 0; i < NSEG; i++) {
		uint64_t g = galloc(SEGLEN + 4096);     /* gaps between the segments */
		memcpy(gp(g, SEGLEN), data + i * SEGLEN, SEGLEN);
		s[2 + i] = (struct seg){ g, SEGLEN, RD };
	}
	uint64_t st = galloc(1);
	*gp(st, 1) = 0xff;
	s[NSEG + 2] = (struct seg){ st, 1, WR };
	post(s, NSEG + 3);
	kick();
	idle();
	cr_assert_eq(*gp(st, 1), VIRTIO_BLK_S_OK);
	file_pread(T.img, 100 * 512, disk, sizeof(disk));
	cr_assert_arr_eq(disk, data, sizeof(data));

	/* Read it back into scattered buffers, status sharing the last data descriptor. */
	T.next_buf = BUF_GPA;
	hdr = galloc(16);
	put_le32(gp(hdr, 16), VIRTIO_BLK_T_IN);
	put_le32(gp(hdr, 16) + 4, 0);
	put_le64(gp(hdr, 16) + 8, 100);
	s[0] = (struct seg){ hdr, 16, RD };
	uint64_t g[NSEG];
	for (unsigned i = 0; i < NSEG; i++) {
		uint32_t len = SEGLEN + (i == NSEG - 1 ? 1 : 0);
		g[i] = galloc(len + 512);
		memset(gp(g[i], len), 0, len);
		s[1 + i] = (struct seg){ g[i], len, WR };
	}
	post(s, NSEG + 1);
	kick();
	idle();
	cr_assert_eq(*gp(g[NSEG - 1] + SEGLEN, 1), VIRTIO_BLK_S_OK);
	for (unsigned i = 0; i < NSEG; i++)
		cr_assert_arr_eq(gp(g[i], SEGLEN), data + i * SEGLEN, SEGLEN, "segment %u", i);
}

Test(blk, flush_calls_fdatasync)
{
	uint8_t data[4096];
	fill_pattern(data, sizeof(data), 3);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 0, data, sizeof(data), NULL, 0), VIRTIO_BLK_S_OK);
	cr_assert_eq(T.b->stats.flushes, 0);
	cr_assert_eq(io(VIRTIO_BLK_T_FLUSH, 0, NULL, 0, NULL, 0), VIRTIO_BLK_S_OK);
	cr_assert_eq(T.b->stats.flushes, 1, "flush did not complete an fdatasync");
	/* A flush carrying data is malformed. */
	cr_assert_eq(io(VIRTIO_BLK_T_FLUSH, 0, data, 512, NULL, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(T.b->stats.flushes, 1);
}

/* cache_type Unsafe (Firecracker's default): flush is answered OK without an fdatasync. */
Test(blk, unsafe_cache_acknowledges_flush_without_fdatasync)
{
	stop_dev();
	struct disk_config cfg = { .path = T.img, .cache = DISK_CACHE_UNSAFE };
	struct cv_error err = { 0 };
	cr_assert_eq(open_dev(&cfg, &T.b, &err), 0, "%s", err.msg);
	T.b->dev.transport = &T.tops;
	driver_init(~0ULL);
	cr_assert(T.b->dev.guest_features & (1ULL << VIRTIO_BLK_F_FLUSH), "flush is still offered");
	uint8_t data[4096];
	fill_pattern(data, sizeof(data), 5);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 0, data, sizeof(data), NULL, 0), VIRTIO_BLK_S_OK);
	cr_assert_eq(io(VIRTIO_BLK_T_FLUSH, 0, NULL, 0, NULL, 0), VIRTIO_BLK_S_OK);
	cr_assert_eq(T.b->stats.flushes, 0, "an fdatasync was made");
	cr_assert_eq(T.b->stats.flushes_ignored, 1);
	/* The data is in the file all the same (the host's page cache has it). */
	uint8_t back[4096];
	int fd = open(T.img, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
	close(fd);
	cr_assert_arr_eq(back, data, sizeof(back));
}

Test(blk, out_of_range_sectors_fail)
{
	uint8_t buf[1024];
	memset(buf, 0x5a, sizeof(buf));
	cr_assert_eq(io(VIRTIO_BLK_T_IN, SECTORS - 1, NULL, 0, buf, 512), VIRTIO_BLK_S_OK);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, SECTORS, NULL, 0, buf, 512), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, SECTORS - 1, NULL, 0, buf, 1024), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, SECTORS - 1, buf, 1024, NULL, 0), VIRTIO_BLK_S_IOERR);
	/* sector * 512 and sector + count must not wrap around. */
	cr_assert_eq(io(VIRTIO_BLK_T_IN, UINT64_MAX, NULL, 0, buf, 512), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, UINT64_MAX >> 9, buf, 512, NULL, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, (UINT64_MAX >> 9) + 1, buf, 512, NULL, 0),
		     VIRTIO_BLK_S_IOERR);
	cr_assert_eq(range_io(VIRTIO_BLK_T_DISCARD, SECTORS - 8, 16, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(range_io(VIRTIO_BLK_T_WRITE_ZEROES, UINT64_MAX - 1, 4, 0), VIRTIO_BLK_S_IOERR);
	/* Nothing was written past the end: the image did not grow. */
	struct stat st;
	cr_assert_eq(stat(T.img, &st), 0);
	cr_assert_eq((uint64_t)st.st_size, IMG_SIZE);
	cr_assert(!needs_reset());
}

Test(blk, discard_punches_a_hole)
{
	enum { LEN = 1 << 20 };
	static uint8_t data[LEN], back[LEN];
	memset(data, 0xab, sizeof(data));
	file_pwrite(T.img, 1 << 20, data, LEN, true);
	uint64_t before = file_blocks(T.img);
	cr_assert_geq(before, LEN / 512);
	cr_assert_eq(range_io(VIRTIO_BLK_T_DISCARD, 2048, LEN / 512, 0), VIRTIO_BLK_S_OK);
	assert_freed(before, file_blocks(T.img), LEN / 512);
	file_pread(T.img, 1 << 20, back, LEN);
	cr_assert(all_equal(back, LEN, 0));
	cr_assert_eq(T.b->stats.discards, 1);
}

Test(blk, discard_of_several_ranges)
{
	static uint8_t data[64 * 512];
	memset(data, 0xcd, sizeof(data));
	file_pwrite(T.img, 0, data, sizeof(data), true);
	uint64_t s[3] = { 0, 16, 40 };
	uint32_t n[3] = { 8, 8, 0 };
	cr_assert_eq(ranges_io(VIRTIO_BLK_T_DISCARD, s, n, NULL, 3), VIRTIO_BLK_S_OK);
	uint8_t back[64 * 512];
	file_pread(T.img, 0, back, sizeof(back));
	cr_assert(all_equal(back, 8 * 512, 0));
	cr_assert(all_equal(back + 8 * 512, 8 * 512, 0xcd));
	cr_assert(all_equal(back + 16 * 512, 8 * 512, 0));
	cr_assert(all_equal(back + 24 * 512, 40 * 512, 0xcd));
}

Test(blk, write_zeroes_reads_back_zero)
{
	enum { LEN = 256 << 10 };
	static uint8_t data[LEN], back[LEN];
	memset(data, 0x77, sizeof(data));
	file_pwrite(T.img, 0, data, LEN, true);
	file_pwrite(T.img, LEN, data, LEN, true);
	/* Without unmap (zero range), then with unmap (hole). */
	cr_assert_eq(range_io(VIRTIO_BLK_T_WRITE_ZEROES, 0, LEN / 512, 0), VIRTIO_BLK_S_OK);
	uint64_t before = file_blocks(T.img);
	cr_assert_eq(range_io(VIRTIO_BLK_T_WRITE_ZEROES, LEN / 512, LEN / 512, VIRTIO_BLK_WZ_UNMAP),
		     VIRTIO_BLK_S_OK);
	assert_freed(before, file_blocks(T.img), LEN / 512);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 0, NULL, 0, back, LEN), VIRTIO_BLK_S_OK);
	cr_assert(all_equal(back, LEN, 0));
	cr_assert_eq(io(VIRTIO_BLK_T_IN, LEN / 512, NULL, 0, back, LEN), VIRTIO_BLK_S_OK);
	cr_assert(all_equal(back, LEN, 0));
	/* The neighbours are untouched. */
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 2 * LEN / 512, NULL, 0, back, 512), VIRTIO_BLK_S_OK);
	cr_assert(all_equal(back, 512, 0));
	cr_assert_eq(T.b->stats.write_zeroes, 2);
}

Test(blk, write_zeroes_without_fallocate_writes_zeroes)
{
	/* A host file system with neither hole punching nor zero ranges: zeroes are written. */
	enum { LEN = 3 << 20 };                 /* more than one 1 MiB zero-buffer write */
	static uint8_t data[LEN], back[LEN];
	memset(data, 0x31, sizeof(data));
	file_pwrite(T.img, 0, data, LEN, false);
	pthread_mutex_lock(&T.b->dev.lock);
	T.b->no_punch_hole = true;
	T.b->no_zero_range = true;
	pthread_mutex_unlock(&T.b->dev.lock);
	cr_assert_eq(range_io(VIRTIO_BLK_T_WRITE_ZEROES, 1, LEN / 512 - 2, VIRTIO_BLK_WZ_UNMAP),
		     VIRTIO_BLK_S_OK);
	file_pread(T.img, 0, back, LEN);
	cr_assert(all_equal(back, 512, 0x31));
	cr_assert(all_equal(back + 512, LEN - 1024, 0));
	cr_assert(all_equal(back + LEN - 512, 512, 0x31));
	/* Discard is a hint: nothing to do, still OK, data untouched. */
	cr_assert_eq(range_io(VIRTIO_BLK_T_DISCARD, 0, 1, 0), VIRTIO_BLK_S_OK);
	file_pread(T.img, 0, back, 512);
	cr_assert(all_equal(back, 512, 0x31));
}

Test(blk, get_id_returns_the_derived_serial)
{
	uint8_t id[20];
	cr_assert_eq(io(VIRTIO_BLK_T_GET_ID, 0, NULL, 0, id, 20), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(id, T.b->img.serial, 20);
	cr_assert_eq(memcmp(id, "cv", 2), 0);
	cr_assert_eq(strnlen((char *)id, 20), 18);
	/* Same file, same serial. */
	char first[20];
	memcpy(first, id, 20);
	stop_dev();
	start_dev(T.img, false, NULL);
	cr_assert_eq(io(VIRTIO_BLK_T_GET_ID, 0, NULL, 0, id, 20), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(id, first, 20);
	/* A buffer shorter than 20 bytes cannot take the id. */
	cr_assert_eq(io(VIRTIO_BLK_T_GET_ID, 0, NULL, 0, id, 19), VIRTIO_BLK_S_IOERR);
}

Test(blk, malformed_requests_fail_without_breaking_the_device)
{
	uint8_t buf[1024] = { 0 };
	/* Header of 8 bytes. */
	uint64_t h = galloc(8), st = galloc(1);
	*gp(st, 1) = 0xff;
	post((struct seg[]){ { h, 8, RD }, { st, 1, WR } }, 2);
	kick();
	idle();
	cr_assert_eq(*gp(st, 1), VIRTIO_BLK_S_IOERR);
	/* Length not a multiple of 512. */
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 0, NULL, 0, buf, 100), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 0, buf, 700, NULL, 0), VIRTIO_BLK_S_IOERR);
	/* Data in the wrong direction. */
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 0, buf, 512, NULL, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 0, buf, 512, buf, 512), VIRTIO_BLK_S_IOERR);
	/* Unknown type and unsupported ones. */
	cr_assert_eq(io(0x55, 0, NULL, 0, NULL, 0), VIRTIO_BLK_S_UNSUPP);
	cr_assert_eq(io(10 /* GET_LIFETIME */, 0, NULL, 0, buf, 16), VIRTIO_BLK_S_UNSUPP);
	/* Discard/write-zeroes: reserved flags, unmap on a discard, bad sizes. */
	cr_assert_eq(range_io(VIRTIO_BLK_T_DISCARD, 0, 8, 0x2), VIRTIO_BLK_S_UNSUPP);
	cr_assert_eq(range_io(VIRTIO_BLK_T_DISCARD, 0, 8, VIRTIO_BLK_WZ_UNMAP), VIRTIO_BLK_S_UNSUPP);
	cr_assert_eq(range_io(VIRTIO_BLK_T_WRITE_ZEROES, 0, VIRTIO_BLK_MAX_RANGE_SECTORS + 1, 0),
		     VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_DISCARD, 0, buf, 24, NULL, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_DISCARD, 0, NULL, 0, NULL, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_DISCARD, 0, buf, 16 * (VIRTIO_BLK_MAX_RANGES + 1), NULL, 0),
		     VIRTIO_BLK_S_IOERR);
	/* A chain without any writable byte: handed back with nothing written. */
	uint64_t h2 = galloc(16);
	put_le32(gp(h2, 16), VIRTIO_BLK_T_IN);
	post((struct seg[]){ { h2, 16, RD } }, 1);
	kick();
	idle();
	cr_assert_eq(used_len((uint16_t)(T.avail_idx - 1)), 0);
	/* None of this is a ring violation: the device still works. */
	cr_assert(!needs_reset());
	uint8_t data[512];
	fill_pattern(data, 512, 5);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 3, data, 512, NULL, 0), VIRTIO_BLK_S_OK);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 3, NULL, 0, buf, 512), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(buf, data, 512);
	cr_assert_geq(T.b->stats.ioerr, 9);
	cr_assert_geq(T.b->stats.unsupp, 4);
}

Test(blk, unnegotiated_discard_is_unsupported)
{
	stop_dev();
	struct disk_config cfg = { .path = T.img };
	struct cv_error err = { 0 };
	cr_assert_eq(open_dev(&cfg, &T.b, &err), 0, "%s", err.msg);
	T.b->dev.transport = &T.tops;
	driver_init(~((1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES)));
	cr_assert_eq(range_io(VIRTIO_BLK_T_DISCARD, 0, 8, 0), VIRTIO_BLK_S_UNSUPP);
	cr_assert_eq(range_io(VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 0), VIRTIO_BLK_S_UNSUPP);
}

Test(blk, ring_violation_needs_reset)
{
	/* A buffer outside guest RAM is the driver breaking the ring: NEEDS_RESET. */
	uint64_t h = galloc(16);
	put_le32(gp(h, 16), VIRTIO_BLK_T_IN);
	post((struct seg[]){ { h, 16, RD }, { MEM_SIZE - 256, 4096, WR } }, 2);
	kick();
	cr_assert(needs_reset());
	cr_assert_eq(used_idx(), 0);
	/* After a reset the driver can start over. */
	pthread_mutex_lock(&T.b->dev.lock);
	virtio_dev_write_status(&T.b->dev, 0);
	pthread_mutex_unlock(&T.b->dev.lock);
	driver_init(~0ULL);
	uint8_t buf[512];
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 0, NULL, 0, buf, 512), VIRTIO_BLK_S_OK);
}

Test(blk, many_requests_in_flight)
{
	/* 80 reads (240 descriptors) of distinct 4 KiB blocks at once, each with its own bytes. */
	enum { N = 80, LEN = 4096 };
	static uint8_t data[N * LEN];
	fill_pattern(data, sizeof(data), 21);
	file_pwrite(T.img, 0, data, sizeof(data), false);
	struct req r[N];
	for (unsigned i = 0; i < N; i++) {
		r[i] = make_req(VIRTIO_BLK_T_IN, (uint64_t)i * (LEN / 512), NULL, 0, LEN);
		post_req(&r[i]);
	}
	kick();
	idle();
	bool seen[QSIZE] = { false };
	for (unsigned i = 0; i < N; i++) {
		cr_assert_eq(status_of(&r[i]), VIRTIO_BLK_S_OK, "request %u", i);
		cr_assert_arr_eq(gp(r[i].in, LEN), data + (size_t)i * LEN, LEN, "request %u", i);
		uint32_t id = used_id((uint16_t)i);
		cr_assert_lt(id, QSIZE);
		cr_assert(!seen[id], "head %u used twice", id);
		seen[id] = true;
	}
}

Test(blk, back_pressure_requeues_and_finishes_everything)
{
	/* 64 discards of 32 ranges: 2048 fallocate operations, 8 times what may be in flight. */
	enum { NREQ = 64, NR = VIRTIO_BLK_MAX_RANGES };
	static uint8_t data[IMG_SIZE];
	memset(data, 0xab, sizeof(data));
	file_pwrite(T.img, 0, data, sizeof(data), true);
	uint64_t before = file_blocks(T.img);
	struct req r[NREQ];
	for (unsigned k = 0; k < NREQ; k++) {
		uint8_t rb[NR * 16];
		for (unsigned i = 0; i < NR; i++) {
			put_le64(rb + 16 * i, (uint64_t)(k * NR + i) * 16);
			put_le32(rb + 16 * i + 8, 8);
			put_le32(rb + 16 * i + 12, 0);
		}
		r[k] = make_req(VIRTIO_BLK_T_DISCARD, 0, rb, sizeof(rb), 0);
		post_req(&r[k]);
	}
	kick();
	idle();
	for (unsigned k = 0; k < NREQ; k++)
		cr_assert_eq(status_of(&r[k]), VIRTIO_BLK_S_OK, "request %u", k);
	cr_assert_gt(T.b->stats.requeued, 0, "the ring never filled: test does not test");
	cr_assert_eq(T.b->stats.discards, NREQ);
	assert_freed(before, file_blocks(T.img), IMG_SIZE / 512 / 2);
	file_pread(T.img, 0, data, sizeof(data));
	for (uint64_t s = 0; s < SECTORS; s += 16) {
		cr_assert(all_equal(data + s * 512, 8 * 512, 0), "sector %llu", (unsigned long long)s);
		cr_assert(all_equal(data + (s + 8) * 512, 8 * 512, 0xab));
	}
	cr_assert_eq(T.b->n_free, QSIZE);
	cr_assert_eq(T.b->aio.inflight, 0);
}

Test(blk, reset_waits_for_in_flight_io)
{
	enum { N = 64, LEN = 1 << 20 };
	struct req r[N];
	for (unsigned i = 0; i < N; i++) {
		r[i] = make_req(VIRTIO_BLK_T_IN, 0, NULL, 0, LEN);
		post_req(&r[i]);
	}
	struct virtio_dev *d = &T.b->dev;
	/* Kick and reset in one critical section: nothing can be reaped in between. */
	pthread_mutex_lock(&d->lock);
	d->ops->queue_notify(d, 0);
	unsigned inflight = T.b->aio.inflight;
	virtio_dev_write_status(d, 0);
	unsigned after = T.b->aio.inflight;
	pthread_mutex_unlock(&d->lock);
	cr_assert_eq(inflight, N, "requests were not in flight at the reset");
	cr_assert_eq(after, 0, "reset returned with I/O in flight");
	cr_assert_eq(T.b->n_free, QSIZE);
	/* Completions after the reset are dropped: nothing used, no status written. */
	struct timespec ts = { 0, 50000000 };
	nanosleep(&ts, NULL);
	cr_assert_eq(used_idx(), 0);
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(status_of(&r[i]), 0xff);
	driver_init(~0ULL);
	uint8_t data[512], back[512];
	fill_pattern(data, 512, 8);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 7, data, 512, NULL, 0), VIRTIO_BLK_S_OK);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 7, NULL, 0, back, 512), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(back, data, 512);
}

Test(blk, truncated_image_reports_ioerr)
{
	/* Someone else shrank the image under the VM: reads past the new end fail cleanly. */
	cr_assert_eq(truncate(T.img, IMG_SIZE / 2), 0);
	uint8_t buf[1024];
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 0, NULL, 0, buf, 512), VIRTIO_BLK_S_OK);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, SECTORS / 2 - 1, NULL, 0, buf, 1024), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, SECTORS - 1, NULL, 0, buf, 512), VIRTIO_BLK_S_IOERR);
	cr_assert(!needs_reset());
}

Test(blk, config_space)
{
	uint8_t c[VIRTIO_BLK_CFG_SIZE];
	struct virtio_dev *d = &T.b->dev;
	d->ops->config_read(d, 0, c, sizeof(c));
	cr_assert_eq(get_le64(c + VIRTIO_BLK_CFG_CAPACITY), SECTORS);
	cr_assert_eq(get_le32(c + VIRTIO_BLK_CFG_SEG_MAX), VIRTIO_BLK_SEG_MAX);
	cr_assert_eq(get_le32(c + VIRTIO_BLK_CFG_SIZE_MAX), VIRTIO_BLK_SIZE_MAX);
	cr_assert_eq(get_le32(c + VIRTIO_BLK_CFG_BLK_SIZE), 512);
	cr_assert_eq(get_le32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SEG), VIRTIO_BLK_MAX_RANGES);
	cr_assert_eq(get_le32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS), VIRTIO_BLK_MAX_RANGE_SECTORS);
	cr_assert_eq(get_le32(c + VIRTIO_BLK_CFG_DISCARD_ALIGN), 8);
	cr_assert_eq(get_le32(c + VIRTIO_BLK_CFG_MAX_WZ_SEG), VIRTIO_BLK_MAX_RANGES);
	cr_assert_eq(c[VIRTIO_BLK_CFG_WZ_MAY_UNMAP], 1);
	/* Partial and out-of-range reads, as the transport may do. */
	uint8_t b4[4];
	d->ops->config_read(d, 4, b4, 4);
	cr_assert_eq(get_le32(b4), (uint32_t)(SECTORS >> 32));
	d->ops->config_read(d, 0x800, b4, 4);
	cr_assert_eq(get_le32(b4), 0);
	uint64_t f = d->host_features;
	cr_assert(f & (1ULL << VIRTIO_BLK_F_FLUSH));
	cr_assert(f & (1ULL << VIRTIO_BLK_F_DISCARD));
	cr_assert(f & (1ULL << VIRTIO_BLK_F_WRITE_ZEROES));
	cr_assert(f & (1ULL << VIRTIO_BLK_F_SEG_MAX));
	cr_assert(f & (1ULL << VIRTIO_BLK_F_SIZE_MAX));
	cr_assert(f & (1ULL << VIRTIO_BLK_F_BLK_SIZE));
	cr_assert(!(f & (1ULL << VIRTIO_BLK_F_RO)));
	cr_assert_str_eq(d->name, "virtio-blk0");
}

/* ======================= rate limiting ======================= */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void limit(uint64_t bw_size, uint64_t bw_ms, uint64_t ops_size, uint64_t ops_ms)
{
	struct rate_limiter_config c = { 0 };
	c.bandwidth = (struct token_bucket_config){ bw_size, 0, bw_ms, bw_size != 0 };
	c.ops = (struct token_bucket_config){ ops_size, 0, ops_ms, ops_size != 0 };
	struct cv_error err = { 0 };
	cr_assert_eq(blk_set_rate_limiter(T.b, &c, &err), 0, "%s", err.msg);
}

/*
 * Waits for used entries [from, target), noting in at[] when each one was first seen (ns after
 * t0).
 */
static void wait_used_times(uint16_t from, uint16_t target, uint64_t t0, uint64_t *at)
{
	uint16_t seen = from;
	for (int i = 0; i < 20000 && seen != target; i++) {
		uint16_t u = used_idx();
		while (seen != u)
			at[seen++] = now_ns() - t0;
		struct timespec ts = { 0, 250000 };
		nanosleep(&ts, NULL);
	}
	need(seen == target, "timeout: used idx %u, expected %u", used_idx(), target);
}

#define MS_NS 1000000ULL

TestSuite(blk_ratelimit, .init = rw_setup, .fini = teardown, .timeout = 60);

Test(blk_ratelimit, ops_limit_spaces_requests_in_order)
{
	/* One request per 100 ms, bucket of one: five reads posted at once take 400 ms or more. */
	enum { N = 5, LEN = 4096 };
	static uint8_t data[N * LEN];
	fill_pattern(data, sizeof(data), 5);
	file_pwrite(T.img, 0, data, sizeof(data), false);
	limit(0, 0, 1, 100);
	struct req r[N];
	uint16_t heads[N];
	for (unsigned i = 0; i < N; i++) {
		r[i] = make_req(VIRTIO_BLK_T_IN, (uint64_t)i * (LEN / 512), NULL, 0, LEN);
		heads[i] = T.next_desc;
		post_req(&r[i]);
	}
	uint64_t t0 = now_ns();
	kick();
	uint64_t at[N];
	wait_used_times(0, N, t0, at);
	for (unsigned i = 0; i < N; i++) {
		cr_assert_eq(status_of(&r[i]), VIRTIO_BLK_S_OK, "request %u", i);
		cr_assert_arr_eq(gp(r[i].in, LEN), data + (size_t)i * LEN, LEN, "request %u", i);
		/* In order: the used ring lists the heads as they were posted. */
		cr_assert_eq(used_id((uint16_t)i), heads[i], "completion %u out of order", i);
		/* Never early: request i needs i refills of 100 ms after the kick. */
		cr_assert_geq(at[i] + MS_NS, i * 100 * MS_NS, "request %u done after %llu ms", i,
			      (unsigned long long)(at[i] / MS_NS));
	}
	cr_assert_lt(at[N - 1], 3000 * MS_NS, "throttled requests took %llu ms",
		     (unsigned long long)(at[N - 1] / MS_NS));
	cr_assert_geq(T.b->rl.throttled, N - 1);
	cr_assert_eq(T.b->n_free, QSIZE);
}

Test(blk_ratelimit, waiting_requests_stay_in_the_ring)
{
	/* One request per 10 s: the second waits, unpopped, and kicks do not start it. */
	limit(0, 0, 1, 10000);
	struct req a = make_req(VIRTIO_BLK_T_IN, 0, NULL, 0, 512);
	post_req(&a);
	struct req b = make_req(VIRTIO_BLK_T_IN, 1, NULL, 0, 512);
	post_req(&b);
	kick();
	wait_used(1);
	for (int i = 0; i < 5; i++)
		kick();
	struct timespec ts = { 0, 100 * 1000000L };
	nanosleep(&ts, NULL);
	cr_assert_eq(used_idx(), 1);
	cr_assert_eq(status_of(&b), 0xff);
	pthread_mutex_lock(&T.b->dev.lock);
	uint16_t popped = T.b->dev.vq[0].last_avail;
	bool waiting = T.b->rl_wait;
	pthread_mutex_unlock(&T.b->dev.lock);
	cr_assert_eq(popped, 1, "the throttled chain was taken from the ring");
	cr_assert(waiting);
	cr_assert_eq(T.b->n_free, QSIZE);
}

Test(blk_ratelimit, reconfiguring_live_releases_waiting_requests)
{
	limit(0, 0, 1, 10000);
	enum { N = 4 };
	struct req r[N];
	for (unsigned i = 0; i < N; i++) {
		r[i] = make_req(VIRTIO_BLK_T_IN, i, NULL, 0, 512);
		post_req(&r[i]);
	}
	kick();
	wait_used(1);
	struct timespec ts = { 0, 50 * 1000000L };
	nanosleep(&ts, NULL);
	cr_assert_eq(used_idx(), 1);
	/* From this (non-I/O) thread, while the device waits: lift the limit. */
	uint64_t t0 = now_ns();
	limit(0, 0, 0, 0);
	uint64_t at[N];
	at[0] = 0;
	wait_used_times(1, N, t0, at);
	cr_assert_lt(at[N - 1], 2000 * MS_NS, "the new settings were not applied to waiting requests");
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(status_of(&r[i]), VIRTIO_BLK_S_OK);
	/* And back to a tight limit: the next two are spaced again. */
	limit(0, 0, 1, 150);
	struct req x = make_req(VIRTIO_BLK_T_IN, 0, NULL, 0, 512);
	struct req y = make_req(VIRTIO_BLK_T_IN, 1, NULL, 0, 512);
	post_req(&x);
	post_req(&y);
	t0 = now_ns();
	kick();
	uint64_t at2[N + 2];
	wait_used_times(N, N + 2, t0, at2);
	cr_assert_geq(at2[N + 1] + MS_NS, 150 * MS_NS);
}

Test(blk_ratelimit, bandwidth_limit_and_oversize_request)
{
	/* 64 KiB per 100 ms. A 256 KiB read passes on the full bucket, leaving 192 KiB of debt:
	 * the 4 KiB read after it waits (192 + 4) / 64 x 100 ms = 306 ms. */
	limit(64 << 10, 100, 0, 0);
	struct req big = make_req(VIRTIO_BLK_T_IN, 0, NULL, 0, 256 << 10);
	struct req small = make_req(VIRTIO_BLK_T_IN, 1024, NULL, 0, 4096);
	post_req(&big);
	post_req(&small);
	uint64_t t0 = now_ns();
	kick();
	uint64_t at[2];
	wait_used_times(0, 2, t0, at);
	cr_assert_eq(status_of(&big), VIRTIO_BLK_S_OK);
	cr_assert_eq(status_of(&small), VIRTIO_BLK_S_OK);
	cr_assert_geq(at[1], 300 * MS_NS, "small read after %llu ms",
		      (unsigned long long)(at[1] / MS_NS));
	cr_assert_geq(at[1] - at[0], 200 * MS_NS, "oversize read did not leave a debt");
	/* Writes are charged too: 128 KiB more waits at least one refill of the bucket. */
	static uint8_t wdata[128 << 10];
	fill_pattern(wdata, sizeof(wdata), 9);
	t0 = now_ns();
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 2048, wdata, sizeof(wdata), NULL, 0), VIRTIO_BLK_S_OK);
	uint8_t back[128 << 10];
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 2048, NULL, 0, back, sizeof(back)), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(back, wdata, sizeof(wdata));
	cr_assert_geq(now_ns() - t0, 190 * MS_NS);
}

Test(blk_ratelimit, reset_while_waiting_then_work_resumes)
{
	limit(0, 0, 1, 200);
	struct req a = make_req(VIRTIO_BLK_T_IN, 0, NULL, 0, 512);
	struct req b = make_req(VIRTIO_BLK_T_IN, 1, NULL, 0, 512);
	post_req(&a);
	post_req(&b);
	kick();
	wait_used(1);
	pthread_mutex_lock(&T.b->dev.lock);
	cr_assert(T.b->rl_wait);
	virtio_dev_write_status(&T.b->dev, 0);
	cr_assert(!T.b->rl_wait);
	pthread_mutex_unlock(&T.b->dev.lock);
	/* The timer of the old ring must not act on the new one before its kick. */
	struct timespec ts = { 0, 300 * 1000000L };
	nanosleep(&ts, NULL);
	driver_init(~0ULL);
	cr_assert_eq(used_idx(), 0);
	uint8_t buf[512];
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 0, NULL, 0, buf, 512), VIRTIO_BLK_S_OK);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 0, NULL, 0, buf, 512), VIRTIO_BLK_S_OK);
	cr_assert(!needs_reset());
}

Test(blk_ratelimit, bad_settings_are_refused)
{
	struct rate_limiter_config c = { 0 };
	c.ops = (struct token_bucket_config){ RL_MAX_SIZE + 1, 0, 100, true };
	struct cv_error err = { 0 };
	cr_assert_eq(blk_set_rate_limiter(T.b, &c, &err), -1);
	cr_assert(strstr(err.msg, "virtio-blk0"), "%s", err.msg);
	/* Nothing was applied. */
	cr_assert(!rate_limiter_active(&T.b->rl));
}

/* ======================= images: kinds, sizes, locks, read-only ======================= */

TestSuite(image, .init = env_setup, .fini = teardown, .timeout = 60);

Test(image, read_only_disk_refuses_writes)
{
	uint8_t orig[512], data[512], back[512];
	make_image(T.img, IMG_SIZE);
	fill_pattern(orig, 512, 61);
	file_pwrite(T.img, 0, orig, 512, false);
	cr_assert_eq(chmod(T.img, 0444), 0);  /* a read-only disk needs no write permission */
	start_dev(T.img, true, NULL);
	uint64_t f = T.b->dev.host_features;
	cr_assert(f & (1ULL << VIRTIO_BLK_F_RO));
	cr_assert(!(f & (1ULL << VIRTIO_BLK_F_DISCARD)));
	fill_pattern(data, 512, 62);
	cr_assert_eq(io(VIRTIO_BLK_T_OUT, 0, data, 512, NULL, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(range_io(VIRTIO_BLK_T_DISCARD, 0, 8, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(range_io(VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 0), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(io(VIRTIO_BLK_T_FLUSH, 0, NULL, 0, NULL, 0), VIRTIO_BLK_S_OK);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 0, NULL, 0, back, 512), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(back, orig, 512);
	file_pread(T.img, 0, back, 512);
	cr_assert_arr_eq(back, orig, 512, "a read-only disk was modified");
}

Test(image, serial_option)
{
	make_image(T.img, IMG_SIZE);
	start_dev(T.img, false, "abcdefghij0123456789");
	uint8_t id[32];
	cr_assert_eq(io(VIRTIO_BLK_T_GET_ID, 0, NULL, 0, id, 32), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(id, "abcdefghij0123456789", 20);
	stop_dev();
	start_dev(T.img, false, "short");
	cr_assert_eq(io(VIRTIO_BLK_T_GET_ID, 0, NULL, 0, id, 20), VIRTIO_BLK_S_OK);
	cr_assert_arr_eq(id, "short\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
}

Test(image, size_not_a_multiple_of_512_is_rounded_down)
{
	make_image(T.img, 100 * 512 + 300);
	start_dev(T.img, false, NULL);
	uint8_t c[8];
	T.b->dev.ops->config_read(&T.b->dev, VIRTIO_BLK_CFG_CAPACITY, c, 8);
	cr_assert_eq(get_le64(c), 100);
	uint8_t buf[512];
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 99, NULL, 0, buf, 512), VIRTIO_BLK_S_OK);
	cr_assert_eq(io(VIRTIO_BLK_T_IN, 100, NULL, 0, buf, 512), VIRTIO_BLK_S_IOERR);
}

static void expect_refused(const char *path, bool ro, const char *needle)
{
	struct disk_config cfg = { .path = path, .read_only = ro };
	struct cv_error err = { 0 };
	struct virtio_blk *b = (void *)1;
	cr_assert_eq(open_dev(&cfg, &b, &err), -1, "%s was accepted", path);
	cr_assert_null(b);
	cr_assert_neq(err.code, 0);
	cr_assert(strstr(err.msg, "--disk ") == err.msg, "message: %s", err.msg);
	cr_assert_not_null(strstr(err.msg, needle), "message: %s", err.msg);
}

Test(image, refuses_what_is_not_a_disk)
{
	char p[PATH_MAX];
	path_in_dir(p, "missing.img");
	expect_refused(p, false, "No such file");
	expect_refused(T.dir, true, "neither a regular file nor a block device");
	expect_refused("/dev/null", false, "neither a regular file nor a block device");
	path_in_dir(p, "tiny.img");
	make_image(p, 511);
	expect_refused(p, false, "smaller than one 512-byte sector");
	path_in_dir(p, "ro.img");
	make_image(p, 4096);
	cr_assert_eq(chmod(p, 0444), 0);
	if (geteuid() != 0)        /* root may write anyway */
		expect_refused(p, false, "add ',ro'");
}

Test(image, read_write_images_are_locked)
{
	make_image(T.img, IMG_SIZE);
	start_dev(T.img, false, NULL);
	/* A second user, read-write or read-only, is refused while a writer has it. */
	expect_refused(T.img, false, "in use by another process");
	expect_refused(T.img, true, "in use by another process");
	/* The lock goes with the device. */
	stop_dev();
	struct disk_config ro = { .path = T.img, .read_only = true };
	struct cv_error err = { 0 };
	struct virtio_blk *r1, *r2;
	cr_assert_eq(open_dev(&ro, &r1, &err), 0, "%s", err.msg);
	cr_assert_eq(open_dev(&ro, &r2, &err), 0, "readers must share: %s", err.msg);
	expect_refused(T.img, false, "in use by another process");
	virtio_blk_destroy(r1);
	virtio_blk_destroy(r2);
	start_dev(T.img, false, NULL);
}

Test(image, lock_holds_against_another_process)
{
	make_image(T.img, IMG_SIZE);
	start_dev(T.img, false, NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct disk_config cfg = { .path = T.img };
		struct cv_error err = { 0 };
		struct virtio_blk *b;
		int rc = virtio_blk_create(&cfg, 1, &T.mem, &T.loop, &b, &err);
		_exit(rc < 0 && strstr(err.msg, "in use") ? 0 : 1);
	}
	int ws;
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "another process got the image");
}

Test(image, flushed_data_survives_a_killed_vmm)
{
	/* The device runs in a child that is SIGKILLed right after the guest's flush completed. */
	char path[PATH_MAX];
	path_in_dir(path, "crash.img");
	make_image(path, IMG_SIZE);
	uint8_t data[8192];
	fill_pattern(data, sizeof(data), 44);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* The parent's I/O thread is not in the child, and its epoll set is shared. */
		in_child = true;
		struct cv_error err = { 0 };
		if (evloop_init(&T.loop, &err) < 0 || evloop_start(&T.loop, "blk-child", &err) < 0)
			_exit(4);
		start_dev(path, false, NULL);
		if (io(VIRTIO_BLK_T_OUT, 64, data, sizeof(data), NULL, 0) != VIRTIO_BLK_S_OK ||
		    io(VIRTIO_BLK_T_FLUSH, 0, NULL, 0, NULL, 0) != VIRTIO_BLK_S_OK)
			_exit(1);
		raise(SIGKILL);
		_exit(2);
	}
	int ws;
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "child did not reach the kill (%d)",
		  ws);
	uint8_t disk[8192];
	file_pread(path, 64 * 512, disk, sizeof(disk));
	cr_assert_arr_eq(disk, data, sizeof(data));
}

/* A seccomp filter that makes io_uring_setup fail with ENOSYS, as an old kernel or a sandbox would. */
static int deny_io_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

Test(image, no_io_uring_is_a_clear_error)
{
	make_image(T.img, IMG_SIZE);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (deny_io_uring() < 0)
			_exit(2);
		struct disk_config cfg = { .path = T.img };
		struct cv_error err = { 0 };
		struct virtio_blk *b;
		char want[PATH_MAX + 64];
		snprintf(want, sizeof(want), "--disk %s: io_uring unavailable: io_uring_setup: %s",
			 T.img, strerror(ENOSYS));
		if (virtio_blk_create(&cfg, 0, &T.mem, &T.loop, &b, &err) == 0)
			_exit(3);
		if (strcmp(err.msg, want) != 0 || err.code != CV_EXIT_OSERR) {
			fprintf(stderr, "got: %s\n", err.msg);
			_exit(4);
		}
		/* The image lock went with the failed device: a working one can take it. */
		int fd = open(T.img, O_RDWR | O_CLOEXEC);
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		_exit(fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : 5);
	}
	int ws;
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "child status %d", ws);
}
