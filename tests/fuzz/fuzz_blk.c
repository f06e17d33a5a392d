/*
 * libFuzzer target for virtio-blk request handling (src/vmm/virtio/blk.c with block/image.c and
 * block/aio.c). The fuzzer's bytes are a driver's requests (blk_input.h): any header, any split
 * of header, data and status over up to 80 segments (hundreds of MiB through aliased buffers),
 * discard/write-zeroes segment lists, batches kicked together, resets with I/O in flight, on a
 * read-write or a read-only disk, with features and host fallocate support chosen per input.
 * The device runs for real: its io_uring does the I/O on memfd-backed images and its completion
 * handler runs from fz_pump, as on the I/O thread.
 *
 * Every request is predicted by a reference written from the virtio spec and blk.h's documented
 * limits, and these invariants abort on violation:
 *   - the status byte and used length are the predicted ones; a chain without writable bytes
 *     comes back untouched with length 0; every posted chain comes back, each head once;
 *   - the disk afterwards holds exactly the predicted bytes: accepted writes and zeroings, and
 *     nothing else (rejected requests, the read-only disk, the partial tail sector and the file
 *     size never change); reads return the disk's bytes, GET_ID the serial;
 *   - error counters move as predicted, no request slot or io_uring operation leaks, the device
 *     never enters NEEDS_RESET for well-formed chains, and a reset waits for all I/O;
 *   - when the image is truncated under the device, every request still completes, those that
 *     reach past the new end with OK or IOERR, the others as predicted;
 *   - the configuration space reads as virtio-blk's layout with blk.h's limits, zeros beyond.
 * Writes of one batch that overlap on the disk complete in no defined order: those sectors are
 * taken from the file instead of predicted, and reads of sectors the batch writes are not checked.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blk_input.h"
#include "bytes.h"
#include "fuzz_driver.h"
#include "util.h"
#include "virtio/blk.h"

#define IMG_BYTES ((uint64_t)BLKF_SECTORS * 512 + BLKF_TAIL)
#define RAM_SIZE (64ULL << 20)
#define HEAP_END (32ULL << 20)
#define ALIAS_R (32ULL << 20)        /* readable segments too long for fresh buffers */
#define ALIAS_W (48ULL << 20)        /* writable ones */
#define MAX_REQS VIRTIO_BLK_QUEUE_SIZE
#define STATUS_POISON 0xee
#define PATTERN_MAX 4096             /* readable bytes we write per fresh segment */
#define WAIT_NS (5ULL * 1000000000)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What one posted request must do. */
struct expect {
	bool posted, done;
	bool returned;               /* no writable byte: handed back untouched */
	uint8_t status;
	uint64_t status_gpa;
	uint64_t in_len;
	uint32_t type;
	uint64_t sector, bytes;      /* IN/OUT: the transfer */
	unsigned n_out, n_in;
	struct fz_seg segs[2 * BLKF_MAX_SEGS];
	bool in_alias;               /* reads into the shared area: contents not checkable */
	unsigned n_zero;             /* ranges that end up zeroed */
	struct { uint64_t sector, count; } zero[VIRTIO_BLK_MAX_RANGES];
};

struct disk {
	struct virtio_blk *b;
	int fd;                      /* our own descriptor of the memfd, for checks and restores */
	char path[64];
	bool ro;
	char serial[BLK_ID_BYTES];
};

static struct state {
	struct guest_memory mem;
	struct evloop loop;
	struct disk disks[2];
	struct disk *cur;
	struct fz_driver drv;
	uint8_t image[IMG_BYTES];    /* the initial contents of every input */
	uint8_t shadow[IMG_BYTES];   /* what the disk holds before the current batch */
	uint8_t file[IMG_BYTES + 1];
	uint8_t want[IMG_BYTES];     /* what it must hold after the batch */
	uint8_t writers[BLKF_SECTORS];
	uint8_t readers[BLKF_SECTORS];
	struct expect reqs[MAX_REQS];   /* by head */
	unsigned batch;              /* requests posted since the last kick-and-wait */
	uint64_t truncated;          /* file size during this batch; IMG_BYTES when untouched */
	uint64_t serial_no;          /* pattern seed of the next request */
	bool trace;
} *S;

/* ---- setup ---- */

static void make_disk(struct disk *k, unsigned index, bool ro, const char *serial)
{
	k->fd = memfd_create(ro ? "fuzz-blk-ro" : "fuzz-blk-rw", MFD_CLOEXEC);
	FZ_CHECK(k->fd >= 0);
	FZ_CHECK(pwrite(k->fd, S->image, IMG_BYTES, 0) == (ssize_t)IMG_BYTES);
	snprintf(k->path, sizeof(k->path), "/proc/self/fd/%d", k->fd);
	k->ro = ro;
	struct disk_config cfg = { .path = k->path, .read_only = ro, .serial = serial };
	struct cv_error err = { 0 };
	if (virtio_blk_create(&cfg, index, &S->mem, &S->loop, &k->b, &err) < 0) {
		fprintf(stderr, "fuzz_blk: %s\n", err.msg);
		exit(1);
	}
	memcpy(k->serial, k->b->img.serial, BLK_ID_BYTES);
	FZ_CHECK(k->b->img.sectors == BLKF_SECTORS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	S = calloc(1, sizeof(*S));
	FZ_CHECK(S != NULL);
	S->trace = getenv("BLKF_TRACE") != NULL;
	fz_guest_memory(&S->mem, RAM_SIZE);
	struct cv_error err = { 0 };
	FZ_CHECK(evloop_init(&S->loop, &err) == 0);
	for (uint64_t i = 0; i < IMG_BYTES; i++)
		S->image[i] = (uint8_t)((i * 7 + (i >> 9) * 13) ^ 0x5a);
	/* The shared readable area holds a pattern too, so data from it is recognisable. */
	uint8_t *r = guest_memory_ptr(&S->mem, ALIAS_R, BLKF_SEG_CAP);
	for (uint64_t i = 0; i < BLKF_SEG_CAP; i++)
		r[i] = (uint8_t)(i * 31 + (i >> 12));
	/* The partial tail sector provokes a warning at open; it is expected. */
	make_disk(&S->disks[0], 0, false, BLKF_SERIAL);
	make_disk(&S->disks[1], 1, true, NULL);
	return 0;
}

/* ---- the reference ---- */

/* Copies bytes [off, off+len) of the chain's readable (or writable) part out of guest RAM. */
static void gather(const struct expect *x, bool writable, uint64_t off, uint8_t *dst, uint64_t len)
{
	unsigned first = writable ? x->n_out : 0, end = writable ? x->n_out + x->n_in : x->n_out;
	for (unsigned i = first; i < end && len; i++) {
		const struct fz_seg *s = &x->segs[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		uint64_t n = CV_MIN(s->len - off, len);
		memcpy(dst, fz_ptr(&S->drv, s->gpa + off, n), n);
		dst += n;
		len -= n;
		off = 0;
	}
	memset(dst, 0, len);
}

static bool sectors_ok(uint64_t sector, uint64_t count)
{
	return sector <= BLKF_SECTORS && count <= BLKF_SECTORS - sector;
}

/* The spec's rules (5.2.6) with the limits blk.h announces, for one chain. */
static void predict(struct expect *x, const struct virtio_blk *b, uint64_t out_len)
{
	const struct virtio_dev *d = &b->dev;
	x->returned = x->in_len == 0;
	x->status = VIRTIO_BLK_S_OK;
	x->bytes = 0;
	x->n_zero = 0;
	x->type = UINT32_MAX;
	if (x->returned)
		return;
	if (out_len < 16) {
		x->status = VIRTIO_BLK_S_IOERR;
		return;
	}
	uint8_t hdr[16];
	gather(x, false, 0, hdr, 16);
	x->type = get_le32(hdr);
	x->sector = get_le64(hdr + 8);
	uint64_t out_data = out_len - 16, in_data = x->in_len - 1;
	switch (x->type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT: {
		bool in = x->type == VIRTIO_BLK_T_IN;
		uint64_t len = in ? in_data : out_data;
		if ((!in && b->img.read_only) || (in ? out_data : in_data) != 0 || len % 512 ||
		    len > (uint64_t)VIRTIO_BLK_SEG_MAX * VIRTIO_BLK_SIZE_MAX ||
		    !sectors_ok(x->sector, len / 512))
			x->status = VIRTIO_BLK_S_IOERR;
		else
			x->bytes = len;
		return;
	}
	case VIRTIO_BLK_T_FLUSH:
		if (out_data || in_data)
			x->status = VIRTIO_BLK_S_IOERR;
		return;
	case VIRTIO_BLK_T_GET_ID:
		if (out_data || in_data < BLK_ID_BYTES)
			x->status = VIRTIO_BLK_S_IOERR;
		return;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		bool discard = x->type == VIRTIO_BLK_T_DISCARD;
		unsigned feature = discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES;
		if (b->img.read_only) {
			x->status = VIRTIO_BLK_S_IOERR;
			return;
		}
		if (!(d->guest_features & (1ULL << feature))) {
			x->status = VIRTIO_BLK_S_UNSUPP;
			return;
		}
		if (x->in_len != 1 || out_data == 0 || out_data % 16 ||
		    out_data / 16 > VIRTIO_BLK_MAX_RANGES) {
			x->status = VIRTIO_BLK_S_IOERR;
			return;
		}
		for (unsigned i = 0; i < out_data / 16; i++) {
			uint8_t r[16];
			gather(x, false, 16 + 16ULL * i, r, 16);
			uint64_t sector = get_le64(r);
			uint32_t count = get_le32(r + 8), flags = get_le32(r + 12);
			if ((flags & ~VIRTIO_BLK_WZ_UNMAP) || (discard && flags)) {
				x->status = VIRTIO_BLK_S_UNSUPP;
				return;
			}
			if (count > VIRTIO_BLK_MAX_RANGE_SECTORS || !sectors_ok(sector, count)) {
				x->status = VIRTIO_BLK_S_IOERR;
				return;
			}
			/* A discard is a hint: without hole punching the device may ignore it. */
			if (count && !(discard && b->no_punch_hole)) {
				x->zero[x->n_zero].sector = sector;
				x->zero[x->n_zero].count = count;
				x->n_zero++;
			}
		}
		return;
	}
	default:
		x->status = VIRTIO_BLK_S_UNSUPP;
		return;
	}
}

/* ---- building requests ---- */

static uint32_t seg_len(struct fz_in *in)
{
	uint8_t c = fz_u8(in);
	uint32_t len;
	if (c < 0x80)
		len = BLKF_LENGTHS[c % CV_ARRAY_SIZE(BLKF_LENGTHS)];
	else if (c < 0xc0)
		len = fz_u16(in);
	else
		len = fz_u32(in);
	return len;
}

/* Writes bytes into the readable part at `off` (as far as it reaches). */
static void scatter_out(struct expect *x, uint64_t off, const uint8_t *src, uint64_t len)
{
	for (unsigned i = 0; i < x->n_out && len; i++) {
		struct fz_seg *s = &x->segs[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		uint64_t n = CV_MIN(s->len - off, len);
		memcpy(fz_ptr(&S->drv, s->gpa + off, n), src, n);
		src += n;
		len -= n;
		off = 0;
	}
}

/*
 * Lays out and posts one chain: segments of the given lengths, header and body bytes at the
 * start of the readable part, a pattern after them, the status byte poisoned.
 */
static void post(const uint32_t *want, unsigned n_out, unsigned n_in, const uint8_t *head,
		 size_t head_len, bool indirect)
{
	struct fz_driver *drv = &S->drv;
	unsigned n = n_out + n_in;
	if (n == 0)
		return;
	uint32_t lens[2 * BLKF_MAX_SEGS];
	for (unsigned i = 0; i < n; i++)
		lens[i] = CV_MIN(want[i], BLKF_SEG_CAP);
	/* The status byte lives in the last non-empty writable segment; it must be our own. */
	int status_seg = -1;
	for (unsigned i = n_out; i < n; i++)
		if (lens[i])
			status_seg = (int)i;
	static struct expect tmp;
	struct expect *x = &tmp;
	memset(x, 0, sizeof(*x));
	x->n_out = n_out;
	x->n_in = n_in;
	uint64_t out_len = 0;
	uint64_t mark = drv->heap;
	for (unsigned i = 0; i < n; i++) {
		bool write = i >= n_out;
		/* Header and body bytes differ per request: they never go to the shared area. */
		bool own = (!write && out_len < head_len) || (int)i == status_seg ||
			   lens[i] <= BLKF_FRESH_MAX;
		uint64_t gpa = own ? fz_alloc(drv, lens[i], 8) : 0;
		if (own && !gpa && lens[i]) {
			drv->heap = mark;
			return;          /* heap full: this request is not made */
		}
		if (!own)
			gpa = write ? ALIAS_W : ALIAS_R;
		if (!own && write)
			x->in_alias = true;
		if (!gpa)
			gpa = drv->heap;     /* an empty segment: any address in RAM */
		x->segs[i] = (struct fz_seg){ gpa, lens[i], write };
		if (write)
			x->in_len += lens[i];
		else
			out_len += lens[i];
		if (!write && own && lens[i]) {
			uint8_t *p = fz_ptr(drv, gpa, lens[i]);
			size_t k = CV_MIN(lens[i], PATTERN_MAX);
			for (size_t j = 0; j < k; j++)
				p[j] = (uint8_t)(S->serial_no * 73 + j * 5 + i);
		}
	}
	scatter_out(x, 0, head, head_len);
	if (status_seg >= 0) {
		const struct fz_seg *s = &x->segs[status_seg];
		x->status_gpa = s->gpa + s->len - 1;
		*fz_ptr(drv, x->status_gpa, 1) = STATUS_POISON;
	}
	predict(x, S->cur->b, out_len);
	uint16_t h;
	if (!fz_post(drv, 0, x->segs, n, indirect, &h)) {
		drv->heap = mark;
		return;
	}
	S->serial_no++;
	FZ_CHECK(!S->reqs[h].posted);
	x->posted = true;
	S->reqs[h] = *x;
	S->batch++;
	if (S->trace)
		fprintf(stderr, "blkf: post head %u type %u out %u/%llu in %u/%llu -> %s status %u\n",
			h, x->type, n_out, (unsigned long long)out_len, n_in,
			(unsigned long long)x->in_len, x->returned ? "returned" : "done", x->status);
	for (unsigned i = 0; S->trace && i < n; i++)
		fprintf(stderr, "blkf:   seg %c %#llx+%u\n", x->segs[i].write ? 'w' : 'r',
			(unsigned long long)x->segs[i].gpa, x->segs[i].len);
}

static void op_req(struct fz_in *in)
{
	unsigned n_out = fz_u8(in) % (BLKF_MAX_SEGS + 1);
	unsigned n_in = fz_u8(in) % (BLKF_MAX_SEGS + 1);
	uint8_t flags = fz_u8(in);
	uint8_t head[16 + 16 * VIRTIO_BLK_MAX_RANGES];
	fz_take(in, head, 16);
	unsigned n_ranges = fz_u8(in) % (VIRTIO_BLK_MAX_RANGES + 1);
	fz_take(in, head + 16, 16ULL * n_ranges);
	uint32_t lens[2 * BLKF_MAX_SEGS];
	for (unsigned i = 0; i < n_out + n_in; i++)
		lens[i] = seg_len(in);
	post(lens, n_out, n_in, head, 16 + 16ULL * n_ranges, flags & BLKF_REQ_INDIRECT);
}

static void op_rw(struct fz_in *in)
{
	static const uint32_t types[BLKF_KINDS] = {
		VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
		VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES,
	};
	unsigned kind = fz_u8(in) % BLKF_KINDS;
	uint64_t sector = fz_u64(in);
	uint16_t count = fz_u16(in);
	uint8_t head[32] = { 0 };
	put_le32(head, types[kind]);
	put_le64(head + 8, sector);
	uint32_t lens[3];
	unsigned n_out = 1, n_in = 0;
	size_t head_len = 16;
	lens[0] = 16;
	switch (kind) {
	case BLKF_KIND_IN:
		lens[n_out + n_in++] = (uint32_t)count * 512;
		break;
	case BLKF_KIND_OUT:
		lens[n_out++] = (uint32_t)count * 512;
		break;
	case BLKF_KIND_GET_ID:
		lens[n_out + n_in++] = BLK_ID_BYTES;
		break;
	case BLKF_KIND_DISCARD:
	case BLKF_KIND_WRITE_ZEROES:
		put_le64(head + 16, sector);
		put_le32(head + 24, count);
		put_le32(head + 28, fz_u8(in) & 3);
		put_le64(head + 8, 0);
		head_len = 32;
		lens[n_out++] = 16;
		break;
	}
	lens[n_out + n_in++] = 1;
	post(lens, n_out, n_in, head, head_len, false);
}

/* ---- running and checking a batch ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void read_file(void)
{
	ssize_t n = pread(S->cur->fd, S->file, sizeof(S->file), 0);
	FZ_CHECK(n == (ssize_t)IMG_BYTES);       /* never grown, never shrunk */
}

/* After a batch on a truncated image: the size back, the file the new reference. */
static void untruncate(void)
{
	struct stat st;
	FZ_CHECK(fstat(S->cur->fd, &st) == 0);
	/* Writes stay inside the capacity, so the file cannot have grown past its size. */
	FZ_CHECK((uint64_t)st.st_size <= IMG_BYTES);
	FZ_CHECK(ftruncate(S->cur->fd, (off_t)IMG_BYTES) == 0);
	read_file();
	memcpy(S->shadow, S->file, IMG_BYTES);
	S->truncated = IMG_BYTES;
}

static void mark(uint8_t *map, uint64_t sector, uint64_t count)
{
	for (uint64_t s = sector; s < sector + count; s++)
		if (map[s] < 255)
			map[s]++;
}

/* Collects completions until every posted request is back. */
static void collect(void)
{
	struct fz_driver *drv = &S->drv;
	uint64_t deadline = now_ns() + WAIT_NS;
	for (;;) {
		uint32_t id, len;
		while (fz_used(drv, 0, &id, &len)) {
			struct expect *x = &S->reqs[id];
			FZ_CHECK(x->posted && !x->done);
			x->done = true;
			FZ_CHECK(len == (x->returned ? 0 : x->in_len));
		}
		if (fz_outstanding(drv, 0) == 0)
			break;
		/* A request can only be lost here if the device forgot it. */
		FZ_CHECK(now_ns() < deadline);
		fz_pump(&S->loop, 100);
	}
}

static void kick_and_check(void)
{
	struct virtio_blk *b = S->cur->b;
	if (!S->batch)
		return;
	struct virtio_blk_stats before = b->stats;
	fz_kick(&S->drv, 0);
	collect();
	FZ_CHECK(!(b->dev.status & VIRTIO_STATUS_NEEDS_RESET));
	FZ_CHECK(b->n_free == VIRTIO_BLK_QUEUE_SIZE && b->aio.inflight == 0 && !b->throttled);

	if (S->truncated != IMG_BYTES) {
		/* Requests that reach past the new end may fail; everything else as predicted. */
		for (unsigned h = 0; h < MAX_REQS; h++) {
			struct expect *x = &S->reqs[h];
			if (!x->posted || x->returned)
				continue;
			uint8_t got = *fz_ptr(&S->drv, x->status_gpa, 1);
			bool beyond = x->type == VIRTIO_BLK_T_IN && x->status == VIRTIO_BLK_S_OK &&
				      x->sector * 512 + x->bytes > S->truncated;
			FZ_CHECK(got == x->status || (beyond && got == VIRTIO_BLK_S_IOERR));
		}
		untruncate();
		memset(S->reqs, 0, sizeof(S->reqs));
		S->batch = 0;
		S->drv.heap = FZ_HEAP_BASE;
		return;
	}
	memcpy(S->want, S->shadow, IMG_BYTES);
	memset(S->writers, 0, sizeof(S->writers));
	memset(S->readers, 0, sizeof(S->readers));
	uint64_t ioerr = 0, unsupp = 0;
	for (unsigned h = 0; h < MAX_REQS; h++) {
		struct expect *x = &S->reqs[h];
		if (!x->posted)
			continue;
		if (x->returned) {
			ioerr++;
			continue;
		}
		uint8_t got = *fz_ptr(&S->drv, x->status_gpa, 1);
		if (got != x->status)
			fprintf(stderr, "fuzz_blk: head %u type %u: status %u, expected %u\n", h,
				x->type, got, x->status);
		FZ_CHECK(got == x->status);
		ioerr += x->status == VIRTIO_BLK_S_IOERR;
		unsupp += x->status == VIRTIO_BLK_S_UNSUPP;
		if (x->status != VIRTIO_BLK_S_OK)
			continue;
		if (x->type == VIRTIO_BLK_T_OUT && x->bytes) {
			gather(x, false, 16, S->want + x->sector * 512, x->bytes);
			mark(S->writers, x->sector, x->bytes / 512);
		} else if (x->type == VIRTIO_BLK_T_IN && x->bytes) {
			mark(S->readers, x->sector, x->bytes / 512);
		} else if (x->type == VIRTIO_BLK_T_GET_ID) {
			uint8_t id[BLK_ID_BYTES];
			gather(x, true, 0, id, BLK_ID_BYTES);
			FZ_CHECK(memcmp(id, S->cur->serial, BLK_ID_BYTES) == 0);
		}
		for (unsigned i = 0; i < x->n_zero; i++) {
			memset(S->want + x->zero[i].sector * 512, 0, x->zero[i].count * 512);
			mark(S->writers, x->zero[i].sector, x->zero[i].count);
		}
	}
	FZ_CHECK(b->stats.ioerr - before.ioerr == ioerr);
	FZ_CHECK(b->stats.unsupp - before.unsupp == unsupp);

	/* Reads: the disk as it was, wherever no request of the batch wrote. */
	for (unsigned h = 0; h < MAX_REQS; h++) {
		struct expect *x = &S->reqs[h];
		if (!x->posted || x->returned || x->status || x->type != VIRTIO_BLK_T_IN ||
		    !x->bytes || x->in_alias)
			continue;
		static uint8_t got[IMG_BYTES];
		gather(x, true, 0, got, x->bytes);
		for (uint64_t s = 0; s < x->bytes / 512; s++)
			if (!S->writers[x->sector + s])
				FZ_CHECK(memcmp(got + s * 512, S->shadow + (x->sector + s) * 512,
						512) == 0);
	}
	/* The disk: exactly the predicted bytes, except where writes of the batch overlap. */
	read_file();
	for (unsigned s = 0; s < BLKF_SECTORS; s++) {
		if (S->writers[s] > 1)
			memcpy(S->want + s * 512, S->file + s * 512, 512);
	}
	if (memcmp(S->file, S->want, IMG_BYTES) != 0) {
		for (uint64_t i = 0; i < IMG_BYTES; i++)
			if (S->file[i] != S->want[i]) {
				fprintf(stderr, "fuzz_blk: disk byte %llu (sector %llu) is %#x, expected %#x\n",
					(unsigned long long)i, (unsigned long long)(i / 512), S->file[i],
					S->want[i]);
				break;
			}
		FZ_CHECK(!"disk contents differ from the prediction");
	}
	memcpy(S->shadow, S->file, IMG_BYTES);
	memset(S->reqs, 0, sizeof(S->reqs));
	S->batch = 0;
	S->drv.heap = FZ_HEAP_BASE;
}

/* Kick, then reset before waiting: in-flight I/O must be over when the reset returns. */
static void kick_and_reset(uint64_t features)
{
	struct virtio_blk *b = S->cur->b;
	fz_kick(&S->drv, 0);
	fz_driver_reset(&S->drv);
	FZ_CHECK(b->n_free == VIRTIO_BLK_QUEUE_SIZE && b->aio.inflight == 0);
	/* Writes may or may not have happened; from here on the file is the reference. */
	if (S->truncated != IMG_BYTES) {
		untruncate();
	} else {
		read_file();
		/* Only the guest-visible sectors of a writable disk may have changed. */
		uint64_t keep = S->cur->ro ? 0 : (uint64_t)BLKF_SECTORS * 512;
		FZ_CHECK(memcmp(S->file + keep, S->shadow + keep, IMG_BYTES - keep) == 0);
		memcpy(S->shadow, S->file, IMG_BYTES);
	}
	memset(S->reqs, 0, sizeof(S->reqs));
	S->batch = 0;
	FZ_CHECK(fz_driver_start(&S->drv, features, 1));
}

static void op_truncate(struct fz_in *in)
{
	uint64_t size = fz_u16(in) % (IMG_BYTES + 1);
	FZ_CHECK(ftruncate(S->cur->fd, (off_t)size) == 0);
	S->truncated = size;
}

/* The configuration space as blk.h announces it, read at any offset the window allows. */
static void op_config(struct fz_in *in)
{
	uint32_t off = fz_u16(in) % 0x1000;
	uint32_t len = fz_u8(in) % 8 + 1;
	uint8_t want[0x1008] = { 0 };
	put_le64(want + VIRTIO_BLK_CFG_CAPACITY, BLKF_SECTORS);
	put_le32(want + VIRTIO_BLK_CFG_SIZE_MAX, VIRTIO_BLK_SIZE_MAX);
	put_le32(want + VIRTIO_BLK_CFG_SEG_MAX, VIRTIO_BLK_SEG_MAX);
	put_le32(want + VIRTIO_BLK_CFG_BLK_SIZE, 512);
	put_le16(want + VIRTIO_BLK_CFG_NUM_QUEUES, 1);
	put_le32(want + VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS, VIRTIO_BLK_MAX_RANGE_SECTORS);
	put_le32(want + VIRTIO_BLK_CFG_MAX_DISCARD_SEG, VIRTIO_BLK_MAX_RANGES);
	put_le32(want + VIRTIO_BLK_CFG_DISCARD_ALIGN, VIRTIO_BLK_DISCARD_ALIGN);
	put_le32(want + VIRTIO_BLK_CFG_MAX_WZ_SECTORS, VIRTIO_BLK_MAX_RANGE_SECTORS);
	put_le32(want + VIRTIO_BLK_CFG_MAX_WZ_SEG, VIRTIO_BLK_MAX_RANGES);
	want[VIRTIO_BLK_CFG_WZ_MAY_UNMAP] = 1;
	uint8_t got[8];
	memset(got, 0xaa, sizeof(got));
	struct virtio_dev *d = &S->cur->b->dev;
	pthread_mutex_lock(&d->lock);
	d->ops->config_read(d, off, got, len);
	pthread_mutex_unlock(&d->lock);
	FZ_CHECK(memcmp(got, want + off, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t flags = fz_u8(&in);
	uint64_t features = fz_u32(&in);
	struct disk *k = &S->disks[(flags & BLKF_READ_ONLY) ? 1 : 0];
	S->cur = k;
	/* Every input starts from the same disk contents (a hole-punched file is refilled). */
	FZ_CHECK(pwrite(k->fd, S->image, IMG_BYTES, 0) == (ssize_t)IMG_BYTES);
	memcpy(S->shadow, S->image, IMG_BYTES);
	memset(S->reqs, 0, sizeof(S->reqs));
	S->batch = 0;
	S->truncated = IMG_BYTES;
	fz_driver_init(&S->drv, &S->mem, &k->b->dev);
	S->drv.heap_end = HEAP_END;
	FZ_CHECK(fz_driver_start(&S->drv, features, 1));
	/* What the host file system supports, as the device would have learned it. */
	k->b->no_punch_hole = flags & BLKF_NO_PUNCH;
	k->b->no_zero_range = flags & BLKF_NO_ZERO;

	while (fz_more(&in)) {
		switch (fz_u8(&in) % BLKF_OPS) {
		case BLKF_OP_REQ:
			op_req(&in);
			break;
		case BLKF_OP_RW:
			op_rw(&in);
			break;
		case BLKF_OP_KICK:
			kick_and_check();
			break;
		case BLKF_OP_RESET:
			kick_and_reset(features);
			break;
		case BLKF_OP_TRUNCATE:
			op_truncate(&in);
			break;
		case BLKF_OP_CONFIG:
			op_config(&in);
			break;
		}
	}
	kick_and_check();
	if (S->truncated != IMG_BYTES)
		untruncate();
	return 0;
}
