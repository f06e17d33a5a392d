/*
 * Receive filtering for virtio-net's control queue (VIRTIO_NET_F_CTRL_RX, section 5.1.6.5.1):
 * promiscuous and all-multicast modes and the unicast/multicast MAC tables the driver installs,
 * so a guest only sees frames for its own addresses, as on a real NIC behind a bridge. The
 * state starts promiscuous (what a device without CTRL_RX does) until the driver says otherwise.
 */
#ifndef CVISOR_VMM_NET_RXFILTER_H
#define CVISOR_VMM_NET_RXFILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define RXFILTER_MAX_MACS 64

struct rxfilter {
	bool promisc;
	bool allmulti;
	uint8_t mac[6];              /* the NIC's own address */
	unsigned n_uni, n_multi;
	bool uni_overflow, multi_overflow;   /* table larger than we keep: accept the class */
	uint8_t uni[RXFILTER_MAX_MACS][6];
	uint8_t multi[RXFILTER_MAX_MACS][6];
};

void rxfilter_reset(struct rxfilter *f, const uint8_t mac[6]);

/* Whether a frame with destination `dst` reaches the driver. */
bool rxfilter_accept(const struct rxfilter *f, const uint8_t dst[6]);

/*
 * Installs the two tables of VIRTIO_NET_CTRL_MAC_TABLE_SET, read from `len` bytes at `offset`
 * of the iovec (le32 count + count*6 bytes, unicast then multicast). Returns 0, or -1 with the
 * filter unchanged if the payload is malformed.
 */
int rxfilter_set_tables(struct rxfilter *f, const struct iovec *iov, unsigned n, size_t offset,
			size_t len);

#endif
