/*
 * Where cvisor-agent listens, written "tcp:PORT", "tcp:ADDR:PORT", "unix:PATH" or "vsock:PORT".
 * Parsing is separate from opening so the command line is validated before anything is bound,
 * and a new transport is one more case in each function.
 */
#ifndef CVISOR_AGENT_LISTEN_H
#define CVISOR_AGENT_LISTEN_H

#include <stdint.h>
#include <sys/un.h>

#include "error.h"

enum listen_kind {
	LISTEN_TCP,
	LISTEN_UNIX,
	LISTEN_VSOCK,
};

struct listen_spec {
	enum listen_kind kind;
	char addr[64];       /* tcp: dotted IPv4 address; "0.0.0.0" when only a port is given */
	uint32_t port;       /* tcp: 1..65535; vsock: any 32-bit port */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];  /* unix */
};

int listen_parse(const char *text, struct listen_spec *out, struct cv_error *err);

/* Binds and listens; returns the socket (close-on-exec) or -1. */
int listen_open(const struct listen_spec *spec, struct cv_error *err);

/* "tcp:0.0.0.0:1024" style description for log lines. */
void listen_describe(const struct listen_spec *spec, char *out, size_t len);

#endif
