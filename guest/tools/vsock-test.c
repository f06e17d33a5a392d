/*
 * cvisor-vsock-test: a tiny vsock endpoint for tests run inside the guest (installed in the
 * default initramfs as /bin/cvisor-vsock-test). Static with no library beyond libc, like
 * cvisor-init.
 *
 *   cvisor-vsock-test listen [-o] PORT   accept one connection on PORT; echo everything back
 *                                        (or, with -o, write it to stdout); exit at its end
 *   cvisor-vsock-test connect CID PORT   connect, send stdin, print what comes back
 *   -v before the mode prints byte counts and the elapsed time on stderr.
 *
 * Both directions are pumped concurrently with poll(), so echoing megabytes cannot deadlock, and
 * half-close is honoured: end of input becomes shutdown(SHUT_WR) on the socket, and the program
 * ends once the socket has delivered its end of file and everything is written out.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#define BUF_SIZE (64 * 1024)

/* One direction of the copy: from -> buf -> to. */
struct pipe_dir {
	int from, to;
	bool to_is_socket;           /* end of input becomes shutdown(SHUT_WR) */
	char buf[BUF_SIZE];
	size_t len, off;
	bool eof, closed;
	unsigned long long bytes;
};

static int fail(const char *what)
{
	fprintf(stderr, "cvisor-vsock-test: %s: %s\n", what, strerror(errno));
	return 1;
}

static bool parse_u32(const char *s, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || !*s || *end || v > 0xffffffffUL)
		return false;
	*out = (unsigned)v;
	return true;
}

/* Moves bytes until every active direction saw end of file and wrote everything out. */
static int pump(struct pipe_dir *dirs, int n, int done_when)
{
	for (;;) {
		struct pollfd p[4];
		int map[4], np = 0;
		for (int i = 0; i < n; i++) {
			struct pipe_dir *d = &dirs[i];
			if (d->closed)
				continue;
			if (d->off < d->len) {
				p[np] = (struct pollfd){ .fd = d->to, .events = POLLOUT };
			} else if (!d->eof) {
				p[np] = (struct pollfd){ .fd = d->from, .events = POLLIN };
			} else {
				if (d->to_is_socket)
					shutdown(d->to, SHUT_WR);
				d->closed = true;
				continue;
			}
			map[np++] = i;
		}
		if (dirs[done_when].closed || np == 0)
			return 0;
		if (poll(p, (nfds_t)np, -1) < 0) {
			if (errno == EINTR)
				continue;
			return fail("poll");
		}
		for (int k = 0; k < np; k++) {
			struct pipe_dir *d = &dirs[map[k]];
			if (!p[k].revents)
				continue;
			if (d->off < d->len) {
				ssize_t w = write(d->to, d->buf + d->off, d->len - d->off);
				if (w < 0 && errno != EAGAIN && errno != EINTR)
					return fail("write");
				if (w > 0)
					d->off += (size_t)w;
			} else {
				ssize_t r = read(d->from, d->buf, sizeof(d->buf));
				if (r < 0 && errno != EAGAIN && errno != EINTR)
					return fail("read");
				if (r == 0)
					d->eof = true;
				if (r > 0) {
					d->len = (size_t)r;
					d->off = 0;
					d->bytes += (unsigned long long)r;
				}
			}
		}
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage(void)
{
	fprintf(stderr, "usage: cvisor-vsock-test [-v] listen [-o] PORT\n"
			"       cvisor-vsock-test [-v] connect CID PORT\n");
	return 2;
}

int main(int argc, char **argv)
{
	bool verbose = false, to_stdout = false;
	int a = 1;
	if (a < argc && strcmp(argv[a], "-v") == 0) {
		verbose = true;
		a++;
	}
	if (a >= argc)
		return usage();
	const char *mode = argv[a++];
	static struct pipe_dir dirs[2];
	int n = 0, done_when = 0, fd;
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK };
	double t0;
	if (strcmp(mode, "listen") == 0) {
		if (a < argc && strcmp(argv[a], "-o") == 0) {
			to_stdout = true;
			a++;
		}
		unsigned port;
		if (a + 1 != argc || !parse_u32(argv[a], &port))
			return usage();
		int l = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (l < 0)
			return fail("socket");
		sa.svm_cid = VMADDR_CID_ANY;
		sa.svm_port = port;
		if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return fail("bind");
		if (listen(l, 1) < 0)
			return fail("listen");
		fd = accept(l, NULL, NULL);
		if (fd < 0)
			return fail("accept");
		close(l);
		t0 = now_s();
		/* Echo: the socket feeds itself; with -o it feeds stdout. */
		dirs[0] = (struct pipe_dir){ .from = fd, .to = to_stdout ? 1 : fd,
					     .to_is_socket = !to_stdout };
		n = 1;
	} else if (strcmp(mode, "connect") == 0) {
		unsigned cid, port;
		if (a + 2 != argc || !parse_u32(argv[a], &cid) || !parse_u32(argv[a + 1], &port))
			return usage();
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return fail("socket");
		sa.svm_cid = cid;
		sa.svm_port = port;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return fail("connect");
		t0 = now_s();
		dirs[0] = (struct pipe_dir){ .from = 0, .to = fd, .to_is_socket = true };
		dirs[1] = (struct pipe_dir){ .from = fd, .to = 1 };
		n = 2;
		done_when = 1;   /* until the peer's end of file */
	} else {
		return usage();
	}
	/* Only the socket is non-blocking: stdin/stdout may share the console with others. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	int rc = pump(dirs, n, done_when);
	if (verbose) {
		double t = now_s() - t0;
		unsigned long long in = n == 2 ? dirs[1].bytes : dirs[0].bytes;
		unsigned long long out = n == 2 ? dirs[0].bytes : (to_stdout ? 0 : dirs[0].bytes);
		fprintf(stderr, "cvisor-vsock-test: sent %llu received %llu bytes in %.3f s\n", out, in,
			t);
	}
	close(fd);
	return rc;
}
