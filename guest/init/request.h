/*
 * The run request cvisor places in the guest's initramfs at /cvisor/run: what cvisor-init should
 * execute. A sequence of NUL-terminated "key=value" records, so arguments may hold any byte but
 * NUL without quoting: token= (once), arg= (each argv element, in order), env= ("K=V", any
 * number), cwd= and hostname= (optional), agent= (optional: a vsock port; cvisor-init then runs
 * no command but keeps cvisor-agent listening on that port, with the env= records as its
 * environment, and prints no markers). Shared by the writer (cvisor run) and the reader
 * (cvisor-init) so both agree on the format and the markers.
 */
#ifndef CVISOR_GUEST_REQUEST_H
#define CVISOR_GUEST_REQUEST_H

#define RUN_REQUEST_PATH "/cvisor/run"
#define RUN_REQUEST_MAX (1 << 20)
#define RUN_REQUEST_MAX_ARGS 4096

/*
 * Console markers around the command's output. The start marker is a line of its own; the exit
 * marker begins with a newline that is not part of the output, so output without a trailing
 * newline survives byte for byte: "...output" "\n[cvisor-exit TOKEN STATUS]\n".
 */
#define MARKER_START_FMT "[cvisor-start %s]\n"
#define MARKER_EXIT_PREFIX "\n[cvisor-exit "
#define MARKER_EXIT_FMT "\n[cvisor-exit %s %d]\n"

#endif
