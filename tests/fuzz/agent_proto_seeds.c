/*
 * Writes the seed corpus of the agent protocol fuzz target (fuzz_agent_proto.c): every request,
 * event and reply the protocol has, as single CONTROL payloads, and frame streams mixing all
 * frame types, an end-of-input STDIN frame, a truncated frame and a bad header. The fuzzer
 * derives the hostile variants from these.
 * Usage: fuzz-agent-proto-seeds DIR
 */
#include "seed_writer.h"

static const char *const messages[] = {
	"{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"echo hi\"],\"env\":[\"A=1\",\"PATH=/bin\"],"
	"\"cwd\":\"/tmp\",\"stdin\":true,\"token\":\"secret\"}",
	"{\"op\":\"exec\",\"argv\":[\"top\"],\"tty\":true,\"rows\":50,\"cols\":132,\"stdin\":false}",
	"{\"op\":\"signal\",\"signal\":15}",
	"{\"op\":\"resize\",\"rows\":24,\"cols\":80}",
	"{\"op\":\"ping\",\"token\":\"t\"}",
	"{\"op\":\"poweroff\"}",
	"{\"op\":\"info\"}",
	"{\"op\":\"shutdown\",\"action\":\"reboot\",\"token\":\"x\"}",
	"{\"op\":\"freeze\",\"paths\":[\"/\",\"/data\"]}",
	"{\"op\":\"thaw\"}",
	"{\"event\":\"started\",\"pid\":42}",
	"{\"event\":\"exit\",\"status\":137}",
	"{\"event\":\"error\",\"message\":\"no such file \\u00e9\"}",
	"{\"event\":\"pong\",\"version\":\"0.1.0\"}",
	"{\"event\":\"info\",\"hostname\":\"guest\",\"kernel\":\"6.1.0\",\"uptime\":12.5,"
	"\"load\":[0.1,0.2,0],\"memory\":{\"total\":1048576,\"free\":1024,\"available\":2048},"
	"\"cpus\":[{\"cpu\":0,\"user\":1,\"nice\":0,\"system\":2,\"idle\":3,\"iowait\":0,"
	"\"irq\":0,\"softirq\":0,\"steal\":0}],\"filesystems\":[{\"path\":\"/\",\"type\":\"ext4\","
	"\"source\":\"/dev/vda\",\"size\":100,\"used\":50,\"available\":40,\"readonly\":false}]}",
	"{\"event\":\"frozen\",\"paths\":[\"/\"],\"errors\":[]}",
	"{\"event\":\"thawed\",\"paths\":[],\"errors\":[{\"path\":\"/x\",\"message\":\"busy\"}]}",
	"{\"op\":\"exec\",\"argv\":[\"a\"],\"op\":\"ping\"}",
	"{\"op\":\"exec\",\"argv\":[],\"rows\":3}",
	"[{\"op\":\"ping\"}]",
	"{\"op\":\"shutdown\",\"action\":\"poweroff\"}",
	"{\"op\":\"thaw\",\"paths\":[]}",
};

static void frame(struct seed *s, uint8_t type, const void *p, uint32_t len)
{
	seed_u8(s, (uint8_t)(len >> 24));
	seed_u8(s, (uint8_t)(len >> 16));
	seed_u8(s, (uint8_t)(len >> 8));
	seed_u8(s, (uint8_t)len);
	seed_u8(s, type);
	seed_bytes(s, p, len);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	struct seed s = { 0 };
	int rc = 0;
	char name[32];
	for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
		seed_reset(&s);
		seed_u8(&s, 1);
		seed_str(&s, messages[i]);
		snprintf(name, sizeof(name), "json-%zu", i);
		rc |= seed_save(dir, name, &s);
	}
	/* Freeze requests with 256 paths (the most allowed) and 257. */
	for (unsigned n = 256; n <= 257; n++) {
		seed_reset(&s);
		seed_u8(&s, 1);
		seed_str(&s, "{\"op\":\"freeze\",\"paths\":[");
		for (unsigned i = 0; i < n; i++)
			seed_str(&s, i ? ",\"/m\"" : "\"/m\"");
		seed_str(&s, "]}");
		snprintf(name, sizeof(name), "paths-%u", n);
		rc |= seed_save(dir, name, &s);
	}
	/* A session: exec, stdin with its end, output, exit; in chunks of different sizes. */
	for (unsigned chunking = 0; chunking < 3; chunking++) {
		seed_reset(&s);
		seed_u8(&s, (uint8_t)(chunking * 34));
		frame(&s, 1, messages[0], (uint32_t)strlen(messages[0]));
		frame(&s, 2, "input\n", 6);
		frame(&s, 2, "", 0);
		frame(&s, 3, "hi\n", 3);
		frame(&s, 4, "warning\n", 8);
		frame(&s, 1, messages[11], (uint32_t)strlen(messages[11]));
		snprintf(name, sizeof(name), "session-%u", chunking);
		rc |= seed_save(dir, name, &s);
	}
	/* A frame cut short, then one with an unknown type, then one over the size limit. */
	seed_reset(&s);
	seed_u8(&s, 0);
	frame(&s, 3, "abc", 3);
	seed_bytes(&s, "\0\0\0\x10\x03short", 10);
	rc |= seed_save(dir, "truncated", &s);
	seed_reset(&s);
	seed_u8(&s, 2);
	frame(&s, 3, "abc", 3);
	frame(&s, 5, "x", 1);
	rc |= seed_save(dir, "bad-type", &s);
	seed_reset(&s);
	seed_u8(&s, 4);
	seed_bytes(&s, "\0\x10\0\x01\x01{}", 7);
	rc |= seed_save(dir, "too-long", &s);
	free(s.b);
	return rc ? 1 : 0;
}
