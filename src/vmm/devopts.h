/*
 * Parsers for the device options of cvisor-vmm's command line ("--disk PATH,ro,serial=X" and
 * friends) into struct device_config. Each returns 0, or -1 with a usage error naming the
 * option and the offending part.
 */
#ifndef CVISOR_VMM_DEVOPTS_H
#define CVISOR_VMM_DEVOPTS_H

#include "devices.h"
#include "error.h"

/*
 * Rate limits (Firecracker's token buckets, ratelimit.h) are options of their device:
 *   bw=SIZE/MS        bandwidth: a bucket of SIZE bytes (suffix K, M or G: KiB, MiB, GiB)
 *                     refilled completely every MS milliseconds
 *   bw_burst=SIZE     one-time burst of bytes on top of it
 *   ops=N/MS, ops_burst=N   the same for operations (requests, frames)
 * e.g. bw=2M/1000 is 2 MiB/s. Network devices take them per direction: rx_bw=, tx_ops=...
 */

/* PATH[,ro][,serial=ID][,bw=SIZE/MS][,bw_burst=SIZE][,ops=N/MS][,ops_burst=N]
   (PATH may also be written path=PATH) */
int devopts_disk(char *spec, struct disk_config *out, struct cv_error *err);
/* tap=NAME|fd=N[,mac=aa:bb:cc:dd:ee:ff][,{rx,tx}_{bw,bw_burst,ops,ops_burst}=...] */
int devopts_net(char *spec, struct net_config *out, struct cv_error *err);
/* cid=N,uds=PATH */
int devopts_vsock(char *spec, struct vsock_config *out, struct cv_error *err);
/* [size=MiB][,deflate-on-oom][,stats=SECONDS][,free-page-reporting] ("" = defaults) */
int devopts_balloon(char *spec, struct balloon_config *out, struct cv_error *err);

/*
 * Applies one rate limit option "NAME=VALUE" whose NAME (after any rx_/tx_ prefix) is bw,
 * bw_burst, ops or ops_burst. Returns 1 if applied, 0 if NAME is not one of them, -1 with a
 * usage error naming `what` if the value is bad.
 */
int devopts_rate_limit(const char *opt, struct rate_limiter_config *out, const char *what,
		       struct cv_error *err);

/* Parses "aa:bb:cc:dd:ee:ff". */
int devopts_mac(const char *s, uint8_t mac[6]);

#endif
