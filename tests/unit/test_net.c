/*
 * virtio-net (src/vmm/virtio/net.c, src/vmm/net/) without a VM. The pure rules (header layout,
 * offload translation, checksum completion, MAC parsing, receive filter) are tested directly.
 * The device is then driven by a small split-ring driver written here: it lays out three queues
 * in a real guest_memory, negotiates through the generic virtio_dev calls and kicks by calling
 * queue_notify under the device lock, as the virtio-pci transport does; the device's TAP
 * handler runs on a real evloop thread. The backend is either a SOCK_SEQPACKET socket pair
 * standing in for the TAP (one message per frame, and it pushes back with EAGAIN after a few
 * queued messages, which exercises flow control), or a real TAP in a private network namespace
 * with an AF_PACKET socket on the host side (skipped where namespaces or /dev/net/tun are not
 * available).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "devopts.h"
#include "memory.h"
#include "net/rxfilter.h"
#include "net/tap.h"
#include "net/vnet.h"
#include "virtio/device.h"
#include "virtio/net.h"

#define MEM_SIZE (64ULL << 20)
#define QSIZE NET_QUEUE_SIZE
#define RING_GPA(q) (0x10000ULL + (uint64_t)(q) * 0x4000)
#define BUF_GPA 0x100000ULL
#define TEST_ETHERTYPE 0x88b5          /* IEEE local experimental */
#define F(b) VNET_BIT(b)

static const uint8_t GUEST_MAC[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static const uint8_t PEER_MAC[6] = { 0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc };

/* ======================= pure rules ======================= */

Test(vnet, header_layout_is_little_endian_12_bytes)
{
	struct vnet_hdr h = { .flags = 1, .gso_type = 0x81, .hdr_len = 0x0102, .gso_size = 0x0304,
			      .csum_start = 0x0506, .csum_offset = 0x0708, .num_buffers = 0x090a };
	uint8_t raw[VNET_HDR_LEN];
	vnet_hdr_encode(&h, raw);
	const uint8_t want[VNET_HDR_LEN] = { 1, 0x81, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 9 };
	cr_assert_arr_eq(raw, want, VNET_HDR_LEN);
	struct vnet_hdr back;
	vnet_hdr_decode(raw, &back);
	cr_assert_eq(back.hdr_len, 0x0102);
	cr_assert_eq(back.gso_size, 0x0304);
	cr_assert_eq(back.csum_start, 0x0506);
	cr_assert_eq(back.csum_offset, 0x0708);
	cr_assert_eq(back.num_buffers, 0x090a);
	cr_assert_eq(back.flags, 1);
	cr_assert_eq(back.gso_type, 0x81);
}

Test(vnet, offload_translation_to_tun_flags)
{
	cr_assert_eq(vnet_tun_offloads(0), 0);
	/* TSO without checksum offload is meaningless: the TAP would refuse it. */
	cr_assert_eq(vnet_tun_offloads(F(VIRTIO_NET_F_GUEST_TSO4)), 0);
	cr_assert_eq(vnet_tun_offloads(F(VIRTIO_NET_F_GUEST_CSUM)), TUN_F_CSUM);
	cr_assert_eq(vnet_tun_offloads(F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_TSO4) |
				       F(VIRTIO_NET_F_GUEST_TSO6)),
		     TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6);
	/* ECN needs TSO. */
	cr_assert_eq(vnet_tun_offloads(F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_ECN)),
		     TUN_F_CSUM);
	cr_assert_eq(vnet_tun_offloads(F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_TSO6) |
				       F(VIRTIO_NET_F_GUEST_ECN) | F(VIRTIO_NET_F_GUEST_UFO)),
		     TUN_F_CSUM | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO);
	/* Transmit-side and unrelated bits do not leak in. */
	cr_assert_eq(vnet_tun_offloads(F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4) |
				       F(VIRTIO_NET_F_MRG_RXBUF)),
		     0);
	/* And back: what a TAP supports becomes consistent feature bits. */
	cr_assert_eq(vnet_guest_features_for_tun(TUN_F_TSO4), 0);
	cr_assert_eq(vnet_guest_features_for_tun(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN),
		     F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_TSO4) |
			     F(VIRTIO_NET_F_GUEST_TSO6) | F(VIRTIO_NET_F_GUEST_ECN));
	cr_assert_eq(vnet_tun_offloads(vnet_guest_features_for_tun(TUN_F_CSUM | TUN_F_TSO6)),
		     TUN_F_CSUM | TUN_F_TSO6);
}

Test(vnet, transmit_header_checks)
{
	uint64_t all = F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4) | F(VIRTIO_NET_F_HOST_TSO6) |
		       F(VIRTIO_NET_F_HOST_ECN);
	struct vnet_hdr h = { 0 };
	cr_assert_null(vnet_tx_hdr_check(&h, 0, 60));
	cr_assert_not_null(vnet_tx_hdr_check(&h, 0, 13), "runt frame");
	cr_assert_null(vnet_tx_hdr_check(&h, 0, VNET_MAX_FRAME));
	cr_assert_not_null(vnet_tx_hdr_check(&h, 0, VNET_MAX_FRAME + 1));
	h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h.csum_start = 34;
	h.csum_offset = 6;
	cr_assert_not_null(vnet_tx_hdr_check(&h, 0, 100), "NEEDS_CSUM without CSUM");
	cr_assert_null(vnet_tx_hdr_check(&h, all, 100));
	cr_assert_not_null(vnet_tx_hdr_check(&h, all, 41), "checksum field past the end");
	cr_assert_null(vnet_tx_hdr_check(&h, all, 42));
	h.flags = VIRTIO_NET_HDR_F_DATA_VALID;
	cr_assert_not_null(vnet_tx_hdr_check(&h, all, 100), "DATA_VALID is the device's");
	h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
	h.gso_size = 1448;
	cr_assert_null(vnet_tx_hdr_check(&h, all, 30000));
	cr_assert_not_null(vnet_tx_hdr_check(&h, F(VIRTIO_NET_F_CSUM), 30000), "TSO4 not negotiated");
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN;
	cr_assert_null(vnet_tx_hdr_check(&h, all, 30000));
	cr_assert_not_null(vnet_tx_hdr_check(&h, all & ~F(VIRTIO_NET_F_HOST_ECN), 30000));
	h.gso_type = VIRTIO_NET_HDR_GSO_UDP;
	cr_assert_not_null(vnet_tx_hdr_check(&h, all, 30000), "UFO not negotiated");
	h.gso_type = 5;
	cr_assert_not_null(vnet_tx_hdr_check(&h, all, 30000), "unknown GSO type");
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
	h.gso_size = 0;
	cr_assert_not_null(vnet_tx_hdr_check(&h, all, 30000), "GSO without segment size");
	h = (struct vnet_hdr){ .gso_type = VIRTIO_NET_HDR_GSO_ECN };
	cr_assert_not_null(vnet_tx_hdr_check(&h, all, 100), "ECN without GSO");
}

Test(vnet, receive_header_fixup)
{
	uint64_t csum = F(VIRTIO_NET_F_GUEST_CSUM);
	uint64_t tso = csum | F(VIRTIO_NET_F_GUEST_TSO4);
	struct vnet_hdr h = { .flags = VIRTIO_NET_HDR_F_DATA_VALID, .num_buffers = 7 };
	cr_assert_eq(vnet_rx_hdr_fixup(&h, csum, 100), VNET_RX_OK);
	cr_assert_eq(h.flags, VIRTIO_NET_HDR_F_DATA_VALID, "kept for a GUEST_CSUM driver");
	cr_assert_eq(h.num_buffers, 0, "num_buffers is the device's to fill");
	cr_assert_eq(vnet_rx_hdr_fixup(&h, 0, 100), VNET_RX_OK);
	cr_assert_eq(h.flags, 0, "DATA_VALID needs GUEST_CSUM");

	h = (struct vnet_hdr){ .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 34,
			       .csum_offset = 6 };
	cr_assert_eq(vnet_rx_hdr_fixup(&h, csum, 100), VNET_RX_OK);
	cr_assert_eq(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
	cr_assert_eq(h.csum_start, 34);
	cr_assert_eq(vnet_rx_hdr_fixup(&h, 0, 100), VNET_RX_CSUM, "completed by the device");
	cr_assert_eq(h.flags, 0);
	h = (struct vnet_hdr){ .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 90,
			       .csum_offset = 16 };
	cr_assert_eq(vnet_rx_hdr_fixup(&h, csum, 100), VNET_RX_DROP, "field past the end");

	h = (struct vnet_hdr){ .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
			       .gso_type = VIRTIO_NET_HDR_GSO_TCPV4, .gso_size = 1448,
			       .csum_start = 34, .csum_offset = 16 };
	cr_assert_eq(vnet_rx_hdr_fixup(&h, tso, 30000), VNET_RX_OK);
	cr_assert_eq(h.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
	cr_assert_eq(h.gso_size, 1448);
	cr_assert_eq(vnet_rx_hdr_fixup(&h, csum, 30000), VNET_RX_DROP, "GSO not accepted");
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN;
	cr_assert_eq(vnet_rx_hdr_fixup(&h, tso, 30000), VNET_RX_DROP, "ECN not accepted");
	cr_assert_eq(vnet_rx_hdr_fixup(&h, tso | F(VIRTIO_NET_F_GUEST_ECN), 30000), VNET_RX_OK);
}

/* RFC 1071 reference: checksum of a contiguous buffer. */
static uint16_t ref_csum(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

Test(vnet, checksum_across_odd_splits_matches_reference)
{
	uint8_t buf[1001];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	uint16_t want = ref_csum(buf, sizeof(buf), 0);
	if (want == 0)
		want = 0xffff;
	const size_t cuts[][3] = { { 1001, 0, 0 }, { 1, 1000, 0 }, { 3, 500, 498 }, { 500, 1, 500 } };
	for (size_t c = 0; c < 4; c++) {
		uint64_t sum = 0;
		bool odd = false;
		size_t off = 0;
		for (int k = 0; k < 3; k++) {
			sum = vnet_csum_add(sum, buf + off, cuts[c][k], &odd);
			off += cuts[c][k];
		}
		cr_assert_eq(off, sizeof(buf));
		cr_assert_eq(vnet_csum_finish(sum), want, "split %zu", c);
	}
	/* An all-zero result is sent as 0xffff (UDP reads 0 as "no checksum"). */
	uint8_t ones[2] = { 0xff, 0xff };
	bool odd = false;
	cr_assert_eq(vnet_csum_finish(vnet_csum_add(0, ones, 2, &odd)), 0xffff);
}

Test(vnet, random_mac_is_local_unicast)
{
	uint8_t a[6], b[6];
	vnet_random_mac(a);
	vnet_random_mac(b);
	cr_assert_eq(a[0] & 1, 0, "unicast");
	cr_assert_eq(a[0] & 2, 2, "locally administered");
	cr_assert_eq(a[0], 0x52);
	cr_assert_eq(a[1], 0x54);
	cr_assert_eq(a[2], 0x00);
	/* 24 random bits: two equal draws would be a 1 in 16 million event. */
	cr_assert(memcmp(a, b, 6) != 0);
}

Test(vnet, mac_and_net_option_parsing)
{
	uint8_t mac[6];
	cr_assert_eq(devopts_mac("52:54:00:ab:CD:0f", mac), 0);
	const uint8_t want[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f };
	cr_assert_arr_eq(mac, want, 6);
	cr_assert_eq(devopts_mac("53:54:00:ab:cd:0f", mac), -1, "multicast");
	cr_assert_eq(devopts_mac("52:54:00:ab:cd", mac), -1);
	cr_assert_eq(devopts_mac("52:54:00:ab:cd:0f:", mac), -1);
	cr_assert_eq(devopts_mac("52-54-00-ab-cd-0f", mac), -1);
	cr_assert_eq(devopts_mac("52:54:00:ab:cd:0g", mac), -1);

	struct net_config nc;
	struct cv_error err = { 0 };
	char s1[] = "tap=tap0,mac=52:54:00:00:00:01";
	cr_assert_eq(devopts_net(s1, &nc, &err), 0, "%s", err.msg);
	cr_assert_str_eq(nc.tap, "tap0");
	cr_assert(nc.has_mac);
	cr_assert_eq(nc.mac[5], 1);
	cr_assert_eq(nc.tap_fd, -1);
	char s2[] = "fd=5";
	cr_assert_eq(devopts_net(s2, &nc, &err), 0);
	cr_assert_eq(nc.tap_fd, 5);
	cr_assert(!nc.has_mac);
	char s3[] = "tap=a,fd=3";
	cr_assert_eq(devopts_net(s3, &nc, &err), -1);
	char s4[] = "mac=52:54:00:00:00:01";
	cr_assert_eq(devopts_net(s4, &nc, &err), -1);
	char s5[] = "tap=x,mac=01:00:5e:00:00:01";
	cr_assert_eq(devopts_net(s5, &nc, &err), -1);
	cr_assert(strstr(err.msg, "MAC"));
}

/* A MAC table payload as the driver lays it out. */
static size_t mac_tables(uint8_t *out, const uint8_t (*uni)[6], uint32_t nu,
			 const uint8_t (*multi)[6], uint32_t nm)
{
	size_t o = 0;
	put_le32(out + o, nu);
	o += 4;
	for (uint32_t i = 0; i < nu; i++, o += 6)
		memcpy(out + o, uni[i], 6);
	put_le32(out + o, nm);
	o += 4;
	for (uint32_t i = 0; i < nm; i++, o += 6)
		memcpy(out + o, multi[i], 6);
	return o;
}

Test(rxfilter, modes_and_tables)
{
	struct rxfilter f;
	rxfilter_reset(&f, GUEST_MAC);
	const uint8_t other[6] = { 0x52, 0x54, 0, 0, 0, 9 };
	const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	const uint8_t mc1[6] = { 0x01, 0x00, 0x5e, 0, 0, 1 };
	const uint8_t mc2[6] = { 0x01, 0x00, 0x5e, 0, 0, 2 };
	cr_assert(rxfilter_accept(&f, other), "promiscuous until the driver says otherwise");
	f.promisc = false;
	cr_assert(rxfilter_accept(&f, GUEST_MAC));
	cr_assert(!rxfilter_accept(&f, other));
	cr_assert(rxfilter_accept(&f, bcast));
	cr_assert(!rxfilter_accept(&f, mc1));
	f.allmulti = true;
	cr_assert(rxfilter_accept(&f, mc1));
	f.allmulti = false;

	uint8_t buf[256];
	const uint8_t uni[1][6] = { { 0x52, 0x54, 0, 0, 0, 9 } };
	const uint8_t multi[1][6] = { { 0x01, 0x00, 0x5e, 0, 0, 1 } };
	size_t len = mac_tables(buf, uni, 1, multi, 1);
	/* Split over two iovecs at an awkward place, as a driver's two sg entries could be. */
	struct iovec iov[2] = { { buf, 7 }, { buf + 7, len - 7 } };
	cr_assert_eq(rxfilter_set_tables(&f, iov, 2, 0, len), 0);
	cr_assert(rxfilter_accept(&f, other));
	cr_assert(rxfilter_accept(&f, mc1));
	cr_assert(!rxfilter_accept(&f, mc2));
	/* Truncated or lying counts are refused and change nothing. */
	cr_assert_eq(rxfilter_set_tables(&f, iov, 2, 0, len - 1), -1);
	put_le32(buf, 1000);
	cr_assert_eq(rxfilter_set_tables(&f, iov, 2, 0, len), -1);
	cr_assert(rxfilter_accept(&f, mc1));
	/* A table larger than we keep accepts the whole class instead of losing frames. */
	static uint8_t many[RXFILTER_MAX_MACS + 1][6];
	for (int i = 0; i <= RXFILTER_MAX_MACS; i++) {
		many[i][0] = 0x01;
		many[i][5] = (uint8_t)i;
	}
	uint8_t big[8 + 6 * (RXFILTER_MAX_MACS + 1)];
	len = mac_tables(big, NULL, 0, (const uint8_t(*)[6])many, RXFILTER_MAX_MACS + 1);
	struct iovec one = { big, len };
	cr_assert_eq(rxfilter_set_tables(&f, &one, 1, 0, len), 0);
	cr_assert(rxfilter_accept(&f, mc2));
	cr_assert(!rxfilter_accept(&f, other), "unicast table replaced by an empty one");
}

/* ======================= the test driver ======================= */

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

struct dq {
	uint16_t avail_idx;
	uint16_t last_used;
	uint16_t free_head;
	uint16_t nfree;
	uint16_t next[QSIZE];
};

static struct {
	struct guest_memory mem;
	bool mem_ready;
	struct evloop loop;
	bool loop_ready;
	struct virtio_net *n;
	struct virtio_transport_ops tops;
	int irqs[3];
	int cfg_irqs;
	struct dq q[3];
	uint16_t qsize[3];           /* ring sizes the driver chose (default QSIZE) */
	uint64_t next_buf;
	int peer;                    /* host end of the socket pair, or the AF_PACKET socket */
	int tapfd_keep;
} T = { .peer = -1, .tapfd_keep = -1 };

static uint8_t *gp(uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_memory_ptr(&T.mem, gpa, len);
	cr_assert_not_null(p);
	return p;
}

static uint64_t galloc(uint64_t len)
{
	uint64_t g = T.next_buf;
	T.next_buf = (T.next_buf + len + 63) & ~63ULL;
	cr_assert_lt(T.next_buf, MEM_SIZE);
	return g;
}

static uint64_t desc_gpa(unsigned q)
{
	return RING_GPA(q);
}

static uint64_t avail_gpa(unsigned q)
{
	return RING_GPA(q) + 0x1000;
}

static uint64_t used_gpa(unsigned q)
{
	return RING_GPA(q) + 0x2000;
}

static uint16_t used_idx(unsigned q)
{
	uint16_t v = __atomic_load_n((uint16_t *)gp(used_gpa(q) + 2, 2), __ATOMIC_ACQUIRE);
	return le16toh(v);
}

/* Posts a chain; returns its head. */
static uint16_t post(unsigned q, const struct seg *s, unsigned n)
{
	struct dq *dq = &T.q[q];
	cr_assert_geq(dq->nfree, n, "test driver out of descriptors");
	uint16_t head = dq->free_head, d = head;
	for (unsigned i = 0; i < n; i++) {
		uint8_t *p = gp(desc_gpa(q) + 16ULL * d, 16);
		uint16_t nx = dq->next[d];
		put_le64(p, s[i].gpa);
		put_le32(p + 8, s[i].len);
		put_le16(p + 12, (uint16_t)((i + 1 < n ? VIRTQ_DESC_F_NEXT : 0) |
					    (s[i].write ? VIRTQ_DESC_F_WRITE : 0)));
		put_le16(p + 14, nx);
		dq->nfree--;
		if (i + 1 < n)
			d = nx;
		else
			dq->free_head = nx;
	}
	put_le16(gp(avail_gpa(q) + 4 + 2ULL * (dq->avail_idx % T.qsize[q]), 2), head);
	dq->avail_idx++;
	__atomic_store_n((uint16_t *)gp(avail_gpa(q) + 2, 2), htole16(dq->avail_idx),
			 __ATOMIC_RELEASE);
	return head;
}

/* Takes the next used entry if there is one; frees its descriptors. */
static bool take_used(unsigned q, uint32_t *id, uint32_t *len)
{
	struct dq *dq = &T.q[q];
	if (used_idx(q) == dq->last_used)
		return false;
	uint8_t *e = gp(used_gpa(q) + 4 + 8ULL * (dq->last_used % T.qsize[q]), 8);
	*id = get_le32(e);
	*len = get_le32(e + 4);
	dq->last_used++;
	cr_assert_lt(*id, T.qsize[q]);
	/* Return the chain's descriptors to the free list. */
	uint16_t d = (uint16_t)*id;
	for (;;) {
		uint8_t *p = gp(desc_gpa(q) + 16ULL * d, 16);
		uint16_t flags = get_le16(p + 12), nx = get_le16(p + 14);
		dq->next[d] = dq->free_head;
		dq->free_head = d;
		dq->nfree++;
		if (!(flags & VIRTQ_DESC_F_NEXT))
			break;
		d = nx;
	}
	return true;
}

static void kick(unsigned q)
{
	struct virtio_dev *d = &T.n->dev;
	pthread_mutex_lock(&d->lock);
	if (virtio_dev_running(d) && d->vq[q].started)
		d->ops->queue_notify(d, q);
	pthread_mutex_unlock(&d->lock);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Waits until `count` used entries are pending on q (3 s at most). */
static void wait_used(unsigned q, uint16_t count)
{
	for (int i = 0; i < 3000; i++) {
		if ((uint16_t)(used_idx(q) - T.q[q].last_used) >= count)
			return;
		sleep_ms(1);
	}
	cr_assert_fail("queue %u: %u used entries expected, %u arrived", q, count,
		       (uint16_t)(used_idx(q) - T.q[q].last_used));
}

static void signal_queue(struct virtio_dev *d, unsigned q)
{
	(void)d;
	__atomic_add_fetch(&T.irqs[q], 1, __ATOMIC_RELAXED);
}

static void signal_config(struct virtio_dev *d)
{
	(void)d;
	__atomic_add_fetch(&T.cfg_irqs, 1, __ATOMIC_RELAXED);
}

/* Forgets queue q's state and gives it `size` descriptors. */
static void driver_queue_reset(unsigned q, uint16_t size)
{
	memset(&T.q[q], 0, sizeof(T.q[q]));
	for (unsigned i = 0; i < size; i++)
		T.q[q].next[i] = (uint16_t)(i + 1);
	T.q[q].nfree = size;
	T.qsize[q] = size;
}

static void env_setup(void)
{
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&T.mem, MEM_SIZE, &err), 0, "%s", err.msg);
	T.mem_ready = true;
	cr_assert_eq(evloop_init(&T.loop, &err), 0, "%s", err.msg);
	T.loop_ready = true;
	T.next_buf = BUF_GPA;
	T.tops.signal_queue = signal_queue;
	T.tops.signal_config = signal_config;
	for (unsigned q = 0; q < 3; q++)
		driver_queue_reset(q, QSIZE);
}

/* Creates the device on `backend` and starts the I/O thread. */
static void start_dev(struct tap *backend)
{
	struct cv_error err = { 0 };
	T.n = virtio_net_new(backend, GUEST_MAC, 0, &T.mem, &T.loop, &err);
	cr_assert_not_null(T.n, "%s", err.msg);
	T.n->dev.transport = &T.tops;
	cr_assert_eq(evloop_start(&T.loop, "net-test", &err), 0, "%s", err.msg);
}

/* Negotiates `features` (must be offered) and starts all three queues. */
static void driver_init(uint64_t features)
{
	struct virtio_dev *d = &T.n->dev;
	pthread_mutex_lock(&d->lock);
	cr_assert_eq(features & ~d->host_features, 0, "features %#llx not offered",
		     (unsigned long long)(features & ~d->host_features));
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	d->guest_features = features | F(VIRTIO_F_VERSION_1);
	uint8_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	virtio_dev_write_status(d, st);
	cr_assert(d->status & VIRTIO_STATUS_FEATURES_OK);
	for (unsigned q = 0; q < 3; q++) {
		d->vq[q].size = T.qsize[q];
		d->vq[q].desc_gpa = desc_gpa(q);
		d->vq[q].avail_gpa = avail_gpa(q);
		d->vq[q].used_gpa = used_gpa(q);
		d->queue_enabled[q] = true;
	}
	virtio_dev_write_status(d, st | VIRTIO_STATUS_DRIVER_OK);
	cr_assert(virtio_dev_running(d));
	pthread_mutex_unlock(&d->lock);
}

static void teardown(void)
{
	if (T.loop_ready)
		evloop_stop(&T.loop);
	if (T.n) {
		pthread_mutex_lock(&T.n->dev.lock);
		virtio_dev_reset(&T.n->dev);
		pthread_mutex_unlock(&T.n->dev.lock);
		virtio_net_free(T.n);
		T.n = NULL;
	}
	if (T.loop_ready)
		evloop_destroy(&T.loop);
	T.loop_ready = false;
	if (T.mem_ready)
		guest_memory_free(&T.mem);
	T.mem_ready = false;
	if (T.peer >= 0)
		close(T.peer);
	T.peer = -1;
	if (T.tapfd_keep >= 0)
		close(T.tapfd_keep);
	T.tapfd_keep = -1;
}

static struct net_stats stats(void)
{
	struct net_stats s;
	virtio_net_get_stats(T.n, &s);
	return s;
}

static bool needs_reset(void)
{
	pthread_mutex_lock(&T.n->dev.lock);
	bool r = T.n->dev.status & VIRTIO_STATUS_NEEDS_RESET;
	pthread_mutex_unlock(&T.n->dev.lock);
	return r;
}

/* A test frame: dst, src, TEST_ETHERTYPE, then a pattern seeded by `seed`. */
static void make_frame(uint8_t *f, size_t len, const uint8_t dst[6], uint32_t seed)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, PEER_MAC, 6);
	f[12] = TEST_ETHERTYPE >> 8;
	f[13] = TEST_ETHERTYPE & 0xff;
	for (size_t i = 14; i < len; i++)
		f[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
	if (len >= 18)
		put_le32(f + 14, seed);
}

/* ---- socket pair backend ---- */

/* A SOCK_SEQPACKET pair standing in for the TAP; `offloads` pretends TUNSETOFFLOAD support. */
static void start_sockpair(bool vnet_hdr, unsigned offloads)
{
	env_setup();
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	struct tap t = { .fd = sv[0], .ifname = "sockpair", .vnet_hdr = vnet_hdr,
			 .offloads = offloads };
	T.peer = sv[1];
	start_dev(&t);
}

/* Host side sends one frame (with a header if the backend has them). */
static void peer_send(const struct vnet_hdr *h, const uint8_t *frame, size_t len)
{
	static uint8_t msg[VNET_HDR_LEN + 70000];
	size_t off = 0;
	if (T.n->tap.vnet_hdr) {
		struct vnet_hdr z = { 0 };
		vnet_hdr_encode(h ? h : &z, msg);
		off = VNET_HDR_LEN;
	}
	memcpy(msg + off, frame, len);
	ssize_t r = send(T.peer, msg, off + len, 0);
	cr_assert_eq(r, (ssize_t)(off + len), "send: %s", strerror(errno));
}

/* Host side receives one message (1 s at most); returns its length, -1 if none came. */
static ssize_t peer_recv(uint8_t *buf, size_t cap, int timeout_ms)
{
	for (int i = 0; i < timeout_ms; i++) {
		ssize_t r = recv(T.peer, buf, cap, MSG_DONTWAIT);
		if (r >= 0)
			return r;
		cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "recv: %s", strerror(errno));
		sleep_ms(1);
	}
	return -1;
}

/* Posts `n` receive chains of `size` bytes (one descriptor each); returns the first GPA. */
static uint64_t post_rx(unsigned n, uint32_t size)
{
	uint64_t first = 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t g = galloc(size);
		if (!i)
			first = g;
		struct seg s = { g, size, true };
		post(NET_RXQ, &s, 1);
	}
	return first;
}

/* Maps used ids of the receive queue back to buffer GPAs (one-descriptor chains). */
static uint64_t rx_buf_of(uint32_t id)
{
	return get_le64(gp(desc_gpa(NET_RXQ) + 16ULL * id, 8));
}

/* Collects one received frame: header and the frame bytes reassembled across buffers. */
static size_t rx_collect(struct vnet_hdr *h, uint8_t *frame, size_t cap)
{
	uint32_t id, len;
	wait_used(NET_RXQ, 1);
	cr_assert(take_used(NET_RXQ, &id, &len));
	cr_assert_geq(len, VNET_HDR_LEN);
	uint8_t *b = gp(rx_buf_of(id), len);
	vnet_hdr_decode(b, h);
	size_t got = len - VNET_HDR_LEN;
	cr_assert_leq(got, cap);
	memcpy(frame, b + VNET_HDR_LEN, got);
	for (unsigned k = 1; k < h->num_buffers; k++) {
		wait_used(NET_RXQ, 1);
		cr_assert(take_used(NET_RXQ, &id, &len));
		cr_assert_leq(got + len, cap);
		memcpy(frame + got, gp(rx_buf_of(id), len), len);
		got += len;
	}
	return got;
}

/* The peer sends n frames of len bytes (at most 2000) to the guest, numbered from first. */
static void peer_sends_numbered(uint32_t first, uint32_t n, size_t len)
{
	uint8_t frame[2000];
	cr_assert_leq(len, sizeof(frame));
	for (uint32_t i = 0; i < n; i++) {
		make_frame(frame, len, GUEST_MAC, first + i);
		peer_send(NULL, frame, len);
	}
}

/* The guest receives frame number `num` of peer_sends_numbered, whole; *h is its header. */
static void rx_expect_numbered(uint32_t num, size_t len, struct vnet_hdr *h)
{
	uint8_t got[2000], want[2000];
	cr_assert_leq(len, sizeof(want));
	cr_assert_eq(rx_collect(h, got, sizeof(got)), len, "frame %u", num);
	make_frame(want, len, GUEST_MAC, num);
	cr_assert_arr_eq(got, want, len, "frame %u", num);
}

/* Sends one frame from the guest: header, then the frame split in `parts` descriptors. */
static void guest_send(const struct vnet_hdr *h, const uint8_t *frame, size_t len,
		       unsigned parts)
{
	struct seg s[8];
	uint64_t hg = galloc(VNET_HDR_LEN);
	struct vnet_hdr z = { 0 };
	vnet_hdr_encode(h ? h : &z, gp(hg, VNET_HDR_LEN));
	s[0] = (struct seg){ hg, VNET_HDR_LEN, false };
	size_t off = 0;
	for (unsigned i = 0; i < parts; i++) {
		size_t l = i + 1 == parts ? len - off : len / parts;
		uint64_t g = galloc(l ? l : 1);
		memcpy(gp(g, l), frame + off, l);
		s[1 + i] = (struct seg){ g, (uint32_t)l, false };
		off += l;
	}
	post(NET_TXQ, s, 1 + parts);
}

TestSuite(net, .fini = teardown, .timeout = 60);

Test(net, offers_features_and_config_space)
{
	start_sockpair(true, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
	uint64_t f = T.n->dev.host_features;
	uint64_t must = F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_STATUS) | F(VIRTIO_NET_F_MRG_RXBUF) |
			F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4) | F(VIRTIO_NET_F_HOST_TSO6) |
			F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_TSO4) |
			F(VIRTIO_NET_F_GUEST_TSO6) | F(VIRTIO_NET_F_GUEST_ECN) |
			F(VIRTIO_NET_F_CTRL_VQ) | F(VIRTIO_NET_F_CTRL_RX) |
			F(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) | F(VIRTIO_F_VERSION_1);
	cr_assert_eq(f & must, must);
	cr_assert_eq(f & F(VIRTIO_NET_F_GUEST_UFO), 0, "the TAP did not accept UFO");
	cr_assert_eq(f & F(VIRTIO_NET_F_MQ), 0);
	cr_assert_eq(T.n->dev.ops->device_id, VIRTIO_ID_NET);
	uint8_t cfg[8];
	pthread_mutex_lock(&T.n->dev.lock);
	T.n->dev.ops->config_read(&T.n->dev, 0, cfg, 8);
	uint8_t st[2];
	T.n->dev.ops->config_read(&T.n->dev, 6, st, 2);
	uint8_t past[4] = { 9, 9, 9, 9 };
	T.n->dev.ops->config_read(&T.n->dev, 200, past, 4);
	pthread_mutex_unlock(&T.n->dev.lock);
	cr_assert_arr_eq(cfg, GUEST_MAC, 6);
	cr_assert_eq(get_le16(cfg + 6), VIRTIO_NET_S_LINK_UP);
	cr_assert_eq(get_le16(st), VIRTIO_NET_S_LINK_UP);
	cr_assert_eq(past[0], 9, "reads past the config space leave the transport's zeros alone");
}

Test(net, backend_without_vnet_header_offers_no_offloads)
{
	start_sockpair(false, TUN_F_CSUM);
	uint64_t f = T.n->dev.host_features;
	cr_assert_eq(f & (F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_GUEST_CSUM) |
			  F(VIRTIO_NET_F_HOST_TSO4) | F(VIRTIO_NET_F_GUEST_TSO4)),
		     0);
}

Test(net, transmit_passes_header_and_scattered_frame)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4));
	uint8_t frame[1500];
	make_frame(frame, sizeof(frame), PEER_MAC, 1);
	struct vnet_hdr h = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 34,
			      .csum_offset = 6, .num_buffers = 0x7777 };
	guest_send(&h, frame, sizeof(frame), 3);
	kick(NET_TXQ);
	uint8_t msg[2048];
	ssize_t r = peer_recv(msg, sizeof(msg), 1000);
	cr_assert_eq(r, VNET_HDR_LEN + 1500);
	struct vnet_hdr got;
	vnet_hdr_decode(msg, &got);
	cr_assert_eq(got.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
	cr_assert_eq(got.csum_start, 34);
	cr_assert_eq(got.csum_offset, 6);
	cr_assert_eq(got.num_buffers, 0, "num_buffers is not the TAP's business");
	cr_assert_arr_eq(msg + VNET_HDR_LEN, frame, 1500);
	wait_used(NET_TXQ, 1);
	uint32_t id, len;
	cr_assert(take_used(NET_TXQ, &id, &len));
	cr_assert_eq(len, 0, "transmit chains have nothing written");
	struct net_stats s = stats();
	cr_assert_eq(s.tx_packets, 1);
	cr_assert_eq(s.tx_bytes, 1500);
	cr_assert_eq(s.tx_errors, 0);
	cr_assert_geq(T.irqs[NET_TXQ], 1);
}

Test(net, transmit_to_backend_without_header_sends_bare_frames)
{
	start_sockpair(false, 0);
	driver_init(0);
	uint8_t frame[60];
	make_frame(frame, sizeof(frame), PEER_MAC, 2);
	guest_send(NULL, frame, sizeof(frame), 1);
	kick(NET_TXQ);
	uint8_t msg[256];
	cr_assert_eq(peer_recv(msg, sizeof(msg), 1000), 60);
	cr_assert_arr_eq(msg, frame, 60);
	/* A header asking for offloads that cannot have been negotiated is refused. */
	struct vnet_hdr h = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 14 };
	guest_send(&h, frame, sizeof(frame), 1);
	kick(NET_TXQ);
	wait_used(NET_TXQ, 2);
	cr_assert_eq(peer_recv(msg, sizeof(msg), 100), -1);
	cr_assert_eq(stats().tx_errors, 1);
}

Test(net, malformed_transmit_chains_are_counted_not_fatal)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_CSUM));
	/* Shorter than the header. */
	uint64_t g = galloc(8);
	struct seg s = { g, 8, false };
	post(NET_TXQ, &s, 1);
	/* Runt frame, oversize frame, GSO not negotiated. */
	uint8_t *big = malloc(VNET_MAX_FRAME + 1);
	make_frame(big, VNET_MAX_FRAME + 1, PEER_MAC, 3);
	guest_send(NULL, big, 10, 1);
	guest_send(NULL, big, VNET_MAX_FRAME + 1, 4);
	struct vnet_hdr h = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .gso_type = 1, .gso_size = 1000,
			      .csum_start = 34, .csum_offset = 16 };
	guest_send(&h, big, 3000, 1);
	/* And a good one after them still goes out. */
	guest_send(NULL, big, VNET_MAX_FRAME, 4);
	kick(NET_TXQ);
	wait_used(NET_TXQ, 5);
	uint8_t *msg = malloc(VNET_HDR_LEN + VNET_MAX_FRAME + 10);
	cr_assert_eq(peer_recv(msg, VNET_HDR_LEN + VNET_MAX_FRAME + 10, 1000),
		     VNET_HDR_LEN + VNET_MAX_FRAME);
	cr_assert_arr_eq(msg + VNET_HDR_LEN, big, VNET_MAX_FRAME);
	cr_assert_eq(peer_recv(msg, 100, 50), -1);
	struct net_stats st = stats();
	cr_assert_eq(st.tx_errors, 4);
	cr_assert_eq(st.tx_packets, 1);
	cr_assert(!needs_reset(), "bad frames are not ring violations");
	free(big);
	free(msg);
}

Test(net, transmit_waits_for_a_full_backend_without_loss)
{
	start_sockpair(true, 0);
	driver_init(0);
	/* A small send buffer makes the stand-in TAP push back (EAGAIN) after a few frames. */
	int sb = 4096;
	cr_assert_eq(setsockopt(T.n->tap.fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb)), 0);
	enum { N = 120 };
	uint8_t frame[600];
	for (uint32_t i = 0; i < N; i++) {
		make_frame(frame, sizeof(frame), PEER_MAC, i);
		guest_send(NULL, frame, sizeof(frame), 1);
	}
	kick(NET_TXQ);
	sleep_ms(100);
	cr_assert_lt((uint16_t)(used_idx(NET_TXQ) - T.q[NET_TXQ].last_used), N,
		     "the backend should have pushed back");
	cr_assert_geq(stats().tx_stalls, 1);
	/* Kicking while blocked changes nothing and loses nothing. */
	kick(NET_TXQ);
	uint8_t msg[1024];
	for (uint32_t i = 0; i < N; i++) {
		ssize_t r = peer_recv(msg, sizeof(msg), 2000);
		cr_assert_eq(r, VNET_HDR_LEN + 600, "frame %u", i);
		cr_assert_eq(get_le32(msg + VNET_HDR_LEN + 14), i, "frames in order");
		make_frame(frame, sizeof(frame), PEER_MAC, i);
		cr_assert_arr_eq(msg + VNET_HDR_LEN, frame, 600);
	}
	wait_used(NET_TXQ, N);
	cr_assert_eq(peer_recv(msg, sizeof(msg), 50), -1);
	struct net_stats s = stats();
	cr_assert_eq(s.tx_packets, N);
	cr_assert_eq(s.tx_errors + s.tx_dropped, 0);
}

Test(net, mergeable_receive_spans_buffers)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(16, 1526);
	kick(NET_RXQ);
	uint8_t frame[5000];
	make_frame(frame, sizeof(frame), GUEST_MAC, 4);
	peer_send(NULL, frame, sizeof(frame));
	/* 5012 bytes with the header: 3 full buffers and 434 bytes of a fourth. */
	wait_used(NET_RXQ, 4);
	uint32_t lens[4];
	uint8_t *b0 = NULL;
	uint8_t got[5000];
	size_t off = 0;
	for (int i = 0; i < 4; i++) {
		uint32_t id;
		cr_assert(take_used(NET_RXQ, &id, &lens[i]));
		uint8_t *b = gp(rx_buf_of(id), lens[i]);
		if (i == 0) {
			b0 = b;
			memcpy(got, b + VNET_HDR_LEN, lens[i] - VNET_HDR_LEN);
			off = lens[i] - VNET_HDR_LEN;
		} else {
			memcpy(got + off, b, lens[i]);
			off += lens[i];
		}
	}
	cr_assert_eq(lens[0], 1526);
	cr_assert_eq(lens[1], 1526);
	cr_assert_eq(lens[2], 1526);
	cr_assert_eq(lens[3], 5012 - 3 * 1526);
	struct vnet_hdr h;
	vnet_hdr_decode(b0, &h);
	cr_assert_eq(h.num_buffers, 4);
	cr_assert_eq(off, 5000);
	cr_assert_arr_eq(got, frame, 5000);
	/* A small frame after it takes exactly one buffer. */
	make_frame(frame, 64, GUEST_MAC, 5);
	peer_send(NULL, frame, 64);
	size_t n = rx_collect(&h, got, sizeof(got));
	cr_assert_eq(n, 64);
	cr_assert_eq(h.num_buffers, 1);
	cr_assert_arr_eq(got, frame, 64);
	struct net_stats s = stats();
	cr_assert_eq(s.rx_packets, 2);
	cr_assert_eq(s.rx_bytes, 5064);
	cr_assert_geq(T.irqs[NET_RXQ], 1);
}

Test(net, receive_without_merging_uses_one_buffer_per_frame)
{
	start_sockpair(true, 0);
	driver_init(0);
	/* One chain whose header is split over two descriptors, then plain ones. */
	uint64_t a = galloc(6), b = galloc(1994);
	struct seg split[2] = { { a, 6, true }, { b, 1994, true } };
	post(NET_RXQ, split, 2);
	post_rx(4, 2000);
	kick(NET_RXQ);
	uint8_t f1[1988], f2[100], f3[1989];
	make_frame(f1, sizeof(f1), GUEST_MAC, 6);
	make_frame(f2, sizeof(f2), GUEST_MAC, 7);
	make_frame(f3, sizeof(f3), GUEST_MAC, 8);
	peer_send(NULL, f1, sizeof(f1));       /* exactly fills the split chain */
	wait_used(NET_RXQ, 1);
	uint32_t id, len;
	cr_assert(take_used(NET_RXQ, &id, &len));
	cr_assert_eq(len, 2000);
	struct vnet_hdr h;
	uint8_t hdr[VNET_HDR_LEN];
	memcpy(hdr, gp(a, 6), 6);
	memcpy(hdr + 6, gp(b, 6), 6);
	vnet_hdr_decode(hdr, &h);
	cr_assert_eq(h.num_buffers, 1, "VERSION_1 without merging: num_buffers is 1");
	cr_assert_arr_eq(gp(b + 6, 1988), f1, 1988);
	peer_send(NULL, f3, sizeof(f3));       /* one byte too many for any buffer: dropped */
	peer_send(NULL, f2, sizeof(f2));
	uint8_t got[2000];
	cr_assert_eq(rx_collect(&h, got, sizeof(got)), 100);
	cr_assert_arr_eq(got, f2, 100);
	struct net_stats s = stats();
	cr_assert_eq(s.rx_packets, 2);
	cr_assert_eq(s.rx_dropped, 1);
}

/* Waits (3 s at most) until a device flag, read under its lock, is set. */
static void wait_for(const bool *flag)
{
	for (int i = 0; i < 3000; i++) {
		pthread_mutex_lock(&T.n->dev.lock);
		bool v = *flag;
		pthread_mutex_unlock(&T.n->dev.lock);
		if (v)
			return;
		sleep_ms(1);
	}
	cr_assert_fail("device state not reached");
}

/* CPU time of the whole process, for "does not spin" checks. */
static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

Test(net, receive_waits_for_buffers_without_spinning_or_loss)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	enum { N = 8 };
	peer_sends_numbered(100, N, 300);
	wait_for(&T.n->rx_starved);
	double c0 = cpu_seconds();
	sleep_ms(300);
	double spent = cpu_seconds() - c0;
	cr_assert_lt(spent, 0.1, "%.3f s of CPU in 300 ms while starved: spinning", spent);
	pthread_mutex_lock(&T.n->dev.lock);
	bool starved = T.n->rx_starved;
	uint32_t ev = T.n->tap_events;
	pthread_mutex_unlock(&T.n->dev.lock);
	cr_assert(starved);
	cr_assert_eq(ev, 0, "the TAP is not watched while there is nowhere to put frames");
	cr_assert_eq(get_le16(gp(used_gpa(NET_RXQ), 2)) & VIRTQ_USED_F_NO_NOTIFY, 0,
		     "receive kicks are wanted");
	cr_assert_eq(stats().rx_stalls, 1);
	post_rx(32, 1526);
	kick(NET_RXQ);
	for (uint32_t i = 0; i < N; i++) {
		struct vnet_hdr h;
		rx_expect_numbered(100 + i, 300, &h);
	}
	struct net_stats s = stats();
	cr_assert_eq(s.rx_packets, N);
	cr_assert_eq(s.rx_dropped + s.rx_errors, 0);
	/* With buffers held, kicks are off again: the ring is ours to take from. */
	cr_assert_eq(get_le16(gp(used_gpa(NET_RXQ), 2)) & VIRTQ_USED_F_NO_NOTIFY,
		     VIRTQ_USED_F_NO_NOTIFY);
}

Test(net, large_frame_waits_for_enough_mergeable_buffers)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(2, 1526);
	kick(NET_RXQ);
	static uint8_t frame[20000];
	make_frame(frame, sizeof(frame), GUEST_MAC, 9);
	peer_send(NULL, frame, sizeof(frame));
	sleep_ms(100);
	cr_assert_eq(used_idx(NET_RXQ), 0, "held back: 3052 bytes of buffers for 20012");
	post_rx(8, 1526);        /* 15260 bytes: still short */
	kick(NET_RXQ);
	sleep_ms(100);
	cr_assert_eq(used_idx(NET_RXQ), 0);
	post_rx(4, 1526);        /* 21364 bytes */
	kick(NET_RXQ);
	struct vnet_hdr h;
	static uint8_t got[30000];
	cr_assert_eq(rx_collect(&h, got, sizeof(got)), sizeof(frame));
	cr_assert_eq(h.num_buffers, 14);
	cr_assert_arr_eq(got, frame, sizeof(frame));
	struct net_stats s = stats();
	cr_assert_eq(s.rx_packets, 1);
	cr_assert_eq(s.rx_dropped, 0);
}

Test(net, frame_larger_than_a_whole_small_ring_is_dropped_not_waited_for)
{
	start_sockpair(true, 0);
	driver_queue_reset(NET_RXQ, 8);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(8, 1526);           /* the whole ring: 12208 bytes */
	kick(NET_RXQ);
	static uint8_t frame[20000];
	make_frame(frame, sizeof(frame), GUEST_MAC, 12);
	peer_send(NULL, frame, sizeof(frame));
	make_frame(frame, 100, GUEST_MAC, 13);
	peer_send(NULL, frame, 100);
	struct vnet_hdr h;
	uint8_t got[200];
	cr_assert_eq(rx_collect(&h, got, sizeof(got)), 100);
	cr_assert_eq(get_le32(got + 14), 13);
	struct net_stats s = stats();
	cr_assert_eq(s.rx_dropped, 1);
	cr_assert_eq(s.rx_packets, 1);
}

Test(net, oversize_and_runt_frames_are_counted)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(64, 4096);
	kick(NET_RXQ);
	static uint8_t frame[VNET_MAX_FRAME + 1];
	make_frame(frame, sizeof(frame), GUEST_MAC, 10);
	peer_send(NULL, frame, sizeof(frame));
	peer_send(NULL, frame, 10);
	peer_send(NULL, frame, VNET_MAX_FRAME);   /* the largest valid frame still arrives */
	struct vnet_hdr h;
	static uint8_t got[VNET_MAX_FRAME + 100];
	cr_assert_eq(rx_collect(&h, got, sizeof(got)), VNET_MAX_FRAME);
	cr_assert_arr_eq(got, frame, VNET_MAX_FRAME);
	struct net_stats s = stats();
	cr_assert_eq(s.rx_errors, 2);
	cr_assert_eq(s.rx_packets, 1);
}

Test(net, receive_chain_too_small_for_the_header)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(1, 8);
	post_rx(1, 1526);
	kick(NET_RXQ);
	uint8_t frame[100];
	make_frame(frame, sizeof(frame), GUEST_MAC, 11);
	peer_send(NULL, frame, sizeof(frame));
	wait_used(NET_RXQ, 2);
	uint32_t id, len;
	cr_assert(take_used(NET_RXQ, &id, &len));
	cr_assert_eq(len, 0, "the 8-byte chain is returned unused");
	cr_assert(take_used(NET_RXQ, &id, &len));
	cr_assert_eq(len, VNET_HDR_LEN + 100);
	cr_assert_eq(stats().rx_errors, 1);
	cr_assert(!needs_reset());
}

/* An Ethernet + IPv4 + UDP frame whose checksum field holds the pseudo-header sum. */
static size_t udp_frame(uint8_t *f, size_t payload, uint16_t *pseudo_out)
{
	size_t len = 14 + 20 + 8 + payload;
	memset(f, 0, len);
	memcpy(f, GUEST_MAC, 6);
	memcpy(f + 6, PEER_MAC, 6);
	f[12] = 0x08;
	uint8_t *ip = f + 14, *udp = ip + 20;
	ip[0] = 0x45;
	ip[2] = (uint8_t)((20 + 8 + payload) >> 8);
	ip[3] = (uint8_t)(20 + 8 + payload);
	ip[8] = 64;
	ip[9] = 17;
	const uint8_t src[4] = { 192, 0, 2, 1 }, dst[4] = { 192, 0, 2, 2 };
	memcpy(ip + 12, src, 4);
	memcpy(ip + 16, dst, 4);
	uint16_t ic = ref_csum(ip, 20, 0);
	ip[10] = (uint8_t)(ic >> 8);
	ip[11] = (uint8_t)ic;
	udp[0] = 0x30;
	udp[1] = 0x39;
	udp[2] = 0x30;
	udp[3] = 0x3a;
	udp[4] = (uint8_t)((8 + payload) >> 8);
	udp[5] = (uint8_t)(8 + payload);
	for (size_t i = 0; i < payload; i++)
		udp[8 + i] = (uint8_t)(i * 13 + 1);
	/* Pseudo header: addresses, protocol, UDP length; stored un-inverted (partial). */
	uint32_t sum = 0;
	for (int i = 0; i < 4; i += 2)
		sum += (uint32_t)(src[i] << 8 | src[i + 1]) + (uint32_t)(dst[i] << 8 | dst[i + 1]);
	sum += 17 + (uint32_t)(8 + payload);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	udp[6] = (uint8_t)(sum >> 8);
	udp[7] = (uint8_t)sum;
	if (pseudo_out)
		*pseudo_out = (uint16_t)sum;
	return len;
}

/* True if the UDP checksum of the frame verifies (pseudo header included). */
static bool udp_csum_ok(const uint8_t *f, size_t len)
{
	const uint8_t *ip = f + 14;
	uint32_t sum = 0;
	for (int i = 12; i < 20; i += 2)
		sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
	sum += 17 + (uint32_t)(len - 34);
	return ref_csum(f + 34, len - 34, sum) == 0;
}

Test(net, receive_completes_checksums_for_a_driver_without_guest_csum)
{
	start_sockpair(true, TUN_F_CSUM);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(8, 700);            /* the 1001-byte payload straddles buffers */
	kick(NET_RXQ);
	uint8_t f[1100], got[1200];
	size_t len = udp_frame(f, 1001, NULL);
	cr_assert(!udp_csum_ok(f, len), "a partial checksum does not verify yet");
	struct vnet_hdr h = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 34,
			      .csum_offset = 6 };
	peer_send(&h, f, len);
	struct vnet_hdr gh;
	cr_assert_eq(rx_collect(&gh, got, sizeof(got)), len);
	cr_assert_eq(gh.flags, 0);
	cr_assert(udp_csum_ok(got, len), "the device completed the checksum");
	cr_assert_arr_eq(got + 42, f + 42, len - 42, "payload unchanged");
	/* DATA_VALID is cleared, and GSO frames are refused, for such a driver. */
	h = (struct vnet_hdr){ .flags = VIRTIO_NET_HDR_F_DATA_VALID };
	peer_send(&h, got, len);
	cr_assert_eq(rx_collect(&gh, got, sizeof(got)), len);
	cr_assert_eq(gh.flags, 0);
	h = (struct vnet_hdr){ .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
			       .gso_type = VIRTIO_NET_HDR_GSO_TCPV4, .gso_size = 500,
			       .csum_start = 34, .csum_offset = 16 };
	peer_send(&h, f, len);
	peer_send(NULL, f, 60);
	cr_assert_eq(rx_collect(&gh, got, sizeof(got)), 60);
	cr_assert_eq(stats().rx_dropped, 1);
}

Test(net, receive_passes_partial_checksums_to_a_guest_csum_driver)
{
	start_sockpair(true, TUN_F_CSUM);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_NET_F_GUEST_CSUM));
	post_rx(8, 1526);
	kick(NET_RXQ);
	uint8_t f[1100], got[1200];
	uint16_t pseudo;
	size_t len = udp_frame(f, 500, &pseudo);
	struct vnet_hdr h = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 34,
			      .csum_offset = 6 };
	peer_send(&h, f, len);
	struct vnet_hdr gh;
	cr_assert_eq(rx_collect(&gh, got, sizeof(got)), len);
	cr_assert_eq(gh.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
	cr_assert_eq(gh.csum_start, 34);
	cr_assert_eq(gh.csum_offset, 6);
	cr_assert_arr_eq(got, f, len, "left for the driver to finish");
}

/* Sends a control command; returns the ack byte. */
static uint8_t ctrl(uint8_t cls, uint8_t cmd, const void *data, size_t len)
{
	uint64_t hg = galloc(2), dg = galloc(len ? len : 1), ag = galloc(1);
	gp(hg, 2)[0] = cls;
	gp(hg, 2)[1] = cmd;
	if (len)
		memcpy(gp(dg, len), data, len);
	*gp(ag, 1) = 0xee;
	struct seg s[3] = { { hg, 2, false }, { dg, (uint32_t)len, false }, { ag, 1, true } };
	if (len)
		post(NET_CTRLQ, s, 3);
	else {
		s[1] = s[2];
		post(NET_CTRLQ, s, 2);
	}
	kick(NET_CTRLQ);
	wait_used(NET_CTRLQ, 1);
	uint32_t id, l;
	cr_assert(take_used(NET_CTRLQ, &id, &l));
	cr_assert_eq(l, 1);
	return *gp(ag, 1);
}

Test(net, control_queue_filters_and_mac)
{
	start_sockpair(true, TUN_F_CSUM);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_NET_F_CTRL_VQ) | F(VIRTIO_NET_F_CTRL_RX) |
		    F(VIRTIO_NET_F_CTRL_MAC_ADDR) | F(VIRTIO_NET_F_GUEST_CSUM) |
		    F(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS));
	post_rx(32, 1526);
	kick(NET_RXQ);
	uint8_t off = 0;
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &off, 1), VIRTIO_NET_OK);
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, &off, 1), VIRTIO_NET_OK);
	uint8_t tbl[64];
	const uint8_t multi[1][6] = { { 0x01, 0x00, 0x5e, 0, 0, 1 } };
	size_t tl = mac_tables(tbl, NULL, 0, multi, 1);
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, tbl, tl),
		     VIRTIO_NET_OK);
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, tbl, tl - 1),
		     VIRTIO_NET_ERR, "truncated table");
	cr_assert_eq(ctrl(9, 0, NULL, 0), VIRTIO_NET_ERR, "unknown class");
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_RX, 7, &off, 1), VIRTIO_NET_ERR, "RX_EXTRA not offered");

	const uint8_t other[6] = { 0x52, 0x54, 0, 1, 2, 3 };
	const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	const uint8_t mc2[6] = { 0x01, 0x00, 0x5e, 0, 0, 2 };
	const uint8_t *dsts[] = { other, GUEST_MAC, mc2, bcast, multi[0] };
	uint8_t frame[80], got[200];
	for (uint32_t i = 0; i < 5; i++) {
		make_frame(frame, sizeof(frame), dsts[i], i);
		peer_send(NULL, frame, sizeof(frame));
	}
	/* Arrive: own MAC, broadcast, the listed multicast group. */
	const uint32_t want[] = { 1, 3, 4 };
	for (int i = 0; i < 3; i++) {
		struct vnet_hdr h;
		cr_assert_eq(rx_collect(&h, got, sizeof(got)), sizeof(frame));
		cr_assert_eq(get_le32(got + 14), want[i]);
	}
	cr_assert_eq(stats().rx_filtered, 2);

	/* A new MAC: config space and filter follow it. */
	const uint8_t nmac[6] = { 0x52, 0x54, 0x00, 0x99, 0x88, 0x77 };
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, nmac, 6),
		     VIRTIO_NET_OK);
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, mc2, 6),
		     VIRTIO_NET_ERR, "multicast address");
	uint8_t cfg[6];
	pthread_mutex_lock(&T.n->dev.lock);
	T.n->dev.ops->config_read(&T.n->dev, 0, cfg, 6);
	pthread_mutex_unlock(&T.n->dev.lock);
	cr_assert_arr_eq(cfg, nmac, 6);
	make_frame(frame, sizeof(frame), GUEST_MAC, 20);
	peer_send(NULL, frame, sizeof(frame));
	make_frame(frame, sizeof(frame), nmac, 21);
	peer_send(NULL, frame, sizeof(frame));
	struct vnet_hdr h;
	cr_assert_eq(rx_collect(&h, got, sizeof(got)), sizeof(frame));
	cr_assert_eq(get_le32(got + 14), 21, "the old MAC no longer passes");
	/* Promiscuous again: everything passes. */
	uint8_t on = 1;
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &on, 1), VIRTIO_NET_OK);
	make_frame(frame, sizeof(frame), other, 22);
	peer_send(NULL, frame, sizeof(frame));
	cr_assert_eq(rx_collect(&h, got, sizeof(got)), sizeof(frame));
	cr_assert_eq(get_le32(got + 14), 22);

	/* Guest offloads: only what was negotiated. */
	uint8_t v[8];
	put_le64(v, F(VIRTIO_NET_F_GUEST_CSUM));
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_GUEST_OFFLOADS, 0, v, 8), VIRTIO_NET_OK);
	put_le64(v, F(VIRTIO_NET_F_GUEST_TSO4) | F(VIRTIO_NET_F_GUEST_CSUM));
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_GUEST_OFFLOADS, 0, v, 8), VIRTIO_NET_ERR);
	/* Offloads switched off: partial checksums are now completed by the device. */
	put_le64(v, 0);
	cr_assert_eq(ctrl(VIRTIO_NET_CTRL_GUEST_OFFLOADS, 0, v, 8), VIRTIO_NET_OK);
	uint8_t uf[600];
	size_t ul = udp_frame(uf, 300, NULL);
	struct vnet_hdr ph = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 34,
			       .csum_offset = 6 };
	peer_send(&ph, uf, ul);
	uint8_t ug[700];
	cr_assert_eq(rx_collect(&h, ug, sizeof(ug)), ul);
	cr_assert_eq(h.flags, 0);
	cr_assert(udp_csum_ok(ug, ul));
}

Test(net, ring_violation_needs_reset_then_recovers)
{
	start_sockpair(true, 0);
	driver_init(0);
	/* A descriptor chained to itself. */
	uint64_t g = galloc(64);
	uint16_t head = T.q[NET_TXQ].free_head;
	struct seg s[2] = { { g, 32, false }, { g + 32, 32, false } };
	post(NET_TXQ, s, 2);
	put_le16(gp(desc_gpa(NET_TXQ) + 16ULL * head + 14, 2), head);
	kick(NET_TXQ);
	cr_assert(needs_reset());
	cr_assert_geq(T.cfg_irqs, 1);
	/* Reset and start over: the device works again. */
	pthread_mutex_lock(&T.n->dev.lock);
	virtio_dev_write_status(&T.n->dev, 0);
	pthread_mutex_unlock(&T.n->dev.lock);
	memset(gp(RING_GPA(0), 0xc000), 0, 0xc000);
	for (unsigned q = 0; q < 3; q++)
		driver_queue_reset(q, QSIZE);
	driver_init(0);
	uint8_t frame[64], msg[128];
	make_frame(frame, sizeof(frame), PEER_MAC, 30);
	guest_send(NULL, frame, sizeof(frame), 1);
	kick(NET_TXQ);
	cr_assert_eq(peer_recv(msg, sizeof(msg), 1000), VNET_HDR_LEN + 64);
	cr_assert_arr_eq(msg + VNET_HDR_LEN, frame, 64);
}

Test(net, event_index_roundtrip)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_RING_F_EVENT_IDX) |
		    F(VIRTIO_RING_F_INDIRECT_DESC));
	post_rx(16, 1526);
	kick(NET_RXQ);
	uint8_t frame[3000], got[4000], msg[4000];
	for (uint32_t i = 0; i < 20; i++) {
		make_frame(frame, sizeof(frame), GUEST_MAC, i);
		peer_send(NULL, frame, sizeof(frame));
		struct vnet_hdr h;
		cr_assert_eq(rx_collect(&h, got, sizeof(got)), sizeof(frame));
		cr_assert_arr_eq(got, frame, sizeof(frame));
		/* Give the buffers back, as a driver refills. */
		post_rx(h.num_buffers, 1526);
		kick(NET_RXQ);
		guest_send(NULL, frame, sizeof(frame), 2);
		kick(NET_TXQ);
		cr_assert_eq(peer_recv(msg, sizeof(msg), 1000), VNET_HDR_LEN + sizeof(frame));
		cr_assert_arr_eq(msg + VNET_HDR_LEN, frame, sizeof(frame));
		wait_used(NET_TXQ, 1);
		uint32_t id, len;
		cr_assert(take_used(NET_TXQ, &id, &len));
	}
	struct net_stats s = stats();
	cr_assert_eq(s.rx_packets, 20);
	cr_assert_eq(s.tx_packets, 20);
}

Test(net, reset_drops_a_parked_frame_and_counts_it)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(1, 1526);
	kick(NET_RXQ);
	static uint8_t frame[4000];
	make_frame(frame, sizeof(frame), GUEST_MAC, 40);
	peer_send(NULL, frame, sizeof(frame));
	wait_for(&T.n->rx_starved);
	pthread_mutex_lock(&T.n->dev.lock);
	cr_assert_eq(T.n->pending_len, VNET_HDR_LEN + sizeof(frame));
	virtio_dev_write_status(&T.n->dev, 0);
	cr_assert_eq(T.n->tap_events, 0, "a reset device does not read the TAP");
	pthread_mutex_unlock(&T.n->dev.lock);
	cr_assert_eq(stats().rx_dropped, 1);
}

/* ======================= rate limiting ======================= */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

#define MS_NS 1000000ULL

static struct rate_limiter_config rl_cfg(uint64_t bw, uint64_t bw_ms, uint64_t ops, uint64_t ops_ms)
{
	struct rate_limiter_config c = { 0 };
	c.bandwidth = (struct token_bucket_config){ bw, 0, bw_ms, bw != 0 };
	c.ops = (struct token_bucket_config){ ops, 0, ops_ms, ops != 0 };
	return c;
}

static void net_limit(const struct rate_limiter_config *rx, const struct rate_limiter_config *tx)
{
	struct cv_error err = { 0 };
	cr_assert_eq(net_set_rate_limiter(T.n, rx, tx, &err), 0, "%s", err.msg);
}

static bool dev_flag(const bool *flag)
{
	pthread_mutex_lock(&T.n->dev.lock);
	bool v = *flag;
	pthread_mutex_unlock(&T.n->dev.lock);
	return v;
}

Test(net_ratelimit, transmit_ops_limit_spaces_frames_in_order, .fini = teardown, .timeout = 60)
{
	start_sockpair(true, 0);
	driver_init(0);
	struct rate_limiter_config tx = rl_cfg(0, 0, 1, 100);
	net_limit(NULL, &tx);
	enum { N = 5 };
	uint8_t frame[200];
	for (uint32_t i = 0; i < N; i++) {
		make_frame(frame, sizeof(frame), PEER_MAC, i);
		guest_send(NULL, frame, sizeof(frame), 2);
	}
	uint64_t t0 = now_ns();
	kick(NET_TXQ);
	uint8_t msg[1024];
	for (uint32_t i = 0; i < N; i++) {
		ssize_t r = peer_recv(msg, sizeof(msg), 3000);
		uint64_t at = now_ns() - t0;
		cr_assert_eq(r, VNET_HDR_LEN + sizeof(frame), "frame %u", i);
		cr_assert_eq(get_le32(msg + VNET_HDR_LEN + 14), i, "frames in order");
		make_frame(frame, sizeof(frame), PEER_MAC, i);
		cr_assert_arr_eq(msg + VNET_HDR_LEN, frame, sizeof(frame));
		cr_assert_geq(at + MS_NS, i * 100 * MS_NS, "frame %u sent after %llu ms", i,
			      (unsigned long long)(at / MS_NS));
		if (i == 1) {
			/* Waiting: the chain is back in the ring and nothing spins. */
			cr_assert(dev_flag(&T.n->tx_rl_wait));
			double c0 = cpu_seconds();
			sleep_ms(50);
			cr_assert_lt(cpu_seconds() - c0, 0.03, "spinning while throttled");
		}
	}
	wait_used(NET_TXQ, N);
	cr_assert_eq(peer_recv(msg, sizeof(msg), 50), -1);
	struct net_stats s = stats();
	cr_assert_eq(s.tx_packets, N);
	cr_assert_geq(T.n->tx_rl.throttled, N - 1);
}

Test(net_ratelimit, receive_bandwidth_limit_parks_frames_in_order, .fini = teardown,
     .timeout = 60)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	/* 1000 bytes per 100 ms; frames of 500 bytes: two at once, then one per 50 ms. */
	struct rate_limiter_config rx = rl_cfg(1000, 100, 0, 0);
	net_limit(&rx, NULL);
	post_rx(32, 1526);
	kick(NET_RXQ);
	enum { N = 6, LEN = 500 };
	uint64_t t0 = now_ns();
	peer_sends_numbered(200, N, LEN);
	for (uint32_t i = 0; i < N; i++) {
		struct vnet_hdr h;
		rx_expect_numbered(200 + i, LEN, &h);
		uint64_t at = now_ns() - t0;
		if (i >= 2)
			cr_assert_geq(at + MS_NS, (i - 1) * 50 * MS_NS, "frame %u after %llu ms", i,
				      (unsigned long long)(at / MS_NS));
		if (i == 2) {
			/* A frame is parked for tokens: the TAP is not read meanwhile. */
			pthread_mutex_lock(&T.n->dev.lock);
			bool waiting = T.n->rx_rl_wait;
			uint32_t ev = T.n->tap_events;
			pthread_mutex_unlock(&T.n->dev.lock);
			if (waiting)
				cr_assert_eq(ev & EPOLLIN, 0, "the TAP is read while throttled");
		}
	}
	struct net_stats s = stats();
	cr_assert_eq(s.rx_packets, N);
	cr_assert_eq(s.rx_bytes, N * LEN);
	cr_assert_eq(s.rx_dropped + s.rx_errors, 0);
	cr_assert_geq(T.n->rx_rl.throttled, 1);
}

Test(net_ratelimit, receive_without_merging_and_without_vnet_header, .fini = teardown,
     .timeout = 60)
{
	/* A bare-frame backend: the header the device writes must survive the parking. */
	start_sockpair(false, 0);
	driver_init(0);
	struct rate_limiter_config rx = rl_cfg(0, 0, 1, 80);
	net_limit(&rx, NULL);
	post_rx(8, 1526);
	kick(NET_RXQ);
	enum { N = 3, LEN = 100 };
	uint64_t t0 = now_ns();
	peer_sends_numbered(300, N, LEN);
	for (uint32_t i = 0; i < N; i++) {
		struct vnet_hdr h;
		rx_expect_numbered(300 + i, LEN, &h);
		cr_assert_eq(h.flags, 0);
		cr_assert_eq(h.gso_type, 0);
		cr_assert_geq(now_ns() - t0 + MS_NS, i * 80 * MS_NS);
	}
}

Test(net_ratelimit, reconfiguring_live_releases_both_directions, .fini = teardown,
     .timeout = 60)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	struct rate_limiter_config slow = rl_cfg(0, 0, 1, 10000);
	net_limit(&slow, &slow);
	post_rx(16, 1526);
	kick(NET_RXQ);
	enum { N = 3, LEN = 300 };
	uint8_t frame[LEN];
	for (uint32_t i = 0; i < N; i++) {
		make_frame(frame, sizeof(frame), PEER_MAC, 400 + i);
		guest_send(NULL, frame, sizeof(frame), 1);
		make_frame(frame, sizeof(frame), GUEST_MAC, 500 + i);
		peer_send(NULL, frame, sizeof(frame));
	}
	kick(NET_TXQ);
	uint8_t msg[1024];
	cr_assert_eq(peer_recv(msg, sizeof(msg), 2000), VNET_HDR_LEN + LEN);
	wait_used(NET_RXQ, 1);
	sleep_ms(100);
	cr_assert_eq(peer_recv(msg, sizeof(msg), 10), -1, "the limit let a second frame out");
	cr_assert_eq(used_idx(NET_RXQ), 1, "the limit let a second frame in");
	cr_assert(dev_flag(&T.n->rx_rl_wait) && dev_flag(&T.n->tx_rl_wait));
	/* Lift transmit only: transmit flows, receive still waits. */
	struct rate_limiter_config off = { 0 };
	uint64_t t0 = now_ns();
	net_limit(NULL, &off);
	for (uint32_t i = 1; i < N; i++) {
		cr_assert_eq(peer_recv(msg, sizeof(msg), 2000), VNET_HDR_LEN + LEN);
		cr_assert_eq(get_le32(msg + VNET_HDR_LEN + 14), 400 + i);
	}
	cr_assert_lt(now_ns() - t0, 2000 * MS_NS);
	cr_assert_eq(used_idx(NET_RXQ), 1);
	net_limit(&off, NULL);
	for (uint32_t i = 0; i < N; i++) {
		struct vnet_hdr h;
		uint8_t got[2000];
		cr_assert_eq(rx_collect(&h, got, sizeof(got)), LEN);
		cr_assert_eq(get_le32(got + 14), 500 + i, "receive order");
	}
	cr_assert_lt(now_ns() - t0, 4000 * MS_NS);
	/* A bad setting is refused whole: neither direction changes. */
	struct rate_limiter_config bad = rl_cfg(RL_MAX_SIZE + 1, 100, 0, 0);
	struct cv_error err = { 0 };
	cr_assert_eq(net_set_rate_limiter(T.n, &slow, &bad, &err), -1);
	cr_assert(strstr(err.msg, "virtio-net0"), "%s", err.msg);
	cr_assert(!rate_limiter_active(&T.n->rx_rl));
}

Test(net_ratelimit, reset_drops_a_frame_parked_for_tokens, .fini = teardown, .timeout = 60)
{
	start_sockpair(true, 0);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	struct rate_limiter_config rx = rl_cfg(0, 0, 1, 10000);
	net_limit(&rx, NULL);
	post_rx(4, 1526);
	kick(NET_RXQ);
	uint8_t frame[200];
	for (uint32_t i = 0; i < 2; i++) {
		make_frame(frame, sizeof(frame), GUEST_MAC, 600 + i);
		peer_send(NULL, frame, sizeof(frame));
	}
	wait_used(NET_RXQ, 1);
	wait_for(&T.n->rx_rl_wait);
	pthread_mutex_lock(&T.n->dev.lock);
	cr_assert_eq(T.n->pending_len, VNET_HDR_LEN + sizeof(frame));
	virtio_dev_write_status(&T.n->dev, 0);
	cr_assert(!T.n->rx_rl_wait);
	pthread_mutex_unlock(&T.n->dev.lock);
	cr_assert_eq(stats().rx_dropped, 1);
}

/* ======================= real TAP in a private network namespace ======================= */

/* Enters a new network namespace with IPv6 off (no stray solicitations); false: skip. */
static bool private_netns(void)
{
	if (access("/dev/net/tun", R_OK | W_OK) != 0)
		return false;
	if (unshare(CLONE_NEWNET) != 0)
		return false;
	int fd = open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY);
	if (fd >= 0) {
		cr_assert_eq(write(fd, "1", 1), 1);
		close(fd);
	}
	return true;
}

static void link_up(const char *ifname)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	cr_assert_eq(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	cr_assert_eq(ioctl(s, SIOCSIFFLAGS, &ifr), 0, "up: %s", strerror(errno));
	close(s);
}

/* An AF_PACKET socket on `ifname` for our test ethertype or IPv4, with virtio headers. */
static int packet_socket(const char *ifname, uint16_t proto)
{
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(proto));
	cr_assert_geq(s, 0, "AF_PACKET: %s", strerror(errno));
	int one = 1;
	cr_assert_eq(setsockopt(s, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)), 0);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(proto),
				   .sll_ifindex = (int)if_nametoindex(ifname) };
	cr_assert_neq(sll.sll_ifindex, 0);
	cr_assert_eq(bind(s, (struct sockaddr *)&sll, sizeof(sll)), 0);
	return s;
}

/* Sends through the packet socket with a 10-byte (legacy layout) virtio header. */
static void packet_send(int s, const struct vnet_hdr *h, const uint8_t *frame, size_t len)
{
	uint8_t msg[2048];
	uint8_t raw[VNET_HDR_LEN];
	struct vnet_hdr z = { 0 };
	vnet_hdr_encode(h ? h : &z, raw);
	memcpy(msg, raw, 10);
	memcpy(msg + 10, frame, len);
	cr_assert_eq(send(s, msg, 10 + len, 0), (ssize_t)(10 + len), "send: %s", strerror(errno));
}

TestSuite(tap, .timeout = 60);

static void start_tap(const char *name)
{
	env_setup();
	struct tap t;
	struct cv_error err = { 0 };
	cr_assert_eq(tap_open(&t, name, &err), 0, "%s", err.msg);
	cr_assert(t.created);
	cr_assert(t.is_tap && t.vnet_hdr);
	cr_assert(t.offloads & TUN_F_CSUM, "offloads probed: %#x", t.offloads);
	link_up(name);
	start_dev(&t);
}

Test(tap, attaches_by_fd_and_refuses_what_is_not_a_tap, .fini = teardown)
{
	if (!private_netns())
		cr_skip_test("no network namespace or /dev/net/tun here");
	struct cv_error err = { 0 };
	struct tap t;
	/* Not a TUN/TAP at all. */
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	cr_assert_eq(tap_adopt_fd(&t, fd, &err), -1);
	cr_assert(strstr(err.msg, "not an attached TAP"), "%s", err.msg);
	cr_assert_eq(fcntl(fd, F_GETFD), -1, "the fd is owned (closed) even on failure");
	/* A TUN (layer 3) device. */
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "cvtun0");
	cr_assert_eq(ioctl(fd, TUNSETIFF, &ifr), 0);
	cr_assert_eq(tap_adopt_fd(&t, fd, &err), -1);
	cr_assert(strstr(err.msg, "TUN"), "%s", err.msg);
	/* A TAP opened by a parent without virtio headers: usable, without offloads. */
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "cvtap1");
	cr_assert_eq(ioctl(fd, TUNSETIFF, &ifr), 0);
	cr_assert_eq(tap_adopt_fd(&t, fd, &err), 0, "%s", err.msg);
	cr_assert(t.is_tap);
	cr_assert(!t.vnet_hdr);
	cr_assert_str_eq(t.ifname, "cvtap1");
	cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	tap_close(&t);
	/* With virtio headers. */
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "cvtap2");
	cr_assert_eq(ioctl(fd, TUNSETIFF, &ifr), 0);
	cr_assert_eq(tap_adopt_fd(&t, fd, &err), 0, "%s", err.msg);
	cr_assert(t.vnet_hdr);
	int sz = 0;
	cr_assert_eq(ioctl(t.fd, TUNGETVNETHDRSZ, &sz), 0);
	cr_assert_eq(sz, VNET_HDR_LEN);
	tap_close(&t);
	/* By name: a second open of a single-queue TAP in use is refused clearly. */
	struct tap a, b;
	cr_assert_eq(tap_open(&a, "cvtap3", &err), 0, "%s", err.msg);
	cr_assert_eq(tap_open(&b, "cvtap3", &err), -1);
	cr_assert(strstr(err.msg, "cvtap3"), "%s", err.msg);
	tap_close(&a);
	cr_assert_eq(tap_open(&b, "this-name-is-too-long", &err), -1);
}

Test(tap, frames_cross_a_real_tap_both_ways, .fini = teardown)
{
	if (!private_netns())
		cr_skip_test("no network namespace or /dev/net/tun here");
	start_tap("cvnet0");
	T.peer = packet_socket("cvnet0", TEST_ETHERTYPE);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_NET_F_CSUM));
	post_rx(32, 1526);
	kick(NET_RXQ);
	/* Host -> guest: the packet socket transmits on the TAP, the device receives. */
	uint8_t frame[1000], got[2000];
	for (uint32_t i = 0; i < 10; i++) {
		make_frame(frame, sizeof(frame), GUEST_MAC, 50 + i);
		packet_send(T.peer, NULL, frame, sizeof(frame));
	}
	for (uint32_t i = 0; i < 10; i++) {
		struct vnet_hdr h;
		cr_assert_eq(rx_collect(&h, got, sizeof(got)), sizeof(frame));
		make_frame(frame, sizeof(frame), GUEST_MAC, 50 + i);
		cr_assert_arr_eq(got, frame, sizeof(frame));
	}
	/* Guest -> host. */
	for (uint32_t i = 0; i < 10; i++) {
		make_frame(frame, sizeof(frame), PEER_MAC, 70 + i);
		guest_send(NULL, frame, sizeof(frame), 2);
	}
	kick(NET_TXQ);
	for (uint32_t i = 0; i < 10; i++) {
		ssize_t r = peer_recv(got, sizeof(got), 2000);
		cr_assert_eq(r, 10 + (ssize_t)sizeof(frame));
		make_frame(frame, sizeof(frame), PEER_MAC, 70 + i);
		cr_assert_arr_eq(got + 10, frame, sizeof(frame));
	}
	struct net_stats s = stats();
	cr_assert_eq(s.rx_packets, 10);
	cr_assert_eq(s.tx_packets, 10);
	cr_assert_eq(s.rx_errors + s.tx_errors + s.rx_dropped + s.tx_dropped, 0);
}

/* Host sends a UDP frame with a partial checksum; returns what the guest got. */
static size_t host_partial_udp(struct vnet_hdr *gh, uint8_t *got, size_t cap, uint8_t *sent,
			       size_t *sent_len)
{
	int s = packet_socket(T.n->tap.ifname, ETH_P_IP);
	size_t len = udp_frame(sent, 400, NULL);
	*sent_len = len;
	struct vnet_hdr h = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 34,
			      .csum_offset = 6 };
	packet_send(s, &h, sent, len);
	close(s);
	return rx_collect(gh, got, cap);
}

Test(tap, negotiated_guest_csum_reaches_the_kernel, .fini = teardown)
{
	if (!private_netns())
		cr_skip_test("no network namespace or /dev/net/tun here");
	start_tap("cvnet1");
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_NET_F_GUEST_CSUM));
	post_rx(16, 1526);
	kick(NET_RXQ);
	uint8_t sent[600], got[2000];
	size_t len;
	struct vnet_hdr gh;
	/* TUN_F_CSUM is on: the kernel leaves the checksum to the guest. */
	cr_assert_eq(host_partial_udp(&gh, got, sizeof(got), sent, &len), len);
	cr_assert_eq(gh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_NEEDS_CSUM);
	cr_assert_eq(gh.csum_start, 34);
	cr_assert_eq(gh.csum_offset, 6);
	cr_assert(!udp_csum_ok(got, len));
}

Test(tap, without_guest_csum_the_kernel_finishes_checksums, .fini = teardown)
{
	if (!private_netns())
		cr_skip_test("no network namespace or /dev/net/tun here");
	start_tap("cvnet2");
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(16, 1526);
	kick(NET_RXQ);
	uint8_t sent[600], got[2000];
	size_t len;
	struct vnet_hdr gh;
	cr_assert_eq(host_partial_udp(&gh, got, sizeof(got), sent, &len), len);
	cr_assert_eq(gh.flags, 0);
	cr_assert(udp_csum_ok(got, len), "TUN_F_CSUM off: a finished checksum");
	cr_assert_eq(stats().rx_packets, 1);
}

Test(tap, rate_limits_hold_on_a_real_tap_without_loss, .fini = teardown)
{
	if (!private_netns())
		cr_skip_test("no network namespace or /dev/net/tun here");
	start_tap("cvnet3");
	T.peer = packet_socket("cvnet3", TEST_ETHERTYPE);
	driver_init(F(VIRTIO_NET_F_MRG_RXBUF));
	/* 10000 bytes per 100 ms each way; 30 frames of 1000 bytes: 10 at once, 20 over 200 ms. */
	struct rate_limiter_config c = rl_cfg(10000, 100, 0, 0);
	net_limit(&c, &c);
	post_rx(64, 1526);
	kick(NET_RXQ);
	enum { N = 30, LEN = 1000 };
	uint8_t frame[LEN], got[2000];
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < N; i++) {
		make_frame(frame, sizeof(frame), GUEST_MAC, 800 + i);
		packet_send(T.peer, NULL, frame, sizeof(frame));
	}
	for (uint32_t i = 0; i < N; i++) {
		struct vnet_hdr h;
		cr_assert_eq(rx_collect(&h, got, sizeof(got)), LEN, "frame %u", i);
		make_frame(frame, sizeof(frame), GUEST_MAC, 800 + i);
		cr_assert_arr_eq(got, frame, LEN, "frame %u in order and intact", i);
	}
	uint64_t rx_took = now_ns() - t0;
	cr_assert_geq(rx_took, 190 * MS_NS, "30000 bytes through 10000 per 100 ms in %llu ms",
		      (unsigned long long)(rx_took / MS_NS));
	t0 = now_ns();
	for (uint32_t i = 0; i < N; i++) {
		make_frame(frame, sizeof(frame), PEER_MAC, 900 + i);
		guest_send(NULL, frame, sizeof(frame), 1);
	}
	kick(NET_TXQ);
	for (uint32_t i = 0; i < N; i++) {
		ssize_t r = peer_recv(got, sizeof(got), 2000);
		cr_assert_eq(r, 10 + LEN, "frame %u", i);
		make_frame(frame, sizeof(frame), PEER_MAC, 900 + i);
		cr_assert_arr_eq(got + 10, frame, LEN);
	}
	uint64_t tx_took = now_ns() - t0;
	cr_assert_geq(tx_took, 190 * MS_NS, "tx in %llu ms", (unsigned long long)(tx_took / MS_NS));
	struct net_stats s = stats();
	cr_assert_eq(s.rx_packets, N);
	cr_assert_eq(s.tx_packets, N);
	cr_assert_eq(s.rx_errors + s.tx_errors + s.rx_dropped + s.tx_dropped, 0);
}
