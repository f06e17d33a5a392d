/*
 * The cvisor-vmm process behind `cvisor run` (see run.h): the run request archive it loads as
 * the last initrd, its command line, its process and its serial console.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cpio.h"
#include "guest_files.h"
#include "request.h"
#include "run.h"
#include "util.h"

#define RUN_CMDLINE "console=ttyS0 panic=-1"

int run_random_token(char out[17], struct cv_error *err)
{
	uint8_t raw[8];
	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
		return cv_fail_errno(err, CV_EXIT_OSERR, "getrandom");
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

/* Appends one "key=value\0" record of the run request. */
static int add_record(char **buf, size_t *len, size_t *cap, const char *key, const char *value,
		      struct cv_error *err)
{
	size_t need = strlen(key) + 1 + strlen(value) + 1;
	if (*len + need > RUN_REQUEST_MAX)
		return cv_fail(err, CV_EXIT_USAGE, "command and environment exceed %d bytes",
			       RUN_REQUEST_MAX);
	if (*len + need > *cap) {
		size_t ncap = (*cap ? *cap * 2 : 4096) + need;
		char *n = realloc(*buf, ncap);
		if (!n)
			return cv_fail(err, CV_EXIT_OSERR, "out of memory");
		*buf = n;
		*cap = ncap;
	}
	*len += (size_t)sprintf(*buf + *len, "%s=%s", key, value) + 1;
	return 0;
}

static bool env_given(const struct run_options *o, const char *name)
{
	size_t n = strlen(name);
	for (int i = 0; i < o->n_env; i++)
		if (strncmp(o->env[i], name, n) == 0 && o->env[i][n] == '=')
			return true;
	return false;
}

/*
 * Writes the request cpio into an anonymous memory file the VMM reads as an initrd. In agent
 * mode the command is not in it (it travels over vsock) but the environment is: it becomes the
 * agent's, which the command inherits.
 */
static int make_request_fd(const struct run_options *o, const struct run_request *rq,
			   struct cv_error *err)
{
	char *req = NULL;
	size_t len = 0, cap = 0;
	int rc = add_record(&req, &len, &cap, "token", rq->token, err);
	if (rc == 0 && rq->agent_port)
		rc = add_record(&req, &len, &cap, "agent", rq->agent_port, err);
	for (char **a = o->command; rc == 0 && !rq->agent_port && *a; a++)
		rc = add_record(&req, &len, &cap, "arg", *a, err);
	for (int i = 0; rc == 0 && i < o->n_env; i++)
		rc = add_record(&req, &len, &cap, "env", o->env[i], err);
	if (rc == 0 && rq->term && !env_given(o, "TERM")) {
		char term[256];
		if (snprintf(term, sizeof(term), "TERM=%s", rq->term) < (int)sizeof(term))
			rc = add_record(&req, &len, &cap, "env", term, err);
	}
	if (rc == 0 && o->workdir && !rq->agent_port)
		rc = add_record(&req, &len, &cap, "cwd", o->workdir, err);

	struct cpio c;
	cpio_init(&c);
	if (rc == 0)
		rc = cpio_add_dir(&c, "cvisor", 0755, err);
	if (rc == 0)
		rc = cpio_add_file(&c, RUN_REQUEST_PATH, 0600, req, len, err);
	if (rc == 0)
		rc = cpio_finish(&c, err);
	free(req);
	int fd = -1;
	if (rc == 0) {
		/* Not close-on-exec: cvisor-vmm opens it as /proc/self/fd/N. */
		fd = memfd_create("cvisor-run-request", 0);
		if (fd < 0)
			rc = cv_fail_errno(err, CV_EXIT_OSERR, "memfd_create");
		else if (cv_write_full(fd, c.data, c.len) < 0)
			rc = cv_fail_errno(err, CV_EXIT_IOERR, "write run request");
	}
	cpio_free(&c);
	if (rc < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int run_vm_start(struct run_vm *vm, const struct run_options *o, const struct run_request *rq,
		 const char *vsock_uds, struct cv_error *err)
{
	char vmm[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX], request_path[64], cmdline[2048];
	char vsock[PATH_MAX + 32];
	memset(vm, 0, sizeof(*vm));
	vm->pid = -1;
	vm->console_fd = -1;
	vm->verbose = o->verbose;
	if (guest_find_program("cvisor-vmm", vmm, sizeof(vmm), err) < 0)
		return -1;
	if (o->kernel)
		snprintf(kernel, sizeof(kernel), "%s", o->kernel);
	else if (guest_default_kernel("vmlinux", kernel, sizeof(kernel), err) < 0)
		return -1;
	if (!o->n_initrds && guest_default_initramfs(initrd, sizeof(initrd), err) < 0)
		return -1;
	if (cv_format(cmdline, sizeof(cmdline), err, "%s%s%s%s", RUN_CMDLINE,
		      o->verbose ? "" : " quiet", o->cmdline_extra ? " " : "",
		      o->cmdline_extra ? o->cmdline_extra : "") < 0)
		return -1;
	if (vsock_uds && cv_format(vsock, sizeof(vsock), err, "cid=3,uds=%s", vsock_uds) < 0)
		return -1;
	int req_fd = make_request_fd(o, rq, err);
	if (req_fd < 0)
		return -1;
	snprintf(request_path, sizeof(request_path), "/proc/self/fd/%d", req_fd);

	char *args[32 + 2 * RUN_MAX_INITRDS + RUN_MAX_DEVICE_ARGS] = {
		vmm, "--kernel", kernel, "--cmdline", cmdline, "--cpus", (char *)o->cpus,
		"--memory", (char *)o->memory, "--console", "stdio", "--rng",
	};
	int n_args = 12;
	for (int i = 0; i < o->n_initrds; i++) {
		args[n_args++] = "--initrd";
		args[n_args++] = (char *)o->initrds[i];
	}
	if (!o->n_initrds) {
		args[n_args++] = "--initrd";
		args[n_args++] = initrd;
	}
	/* The request goes last: later archives overwrite earlier ones in the guest's rootfs. */
	args[n_args++] = "--initrd";
	args[n_args++] = request_path;
	if (vsock_uds) {
		args[n_args++] = "--vsock";
		args[n_args++] = vsock;
	}
	for (int i = 0; i < o->n_device_args; i++)
		args[n_args++] = o->device_args[i];
	args[n_args] = NULL;

	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		close(req_fd);
		return cv_fail_errno(err, CV_EXIT_OSERR, "pipe");
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		close(req_fd);
		close(pipefd[0]);
		close(pipefd[1]);
		return cv_fail_errno(err, CV_EXIT_OSERR, "fork");
	}
	if (pid == 0) {
		/*
		 * Own process group: a Ctrl-C on the terminal is for the command, which we forward;
		 * and no VM outlives a `cvisor run` that was killed.
		 */
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(CV_EXIT_RUN_FAILED);
		signal(SIGINT, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		int null = open("/dev/null", O_RDONLY);
		if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(pipefd[1], STDOUT_FILENO) < 0)
			_exit(CV_EXIT_OSERR);
		execv(vmm, args);
		fprintf(stderr, "cvisor: run '%s': %s\n", vmm, strerror(errno));
		_exit(CV_EXIT_RUN_FAILED);
	}
	close(pipefd[1]);
	close(req_fd);
	vm->pid = pid;
	vm->console_fd = pipefd[0];
	return 0;
}

/* Keeps the last bytes of console output; streams them to stderr too when verbose. */
static void keep_console(struct run_vm *vm, const uint8_t *buf, size_t n)
{
	if (vm->verbose)
		cv_write_full(STDERR_FILENO, buf, n);
	size_t cap = sizeof(vm->prelude);
	if (n > cap) {
		buf += n - cap;
		n = cap;
	}
	if (vm->prelude_len + n > cap) {
		size_t drop = vm->prelude_len + n - cap;
		memmove(vm->prelude, vm->prelude + drop, vm->prelude_len - drop);
		vm->prelude_len -= drop;
	}
	memcpy(vm->prelude + vm->prelude_len, buf, n);
	vm->prelude_len += n;
}

static void *console_thread(void *arg)
{
	struct run_vm *vm = arg;
	uint8_t buf[4096];
	for (;;) {
		ssize_t n = read(vm->console_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		keep_console(vm, buf, (size_t)n);
	}
	return NULL;
}

int run_vm_drain_console(struct run_vm *vm, struct cv_error *err)
{
	/* Signals are forwarded by the main thread's signalfd: this one must never take them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(&vm->console_thread, NULL, console_thread, vm);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e) {
		errno = e;
		return cv_fail_errno(err, CV_EXIT_OSERR, "pthread_create");
	}
	vm->console_thread_started = true;
	return 0;
}

static void reaped(struct run_vm *vm, int wstatus)
{
	vm->status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
	vm->pid = -1;
}

bool run_vm_exited(struct run_vm *vm)
{
	if (vm->pid < 0)
		return true;
	int wstatus;
	if (waitpid(vm->pid, &wstatus, WNOHANG) == vm->pid) {
		reaped(vm, wstatus);
		return true;
	}
	return false;
}

void run_vm_wait(struct run_vm *vm, int timeout_ms)
{
	struct timespec tick = { 0, 5 * 1000 * 1000 };
	for (int waited = 0; vm->pid > 0 && timeout_ms >= 0 && waited < timeout_ms; waited += 5) {
		if (run_vm_exited(vm))
			break;
		nanosleep(&tick, NULL);
	}
	if (vm->pid > 0) {
		if (timeout_ms >= 0)
			kill(vm->pid, SIGKILL);
		int wstatus;
		while (waitpid(vm->pid, &wstatus, 0) < 0 && errno == EINTR)
			;
		reaped(vm, wstatus);
	}
	if (vm->console_thread_started) {
		pthread_join(vm->console_thread, NULL);
		vm->console_thread_started = false;
	}
	if (vm->console_fd >= 0) {
		close(vm->console_fd);
		vm->console_fd = -1;
	}
}

int run_vm_failed(struct run_vm *vm, struct cv_error *err)
{
	int s = vm->status;
	if (s > 128 && s < 160)
		return s;   /* stopped by a signal: report it like a shell would */
	if (s >= CV_EXIT_USAGE && s <= CV_EXIT_IOERR)
		return s;   /* setup failed; cvisor-vmm has said why in one line */
	if (vm->prelude_len && !vm->verbose) {
		fprintf(stderr, "cvisor: guest console before the failure:\n");
		cv_write_full(STDERR_FILENO, vm->prelude, vm->prelude_len);
		if (vm->prelude[vm->prelude_len - 1] != '\n')
			fputc('\n', stderr);
	}
	return cv_fail(err, CV_EXIT_RUN_FAILED,
		       "the VM ended before the command finished (cvisor-vmm exit status %d)", s);
}
