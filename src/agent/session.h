/*
 * One exec session of cvisor-agent: runs the requested command in its own process group with
 * piped stdio (or on a new pseudo-terminal for "tty"), streams its output as frames, feeds it
 * stdin frames, forwards signal and resize requests, and reports its exit status. A client that
 * disconnects takes the whole process group with it.
 */
#ifndef CVISOR_AGENT_SESSION_H
#define CVISOR_AGENT_SESSION_H

#include "proto.h"

struct session_opts {
	const char *root;   /* chroot for the command, or NULL */
};

/*
 * Serves an exec request on connection `conn` until the command has exited and its status was
 * sent, or the client went away. Returns 0, or -1 if the session ended abnormally (logged to
 * stderr by the caller from err).
 */
int session_run(const struct session_opts *opts, int conn, const struct agent_request *req,
		struct cv_error *err);

#endif
