/*
 * Device option parsing (see devopts.h). Specs are split in place on ',' (the strings are
 * argv entries, which the program owns).
 */
#include "devopts.h"

#include <stdio.h>
#include <string.h>

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

int devopts_disk(char *spec, struct disk_config *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	char *save = NULL;
	char *path = strtok_r(spec, ",", &save);
	if (!path || !*path)
		return cv_fail(err, CV_EXIT_USAGE, "--disk: expected PATH[,ro][,serial=ID]");
	out->path = path;
	for (char *t; (t = strtok_r(NULL, ",", &save));) {
		if (strcmp(t, "ro") == 0)
			out->read_only = true;
		else if (strcmp(t, "rw") == 0)
			out->read_only = false;
		else if (strncmp(t, "serial=", 7) == 0 && strlen(t + 7) <= 20)
			out->serial = t + 7;
		else
			return cv_fail(err, CV_EXIT_USAGE,
				       "--disk %s: unknown or bad option '%s' (ro, serial=ID of up to 20 "
				       "bytes)", path, t);
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
				       "--net: unknown or bad option '%s' (tap=NAME, fd=N, mac=MAC)", t);
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
