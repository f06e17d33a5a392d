/*
 * libFuzzer target for the PUT /snapshot/load body parser (src/vmm/load.c,
 * load_request_parse): the bytes are the request body as the API server hands it over
 * (api_parse_body, then the parser).
 *
 * These invariants abort on violation:
 *   - an accepted request has non-empty snapshot and memory paths, at most VM_MAX_NETS
 *     overrides, each with an interface id, a host device name shorter than an interface name,
 *     a unicast MAC when one is set, distinct ids, and a CID outside the reserved ones;
 *   - a refusal is a usage error (CV_EXIT_USAGE) with a one-line message;
 *   - no memory error or leak (ASan, libFuzzer's leak check).
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "load.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static _Noreturn void fail(int line, const char *what)
{
	fprintf(stderr, "fuzz_load.c:%d: invariant broken: %s\n", line, what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body;
	struct api_response resp = { 0 };
	if (!api_parse_body((const char *)data, size, &body, &resp)) {
		CHECK(resp.status == MHD_HTTP_BAD_REQUEST);
		json_decref(resp.body);
		return 0;
	}
	if (!body)
		return 0;
	struct load_request r;
	struct cv_error err = { 0 };
	if (load_request_parse(body, &r, &err) == 0) {
		CHECK(r.snapshot_path && *r.snapshot_path && r.mem_path && *r.mem_path);
		CHECK(r.n_nets <= VM_MAX_NETS);
		for (unsigned i = 0; i < r.n_nets; i++) {
			const struct load_net_override *o = &r.nets[i];
			CHECK(o->iface_id && *o->iface_id);
			CHECK(!o->host_dev_name || (*o->host_dev_name && strlen(o->host_dev_name) < 16));
			CHECK(!o->has_mac || !(o->mac[0] & 1));
			for (unsigned k = 0; k < i; k++)
				CHECK(strcmp(r.nets[k].iface_id, o->iface_id) != 0);
		}
		CHECK(!r.has_vsock_cid || (r.vsock_cid >= 3 && r.vsock_cid != 0xffffffffu));
		CHECK(!r.vsock_uds || *r.vsock_uds);
	} else {
		CHECK(err.code == CV_EXIT_USAGE);
		CHECK(err.msg[0] && !strchr(err.msg, '\n'));
	}
	json_decref(body);
	return 0;
}
