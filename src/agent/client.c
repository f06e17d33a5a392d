/*
 * Relay of one remote command (see client.h). Signals are taken through a signalfd while blocked,
 * so no handler and no global state is involved; the terminal's mode is restored on every path
 * out of agent_exec_relay. Nothing is sent to the agent with a blocking write: the agent itself
 * blocks while sending us output we do not read, and a relay blocked sending it stdin at that
 * moment would never read again (a `cat` of a few MiB hung that way). What we send is queued,
 * written as the connection takes it, and stdin is read only once the queue is empty.
 */
#include "client.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* Everything one exec relays between our stdio and the agent connection. */
struct exec_relay {
	const struct agent_relay_opts *o;
	int conn;
	int sigfd;
	bool started;
	bool stdin_open;        /* still reading our stdin */
	bool done;
	int status;
	struct agent_reader rd;
	struct agent_outq out;  /* frames for the agent not yet written */
	uint8_t buf[65536];
};

static int handle_frame(struct exec_relay *x, const struct agent_frame *f, struct cv_error *err)
{
	if (f->type == AGENT_FRAME_STDOUT || f->type == AGENT_FRAME_STDERR) {
		int out = f->type == AGENT_FRAME_STDOUT ? 1 : 2;
		if (f->len && cv_write_full(out, f->data, f->len) < 0) {
			/* Our reader went away (as with `| head`): stop like a local command would. */
			x->done = true;
			x->status = 128 + SIGPIPE;
		}
		return 0;
	}
	if (f->type != AGENT_FRAME_CONTROL)
		return cv_fail(err, CV_EXIT_DATAERR, "protocol error: unexpected frame type %u from the %s's agent",
			       f->type, x->o->peer);
	struct agent_event ev;
	if (agent_parse_event(f->data, f->len, &ev, err) < 0)
		return -1;
	int rc = 0;
	switch (ev.kind) {
	case AGENT_EV_STARTED:
		x->started = true;
		break;
	case AGENT_EV_EXIT:
		x->done = true;
		x->status = ev.status;
		break;
	case AGENT_EV_ERROR:
		/* Before "started" it means the command was never run; after, it is advisory. */
		if (!x->started)
			rc = cv_fail(err, CV_EXIT_RUN_FAILED, "%s: %s", x->o->peer, ev.message);
		else
			fprintf(stderr, "cvisor: %s: %s\n", x->o->peer, ev.message);
		break;
	case AGENT_EV_PONG:
		break;
	}
	agent_event_free(&ev);
	return rc;
}

static int relay_stdin(struct exec_relay *x, struct cv_error *err)
{
	ssize_t n = read(0, x->buf, sizeof(x->buf));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		/* End of input (or an unreadable stdin, which the command sees the same way). */
		x->stdin_open = false;
		return agent_outq_frame(&x->out, AGENT_FRAME_STDIN, NULL, 0, err);
	}
	return agent_outq_frame(&x->out, AGENT_FRAME_STDIN, x->buf, (size_t)n, err);
}

/* Our terminal's size, or 0x0 if fd 0 is not a terminal. */
static void terminal_size(unsigned *rows, unsigned *cols)
{
	struct winsize ws;
	*rows = *cols = 0;
	if (ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
		*rows = ws.ws_row;
		*cols = ws.ws_col;
	}
}

static int relay_signal(struct exec_relay *x, struct cv_error *err)
{
	struct signalfd_siginfo si;
	ssize_t n = read(x->sigfd, &si, sizeof(si));
	if (n != (ssize_t)sizeof(si))
		return 0;
	if (si.ssi_signo == SIGWINCH) {
		unsigned rows, cols;
		terminal_size(&rows, &cols);
		return rows ? agent_queue_resize(&x->out, rows, cols, err) : 0;
	}
	return agent_queue_signal(&x->out, (int)si.ssi_signo, err);
}

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int not_answering(struct exec_relay *x, const char *what, struct cv_error *err)
{
	return cv_fail(err, CV_EXIT_UNAVAILABLE, "the %s %s%s%s", x->o->peer, what,
		       x->o->hint ? ": " : "", x->o->hint ? x->o->hint : "");
}

static int relay(struct exec_relay *x, struct cv_error *err)
{
	int64_t deadline = x->o->start_timeout_ms ? now_ms() + x->o->start_timeout_ms : 0;
	while (!x->done) {
		bool sending = agent_outq_pending(&x->out) > 0;
		struct pollfd p[3] = {
			{ .fd = x->conn, .events = POLLIN | (sending ? POLLOUT : 0) },
			/* Signals wait until the command exists, then go to its process group. */
			{ .fd = x->started ? x->sigfd : -1, .events = POLLIN },
			/* One chunk of stdin in flight at most: the command sets the pace. */
			{ .fd = x->started && x->stdin_open && !sending ? 0 : -1, .events = POLLIN },
		};
		int timeout = -1;
		if (!x->started && deadline) {
			int64_t left = deadline - now_ms();
			if (left <= 0)
				return not_answering(x, "did not start the command in time (hung?)", err);
			timeout = (int)left;
		}
		if (poll(p, 3, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return cv_fail_errno(err, CV_EXIT_OSERR, "poll");
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = agent_reader_fill(&x->rd, x->conn, err);
			/* A proxy (QEMU, the VMM) accepts for the agent; a dead agent resets the stream. */
			if (n <= 0 && !x->started)
				return not_answering(x, "does not answer (hung or still booting?)", err);
			if (n < 0)
				return cv_error_wrap(err, "connection to the %s's agent", x->o->peer);
			if (n == 0)
				return cv_fail(err, CV_EXIT_IOERR,
					       "the %s's agent closed the connection before the command exited",
					       x->o->peer);
			for (;;) {
				struct agent_frame f;
				int r = agent_reader_next(&x->rd, &f, err);
				if (r < 0)
					return -1;
				if (r == 0)
					break;
				r = handle_frame(x, &f, err);
				agent_frame_free(&f);
				if (r < 0)
					return -1;
				if (x->done)
					return 0;
			}
		}
		if (p[1].revents && relay_signal(x, err) < 0)
			return -1;
		if (p[2].revents && relay_stdin(x, err) < 0)
			return -1;
		if (agent_outq_pending(&x->out) && agent_outq_flush(&x->out, x->conn, err) < 0) {
			if (errno != EPIPE && errno != ECONNRESET)
				return -1;
			/*
			 * The agent closes once the command is done, possibly before it read all our
			 * stdin: its exit event, still to be read, says more than this write's EPIPE,
			 * and a connection really lost shows up on the read side too.
			 */
			agent_outq_free(&x->out);
			x->stdin_open = false;
		}
	}
	return 0;
}

int agent_exec_relay(int conn, const struct agent_exec_spec *spec, const char *token,
		     const struct agent_relay_opts *opts, int *status, struct cv_error *err)
{
	struct agent_exec_spec s = *spec;
	s.tty = opts->tty;
	s.stdin_open = opts->tty || opts->forward_stdin;
	s.rows = s.cols = 0;
	struct termios saved;
	bool raw = false;
	if (opts->tty) {
		if (tcgetattr(0, &saved) < 0)
			return cv_fail_errno(err, CV_EXIT_USAGE, "a terminal was asked for, but stdin is not one");
		terminal_size(&s.rows, &s.cols);
	}

	struct exec_relay *x = calloc(1, sizeof(*x));
	if (!x)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	x->o = opts;
	x->conn = conn;
	x->stdin_open = s.stdin_open;
	agent_reader_init(&x->rd);
	agent_outq_init(&x->out);

	sigset_t fwd, old;
	sigemptyset(&fwd);
	sigaddset(&fwd, SIGINT);
	sigaddset(&fwd, SIGTERM);
	sigaddset(&fwd, SIGHUP);
	sigaddset(&fwd, SIGQUIT);
	if (opts->tty)
		sigaddset(&fwd, SIGWINCH);
	sigprocmask(SIG_BLOCK, &fwd, &old);
	int rc = -1;
	x->sigfd = signalfd(-1, &fwd, SFD_CLOEXEC | SFD_NONBLOCK);
	if (x->sigfd < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "signalfd");
		goto out;
	}
	if (agent_send_exec_spec(conn, &s, token, err) < 0)
		goto out;
	if (opts->tty) {
		/* Raw only now: until here a Ctrl-C should still stop us locally. */
		struct termios t = saved;
		cfmakeraw(&t);
		raw = tcsetattr(0, TCSADRAIN, &t) == 0;
	}
	if (relay(x, err) < 0)
		goto out;
	*status = x->status;
	rc = 0;
out:
	if (raw)
		tcsetattr(0, TCSADRAIN, &saved);
	if (x->sigfd >= 0) {
		/* Consume what arrived, or unblocking would deliver it to us after the fact. */
		struct signalfd_siginfo si;
		while (read(x->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			;
		close(x->sigfd);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	agent_reader_free(&x->rd);
	agent_outq_free(&x->out);
	free(x);
	return rc;
}

int agent_connect_hybrid_vsock(const char *uds_path, unsigned port, int timeout_ms,
			       struct cv_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(uds_path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return cv_fail(err, CV_EXIT_USAGE, "vsock socket path '%s' is too long", uds_path);
	}
	memcpy(sa.sun_path, uds_path, strlen(uds_path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = (e == ENOENT) ? ECONNREFUSED : e;
		return cv_fail_errno(err, CV_EXIT_UNAVAILABLE, "connect to '%s'", uds_path);
	}
	char line[32];
	int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
	if (cv_write_full(fd, line, (size_t)n) < 0) {
		int e = errno;
		close(fd);
		errno = (e == EPIPE || e == ECONNRESET) ? ECONNREFUSED : e;
		return cv_fail_errno(err, CV_EXIT_UNAVAILABLE, "vsock CONNECT %u", port);
	}
	/*
	 * Byte by byte: what follows the answer's newline is already the agent's stream. The VMM
	 * holds a CONNECT until the guest answers; a guest that never does (hung, or its vsock
	 * driver never came up) must not hang us with it.
	 */
	int64_t deadline = now_ms() + timeout_ms;
	size_t len = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - now_ms();
		int ready = left > 0 ? poll(&p, 1, (int)left) : 0;
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready == 0) {
			close(fd);
			errno = ETIMEDOUT;
			return cv_fail(err, CV_EXIT_UNAVAILABLE,
				       "vsock port %u: the guest did not answer within %d ms", port,
				       timeout_ms);
		}
		ssize_t r = read(fd, line + len, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r == 0 || errno == ECONNRESET ? ECONNREFUSED : errno;
			close(fd);
			errno = e;
			return cv_fail(err, CV_EXIT_UNAVAILABLE, "vsock port %u: %s", port,
				       e == ECONNREFUSED ? "nobody listens" : strerror(e));
		}
		if (line[len] == '\n')
			break;
		if (++len == sizeof(line) - 1) {
			close(fd);
			errno = EPROTO;
			return cv_fail(err, CV_EXIT_DATAERR, "vsock CONNECT %u: answer too long", port);
		}
	}
	line[len] = 0;
	if (strncmp(line, "OK ", 3) != 0) {
		close(fd);
		errno = EPROTO;
		return cv_fail(err, CV_EXIT_DATAERR, "vsock CONNECT %u: unexpected answer '%s'", port, line);
	}
	return fd;
}
