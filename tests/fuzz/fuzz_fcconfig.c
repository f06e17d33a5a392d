/*
 * libFuzzer target for the Firecracker-shaped configuration JSON (src/vmm/fcjson.c, setup.c):
 * a body through one of the pre-boot parsers (selected by the first byte), or a whole
 * --config-file document, into a setup that already holds a configuration.
 *
 * Input: u8 selector | JSON text (the rest). Paths in the input may name files that exist
 * (the seeds use /dev/null, a readable and writable "file" everywhere).
 * Selectors past the parsers send the body as a request through the API's router
 * (instance_api_route, api_setup.c) of an instance that is not started, on one of its paths;
 * there the invariants are the API's: 204 without a body, 200 with an object, 400 with a
 * non-empty fault_message, nothing else. /logger and /metrics are left out: they create the
 * files the input names.
 *
 * Invariants (abort on violation):
 *   - a refused input returns -1 with a message, and leaves the setup exactly as it was
 *     (compared through its GET /vm/config document);
 *   - an accepted one gives a setup whose GET /vm/config document loads again into a fresh
 *     setup and gives back the same document (what GET /vm/config shows is a valid config);
 *   - finalize never fails on a setup that has a kernel, unless there are two roots (refused
 *     earlier) - it must not crash on anything accepted;
 *   - no leak, no memory error (ASan, LSan).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "fcjson.h"
#include "instance.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static _Noreturn void fail(int line, const char *what)
{
	fprintf(stderr, "fuzz_fcconfig.c:%d: invariant broken: %s\n", line, what);
	abort();
}

enum { SEL_DOC, SEL_BOOT, SEL_MACHINE, SEL_MACHINE_PATCH, SEL_DRIVE, SEL_NET, SEL_VSOCK,
       SEL_ENTROPY, SEL_BALLOON, SEL_LOGGER, SEL_METRICS, SEL_RATE, SEL_DRIVE_PATCH,
       SEL_NET_PATCH, SEL_ROUTE, SEL_COUNT = SEL_ROUTE + 2 * 16 };

/* The router's paths (an index from the selector) and methods. */
static const char *const ROUTE_PATHS[16] = {
	"/", "/version", "/vm/config", "/machine-config", "/actions", "/boot-source",
	"/drives/rootfs", "/drives/x", "/network-interfaces/eth0", "/vsock", "/entropy",
	"/balloon", "/cvisor/metrics", "/vm", "/snapshot/create", "/drives/a.b",
};
static const char *const ROUTE_METHODS[2] = { "PUT", "PATCH" };

static struct vmm_instance *inst;

static void route_case(unsigned sel, const uint8_t *body, size_t len)
{
	unsigned i = (sel - SEL_ROUTE) / 2;
	struct api_request req = { .method = ROUTE_METHODS[(sel - SEL_ROUTE) % 2],
				   .path = ROUTE_PATHS[i] };
	if (i == 0 || i == 1 || i == 2 || i == 12)
		req.method = "GET";
	struct api_response resp = { .status = 500 };
	if (!api_parse_body((const char *)body, len, (json_t **)&req.body, &resp)) {
		CHECK(resp.status == MHD_HTTP_BAD_REQUEST);
		json_decref(resp.body);
		return;
	}
	vmm_setup_destroy(&inst->setup);
	vmm_setup_init(&inst->setup);
	instance_api_route(inst, &req, &resp);
	json_decref((json_t *)req.body);
	CHECK(resp.status == MHD_HTTP_OK || resp.status == MHD_HTTP_NO_CONTENT ||
	      resp.status == MHD_HTTP_BAD_REQUEST);
	CHECK(inst->vm == NULL);
	if (resp.status == MHD_HTTP_NO_CONTENT)
		CHECK(resp.body == NULL);
	else
		CHECK(resp.body && json_is_object(resp.body));
	if (resp.status == MHD_HTTP_BAD_REQUEST) {
		json_t *m = json_object_get(resp.body, "fault_message");
		CHECK(m && json_is_string(m) && json_string_length(m) > 0);
	}
	char *text = resp.body ? json_dumps(resp.body, JSON_COMPACT) : NULL;
	CHECK(!resp.body || text);
	free(text);
	json_decref(resp.body);
}

/* A setup with something in every part, as a client would have built it. */
static void base_setup(struct vmm_setup *s)
{
	static const char *const base =
		"{\"boot-source\": {\"kernel_image_path\": \"/dev/null\"},"
		" \"machine-config\": {\"vcpu_count\": 2, \"mem_size_mib\": 64},"
		" \"drives\": [{\"drive_id\": \"rootfs\", \"path_on_host\": \"/dev/null\","
		"  \"is_root_device\": true}],"
		" \"network-interfaces\": [{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\"}]}";
	struct cv_error err = { 0 };
	json_t *doc = json_loads(base, 0, NULL);
	vmm_setup_init(s);
	CHECK(doc && fc_load_config(s, doc, &err) == 0);
	json_decref(doc);
}

static int apply(struct vmm_setup *s, unsigned sel, json_t *v, struct cv_error *err)
{
	switch (sel) {
	case SEL_DOC: {
		/* A document is loaded into a fresh setup, as --config-file does. */
		struct vmm_setup fresh;
		vmm_setup_init(&fresh);
		int rc = fc_load_config(&fresh, v, err);
		if (rc == 0) {
			vmm_setup_destroy(s);
			*s = fresh;
		} else {
			vmm_setup_destroy(&fresh);
		}
		return rc;
	}
	case SEL_BOOT: return fc_put_boot_source(s, v, err);
	case SEL_MACHINE: return fc_put_machine_config(s, v, false, err);
	case SEL_MACHINE_PATCH: return fc_put_machine_config(s, v, true, err);
	case SEL_DRIVE: return fc_put_drive(s, "rootfs", v, err);
	case SEL_NET: return fc_put_net(s, NULL, v, err);
	case SEL_VSOCK: return fc_put_vsock(s, v, err);
	case SEL_ENTROPY: return fc_put_entropy(s, v, err);
	case SEL_BALLOON: return fc_put_balloon(s, v, err);
	case SEL_LOGGER: return fc_put_logger(s, v, err);
	case SEL_METRICS: return fc_put_metrics(s, v, err);
	case SEL_RATE: {
		struct rate_limiter_config rl;
		int rc = fc_parse_rate_limiter(v, "rate_limiter", &rl, err);
		if (rc == 0) {
			CHECK(!rl.bandwidth.enabled ||
			      (rl.bandwidth.size && rl.bandwidth.refill_time_ms &&
			       rl.bandwidth.refill_time_ms <= FC_MAX_REFILL_MS));
			/* The JSON form parses back to the same limiter. */
			json_t *back = fc_rate_limiter_json(&rl);
			struct rate_limiter_config again;
			CHECK(back && fc_parse_rate_limiter(back, "rl", &again, err) == 0);
			CHECK(again.bandwidth.enabled == rl.bandwidth.enabled &&
			      again.ops.enabled == rl.ops.enabled);
			CHECK(!rl.ops.enabled || (again.ops.size == rl.ops.size &&
						  again.ops.one_time_burst == rl.ops.one_time_burst));
			json_decref(back);
		}
		return rc;
	}
	case SEL_DRIVE_PATCH: {
		struct fc_drive_patch p;
		return fc_parse_drive_patch(v, "rootfs", &p, err);
	}
	default: {
		struct fc_net_patch p;
		return fc_parse_net_patch(v, "eth0", &p, err);
	}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned sel = data[0] % SEL_COUNT;
	if (sel >= SEL_ROUTE) {
		if (!inst) {
			struct cv_error e = { 0 };
			inst = calloc(1, sizeof(*inst));
			CHECK(inst && instance_init(inst, "fuzz", &e) == 0);
		}
		route_case(sel, data + 1, size - 1);
		return 0;
	}
	json_t *v = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
	if (!v)
		return 0;
	struct vmm_setup s;
	base_setup(&s);
	json_t *before = fc_config_json(&s);
	CHECK(before);
	struct cv_error err = { 0 };
	int rc = apply(&s, sel, v, &err);
	CHECK(rc == 0 || rc == -1);
	json_t *after = fc_config_json(&s);
	CHECK(after);
	if (rc < 0) {
		CHECK(err.msg[0] != 0);
		CHECK(json_equal(before, after));
	} else {
		struct vmm_setup again;
		vmm_setup_init(&again);
		struct cv_error e2 = { 0 };
		int back = fc_load_config(&again, after, &e2);
		if (back != 0)
			fprintf(stderr, "reload failed: %s\n", e2.msg);
		CHECK(back == 0);
		json_t *doc2 = fc_config_json(&again);
		CHECK(json_equal(after, doc2));
		json_decref(doc2);
		vmm_setup_destroy(&again);
		/* Whatever was accepted can be finalized (or is refused with a reason). */
		memset(&err, 0, sizeof(err));
		if (vmm_setup_finalize(&s, &err) < 0)
			CHECK(err.msg[0] != 0);
		else
			CHECK(s.final_cmdline != NULL);
	}
	json_decref(before);
	json_decref(after);
	json_decref(v);
	vmm_setup_destroy(&s);
	return 0;
}
