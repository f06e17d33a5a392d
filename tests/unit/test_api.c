/*
 * The control API below HTTP (src/api/http.c and the routes of src/vmm/api.c): request bodies as
 * the server parses them, and error responses, which must always carry {"fault_message": ...}
 * whatever bytes the request held, because clients show that message and nothing else.
 */
#include <criterion/criterion.h>
#include <microhttpd.h>
#include <string.h>

#include "api.h"
#include "http.h"
#include "vm.h"

static const char *fault_of(const struct api_response *r)
{
	json_t *m = r->body ? json_object_get(r->body, "fault_message") : NULL;
	return m && json_is_string(m) ? json_string_value(m) : NULL;
}

Test(api, parse_body)
{
	struct api_response resp = { 0 };
	json_t *body = (json_t *)1;
	cr_assert(api_parse_body(NULL, 0, &body, &resp));
	cr_assert_null(body, "an empty body is no body");
	cr_assert(api_parse_body("{\"a\":1}", 7, &body, &resp));
	cr_assert(json_is_object(body));
	json_decref(body);
	const char *bad[] = { "{\"a\":1,\"a\":2}", "[1]", "{\"a\":", "7" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_not(api_parse_body(bad[i], strlen(bad[i]), &body, &resp), "%s", bad[i]);
		cr_assert_null(body);
		cr_assert_eq(resp.status, MHD_HTTP_BAD_REQUEST);
		cr_assert_not_null(fault_of(&resp), "%s", bad[i]);
	}
	json_decref(resp.body);
}

/*
 * Found by fuzz-api: a request for "/%ff" (the server percent-decodes paths) was answered 400
 * with an empty body, because the fault message quoting the path was not UTF-8 and jansson
 * refused it; a message cut at its 1024-byte limit inside a character did the same.
 */
Test(api, fault_message_survives_bytes_that_are_not_utf8)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	cr_assert_not_null(vm);
	struct api_response resp = { 0 };
	struct api_request req = { .method = "GET", .path = "/\xff\xfe" };
	vmm_api_route(vm, &req, &resp);
	cr_assert_eq(resp.status, MHD_HTTP_BAD_REQUEST);
	cr_assert_not_null(fault_of(&resp), "error without its message");
	cr_assert(strstr(fault_of(&resp), "GET /??"), "%s", fault_of(&resp));

	char key[1100];
	memset(key, 'k', sizeof(key));
	memcpy(key + 1000, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 12);
	key[sizeof(key) - 1] = 0;
	for (size_t cut = 1000; cut < 1012; cut++) {
		api_fault(&resp, MHD_HTTP_BAD_REQUEST, "unknown field '%.*s'", (int)cut, key);
		cr_assert_not_null(fault_of(&resp), "message cut at %zu lost", cut);
	}
	api_fault(&resp, MHD_HTTP_BAD_REQUEST, "field 'caf\xc3\xa9'");
	cr_assert_str_eq(fault_of(&resp), "field 'caf\xc3\xa9'", "valid UTF-8 is kept as it is");
	json_decref(resp.body);
	free(vm);
}

/*
 * Every route with a body checks it the same way (api_check_body) before it acts: no body, or
 * a field the route does not know, is a 400 that names the problem; the VM is not touched.
 */
Test(api, bodies_without_json_or_with_unknown_fields_are_refused)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	cr_assert_not_null(vm);
	static const struct {
		const char *method, *path, *body, *fault;
	} cases[] = {
		{ "PATCH", "/vm", NULL, "this request needs a JSON body" },
		{ "PATCH", "/vm", "{\"state\": \"Paused\", \"st\": 1}", "unknown field 'st'" },
		{ "PUT", "/snapshot/create", NULL, "this request needs a JSON body" },
		{ "PUT", "/snapshot/create", "{\"snapshot_path\": \"/s\", \"mem_path\": \"/m\"}",
		  "unknown field 'mem_path'" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct api_response resp = { 0 };
		struct api_request req = { .method = cases[i].method, .path = cases[i].path };
		if (cases[i].body) {
			req.body = json_loads(cases[i].body, 0, NULL);
			cr_assert_not_null(req.body);
		}
		vmm_api_route(vm, &req, &resp);
		cr_assert_eq(resp.status, MHD_HTTP_BAD_REQUEST, "%s %s", req.method, req.path);
		cr_assert_not_null(fault_of(&resp), "%s %s", req.method, req.path);
		cr_assert_str_eq(fault_of(&resp), cases[i].fault, "%s %s", req.method, req.path);
		json_decref(req.body);
		json_decref(resp.body);
	}

	static const char *const keys[] = { "amount_mib", NULL };
	struct api_response resp = { 0 };
	struct api_request req = { .method = "PATCH", .path = "/balloon",
				   .body = json_pack("{s:i}", "amount_mib", 64) };
	cr_assert(api_check_body(&req, &resp, keys), "a body with known fields only passes");
	cr_assert_null(resp.body, "and leaves the response alone");
	json_decref(req.body);
	free(vm);
}

/* /cvisor/migrate refuses what it cannot do with a reason, before anything starts. */
Test(api, migrate_routes_refuse_bad_requests)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	cr_assert_not_null(vm);
	static const struct {
		const char *body;
		const char *needle;
	} bad[] = {
		{ NULL, "needs a JSON body" },
		{ "{\"destination\": \"tcp:127.0.0.1:7000\", \"speed\": 1}", "unknown field 'speed'" },
		{ "{}", "destination" },
		{ "{\"destination\": 7}", "destination" },
		{ "{\"destination\": \"tcp:example.com:7000\"}", "IP address" },
		{ "{\"destination\": \"tcp:127.0.0.1:0\"}", "port" },
		{ "{\"destination\": \"tcp:127.0.0.1:7000\", \"downtime_ms\": 0}", "downtime_ms" },
		{ "{\"destination\": \"tcp:127.0.0.1:7000\", \"max_rounds\": -1}", "max_rounds" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct api_response resp = { 0 };
		json_t *body = NULL;
		if (bad[i].body)
			cr_assert(api_parse_body(bad[i].body, strlen(bad[i].body), &body, &resp));
		struct api_request req = { .method = "PUT", .path = "/cvisor/migrate", .body = body };
		vmm_api_route(vm, &req, &resp);
		cr_assert_eq(resp.status, MHD_HTTP_BAD_REQUEST, "%s", bad[i].body);
		cr_assert_not_null(fault_of(&resp));
		cr_assert(strstr(fault_of(&resp), bad[i].needle), "%s: %s", bad[i].body,
			  fault_of(&resp));
		json_decref(resp.body);
		json_decref(body);
	}
	struct api_response resp = { 0 };
	struct api_request get = { .method = "GET", .path = "/cvisor/migrate" };
	vmm_api_route(vm, &get, &resp);
	cr_assert_eq(resp.status, MHD_HTTP_OK);
	cr_assert_str_eq(json_string_value(json_object_get(resp.body, "state")), "none");
	json_decref(resp.body);
	resp = (struct api_response){ 0 };
	struct api_request del = { .method = "DELETE", .path = "/cvisor/migrate" };
	vmm_api_route(vm, &del, &resp);
	cr_assert_eq(resp.status, MHD_HTTP_BAD_REQUEST, "nothing to cancel");
	json_decref(resp.body);
	resp = (struct api_response){ 0 };
	struct api_request cancel = { .method = "PUT", .path = "/cvisor/migrate/cancel" };
	vmm_api_route(vm, &cancel, &resp);
	cr_assert_eq(resp.status, MHD_HTTP_BAD_REQUEST);
	json_decref(resp.body);
	free(vm);
}
