/*
 * Orderly poweroff and reboot for the agent's "shutdown" request. The agent is not PID 1 in a
 * cvisor guest (cvisor-init is), but reboot(2) works from any process with CAP_SYS_BOOT in the
 * initial namespaces, so the agent itself does what an init's shutdown would: thaw frozen
 * filesystems, sync, ask every other process (but PID 1 and the listening agent) to terminate,
 * kill the stragglers, remount disk filesystems read-only, and reboot(2).
 */
#ifndef CVISOR_AGENT_POWER_H
#define CVISOR_AGENT_POWER_H

#include <stdbool.h>

#include "proto.h"

/*
 * How long processes get between SIGTERM and SIGKILL, and how long the killed ones get to be
 * gone. Short: the client is waiting, and a guest's processes have little state to save.
 */
#define POWER_TERM_WAIT_MS 2000
#define POWER_KILL_WAIT_MS 1000

/*
 * Refuses (returning -1 with nothing done) unless the process may reboot the machine; otherwise
 * does not return on success. A failing reboot(2) after the processes were killed returns -1.
 * quiet: no progress line on stderr.
 */
int power_shutdown(enum agent_shutdown_action action, bool quiet, struct cv_error *err);

#endif
