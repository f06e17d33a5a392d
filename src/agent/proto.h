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

/* ---- control messages: client to agent ---- */

enum agent_op {
	AGENT_OP_EXEC,
	AGENT_OP_SIGNAL,
	AGENT_OP_PING,
	AGENT_OP_POWEROFF,
};

struct agent_request {
	enum agent_op op;
	char **argv;       /* exec: NULL-terminated, at least one element */
	char **env;        /* exec: NULL-terminated "K=V" list, or NULL when absent */
	char *cwd;         /* exec: absolute path, or NULL when absent */
	bool stdin_open;   /* exec: the client will send STDIN frames */
	int signal;        /* signal: 1..64 */
	char *token;       /* any op: authentication token, or NULL when absent */
};

/* Parses and validates one CONTROL payload. On failure *req is left empty (safe to free). */
int agent_parse_request(const void *data, size_t len, struct agent_request *req,
			struct cv_error *err);
void agent_request_free(struct agent_request *req);

/* Encoders; token may be NULL. env and cwd may be NULL (omitted). */
int agent_send_exec(int fd, char *const *argv, char *const *env, const char *cwd,
		    bool stdin_open, const char *token, struct cv_error *err);
int agent_send_signal(int fd, int signo, struct cv_error *err);
int agent_send_ping(int fd, const char *token, struct cv_error *err);
int agent_send_poweroff(int fd, const char *token, struct cv_error *err);

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

#endif
