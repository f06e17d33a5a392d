/*
 * The Firecracker-compatible configuration: request bodies and --config-file documents parsed
 * into the VM's setup (src/vmm/fcjson.c), and the control API's pre-boot routes
 * (src/vmm/api_setup.c) on an instance that has no VM yet - status codes, fault messages, and
 * what the setup holds afterwards. No /dev/kvm needed.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fcjson.h"
#include "instance.h"
#include "setup.h"

static char dir[] = "/tmp/cvisor-fcapi-XXXXXX";
static char kernel[128], disk[128], disk2[128];

static void make_file(const char *path, size_t size)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static void files_up(void)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(kernel, sizeof(kernel), "%s/vmlinux", dir);
	snprintf(disk, sizeof(disk), "%s/root.img", dir);
	snprintf(disk2, sizeof(disk2), "%s/data.img", dir);
	make_file(kernel, 4096);
	make_file(disk, 1 << 20);
	make_file(disk2, 1 << 20);
}

static void files_down(void)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
	strcpy(dir, "/tmp/cvisor-fcapi-XXXXXX");
}

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &e);
	cr_assert_not_null(v, "test JSON: %s: %s", text, e.text);
	return v;
}

/* Runs put on the JSON text; returns its result, err filled. */
static int put(int (*fn)(struct vmm_setup *, json_t *, struct cv_error *), struct vmm_setup *s,
	       const char *text, struct cv_error *err)
{
	json_t *v = J(text);
	memset(err, 0, sizeof(*err));
	int rc = fn(s, v, err);
	json_decref(v);
	return rc;
}

static int put_machine(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	return fc_put_machine_config(s, body, false, err);
}

TestSuite(fcjson, .init = files_up, .fini = files_down);

Test(fcjson, rate_limiter_parsed_and_validated)
{
	struct rate_limiter_config rl;
	struct cv_error err = { 0 };
	json_t *v = J("{\"bandwidth\": {\"size\": 1048576, \"one_time_burst\": 4096, "
		      "\"refill_time\": 100}, \"ops\": {\"size\": 1000, \"refill_time\": 1000}}");
	cr_assert_eq(fc_parse_rate_limiter(v, "rate_limiter", &rl, &err), 0, "%s", err.msg);
	cr_assert(rl.bandwidth.enabled && rl.ops.enabled);
	cr_assert_eq(rl.bandwidth.size, 1048576);
	cr_assert_eq(rl.bandwidth.one_time_burst, 4096);
	cr_assert_eq(rl.bandwidth.refill_time_ms, 100);
	cr_assert_eq(rl.ops.size, 1000);
	cr_assert_eq(rl.ops.refill_time_ms, 1000);
	json_t *back = fc_rate_limiter_json(&rl);
	cr_assert(json_equal(back, v), "the limiter must survive a round trip");
	json_decref(back);
	json_decref(v);

	/* A bucket of size 0 or refill 0 does not limit; an empty object is no limiter. */
	v = J("{\"bandwidth\": {\"size\": 0, \"refill_time\": 100}}");
	cr_assert_eq(fc_parse_rate_limiter(v, "rl", &rl, &err), 0);
	cr_assert_not(rate_limiter_enabled(&rl));
	json_decref(v);

	const char *bad[] = {
		"{\"bandwidth\": {\"size\": 10}}",                          /* refill_time missing */
		"{\"bandwidth\": {\"size\": -1, \"refill_time\": 1}}",
		"{\"bandwidth\": {\"size\": 1, \"refill_time\": 1, \"x\": 1}}",
		"{\"bandwidth\": {\"size\": 1.5, \"refill_time\": 1}}",
		"{\"bandwidth\": {\"size\": 1, \"refill_time\": 99999999999999}}",
		"{\"bandwidth\": 7}",
		"{\"opz\": {}}",
		"[]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = J(bad[i]);
		memset(&err, 0, sizeof(err));
		cr_assert_eq(fc_parse_rate_limiter(v, "rate_limiter", &rl, &err), -1, "%s", bad[i]);
		cr_assert(strstr(err.msg, "rate_limiter"), "message names the object: %s", err.msg);
		json_decref(v);
	}
}

Test(fcjson, machine_config_put_and_patch)
{
	struct vmm_setup s;
	struct cv_error err;
	vmm_setup_init(&s);
	cr_assert_eq(s.vm.cpus, 1);
	cr_assert_eq(s.vm.memory_bytes, 128ULL << 20, "Firecracker's default memory");
	cr_assert_eq(put(fc_put_boot_source, &s, "{}", &err), -1);

	cr_assert_eq(put(put_machine, &s, "{\"vcpu_count\": 2, \"mem_size_mib\": 256, "
			 "\"smt\": true, \"track_dirty_pages\": true}", &err), 0, "%s", err.msg);
	cr_assert_eq(s.vm.cpus, 2);
	cr_assert_eq(s.vm.memory_bytes, 256ULL << 20);
	cr_assert(s.smt && s.vm.track_dirty_pages);
	/* PUT needs both sizes and resets what it leaves out. */
	cr_assert_eq(put(put_machine, &s, "{\"vcpu_count\": 4}", &err), -1);
	cr_assert(strstr(err.msg, "mem_size_mib"), "%s", err.msg);
	cr_assert_eq(s.vm.cpus, 2, "a refused request changes nothing");
	cr_assert_eq(put(put_machine, &s, "{\"vcpu_count\": 4, \"mem_size_mib\": 64}",
			 &err), 0, "%s", err.msg);
	cr_assert_not(s.smt, "PUT resets smt to its default");

	json_t *body = J("{\"mem_size_mib\": 512}");
	cr_assert_eq(fc_put_machine_config(&s, body, true, &err), 0, "%s", err.msg);
	json_decref(body);
	cr_assert_eq(s.vm.cpus, 4, "PATCH keeps what it does not name");
	cr_assert_eq(s.vm.memory_bytes, 512ULL << 20);

	const char *bad[] = {
		"{\"vcpu_count\": 0, \"mem_size_mib\": 128}",
		"{\"vcpu_count\": 33, \"mem_size_mib\": 128}",
		"{\"vcpu_count\": 1, \"mem_size_mib\": 1}",
		"{\"vcpu_count\": 1, \"mem_size_mib\": 9223372036854775807}",
		"{\"vcpu_count\": \"2\", \"mem_size_mib\": 128}",
		"{\"vcpu_count\": 3, \"mem_size_mib\": 128, \"smt\": true}",
		"{\"vcpu_count\": 1, \"mem_size_mib\": 128, \"huge_pages\": \"1G\"}",
		"{\"vcpu_count\": 1, \"mem_size_mib\": 128, \"cpu_template\": \"T2\"}",
		"{\"vcpu_count\": 1, \"mem_size_mib\": 128, \"memory\": 1}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(put(put_machine, &s, bad[i], &err), -1, "%s", bad[i]);
	cr_assert_eq(s.vm.cpus, 4);
	vmm_setup_destroy(&s);
}

Test(fcjson, drives_root_first_and_cmdline)
{
	struct vmm_setup s;
	struct cv_error err;
	char body[512];
	vmm_setup_init(&s);
	cr_assert_eq(vmm_setup_finalize(&s, &err), -1, "no kernel yet");
	snprintf(body, sizeof(body), "{\"kernel_image_path\": \"%s\", \"boot_args\": "
		 "\"console=ttyS0 pci=off\"}", kernel);
	cr_assert_eq(put(fc_put_boot_source, &s, body, &err), 0, "%s", err.msg);

	json_t *d = J("{}");
	snprintf(body, sizeof(body), "{\"drive_id\": \"data\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": false, \"cache_type\": \"Writeback\"}", disk2);
	json_decref(d);
	d = J(body);
	cr_assert_eq(fc_put_drive(&s, "data", d, &err), 0, "%s", err.msg);
	cr_assert_eq(fc_put_drive(&s, "other", d, &err), -1, "path id must match the body's");
	json_decref(d);
	cr_assert_eq(s.vm.devices.disks[0].cache, DISK_CACHE_WRITEBACK);
	snprintf(body, sizeof(body), "{\"drive_id\": \"rootfs\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": true, \"is_read_only\": true}", disk);
	d = J(body);
	cr_assert_eq(fc_put_drive(&s, "rootfs", d, &err), 0, "%s", err.msg);
	json_decref(d);
	snprintf(body, sizeof(body), "{\"drive_id\": \"root2\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": true}", disk2);
	d = J(body);
	cr_assert_eq(fc_put_drive(&s, "root2", d, &err), -1, "one root device only");
	json_decref(d);
	/* Replacing a drive keeps its place and count. */
	snprintf(body, sizeof(body), "{\"drive_id\": \"data\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": false, \"io_engine\": \"Async\"}", disk2);
	d = J(body);
	cr_assert_eq(fc_put_drive(&s, "data", d, &err), 0, "%s", err.msg);
	json_decref(d);
	cr_assert_eq(s.vm.devices.n_disks, 2);
	cr_assert_eq(s.vm.devices.disks[0].io_engine, DISK_IO_ASYNC);
	cr_assert_eq(s.vm.devices.disks[0].cache, DISK_CACHE_UNSAFE, "Firecracker's default");

	cr_assert_eq(vmm_setup_finalize(&s, &err), 0, "%s", err.msg);
	cr_assert_str_eq(s.vm.devices.disks[0].id, "rootfs", "the root drive is vda");
	cr_assert_str_eq(s.final_cmdline, "console=ttyS0 pci=off root=/dev/vda ro");
	cr_assert_eq(s.vm.devices.transport, VIRTIO_TRANSPORT_MMIO, "pci=off means virtio-mmio");
	cr_assert_eq(vmm_setup_find_disk(&s, "data"), 1);
	cr_assert_eq(vmm_setup_find_disk(&s, "nope"), -1);
	vmm_setup_destroy(&s);
}

Test(fcjson, bad_drives_and_nets)
{
	struct vmm_setup s;
	struct cv_error err;
	char body[512];
	vmm_setup_init(&s);
	const char *bad_drive[] = {
		"{\"drive_id\": \"d\", \"path_on_host\": \"/nonexistent/x\", \"is_root_device\": false}",
		"{\"drive_id\": \"d\", \"path_on_host\": \"\", \"is_root_device\": false}",
		"{\"drive_id\": \"d\", \"path_on_host\": \"%s\"}",
		"{\"drive_id\": \"d/x\", \"path_on_host\": \"%s\", \"is_root_device\": false}",
		("{\"drive_id\": \"d\", \"path_on_host\": \"%s\", \"is_root_device\": false, "
		 "\"cache_type\": \"Fast\"}"),
		"{\"drive_id\": \"d\", \"path_on_host\": \"%s\", \"is_root_device\": 1}",
		("{\"drive_id\": \"d\", \"path_on_host\": \"%s\", \"is_root_device\": false, "
		 "\"socket\": \"/x\"}"),
		("{\"drive_id\": \"d\", \"path_on_host\": \"%s\", \"is_root_device\": true, "
		 "\"partuuid\": \"a b\"}"),
	};
	for (size_t i = 0; i < sizeof(bad_drive) / sizeof(bad_drive[0]); i++) {
		/* "%s" stands for the (valid) disk path. */
		const char *at = strstr(bad_drive[i], "%s");
		if (at)
			snprintf(body, sizeof(body), "%.*s%s%s", (int)(at - bad_drive[i]), bad_drive[i],
				 disk, at + 2);
		else
			snprintf(body, sizeof(body), "%s", bad_drive[i]);
		json_t *d = J(body);
		memset(&err, 0, sizeof(err));
		cr_assert_eq(fc_put_drive(&s, NULL, d, &err), -1, "%s", body);
		cr_assert(err.msg[0]);
		json_decref(d);
	}
	cr_assert_eq(s.vm.devices.n_disks, 0);

	cr_assert_eq(put(fc_put_boot_source, &s, "{\"kernel_image_path\": \"/x\"}", &err), -1);
	json_t *n = J("{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\", "
		      "\"guest_mac\": \"AA:FC:00:00:00:01\", \"tx_rate_limiter\": "
		      "{\"ops\": {\"size\": 10, \"refill_time\": 10}}}");
	cr_assert_eq(fc_put_net(&s, "eth0", n, &err), 0, "%s", err.msg);
	json_decref(n);
	cr_assert(s.vm.devices.nets[0].tx_rate_limiter.ops.enabled);
	cr_assert_eq(s.vm.devices.nets[0].mac[0], 0xaa);
	const char *bad_net[] = {
		"{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap0\"}",        /* tap in use */
		("{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap1\", \"guest_mac\": "
		 "\"AA:FC:00:00:00:01\"}"),                                  /* MAC in use */
		("{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap1\", \"guest_mac\": "
		 "\"01:00:00:00:00:01\"}"),                                  /* multicast */
		"{\"iface_id\": \"eth1\", \"host_dev_name\": \"a-name-far-too-long\"}",
		"{\"iface_id\": \"eth1\"}",
		"{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap1\", \"rx_rate_limiter\": 5}",
	};
	for (size_t i = 0; i < sizeof(bad_net) / sizeof(bad_net[0]); i++) {
		n = J(bad_net[i]);
		cr_assert_eq(fc_put_net(&s, NULL, n, &err), -1, "%s", bad_net[i]);
		json_decref(n);
	}
	cr_assert_eq(s.vm.devices.n_nets, 1);
	vmm_setup_destroy(&s);
}

Test(fcjson, config_file_round_trip)
{
	char path[160], text[2048];
	snprintf(path, sizeof(path), "%s/vm.json", dir);
	snprintf(text, sizeof(text),
		 "{\"boot-source\": {\"kernel_image_path\": \"%s\", \"boot_args\": \"console=ttyS0\"},"
		 " \"machine-config\": {\"vcpu_count\": 2, \"mem_size_mib\": 96},"
		 " \"drives\": [{\"drive_id\": \"rootfs\", \"path_on_host\": \"%s\","
		 "   \"is_root_device\": true, \"is_read_only\": false, \"rate_limiter\":"
		 "   {\"bandwidth\": {\"size\": 100, \"refill_time\": 10}}}],"
		 " \"network-interfaces\": [{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap9\"}],"
		 " \"vsock\": {\"guest_cid\": 3, \"uds_path\": \"/tmp/v.sock\"},"
		 " \"entropy\": {},"
		 " \"balloon\": {\"amount_mib\": 16, \"deflate_on_oom\": true},"
		 " \"metrics\": {\"metrics_path\": \"/tmp/m\"}}", kernel, disk);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);

	struct vmm_setup s, again;
	struct cv_error err = { 0 };
	vmm_setup_init(&s);
	cr_assert_eq(fc_load_config_file(&s, path, &err), 0, "%s", err.msg);
	cr_assert_eq(s.vm.cpus, 2);
	cr_assert_eq(s.vm.devices.n_disks, 1);
	cr_assert_eq(s.vm.devices.n_nets, 1);
	cr_assert(s.vm.devices.vsock.enabled && s.vm.devices.rng && s.vm.devices.balloon.enabled);
	cr_assert_eq(s.vm.devices.balloon.target_mib, 16);
	cr_assert_eq(s.vm.devices.disks[0].rate_limiter.bandwidth.size, 100);

	/* GET /vm/config's document loads back into the same configuration. */
	json_t *doc = fc_config_json(&s);
	cr_assert_not_null(doc);
	vmm_setup_init(&again);
	cr_assert_eq(fc_load_config(&again, doc, &err), 0, "%s", err.msg);
	json_t *doc2 = fc_config_json(&again);
	cr_assert(json_equal(doc, doc2), "GET /vm/config must be loadable as --config-file");
	json_decref(doc);
	json_decref(doc2);
	vmm_setup_destroy(&again);
	vmm_setup_destroy(&s);

	const char *bad[] = {
		"{}", "{\"boot-source\": 1}", "[]", "{\"boot-source\": {}, \"cpu-config\": {}}",
		"{\"drives\": {}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *v = J(bad[i]);
		vmm_setup_init(&s);
		cr_assert_eq(fc_load_config(&s, v, &err), -1, "%s", bad[i]);
		vmm_setup_destroy(&s);
		json_decref(v);
	}
	vmm_setup_init(&s);
	cr_assert_eq(fc_load_config_file(&s, "/nonexistent.json", &err), -1);
	cr_assert_eq(err.code, CV_EXIT_NOINPUT);
	vmm_setup_destroy(&s);
}

/* --- the routes, on an instance that is not started --- */

static struct vmm_instance *inst;

static void inst_up(void)
{
	files_up();
	inst = calloc(1, sizeof(*inst));
	struct cv_error err = { 0 };
	cr_assert_eq(instance_init(inst, "test-vm", &err), 0, "%s", err.msg);
}

static void inst_down(void)
{
	instance_destroy(inst);
	free(inst);
	files_down();
}

static unsigned call(const char *method, const char *path, const char *body, json_t **out)
{
	struct api_response resp = { .status = 500 };
	struct api_request req = { .method = method, .path = path };
	if (body && !api_parse_body(body, strlen(body), (json_t **)&req.body, &resp)) {
		if (out)
			*out = resp.body;
		else
			json_decref(resp.body);
		return resp.status;
	}
	instance_api_route(inst, &req, &resp);
	json_decref(req.body);
	if (resp.status >= 400) {
		json_t *m = resp.body ? json_object_get(resp.body, "fault_message") : NULL;
		cr_assert(m && json_is_string(m) && json_string_length(m) > 0,
			  "%s %s -> %u without a fault_message", method, path, resp.status);
	}
	if (resp.status == MHD_HTTP_NO_CONTENT)
		cr_assert_null(resp.body, "204 has no body");
	if (out)
		*out = resp.body;
	else
		json_decref(resp.body);
	return resp.status;
}

static const char *fault(json_t *b)
{
	return json_string_value(json_object_get(b, "fault_message"));
}

TestSuite(routes, .init = inst_up, .fini = inst_down);

Test(routes, instance_info_and_version)
{
	json_t *b;
	cr_assert_eq(call("GET", "/", NULL, &b), 200);
	cr_assert_str_eq(json_string_value(json_object_get(b, "id")), "test-vm");
	cr_assert_str_eq(json_string_value(json_object_get(b, "state")), "Not started");
	cr_assert_str_eq(json_string_value(json_object_get(b, "app_name")), "cvisor");
	json_decref(b);
	cr_assert_eq(call("GET", "/version", NULL, &b), 200);
	cr_assert(json_is_string(json_object_get(b, "firecracker_version")));
	json_decref(b);
	cr_assert_eq(call("GET", "/machine-config", NULL, &b), 200);
	cr_assert_eq(json_integer_value(json_object_get(b, "mem_size_mib")), 128);
	json_decref(b);
	cr_assert_eq(call("GET", "/cvisor/metrics", NULL, &b), 200);
	cr_assert(json_is_array(json_object_get(b, "vcpus")));
	json_decref(b);
}

Test(routes, pre_boot_configuration)
{
	char body[512];
	json_t *b;
	snprintf(body, sizeof(body), "{\"kernel_image_path\": \"%s\"}", kernel);
	cr_assert_eq(call("PUT", "/boot-source", body, NULL), 204);
	cr_assert_str_eq(inst->setup.boot.cmdline, SETUP_FC_BOOT_ARGS, "Firecracker's default");
	cr_assert_eq(call("PUT", "/machine-config", "{\"vcpu_count\": 2, \"mem_size_mib\": 64}",
			  NULL), 204);
	cr_assert_eq(call("PATCH", "/machine-config", "{\"vcpu_count\": 1}", NULL), 204);
	snprintf(body, sizeof(body), "{\"drive_id\": \"rootfs\", \"path_on_host\": \"%s\", "
		 "\"is_root_device\": true, \"is_read_only\": false}", disk);
	cr_assert_eq(call("PUT", "/drives/rootfs", body, NULL), 204);
	cr_assert_eq(call("PUT", "/drives/other", body, &b), 400);
	cr_assert(strstr(fault(b), "does not match"), "%s", fault(b));
	json_decref(b);
	cr_assert_eq(call("PUT", "/network-interfaces/eth0",
			  "{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\"}", NULL), 204);
	cr_assert_eq(call("PUT", "/vsock", "{\"guest_cid\": 3, \"uds_path\": \"/tmp/x.sock\"}",
			  NULL), 204);
	cr_assert_eq(call("PUT", "/entropy", NULL, NULL), 204);
	cr_assert_eq(call("PUT", "/balloon", "{\"amount_mib\": 0, \"deflate_on_oom\": false}",
			  NULL), 204);
	cr_assert_eq(call("GET", "/balloon", NULL, &b), 200);
	cr_assert(json_is_false(json_object_get(b, "deflate_on_oom")));
	json_decref(b);
	snprintf(body, sizeof(body), "{\"metrics_path\": \"%s/metrics\"}", dir);
	cr_assert_eq(call("PUT", "/metrics", body, NULL), 204);
	snprintf(body, sizeof(body), "{\"log_path\": \"%s/log\", \"level\": \"debug\", "
		 "\"show_level\": true}", dir);
	cr_assert_eq(call("PUT", "/logger", body, NULL), 204);

	cr_assert_eq(call("GET", "/vm/config", NULL, &b), 200);
	cr_assert_eq(json_array_size(json_object_get(b, "drives")), 1);
	cr_assert_eq(json_array_size(json_object_get(b, "network-interfaces")), 1);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(b, "machine-config"),
							"vcpu_count")), 1);
	json_decref(b);

	/* FlushMetrics writes one JSON line to the file; the logger recorded the requests. */
	cr_assert_eq(call("PUT", "/actions", "{\"action_type\": \"FlushMetrics\"}", NULL), 204);
	char path[160], line[4096];
	snprintf(path, sizeof(path), "%s/metrics", dir);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_assert_null(fgets(line + 2048, 2048, f), "one line per flush");
	fclose(f);
	json_t *m = J(line);
	cr_assert_geq(json_integer_value(json_object_get(json_object_get(m, "api"), "requests")),
		      10);
	json_decref(m);
	snprintf(path, sizeof(path), "%s/log", dir);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	bool seen = false;
	while (fgets(line, sizeof(line), f))
		seen = seen || (strstr(line, "[Info] API PUT /actions: 204") != NULL);
	fclose(f);
	cr_assert(seen, "the logger records API requests");
}

Test(routes, refusals_are_400_with_a_reason)
{
	json_t *b;
	cr_assert_eq(call("PUT", "/actions", "{\"action_type\": \"InstanceStart\"}", &b), 400);
	cr_assert(strstr(fault(b), "boot source"), "%s", fault(b));
	json_decref(b);
	cr_assert_eq(inst->vm, NULL);
	struct {
		const char *method, *path, *body;
	} bad[] = {
		{ "PUT", "/actions", "{\"action_type\": \"Reboot\"}" },
		{ "PUT", "/actions", "{\"action_type\": \"FlushMetrics\"}" },   /* no metrics file */
		{ "PUT", "/actions", "{\"action_type\": \"SendCtrlAltDel\"}" },  /* not started */
		{ "PUT", "/actions", NULL },
		{ "PUT", "/machine-config", "{\"vcpu_count\": 1000000, \"mem_size_mib\": 128}" },
		{ "PUT", "/machine-config", NULL },
		{ "PUT", "/boot-source", "{\"kernel_image_path\": 5}" },
		{ "PATCH", "/drives/rootfs", "{\"drive_id\": \"rootfs\"}" },      /* not started */
		{ "PATCH", "/network-interfaces/eth0", "{\"iface_id\": \"eth0\"}" },
		{ "PATCH", "/vm", "{\"state\": \"Paused\"}" },
		{ "PUT", "/snapshot/create", "{}" },
		{ "PATCH", "/balloon", "{\"amount_mib\": 1}" },
		{ "GET", "/balloon", NULL },                                     /* none configured */
		{ "PUT", "/drives/..", "{}" },
		{ "PUT", "/drives/", "{}" },
		{ "DELETE", "/", NULL },
		{ "GET", "/nothing", NULL },
		{ "PUT", "/logger", "{\"log_path\": \"/nonexistent/dir/log\"}" },
		{ "PUT", "/metrics", "{\"metrics_path\": \"/nonexistent/dir/m\"}" },
		{ "PUT", "/vsock", "{\"guest_cid\": 2, \"uds_path\": \"/tmp/x\"}" },
		{ "PUT", "/entropy", "{\"rate_limiter\": {\"ops\": {}}}" },
		{ "PUT", "/balloon", "{\"amount_mib\": 1}" },
		{ "PUT", "/boot-source", "{\"kernel_image_path\": \"/x\", \"kernel_image_path\": \"/y\"}" },
		{ "PUT", "/boot-source", "not json" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(call(bad[i].method, bad[i].path, bad[i].body, NULL), 400, "%s %s %s",
			     bad[i].method, bad[i].path, bad[i].body ? bad[i].body : "");
	cr_assert_null(inst->setup.logger.path, "a logger that could not open is not configured");
	cr_assert_null(inst->setup.metrics.path);
	cr_assert_eq(call("GET", "/", NULL, &b), 200);
	cr_assert_geq(json_integer_value(json_object_get(json_object_get(
		vmm_metrics_json(&inst->metrics, NULL), "api"), "errors")), 20);
	json_decref(b);
}
