/*
 * Writes the seed corpus of the virtio-net fuzz target (net_input.h): what Linux's virtio_net
 * does (receive buffers, plain and checksum-offloaded transmits, TSO, MAC tables, promiscuous
 * mode, MAC address and offload changes), on both backends, frames split over many segments,
 * frames larger than the buffers (merged or not) and filtered frames. The fuzzer derives the
 * hostile variants from these.
 * Usage: fuzz-net-seeds DIR
 */
#include "bytes.h"
#include "net/vnet.h"
#include "net_input.h"
#include "seed_writer.h"
#include "virtio/net.h"

#define ALL 0xffffffffu

static void preamble(struct seed *s, uint8_t flags, uint32_t features)
{
	seed_reset(s);
	seed_u8(s, flags);
	seed_u32(s, features);
}

static void hdr(struct seed *s, uint8_t flags, uint8_t gso, uint16_t hdr_len, uint16_t gso_size,
		uint16_t start, uint16_t off)
{
	seed_u8(s, flags);
	seed_u8(s, gso);
	seed_u16(s, hdr_len);
	seed_u16(s, gso_size);
	seed_u16(s, start);
	seed_u16(s, off);
	seed_u16(s, 0);
}

static void tx(struct seed *s, uint8_t txflags, uint8_t hflags, uint8_t gso, uint16_t gso_size,
	       uint16_t start, uint16_t off, uint32_t frame_len, unsigned n_split,
	       const uint16_t *split)
{
	seed_u8(s, NETF_OP_TX);
	seed_u8(s, (uint8_t)(n_split + 1));
	seed_u8(s, txflags);
	hdr(s, hflags, gso, 54, gso_size, start, off);
	seed_u32(s, frame_len);
	for (unsigned i = 0; i < n_split; i++)
		seed_u16(s, split[i]);
}

static void rxbuf(struct seed *s, unsigned count, unsigned segs, uint16_t len)
{
	seed_u8(s, NETF_OP_RXBUF);
	seed_u8(s, (uint8_t)count);
	for (unsigned c = 0; c < count; c++) {
		seed_u8(s, (uint8_t)(segs - 1));
		for (unsigned i = 0; i < segs; i++)
			seed_u16(s, len);
	}
}

static void rx(struct seed *s, bool vnet, uint8_t hflags, uint8_t gso, uint16_t start,
	       uint16_t off, const uint8_t *dst, uint32_t frame_len)
{
	seed_u8(s, NETF_OP_RX);
	if (vnet)
		hdr(s, hflags, gso, 54, gso ? 1448 : 0, start, off);
	seed_bytes(s, dst, 6);
	seed_u32(s, frame_len);
}

static void ctrl(struct seed *s, uint8_t cls, uint8_t cmd, const void *payload, uint16_t len,
		 uint8_t shape)
{
	seed_u8(s, NETF_OP_CTRL);
	seed_u8(s, cls);
	seed_u8(s, cmd);
	seed_u16(s, len);
	seed_bytes(s, payload, len);
	seed_u8(s, shape);
}

static const uint8_t OWN[6] = NETF_MAC;
static const uint8_t OTHER[6] = { 0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc };
static const uint8_t MCAST[6] = { 0x01, 0x00, 0x5e, 0x00, 0x00, 0x01 };
static const uint8_t BCAST[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	struct seed s = { 0 };
	int rc = 0;

	/* Linux with mergeable buffers: buffers, a plain frame each way, a checksummed one. */
	for (unsigned plain = 0; plain < 2; plain++) {
		preamble(&s, plain ? NETF_PLAIN_TAP : 0, ALL);
		rxbuf(&s, 8, 1, 1536);
		tx(&s, 0, 0, 0, 0, 0, 0, 60, 0, NULL);
		tx(&s, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 34, 6, 1000, 1, (uint16_t[]){ 12 });
		seed_u8(&s, NETF_OP_TX_KICK);
		rx(&s, !plain, 0, 0, 0, 0, OWN, 60);
		rx(&s, !plain, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 34, 16, BCAST, 1500);
		rc |= seed_save(dir, plain ? "linux-plain-tap" : "linux", &s);
	}

	/* TSO both ways, ECN, a 64 KiB frame over 1024 segments. */
	preamble(&s, 0, ALL);
	tx(&s, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1448, 34, 16, 65000, 0,
	   NULL);
	tx(&s, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN,
	   1428, 54, 16, 9000, 0, NULL);
	tx(&s, NETF_TX_MANY | NETF_TX_INDIRECT, 0, 0, 0, 0, 0, VNET_MAX_FRAME, 0, NULL);
	seed_u8(&s, NETF_OP_TX_KICK);
	rxbuf(&s, 16, 4, 4096);
	rx(&s, true, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 34, 16, OWN, 30000);
	rc |= seed_save(dir, "tso", &s);

	/* Without offloads: the device completes checksums and drops GSO frames. */
	preamble(&s, 0, ALL & ~(uint32_t)VNET_GUEST_OFFLOADS);
	rxbuf(&s, 4, 2, 2048);
	rx(&s, true, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 34, 6, OWN, 301);
	rx(&s, true, VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, OWN, 100);
	rx(&s, true, 0, VIRTIO_NET_HDR_GSO_TCPV4, 34, 16, OWN, 3000);
	rc |= seed_save(dir, "no-offloads", &s);

	/* Receive filter: tables, modes, a new MAC, frames for and not for us. */
	preamble(&s, 0, ALL);
	{
		uint8_t tables[4 + 6 + 4 + 6];
		put_le32(tables, 1);
		memcpy(tables + 4, OTHER, 6);
		put_le32(tables + 10, 1);
		memcpy(tables + 14, MCAST, 6);
		uint8_t off = 0, on = 1;
		ctrl(&s, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &off, 1, 0);
		ctrl(&s, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, tables, sizeof(tables),
		     NETF_CTRL_SPLIT);
		rxbuf(&s, 8, 1, 2048);
		rx(&s, true, 0, 0, 0, 0, OWN, 64);
		rx(&s, true, 0, 0, 0, 0, OTHER, 64);
		rx(&s, true, 0, 0, 0, 0, (uint8_t[]){ 0x52, 0x54, 0, 0, 0, 9 }, 64);
		rx(&s, true, 0, 0, 0, 0, MCAST, 64);
		rx(&s, true, 0, 0, 0, 0, (uint8_t[]){ 0x01, 0, 0x5e, 0, 0, 9 }, 64);
		ctrl(&s, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, &on, 1, NETF_CTRL_BIG_ACK);
		rx(&s, true, 0, 0, 0, 0, (uint8_t[]){ 0x01, 0, 0x5e, 0, 0, 9 }, 64);
		ctrl(&s, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, OTHER, 6, 0);
		rx(&s, true, 0, 0, 0, 0, OWN, 64);
		uint8_t offl[8];
		put_le64(offl, VNET_BIT(VIRTIO_NET_F_GUEST_CSUM));
		ctrl(&s, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, offl, 8, 0);
		rx(&s, true, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 34, 16, OTHER, 3000);
	}
	rc |= seed_save(dir, "filter", &s);

	/* A table of 65 unicast addresses: more than the device keeps. */
	preamble(&s, 0, ALL);
	{
		static uint8_t big[4 + 65 * 6 + 4];
		put_le32(big, 65);
		for (unsigned i = 0; i < 65; i++) {
			memcpy(big + 4 + 6 * i, OTHER, 6);
			big[4 + 6 * i + 5] = (uint8_t)i;
		}
		put_le32(big + 4 + 65 * 6, 0);
		uint8_t off = 0;
		ctrl(&s, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &off, 1, 0);
		ctrl(&s, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, big, sizeof(big), 0);
		rxbuf(&s, 2, 1, 2048);
		rx(&s, true, 0, 0, 0, 0, (uint8_t[]){ 0x52, 0x54, 0, 1, 2, 3 }, 64);
	}
	rc |= seed_save(dir, "table-overflow", &s);

	/* Frames larger than the buffers: merged when negotiated, dropped when not. */
	preamble(&s, 0, ALL);
	rxbuf(&s, 2, 1, 1000);
	rx(&s, true, 0, 0, 0, 0, OWN, 9000);
	rxbuf(&s, 16, 1, 1000);
	rx(&s, true, 0, 0, 0, 0, OWN, 70000);
	rx(&s, true, 0, 0, 0, 0, OWN, 10);
	rxbuf(&s, 2, 1, 8);
	rc |= seed_save(dir, "big-frames", &s);
	preamble(&s, 0, ALL & ~(1u << VIRTIO_NET_F_MRG_RXBUF));
	rxbuf(&s, 2, 1, 1000);
	rx(&s, true, 0, 0, 0, 0, OWN, 9000);
	rx(&s, true, 0, 0, 0, 0, OWN, 900);
	rc |= seed_save(dir, "no-merge", &s);

	/* Headers a driver must not send, and a reset with buffers held. */
	preamble(&s, 0, ALL & ~(1u << VIRTIO_NET_F_HOST_TSO6));
	tx(&s, 0, VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 60, 0, NULL);
	tx(&s, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 50, 10, 60, 0, NULL);
	tx(&s, 0, 0, VIRTIO_NET_HDR_GSO_TCPV6, 1400, 0, 0, 3000, 0, NULL);
	tx(&s, 0, 0, VIRTIO_NET_HDR_GSO_TCPV4, 0, 0, 0, 3000, 0, NULL);
	tx(&s, 0, 0, VIRTIO_NET_HDR_GSO_ECN, 0, 0, 0, 60, 0, NULL);
	tx(&s, 0, 0, 0, 0, 0, 0, 13, 0, NULL);
	seed_u8(&s, NETF_OP_TX_KICK);
	rxbuf(&s, 4, 1, 2048);
	seed_u8(&s, NETF_OP_RESET);
	rx(&s, true, 0, 0, 0, 0, OWN, 64);
	rxbuf(&s, 1, 1, 2048);
	rc |= seed_save(dir, "bad-headers", &s);

	/* A full transmit ring in one kick (the per-pass budget), and chains shorter than a header. */
	preamble(&s, 0, ALL);
	for (unsigned i = 0; i < 256; i++)
		tx(&s, 0, 0, 0, 0, 0, 0, 60 + i, 0, NULL);
	seed_u8(&s, NETF_OP_TX_KICK);
	tx(&s, NETF_TX_SHORT, 0, 0, 0, 0, 0, 11, 0, NULL);
	tx(&s, NETF_TX_SHORT, 0, 0, 0, 0, 0, 0, 0, NULL);
	rc |= seed_save(dir, "tx-budget", &s);

	/* Every receive descriptor held, and a frame bigger than all of them. */
	preamble(&s, 0, ALL);
	for (unsigned i = 0; i < 16; i++)
		rxbuf(&s, 16, 1, 64);
	rx(&s, true, 0, 0, 0, 0, OWN, 20000);
	rc |= seed_save(dir, "rx-full", &s);

	free(s.b);
	return rc ? 1 : 0;
}
