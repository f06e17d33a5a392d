/*
 * virtio-vsock device and its hybrid Unix-socket host side, driven without a guest: a fake
 * driver builds split virtqueues in a guest-memory mapping (rx chains laid out as Linux does: a
 * 44-byte header descriptor and a 4 KiB data descriptor), sends packets on tx, and this test is
 * also the host program on the Unix sockets. The VM's evloop is pumped by hand on this thread,
 * so every step is deterministic. Covers both connection directions, credit flow control both
 * ways, half-close and RST, the CONNECT line protocol, hostile packets and socket-path hygiene.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "virtio/vsock.h"
#include "vsock/mux.h"
#include "vsock/packet.h"

#define QSZ 256
#define CHAINS 128                 /* chains per queue: descriptor pairs 2k, 2k+1 */
#define GUEST_CID 42
#define RXBUF 4096
#define MEM_SIZE (64u << 20)
#define QUEUE_BASE 0x100000ull     /* queue q rings at QUEUE_BASE + q * 0x10000 */
#define RX_AREA 0x400000ull        /* rx chain k: header at +k*8192, data at +64 */
#define TX_AREA 0x800000ull        /* tx chain k: header at +k*0x10000, payload at +64 */
#define BIG_AREA 0x1800000ull      /* 1 MiB for oversized payloads */

struct fake_q {
	uint64_t desc, avail, used;
	uint16_t avail_idx;
	uint16_t used_seen;
};

struct pkt {
	struct vsock_hdr h;
	uint32_t total;              /* bytes the device wrote */
	uint8_t data[RXBUF];
};

static struct guest_memory mem;
static struct evloop loop;
static struct virtio_vsock *v;
static struct virtio_dev *d;
static struct fake_q fq[3];
static char dir[64], uds[128];
static int irqs[3], config_irqs;
static uint32_t g_buf_alloc = 256 * 1024;   /* what the fake guest advertises */
static uint32_t g_fwd_cnt;

/* --- fake transport and driver --- */

static void sig_queue(struct virtio_dev *dev, unsigned q)
{
	(void)dev;
	irqs[q]++;
}

static void sig_config(struct virtio_dev *dev)
{
	(void)dev;
	config_irqs++;
}

static const struct virtio_transport_ops fake_transport = { sig_queue, sig_config };

static uint8_t *gp(uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_memory_ptr(&mem, gpa, len);
	cr_assert_not_null(p, "gpa %#llx", (unsigned long long)gpa);
	return p;
}

static void put_desc(unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *p = gp(fq[q].desc + 16ull * i, 16);
	put_le64(p, addr);
	put_le32(p + 8, len);
	put_le16(p + 12, flags);
	put_le16(p + 14, next);
}

static void publish(unsigned q, uint16_t head)
{
	put_le16(gp(fq[q].avail + 4 + 2ull * (fq[q].avail_idx % QSZ), 2), head);
	fq[q].avail_idx++;
	put_le16(gp(fq[q].avail + 2, 2), fq[q].avail_idx);
}

static uint16_t used_idx(unsigned q)
{
	return get_le16(gp(fq[q].used + 2, 2));
}

static void kick(unsigned q)
{
	pthread_mutex_lock(&d->lock);
	d->ops->queue_notify(d, q);
	pthread_mutex_unlock(&d->lock);
}

static void driver_start(void)
{
	memset(fq, 0, sizeof(fq));
	for (unsigned q = 0; q < 3; q++) {
		uint64_t base = QUEUE_BASE + q * 0x10000ull;
		fq[q].desc = base;
		fq[q].avail = base + 0x1000;
		fq[q].used = base + 0x2000;
		memset(gp(base, 0x3000), 0, 0x3000);
		d->vq[q].size = QSZ;
		d->vq[q].desc_gpa = fq[q].desc;
		d->vq[q].avail_gpa = fq[q].avail;
		d->vq[q].used_gpa = fq[q].used;
		d->queue_enabled[q] = true;
	}
	pthread_mutex_lock(&d->lock);
	d->guest_features = d->host_features & ~(1ULL << VIRTIO_RING_F_EVENT_IDX);
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				       VIRTIO_STATUS_FEATURES_OK);
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	pthread_mutex_unlock(&d->lock);
	cr_assert(virtio_dev_running(d));
}

/* Posts n rx chains (header + 4 KiB, two descriptors) and kicks. */
static void rx_post_n(unsigned n, uint32_t data_len)
{
	for (unsigned i = 0; i < n; i++) {
		cr_assert_lt((uint16_t)(fq[0].avail_idx - fq[0].used_seen), CHAINS,
			     "test posts more rx chains than it has");
		unsigned k = fq[0].avail_idx % CHAINS;
		uint64_t hdr = RX_AREA + k * 8192ull;
		put_desc(0, 2 * k, hdr, VSOCK_HDR_SIZE, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
			 (uint16_t)(2 * k + 1));
		put_desc(0, 2 * k + 1, hdr + 64, data_len, VIRTQ_DESC_F_WRITE, 0);
		publish(0, (uint16_t)(2 * k));
	}
	kick(VSOCK_RXQ);
}

static void rx_post(unsigned n)
{
	rx_post_n(n, RXBUF);
}

/* Takes the next used rx chain, if any. */
static bool rx_get(struct pkt *p)
{
	if (fq[0].used_seen == used_idx(0))
		return false;
	uint8_t *e = gp(fq[0].used + 4 + 8ull * (fq[0].used_seen % QSZ), 8);
	uint32_t head = get_le32(e), len = get_le32(e + 4);
	cr_assert_eq(head % 2, 0);
	cr_assert_eq(head / 2, fq[0].used_seen % CHAINS, "device used rx chains out of order");
	fq[0].used_seen++;
	uint64_t hdr = RX_AREA + (head / 2) * 8192ull;
	cr_assert_geq(len, VSOCK_HDR_SIZE);
	vsock_hdr_decode(&p->h, gp(hdr, VSOCK_HDR_SIZE));
	p->total = len;
	cr_assert_eq(len, VSOCK_HDR_SIZE + p->h.len, "used length %u, header len %u", len,
		     p->h.len);
	cr_assert_leq(p->h.len, RXBUF);
	memcpy(p->data, gp(hdr + 64, RXBUF), p->h.len);
	/* Every packet the device sends is well formed (an RST may name the CID it answers). */
	if (p->h.op != VSOCK_OP_RST)
		cr_assert_eq(p->h.src_cid, VSOCK_HOST_CID);
	cr_assert_eq(p->h.dst_cid, GUEST_CID);
	cr_assert_eq(p->h.type, VSOCK_TYPE_STREAM);
	return true;
}

/* Sends a tx chain: header descriptor + optional payload descriptor at payload_gpa. */
static void tx_chain(const struct vsock_hdr *h, uint64_t payload_gpa, uint32_t payload_len,
		     bool kick_now)
{
	unsigned k = fq[1].avail_idx % CHAINS;
	cr_assert_lt((uint16_t)(fq[1].avail_idx - used_idx(1)), CHAINS);
	uint64_t hdr = TX_AREA + k * 0x10000ull;
	vsock_hdr_encode(h, gp(hdr, VSOCK_HDR_SIZE));
	if (payload_len) {
		put_desc(1, 2 * k, hdr, VSOCK_HDR_SIZE, VIRTQ_DESC_F_NEXT, (uint16_t)(2 * k + 1));
		put_desc(1, 2 * k + 1, payload_gpa, payload_len, 0, 0);
	} else {
		put_desc(1, 2 * k, hdr, VSOCK_HDR_SIZE, 0, 0);
	}
	publish(1, (uint16_t)(2 * k));
	if (kick_now)
		kick(VSOCK_TXQ);
}

static void g_send_full(uint16_t op, uint32_t src_port, uint32_t dst_port, uint32_t flags,
			const void *data, uint32_t len)
{
	struct vsock_hdr h = {
		.src_cid = GUEST_CID, .dst_cid = VSOCK_HOST_CID, .src_port = src_port,
		.dst_port = dst_port, .len = len, .type = VSOCK_TYPE_STREAM, .op = op,
		.flags = flags, .buf_alloc = g_buf_alloc, .fwd_cnt = g_fwd_cnt,
	};
	unsigned k = fq[1].avail_idx % CHAINS;
	uint64_t payload = TX_AREA + k * 0x10000ull + 64;
	cr_assert_leq(len, 0x10000 - 64);
	if (len)
		memcpy(gp(payload, len), data, len);
	tx_chain(&h, payload, len, true);
	cr_assert_eq(used_idx(1), fq[1].avail_idx, "device left a tx chain unconsumed");
}

static void g_send(uint16_t op, uint32_t src_port, uint32_t dst_port)
{
	g_send_full(op, src_port, dst_port, 0, NULL, 0);
}

/* Runs the loop's handlers on this thread until it has been quiet for quiet_ms. */
static void pump(int quiet_ms)
{
	struct epoll_event evs[16];
	for (int iter = 0; iter < 5000; iter++) {
		int n = epoll_wait(loop.epfd, evs, 16, quiet_ms);
		if (n <= 0)
			return;
		for (int i = 0; i < n; i++) {
			struct evloop_handler *h = evs[i].data.ptr;
			if (h)
				h->fn(h->opaque, evs[i].events);
		}
	}
}

/* Pumps until a packet arrives (or fails the test). */
static void expect_pkt(struct pkt *p)
{
	for (int i = 0; i < 200; i++) {
		if (rx_get(p))
			return;
		pump(10);
	}
	cr_assert_fail("no packet from the device");
}

static void expect_no_pkt(void)
{
	struct pkt p;
	pump(30);
	cr_assert_not(rx_get(&p), "unexpected packet op %u %u->%u", p.h.op, p.h.src_port,
		      p.h.dst_port);
}

/* --- host side helpers --- */

static void sun_set(struct sockaddr_un *sa, const char *path)
{
	size_t n = strlen(path);
	cr_assert_lt(n, sizeof(sa->sun_path));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, n + 1);
}

static int host_dial(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	sun_set(&sa, path);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect %s: %s", path,
		     strerror(errno));
	return fd;
}

static int host_listen(uint32_t port)
{
	char path[160];
	snprintf(path, sizeof(path), "%s_%u", uds, port);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	sun_set(&sa, path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(fd, 8), 0);
	return fd;
}

static void hwrite(int fd, const void *buf, size_t len)
{
	cr_assert_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Reads exactly len bytes, pumping the VMM side meanwhile. */
static void hread_exact(int fd, void *buf, size_t len)
{
	size_t got = 0;
	for (int i = 0; got < len && i < 2000; i++) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, MSG_DONTWAIT);
		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		cr_assert(n < 0 && errno == EAGAIN, "host read: %zd (%s) after %zu of %zu", n,
			  n < 0 ? strerror(errno) : "EOF", got, len);
		pump(5);
	}
	cr_assert_eq(got, len);
}

/* True if fd reads end-of-file (or reset) within a while, with no data before it. */
static bool host_sees_eof(int fd)
{
	for (int i = 0; i < 300; i++) {
		char c;
		ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n > 0)
			return false;
		pump(5);
	}
	return false;
}

/* Host-initiated connection to guest port gport, accepted by the fake guest. */
static int open_host_conn(uint32_t gport, uint32_t *hport)
{
	int fd = host_dial(uds);
	char line[32];
	int n = snprintf(line, sizeof(line), "CONNECT %u\n", gport);
	hwrite(fd, line, (size_t)n);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_REQUEST);
	cr_assert_eq(p.h.dst_port, gport);
	cr_assert_geq(p.h.src_port, VSOCK_HOST_PORT_FIRST);
	cr_assert_eq(p.h.buf_alloc, VSOCK_BUF_ALLOC);
	*hport = p.h.src_port;
	g_send(VSOCK_OP_RESPONSE, gport, *hport);
	char want[32], got[32] = { 0 };
	n = snprintf(want, sizeof(want), "OK %u\n", *hport);
	hread_exact(fd, got, (size_t)n);
	cr_assert_str_eq(got, want);
	return fd;
}

/*
 * Collects RW payload for (hport -> gport) until `len` bytes arrived, consuming it at once and
 * telling the device as Linux does (CREDIT_UPDATE when a CREDIT_REQUEST comes or 64 KiB were
 * consumed since the last update); other packets fail the test.
 */
static void guest_read(uint32_t hport, uint32_t gport, uint8_t *buf, size_t len)
{
	static uint32_t last_update;
	size_t got = 0;
	struct pkt p;
	while (got < len) {
		expect_pkt(&p);
		cr_assert_eq(p.h.src_port, hport);
		cr_assert_eq(p.h.dst_port, gport);
		if (p.h.op == VSOCK_OP_CREDIT_UPDATE)
			continue;
		if (p.h.op == VSOCK_OP_CREDIT_REQUEST) {
			last_update = g_fwd_cnt;
			g_send(VSOCK_OP_CREDIT_UPDATE, gport, hport);
			continue;
		}
		cr_assert_eq(p.h.op, VSOCK_OP_RW, "op %u", p.h.op);
		cr_assert_leq(got + p.h.len, len, "more data than sent");
		memcpy(buf + got, p.data, p.h.len);
		got += p.h.len;
		g_fwd_cnt += p.h.len;
		if (g_fwd_cnt - last_update >= 65536) {
			last_update = g_fwd_cnt;
			g_send(VSOCK_OP_CREDIT_UPDATE, gport, hport);
		}
		if ((uint16_t)(fq[0].avail_idx - fq[0].used_seen) < 8)
			rx_post(32);
	}
}

/* The device's connection for a host port (NULL if none). */
static struct vsock_conn *conn_for(uint32_t hport)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (v->mux.conns[i].state != VSOCK_CONN_FREE && v->mux.conns[i].local_port == hport)
			return &v->mux.conns[i];
	return NULL;
}

/*
 * Fake guest sends to a host socket nobody reads until its credit is gone, tracking credit from
 * the device's CREDIT_UPDATEs as a driver would. Returns bytes sent; *fwd_out: last fwd_cnt.
 */
static uint32_t guest_fill_host(uint32_t gport, uint32_t hport, const uint8_t *src, size_t max,
				uint32_t *fwd_out)
{
	uint32_t sent = 0, fwd = 0;
	struct pkt p;
	for (int round = 0; round < 1000; round++) {
		uint32_t credit = VSOCK_BUF_ALLOC - (sent - fwd);
		if (!credit)
			break;
		uint32_t n = credit < 60000 ? credit : 60000;
		cr_assert_lt(sent + n, max);
		g_send_full(VSOCK_OP_RW, gport, hport, 0, src + sent, n);
		sent += n;
		g_send(VSOCK_OP_CREDIT_REQUEST, gport, hport);
		while (rx_get(&p)) {
			cr_assert_eq(p.h.op, VSOCK_OP_CREDIT_UPDATE);
			cr_assert_eq(p.h.buf_alloc, VSOCK_BUF_ALLOC);
			fwd = p.h.fwd_cnt;
		}
		cr_assert_leq(sent - fwd, VSOCK_BUF_ALLOC);
	}
	*fwd_out = fwd;
	return sent;
}

static void fill_pattern(uint8_t *b, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(i * 7 + seed + (i >> 8));
}

/* --- fixture --- */

static void setup(void)
{
	struct cv_error err = { 0 };
	snprintf(dir, sizeof(dir), "/tmp/cvisor-vsock-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(uds, sizeof(uds), "%s/v.sock", dir);
	cr_assert_eq(guest_memory_init(&mem, MEM_SIZE, &err), 0, "%s", err.msg);
	cr_assert_eq(evloop_init(&loop, &err), 0, "%s", err.msg);
	struct vsock_config cfg = { .enabled = true, .cid = GUEST_CID, .uds_path = uds };
	v = virtio_vsock_create(&cfg, &mem, &loop, &err);
	cr_assert_not_null(v, "%s", err.msg);
	d = &v->dev;
	d->transport = &fake_transport;
	g_buf_alloc = 256 * 1024;
	g_fwd_cnt = 0;
	driver_start();
}

static void cleanup_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0) {
		/* best effort */
	}
}

static void teardown(void)
{
	if (v) {
		pthread_mutex_lock(&d->lock);
		virtio_dev_reset(d);
		pthread_mutex_unlock(&d->lock);
		virtio_vsock_destroy(v);
		v = NULL;
	}
	evloop_destroy(&loop);
	guest_memory_free(&mem);
	cleanup_dir();
}

TestSuite(vsock, .init = setup, .fini = teardown, .timeout = 60);

/* --- pure helpers --- */

Test(vsock_pure, header_layout_round_trip)
{
	struct vsock_hdr h = {
		.src_cid = 0x1122334455667788ull, .dst_cid = 3, .src_port = 0xdeadbeef,
		.dst_port = 1024, .len = 4096, .type = 1, .op = VSOCK_OP_RW, .flags = 3,
		.buf_alloc = 262144, .fwd_cnt = 0xfffffff0,
	}, back;
	uint8_t raw[VSOCK_HDR_SIZE];
	vsock_hdr_encode(&h, raw);
	cr_assert_eq(raw[0], 0x88, "little-endian src_cid");
	cr_assert_eq(get_le32(raw + 16), 0xdeadbeef);
	cr_assert_eq(get_le16(raw + 30), VSOCK_OP_RW, "op at offset 30");
	cr_assert_eq(get_le32(raw + 40), 0xfffffff0, "fwd_cnt at offset 40");
	vsock_hdr_decode(&back, raw);
	cr_assert(back.src_cid == h.src_cid && back.dst_cid == h.dst_cid &&
		  back.src_port == h.src_port && back.dst_port == h.dst_port && back.len == h.len &&
		  back.type == h.type && back.op == h.op && back.flags == h.flags &&
		  back.buf_alloc == h.buf_alloc && back.fwd_cnt == h.fwd_cnt);
}

Test(vsock_pure, peer_credit_wraps_and_clamps)
{
	cr_assert_eq(vsock_peer_credit(1000, 0, 0), 1000);
	cr_assert_eq(vsock_peer_credit(1000, 0, 400), 600);
	cr_assert_eq(vsock_peer_credit(1000, 0, 1000), 0);
	/* counters wrapped: sent 0x10 after 2^32, peer consumed up to 0xfffffff0 */
	cr_assert_eq(vsock_peer_credit(1000, 0xfffffff0u, 0x10), 1000 - 0x20);
	cr_assert_eq(vsock_peer_credit(1000, 500, 400), 0, "peer consumed more than sent");
	cr_assert_eq(vsock_peer_credit(100, 0, 400), 0, "peer shrank its buffer");
}

Test(vsock_pure, connect_line)
{
	uint32_t port = 0;
	cr_assert(vsock_parse_connect("CONNECT 1024\n", 13, &port));
	cr_assert_eq(port, 1024);
	cr_assert(vsock_parse_connect("CONNECT 4294967294\r\n", 20, &port));
	cr_assert_eq(port, 4294967294u);
	cr_assert_not(vsock_parse_connect("CONNECT 4294967295\n", 19, &port), "VMADDR_PORT_ANY");
	cr_assert_not(vsock_parse_connect("CONNECT 99999999999\n", 20, &port));
	cr_assert_not(vsock_parse_connect("CONNECT \n", 9, &port));
	cr_assert_not(vsock_parse_connect("CONNECT 12a\n", 12, &port));
	cr_assert_not(vsock_parse_connect("CONNECT -1\n", 11, &port));
	cr_assert_not(vsock_parse_connect("connect 12\n", 11, &port));
	cr_assert_not(vsock_parse_connect("CONNECT 12", 10, &port));
	cr_assert_not(vsock_parse_connect("CONNECT  12\n", 12, &port));
}

/* --- device --- */

Test(vsock, config_space_holds_guest_cid)
{
	uint8_t b[8];
	d->ops->config_read(d, 0, b, 8);
	cr_assert_eq(get_le64(b), GUEST_CID);
	d->ops->config_read(d, 4, b, 4);
	cr_assert_eq(get_le32(b), 0);
	d->ops->config_read(d, 6, b, 4);
	cr_assert_eq(get_le32(b), 0, "reads past the end are zero");
	uint8_t w[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	d->ops->config_write(d, 0, w, 8);
	d->ops->config_read(d, 0, b, 8);
	cr_assert_eq(get_le64(b), GUEST_CID, "guest_cid is read-only");
	cr_assert_eq(d->ops->device_id, VIRTIO_ID_VSOCK);
}

Test(vsock, host_connect_and_data_both_ways)
{
	rx_post(32);
	uint32_t hport;
	int fd = open_host_conn(1234, &hport);

	hwrite(fd, "hello guest", 11);
	uint8_t buf[16] = { 0 };
	guest_read(hport, 1234, buf, 11);
	cr_assert_arr_eq(buf, "hello guest", 11);

	g_send_full(VSOCK_OP_RW, 1234, hport, 0, "hello host", 10);
	char hb[16] = { 0 };
	hread_exact(fd, hb, 10);
	cr_assert_str_eq(hb, "hello host");

	/* 300 KB host -> guest: more than one rx buffer and more than one socket read. */
	size_t big = 300 * 1000;
	uint8_t *src = malloc(big), *dst = malloc(big);
	fill_pattern(src, big, 1);
	size_t off = 0;
	while (off < big) {
		ssize_t n = send(fd, src + off, big - off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0)
			off += (size_t)n;
		guest_read(hport, 1234, dst + (off - (size_t)(n > 0 ? n : 0)), n > 0 ? (size_t)n : 0);
	}
	cr_assert_eq(memcmp(src, dst, big), 0, "host->guest bytes differ");

	/* 200 KB guest -> host in 50 KB packets, read back on the host. */
	for (int i = 0; i < 4; i++)
		g_send_full(VSOCK_OP_RW, 1234, hport, 0, src + i * 50000, 50000);
	hread_exact(fd, dst, 200000);
	cr_assert_eq(memcmp(src, dst, 200000), 0, "guest->host bytes differ");
	cr_assert_eq(v->mux.stats.bad_packets, 0);
	free(src);
	free(dst);
	close(fd);
}

Test(vsock, bytes_after_connect_line_are_kept)
{
	rx_post(8);
	int fd = host_dial(uds);
	hwrite(fd, "CONNECT 77\nearly bytes", 22);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_REQUEST);
	expect_no_pkt();   /* nothing relayed before the guest accepts */
	uint32_t hport = p.h.src_port;
	g_send(VSOCK_OP_RESPONSE, 77, hport);
	char got[32] = { 0 }, want[32];
	int n = snprintf(want, sizeof(want), "OK %u\n", hport);
	hread_exact(fd, got, (size_t)n);
	cr_assert_str_eq(got, want);
	uint8_t b[16] = { 0 };
	guest_read(hport, 77, b, 11);
	cr_assert_arr_eq(b, "early bytes", 11);
	close(fd);
}

Test(vsock, host_connect_to_closed_guest_port)
{
	rx_post(8);
	int fd = host_dial(uds);
	hwrite(fd, "CONNECT 9\n", 10);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_REQUEST);
	/* Nobody listens in the guest: it answers RST and the host sees EOF without "OK". */
	g_send(VSOCK_OP_RST, 9, p.h.src_port);
	cr_assert(host_sees_eof(fd));
	expect_no_pkt();
	cr_assert_eq(v->mux.n_used, 0);
	close(fd);
}

Test(vsock, bad_connect_lines_close_the_socket)
{
	static const char *const bad[] = {
		"HELLO\n", "CONNECT abc\n", "CONNECT\n", "CONNECT 4294967295\n",
		"CONNECT 1234567890123456789012345678901234567890",   /* no newline, too long */
	};
	rx_post(8);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = host_dial(uds);
		hwrite(fd, bad[i], strlen(bad[i]));
		cr_assert(host_sees_eof(fd), "'%s' was not refused", bad[i]);
		close(fd);
	}
	/* The line may also arrive in pieces. */
	int fd = host_dial(uds);
	hwrite(fd, "CONN", 4);
	pump(20);
	hwrite(fd, "ECT 5\n", 6);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_REQUEST);
	cr_assert_eq(p.h.dst_port, 5);
	close(fd);
	/* Closing before the guest answered: the RESPONSE finds a dead socket, guest gets RST. */
	g_send(VSOCK_OP_RESPONSE, 5, p.h.src_port);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(p.h.dst_port, 5);
	expect_no_pkt();
}

Test(vsock, silent_host_and_silent_guest_time_out)
{
	v->mux.line_timeout_ms = 150;
	v->mux.connect_timeout_ms = 150;
	rx_post(8);
	int quiet = host_dial(uds);
	pump(50);
	cr_assert(host_sees_eof(quiet) || (pump(200), host_sees_eof(quiet)),
		  "no CONNECT line: closed after the timeout");
	close(quiet);

	int fd = host_dial(uds);
	hwrite(fd, "CONNECT 3\n", 10);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_REQUEST);
	/* The guest never answers: the host is closed and the guest told to forget it. */
	pump(250);
	cr_assert(host_sees_eof(fd));
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(p.h.dst_port, 3);
	cr_assert_eq(v->mux.n_used, 0);
	close(fd);
}

Test(vsock, guest_connect_and_data_both_ways)
{
	rx_post(32);
	int lfd = host_listen(5000);
	g_send(VSOCK_OP_REQUEST, 777, 5000);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RESPONSE);
	cr_assert_eq(p.h.src_port, 5000);
	cr_assert_eq(p.h.dst_port, 777);
	int fd = accept(lfd, NULL, NULL);
	cr_assert_geq(fd, 0);

	g_send_full(VSOCK_OP_RW, 777, 5000, 0, "ping", 4);
	char b[8] = { 0 };
	hread_exact(fd, b, 4);
	cr_assert_str_eq(b, "ping");
	hwrite(fd, "pong!", 5);
	uint8_t gb[8] = { 0 };
	guest_read(5000, 777, gb, 5);
	cr_assert_arr_eq(gb, "pong!", 5);
	close(fd);
	close(lfd);
}

Test(vsock, guest_connect_without_listener_gets_rst)
{
	rx_post(8);
	g_send(VSOCK_OP_REQUEST, 778, 5001);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(p.h.src_port, 5001);
	cr_assert_eq(p.h.dst_port, 778);
	cr_assert_eq(v->mux.n_used, 0);
	expect_no_pkt();
}

Test(vsock, host_to_guest_respects_guest_credit)
{
	rx_post(64);
	g_buf_alloc = 8192;
	uint32_t hport;
	int fd = open_host_conn(1000, &hport);
	uint8_t src[65536];
	fill_pattern(src, sizeof(src), 3);
	hwrite(fd, src, sizeof(src));
	pump(30);
	/* Exactly the advertised 8 KiB arrives, then a CREDIT_REQUEST, then nothing. */
	size_t got = 0;
	uint8_t dst[65536];
	struct pkt p;
	bool asked = false;
	while (rx_get(&p)) {
		if (p.h.op == VSOCK_OP_CREDIT_REQUEST) {
			asked = true;
			continue;
		}
		cr_assert_eq(p.h.op, VSOCK_OP_RW);
		memcpy(dst + got, p.data, p.h.len);
		got += p.h.len;
	}
	cr_assert_eq(got, 8192, "sent %zu bytes against 8192 of credit", got);
	cr_assert(asked, "no CREDIT_REQUEST when out of credit");
	expect_no_pkt();
	/* Consuming 8 KiB and saying so opens the window by exactly that much. */
	g_fwd_cnt = 8192;
	g_send(VSOCK_OP_CREDIT_UPDATE, 1000, hport);
	pump(30);
	size_t before = got;
	while (rx_get(&p)) {
		if (p.h.op == VSOCK_OP_CREDIT_REQUEST)
			continue;
		cr_assert_eq(p.h.op, VSOCK_OP_RW);
		memcpy(dst + got, p.data, p.h.len);
		got += p.h.len;
	}
	cr_assert_eq(got - before, 8192);
	/* A big window lets the rest through. */
	g_fwd_cnt = (uint32_t)got;
	g_buf_alloc = 1 << 20;
	g_send(VSOCK_OP_CREDIT_UPDATE, 1000, hport);
	guest_read(hport, 1000, dst + got, sizeof(src) - got);
	cr_assert_eq(memcmp(src, dst, sizeof(src)), 0);
	close(fd);
}

Test(vsock, guest_to_host_credit_tracks_what_the_host_reads)
{
	rx_post(64);
	uint32_t hport;
	int fd = open_host_conn(1001, &hport);
	/* The host does not read: the socket fills, then our buffer, then the credit is gone. */
	static uint8_t src[4 << 20];
	fill_pattern(src, sizeof(src), 5);
	uint32_t fwd;
	uint32_t sent = guest_fill_host(1001, hport, src, sizeof(src), &fwd);
	cr_assert_eq(sent - fwd, VSOCK_BUF_ALLOC, "credit never ran out");
	cr_assert_gt(fwd, 0, "the socket took nothing");
	struct vsock_conn *c = conn_for(hport);
	cr_assert_not_null(c);
	cr_assert_eq(c->out_len, VSOCK_BUF_ALLOC, "what the socket refused is buffered, no more");
	cr_assert(c->watched & EPOLLOUT, "waiting for the socket to drain");

	/* The host drains: data intact and in order, and the credit comes back. */
	uint8_t *dst = malloc(sent);
	hread_exact(fd, dst, sent);
	cr_assert_eq(memcmp(src, dst, sent), 0, "bytes lost or reordered under back-pressure");
	pump(20);
	struct pkt p;
	uint32_t last = fwd;
	while (rx_get(&p)) {
		cr_assert_eq(p.h.op, VSOCK_OP_CREDIT_UPDATE);
		last = p.h.fwd_cnt;
	}
	cr_assert_gt(last, fwd, "no CREDIT_UPDATE while the buffer drained");
	g_send(VSOCK_OP_CREDIT_REQUEST, 1001, hport);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_CREDIT_UPDATE);
	cr_assert_eq(p.h.fwd_cnt, sent, "everything was forwarded");
	cr_assert_not(c->watched & EPOLLOUT);
	free(dst);
	close(fd);
}

Test(vsock, guest_close_flushes_buffered_data_first)
{
	rx_post(64);
	uint32_t hport;
	int fd = open_host_conn(1011, &hport);
	static uint8_t src[4 << 20];
	fill_pattern(src, sizeof(src), 9);
	uint32_t fwd;
	uint32_t sent = guest_fill_host(1011, hport, src, sizeof(src), &fwd);
	/* The guest closes while 256 KiB still wait for the host: no RST until they are out. */
	g_send(VSOCK_OP_SHUTDOWN, 1011, hport);
	g_send_full(VSOCK_OP_SHUTDOWN, 1011, hport, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND,
		    NULL, 0);
	expect_no_pkt();
	uint8_t *dst = malloc(sent);
	hread_exact(fd, dst, sent);
	cr_assert_eq(memcmp(src, dst, sent), 0);
	cr_assert(host_sees_eof(fd));
	struct pkt p;
	do
		expect_pkt(&p);
	while (p.h.op == VSOCK_OP_CREDIT_UPDATE);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(v->mux.n_used, 0);
	free(dst);
	close(fd);
}

Test(vsock, guest_close_gives_up_on_a_host_that_never_reads)
{
	v->mux.close_timeout_ms = 150;
	rx_post(64);
	uint32_t hport;
	int fd = open_host_conn(1012, &hport);
	static uint8_t src[4 << 20];
	uint32_t fwd;
	guest_fill_host(1012, hport, src, sizeof(src), &fwd);
	g_send_full(VSOCK_OP_SHUTDOWN, 1012, hport, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND,
		    NULL, 0);
	pump(300);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(v->mux.n_used, 0, "buffer and socket released");
	close(fd);
}

Test(vsock, no_credit_means_no_reading)
{
	rx_post(64);
	g_buf_alloc = 4096;
	uint32_t hport;
	int fd = open_host_conn(1013, &hport);
	static uint8_t big[1 << 20];
	/* The host writes far more than the guest can take; the VMM must not soak it up. */
	ssize_t n = send(fd, big, sizeof(big), MSG_DONTWAIT | MSG_NOSIGNAL);
	cr_assert_gt(n, 0);
	pump(30);
	struct pkt p;
	size_t got = 0;
	while (rx_get(&p))
		if (p.h.op == VSOCK_OP_RW)
			got += p.h.len;
	cr_assert_eq(got, 4096);
	struct vsock_conn *c = conn_for(hport);
	cr_assert_not_null(c);
	cr_assert_not(c->watched & EPOLLIN, "reading the socket without credit");
	/* Whatever the host wrote beyond 4 KiB is still in the socket, not in the VMM. */
	int unread = -1;
	cr_assert_eq(ioctl(c->h.fd, SIOCINQ, &unread), 0);
	cr_assert_eq(unread, n - 4096);
	close(fd);
}

Test(vsock, data_beyond_credit_resets)
{
	rx_post(8);
	uint32_t hport;
	int fd = open_host_conn(1002, &hport);
	/* One packet larger than our whole buffer. */
	uint32_t len = VSOCK_BUF_ALLOC + 1;
	struct vsock_hdr h = {
		.src_cid = GUEST_CID, .dst_cid = VSOCK_HOST_CID, .src_port = 1002, .dst_port = hport,
		.len = len, .type = VSOCK_TYPE_STREAM, .op = VSOCK_OP_RW, .buf_alloc = g_buf_alloc,
	};
	memset(gp(BIG_AREA, len), 'x', len);
	tx_chain(&h, BIG_AREA, len, true);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(p.h.dst_port, 1002);
	cr_assert(host_sees_eof(fd), "host socket must be closed, not fed");
	cr_assert_eq(v->mux.n_used, 0);
	close(fd);
}

Test(vsock, credit_request_is_answered)
{
	rx_post(8);
	uint32_t hport;
	int fd = open_host_conn(1003, &hport);
	g_send_full(VSOCK_OP_RW, 1003, hport, 0, "abc", 3);
	char b[4];
	hread_exact(fd, b, 3);
	g_send(VSOCK_OP_CREDIT_REQUEST, 1003, hport);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_CREDIT_UPDATE);
	cr_assert_eq(p.h.fwd_cnt, 3);
	cr_assert_eq(p.h.buf_alloc, VSOCK_BUF_ALLOC);
	cr_assert_eq(p.h.src_port, hport);
	cr_assert_eq(p.h.dst_port, 1003);
	close(fd);
}

Test(vsock, guest_half_close_then_host_close)
{
	rx_post(16);
	uint32_t hport;
	int fd = open_host_conn(1004, &hport);
	/* Guest shuts its sending side: the host reads EOF but can still send. */
	g_send_full(VSOCK_OP_RW, 1004, hport, 0, "last", 4);
	g_send_full(VSOCK_OP_SHUTDOWN, 1004, hport, VSOCK_SHUTDOWN_SEND, NULL, 0);
	char b[8] = { 0 };
	hread_exact(fd, b, 4);
	cr_assert_str_eq(b, "last");
	cr_assert(host_sees_eof(fd));
	hwrite(fd, "reply", 5);
	uint8_t gb[8] = { 0 };
	guest_read(hport, 1004, gb, 5);
	cr_assert_arr_eq(gb, "reply", 5);
	/* Data after its own SHUTDOWN(SEND) is a protocol error... tested elsewhere. Host closes: */
	close(fd);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_SHUTDOWN);
	cr_assert_eq(p.h.flags, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
	/* The guest releases its socket with RST; the connection is forgotten. */
	g_send(VSOCK_OP_RST, 1004, hport);
	expect_no_pkt();
	cr_assert_eq(v->mux.n_used, 0);
}

Test(vsock, host_half_close_then_guest_close)
{
	rx_post(16);
	int lfd = host_listen(6000);
	g_send(VSOCK_OP_REQUEST, 900, 6000);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RESPONSE);
	int fd = accept(lfd, NULL, NULL);
	/* Host shuts its write side: the guest is told SHUTDOWN(SEND) only, after the data. */
	hwrite(fd, "bye", 3);
	shutdown(fd, SHUT_WR);
	uint8_t gb[4] = { 0 };
	guest_read(6000, 900, gb, 3);
	cr_assert_arr_eq(gb, "bye", 3);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_SHUTDOWN);
	cr_assert_eq(p.h.flags, VSOCK_SHUTDOWN_SEND);
	/* The guest can still send. */
	g_send_full(VSOCK_OP_RW, 900, 6000, 0, "more", 4);
	char b[8] = { 0 };
	hread_exact(fd, b, 4);
	cr_assert_str_eq(b, "more");
	/* Guest closes: the host sees EOF and the guest gets RST (its socket may go). */
	g_send_full(VSOCK_OP_SHUTDOWN, 900, 6000, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, NULL,
		    0);
	cr_assert(host_sees_eof(fd));
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(p.h.dst_port, 900);
	cr_assert_eq(v->mux.n_used, 0);
	/* The same port pair can be used again. */
	g_send(VSOCK_OP_REQUEST, 900, 6000);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RESPONSE);
	close(fd);
	close(lfd);
}

Test(vsock, rst_both_directions)
{
	rx_post(16);
	uint32_t hport;
	int fd = open_host_conn(1005, &hport);
	g_send(VSOCK_OP_RST, 1005, hport);
	cr_assert(host_sees_eof(fd));
	cr_assert_eq(v->mux.n_used, 0);
	close(fd);
	/* Late data for the forgotten connection is answered with RST. */
	g_send_full(VSOCK_OP_RW, 1005, hport, 0, "late", 4);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);

	/* Host side dies with unread data in its socket: the guest gets RST. */
	fd = open_host_conn(1006, &hport);
	g_send_full(VSOCK_OP_RW, 1006, hport, 0, "unread", 6);
	close(fd);
	g_send_full(VSOCK_OP_RW, 1006, hport, 0, "x", 1);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST, "op %u", p.h.op);
	cr_assert_eq(p.h.dst_port, 1006);
	expect_no_pkt();
	cr_assert_eq(v->mux.n_used, 0);
}

Test(vsock, hostile_packets_are_dropped_or_reset)
{
	rx_post(64);
	struct pkt p;
	uint32_t hport;
	int fd = open_host_conn(1007, &hport);

	/* A chain shorter than a header: dropped. */
	unsigned k = fq[1].avail_idx % CHAINS;
	put_desc(1, 2 * k, TX_AREA + k * 0x10000ull, 10, 0, 0);
	publish(1, (uint16_t)(2 * k));
	kick(VSOCK_TXQ);
	expect_no_pkt();

	/* Spoofed source CID: dropped, nobody to answer. */
	struct vsock_hdr h = {
		.src_cid = 99, .dst_cid = VSOCK_HOST_CID, .src_port = 1, .dst_port = 2,
		.type = VSOCK_TYPE_STREAM, .op = VSOCK_OP_REQUEST,
	};
	tx_chain(&h, 0, 0, true);
	expect_no_pkt();

	/* Another destination CID, or a non-stream type: RST. */
	h.src_cid = GUEST_CID;
	h.dst_cid = 7;
	tx_chain(&h, 0, 0, true);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(p.h.src_cid, 7, "the RST answers for the CID the guest addressed");
	cr_assert_eq(p.h.src_port, 2);
	cr_assert_eq(p.h.dst_port, 1);
	h.dst_cid = VSOCK_HOST_CID;
	h.type = 2;
	tx_chain(&h, 0, 0, true);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	h.type = VSOCK_TYPE_STREAM;

	/* Unknown op, data and RESPONSE for unknown connections: RST each; RST: nothing. */
	g_send(42, 5, 6);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(p.h.src_port, 6);
	cr_assert_eq(p.h.dst_port, 5);
	g_send_full(VSOCK_OP_RW, 5, 6, 0, "zz", 2);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	g_send(VSOCK_OP_RESPONSE, 5, 6);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	g_send(VSOCK_OP_RST, 5, 6);
	expect_no_pkt();

	/* len beyond the chain, on the live connection: it is reset. */
	h.src_port = 1007;
	h.dst_port = hport;
	h.op = VSOCK_OP_RW;
	h.len = 0xffffffff;
	uint64_t pl = TX_AREA + (fq[1].avail_idx % CHAINS) * 0x10000ull + 64;
	tx_chain(&h, pl, 100, true);
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_RST);
	cr_assert_eq(p.h.dst_port, 1007);
	cr_assert(host_sees_eof(fd));
	close(fd);
	cr_assert_geq(v->mux.stats.bad_packets, 6);
	cr_assert(virtio_dev_running(d), "garbage must not break the device");

	/* Random headers (valid source CID so they reach the state machine). */
	srand(1234);
	for (int i = 0; i < 3000; i++) {
		uint32_t len = (uint32_t)(rand() % 3 == 0 ? rand() : rand() % 200);
		struct vsock_hdr r = {
			.src_cid = GUEST_CID, .dst_cid = rand() % 4 ? VSOCK_HOST_CID : (uint64_t)rand(),
			.src_port = (uint32_t)(rand() % 4), .dst_port = (uint32_t)(rand() % 4),
			.len = len, .type = (uint16_t)(rand() % 8 ? 1 : rand()),
			.op = (uint16_t)(rand() % 9), .flags = (uint32_t)rand(),
			.buf_alloc = (uint32_t)rand(), .fwd_cnt = (uint32_t)rand(),
		};
		unsigned kk = fq[1].avail_idx % CHAINS;
		tx_chain(&r, TX_AREA + kk * 0x10000ull + 64, (uint32_t)(rand() % 200), true);
		while (rx_get(&p))
			;
		if ((uint16_t)(fq[0].avail_idx - fq[0].used_seen) < 16)
			rx_post(32);
		pump(0);
	}
	pump(20);
	while (rx_get(&p))
		;
	cr_assert(virtio_dev_running(d));
	/* Still fully working afterwards. */
	rx_post(8);
	fd = open_host_conn(1008, &hport);
	hwrite(fd, "ok", 2);
	uint8_t gb[2];
	guest_read(hport, 1008, gb, 2);
	cr_assert_arr_eq(gb, "ok", 2);
	close(fd);
}

Test(vsock, rst_backlog_stalls_tx_instead_of_growing)
{
	/* No rx buffers: RSTs owed for garbage pile up to the ring size, then tx waits. */
	for (int i = 0; i < 100; i++) {
		struct vsock_hdr h = {
			.src_cid = GUEST_CID, .dst_cid = VSOCK_HOST_CID, .src_port = 10,
			.dst_port = (uint32_t)(100 + i), .type = VSOCK_TYPE_STREAM, .op = VSOCK_OP_RW,
		};
		tx_chain(&h, 0, 0, true);
	}
	cr_assert_eq(used_idx(1), VSOCK_RST_RING, "tx consumed %u", used_idx(1));
	cr_assert_eq(v->mux.rst_count, VSOCK_RST_RING);
	/* Buffers arrive: all 100 RSTs go out, in order, and the tx queue drains. */
	rx_post(120);
	struct pkt p;
	for (int i = 0; i < 100; i++) {
		expect_pkt(&p);
		cr_assert_eq(p.h.op, VSOCK_OP_RST);
		cr_assert_eq(p.h.src_port, (uint32_t)(100 + i));
	}
	cr_assert_eq(used_idx(1), 100);
	expect_no_pkt();
}

Test(vsock, tiny_rx_buffer_is_a_driver_error_not_a_crash)
{
	/* Header descriptor only 8 bytes long. */
	unsigned k = fq[0].avail_idx % CHAINS;
	put_desc(0, 2 * k, RX_AREA + k * 8192ull, 8, VIRTQ_DESC_F_WRITE, 0);
	publish(0, (uint16_t)(2 * k));
	kick(VSOCK_RXQ);
	g_send(VSOCK_OP_REQUEST, 1, 5555);   /* owes an RST: needs an rx buffer */
	cr_assert(d->status & VIRTIO_STATUS_NEEDS_RESET);
	cr_assert_eq(config_irqs, 1);
	cr_assert_eq(used_idx(0), 0);
}

Test(vsock, device_reset_closes_connections)
{
	rx_post(8);
	uint32_t hport;
	int fd = open_host_conn(1009, &hport);
	int waiting = host_dial(uds);   /* a host program still typing its CONNECT line */
	pump(20);
	pthread_mutex_lock(&d->lock);
	virtio_dev_write_status(d, 0);
	pthread_mutex_unlock(&d->lock);
	cr_assert(host_sees_eof(fd));
	cr_assert_eq(v->mux.n_used, 1, "only the line reader survives a reset");
	/* Restarted driver: the waiting program connects normally. */
	driver_start();
	rx_post(8);
	hwrite(waiting, "CONNECT 1010\n", 13);
	struct pkt p;
	expect_pkt(&p);
	cr_assert_eq(p.h.op, VSOCK_OP_REQUEST);
	cr_assert_eq(p.h.dst_port, 1010);
	close(fd);
	close(waiting);
}

Test(vsock, many_connections_interleaved)
{
	enum { N = 20 };
	rx_post(100);
	int fds[N];
	uint32_t hp[N];
	for (int i = 0; i < N; i++)
		fds[i] = open_host_conn((uint32_t)(2000 + i), &hp[i]);
	for (int i = 0; i < N; i++) {
		uint8_t msg[64];
		int n = snprintf((char *)msg, sizeof(msg), "to guest %d", i);
		hwrite(fds[i], msg, (size_t)n);
	}
	pump(20);
	/* Each connection's bytes arrive on its own port pair. */
	int seen[N] = { 0 };
	struct pkt p;
	while (rx_get(&p)) {
		cr_assert_eq(p.h.op, VSOCK_OP_RW);
		int i = (int)p.h.dst_port - 2000;
		cr_assert(i >= 0 && i < N);
		cr_assert_eq(p.h.src_port, hp[i]);
		char want[64];
		int n = snprintf(want, sizeof(want), "to guest %d", i);
		cr_assert_eq(p.h.len, (uint32_t)n);
		cr_assert_arr_eq(p.data, want, (size_t)n);
		seen[i]++;
	}
	for (int i = 0; i < N; i++) {
		cr_assert_eq(seen[i], 1, "connection %d", i);
		char want[64], got[64] = { 0 };
		int n = snprintf(want, sizeof(want), "to host %d", i);
		g_send_full(VSOCK_OP_RW, (uint32_t)(2000 + i), hp[i], 0, want, (uint32_t)n);
		hread_exact(fds[i], got, (size_t)n);
		cr_assert_str_eq(got, want);
		close(fds[i]);
	}
	cr_assert_eq(v->mux.stats.conns_opened, N);
}

/* --- socket path hygiene (no driver needed) --- */

static void plain_init(void)
{
	struct cv_error err = { 0 };
	snprintf(dir, sizeof(dir), "/tmp/cvisor-vsock-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(uds, sizeof(uds), "%s/v.sock", dir);
	cr_assert_eq(guest_memory_init(&mem, GUEST_MEMORY_MIN, &err), 0);
	cr_assert_eq(evloop_init(&loop, &err), 0);
	v = NULL;
}

static struct virtio_vsock *make(const char *path, struct cv_error *err)
{
	struct vsock_config cfg = { .enabled = true, .cid = GUEST_CID, .uds_path = path };
	return virtio_vsock_create(&cfg, &mem, &loop, err);
}

TestSuite(vsock_path, .init = plain_init, .fini = teardown, .timeout = 30);

Test(vsock_path, listener_created_and_removed)
{
	struct cv_error err = { 0 };
	struct virtio_vsock *x = make(uds, &err);
	cr_assert_not_null(x, "%s", err.msg);
	struct stat st;
	cr_assert_eq(lstat(uds, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	/* A second VMM on the same path is refused while we listen. */
	struct cv_error err2 = { 0 };
	cr_assert_null(make(uds, &err2));
	cr_assert(strstr(err2.msg, "in use"), "%s", err2.msg);
	virtio_vsock_destroy(x);
	cr_assert_eq(lstat(uds, &st), -1, "socket file left behind");
}

Test(vsock_path, stale_socket_replaced_foreign_files_kept)
{
	/* A socket file nobody listens on (a VMM that died): replaced. */
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	sun_set(&sa, uds);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	struct cv_error err = { 0 };
	struct virtio_vsock *x = make(uds, &err);
	cr_assert_not_null(x, "%s", err.msg);
	/* Someone replaced our path meanwhile: teardown must not remove their file. */
	cr_assert_eq(unlink(uds), 0);
	int f = open(uds, O_CREAT | O_WRONLY, 0600);
	close(f);
	virtio_vsock_destroy(x);
	struct stat st;
	cr_assert_eq(lstat(uds, &st), 0, "a file that is not ours was removed");
	cr_assert(S_ISREG(st.st_mode));
	/* A regular file in the way is an error, not something we delete. */
	err.msg[0] = 0;
	cr_assert_null(make(uds, &err));
	cr_assert(strstr(err.msg, "not a socket"), "%s", err.msg);
}

Test(vsock_path, bad_config_refused)
{
	struct cv_error err = { 0 };
	char longp[200];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = 0;
	cr_assert_null(make(longp, &err));
	cr_assert(strstr(err.msg, "uds path"), "%s", err.msg);
	struct vsock_config cfg = { .enabled = true, .cid = 2, .uds_path = uds };
	cr_assert_null(virtio_vsock_create(&cfg, &mem, &loop, &err));
	cr_assert(strstr(err.msg, "reserved"), "%s", err.msg);
}
