/*
 * libFuzzer target for the cvisor-agent wire protocol (src/agent/proto.c): the frame decoders and
 * the strict JSON parsers of requests, events and replies, which see whatever a guest (or a
 * compromised agent) writes. Byte 0 of an input selects the mode:
 *   bit 0 set   the rest is one CONTROL payload, given to every JSON parser;
 *   bit 0 clear the rest is a byte stream of frames, decoded by agent_reader (fed through a pipe
 *               in chunks whose sizes derive from bits 1-7) and by agent_recv_frame (from a
 *               file); each CONTROL payload among the frames then goes to the parsers.
 * These invariants abort on violation:
 *   - both decoders produce exactly the frames of a reference decoder written from
 *     docs/agent-protocol.md (big-endian length, known type, at most 1 MiB), with NUL-terminated
 *     data, report a bad header at the same frame, a truncated stream as an error (and as
 *     "partial" for the incremental reader), and a clean end as 0;
 *   - what a parser accepts satisfies what proto.h promises (non-empty command, NAME=VALUE
 *     environment, absolute cwd and paths, 1..256 paths, sizes and signals in range...);
 *   - what a parser accepts survives the round trip: encoded with the matching agent_send_*
 *     into a frame, received and parsed again, it is the same message;
 *   - nothing leaks (libFuzzer's leak detection) or touches freed memory (ASan).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static _Noreturn void fail(int line, const char *what)
{
	fprintf(stderr, "fuzz_agent_proto.c:%d: invariant broken: %s\n", line, what);
	abort();
}

/* ---- reference frame decoder ---- */

struct ref_frame {
	uint8_t type;
	uint32_t len;
	const uint8_t *data;
};

enum ref_end { REF_CLEAN, REF_PARTIAL, REF_BAD };

/* Decodes up to max frames; returns how many, with how the stream ends in *end. */
static size_t ref_decode(const uint8_t *p, size_t n, struct ref_frame *out, size_t max,
			 enum ref_end *end)
{
	size_t count = 0, off = 0;
	for (;;) {
		if (n - off < AGENT_FRAME_HEADER) {
			*end = off == n ? REF_CLEAN : REF_PARTIAL;
			return count;
		}
		const uint8_t *h = p + off;
		uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
		if (h[4] < AGENT_FRAME_CONTROL || h[4] > AGENT_FRAME_STDERR || len > AGENT_MAX_PAYLOAD) {
			*end = REF_BAD;
			return count;
		}
		if (n - off - AGENT_FRAME_HEADER < len) {
			*end = REF_PARTIAL;
			return count;
		}
		CHECK(count < max);
		out[count++] = (struct ref_frame){ h[4], len, h + AGENT_FRAME_HEADER };
		off += AGENT_FRAME_HEADER + len;
	}
}

static void same_frame(const struct agent_frame *f, const struct ref_frame *r)
{
	CHECK(f->type == r->type && f->len == r->len);
	if (r->len) {
		CHECK(f->data && memcmp(f->data, r->data, r->len) == 0 && f->data[r->len] == 0);
	} else {
		CHECK(f->data == NULL);
	}
}

/* ---- the parsers' promises and round trips ---- */

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_strv(char *const *a, char *const *b)
{
	if (!a || !b)
		return a == b;
	for (; *a && *b; a++, b++)
		if (strcmp(*a, *b) != 0)
			return false;
	return !*a && !*b;
}

/* A memfd holding one frame written by an encoder, read back as a CONTROL payload. */
static int encoded_open(void)
{
	int fd = memfd_create("fuzz-agent-proto", MFD_CLOEXEC);
	CHECK(fd >= 0);
	return fd;
}

static struct agent_frame encoded_read(int fd)
{
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	struct agent_frame f;
	struct cv_error err = { 0 };
	CHECK(agent_recv_frame(fd, &f, &err) == 1);
	CHECK(f.type == AGENT_FRAME_CONTROL);
	struct agent_frame extra;
	CHECK(agent_recv_frame(fd, &extra, &err) == 0);   /* exactly one frame */
	close(fd);
	return f;
}

static void request_promises(const struct agent_request *r)
{
	if (r->op == AGENT_OP_EXEC) {
		CHECK(r->argv && r->argv[0] && r->argv[0][0]);
		for (char **e = r->env; e && *e; e++)
			CHECK((*e)[0] != '=' && strchr(*e, '='));
		CHECK(!r->cwd || r->cwd[0] == '/');
		CHECK(r->rows >= 1 && r->rows <= AGENT_TTY_MAX && r->cols >= 1 &&
		      r->cols <= AGENT_TTY_MAX);
	}
	if (r->op == AGENT_OP_RESIZE)
		CHECK(r->rows >= 1 && r->rows <= AGENT_TTY_MAX && r->cols >= 1 &&
		      r->cols <= AGENT_TTY_MAX);
	if (r->op == AGENT_OP_SIGNAL)
		CHECK(r->signal >= 1 && r->signal <= 64);
	if (r->op == AGENT_OP_FREEZE || r->op == AGENT_OP_THAW) {
		size_t n = 0;
		for (; r->paths && r->paths[n]; n++)
			CHECK(r->paths[n][0] == '/');
		CHECK(!r->paths || (n >= 1 && n <= AGENT_MAX_PATHS));
	} else {
		CHECK(!r->paths);
	}
}

static void request_round_trip(const struct agent_request *r)
{
	int fd = encoded_open();
	struct cv_error err = { 0 };
	int rc = -1;
	/* signal and resize belong to a session: their encoders carry no token. */
	bool has_token = r->op != AGENT_OP_SIGNAL && r->op != AGENT_OP_RESIZE;
	switch (r->op) {
	case AGENT_OP_EXEC: {
		struct agent_exec_spec spec = {
			.argv = r->argv, .env = r->env, .cwd = r->cwd, .stdin_open = r->stdin_open,
			.tty = r->tty, .rows = r->rows, .cols = r->cols,
		};
		rc = agent_send_exec_spec(fd, &spec, r->token, &err);
		break;
	}
	case AGENT_OP_SIGNAL: rc = agent_send_signal(fd, r->signal, &err); break;
	case AGENT_OP_RESIZE: rc = agent_send_resize(fd, r->rows, r->cols, &err); break;
	case AGENT_OP_PING: rc = agent_send_ping(fd, r->token, &err); break;
	case AGENT_OP_POWEROFF: rc = agent_send_poweroff(fd, r->token, &err); break;
	case AGENT_OP_INFO: rc = agent_send_info_request(fd, r->token, &err); break;
	case AGENT_OP_SHUTDOWN: rc = agent_send_shutdown(fd, r->action, r->token, &err); break;
	case AGENT_OP_FREEZE: rc = agent_send_freeze(fd, r->paths, r->token, &err); break;
	case AGENT_OP_THAW: rc = agent_send_thaw(fd, r->paths, r->token, &err); break;
	}
	if (rc < 0)
		fprintf(stderr, "fuzz_agent_proto: encoding an accepted request failed: %s\n", err.msg);
	CHECK(rc == 0);
	struct agent_frame f = encoded_read(fd);
	struct agent_request again;
	if (agent_parse_request(f.data, f.len, &again, &err) < 0)
		fprintf(stderr, "fuzz_agent_proto: re-parsing failed: %s\n", err.msg);
	CHECK(again.op == r->op);
	CHECK(same_strv(again.argv, r->argv) && same_strv(again.env, r->env));
	CHECK(same_str(again.cwd, r->cwd) && again.stdin_open == r->stdin_open);
	CHECK(again.tty == r->tty && again.rows == r->rows && again.cols == r->cols);
	CHECK(again.signal == r->signal && again.action == r->action);
	CHECK(same_strv(again.paths, r->paths));
	CHECK(has_token ? same_str(again.token, r->token) : again.token == NULL);
	agent_request_free(&again);
	agent_frame_free(&f);
}

static void event_round_trip(const struct agent_event *ev)
{
	int fd = encoded_open();
	struct cv_error err = { 0 };
	int rc = -1;
	switch (ev->kind) {
	case AGENT_EV_STARTED:
		CHECK(ev->pid >= 1);
		rc = agent_send_started(fd, ev->pid, &err);
		break;
	case AGENT_EV_EXIT:
		CHECK(ev->status >= 0 && ev->status <= 255);
		rc = agent_send_exit(fd, ev->status, &err);
		break;
	case AGENT_EV_ERROR:
		CHECK(ev->message);
		rc = agent_send_error(fd, ev->message, &err);
		break;
	case AGENT_EV_PONG:
		CHECK(ev->version);
		rc = agent_send_pong(fd, ev->version, &err);
		break;
	}
	CHECK(rc == 0);
	struct agent_frame f = encoded_read(fd);
	struct agent_event again;
	CHECK(agent_parse_event(f.data, f.len, &again, &err) == 0);
	CHECK(again.kind == ev->kind && again.pid == ev->pid && again.status == ev->status);
	CHECK(same_str(again.message, ev->message) && same_str(again.version, ev->version));
	agent_event_free(&again);
	agent_frame_free(&f);
}

static bool same_info(const struct agent_info *a, const struct agent_info *b)
{
	if (!same_str(a->hostname, b->hostname) || !same_str(a->kernel, b->kernel) ||
	    a->uptime != b->uptime || a->mem_total != b->mem_total ||
	    a->mem_free != b->mem_free || a->mem_available != b->mem_available ||
	    a->ncpus != b->ncpus || a->nfs != b->nfs)
		return false;
	for (int i = 0; i < 3; i++)
		if (a->load[i] != b->load[i])
			return false;
	for (size_t i = 0; i < a->ncpus; i++)
		if (memcmp(&a->cpus[i], &b->cpus[i], sizeof(a->cpus[i])) != 0)
			return false;
	for (size_t i = 0; i < a->nfs; i++) {
		const struct agent_fs_usage *x = &a->fs[i], *y = &b->fs[i];
		if (!same_str(x->path, y->path) || !same_str(x->type, y->type) ||
		    !same_str(x->source, y->source) || x->size != y->size || x->used != y->used ||
		    x->available != y->available || x->readonly != y->readonly)
			return false;
	}
	return true;
}

static bool same_fs_result(const struct agent_fs_result *a, const struct agent_fs_result *b)
{
	if (a->thaw != b->thaw || a->npaths != b->npaths || a->nerrors != b->nerrors ||
	    !same_strv(a->paths, b->paths))
		return false;
	for (size_t i = 0; i < a->nerrors; i++)
		if (!same_str(a->errors[i].path, b->errors[i].path) ||
		    !same_str(a->errors[i].message, b->errors[i].message))
			return false;
	return true;
}

static void reply_round_trip(const struct agent_reply *r)
{
	int fd = encoded_open();
	struct cv_error err = { 0 };
	int rc = -1;
	switch (r->kind) {
	case AGENT_REPLY_ERROR:
		rc = agent_send_error(fd, r->message, &err);
		break;
	case AGENT_REPLY_INFO:
		CHECK(r->info.ncpus <= AGENT_INFO_MAX_CPUS && r->info.nfs <= AGENT_INFO_MAX_FS);
		CHECK(r->info.uptime >= 0 && r->info.load[0] >= 0 && r->info.load[1] >= 0 &&
		      r->info.load[2] >= 0);
		rc = agent_send_info_event(fd, &r->info, &err);
		break;
	case AGENT_REPLY_FROZEN:
	case AGENT_REPLY_THAWED:
		CHECK(r->fs.paths && !r->fs.paths[r->fs.npaths]);
		rc = agent_send_fs_result(fd, &r->fs, &err);
		break;
	}
	if (rc < 0)
		fprintf(stderr, "fuzz_agent_proto: encoding an accepted reply failed: %s\n", err.msg);
	CHECK(rc == 0);
	struct agent_frame f = encoded_read(fd);
	struct agent_reply again;
	if (agent_parse_reply(f.data, f.len, &again, &err) < 0)
		fprintf(stderr, "fuzz_agent_proto: re-parsing failed: %s\n", err.msg);
	CHECK(again.kind == r->kind);
	CHECK(same_str(again.message, r->message));
	CHECK(same_info(&again.info, &r->info));
	CHECK(same_fs_result(&again.fs, &r->fs));
	agent_reply_free(&again);
	agent_frame_free(&f);
}

/* One CONTROL payload through every parser. */
static void check_payload(const uint8_t *p, size_t n)
{
	struct cv_error err = { 0 };
	struct agent_request req;
	if (agent_parse_request(p, n, &req, &err) == 0) {
		request_promises(&req);
		request_round_trip(&req);
	} else {
		CHECK(err.msg[0] && !req.argv && !req.env && !req.cwd && !req.paths && !req.token);
	}
	agent_request_free(&req);
	struct agent_event ev;
	if (agent_parse_event(p, n, &ev, &err) == 0)
		event_round_trip(&ev);
	agent_event_free(&ev);
	struct agent_reply reply;
	if (agent_parse_reply(p, n, &reply, &err) == 0)
		reply_round_trip(&reply);
	agent_reply_free(&reply);
}

/* ---- the decoders ---- */

#define MAX_FRAMES 8192

static struct ref_frame frames[MAX_FRAMES];

/* agent_reader fed through a pipe in chunks of varying size. */
static void check_reader(const uint8_t *p, size_t n, size_t nframes, enum ref_end end,
			 unsigned seed)
{
	int fds[2];
	CHECK(pipe2(fds, O_CLOEXEC) == 0);
	struct agent_reader r;
	agent_reader_init(&r);
	struct cv_error err = { 0 };
	size_t got = 0, off = 0;
	bool bad = false;
	for (unsigned i = 0; off < n && !bad; i++) {
		size_t chunk = 1 + (seed * 37u + i * 13u) % 512;
		if (chunk > n - off)
			chunk = n - off;
		CHECK(write(fds[1], p + off, chunk) == (ssize_t)chunk);
		off += chunk;
		CHECK(agent_reader_fill(&r, fds[0], &err) == (ssize_t)chunk);
		for (;;) {
			struct agent_frame f;
			int rc = agent_reader_next(&r, &f, &err);
			if (rc == 0)
				break;
			if (rc < 0) {
				/* A bad header is reported as soon as its 5 bytes are in. */
				CHECK(end == REF_BAD && got == nframes);
				bad = true;
				break;
			}
			CHECK(got < nframes);
			same_frame(&f, &frames[got++]);
			agent_frame_free(&f);
		}
	}
	close(fds[1]);
	if (!bad) {
		CHECK(got == nframes && end != REF_BAD);
		CHECK(agent_reader_fill(&r, fds[0], &err) == 0);
		CHECK(agent_reader_partial(&r) == (end == REF_PARTIAL));
	}
	close(fds[0]);
	agent_reader_free(&r);
}

/* agent_recv_frame reading the stream from a file. */
static void check_recv(const uint8_t *p, size_t n, size_t nframes, enum ref_end end)
{
	int fd = memfd_create("fuzz-agent-stream", MFD_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(n == 0 || write(fd, p, n) == (ssize_t)n);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	struct cv_error err = { 0 };
	for (size_t i = 0;; i++) {
		struct agent_frame f;
		int rc = agent_recv_frame(fd, &f, &err);
		if (i < nframes) {
			CHECK(rc == 1);
			same_frame(&f, &frames[i]);
			agent_frame_free(&f);
			continue;
		}
		CHECK(rc == (end == REF_CLEAN ? 0 : -1));
		CHECK(f.data == NULL);
		break;
	}
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	if (mode & 1) {
		check_payload(p, n);
		return 0;
	}
	enum ref_end end;
	size_t nframes = ref_decode(p, n, frames, MAX_FRAMES, &end);
	check_reader(p, n, nframes, end, mode >> 1);
	check_recv(p, n, nframes, end);
	for (size_t i = 0; i < nframes; i++)
		if (frames[i].type == AGENT_FRAME_CONTROL)
			check_payload(frames[i].data, frames[i].len);
	return 0;
}
