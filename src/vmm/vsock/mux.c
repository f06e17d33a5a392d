/*
 * Hybrid vsock host side (see mux.h): connection table, per-connection state machine, credit
 * accounting and the Unix sockets behind each connection.
 *
 * Who sends what to the guest is decided here but happens only when the device has an rx
 * buffer: a connection that owes the guest a packet (a pending control packet, or readable
 * data) sits on the rx list, and vsock_mux_fill() serves the list round robin. RSTs answering
 * packets that belong to no connection go through a small ring; while it is full the device
 * stops taking tx packets, so a guest that floods us without reading gets back-pressure, not
 * unbounded memory.
 */
#include "vsock/mux.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 100
/* Longest "_<port>" suffix of a guest-initiated connection's socket path. */
#define PORT_SUFFIX_MAX 11
#define CREDIT_UPDATE_STEP (VSOCK_BUF_ALLOC / 4)

static void conn_event(void *opaque, uint32_t events);
static void conn_update(struct vsock_conn *c);

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool vsock_parse_connect(const char *line, size_t len, uint32_t *port)
{
	static const char verb[] = "CONNECT ";
	size_t vlen = sizeof(verb) - 1;
	if (len < vlen + 2 || memcmp(line, verb, vlen) != 0 || line[len - 1] != '\n')
		return false;
	size_t end = len - 1;
	if (line[end - 1] == '\r')
		end--;
	uint64_t v = 0;
	size_t digits = 0;
	for (size_t i = vlen; i < end; i++, digits++) {
		if (line[i] < '0' || line[i] > '9' || digits == 10)
			return false;
		v = v * 10 + (uint64_t)(line[i] - '0');
	}
	/* 0xffffffff is VMADDR_PORT_ANY, never a real destination. */
	if (digits == 0 || v >= 0xffffffffu)
		return false;
	*port = (uint32_t)v;
	return true;
}

/* --- connection table --- */

static unsigned bucket(uint32_t local, uint32_t peer)
{
	uint32_t h = local * 2654435761u ^ (peer + 0x9e3779b9u) * 2246822519u;
	return (h >> 24) & 255;
}

static bool hashed(const struct vsock_conn *c)
{
	return c->state == VSOCK_CONN_REQUESTED || c->state == VSOCK_CONN_ESTABLISHED ||
	       c->state == VSOCK_CONN_CLOSING;
}

static struct vsock_conn *lookup(struct vsock_mux *m, uint32_t local, uint32_t peer)
{
	for (struct vsock_conn *c = m->buckets[bucket(local, peer)]; c; c = c->hnext)
		if (c->local_port == local && c->peer_port == peer)
			return c;
	return NULL;
}

static void hash_insert(struct vsock_mux *m, struct vsock_conn *c)
{
	struct vsock_conn **b = &m->buckets[bucket(c->local_port, c->peer_port)];
	c->hnext = *b;
	*b = c;
}

static void hash_remove(struct vsock_mux *m, struct vsock_conn *c)
{
	for (struct vsock_conn **p = &m->buckets[bucket(c->local_port, c->peer_port)]; *p;
	     p = &(*p)->hnext) {
		if (*p == c) {
			*p = c->hnext;
			c->hnext = NULL;
			return;
		}
	}
}

static void rx_list_add(struct vsock_mux *m, struct vsock_conn *c)
{
	if (c->on_rx_list)
		return;
	c->on_rx_list = true;
	c->rx_next = NULL;
	c->rx_prev = m->rx_tail;
	if (m->rx_tail)
		m->rx_tail->rx_next = c;
	else
		m->rx_head = c;
	m->rx_tail = c;
}

static void rx_list_del(struct vsock_mux *m, struct vsock_conn *c)
{
	if (!c->on_rx_list)
		return;
	if (c->rx_prev)
		c->rx_prev->rx_next = c->rx_next;
	else
		m->rx_head = c->rx_next;
	if (c->rx_next)
		c->rx_next->rx_prev = c->rx_prev;
	else
		m->rx_tail = c->rx_prev;
	c->rx_prev = c->rx_next = NULL;
	c->on_rx_list = false;
}

static void listener_watch(struct vsock_mux *m, bool on)
{
	if (m->listen_fd < 0 || on == m->listen_in_loop)
		return;
	if (on) {
		struct cv_error err;
		if (evloop_add(m->loop, &m->listen_h, EPOLLIN, &err) == 0)
			m->listen_in_loop = true;
	} else {
		evloop_remove(m->loop, &m->listen_h);
		m->listen_in_loop = false;
	}
}

static struct vsock_conn *conn_alloc(struct vsock_mux *m)
{
	struct vsock_conn *c = m->free_head;
	if (!c)
		return NULL;
	m->free_head = c->free_next;
	if (!m->free_head)
		m->free_tail = NULL;
	memset(c, 0, sizeof(*c));
	c->mux = m;
	c->h.fd = -1;
	c->h.fn = conn_event;
	c->h.opaque = c;
	m->n_used++;
	return c;
}

static bool set_watch(struct vsock_conn *c, uint32_t events)
{
	struct vsock_mux *m = c->mux;
	if (c->h.fd < 0)
		events = 0;
	if (events == c->watched)
		return true;
	/*
	 * An fd with nothing to wait for leaves the loop altogether: epoll reports EPOLLHUP even
	 * for an empty mask, which would spin on a peer that hung up while we are paused.
	 */
	if (!events) {
		evloop_remove(m->loop, &c->h);
		c->watched = 0;
		return true;
	}
	struct cv_error err;
	int rc = c->watched ? evloop_modify(m->loop, &c->h, events, &err)
			    : evloop_add(m->loop, &c->h, events, &err);
	if (rc < 0)
		return false;
	c->watched = events;
	return true;
}

static void close_fd(struct vsock_conn *c)
{
	set_watch(c, 0);
	if (c->h.fd >= 0)
		close(c->h.fd);
	c->h.fd = -1;
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_head = 0;
	c->line_len = c->line_off = 0;
	c->data_ready = false;
}

/* Forgets a connection: no packet to the guest. */
static void conn_free(struct vsock_conn *c)
{
	struct vsock_mux *m = c->mux;
	if (c->state == VSOCK_CONN_FREE)
		return;
	rx_list_del(m, c);
	if (hashed(c))
		hash_remove(m, c);
	close_fd(c);
	c->state = VSOCK_CONN_FREE;
	c->deadline_ns = 0;
	c->free_next = NULL;
	if (m->free_tail)
		m->free_tail->free_next = c;
	else
		m->free_head = c;
	m->free_tail = c;
	m->n_used--;
	/* A listener paused because we ran out of descriptors may accept again. */
	listener_watch(m, true);
}

/*
 * Aborts a connection: the Unix socket is closed now, and the guest gets an RST (unless it
 * never heard of the connection, in which case it is simply forgotten).
 */
static void conn_abort(struct vsock_conn *c)
{
	if (c->state == VSOCK_CONN_LINE ||
	    (c->state == VSOCK_CONN_REQUESTED && (c->pending & VSOCK_PEND_REQUEST))) {
		conn_free(c);
		return;
	}
	close_fd(c);
	c->pending = VSOCK_PEND_RST;
	c->deadline_ns = 0;
	rx_list_add(c->mux, c);
}

static void set_deadline(struct vsock_conn *c, unsigned ms)
{
	struct vsock_mux *m = c->mux;
	c->deadline_ns = now_ns() + (uint64_t)ms * 1000000u;
	if (!m->timer_armed && m->timer_fd >= 0) {
		struct itimerspec its = {
			.it_interval = { 0, TICK_MS * 1000000L },
			.it_value = { 0, TICK_MS * 1000000L },
		};
		if (timerfd_settime(m->timer_fd, 0, &its, NULL) == 0)
			m->timer_armed = true;
	}
}

static uint32_t peer_credit(const struct vsock_conn *c)
{
	return vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
}

static bool has_out(const struct vsock_conn *c)
{
	return c->line_off < c->line_len || c->out_len;
}

static uint32_t wanted_events(const struct vsock_conn *c)
{
	if (c->h.fd < 0)
		return 0;
	if (c->state == VSOCK_CONN_LINE)
		return EPOLLIN;
	if (c->state != VSOCK_CONN_ESTABLISHED || (c->pending & VSOCK_PEND_RST))
		return 0;
	uint32_t ev = 0;
	/* Read only what the guest can take: no credit, no EPOLLIN. */
	if (!c->host_eof && !c->peer_shut_rcv && !c->data_ready && peer_credit(c) > 0)
		ev |= EPOLLIN;
	if (has_out(c))
		ev |= EPOLLOUT;
	return ev;
}

static void conn_update(struct vsock_conn *c)
{
	if (c->state == VSOCK_CONN_FREE)
		return;
	if (!set_watch(c, wanted_events(c)))
		conn_abort(c);
}

static void owe(struct vsock_conn *c, uint32_t what)
{
	c->pending |= what;
	rx_list_add(c->mux, c);
}

static void maybe_credit_update(struct vsock_conn *c)
{
	/*
	 * Telling the guest about every consumed byte would double the packet count; every quarter
	 * buffer keeps it sending (it stalls only when its view of our free space reaches zero,
	 * and unadvertised consumption stays below a quarter of the buffer).
	 */
	if (c->fwd_cnt - c->last_adv_fwd >= CREDIT_UPDATE_STEP)
		owe(c, VSOCK_PEND_CREDIT_UPDATE);
}

/* Both sides are done sending and the guest closed: flush, then RST to release its socket. */
static void finish_if_guest_closed(struct vsock_conn *c)
{
	if (c->state == VSOCK_CONN_ESTABLISHED && c->peer_shut_rcv && c->peer_shut_send &&
	    !has_out(c) && !(c->pending & VSOCK_PEND_RST))
		conn_abort(c);
}

/* Writes buffered bytes to the Unix socket. */
static void flush(struct vsock_conn *c)
{
	while (has_out(c)) {
		ssize_t n;
		bool line = c->line_off < c->line_len;
		if (line) {
			n = send(c->h.fd, c->line + c->line_off, c->line_len - c->line_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		} else {
			struct iovec iov[2];
			int cnt = 1;
			uint32_t first = VSOCK_BUF_ALLOC - c->out_head;
			if (first >= c->out_len) {
				first = c->out_len;
			} else {
				iov[1].iov_base = c->out;
				iov[1].iov_len = c->out_len - first;
				cnt = 2;
			}
			iov[0].iov_base = c->out + c->out_head;
			iov[0].iov_len = first;
			struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };
			n = sendmsg(c->h.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_abort(c);
			return;
		}
		if (line) {
			c->line_off += (uint32_t)n;
		} else {
			c->out_head = (c->out_head + (uint32_t)n) % VSOCK_BUF_ALLOC;
			c->out_len -= (uint32_t)n;
			c->fwd_cnt += (uint32_t)n;
			maybe_credit_update(c);
		}
	}
	if (!has_out(c) && c->peer_shut_send && !c->wr_shut && c->h.fd >= 0) {
		shutdown(c->h.fd, SHUT_WR);
		c->wr_shut = true;
	}
	finish_if_guest_closed(c);
	conn_update(c);
}

/* --- host side events --- */

/* Reads (part of) the "CONNECT <port>\n" line; never consumes bytes past the newline. */
static void read_line(struct vsock_mux *m, struct vsock_conn *c)
{
	char buf[VSOCK_LINE_MAX];
	size_t room = VSOCK_LINE_MAX - c->line_len;
	ssize_t n = recv(c->h.fd, buf, room, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		conn_free(c);
		return;
	}
	char *nl = memchr(buf, '\n', (size_t)n);
	size_t take = nl ? (size_t)(nl - buf) + 1 : (size_t)n;
	/* Consume what we looked at, so a partial line does not keep the fd readable. */
	if (recv(c->h.fd, c->line + c->line_len, take, MSG_DONTWAIT) != (ssize_t)take) {
		conn_free(c);
		return;
	}
	c->line_len += (uint32_t)take;
	if (!nl) {
		if (c->line_len == VSOCK_LINE_MAX)
			conn_free(c);
		return;
	}
	uint32_t port;
	if (!vsock_parse_connect(c->line, c->line_len, &port) || !m->running) {
		conn_free(c);
		return;
	}
	/* A host port no live connection uses; the range is huge, so this rarely loops. */
	uint32_t local = 0;
	for (unsigned tries = 0; tries <= VSOCK_MAX_CONNS; tries++) {
		uint32_t p = m->next_host_port++;
		if (m->next_host_port < VSOCK_HOST_PORT_FIRST || m->next_host_port == 0xffffffffu)
			m->next_host_port = VSOCK_HOST_PORT_FIRST;
		bool used = false;
		for (unsigned i = 0; i < VSOCK_MAX_CONNS && !used; i++)
			used = hashed(&m->conns[i]) && m->conns[i].local_port == p;
		if (!used) {
			local = p;
			break;
		}
	}
	if (!local) {
		conn_free(c);
		return;
	}
	c->line_len = c->line_off = 0;
	c->local_port = local;
	c->peer_port = port;
	c->state = VSOCK_CONN_REQUESTED;
	hash_insert(m, c);
	m->stats.conns_opened++;
	owe(c, VSOCK_PEND_REQUEST);
	set_deadline(c, m->connect_timeout_ms);
	conn_update(c);
}

static void conn_event(void *opaque, uint32_t events)
{
	struct vsock_conn *c = opaque;
	struct vsock_mux *m = c->mux;
	pthread_mutex_lock(m->lock);
	/* The event may be stale (slot freed or reused since): treat it as a hint only. */
	if (c->state == VSOCK_CONN_LINE && c->h.fd >= 0) {
		read_line(m, c);
	} else if (c->state == VSOCK_CONN_ESTABLISHED && c->h.fd >= 0) {
		if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && has_out(c))
			flush(c);
		if (c->state == VSOCK_CONN_ESTABLISHED && (c->watched & EPOLLIN) &&
		    (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))) {
			/* Read when the guest has an rx buffer for it; until then, EPOLLIN off. */
			c->data_ready = true;
			rx_list_add(m, c);
			conn_update(c);
		}
	}
	m->wake(m->opaque);
	pthread_mutex_unlock(m->lock);
}

static void listen_event(void *opaque, uint32_t events)
{
	struct vsock_mux *m = opaque;
	(void)events;
	pthread_mutex_lock(m->lock);
	for (int i = 0; i < 16 && m->listen_fd >= 0; i++) {
		int fd = accept4(m->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			/*
			 * Out of descriptors (or worse): a level-triggered listener would spin on the
			 * waiting connection, so stop listening until a connection is freed.
			 */
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				listener_watch(m, false);
			break;
		}
		struct vsock_conn *c = conn_alloc(m);
		if (!c) {
			close(fd);   /* table full: refuse by closing */
			continue;
		}
		c->h.fd = fd;
		c->state = VSOCK_CONN_LINE;
		set_deadline(c, m->line_timeout_ms);
		conn_update(c);
	}
	pthread_mutex_unlock(m->lock);
}

static void expire(struct vsock_conn *c)
{
	c->deadline_ns = 0;
	switch (c->state) {
	case VSOCK_CONN_LINE:
		conn_free(c);
		break;
	case VSOCK_CONN_REQUESTED:
	case VSOCK_CONN_ESTABLISHED:   /* guest closed, host did not take the rest in time */
	case VSOCK_CONN_CLOSING:       /* guest never answered our SHUTDOWN */
		if (!(c->pending & VSOCK_PEND_RST))
			conn_abort(c);
		break;
	case VSOCK_CONN_FREE:
		break;
	}
}

static void timer_event(void *opaque, uint32_t events)
{
	struct vsock_mux *m = opaque;
	(void)events;
	pthread_mutex_lock(m->lock);
	uint64_t ticks;
	if (read(m->timer_fd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN: a stale wake-up; the scan below is harmless either way */
	}
	uint64_t now = now_ns();
	bool left = false;
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &m->conns[i];
		if (c->state == VSOCK_CONN_FREE || !c->deadline_ns)
			continue;
		if (c->deadline_ns <= now)
			expire(c);
		else
			left = true;
	}
	if (!left && m->timer_armed) {
		struct itimerspec off = { 0 };
		timerfd_settime(m->timer_fd, 0, &off, NULL);
		m->timer_armed = false;
	}
	m->wake(m->opaque);
	pthread_mutex_unlock(m->lock);
}

/* --- guest packets --- */

static void reply_rst(struct vsock_mux *m, const struct vsock_hdr *h)
{
	if (h->op == VSOCK_OP_RST || m->rst_count == VSOCK_RST_RING)
		return;   /* never answer an RST; a full ring cannot happen (vsock_mux_can_take) */
	unsigned i = (m->rst_head + m->rst_count) % VSOCK_RST_RING;
	m->rst_ring[i].src_cid = h->dst_cid;
	m->rst_ring[i].src_port = h->dst_port;
	m->rst_ring[i].dst_port = h->src_port;
	m->rst_count++;
}

bool vsock_mux_can_take(const struct vsock_mux *m)
{
	return m->rst_count < VSOCK_RST_RING;
}

/* Points dst at bytes [off, off+len) of iov[0..n); returns the number of segments. */
static unsigned iov_slice(struct iovec *dst, const struct iovec *iov, unsigned n, size_t off,
			  size_t len)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n && len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t take = iov[i].iov_len - off;
		if (take > len)
			take = len;
		dst[k].iov_base = (uint8_t *)iov[i].iov_base + off;
		dst[k].iov_len = take;
		k++;
		len -= take;
		off = 0;
	}
	return k;
}

static void guest_connect(struct vsock_mux *m, const struct vsock_hdr *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int len = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", m->uds_path, h->dst_port);
	int fd = -1;
	if (len > 0 && (size_t)len < sizeof(sa.sun_path))
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/*
	 * A non-blocking Unix connect completes at once or fails (EAGAIN when the listener's
	 * backlog is full): either way the answer is known now.
	 */
	struct vsock_conn *c = NULL;
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    !(c = conn_alloc(m))) {
		if (fd >= 0)
			close(fd);
		reply_rst(m, h);
		return;
	}
	c->h.fd = fd;
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->state = VSOCK_CONN_ESTABLISHED;
	hash_insert(m, c);
	m->stats.conns_opened++;
	owe(c, VSOCK_PEND_RESPONSE);
	conn_update(c);
}

static void guest_rw(struct vsock_conn *c, const struct virtq_elem *elem, uint32_t len)
{
	struct vsock_mux *m = c->mux;
	if (c->state == VSOCK_CONN_CLOSING) {
		/* The host side is gone and the guest was told; drop what was already in flight. */
		c->rx_cnt += len;
		c->fwd_cnt += len;
		maybe_credit_update(c);
		return;
	}
	if (c->state != VSOCK_CONN_ESTABLISHED || c->peer_shut_send ||
	    len > VSOCK_BUF_ALLOC - (c->rx_cnt - c->fwd_cnt)) {
		/* Data before RESPONSE, after its own SHUTDOWN, or beyond our credit. */
		m->stats.bad_packets++;
		conn_abort(c);
		return;
	}
	c->rx_cnt += len;
	if (!len)
		return;
	uint32_t done = 0;
	if (!has_out(c)) {
		/* Straight from guest memory to the socket; only what it refuses is copied. */
		unsigned cnt = iov_slice(m->scratch, elem->iov, elem->n_out, VSOCK_HDR_SIZE, len);
		struct msghdr msg = { .msg_iov = m->scratch, .msg_iovlen = cnt };
		ssize_t n;
		do
			n = sendmsg(c->h.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_abort(c);
			return;
		}
		if (n > 0) {
			done = (uint32_t)n;
			c->fwd_cnt += done;
		}
	}
	if (done < len) {
		uint32_t rest = len - done;
		if (!c->out && !(c->out = malloc(VSOCK_BUF_ALLOC))) {
			conn_abort(c);
			return;
		}
		/* Fits: out_len == rx_cnt - fwd_cnt before this packet, and the credit check. */
		uint32_t tail = (c->out_head + c->out_len) % VSOCK_BUF_ALLOC;
		uint32_t first = VSOCK_BUF_ALLOC - tail < rest ? VSOCK_BUF_ALLOC - tail : rest;
		iov_to_buf(elem->iov, elem->n_out, VSOCK_HDR_SIZE + done, c->out + tail, first);
		if (first < rest)
			iov_to_buf(elem->iov, elem->n_out, VSOCK_HDR_SIZE + done + first, c->out,
				   rest - first);
		c->out_len += rest;
	}
	maybe_credit_update(c);
}

static void guest_shutdown(struct vsock_conn *c, uint32_t flags)
{
	if ((flags & VSOCK_SHUTDOWN_RCV) && !c->peer_shut_rcv) {
		c->peer_shut_rcv = true;
		c->data_ready = false;
		/* The host's further writes fail (EPIPE), as on a socket whose peer shut reading. */
		if (c->h.fd >= 0)
			shutdown(c->h.fd, SHUT_RD);
	}
	if (flags & VSOCK_SHUTDOWN_SEND)
		c->peer_shut_send = true;
	if (c->state == VSOCK_CONN_CLOSING) {
		if (c->peer_shut_rcv && c->peer_shut_send)
			conn_abort(c);
		return;
	}
	if (!has_out(c) && c->peer_shut_send && !c->wr_shut && c->h.fd >= 0) {
		shutdown(c->h.fd, SHUT_WR);
		c->wr_shut = true;
	}
	if (c->peer_shut_rcv && c->peer_shut_send) {
		if (has_out(c))
			set_deadline(c, c->mux->close_timeout_ms);   /* flush first, not forever */
		else
			finish_if_guest_closed(c);
	}
}

void vsock_mux_guest_packet(struct vsock_mux *m, const struct virtq_elem *elem)
{
	uint8_t raw[VSOCK_HDR_SIZE];
	struct vsock_hdr h;
	if (elem->out_len < VSOCK_HDR_SIZE) {
		m->stats.bad_packets++;
		return;
	}
	iov_to_buf(elem->iov, elem->n_out, 0, raw, sizeof(raw));
	vsock_hdr_decode(&h, raw);
	if (h.src_cid != m->guest_cid) {
		m->stats.bad_packets++;   /* spoofed source: nobody to answer */
		return;
	}
	if (h.dst_cid != VSOCK_HOST_CID || h.type != VSOCK_TYPE_STREAM) {
		m->stats.bad_packets++;
		reply_rst(m, &h);
		return;
	}
	struct vsock_conn *c = lookup(m, h.dst_port, h.src_port);
	if (c && (c->pending & VSOCK_PEND_RST)) {
		/* Our RST is on its way; only a new REQUEST on the same ports replaces it. */
		if (h.op != VSOCK_OP_REQUEST)
			return;
		conn_free(c);
		c = NULL;
	}
	if (h.len > elem->out_len - VSOCK_HDR_SIZE || h.op == VSOCK_OP_INVALID ||
	    h.op > VSOCK_OP_CREDIT_REQUEST) {
		m->stats.bad_packets++;
		if (c)
			conn_abort(c);
		else
			reply_rst(m, &h);
		return;
	}
	if (!c) {
		if (h.op == VSOCK_OP_REQUEST && m->running)
			guest_connect(m, &h);
		else
			reply_rst(m, &h);   /* also late packets of a connection we forgot */
		return;
	}
	if (h.op != VSOCK_OP_RST) {
		c->peer_buf_alloc = h.buf_alloc;
		c->peer_fwd_cnt = h.fwd_cnt;
		if (peer_credit(c) > 0)
			c->credit_requested = false;
	}
	switch (h.op) {
	case VSOCK_OP_RESPONSE:
		if (c->state != VSOCK_CONN_REQUESTED || (c->pending & VSOCK_PEND_REQUEST)) {
			m->stats.bad_packets++;
			conn_abort(c);
			break;
		}
		c->state = VSOCK_CONN_ESTABLISHED;
		c->deadline_ns = 0;
		c->line_len = (uint32_t)snprintf(c->line, sizeof(c->line), "OK %u\n", c->local_port);
		c->line_off = 0;
		flush(c);
		break;
	case VSOCK_OP_RST:
		conn_free(c);
		return;
	case VSOCK_OP_SHUTDOWN:
		if (c->state == VSOCK_CONN_REQUESTED) {
			m->stats.bad_packets++;
			conn_abort(c);
			break;
		}
		guest_shutdown(c, h.flags);
		break;
	case VSOCK_OP_RW:
		guest_rw(c, elem, h.len);
		break;
	case VSOCK_OP_CREDIT_UPDATE:
		break;   /* applied above */
	case VSOCK_OP_CREDIT_REQUEST:
		owe(c, VSOCK_PEND_CREDIT_UPDATE);
		break;
	case VSOCK_OP_REQUEST:   /* a second REQUEST on a live connection */
	default:                 /* (unknown ops were refused above) */
		m->stats.bad_packets++;
		conn_abort(c);
		break;
	}
	conn_update(c);
}

/* --- packets for the guest --- */

bool vsock_mux_has_rx(const struct vsock_mux *m)
{
	return m->rst_count || m->rx_head;
}

static uint32_t put_hdr(struct virtq_elem *elem, struct vsock_hdr *h)
{
	uint8_t raw[VSOCK_HDR_SIZE];
	vsock_hdr_encode(h, raw);
	iov_from_buf(elem->iov + elem->n_out, elem->n_in, 0, raw, sizeof(raw));
	return VSOCK_HDR_SIZE + h->len;
}

/* The Unix side reached end of file: tell the guest, and close if the host hung up. */
static void host_eof(struct vsock_conn *c)
{
	c->host_eof = true;
	c->data_ready = false;
	struct pollfd p = { .fd = c->h.fd, .events = POLLOUT };
	bool hup = poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
	c->shutdown_flags |= VSOCK_SHUTDOWN_SEND;
	if (hup) {
		/* Nothing can flow either way any more: keep only the state the guest needs. */
		c->shutdown_flags |= VSOCK_SHUTDOWN_RCV;
		close_fd(c);
		if (c->peer_shut_rcv && c->peer_shut_send) {
			conn_abort(c);
			return;
		}
		c->state = VSOCK_CONN_CLOSING;
		set_deadline(c, c->mux->close_timeout_ms);
	}
	owe(c, VSOCK_PEND_SHUTDOWN);
}

/* One packet of connection c into elem; 0 if c has nothing to send now. */
static uint32_t conn_fill(struct vsock_mux *m, struct vsock_conn *c, struct virtq_elem *elem)
{
	struct vsock_hdr h = {
		.src_cid = VSOCK_HOST_CID, .dst_cid = m->guest_cid, .src_port = c->local_port,
		.dst_port = c->peer_port, .type = VSOCK_TYPE_STREAM,
	};
	if (c->pending & VSOCK_PEND_RST) {
		h.op = VSOCK_OP_RST;
		uint32_t n = put_hdr(elem, &h);
		m->stats.rst_sent++;
		conn_free(c);
		return n;
	}
	if (c->pending & VSOCK_PEND_REQUEST) {
		c->pending &= ~VSOCK_PEND_REQUEST;
		h.op = VSOCK_OP_REQUEST;
	} else if (c->pending & VSOCK_PEND_RESPONSE) {
		c->pending &= ~VSOCK_PEND_RESPONSE;
		h.op = VSOCK_OP_RESPONSE;
	}
	while (!h.op && c->data_ready) {
		uint32_t credit = peer_credit(c);
		if (c->host_eof || c->peer_shut_rcv || c->state != VSOCK_CONN_ESTABLISHED ||
		    c->h.fd < 0) {
			c->data_ready = false;
			break;
		}
		if (!credit) {
			/* Ask once; the guest's next packet or CREDIT_UPDATE reopens the window. */
			c->data_ready = false;
			if (!c->credit_requested) {
				c->credit_requested = true;
				c->pending |= VSOCK_PEND_CREDIT_REQUEST;
			}
			break;
		}
		uint64_t room = elem->in_len - VSOCK_HDR_SIZE;
		uint32_t want = credit < VSOCK_MAX_PKT ? credit : VSOCK_MAX_PKT;
		if (want > room)
			want = (uint32_t)room;
		if (!want) {
			c->data_ready = false;   /* a header-only buffer: let the list move on */
			break;
		}
		unsigned cnt = iov_slice(m->scratch, elem->iov + elem->n_out, elem->n_in,
					 VSOCK_HDR_SIZE, want);
		ssize_t n = readv(c->h.fd, m->scratch, (int)cnt);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0) {
			h.op = VSOCK_OP_RW;
			h.len = (uint32_t)n;
			c->tx_cnt += (uint32_t)n;
		} else if (n == 0) {
			host_eof(c);
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			c->data_ready = false;
		} else {
			conn_abort(c);   /* ECONNRESET and friends */
			return conn_fill(m, c, elem);
		}
	}
	if (c->pending & VSOCK_PEND_RST)
		return conn_fill(m, c, elem);
	if (h.op) {
		/* data or handshake */
	} else if (c->pending & VSOCK_PEND_CREDIT_REQUEST) {
		c->pending &= ~VSOCK_PEND_CREDIT_REQUEST;
		h.op = VSOCK_OP_CREDIT_REQUEST;
	} else if (c->pending & VSOCK_PEND_CREDIT_UPDATE) {
		h.op = VSOCK_OP_CREDIT_UPDATE;
	} else if (c->pending & VSOCK_PEND_SHUTDOWN) {
		c->pending &= ~VSOCK_PEND_SHUTDOWN;
		h.op = VSOCK_OP_SHUTDOWN;
		h.flags = c->shutdown_flags;
	} else {
		return 0;
	}
	/* Every packet carries our credit, so none needs a separate CREDIT_UPDATE. */
	h.buf_alloc = VSOCK_BUF_ALLOC;
	h.fwd_cnt = c->fwd_cnt;
	c->last_adv_fwd = c->fwd_cnt;
	c->pending &= ~VSOCK_PEND_CREDIT_UPDATE;
	return put_hdr(elem, &h);
}

uint32_t vsock_mux_fill(struct vsock_mux *m, struct virtq_elem *elem)
{
	if (elem->in_len < VSOCK_HDR_SIZE)
		return 0;
	if (m->rst_count) {
		struct vsock_hdr h = {
			.src_cid = m->rst_ring[m->rst_head].src_cid, .dst_cid = m->guest_cid,
			.src_port = m->rst_ring[m->rst_head].src_port,
			.dst_port = m->rst_ring[m->rst_head].dst_port, .type = VSOCK_TYPE_STREAM,
			.op = VSOCK_OP_RST,
		};
		m->rst_head = (m->rst_head + 1) % VSOCK_RST_RING;
		m->rst_count--;
		m->stats.rst_sent++;
		return put_hdr(elem, &h);
	}
	while (m->rx_head) {
		struct vsock_conn *c = m->rx_head;
		uint32_t n = conn_fill(m, c, elem);
		if (c->state != VSOCK_CONN_FREE) {
			rx_list_del(m, c);
			/* Round robin: a connection with more to say goes to the back. */
			if (c->pending || c->data_ready)
				rx_list_add(m, c);
			conn_update(c);
		}
		if (n)
			return n;
	}
	return 0;
}

/* --- life cycle --- */

static void free_all(struct vsock_mux *m, bool keep_line)
{
	for (unsigned i = 0; m->conns && i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &m->conns[i];
		if (c->state != VSOCK_CONN_FREE && !(keep_line && c->state == VSOCK_CONN_LINE))
			conn_free(c);
	}
	m->rst_count = m->rst_head = 0;
}

void vsock_mux_start(struct vsock_mux *m)
{
	m->running = true;
}

void vsock_mux_reset(struct vsock_mux *m)
{
	/* The guest forgot its sockets; host programs still typing CONNECT may wait on. */
	m->running = false;
	free_all(m, true);
}

static int prepare_path(const char *path, struct cv_error *err)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "'%s'", path);
	}
	if (!S_ISSOCK(st.st_mode))
		return cv_fail(err, CV_EXIT_USAGE, "'%s' exists and is not a socket", path);
	/* A socket file nobody listens on is left over from a VMM that died: replace it. */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "socket");
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	close(fd);
	if (rc == 0)
		return cv_fail(err, CV_EXIT_USAGE, "'%s' is in use by another process", path);
	if (e != ECONNREFUSED) {
		errno = e;
		return cv_fail_errno(err, CV_EXIT_OSERR, "probe '%s'", path);
	}
	if (unlink(path) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "remove stale socket '%s'", path);
	return 0;
}

int vsock_mux_init(struct vsock_mux *m, uint64_t guest_cid, const char *uds_path,
		   pthread_mutex_t *lock, struct evloop *loop, void (*wake)(void *), void *opaque,
		   struct cv_error *err)
{
	memset(m, 0, sizeof(*m));
	m->listen_fd = m->timer_fd = -1;
	m->guest_cid = guest_cid;
	m->lock = lock;
	m->loop = loop;
	m->wake = wake;
	m->opaque = opaque;
	m->line_timeout_ms = 10000;
	m->connect_timeout_ms = 10000;
	m->close_timeout_ms = 10000;
	m->next_host_port = VSOCK_HOST_PORT_FIRST;
	size_t plen = strlen(uds_path);
	if (plen == 0 || plen > VSOCK_UDS_MAX - PORT_SUFFIX_MAX)
		return cv_fail(err, CV_EXIT_USAGE,
			       "uds path must be 1 to %d bytes (PATH_<port> must fit a socket address)",
			       VSOCK_UDS_MAX - PORT_SUFFIX_MAX);
	memcpy(m->uds_path, uds_path, plen + 1);

	m->conns = calloc(VSOCK_MAX_CONNS, sizeof(*m->conns));
	if (!m->conns)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		m->conns[i].h.fd = -1;
		m->conns[i].free_next = i + 1 < VSOCK_MAX_CONNS ? &m->conns[i + 1] : NULL;
	}
	m->free_head = &m->conns[0];
	m->free_tail = &m->conns[VSOCK_MAX_CONNS - 1];

	m->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (m->timer_fd < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "timerfd_create");
		goto fail;
	}
	m->timer_h = (struct evloop_handler){ .fd = m->timer_fd, .fn = timer_event, .opaque = m };
	if (evloop_add(loop, &m->timer_h, EPOLLIN, err) < 0)
		goto fail;
	m->timer_in_loop = true;

	if (prepare_path(uds_path, err) < 0)
		goto fail;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, uds_path, plen + 1);
	m->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (m->listen_fd < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "socket");
		goto fail;
	}
	if (bind(m->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "bind '%s'", uds_path);
		goto fail;
	}
	struct stat st;
	if (stat(uds_path, &st) == 0) {
		m->listen_dev = st.st_dev;
		m->listen_ino = st.st_ino;
	}
	if (listen(m->listen_fd, 128) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "listen on '%s'", uds_path);
		goto fail;
	}
	m->listen_h = (struct evloop_handler){ .fd = m->listen_fd, .fn = listen_event, .opaque = m };
	if (evloop_add(loop, &m->listen_h, EPOLLIN, err) < 0)
		goto fail;
	m->listen_in_loop = true;
	return 0;
fail:
	vsock_mux_destroy(m);
	return -1;
}

void vsock_mux_destroy(struct vsock_mux *m)
{
	free_all(m, false);
	free(m->conns);
	m->conns = NULL;
	listener_watch(m, false);
	if (m->listen_fd >= 0) {
		close(m->listen_fd);
		m->listen_fd = -1;
		/* Remove the path only if it is still our socket, not one a successor created. */
		struct stat st;
		if (m->listen_ino && lstat(m->uds_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
		    st.st_dev == m->listen_dev && st.st_ino == m->listen_ino)
			unlink(m->uds_path);
	}
	if (m->timer_in_loop)
		evloop_remove(m->loop, &m->timer_h);
	m->timer_in_loop = false;
	if (m->timer_fd >= 0)
		close(m->timer_fd);
	m->timer_fd = -1;
}
