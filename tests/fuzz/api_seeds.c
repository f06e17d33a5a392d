/*
 * Writes the seed corpus of the control API fuzz target (fuzz_api.c): each route with a good
 * request, PATCH bodies at and past the limits, unknown fields, duplicate keys, bodies that are
 * not objects, a VM without a balloon, and raw methods and paths.
 * Usage: fuzz-api-seeds DIR
 */
#include "seed_writer.h"

/* Setup flags, method and path indexes as fuzz_api.c reads them. */
#define NO_BALLOON 0x01
#define STATS 0x02
#define RUNNING 0x04
enum { GET, PUT, PATCH };
enum { ROOT, BALLOON, STATISTICS };

static int one(const char *dir, const char *name, uint8_t flags, uint8_t method, uint8_t path,
	       const char *body)
{
	struct seed s = { 0 };
	seed_u8(&s, flags);
	seed_u8(&s, method);
	seed_u8(&s, path);
	seed_str(&s, body);
	return seed_save_free(dir, name, &s);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	int rc = 0;
	rc |= one(dir, "root", 0, GET, ROOT, "");
	rc |= one(dir, "get", STATS, GET, BALLOON, "");
	rc |= one(dir, "patch", RUNNING, PATCH, BALLOON, "{\"amount_mib\": 64}");
	rc |= one(dir, "patch-max", 0, PATCH, BALLOON, "{\"amount_mib\":1024}");
	rc |= one(dir, "patch-over", 0, PATCH, BALLOON, "{\"amount_mib\":1025}");
	rc |= one(dir, "patch-negative", 0, PATCH, BALLOON, "{\"amount_mib\":-1}");
	rc |= one(dir, "patch-real", 0, PATCH, BALLOON, "{\"amount_mib\":1.5}");
	rc |= one(dir, "patch-unknown", 0, PATCH, BALLOON,
		  "{\"amount_mib\":1,\"deflate_on_oom\":true}");
	rc |= one(dir, "patch-duplicate", 0, PATCH, BALLOON, "{\"amount_mib\":1,\"amount_mib\":2}");
	rc |= one(dir, "patch-array", 0, PATCH, BALLOON, "[1]");
	rc |= one(dir, "patch-bad-json", 0, PATCH, BALLOON, "{\"amount_mib\":");
	rc |= one(dir, "patch-empty", 0, PATCH, BALLOON, "");
	rc |= one(dir, "stats", STATS | RUNNING, GET, STATISTICS, "");
	rc |= one(dir, "stats-off", 0, GET, STATISTICS, "");
	rc |= one(dir, "no-balloon", NO_BALLOON, PATCH, BALLOON, "{\"amount_mib\":1}");
	rc |= one(dir, "put", 0, PUT, BALLOON, "{}");
	/* Raw method "PATCH", raw path "/balloon". */
	struct seed s = { 0 };
	seed_u8(&s, 0);
	seed_u8(&s, 0xf0);
	seed_u8(&s, 0xf0);
	seed_str(&s, "PATCH\0\0\0");
	seed_u8(&s, 8);
	seed_str(&s, "/balloon{\"amount_mib\":7}");
	rc |= seed_save(dir, "raw", &s);
	free(s.b);
	return rc ? 1 : 0;
}
