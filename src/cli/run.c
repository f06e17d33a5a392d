/*
 * `cvisor run`: boot a microVM with the default guest (or a given kernel/initrd), run one command
 * in it and exit with that command's status. The command travels to the guest as a small cpio
 * archive appended to the initramfs (guest/init/request.h); its output comes back on the serial
 * console between markers. On a host whose /dev/kvm cannot run Linux the same command is re-run
 * inside the emulated host.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "cpio.h"
#include "emuhost.h"
#include "guest_files.h"
#include "kvm_probe.h"
#include "markers.h"
#include "request.h"
#include "util.h"

#define RUN_DEFAULT_MEMORY "256"
#define RUN_MAX_ENV 256
#define RUN_MAX_DEVICE_ARGS 64
#define RUN_MAX_INITRDS 6            /* cvisor-vmm takes 8; one more carries the request */
#define RUN_CMDLINE "console=ttyS0 panic=-1"

struct run_options {
	const char *cpus;
	const char *memory;
	const char *kernel;
	const char *initrds[RUN_MAX_INITRDS];
	int n_initrds;
	const char *cmdline_extra;
	const char *workdir;
	const char *env[RUN_MAX_ENV];
	int n_env;
	char *device_args[RUN_MAX_DEVICE_ARGS];   /* passed to cvisor-vmm as given */
	int n_device_args;
	bool verbose;
	char **command;   /* NULL-terminated */
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cvisor run [options] -- COMMAND [ARG...]\n"
		"\n"
		"Boots a microVM, runs COMMAND in it, prints its output and exits with its status.\n"
		"\n"
		"  --cpus N            vCPUs (default 1)\n"
		"  --memory MiB        guest RAM (default " RUN_DEFAULT_MEMORY ")\n"
		"  --kernel PATH       guest kernel (default: cvisor's own, built by guest/kernel/build.sh)\n"
		"  --initrd PATH       initramfs whose /init is cvisor-init (default: cvisor's own);\n"
		"                      repeat to append more archives (e.g. kernel modules)\n"
		"  -e, --env K=V       set an environment variable for COMMAND (repeatable)\n"
		"  -w, --workdir DIR   working directory of COMMAND in the guest (default /)\n"
		"  --disk PATH[,ro][,serial=ID]   attach a raw disk image (repeatable)\n"
		"  --net tap=NAME[,mac=MAC]       attach a NIC on a TAP device (repeatable)\n"
		"  --balloon [SPEC]    attach a memory balloon (see cvisor-vmm --help)\n"
		"  --cmdline-extra S   append S to the kernel command line\n"
		"  -v, --verbose       show the guest kernel's console messages on stderr\n"
		"\n"
		"Exit status: COMMAND's own; 125 if the VM failed first, 126/127 if COMMAND could not\n"
		"be run or was not found. Where /dev/kvm cannot run a guest (PVM, none), the run happens\n"
		"inside cvisor's emulated host (QEMU TCG with nested AMD-V), which is slow.\n");
}

static int parse(int argc, char **argv, struct run_options *o, struct cv_error *err)
{
	enum { OPT_CPUS = 1, OPT_MEMORY, OPT_KERNEL, OPT_INITRD, OPT_EXTRA, OPT_HELP, OPT_DISK,
	       OPT_NET, OPT_BALLOON };
	static const struct option longopts[] = {
		{ "cpus", required_argument, NULL, OPT_CPUS },
		{ "memory", required_argument, NULL, OPT_MEMORY },
		{ "kernel", required_argument, NULL, OPT_KERNEL },
		{ "initrd", required_argument, NULL, OPT_INITRD },
		{ "cmdline-extra", required_argument, NULL, OPT_EXTRA },
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "net", required_argument, NULL, OPT_NET },
		{ "balloon", optional_argument, NULL, OPT_BALLOON },
		{ "env", required_argument, NULL, 'e' },
		{ "workdir", required_argument, NULL, 'w' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	memset(o, 0, sizeof(*o));
	o->cpus = "1";
	o->memory = RUN_DEFAULT_MEMORY;
	opterr = 0;
	optind = 1;
	int c;
	/* '+': stop at the first non-option so COMMAND's own options are never ours. */
	while ((c = getopt_long(argc, argv, "+e:w:v", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_CPUS: o->cpus = optarg; break;
		case OPT_MEMORY: o->memory = optarg; break;
		case OPT_KERNEL: o->kernel = optarg; break;
		case OPT_INITRD:
			if (o->n_initrds == RUN_MAX_INITRDS)
				return cv_fail(err, CV_EXIT_USAGE, "at most %d --initrd", RUN_MAX_INITRDS);
			o->initrds[o->n_initrds++] = optarg;
			break;
		case OPT_EXTRA: o->cmdline_extra = optarg; break;
		case OPT_DISK:
		case OPT_NET:
		case OPT_BALLOON: {
			/* cvisor-vmm validates these; we only carry them over, as --opt=VALUE. */
			if (o->n_device_args == RUN_MAX_DEVICE_ARGS)
				return cv_fail(err, CV_EXIT_USAGE, "too many device options");
			const char *name = c == OPT_DISK ? "disk" : c == OPT_NET ? "net" : "balloon";
			if (asprintf(&o->device_args[o->n_device_args++], "--%s%s%s", name,
				     optarg ? "=" : "", optarg ? optarg : "") < 0)
				return cv_fail(err, CV_EXIT_OSERR, "out of memory");
			break;
		}
		case 'w': o->workdir = optarg; break;
		case 'v': o->verbose = true; break;
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=')
				return cv_fail(err, CV_EXIT_USAGE, "--env '%s': expected NAME=VALUE", optarg);
			if (o->n_env == RUN_MAX_ENV)
				return cv_fail(err, CV_EXIT_USAGE, "at most %d --env", RUN_MAX_ENV);
			o->env[o->n_env++] = optarg;
			break;
		case OPT_HELP:
			usage(stdout);
			exit(0);
		default:
			return cv_fail(err, CV_EXIT_USAGE, "unknown or incomplete option '%s' (see --help)",
				       argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return cv_fail(err, CV_EXIT_USAGE, "no command given: cvisor run [options] -- COMMAND");
	o->command = argv + optind;
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

/* Writes the request cpio into an anonymous memory file the VMM reads as a second initrd. */
static int make_request_fd(const struct run_options *o, const char *token, struct cv_error *err)
{
	char *req = NULL;
	size_t len = 0, cap = 0;
	int rc = add_record(&req, &len, &cap, "token", token, err);
	for (char **a = o->command; rc == 0 && *a; a++)
		rc = add_record(&req, &len, &cap, "arg", *a, err);
	for (int i = 0; rc == 0 && i < o->n_env; i++)
		rc = add_record(&req, &len, &cap, "env", o->env[i], err);
	if (rc == 0 && o->workdir)
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

static void write_stdout(void *ctx, const uint8_t *buf, size_t len)
{
	(void)ctx;
	cv_write_full(STDOUT_FILENO, buf, len);
}

static void write_stderr(void *ctx, const uint8_t *buf, size_t len)
{
	(void)ctx;
	cv_write_full(STDERR_FILENO, buf, len);
}

static int random_token(char *out, size_t len, struct cv_error *err)
{
	uint8_t raw[8];
	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
		return cv_fail_errno(err, CV_EXIT_OSERR, "getrandom");
	for (size_t i = 0; i < sizeof(raw) && 2 * i + 2 < len; i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

/* Boots the VM with cvisor-vmm and relays the command's output; returns the exit status. */
static int run_direct(const struct run_options *o, struct cv_error *err)
{
	char vmm[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX], request_path[64];
	char token[17] = { 0 };
	if (guest_find_program("cvisor-vmm", vmm, sizeof(vmm), err) < 0)
		return -1;
	if (o->kernel)
		snprintf(kernel, sizeof(kernel), "%s", o->kernel);
	else if (guest_default_kernel("vmlinux", kernel, sizeof(kernel), err) < 0)
		return -1;
	if (!o->n_initrds && guest_default_initramfs(initrd, sizeof(initrd), err) < 0)
		return -1;
	if (random_token(token, sizeof(token), err) < 0)
		return -1;
	int req_fd = make_request_fd(o, token, err);
	if (req_fd < 0)
		return -1;
	snprintf(request_path, sizeof(request_path), "/proc/self/fd/%d", req_fd);

	char cmdline[2048];
	if (cv_format(cmdline, sizeof(cmdline), err, "%s%s%s%s", RUN_CMDLINE,
		      o->verbose ? "" : " quiet", o->cmdline_extra ? " " : "",
		      o->cmdline_extra ? o->cmdline_extra : "") < 0) {
		close(req_fd);
		return -1;
	}
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
	for (int i = 0; i < o->n_device_args; i++)
		args[n_args++] = o->device_args[i];
	args[n_args] = NULL;

	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		close(req_fd);
		return cv_fail_errno(err, CV_EXIT_OSERR, "pipe");
	}
	pid_t pid = fork();
	if (pid < 0) {
		close(req_fd);
		close(pipefd[0]);
		close(pipefd[1]);
		return cv_fail_errno(err, CV_EXIT_OSERR, "fork");
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(pipefd[1], STDOUT_FILENO) < 0)
			_exit(CV_EXIT_OSERR);
		execv(vmm, args);
		fprintf(stderr, "cvisor: run '%s': %s\n", vmm, strerror(errno));
		_exit(CV_EXIT_RUN_FAILED);
	}
	close(pipefd[1]);
	close(req_fd);
	/* Ctrl-C reaches cvisor-vmm through the terminal's process group; we wait for it. */
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);

	struct marker_filter f;
	marker_filter_init(&f, token, write_stdout, NULL);
	if (o->verbose)
		f.prelude_out = write_stderr;
	uint8_t buf[65536];
	for (;;) {
		ssize_t n = read(pipefd[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		marker_filter_feed(&f, buf, (size_t)n);
	}
	close(pipefd[0]);
	int wstatus;
	while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
		;
	int vmm_status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);

	int status;
	if (marker_filter_finished(&f, &status))
		return status;
	if (vmm_status > 128 && vmm_status < 160)
		return vmm_status;   /* stopped by a signal: report it like a shell would */
	if (vmm_status >= CV_EXIT_USAGE && vmm_status <= CV_EXIT_IOERR)
		return vmm_status;   /* setup failed; cvisor-vmm has said why in one line */
	if (!marker_filter_started(&f) && f.prelude_len && !o->verbose) {
		fprintf(stderr, "cvisor: guest console before the failure:\n");
		cv_write_full(STDERR_FILENO, f.prelude, f.prelude_len);
		if (f.prelude[f.prelude_len - 1] != '\n')
			fputc('\n', stderr);
	}
	return cv_fail(err, CV_EXIT_RUN_FAILED,
		       "the VM ended before the command finished (cvisor-vmm exit status %d)",
		       vmm_status);
}

/* Re-runs this `cvisor run` inside the emulated host. */
static int run_emulated(int argc, char **argv, const char *reason, struct cv_error *err)
{
	fprintf(stderr, "cvisor: %s; running in the emulated host (QEMU TCG), this will be slow\n",
		reason);
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "readlink /proc/self/exe");
	self[n] = 0;
	char **cmd = calloc((size_t)argc + 2, sizeof(char *));
	if (!cmd)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	cmd[0] = self;
	for (int i = 0; i < argc; i++)
		cmd[i + 1] = argv[i];
	setenv("CVISOR_KVM", "direct", 1);    /* inside, /dev/kvm is real: never recurse */
	struct emuhost_cmd c = { .argv = cmd };
	int status = 0;
	int rc = emuhost_run(&c, &status, err);
	free(cmd);
	return rc < 0 ? -1 : status;
}

int cmd_run(int argc, char **argv)
{
	struct cv_error err = { 0 };
	struct run_options o;
	if (parse(argc, argv, &o, &err) < 0) {
		cv_error_print(&err, "cvisor run");
		return err.code;
	}
	struct kvm_host_probe probe;
	kvm_probe_host(&probe);
	int status;
	if (probe.kind == KVM_HOST_USABLE)
		status = run_direct(&o, &err);
	else
		status = run_emulated(argc, argv, probe.reason, &err);
	if (status < 0) {
		cv_error_print(&err, "cvisor run");
		return err.code == CV_EXIT_USAGE ? CV_EXIT_USAGE : CV_EXIT_RUN_FAILED;
	}
	return status;
}
