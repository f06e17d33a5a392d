/*
 * Interfaces between the files of the emulated-host library; not for other components (they use
 * emuhost.h). One concept per file: state.c (the state directory and the recorded QEMU process),
 * cache.c (the prepared kernel and modules), initramfs.c (composing the boot initramfs), qemu.c
 * (launching QEMU), client.c (talking to the agent), emuhost.c (start/stop/status).
 */
#ifndef CVISOR_EMUHOST_INTERNAL_H
#define CVISOR_EMUHOST_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"

/* The port cvisor-agent listens on inside the host; QEMU forwards a loopback port to it. */
#define EMUHOST_AGENT_PORT 1024
#define EMUHOST_TOKEN_LEN 64   /* hex characters */

/* ---- state.c ---- */

/* What a state directory records about a host. Zero/empty fields were not recorded. */
struct emuhost_state {
	char dir[PATH_MAX];
	pid_t pid;
	unsigned port;
	char token[EMUHOST_TOKEN_LEN + 1];
};

/* Resolves (and creates, mode 0700) the state directory, then loads what it records. */
int state_open(const char *state_dir, bool create, struct emuhost_state *st, struct cv_error *err);
/* "<dir>/<name>" */
int state_path(const struct emuhost_state *st, const char *name, char *out, size_t len,
	       struct cv_error *err);
/* True if the recorded pid is alive and is the QEMU this state directory started. */
bool state_qemu_alive(const struct emuhost_state *st);
/* Removes everything a run leaves except console.log, which is kept for post-mortems. */
void state_clear(struct emuhost_state *st);
/* Exclusive lock serialising start and stop; returns the fd to close, or -1. */
int state_lock(const struct emuhost_state *st, struct cv_error *err);

/* Removes every file a host leaves in its state directory, then the directory itself. */
void state_remove(struct emuhost_state *st);
/* The last len-1 bytes of a log file as one line ('|' for newlines); "" if unreadable. */
void state_tail(const char *path, char *out, size_t len);
/* Copies the first line of a log containing needle, from needle on; false if there is none. */
bool state_find_line(const char *path, const char *needle, char *out, size_t len);
/* Writes a small file atomically with the given mode. */
int state_write_file(const struct emuhost_state *st, const char *name, const char *text,
		     unsigned mode, struct cv_error *err);

/* ---- cache.c ---- */

struct emuhost_kernel {
	char dir[PATH_MAX];
	char vmlinuz[PATH_MAX];
	char base_cpio[PATH_MAX];
	char release[128];
};

/* Finds the prepared kernel through <cache>/emuhost/current; fails if it is missing or incomplete. */
int cache_find_kernel(struct emuhost_kernel *k, struct cv_error *err);
/*
 * Runs the embedded prepare script. stdout_fd receives the script's stdout (the directory) and
 * log_fd its progress and errors.
 */
int cache_run_prepare(int stdout_fd, int log_fd, struct cv_error *err);

/* ---- initramfs.c ---- */

/* Writes base_cpio followed by an archive holding init, cvisor-agent and the token. */
int initramfs_compose(const char *base_cpio, const char *agent_path, const char *token,
		      const char *out_path, struct cv_error *err);

/* ---- qemu.c ---- */

struct qemu_params {
	const char *kernel;
	const char *initrd;
	const char *console_log;
	const char *pidfile;
	const char *stderr_log;   /* QEMU's own messages before it daemonizes */
	const char *monitor;      /* unix socket of the QEMU monitor, for post-mortems */
	unsigned cpus;
	unsigned memory_mib;
	unsigned port;            /* loopback port forwarded to the agent */
};

/*
 * Starts QEMU daemonized and returns once it runs in the background (or has failed). Returns 0,
 * -1 on failure, or 1 if the forwarding port was taken meanwhile (the caller picks another).
 */
int qemu_launch(const struct qemu_params *p, struct cv_error *err);
/* A loopback TCP port nobody listens on right now. */
int qemu_pick_port(unsigned *port, struct cv_error *err);

/* ---- client.c ---- */

/* Connects to the agent on 127.0.0.1:port; receives time out after timeout_ms (0: never). */
int client_connect(unsigned port, int timeout_ms, struct cv_error *err);
/* One ping round trip; fills version (may be NULL). */
int client_ping(unsigned port, const char *token, int timeout_ms, char *version, size_t vlen,
		struct cv_error *err);
/* Asks the agent to power the host off; 0 if it accepted (closed the connection). */
int client_poweroff(unsigned port, const char *token, struct cv_error *err);

/* ---- assets (generated from init.sh and prepare.sh by embed.c at build time) ---- */

extern const char emuhost_init_sh[];
extern const size_t emuhost_init_sh_len;
extern const char emuhost_prepare_sh[];
extern const size_t emuhost_prepare_sh_len;

#endif
