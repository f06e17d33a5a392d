/*
 * `cvisor run`: boot a microVM with the default guest (or a given kernel/initrd), run one command
 * in it and exit with that command's status. This file reads the options and picks where the VM
 * runs: here, or, on a host whose /dev/kvm cannot run Linux, inside the emulated host, where the
 * same `cvisor run` is started again. How the command reaches the guest is in run_agent.c (the
 * guest agent over vsock) and run_console.c (--no-agent).
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "emuhost.h"
#include "kvm_probe.h"
#include "run.h"
#include "util.h"

#define RUN_DEFAULT_MEMORY "256"

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
		"  --disk PATH[,ro][,serial=ID]   attach a raw disk image (repeatable); bw=SIZE/MS,\n"
		"                      ops=N/MS limit its rate (see cvisor-vmm --help)\n"
		"  --net tap=NAME[,mac=MAC]       attach a NIC on a TAP device (repeatable); rx_bw=,\n"
		"                      tx_bw=, rx_ops=, tx_ops= limit its rate\n"
		"  --balloon [SPEC]    attach a memory balloon (see cvisor-vmm --help)\n"
		"  --cmdline-extra S   append S to the kernel command line\n"
		"  -i, --interactive   forward stdin to COMMAND; on a terminal, COMMAND gets one too\n"
		"  -t, --tty           run COMMAND on a terminal (stdin must be one)\n"
		"  --no-tty            never give COMMAND a terminal (stdout and stderr stay apart)\n"
		"  --no-agent          run COMMAND from cvisor-init and read its output off the serial\n"
		"                      console instead of through the guest agent (no stdin; stderr is\n"
		"                      merged into stdout; for initramfs images without cvisor-agent)\n"
		"  -v, --verbose       show the guest kernel's console messages on stderr\n"
		"\n"
		"COMMAND runs through cvisor-agent in the guest, reached over virtio-vsock: its stdout and\n"
		"stderr arrive byte for byte, Ctrl-C (SIGINT, SIGTERM, SIGHUP, SIGQUIT) is forwarded to it,\n"
		"and the guest is powered off cleanly afterwards so disk writes are on disk.\n"
		"\n"
		"Exit status: COMMAND's own; 125 if the VM failed first, 126/127 if COMMAND could not\n"
		"be run or was not found. Where /dev/kvm cannot run a guest (PVM, none), the run happens\n"
		"inside cvisor's emulated host (QEMU TCG with nested AMD-V), which is slow.\n");
}

static int parse(int argc, char **argv, struct run_options *o, struct cv_error *err)
{
	enum { OPT_CPUS = 1, OPT_MEMORY, OPT_KERNEL, OPT_INITRD, OPT_EXTRA, OPT_HELP, OPT_DISK,
	       OPT_NET, OPT_BALLOON, OPT_NO_TTY, OPT_NO_AGENT };
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
		{ "interactive", no_argument, NULL, 'i' },
		{ "tty", no_argument, NULL, 't' },
		{ "no-tty", no_argument, NULL, OPT_NO_TTY },
		{ "no-agent", no_argument, NULL, OPT_NO_AGENT },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	memset(o, 0, sizeof(*o));
	o->cpus = "1";
	o->memory = RUN_DEFAULT_MEMORY;
	o->tty = -1;
	opterr = 0;
	optind = 1;
	int c;
	/* '+': stop at the first non-option so COMMAND's own options are never ours. */
	while ((c = getopt_long(argc, argv, "+e:w:vit", longopts, NULL)) != -1) {
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
		case 'i': o->interactive = true; break;
		case 't': o->tty = 1; break;
		case OPT_NO_TTY: o->tty = 0; break;
		case OPT_NO_AGENT: o->no_agent = true; break;
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
	if (o->workdir && o->workdir[0] != '/')
		return cv_fail(err, CV_EXIT_USAGE, "--workdir '%s': must be an absolute path in the guest",
			       o->workdir);
	if (o->no_agent && (o->interactive || o->tty == 1))
		return cv_fail(err, CV_EXIT_USAGE, "--no-agent cannot forward stdin (-i) or give a terminal (-t)");
	if (o->tty == 1 && !isatty(STDIN_FILENO))
		return cv_fail(err, CV_EXIT_USAGE, "--tty: stdin is not a terminal");
	o->command = argv + optind;
	return 0;
}

/* Re-runs this `cvisor run` inside the emulated host. */
static int run_emulated(const struct run_options *o, int argc, char **argv, const char *reason,
			struct cv_error *err)
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
	/* The inner run decides about a terminal as we would: give it ours if we would use it. */
	bool tty = o->tty == 1 || (o->tty < 0 && o->interactive && isatty(0) && isatty(1));
	struct emuhost_cmd c = { .argv = cmd, .forward_stdin = o->interactive, .tty = tty };
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
	if (probe.kind != KVM_HOST_USABLE)
		status = run_emulated(&o, argc, argv, probe.reason, &err);
	else if (o.no_agent)
		status = run_with_console(&o, &err);
	else
		status = run_with_agent(&o, &err);
	if (status < 0) {
		cv_error_print(&err, "cvisor run");
		return err.code == CV_EXIT_USAGE ? CV_EXIT_USAGE : CV_EXIT_RUN_FAILED;
	}
	return status;
}
