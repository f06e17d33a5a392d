/*
 * Implementation of the agent wire protocol (proto.h): frame encoding and decoding, and strict
 * parsing/encoding of the JSON control messages. Every input is untrusted: sizes are checked
 * before allocation and JSON is validated field by field, so a bad peer yields an error, never a
 * crash or an unbounded allocation.
 */
#include "proto.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
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

/* What a sender may put on the wire, checked before anything is written or queued. */
static int check_outgoing(uint8_t type, size_t len, struct cv_error *err)
{
	if (!type_known(type))
		return cv_fail(err, CV_EXIT_SOFTWARE, "send frame: unknown frame type %u", type);
	if (len > AGENT_MAX_PAYLOAD)
		return cv_fail(err, CV_EXIT_USAGE, "send frame: %zu bytes exceeds the limit of %u",
			       len, AGENT_MAX_PAYLOAD);
	return 0;
}

int agent_send_frame(int fd, uint8_t type, const void *data, size_t len, struct cv_error *err)
{
	if (check_outgoing(type, len, err) < 0)
		return -1;
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

void agent_outq_init(struct agent_outq *q)
{
	memset(q, 0, sizeof(*q));
}

void agent_outq_free(struct agent_outq *q)
{
	free(q->buf);
	agent_outq_init(q);
}

size_t agent_outq_pending(const struct agent_outq *q)
{
	return q->len - q->off;
}

int agent_outq_frame(struct agent_outq *q, uint8_t type, const void *data, size_t len,
		     struct cv_error *err)
{
	if (check_outgoing(type, len, err) < 0)
		return -1;
	if (q->off) {
		/* Written bytes are dropped first, so the queue holds only what is still owed. */
		memmove(q->buf, q->buf + q->off, q->len - q->off);
		q->len -= q->off;
		q->off = 0;
	}
	size_t need = q->len + AGENT_FRAME_HEADER + len;
	if (need > q->cap) {
		size_t cap = CV_MAX(need, 2 * q->cap);
		uint8_t *b = realloc(q->buf, cap);
		if (!b)
			return cv_fail(err, CV_EXIT_OSERR, "queue frame: out of memory (%zu bytes)", cap);
		q->buf = b;
		q->cap = cap;
	}
	put_header(q->buf + q->len, type, (uint32_t)len);
	if (len)
		memcpy(q->buf + q->len + AGENT_FRAME_HEADER, data, len);
	q->len = need;
	return 0;
}

int agent_outq_flush(struct agent_outq *q, int fd, struct cv_error *err)
{
	while (q->off < q->len) {
		ssize_t w = send(fd, q->buf + q->off, q->len - q->off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0 && errno == ENOTSOCK)
			w = write(fd, q->buf + q->off, q->len - q->off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			int e = errno;
			cv_fail_errno(err, CV_EXIT_IOERR, "send frame");
			errno = e;   /* callers tell a closed peer from other failures */
			return -1;
		}
		q->off += (size_t)w;
	}
	q->off = q->len = 0;
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

/*
 * Array of strings to a NULL-terminated copy. need_eq: each must look like "K=V" with K non-empty.
 * An absent key leaves *out NULL (an error only if required).
 */
static int get_strv(json_t *obj, const char *key, bool required, bool need_eq, char ***out,
		    const char *what, struct cv_error *err)
{
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v) {
		if (required)
			return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: missing '%s'", what, key);
		return 0;
	}
	if (!json_is_array(v))
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' must be an array of strings",
			       what, key);
	size_t n = json_array_size(v);
	char **list = calloc(n + 1, sizeof(*list));
	if (!list)
		return cv_fail(err, CV_EXIT_OSERR, "%s: out of memory", what);
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(v, i);
		if (!json_is_string(s)) {
			free_strv(list);
			return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: %s[%zu] is not a string", what,
				       key, i);
		}
		const char *str = json_string_value(s);
		if (need_eq && (str[0] == '=' || !strchr(str, '='))) {
			free_strv(list);
			return cv_fail(err, CV_EXIT_DATAERR,
				       "invalid %s: %s[%zu] is not of the form NAME=VALUE", what, key, i);
		}
		list[i] = strdup(str);
		if (!list[i]) {
			free_strv(list);
			return cv_fail(err, CV_EXIT_OSERR, "%s: out of memory", what);
		}
	}
	*out = list;
	return 0;
}

/* Optional boolean field: false when absent. */
static int get_bool(json_t *obj, const char *key, bool *out, const char *what, struct cv_error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = false;
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' must be a boolean", what, key);
	*out = json_is_true(v);
	return 0;
}

/* A number (integer or real) within [min, max]. */
static int get_double(json_t *obj, const char *key, double min, double max, double *out,
		      const char *what, struct cv_error *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: missing '%s'", what, key);
	if (!json_is_number(v))
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' must be a number", what, key);
	double d = json_number_value(v);
	if (!(d >= min && d <= max))
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' is out of range", what, key);
	*out = d;
	return 0;
}

/* A byte or time count: a non-negative JSON integer. */
static int get_u64(json_t *obj, const char *key, uint64_t *out, const char *what,
		   struct cv_error *err)
{
	long long n;
	if (get_int(obj, key, 0, LLONG_MAX, &n, what, err) < 0)
		return -1;
	*out = (uint64_t)n;
	return 0;
}

/* Serialises obj (consumed) into the text of one CONTROL frame; *text is malloc'd. */
static int control_text(json_t *obj, char **text, size_t *len, struct cv_error *err)
{
	if (!obj)
		return cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
	*text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (!*text)
		return cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
	*len = strlen(*text);
	if (*len > AGENT_MAX_PAYLOAD) {
		free(*text);
		return cv_fail(err, CV_EXIT_USAGE,
			       "control message of %zu bytes exceeds the limit of %u (too many arguments or environment variables?)",
			       *len, AGENT_MAX_PAYLOAD);
	}
	return 0;
}

/* Sends obj (consumed) as one CONTROL frame. */
static int send_json(int fd, json_t *obj, struct cv_error *err)
{
	char *text;
	size_t len;
	if (control_text(obj, &text, &len, err) < 0)
		return -1;
	int rc = agent_send_frame(fd, AGENT_FRAME_CONTROL, text, len, err);
	free(text);
	return rc;
}

/* Queues obj (consumed) as one CONTROL frame. */
static int queue_json(struct agent_outq *q, json_t *obj, struct cv_error *err)
{
	char *text;
	size_t len;
	if (control_text(obj, &text, &len, err) < 0)
		return -1;
	int rc = agent_outq_frame(q, AGENT_FRAME_CONTROL, text, len, err);
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
	free_strv(req->paths);
	free(req->cwd);
	free(req->token);
	memset(req, 0, sizeof(*req));
}

static int parse_exec(json_t *root, struct agent_request *req, struct cv_error *err)
{
	static const char *const keys[] = { "op", "token", "argv", "env", "cwd", "stdin", "tty",
					    "rows", "cols", NULL };
	const char *what = "exec request";
	req->op = AGENT_OP_EXEC;
	if (only_keys(root, keys, what, err) < 0 ||
	    get_strv(root, "argv", true, false, &req->argv, what, err) < 0 ||
	    get_strv(root, "env", false, true, &req->env, what, err) < 0 ||
	    get_string(root, "cwd", false, &req->cwd, what, err) < 0 ||
	    get_bool(root, "stdin", &req->stdin_open, what, err) < 0 ||
	    get_bool(root, "tty", &req->tty, what, err) < 0)
		return -1;
	if (!req->argv[0] || !req->argv[0][0])
		return cv_fail(err, CV_EXIT_DATAERR,
			       "invalid exec request: 'argv' must start with a non-empty command");
	if (req->cwd && req->cwd[0] != '/')
		return cv_fail(err, CV_EXIT_DATAERR, "invalid exec request: 'cwd' must be an absolute path");
	bool has_rows = json_object_get(root, "rows") != NULL;
	bool has_cols = json_object_get(root, "cols") != NULL;
	if ((has_rows || has_cols) && !req->tty)
		return cv_fail(err, CV_EXIT_DATAERR,
			       "invalid exec request: 'rows' and 'cols' need \"tty\": true");
	req->rows = AGENT_TTY_DEFAULT_ROWS;
	req->cols = AGENT_TTY_DEFAULT_COLS;
	long long n;
	if (has_rows) {
		if (get_int(root, "rows", 1, AGENT_TTY_MAX, &n, what, err) < 0)
			return -1;
		req->rows = (unsigned)n;
	}
	if (has_cols) {
		if (get_int(root, "cols", 1, AGENT_TTY_MAX, &n, what, err) < 0)
			return -1;
		req->cols = (unsigned)n;
	}
	return 0;
}

static int parse_paths(json_t *root, struct agent_request *req, const char *what,
		       struct cv_error *err)
{
	static const char *const keys[] = { "op", "token", "paths", NULL };
	if (only_keys(root, keys, what, err) < 0 ||
	    get_strv(root, "paths", false, false, &req->paths, what, err) < 0)
		return -1;
	if (!req->paths)
		return 0;
	size_t n = 0;
	for (; req->paths[n]; n++)
		if (req->paths[n][0] != '/')
			return cv_fail(err, CV_EXIT_DATAERR,
				       "invalid %s: paths[%zu] is not an absolute path", what, n);
	/* An empty list most likely means a client bug; "everything" is spelt by omitting it. */
	if (n == 0)
		return cv_fail(err, CV_EXIT_DATAERR,
			       "invalid %s: 'paths' is empty (omit it for the default set)", what);
	if (n > AGENT_MAX_PATHS)
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: more than %d paths", what,
			       AGENT_MAX_PATHS);
	return 0;
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
		if (parse_exec(root, req, err) < 0)
			goto out;
	} else if (strcmp(op, "signal") == 0) {
		static const char *const keys[] = { "op", "token", "signal", NULL };
		long long signo;
		req->op = AGENT_OP_SIGNAL;
		if (only_keys(root, keys, "signal request", err) < 0 ||
		    get_int(root, "signal", 1, 64, &signo, "signal request", err) < 0)
			goto out;
		req->signal = (int)signo;
	} else if (strcmp(op, "resize") == 0) {
		static const char *const keys[] = { "op", "token", "rows", "cols", NULL };
		long long rows, cols;
		req->op = AGENT_OP_RESIZE;
		if (only_keys(root, keys, "resize request", err) < 0 ||
		    get_int(root, "rows", 1, AGENT_TTY_MAX, &rows, "resize request", err) < 0 ||
		    get_int(root, "cols", 1, AGENT_TTY_MAX, &cols, "resize request", err) < 0)
			goto out;
		req->rows = (unsigned)rows;
		req->cols = (unsigned)cols;
	} else if (strcmp(op, "ping") == 0 || strcmp(op, "poweroff") == 0 ||
		   strcmp(op, "info") == 0) {
		static const char *const keys[] = { "op", "token", NULL };
		if (strcmp(op, "ping") == 0)
			req->op = AGENT_OP_PING;
		else if (strcmp(op, "info") == 0)
			req->op = AGENT_OP_INFO;
		else
			req->op = AGENT_OP_POWEROFF;
		req->action = AGENT_SHUTDOWN_POWEROFF;
		if (only_keys(root, keys, "request", err) < 0)
			goto out;
	} else if (strcmp(op, "shutdown") == 0) {
		static const char *const keys[] = { "op", "token", "action", NULL };
		char *action = NULL;
		req->op = AGENT_OP_SHUTDOWN;
		if (only_keys(root, keys, "shutdown request", err) < 0 ||
		    get_string(root, "action", true, &action, "shutdown request", err) < 0)
			goto out;
		bool known = true;
		if (strcmp(action, "poweroff") == 0)
			req->action = AGENT_SHUTDOWN_POWEROFF;
		else if (strcmp(action, "reboot") == 0)
			req->action = AGENT_SHUTDOWN_REBOOT;
		else
			known = false;
		if (!known)
			cv_fail(err, CV_EXIT_DATAERR,
				"invalid shutdown request: action '%.64s' is not \"poweroff\" or \"reboot\"",
				action);
		free(action);
		if (!known)
			goto out;
	} else if (strcmp(op, "freeze") == 0 || strcmp(op, "thaw") == 0) {
		bool thaw = op[0] == 't';
		req->op = thaw ? AGENT_OP_THAW : AGENT_OP_FREEZE;
		if (parse_paths(root, req, thaw ? "thaw request" : "freeze request", err) < 0)
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

int agent_send_exec_spec(int fd, const struct agent_exec_spec *spec, const char *token,
			 struct cv_error *err)
{
	char *const *argv = spec->argv;
	if (!argv || !argv[0] || !argv[0][0])
		return cv_fail(err, CV_EXIT_USAGE, "exec: no command given");
	if (spec->cwd && spec->cwd[0] != '/')
		return cv_fail(err, CV_EXIT_USAGE, "exec: working directory '%s' is not absolute",
			       spec->cwd);
	if (spec->rows > AGENT_TTY_MAX || spec->cols > AGENT_TTY_MAX)
		return cv_fail(err, CV_EXIT_USAGE, "exec: terminal size %ux%u exceeds %u", spec->rows,
			       spec->cols, AGENT_TTY_MAX);
	json_t *obj = json_pack("{s:s, s:b}", "op", "exec", "stdin", spec->stdin_open);
	if (!obj)
		return cv_fail(err, CV_EXIT_OSERR, "encode exec request: out of memory");
	/* "tty" only when set, so plain execs stay readable by agents that predate it. */
	if (set_field(obj, "argv", strv_to_json(argv, "argument", err), err) < 0 ||
	    (spec->env && set_field(obj, "env", strv_to_json(spec->env, "environment entry", err),
				    err) < 0) ||
	    (spec->cwd && set_field(obj, "cwd", utf8_string(spec->cwd, "working directory", err),
				    err) < 0) ||
	    (spec->tty && set_field(obj, "tty", json_true(), err) < 0) ||
	    (spec->tty && spec->rows && set_field(obj, "rows", json_integer(spec->rows), err) < 0) ||
	    (spec->tty && spec->cols && set_field(obj, "cols", json_integer(spec->cols), err) < 0) ||
	    add_token(obj, token, err) < 0) {
		json_decref(obj);
		return -1;
	}
	return send_json(fd, obj, err);
}

int agent_send_exec(int fd, char *const *argv, char *const *env, const char *cwd,
		    bool stdin_open, const char *token, struct cv_error *err)
{
	struct agent_exec_spec spec = { .argv = argv, .env = env, .cwd = cwd,
					.stdin_open = stdin_open };
	return agent_send_exec_spec(fd, &spec, token, err);
}

/* The signal request, or NULL with *err set if signo is out of range. */
static json_t *signal_request(int signo, struct cv_error *err)
{
	if (signo < 1 || signo > 64) {
		cv_fail(err, CV_EXIT_USAGE, "signal %d is out of range 1..64", signo);
		return NULL;
	}
	json_t *o = json_pack("{s:s, s:i}", "op", "signal", "signal", signo);
	if (!o)
		cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
	return o;
}

/* The resize request, or NULL with *err set if the size is out of range. */
static json_t *resize_request(unsigned rows, unsigned cols, struct cv_error *err)
{
	if (rows < 1 || rows > AGENT_TTY_MAX || cols < 1 || cols > AGENT_TTY_MAX) {
		cv_fail(err, CV_EXIT_USAGE, "resize: terminal size %ux%u is out of range 1..%u",
			rows, cols, AGENT_TTY_MAX);
		return NULL;
	}
	json_t *o = json_pack("{s:s, s:I, s:I}", "op", "resize", "rows", (json_int_t)rows, "cols",
			      (json_int_t)cols);
	if (!o)
		cv_fail(err, CV_EXIT_OSERR, "encode control message: out of memory");
	return o;
}

int agent_send_signal(int fd, int signo, struct cv_error *err)
{
	json_t *o = signal_request(signo, err);
	return o ? send_json(fd, o, err) : -1;
}

int agent_send_resize(int fd, unsigned rows, unsigned cols, struct cv_error *err)
{
	json_t *o = resize_request(rows, cols, err);
	return o ? send_json(fd, o, err) : -1;
}

int agent_queue_signal(struct agent_outq *q, int signo, struct cv_error *err)
{
	json_t *o = signal_request(signo, err);
	return o ? queue_json(q, o, err) : -1;
}

int agent_queue_resize(struct agent_outq *q, unsigned rows, unsigned cols, struct cv_error *err)
{
	json_t *o = resize_request(rows, cols, err);
	return o ? queue_json(q, o, err) : -1;
}

int agent_send_ping(int fd, const char *token, struct cv_error *err)
{
	return send_simple_op(fd, "ping", token, err);
}

int agent_send_poweroff(int fd, const char *token, struct cv_error *err)
{
	return send_simple_op(fd, "poweroff", token, err);
}

int agent_send_info_request(int fd, const char *token, struct cv_error *err)
{
	return send_simple_op(fd, "info", token, err);
}

int agent_send_shutdown(int fd, enum agent_shutdown_action action, const char *token,
			struct cv_error *err)
{
	const char *name = action == AGENT_SHUTDOWN_REBOOT ? "reboot" : "poweroff";
	json_t *obj = json_pack("{s:s, s:s}", "op", "shutdown", "action", name);
	if (!obj)
		return cv_fail(err, CV_EXIT_OSERR, "encode shutdown request: out of memory");
	if (add_token(obj, token, err) < 0) {
		json_decref(obj);
		return -1;
	}
	return send_json(fd, obj, err);
}

static int send_paths_op(int fd, const char *op, char *const *paths, const char *token,
			 struct cv_error *err)
{
	if (paths && !paths[0])
		return cv_fail(err, CV_EXIT_USAGE, "%s: empty path list (pass NULL for the default set)",
			       op);
	for (size_t i = 0; paths && paths[i]; i++)
		if (paths[i][0] != '/')
			return cv_fail(err, CV_EXIT_USAGE, "%s: '%s' is not an absolute path", op,
				       paths[i]);
	json_t *obj = json_pack("{s:s}", "op", op);
	if (!obj)
		return cv_fail(err, CV_EXIT_OSERR, "encode %s request: out of memory", op);
	if ((paths && set_field(obj, "paths", strv_to_json(paths, "path", err), err) < 0) ||
	    add_token(obj, token, err) < 0) {
		json_decref(obj);
		return -1;
	}
	return send_json(fd, obj, err);
}

int agent_send_freeze(int fd, char *const *paths, const char *token, struct cv_error *err)
{
	return send_paths_op(fd, "freeze", paths, token, err);
}

int agent_send_thaw(int fd, char *const *paths, const char *token, struct cv_error *err)
{
	return send_paths_op(fd, "thaw", paths, token, err);
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

/* ---- replies: info, frozen, thawed ---- */

/*
 * Text from the system (host names, mount points) is not guaranteed UTF-8 but must travel as a
 * JSON string: such text is sent with every non-ASCII byte replaced by '?' rather than dropped.
 */
static json_t *system_text(const char *s)
{
	json_t *j = json_string(s ? s : "");
	if (j)
		return j;
	char *copy = strdup(s);
	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

/* jansson integers are signed 64-bit; byte counts beyond that cannot occur in practice. */
static json_t *count_json(uint64_t v)
{
	return json_integer(v > (uint64_t)LLONG_MAX ? LLONG_MAX : (json_int_t)v);
}

void agent_info_free(struct agent_info *info)
{
	free(info->hostname);
	free(info->kernel);
	free(info->cpus);
	for (size_t i = 0; i < info->nfs; i++) {
		free(info->fs[i].path);
		free(info->fs[i].type);
		free(info->fs[i].source);
	}
	free(info->fs);
	memset(info, 0, sizeof(*info));
}

static json_t *cpu_json(const struct agent_cpu_times *c)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	const struct { const char *key; uint64_t v; } f[] = {
		{ "user", c->user }, { "nice", c->nice }, { "system", c->system },
		{ "idle", c->idle }, { "iowait", c->iowait }, { "irq", c->irq },
		{ "softirq", c->softirq }, { "steal", c->steal },
	};
	if (json_object_set_new(o, "cpu", json_integer(c->id)) < 0)
		goto fail;
	for (size_t i = 0; i < CV_ARRAY_SIZE(f); i++)
		if (json_object_set_new(o, f[i].key, count_json(f[i].v)) < 0)
			goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

static json_t *fs_json(const struct agent_fs_usage *u)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (json_object_set_new(o, "path", system_text(u->path)) < 0 ||
	    json_object_set_new(o, "type", system_text(u->type)) < 0 ||
	    json_object_set_new(o, "source", system_text(u->source)) < 0 ||
	    json_object_set_new(o, "size", count_json(u->size)) < 0 ||
	    json_object_set_new(o, "used", count_json(u->used)) < 0 ||
	    json_object_set_new(o, "available", count_json(u->available)) < 0 ||
	    json_object_set_new(o, "readonly", json_boolean(u->readonly)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int agent_send_info_event(int fd, const struct agent_info *info, struct cv_error *err)
{
	json_t *obj = json_pack("{s:s, s:f, s:[f,f,f]}", "event", "info", "uptime", info->uptime,
				"load", info->load[0], info->load[1], info->load[2]);
	json_t *mem = json_object(), *cpus = json_array(), *fs = json_array();
	bool ok = obj && mem && cpus && fs &&
		  json_object_set_new(mem, "total", count_json(info->mem_total)) == 0 &&
		  json_object_set_new(mem, "free", count_json(info->mem_free)) == 0 &&
		  json_object_set_new(mem, "available", count_json(info->mem_available)) == 0;
	for (size_t i = 0; ok && i < info->ncpus; i++)
		ok = json_array_append_new(cpus, cpu_json(&info->cpus[i])) == 0;
	for (size_t i = 0; ok && i < info->nfs; i++)
		ok = json_array_append_new(fs, fs_json(&info->fs[i])) == 0;
	if (ok)
		ok = json_object_set_new(obj, "hostname", system_text(info->hostname)) == 0 &&
		     json_object_set_new(obj, "kernel", system_text(info->kernel)) == 0;
	if (ok) {
		/* set_new takes the references even on failure, so none is released twice. */
		ok = json_object_set_new(obj, "memory", mem) == 0;
		mem = NULL;
		ok = json_object_set_new(obj, "cpus", cpus) == 0 && ok;
		cpus = NULL;
		ok = json_object_set_new(obj, "filesystems", fs) == 0 && ok;
		fs = NULL;
	}
	json_decref(mem);
	json_decref(cpus);
	json_decref(fs);
	if (!ok) {
		json_decref(obj);
		return cv_fail(err, CV_EXIT_OSERR, "encode info event: out of memory");
	}
	return send_json(fd, obj, err);
}

void agent_fs_result_free(struct agent_fs_result *res)
{
	free_strv(res->paths);
	for (size_t i = 0; i < res->nerrors; i++) {
		free(res->errors[i].path);
		free(res->errors[i].message);
	}
	free(res->errors);
	memset(res, 0, sizeof(*res));
}

int agent_fs_result_add_path(struct agent_fs_result *res, const char *path, struct cv_error *err)
{
	char **n = realloc(res->paths, (res->npaths + 2) * sizeof(*n));
	if (!n)
		return cv_fail(err, CV_EXIT_OSERR, "fs result: out of memory");
	res->paths = n;
	n[res->npaths] = strdup(path);
	if (!n[res->npaths]) {
		n[res->npaths] = NULL;
		return cv_fail(err, CV_EXIT_OSERR, "fs result: out of memory");
	}
	n[++res->npaths] = NULL;
	return 0;
}

int agent_fs_result_add_error(struct agent_fs_result *res, const char *path, const char *message,
			      struct cv_error *err)
{
	struct agent_path_error *n = realloc(res->errors, (res->nerrors + 1) * sizeof(*n));
	if (!n)
		return cv_fail(err, CV_EXIT_OSERR, "fs result: out of memory");
	res->errors = n;
	char *p = strdup(path), *m = strdup(message);
	if (!p || !m) {
		free(p);
		free(m);
		return cv_fail(err, CV_EXIT_OSERR, "fs result: out of memory");
	}
	n[res->nerrors++] = (struct agent_path_error){ .path = p, .message = m };
	return 0;
}

int agent_send_fs_result(int fd, const struct agent_fs_result *res, struct cv_error *err)
{
	json_t *obj = json_pack("{s:s}", "event", res->thaw ? "thawed" : "frozen");
	json_t *paths = json_array(), *errors = json_array();
	bool ok = obj && paths && errors;
	for (size_t i = 0; ok && i < res->npaths; i++)
		ok = json_array_append_new(paths, system_text(res->paths[i])) == 0;
	for (size_t i = 0; ok && i < res->nerrors; i++) {
		json_t *e = json_object();
		ok = e && json_object_set_new(e, "path", system_text(res->errors[i].path)) == 0 &&
		     json_object_set_new(e, "message", system_text(res->errors[i].message)) == 0;
		if (ok)
			ok = json_array_append_new(errors, e) == 0;
		else
			json_decref(e);
	}
	if (ok) {
		ok = json_object_set_new(obj, "paths", paths) == 0;
		paths = NULL;
		ok = json_object_set_new(obj, "errors", errors) == 0 && ok;
		errors = NULL;
	}
	json_decref(paths);
	json_decref(errors);
	if (!ok) {
		json_decref(obj);
		return cv_fail(err, CV_EXIT_OSERR, "encode %s event: out of memory",
			       res->thaw ? "thawed" : "frozen");
	}
	return send_json(fd, obj, err);
}

/* Fetches an array member, or fails naming it. */
static json_t *get_array(json_t *obj, const char *key, const char *what, struct cv_error *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v || !json_is_array(v)) {
		cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' must be an array", what, key);
		return NULL;
	}
	return v;
}

static json_t *get_object(json_t *obj, const char *key, const char *what, struct cv_error *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v || !json_is_object(v)) {
		cv_fail(err, CV_EXIT_DATAERR, "invalid %s: '%s' must be an object", what, key);
		return NULL;
	}
	return v;
}

static int parse_cpu(json_t *o, struct agent_cpu_times *c, struct cv_error *err)
{
	static const char *const keys[] = { "cpu", "user", "nice", "system", "idle", "iowait", "irq",
					    "softirq", "steal", NULL };
	const char *what = "info event cpu entry";
	long long id;
	if (!json_is_object(o))
		return cv_fail(err, CV_EXIT_DATAERR, "invalid info event: a cpus entry is not an object");
	if (only_keys(o, keys, what, err) < 0 || get_int(o, "cpu", 0, INT_MAX, &id, what, err) < 0 ||
	    get_u64(o, "user", &c->user, what, err) < 0 ||
	    get_u64(o, "nice", &c->nice, what, err) < 0 ||
	    get_u64(o, "system", &c->system, what, err) < 0 ||
	    get_u64(o, "idle", &c->idle, what, err) < 0 ||
	    get_u64(o, "iowait", &c->iowait, what, err) < 0 ||
	    get_u64(o, "irq", &c->irq, what, err) < 0 ||
	    get_u64(o, "softirq", &c->softirq, what, err) < 0 ||
	    get_u64(o, "steal", &c->steal, what, err) < 0)
		return -1;
	c->id = (unsigned)id;
	return 0;
}

static int parse_fs(json_t *o, struct agent_fs_usage *u, struct cv_error *err)
{
	static const char *const keys[] = { "path", "type", "source", "size", "used", "available",
					    "readonly", NULL };
	const char *what = "info event filesystem entry";
	if (!json_is_object(o))
		return cv_fail(err, CV_EXIT_DATAERR,
			       "invalid info event: a filesystems entry is not an object");
	json_t *ro = json_object_get(o, "readonly");
	if (only_keys(o, keys, what, err) < 0 ||
	    get_string(o, "path", true, &u->path, what, err) < 0 ||
	    get_string(o, "type", true, &u->type, what, err) < 0 ||
	    get_string(o, "source", true, &u->source, what, err) < 0 ||
	    get_u64(o, "size", &u->size, what, err) < 0 ||
	    get_u64(o, "used", &u->used, what, err) < 0 ||
	    get_u64(o, "available", &u->available, what, err) < 0)
		return -1;
	if (!ro || !json_is_boolean(ro))
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: 'readonly' must be a boolean", what);
	u->readonly = json_is_true(ro);
	return 0;
}

static int parse_info(json_t *root, struct agent_info *info, struct cv_error *err)
{
	static const char *const keys[] = { "event", "hostname", "kernel", "uptime", "load", "memory",
					    "cpus", "filesystems", NULL };
	static const char *const mem_keys[] = { "total", "free", "available", NULL };
	const char *what = "info event";
	if (only_keys(root, keys, what, err) < 0 ||
	    get_string(root, "hostname", true, &info->hostname, what, err) < 0 ||
	    get_string(root, "kernel", true, &info->kernel, what, err) < 0 ||
	    get_double(root, "uptime", 0, 1e18, &info->uptime, what, err) < 0)
		return -1;
	json_t *load = get_array(root, "load", what, err);
	if (!load)
		return -1;
	if (json_array_size(load) != 3)
		return cv_fail(err, CV_EXIT_DATAERR, "invalid info event: 'load' must have 3 numbers");
	for (size_t i = 0; i < 3; i++) {
		json_t *v = json_array_get(load, i);
		if (!json_is_number(v) || !(json_number_value(v) >= 0))
			return cv_fail(err, CV_EXIT_DATAERR,
				       "invalid info event: 'load' must have 3 non-negative numbers");
		info->load[i] = json_number_value(v);
	}
	json_t *mem = get_object(root, "memory", what, err);
	if (!mem || only_keys(mem, mem_keys, "info event memory", err) < 0 ||
	    get_u64(mem, "total", &info->mem_total, "info event memory", err) < 0 ||
	    get_u64(mem, "free", &info->mem_free, "info event memory", err) < 0 ||
	    get_u64(mem, "available", &info->mem_available, "info event memory", err) < 0)
		return -1;
	json_t *cpus = get_array(root, "cpus", what, err);
	json_t *fs = cpus ? get_array(root, "filesystems", what, err) : NULL;
	if (!fs)
		return -1;
	size_t nc = json_array_size(cpus), nf = json_array_size(fs);
	if (nc > AGENT_INFO_MAX_CPUS || nf > AGENT_INFO_MAX_FS)
		return cv_fail(err, CV_EXIT_DATAERR, "invalid info event: too many cpus or filesystems");
	info->cpus = calloc(nc ? nc : 1, sizeof(*info->cpus));
	info->fs = calloc(nf ? nf : 1, sizeof(*info->fs));
	if (!info->cpus || !info->fs)
		return cv_fail(err, CV_EXIT_OSERR, "info event: out of memory");
	for (size_t i = 0; i < nc; i++, info->ncpus++)
		if (parse_cpu(json_array_get(cpus, i), &info->cpus[i], err) < 0)
			return -1;
	/* nfs counts entries as they start, so a half-parsed one is freed with the rest. */
	for (size_t i = 0; i < nf; i++) {
		info->nfs++;
		if (parse_fs(json_array_get(fs, i), &info->fs[i], err) < 0)
			return -1;
	}
	return 0;
}

static int parse_fs_result(json_t *root, struct agent_fs_result *res, const char *what,
			   struct cv_error *err)
{
	static const char *const keys[] = { "event", "paths", "errors", NULL };
	static const char *const err_keys[] = { "path", "message", NULL };
	if (only_keys(root, keys, what, err) < 0 ||
	    get_strv(root, "paths", true, false, &res->paths, what, err) < 0)
		return -1;
	while (res->paths[res->npaths])
		res->npaths++;
	json_t *errors = get_array(root, "errors", what, err);
	if (!errors)
		return -1;
	size_t n = json_array_size(errors);
	if (n > AGENT_MAX_PATHS * 2)
		return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: too many errors", what);
	res->errors = calloc(n ? n : 1, sizeof(*res->errors));
	if (!res->errors)
		return cv_fail(err, CV_EXIT_OSERR, "%s: out of memory", what);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(errors, i);
		if (!json_is_object(e))
			return cv_fail(err, CV_EXIT_DATAERR, "invalid %s: errors[%zu] is not an object",
				       what, i);
		res->nerrors++;
		if (only_keys(e, err_keys, what, err) < 0 ||
		    get_string(e, "path", true, &res->errors[i].path, what, err) < 0 ||
		    get_string(e, "message", true, &res->errors[i].message, what, err) < 0)
			return -1;
	}
	return 0;
}

void agent_reply_free(struct agent_reply *reply)
{
	free(reply->message);
	agent_info_free(&reply->info);
	agent_fs_result_free(&reply->fs);
	memset(reply, 0, sizeof(*reply));
}

int agent_parse_reply(const void *data, size_t len, struct agent_reply *reply, struct cv_error *err)
{
	memset(reply, 0, sizeof(*reply));
	json_t *root = parse_object(data, len, "reply", err);
	if (!root)
		return -1;
	char *name = NULL;
	int rc = -1;
	if (get_string(root, "event", true, &name, "reply", err) < 0)
		goto out;
	if (strcmp(name, "error") == 0) {
		static const char *const keys[] = { "event", "message", NULL };
		reply->kind = AGENT_REPLY_ERROR;
		if (only_keys(root, keys, "error event", err) < 0 ||
		    get_string(root, "message", true, &reply->message, "error event", err) < 0)
			goto out;
	} else if (strcmp(name, "info") == 0) {
		reply->kind = AGENT_REPLY_INFO;
		if (parse_info(root, &reply->info, err) < 0)
			goto out;
	} else if (strcmp(name, "frozen") == 0 || strcmp(name, "thawed") == 0) {
		bool thaw = name[0] == 't';
		reply->kind = thaw ? AGENT_REPLY_THAWED : AGENT_REPLY_FROZEN;
		reply->fs.thaw = thaw;
		if (parse_fs_result(root, &reply->fs, thaw ? "thawed event" : "frozen event", err) < 0)
			goto out;
	} else {
		cv_fail(err, CV_EXIT_DATAERR, "invalid reply: unexpected event '%.64s'", name);
		goto out;
	}
	rc = 0;
out:
	free(name);
	json_decref(root);
	if (rc < 0)
		agent_reply_free(reply);
	return rc;
}
