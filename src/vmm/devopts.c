/*
 * Device option parsing (see devopts.h). Specs are split in place on ',' (the strings are
 * argv entries, which the program owns).
 */
#include "devopts.h"

#include <stdio.h>
#include <string.h>

#include "ratelimit.h"
#include "util.h"

int devopts_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char tail;
	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6 || strlen(s) != 17)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	/* A multicast address cannot be a NIC's own. */
	return (mac[0] & 1) ? -1 : 0;
}

/* A count with an optional binary suffix: 512, 64K, 2M, 1G. */
static bool parse_amount(const char *s, uint64_t max, uint64_t *out)
{
	char num[24];
	size_t len = strlen(s);
	unsigned shift = 0;
	if (len && strchr("KkMmGg", s[len - 1])) {
		char c = s[len - 1];
		shift = (c == 'K' || c == 'k') ? 10 : (c == 'M' || c == 'm') ? 20 : 30;
		len--;
	}
	if (len == 0 || len >= sizeof(num))
		return false;
	memcpy(num, s, len);
	num[len] = 0;
	uint64_t v;
	if (!cv_parse_u64(num, 0, max >> shift, &v))
		return false;
	*out = v << shift;
	return true;
}

/* "AMOUNT/MS" */
static bool parse_bucket(const char *s, struct token_bucket_config *b)
{
	const char *slash = strchr(s, '/');
	char amount[24];
	if (!slash || (size_t)(slash - s) >= sizeof(amount))
		return false;
	memcpy(amount, s, (size_t)(slash - s));
	amount[slash - s] = 0;
	uint64_t size, ms;
	if (!parse_amount(amount, RL_MAX_SIZE, &size) ||
	    !cv_parse_u64(slash + 1, 1, RL_MAX_REFILL_MS, &ms) || size == 0)
		return false;
	b->size = size;
	b->refill_time_ms = ms;
	b->enabled = true;
	return true;
}

int devopts_rate_limit(const char *opt, struct rate_limiter_config *out, const char *what,
		       struct cv_error *err)
{
	static const struct {
		const char *name;
		bool ops, burst;
	} keys[] = {
		{ "bw=", false, false }, { "bw_burst=", false, true },
		{ "ops=", true, false }, { "ops_burst=", true, true },
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(keys); i++) {
		size_t klen = strlen(keys[i].name);
		if (strncmp(opt, keys[i].name, klen) != 0)
			continue;
		const char *v = opt + klen;
		struct token_bucket_config *b = keys[i].ops ? &out->ops : &out->bandwidth;
		bool ok = keys[i].burst ? parse_amount(v, UINT64_MAX, &b->one_time_burst)
					: parse_bucket(v, b);
		if (ok)
			return 1;
		return cv_fail(err, CV_EXIT_USAGE, "%s: bad rate limit '%s' (expected %s)", what, opt,
			       keys[i].burst ? "AMOUNT, e.g. 4M" : "AMOUNT/MS with AMOUNT > 0 and "
			       "MS > 0, e.g. 2M/1000 for 2 MiB/s");
	}
	return 0;
}

int devopts_disk(char *spec, struct disk_config *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	char *save = NULL;
	char *path = strtok_r(spec, ",", &save);
	if (path && strncmp(path, "path=", 5) == 0)
		path += 5;
	if (!path || !*path)
		return cv_fail(err, CV_EXIT_USAGE, "--disk: expected PATH[,ro][,serial=ID]");
	out->path = path;
	for (char *t; (t = strtok_r(NULL, ",", &save));) {
		int rl = devopts_rate_limit(t, &out->rate_limiter, "--disk", err);
		if (rl < 0)
			return -1;
		if (rl > 0)
			continue;
		if (strcmp(t, "ro") == 0)
			out->read_only = true;
		else if (strcmp(t, "rw") == 0)
			out->read_only = false;
		else if (strncmp(t, "serial=", 7) == 0 && strlen(t + 7) <= 20)
			out->serial = t + 7;
		else if (strcmp(t, "cache=writeback") == 0)
			out->cache = DISK_CACHE_WRITEBACK;
		else if (strcmp(t, "cache=unsafe") == 0)
			out->cache = DISK_CACHE_UNSAFE;
		else
			return cv_fail(err, CV_EXIT_USAGE,
				       "--disk %s: unknown or bad option '%s' (ro, serial=ID of up to 20 "
				       "bytes, cache=writeback|unsafe, bw=, bw_burst=, ops=, ops_burst=)",
				       path, t);
	}
	return 0;
}

int devopts_net(char *spec, struct net_config *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	out->tap_fd = -1;
	char *save = NULL;
	for (char *t = strtok_r(spec, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint64_t fd;
		bool rx = strncmp(t, "rx_", 3) == 0, tx = strncmp(t, "tx_", 3) == 0;
		if (rx || tx) {
			int rl = devopts_rate_limit(t + 3, rx ? &out->rx_rate_limiter : &out->tx_rate_limiter,
						    "--net", err);
			if (rl < 0)
				return -1;
			if (rl > 0)
				continue;
		}
		if (strncmp(t, "tap=", 4) == 0 && t[4] && strlen(t + 4) < 16) {
			out->tap = t + 4;
		} else if (strncmp(t, "fd=", 3) == 0 && cv_parse_u64(t + 3, 0, 65535, &fd)) {
			out->tap_fd = (int)fd;
		} else if (strncmp(t, "mac=", 4) == 0) {
			if (devopts_mac(t + 4, out->mac) < 0)
				return cv_fail(err, CV_EXIT_USAGE, "--net: bad MAC address '%s'", t + 4);
			out->has_mac = true;
		} else {
			return cv_fail(err, CV_EXIT_USAGE,
				       "--net: unknown or bad option '%s' (tap=NAME, fd=N, mac=MAC, "
				       "rx_bw=, rx_ops=, tx_bw=, tx_ops= and their _burst=)", t);
		}
	}
	if (!out->tap == (out->tap_fd < 0))
		return cv_fail(err, CV_EXIT_USAGE, "--net: give exactly one of tap=NAME or fd=N");
	return 0;
}

int devopts_vsock(char *spec, struct vsock_config *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	out->enabled = true;
	char *save = NULL;
	for (char *t = strtok_r(spec, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint64_t cid;
		if (strncmp(t, "cid=", 4) == 0 && cv_parse_u64(t + 4, 3, UINT32_MAX - 1, &cid))
			out->cid = (uint32_t)cid;
		else if (strncmp(t, "uds=", 4) == 0 && t[4])
			out->uds_path = t + 4;
		else
			return cv_fail(err, CV_EXIT_USAGE,
				       "--vsock: unknown or bad option '%s' (cid=N with N >= 3, uds=PATH)",
				       t);
	}
	if (!out->cid || !out->uds_path)
		return cv_fail(err, CV_EXIT_USAGE, "--vsock: cid=N and uds=PATH are both required");
	return 0;
}

int devopts_balloon(char *spec, struct balloon_config *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	out->enabled = true;
	char *save = NULL;
	for (char *t = strtok_r(spec, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint64_t v;
		if (strcmp(t, "deflate-on-oom") == 0)
			out->deflate_on_oom = true;
		else if (strcmp(t, "free-page-reporting") == 0)
			out->free_page_reporting = true;
		else if (strncmp(t, "stats=", 6) == 0 && cv_parse_u64(t + 6, 0, 3600, &v))
			out->stats_interval_s = (unsigned)v;
		else if (strncmp(t, "size=", 5) == 0 && cv_parse_u64(t + 5, 0, 1 << 24, &v))
			out->target_mib = (uint32_t)v;
		else
			return cv_fail(err, CV_EXIT_USAGE,
				       "--balloon: unknown or bad option '%s' (size=MiB, deflate-on-oom, "
				       "stats=SECONDS, free-page-reporting)", t);
	}
	return 0;
}
