/*
 * HTTP server plumbing (see http.h). libmicrohttpd calls the access handler several times per
 * request: once for the headers, then for each body chunk, then with no data; the body is
 * collected in a per-connection buffer and the route runs on the last call.
 */
#include "http.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct pending {
	char *body;
	size_t len;
	bool too_big;
};

void api_fault(struct api_response *resp, unsigned status, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	resp->status = status;
	if (resp->body)
		json_decref(resp->body);
	resp->body = json_pack("{s:s}", "fault_message", msg);
	if (!resp->body) {
		/*
		 * Not UTF-8 (a percent-decoded path, a message cut inside a character): JSON cannot
		 * carry it, and an error without its message helps nobody. Keep the ASCII.
		 */
		for (char *c = msg; *c; c++)
			if ((unsigned char)*c >= 0x80)
				*c = '?';
		resp->body = json_pack("{s:s}", "fault_message", msg);
	}
}

void api_no_content(struct api_response *resp)
{
	resp->status = MHD_HTTP_NO_CONTENT;
	if (resp->body)
		json_decref(resp->body);
	resp->body = NULL;
}

void api_ok(struct api_response *resp, json_t *body)
{
	resp->status = MHD_HTTP_OK;
	if (resp->body)
		json_decref(resp->body);
	resp->body = body;
}

bool api_only_keys(json_t *obj, const char *const *allowed, const char **unknown)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v) {
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			ok = ok || strcmp(*a, key) == 0;
		if (!ok) {
			*unknown = key;
			return false;
		}
	}
	return true;
}

bool api_check_body(const struct api_request *req, struct api_response *resp,
		    const char *const *allowed)
{
	const char *unknown;
	if (!req->body) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "this request needs a JSON body");
		return false;
	}
	if (!api_only_keys(req->body, allowed, &unknown)) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "unknown field '%s'", unknown);
		return false;
	}
	return true;
}

int api_get_u64(json_t *obj, const char *key, bool required, uint64_t min, uint64_t max,
		uint64_t *out, struct cv_error *err)
{
	json_t *v = obj ? json_object_get(obj, key) : NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return cv_fail(err, CV_EXIT_USAGE, "missing field '%s'", key);
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max)
		return cv_fail(err, CV_EXIT_USAGE, "field '%s' must be an integer from %llu to %llu",
			       key, (unsigned long long)min, (unsigned long long)max);
	*out = (uint64_t)json_integer_value(v);
	return 1;
}

int api_get_bool(json_t *obj, const char *key, bool required, bool *out, struct cv_error *err)
{
	json_t *v = obj ? json_object_get(obj, key) : NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return cv_fail(err, CV_EXIT_USAGE, "missing field '%s'", key);
		return 0;
	}
	if (!json_is_boolean(v))
		return cv_fail(err, CV_EXIT_USAGE, "field '%s' must be true or false", key);
	*out = json_is_true(v);
	return 1;
}

int api_get_string(json_t *obj, const char *key, bool required, const char **out,
		   struct cv_error *err)
{
	json_t *v = obj ? json_object_get(obj, key) : NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return cv_fail(err, CV_EXIT_USAGE, "missing field '%s'", key);
		return 0;
	}
	if (!json_is_string(v))
		return cv_fail(err, CV_EXIT_USAGE, "field '%s' must be a string", key);
	*out = json_string_value(v);
	return 1;
}

bool api_parse_body(const char *body, size_t len, json_t **out, struct api_response *resp)
{
	*out = NULL;
	if (!len)
		return true;
	json_error_t jerr;
	json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!v) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "malformed JSON at line %d column %d: %s",
			  jerr.line, jerr.column, jerr.text);
		return false;
	}
	if (!json_is_object(v)) {
		json_decref(v);
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "the request body must be a JSON object");
		return false;
	}
	*out = v;
	return true;
}

static enum MHD_Result send_response(struct MHD_Connection *conn, struct api_response *r)
{
	char *text = r->body ? json_dumps(r->body, JSON_COMPACT) : NULL;
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		text ? strlen(text) : 0, text ? text : (char *)"",
		text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (text)
		MHD_add_response_header(resp, "Content-Type", "application/json");
	enum MHD_Result ret = MHD_queue_response(conn, r->status, resp);
	MHD_destroy_response(resp);
	if (r->body)
		json_decref(r->body);
	r->body = NULL;
	return ret;
}

void api_server_on_thread_start(struct api_server *s, int (*fn)(void *ctx), void *ctx)
{
	s->thread_hook = fn;
	s->thread_hook_ctx = ctx;
}

/* Runs the thread hook until it is done; false once it failed. Server thread only. */
static bool thread_hook_ok(struct api_server *s)
{
	if (s->thread_hook && s->thread_state == 0)
		s->thread_state = s->thread_hook(s->thread_hook_ctx);
	return s->thread_state >= 0;
}

/* libmicrohttpd's accept policy: called on the server thread for each new connection. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	(void)addr;
	(void)addrlen;
	return thread_hook_ok(cls) ? MHD_YES : MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct api_server *s = cls;
	(void)version;
	/* A connection accepted before the VM ran may carry requests after it does. */
	if (!thread_hook_ok(s))
		return MHD_NO;
	struct pending *p = *con_cls;
	if (!p) {
		p = calloc(1, sizeof(*p));
		if (!p)
			return MHD_NO;
		*con_cls = p;
		return MHD_YES;
	}
	if (*upload_size) {
		if (p->len + *upload_size > API_MAX_BODY) {
			p->too_big = true;
		} else {
			char *n = realloc(p->body, p->len + *upload_size + 1);
			if (!n)
				return MHD_NO;
			memcpy(n + p->len, upload, *upload_size);
			p->body = n;
			p->len += *upload_size;
			p->body[p->len] = 0;
		}
		*upload_size = 0;
		return MHD_YES;
	}

	struct api_response resp = { 0 };
	struct api_request req = { .method = method, .path = url };
	if (p->too_big) {
		api_fault(&resp, MHD_HTTP_CONTENT_TOO_LARGE, "request body exceeds %d bytes",
			  API_MAX_BODY);
		return send_response(conn, &resp);
	}
	if (!api_parse_body(p->body, p->len, &req.body, &resp))
		return send_response(conn, &resp);
	resp.status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	s->route(s->ctx, &req, &resp);
	if (req.body)
		json_decref(req.body);
	return send_response(conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode code)
{
	(void)cls;
	(void)conn;
	(void)code;
	struct pending *p = *con_cls;
	if (p) {
		free(p->body);
		free(p);
		*con_cls = NULL;
	}
}

int api_server_start(struct api_server *s, const char *path, api_route_fn route, void *ctx,
		     struct cv_error *err)
{
	int (*thread_hook)(void *) = s->thread_hook;
	void *thread_hook_ctx = s->thread_hook_ctx;
	memset(s, 0, sizeof(*s));
	s->thread_hook = thread_hook;
	s->thread_hook_ctx = thread_hook_ctx;
	s->listen_fd = -1;
	s->route = route;
	s->ctx = ctx;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return cv_fail(err, CV_EXIT_USAGE, "API socket path '%s' is too long", path);
	strcpy(sa.sun_path, path);
	strcpy(s->path, path);
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "API socket");
	if (bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(s->listen_fd);
		s->listen_fd = -1;
		s->path[0] = 0;
		errno = e;
		return cv_fail_errno(err, e == EADDRINUSE ? CV_EXIT_USAGE : CV_EXIT_OSERR,
				     "API socket '%s'%s", path,
				     e == EADDRINUSE ? " (remove the stale socket first)" : "");
	}
	chmod(path, 0600);
	if (listen(s->listen_fd, 16) < 0) {
		api_server_stop(s);
		return cv_fail_errno(err, CV_EXIT_OSERR, "listen on '%s'", path);
	}
	s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, on_accept, s,
				     on_request, s, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
				     MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
				     MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
	if (!s->daemon) {
		api_server_stop(s);
		return cv_fail(err, CV_EXIT_OSERR, "start the API server on '%s'", path);
	}
	return 0;
}

void api_server_stop(struct api_server *s)
{
	if (s->daemon)
		MHD_stop_daemon(s->daemon);
	s->daemon = NULL;
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	s->listen_fd = -1;
	if (s->path[0])
		unlink(s->path);
	s->path[0] = 0;
}
