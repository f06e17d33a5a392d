/*
 * libFuzzer target for virtio-net (src/vmm/virtio/net.c with net/vnet.c and net/rxfilter.c): the
 * guest's transmit headers and chains, control-queue commands (receive modes, MAC tables, MAC
 * address, guest offloads) and receive buffers, and the host's frames with their virtio headers,
 * as the fuzzer's bytes describe them (net_input.h). The backend is a SOCK_SEQPACKET pair standing
 * in for the TAP (with or without virtio headers); its other end is the host here.
 *
 * A reference written from the virtio spec (5.1.6) predicts every outcome, and these invariants
 * abort on violation:
 *   - transmit: a chain reaches the TAP exactly when its header is acceptable for the negotiated
 *     features, as one frame with the guest's header (num_buffers 0) and the guest's bytes, in
 *     order; every chain comes back with length 0; rejected ones are counted as errors;
 *   - control: each command gets the predicted ack (written to the first writable byte, used
 *     length 1, or 0 without one) and the MAC in config space and the offloads follow the model;
 *   - receive: a frame the model filters out (MAC tables, promiscuous and all-multicast modes), a
 *     runt, an oversized one or one with offloads the driver cannot take never reaches the guest;
 *     a delivered frame is the next deliverable frame the host sent (others may be dropped for
 *     lack of buffers), with the predicted header (offload fields cleared, partial checksum
 *     completed and correct, num_buffers = the chains it used, 1 without mergeable buffers),
 *     never more bytes than a chain holds; chains too small for a header come back empty;
 *   - nothing ever puts the device into NEEDS_RESET (the chains are well-formed).
 */
#include <errno.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "fuzz_driver.h"
#include "net_input.h"
#include "util.h"
#include "virtio/net.h"

#define RAM_SIZE (64ULL << 20)
#define MAX_FRAME_IN 70000u          /* frame lengths the input can ask for (> VNET_MAX_FRAME) */
#define FIFO 32                      /* host frames waiting to be matched */
#define WAIT_NS (5ULL * 1000000000)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct nic {
	struct virtio_net *n;
	int peer;                    /* the host's end of the socket pair */
	bool vnet_hdr;
};

/* The receive filter and addresses the device must implement, as the spec describes them. */
struct model {
	bool promisc, allmulti;
	uint8_t mac[6];
	unsigned n_uni, n_multi;
	bool uni_over, multi_over;
	uint8_t uni[RXFILTER_MAX_MACS][6], multi[RXFILTER_MAX_MACS][6];
	uint64_t offloads;
};

struct tx_expect {
	bool valid;
	uint32_t seq;
	uint8_t hdr[VNET_HDR_LEN];
	uint32_t frame_len;
};

struct rx_chain {
	struct fz_seg segs[4];
	unsigned n;
	uint32_t cap;
};

/*
 * A frame the host sent. Whether the guest may see it, and how, is decided when it is delivered
 * (filter and offloads can change while it waits for buffers); deliveries only happen in the
 * operations after which rx_collect runs, so the model is then in the state the device used.
 */
struct rx_sent {
	uint32_t total;              /* header included */
	uint8_t *bytes;              /* header (zeros for a plain TAP) + frame */
};

static struct state {
	struct guest_memory mem;
	struct evloop loop;
	struct nic nics[2];
	struct nic *cur;
	struct fz_driver drv;
	uint64_t want;
	struct model m;
	struct tx_expect tx[NET_QUEUE_SIZE];
	unsigned n_tx;
	/*
	 * tx_errors before the batch's first chain was posted: the device may take chains as soon
	 * as they are in the ring (a resume it had pending), before the kick.
	 */
	uint64_t tx_errors_base;
	uint32_t seq;
	struct rx_chain rx[NET_QUEUE_SIZE];   /* by head */
	struct rx_sent fifo[FIFO];
	uint8_t want_bytes[VNET_HDR_LEN + MAX_FRAME_IN];
	unsigned fifo_first, fifo_count;
	uint8_t buf[2 * MAX_FRAME_IN];
	uint8_t got[2 * MAX_FRAME_IN];
	bool trace;
} *S;

static const uint8_t NIC_MAC[6] = NETF_MAC;

static uint8_t pattern(uint32_t seq, size_t j)
{
	return (uint8_t)(seq * 131 + j * 7 + (j >> 8));
}

static bool has(uint64_t features, unsigned bit)
{
	return features & (1ULL << bit);
}

/* ---- setup ---- */

static void make_nic(struct nic *k, unsigned index, bool vnet_hdr)
{
	int sv[2];
	FZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
	/* Pretend TUNSETOFFLOAD support for everything, so that every offload can be offered. */
	struct tap t = { .fd = sv[0], .vnet_hdr = vnet_hdr,
			 .offloads = vnet_hdr ? TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN |
						TUN_F_UFO : 0 };
	snprintf(t.ifname, sizeof(t.ifname), "fuzz%u", index);
	struct cv_error err = { 0 };
	k->n = virtio_net_new(&t, NIC_MAC, index, &S->mem, &S->loop, &err);
	if (!k->n) {
		fprintf(stderr, "fuzz_net: %s\n", err.msg);
		exit(1);
	}
	k->peer = sv[1];
	k->vnet_hdr = vnet_hdr;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	S = calloc(1, sizeof(*S));
	FZ_CHECK(S != NULL);
	S->trace = getenv("NETF_TRACE") != NULL;
	fz_guest_memory(&S->mem, RAM_SIZE);
	struct cv_error err = { 0 };
	FZ_CHECK(evloop_init(&S->loop, &err) == 0);
	make_nic(&S->nics[0], 0, true);
	make_nic(&S->nics[1], 1, false);
	for (unsigned i = 0; i < FIFO; i++) {
		S->fifo[i].bytes = malloc(VNET_HDR_LEN + MAX_FRAME_IN);
		FZ_CHECK(S->fifo[i].bytes != NULL);
	}
	return 0;
}

/* ---- the reference ---- */

static void model_reset(void)
{
	memset(&S->m, 0, sizeof(S->m));
	S->m.promisc = true;        /* until the driver says otherwise: a device without CTRL_RX */
	memcpy(S->m.mac, NIC_MAC, 6);
	S->m.offloads = S->cur->n->dev.guest_features & VNET_GUEST_OFFLOADS;
}

static bool in_table(const uint8_t (*t)[6], unsigned n, const uint8_t *mac)
{
	for (unsigned i = 0; i < n; i++)
		if (memcmp(t[i], mac, 6) == 0)
			return true;
	return false;
}

/* 5.1.6.5.1/2: which destinations the driver asked to receive. */
static bool model_accepts(const uint8_t *dst)
{
	const struct model *m = &S->m;
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	if (m->promisc)
		return true;
	if (memcmp(dst, bcast, 6) == 0)
		return true;
	if (dst[0] & 1)
		return m->allmulti || m->multi_over || in_table(m->multi, m->n_multi, dst);
	return memcmp(dst, m->mac, 6) == 0 || m->uni_over || in_table(m->uni, m->n_uni, dst);
}

/* 5.1.6.2: the header a driver may send with what it negotiated. */
static bool tx_acceptable(const uint8_t *hdr, uint64_t f, uint64_t frame_len)
{
	uint8_t flags = hdr[0], gso = hdr[1];
	uint16_t gso_size = get_le16(hdr + 4), start = get_le16(hdr + 6), off = get_le16(hdr + 8);
	if (frame_len < VNET_ETH_HLEN || frame_len > VNET_MAX_FRAME)
		return false;
	if (flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM)
		return false;            /* DATA_VALID and the rest are the device's to set */
	if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
	    (!has(f, VIRTIO_NET_F_CSUM) || (uint64_t)start + off + 2 > frame_len))
		return false;
	bool ecn = gso & VIRTIO_NET_HDR_GSO_ECN;
	switch (gso & ~VIRTIO_NET_HDR_GSO_ECN) {
	case VIRTIO_NET_HDR_GSO_NONE:
		return !ecn;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		if (!has(f, VIRTIO_NET_F_HOST_TSO4))
			return false;
		break;
	case VIRTIO_NET_HDR_GSO_TCPV6:
		if (!has(f, VIRTIO_NET_F_HOST_TSO6))
			return false;
		break;
	case VIRTIO_NET_HDR_GSO_UDP:
		if (!has(f, VIRTIO_NET_F_HOST_UFO))
			return false;
		break;
	default:
		return false;
	}
	return (!ecn || has(f, VIRTIO_NET_F_HOST_ECN)) && gso_size != 0;
}

/* RFC 1071 over frame bytes [start, len), stored big-endian at start + field (0 sent as ~0). */
static void complete_csum(uint8_t *frame, size_t len, size_t start, size_t field)
{
	uint64_t sum = 0;
	for (size_t i = start; i < len; i += 2)
		sum += (uint32_t)frame[i] << 8 | (i + 1 < len ? frame[i + 1] : 0);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	uint16_t c = (uint16_t)~sum;
	if (!c)
		c = 0xffff;
	frame[start + field] = (uint8_t)(c >> 8);
	frame[start + field + 1] = (uint8_t)c;
}

/*
 * The header (and frame) a driver that accepts `offloads` must see for a frame the backend
 * delivered with header `h`; false if it must not see the frame at all.
 */
static bool rx_fixup(uint8_t *bytes, uint32_t total, uint64_t offloads)
{
	uint8_t *h = bytes;
	uint8_t *frame = bytes + VNET_HDR_LEN;
	size_t frame_len = total - VNET_HDR_LEN;
	bool csum_ok = has(offloads, VIRTIO_NET_F_GUEST_CSUM);
	uint8_t gso = h[1];
	if (gso != VIRTIO_NET_HDR_GSO_NONE) {
		unsigned need;
		switch (gso & ~VIRTIO_NET_HDR_GSO_ECN) {
		case VIRTIO_NET_HDR_GSO_TCPV4: need = VIRTIO_NET_F_GUEST_TSO4; break;
		case VIRTIO_NET_HDR_GSO_TCPV6: need = VIRTIO_NET_F_GUEST_TSO6; break;
		case VIRTIO_NET_HDR_GSO_UDP: need = VIRTIO_NET_F_GUEST_UFO; break;
		default: return false;
		}
		if (!has(offloads, need) || !csum_ok)
			return false;
		if ((gso & VIRTIO_NET_HDR_GSO_ECN) && !has(offloads, VIRTIO_NET_F_GUEST_ECN))
			return false;
	}
	h[0] &= VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
	uint16_t start = get_le16(h + 6), field = get_le16(h + 8);
	if (h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		if ((size_t)start + field + 2 > frame_len)
			return false;
		if (!csum_ok)
			complete_csum(frame, frame_len, start, field);
	}
	if (!csum_ok) {
		/* Without GUEST_CSUM the driver may see neither partial nor validated checksums. */
		h[0] = 0;
		put_le16(h + 6, 0);
		put_le16(h + 8, 0);
	}
	put_le16(h + 10, 0);         /* num_buffers: checked separately */
	return true;
}

/* ---- transmit ---- */

static void op_tx(struct fz_in *in)
{
	struct fz_driver *drv = &S->drv;
	unsigned n_seg = fz_u8(in) % (NETF_MAX_SPLIT + 1);
	uint8_t flags = fz_u8(in);
	uint8_t hdr[VNET_HDR_LEN];
	fz_take(in, hdr, sizeof(hdr));
	uint32_t frame_len = fz_u32(in) % (MAX_FRAME_IN + 1);
	uint16_t split[NETF_MAX_SPLIT];
	for (unsigned i = 0; i + 1 < n_seg; i++)
		split[i] = fz_u16(in);
	if (S->n_tx == NET_QUEUE_SIZE)
		return;
	/* Header and frame in one buffer; the chain cuts it into segments. */
	uint64_t total = VNET_HDR_LEN + (uint64_t)frame_len;
	if (flags & NETF_TX_SHORT) {
		total = frame_len % VNET_HDR_LEN;
		frame_len = 0;
	}
	uint64_t mark = drv->heap;
	uint64_t buf = fz_alloc(drv, total, 8);
	if (!buf)
		return;
	uint8_t *p = fz_ptr(drv, buf, CV_MAX(total, 1));
	memcpy(p, hdr, CV_MIN(total, (uint64_t)VNET_HDR_LEN));
	uint32_t seq = S->seq++;
	for (uint32_t j = 0; j < frame_len; j++)
		p[VNET_HDR_LEN + j] = pattern(seq, j);
	static struct fz_seg segs[VIRTQ_MAX_SEGS];
	unsigned n = 0;
	uint64_t at = 0;
	if (flags & NETF_TX_MANY) {
		unsigned count = drv->indirect && (flags & NETF_TX_INDIRECT) ? VIRTQ_MAX_SEGS
									      : NET_QUEUE_SIZE;
		uint64_t piece = CV_MAX(total / count, 1);
		do {
			uint64_t len = n + 1 == count ? total - at : CV_MIN(piece, total - at);
			segs[n++] = (struct fz_seg){ buf + at, (uint32_t)len, false };
			at += len;
		} while (at < total && n < count);
	} else {
		for (unsigned i = 0; i + 1 < n_seg; i++) {
			uint64_t len = CV_MIN((uint64_t)split[i], total - at);
			segs[n++] = (struct fz_seg){ buf + at, (uint32_t)len, false };
			at += len;
		}
		segs[n++] = (struct fz_seg){ buf + at, (uint32_t)(total - at), false };
	}
	if (!fz_post(drv, NET_TXQ, segs, n, flags & NETF_TX_INDIRECT, NULL)) {
		drv->heap = mark;
		return;
	}
	if (S->n_tx == 0)
		S->tx_errors_base = S->cur->n->stats.tx_errors;
	struct tx_expect *x = &S->tx[S->n_tx++];
	x->seq = seq;
	x->frame_len = frame_len;
	memcpy(x->hdr, hdr, VNET_HDR_LEN);
	x->valid = total >= VNET_HDR_LEN &&
		   tx_acceptable(hdr, S->cur->n->dev.guest_features, frame_len);
	put_le16(x->hdr + 10, 0);    /* the device sends num_buffers 0 */
	if (S->trace)
		fprintf(stderr, "netf: tx seq %u frame %u segs %u -> %s\n", seq, frame_len, n,
			x->valid ? "sent" : "refused");
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Matches what arrived at the host end against the valid chains, in order. */
static void tx_receive(unsigned *next)
{
	struct nic *k = S->cur;
	for (;;) {
		ssize_t r = recv(k->peer, S->got, sizeof(S->got), MSG_DONTWAIT | MSG_TRUNC);
		if (r < 0) {
			FZ_CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
			return;
		}
		while (*next < S->n_tx && !S->tx[*next].valid)
			(*next)++;
		/* Nothing the guest did not send validly may come out. */
		FZ_CHECK(*next < S->n_tx);
		const struct tx_expect *x = &S->tx[(*next)++];
		size_t want = x->frame_len + (k->vnet_hdr ? VNET_HDR_LEN : 0);
		FZ_CHECK((size_t)r == want);
		const uint8_t *f = S->got;
		if (k->vnet_hdr) {
			FZ_CHECK(memcmp(f, x->hdr, VNET_HDR_LEN) == 0);
			f += VNET_HDR_LEN;
		}
		for (uint32_t j = 0; j < x->frame_len; j++)
			FZ_CHECK(f[j] == pattern(x->seq, j));
	}
}

static void tx_kick(void)
{
	struct virtio_net *n = S->cur->n;
	if (!S->n_tx)
		return;
	fz_kick(&S->drv, NET_TXQ);
	unsigned next = 0, back = 0;
	uint64_t deadline = now_ns() + WAIT_NS;
	for (;;) {
		tx_receive(&next);
		uint32_t id, len;
		while (fz_used(&S->drv, NET_TXQ, &id, &len)) {
			FZ_CHECK(len == 0);
			back++;
		}
		if (back == S->n_tx)
			break;
		/* A blocked TAP resumes on EPOLLOUT; a full budget through its eventfd. */
		FZ_CHECK(now_ns() < deadline);
		fz_pump(&S->loop, 10);
	}
	tx_receive(&next);
	while (next < S->n_tx && !S->tx[next].valid)
		next++;
	FZ_CHECK(next == S->n_tx);   /* every valid chain reached the TAP */
	unsigned invalid = 0;
	for (unsigned i = 0; i < S->n_tx; i++)
		invalid += !S->tx[i].valid;
	FZ_CHECK(n->stats.tx_errors - S->tx_errors_base == invalid);
	S->n_tx = 0;
}

/* ---- control ---- */

static int read_table(const uint8_t *p, size_t len, size_t *off, uint8_t (*t)[6], unsigned *n,
		      bool *over)
{
	if (len - *off < 4)
		return -1;
	uint32_t entries = get_le32(p + *off);
	*off += 4;
	if (entries > (len - *off) / 6)
		return -1;
	*n = CV_MIN(entries, RXFILTER_MAX_MACS);
	*over = entries > RXFILTER_MAX_MACS;
	memcpy(t, p + *off, 6ULL * *n);
	*off += 6ULL * entries;
	return 0;
}

/* 5.1.6.5: the ack of one command and its effect on the model. */
static uint8_t model_ctrl(const uint8_t *cmd, size_t len)
{
	struct model *m = &S->m;
	uint64_t f = S->cur->n->dev.guest_features;
	if (len < 2)
		return VIRTIO_NET_ERR;
	const uint8_t *p = cmd + 2;
	size_t plen = len - 2;
	switch (cmd[0]) {
	case VIRTIO_NET_CTRL_RX:
		if (!has(f, VIRTIO_NET_F_CTRL_RX) || plen < 1)
			return VIRTIO_NET_ERR;
		if (cmd[1] == VIRTIO_NET_CTRL_RX_PROMISC)
			m->promisc = p[0];
		else if (cmd[1] == VIRTIO_NET_CTRL_RX_ALLMULTI)
			m->allmulti = p[0];
		else
			return VIRTIO_NET_ERR;
		return VIRTIO_NET_OK;
	case VIRTIO_NET_CTRL_MAC:
		if (cmd[1] == VIRTIO_NET_CTRL_MAC_TABLE_SET) {
			struct model t = *m;
			size_t off = 0;
			if (!has(f, VIRTIO_NET_F_CTRL_RX) ||
			    read_table(p, plen, &off, t.uni, &t.n_uni, &t.uni_over) < 0 ||
			    read_table(p, plen, &off, t.multi, &t.n_multi, &t.multi_over) < 0)
				return VIRTIO_NET_ERR;
			*m = t;
			return VIRTIO_NET_OK;
		}
		if (cmd[1] == VIRTIO_NET_CTRL_MAC_ADDR_SET) {
			if (!has(f, VIRTIO_NET_F_CTRL_MAC_ADDR) || plen < 6 || (p[0] & 1))
				return VIRTIO_NET_ERR;
			memcpy(m->mac, p, 6);
			return VIRTIO_NET_OK;
		}
		return VIRTIO_NET_ERR;
	case VIRTIO_NET_CTRL_GUEST_OFFLOADS: {
		if (!has(f, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) ||
		    cmd[1] != VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET || plen < 8)
			return VIRTIO_NET_ERR;
		uint64_t want = get_le64(p);
		if (want & ~(f & VNET_GUEST_OFFLOADS))
			return VIRTIO_NET_ERR;
		m->offloads = want;
		return VIRTIO_NET_OK;
	}
	default:
		return VIRTIO_NET_ERR;
	}
}

static void check_config_mac(void)
{
	struct virtio_dev *d = &S->cur->n->dev;
	uint8_t mac[6];
	pthread_mutex_lock(&d->lock);
	d->ops->config_read(d, 0, mac, 6);
	pthread_mutex_unlock(&d->lock);
	FZ_CHECK(memcmp(mac, S->m.mac, 6) == 0);
	FZ_CHECK(S->cur->n->rx_offloads == S->m.offloads);
}

static void op_ctrl(struct fz_in *in)
{
	struct fz_driver *drv = &S->drv;
	uint8_t cmd[2 + NETF_MAX_CTRL];
	cmd[0] = fz_u8(in);
	cmd[1] = fz_u8(in);
	size_t plen = fz_u16(in) % (NETF_MAX_CTRL + 1);
	fz_take(in, cmd + 2, plen);
	uint8_t shape = fz_u8(in);
	size_t len = 2 + plen;
	uint64_t mark = drv->heap;
	uint64_t out = fz_alloc(drv, len, 8), ack = fz_alloc(drv, 16, 8);
	if (!out || !ack)
		return;
	memcpy(fz_ptr(drv, out, len), cmd, len);
	memset(fz_ptr(drv, ack, 16), 0xee, 16);
	struct fz_seg segs[4];
	unsigned n = 0;
	if (shape & NETF_CTRL_SPLIT) {
		segs[n++] = (struct fz_seg){ out, 1, false };
		segs[n++] = (struct fz_seg){ out + 1, 1, false };
		if (plen)
			segs[n++] = (struct fz_seg){ out + 2, (uint32_t)plen, false };
	} else {
		segs[n++] = (struct fz_seg){ out, (uint32_t)len, false };
	}
	uint32_t ack_len = (shape & NETF_CTRL_NO_ACK) ? 0 : (shape & NETF_CTRL_BIG_ACK) ? 16 : 1;
	if (ack_len)
		segs[n++] = (struct fz_seg){ ack, ack_len, true };
	if (!fz_post(drv, NET_CTRLQ, segs, n, false, NULL)) {
		drv->heap = mark;
		return;
	}
	uint8_t want = model_ctrl(cmd, len);
	fz_kick(drv, NET_CTRLQ);
	uint32_t id, used;
	FZ_CHECK(fz_used(drv, NET_CTRLQ, &id, &used));
	FZ_CHECK(used == (ack_len ? 1 : 0));
	if (ack_len)
		FZ_CHECK(*fz_ptr(drv, ack, 1) == want);
	check_config_mac();
	if (S->trace)
		fprintf(stderr, "netf: ctrl %u/%u len %zu -> %u\n", cmd[0], cmd[1], plen, want);
}

/* ---- receive ---- */

static void op_rxbuf(struct fz_in *in)
{
	struct fz_driver *drv = &S->drv;
	unsigned count = fz_u8(in) % 17;
	for (unsigned c = 0; c < count; c++) {
		struct rx_chain ch = { .n = fz_u8(in) % 4 + 1 };
		uint64_t mark = drv->heap;
		bool ok = true;
		for (unsigned i = 0; i < ch.n; i++) {
			uint32_t len = fz_u16(in);
			uint64_t gpa = fz_alloc(drv, len, 8);
			ok = ok && (gpa || !len);
			ch.segs[i] = (struct fz_seg){ gpa ? gpa : drv->heap, len, true };
			ch.cap += len;
		}
		uint16_t head;
		if (!ok || !fz_post(drv, NET_RXQ, ch.segs, ch.n, false, &head)) {
			drv->heap = mark;
			continue;
		}
		S->rx[head] = ch;
	}
	fz_kick(drv, NET_RXQ);
}

/* Copies bytes [off, off+len) of a receive chain. */
static void chain_read(const struct rx_chain *c, size_t off, uint8_t *dst, size_t len)
{
	for (unsigned i = 0; i < c->n && len; i++) {
		if (off >= c->segs[i].len) {
			off -= c->segs[i].len;
			continue;
		}
		size_t k = CV_MIN(c->segs[i].len - off, len);
		memcpy(dst, fz_ptr(&S->drv, c->segs[i].gpa + off, k), k);
		dst += k;
		len -= k;
		off = 0;
	}
	FZ_CHECK(len == 0);
}

/* What the guest must see of a frame the host sent; false if nothing. */
static bool deliverable(const struct rx_sent *x, uint8_t *out)
{
	const struct virtio_dev *d = &S->cur->n->dev;
	if (x->total < VNET_HDR_LEN + VNET_ETH_HLEN || x->total > VNET_HDR_LEN + VNET_MAX_FRAME)
		return false;
	if (virtio_dev_has(d, VIRTIO_NET_F_CTRL_RX) && !model_accepts(x->bytes + VNET_HDR_LEN))
		return false;
	memcpy(out, x->bytes, x->total);
	return rx_fixup(out, x->total, S->m.offloads);
}

/* One delivered frame against the next deliverable frame the host sent. */
static void match_frame(const uint8_t *got, uint32_t total)
{
	for (;;) {
		/* Delivered without having been sent deliverably: a filter or offload leak. */
		FZ_CHECK(S->fifo_count > 0);
		struct rx_sent *x = &S->fifo[S->fifo_first];
		S->fifo_first = (S->fifo_first + 1) % FIFO;
		S->fifo_count--;
		if (deliverable(x, S->want_bytes) && x->total == total &&
		    memcmp(S->want_bytes, got, total) == 0)
			return;
		/* Not this one: refused, or dropped for lack of buffers. */
	}
}

static void rx_collect(void)
{
	struct fz_driver *drv = &S->drv;
	bool mergeable = virtio_dev_has(&S->cur->n->dev, VIRTIO_NET_F_MRG_RXBUF);
	uint32_t id, len;
	while (fz_used(drv, NET_RXQ, &id, &len)) {
		const struct rx_chain *c = &S->rx[id];
		FZ_CHECK(len <= c->cap);
		if (c->cap < VNET_HDR_LEN) {
			FZ_CHECK(len == 0);      /* too small for any frame: returned empty */
			continue;
		}
		FZ_CHECK(len >= VNET_HDR_LEN);
		chain_read(c, 0, S->got, len);
		uint16_t buffers = get_le16(S->got + 10);
		FZ_CHECK(buffers >= 1 && (mergeable || buffers == 1));
		uint32_t total = len;
		for (unsigned b = 1; b < buffers; b++) {
			/* The rest of the frame is in the next used entries, pushed together. */
			FZ_CHECK(len == c->cap);
			FZ_CHECK(fz_used(drv, NET_RXQ, &id, &len));
			c = &S->rx[id];
			FZ_CHECK(len >= 1 && len <= c->cap);
			chain_read(c, 0, S->got + total, len);
			total += len;
		}
		FZ_CHECK(total >= VNET_HDR_LEN + VNET_ETH_HLEN);
		put_le16(S->got + 10, 0);
		match_frame(S->got, total);
		if (S->trace)
			fprintf(stderr, "netf: delivered %u bytes in %u buffers\n", total, buffers);
	}
}

static void settle(void)
{
	for (int i = 0; i < 64 && fz_pump(&S->loop, 0) > 0; i++) {
	}
}

static void op_rx(struct fz_in *in)
{
	struct nic *k = S->cur;
	uint8_t hdr[VNET_HDR_LEN] = { 0 };
	if (k->vnet_hdr)
		fz_take(in, hdr, sizeof(hdr));
	uint8_t dst[6];
	fz_take(in, dst, sizeof(dst));
	uint32_t frame_len = fz_u32(in) % (MAX_FRAME_IN + 1);
	if (S->fifo_count == FIFO)
		return;
	uint32_t seq = S->seq++;
	size_t skip = k->vnet_hdr ? 0 : VNET_HDR_LEN;
	uint8_t *p = S->buf;
	memcpy(p, hdr, VNET_HDR_LEN);
	for (uint32_t j = 0; j < frame_len; j++)
		p[VNET_HDR_LEN + j] = j < 6 ? dst[j] : pattern(seq, j);
	uint32_t total = VNET_HDR_LEN + frame_len;
	ssize_t r = send(k->peer, p + skip, total - skip, MSG_DONTWAIT);
	if (r < 0) {
		FZ_CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
		return;              /* the device is not reading: the host would drop it too */
	}
	FZ_CHECK((size_t)r == total - skip);
	struct rx_sent *x = &S->fifo[(S->fifo_first + S->fifo_count++) % FIFO];
	x->total = total;
	memcpy(x->bytes, p, total);
	if (S->trace)
		fprintf(stderr, "netf: rx seq %u frame %u\n", seq, frame_len);
	settle();
	rx_collect();
}

/* ---- inputs ---- */

static void drain(int fd)
{
	while (recv(fd, S->got, sizeof(S->got), MSG_DONTWAIT) >= 0) {
	}
}

static void start(void)
{
	S->n_tx = 0;
	FZ_CHECK(fz_driver_start(&S->drv, S->want, 3));
	model_reset();
	check_config_mac();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t flags = fz_u8(&in);
	S->want = fz_u32(&in);
	struct nic *k = &S->nics[(flags & NETF_PLAIN_TAP) ? 1 : 0];
	S->cur = k;
	fz_driver_init(&S->drv, &S->mem, &k->n->dev);
	/* Nothing of the last input may reach this one: reset first, then empty the pair. */
	fz_driver_reset(&S->drv);
	drain(k->peer);
	drain(k->n->tap.fd);
	S->fifo_count = 0;
	start();
	while (fz_more(&in)) {
		switch (fz_u8(&in) % NETF_OPS) {
		case NETF_OP_TX:
			op_tx(&in);
			break;
		case NETF_OP_TX_KICK:
			tx_kick();
			break;
		case NETF_OP_CTRL:
			op_ctrl(&in);
			break;
		case NETF_OP_RXBUF:
			op_rxbuf(&in);
			settle();
			rx_collect();
			break;
		case NETF_OP_RX:
			op_rx(&in);
			break;
		case NETF_OP_RESET:
			tx_kick();
			start();
			break;
		}
		FZ_CHECK(!(k->n->dev.status & VIRTIO_STATUS_NEEDS_RESET));
	}
	tx_kick();
	settle();
	rx_collect();
	FZ_CHECK(!(k->n->dev.status & VIRTIO_STATUS_NEEDS_RESET));
	return 0;
}
