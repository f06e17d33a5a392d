/*
 * The client side of a command run through cvisor-agent, shared by `cvisor emuhost exec` (agent
 * in the emulated host, over TCP) and `cvisor run` (agent in the microVM, over hybrid vsock):
 * send the exec request, then relay our stdin, signals and terminal size to the command and its
 * output back to our stdout/stderr until its exit event.
 */
#ifndef CVISOR_AGENT_CLIENT_H
#define CVISOR_AGENT_CLIENT_H

#include <stdbool.h>

#include "error.h"
#include "proto.h"

struct agent_relay_opts {
	/*
	 * Run the command on a terminal: our stdin (which must be a terminal) is put in raw mode
	 * for the duration, so Ctrl-C and friends travel as bytes to the remote terminal, and our
	 * window size follows it (SIGWINCH -> resize). Implies forwarding stdin.
	 */
	bool tty;
	bool forward_stdin;     /* stream fd 0 as STDIN frames; otherwise the command gets none */
	int start_timeout_ms;   /* how long the peer may take to start the command; 0: forever */
	const char *peer;       /* who runs the command, for messages: "guest", "emulated host" */
	const char *hint;       /* appended to "does not answer" errors (what to look at), or NULL */
};

/*
 * Runs spec through the agent connected on conn and relays until the command exits; *status is
 * its exit status (128+N if killed by signal N; 128+SIGPIPE if our stdout went away). Our
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT go to the command instead of to us while it runs.
 * spec->tty, spec->stdin_open, rows and cols are taken from opts and our terminal.
 */
int agent_exec_relay(int conn, const struct agent_exec_spec *spec, const char *token,
		     const struct agent_relay_opts *opts, int *status, struct cv_error *err);

/*
 * Opens a stream to vsock port `port` of a guest whose VMM exposes hybrid vsock on the Unix
 * socket uds_path: connect, send "CONNECT <port>\n", expect "OK <n>\n". Returns the connected
 * fd, or -1 with errno ECONNREFUSED when nobody in the guest listens (yet) on that port or the
 * VMM's socket does not exist yet, ETIMEDOUT when the guest gives no answer within timeout_ms,
 * other errno values on real failures.
 */
int agent_connect_hybrid_vsock(const char *uds_path, unsigned port, int timeout_ms,
			       struct cv_error *err);

#endif
