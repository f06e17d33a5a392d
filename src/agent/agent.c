/*
 * cvisor-agent: runs commands on behalf of a remote cvisor over the agent protocol (proto.h),
 * and answers questions about and for the machine it runs on: state (info), filesystem freeze
 * for snapshots, shutdown. The emulated host starts it from its init; in microVM guests
 * cvisor-init starts it and the host reaches it over vsock. One process listens and forks a
 * handler per connection, so any number of commands run at once and a misbehaving client can
 * only take down its own handler.
 *
 * usage: cvisor-agent --listen tcp:PORT|tcp:ADDR:PORT|unix:PATH|vsock:PORT [--root DIR]
 *                     [--token-file FILE] [--allow-poweroff] [--hold-kvm] [--quiet]
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fsfreeze.h"
#include "kvm_hold.h"
#include "listen.h"
#include "power.h"
#include "proto.h"
#include "session.h"
#include "sysinfo.h"
#include "util.h"

/* Everything the agent was told on its command line; read-only once parsed. */
struct agent_ctx {
	struct listen_spec listen;
	const char *root;
	char *token;            /* from --token-file; NULL: no authentication */
	bool allow_poweroff;
	bool hold_kvm;
	bool quiet;             /* no startup or shutdown lines: on a guest console only errors show */
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cvisor-agent --listen ADDRESS [--root DIR] [--token-file FILE] [--allow-poweroff]\n"
		"                    [--hold-kvm] [--quiet]\n"
		"\n"
		"Serves the cvisor agent protocol (docs/agent-protocol.md).\n"
		"  --listen ADDRESS    tcp:PORT, tcp:ADDR:PORT, unix:PATH or vsock:PORT\n"
		"  --root DIR          run commands chrooted to DIR\n"
		"  --token-file FILE   require every connection's first request to carry this token\n"
		"  --allow-poweroff    honour 'shutdown' and 'poweroff' (only where the agent owns the machine)\n"
		"  --hold-kvm          keep an idle KVM VM open (the emulated host: see kvm_hold.h)\n"
		"  --quiet             print errors only\n");
}

static int load_token(const char *path, char **out, struct cv_error *err)
{
	struct cv_buf buf;
	if (cv_read_file(path, 4096, &buf, err) < 0)
		return cv_error_wrap(err, "token file");
	char *s = (char *)buf.data;
	size_t n = buf.len;
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
		s[--n] = 0;
	if (n == 0 || strlen(s) != n) {
		cv_buf_free(&buf);
		return cv_fail(err, CV_EXIT_DATAERR, "token file '%s' is empty or contains NUL bytes",
			       path);
	}
	*out = s;
	return 0;
}

static int parse_args(int argc, char **argv, struct agent_ctx *ctx, struct cv_error *err)
{
	bool have_listen = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		} else if (strcmp(a, "--version") == 0) {
			printf("cvisor-agent %s\n", CVISOR_VERSION);
			exit(0);
		} else if (strcmp(a, "--allow-poweroff") == 0) {
			ctx->allow_poweroff = true;
		} else if (strcmp(a, "--hold-kvm") == 0) {
			ctx->hold_kvm = true;
		} else if (strcmp(a, "--quiet") == 0) {
			ctx->quiet = true;
		} else if (strcmp(a, "--listen") == 0 && has_value) {
			if (listen_parse(argv[++i], &ctx->listen, err) < 0)
				return -1;
			have_listen = true;
		} else if (strcmp(a, "--root") == 0 && has_value) {
			ctx->root = argv[++i];
		} else if (strcmp(a, "--token-file") == 0 && has_value) {
			if (load_token(argv[++i], &ctx->token, err) < 0)
				return -1;
		} else if (a[0] == '-' && (strcmp(a, "--listen") == 0 || strcmp(a, "--root") == 0 ||
					   strcmp(a, "--token-file") == 0)) {
			return cv_fail(err, CV_EXIT_USAGE, "option '%s' needs a value", a);
		} else {
			return cv_fail(err, CV_EXIT_USAGE, "unknown argument '%s' (see --help)", a);
		}
	}
	if (!have_listen)
		return cv_fail(err, CV_EXIT_USAGE, "--listen is required (see --help)");
	return 0;
}

/* Compares in time independent of where the strings differ, so the token cannot be guessed bytewise. */
static bool token_matches(const char *want, const char *got)
{
	if (!got)
		return false;
	size_t wl = strlen(want), gl = strlen(got);
	unsigned char diff = wl != gl;
	for (size_t i = 0; i < wl; i++)
		diff |= (unsigned char)(want[i] ^ (i < gl ? got[i] : 0));
	return diff == 0;
}

static void log_error(const struct cv_error *err)
{
	fprintf(stderr, "cvisor-agent: %s\n", err->msg);
}

/* On acceptance there is no answer: the connection ends with the machine. */
static int shutdown_machine(const struct agent_ctx *ctx, int conn, const struct agent_request *req,
			    struct cv_error *err)
{
	const char *op = req->op == AGENT_OP_POWEROFF ? "poweroff" : "shutdown";
	if (!ctx->allow_poweroff) {
		char msg[128];
		snprintf(msg, sizeof(msg), "%s is not enabled on this agent (--allow-poweroff)", op);
		return agent_send_error(conn, msg, err);
	}
	struct cv_error perr = { 0 };
	power_shutdown(req->action, ctx->quiet, &perr);
	log_error(&perr);
	return agent_send_error(conn, perr.msg, err);
}

static int send_info(int conn, struct cv_error *err)
{
	struct agent_info info;
	struct cv_error ierr = { 0 };
	int rc = 0;
	if (sysinfo_collect(&info, &ierr) < 0) {
		rc = agent_send_error(conn, ierr.msg, err);
	} else if (agent_send_info_event(conn, &info, err) < 0) {
		/* A failed write ends the connection; anything else (too large) is worth an answer. */
		rc = err->code == CV_EXIT_IOERR ? -1 : agent_send_error(conn, err->msg, err);
	}
	agent_info_free(&info);
	return rc;
}

static int freeze_or_thaw(int conn, const struct agent_request *req, struct freeze_hold *hold,
			  struct cv_error *err)
{
	struct agent_fs_result res;
	struct cv_error ferr = { 0 };
	bool thaw = req->op == AGENT_OP_THAW;
	int rc = thaw ? fs_thaw(req->paths, hold, &res, &ferr) : fs_freeze(req->paths, hold, &res, &ferr);
	if (rc < 0)
		rc = agent_send_error(conn, ferr.msg, err);
	else
		rc = agent_send_fs_result(conn, &res, err);
	agent_fs_result_free(&res);
	return rc;
}

/*
 * Runs in the per-connection child: control requests until an exec, which ends the connection.
 * Returns when the connection is over; filesystems it froze are still in *hold.
 */
static void serve(const struct agent_ctx *ctx, int conn, struct freeze_hold *hold)
{
	bool authed = ctx->token == NULL;
	for (;;) {
		struct cv_error err = { 0 };
		struct agent_frame f;
		int r = agent_recv_frame(conn, &f, &err);
		if (r < 0) {
			struct cv_error ignored;
			agent_send_error(conn, err.msg, &ignored);
			log_error(&err);
			return;
		}
		if (r == 0)
			return;
		if (f.type != AGENT_FRAME_CONTROL) {
			/* Stray STDIN before any exec: nothing can consume it. */
			agent_frame_free(&f);
			if (agent_send_error(conn, "expected a control frame: no command is running",
					     &err) < 0)
				return;
			continue;
		}
		struct agent_request req;
		int pr = agent_parse_request(f.data, f.len, &req, &err);
		agent_frame_free(&f);
		if (pr < 0) {
			if (agent_send_error(conn, err.msg, &err) < 0)
				return;
			continue;
		}
		if (!authed) {
			if (!token_matches(ctx->token, req.token)) {
				agent_send_error(conn, "authentication failed: missing or wrong token", &err);
				agent_request_free(&req);
				return;
			}
			authed = true;
		}
		int rc = 0;
		switch (req.op) {
		case AGENT_OP_PING:
			rc = agent_send_pong(conn, CVISOR_VERSION, &err);
			break;
		case AGENT_OP_POWEROFF:
		case AGENT_OP_SHUTDOWN:
			rc = shutdown_machine(ctx, conn, &req, &err);
			break;
		case AGENT_OP_INFO:
			rc = send_info(conn, &err);
			break;
		case AGENT_OP_FREEZE:
		case AGENT_OP_THAW:
			rc = freeze_or_thaw(conn, &req, hold, &err);
			break;
		case AGENT_OP_SIGNAL:
			rc = agent_send_error(conn, "signal: no command is running on this connection",
					      &err);
			break;
		case AGENT_OP_RESIZE:
			rc = agent_send_error(conn, "resize: no command is running on this connection",
					      &err);
			break;
		case AGENT_OP_EXEC: {
			struct session_opts opts = { .root = ctx->root };
			if (session_run(&opts, conn, &req, &err) < 0)
				log_error(&err);
			agent_request_free(&req);
			return;
		}
		}
		agent_request_free(&req);
		if (rc < 0)
			return;
	}
}

/* Commands get fds 0-2 by dup2 from pipes; make sure no pipe can itself land on 0-2. */
static void ensure_stdio(void)
{
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
			return;
}

int main(int argc, char **argv)
{
	struct agent_ctx ctx = { 0 };
	struct cv_error err = { 0 };
	ensure_stdio();
	if (parse_args(argc, argv, &ctx, &err) < 0) {
		log_error(&err);
		return err.code ? err.code : CV_EXIT_USAGE;
	}
	/* A vanished client surfaces as EPIPE on write; handlers are reaped by the kernel. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN);
	/* Not fatal: without the held VM the host only risks the rare hang kvm_hold.h describes. */
	if (ctx.hold_kvm && kvm_hold_open(&err) < 0)
		log_error(&err);
	int lfd = listen_open(&ctx.listen, &err);
	if (lfd < 0) {
		log_error(&err);
		return err.code;
	}
	char desc[160];
	listen_describe(&ctx.listen, desc, sizeof(desc));
	if (!ctx.quiet)
		fprintf(stderr, "cvisor-agent %s: listening on %s%s%s\n", CVISOR_VERSION, desc,
			ctx.root ? ", commands run in " : "", ctx.root ? ctx.root : "");
	for (;;) {
		int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
				perror("cvisor-agent: accept");
				sleep(1);
			}
			continue;
		}
		if (ctx.listen.kind == LISTEN_TCP) {
			/* Frames are small and interactive; do not let Nagle hold them back. */
			int one = 1;
			setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("cvisor-agent: fork");
			close(conn);
			continue;
		}
		if (pid == 0) {
			close(lfd);
			/* The handler waits for its command, so it needs its children back. */
			signal(SIGCHLD, SIG_DFL);
			struct freeze_hold hold;
			freeze_hold_init(&hold);
			serve(&ctx, conn, &hold);
			close(conn);
			/* A client gone between freeze and thaw must not leave the disks blocked. */
			freeze_hold_release(&hold);
			_exit(0);
		}
		close(conn);
	}
}
