/*
 * The parts of `cvisor run` (run.c: options and where to run; run_vm.c: the request archive and
 * the cvisor-vmm process; run_agent.c: the command through the guest agent over vsock, the
 * default; run_console.c: the command's output read off the serial console, --no-agent).
 */
#ifndef CVISOR_CLI_RUN_H
#define CVISOR_CLI_RUN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define RUN_MAX_ENV 256
#define RUN_MAX_DEVICE_ARGS 64
#define RUN_MAX_INITRDS 6            /* cvisor-vmm takes 8; one more carries the request */

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
	bool interactive;     /* -i: forward stdin */
	int tty;              /* -t: 1, --no-tty: 0, neither: -1 (a terminal if -i on one) */
	bool no_agent;        /* --no-agent: markers on the serial console instead of the agent */
	char **command;       /* NULL-terminated */
};

/* The request archive's contents beyond the command itself. */
struct run_request {
	const char *token;
	const char *agent_port;   /* NULL: cvisor-init runs the command (console mode) */
	const char *term;         /* TERM for the guest (agent mode with a terminal), or NULL */
};

/* A running cvisor-vmm whose serial console we read. */
struct run_vm {
	pid_t pid;
	int console_fd;             /* read end of the VMM's stdout */
	pthread_t console_thread;   /* agent mode: drains console_fd into prelude (and stderr) */
	bool console_thread_started;
	bool verbose;
	uint8_t prelude[16384];     /* the last bytes of console output, shown when a run fails */
	size_t prelude_len;
	int status;                 /* after run_vm_wait: exit status, 128+N if killed by signal N */
};

/*
 * Starts cvisor-vmm for o with the request archive; vsock_uds (may be NULL) adds a vsock device
 * whose host side is that Unix socket. The VMM runs in its own process group (the terminal's
 * Ctrl-C is ours to forward) and dies with us.
 */
int run_vm_start(struct run_vm *vm, const struct run_options *o, const struct run_request *req,
		 const char *vsock_uds, struct cv_error *err);
/* Agent mode: a thread keeps reading the console so the guest never blocks on it. */
int run_vm_drain_console(struct run_vm *vm, struct cv_error *err);
/* Waits for the VMM (timeout_ms < 0: for ever; then it is killed) and the console thread. */
void run_vm_wait(struct run_vm *vm, int timeout_ms);
/* True if the VMM has exited (and reaps it). */
bool run_vm_exited(struct run_vm *vm);
/*
 * The error for a VM that ended before the command did: the VMM's own status when it failed
 * setting up (it said why) or was killed, else "ended before the command finished" with the
 * console's last lines. Returns -1 with err set, or the status to exit with.
 */
int run_vm_failed(struct run_vm *vm, struct cv_error *err);

int run_with_agent(const struct run_options *o, struct cv_error *err);
int run_with_console(const struct run_options *o, struct cv_error *err);

/* A random hex token of 16 characters (+ NUL). */
int run_random_token(char out[17], struct cv_error *err);

#endif
