/*
 * Split virtqueue implementation (see virtq.h). Memory ordering follows the virtio spec: the
 * avail index is read with acquire semantics before the entries it covers, used entries are
 * written before the used index is released, and a full fence separates publishing the used
 * index from reading the driver's suppression fields.
 */
#include "virtq.h"

#include <string.h>

#include "bytes.h"
#include "util.h"

#define DESC_SIZE 16
#define AVAIL_RING(i) (4 + 2 * (size_t)(i))
#define USED_RING(i) (4 + 8 * (size_t)(i))

static int broken(struct virtq *vq, const char *why)
{
	vq->broken = true;
	vq->error = why;
	return -1;
}

static uint16_t load16_acquire(const uint8_t *p)
{
	uint16_t v = __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
	return le16toh(v);
}

static void store16_release(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, htole16(v), __ATOMIC_RELEASE);
}

int virtq_start(struct virtq *vq, const struct guest_memory *mem)
{
	vq->started = false;
	vq->broken = false;
	vq->error = NULL;
	vq->mem = mem;
	uint32_t n = vq->size;
	if (n == 0 || n > VIRTQ_MAX_SIZE || (n & (n - 1)))
		return broken(vq, "queue size is not a power of two up to 32768");
	if ((vq->desc_gpa & 15) || (vq->avail_gpa & 1) || (vq->used_gpa & 3))
		return broken(vq, "misaligned ring");
	/* The event fields (used_event, avail_event) are included whether negotiated or not. */
	vq->desc = guest_memory_ptr(mem, vq->desc_gpa, (uint64_t)DESC_SIZE * n);
	vq->avail = guest_memory_ptr(mem, vq->avail_gpa, AVAIL_RING(n) + 2);
	vq->used = guest_memory_ptr(mem, vq->used_gpa, USED_RING(n) + 2);
	if (!vq->desc || !vq->avail || !vq->used)
		return broken(vq, "ring outside guest RAM");
	vq->last_avail = 0;
	vq->used_idx = 0;
	vq->signalled_used = 0;
	vq->signalled_valid = false;
	vq->kicks_wanted = true;
	vq->started = true;
	return 0;
}

void virtq_stop(struct virtq *vq)
{
	vq->started = false;
	vq->desc = vq->avail = vq->used = NULL;
}

struct raw_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static struct raw_desc read_desc(const uint8_t *table, uint32_t i)
{
	const uint8_t *p = table + (size_t)i * DESC_SIZE;
	struct raw_desc d = {
		.addr = get_le64(p), .len = get_le32(p + 8), .flags = get_le16(p + 12),
		.next = get_le16(p + 14),
	};
	return d;
}

/*
 * Live migration copies guest RAM while the guest runs and resends what changed, taking the
 * changes from KVM's dirty log. That log only sees writes made by vCPUs; what the device
 * side writes into guest RAM from the VMM (the used ring, and the buffers of the chains it
 * returns: disk reads, received packets, vsock data, entropy) must be reported separately, or
 * the destination would keep a stale copy of a page the guest then reads. These two helpers
 * do that (a no-op unless a migration is tracking, see guest_memory_mark_dirty).
 */
static void used_ring_dirty(const struct virtq *vq)
{
	guest_memory_mark_dirty(vq->mem, vq->used, USED_RING(vq->size) + 2);
}

static void elem_dirty(const struct virtq *vq, const struct virtq_elem *elem)
{
	/* Every writable segment, written or not: the device may have written less than it said. */
	for (unsigned i = elem->n_out; i < elem->n_out + elem->n_in && i < VIRTQ_MAX_SEGS; i++)
		guest_memory_mark_dirty(vq->mem, elem->iov[i].iov_base, elem->iov[i].iov_len);
}

int virtq_pop(struct virtq *vq, struct virtq_elem *elem)
{
	if (!vq->started || vq->broken)
		return vq->broken ? -1 : 0;
	if (vq->event_idx && vq->kicks_wanted) {
		/*
		 * With event index the driver kicks only when it passes avail_event: keep it at the
		 * entry we wait for, and publish it before looking, so an entry the driver adds
		 * concurrently is either seen below or produces a kick.
		 */
		store16_release(vq->used + USED_RING(vq->size), vq->last_avail);
		used_ring_dirty(vq);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	}
	uint16_t avail_idx = load16_acquire(vq->avail + 2);
	uint16_t pending = (uint16_t)(avail_idx - vq->last_avail);
	if (pending == 0)
		return 0;
	if (pending > vq->size)
		return broken(vq, "avail index ran more than a queue ahead");
	uint16_t head = get_le16(vq->avail + AVAIL_RING(vq->last_avail % vq->size));
	if (head >= vq->size)
		return broken(vq, "avail ring names a descriptor beyond the queue");

	elem->head = head;
	elem->n_out = elem->n_in = 0;
	elem->out_len = elem->in_len = 0;
	const uint8_t *table = vq->desc;
	uint32_t table_size = vq->size;
	uint32_t i = head;
	/* A chain visits each descriptor of its table at most once: more means a loop. */
	uint32_t budget = table_size;
	bool in_indirect = false;
	for (;;) {
		if (budget-- == 0)
			return broken(vq, "descriptor chain loops");
		struct raw_desc d = read_desc(table, i);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect)
				return broken(vq, "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC");
			if (in_indirect)
				return broken(vq, "indirect table inside an indirect table");
			if (d.flags & VIRTQ_DESC_F_NEXT)
				return broken(vq, "indirect descriptor with NEXT");
			if (d.len == 0 || d.len % DESC_SIZE || d.len / DESC_SIZE > VIRTQ_MAX_SEGS)
				return broken(vq, "bad indirect table length");
			const uint8_t *t = guest_memory_ptr(vq->mem, d.addr, d.len);
			if (!t)
				return broken(vq, "indirect table outside guest RAM");
			table = t;
			table_size = d.len / DESC_SIZE;
			budget = table_size;
			in_indirect = true;
			i = 0;
			continue;
		}
		bool writable = d.flags & VIRTQ_DESC_F_WRITE;
		if (!writable && elem->n_in)
			return broken(vq, "device-readable descriptor after a writable one");
		if (d.len) {
			if (elem->n_out + elem->n_in == VIRTQ_MAX_SEGS)
				return broken(vq, "chain has too many segments");
			void *p = guest_memory_ptr(vq->mem, d.addr, d.len);
			if (!p)
				return broken(vq, "buffer outside guest RAM");
			struct iovec *v = &elem->iov[elem->n_out + elem->n_in];
			v->iov_base = p;
			v->iov_len = d.len;
			if (writable) {
				elem->n_in++;
				elem->in_len += d.len;
			} else {
				elem->n_out++;
				elem->out_len += d.len;
			}
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= table_size)
			return broken(vq, "descriptor chain leaves its table");
		i = d.next;
	}
	vq->last_avail++;
	return 1;
}

void virtq_unpop(struct virtq *vq)
{
	vq->last_avail--;
}

/*
 * Dirty page tracking (memory.h): the used ring and the first `written` bytes of the chain's
 * device-writable part are VMM writes KVM's dirty log never sees. Devices write a chain's data
 * before pushing it, so marking here covers them; a no-op when tracking is off.
 */
void virtq_push(struct virtq *vq, const struct virtq_elem *elem, uint32_t written)
{
	if (!vq->started)
		return;
	if (written > elem->in_len)
		written = (uint32_t)elem->in_len;
	uint8_t *e = vq->used + USED_RING(vq->used_idx % vq->size);
	put_le32(e, elem->head);
	put_le32(e + 4, written);
	vq->used_idx++;
	store16_release(vq->used + 2, vq->used_idx);
	/* After the writes: the data, then the ring entry that hands it over. */
	elem_dirty(vq, elem);
	used_ring_dirty(vq);
}

bool virtq_should_notify(struct virtq *vq)
{
	if (!vq->started)
		return false;
	/* The used index must be visible before we read what the driver asked for. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx)
		return !(load16_acquire(vq->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	uint16_t old = vq->signalled_used, now = vq->used_idx;
	bool valid = vq->signalled_valid;
	vq->signalled_used = now;
	vq->signalled_valid = true;
	if (!valid)
		return true;
	uint16_t event = load16_acquire(vq->avail + AVAIL_RING(vq->size));
	/* Interrupt if used_event lies in (old, now]: vring_need_event() in the spec. */
	return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
}

bool virtq_set_notification(struct virtq *vq, bool enable)
{
	if (!vq->started)
		return true;
	vq->kicks_wanted = enable;
	if (vq->event_idx) {
		if (enable)
			store16_release(vq->used + USED_RING(vq->size), vq->last_avail);
	} else {
		store16_release(vq->used, enable ? 0 : VIRTQ_USED_F_NO_NOTIFY);
	}
	used_ring_dirty(vq);
	if (!enable)
		return false;
	/* Publish our request before looking for buffers the driver added meanwhile. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return load16_acquire(vq->avail + 2) == vq->last_avail;
}

size_t iov_to_buf(const struct iovec *iov, unsigned n, size_t offset, void *buf, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		if (offset >= iov[i].iov_len) {
			offset -= iov[i].iov_len;
			continue;
		}
		size_t chunk = iov[i].iov_len - offset;
		if (chunk > len - done)
			chunk = len - done;
		memcpy((uint8_t *)buf + done, (uint8_t *)iov[i].iov_base + offset, chunk);
		done += chunk;
		offset = 0;
	}
	return done;
}

size_t iov_from_buf(const struct iovec *iov, unsigned n, size_t offset, const void *buf,
		    size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		if (offset >= iov[i].iov_len) {
			offset -= iov[i].iov_len;
			continue;
		}
		size_t chunk = iov[i].iov_len - offset;
		if (chunk > len - done)
			chunk = len - done;
		memcpy((uint8_t *)iov[i].iov_base + offset, (const uint8_t *)buf + done, chunk);
		done += chunk;
		offset = 0;
	}
	return done;
}
