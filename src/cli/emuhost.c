/*
 * `cvisor emuhost`: manage the emulated host (a QEMU machine whose /dev/kvm works, for hosts whose
 * own KVM cannot run Linux) and run commands inside it. Thin argument handling over emuhost.h.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "emuhost.h"
#include "exitcodes.h"
#include "util.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cvisor emuhost <command> [options]\n"
		"\n"
		"The emulated host is a QEMU (TCG) machine running Debian's stock kernel with kvm-amd, so\n"
		"/dev/kvm inside it is real AMD-V. It shares this machine's root over 9p; commands run in it\n"
		"chrooted to that root, so paths and files are the same as here.\n"
		"\n"
		"commands:\n"
		"  start [--cpus N] [--memory MiB] [--quiet]\n"
		"                 boot the host and wait for its agent (the first start downloads the kernel)\n"
		"  stop           power the host off\n"
		"  status         print whether it runs; exit 0 if its agent answers, 69 if not\n"
		"  exec [-C DIR] [-i] [-t] [--boot-if-needed] [--] CMD [ARG...]\n"
		"                 run CMD inside with this environment, in DIR (default: the current\n"
		"                 directory); -i forwards stdin, -t runs CMD on a terminal (stdin must\n"
		"                 be one). Exits with CMD's status (128+N on signal N).\n"
		"                 --boot-if-needed: with no host running, boot one for CMD, stop it after\n"
		"  prepare        download and unpack the host kernel into the cache now\n"
		"\n"
		"environment: CVISOR_EMUHOST_DIR (state directory), CVISOR_CACHE (cache), CVISOR_QEMU (QEMU\n"
		"binary), CVISOR_EMUHOST_TIMEOUT (seconds to wait for the agent at start, default 120),\n"
		"CVISOR_EMUHOST_TCG=single (one TCG thread for all vCPUs instead of one each)\n");
}

static int fail(const struct cv_error *err)
{
	cv_error_print(err, "cvisor emuhost");
	return err->code ? err->code : CV_EXIT_SOFTWARE;
}

static int parse_uint(const char *opt, const char *val, uint64_t min, uint64_t max, unsigned *out)
{
	uint64_t v;
	if (!val || !cv_parse_u64(val, min, max, &v)) {
		fprintf(stderr, "cvisor emuhost: %s needs a number in %llu..%llu, got '%s'\n", opt,
			(unsigned long long)min, (unsigned long long)max, val ? val : "");
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int cmd_start(int argc, char **argv)
{
	struct emuhost_config cfg = { 0 };
	for (int i = 1; i < argc; i++) {
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(argv[i], "--cpus") == 0) {
			if (parse_uint("--cpus", val, 1, 64, &cfg.cpus) < 0)
				return CV_EXIT_USAGE;
			i++;
		} else if (strcmp(argv[i], "--memory") == 0) {
			if (parse_uint("--memory", val, 256, 1 << 20, &cfg.memory_mib) < 0)
				return CV_EXIT_USAGE;
			i++;
		} else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
			cfg.quiet = true;
		} else {
			fprintf(stderr, "cvisor emuhost start: unknown argument '%s'\n", argv[i]);
			return CV_EXIT_USAGE;
		}
	}
	struct cv_error err = { 0 };
	if (emuhost_start(&cfg, &err) < 0)
		return fail(&err);
	return 0;
}

static int cmd_stop(void)
{
	struct cv_error err = { 0 };
	struct emuhost_status s;
	if (emuhost_get_status(NULL, &s, &err) < 0)
		return fail(&err);
	if (emuhost_stop(NULL, &err) < 0)
		return fail(&err);
	fprintf(stderr, "cvisor emuhost: %s\n", s.running ? "stopped" : "was not running");
	return 0;
}

static int cmd_status(void)
{
	struct cv_error err = { 0 };
	struct emuhost_status s;
	if (emuhost_get_status(NULL, &s, &err) < 0)
		return fail(&err);
	if (!s.running) {
		printf("not running (state directory %s)\n", s.state_dir);
		return CV_EXIT_UNAVAILABLE;
	}
	if (!s.agent_ready) {
		printf("running but not ready: pid %d, agent on 127.0.0.1:%u does not answer (%s); console %s\n",
		       s.pid, s.port, s.agent_error, s.console_log);
		return CV_EXIT_UNAVAILABLE;
	}
	printf("running: pid %d, agent %s on 127.0.0.1:%u, state %s, console %s\n", s.pid,
	       s.agent_version, s.port, s.state_dir, s.console_log);
	return 0;
}

static int cmd_exec(int argc, char **argv)
{
	struct emuhost_cmd cmd = { 0 };
	bool boot_if_needed = false;
	char cwd[PATH_MAX];
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (strcmp(argv[i], "-i") == 0 || strcmp(argv[i], "--stdin") == 0) {
			cmd.forward_stdin = true;
		} else if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--tty") == 0) {
			cmd.tty = true;
		} else if (strcmp(argv[i], "--boot-if-needed") == 0) {
			boot_if_needed = true;
		} else if (strcmp(argv[i], "-C") == 0 || strcmp(argv[i], "--cwd") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "cvisor emuhost exec: %s needs a directory\n", argv[i]);
				return CV_EXIT_USAGE;
			}
			const char *dir = argv[++i];
			struct cv_error err = { 0 };
			/* The host sees our root, so a relative directory is resolved from here. */
			if (dir[0] == '/') {
				if (cv_format(cwd, sizeof(cwd), &err, "%s", dir) < 0)
					return fail(&err);
			} else {
				char here[PATH_MAX];
				if (!getcwd(here, sizeof(here))) {
					perror("cvisor emuhost exec: getcwd");
					return CV_EXIT_OSERR;
				}
				if (cv_format(cwd, sizeof(cwd), &err, "%s/%s", here, dir) < 0)
					return fail(&err);
			}
			cmd.cwd = cwd;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "cvisor emuhost exec: unknown option '%s' (put the command after --)\n",
				argv[i]);
			return CV_EXIT_USAGE;
		} else {
			break;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "cvisor emuhost exec: no command given\n");
		return CV_EXIT_USAGE;
	}
	cmd.argv = argv + i;
	struct cv_error err = { 0 };
	int status;
	int rc = boot_if_needed ? emuhost_run(&cmd, &status, &err)
				: emuhost_exec(NULL, &cmd, &status, &err);
	if (rc < 0)
		return fail(&err);
	return status;
}

int cmd_emuhost(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CV_EXIT_USAGE;
	}
	const char *sub = argv[1];
	if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
		usage(stdout);
		return 0;
	}
	for (int i = 2; i < argc && strcmp(sub, "exec") != 0; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
	}
	if (strcmp(sub, "start") == 0)
		return cmd_start(argc - 1, argv + 1);
	if (strcmp(sub, "exec") == 0)
		return cmd_exec(argc - 1, argv + 1);
	if (strcmp(sub, "stop") == 0 || strcmp(sub, "status") == 0 || strcmp(sub, "prepare") == 0) {
		if (argc > 2) {
			fprintf(stderr, "cvisor emuhost %s: unexpected argument '%s'\n", sub, argv[2]);
			return CV_EXIT_USAGE;
		}
		if (strcmp(sub, "prepare") == 0) {
			struct cv_error err = { 0 };
			return emuhost_prepare(&err) < 0 ? fail(&err) : 0;
		}
		return strcmp(sub, "stop") == 0 ? cmd_stop() : cmd_status();
	}
	fprintf(stderr, "cvisor emuhost: unknown command '%s' (try 'cvisor emuhost --help')\n", sub);
	return CV_EXIT_USAGE;
}
