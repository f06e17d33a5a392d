/*
 * The emulated host: a QEMU (TCG, -cpu qemu64,+svm,+npt) virtual machine booting Debian's stock
 * kernel with kvm-amd, sharing this machine's root filesystem over 9p. Inside it /dev/kvm is real
 * AMD-V, so cvisor-vmm runs unchanged on hosts whose own /dev/kvm cannot run Linux (PVM) or that
 * have none. A host is booted once and then serves any number of commands through cvisor-agent.
 *
 * A running host is described by its state directory (pid, agent port, console log). Default:
 * $CVISOR_EMUHOST_DIR, else <runtime dir>/cvisor/emuhost.
 */
#ifndef CVISOR_EMUHOST_EMUHOST_H
#define CVISOR_EMUHOST_EMUHOST_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct emuhost_config {
	const char *state_dir;   /* NULL: the default state directory */
	unsigned cpus;           /* 0: 2 */
	unsigned memory_mib;     /* 0: 4096 */
	bool quiet;              /* no progress lines on stderr */
};

/* Fills `out` with the state directory for `state_dir` (NULL: the default one). */
int emuhost_state_dir(const char *state_dir, char *out, size_t len, struct cv_error *err);

/* True if a host recorded in state_dir is running and its agent answers. */
bool emuhost_is_running(const char *state_dir);

/*
 * Boots a host and returns once its agent answers (about 10 s here). Fails if one is already
 * running in that state directory. Prepares the host kernel and modules in the cache first if
 * they are missing.
 */
int emuhost_start(const struct emuhost_config *cfg, struct cv_error *err);

/* Powers the host down (agent first, then SIGTERM, then SIGKILL) and clears its state. */
int emuhost_stop(const char *state_dir, struct cv_error *err);

struct emuhost_cmd {
	char *const *argv;       /* command and arguments, NULL-terminated */
	char *const *envp;       /* NULL: the caller's environment */
	const char *cwd;         /* NULL: the caller's working directory */
	bool forward_stdin;      /* stream our stdin to the command; otherwise it reads /dev/null */
	bool tty;                /* run it on a terminal that follows ours (stdin must be one) */
};

/*
 * Runs cmd inside the host, chrooted to this machine's root as seen over 9p, streaming its stdout
 * and stderr to ours. SIGINT/SIGTERM received meanwhile are forwarded to the command. *status is
 * the command's exit status (128+N if killed by signal N). Returns -1 only if the command could
 * not be run at all.
 */
int emuhost_exec(const char *state_dir, const struct emuhost_cmd *cmd, int *status,
		 struct cv_error *err);

/*
 * emuhost_exec in the session host (the default state directory) if one runs and answers;
 * otherwise boots a private host for this one command and stops it afterwards.
 */
int emuhost_run(const struct emuhost_cmd *cmd, int *status, struct cv_error *err);

/*
 * Downloads and unpacks the host kernel and modules into the cache if they are not there yet
 * (also done by emuhost_start when needed). Progress and errors go to stderr; the directory is
 * printed on stdout.
 */
int emuhost_prepare(struct cv_error *err);

struct emuhost_status {
	char state_dir[PATH_MAX];
	char console_log[PATH_MAX];
	bool running;            /* the QEMU recorded in state_dir is alive */
	bool agent_ready;        /* and its agent answered a ping */
	int pid;
	unsigned port;           /* loopback port forwarded to the agent */
	char agent_version[64];
	char agent_error[CV_ERROR_MAX];  /* why the ping failed, if running but not ready */
};

/* Describes the host of state_dir (NULL: default). Stale state is reported as not running. */
int emuhost_get_status(const char *state_dir, struct emuhost_status *out, struct cv_error *err);

#endif
