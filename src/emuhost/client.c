/*
 * The host side of the agent protocol for the emulated host (internal.h, emuhost_exec): connect
 * through QEMU's forwarded loopback port, ping, power off, and run a command while relaying its
 * stdio and our SIGINT/SIGTERM/SIGHUP/SIGQUIT. Signals are taken through a signalfd while
 * blocked, so no handler and no global state is involved.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "emuhost.h"
#include "internal.h"
#include "proto.h"
#include "util.h"

extern char **environ;

int client_connect(unsigned port, int timeout_ms, struct cv_error *err)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "agent connection: socket");
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (timeout_ms > 0) {
		struct timeval tv = { .tv_sec = timeout_ms / 1000,
				      .tv_usec = (timeout_ms % 1000) * 1000 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EINTR)
			continue;
		cv_fail_errno(err, CV_EXIT_UNAVAILABLE, "connect to the agent on 127.0.0.1:%u", port);
		close(fd);
		return -1;
	}
	return fd;
}

/* Receives one CONTROL frame and parses it as an event; output frames are not expected here. */
static int recv_event(int fd, struct agent_event *ev, struct cv_error *err)
{
	struct agent_frame f;
	int r = agent_recv_frame(fd, &f, err);
	if (r < 0)
		return -1;
	if (r == 0)
		return cv_fail(err, CV_EXIT_IOERR, "the agent closed the connection without an answer");
	if (f.type != AGENT_FRAME_CONTROL) {
		agent_frame_free(&f);
		return cv_fail(err, CV_EXIT_DATAERR, "protocol error: expected an event, got frame type %u",
			       f.type);
	}
	r = agent_parse_event(f.data, f.len, ev, err);
	agent_frame_free(&f);
	return r;
}

int client_ping(unsigned port, const char *token, int timeout_ms, char *version, size_t vlen,
		struct cv_error *err)
{
	int fd = client_connect(port, timeout_ms, err);
	if (fd < 0)
		return -1;
	struct agent_event ev;
	int rc = -1;
	if (agent_send_ping(fd, token, err) < 0 || recv_event(fd, &ev, err) < 0)
		goto out;
	if (ev.kind == AGENT_EV_PONG) {
		if (version)
			snprintf(version, vlen, "%s", ev.version);
		rc = 0;
	} else if (ev.kind == AGENT_EV_ERROR) {
		cv_fail(err, CV_EXIT_UNAVAILABLE, "agent: %s", ev.message);
	} else {
		cv_fail(err, CV_EXIT_DATAERR, "protocol error: unexpected answer to ping");
	}
	agent_event_free(&ev);
out:
	close(fd);
	return rc;
}

int client_poweroff(unsigned port, const char *token, struct cv_error *err)
{
	int fd = client_connect(port, 5000, err);
	if (fd < 0)
		return -1;
	int rc = -1;
	if (agent_send_poweroff(fd, token, err) < 0)
		goto out;
	/*
	 * Acceptance is silence: the connection just ends (EOF or reset) as the machine goes
	 * down. A timeout means nobody is home (QEMU forwards, but the agent is dead or hung).
	 */
	struct agent_frame f;
	int r = agent_recv_frame(fd, &f, err);
	if (r == 0 || (r < 0 && err->code == CV_EXIT_IOERR && !strstr(err->msg, "timed out"))) {
		rc = 0;
	} else if (r > 0) {
		struct agent_event ev;
		if (f.type == AGENT_FRAME_CONTROL && agent_parse_event(f.data, f.len, &ev, err) == 0) {
			rc = cv_fail(err, CV_EXIT_UNAVAILABLE, "agent: %s",
				     ev.kind == AGENT_EV_ERROR ? ev.message : "unexpected answer to poweroff");
			agent_event_free(&ev);
		}
		agent_frame_free(&f);
	}
out:
	close(fd);
	return rc;
}

/* ---- emuhost_exec ---- */

/* Everything one exec relays between our stdio and the agent connection. */
struct exec_relay {
	int conn;
	int sigfd;
	bool started;
	bool stdin_open;        /* still reading our stdin */
	bool done;
	int status;
	char console[PATH_MAX];  /* the host's console log, named in errors */
	struct agent_reader rd;
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
		return cv_fail(err, CV_EXIT_DATAERR, "protocol error: unexpected frame type %u from the agent",
			       f->type);
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
			rc = cv_fail(err, CV_EXIT_RUN_FAILED, "emulated host: %s", ev.message);
		else
			fprintf(stderr, "cvisor: emulated host: %s\n", ev.message);
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
		return agent_send_frame(x->conn, AGENT_FRAME_STDIN, NULL, 0, err);
	}
	return agent_send_frame(x->conn, AGENT_FRAME_STDIN, x->buf, (size_t)n, err);
}

static int relay_signal(struct exec_relay *x, struct cv_error *err)
{
	struct signalfd_siginfo si;
	ssize_t n = read(x->sigfd, &si, sizeof(si));
	if (n != (ssize_t)sizeof(si))
		return 0;
	return agent_send_signal(x->conn, (int)si.ssi_signo, err);
}

/* Once started a command may run for ever; until then the host must answer within this. */
#define START_TIMEOUT_MS 30000

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int relay(struct exec_relay *x, struct cv_error *err)
{
	int64_t deadline = now_ms() + START_TIMEOUT_MS;
	while (!x->done) {
		struct pollfd p[3] = {
			{ .fd = x->conn, .events = POLLIN },
			/* Signals wait until the command exists, then go to its process group. */
			{ .fd = x->started ? x->sigfd : -1, .events = POLLIN },
			{ .fd = x->started && x->stdin_open ? 0 : -1, .events = POLLIN },
		};
		int timeout = -1;
		if (!x->started) {
			int64_t left = deadline - now_ms();
			if (left <= 0)
				return cv_fail(err, CV_EXIT_UNAVAILABLE,
					       "the emulated host did not start the command within %d s (hung?): see %s, or restart it with 'cvisor emuhost stop; cvisor emuhost start'",
					       START_TIMEOUT_MS / 1000, x->console);
			timeout = (int)left;
		}
		if (poll(p, 3, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return cv_fail_errno(err, CV_EXIT_OSERR, "poll");
		}
		if (p[0].revents) {
			ssize_t n = agent_reader_fill(&x->rd, x->conn, err);
			/* QEMU accepts for the guest; a guest that does not answer resets the connection. */
			if (n <= 0 && !x->started)
				return cv_fail(err, CV_EXIT_UNAVAILABLE,
					       "the emulated host does not answer (hung or still booting?): see %s, or restart it with 'cvisor emuhost stop; cvisor emuhost start'",
					       x->console);
			if (n < 0)
				return cv_error_wrap(err, "connection to the emulated host's agent");
			if (n == 0)
				return cv_fail(err, CV_EXIT_IOERR,
					       "the emulated host's agent closed the connection before the command exited");
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
	}
	return 0;
}

int emuhost_exec(const char *state_dir, const struct emuhost_cmd *cmd, int *status,
		 struct cv_error *err)
{
	if (!cmd->argv || !cmd->argv[0])
		return cv_fail(err, CV_EXIT_USAGE, "emuhost exec: no command given");
	struct emuhost_state st;
	if (state_open(state_dir, false, &st, err) < 0)
		return -1;
	if (!st.port || !state_qemu_alive(&st))
		return cv_fail(err, CV_EXIT_UNAVAILABLE,
			       "no emulated host is running (state directory '%s'); start one with 'cvisor emuhost start'",
			       st.dir);
	char cwd[PATH_MAX];
	if (cmd->cwd) {
		if (cv_format(cwd, sizeof(cwd), err, "%s", cmd->cwd) < 0)
			return -1;
	} else if (!getcwd(cwd, sizeof(cwd))) {
		return cv_fail_errno(err, CV_EXIT_OSERR, "emuhost exec: getcwd");
	}

	struct exec_relay *x = calloc(1, sizeof(*x));
	if (!x)
		return cv_fail(err, CV_EXIT_OSERR, "emuhost exec: out of memory");
	x->conn = -1;
	x->sigfd = -1;
	x->stdin_open = cmd->forward_stdin;
	agent_reader_init(&x->rd);
	if (state_path(&st, "console.log", x->console, sizeof(x->console), err) < 0) {
		free(x);
		return -1;
	}

	sigset_t fwd, old;
	sigemptyset(&fwd);
	sigaddset(&fwd, SIGINT);
	sigaddset(&fwd, SIGTERM);
	sigaddset(&fwd, SIGHUP);
	sigaddset(&fwd, SIGQUIT);
	sigprocmask(SIG_BLOCK, &fwd, &old);
	int rc = -1;
	x->sigfd = signalfd(-1, &fwd, SFD_CLOEXEC | SFD_NONBLOCK);
	if (x->sigfd < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "emuhost exec: signalfd");
		goto out;
	}
	x->conn = client_connect(st.port, 0, err);
	if (x->conn < 0)
		goto out;
	char *const *envp = cmd->envp ? cmd->envp : environ;
	if (agent_send_exec(x->conn, cmd->argv, envp, cwd, cmd->forward_stdin,
			    st.token[0] ? st.token : NULL, err) < 0)
		goto out;
	if (relay(x, err) < 0)
		goto out;
	*status = x->status;
	rc = 0;
out:
	if (x->conn >= 0)
		close(x->conn);
	if (x->sigfd >= 0) {
		/* Consume what arrived, or unblocking would deliver it to us after the fact. */
		struct signalfd_siginfo si;
		while (read(x->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			;
		close(x->sigfd);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	agent_reader_free(&x->rd);
	free(x);
	return rc;
}
