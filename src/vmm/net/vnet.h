/*
 * The virtio-net wire format shared by the device and its TAP backend (virtio 1.2, section 5.1):
 * feature bits, the 12-byte struct virtio_net_hdr that precedes every frame, and the pure rules
 * around it: which header a driver may send given what it negotiated, how a header coming from
 * the TAP is made acceptable to a driver that negotiated less, and how negotiated receive
 * offloads become TUNSETOFFLOAD flags. Pure functions only, so every rule is unit-testable
 * without a device.
 */
#ifndef CVISOR_VMM_NET_VNET_H
#define CVISOR_VMM_NET_VNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Feature bits (section 5.1.3) */
#define VIRTIO_NET_F_CSUM 0                 /* driver sends partial checksums */
#define VIRTIO_NET_F_GUEST_CSUM 1           /* driver accepts partial checksums */
#define VIRTIO_NET_F_CTRL_GUEST_OFFLOADS 2
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_GUEST_UFO 10
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_ECN 13
#define VIRTIO_NET_F_HOST_UFO 14
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_CTRL_RX 18
#define VIRTIO_NET_F_CTRL_VLAN 19
#define VIRTIO_NET_F_GUEST_ANNOUNCE 21
#define VIRTIO_NET_F_MQ 22
#define VIRTIO_NET_F_CTRL_MAC_ADDR 23

#define VNET_BIT(b) (1ULL << (b))

/* The guest-receive offloads: what CTRL_GUEST_OFFLOADS may switch and TUNSETOFFLOAD follows. */
#define VNET_GUEST_OFFLOADS                                                                    \
	(VNET_BIT(VIRTIO_NET_F_GUEST_CSUM) | VNET_BIT(VIRTIO_NET_F_GUEST_TSO4) |                 \
	 VNET_BIT(VIRTIO_NET_F_GUEST_TSO6) | VNET_BIT(VIRTIO_NET_F_GUEST_ECN) |                  \
	 VNET_BIT(VIRTIO_NET_F_GUEST_UFO))

/* Config space status field */
#define VIRTIO_NET_S_LINK_UP 1

/* Header flags and GSO types (section 5.1.6) */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE 0
#define VIRTIO_NET_HDR_GSO_TCPV4 1
#define VIRTIO_NET_HDR_GSO_UDP 3
#define VIRTIO_NET_HDR_GSO_TCPV6 4
#define VIRTIO_NET_HDR_GSO_ECN 0x80

/* With VIRTIO_F_VERSION_1 the header always has num_buffers: 12 bytes. */
#define VNET_HDR_LEN 12
#define VNET_ETH_HLEN 14
/* Largest frame (without the virtio header) either direction carries: 64 KiB GSO + Ethernet. */
#define VNET_MAX_FRAME 65550

/* struct virtio_net_hdr in host byte order. */
struct vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
};

void vnet_hdr_decode(const uint8_t raw[VNET_HDR_LEN], struct vnet_hdr *h);
void vnet_hdr_encode(const struct vnet_hdr *h, uint8_t raw[VNET_HDR_LEN]);

/*
 * TUN_F_* flags for the guest-receive offloads in `features` (negotiated bits or the subset set
 * through CTRL_GUEST_OFFLOADS). TSO and UFO need checksum offload, ECN needs TSO: a dependent
 * bit without its base is ignored, as the TAP would refuse it.
 */
unsigned vnet_tun_offloads(uint64_t features);

/*
 * The guest-receive feature bits a TAP that accepts the TUN_F_* flags `tun` can serve, with
 * their dependencies satisfied (GUEST_TSO4 only with GUEST_CSUM...).
 */
uint64_t vnet_guest_features_for_tun(unsigned tun);

/*
 * Checks a header the driver put in front of a transmitted frame of frame_len bytes against
 * the negotiated features. Returns NULL if it may be passed on, else why not.
 */
const char *vnet_tx_hdr_check(const struct vnet_hdr *h, uint64_t features, size_t frame_len);

/* What vnet_rx_hdr_fixup decided for a received header. */
enum vnet_rx_fix {
	VNET_RX_OK,            /* deliver as it is (possibly with flags cleared) */
	VNET_RX_CSUM,          /* deliver after completing the partial checksum (then flags = 0) */
	VNET_RX_DROP,          /* a GSO frame the driver cannot take, or a nonsensical header */
};

/*
 * Makes a header from the TAP fit the offloads the driver currently accepts (`offloads`, a
 * subset of VNET_GUEST_OFFLOADS). Frames queued in the TAP before the offloads were narrowed
 * can still carry partial checksums or GSO: checksums are completed by the caller (VNET_RX_CSUM),
 * GSO cannot be undone here (VNET_RX_DROP). DATA_VALID is cleared when the driver did not
 * negotiate GUEST_CSUM, which the spec requires.
 */
enum vnet_rx_fix vnet_rx_hdr_fixup(struct vnet_hdr *h, uint64_t offloads, size_t frame_len);

/*
 * Ones' complement sum (RFC 1071, not folded, not inverted) of `len` bytes that continue a
 * stream of which `*odd` says whether an odd number of bytes came before; lets a checksum run
 * across scattered buffers. Start with sum = 0 and *odd = false.
 */
uint64_t vnet_csum_add(uint64_t sum, const uint8_t *p, size_t len, bool *odd);
/* Folds a running sum to the 16-bit checksum value to store (inverted, 0 sent as 0xffff). */
uint16_t vnet_csum_finish(uint64_t sum);

/* A random locally administered unicast MAC, 52:54:00:xx:xx:xx. */
void vnet_random_mac(uint8_t mac[6]);

#endif
