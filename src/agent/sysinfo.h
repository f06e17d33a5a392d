/*
 * The guest state report behind the agent's "info" request: uptime, load, memory, per-CPU times
 * and filesystem usage, gathered from /proc, uname and statvfs into a struct agent_info
 * (proto.h). The /proc parsers take text so they are tested on fixed inputs.
 */
#ifndef CVISOR_AGENT_SYSINFO_H
#define CVISOR_AGENT_SYSINFO_H

#include "proto.h"

/* Fills *out from the running system (freed with agent_info_free, also on failure). */
int sysinfo_collect(struct agent_info *out, struct cv_error *err);

/* MemTotal, MemFree and MemAvailable (kB in the text) as bytes; all three must be present. */
int sysinfo_parse_meminfo(const char *text, struct agent_info *out, struct cv_error *err);

/*
 * The "cpuN ..." lines of /proc/stat, times converted from clock ticks (ticks_per_second, the
 * kernel's USER_HZ) to nanoseconds. At most AGENT_INFO_MAX_CPUS entries.
 */
int sysinfo_parse_stat(const char *text, long ticks_per_second, struct agent_info *out,
		       struct cv_error *err);

#endif
