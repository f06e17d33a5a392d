/*
 * virtio-net (virtio 1.2, section 5.1) on a TAP backend. Queues: 0 receive, 1 transmit,
 * 2 control. Frames move between guest buffers and the TAP fd without an intermediate copy:
 * received frames are read straight into the driver's buffers (merged over several buffers with
 * VIRTIO_NET_F_MRG_RXBUF), transmitted chains are written with one writev. The virtio header is
 * passed through to the TAP (IFF_VNET_HDR), so checksum and TSO offloads cost nothing here.
 *
 * Flow control, both ways, without spinning or silent loss:
 *  - no receive buffers: the TAP fd is no longer watched for input (the kernel queues, then
 *    counts its own drops) and receive kicks are enabled; the next kick resumes reading.
 *    A frame larger than the buffers held waits in a bounce buffer until more arrive.
 *  - TAP write returns EAGAIN: the chain stays in the ring, transmit kicks are ignored and the
 *    fd is watched for EPOLLOUT, which resumes transmission in order.
 * Everything the device drops is counted in struct net_stats.
 *
 * Rate limiting (ratelimit.h), one limiter per direction; a frame costs one operation and its
 * length without the virtio header. Transmit: a chain the limiter refuses stays in the ring
 * and a timer resumes transmission. Receive: the size of a frame is known only once it is read,
 * so a frame the limiter refuses is parked in the bounce buffer (as one waiting for buffers),
 * the TAP is no longer watched for input and the timer delivers it when the tokens are there.
 * Frames stay in order both ways; the kernel queues (and eventually drops) what arrives meanwhile.
 *
 * Threads: queue notifications and the TAP handler run on the VM's I/O thread with dev.lock
 * held; config accesses, activate and reset come from vCPU threads with the same lock.
 */
#ifndef CVISOR_VMM_VIRTIO_NET_H
#define CVISOR_VMM_VIRTIO_NET_H

#include <limits.h>
#include <stdint.h>

#include "devices.h"
#include "error.h"
#include "net/rxfilter.h"
#include "net/tap.h"
#include "net/vnet.h"
#include "ratelimit.h"
#include "virtio/device.h"

#define NET_QUEUE_SIZE 256
#define NET_RXQ 0
#define NET_TXQ 1
#define NET_CTRLQ 2
#define NET_RX_IOV 1024                 /* iovecs of receive chains held ahead */
#define NET_RX_BUDGET 64                /* frames per TAP wake-up before yielding the loop */
#define NET_TX_BUDGET 256               /* chains per transmit pass before yielding */
#define NET_BOUNCE_SIZE (128u * 1024)   /* spill area of a read; > any valid frame */

/* Control queue (section 5.1.6.5) */
#define VIRTIO_NET_CTRL_RX 0
#define VIRTIO_NET_CTRL_RX_PROMISC 0
#define VIRTIO_NET_CTRL_RX_ALLMULTI 1
#define VIRTIO_NET_CTRL_MAC 1
#define VIRTIO_NET_CTRL_MAC_TABLE_SET 0
#define VIRTIO_NET_CTRL_MAC_ADDR_SET 1
#define VIRTIO_NET_CTRL_GUEST_OFFLOADS 5
#define VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET 0
#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1

/* Per-device counters (for metrics). Frame sizes exclude the virtio header. */
struct net_stats {
	uint64_t rx_packets, rx_bytes;
	uint64_t rx_dropped;     /* did not fit the driver's buffers, GSO it cannot take, reset */
	uint64_t rx_filtered;    /* refused by the driver's MAC filter */
	uint64_t rx_errors;      /* oversize or runt frames, unusable receive chains, read errors */
	uint64_t rx_stalls;      /* times reception waited for driver buffers */
	uint64_t tx_packets, tx_bytes;
	uint64_t tx_dropped;     /* the TAP refused the frame (interface down) or is gone */
	uint64_t tx_errors;      /* malformed chains or headers, write errors */
	uint64_t tx_stalls;      /* times transmission waited for the TAP (EAGAIN) */
};

/* A receive chain taken from the ring ahead of the frame that will fill it. */
struct net_rx_chain {
	uint16_t head;
	uint32_t cap;                /* writable bytes */
	unsigned iov_start;          /* first iovec in the rx_iov ring */
	unsigned iov_count;
};

struct virtio_net {
	struct virtio_dev dev;
	char name[24];
	struct tap tap;
	struct evloop_handler tap_handler;
	bool tap_registered;
	uint32_t tap_events;         /* what the I/O thread currently watches on the TAP */
	bool backend_dead;           /* the TAP failed: link down, frames dropped */
	int tx_resume_fd;            /* eventfd: continue transmitting after a full budget */
	struct evloop_handler tx_resume_handler;
	bool tx_resume_registered;

	uint8_t mac[6];              /* configured address, restored at reset */
	uint8_t cur_mac[6];          /* as the driver set it (CTRL_MAC_ADDR_SET) */
	bool mac_override;           /* restore: `mac` replaces the snapshot's (net_config) */
	bool active;                 /* DRIVER_OK seen, not reset since */
	bool mergeable;
	uint64_t rx_offloads;        /* guest-receive offload features in force */
	bool rx_starved;             /* waiting for receive buffers */
	bool rx_kicks;               /* receive kicks enabled */
	bool rx_pushed, tx_pushed;   /* used entries not yet signalled */
	bool tx_blocked;             /* waiting for the TAP to take writes */
	bool rx_warned, tx_warned;   /* first error of each direction logged */
	struct rate_limiter rx_rl, tx_rl;
	struct rl_timer rx_timer, tx_timer;
	bool rx_rl_wait, tx_rl_wait; /* a frame waits for tokens; the direction's timer resumes */
	bool trace;                  /* CVISOR_VMM_TRACE=net: counters printed at teardown */

	struct net_rx_chain rx_chains[NET_QUEUE_SIZE];
	unsigned rx_first, rx_count;
	uint64_t rx_cap;             /* bytes the held chains can take */
	struct iovec rx_iov[NET_RX_IOV];
	unsigned rx_iov_first, rx_iov_used;

	uint8_t *bounce;             /* NET_BOUNCE_SIZE */
	size_t pending_len;          /* frame (header included) parked in bounce, 0: none */
	uint8_t *tx_flat;            /* VNET_HDR_LEN + VNET_MAX_FRAME: chains with too many segments */
	uint8_t tx_hdr[VNET_HDR_LEN];
	struct iovec io_iov[IOV_MAX];

	struct rxfilter filter;
	struct net_stats stats;
	struct virtq_elem elem;
};

struct vm;

/* Creates the NIC for --net (TAP by name or fd) and plugs it into the VM. */
int virtio_net_add(struct vm *vm, const struct net_config *cfg, unsigned index, struct cv_error *err);

/*
 * Builds a device on an opened backend (taken over, closed on failure too) with the given MAC;
 * the caller plugs it into a transport. For the VMM and for tests.
 */
struct virtio_net *virtio_net_new(struct tap *backend, const uint8_t mac[6], unsigned index,
				  const struct guest_memory *mem, struct evloop *loop,
				  struct cv_error *err);
/*
 * Replaces the NIC's receive and/or transmit rate limiter settings (NULL: unchanged), from any
 * thread (takes the device lock); a frame waiting for tokens is judged again at once.
 */
int net_set_rate_limiter(struct virtio_net *n, const struct rate_limiter_config *rx,
			 const struct rate_limiter_config *tx, struct cv_error *err);
/* Frees a device whose I/O thread has stopped. */
void virtio_net_free(struct virtio_net *n);

/* A consistent copy of the counters. */
void virtio_net_get_stats(struct virtio_net *n, struct net_stats *out);

#endif
