/*
 * Migration stream encoding and bounds-checked decoding (see stream.h). The frame header is the
 * snapshot section header (format.c's CRC-32), so both formats are checked the same way.
 */
#include "migrate/stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bytes.h"
#include "util.h"

static const char *const names[] = {
	[MIG_HELLO] = "HELLO", [MIG_PAGES] = "PAGES", [MIG_ZERO] = "ZERO",
	[MIG_ROUND] = "ROUND", [MIG_STATE] = "STATE", [MIG_GO] = "GO",
	[MIG_ACCEPT] = "ACCEPT", [MIG_READY] = "READY", [MIG_RESUMED] = "RESUMED",
	[MIG_ERROR] = "ERROR",
};

const char *mig_frame_name(uint32_t type)
{
	return type < CV_ARRAY_SIZE(names) && names[type] ? names[type] : "unknown";
}

/* ---- writing ---- */

void mig_put_preamble(struct snap_buf *out)
{
	snap_put_bytes(out, MIG_MAGIC, 8);
	snap_put_u32(out, MIG_VERSION);
	snap_put_u32(out, 0);
}

static void put_header(struct snap_buf *out, uint32_t type, uint32_t aux, size_t len,
		       uint32_t crc)
{
	uint8_t h[MIG_HDR_SIZE];
	put_le32(h, type);
	put_le32(h + 4, aux);
	put_le64(h + 8, len);
	put_le32(h + 16, crc);
	put_le32(h + 20, snap_crc32(0, h, 20));
	snap_put_bytes(out, h, sizeof(h));
}

void mig_put_frame(struct snap_buf *out, uint32_t type, uint32_t aux, const void *payload,
		   size_t len)
{
	put_header(out, type, aux, len, snap_crc32(0, payload, len));
	snap_put_bytes(out, payload, len);
}

void mig_put_pages(struct snap_buf *out, uint64_t offset, const uint8_t *pages, uint32_t n)
{
	/*
	 * The guest may write these pages while they are copied (vCPUs run during pre-copy): copy
	 * first, checksum the copy, so the frame is consistent; a page changed meanwhile is in the
	 * dirty log and goes again next round.
	 */
	size_t len = 12 + (size_t)n * MIG_PAGE;
	size_t hdr_at = out->len;
	put_header(out, MIG_PAGES, 0, len, 0);
	snap_put_u64(out, offset);
	snap_put_u32(out, n);
	snap_put_bytes(out, pages, (size_t)n * MIG_PAGE);
	if (out->oom)
		return;
	uint8_t *h = out->b + hdr_at;
	put_le32(h + 16, snap_crc32(0, h + MIG_HDR_SIZE, len));
	put_le32(h + 20, snap_crc32(0, h, 20));
}

void mig_put_zero(struct snap_buf *out, uint64_t offset, uint64_t n)
{
	uint8_t p[16];
	put_le64(p, offset);
	put_le64(p + 8, n);
	mig_put_frame(out, MIG_ZERO, 0, p, sizeof(p));
}

void mig_put_round(struct snap_buf *out, uint32_t round, uint64_t pages)
{
	uint8_t p[12];
	put_le32(p, round);
	put_le64(p + 4, pages);
	mig_put_frame(out, MIG_ROUND, 0, p, sizeof(p));
}

void mig_put_error(struct snap_buf *out, const char *msg)
{
	struct snap_buf p = { 0 };
	size_t n = strnlen(msg, 1000);
	snap_put_blob(&p, msg, n);
	mig_put_frame(out, MIG_ERROR, 0, p.b, p.len);
	if (p.oom)
		out->oom = true;
	snap_buf_free(&p);
}

/* ---- reading ---- */

void mig_reader_init(struct mig_reader *r, mig_read_fn read, void *ctx)
{
	memset(r, 0, sizeof(*r));
	r->read = read;
	r->ctx = ctx;
}

void mig_reader_free(struct mig_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
}

static int rd(struct mig_reader *r, void *buf, size_t n, struct cv_error *err)
{
	if (r->read(r->ctx, buf, n, err) < 0)
		return -1;
	r->bytes += n;
	return 0;
}

int mig_read_preamble(struct mig_reader *r, struct cv_error *err)
{
	uint8_t p[MIG_PREAMBLE_SIZE];
	if (rd(r, p, sizeof(p), err) < 0)
		return cv_error_wrap(err, "migration stream preamble");
	if (memcmp(p, MIG_MAGIC, 8) != 0)
		return cv_fail(err, CV_EXIT_DATAERR, "not a cvisor migration stream (bad magic)");
	uint32_t version = get_le32(p + 8);
	if (version != MIG_VERSION)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream version %u is not supported "
			       "(this cvisor-vmm speaks version %u)", version, MIG_VERSION);
	if (get_le32(p + 12) != 0)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream flags 0x%x are not supported",
			       get_le32(p + 12));
	return 0;
}

static uint64_t max_len(uint32_t type)
{
	switch (type) {
	case MIG_PAGES:
		return 12 + (uint64_t)MIG_MAX_RUN_PAGES * MIG_PAGE;
	case MIG_STATE:
		return MIG_MAX_STATE;
	case MIG_HELLO:
	case MIG_ERROR:
		return MIG_MAX_SMALL;
	case MIG_ZERO:
		return 16;
	case MIG_ROUND:
		return 12;
	default:
		return 0;
	}
}

/* A frame's header: its own CRC, a known type, within that type's length limit. */
struct frame_head {
	uint8_t h[MIG_HDR_SIZE];
	uint32_t type;
	uint64_t len;
	uint64_t at;                 /* stream offset, for messages */
};

static int read_head(struct mig_reader *r, struct frame_head *fh, struct cv_error *err)
{
	fh->at = r->bytes;
	if (rd(r, fh->h, sizeof(fh->h), err) < 0)
		return -1;
	if (snap_crc32(0, fh->h, 20) != get_le32(fh->h + 20))
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: frame header at byte %llu is "
			       "corrupt (checksum)", (unsigned long long)fh->at);
	fh->type = get_le32(fh->h);
	fh->len = get_le64(fh->h + 8);
	if (fh->type < MIG_HELLO || fh->type > MIG_ERROR)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: unknown frame type %u at byte "
			       "%llu", fh->type, (unsigned long long)fh->at);
	if (fh->len > max_len(fh->type))
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: %s frame at byte %llu has %llu "
			       "bytes (at most %llu)", mig_frame_name(fh->type),
			       (unsigned long long)fh->at, (unsigned long long)fh->len,
			       (unsigned long long)max_len(fh->type));
	return 0;
}

static int corrupt(const struct frame_head *fh, struct cv_error *err)
{
	return cv_fail(err, CV_EXIT_DATAERR, "migration stream: %s frame at byte %llu is corrupt "
		       "(checksum)", mig_frame_name(fh->type), (unsigned long long)fh->at);
}

/* The payload after read_head, into the reader's buffer, checked against its CRC. */
static int read_body(struct mig_reader *r, const struct frame_head *fh, struct mig_frame *f,
		     struct cv_error *err)
{
	if (fh->len > r->cap) {
		uint8_t *nb = realloc(r->buf, (size_t)fh->len);
		if (!nb)
			return cv_fail(err, CV_EXIT_OSERR, "migration stream: out of memory");
		r->buf = nb;
		r->cap = (size_t)fh->len;
	}
	if (fh->len && rd(r, r->buf, (size_t)fh->len, err) < 0)
		return cv_error_wrap(err, "%s frame", mig_frame_name(fh->type));
	if (snap_crc32(0, r->buf, (size_t)fh->len) != get_le32(fh->h + 16))
		return corrupt(fh, err);
	f->type = fh->type;
	f->aux = get_le32(fh->h + 4);
	f->payload = r->buf;
	f->len = (size_t)fh->len;
	if (fh->type == MIG_ERROR) {
		struct snap_cur c;
		char msg[sizeof(err->msg) - 32];
		snap_cur_init(&c, f->payload, f->len);
		snap_get_str(&c, msg, sizeof(msg));
		if (!snap_cur_done(&c))
			return cv_fail(err, CV_EXIT_DATAERR, "migration stream: malformed ERROR frame");
		/* The peer's words, on one line. */
		for (char *p = msg; *p; p++)
			if (*p == '\n' || *p == '\r')
				*p = ' ';
		return cv_fail(err, CV_EXIT_IOERR, "the peer gave up: %s", msg);
	}
	return 0;
}

int mig_read_frame(struct mig_reader *r, struct mig_frame *f, struct cv_error *err)
{
	struct frame_head fh;
	if (read_head(r, &fh, err) < 0)
		return -1;
	return read_body(r, &fh, f, err);
}

int mig_expect(struct mig_reader *r, uint32_t want, struct mig_frame *f, struct cv_error *err)
{
	if (mig_read_frame(r, f, err) < 0)
		return -1;
	if (f->type != want)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: expected %s, got %s",
			       mig_frame_name(want), mig_frame_name(f->type));
	if ((want == MIG_GO || want == MIG_ACCEPT || want == MIG_READY || want == MIG_RESUMED) &&
	    f->len)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: %s frame is not empty",
			       mig_frame_name(want));
	return 0;
}

int mig_decode_hello(const struct mig_frame *f, struct snap_cur *shape, struct cv_error *err)
{
	struct snap_cur c;
	snap_cur_init(&c, f->payload, f->len);
	uint32_t page = snap_get_u32(&c);
	size_t n;
	const uint8_t *p = snap_get_blob(&c, &n);
	if (!snap_cur_done(&c))
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: malformed HELLO frame");
	if (page != MIG_PAGE)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: page size %u (this cvisor-vmm "
			       "uses %u)", page, MIG_PAGE);
	snap_cur_init(shape, p, n);
	return 0;
}

static int check_range(uint32_t type, const struct mig_pages *pg, uint64_t mem_size,
		       struct cv_error *err)
{
	/* Written so that nothing overflows: offset, n and mem_size all come from outside. */
	if (pg->offset % MIG_PAGE || pg->offset > mem_size ||
	    pg->n > (mem_size - pg->offset) / MIG_PAGE)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: %s frame for bytes 0x%llx + "
			       "%llu pages lies outside the %llu MiB of guest memory",
			       mig_frame_name(type), (unsigned long long)pg->offset,
			       (unsigned long long)pg->n, (unsigned long long)(mem_size >> 20));
	return 0;
}

/* A ZERO frame: a range of pages to clear, checked against a guest RAM of mem_size bytes. */
static int decode_zero(const struct mig_frame *f, uint64_t mem_size, struct mig_pages *out,
		       struct cv_error *err)
{
	struct snap_cur c;
	snap_cur_init(&c, f->payload, f->len);
	out->offset = snap_get_u64(&c);
	out->n = snap_get_u64(&c);
	if (!snap_cur_done(&c) || out->n == 0)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: malformed ZERO frame");
	return check_range(MIG_ZERO, out, mem_size, err);
}

int mig_decode_round(const struct mig_frame *f, uint32_t *round, uint64_t *pages,
		     struct cv_error *err)
{
	struct snap_cur c;
	snap_cur_init(&c, f->payload, f->len);
	*round = snap_get_u32(&c);
	*pages = snap_get_u64(&c);
	if (!snap_cur_done(&c))
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: malformed ROUND frame");
	return 0;
}

/*
 * A PAGES frame's pages go straight from the stream into guest RAM, where the CRC is checked:
 * one copy fewer than through the reader's buffer (memory copies dominate a migration's cost
 * on a CPU-bound host). A frame that fails its check has written RAM the destination will
 * never run: the migration fails on it.
 */
static int read_pages_in_place(struct mig_reader *r, const struct frame_head *fh, uint8_t *mem,
			       uint64_t mem_size, struct mig_pages *pg, struct cv_error *err)
{
	uint8_t p[12];
	if (fh->len < sizeof(p))
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: malformed PAGES frame");
	if (rd(r, p, sizeof(p), err) < 0)
		return cv_error_wrap(err, "PAGES frame");
	pg->offset = get_le64(p);
	pg->n = get_le32(p + 8);
	if (pg->n == 0 || pg->n > MIG_MAX_RUN_PAGES || fh->len - sizeof(p) != pg->n * MIG_PAGE)
		return cv_fail(err, CV_EXIT_DATAERR, "migration stream: malformed PAGES frame");
	if (check_range(MIG_PAGES, pg, mem_size, err) < 0)
		return -1;
	size_t n = (size_t)pg->n * MIG_PAGE;
	if (rd(r, mem + pg->offset, n, err) < 0)
		return cv_error_wrap(err, "PAGES frame");
	if (snap_crc32(snap_crc32(0, p, sizeof(p)), mem + pg->offset, n) != get_le32(fh->h + 16))
		return corrupt(fh, err);
	return 0;
}

int mig_receive_memory(struct mig_reader *rd, uint8_t *mem, uint64_t mem_size,
		       struct mig_frame *state, struct mig_rx_stats *st, struct cv_error *err)
{
	uint64_t round_pages = 0;
	memset(st, 0, sizeof(*st));
	for (;;) {
		struct frame_head fh;
		struct mig_frame f;
		struct mig_pages pg = { 0 };
		if (read_head(rd, &fh, err) < 0)
			return -1;
		if (fh.type == MIG_PAGES) {
			if (read_pages_in_place(rd, &fh, mem, mem_size, &pg, err) < 0)
				return -1;
			round_pages += pg.n;
			st->pages += pg.n;
			continue;
		}
		if (read_body(rd, &fh, &f, err) < 0)
			return -1;
		switch (f.type) {
		case MIG_ZERO:
			if (decode_zero(&f, mem_size, &pg, err) < 0)
				return -1;
			memset(mem + pg.offset, 0, (size_t)pg.n * MIG_PAGE);
			round_pages += pg.n;
			st->pages += pg.n;
			break;
		case MIG_ROUND: {
			uint32_t round;
			uint64_t pages;
			if (mig_decode_round(&f, &round, &pages, err) < 0)
				return -1;
			if (round != st->rounds + 1 || pages != round_pages)
				return cv_fail(err, CV_EXIT_DATAERR, "migration stream: round %u ended "
					       "with %llu pages, %llu received (expected round %u)",
					       round, (unsigned long long)pages,
					       (unsigned long long)round_pages, st->rounds + 1);
			st->rounds++;
			round_pages = 0;
			break;
		}
		case MIG_STATE:
			if (round_pages || st->rounds == 0)
				return cv_fail(err, CV_EXIT_DATAERR, "migration stream: state before the "
					       "end of a memory round");
			*state = f;
			return 0;
		default:
			return cv_fail(err, CV_EXIT_DATAERR, "migration stream: unexpected %s frame",
				       mig_frame_name(f.type));
		}
	}
}

int mig_parse_address(const char *spec, bool any_port, struct sockaddr_storage *sa,
		      unsigned *sa_len, struct cv_error *err)
{
	memset(sa, 0, sizeof(*sa));
	if (strncmp(spec, "tcp:", 4) != 0)
		return cv_fail(err, CV_EXIT_USAGE, "'%s': expected tcp:HOST:PORT", spec);
	const char *host = spec + 4;
	const char *colon;
	char h[64];
	size_t hl;
	if (*host == '[') {
		const char *close = strchr(host, ']');
		if (!close || close[1] != ':')
			return cv_fail(err, CV_EXIT_USAGE, "'%s': expected tcp:[IPv6]:PORT", spec);
		host++;
		hl = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(host, ':');
		if (!colon)
			return cv_fail(err, CV_EXIT_USAGE, "'%s': expected tcp:HOST:PORT", spec);
		hl = (size_t)(colon - host);
	}
	if (hl == 0 || hl >= sizeof(h))
		return cv_fail(err, CV_EXIT_USAGE, "'%s': bad host", spec);
	memcpy(h, host, hl);
	h[hl] = 0;
	uint64_t port;
	if (!cv_parse_u64(colon + 1, any_port ? 0 : 1, 65535, &port))
		return cv_fail(err, CV_EXIT_USAGE, "'%s': the port must be %d to 65535", spec,
			       any_port ? 0 : 1);
	if (strcmp(h, "localhost") == 0)
		snprintf(h, sizeof(h), "127.0.0.1");
	struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)sa;
	if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*sa_len = sizeof(*a4);
	} else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*sa_len = sizeof(*a6);
	} else {
		/* No name lookups: the VMM's sandbox has no resolver, and names hide what is meant. */
		return cv_fail(err, CV_EXIT_USAGE, "'%s': the host must be an IP address (or "
			       "localhost)", spec);
	}
	return 0;
}
