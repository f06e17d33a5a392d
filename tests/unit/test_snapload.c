/*
 * PUT /snapshot/load and diff snapshots without KVM: the load request parser (Firecracker's
 * fields, cvisor's extensions, every refusal), the device configuration section (round trip,
 * malformed payloads refused), and applying a sparse diff onto its base (cvisor snapshot
 * merge): only the diff's data extents land, zero pages in the diff included.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "load.h"
#include "snapshot/state.h"
#include "sparse_merge.h"

static json_t *J(const char *s)
{
	json_error_t e;
	json_t *j = json_loads(s, 0, &e);
	cr_assert_not_null(j, "test bug: %s: %s", s, e.text);
	return j;
}

/* The body of the last parse: the request's strings point into it. */
static json_t *held;

static void release(void)
{
	json_decref(held);
	held = NULL;
}

TestSuite(load_request, .fini = release);

/* Parses s; returns the error message ("" if it parsed). */
static const char *parse(const char *s, struct load_request *r)
{
	static struct cv_error err;
	memset(&err, 0, sizeof(err));
	release();
	json_t *j = J(s);
	int rc = load_request_parse(j, r, &err);
	if (rc == 0) {
		held = j;
		return "";
	}
	json_decref(j);
	cr_assert_eq(err.code, CV_EXIT_USAGE, "%s", err.msg);
	cr_assert_null(strchr(err.msg, '\n'));
	return err.msg;
}

Test(load_request, firecracker_body_with_mem_backend)
{
	struct load_request r;
	cr_assert_str_empty(parse("{\"snapshot_path\": \"/s\", \"mem_backend\": {\"backend_type\": "
				  "\"File\", \"backend_path\": \"/m\"}, \"enable_diff_snapshots\": "
				  "true, \"resume_vm\": true, \"network_overrides\": [{\"iface_id\": "
				  "\"eth0\", \"host_dev_name\": \"tap7\"}], \"vsock_override\": "
				  "{\"uds_path\": \"/v.sock\"}}", &r));
	cr_assert_str_eq(r.snapshot_path, "/s");
	cr_assert_str_eq(r.mem_path, "/m");
	cr_assert(r.track_dirty_pages);
	cr_assert(r.resume_vm);
	cr_assert_eq(r.n_nets, 1);
	cr_assert_str_eq(r.nets[0].iface_id, "eth0");
	cr_assert_str_eq(r.nets[0].host_dev_name, "tap7");
	cr_assert_not(r.nets[0].has_mac);
	cr_assert_str_eq(r.vsock_uds, "/v.sock");
	cr_assert_not(r.has_vsock_cid);
}

Test(load_request, older_mem_file_path_and_defaults)
{
	struct load_request r;
	cr_assert_str_empty(parse("{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\"}", &r));
	cr_assert_str_eq(r.mem_path, "/m");
	cr_assert_not(r.resume_vm, "Firecracker's default: stay paused");
	cr_assert_not(r.track_dirty_pages);
	cr_assert_str_empty(parse("{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", "
				  "\"track_dirty_pages\": true}", &r));
	cr_assert(r.track_dirty_pages);
}

Test(load_request, cvisor_extensions_merge_with_firecracker_overrides)
{
	struct load_request r;
	cr_assert_str_empty(parse("{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", "
				  "\"network_overrides\": [{\"iface_id\": \"a\", \"host_dev_name\": "
				  "\"tapa\"}], \"cvisor\": {\"vsock_cid\": 42, \"network_overrides\": "
				  "[{\"iface_id\": \"a\", \"guest_mac\": \"02:00:00:00:00:01\"}, "
				  "{\"iface_id\": \"b\", \"guest_mac\": \"02:00:00:00:00:02\", "
				  "\"host_dev_name\": \"tapb\"}]}}", &r));
	cr_assert_eq(r.n_nets, 2);
	cr_assert_str_eq(r.nets[0].host_dev_name, "tapa");
	cr_assert(r.nets[0].has_mac);
	cr_assert_eq(r.nets[0].mac[5], 1);
	cr_assert_str_eq(r.nets[1].host_dev_name, "tapb");
	cr_assert_eq(r.nets[1].mac[5], 2);
	cr_assert(r.has_vsock_cid);
	cr_assert_eq(r.vsock_cid, 42);
}

Test(load_request, refusals_name_the_problem)
{
	struct load_request r;
	static const struct {
		const char *body, *says;
	} bad[] = {
		{ "{\"mem_file_path\": \"/m\"}", "snapshot_path" },
		{ "{\"snapshot_path\": \"/s\"}", "mem_backend" },
		{ "{\"snapshot_path\": \"\", \"mem_file_path\": \"/m\"}", "empty" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"mem_backend\": "
		  "{\"backend_type\": \"File\", \"backend_path\": \"/m\"}}", "not both" },
		{ "{\"snapshot_path\": \"/s\", \"mem_backend\": {\"backend_type\": \"Uffd\", "
		  "\"backend_path\": \"/u\"}}", "Uffd" },
		{ "{\"snapshot_path\": \"/s\", \"mem_backend\": {\"backend_path\": \"/m\"}}",
		  "backend_type" },
		{ "{\"snapshot_path\": \"/s\", \"mem_backend\": \"/m\"}", "object" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"resume\": true}",
		  "unknown field 'resume'" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"resume_vm\": 1}",
		  "resume_vm" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"network_overrides\": "
		  "{}}", "array" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"network_overrides\": "
		  "[{\"iface_id\": \"a\"}]}", "host_dev_name" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"network_overrides\": "
		  "[{\"iface_id\": \"a\", \"host_dev_name\": \"t\", \"guest_mac\": "
		  "\"02:00:00:00:00:01\"}]}", "guest_mac" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"network_overrides\": "
		  "[{\"iface_id\": \"a\", \"host_dev_name\": \"a-very-long-tap-name\"}]}", "15" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"network_overrides\": "
		  "[{\"iface_id\": \"a\", \"host_dev_name\": \"t\"}, {\"iface_id\": \"a\", "
		  "\"host_dev_name\": \"u\"}]}", "twice" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"cvisor\": "
		  "{\"network_overrides\": [{\"iface_id\": \"a\", \"guest_mac\": "
		  "\"01:00:00:00:00:01\"}]}}", "unicast" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"cvisor\": "
		  "{\"network_overrides\": [{\"iface_id\": \"a\", \"guest_mac\": \"02:00\"}]}}",
		  "unicast" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"cvisor\": "
		  "{\"vsock_cid\": 2}}", "reserved" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"cvisor\": "
		  "{\"vsock_cid\": 4294967295}}", "reserved" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"cvisor\": "
		  "{\"cid\": 5}}", "cvisor: unknown field 'cid'" },
		{ "{\"snapshot_path\": \"/s\", \"mem_file_path\": \"/m\", \"vsock_override\": "
		  "{\"uds_path\": \"\"}}", "empty" },
		{ "[1]", "object" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *msg = parse(bad[i].body, &r);
		cr_assert(strstr(msg, bad[i].says) != NULL, "%s -> '%s' (expected '%s')",
			  bad[i].body, msg, bad[i].says);
	}
}

/* ---- the device configuration section ---- */

Test(config_section, round_trip_keeps_every_field)
{
	struct device_config dc = { .transport = VIRTIO_TRANSPORT_MMIO, .rng = true, .n_disks = 2,
				    .n_nets = 1 };
	dc.disks[0] = (struct disk_config){ .id = "root", .path = "/img/root.ext4",
					    .read_only = true, .serial = "SER1" };
	dc.disks[1] = (struct disk_config){ .path = "/img/data" };
	dc.nets[0] = (struct net_config){ .tap = "tap0", .tap_fd = -1,
					  .mac = { 2, 1, 2, 3, 4, 5 }, .has_mac = true };
	dc.vsock = (struct vsock_config){ .enabled = true, .cid = 9, .uds_path = "/run/v.sock" };
	dc.balloon = (struct balloon_config){ .enabled = true, .target_mib = 64,
					      .deflate_on_oom = true, .stats_interval_s = 5,
					      .free_page_reporting = true };
	struct snap_buf b = { 0 };
	config_save(&dc, &b);
	static struct snap_config c;
	struct snap_cur cur;
	struct cv_error err = { 0 };
	snap_cur_init(&cur, b.b, b.len);
	cr_assert_eq(config_decode(&cur, &c, &err), 0, "%s", err.msg);
	const struct device_config *o = &c.dev;
	cr_assert_eq(o->transport, VIRTIO_TRANSPORT_MMIO);
	cr_assert(o->rng);
	cr_assert_eq(o->n_disks, 2);
	cr_assert_str_eq(o->disks[0].id, "root");
	cr_assert_str_eq(o->disks[0].path, "/img/root.ext4");
	cr_assert(o->disks[0].read_only);
	cr_assert_str_eq(o->disks[0].serial, "SER1");
	cr_assert_str_eq(o->disks[1].id, "drive1", "ids default to the position");
	cr_assert_null(o->disks[1].serial);
	cr_assert_eq(o->n_nets, 1);
	cr_assert_str_eq(o->nets[0].id, "eth0");
	cr_assert_str_eq(o->nets[0].tap, "tap0");
	cr_assert_eq(o->nets[0].tap_fd, -1);
	cr_assert_arr_eq(o->nets[0].mac, dc.nets[0].mac, 6);
	cr_assert(o->vsock.enabled);
	cr_assert_eq(o->vsock.cid, 9);
	cr_assert_str_eq(o->vsock.uds_path, "/run/v.sock");
	cr_assert(o->balloon.enabled && o->balloon.deflate_on_oom && o->balloon.free_page_reporting);
	cr_assert_eq(o->balloon.target_mib, 64);
	cr_assert_eq(o->balloon.stats_interval_s, 5);

	/* Every truncation is refused, never read past. */
	for (size_t n = 0; n < b.len; n++) {
		snap_cur_init(&cur, b.b, n);
		cr_assert_eq(config_decode(&cur, &c, &err), -1, "truncated at %zu accepted", n);
	}
	snap_buf_free(&b);
}

Test(config_section, refuses_counts_multicast_macs_and_bad_vsock)
{
	struct snap_buf b = { 0 };
	static struct snap_config c;
	struct snap_cur cur;
	struct cv_error err = { 0 };
	snap_put_u32(&b, VIRTIO_TRANSPORT_PCI);
	snap_put_u8(&b, 0);
	snap_put_u32(&b, 1000);           /* disks */
	snap_cur_init(&cur, b.b, b.len);
	cr_assert_eq(config_decode(&cur, &c, &err), -1);
	cr_assert(strstr(err.msg, "disks") != NULL, "%s", err.msg);
	snap_buf_free(&b);

	struct device_config dc = { .transport = VIRTIO_TRANSPORT_PCI, .n_nets = 1 };
	dc.nets[0] = (struct net_config){ .tap = "t", .mac = { 1, 0, 0, 0, 0, 1 } };
	config_save(&dc, &b);
	snap_cur_init(&cur, b.b, b.len);
	cr_assert_eq(config_decode(&cur, &c, &err), -1, "a multicast MAC is not a NIC's");
	snap_buf_free(&b);

	dc = (struct device_config){ .transport = VIRTIO_TRANSPORT_PCI,
				     .vsock = { .enabled = true, .cid = 2, .uds_path = "/v" } };
	config_save(&dc, &b);
	snap_cur_init(&cur, b.b, b.len);
	cr_assert_eq(config_decode(&cur, &c, &err), -1);
	cr_assert(strstr(err.msg, "vsock") != NULL, "%s", err.msg);
	snap_buf_free(&b);

	dc = (struct device_config){ .transport = 7 };
	config_save(&dc, &b);
	snap_cur_init(&cur, b.b, b.len);
	cr_assert_eq(config_decode(&cur, &c, &err), -1);
	cr_assert(strstr(err.msg, "transport") != NULL, "%s", err.msg);
	snap_buf_free(&b);
}

/* ---- merging a diff onto its base ---- */

#define PG 4096
#define PAGES 64

static char dir[64];

static void mkdir_work(void)
{
	snprintf(dir, sizeof(dir), "/tmp/cvisor-merge-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_work(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

TestSuite(merge, .init = mkdir_work, .fini = rm_work);

static const char *path(const char *name)
{
	static char p[4][128];
	static unsigned n;
	char *s = p[n++ % 4];
	snprintf(s, 128, "%s/%s", dir, name);
	return s;
}

/* A file of PAGES pages, page i filled with byte fill(i) (all written: no holes). */
static void write_full(const char *p, uint8_t (*fill)(unsigned))
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	static uint8_t pg[PG];
	for (unsigned i = 0; i < PAGES; i++) {
		memset(pg, fill(i), PG);
		cr_assert_eq(pwrite(fd, pg, PG, (off_t)i * PG), PG);
	}
	close(fd);
}

static uint8_t base_fill(unsigned i)
{
	return (uint8_t)(0x10 + i);
}

static bool in_diff(unsigned i)
{
	return i == 0 || i == 5 || i == 6 || i == 40 || i == PAGES - 1;
}

static uint8_t diff_fill(unsigned i)
{
	return i == 40 ? 0 : (uint8_t)(0xa0 + i);   /* page 40: dirtied back to zeroes */
}

static void write_diff(const char *p)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, PAGES * PG), 0);
	static uint8_t pg[PG];
	for (unsigned i = 0; i < PAGES; i++)
		if (in_diff(i)) {
			memset(pg, diff_fill(i), PG);
			cr_assert_eq(pwrite(fd, pg, PG, (off_t)i * PG), PG);
		}
	close(fd);
}

Test(merge, only_the_diffs_pages_land_zero_pages_included)
{
	write_full(path("base"), base_fill);
	write_diff(path("diff"));
	struct stat st;
	cr_assert_eq(stat(path("diff"), &st), 0);
	if ((uint64_t)st.st_blocks * 512 >= (uint64_t)PAGES * PG)
		cr_skip_test("/tmp does not keep files sparse");
	uint64_t copied = 0;
	struct cv_error err = { 0 };
	cr_assert_eq(sparse_merge(path("base"), path("diff"), &copied, &err), 0, "%s", err.msg);
	cr_assert_eq(copied, 5 * PG);
	int fd = open(path("base"), O_RDONLY);
	static uint8_t pg[PG];
	for (unsigned i = 0; i < PAGES; i++) {
		cr_assert_eq(pread(fd, pg, PG, (off_t)i * PG), PG);
		uint8_t want = in_diff(i) ? diff_fill(i) : base_fill(i);
		for (unsigned k = 0; k < PG; k++)
			cr_assert_eq(pg[k], want, "page %u byte %u: %#x, want %#x", i, k, pg[k], want);
	}
	close(fd);
}

Test(merge, refuses_size_mismatch_same_file_and_missing_files)
{
	write_full(path("base"), base_fill);
	write_diff(path("diff"));
	cr_assert_eq(truncate(path("diff"), PAGES * PG / 2), 0);
	struct cv_error err = { 0 };
	cr_assert_eq(sparse_merge(path("base"), path("diff"), NULL, &err), -1);
	cr_assert(strstr(err.msg, "not a diff of this memory file") != NULL, "%s", err.msg);
	cr_assert_eq(sparse_merge(path("base"), path("base"), NULL, &err), -1);
	cr_assert(strstr(err.msg, "same file") != NULL, "%s", err.msg);
	cr_assert_eq(sparse_merge(path("base"), path("nope"), NULL, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_NOINPUT);
	cr_assert_eq(sparse_merge(path("nope"), path("base"), NULL, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_NOINPUT);
}
