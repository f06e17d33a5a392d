/*
 * The host side of the agent protocol for the emulated host (internal.h, emuhost_exec): connect
 * through QEMU's forwarded loopback port, ping, power off, and run a command (the relay of its
 * stdio, signals and terminal is the shared one of src/agent/client.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "client.h"
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

/* Once started a command may run for ever; until then the host must answer within this. */
#define START_TIMEOUT_MS 30000

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
	char cwd[PATH_MAX], console[PATH_MAX], hint[PATH_MAX + 128];
	if (cmd->cwd) {
		if (cv_format(cwd, sizeof(cwd), err, "%s", cmd->cwd) < 0)
			return -1;
	} else if (!getcwd(cwd, sizeof(cwd))) {
		return cv_fail_errno(err, CV_EXIT_OSERR, "emuhost exec: getcwd");
	}
	if (state_path(&st, "console.log", console, sizeof(console), err) < 0)
		return -1;
	snprintf(hint, sizeof(hint),
		 "see %s, or restart it with 'cvisor emuhost stop; cvisor emuhost start'", console);

	int conn = client_connect(st.port, 0, err);
	if (conn < 0)
		return -1;
	struct agent_exec_spec spec = {
		.argv = cmd->argv,
		.env = cmd->envp ? cmd->envp : environ,
		.cwd = cwd,
	};
	struct agent_relay_opts opts = {
		.tty = cmd->tty,
		.forward_stdin = cmd->forward_stdin,
		.start_timeout_ms = START_TIMEOUT_MS,
		.peer = "emulated host",
		.hint = hint,
	};
	int rc = agent_exec_relay(conn, &spec, st.token[0] ? st.token : NULL, &opts, status, err);
	close(conn);
	return rc;
}
