/*
 * virtio-net device (see net.h): feature offer, config space, receive path (TAP -> held guest
 * chains, merged or not), transmit path (chains -> TAP with a checked header), control queue
 * (receive filter, MAC address, guest offloads) and the I/O thread wiring of the TAP fd.
 */
#include "net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bytes.h"
#include "snapshot/format.h"
#include "util.h"
#include "vm.h"

#define RX_FRAME_ROOM ((uint64_t)VNET_HDR_LEN + VNET_MAX_FRAME)

/* ---- I/O thread wiring ---- */

/* Watches the TAP for what the device is waiting for: input unless starved, output if blocked. */
static void tap_update_events(struct virtio_net *n)
{
	if (!n->tap_registered)
		return;
	uint32_t ev = 0;
	if (n->active && virtio_dev_running(&n->dev) && !n->backend_dead) {
		if (!n->rx_starved && !n->rx_rl_wait)
			ev |= EPOLLIN;
		if (n->tx_blocked)
			ev |= EPOLLOUT;
	}
	if (ev == n->tap_events)
		return;
	struct cv_error err;
	if (evloop_modify(n->dev.loop, &n->tap_handler, ev, &err) < 0) {
		cv_error_print(&err, n->name);
		return;
	}
	n->tap_events = ev;
}

/* The TAP is unusable (interface deleted, unexpected error): link down, stop watching it. */
static void backend_failed(struct virtio_net *n, const char *what, int e)
{
	if (n->backend_dead)
		return;
	fprintf(stderr, "cvisor-vmm: %s: TAP %s: %s%s%s; link down\n", n->name, n->tap.ifname,
		what, e ? ": " : "", e ? strerror(e) : "");
	n->backend_dead = true;
	if (n->tap_registered) {
		evloop_remove(n->dev.loop, &n->tap_handler);
		n->tap_registered = false;
		n->tap_events = 0;
	}
	if (n->dev.status & VIRTIO_STATUS_DRIVER_OK)
		virtio_dev_config_changed(&n->dev);
}

static void warn_once(struct virtio_net *n, bool *warned, const char *dir, const char *why)
{
	if (*warned)
		return;
	*warned = true;
	fprintf(stderr, "cvisor-vmm: %s: %s: %s (counted; further ones only counted)\n", n->name,
		dir, why);
}

/* Returns a chain to the driver by head and capacity (a held chain has no virtq_elem). */
static void push_chain(struct virtio_net *n, unsigned q, uint16_t head, uint32_t cap,
		       uint32_t written)
{
	n->elem.head = head;
	n->elem.in_len = cap;
	virtq_push(&n->dev.vq[q], &n->elem, written);
}

/* ---- receive: chains held ahead ---- */

static struct net_rx_chain *rx_chain(struct virtio_net *n, unsigned i)
{
	return &n->rx_chains[(n->rx_first + i) % NET_QUEUE_SIZE];
}

static struct iovec *rx_seg(struct virtio_net *n, const struct net_rx_chain *c, unsigned k)
{
	return &n->rx_iov[(c->iov_start + k) % NET_RX_IOV];
}

enum hold { HOLD_OK, HOLD_EMPTY, HOLD_FULL, HOLD_BROKEN };

/* Takes one chain from the receive ring into the held list. */
static enum hold rx_hold_one(struct virtio_net *n)
{
	struct virtq *vq = &n->dev.vq[NET_RXQ];
	for (;;) {
		/*
		 * Holding as many chains as the ring has entries means the driver has nothing left to
		 * give until we return some: waiting for more would wait forever.
		 */
		if (n->rx_count >= vq->size || n->rx_count == NET_QUEUE_SIZE)
			return HOLD_FULL;
		int r = virtq_pop(vq, &n->elem);
		if (r < 0)
			return HOLD_BROKEN;
		if (r == 0)
			return HOLD_EMPTY;
		if (n->elem.in_len < VNET_HDR_LEN) {
			/* Each receive buffer must hold at least the header (5.1.6.3.1). */
			n->stats.rx_errors++;
			warn_once(n, &n->rx_warned, "receive", "buffer smaller than the virtio header");
			virtq_push(vq, &n->elem, 0);
			n->rx_pushed = true;
			continue;
		}
		if (n->rx_iov_used + n->elem.n_in > NET_RX_IOV) {
			virtq_unpop(vq);
			return HOLD_FULL;
		}
		struct net_rx_chain *c = rx_chain(n, n->rx_count);
		c->head = n->elem.head;
		c->cap = n->elem.in_len > UINT32_MAX ? UINT32_MAX : (uint32_t)n->elem.in_len;
		c->iov_start = (n->rx_iov_first + n->rx_iov_used) % NET_RX_IOV;
		c->iov_count = n->elem.n_in;
		for (unsigned k = 0; k < n->elem.n_in; k++)
			*rx_seg(n, c, k) = n->elem.iov[n->elem.n_out + k];
		n->rx_iov_used += n->elem.n_in;
		n->rx_count++;
		n->rx_cap += c->cap;
		return HOLD_OK;
	}
}

/* Drops the first `count` held chains from the list (after pushing them, or at reset). */
static void rx_release(struct virtio_net *n, unsigned count)
{
	for (unsigned i = 0; i < count; i++) {
		struct net_rx_chain *c = rx_chain(n, 0);
		n->rx_cap -= c->cap;
		n->rx_iov_first = (n->rx_iov_first + c->iov_count) % NET_RX_IOV;
		n->rx_iov_used -= c->iov_count;
		n->rx_first = (n->rx_first + 1) % NET_QUEUE_SIZE;
		n->rx_count--;
	}
}

enum fill { FILL_STARVED, FILL_OK, FILL_NEVER, FILL_BROKEN };

/*
 * Holds chains until `want` bytes are held or the ring is empty, and says whether `need` bytes
 * are held. Receive kicks are wanted only while starved: enabling them is followed by another
 * look, since buffers added while they were off raise no kick.
 */
static enum fill rx_fill(struct virtio_net *n, uint64_t want, uint64_t need)
{
	struct virtq *vq = &n->dev.vq[NET_RXQ];
	for (;;) {
		enum hold h = HOLD_OK;
		while (n->rx_cap < want && (h = rx_hold_one(n)) == HOLD_OK) {
		}
		if (h == HOLD_BROKEN)
			return FILL_BROKEN;
		if (n->rx_cap >= need && n->rx_count) {
			if (n->rx_kicks) {
				virtq_set_notification(vq, false);
				n->rx_kicks = false;
			}
			return FILL_OK;
		}
		if (h == HOLD_FULL)
			return FILL_NEVER;
		if (n->rx_kicks)
			return FILL_STARVED;
		n->rx_kicks = true;
		if (virtq_set_notification(vq, true))
			return FILL_STARVED;
	}
}

/* Copies between the frame being assembled in the held chains and a flat buffer. */
static void rx_pkt_copy(struct virtio_net *n, size_t off, void *buf, size_t len, bool to_guest)
{
	uint8_t *p = buf;
	for (unsigned i = 0; i < n->rx_count && len; i++) {
		struct net_rx_chain *c = rx_chain(n, i);
		if (off >= c->cap) {
			off -= c->cap;
			continue;
		}
		for (unsigned k = 0; k < c->iov_count && len; k++) {
			struct iovec *v = rx_seg(n, c, k);
			if (off >= v->iov_len) {
				off -= v->iov_len;
				continue;
			}
			size_t chunk = CV_MIN(v->iov_len - off, len);
			if (to_guest)
				memcpy((uint8_t *)v->iov_base + off, p, chunk);
			else
				memcpy(p, (uint8_t *)v->iov_base + off, chunk);
			p += chunk;
			len -= chunk;
			off = 0;
		}
		off = 0;
	}
}

/* Completes a partial checksum of the frame in the held chains (frame offsets after header). */
static void rx_complete_csum(struct virtio_net *n, size_t total, uint16_t start, uint16_t field)
{
	uint8_t chunk[512];
	uint64_t sum = 0;
	bool odd = false;
	for (size_t off = VNET_HDR_LEN + (size_t)start; off < total;) {
		size_t len = CV_MIN(sizeof(chunk), total - off);
		rx_pkt_copy(n, off, chunk, len, false);
		sum = vnet_csum_add(sum, chunk, len, &odd);
		off += len;
	}
	uint16_t c = vnet_csum_finish(sum);
	uint8_t be[2] = { (uint8_t)(c >> 8), (uint8_t)c };
	rx_pkt_copy(n, VNET_HDR_LEN + (size_t)start + field, be, 2, true);
}

/*
 * A frame of `total` bytes (header included) is in the held chains: make the header fit what
 * the driver negotiated, apply the MAC filter and return the chains it occupies.
 */
static void rx_deliver(struct virtio_net *n, size_t total)
{
	struct virtio_dev *d = &n->dev;
	uint8_t raw[VNET_HDR_LEN];
	struct vnet_hdr h;
	size_t frame_len = total - VNET_HDR_LEN;
	if (virtio_dev_has(d, VIRTIO_NET_F_CTRL_RX)) {
		uint8_t dst[6];
		rx_pkt_copy(n, VNET_HDR_LEN, dst, 6, false);
		if (!rxfilter_accept(&n->filter, dst)) {
			n->stats.rx_filtered++;
			return;
		}
	}
	rx_pkt_copy(n, 0, raw, sizeof(raw), false);
	vnet_hdr_decode(raw, &h);
	uint16_t start = h.csum_start, field = h.csum_offset;
	switch (vnet_rx_hdr_fixup(&h, n->rx_offloads, frame_len)) {
	case VNET_RX_DROP:
		n->stats.rx_dropped++;
		warn_once(n, &n->rx_warned, "receive",
			  "a frame carried offloads the driver does not accept");
		return;
	case VNET_RX_CSUM:
		rx_complete_csum(n, total, start, field);
		break;
	case VNET_RX_OK:
		break;
	}
	unsigned used = 1;
	if (n->mergeable) {
		uint64_t room = rx_chain(n, 0)->cap;
		while (room < total)
			room += rx_chain(n, used++)->cap;
	}
	h.num_buffers = (uint16_t)used;
	vnet_hdr_encode(&h, raw);
	rx_pkt_copy(n, 0, raw, sizeof(raw), true);
	size_t left = total;
	for (unsigned i = 0; i < used; i++) {
		struct net_rx_chain *c = rx_chain(n, i);
		uint32_t w = (uint32_t)CV_MIN((size_t)c->cap, left);
		push_chain(n, NET_RXQ, c->head, c->cap, w);
		left -= w;
	}
	rx_release(n, used);
	n->rx_pushed = true;
	n->stats.rx_packets++;
	n->stats.rx_bytes += frame_len;
}

/*
 * Reads one frame from the TAP straight into the held chains, with the bounce buffer behind
 * them for whatever does not fit. Returns 1 if a frame was consumed, 0 if none was waiting,
 * -1 if the TAP failed.
 */
static int rx_read(struct virtio_net *n)
{
	/* A TAP without IFF_VNET_HDR gives bare frames: leave room for a header we write. */
	size_t skip = n->tap.vnet_hdr ? 0 : VNET_HDR_LEN;
	size_t room = 0, off = skip;
	unsigned niov = 0;
	unsigned chains = n->mergeable ? n->rx_count : 1;
	for (unsigned i = 0; i < chains && room < RX_FRAME_ROOM; i++) {
		struct net_rx_chain *c = rx_chain(n, i);
		for (unsigned k = 0; k < c->iov_count && room < RX_FRAME_ROOM; k++) {
			struct iovec *v = rx_seg(n, c, k);
			if (off >= v->iov_len) {
				off -= v->iov_len;
				room += v->iov_len;
				continue;
			}
			if (niov == IOV_MAX - 1)
				break;
			size_t len = CV_MIN(v->iov_len - off, RX_FRAME_ROOM - room);
			n->io_iov[niov].iov_base = (uint8_t *)v->iov_base + off;
			n->io_iov[niov].iov_len = len;
			niov++;
			room += off + len;
			off = 0;
		}
		if (niov == IOV_MAX - 1)
			break;
	}
	n->io_iov[niov].iov_base = n->bounce;
	n->io_iov[niov].iov_len = NET_BOUNCE_SIZE;
	niov++;
	ssize_t r;
	do
		r = readv(n->tap.fd, n->io_iov, (int)niov);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		n->stats.rx_errors++;
		backend_failed(n, "read", errno);
		return -1;
	}
	if (r == 0)
		return 0;
	size_t total = (size_t)r + skip;
	if (total > RX_FRAME_ROOM) {
		n->stats.rx_errors++;
		warn_once(n, &n->rx_warned, "receive", "frame longer than 65550 bytes");
		return 1;
	}
	if (total < VNET_HDR_LEN + VNET_ETH_HLEN) {
		n->stats.rx_errors++;
		warn_once(n, &n->rx_warned, "receive", "frame shorter than an Ethernet header");
		return 1;
	}
	if (total > room) {
		if (!n->mergeable) {
			/* Without merging, one buffer per frame: the driver's buffers are too small. */
			n->stats.rx_dropped++;
			warn_once(n, &n->rx_warned, "receive", "frame larger than the driver's buffer");
			return 1;
		}
		/*
		 * More than the held chains can take: park the whole frame in the bounce buffer and
		 * wait for buffers (tail first, so it is not overwritten by the head).
		 */
		memmove(n->bounce + room, n->bounce, total - room);
		rx_pkt_copy(n, 0, n->bounce, room, false);
		if (skip)
			memset(n->bounce, 0, VNET_HDR_LEN);
		n->pending_len = total;
		return 1;
	}
	if (skip) {
		uint8_t zero[VNET_HDR_LEN] = { 0 };
		rx_pkt_copy(n, 0, zero, VNET_HDR_LEN, true);
	}
	uint64_t retry_at;
	if (!rate_limiter_consume(&n->rx_rl, total - VNET_HDR_LEN, 1, &retry_at)) {
		/* Parked uncharged; it pays when delivered from the bounce buffer. */
		rx_pkt_copy(n, 0, n->bounce, total, false);
		n->pending_len = total;
		n->rx_rl_wait = true;
		rl_timer_arm_at(&n->rx_timer, &n->rx_rl, retry_at);
		return 1;
	}
	rx_deliver(n, total);
	return 1;
}

static void rx_process(struct virtio_net *n)
{
	struct virtio_dev *d = &n->dev;
	if (!n->active || !virtio_dev_running(d) || n->backend_dead)
		return;
	for (unsigned budget = NET_RX_BUDGET; budget && !n->rx_rl_wait; budget--) {
		uint64_t need = n->pending_len ? n->pending_len : 1;
		uint64_t want = n->pending_len ? n->pending_len : n->mergeable ? RX_FRAME_ROOM : 1;
		enum fill f = rx_fill(n, want, need);
		if (f == FILL_BROKEN) {
			virtio_dev_fail(d, d->vq[NET_RXQ].error);
			break;
		}
		if (f == FILL_NEVER && n->pending_len) {
			/* We hold all the buffers we can and they cannot take it: they never will. */
			n->pending_len = 0;
			n->stats.rx_dropped++;
			warn_once(n, &n->rx_warned, "receive",
				  "frame larger than all receive buffers together");
			continue;
		}
		if (f != FILL_OK) {
			if (!n->rx_starved)
				n->stats.rx_stalls++;
			n->rx_starved = true;
			break;
		}
		n->rx_starved = false;
		if (n->pending_len) {
			size_t len = n->pending_len;
			uint64_t retry_at;
			if (!rate_limiter_consume(&n->rx_rl, len - VNET_HDR_LEN, 1, &retry_at)) {
				n->rx_rl_wait = true;
				rl_timer_arm_at(&n->rx_timer, &n->rx_rl, retry_at);
				break;
			}
			n->pending_len = 0;
			rx_pkt_copy(n, 0, n->bounce, len, true);
			rx_deliver(n, len);
			continue;
		}
		if (rx_read(n) <= 0)
			break;
	}
	if (n->rx_pushed) {
		n->rx_pushed = false;
		virtio_dev_notify_used(d, NET_RXQ);
	}
	tap_update_events(n);
}

/* ---- transmit ---- */

/* Sends one chain. Returns 1 when done with it (sent or dropped), 0 if the TAP is full. */
static int tx_send(struct virtio_net *n, const struct virtq_elem *e)
{
	struct virtio_dev *d = &n->dev;
	if (e->out_len < VNET_HDR_LEN) {
		n->stats.tx_errors++;
		warn_once(n, &n->tx_warned, "transmit", "chain shorter than the virtio header");
		return 1;
	}
	uint8_t raw[VNET_HDR_LEN];
	struct vnet_hdr h;
	iov_to_buf(e->iov, e->n_out, 0, raw, sizeof(raw));
	vnet_hdr_decode(raw, &h);
	size_t frame_len = (size_t)(e->out_len - VNET_HDR_LEN);
	const char *why = vnet_tx_hdr_check(&h, d->guest_features, frame_len);
	if (why) {
		n->stats.tx_errors++;
		warn_once(n, &n->tx_warned, "transmit", why);
		return 1;
	}
	/* The header we checked is the one sent: a copy, not the guest's memory. */
	h.num_buffers = 0;
	vnet_hdr_encode(&h, n->tx_hdr);
	unsigned niov = 0;
	if (n->tap.vnet_hdr) {
		n->io_iov[niov].iov_base = n->tx_hdr;
		n->io_iov[niov].iov_len = VNET_HDR_LEN;
		niov++;
	}
	size_t off = VNET_HDR_LEN;
	bool flat = false;
	for (unsigned i = 0; i < e->n_out; i++) {
		const struct iovec *v = &e->iov[i];
		if (off >= v->iov_len) {
			off -= v->iov_len;
			continue;
		}
		if (niov == IOV_MAX) {
			flat = true;
			break;
		}
		n->io_iov[niov].iov_base = (uint8_t *)v->iov_base + off;
		n->io_iov[niov].iov_len = v->iov_len - off;
		niov++;
		off = 0;
	}
	if (flat) {
		/* More segments than writev takes: gather into one buffer. */
		iov_to_buf(e->iov, e->n_out, VNET_HDR_LEN, n->tx_flat, frame_len);
		niov = 0;
		if (n->tap.vnet_hdr)
			n->io_iov[niov++] = (struct iovec){ n->tx_hdr, VNET_HDR_LEN };
		n->io_iov[niov++] = (struct iovec){ n->tx_flat, frame_len };
	}
	size_t expect = frame_len + (n->tap.vnet_hdr ? VNET_HDR_LEN : 0);
	ssize_t r;
	do
		r = writev(n->tap.fd, n->io_iov, (int)niov);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		int e2 = errno;
		if (e2 == EAGAIN || e2 == EWOULDBLOCK)
			return 0;
		if (e2 == EIO) {
			/* The host has not brought the interface up: like a cable not plugged in. */
			n->stats.tx_dropped++;
			return 1;
		}
		if (e2 == EBADFD || e2 == EBADF) {
			n->stats.tx_dropped++;
			backend_failed(n, "write", e2);
			return 1;
		}
		n->stats.tx_errors++;
		warn_once(n, &n->tx_warned, "transmit", strerror(e2));
		return 1;
	}
	if ((size_t)r != expect) {
		n->stats.tx_errors++;
		warn_once(n, &n->tx_warned, "transmit", "short write to the TAP");
		return 1;
	}
	n->stats.tx_packets++;
	n->stats.tx_bytes += frame_len;
	return 1;
}

static void tx_process(struct virtio_net *n)
{
	struct virtio_dev *d = &n->dev;
	struct virtq *vq = &d->vq[NET_TXQ];
	if (!n->active || !virtio_dev_running(d) || n->tx_blocked || n->tx_rl_wait || !vq->started)
		return;
	virtq_set_notification(vq, false);
	unsigned budget = NET_TX_BUDGET;
	for (;;) {
		int r = virtq_pop(vq, &n->elem);
		if (r < 0) {
			virtio_dev_fail(d, vq->error);
			break;
		}
		if (r == 0) {
			/* Kicks back on, then one more look for chains added meanwhile. */
			if (virtq_set_notification(vq, true))
				break;
			virtq_set_notification(vq, false);
			continue;
		}
		uint64_t retry_at;
		uint64_t bytes = n->elem.out_len > VNET_HDR_LEN ? n->elem.out_len - VNET_HDR_LEN : 0;
		if (n->backend_dead) {
			n->stats.tx_dropped++;
		} else if (!rate_limiter_consume(&n->tx_rl, bytes, 1, &retry_at)) {
			/* Kicks stay off: the timer brings us back. */
			virtq_unpop(vq);
			n->tx_rl_wait = true;
			rl_timer_arm_at(&n->tx_timer, &n->tx_rl, retry_at);
			break;
		} else if (tx_send(n, &n->elem) == 0) {
			/* Charged again when it is sent. */
			rate_limiter_undo(&n->tx_rl);
			virtq_unpop(vq);
			n->tx_blocked = true;
			n->stats.tx_stalls++;
			break;
		}
		virtq_push(vq, &n->elem, 0);
		n->tx_pushed = true;
		if (--budget == 0) {
			/* Let receive work run; the eventfd brings us back right after. */
			uint64_t one = 1;
			if (write(n->tx_resume_fd, &one, sizeof(one)) < 0) {
				/* counter saturated: a resume is already pending */
			}
			break;
		}
	}
	if (n->tx_pushed) {
		n->tx_pushed = false;
		virtio_dev_notify_used(d, NET_TXQ);
	}
	tap_update_events(n);
}

/* ---- control queue ---- */

static uint8_t ctrl_handle(struct virtio_net *n, const struct virtq_elem *e)
{
	struct virtio_dev *d = &n->dev;
	uint8_t hdr[2];
	if (e->out_len < 2)
		return VIRTIO_NET_ERR;
	iov_to_buf(e->iov, e->n_out, 0, hdr, 2);
	size_t len = (size_t)(e->out_len - 2);
	switch (hdr[0]) {
	case VIRTIO_NET_CTRL_RX: {
		uint8_t on;
		if (!virtio_dev_has(d, VIRTIO_NET_F_CTRL_RX) || len < 1)
			return VIRTIO_NET_ERR;
		iov_to_buf(e->iov, e->n_out, 2, &on, 1);
		if (hdr[1] == VIRTIO_NET_CTRL_RX_PROMISC)
			n->filter.promisc = on;
		else if (hdr[1] == VIRTIO_NET_CTRL_RX_ALLMULTI)
			n->filter.allmulti = on;
		else
			return VIRTIO_NET_ERR;
		return VIRTIO_NET_OK;
	}
	case VIRTIO_NET_CTRL_MAC:
		if (hdr[1] == VIRTIO_NET_CTRL_MAC_TABLE_SET) {
			if (!virtio_dev_has(d, VIRTIO_NET_F_CTRL_RX) ||
			    rxfilter_set_tables(&n->filter, e->iov, e->n_out, 2, len) < 0)
				return VIRTIO_NET_ERR;
			return VIRTIO_NET_OK;
		}
		if (hdr[1] == VIRTIO_NET_CTRL_MAC_ADDR_SET) {
			uint8_t mac[6];
			if (!virtio_dev_has(d, VIRTIO_NET_F_CTRL_MAC_ADDR) || len < 6)
				return VIRTIO_NET_ERR;
			iov_to_buf(e->iov, e->n_out, 2, mac, 6);
			if (mac[0] & 1)
				return VIRTIO_NET_ERR;
			memcpy(n->cur_mac, mac, 6);
			memcpy(n->filter.mac, mac, 6);
			return VIRTIO_NET_OK;
		}
		return VIRTIO_NET_ERR;
	case VIRTIO_NET_CTRL_GUEST_OFFLOADS: {
		uint8_t raw[8];
		if (!virtio_dev_has(d, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) ||
		    hdr[1] != VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET || len < 8)
			return VIRTIO_NET_ERR;
		iov_to_buf(e->iov, e->n_out, 2, raw, 8);
		uint64_t want = get_le64(raw);
		/* Only offloads the driver negotiated may be switched on (5.1.6.5.6.1). */
		if (want & ~(d->guest_features & VNET_GUEST_OFFLOADS))
			return VIRTIO_NET_ERR;
		struct cv_error err;
		if (tap_set_offload(&n->tap, vnet_tun_offloads(want), &err) < 0) {
			cv_error_print(&err, n->name);
			return VIRTIO_NET_ERR;
		}
		n->rx_offloads = want;
		return VIRTIO_NET_OK;
	}
	default:
		return VIRTIO_NET_ERR;
	}
}

static void ctrl_process(struct virtio_net *n)
{
	struct virtio_dev *d = &n->dev;
	struct virtq *vq = &d->vq[NET_CTRLQ];
	bool pushed = false;
	int r;
	while ((r = virtq_pop(vq, &n->elem)) == 1) {
		uint8_t ack = ctrl_handle(n, &n->elem);
		uint32_t written = 0;
		if (n->elem.in_len >= 1)
			written = (uint32_t)iov_from_buf(n->elem.iov + n->elem.n_out, n->elem.n_in, 0,
							 &ack, 1);
		virtq_push(vq, &n->elem, written);
		pushed = true;
	}
	if (r < 0)
		virtio_dev_fail(d, vq->error);
	if (pushed)
		virtio_dev_notify_used(d, NET_CTRLQ);
}

/* ---- virtio_dev_ops ---- */

static void net_config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	struct virtio_net *n = d->priv;
	/* mac, status, max_virtqueue_pairs, mtu, speed, duplex (5.1.4) */
	uint8_t cfg[17];
	memset(cfg, 0, sizeof(cfg));
	memcpy(cfg, n->cur_mac, 6);
	put_le16(cfg + 6, n->backend_dead ? 0 : VIRTIO_NET_S_LINK_UP);
	put_le16(cfg + 8, 1);
	put_le32(cfg + 12, UINT32_MAX);          /* speed unknown */
	cfg[16] = 0xff;                           /* duplex unknown */
	if (off < sizeof(cfg))
		memcpy(data, cfg + off, CV_MIN((size_t)len, sizeof(cfg) - off));
}

static int net_activate(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	n->mergeable = virtio_dev_has(d, VIRTIO_NET_F_MRG_RXBUF);
	n->rx_offloads = d->guest_features & VNET_GUEST_OFFLOADS;
	struct cv_error err;
	if (tap_set_offload(&n->tap, vnet_tun_offloads(n->rx_offloads), &err) < 0) {
		cv_error_print(&err, n->name);
		return -1;
	}
	rxfilter_reset(&n->filter, n->cur_mac);
	n->active = true;
	n->rx_starved = false;
	n->rx_kicks = true;          /* the state virtq_start leaves */
	n->tx_blocked = false;
	tap_update_events(n);
	return 0;
}

static void net_reset(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	if (n->pending_len)
		n->stats.rx_dropped++;
	n->pending_len = 0;
	/* Held chains belong to the old ring: forget them unpushed, as the driver reset. */
	n->rx_first = n->rx_count = 0;
	n->rx_cap = 0;
	n->rx_iov_first = n->rx_iov_used = 0;
	n->active = false;
	n->rx_starved = false;
	n->tx_blocked = false;
	n->rx_rl_wait = n->tx_rl_wait = false;
	rl_timer_cancel(&n->rx_timer);
	rl_timer_cancel(&n->tx_timer);
	n->rx_pushed = n->tx_pushed = false;
	tap_update_events(n);
	if (n->rx_offloads) {
		struct cv_error err;
		if (tap_set_offload(&n->tap, 0, &err) < 0)
			cv_error_print(&err, n->name);
	}
	n->rx_offloads = 0;
	memcpy(n->cur_mac, n->mac, 6);
	rxfilter_reset(&n->filter, n->cur_mac);
}

static void net_queue_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_net *n = d->priv;
	if (q == NET_RXQ)
		rx_process(n);
	else if (q == NET_TXQ)
		tx_process(n);
	else if (q == NET_CTRLQ)
		ctrl_process(n);
}

/*
 * Snapshots. Receive chains held ahead are the last ones popped: saved as still available,
 * they are popped again by the restored device (a frame parked in the bounce buffer is lost,
 * as a NIC may drop one). The state is what the driver set: its MAC and receive filter.
 */
static unsigned net_held(struct virtio_dev *d, unsigned q)
{
	struct virtio_net *n = d->priv;
	return q == NET_RXQ ? n->rx_count : 0;
}

static void net_save(struct virtio_dev *d, struct snap_buf *out)
{
	struct virtio_net *n = d->priv;
	const struct rxfilter *f = &n->filter;
	snap_put_bytes(out, n->cur_mac, 6);
	snap_put_u8(out, f->promisc);
	snap_put_u8(out, f->allmulti);
	snap_put_u8(out, f->uni_overflow);
	snap_put_u8(out, f->multi_overflow);
	snap_put_u32(out, f->n_uni);
	snap_put_bytes(out, f->uni, (size_t)f->n_uni * 6);
	snap_put_u32(out, f->n_multi);
	snap_put_bytes(out, f->multi, (size_t)f->n_multi * 6);
}

static int net_load(struct virtio_dev *d, struct snap_cur *in, struct cv_error *err)
{
	struct virtio_net *n = d->priv;
	struct rxfilter *f = &n->filter;
	uint8_t mac[6];
	snap_get_bytes(in, mac, 6);
	f->promisc = snap_get_u8(in) != 0;
	f->allmulti = snap_get_u8(in) != 0;
	f->uni_overflow = snap_get_u8(in) != 0;
	f->multi_overflow = snap_get_u8(in) != 0;
	uint32_t nu = snap_get_u32(in);
	if (nu > RXFILTER_MAX_MACS)
		in->bad = true;
	else
		snap_get_bytes(in, f->uni, (size_t)nu * 6);
	uint32_t nm = snap_get_u32(in);
	if (nm > RXFILTER_MAX_MACS)
		in->bad = true;
	else
		snap_get_bytes(in, f->multi, (size_t)nm * 6);
	if (in->bad) {
		rxfilter_reset(f, n->cur_mac);
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: malformed state", n->name);
	}
	f->n_uni = nu;
	f->n_multi = nm;
	memcpy(f->mac, mac, 6);
	if (n->mac_override && memcmp(mac, n->mac, 6) != 0) {
		/*
		 * A clone's new address: the configuration space shows it at once (with a
		 * configuration change interrupt), but the driver reads the MAC only at probe, so
		 * the guest goes on sending from the snapshot's address and the receive filter keeps
		 * accepting that one until the driver sets the new one (CTRL_MAC_ADDR_SET, e.g. `ip
		 * link set eth0 address ...` in the guest).
		 */
		memcpy(n->cur_mac, n->mac, 6);
		if (virtio_dev_running(d))
			virtio_dev_config_changed(d);
	} else {
		memcpy(n->cur_mac, mac, 6);
	}
	/* Ask for receive kicks: the chains to pop again raise none. */
	if (n->active && d->vq[NET_RXQ].started) {
		virtq_set_notification(&d->vq[NET_RXQ], true);
		n->rx_kicks = true;
	}
	return 0;
}

static unsigned net_limiters(struct virtio_dev *d, struct rate_limiter **out)
{
	struct virtio_net *n = d->priv;
	out[0] = &n->rx_rl;
	out[1] = &n->tx_rl;
	return 2;
}

static const struct virtio_dev_ops net_ops = {
	.device_id = VIRTIO_ID_NET,
	.pci_class = 0x020000,   /* Ethernet controller */
	.config_read = net_config_read,
	.activate = net_activate,
	.reset = net_reset,
	.queue_notify = net_queue_notify,
	.held = net_held,
	.save = net_save,
	.load = net_load,
	.limiters = net_limiters,
};

/* I/O thread: the TAP is readable, writable again, or broken. */
static void on_tap(void *opaque, uint32_t events)
{
	struct virtio_net *n = opaque;
	pthread_mutex_lock(&n->dev.lock);
	if (n->tap_registered && !n->backend_dead) {
		if ((events & (EPOLLERR | EPOLLHUP)) && !(events & (EPOLLIN | EPOLLOUT))) {
			backend_failed(n, "the interface went away", 0);
		} else {
			if ((events & EPOLLOUT) && n->tx_blocked) {
				n->tx_blocked = false;
				tx_process(n);
			}
			if (events & EPOLLIN)
				rx_process(n);
			tap_update_events(n);
		}
	}
	pthread_mutex_unlock(&n->dev.lock);
}

static void on_tx_resume(void *opaque, uint32_t events)
{
	struct virtio_net *n = opaque;
	(void)events;
	uint64_t v;
	if (read(n->tx_resume_fd, &v, sizeof(v)) < 0)
		return;
	pthread_mutex_lock(&n->dev.lock);
	tx_process(n);
	pthread_mutex_unlock(&n->dev.lock);
}

/* I/O thread, device lock held: a frame that waited for tokens may pass now. */
static void resume_rx(void *opaque)
{
	struct virtio_net *n = opaque;
	rx_process(n);
	tap_update_events(n);
}

static void resume_tx(void *opaque)
{
	tx_process(opaque);
}

int net_set_rate_limiter(struct virtio_net *n, const struct rate_limiter_config *rx,
			 const struct rate_limiter_config *tx, struct cv_error *err)
{
	if ((rx && rate_limiter_config_check(rx, "receive rate limit", err) < 0) ||
	    (tx && rate_limiter_config_check(tx, "transmit rate limit", err) < 0))
		return cv_error_wrap(err, "%s", n->name);
	pthread_mutex_lock(&n->dev.lock);
	if (rx) {
		rate_limiter_configure(&n->rx_rl, rx);
		if (n->rx_rl_wait)
			rl_timer_arm(&n->rx_timer, 0);
	}
	if (tx) {
		rate_limiter_configure(&n->tx_rl, tx);
		if (n->tx_rl_wait)
			rl_timer_arm(&n->tx_timer, 0);
	}
	pthread_mutex_unlock(&n->dev.lock);
	return 0;
}

/* ---- construction ---- */

struct virtio_net *virtio_net_new(struct tap *backend, const uint8_t mac[6], unsigned index,
				  const struct guest_memory *mem, struct evloop *loop,
				  struct cv_error *err)
{
	struct virtio_net *n = calloc(1, sizeof(*n));
	if (!n) {
		tap_close(backend);
		cv_fail(err, CV_EXIT_OSERR, "out of memory");
		return NULL;
	}
	n->tap = *backend;
	backend->fd = -1;
	n->tx_resume_fd = -1;
	n->rx_timer.fd = n->tx_timer.fd = -1;
	rate_limiter_init(&n->rx_rl, NULL, NULL);
	rate_limiter_init(&n->tx_rl, NULL, NULL);
	snprintf(n->name, sizeof(n->name), "virtio-net%u", index);
	memcpy(n->mac, mac, 6);
	memcpy(n->cur_mac, mac, 6);
	rxfilter_reset(&n->filter, mac);

	uint64_t f = VNET_BIT(VIRTIO_NET_F_MAC) | VNET_BIT(VIRTIO_NET_F_STATUS) |
		     VNET_BIT(VIRTIO_NET_F_MRG_RXBUF) | VNET_BIT(VIRTIO_NET_F_CTRL_VQ) |
		     VNET_BIT(VIRTIO_NET_F_CTRL_RX) | VNET_BIT(VIRTIO_NET_F_CTRL_MAC_ADDR) |
		     VNET_BIT(VIRTIO_RING_F_INDIRECT_DESC) | VNET_BIT(VIRTIO_RING_F_EVENT_IDX);
	if (n->tap.vnet_hdr) {
		/* Transmit offloads only need the header to reach the TAP, which takes them all. */
		f |= VNET_BIT(VIRTIO_NET_F_CSUM) | VNET_BIT(VIRTIO_NET_F_HOST_TSO4) |
		     VNET_BIT(VIRTIO_NET_F_HOST_TSO6) | VNET_BIT(VIRTIO_NET_F_HOST_ECN);
		/* Receive offloads need TUNSETOFFLOAD support for each. */
		uint64_t g = vnet_guest_features_for_tun(n->tap.offloads);
		if (g)
			f |= g | VNET_BIT(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS);
	}
	virtio_dev_init(&n->dev, n->name, &net_ops, n, 3, NET_QUEUE_SIZE, f, mem, loop);

	n->bounce = malloc(NET_BOUNCE_SIZE);
	n->tx_flat = malloc(VNET_HDR_LEN + VNET_MAX_FRAME);
	if (!n->bounce || !n->tx_flat) {
		cv_fail(err, CV_EXIT_OSERR, "out of memory");
		goto fail;
	}
	n->tx_resume_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (n->tx_resume_fd < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "%s: eventfd", n->name);
		goto fail;
	}
	n->tx_resume_handler = (struct evloop_handler){ n->tx_resume_fd, on_tx_resume, n };
	if (evloop_add(loop, &n->tx_resume_handler, EPOLLIN, err) < 0)
		goto fail;
	n->tx_resume_registered = true;
	if (rl_timer_init(&n->rx_timer, loop, &n->dev.lock, &n->rx_rl_wait, resume_rx, n, err) < 0 ||
	    rl_timer_init(&n->tx_timer, loop, &n->dev.lock, &n->tx_rl_wait, resume_tx, n, err) < 0)
		goto fail;
	/* Watched for nothing until the driver is ready (errors are reported regardless). */
	n->tap_handler = (struct evloop_handler){ n->tap.fd, on_tap, n };
	if (evloop_add(loop, &n->tap_handler, 0, err) < 0)
		goto fail;
	n->tap_registered = true;
	return n;
fail:
	virtio_net_free(n);
	return NULL;
}

void virtio_net_free(struct virtio_net *n)
{
	if (!n)
		return;
	if (n->trace) {
		const struct net_stats *s = &n->stats;
		fprintf(stderr,
			"cvisor-vmm: %s: rx %llu packets %llu bytes, %llu dropped, %llu filtered, "
			"%llu errors, %llu stalls, %llu rate-limited; tx %llu packets %llu bytes, "
			"%llu dropped, %llu errors, %llu stalls, %llu rate-limited\n",
			n->name, (unsigned long long)s->rx_packets, (unsigned long long)s->rx_bytes,
			(unsigned long long)s->rx_dropped, (unsigned long long)s->rx_filtered,
			(unsigned long long)s->rx_errors, (unsigned long long)s->rx_stalls,
			(unsigned long long)n->rx_rl.throttled,
			(unsigned long long)s->tx_packets, (unsigned long long)s->tx_bytes,
			(unsigned long long)s->tx_dropped, (unsigned long long)s->tx_errors,
			(unsigned long long)s->tx_stalls, (unsigned long long)n->tx_rl.throttled);
	}
	if (n->tap_registered)
		evloop_remove(n->dev.loop, &n->tap_handler);
	if (n->tx_resume_registered)
		evloop_remove(n->dev.loop, &n->tx_resume_handler);
	rl_timer_destroy(&n->rx_timer);
	rl_timer_destroy(&n->tx_timer);
	tap_close(&n->tap);
	if (n->tx_resume_fd >= 0)
		close(n->tx_resume_fd);
	free(n->bounce);
	free(n->tx_flat);
	virtio_dev_destroy(&n->dev);
	free(n);
}

void virtio_net_get_stats(struct virtio_net *n, struct net_stats *out)
{
	pthread_mutex_lock(&n->dev.lock);
	*out = n->stats;
	pthread_mutex_unlock(&n->dev.lock);
}

static void net_destroy(void *owner)
{
	virtio_net_free(owner);
}

int virtio_net_add(struct vm *vm, const struct net_config *cfg, unsigned index, struct cv_error *err)
{
	struct tap t;
	int rc = cfg->tap ? tap_open(&t, cfg->tap, err) : tap_adopt_fd(&t, cfg->tap_fd, err);
	if (rc < 0)
		return cv_error_wrap(err, "--net");
	uint8_t mac[6];
	if (cfg->has_mac)
		memcpy(mac, cfg->mac, 6);
	else
		vnet_random_mac(mac);
	struct virtio_net *n = virtio_net_new(&t, mac, index, &vm->mem, &vm->loop, err);
	if (!n)
		return -1;
	const char *trace = getenv("CVISOR_VMM_TRACE");
	n->trace = trace && strstr(trace, "net");
	if (net_set_rate_limiter(n, &cfg->rx_rate_limiter, &cfg->tx_rate_limiter, err) < 0) {
		virtio_net_free(n);
		return cv_error_wrap(err, "--net");
	}
	n->mac_override = cfg->mac_override && cfg->has_mac;
	return vm_virtio_plug(vm, &n->dev, n, net_destroy, err);
}
