/*
 * libFuzzer target for the split virtqueue core (src/vmm/virtio/virtq.c). Each input is a guest
 * memory image plus queue parameters (see virtq_input.h); the target starts the queue, pops until
 * the ring is empty or the queue breaks, pushes every chain back, moves avail->idx a few times and
 * repeats. Everything the core does is compared with a small reference written from the virtio
 * spec in this file (loop detection by visited marks rather than a budget, 128-bit range checks
 * rather than guest_memory_ptr), and these invariants abort on violation:
 *   - virtq_start and virtq_pop accept exactly what the reference accepts;
 *   - every segment lies inside one RAM region and is non-empty, n_out + n_in <= VIRTQ_MAX_SEGS,
 *     out_len / in_len are the sums of the segment lengths, segments equal the reference's;
 *   - a broken queue stays broken and says why; unpop + pop yields the same chain;
 *   - push writes (head, min(written, in_len)) and the used index; virtq_should_notify and
 *     virtq_set_notification agree with the spec's rules.
 * Guest RAM sits between PROT_NONE guard pages, so a read past either end crashes, and ASan/UBSan
 * watch the core's own arithmetic. A pop that does not return is caught by libFuzzer's timeout.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bytes.h"
#include "memory.h"
#include "virtio/virtq.h"
#include "virtq_input.h"

#define PAGE 4096ULL

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(int line, const char *what)
{
	fprintf(stderr, "fuzz_virtq.c:%d: invariant broken: %s\n", line, what);
	abort();
}

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)

/* What the reference expects from one virtq_pop. */
struct ref {
	int result;                  /* 1, 0 or -1 */
	uint16_t head;
	unsigned n_out, n_in;
	uint64_t out_len, in_len;
	struct iovec iov[VIRTQ_MAX_SEGS];
};

/*
 * One guest RAM for the whole run (mapping and zeroing 3 GiB per input would dominate); each input
 * zeroes exactly what it dirtied. libFuzzer calls the target from a single thread.
 */
static struct fuzz_state {
	struct guest_memory mem;
	struct virtq vq;
	struct virtq_elem elem, again;
	struct ref ref;
	uint32_t gen;                            /* visit stamp of the current reference walk */
	uint32_t seen[VIRTQ_MAX_SIZE];
	uint32_t seen_indirect[VIRTQ_MAX_SEGS];
	bool trace;                              /* VQF_TRACE=1: one line per input, for triage */
} *S;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	S = calloc(1, sizeof(*S));
	struct cv_error err = { 0 };
	if (!S || guest_memory_init(&S->mem, VQF_RAM_SIZE, &err) < 0) {
		fprintf(stderr, "fuzz_virtq: guest memory: %s\n", err.msg);
		exit(1);
	}
	/* Move RAM between two inaccessible pages so that overruns fault instead of passing. */
	uint64_t size = S->mem.size;
	uint8_t *res = mmap(NULL, size + 2 * PAGE, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(res != MAP_FAILED);
	uint8_t *moved = mremap(S->mem.host, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, res + PAGE);
	CHECK(moved == res + PAGE);
	for (unsigned i = 0; i < S->mem.n_regions; i++)
		S->mem.regions[i].host = moved + (S->mem.regions[i].host - S->mem.host);
	S->mem.host = moved;
	S->trace = getenv("VQF_TRACE") != NULL;
	return 0;
}

/* Reference range check: [gpa, gpa+len) inside one region, computed without overflow. */
static uint8_t *ram(uint64_t gpa, uint64_t len)
{
	unsigned __int128 end = (unsigned __int128)gpa + len;
	for (unsigned i = 0; i < S->mem.n_regions; i++) {
		const struct guest_region *r = &S->mem.regions[i];
		if (gpa >= r->gpa && end <= (unsigned __int128)r->gpa + r->size)
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

static bool iov_in_ram(const struct iovec *v)
{
	const uint8_t *b = v->iov_base;
	for (unsigned i = 0; i < S->mem.n_regions; i++) {
		const struct guest_region *r = &S->mem.regions[i];
		if (b >= r->host && b <= r->host + r->size && v->iov_len <= (size_t)(r->host + r->size - b))
			return true;
	}
	return false;
}

static bool ref_start(const struct virtq *vq)
{
	uint64_t n = vq->size;
	if (n == 0 || n > VIRTQ_MAX_SIZE || (n & (n - 1)))
		return false;
	if (vq->desc_gpa % 16 || vq->avail_gpa % 2 || vq->used_gpa % 4)
		return false;
	return ram(vq->desc_gpa, 16 * n) && ram(vq->avail_gpa, 6 + 2 * n) &&
	       ram(vq->used_gpa, 6 + 8 * n);
}

/* The spec's rules for taking one chain, as plainly as possible. */
static void ref_pop(struct ref *r)
{
	const struct virtq *vq = &S->vq;
	uint32_t size = vq->size;
	uint8_t *avail = ram(vq->avail_gpa, 6 + 2ULL * size);
	uint8_t *used = ram(vq->used_gpa, 6 + 8ULL * size);
	/* The core publishes avail_event first when it wants kicks; do the same store so that both
	 * see identical memory even when the rings overlap. */
	if (vq->event_idx && vq->kicks_wanted)
		put_le16(used + 4 + 8 * size, vq->last_avail);
	r->result = -1;
	r->n_out = r->n_in = 0;
	r->out_len = r->in_len = 0;
	uint16_t pending = (uint16_t)(get_le16(avail + 2) - vq->last_avail);
	if (pending == 0) {
		r->result = 0;
		return;
	}
	if (pending > size)
		return;
	uint16_t head = get_le16(avail + 4 + 2 * (vq->last_avail & (size - 1)));
	if (head >= size)
		return;
	r->head = head;
	S->gen++;
	uint64_t table = vq->desc_gpa;
	uint32_t table_len = size, i = head;
	uint32_t *seen = S->seen;
	bool indirect = false;
	for (;;) {
		if (seen[i] == S->gen)
			return;                      /* visited twice: the chain loops */
		seen[i] = S->gen;
		const uint8_t *d = ram(table + 16ULL * i, 16);
		CHECK(d);                            /* tables were range-checked as a whole */
		uint64_t addr = get_le64(d);
		uint32_t len = get_le32(d + 8);
		uint16_t flags = get_le16(d + 12), next = get_le16(d + 14);
		if (flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect || indirect || (flags & VIRTQ_DESC_F_NEXT))
				return;
			if (len == 0 || len % 16 || len / 16 > VIRTQ_MAX_SEGS || !ram(addr, len))
				return;
			table = addr;
			table_len = len / 16;
			seen = S->seen_indirect;
			indirect = true;
			i = 0;
			continue;
		}
		bool writable = flags & VIRTQ_DESC_F_WRITE;
		if (!writable && r->n_in)
			return;
		if (len) {
			uint8_t *p = ram(addr, len);
			if (!p || r->n_out + r->n_in == VIRTQ_MAX_SEGS)
				return;
			r->iov[r->n_out + r->n_in] = (struct iovec){ p, len };
			if (writable) {
				r->n_in++;
				r->in_len += len;
			} else {
				r->n_out++;
				r->out_len += len;
			}
		}
		if (!(flags & VIRTQ_DESC_F_NEXT))
			break;
		if (next >= table_len)
			return;
		i = next;
	}
	r->result = 1;
}

static void check_elem(const struct virtq_elem *e, const struct ref *r, uint16_t salt)
{
	CHECK(e->head < S->vq.size);
	CHECK(e->n_out + e->n_in <= VIRTQ_MAX_SEGS);
	uint64_t out = 0, in = 0;
	for (unsigned i = 0; i < e->n_out + e->n_in; i++) {
		CHECK(e->iov[i].iov_len > 0);
		CHECK(iov_in_ram(&e->iov[i]));
		if (i < e->n_out)
			out += e->iov[i].iov_len;
		else
			in += e->iov[i].iov_len;
	}
	CHECK(out == e->out_len);
	CHECK(in == e->in_len);
	CHECK(e->head == r->head);
	CHECK(e->n_out == r->n_out && e->n_in == r->n_in);
	CHECK(e->out_len == r->out_len && e->in_len == r->in_len);
	for (unsigned i = 0; i < e->n_out + e->n_in; i++)
		CHECK(e->iov[i].iov_base == r->iov[i].iov_base && e->iov[i].iov_len == r->iov[i].iov_len);

	/* Gather 64 bytes from somewhere in the readable part (reads only: untouched RAM stays the
	 * shared zero page) and compare with a byte-by-byte walk of the reference segments. */
	if (e->out_len) {
		uint64_t off = salt % (e->out_len + 1);
		uint8_t got[64], want[64];
		size_t n = iov_to_buf(e->iov, e->n_out, off, got, sizeof(got));
		uint64_t left = e->out_len - off;
		CHECK(n == (left < sizeof(got) ? left : sizeof(got)));
		size_t k = 0;
		uint64_t skip = off;
		for (unsigned i = 0; i < r->n_out && k < n; i++) {
			const uint8_t *b = r->iov[i].iov_base;
			uint64_t len = r->iov[i].iov_len;
			if (skip >= len) {
				skip -= len;
				continue;
			}
			for (uint64_t j = skip; j < len && k < n; j++)
				want[k++] = b[j];
			skip = 0;
		}
		CHECK(k == n && memcmp(got, want, n) == 0);
	}
	/* Scatter into the writable part's shape, but in scratch memory: writing guest RAM would
	 * dirty pages all over the 3 GiB the run keeps mapped. */
	if (e->n_in) {
		static uint8_t scratch[4096];
		static struct iovec shape[VIRTQ_MAX_SEGS];
		size_t at = 0;
		unsigned k = 0;
		for (unsigned i = e->n_out; i < e->n_out + e->n_in && at < sizeof(scratch); i++) {
			size_t l = e->iov[i].iov_len;
			if (l > sizeof(scratch) - at)
				l = sizeof(scratch) - at;
			shape[k++] = (struct iovec){ scratch + at, l };
			at += l;
		}
		uint8_t src[64];
		for (unsigned i = 0; i < sizeof(src); i++)
			src[i] = (uint8_t)(salt + i * 13);
		size_t off = salt % (at + 1);
		memset(scratch, 0, at);
		size_t n = iov_from_buf(shape, k, off, src, sizeof(src));
		CHECK(n == (at - off < sizeof(src) ? at - off : sizeof(src)));
		CHECK(memcmp(scratch + off, src, n) == 0);
		CHECK(off == 0 || scratch[off - 1] == 0);
		CHECK(off + n == at || scratch[off + n] == 0);
	}
}

static bool same_elem(const struct virtq_elem *a, const struct virtq_elem *b)
{
	if (a->head != b->head || a->n_out != b->n_out || a->n_in != b->n_in ||
	    a->out_len != b->out_len || a->in_len != b->in_len)
		return false;
	for (unsigned i = 0; i < a->n_out + a->n_in; i++)
		if (a->iov[i].iov_base != b->iov[i].iov_base || a->iov[i].iov_len != b->iov[i].iov_len)
			return false;
	return true;
}

struct notify_state {
	bool signalled;
	uint16_t last;
};

static void check_notify(struct notify_state *ns)
{
	struct virtq *vq = &S->vq;
	bool got = virtq_should_notify(vq);
	bool want;
	if (!vq->event_idx) {
		want = !(get_le16(vq->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	} else {
		/* Due if the entry named by used_event is among those written since the last time. */
		uint16_t event = get_le16(vq->avail + 4 + 2 * vq->size), now = vq->used_idx;
		want = !ns->signalled || (uint16_t)(event - ns->last) < (uint16_t)(now - ns->last);
		ns->signalled = true;
		ns->last = now;
	}
	CHECK(got == want);
}

/* Expands the header's descriptor template into the image; returns the new dirty length. */
static size_t fill(uint8_t *image, const uint8_t *data, size_t dirty)
{
	size_t at = get_le16(data + VQF_OFF_FILL_AT);
	size_t count = get_le16(data + VQF_OFF_FILL_COUNT);
	if (count > (VQF_WINDOW - at) / 16)
		count = (VQF_WINDOW - at) / 16;
	const uint8_t *t = data + VQF_OFF_FILL_DESC;
	uint64_t addr = get_le64(t);
	uint32_t len = get_le32(t + 8);
	uint16_t flags = get_le16(t + 12), next = get_le16(t + 14);
	for (size_t k = 0; k < count; k++) {
		uint8_t *d = image + at + 16 * k;
		put_le64(d, addr + k * len);
		put_le32(d + 8, len);
		bool last = k + 1 == count && (data[VQF_OFF_FILL] & VQF_FILL_LAST_ENDS);
		put_le16(d + 12, last ? (uint16_t)(flags & ~VIRTQ_DESC_F_NEXT) : flags);
		put_le16(d + 14, (uint16_t)(next + k));
	}
	size_t end = at + 16 * count;
	return end > dirty ? end : dirty;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < VQF_HEADER)
		return 0;
	size_t n = size < VQF_WINDOW ? size : VQF_WINDOW;
	uint64_t base = (data[0] & VQF_FAR) ? VQF_FAR_BASE : 0;
	uint8_t *image = ram(base, VQF_WINDOW);
	memcpy(image, data, n);
	size_t dirty = n;                        /* image bytes to zero afterwards */
	if (data[VQF_OFF_FILL] & VQF_FILL_ON)
		dirty = fill(image, data, dirty);

	struct virtq *vq = &S->vq;
	memset(vq, 0, sizeof(*vq));
	vq->size = (uint16_t)(1u << (data[0] & VQF_SIZE_LOG_MASK));
	if (data[1] & VQF_RAW_SIZE)
		vq->size = get_le16(data + VQF_OFF_RAW_SIZE);
	vq->indirect = data[0] & VQF_INDIRECT;
	vq->event_idx = data[0] & VQF_EVENT_IDX;
	vq->desc_gpa = base + get_le16(data + VQF_OFF_DESC);
	vq->avail_gpa = base + get_le16(data + VQF_OFF_AVAIL);
	vq->used_gpa = base + get_le16(data + VQF_OFF_USED);
	bool toggle = data[0] & VQF_TOGGLE, unpop = data[1] & VQF_UNPOP;
	bool notify_each = data[1] & VQF_NOTIFY_EACH;
	unsigned rounds = 1 + ((data[1] >> VQF_BUMPS_SHIFT) & VQF_BUMPS_MASK);
	uint16_t wmul = get_le16(data + VQF_OFF_WRITTEN);

	int started = virtq_start(vq, &S->mem);
	CHECK((started == 0) == ref_start(vq));
	uint32_t pushes = 0, pops = 0;
	if (started < 0) {
		CHECK(vq->broken && vq->error && !vq->started);
		CHECK(virtq_pop(vq, &S->elem) == -1);
		/* A queue that did not start ignores everything else and writes nothing. */
		S->elem.in_len = 0;
		virtq_push(vq, &S->elem, 0);
		CHECK(!virtq_should_notify(vq));
		CHECK(virtq_set_notification(vq, true));
		goto out;
	}

	struct notify_state ns = { false, 0 };
	for (unsigned round = 0; round < rounds; round++) {
		if (round) {
			uint16_t idx = get_le16(vq->avail + 2);
			put_le16(vq->avail + 2, (uint16_t)(idx + data[VQF_OFF_BUMPS + round - 1]));
		}
		/* Bounded by the harness, not the core: pushes into a used ring that overlaps the
		 * avail ring can keep "adding" entries, just as a driver may keep a device busy. */
		for (unsigned step = 0; step <= VIRTQ_MAX_SIZE + 1; step++) {
			if (toggle) {
				bool enable = !(step & 1);
				bool empty = virtq_set_notification(vq, enable);
				if (enable)
					CHECK(empty == (get_le16(vq->avail + 2) == vq->last_avail));
				else
					CHECK(!empty);
				if (!vq->event_idx)
					CHECK(get_le16(vq->used) == (enable ? 0 : VIRTQ_USED_F_NO_NOTIFY));
				else if (enable)
					CHECK(get_le16(vq->used + 4 + 8 * vq->size) == vq->last_avail);
			}
			uint16_t before = vq->last_avail;
			ref_pop(&S->ref);
			int r = virtq_pop(vq, &S->elem);
			CHECK(r == S->ref.result);
			if (r == 0) {
				CHECK(vq->last_avail == before && !vq->broken);
				break;
			}
			if (r < 0) {
				CHECK(vq->broken && vq->error);
				CHECK(virtq_pop(vq, &S->elem) == -1);
				goto out;
			}
			CHECK(vq->last_avail == (uint16_t)(before + 1));
			pops++;
			check_elem(&S->elem, &S->ref, (uint16_t)(wmul + pops));
			if (unpop) {
				virtq_unpop(vq);
				CHECK(vq->last_avail == before);
				CHECK(virtq_pop(vq, &S->again) == 1);
				CHECK(same_elem(&S->elem, &S->again));
			}
			uint32_t written = (uint32_t)wmul * pops;
			virtq_push(vq, &S->elem, written);
			pushes++;
			const uint8_t *u = vq->used + 4 + 8 * ((uint16_t)(vq->used_idx - 1) & (vq->size - 1));
			CHECK(get_le32(u) == S->elem.head);
			CHECK(get_le32(u + 4) == (written < S->elem.in_len ? written : S->elem.in_len));
			CHECK(get_le16(vq->used + 2) == vq->used_idx);
			CHECK(vq->used_idx == (uint16_t)pushes);
			if (notify_each)
				check_notify(&ns);
		}
		if (!notify_each)
			check_notify(&ns);
	}
out:
	if (S->trace)
		fprintf(stderr, "vqf: size %u start %d pops %u pushes %u broken %s\n", vq->size,
			started, pops, pushes, vq->broken ? vq->error : "no");
	/* Zero what this input dirtied: the image, the used ring as far as written, avail_event. */
	memset(image, 0, dirty);
	if (vq->started) {
		uint32_t entries = pushes < vq->size ? pushes : vq->size;
		memset(vq->used, 0, 4 + 8 * (size_t)entries);
		memset(vq->used + 4 + 8 * (size_t)vq->size, 0, 2);
		memset(vq->avail + 2, 0, 2);
	}
	virtq_stop(vq);
	return 0;
}
