/*
 * Parsers for the device options of cvisor-vmm's command line ("--disk PATH,ro,serial=X" and
 * friends) into struct device_config. Each returns 0, or -1 with a usage error naming the
 * option and the offending part.
 */
#ifndef CVISOR_VMM_DEVOPTS_H
#define CVISOR_VMM_DEVOPTS_H

#include "devices.h"
#include "error.h"

/* PATH[,ro][,serial=ID] */
int devopts_disk(char *spec, struct disk_config *out, struct cv_error *err);
/* tap=NAME|fd=N[,mac=aa:bb:cc:dd:ee:ff] */
int devopts_net(char *spec, struct net_config *out, struct cv_error *err);
/* cid=N,uds=PATH */
int devopts_vsock(char *spec, struct vsock_config *out, struct cv_error *err);
/* [size=MiB][,deflate-on-oom][,stats=SECONDS][,free-page-reporting] ("" = defaults) */
int devopts_balloon(char *spec, struct balloon_config *out, struct cv_error *err);

/* Parses "aa:bb:cc:dd:ee:ff". */
int devopts_mac(const char *s, uint8_t mac[6]);

#endif
