/*
 * The host half of virtio-vsock in the hybrid (Unix socket) model: every guest stream
 * connection is paired with one Unix stream socket on the host.
 *   - Host-initiated: a program connects to the listening socket PATH and writes
 *     "CONNECT <port>\n"; we pick a host port, send REQUEST to the guest and, on RESPONSE,
 *     answer "OK <hostport>\n" and relay bytes both ways.
 *   - Guest-initiated: a REQUEST to host port P makes us connect to PATH_P.
 * The mux owns the connection table, the per-connection state machine and credit accounting
 * (virtio 1.2, 5.10.6.3), and the Unix sockets, which are non-blocking fds in the VM's evloop.
 * The virtio device (virtio/vsock.c) feeds it guest packets from the tx queue and asks it for
 * packets to put in rx buffers.
 *
 * Memory is bounded both ways. Host to guest, bytes are read from the Unix socket straight into
 * the guest's rx buffer, never more than the guest's credit allows; without credit or without
 * rx buffers we stop reading (EPOLLIN off). Guest to host, bytes the Unix socket does not take
 * at once wait in a per-connection buffer of VSOCK_BUF_ALLOC bytes, the buffer we advertise;
 * fwd_cnt only advances as the socket takes bytes, so a stuck host reader stops the guest.
 *
 * Locking: all entry points run with *lock held; the mux's own fd handlers take it.
 * Connection slots live in one array allocated up front and freed only with the mux: an epoll
 * event fetched for a connection that was closed meanwhile then finds a free (or reused) slot
 * and is harmless, because handlers treat events as hints and ask the socket itself.
 */
#ifndef CVISOR_VMM_VSOCK_MUX_H
#define CVISOR_VMM_VSOCK_MUX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "error.h"
#include "evloop.h"
#include "virtio/virtq.h"
#include "vsock/packet.h"

#define VSOCK_BUF_ALLOC (256u * 1024)    /* receive buffer we advertise per connection */
#define VSOCK_MAX_CONNS 256              /* connections (and Unix fds) at once */
#define VSOCK_RST_RING 64                /* RSTs owed for packets that have no connection */
#define VSOCK_MAX_PKT (64u * 1024)       /* payload of one packet we send */
#define VSOCK_LINE_MAX 32                /* "CONNECT 4294967294\r\n" fits */
#define VSOCK_HOST_PORT_FIRST (1u << 30) /* host ports we hand out for host-initiated links */
#define VSOCK_UDS_MAX 107                /* sun_path minus the terminating NUL */

enum vsock_conn_state {
	VSOCK_CONN_FREE,
	VSOCK_CONN_LINE,         /* host program connected; waiting for "CONNECT <port>\n" */
	VSOCK_CONN_REQUESTED,    /* REQUEST queued or sent to the guest; waiting for RESPONSE */
	VSOCK_CONN_ESTABLISHED,  /* relaying (possibly half-closed) */
	VSOCK_CONN_CLOSING,      /* Unix side gone, SHUTDOWN sent; waiting for the guest's RST */
};

/* Control packets a connection owes the guest (bits of vsock_conn.pending). */
#define VSOCK_PEND_REQUEST (1u << 0)
#define VSOCK_PEND_RESPONSE (1u << 1)
#define VSOCK_PEND_CREDIT_UPDATE (1u << 2)
#define VSOCK_PEND_CREDIT_REQUEST (1u << 3)
#define VSOCK_PEND_SHUTDOWN (1u << 4)
#define VSOCK_PEND_RST (1u << 5)

struct vsock_mux;

struct vsock_conn {
	struct vsock_mux *mux;
	struct evloop_handler h;     /* h.fd: the Unix socket, -1 once closed */
	uint32_t watched;            /* epoll events registered; 0 = not in the loop */
	enum vsock_conn_state state;
	uint32_t local_port;         /* host side port */
	uint32_t peer_port;          /* guest side port */
	struct vsock_conn *hnext;    /* hash chain (ports) */
	struct vsock_conn *rx_prev, *rx_next;  /* owes the guest packets */
	bool on_rx_list;
	struct vsock_conn *free_next;

	uint32_t pending;            /* VSOCK_PEND_* */
	uint32_t shutdown_flags;     /* flags of the SHUTDOWN we owe or sent */
	bool data_ready;             /* the socket may have bytes for the guest */
	bool credit_requested;       /* CREDIT_REQUEST sent since the guest last gave credit */

	/* Guest -> host: bytes taken from the guest / written to the Unix socket. */
	uint32_t rx_cnt;
	uint32_t fwd_cnt;
	uint32_t last_adv_fwd;       /* fwd_cnt in the last header we sent */
	/* Host -> guest. */
	uint32_t tx_cnt;
	uint32_t peer_buf_alloc;
	uint32_t peer_fwd_cnt;

	bool host_eof;               /* read 0 from the Unix socket */
	bool peer_shut_rcv;          /* the guest will not receive more */
	bool peer_shut_send;         /* the guest will not send more */
	bool wr_shut;                /* we did shutdown(SHUT_WR) on the Unix socket */

	/* Bytes for the Unix socket that it did not take yet: first the line, then data. */
	char line[VSOCK_LINE_MAX];   /* "OK <port>\n" (or the CONNECT line being read) */
	uint32_t line_len, line_off;
	uint8_t *out;                /* ring of VSOCK_BUF_ALLOC bytes, allocated on first use */
	uint32_t out_head, out_len;

	uint64_t deadline_ns;        /* CLOCK_MONOTONIC; 0 = none */
};

struct vsock_mux_stats {
	uint64_t conns_opened;
	uint64_t rst_sent;
	uint64_t bad_packets;        /* dropped or answered with RST */
};

struct vsock_mux {
	uint64_t guest_cid;
	char uds_path[VSOCK_UDS_MAX + 1];
	pthread_mutex_t *lock;
	struct evloop *loop;
	/* Called (lock held) when the mux has packets for the guest or can take more from it. */
	void (*wake)(void *opaque);
	void *opaque;
	bool running;                /* the driver is up: connections may exist */

	int listen_fd;
	struct evloop_handler listen_h;
	bool listen_in_loop;
	dev_t listen_dev;            /* identity of the socket file we created */
	ino_t listen_ino;

	int timer_fd;
	struct evloop_handler timer_h;
	bool timer_in_loop;
	bool timer_armed;
	/* Timeouts (ms); fields so tests can shorten them. */
	unsigned line_timeout_ms;    /* for the CONNECT line */
	unsigned connect_timeout_ms; /* for the guest's RESPONSE */
	unsigned close_timeout_ms;   /* for the guest's RST after our full SHUTDOWN / flush on close */

	struct vsock_conn *conns;    /* VSOCK_MAX_CONNS slots */
	struct vsock_conn *free_head, *free_tail;
	unsigned n_used;
	struct vsock_conn *buckets[256];
	struct vsock_conn *rx_head, *rx_tail;
	struct {
		uint64_t src_cid;    /* as the guest addressed it */
		uint32_t src_port, dst_port;
	} rst_ring[VSOCK_RST_RING];
	unsigned rst_head, rst_count;
	uint32_t next_host_port;

	struct iovec scratch[VIRTQ_MAX_SEGS];
	struct vsock_mux_stats stats;
};

/*
 * Creates the listening socket at uds_path (replacing a stale socket file nobody listens on)
 * and registers it with the loop.
 */
int vsock_mux_init(struct vsock_mux *m, uint64_t guest_cid, const char *uds_path,
		   pthread_mutex_t *lock, struct evloop *loop, void (*wake)(void *), void *opaque,
		   struct cv_error *err);
/* Closes everything; removes the socket file if it is still the one we created. */
void vsock_mux_destroy(struct vsock_mux *m);

/* The driver started (DRIVER_OK) / reset: start, or forget every connection without packets. */
void vsock_mux_start(struct vsock_mux *m);
void vsock_mux_reset(struct vsock_mux *m);

/* True if a guest packet can be handled now (an RST for it would fit). */
bool vsock_mux_can_take(const struct vsock_mux *m);
/* Handles one tx chain from the guest (header + payload in its readable part). */
void vsock_mux_guest_packet(struct vsock_mux *m, const struct virtq_elem *elem);

/* True if the mux may have a packet for the guest. */
bool vsock_mux_has_rx(const struct vsock_mux *m);
/*
 * Fills one rx chain with the next packet for the guest. Returns the bytes written (header
 * included), or 0 if nothing was produced (the chain stays unused).
 */
uint32_t vsock_mux_fill(struct vsock_mux *m, struct virtq_elem *elem);

/* Parses "CONNECT <port>\n" (a trailing "\r" allowed); false for anything else. */
bool vsock_parse_connect(const char *line, size_t len, uint32_t *port);

#endif
