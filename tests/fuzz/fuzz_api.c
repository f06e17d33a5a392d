/*
 * libFuzzer target for cvisor-vmm's control API below the HTTP layer: request bodies through
 * api_parse_body (src/api/http.c, what the server does with every body) and requests through the
 * routes (src/vmm/api.c) down to the balloon (virtio_balloon_set_target/_get), with any method,
 * path and body. The VM is a stand-in holding what the routes use: its memory size, the stop
 * flag and a balloon device (none, with or without statistics, driver running or not); the
 * routes that act on the whole VM are left to the system tests.
 *
 * Input: u8 API_* setup flags | u8 method (a known one, or raw bytes) | u8 path (a known one,
 * or u8 length + raw bytes) | the body (the rest).
 *
 * A reference written from the routes' Firecracker-compatible contract predicts each response;
 * these invariants abort on violation:
 *   - the status is the predicted one (200, 204 or 400), and so is the balloon's target after
 *     the request: changed by exactly the valid PATCHes, to amount_mib;
 *   - every error carries {"fault_message": "<text>"}, every 200 a JSON object body, and every
 *     body can be serialised (what the server sends);
 *   - GET answers report the balloon's configuration and current target;
 *   - a running driver is told about a new target (configuration interrupt), others are not;
 *   - no leak (libFuzzer's leak detection), no memory error (ASan).
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "virtio/balloon.h"
#include "vm.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)

#define API_NO_BALLOON 0x01
#define API_STATS 0x02
#define API_RUNNING 0x04
#define API_DEFLATE 0x08
#define API_STOPPING 0x10
#define MEM_MIB 1024

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static _Noreturn void fail(int line, const char *what)
{
	fprintf(stderr, "fuzz_api.c:%d: invariant broken: %s\n", line, what);
	abort();
}

static const char *const METHODS[] = { "GET", "PUT", "PATCH", "POST", "DELETE" };
static const char *const PATHS[] = { "/", "/balloon", "/balloon/statistics", "/balloon/",
				     "/balloonx", "/machine-config" };
#define N_METHODS (sizeof(METHODS) / sizeof(METHODS[0]))
#define N_PATHS (sizeof(PATHS) / sizeof(PATHS[0]))

static struct {
	struct vm vm;
	struct virtio_balloon balloon;
	unsigned config_irqs;
} *S;

static void signal_queue(struct virtio_dev *d, unsigned q)
{
	(void)d;
	(void)q;
}

static void signal_config(struct virtio_dev *d)
{
	(void)d;
	S->config_irqs++;
}

static const struct virtio_transport_ops transport = { signal_queue, signal_config };
static const struct virtio_dev_ops balloon_ops = { .device_id = VIRTIO_ID_BALLOON };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	S = calloc(1, sizeof(*S));
	CHECK(S != NULL);
	S->vm.mem.size = (uint64_t)MEM_MIB << 20;
	virtio_dev_init(&S->balloon.dev, "virtio-balloon", &balloon_ops, &S->balloon, 2, 128, 0,
			&S->vm.mem, NULL);
	S->balloon.dev.transport = &transport;
	return 0;
}

static const char *fault(const struct api_response *r)
{
	json_t *m = r->body ? json_object_get(r->body, "fault_message") : NULL;
	return m && json_is_string(m) ? json_string_value(m) : NULL;
}

static bool starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static uint64_t json_uint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	CHECK(v && json_is_integer(v) && json_integer_value(v) >= 0);
	return (uint64_t)json_integer_value(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	uint8_t flags = data[0], msel = data[1], psel = data[2];
	const uint8_t *p = data + 3;
	size_t n = size - 3;
	char method[32], path[300];
	/* The server hands routes C strings: raw parts stop at a NUL, as an HTTP parser would. */
	if (msel < 0xf0) {
		snprintf(method, sizeof(method), "%s", METHODS[msel % N_METHODS]);
	} else {
		size_t len = n < 8 ? n : 8;
		memcpy(method, p, len);
		method[len] = 0;
		p += len;
		n -= len;
	}
	if (psel < 0xf0) {
		snprintf(path, sizeof(path), "%s", PATHS[psel % N_PATHS]);
	} else {
		size_t len = n ? p[0] : 0;
		p += n ? 1 : 0;
		n -= n ? 1 : 0;
		len = len < n ? len : n;
		memcpy(path, p, len);
		path[len] = 0;
		p += len;
		n -= len;
	}

	/*
	 * The VM-wide routes (/vm, /snapshot/...) pause vCPUs and write files: they need a real VM
	 * (the system tests drive them), not this stand-in.
	 */
	if (!strcmp(path, "/vm") || starts(path, "/snapshot"))
		return 0;
	struct vm *vm = &S->vm;
	struct virtio_balloon *b = &S->balloon;
	vm->balloon = (flags & API_NO_BALLOON) ? NULL : b;
	atomic_store(&vm->stopping, (flags & API_STOPPING) != 0);
	b->cfg = (struct balloon_config){ .enabled = true, .deflate_on_oom = flags & API_DEFLATE,
					  .stats_interval_s = (flags & API_STATS) ? 5 : 0 };
	b->target_pages = 12345;
	b->actual_pages = 256;
	b->dev.status = (flags & API_RUNNING) ? VIRTIO_STATUS_DRIVER_OK : 0;
	S->config_irqs = 0;

	/* The body, as the server parses it. */
	struct api_response resp = { 0 };
	struct api_request req = { .method = method, .path = path };
	json_error_t jerr;
	json_t *ref_body = n ? json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr) : NULL;
	bool body_ok = !n || (ref_body && json_is_object(ref_body));
	bool parsed = api_parse_body((const char *)p, n, &req.body, &resp);
	CHECK(parsed == body_ok);
	if (!parsed) {
		CHECK(resp.status == MHD_HTTP_BAD_REQUEST && fault(&resp) && req.body == NULL);
		json_decref(ref_body);
		json_decref(resp.body);
		return 0;
	}
	CHECK(!n ? req.body == NULL : json_equal(req.body, ref_body));
	json_decref(ref_body);

	/* What the routes must answer. */
	bool balloon_path = starts(path, "/balloon");
	unsigned want = MHD_HTTP_BAD_REQUEST;
	uint64_t want_target = 12345;
	bool is_get = !strcmp(method, "GET"), is_patch = !strcmp(method, "PATCH");
	if (is_get && !strcmp(path, "/")) {
		want = MHD_HTTP_OK;
	} else if (is_get && !strcmp(path, "/cvisor/migrate")) {
		want = MHD_HTTP_OK;   /* progress: state "none" while no migration ran */
	} else if (balloon_path && vm->balloon) {
		if (is_get && !strcmp(path, "/balloon")) {
			want = MHD_HTTP_OK;
		} else if (is_get && !strcmp(path, "/balloon/statistics")) {
			want = b->cfg.stats_interval_s ? MHD_HTTP_OK : MHD_HTTP_BAD_REQUEST;
		} else if (is_patch && !strcmp(path, "/balloon") && req.body) {
			json_t *v = json_object_get(req.body, "amount_mib");
			bool only = json_object_size(req.body) == (v ? 1u : 0u);
			if (only && v && json_is_integer(v) && json_integer_value(v) >= 0 &&
			    json_integer_value(v) <= MEM_MIB) {
				want = MHD_HTTP_NO_CONTENT;
				want_target = (uint64_t)json_integer_value(v) << 8;
			}
		}
	}

	resp.status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	vmm_api_route(vm, &req, &resp);
	if (resp.status != want)
		fprintf(stderr, "fuzz_api: %s %s -> %u, expected %u\n", method, path, resp.status, want);
	CHECK(resp.status == want);
	CHECK(b->target_pages == want_target);
	CHECK(S->config_irqs == (want == MHD_HTTP_NO_CONTENT && (flags & API_RUNNING) ? 1u : 0u));
	if (want == MHD_HTTP_NO_CONTENT) {
		CHECK(resp.body == NULL);
	} else {
		/* The server sends json_dumps of the body: it must exist and serialise. */
		CHECK(resp.body && json_is_object(resp.body));
		char *text = json_dumps(resp.body, JSON_COMPACT);
		CHECK(text != NULL);
		free(text);
		if (want == MHD_HTTP_BAD_REQUEST)
			CHECK(fault(&resp) && fault(&resp)[0]);
	}
	if (want == MHD_HTTP_OK && !strcmp(path, "/balloon")) {
		CHECK(json_uint(resp.body, "amount_mib") == 12345 * 4096ULL >> 20);
		json_t *d = json_object_get(resp.body, "deflate_on_oom");
		CHECK(d && json_is_boolean(d) && json_is_true(d) == b->cfg.deflate_on_oom);
		CHECK(json_uint(resp.body, "stats_polling_interval_s") == b->cfg.stats_interval_s);
	}
	if (want == MHD_HTTP_OK && !strcmp(path, "/balloon/statistics")) {
		CHECK(json_uint(resp.body, "target_mib") == 12345 * 4096ULL >> 20);
		CHECK(json_uint(resp.body, "actual_mib") == 1);
	}
	json_decref(resp.body);
	json_decref(req.body);
	return 0;
}
