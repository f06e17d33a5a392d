/*
 * `cvisor run` through the guest agent (the default): the VM boots with a vsock device whose host
 * side is a Unix socket in a private directory and a request that makes cvisor-init serve
 * cvisor-agent on AGENT_PORT; we connect as soon as the agent listens, run the command through
 * the shared relay (binary-safe stdout and stderr, stdin, signals, a terminal with -i on one),
 * then ask the agent to power the guest off cleanly so that disks are synced and unmounted.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "proto.h"
#include "run.h"
#include "util.h"

#define AGENT_PORT 1024
#define AGENT_PORT_TEXT "1024"
/* From VMM start to a listening agent; a real host needs well under a second. */
#define AGENT_CONNECT_TIMEOUT_MS 120000
/* From the connection to the command's "started" event. */
#define AGENT_START_TIMEOUT_MS 30000
/* A guest that does not power off this long after it was asked is killed. */
#define SHUTDOWN_TIMEOUT_MS 20000
/* Asking the agent to power off: the guest is up, so it answers at once or never. */
#define POWEROFF_ASK_TIMEOUT_MS 5000
#define TMPFS_MAGIC_NUMBER 0x01021994

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/*
 * A private directory for the vsock socket. Unix sockets need a local file system: the
 * emulated host's 9p-shared /tmp cannot hold them, so a tmpfs is preferred.
 */
static int make_socket_dir(char *out, size_t len, struct cv_error *err)
{
	const char *candidates[] = { getenv("XDG_RUNTIME_DIR"), "/dev/shm", "/run", "/tmp" };
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		const char *base = candidates[i];
		struct statfs fs;
		if (!base || !*base || access(base, W_OK) != 0)
			continue;
		bool last = i == sizeof(candidates) / sizeof(candidates[0]) - 1;
		if (!last && (statfs(base, &fs) != 0 || fs.f_type != TMPFS_MAGIC_NUMBER))
			continue;
		if (cv_format(out, len, err, "%s/cvisor-run-XXXXXX", base) < 0)
			return -1;
		if (mkdtemp(out))
			return 0;
	}
	return cv_fail_errno(err, CV_EXIT_OSERR, "create a directory for the guest's vsock socket");
}

/* Connects to the guest agent as soon as it listens; gives up when the VM ends or on timeout. */
static int connect_agent(struct run_vm *vm, const char *uds, struct cv_error *err)
{
	int64_t deadline = now_ms() + AGENT_CONNECT_TIMEOUT_MS;
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	for (;;) {
		struct cv_error e = { 0 };
		int64_t left = deadline - now_ms();
		int fd = agent_connect_hybrid_vsock(uds, AGENT_PORT, left > 1000 ? (int)left : 1000, &e);
		if (fd >= 0)
			return fd;
		if (errno != ECONNREFUSED) {
			*err = e;
			return -1;
		}
		if (run_vm_exited(vm))
			return 1;
		if (now_ms() > deadline)
			return cv_fail(err, CV_EXIT_UNAVAILABLE,
				       "the guest agent did not answer on vsock port %d within %d s",
				       AGENT_PORT, AGENT_CONNECT_TIMEOUT_MS / 1000);
		nanosleep(&pause, NULL);
	}
}

/* True if the VM ends within ms (it is not stopped otherwise). */
static bool exits_within(struct run_vm *vm, int ms)
{
	struct timespec tick = { 0, 5 * 1000 * 1000 };
	for (int waited = 0; waited < ms; waited += 5) {
		if (run_vm_exited(vm))
			return true;
		nanosleep(&tick, NULL);
	}
	return run_vm_exited(vm);
}

/* Asks the agent to power the guest off; false if it could not even be asked. */
static bool ask_poweroff(const char *uds)
{
	struct cv_error e = { 0 };
	int fd = agent_connect_hybrid_vsock(uds, AGENT_PORT, POWEROFF_ASK_TIMEOUT_MS, &e);
	if (fd < 0)
		return false;
	bool ok = agent_send_shutdown(fd, AGENT_SHUTDOWN_POWEROFF, NULL, &e) == 0;
	close(fd);
	return ok;
}

int run_with_agent(const struct run_options *o, struct cv_error *err)
{
	bool tty = o->tty == 1 || (o->tty < 0 && o->interactive && isatty(0) && isatty(1));
	if (tty && !isatty(0))
		return cv_fail(err, CV_EXIT_USAGE, "--tty: stdin is not a terminal");
	char token[17], dir[PATH_MAX], uds[PATH_MAX] = "";
	if (run_random_token(token, err) < 0 || make_socket_dir(dir, sizeof(dir), err) < 0)
		return -1;
	int rc = -1;
	struct run_vm vm = { .pid = -1, .console_fd = -1 };
	const char *term = getenv("TERM");
	struct run_request rq = {
		.token = token,
		.agent_port = AGENT_PORT_TEXT,
		.term = tty ? (term && *term ? term : "xterm") : NULL,
	};
	if (cv_format(uds, sizeof(uds), err, "%s/vsock.sock", dir) < 0 ||
	    run_vm_start(&vm, o, &rq, uds, err) < 0 || run_vm_drain_console(&vm, err) < 0)
		goto out;

	int64_t t0 = now_ms();
	int conn = connect_agent(&vm, uds, err);
	if (o->verbose && conn >= 0 && conn != 1)
		fprintf(stderr, "cvisor: guest agent connected %lld ms after the VMM started\n",
			(long long)(now_ms() - t0));
	if (conn == 1) {
		run_vm_wait(&vm, -1);
		rc = run_vm_failed(&vm, err);
		goto out;
	}
	if (conn < 0)
		goto out;
	struct agent_exec_spec spec = {
		.argv = o->command,
		.cwd = o->workdir ? o->workdir : "/",
	};
	struct agent_relay_opts opts = {
		.tty = tty,
		.forward_stdin = o->interactive,
		.start_timeout_ms = AGENT_START_TIMEOUT_MS,
		.peer = "guest",
	};
	int status;
	int r = agent_exec_relay(conn, &spec, NULL, &opts, &status, err);
	close(conn);
	if (r < 0) {
		/* A VM that died under the command explains itself better than a lost connection. */
		if (exits_within(&vm, 2000)) {
			run_vm_wait(&vm, -1);
			rc = run_vm_failed(&vm, err);
		}
		goto out;
	}
	int64_t t1 = now_ms();
	if (!ask_poweroff(uds))
		fprintf(stderr, "cvisor: could not ask the guest to power off; stopping it\n");
	run_vm_wait(&vm, SHUTDOWN_TIMEOUT_MS);
	if (o->verbose)
		fprintf(stderr, "cvisor: command done %lld ms after the VMM started; guest off %lld ms later\n",
			(long long)(t1 - t0), (long long)(now_ms() - t1));
	if (vm.status != 0)
		fprintf(stderr, "cvisor: the VM did not power off cleanly (cvisor-vmm exit status %d)\n",
			vm.status);
	rc = status;
out:
	if (vm.pid > 0)
		run_vm_wait(&vm, ask_poweroff(uds) ? SHUTDOWN_TIMEOUT_MS : 0);
	else if (vm.console_fd >= 0 || vm.console_thread_started)
		run_vm_wait(&vm, 0);
	if (uds[0])
		unlink(uds);
	rmdir(dir);
	return rc;
}
