/*
 * The guest-script runner of the system suites (see script.h).
 */
#include "script.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef CVISOR_SOURCE_DIR
#error "CVISOR_SOURCE_DIR must name the source tree (set by tests/meson.build)"
#endif

/* Work directory of the running test (each Criterion test runs in its own process). */
static char work_dir[64];

const char *work(void)
{
	if (!work_dir[0]) {
		snprintf(work_dir, sizeof(work_dir), "/tmp/cvisor-%s-XXXXXX", script_suite.tag);
		cr_assert_not_null(mkdtemp(work_dir), "mkdtemp %s", work_dir);
		if (script_suite.shared)
			cr_assert_eq(chmod(work_dir, 0755), 0, "chmod %s", work_dir);
	}
	return work_dir;
}

void remove_work(void)
{
	if (!work_dir[0])
		return;
	struct sys_result r = sys_host("rm -rf '%s'", work_dir);
	sys_free(&r);
	work_dir[0] = 0;
}

void put(const char *name, const char *text, mode_t mode)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", work(), name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "create %s", path);
	bool ok = fputs(text, f) >= 0;
	ok = fclose(f) == 0 && ok;
	cr_assert(ok, "write %s", path);
	cr_assert_eq(chmod(path, mode), 0, "chmod %s", path);
}

char *slurp_work(const char *name, size_t max, size_t *len)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", work(), name);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "open %s", path);
	char *buf = calloc(1, max + 1);
	cr_assert_not_null(buf);
	*len = fread(buf, 1, max, f);
	fclose(f);
	return buf;
}

/*
 * Common head of every host script: sbin on PATH, the scratch directory S in the VMM host's own
 * /dev/shm (Unix sockets and hole-punching tmpfs images live there), removed on exit by
 * `cleanup`, which a script may redefine to undo more (background jobs). `vm` bounds every
 * guest run. `tap PREFIX NET` makes a TAP T with its own /24 in NET (from the shell's PID, so
 * concurrent runs differ; H is the host's address, G the guest's), removed on exit.
 * `tcp_peer PORT_IN PORT_OUT NBYTES` starts the peer's TCP side on H in the background (its PID
 * in $peer) and returns once it listens. The suite's own functions follow.
 */
struct sys_result host_script(const char *name, const char *body)
{
	const struct script_suite *s = &script_suite;
	const char *extra = s->head_extra ? s->head_extra : "";
	char peer[256] = "";
	if (s->peer)
		snprintf(peer, sizeof(peer), "PEER=\"$SRC/tests/system/%s\"\n", s->peer);
	char *text = NULL;
	int n = asprintf(&text,
			 "set -u\n"
			 "export PATH=$PATH:/usr/sbin:/sbin\n"
			 "S=$(mktemp -d /dev/shm/cvisor-%s.XXXXXX) || exit 99\n"
			 "%s"
			 "cleanup() { rm -rf \"$S\"; }\n"
			 "trap cleanup EXIT\n"
			 "vm() { timeout -k 5 %u \"$@\"; }\n"
			 "tap() {\n"
			 "  T=$1$$; n=$(($$ %% 250 + 1)); H=$2.$n.1; G=$2.$n.2\n"
			 "  cleanup() { ip link del \"$T\" 2>/dev/null; rm -rf \"$S\"; }\n"
			 "  ip tuntap add dev \"$T\" mode tap && ip addr add \"$H/24\" dev \"$T\" && "
			 "ip link set \"$T\" up || { echo TAP-FAILED; exit 1; }\n"
			 "}\n"
			 "tcp_peer() {\n"
			 "  /usr/bin/python3 \"$PEER\" tcp \"$H\" \"$1\" \"$2\" \"$3\" \"$S\" &\n"
			 "  peer=$!\n"
			 "  i=0; while [ ! -e \"$S/ready\" ] && [ $i -lt 600 ]; do i=$((i + 1)); sleep 0.1; done\n"
			 "}\n"
			 "%s%s%s",
			 s->tag, s->shared ? "chmod 755 \"$S\"\n" : "", s->vm_seconds, peer, extra,
			 body);
	cr_assert_geq(n, 0, "asprintf");
	put(name, text, 0755);
	free(text);
	return sys_guest_host("B='%s' K='%s' SRC='%s' W='%s' sh '%s/%s'", sys_build(),
			      sys_kernel_dir(), CVISOR_SOURCE_DIR, work(), work(), name);
}

void guest_cpio(const char *name, const char *script)
{
	host_ok("mkdir -p '%s/%s.d'", work(), name);
	char path[128];
	snprintf(path, sizeof(path), "%s.d/t.sh", name);
	put(path, script, 0755);
	host_ok("cd '%s/%s.d' && echo t.sh | cpio -o -H newc --quiet -R 0:0 > '%s/%s.cpio'",
		work(), name, work(), name);
	if (script_suite.shared) {
		snprintf(path, sizeof(path), "%s/%s.cpio", work(), name);
		cr_assert_eq(chmod(path, 0644), 0, "chmod %s", path);
	}
}

bool field_opt(const struct sys_result *r, const char *key, char *buf, size_t len)
{
	size_t k = strlen(key);
	for (const char *p = r->out; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		if (n > k && strncmp(p, key, k) == 0 && p[k] == ' ') {
			const char *v = p + k + 1;
			size_t vn = n - k - 1;
			while (vn && (v[vn - 1] == '\r' || v[vn - 1] == ' '))
				vn--;
			cr_assert_lt(vn, len, "value of %s too long", key);
			memcpy(buf, v, vn);
			buf[vn] = 0;
			return true;
		}
		p = eol ? eol + 1 : NULL;
	}
	return false;
}

void field_n(const struct sys_result *r, const char *key, char *buf, size_t len)
{
	if (!field_opt(r, key, buf, len))
		cr_assert_fail("no '%s' line in the output:\n%s\n-- stderr:\n%s", key, r->out, r->err);
}

const char *field_or_empty(const struct sys_result *r, const char *key, char *buf, size_t len)
{
	if (!field_opt(r, key, buf, len))
		buf[0] = 0;
	return buf;
}

long long num(const struct sys_result *r, const char *key)
{
	char buf[64], *end;
	field(r, key, buf);
	long long v = strtoll(buf, &end, 10);
	cr_assert(end != buf && *end == 0, "%s is not a number: '%s'\n%s", key, buf, r->out);
	return v;
}

void expect(const struct sys_result *r, const char *key, const char *want, const char *why)
{
	char got[512];
	field(r, key, got);
	cr_assert_str_eq(got, want, "%s: %s is '%s', expected '%s'\n-- output:\n%s\n-- stderr:\n%s",
			 why, key, got, want, r->out, r->err);
}

void expect_num(const struct sys_result *r, const char *key, const char *op, long long want,
		const char *why)
{
	long long v = num(r, key);
	bool ok = false;
	if (strcmp(op, "==") == 0)
		ok = v == want;
	else if (strcmp(op, "!=") == 0)
		ok = v != want;
	else if (strcmp(op, "<") == 0)
		ok = v < want;
	else if (strcmp(op, ">") == 0)
		ok = v > want;
	else if (strcmp(op, ">=") == 0)
		ok = v >= want;
	else
		cr_assert_fail("expect_num: unknown comparison '%s'", op);
	cr_assert(ok, "%s: %s is %lld, expected %s %lld\n-- output:\n%s\n-- stderr:\n%s", why, key,
		  v, op, want, r->out, r->err);
}

bool is_sha256(const char *s)
{
	return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}
