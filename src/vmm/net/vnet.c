/*
 * virtio-net header rules (see vnet.h).
 */
#include "vnet.h"

#include <linux/if_tun.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"

void vnet_hdr_decode(const uint8_t raw[VNET_HDR_LEN], struct vnet_hdr *h)
{
	h->flags = raw[0];
	h->gso_type = raw[1];
	h->hdr_len = get_le16(raw + 2);
	h->gso_size = get_le16(raw + 4);
	h->csum_start = get_le16(raw + 6);
	h->csum_offset = get_le16(raw + 8);
	h->num_buffers = get_le16(raw + 10);
}

void vnet_hdr_encode(const struct vnet_hdr *h, uint8_t raw[VNET_HDR_LEN])
{
	raw[0] = h->flags;
	raw[1] = h->gso_type;
	put_le16(raw + 2, h->hdr_len);
	put_le16(raw + 4, h->gso_size);
	put_le16(raw + 6, h->csum_start);
	put_le16(raw + 8, h->csum_offset);
	put_le16(raw + 10, h->num_buffers);
}

unsigned vnet_tun_offloads(uint64_t f)
{
	/* The TAP refuses TSO without checksum offload, and a driver may not ask for it either. */
	if (!(f & VNET_BIT(VIRTIO_NET_F_GUEST_CSUM)))
		return 0;
	unsigned t = TUN_F_CSUM;
	if (f & VNET_BIT(VIRTIO_NET_F_GUEST_TSO4))
		t |= TUN_F_TSO4;
	if (f & VNET_BIT(VIRTIO_NET_F_GUEST_TSO6))
		t |= TUN_F_TSO6;
	if ((f & VNET_BIT(VIRTIO_NET_F_GUEST_ECN)) && (t & (TUN_F_TSO4 | TUN_F_TSO6)))
		t |= TUN_F_TSO_ECN;
	if (f & VNET_BIT(VIRTIO_NET_F_GUEST_UFO))
		t |= TUN_F_UFO;
	return t;
}

uint64_t vnet_guest_features_for_tun(unsigned tun)
{
	if (!(tun & TUN_F_CSUM))
		return 0;
	uint64_t f = VNET_BIT(VIRTIO_NET_F_GUEST_CSUM);
	if (tun & TUN_F_TSO4)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_TSO4);
	if (tun & TUN_F_TSO6)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_TSO6);
	if ((tun & TUN_F_TSO_ECN) && (tun & (TUN_F_TSO4 | TUN_F_TSO6)))
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_ECN);
	if (tun & TUN_F_UFO)
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_UFO);
	return f;
}

const char *vnet_tx_hdr_check(const struct vnet_hdr *h, uint64_t features, size_t frame_len)
{
	if (frame_len < VNET_ETH_HLEN)
		return "frame shorter than an Ethernet header";
	if (frame_len > VNET_MAX_FRAME)
		return "frame longer than 65550 bytes";
	/* DATA_VALID (and RSC_INFO) are the device's to set, never the driver's. */
	if (h->flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM)
		return "header flags other than NEEDS_CSUM";
	if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		if (!(features & VNET_BIT(VIRTIO_NET_F_CSUM)))
			return "partial checksum without VIRTIO_NET_F_CSUM";
		if ((size_t)h->csum_start + h->csum_offset + 2 > frame_len)
			return "checksum field outside the frame";
	}
	uint8_t gso = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
	unsigned need;
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_NONE:
		if (h->gso_type & VIRTIO_NET_HDR_GSO_ECN)
			return "ECN flag on a frame without GSO";
		return NULL;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		need = VIRTIO_NET_F_HOST_TSO4;
		break;
	case VIRTIO_NET_HDR_GSO_TCPV6:
		need = VIRTIO_NET_F_HOST_TSO6;
		break;
	case VIRTIO_NET_HDR_GSO_UDP:
		need = VIRTIO_NET_F_HOST_UFO;
		break;
	default:
		return "unknown GSO type";
	}
	if (!(features & VNET_BIT(need)))
		return "GSO type the driver did not negotiate";
	if ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) && !(features & VNET_BIT(VIRTIO_NET_F_HOST_ECN)))
		return "GSO with ECN without VIRTIO_NET_F_HOST_ECN";
	if (h->gso_size == 0)
		return "GSO frame without a segment size";
	return NULL;
}

enum vnet_rx_fix vnet_rx_hdr_fixup(struct vnet_hdr *h, uint64_t offloads, size_t frame_len)
{
	bool csum_ok = offloads & VNET_BIT(VIRTIO_NET_F_GUEST_CSUM);
	h->num_buffers = 0;
	h->flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
	if (h->gso_type != VIRTIO_NET_HDR_GSO_NONE) {
		uint8_t gso = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
		uint64_t need = gso == VIRTIO_NET_HDR_GSO_TCPV4   ? VNET_BIT(VIRTIO_NET_F_GUEST_TSO4)
				: gso == VIRTIO_NET_HDR_GSO_TCPV6 ? VNET_BIT(VIRTIO_NET_F_GUEST_TSO6)
				: gso == VIRTIO_NET_HDR_GSO_UDP   ? VNET_BIT(VIRTIO_NET_F_GUEST_UFO)
								  : 0;
		if (!need || !(offloads & need) || !csum_ok)
			return VNET_RX_DROP;
		if ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) &&
		    !(offloads & VNET_BIT(VIRTIO_NET_F_GUEST_ECN)))
			return VNET_RX_DROP;
	}
	if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		if ((size_t)h->csum_start + h->csum_offset + 2 > frame_len)
			return VNET_RX_DROP;
		if (!csum_ok) {
			/* The caller completes the checksum; the frame is then fully valid. */
			h->flags = 0;
			h->csum_start = h->csum_offset = 0;
			return VNET_RX_CSUM;
		}
	}
	if (!csum_ok) {
		h->flags = 0;
		h->csum_start = h->csum_offset = 0;
	}
	return VNET_RX_OK;
}

uint64_t vnet_csum_add(uint64_t sum, const uint8_t *p, size_t len, bool *odd)
{
	size_t i = 0;
	if (len && *odd) {
		sum += p[0];                 /* low byte of the word a previous buffer began */
		i = 1;
		*odd = false;
	}
	for (; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (i < len) {
		sum += (uint32_t)p[i] << 8;
		*odd = true;
	}
	return sum;
}

uint16_t vnet_csum_finish(uint64_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	uint16_t c = (uint16_t)~sum;
	/* 0 and 0xffff are the same in ones' complement; UDP reads 0 as "no checksum". */
	return c ? c : 0xffff;
}

void vnet_random_mac(uint8_t mac[6])
{
	uint8_t r[3];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		/* getrandom cannot fail for 3 bytes once the pool is up; mix time and pid anyway. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint32_t x = (uint32_t)ts.tv_nsec ^ (uint32_t)getpid() << 8;
		r[0] = (uint8_t)x;
		r[1] = (uint8_t)(x >> 8);
		r[2] = (uint8_t)(x >> 16);
	}
	mac[0] = 0x52;               /* locally administered (bit 1), unicast (bit 0 clear) */
	mac[1] = 0x54;
	mac[2] = 0x00;
	mac[3] = r[0];
	mac[4] = r[1];
	mac[5] = r[2];
}
