/*
 * Writes the seed corpus of the configuration fuzz target (fuzz_fcconfig.c): for each parser
 * a valid body, and a few near misses (wrong types, unknown fields, values past the limits).
 * Usage: fuzz-fcconfig-seeds DIR
 */
#include "seed_writer.h"

static int one(const char *dir, const char *name, uint8_t sel, const char *json)
{
	struct seed s = { 0 };
	seed_u8(&s, sel);
	seed_str(&s, json);
	return seed_save_free(dir, name, &s);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	int rc = 0;
	rc |= one(dir, "doc", 0,
		  "{\"boot-source\": {\"kernel_image_path\": \"/dev/null\", \"boot_args\": \"pci=off\","
		  " \"initrd_path\": null}, \"machine-config\": {\"vcpu_count\": 4, \"mem_size_mib\": 128,"
		  " \"smt\": true}, \"drives\": [{\"drive_id\": \"d1\", \"path_on_host\": \"/dev/null\","
		  " \"is_root_device\": false, \"partuuid\": \"abcd-01\", \"cache_type\": \"Writeback\","
		  " \"io_engine\": \"Async\", \"rate_limiter\": {\"ops\": {\"size\": 5, \"refill_time\": 9}}}],"
		  " \"network-interfaces\": [{\"iface_id\": \"e0\", \"host_dev_name\": \"tap3\","
		  " \"guest_mac\": \"02:00:00:00:00:01\"}], \"vsock\": {\"guest_cid\": 3, \"uds_path\":"
		  " \"/tmp/v\"}, \"entropy\": {}, \"balloon\": {\"amount_mib\": 1, \"deflate_on_oom\": true},"
		  " \"logger\": {\"level\": \"Debug\"}, \"metrics\": {\"metrics_path\": \"/dev/null\"}}");
	rc |= one(dir, "boot", 1, "{\"kernel_image_path\": \"/dev/null\", \"boot_args\": \"x\"}");
	rc |= one(dir, "machine", 2, "{\"vcpu_count\": 32, \"mem_size_mib\": 32}");
	rc |= one(dir, "machine-smt-odd", 2, "{\"vcpu_count\": 3, \"mem_size_mib\": 32, \"smt\": true}");
	rc |= one(dir, "machine-patch", 3, "{\"track_dirty_pages\": true, \"huge_pages\": \"None\"}");
	rc |= one(dir, "drive", 4, "{\"drive_id\": \"rootfs\", \"path_on_host\": \"/dev/null\","
		  " \"is_root_device\": true, \"is_read_only\": true, \"partuuid\": \"x\"}");
	rc |= one(dir, "drive-bad", 4, "{\"drive_id\": \"rootfs\", \"path_on_host\": 1}");
	rc |= one(dir, "net", 5, "{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap1\","
		  " \"rx_rate_limiter\": {\"bandwidth\": {\"size\": 1, \"refill_time\": 1}}}");
	rc |= one(dir, "net-dup", 5, "{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap0\"}");
	rc |= one(dir, "vsock", 6, "{\"guest_cid\": 4294967294, \"uds_path\": \"/x\"}");
	rc |= one(dir, "entropy", 7, "{\"rate_limiter\": null}");
	rc |= one(dir, "balloon", 8, "{\"amount_mib\": 16777216, \"deflate_on_oom\": false,"
		  " \"stats_polling_interval_s\": 3600, \"free_page_reporting\": true}");
	rc |= one(dir, "logger", 9, "{\"log_path\": \"/dev/null\", \"level\": \"off\","
		  " \"show_level\": true, \"show_log_origin\": false, \"module\": \"x\"}");
	rc |= one(dir, "metrics", 10, "{\"metrics_path\": \"/dev/null\"}");
	rc |= one(dir, "rate", 11, "{\"bandwidth\": {\"size\": 9223372036854775807, \"one_time_burst\":"
		  " 1, \"refill_time\": 86400000}, \"ops\": {\"size\": 0, \"refill_time\": 0}}");
	rc |= one(dir, "drive-patch", 12, "{\"drive_id\": \"rootfs\", \"path_on_host\": \"/dev/null\","
		  " \"rate_limiter\": {}}");
	rc |= one(dir, "net-patch", 13, "{\"iface_id\": \"eth0\", \"tx_rate_limiter\": {\"ops\":"
		  " {\"size\": 1, \"refill_time\": 1}}}");
	/* Requests through the router: selector 14 + 2 * path index + (0 PUT, 1 PATCH). */
	rc |= one(dir, "route-boot", 14 + 2 * 5, "{\"kernel_image_path\": \"/dev/null\"}");
	rc |= one(dir, "route-start", 14 + 2 * 4, "{\"action_type\": \"InstanceStart\"}");
	rc |= one(dir, "route-machine-patch", 14 + 2 * 3 + 1, "{\"vcpu_count\": 2}");
	rc |= one(dir, "route-drive", 14 + 2 * 6, "{\"drive_id\": \"rootfs\", \"path_on_host\":"
		  " \"/dev/null\", \"is_root_device\": true}");
	rc |= one(dir, "route-drive-patch", 14 + 2 * 6 + 1, "{\"drive_id\": \"rootfs\"}");
	rc |= one(dir, "route-config", 14 + 2 * 2, "");
	rc |= one(dir, "route-entropy", 14 + 2 * 10, "");
	return rc ? 1 : 0;
}
