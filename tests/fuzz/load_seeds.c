/*
 * Writes the seed corpus of the snapshot load body fuzz target (fuzz_load.c): Firecracker's
 * bodies (mem_backend, the older mem_file_path), every override, cvisor's extensions, and the
 * refusals next to them (both memory fields, Uffd, reserved CIDs, multicast MACs, duplicates).
 * Usage: fuzz-load-seeds DIR
 */
#include "seed_writer.h"

static int one(const char *dir, const char *name, const char *body)
{
	struct seed s = { 0 };
	seed_str(&s, body);
	return seed_save_free(dir, name, &s);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	int rc = 0;
	rc |= one(dir, "backend", "{\"snapshot_path\":\"/s\",\"mem_backend\":{\"backend_type\":"
		  "\"File\",\"backend_path\":\"/m\"},\"enable_diff_snapshots\":true,"
		  "\"resume_vm\":true}");
	rc |= one(dir, "file", "{\"snapshot_path\":\"/s\",\"mem_file_path\":\"/m\","
		  "\"track_dirty_pages\":false}");
	rc |= one(dir, "overrides", "{\"snapshot_path\":\"/s\",\"mem_file_path\":\"/m\","
		  "\"network_overrides\":[{\"iface_id\":\"eth0\",\"host_dev_name\":\"tap1\"}],"
		  "\"vsock_override\":{\"uds_path\":\"/v\"},\"cvisor\":{\"vsock_cid\":7,"
		  "\"network_overrides\":[{\"iface_id\":\"eth0\",\"guest_mac\":"
		  "\"02:00:00:00:00:01\"},{\"iface_id\":\"eth1\",\"host_dev_name\":\"t\"}]}}");
	rc |= one(dir, "both", "{\"snapshot_path\":\"/s\",\"mem_file_path\":\"/m\","
		  "\"mem_backend\":{\"backend_type\":\"File\",\"backend_path\":\"/m\"}}");
	rc |= one(dir, "uffd", "{\"snapshot_path\":\"/s\",\"mem_backend\":{\"backend_type\":"
		  "\"Uffd\",\"backend_path\":\"/u\"}}");
	rc |= one(dir, "cid", "{\"snapshot_path\":\"/s\",\"mem_file_path\":\"/m\",\"cvisor\":"
		  "{\"vsock_cid\":4294967295}}");
	rc |= one(dir, "mac", "{\"snapshot_path\":\"/s\",\"mem_file_path\":\"/m\",\"cvisor\":"
		  "{\"network_overrides\":[{\"iface_id\":\"a\",\"guest_mac\":\"03:00:00:00:00:01\"}]}}");
	rc |= one(dir, "dup", "{\"snapshot_path\":\"/s\",\"mem_file_path\":\"/m\","
		  "\"network_overrides\":[{\"iface_id\":\"a\",\"host_dev_name\":\"x\"},"
		  "{\"iface_id\":\"a\",\"host_dev_name\":\"y\"}]}");
	rc |= one(dir, "empty", "{}");
	return rc ? 1 : 0;
}
