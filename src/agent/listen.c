/*
 * Listening socket setup for cvisor-agent (listen.h). TCP is what the emulated host uses (QEMU's
 * user network forwards a host port to it); unix sockets serve local tests; vsock is for microVM
 * guests, whose host side connects through the VMM.
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static int parse_port(const char *s, uint64_t max, uint32_t *out, const char *text,
		      struct cv_error *err)
{
	uint64_t v;
	if (!cv_parse_u64(s, 1, max, &v))
		return cv_fail(err, CV_EXIT_USAGE, "listen address '%s': bad port '%s' (1..%llu)",
			       text, s, (unsigned long long)max);
	*out = (uint32_t)v;
	return 0;
}

int listen_parse(const char *text, struct listen_spec *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	if (strncmp(text, "tcp:", 4) == 0) {
		out->kind = LISTEN_TCP;
		const char *rest = text + 4;
		const char *colon = strrchr(rest, ':');
		const char *port = rest;
		snprintf(out->addr, sizeof(out->addr), "0.0.0.0");
		if (colon) {
			size_t alen = (size_t)(colon - rest);
			if (alen == 0 || alen >= sizeof(out->addr))
				return cv_fail(err, CV_EXIT_USAGE, "listen address '%s': bad host", text);
			memcpy(out->addr, rest, alen);
			out->addr[alen] = 0;
			struct in_addr probe;
			if (inet_pton(AF_INET, out->addr, &probe) != 1)
				return cv_fail(err, CV_EXIT_USAGE,
					       "listen address '%s': '%s' is not an IPv4 address", text,
					       out->addr);
			port = colon + 1;
		}
		return parse_port(port, 65535, &out->port, text, err);
	}
	if (strncmp(text, "unix:", 5) == 0) {
		out->kind = LISTEN_UNIX;
		const char *p = text + 5;
		if (!*p)
			return cv_fail(err, CV_EXIT_USAGE, "listen address '%s': empty path", text);
		if (strlen(p) >= sizeof(out->path))
			return cv_fail(err, CV_EXIT_USAGE,
				       "listen address '%s': path longer than %zu bytes", text,
				       sizeof(out->path) - 1);
		memcpy(out->path, p, strlen(p) + 1);
		return 0;
	}
	if (strncmp(text, "vsock:", 6) == 0) {
		out->kind = LISTEN_VSOCK;
		/* VMADDR_PORT_ANY (-1U) is reserved for "pick one", so it is not a valid choice. */
		return parse_port(text + 6, 0xfffffffeu, &out->port, text, err);
	}
	return cv_fail(err, CV_EXIT_USAGE,
		       "listen address '%s': expected tcp:PORT, tcp:ADDR:PORT, unix:PATH or vsock:PORT",
		       text);
}

void listen_describe(const struct listen_spec *spec, char *out, size_t len)
{
	switch (spec->kind) {
	case LISTEN_TCP:
		snprintf(out, len, "tcp:%s:%u", spec->addr, spec->port);
		break;
	case LISTEN_UNIX:
		snprintf(out, len, "unix:%s", spec->path);
		break;
	case LISTEN_VSOCK:
		snprintf(out, len, "vsock:%u", spec->port);
		break;
	}
}

int listen_open(const struct listen_spec *spec, struct cv_error *err)
{
	char desc[160];
	listen_describe(spec, desc, sizeof(desc));
	int fd = -1;
	switch (spec->kind) {
	case LISTEN_TCP: {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "listen on %s: socket", desc);
		int one = 1;
		/* A restarted agent must not wait out TIME_WAIT of its predecessor's connections. */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)spec->port) };
		inet_pton(AF_INET, spec->addr, &sa.sin_addr);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto bind_fail;
		break;
	}
	case LISTEN_UNIX: {
		/* Replace a stale socket left by a previous agent, but never clobber another file. */
		struct stat st;
		if (lstat(spec->path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(spec->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "listen on %s: socket", desc);
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		memcpy(sa.sun_path, spec->path, strlen(spec->path) + 1);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto bind_fail;
		break;
	}
	case LISTEN_VSOCK: {
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "listen on %s: socket", desc);
		struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
					  .svm_port = spec->port };
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto bind_fail;
		break;
	}
	}
	if (listen(fd, 64) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "listen on %s", desc);
		close(fd);
		return -1;
	}
	return fd;
bind_fail:
	cv_fail_errno(err, CV_EXIT_OSERR, "listen on %s: bind", desc);
	close(fd);
	return -1;
}
