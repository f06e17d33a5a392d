/*
 * Exec sessions of cvisor-agent (session.h). The connection process forks the command, then runs
 * one poll() loop over the client socket, the command's stdout/stderr pipes, its stdin pipe and
 * a pidfd that becomes readable when it exits. Output is forwarded as it arrives; stdin from the
 * client is buffered (bounded) so a command that does not read cannot stall signal delivery.
 *
 * With "tty" the pipes are replaced by one pseudo-terminal: the command gets the slave side as
 * stdin, stdout, stderr and controlling terminal; the agent reads and writes the master through
 * two duplicates of it (so output and input close independently) and keeps the original for
 * resize and for finding the terminal's foreground process group.
 */
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/* Stop reading the client once this much stdin is waiting for the command to consume it. */
#define STDIN_BUFFER_LIMIT (4u << 20)
#define OUTPUT_CHUNK 65536
/*
 * After the command exits its pipes normally reach EOF at once. A background process that
 * inherited them keeps them open, so draining stops after this much silence or this long overall.
 */
#define DRAIN_IDLE_MS 100
#define DRAIN_MAX_MS 5000

extern char **environ;

struct session {
	int conn;
	pid_t pid;
	int pidfd;            /* -1 if the kernel has no pidfd_open: then we poll with a timeout */
	int out_fd;           /* read ends of the command's stdout/stderr; -1 once closed */
	int err_fd;
	int in_fd;            /* write end of its stdin; -1 if not requested or closed */
	int pty;              /* tty sessions: the pseudo-terminal master; -1 otherwise */
	bool in_eof;          /* the client sent the zero-length STDIN frame */
	uint8_t *in_buf;
	size_t in_len;
	bool exited;
	int status;
	struct timespec exit_time;
	struct agent_reader rd;
	uint8_t *chunk;
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int64_t ms_since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

static int wait_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 255;
}

/* In the forked child: become the command or exit 126/127 with a message on its stderr. */
static _Noreturn void child_exec(const struct session_opts *opts, const struct agent_request *req,
				 int in_fd, int out_fd, int err_fd)
{
	/* Own session and process group, so signals and a disconnect reach all its children. */
	setsid();
	/* A session leader without a terminal adopts this one: job control and ^C then work. */
	if (req->tty && ioctl(in_fd, TIOCSCTTY, 0) < 0) {
		dprintf(err_fd, "cvisor-agent: make the terminal controlling: %s\r\n", strerror(errno));
		_exit(CV_EXIT_CANNOT_EXEC);
	}
	/*
	 * Ignored dispositions survive exec: ours (SIGPIPE, SIGCHLD) and any the agent inherited,
	 * such as SIGINT/SIGQUIT when a shell started it in the background. The command must see
	 * the defaults or forwarded signals would do nothing.
	 */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		_exit(CV_EXIT_CANNOT_EXEC);
	/* Everything of ours is close-on-exec; this also covers descriptors a library leaked. */
	syscall(SYS_close_range, 3u, ~0u, 0u);
	if (opts->root && chroot(opts->root) < 0) {
		dprintf(2, "cvisor-agent: chroot '%s': %s\n", opts->root, strerror(errno));
		_exit(CV_EXIT_CANNOT_EXEC);
	}
	const char *cwd = req->cwd ? req->cwd : "/";
	if (chdir(cwd) < 0) {
		dprintf(2, "cvisor-agent: cannot change to directory '%s': %s\n", cwd, strerror(errno));
		_exit(CV_EXIT_CANNOT_EXEC);
	}
	/* Set before execvp so PATH lookup uses the command's own PATH, as a shell would. */
	if (req->env)
		environ = req->env;
	execvp(req->argv[0], req->argv);
	int e = errno;
	dprintf(2, "cvisor-agent: %s: %s\n", req->argv[0], strerror(e));
	_exit(e == ENOENT ? CV_EXIT_NOT_FOUND : CV_EXIT_CANNOT_EXEC);
}

/*
 * Opens a pseudo-terminal pair of the requested size. The slave is opened through the master
 * (TIOCGPTPEER) where the kernel has it, so no /dev/pts path lookup can reach a different devpts
 * instance; ptsname is the fallback for kernels before 4.13.
 */
static int open_pty(const struct agent_request *req, int *master_out, int *slave_out,
		    struct cv_error *err)
{
	int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "exec: open a pseudo-terminal");
	if (grantpt(master) < 0 || unlockpt(master) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "exec: unlock the pseudo-terminal");
		close(master);
		return -1;
	}
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif
	int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0) {
		char name[128];
		if (ptsname_r(master, name, sizeof(name)) == 0)
			slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	}
	if (slave < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "exec: open the pseudo-terminal's slave side");
		close(master);
		return -1;
	}
	struct winsize ws = { .ws_row = (unsigned short)req->rows, .ws_col = (unsigned short)req->cols };
	if (ioctl(master, TIOCSWINSZ, &ws) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "exec: set the terminal size");
		close(master);
		close(slave);
		return -1;
	}
	*master_out = master;
	*slave_out = slave;
	return 0;
}

static int spawn_tty(struct session *s, const struct session_opts *opts,
		     const struct agent_request *req, struct cv_error *err)
{
	int master = -1, slave = -1;
	if (open_pty(req, &master, &slave, err) < 0)
		return -1;
	int out = fcntl(master, F_DUPFD_CLOEXEC, 3);
	int in = req->stdin_open ? fcntl(master, F_DUPFD_CLOEXEC, 3) : -1;
	if (out < 0 || (req->stdin_open && in < 0)) {
		cv_fail_errno(err, CV_EXIT_OSERR, "exec: dup");
		goto fail;
	}
	pid_t pid = fork();
	if (pid < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "exec: fork");
		goto fail;
	}
	if (pid == 0)
		child_exec(opts, req, slave, slave, slave);
	/* Only the command may hold the slave: its last close is how the output reaches EOF. */
	close(slave);
	s->pid = pid;
	s->pty = master;
	s->out_fd = out;
	s->in_fd = in;
	/* The duplicates share one open file description, so this sets both. */
	fcntl(out, F_SETFL, O_NONBLOCK);
	s->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	return 0;
fail:
	close_fd(&out);
	close_fd(&in);
	close(master);
	close(slave);
	return -1;
}

static int spawn(struct session *s, const struct session_opts *opts,
		 const struct agent_request *req, struct cv_error *err)
{
	if (req->tty)
		return spawn_tty(s, opts, req, err);
	int out[2] = { -1, -1 }, errp[2] = { -1, -1 }, in[2] = { -1, -1 };
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "exec: pipe");
		goto fail;
	}
	if (req->stdin_open) {
		if (pipe2(in, O_CLOEXEC) < 0) {
			cv_fail_errno(err, CV_EXIT_OSERR, "exec: pipe");
			goto fail;
		}
	} else {
		/* Opened here, before any chroot, so a root without /dev still gets an empty stdin. */
		in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (in[0] < 0) {
			cv_fail_errno(err, CV_EXIT_OSERR, "exec: open /dev/null");
			goto fail;
		}
	}
	pid_t pid = fork();
	if (pid < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "exec: fork");
		goto fail;
	}
	if (pid == 0)
		child_exec(opts, req, in[0], out[1], errp[1]);
	close(out[1]);
	close(errp[1]);
	close(in[0]);
	s->pid = pid;
	s->out_fd = out[0];
	s->err_fd = errp[0];
	s->in_fd = in[1];
	fcntl(s->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(s->err_fd, F_SETFL, O_NONBLOCK);
	if (s->in_fd >= 0)
		fcntl(s->in_fd, F_SETFL, O_NONBLOCK);
	s->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		close_fd(&out[i]);
		close_fd(&errp[i]);
		close_fd(&in[i]);
	}
	return -1;
}

static void reap(struct session *s, bool block)
{
	if (s->exited)
		return;
	int st;
	pid_t r;
	do
		r = waitpid(s->pid, &st, block ? 0 : WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == s->pid) {
		s->exited = true;
		s->status = wait_status(st);
		clock_gettime(CLOCK_MONOTONIC, &s->exit_time);
		close_fd(&s->pidfd);
	} else if (r < 0) {
		/* ECHILD: someone else reaped it (should not happen); report it as lost. */
		s->exited = true;
		s->status = 255;
		clock_gettime(CLOCK_MONOTONIC, &s->exit_time);
		close_fd(&s->pidfd);
	}
}

/* The client is gone or broke the protocol: nobody is left to see the output. */
static void abandon(struct session *s)
{
	if (!s->exited) {
		/* A shell with job control moves jobs into groups of their own; take those too. */
		pid_t fg = s->pty >= 0 ? tcgetpgrp(s->pty) : -1;
		if (fg > 0 && fg != s->pid)
			kill(-fg, SIGKILL);
		kill(-s->pid, SIGKILL);
	}
	reap(s, true);
}

/* Forwards one chunk of a pipe; returns -1 only if the client cannot be written to. */
static int forward_output(struct session *s, int *fd, uint8_t type, struct cv_error *err)
{
	ssize_t n = read(*fd, s->chunk, OUTPUT_CHUNK);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		close_fd(fd);
		return 0;
	}
	if (n == 0) {
		close_fd(fd);
		return 0;
	}
	return agent_send_frame(s->conn, type, s->chunk, (size_t)n, err);
}

static int queue_stdin(struct session *s, const struct agent_frame *f, struct cv_error *err)
{
	if (s->in_eof)
		return 0;
	if (f->len == 0) {
		s->in_eof = true;
		return 0;
	}
	if (s->in_fd < 0)
		return 0; /* not requested, or the command closed its stdin: data has no reader */
	uint8_t *n = realloc(s->in_buf, s->in_len + f->len);
	if (!n)
		return cv_fail(err, CV_EXIT_OSERR, "stdin: out of memory");
	memcpy(n + s->in_len, f->data, f->len);
	s->in_buf = n;
	s->in_len += f->len;
	return 0;
}

static void flush_stdin(struct session *s)
{
	while (s->in_fd >= 0 && s->in_len > 0) {
		ssize_t w = write(s->in_fd, s->in_buf, s->in_len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			/* EPIPE: the command closed its stdin; what is left can never be read. */
			close_fd(&s->in_fd);
			s->in_len = 0;
			return;
		}
		memmove(s->in_buf, s->in_buf + w, s->in_len - (size_t)w);
		s->in_len -= (size_t)w;
	}
	if (s->in_eof && s->in_len == 0)
		close_fd(&s->in_fd);
}

/* Where a signal request goes: the terminal's foreground group (as its ^C would), else ours. */
static pid_t signal_target(const struct session *s)
{
	if (s->pty >= 0) {
		pid_t fg = tcgetpgrp(s->pty);
		if (fg > 0)
			return fg;
	}
	return s->pid;
}

static int handle_control(struct session *s, const struct agent_frame *f, struct cv_error *err)
{
	struct agent_request req;
	struct cv_error perr = { 0 };
	if (agent_parse_request(f->data, f->len, &req, &perr) < 0)
		return agent_send_error(s->conn, perr.msg, err);
	int rc = 0;
	if (req.op == AGENT_OP_SIGNAL) {
		/* After the reap the group id may be recycled, so late signals are dropped. */
		if (!s->exited && kill(-signal_target(s), req.signal) < 0 && errno != ESRCH)
			rc = agent_send_error(s->conn, "signal: not permitted", err);
	} else if (req.op == AGENT_OP_RESIZE) {
		/* The kernel sends SIGWINCH to the terminal's foreground group itself. */
		struct winsize ws = { .ws_row = (unsigned short)req.rows,
				      .ws_col = (unsigned short)req.cols };
		if (s->pty < 0) {
			rc = agent_send_error(s->conn, "resize: the command has no terminal (exec without \"tty\")",
					      err);
		} else if (ioctl(s->pty, TIOCSWINSZ, &ws) < 0) {
			char msg[128];
			snprintf(msg, sizeof(msg), "resize: %s", strerror(errno));
			rc = agent_send_error(s->conn, msg, err);
		}
	} else {
		rc = agent_send_error(s->conn,
				      "a command is already running on this connection (only 'signal' and 'resize' are accepted)",
				      err);
	}
	agent_request_free(&req);
	return rc;
}

/* Reads from the client and acts on every whole frame. Returns -1 when the session must end. */
static int handle_client(struct session *s, struct cv_error *err)
{
	ssize_t n = agent_reader_fill(&s->rd, s->conn, err);
	if (n < 0)
		return -1;
	if (n == 0)
		return cv_fail(err, CV_EXIT_IOERR, "client disconnected before the command exited");
	for (;;) {
		struct agent_frame f;
		int r = agent_reader_next(&s->rd, &f, err);
		if (r < 0) {
			struct cv_error ignored;
			agent_send_error(s->conn, err->msg, &ignored);
			return -1;
		}
		if (r == 0)
			return 0;
		int rc = 0;
		if (f.type == AGENT_FRAME_STDIN)
			rc = queue_stdin(s, &f, err);
		else if (f.type == AGENT_FRAME_CONTROL)
			rc = handle_control(s, &f, err);
		/* STDOUT/STDERR frames from a client mean nothing; they are dropped. */
		agent_frame_free(&f);
		if (rc < 0)
			return -1;
	}
}

static int loop(struct session *s, struct cv_error *err)
{
	for (;;) {
		if (s->exited && s->out_fd < 0 && s->err_fd < 0)
			return 0;
		if (s->exited && ms_since(&s->exit_time) >= DRAIN_MAX_MS) {
			/* A background process is still writing: the command itself is done. */
			close_fd(&s->out_fd);
			close_fd(&s->err_fd);
			continue;
		}
		flush_stdin(s);
		/* Slot names avoid P_PID and friends, which <sys/wait.h> defines. */
		enum { SLOT_CONN, SLOT_OUT, SLOT_ERR, SLOT_IN, SLOT_PID, SLOT_N };
		struct pollfd p[SLOT_N];
		p[SLOT_CONN] = (struct pollfd){ .fd = s->conn,
						.events = s->in_len < STDIN_BUFFER_LIMIT ? POLLIN : 0 };
		p[SLOT_OUT] = (struct pollfd){ .fd = s->out_fd, .events = POLLIN };
		p[SLOT_ERR] = (struct pollfd){ .fd = s->err_fd, .events = POLLIN };
		p[SLOT_IN] = (struct pollfd){ .fd = s->in_len ? s->in_fd : -1, .events = POLLOUT };
		p[SLOT_PID] = (struct pollfd){ .fd = s->exited ? -1 : s->pidfd, .events = POLLIN };
		int timeout = -1;
		if (s->exited) {
			int64_t left = DRAIN_MAX_MS - ms_since(&s->exit_time);
			timeout = (int)CV_MAX(0, CV_MIN(left, DRAIN_IDLE_MS));
		} else if (s->pidfd < 0) {
			timeout = 50;
		}
		int r = poll(p, SLOT_N, timeout);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return cv_fail_errno(err, CV_EXIT_OSERR, "poll");
		}
		if (r == 0 && s->exited) {
			/* Quiet or out of time: whoever still holds the pipes keeps them. */
			close_fd(&s->out_fd);
			close_fd(&s->err_fd);
			continue;
		}
		if (!s->exited && (s->pidfd < 0 || p[SLOT_PID].revents))
			reap(s, false);
		if (p[SLOT_OUT].revents && forward_output(s, &s->out_fd, AGENT_FRAME_STDOUT, err) < 0)
			return -1;
		if (p[SLOT_ERR].revents && forward_output(s, &s->err_fd, AGENT_FRAME_STDERR, err) < 0)
			return -1;
		if (p[SLOT_CONN].revents && handle_client(s, err) < 0)
			return -1;
	}
}

int session_run(const struct session_opts *opts, int conn, const struct agent_request *req,
		struct cv_error *err)
{
	struct session s = { .conn = conn, .pidfd = -1, .out_fd = -1, .err_fd = -1, .in_fd = -1,
			     .pty = -1 };
	agent_reader_init(&s.rd);
	s.chunk = malloc(OUTPUT_CHUNK);
	if (!s.chunk)
		return cv_fail(err, CV_EXIT_OSERR, "exec: out of memory");
	int rc = -1;
	if (spawn(&s, opts, req, err) < 0) {
		struct cv_error ignored;
		agent_send_error(conn, err->msg, &ignored);
		goto out;
	}
	if (agent_send_started(conn, s.pid, err) < 0 || loop(&s, err) < 0) {
		abandon(&s);
		goto out;
	}
	reap(&s, true);
	rc = agent_send_exit(conn, s.status, err);
out:
	close_fd(&s.out_fd);
	close_fd(&s.err_fd);
	close_fd(&s.in_fd);
	/* Last: if a background process still holds the terminal, this hangs it up (SIGHUP). */
	close_fd(&s.pty);
	close_fd(&s.pidfd);
	free(s.in_buf);
	free(s.chunk);
	agent_reader_free(&s.rd);
	return rc;
}
