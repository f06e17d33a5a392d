/*
 * Guest state collection for the "info" request (sysinfo.h). Each source is read once per
 * request; a missing optional source (no MemAvailable on an old kernel would be one) is an error
 * rather than a silent zero, so a client never mistakes "unknown" for "none".
 */
#include "sysinfo.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "mounts.h"
#include "util.h"

#define NSEC_PER_SEC 1000000000ull

/* Finds "Key:" at the start of a line and parses the number after it. */
static bool meminfo_value(const char *text, const char *key, uint64_t *out)
{
	size_t kl = strlen(key);
	for (const char *line = text; line && *line;) {
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			char *end;
			errno = 0;
			unsigned long long v = strtoull(line + kl + 1, &end, 10);
			if (errno || end == line + kl + 1)
				return false;
			*out = v;
			return true;
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return false;
}

int sysinfo_parse_meminfo(const char *text, struct agent_info *out, struct cv_error *err)
{
	const struct { const char *key; uint64_t *dst; } fields[] = {
		{ "MemTotal", &out->mem_total },
		{ "MemFree", &out->mem_free },
		{ "MemAvailable", &out->mem_available },
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(fields); i++) {
		uint64_t kib;
		if (!meminfo_value(text, fields[i].key, &kib))
			return cv_fail(err, CV_EXIT_DATAERR, "/proc/meminfo: no %s line", fields[i].key);
		/* Values are in kB (KiB, despite the unit's spelling). */
		*fields[i].dst = kib > UINT64_MAX / 1024 ? UINT64_MAX : kib * 1024;
	}
	return 0;
}

/* Ticks to nanoseconds without overflowing for any realistic uptime. */
static uint64_t ticks_to_ns(uint64_t ticks, uint64_t hz)
{
	return ticks / hz * NSEC_PER_SEC + ticks % hz * NSEC_PER_SEC / hz;
}

int sysinfo_parse_stat(const char *text, long ticks_per_second, struct agent_info *out,
		       struct cv_error *err)
{
	if (ticks_per_second <= 0)
		return cv_fail(err, CV_EXIT_OSERR, "clock ticks per second unknown");
	uint64_t hz = (uint64_t)ticks_per_second;
	size_t cap = 0;
	free(out->cpus);
	out->cpus = NULL;
	out->ncpus = 0;
	for (const char *line = text; line && *line;) {
		const char *next = strchr(line, '\n');
		/* "cpuN" lines only: the aggregate "cpu " line has no digit. */
		if (strncmp(line, "cpu", 3) == 0 && line[3] >= '0' && line[3] <= '9') {
			if (out->ncpus == AGENT_INFO_MAX_CPUS)
				break;
			unsigned id;
			unsigned long long v[8] = { 0 };
			/* Older kernels have fewer columns; the ones they lack count as zero. */
			int n = sscanf(line, "cpu%u %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0],
				       &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
			if (n < 5)
				return cv_fail(err, CV_EXIT_DATAERR, "/proc/stat: malformed line '%.40s'",
					       line);
			if (out->ncpus == cap) {
				size_t ncap = cap ? cap * 2 : 8;
				struct agent_cpu_times *c = realloc(out->cpus, ncap * sizeof(*c));
				if (!c)
					return cv_fail(err, CV_EXIT_OSERR, "/proc/stat: out of memory");
				out->cpus = c;
				cap = ncap;
			}
			struct agent_cpu_times *c = &out->cpus[out->ncpus++];
			c->id = id;
			c->user = ticks_to_ns(v[0], hz);
			c->nice = ticks_to_ns(v[1], hz);
			c->system = ticks_to_ns(v[2], hz);
			c->idle = ticks_to_ns(v[3], hz);
			c->iowait = ticks_to_ns(v[4], hz);
			c->irq = ticks_to_ns(v[5], hz);
			c->softirq = ticks_to_ns(v[6], hz);
			c->steal = ticks_to_ns(v[7], hz);
		}
		line = next ? next + 1 : NULL;
	}
	if (out->ncpus == 0)
		return cv_fail(err, CV_EXIT_DATAERR, "/proc/stat: no cpuN lines");
	return 0;
}

static int read_text(const char *path, struct cv_buf *b, struct cv_error *err)
{
	if (cv_read_file(path, 16u << 20, b, err) < 0)
		return cv_error_wrap(err, "info");
	return 0;
}

/* Mounts with storage: not pseudo, not hidden under a later mount, statvfs reports blocks. */
static int collect_filesystems(struct agent_info *out, struct cv_error *err)
{
	struct mount_table t;
	if (mounts_read(MOUNTS_PATH, &t, err) < 0)
		return cv_error_wrap(err, "info");
	out->fs = calloc(CV_MIN(t.n, (size_t)AGENT_INFO_MAX_FS) + 1, sizeof(*out->fs));
	if (!out->fs) {
		mounts_free(&t);
		return cv_fail(err, CV_EXIT_OSERR, "info: out of memory");
	}
	int rc = 0;
	for (size_t i = 0; i < t.n && out->nfs < AGENT_INFO_MAX_FS; i++) {
		const struct mount_entry *e = &t.v[i];
		struct statvfs sv;
		if (mounts_type_is_pseudo(e->type) || mounts_hidden(&t, i) ||
		    statvfs(e->path, &sv) < 0 || sv.f_blocks == 0)
			continue;
		uint64_t unit = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
		uint64_t free_blocks = CV_MIN((uint64_t)sv.f_bfree, (uint64_t)sv.f_blocks);
		struct agent_fs_usage *u = &out->fs[out->nfs++];
		u->size = (uint64_t)sv.f_blocks * unit;
		u->used = ((uint64_t)sv.f_blocks - free_blocks) * unit;
		u->available = (uint64_t)sv.f_bavail * unit;
		u->readonly = (sv.f_flag & ST_RDONLY) != 0;
		u->path = strdup(e->path);
		u->type = strdup(e->type);
		u->source = strdup(e->source);
		if (!u->path || !u->type || !u->source) {
			rc = cv_fail(err, CV_EXIT_OSERR, "info: out of memory");
			break;
		}
	}
	mounts_free(&t);
	return rc;
}

int sysinfo_collect(struct agent_info *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	struct utsname u;
	if (uname(&u) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "info: uname");
	out->hostname = strdup(u.nodename);
	out->kernel = strdup(u.release);
	if (!out->hostname || !out->kernel)
		return cv_fail(err, CV_EXIT_OSERR, "info: out of memory");
	struct timespec ts;
	if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "info: clock_gettime(CLOCK_BOOTTIME)");
	out->uptime = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (getloadavg(out->load, 3) != 3)
		return cv_fail(err, CV_EXIT_OSERR, "info: cannot read the load averages");

	struct cv_buf b;
	if (read_text("/proc/meminfo", &b, err) < 0)
		return -1;
	int rc = sysinfo_parse_meminfo((const char *)b.data, out, err);
	cv_buf_free(&b);
	if (rc < 0 || read_text("/proc/stat", &b, err) < 0)
		return -1;
	rc = sysinfo_parse_stat((const char *)b.data, sysconf(_SC_CLK_TCK), out, err);
	cv_buf_free(&b);
	if (rc < 0)
		return -1;
	return collect_filesystems(out, err);
}
