/*
 * The cvisor-agent wire protocol: length-prefixed frames on any connected stream fd (TCP, unix
 * socket, vsock, pipe), so the emulated host's agent and the microVM guest agent share it.
 *
 *   frame   = length (4 bytes, big-endian, payload only) | type (1 byte) | payload
 *   types   = CONTROL (one JSON object), STDIN, STDOUT, STDERR (raw bytes)
 *
 * A zero-length STDIN frame means end of input. Payloads above AGENT_MAX_PAYLOAD and unknown
 * types are protocol errors. Control messages are parsed into typed structs here, strictly
 * (wrong types, unknown keys or operations are rejected), so neither end handles raw JSON.
 * docs/agent-protocol.md is the reference.
 */
#ifndef CVISOR_AGENT_PROTO_H
#define CVISOR_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define AGENT_MAX_PAYLOAD (1u << 20)
#define AGENT_FRAME_HEADER 5

enum agent_frame_type {
	AGENT_FRAME_CONTROL = 1,
	AGENT_FRAME_STDIN = 2,
	AGENT_FRAME_STDOUT = 3,
	AGENT_FRAME_STDERR = 4,
};

/* One received frame. data is malloc'd and NUL-terminated one past len (NULL only if len is 0). */
struct agent_frame {
	uint8_t type;
	uint32_t len;
	uint8_t *data;
};

void agent_frame_free(struct agent_frame *f);

/*
 * Sends one frame as a single write so TCP does not split header and payload into two segments
 * (which costs a delayed-ACK round trip). Never raises SIGPIPE on sockets. Returns 0 or -1.
 */
int agent_send_frame(int fd, uint8_t type, const void *data, size_t len, struct cv_error *err);

/*
 * Blocking receive of one whole frame. Returns 1 with *f filled, 0 on a clean end of stream
 * (before any byte of a frame), -1 on a read error, a truncated frame or a protocol violation.
 */
int agent_recv_frame(int fd, struct agent_frame *f, struct cv_error *err);

/*
 * Incremental decoder for poll()-driven loops: feed it whatever the fd has, take out whole frames.
 * A bad header is reported as soon as its 5 bytes arrive, before any oversized payload is read.
 */
struct agent_reader {
	uint8_t *buf;
	size_t len;
	size_t cap;
};

void agent_reader_init(struct agent_reader *r);
void agent_reader_free(struct agent_reader *r);
/* One read() from fd. Returns bytes read (> 0), 0 at end of stream, -1 on error (errno kept). */
ssize_t agent_reader_fill(struct agent_reader *r, int fd, struct cv_error *err);
/* Returns 1 with the next frame in *f, 0 if no whole frame is buffered yet, -1 on a bad frame. */
int agent_reader_next(struct agent_reader *r, struct agent_frame *f, struct cv_error *err);
/* True if some bytes of an incomplete frame are buffered (end of stream now means truncation). */
bool agent_reader_partial(const struct agent_reader *r);

/*
 * Frames waiting for a peer that must not block us. A relay that streams in both directions
 * cannot afford a blocking send: if the peer is itself blocked sending to us, neither side reads
 * again. Such a loop queues its frames here, polls for POLLOUT while agent_outq_pending(), and
 * keeps reading in the meantime.
 */
struct agent_outq {
	uint8_t *buf;
	size_t off;     /* bytes of buf already written */
	size_t len;     /* bytes of buf queued in total */
	size_t cap;
};

void agent_outq_init(struct agent_outq *q);
void agent_outq_free(struct agent_outq *q);
size_t agent_outq_pending(const struct agent_outq *q);
/* Appends one whole frame (same limits as agent_send_frame). */
int agent_outq_frame(struct agent_outq *q, uint8_t type, const void *data, size_t len,
		     struct cv_error *err);
/*
 * Writes as much as fd takes now, without waiting (on a socket; another kind of fd is written as
 * its own blocking mode says). Returns 0, or -1 with errno kept (EPIPE, ECONNRESET: the peer
 * is gone) if the write failed.
 */
int agent_outq_flush(struct agent_outq *q, int fd, struct cv_error *err);

/* ---- control messages: client to agent ---- */

enum agent_op {
	AGENT_OP_EXEC,
	AGENT_OP_SIGNAL,
	AGENT_OP_PING,
	AGENT_OP_POWEROFF,   /* alias of shutdown with action poweroff, kept for older clients */
	AGENT_OP_RESIZE,
	AGENT_OP_INFO,
	AGENT_OP_SHUTDOWN,
	AGENT_OP_FREEZE,
	AGENT_OP_THAW,
};

enum agent_shutdown_action {
	AGENT_SHUTDOWN_POWEROFF,
	AGENT_SHUTDOWN_REBOOT,
};

/* Terminal size limits: the kernel's struct winsize holds 16-bit counts; 0 means "unknown". */
#define AGENT_TTY_MAX 65535
#define AGENT_TTY_DEFAULT_ROWS 24
#define AGENT_TTY_DEFAULT_COLS 80
/* A freeze or thaw request names at most this many paths (a guest has a handful of mounts). */
#define AGENT_MAX_PATHS 256

struct agent_request {
	enum agent_op op;
	char **argv;       /* exec: NULL-terminated, at least one element */
	char **env;        /* exec: NULL-terminated "K=V" list, or NULL when absent */
	char *cwd;         /* exec: absolute path, or NULL when absent */
	bool stdin_open;   /* exec: the client will send STDIN frames */
	bool tty;          /* exec: run the command on a new pseudo-terminal */
	unsigned rows;     /* exec with tty (default 24), resize: 1..AGENT_TTY_MAX */
	unsigned cols;     /* exec with tty (default 80), resize: 1..AGENT_TTY_MAX */
	int signal;        /* signal: 1..64 */
	enum agent_shutdown_action action;  /* shutdown; POWEROFF for the poweroff alias */
	char **paths;      /* freeze/thaw: NULL-terminated absolute paths, NULL = the default set */
	char *token;       /* any op: authentication token, or NULL when absent */
};

/* Parses and validates one CONTROL payload. On failure *req is left empty (safe to free). */
int agent_parse_request(const void *data, size_t len, struct agent_request *req,
			struct cv_error *err);
void agent_request_free(struct agent_request *req);

/* Everything an exec request can say; see docs/agent-protocol.md. */
struct agent_exec_spec {
	char *const *argv;    /* required */
	char *const *env;     /* NULL: the agent's environment */
	const char *cwd;      /* NULL: "/" */
	bool stdin_open;
	bool tty;
	unsigned rows, cols;  /* with tty only; 0 leaves the agent's default */
};

/* Encoders; token may be NULL. env and cwd may be NULL (omitted). */
int agent_send_exec_spec(int fd, const struct agent_exec_spec *spec, const char *token,
			 struct cv_error *err);
int agent_send_exec(int fd, char *const *argv, char *const *env, const char *cwd,
		    bool stdin_open, const char *token, struct cv_error *err);
int agent_send_signal(int fd, int signo, struct cv_error *err);
int agent_send_resize(int fd, unsigned rows, unsigned cols, struct cv_error *err);
/* The same two requests, queued for a loop that must not block on its peer. */
int agent_queue_signal(struct agent_outq *q, int signo, struct cv_error *err);
int agent_queue_resize(struct agent_outq *q, unsigned rows, unsigned cols, struct cv_error *err);
int agent_send_ping(int fd, const char *token, struct cv_error *err);
int agent_send_poweroff(int fd, const char *token, struct cv_error *err);
int agent_send_info_request(int fd, const char *token, struct cv_error *err);
int agent_send_shutdown(int fd, enum agent_shutdown_action action, const char *token,
			struct cv_error *err);
/* paths: NULL-terminated, or NULL for the agent's default set. */
int agent_send_freeze(int fd, char *const *paths, const char *token, struct cv_error *err);
int agent_send_thaw(int fd, char *const *paths, const char *token, struct cv_error *err);

/* ---- control messages: agent to client ---- */

enum agent_event_kind {
	AGENT_EV_STARTED,
	AGENT_EV_EXIT,
	AGENT_EV_ERROR,
	AGENT_EV_PONG,
};

struct agent_event {
	enum agent_event_kind kind;
	int pid;           /* started */
	int status;        /* exit: 0..255, 128+N if killed by signal N */
	char *message;     /* error */
	char *version;     /* pong */
};

int agent_parse_event(const void *data, size_t len, struct agent_event *ev, struct cv_error *err);
void agent_event_free(struct agent_event *ev);

int agent_send_started(int fd, int pid, struct cv_error *err);
int agent_send_exit(int fd, int status, struct cv_error *err);
int agent_send_error(int fd, const char *message, struct cv_error *err);
int agent_send_pong(int fd, const char *version, struct cv_error *err);

/*
 * ---- replies to the one-shot queries: info, freeze, thaw ----
 *
 * They are parsed apart from agent_parse_event, whose event kinds describe an exec stream and are
 * switched over exhaustively by clients; a query's answer is its reply or an error event.
 */

/* Per-CPU time since boot, in nanoseconds, from /proc/stat (one entry per online CPU). */
struct agent_cpu_times {
	unsigned id;       /* the N of cpuN */
	uint64_t user, nice, system, idle, iowait, irq, softirq, steal;
};

/* One mounted filesystem with storage behind it; sizes in bytes from statvfs. */
struct agent_fs_usage {
	char *path;        /* mount point */
	char *type;        /* e.g. "ext4", "tmpfs" */
	char *source;      /* e.g. "/dev/vda"; as the kernel lists it */
	uint64_t size, used, available;  /* available: to unprivileged users */
	bool readonly;
};

/* At most this many CPUs and filesystems are reported, so the reply fits in one frame. */
#define AGENT_INFO_MAX_CPUS 1024
#define AGENT_INFO_MAX_FS 1024

struct agent_info {
	char *hostname;
	char *kernel;      /* uname release */
	double uptime;     /* seconds since boot, suspend included */
	double load[3];    /* 1, 5 and 15 minute load averages */
	uint64_t mem_total, mem_free, mem_available;  /* bytes */
	struct agent_cpu_times *cpus;
	size_t ncpus;
	struct agent_fs_usage *fs;
	size_t nfs;
};

void agent_info_free(struct agent_info *info);

/* One path a freeze or thaw could not handle. */
struct agent_path_error {
	char *path;
	char *message;
};

/*
 * The answer to freeze ("frozen") or thaw ("thawed"). A freeze is all or nothing: with errors,
 * paths is empty and nothing this request froze remains frozen. A thaw does what it can.
 */
struct agent_fs_result {
	bool thaw;
	char **paths;      /* NULL-terminated (never NULL once parsed or built) */
	size_t npaths;
	struct agent_path_error *errors;
	size_t nerrors;
};

void agent_fs_result_free(struct agent_fs_result *res);
/* Appends to a result being built; copies the strings. */
int agent_fs_result_add_path(struct agent_fs_result *res, const char *path, struct cv_error *err);
int agent_fs_result_add_error(struct agent_fs_result *res, const char *path, const char *message,
			      struct cv_error *err);

enum agent_reply_kind {
	AGENT_REPLY_ERROR,
	AGENT_REPLY_INFO,
	AGENT_REPLY_FROZEN,
	AGENT_REPLY_THAWED,
};

struct agent_reply {
	enum agent_reply_kind kind;
	char *message;                 /* error */
	struct agent_info info;        /* info */
	struct agent_fs_result fs;     /* frozen, thawed */
};

/* Parses the answer to info, freeze or thaw: the reply itself or an error event. */
int agent_parse_reply(const void *data, size_t len, struct agent_reply *reply, struct cv_error *err);
void agent_reply_free(struct agent_reply *reply);

int agent_send_info_event(int fd, const struct agent_info *info, struct cv_error *err);
int agent_send_fs_result(int fd, const struct agent_fs_result *res, struct cv_error *err);

#endif
