/*
 * The device fuzz targets' shared driver and input helpers (see fuzz_driver.h). Written from the
 * virtio 1.2 split-ring layout; every structure the device reads is laid out here, so a failed
 * check in this file is a harness bug, never a device finding.
 */
#include "fuzz_driver.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>

#include "bytes.h"
#include "util.h"

#define PAGE 4096ULL

void fz_fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
	abort();
}

size_t fz_take(struct fz_in *in, void *dst, size_t len)
{
	size_t n = CV_MIN(len, in->n);
	memcpy(dst, in->p, n);
	memset((uint8_t *)dst + n, 0, len - n);
	in->p += n;
	in->n -= n;
	return n;
}

uint16_t fz_u16(struct fz_in *in)
{
	uint8_t b[2];
	fz_take(in, b, sizeof(b));
	return get_le16(b);
}

uint32_t fz_u32(struct fz_in *in)
{
	uint8_t b[4];
	fz_take(in, b, sizeof(b));
	return get_le32(b);
}

uint64_t fz_u64(struct fz_in *in)
{
	uint8_t b[8];
	fz_take(in, b, sizeof(b));
	return get_le64(b);
}

void fz_guest_memory(struct guest_memory *gm, uint64_t size)
{
	struct cv_error err = { 0 };
	if (guest_memory_init(gm, size, &err) < 0) {
		fprintf(stderr, "fuzz: guest memory: %s\n", err.msg);
		exit(1);
	}
	/* Move RAM between two inaccessible pages so that an overrun faults instead of passing. */
	uint8_t *res = mmap(NULL, size + 2 * PAGE, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	FZ_CHECK(res != MAP_FAILED);
	uint8_t *moved = mremap(gm->host, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, res + PAGE);
	FZ_CHECK(moved == res + PAGE);
	for (unsigned i = 0; i < gm->n_regions; i++)
		gm->regions[i].host = moved + (gm->regions[i].host - gm->host);
	gm->host = moved;
}

static void signal_queue(struct virtio_dev *d, unsigned q)
{
	struct fz_driver *drv = d->transport_priv;
	if (q < VIRTIO_MAX_QUEUES)
		drv->irqs.queue[q]++;
}

static void signal_config(struct virtio_dev *d)
{
	struct fz_driver *drv = d->transport_priv;
	drv->irqs.config++;
}

static const struct virtio_transport_ops transport = { signal_queue, signal_config };

void fz_driver_init(struct fz_driver *drv, struct guest_memory *mem, struct virtio_dev *dev)
{
	memset(drv, 0, sizeof(*drv));
	drv->mem = mem;
	drv->dev = dev;
	dev->transport = &transport;
	dev->transport_priv = drv;
	drv->heap = FZ_HEAP_BASE;
	drv->heap_end = guest_memory_low_end(mem);
}

uint8_t *fz_ptr(struct fz_driver *drv, uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_memory_ptr(drv->mem, gpa, len);
	FZ_CHECK(p != NULL);
	return p;
}

void fz_driver_reset(struct fz_driver *drv)
{
	struct virtio_dev *d = drv->dev;
	pthread_mutex_lock(&d->lock);
	virtio_dev_write_status(d, 0);
	pthread_mutex_unlock(&d->lock);
}

bool fz_driver_start(struct fz_driver *drv, uint64_t want, unsigned nq)
{
	struct virtio_dev *d = drv->dev;
	FZ_CHECK(nq <= FZ_MAX_QUEUES && nq <= d->num_queues);
	fz_driver_reset(drv);
	drv->heap = FZ_HEAP_BASE;
	drv->nq = nq;
	pthread_mutex_lock(&d->lock);
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	d->guest_features = d->host_features & (want | (1ULL << VIRTIO_F_VERSION_1));
	drv->indirect = virtio_dev_has(d, VIRTIO_RING_F_INDIRECT_DESC);
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			       VIRTIO_STATUS_FEATURES_OK);
	for (unsigned q = 0; q < nq; q++) {
		struct fz_vq *vq = &drv->q[q];
		uint16_t size = d->queue_max_size;
		FZ_CHECK(size <= 1024);
		uint64_t base = FZ_RING_BASE + q * FZ_RING_STRIDE;
		vq->size = size;
		vq->desc = base;
		vq->avail = base + 16ULL * size;
		vq->used = CV_ALIGN_UP(vq->avail + 6 + 2ULL * size, 4ULL);
		FZ_CHECK(vq->used + 6 + 8ULL * size <= base + FZ_RING_STRIDE);
		memset(fz_ptr(drv, base, FZ_RING_STRIDE), 0, FZ_RING_STRIDE);
		vq->avail_idx = vq->used_seen = 0;
		vq->outstanding = 0;
		vq->n_free = size;
		for (unsigned i = 0; i < size; i++) {
			vq->free_list[i] = (uint16_t)(size - 1 - i);
			vq->busy[i] = false;
		}
		d->vq[q].size = size;
		d->vq[q].desc_gpa = vq->desc;
		d->vq[q].avail_gpa = vq->avail;
		d->vq[q].used_gpa = vq->used;
		d->queue_enabled[q] = true;
	}
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	bool ok = virtio_dev_running(d);
	pthread_mutex_unlock(&d->lock);
	return ok;
}

uint64_t fz_alloc(struct fz_driver *drv, uint64_t len, uint64_t align)
{
	uint64_t at = CV_ALIGN_UP(drv->heap, align);
	if (at > drv->heap_end || len > drv->heap_end - at)
		return 0;
	drv->heap = at + len;
	return at;
}

static void put_desc(uint8_t *p, const struct fz_seg *s, uint16_t flags, uint16_t next)
{
	put_le64(p, s->gpa);
	put_le32(p + 8, s->len);
	put_le16(p + 12, (uint16_t)(flags | (s->write ? VIRTQ_DESC_F_WRITE : 0)));
	put_le16(p + 14, next);
}

bool fz_post(struct fz_driver *drv, unsigned q, const struct fz_seg *s, unsigned n, bool indirect,
	     uint16_t *head)
{
	struct fz_vq *vq = &drv->q[q];
	FZ_CHECK(q < drv->nq && n > 0);
	for (unsigned i = 1; i < n; i++)
		FZ_CHECK(s[i].write || !s[i - 1].write);
	indirect = indirect && drv->indirect && n <= VIRTQ_MAX_SEGS;
	unsigned need = indirect ? 1 : n;
	if (need > vq->n_free)
		return false;
	uint16_t idx[1024];
	if (indirect) {
		uint64_t table = fz_alloc(drv, 16ULL * n, 16);
		if (!table)
			return false;
		uint8_t *t = fz_ptr(drv, table, 16ULL * n);
		for (unsigned i = 0; i < n; i++)
			put_desc(t + 16 * i, &s[i], i + 1 < n ? VIRTQ_DESC_F_NEXT : 0,
				 (uint16_t)(i + 1));
		idx[0] = vq->free_list[--vq->n_free];
		struct fz_seg ind = { table, (uint32_t)(16 * n), false };
		put_desc(fz_ptr(drv, vq->desc + 16ULL * idx[0], 16), &ind, VIRTQ_DESC_F_INDIRECT, 0);
	} else {
		for (unsigned i = 0; i < n; i++)
			idx[i] = vq->free_list[--vq->n_free];
		for (unsigned i = 0; i < n; i++) {
			uint16_t next = i + 1 < n ? idx[i + 1] : 0;
			put_desc(fz_ptr(drv, vq->desc + 16ULL * idx[i], 16), &s[i],
				 i + 1 < n ? VIRTQ_DESC_F_NEXT : 0, next);
			vq->next[idx[i]] = next;
		}
	}
	uint16_t h = idx[0];
	vq->chain_len[h] = (uint16_t)need;
	vq->busy[h] = true;
	vq->outstanding++;
	put_le16(fz_ptr(drv, vq->avail + 4 + 2ULL * (vq->avail_idx % vq->size), 2), h);
	vq->avail_idx++;
	__atomic_store_n((uint16_t *)fz_ptr(drv, vq->avail + 2, 2), htole16(vq->avail_idx),
			 __ATOMIC_RELEASE);
	if (head)
		*head = h;
	return true;
}

void fz_kick(struct fz_driver *drv, unsigned q)
{
	struct virtio_dev *d = drv->dev;
	pthread_mutex_lock(&d->lock);
	if (virtio_dev_running(d) && d->vq[q].started)
		d->ops->queue_notify(d, q);
	pthread_mutex_unlock(&d->lock);
}

bool fz_used(struct fz_driver *drv, unsigned q, uint32_t *id, uint32_t *len)
{
	struct fz_vq *vq = &drv->q[q];
	uint16_t idx = le16toh(__atomic_load_n((uint16_t *)fz_ptr(drv, vq->used + 2, 2),
					       __ATOMIC_ACQUIRE));
	if (idx == vq->used_seen)
		return false;
	/* The device may not return more than was made available. */
	FZ_CHECK((uint16_t)(idx - vq->used_seen) <= vq->outstanding);
	const uint8_t *e = fz_ptr(drv, vq->used + 4 + 8ULL * (vq->used_seen % vq->size), 8);
	*id = get_le32(e);
	*len = get_le32(e + 4);
	vq->used_seen++;
	/* It may only return heads it was given, each once. */
	FZ_CHECK(*id < vq->size && vq->busy[*id]);
	vq->busy[*id] = false;
	vq->outstanding--;
	uint16_t i = (uint16_t)*id;
	for (unsigned k = 0; k < vq->chain_len[*id]; k++) {
		vq->free_list[vq->n_free++] = i;
		i = vq->next[i];
	}
	return true;
}

unsigned fz_outstanding(const struct fz_driver *drv, unsigned q)
{
	return drv->q[q].outstanding;
}

int fz_pump(struct evloop *l, int timeout_ms)
{
	struct epoll_event evs[32];
	int n = epoll_wait(l->epfd, evs, 32, timeout_ms);
	int ran = 0;
	for (int i = 0; i < n; i++) {
		struct evloop_handler *h = evs[i].data.ptr;
		if (!h)
			continue;        /* the loop's own stop eventfd */
		h->fn(h->opaque, evs[i].events);
		ran++;
	}
	return ran;
}

unsigned fz_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	FZ_CHECK(d != NULL);
	unsigned n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}
