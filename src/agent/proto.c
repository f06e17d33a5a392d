/*
 * Implementation of the agent wire protocol (proto.h): frame encoding and decoding, and strict
 * parsing/encoding of the JSON control messages. Every input is untrusted: sizes are checked
 * before allocation and JSON is validated field by field, so a bad peer yields an error, never a
 * crash or an unbounded allocation.
 */
#include "proto.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util.h"

void agent_frame_free(struct agent_frame *f)
{
	free(f->data);
	f->data = NULL;
	f->len = 0;
}

static bool type_known(uint8_t type)
{
	return type >= AGENT_FRAME_CONTROL && type <= AGENT_FRAME_STDERR;
}

static void put_header(uint8_t hdr[AGENT_FRAME_HEADER], uint8_t type, uint32_t len)
{
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
	hdr[4] = type;
}

/* Validates a header; fills *len. Shared by the blocking and the incremental decoder. */
static int check_header(const uint8_t hdr[AGENT_FRAME_HEADER], uint32_t *len, struct cv_error *err)
{
	uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (!type_known(hdr[4]))
		return cv_fail(err, CV_EXIT_DATAERR, "protocol error: unknown frame type %u", hdr[4]);
	if (n > AGENT_MAX_PAYLOAD)
		return cv_fail(err, CV_EXIT_DATAERR,
			       "protocol error: frame of %u bytes exceeds the limit of %u", n,
			       AGENT_MAX_PAYLOAD);
	*len = n;
	return 0;
}

int agent_send_frame(int fd, uint8_t type, const void *data, size_t len, struct cv_error *err)
{
	if (!type_known(type))
		return cv_fail(err, CV_EXIT_SOFTWARE, "send frame: unknown frame type %u", type);
	if (len > AGENT_MAX_PAYLOAD)
		return cv_fail(err, CV_EXIT_USAGE, "send frame: %zu bytes exceeds the limit of %u",
			       len, AGENT_MAX_PAYLOAD);
	uint8_t hdr[AGENT_FRAME_HEADER];
	put_header(hdr, type, (uint32_t)len);
	struct iovec iov[2] = {
		{ .iov_base = hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)data, .iov_len = len },
	};
	int iovcnt = len ? 2 : 1;
	bool is_socket = true;
	struct iovec *cur = iov;
	while (iovcnt > 0) {
		ssize_t w;
		if (is_socket) {
			/* MSG_NOSIGNAL: a vanished peer is an error to report, not a reason to die. */
			struct msghdr mh = { .msg_iov = cur, .msg_iovlen = (size_t)iovcnt };
			w = sendmsg(fd, &mh, MSG_NOSIGNAL);
			if (w < 0 && errno == ENOTSOCK) {
				is_socket = false;
				continue;
			}
		} else {
			w = writev(fd, cur, iovcnt);
		}
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return cv_fail_errno(err, CV_EXIT_IOERR, "send frame");
		}
		size_t done = (size_t)w;
		while (iovcnt > 0 && done >= cur->iov_len) {
			done -= cur->iov_len;
			cur++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			cur->iov_base = (uint8_t *)cur->iov_base + done;
			cur->iov_len -= done;
		}
	}
	return 0;
}

int agent_recv_frame(int fd, struct agent_frame *f, struct cv_error *err)
{
	memset(f, 0, sizeof(*f));
	uint8_t hdr[AGENT_FRAME_HEADER];
	ssize_t n = cv_read_full(fd, hdr, sizeof(hdr));
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return cv_fail(err, CV_EXIT_IOERR, "receive frame: timed out");
		return cv_fail_errno(err, CV_EXIT_IOERR, "receive frame");
	}
	if (n == 0)
		return 0;
	if ((size_t)n < sizeof(hdr))
		return cv_fail(err, CV_EXIT_DATAERR, "protocol error: stream ended inside a frame header");
	uint32_t len;
	if (check_header(hdr, &len, err) < 0)
		return -1;
	f->type = hdr[4];
	if (len == 0)
		return 1;
	f->data = malloc((size_t)len + 1);
	if (!f->data)
		return cv_fail(err, CV_EXIT_OSERR, "receive frame: out of memory (%u bytes)", len);
	n = cv_read_full(fd, f->data, len);
	if (n < 0 || (size_t)n < len) {
		int saved = errno;
		agent_frame_free(f);
		if (n >= 0)
			return cv_fail(err, CV_EXIT_DATAERR,
				       "protocol error: stream ended inside a %u-byte frame", len);
		errno = saved;
		return cv_fail_errno(err, CV_EXIT_IOERR, "receive frame");
	}
	f->data[len] = 0;
	f->len = len;
	return 1;
}

void agent_reader_init(struct agent_reader *r)
{
	memset(r, 0, sizeof(*r));
}

void agent_reader_free(struct agent_reader *r)
{
	free(r->buf);
	agent_reader_init(r);
}

bool agent_reader_partial(const struct agent_reader *r)
{
	return r->len > 0;
}

ssize_t agent_reader_fill(struct agent_reader *r, int fd, struct cv_error *err)
{
	/*
	 * Room for one maximal frame plus a read chunk bounds the buffer; a header is validated as
	 * soon as it is complete, so the buffer never grows past that even for a hostile peer.
	 */
	const size_t chunk = 65536;
	if (r->cap - r->len < chunk) {
		size_t ncap = r->len + chunk;
		uint8_t *n = realloc(r->buf, ncap);
		if (!n)
			return cv_fail(err, CV_EXIT_OSERR, "receive: out of memory (%zu bytes)", ncap);
		r->buf = n;
		r->cap = ncap;
	}
	for (;;) {
		ssize_t got = read(fd, r->buf + r->len, r->cap - r->len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			cv_fail_errno(err, CV_EXIT_IOERR, "receive");
			return -1;
		}
		r->len += (size_t)got;
		return got;
	}
}

int agent_reader_next(struct agent_reader *r, struct agent_frame *f, struct cv_error *err)
{
	memset(f, 0, sizeof(*f));
	if (r->len < AGENT_FRAME_HEADER)
		return 0;
	uint32_t len;
	if (check_header(r->buf, &len, err) < 0)
		return -1;
	if (r->len < AGENT_FRAME_HEADER + (size_t)len)
		return 0;
	f->type = r->buf[4];
	if (len) {
		f->data = malloc((size_t)len + 1);
		if (!f->data)
			return cv_fail(err, CV_EXIT_OSERR, "receive: out of memory (%u bytes)", len);
		memcpy(f->data, r->buf + AGENT_FRAME_HEADER, len);
		f->data[len] = 0;
		f->len = len;
	}
	size_t used = AGENT_FRAME_HEADER + (size_t)len;
	memmove(r->buf, r->buf + used, r->len - used);
	r->len -= used;
	return 1;
}

/* ---- JSON helpers ---- */

static json_t *parse_object(const void *data, size_t len, const char *what, struct cv_error *err)
{
	json_error_t jerr;
	/* Duplicate keys would make "which value counts" ambiguous between implementations. */
	json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		cv_fail(err, CV_EXIT_DATAERR, "invalid %s: %s (at byte %d)", what, jerr.text,
			jerr.position);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		cv_fail(err, CV_EXIT_DATAERR, "invalid %s: not a JSON object", what);
		return NULL;
	}
	return root;
}

/* Fails if obj has a key outside the NULL-terminated `allowed` list. */
static int only_keys(json_t *obj, const char *const *allowed, const char *what,
		     struct cv_error *err)
{
	const char *key;
	json_t *val;
	json_object_foreach(obj, key, val) {
		(void)val;
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(key, *a) == 0)
				ok = true;
		if (!ok)
			return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: unexpected field '%s'", what,
				       key);
	}
	return 0;
}

/* Optional string field: *out is NULL if absent, a copy otherwise. */
static int get_string(json_t *obj, const char *key, bool required, char **out, const char *what,
		      struct cv_error *err)
{
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v) {
		if (required)
			return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: missing '%s'", what, key);
		return 0;
	}
	if (!json_is_string(v))
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' must be a string", what, key);
	*out = strdup(json_string_value(v));
	if (!*out)
		return cv_fail(err, CV_EXIT_OSERR, "%s: out of memory", what);
	return 0;
}

static int get_int(json_t *obj, const char *key, long long min, long long max, long long *out,
		   const char *what, struct cv_error *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: missing '%s'", what, key);
	if (!json_is_integer(v))
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' must be an integer", what, key);
	long long n = json_integer_value(v);
	if (n < min || n > max)
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' = %lld is out of range %lld..%lld",
			       what, key, n, min, max);
	*out = n;
	return 0;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* Array of strings to a NULL-terminated copy. need_eq: each must look like "K=V" with K non-empty. */
static int get_strv(json_t *obj, const char *key, bool required, bool need_eq, char ***out,
		    struct cv_error *err)
{
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v) {
		if (required)
			return cv_fail(err, CV_EXIT_DATAERR, "invalid exec request: missing '%s'", key);
		return 0;
	}
	if (!json_is_array(v))
		return cv_fail(err, CV_EXIT_DATAERR,
			       "invalid exec request: '%s' must be an array of strings", key);
	size_t n = json_array_size(v);
	char **list = calloc(n + 1, sizeof(*list));
	if (!list)
		return cv_fail(err, CV_EXIT_OSERR, "exec request: out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(v, i);
		if (!json_is_string(s)) {
			free_strv(list);
			return cv_fail(err, CV_EXIT_DATAERR,
				       "invalid exec request: %s[%zu] is not a string", key, i);
		}
		const char *str = json_string_value(s);
		if (need_eq && (str[0] == '=' || !strchr(str, '='))) {
			free_strv(list);
			return cv_fail(err, CV_EXIT_DATAERR,
				       "invalid exec request: %s[%zu] is not of the form NAME=VALUE",
				       key, i);
		}
		list[i] = strdup(str);
		if (!list[i]) {
			free_strv(list);
			return cv_fail(err, CV_EXIT_OSERR, "exec request: out of memory");
		}
	}
	*out = list;
	return 0;
}

/* Serialises obj (consumed) into one CONTROL frame. */
static int send_json(int fd, json_t *obj, struct cv_error *err)
{
	if (!obj)
		return cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
	char *text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (!text)
		return cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
	size_t len = strlen(text);
	int rc;
	if (len > AGENT_MAX_PAYLOAD)
		rc = cv_fail(err, CV_EXIT_USAGE,
			     "control message of %zu bytes exceeds the limit of %u (too many arguments or environment variables?)",
			     len, AGENT_MAX_PAYLOAD);
	else
		rc = agent_send_frame(fd, AGENT_FRAME_CONTROL, text, len, err);
	free(text);
	return rc;
}

/* json_string fails on invalid UTF-8; name the offending value instead of "out of memory". */
static json_t *utf8_string(const char *s, const char *what, struct cv_error *err)
{
	json_t *j = json_string(s);
	if (!j)
		cv_fail(err, CV_EXIT_USAGE, "%s '%.64s' is not valid UTF-8 (the protocol carries text only)",
			what, s);
	return j;
}

static json_t *strv_to_json(char *const *v, const char *what, struct cv_error *err)
{
	json_t *arr = json_array();
	if (!arr) {
		cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
		return NULL;
	}
	for (; *v; v++) {
		json_t *s = utf8_string(*v, what, err);
		if (!s || json_array_append_new(arr, s) < 0) {
			json_decref(arr);
			if (s)
				cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
			return NULL;
		}
	}
	return arr;
}

/* Adds "token" when one is configured. Returns 0, or -1 (obj untouched, caller releases it). */
static int add_token(json_t *obj, const char *token, struct cv_error *err)
{
	if (!token)
		return 0;
	json_t *t = utf8_string(token, "token", err);
	if (!t)
		return -1;
	if (json_object_set_new(obj, "token", t) < 0)
		return cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
	return 0;
}

/* Sets obj[key] = val (consumed); fails on a NULL val (err already set) or out of memory. */
static int set_field(json_t *obj, const char *key, json_t *val, struct cv_error *err)
{
	if (!val)
		return -1;
	if (json_object_set_new(obj, key, val) < 0)
		return cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
	return 0;
}

/* A request that is just {"op": op} plus the optional token. */
static int send_simple_op(int fd, const char *op, const char *token, struct cv_error *err)
{
	json_t *obj = json_pack("{s:s}", "op", op);
	if (!obj)
		return cv_fail(err, CV_EXIT_OSERR, "encode %s request: out of memory", op);
	if (add_token(obj, token, err) < 0) {
		json_decref(obj);
		return -1;
	}
	return send_json(fd, obj, err);
}

/* ---- requests ---- */

void agent_request_free(struct agent_request *req)
{
	free_strv(req->argv);
	free_strv(req->env);
	free(req->cwd);
	free(req->token);
	memset(req, 0, sizeof(*req));
}

int agent_parse_request(const void *data, size_t len, struct agent_request *req,
			struct cv_error *err)
{
	memset(req, 0, sizeof(*req));
	json_t *root = parse_object(data, len, "request", err);
	if (!root)
		return -1;
	char *op = NULL;
	int rc = -1;
	if (get_string(root, "op", true, &op, "request", err) < 0)
		goto out;
	if (get_string(root, "token", false, &req->token, "request", err) < 0)
		goto out;
	if (strcmp(op, "exec") == 0) {
		static const char *const keys[] = { "op", "token", "argv", "env", "cwd", "stdin", NULL };
		req->op = AGENT_OP_EXEC;
		if (only_keys(root, keys, "exec request", err) < 0 ||
		    get_strv(root, "argv", true, false, &req->argv, err) < 0 ||
		    get_strv(root, "env", false, true, &req->env, err) < 0 ||
		    get_string(root, "cwd", false, &req->cwd, "exec request", err) < 0)
			goto out;
		if (!req->argv[0] || !req->argv[0][0]) {
			cv_fail(err, CV_EXIT_DATAERR, "invalid exec request: 'argv' must start with a non-empty command");
			goto out;
		}
		if (req->cwd && req->cwd[0] != '/') {
			cv_fail(err, CV_EXIT_DATAERR, "invalid exec request: 'cwd' must be an absolute path");
			goto out;
		}
		json_t *in = json_object_get(root, "stdin");
		if (in && !json_is_boolean(in)) {
			cv_fail(err, CV_EXIT_DATAERR, "invalid exec request: 'stdin' must be a boolean");
			goto out;
		}
		req->stdin_open = in && json_is_true(in);
	} else if (strcmp(op, "signal") == 0) {
		static const char *const keys[] = { "op", "token", "signal", NULL };
		long long signo;
		req->op = AGENT_OP_SIGNAL;
		if (only_keys(root, keys, "signal request", err) < 0 ||
		    get_int(root, "signal", 1, 64, &signo, "signal request", err) < 0)
			goto out;
		req->signal = (int)signo;
	} else if (strcmp(op, "ping") == 0 || strcmp(op, "poweroff") == 0) {
		static const char *const keys[] = { "op", "token", NULL };
		req->op = op[0] == 'p' && op[1] == 'i' ? AGENT_OP_PING : AGENT_OP_POWEROFF;
		if (only_keys(root, keys, "request", err) < 0)
			goto out;
	} else {
		cv_fail(err, CV_EXIT_DATAERR, "invalid request: unknown op '%.64s'", op);
		goto out;
	}
	rc = 0;
out:
	free(op);
	json_decref(root);
	if (rc < 0)
		agent_request_free(req);
	return rc;
}

int agent_send_exec(int fd, char *const *argv, char *const *env, const char *cwd,
		    bool stdin_open, const char *token, struct cv_error *err)
{
	if (!argv || !argv[0] || !argv[0][0])
		return cv_fail(err, CV_EXIT_USAGE, "exec: no command given");
	if (cwd && cwd[0] != '/')
		return cv_fail(err, CV_EXIT_USAGE, "exec: working directory '%s' is not absolute", cwd);
	json_t *obj = json_pack("{s:s, s:b}", "op", "exec", "stdin", stdin_open);
	if (!obj)
		return cv_fail(err, CV_EXIT_OSERR, "encode exec request: out of memory");
	if (set_field(obj, "argv", strv_to_json(argv, "argument", err), err) < 0 ||
	    (env && set_field(obj, "env", strv_to_json(env, "environment entry", err), err) < 0) ||
	    (cwd && set_field(obj, "cwd", utf8_string(cwd, "working directory", err), err) < 0) ||
	    add_token(obj, token, err) < 0) {
		json_decref(obj);
		return -1;
	}
	return send_json(fd, obj, err);
}

int agent_send_signal(int fd, int signo, struct cv_error *err)
{
	if (signo < 1 || signo > 64)
		return cv_fail(err, CV_EXIT_USAGE, "signal %d is out of range 1..64", signo);
	return send_json(fd, json_pack("{s:s, s:i}", "op", "signal", "signal", signo), err);
}

int agent_send_ping(int fd, const char *token, struct cv_error *err)
{
	return send_simple_op(fd, "ping", token, err);
}

int agent_send_poweroff(int fd, const char *token, struct cv_error *err)
{
	return send_simple_op(fd, "poweroff", token, err);
}

/* ---- events ---- */

void agent_event_free(struct agent_event *ev)
{
	free(ev->message);
	free(ev->version);
	memset(ev, 0, sizeof(*ev));
}

int agent_parse_event(const void *data, size_t len, struct agent_event *ev, struct cv_error *err)
{
	memset(ev, 0, sizeof(*ev));
	json_t *root = parse_object(data, len, "event", err);
	if (!root)
		return -1;
	char *name = NULL;
	long long n;
	int rc = -1;
	if (get_string(root, "event", true, &name, "event", err) < 0)
		goto out;
	if (strcmp(name, "started") == 0) {
		static const char *const keys[] = { "event", "pid", NULL };
		ev->kind = AGENT_EV_STARTED;
		if (only_keys(root, keys, "started event", err) < 0 ||
		    get_int(root, "pid", 1, 0x7fffffff, &n, "started event", err) < 0)
			goto out;
		ev->pid = (int)n;
	} else if (strcmp(name, "exit") == 0) {
		static const char *const keys[] = { "event", "status", NULL };
		ev->kind = AGENT_EV_EXIT;
		if (only_keys(root, keys, "exit event", err) < 0 ||
		    get_int(root, "status", 0, 255, &n, "exit event", err) < 0)
			goto out;
		ev->status = (int)n;
	} else if (strcmp(name, "error") == 0) {
		static const char *const keys[] = { "event", "message", NULL };
		ev->kind = AGENT_EV_ERROR;
		if (only_keys(root, keys, "error event", err) < 0 ||
		    get_string(root, "message", true, &ev->message, "error event", err) < 0)
			goto out;
	} else if (strcmp(name, "pong") == 0) {
		static const char *const keys[] = { "event", "version", NULL };
		ev->kind = AGENT_EV_PONG;
		if (only_keys(root, keys, "pong event", err) < 0 ||
		    get_string(root, "version", true, &ev->version, "pong event", err) < 0)
			goto out;
	} else {
		cv_fail(err, CV_EXIT_DATAERR, "invalid event: unknown event '%.64s'", name);
		goto out;
	}
	rc = 0;
out:
	free(name);
	json_decref(root);
	if (rc < 0)
		agent_event_free(ev);
	return rc;
}

int agent_send_started(int fd, int pid, struct cv_error *err)
{
	return send_json(fd, json_pack("{s:s, s:i}", "event", "started", "pid", pid), err);
}

int agent_send_exit(int fd, int status, struct cv_error *err)
{
	return send_json(fd, json_pack("{s:s, s:i}", "event", "exit", "status", status), err);
}

int agent_send_error(int fd, const char *message, struct cv_error *err)
{
	/* Messages often quote paths; never let a non-UTF-8 byte turn an error into silence. */
	json_t *obj = json_pack("{s:s, s:s}", "event", "error", "message", message ? message : "");
	if (!obj)
		obj = json_pack("{s:s, s:s}", "event", "error", "message",
				"(message not valid UTF-8)");
	return send_json(fd, obj, err);
}

int agent_send_pong(int fd, const char *version, struct cv_error *err)
{
	return send_json(fd, json_pack("{s:s, s:s}", "event", "pong", "version", version), err);
}
