/*
 * The HTTP/1.1 + JSON server behind every cvisor control API: libmicrohttpd on a Unix socket,
 * requests parsed into jansson values and handed to one routing function, responses in the
 * Firecracker style (JSON bodies, {"fault_message": "..."} on errors, 204 with no body on
 * success). Requests are served one at a time on the server's own thread.
 */
#ifndef CVISOR_API_HTTP_H
#define CVISOR_API_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#define API_MAX_BODY 65536

struct api_request {
	const char *method;          /* "GET", "PUT", "PATCH"... */
	const char *path;            /* without query string */
	json_t *body;                /* parsed JSON object; NULL if the request had no body */
};

struct api_response {
	unsigned status;
	json_t *body;                /* owned by the response; NULL: no body */
};

typedef void (*api_route_fn)(void *ctx, const struct api_request *req, struct api_response *resp);

struct api_server {
	void *daemon;                /* struct MHD_Daemon */
	int listen_fd;
	char path[108];
	api_route_fn route;
	void *ctx;
	/* Run on the server thread before it serves connections and requests (see below). */
	int (*thread_hook)(void *ctx);
	void *thread_hook_ctx;
	int thread_state;            /* last hook result; touched only by the server thread */
};

/* Creates the socket at path (which must not exist) and serves requests until stopped. */
int api_server_start(struct api_server *s, const char *path, api_route_fn route, void *ctx,
		     struct cv_error *err);
void api_server_stop(struct api_server *s);

/*
 * Registers fn to run on the server's own thread before each new connection and each request
 * until it returns 1 (done) - cvisor-vmm installs the API thread's seccomp filter there, once
 * the VM runs: libmicrohttpd has no hook at thread start, and nothing reaches the thread but
 * connections. 0 means "not yet, ask again"; -1 means failure: from then on every connection
 * and request is refused. Call before api_server_start.
 */
void api_server_on_thread_start(struct api_server *s, int (*fn)(void *ctx), void *ctx);

/*
 * Parses a request body of len bytes (no terminator needed): *out is NULL for an empty body,
 * else the JSON object (duplicate keys refused). Returns false with resp filled with the 400
 * to send for anything else. The server calls it for every request; exposed for the fuzz test.
 */
bool api_parse_body(const char *body, size_t len, json_t **out, struct api_response *resp);

/* Fills resp with {"fault_message": "..."} and the status. */
void api_fault(struct api_response *resp, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* 204 No Content. */
void api_no_content(struct api_response *resp);
/* 200 with body (the response takes the reference). */
void api_ok(struct api_response *resp, json_t *body);

/*
 * Strict field access for request bodies: unknown keys are an error (the first one is named in
 * *unknown), types must match, numbers must be integers in range. null is an absent field (as
 * Firecracker's optional fields take it). The getters return 1 (set), 0 (absent) or -1.
 */
bool api_only_keys(json_t *obj, const char *const *allowed, const char **unknown);
/*
 * The request has a JSON body with no fields outside `allowed`; otherwise fills resp with a 400
 * naming what is wrong (no body, or the first unknown field) and returns false.
 */
bool api_check_body(const struct api_request *req, struct api_response *resp,
		    const char *const *allowed);
int api_get_u64(json_t *obj, const char *key, bool required, uint64_t min, uint64_t max,
		uint64_t *out, struct cv_error *err);
int api_get_bool(json_t *obj, const char *key, bool required, bool *out, struct cv_error *err);
int api_get_string(json_t *obj, const char *key, bool required, const char **out,
		   struct cv_error *err);

#endif
