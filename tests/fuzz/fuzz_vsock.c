/*
 * libFuzzer target for virtio-vsock (src/vmm/virtio/vsock.c and the hybrid host side,
 * src/vmm/vsock/mux.c): the guest's packets (any header, or one completed as a driver would,
 * on a handful of port pairs), its receive buffers and resets, and the host programs around the
 * mux (connections to the socket with any "CONNECT <port>" line, programs behind PATH_<port>
 * accepting, writing, reading, half-closing and vanishing), and the mux's timer, in the order the
 * fuzzer's bytes say (vsock_input.h). The I/O thread is fz_pump, so everything is on this thread.
 *
 * The harness is the guest's socket layer and every host program at once, and checks the device
 * from both ends (these invariants abort on violation):
 *   - every packet to the guest is well-formed: CIDs 2 -> 42, stream type, a known op, len equal
 *     to what the used entry says and within the buffer, no payload on control packets, our
 *     buffer size and a forwarded count that never exceeds what the guest sent;
 *   - data reaches the guest only on a connection it has (made by its REQUEST or the device's),
 *     never after the guest reset it or shut its receive side, never beyond the credit the
 *     guest granted, and byte for byte what the host program behind it wrote, in order;
 *   - what a host program reads is byte for byte what the guest sent on its connection, after
 *     "OK <port>\n" for a program that connected (with the port the guest was told);
 *   - a REQUEST to the guest answers exactly one host line that vsock_parse_connect accepts
 *     (itself compared with a reference parser on every line);
 *   - after a reset and the host programs gone, no connection slot and no descriptor is left;
 *     the device needs a reset only after a receive buffer smaller than a header.
 * The stream bytes name their stream (first 4 bytes), so a byte delivered to the wrong
 * connection or out of order cannot pass.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bytes.h"
#include "fuzz_driver.h"
#include "util.h"
#include "virtio/vsock.h"
#include "vsock/packet.h"
#include "vsock_input.h"

#define RAM_SIZE (64ULL << 20)
#define MAX_TUPLES 255               /* tuple index 255 in a stream id: untracked */
#define UNTRACKED 255
#define MAX_PENDING 64
#define MAX_HOSTINIT 8
#define FLAT_LEN (VSOCK_HDR_SIZE + (64u << 10))

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The guest's view of one (guest port, host port) pair. */
struct tuple {
	uint32_t gport, hport;
	uint16_t gen;                /* connections made on the pair so far */
	bool live;                   /* a connection was made in this generation */
	bool guest_rst, guest_shut_rcv;
	uint32_t tx_bytes;           /* stream bytes the guest sent in this generation */
	uint32_t g_buf, g_fwd;       /* the credit it granted last */
	uint32_t rx_bytes;           /* payload bytes it received in this generation */
	uint16_t rx_serial;          /* the host socket they come from (learned from the id) */
	bool fwd_seen;
	uint32_t dev_fwd;
};

/* One host program's socket. */
struct hsock {
	int fd;                      /* -1: free slot */
	bool dialed;                 /* connected to the mux's socket (host-initiated) */
	char ok[VSOCK_LINE_MAX];     /* the "OK <port>\n" line read so far */
	unsigned ok_len;
	bool ok_done;
	uint16_t serial;             /* host -> guest stream id */
	uint32_t wr_off;
	uint8_t id[4];               /* guest -> host stream id, as read */
	unsigned rd_off;
	bool eof;
};

static struct state {
	struct guest_memory mem;
	struct evloop loop;
	struct virtio_vsock *v;
	struct fz_driver drv;
	char dir[64], uds[128];
	int listeners[VSF_LISTENERS];
	uint64_t want;
	bool small_posted;           /* a too-small receive buffer is in the ring */
	struct tuple t[MAX_TUPLES];
	unsigned n_t;
	int hostinit[MAX_HOSTINIT];  /* tuple index of the host-initiated connections */
	unsigned n_hostinit;
	struct hsock hs[VSF_HOST_SOCKETS];
	uint16_t next_serial;
	uint32_t pending[MAX_PENDING];   /* ports of accepted CONNECT lines not answered yet */
	unsigned n_pending;
	bool pending_lost;               /* more lines than we track: REQUESTs not matched */
	struct fz_seg rxsegs[VSOCK_QUEUE_SIZE][2];
	unsigned rxn[VSOCK_QUEUE_SIZE];
	unsigned fds_baseline;
	uint8_t buf[FLAT_LEN + 64];
	bool trace;
} *S;

/* ---- streams ---- */

static uint8_t g2h_byte(unsigned ti, uint16_t gen, uint32_t k)
{
	if (k < 4) {
		const uint8_t id[4] = { 0xc5, (uint8_t)ti, (uint8_t)gen, (uint8_t)(gen >> 8) };
		return id[k];
	}
	return (uint8_t)(ti * 37 + gen * 11 + k * 13 + (k >> 7));
}

static uint8_t h2g_byte(uint16_t serial, uint32_t k)
{
	if (k < 4) {
		const uint8_t id[4] = { 0x5c, (uint8_t)serial, (uint8_t)(serial >> 8), 0xa7 };
		return id[k];
	}
	return (uint8_t)(serial * 29 + k * 7 + (k >> 9));
}

/* ---- setup ---- */

static void sun(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	FZ_CHECK(strlen(path) < sizeof(sa->sun_path));
	strcpy(sa->sun_path, path);
}

/* At exit (not after a crash): the socket files and their directory go. */
static void cleanup(void)
{
	virtio_vsock_destroy(S->v);
	for (unsigned i = 0; i < VSF_LISTENERS; i++) {
		char path[160];
		snprintf(path, sizeof(path), "%s_%u", S->uds, VSF_HOST_PORTS[i]);
		close(S->listeners[i]);
		unlink(path);
	}
	rmdir(S->dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	S = calloc(1, sizeof(*S));
	FZ_CHECK(S != NULL);
	S->trace = getenv("VSF_TRACE") != NULL;
	fz_guest_memory(&S->mem, RAM_SIZE);
	struct cv_error err = { 0 };
	FZ_CHECK(evloop_init(&S->loop, &err) == 0);
	const char *tmp = getenv("TMPDIR");
	snprintf(S->dir, sizeof(S->dir), "%s/fuzz-vsock-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	FZ_CHECK(mkdtemp(S->dir) != NULL);
	snprintf(S->uds, sizeof(S->uds), "%s/v.sock", S->dir);
	struct vsock_config cfg = { .enabled = true, .cid = VSF_GUEST_CID, .uds_path = S->uds };
	S->v = virtio_vsock_create(&cfg, &S->mem, &S->loop, &err);
	if (!S->v) {
		fprintf(stderr, "fuzz_vsock: %s\n", err.msg);
		exit(1);
	}
	for (unsigned i = 0; i < VSF_LISTENERS; i++) {
		char path[160];
		snprintf(path, sizeof(path), "%s_%u", S->uds, VSF_HOST_PORTS[i]);
		struct sockaddr_un sa;
		sun(&sa, path);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		FZ_CHECK(fd >= 0);
		FZ_CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
		FZ_CHECK(listen(fd, 512) == 0);
		S->listeners[i] = fd;
	}
	for (unsigned i = 0; i < VSF_HOST_SOCKETS; i++)
		S->hs[i].fd = -1;
	atexit(cleanup);
	return 0;
}

/* ---- guest side ---- */

static int tuple_find(uint32_t gport, uint32_t hport, bool add)
{
	for (unsigned i = 0; i < S->n_t; i++)
		if (S->t[i].gport == gport && S->t[i].hport == hport)
			return (int)i;
	if (!add || S->n_t == MAX_TUPLES)
		return -1;
	struct tuple *t = &S->t[S->n_t];
	memset(t, 0, sizeof(*t));
	t->gport = gport;
	t->hport = hport;
	return (int)S->n_t++;
}

/* A new connection on the pair (either side's REQUEST): fresh streams and credit. */
static void new_gen(struct tuple *t, uint32_t buf, uint32_t fwd)
{
	t->gen++;
	t->live = true;
	t->guest_rst = t->guest_shut_rcv = false;
	t->tx_bytes = t->rx_bytes = 0;
	t->g_buf = buf;
	t->g_fwd = fwd;
	t->fwd_seen = false;
	t->dev_fwd = 0;
}

/* The device forgot every connection (reset, NEEDS_RESET): the guest forgets them too. */
static void forget_all(void)
{
	for (unsigned i = 0; i < S->n_t; i++)
		S->t[i].live = false;
	S->n_hostinit = 0;
}

static void check_status(void);

static void collect_rx(void);

static void settle(void)
{
	for (int i = 0; i < 64; i++) {
		collect_rx();
		if (fz_pump(&S->loop, 0) <= 0)
			break;
	}
	collect_rx();
	uint32_t id, len;
	while (fz_used(&S->drv, VSOCK_TXQ, &id, &len))
		FZ_CHECK(len == 0);
	check_status();
}

static void start_driver(void)
{
	forget_all();
	S->small_posted = false;
	FZ_CHECK(fz_driver_start(&S->drv, S->want, 3));
}

static void check_status(void)
{
	struct virtio_dev *d = &S->v->dev;
	if (!(d->status & VIRTIO_STATUS_NEEDS_RESET))
		return;
	/* Only a receive buffer too small for a header is a driver error here. */
	FZ_CHECK(S->small_posted);
	start_driver();
}

static void op_tx(struct fz_in *in)
{
	struct fz_driver *drv = &S->drv;
	uint8_t slot = fz_u8(in);
	uint8_t opb = fz_u8(in);
	uint16_t op = opb < 0xf0 ? opb % 8 : opb;   /* mostly real ops */
	uint32_t flags = fz_u32(in), buf_alloc = fz_u32(in), fwd_cnt = fz_u32(in);
	uint16_t plen = fz_u16(in);
	uint8_t shape = fz_u8(in);
	uint8_t raw[VSOCK_HDR_SIZE];
	struct vsock_hdr h = {
		.src_cid = VSF_GUEST_CID, .dst_cid = VSOCK_HOST_CID, .type = VSOCK_TYPE_STREAM,
		.op = op, .flags = flags, .buf_alloc = buf_alloc, .fwd_cnt = fwd_cnt, .len = plen,
	};
	if (shape & VSF_TX_RAW) {
		fz_take(in, raw, sizeof(raw));
		vsock_hdr_decode(&h, raw);
	} else if (slot < 0x80) {
		h.src_port = VSF_GUEST_PORT0 + (slot & 3);
		h.dst_port = VSF_HOST_PORTS[(slot >> 2) % 3];
	} else {
		unsigned k = slot & 7;
		if (k >= S->n_hostinit)
			return;
		h.src_port = S->t[S->hostinit[k]].gport;
		h.dst_port = S->t[S->hostinit[k]].hport;
	}
	if (shape & VSF_TX_LEN_LIE)
		h.len = (uint32_t)plen + 1;
	if (!(shape & VSF_TX_RAW))
		vsock_hdr_encode(&h, raw);

	/* What the guest's socket layer records about its own packet. */
	bool valid = h.src_cid == VSF_GUEST_CID && h.dst_cid == VSOCK_HOST_CID &&
		     h.type == VSOCK_TYPE_STREAM && h.op >= VSOCK_OP_REQUEST &&
		     h.op <= VSOCK_OP_CREDIT_REQUEST && h.len <= plen;
	int ti = valid ? tuple_find(h.src_port, h.dst_port, true) : -1;
	struct tuple *t = ti >= 0 ? &S->t[ti] : NULL;
	if (t && h.op == VSOCK_OP_REQUEST)
		new_gen(t, h.buf_alloc, h.fwd_cnt);
	uint64_t mark = drv->heap;
	uint64_t gpa = fz_alloc(drv, VSOCK_HDR_SIZE + (uint64_t)plen, 8);
	if (!gpa)
		return;
	uint8_t *p = fz_ptr(drv, gpa, VSOCK_HDR_SIZE + (uint64_t)plen);
	memcpy(p, raw, VSOCK_HDR_SIZE);
	/* The stream of the pair; an untracked pair's data says so in its first bytes. */
	for (uint32_t j = 0; j < plen; j++)
		p[VSOCK_HDR_SIZE + j] = t ? g2h_byte((unsigned)ti, t->gen, t->tx_bytes + j)
					  : g2h_byte(UNTRACKED, 0, j);
	struct fz_seg segs[3];
	unsigned n = 0;
	uint64_t at = 0;
	if (shape & VSF_TX_HDR_SPLIT) {
		segs[n++] = (struct fz_seg){ gpa, 20, false };
		at = 20;
	}
	if ((shape & (VSF_TX_SPLIT | VSF_TX_HDR_SPLIT)) && plen) {
		segs[n++] = (struct fz_seg){ gpa + at, (uint32_t)(VSOCK_HDR_SIZE - at), false };
		at = VSOCK_HDR_SIZE;
	}
	segs[n++] = (struct fz_seg){ gpa + at, (uint32_t)(VSOCK_HDR_SIZE + plen - at), false };
	if (!fz_post(drv, VSOCK_TXQ, segs, n, false, NULL)) {
		drv->heap = mark;
		return;
	}
	if (t) {
		if (h.op == VSOCK_OP_RW)
			t->tx_bytes += h.len;
		if (h.op == VSOCK_OP_RST)
			t->guest_rst = true;
		else
			t->g_buf = h.buf_alloc, t->g_fwd = h.fwd_cnt;
		if (h.op == VSOCK_OP_SHUTDOWN && (h.flags & VSOCK_SHUTDOWN_RCV))
			t->guest_shut_rcv = true;
	}
	if (S->trace)
		fprintf(stderr, "vsf: tx %u:%u -> %u:%u op %u len %u/%u\n", (unsigned)h.src_cid,
			h.src_port, (unsigned)h.dst_cid, h.dst_port, h.op, h.len, plen);
	fz_kick(drv, VSOCK_TXQ);
	settle();
}

static void op_rxbuf(struct fz_in *in)
{
	struct fz_driver *drv = &S->drv;
	unsigned count = fz_u8(in) % 17;
	/* A too-small buffer resets the device (and logs it): rarer than the others. */
	uint8_t sb = fz_u8(in);
	unsigned shape = sb == 0xff ? VSF_RX_SMALL : sb % VSF_RX_SMALL;
	for (unsigned c = 0; c < count; c++) {
		struct fz_seg segs[2];
		unsigned n = 0;
		uint64_t mark = drv->heap;
		switch (shape) {
		case VSF_RX_LINUX:
			segs[n++] = (struct fz_seg){ fz_alloc(drv, VSOCK_HDR_SIZE, 8), VSOCK_HDR_SIZE,
						     true };
			segs[n++] = (struct fz_seg){ fz_alloc(drv, 4096, 8), 4096, true };
			break;
		case VSF_RX_FLAT:
			segs[n++] = (struct fz_seg){ fz_alloc(drv, FLAT_LEN, 8), FLAT_LEN, true };
			break;
		case VSF_RX_HEADER_ONLY:
			segs[n++] = (struct fz_seg){ fz_alloc(drv, VSOCK_HDR_SIZE, 8), VSOCK_HDR_SIZE,
						     true };
			break;
		default:
			segs[n++] = (struct fz_seg){ fz_alloc(drv, 20, 8), 20, true };
			break;
		}
		bool ok = segs[0].gpa && (n == 1 || segs[1].gpa);
		uint16_t head;
		if (!ok || !fz_post(drv, VSOCK_RXQ, segs, n, false, &head)) {
			drv->heap = mark;
			break;
		}
		memcpy(S->rxsegs[head], segs, sizeof(segs));
		S->rxn[head] = n;
		if (shape == VSF_RX_SMALL)
			S->small_posted = true;
	}
	fz_kick(drv, VSOCK_RXQ);
	settle();
}

/* One packet the device put in a receive buffer, checked as the guest's socket layer sees it. */
static void guest_receives(const struct vsock_hdr *h, const uint8_t *payload)
{
	if (S->trace)
		fprintf(stderr, "vsf: rx %u:%u -> %u op %u len %u\n", (unsigned)h->src_cid,
			h->src_port, h->dst_port, h->op, h->len);
	FZ_CHECK(h->dst_cid == VSF_GUEST_CID);
	FZ_CHECK(h->type == VSOCK_TYPE_STREAM);
	FZ_CHECK(h->op >= VSOCK_OP_REQUEST && h->op <= VSOCK_OP_CREDIT_REQUEST);
	FZ_CHECK(h->op == VSOCK_OP_RW ? h->len > 0 : h->len == 0);
	/*
	 * An RST also answers packets of no connection: any ports, any time, and from whatever
	 * CID the guest addressed (a connect to another CID is refused at once).
	 */
	if (h->op == VSOCK_OP_RST)
		return;
	FZ_CHECK(h->src_cid == VSOCK_HOST_CID);
	FZ_CHECK(h->buf_alloc == VSOCK_BUF_ALLOC);
	int ti = tuple_find(h->dst_port, h->src_port, h->op == VSOCK_OP_REQUEST);
	if (h->op == VSOCK_OP_REQUEST) {
		/* Host-initiated: answers one accepted CONNECT line for this port. */
		FZ_CHECK(h->src_port >= VSOCK_HOST_PORT_FIRST && h->src_port != UINT32_MAX);
		unsigned i = 0;
		while (i < S->n_pending && S->pending[i] != h->dst_port)
			i++;
		FZ_CHECK(i < S->n_pending || S->pending_lost);
		if (i < S->n_pending)
			S->pending[i] = S->pending[--S->n_pending];
		if (ti < 0)
			return;
		new_gen(&S->t[ti], 0, 0);
		if (S->n_hostinit < MAX_HOSTINIT)
			S->hostinit[S->n_hostinit++] = ti;
	}
	if (ti < 0) {
		/* The device talks only on connections, and the guest knows all of them. */
		FZ_CHECK(S->n_t == MAX_TUPLES);
		return;
	}
	struct tuple *t = &S->t[ti];
	FZ_CHECK(t->live);
	/* What it has forwarded only grows, and never beyond what the guest sent. */
	FZ_CHECK(h->fwd_cnt <= t->tx_bytes && (!t->fwd_seen || h->fwd_cnt >= t->dev_fwd));
	t->fwd_seen = true;
	t->dev_fwd = h->fwd_cnt;
	if (h->op == VSOCK_OP_SHUTDOWN)
		FZ_CHECK(h->flags && !(h->flags & ~(VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND)));
	if (h->op != VSOCK_OP_RW)
		return;
	/* Data: on a connection the guest still wants data on, within its credit, in order. */
	FZ_CHECK(!t->guest_rst && !t->guest_shut_rcv);
	FZ_CHECK((uint32_t)(t->rx_bytes + h->len - t->g_fwd) <= t->g_buf);
	for (uint32_t j = 0; j < h->len; j++) {
		uint32_t k = t->rx_bytes + j;
		uint8_t b = payload[j];
		if (k == 1)
			t->rx_serial = b;
		else if (k == 2)
			t->rx_serial = (uint16_t)(t->rx_serial | b << 8);
		else
			FZ_CHECK(b == h2g_byte(t->rx_serial, k));
	}
	t->rx_bytes += h->len;
}

static void gather(unsigned head, uint32_t off, uint8_t *dst, uint32_t len)
{
	for (unsigned i = 0; i < S->rxn[head] && len; i++) {
		const struct fz_seg *s = &S->rxsegs[head][i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		uint32_t k = CV_MIN(s->len - off, len);
		memcpy(dst, fz_ptr(&S->drv, s->gpa + off, k), k);
		dst += k;
		len -= k;
		off = 0;
	}
	FZ_CHECK(len == 0);
}

static void collect_rx(void)
{
	uint32_t id, len;
	while (fz_used(&S->drv, VSOCK_RXQ, &id, &len)) {
		uint32_t cap = 0;
		for (unsigned i = 0; i < S->rxn[id]; i++)
			cap += S->rxsegs[id][i].len;
		FZ_CHECK(len >= VSOCK_HDR_SIZE && len <= cap);
		gather(id, 0, S->buf, len);
		struct vsock_hdr h;
		vsock_hdr_decode(&h, S->buf);
		FZ_CHECK(len == VSOCK_HDR_SIZE + (uint64_t)h.len);
		guest_receives(&h, S->buf + VSOCK_HDR_SIZE);
	}
}

/* ---- host side ---- */

static struct hsock *hs_new(int fd, bool dialed)
{
	for (unsigned i = 0; i < VSF_HOST_SOCKETS; i++) {
		struct hsock *h = &S->hs[i];
		if (h->fd >= 0)
			continue;
		memset(h, 0, sizeof(*h));
		h->fd = fd;
		h->dialed = dialed;
		h->serial = S->next_serial++;
		return h;
	}
	close(fd);
	return NULL;
}

static void hs_close(struct hsock *h)
{
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
}

/* "CONNECT <port>\n", "\r\n" allowed, 1 to 10 digits, below VMADDR_PORT_ANY (mux.h). */
static bool ref_parse_connect(const char *s, size_t len, uint32_t *port)
{
	const char *verb = "CONNECT ";
	if (len < 10 || memcmp(s, verb, 8) != 0 || s[len - 1] != '\n')
		return false;
	size_t end = len - 1;
	if (s[end - 1] == '\r')
		end--;
	if (end - 8 < 1 || end - 8 > 10)
		return false;
	uint64_t v = 0;
	for (size_t i = 8; i < end; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v >= 0xffffffffu)
		return false;
	*port = (uint32_t)v;
	return true;
}

static void op_connect(struct fz_in *in)
{
	char line[VSF_LINE_MAX + 16];
	size_t len;
	uint8_t kind = fz_u8(in);
	if (kind < 0x80) {
		len = (size_t)snprintf(line, sizeof(line), "CONNECT %u\n", VSF_LINE_PORTS[kind % 5]);
	} else {
		len = fz_u8(in) % (VSF_LINE_MAX + 1);
		fz_take(in, line, len);
	}
	/* The mux reads up to the first newline, and gives up on 32 bytes without one. */
	const char *nl = memchr(line, '\n', len);
	size_t first = nl ? (size_t)(nl - line) + 1 : len;
	uint32_t ref_port = 0, port = 0;
	bool ref_ok = first <= VSOCK_LINE_MAX && ref_parse_connect(line, first, &ref_port);
	bool ok = first <= VSOCK_LINE_MAX && vsock_parse_connect(line, first, &port);
	FZ_CHECK(ok == ref_ok && (!ok || port == ref_port));

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	FZ_CHECK(fd >= 0);
	struct sockaddr_un sa;
	sun(&sa, S->uds);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return;
	}
	struct hsock *h = hs_new(fd, true);
	if (!h)
		return;
	/* Bytes after the newline are data for the guest: make them the start of our stream. */
	for (size_t j = first; j < len; j++)
		line[j] = (char)h2g_byte(h->serial, h->wr_off++);
	if (len && send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len) {
		hs_close(h);
		return;
	}
	if (ok && nl && S->n_pending < MAX_PENDING)
		S->pending[S->n_pending++] = port;
	else if (ok && nl)
		S->pending_lost = true;
	settle();
}

static void op_accept(void)
{
	for (unsigned i = 0; i < VSF_LISTENERS; i++) {
		int fd;
		while ((fd = accept4(S->listeners[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
			hs_new(fd, false);
	}
	settle();
}

static struct hsock *pick(struct fz_in *in)
{
	unsigned k = fz_u8(in) % VSF_HOST_SOCKETS;
	for (unsigned i = 0; i < VSF_HOST_SOCKETS; i++) {
		struct hsock *h = &S->hs[(k + i) % VSF_HOST_SOCKETS];
		if (h->fd >= 0)
			return h;
	}
	return NULL;
}

static void op_host_write(struct fz_in *in)
{
	struct hsock *h = pick(in);
	uint32_t len = fz_u16(in);
	if (!h)
		return;
	uint8_t *b = S->buf;
	len = CV_MIN(len, (uint32_t)sizeof(S->buf));
	for (uint32_t j = 0; j < len; j++)
		b[j] = h2g_byte(h->serial, h->wr_off + j);
	ssize_t n = send(h->fd, b, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n > 0)
		h->wr_off += (uint32_t)n;
	settle();
}

/* Reads what the guest sent this program and checks it against the stream it names. */
static void host_read(struct hsock *h)
{
	for (;;) {
		ssize_t n = recv(h->fd, S->buf, sizeof(S->buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			h->eof = true;
			return;
		}
		if (n < 0)
			return;
		FZ_CHECK(!h->eof);
		const uint8_t *p = S->buf;
		size_t left = (size_t)n;
		while (h->dialed && !h->ok_done && left) {
			/* The program connected: the mux answers "OK <port>\n" before any data. */
			FZ_CHECK(h->ok_len < sizeof(h->ok) - 1);
			h->ok[h->ok_len++] = (char)*p++;
			left--;
			if (h->ok[h->ok_len - 1] == '\n') {
				h->ok[h->ok_len] = 0;
				unsigned long port = 0;
				int end = 0;
				FZ_CHECK(sscanf(h->ok, "OK %lu\n%n", &port, &end) == 1 &&
					 (unsigned)end == h->ok_len);
				FZ_CHECK(port >= VSOCK_HOST_PORT_FIRST && port < UINT32_MAX);
				h->ok_done = true;
			}
		}
		for (; left; p++, left--, h->rd_off++) {
			if (h->rd_off < 4) {
				h->id[h->rd_off] = *p;
				if (h->rd_off == 0)
					FZ_CHECK(*p == 0xc5);
				if (h->rd_off == 1)
					FZ_CHECK(*p < S->n_t || *p == UNTRACKED);
				continue;
			}
			if (h->id[1] == UNTRACKED)
				continue;        /* data of a pair the guest lost count of */
			uint16_t gen = (uint16_t)(h->id[2] | h->id[3] << 8);
			FZ_CHECK(*p == g2h_byte(h->id[1], gen, h->rd_off));
			const struct tuple *t = &S->t[h->id[1]];
			FZ_CHECK(gen <= t->gen);
			if (t->gen == gen)
				FZ_CHECK(h->rd_off < t->tx_bytes);
		}
	}
}

static void op_host_read(struct fz_in *in)
{
	struct hsock *h = pick(in);
	if (h)
		host_read(h);
	settle();
}

static void op_host_shut(struct fz_in *in)
{
	struct hsock *h = pick(in);
	uint8_t how = fz_u8(in) % 3;
	if (!h)
		return;
	if (how == 0)
		shutdown(h->fd, SHUT_WR);
	else if (how == 1)
		shutdown(h->fd, SHUT_RD);
	else
		hs_close(h);
	settle();
}

static void op_tick(void)
{
	struct vsock_mux *m = &S->v->mux;
	m->timer_h.fn(m->timer_h.opaque, EPOLLIN);
	settle();
}

/* ---- inputs ---- */

/* Ends an input: the driver resets, every host program goes away; nothing may be left. */
static void finish(void)
{
	fz_driver_reset(&S->drv);
	forget_all();
	for (unsigned i = 0; i < VSF_HOST_SOCKETS; i++) {
		if (S->hs[i].fd >= 0)
			host_read(&S->hs[i]);
		hs_close(&S->hs[i]);
	}
	for (unsigned i = 0; i < VSF_LISTENERS; i++) {
		int fd;
		while ((fd = accept4(S->listeners[i], NULL, NULL, SOCK_CLOEXEC)) >= 0)
			close(fd);
	}
	/* Programs still typing their line are noticed gone by the mux's next read. */
	for (int i = 0; i < 64 && fz_pump(&S->loop, 0) > 0; i++) {
	}
	struct vsock_mux *m = &S->v->mux;
	FZ_CHECK(m->n_used == 0 && m->rx_head == NULL && m->rst_count == 0);
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		FZ_CHECK(m->conns[i].state == VSOCK_CONN_FREE && m->conns[i].h.fd < 0);
	for (unsigned b = 0; b < CV_ARRAY_SIZE(m->buckets); b++)
		FZ_CHECK(m->buckets[b] == NULL);
	FZ_CHECK(fz_open_fds() == S->fds_baseline);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	/*
	 * Descriptors open now are open at the end again. (Counted per input: libFuzzer starts a
	 * symbolizer, with pipes, the first time it reports a new function.)
	 */
	S->fds_baseline = fz_open_fds();
	uint8_t flags = fz_u8(&in);
	S->want = fz_u32(&in);
	struct vsock_mux *m = &S->v->mux;
	unsigned ms = (flags & VSF_SHORT_TIMEOUTS) ? 0 : 10000;
	m->line_timeout_ms = m->connect_timeout_ms = m->close_timeout_ms = ms;
	/* Host ports are handed out from a counter; start it over so inputs replay exactly. */
	m->next_host_port = VSOCK_HOST_PORT_FIRST;
	S->n_t = 0;
	S->next_serial = 0;
	S->n_pending = 0;
	S->pending_lost = false;
	fz_driver_init(&S->drv, &S->mem, &S->v->dev);
	start_driver();
	while (fz_more(&in)) {
		switch (fz_u8(&in) % VSF_OPS) {
		case VSF_OP_TX:
			op_tx(&in);
			break;
		case VSF_OP_RXBUF:
			op_rxbuf(&in);
			break;
		case VSF_OP_CONNECT:
			op_connect(&in);
			break;
		case VSF_OP_HOST_WRITE:
			op_host_write(&in);
			break;
		case VSF_OP_HOST_READ:
			op_host_read(&in);
			break;
		case VSF_OP_HOST_SHUT:
			op_host_shut(&in);
			break;
		case VSF_OP_ACCEPT:
			op_accept();
			break;
		case VSF_OP_TICK:
			op_tick();
			break;
		case VSF_OP_RESET:
			start_driver();
			settle();
			break;
		}
	}
	finish();
	return 0;
}
