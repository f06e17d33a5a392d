/*
 * `cvisor agent`: talk to the cvisor-agent of a running guest through its VMM's hybrid vsock
 * socket (cvisor-vmm --vsock cid=N,uds=PATH, guest booted with cvisor.agent=PORT or by cvisor
 * run): ping, guest state, filesystem freeze/thaw, shutdown, and exec with the same relay as
 * `cvisor run`. Replies are printed as the agent's JSON, one object per line, for scripts.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "commands.h"
#include "proto.h"
#include "util.h"

#define DEFAULT_PORT 1024
#define DEFAULT_CONNECT_TIMEOUT_S 30
#define MAX_ENV 256

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cvisor agent --vsock UDS_PATH [--port N] [--timeout S] <request>\n"
		"\n"
		"Sends one request to the cvisor-agent of a running guest, through the Unix socket its\n"
		"cvisor-vmm serves for vsock (--vsock cid=N,uds=UDS_PATH). Requests:\n"
		"  ping                     the agent's version\n"
		"  info                     uptime, load, memory, per-CPU times, filesystems (JSON)\n"
		"  freeze [PATH...]         freeze filesystems (FIFREEZE), default: every disk one;\n"
		"                           they stay frozen until our stdin ends (the agent thaws\n"
		"                           what a connection froze when it closes)\n"
		"  thaw [PATH...]           thaw filesystems\n"
		"  shutdown [--reboot]      power the guest off (or reboot it) cleanly\n"
		"  exec [-i] [-t] [-e K=V] [-w DIR] -- CMD [ARG...]\n"
		"                           run CMD, relaying stdin (-i), a terminal (-t), signals;\n"
		"                           exits with CMD's status\n"
		"  --port N                 the agent's vsock port (default %d)\n"
		"  --timeout S              give up when the guest does not accept the connection\n"
		"                           within S seconds (default %d)\n",
		DEFAULT_PORT, DEFAULT_CONNECT_TIMEOUT_S);
}

static int fail(struct cv_error *err)
{
	cv_error_print(err, "cvisor agent");
	return err->code ? err->code : 1;
}

/* Receives the answer to a one-shot query, prints it as JSON; an error event is a failure. */
static int print_reply(int fd, struct cv_error *err)
{
	struct agent_frame f;
	int r = agent_recv_frame(fd, &f, err);
	if (r < 0)
		return -1;
	if (r == 0)
		return cv_fail(err, CV_EXIT_IOERR, "the agent closed the connection without an answer");
	if (f.type != AGENT_FRAME_CONTROL) {
		agent_frame_free(&f);
		return cv_fail(err, CV_EXIT_DATAERR, "protocol error: frame type %u instead of a reply", f.type);
	}
	struct agent_reply reply;
	int rc = agent_parse_reply(f.data, f.len, &reply, err);
	if (rc == 0) {
		if (reply.kind == AGENT_REPLY_ERROR)
			rc = cv_fail(err, CV_EXIT_RUN_FAILED, "agent: %s", reply.message);
		else
			printf("%.*s\n", (int)f.len, (const char *)f.data);
		/* Scripts wait for this line while a freeze is held: it must not sit in a buffer. */
		fflush(stdout);
		agent_reply_free(&reply);
	}
	agent_frame_free(&f);
	return rc;
}

static int do_ping(int fd, struct cv_error *err)
{
	if (agent_send_ping(fd, NULL, err) < 0)
		return -1;
	struct agent_frame f;
	int r = agent_recv_frame(fd, &f, err);
	if (r <= 0)
		return r < 0 ? -1 : cv_fail(err, CV_EXIT_IOERR, "the agent closed the connection");
	struct agent_event ev;
	int rc = f.type == AGENT_FRAME_CONTROL ? agent_parse_event(f.data, f.len, &ev, err)
					       : cv_fail(err, CV_EXIT_DATAERR, "protocol error");
	if (rc == 0) {
		if (ev.kind == AGENT_EV_PONG)
			printf("%.*s\n", (int)f.len, (const char *)f.data);
		else
			rc = cv_fail(err, CV_EXIT_DATAERR, "unexpected answer to ping");
		agent_event_free(&ev);
	}
	agent_frame_free(&f);
	return rc;
}

static int do_exec(int fd, int argc, char **argv, int *status, struct cv_error *err)
{
	const char *env[MAX_ENV + 1];
	int n_env = 0;
	const char *cwd = "/";
	struct agent_relay_opts opts = { .peer = "guest", .start_timeout_ms = 30000 };
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt(argc, argv, "+ite:w:")) != -1) {
		switch (c) {
		case 'i': opts.forward_stdin = true; break;
		case 't': opts.tty = true; break;
		case 'w': cwd = optarg; break;
		case 'e':
			if (n_env == MAX_ENV || !strchr(optarg, '='))
				return cv_fail(err, CV_EXIT_USAGE, "-e '%s': expected NAME=VALUE (at most %d)",
					       optarg, MAX_ENV);
			env[n_env++] = optarg;
			break;
		default:
			return cv_fail(err, CV_EXIT_USAGE, "exec: unknown option '%s'", argv[optind - 1]);
		}
	}
	env[n_env] = NULL;
	if (optind >= argc)
		return cv_fail(err, CV_EXIT_USAGE, "exec: no command given");
	struct agent_exec_spec spec = {
		.argv = argv + optind,
		.env = n_env ? (char *const *)env : NULL,
		.cwd = cwd,
	};
	return agent_exec_relay(fd, &spec, NULL, &opts, status, err);
}

int cmd_agent(int argc, char **argv)
{
	struct cv_error err = { 0 };
	const char *uds = NULL;
	unsigned long port = DEFAULT_PORT;
	uint64_t timeout_s = DEFAULT_CONNECT_TIMEOUT_S;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--vsock") == 0 && i + 1 < argc) {
			uds = argv[++i];
		} else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
			char *end;
			port = strtoul(argv[++i], &end, 10);
			if (*end || !port || port > 0xfffffffeUL) {
				cv_fail(&err, CV_EXIT_USAGE, "--port '%s': expected 1..4294967294", argv[i]);
				return fail(&err);
			}
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			if (!cv_parse_u64(argv[++i], 1, 3600, &timeout_s)) {
				cv_fail(&err, CV_EXIT_USAGE, "--timeout '%s': expected 1..3600 seconds",
					argv[i]);
				return fail(&err);
			}
		} else {
			cv_fail(&err, CV_EXIT_USAGE, "unknown or incomplete option '%s' (see --help)", argv[i]);
			return fail(&err);
		}
	}
	if (!uds || i >= argc) {
		usage(stderr);
		return CV_EXIT_USAGE;
	}
	const char *req = argv[i];
	int fd = agent_connect_hybrid_vsock(uds, (unsigned)port, (int)timeout_s * 1000, &err);
	if (fd < 0)
		return fail(&err);
	int rc, status = 0;
	if (strcmp(req, "ping") == 0) {
		rc = do_ping(fd, &err);
	} else if (strcmp(req, "info") == 0) {
		rc = agent_send_info_request(fd, NULL, &err);
		if (rc == 0)
			rc = print_reply(fd, &err);
	} else if (strcmp(req, "freeze") == 0 || strcmp(req, "thaw") == 0) {
		char **paths = i + 1 < argc ? argv + i + 1 : NULL;
		rc = req[0] == 'f' ? agent_send_freeze(fd, paths, NULL, &err)
				   : agent_send_thaw(fd, paths, NULL, &err);
		if (rc == 0)
			rc = print_reply(fd, &err);
		/* A freeze lasts as long as the connection that made it: hold it until stdin ends. */
		if (rc == 0 && req[0] == 'f') {
			char buf[256];
			while (read(0, buf, sizeof(buf)) > 0)
				;
		}
	} else if (strcmp(req, "shutdown") == 0) {
		bool reboot = i + 1 < argc && strcmp(argv[i + 1], "--reboot") == 0;
		rc = agent_send_shutdown(fd, reboot ? AGENT_SHUTDOWN_REBOOT : AGENT_SHUTDOWN_POWEROFF,
					 NULL, &err);
	} else if (strcmp(req, "exec") == 0) {
		rc = do_exec(fd, argc - i, argv + i, &status, &err);
	} else {
		rc = cv_fail(&err, CV_EXIT_USAGE, "unknown request '%s' (see --help)", req);
	}
	close(fd);
	if (rc < 0)
		return fail(&err);
	return status;
}
