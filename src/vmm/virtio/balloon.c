/*
 * virtio-balloon (see balloon.h). Queue indices are compact: optional queues the driver did not
 * negotiate take no index, so each queue's role is fixed when the driver activates the device.
 */
#include "balloon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "bytes.h"
#include "snapshot/format.h"
#include "vm.h"

#define BALLOON_PAGE 4096ULL
#define BALLOON_QUEUE_SIZE 128
#define F_STATS_VQ 1
#define F_DEFLATE_ON_OOM 2
#define F_FREE_PAGE_HINT 3
#define F_PAGE_REPORTING 5
#define CONFIG_SIZE 16
#define STAT_SIZE 10          /* le16 tag + le64 value, packed */

enum role { ROLE_NONE, ROLE_INFLATE, ROLE_DEFLATE, ROLE_STATS, ROLE_REPORTING };

static void config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	struct virtio_balloon *b = d->priv;
	uint8_t c[CONFIG_SIZE] = { 0 };
	put_le32(c, b->target_pages);
	put_le32(c + 4, b->actual_pages);
	for (uint32_t i = 0; i < len; i++)
		data[i] = off + i < CONFIG_SIZE ? c[off + i] : 0;
}

static void config_write(struct virtio_dev *d, uint32_t off, const uint8_t *data, uint32_t len)
{
	struct virtio_balloon *b = d->priv;
	/* Only `actual` belongs to the driver. */
	if (off == 4 && len == 4)
		b->actual_pages = get_le32(data);
}

/* Releases host memory behind [gpa, gpa+len) if it is all guest RAM. */
static bool release(struct virtio_balloon *b, uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_memory_ptr(b->dev.mem, gpa, len);
	if (!p)
		return false;
	madvise(p, len, MADV_DONTNEED);
	/* The pages now read as zero: diffs and live migration must send them again. */
	guest_memory_mark_dirty(b->dev.mem, p, len);
	return true;
}

/* Inflate/deflate: chains of 32-bit page frame numbers. Contiguous runs are released at once. */
static void handle_pfns(struct virtio_balloon *b, struct virtq_elem *e, bool inflate)
{
	uint64_t run_start = 0, run_len = 0;
	uint64_t n = e->out_len / 4;
	for (uint64_t i = 0; i < n; i++) {
		uint8_t raw[4];
		iov_to_buf(e->iov, e->n_out, i * 4, raw, 4);
		uint64_t gpa = (uint64_t)get_le32(raw) * BALLOON_PAGE;
		if (inflate) {
			if (run_len && gpa == run_start + run_len) {
				run_len += BALLOON_PAGE;
				continue;
			}
			if (run_len)
				release(b, run_start, run_len);
			run_start = gpa;
			run_len = BALLOON_PAGE;
			b->inflated_pages++;
		} else if (b->inflated_pages) {
			b->inflated_pages--;   /* the page faults back in, zeroed, when touched */
		}
	}
	if (run_len)
		release(b, run_start, run_len);
}

static void handle_stats(struct virtio_balloon *b, struct virtq_elem *e)
{
	uint64_t n = e->out_len / STAT_SIZE;
	for (uint64_t i = 0; i < n; i++) {
		uint8_t raw[STAT_SIZE];
		iov_to_buf(e->iov, e->n_out, i * STAT_SIZE, raw, STAT_SIZE);
		uint16_t tag = get_le16(raw);
		if (tag < BALLOON_STAT_COUNT) {
			b->stats.valid[tag] = true;
			b->stats.value[tag] = get_le64(raw + 2);
		}
	}
	b->stats.updates++;
}

/* Free page reporting: each writable segment *is* a free range of guest memory. */
static void handle_report(struct virtio_balloon *b, struct virtq_elem *e)
{
	for (unsigned i = e->n_out; i < e->n_out + e->n_in; i++) {
		uint8_t *p = e->iov[i].iov_base;
		size_t len = e->iov[i].iov_len;
		/* The iovec already points into guest RAM; release whole pages only. */
		uintptr_t start = ((uintptr_t)p + BALLOON_PAGE - 1) & ~(uintptr_t)(BALLOON_PAGE - 1);
		uintptr_t end = ((uintptr_t)p + len) & ~(uintptr_t)(BALLOON_PAGE - 1);
		if (end > start) {
			madvise((void *)start, end - start, MADV_DONTNEED);
			guest_memory_mark_dirty(b->dev.mem, (void *)start, end - start);
			b->reported_bytes += end - start;
		}
	}
}

static void queue_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_balloon *b = d->priv;
	struct virtq *vq = &d->vq[q];
	int role = b->role[q];
	if (role == ROLE_NONE)
		return;
	int got;
	bool used = false;
	while ((got = virtq_pop(vq, role == ROLE_STATS ? &b->stats_elem : &b->elem)) == 1) {
		if (role == ROLE_STATS) {
			/*
			 * Keep the buffer: giving it back is how we ask for the next report. The
			 * driver has one outstanding at a time, so a newer one replaces it.
			 */
			handle_stats(b, &b->stats_elem);
			b->stats_held = true;
			continue;
		}
		if (role == ROLE_REPORTING)
			handle_report(b, &b->elem);
		else
			handle_pfns(b, &b->elem, role == ROLE_INFLATE);
		virtq_push(vq, &b->elem, 0);
		used = true;
	}
	if (got < 0)
		virtio_dev_fail(d, vq->error);
	if (used)
		virtio_dev_notify_used(d, q);
}

/* Every stats interval: return the statistics buffer, so the guest refills it. */
static void on_timer(void *opaque, uint32_t events)
{
	struct virtio_balloon *b = opaque;
	(void)events;
	uint64_t ticks;
	if (read(b->timer_fd, &ticks, sizeof(ticks)) < 0)
		return;
	pthread_mutex_lock(&b->dev.lock);
	for (unsigned q = 0; q < b->dev.num_queues; q++) {
		if (b->role[q] != ROLE_STATS || !b->stats_held || !virtio_dev_running(&b->dev))
			continue;
		virtq_push(&b->dev.vq[q], &b->stats_elem, 0);
		b->stats_held = false;
		virtio_dev_notify_used(&b->dev, q);
	}
	pthread_mutex_unlock(&b->dev.lock);
}

static void arm_timer(struct virtio_balloon *b, unsigned seconds)
{
	struct itimerspec its = { { seconds, 0 }, { seconds, 0 } };
	if (b->timer_fd >= 0)
		timerfd_settime(b->timer_fd, 0, &its, NULL);
}

static int activate(struct virtio_dev *d)
{
	struct virtio_balloon *b = d->priv;
	unsigned q = 0;
	memset(b->role, 0, sizeof(b->role));
	b->role[q++] = ROLE_INFLATE;
	b->role[q++] = ROLE_DEFLATE;
	if (virtio_dev_has(d, F_STATS_VQ))
		b->role[q++] = ROLE_STATS;
	if (virtio_dev_has(d, F_FREE_PAGE_HINT))
		q++;                      /* never offered; keeps the numbering honest */
	if (virtio_dev_has(d, F_PAGE_REPORTING) && q < d->num_queues)
		b->role[q++] = ROLE_REPORTING;
	if (virtio_dev_has(d, F_STATS_VQ) && b->cfg.stats_interval_s)
		arm_timer(b, b->cfg.stats_interval_s);
	return 0;
}

static void reset(struct virtio_dev *d)
{
	struct virtio_balloon *b = d->priv;
	arm_timer(b, 0);
	b->stats_held = false;
	b->actual_pages = 0;
	memset(b->role, 0, sizeof(b->role));
}

/* The statistics buffer we hold is the last one popped; a restored device pops it again. */
static unsigned held(struct virtio_dev *d, unsigned q)
{
	struct virtio_balloon *b = d->priv;
	return b->role[q] == ROLE_STATS && b->stats_held ? 1 : 0;
}

/* Snapshot: sizes and the last statistics (the target may have been changed at run time). */
static void save(struct virtio_dev *d, struct snap_buf *out)
{
	struct virtio_balloon *b = d->priv;
	snap_put_u32(out, b->target_pages);
	snap_put_u32(out, b->actual_pages);
	snap_put_u64(out, b->inflated_pages);
	snap_put_u64(out, b->reported_bytes);
	snap_put_u64(out, b->stats.updates);
	for (int i = 0; i < BALLOON_STAT_COUNT; i++) {
		snap_put_u8(out, b->stats.valid[i]);
		snap_put_u64(out, b->stats.value[i]);
	}
}

static int load(struct virtio_dev *d, struct snap_cur *in, struct cv_error *err)
{
	struct virtio_balloon *b = d->priv;
	b->target_pages = snap_get_u32(in);
	b->actual_pages = snap_get_u32(in);
	b->inflated_pages = snap_get_u64(in);
	b->reported_bytes = snap_get_u64(in);
	b->stats.updates = snap_get_u64(in);
	for (int i = 0; i < BALLOON_STAT_COUNT; i++) {
		b->stats.valid[i] = snap_get_u8(in) != 0;
		b->stats.value[i] = snap_get_u64(in);
	}
	if (in->bad)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: virtio-balloon: malformed state");
	return 0;
}

static const struct virtio_dev_ops balloon_ops = {
	.device_id = VIRTIO_ID_BALLOON,
	.pci_class = 0x050000,   /* memory controller, as other VMMs use */
	.config_read = config_read,
	.config_write = config_write,
	.activate = activate,
	.reset = reset,
	.queue_notify = queue_notify,
	.held = held,
	.save = save,
	.load = load,
};

static void destroy(void *owner)
{
	struct virtio_balloon *b = owner;
	if (b->timer_fd >= 0)
		close(b->timer_fd);
	virtio_dev_destroy(&b->dev);
	free(b);
}

int virtio_balloon_add(struct vm *vm, const struct balloon_config *cfg, struct cv_error *err)
{
	if ((uint64_t)cfg->target_mib << 20 > vm->mem.size)
		return cv_fail(err, CV_EXIT_USAGE, "--balloon size=%u MiB is more than guest memory",
			       cfg->target_mib);
	struct virtio_balloon *b = calloc(1, sizeof(*b));
	if (!b)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	b->cfg = *cfg;
	b->target_pages = (uint32_t)(((uint64_t)cfg->target_mib << 20) / BALLOON_PAGE);
	b->timer_fd = -1;
	uint64_t features = (1ULL << VIRTIO_RING_F_INDIRECT_DESC) | (1ULL << VIRTIO_RING_F_EVENT_IDX);
	unsigned queues = 2;
	if (cfg->stats_interval_s) {
		features |= 1ULL << F_STATS_VQ;
		queues++;
	}
	if (cfg->deflate_on_oom)
		features |= 1ULL << F_DEFLATE_ON_OOM;
	if (cfg->free_page_reporting) {
		features |= 1ULL << F_PAGE_REPORTING;
		queues++;
	}
	virtio_dev_init(&b->dev, "virtio-balloon", &balloon_ops, b, queues, BALLOON_QUEUE_SIZE,
			features, &vm->mem, &vm->loop);
	if (cfg->stats_interval_s) {
		b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		b->timer = (struct evloop_handler){ .fd = b->timer_fd, .fn = on_timer, .opaque = b };
		if (b->timer_fd < 0 || evloop_add(&vm->loop, &b->timer, EPOLLIN, err) < 0) {
			if (b->timer_fd < 0)
				cv_fail_errno(err, CV_EXIT_OSERR, "balloon: timerfd");
			destroy(b);
			return -1;
		}
	}
	vm->balloon = b;
	return vm_virtio_plug(vm, &b->dev, b, destroy, err);
}

void virtio_balloon_set_target(struct virtio_balloon *b, uint64_t mib)
{
	pthread_mutex_lock(&b->dev.lock);
	b->target_pages = (uint32_t)((mib << 20) / BALLOON_PAGE);
	if (virtio_dev_running(&b->dev))
		virtio_dev_config_changed(&b->dev);
	pthread_mutex_unlock(&b->dev.lock);
}

void virtio_balloon_get(struct virtio_balloon *b, uint64_t *target_mib, uint64_t *actual_mib,
			struct balloon_stats *stats)
{
	pthread_mutex_lock(&b->dev.lock);
	*target_mib = (uint64_t)b->target_pages * BALLOON_PAGE >> 20;
	*actual_mib = (uint64_t)b->actual_pages * BALLOON_PAGE >> 20;
	if (stats)
		*stats = b->stats;
	pthread_mutex_unlock(&b->dev.lock);
}
