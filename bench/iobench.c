/*
 * iobench: the measuring tool bench/io runs inside guests (cvisor's and QEMU's alike) and on
 * the host side of network tests. Static, no dependencies. Modes:
 *   seqwrite DEV MiB        sequential 1 MiB O_DIRECT writes, then fdatasync: MB/s
 *   seqread DEV MiB         sequential 1 MiB O_DIRECT reads: MB/s
 *   randread DEV SECONDS    4 KiB O_DIRECT reads at random aligned offsets, queue depth 1: IOPS
 *   tcp-sink PORT           accept one connection, count bytes until EOF: MB/s
 *   tcp-send HOST PORT MiB  connect and send MiB of data, wait for the peer's EOF: MB/s
 *   tcp-source PORT MiB     accept one connection, send MiB of data, close: MB/s
 *   tcp-recv HOST PORT      connect, count bytes until EOF: MB/s
 * Each prints one line "iobench <mode> <value> <unit>" that the driver script parses.
 * bench/io runs the listening modes (sink, source) on the host before the guest boots, so the
 * guest is always the side that connects and nothing depends on when the guest is up.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define CONNECT_TIMEOUT_S 60.0   /* the host's listener may start after the guest boots */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *aligned(size_t size)
{
	void *p = NULL;
	if (posix_memalign(&p, 4096, size) != 0) {
		perror("posix_memalign");
		exit(1);
	}
	memset(p, 0x5a, size);
	return p;
}

static int open_dev(const char *dev, int flags)
{
	int fd = open(dev, flags | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "iobench: open %s: %s\n", dev, strerror(errno));
		exit(1);
	}
	return fd;
}

static int seq(const char *dev, long mib, int write_mode)
{
	int fd = open_dev(dev, write_mode ? O_WRONLY : O_RDONLY);
	off_t size = lseek(fd, 0, SEEK_END);
	if (mib < 1 || size < (off_t)mib * MiB) {
		fprintf(stderr, "iobench: %s holds %lld bytes, fewer than %ld MiB\n", dev,
			(long long)size, mib);
		return 1;
	}
	char *buf = aligned(MiB);
	double t0 = now();
	for (long i = 0; i < mib; i++) {
		ssize_t n = write_mode ? pwrite(fd, buf, MiB, (off_t)i * MiB)
				       : pread(fd, buf, MiB, (off_t)i * MiB);
		if (n != MiB) {
			fprintf(stderr, "iobench: %s at MiB %ld: %s\n", write_mode ? "write" : "read", i,
				n < 0 ? strerror(errno) : "short");
			return 1;
		}
	}
	if (write_mode && fdatasync(fd) < 0) {
		perror("iobench: fdatasync");
		return 1;
	}
	double dt = now() - t0;
	printf("iobench %s %.1f MB/s\n", write_mode ? "seqwrite" : "seqread", (double)mib * MiB / 1e6 / dt);
	return 0;
}

static int randread(const char *dev, double seconds)
{
	int fd = open_dev(dev, O_RDONLY);
	off_t size = lseek(fd, 0, SEEK_END);
	if (size < 4096) {
		fprintf(stderr, "iobench: %s too small\n", dev);
		return 1;
	}
	char *buf = aligned(4096);
	uint64_t blocks = (uint64_t)size / 4096, x = 88172645463325252ULL, ops = 0;
	double t0 = now(), t;
	do {
		for (int k = 0; k < 64; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;   /* xorshift: cheap, no libc state */
			if (pread(fd, buf, 4096, (off_t)((x % blocks) * 4096)) != 4096) {
				perror("iobench: pread");
				return 1;
			}
			ops++;
		}
		t = now() - t0;
	} while (t < seconds);
	printf("iobench randread %.0f IOPS\n", (double)ops / t);
	return 0;
}

/* Listens on PORT (any address) and returns the first connection, or -1. */
static int accept_one(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (s < 0) {
		perror("iobench: socket");
		return -1;
	}
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 1) < 0) {
		fprintf(stderr, "iobench: listen on port %d: %s\n", port, strerror(errno));
		return -1;
	}
	int c = accept(s, NULL, NULL);
	if (c < 0)
		perror("iobench: accept");
	close(s);
	return c;
}

/*
 * Connects to HOST:PORT, retrying with a fresh socket (a failed connect leaves a socket in an
 * unspecified state) until CONNECT_TIMEOUT_S: the peer's interface or listener may not be up yet.
 */
static int connect_to(const char *host, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "iobench: '%s' is not an IPv4 address\n", host);
		return -1;
	}
	double t0 = now();
	for (;;) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0) {
			perror("iobench: socket");
			return -1;
		}
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return s;
		int e = errno;
		close(s);
		if (now() - t0 > CONNECT_TIMEOUT_S) {
			fprintf(stderr, "iobench: connect to %s:%d: %s\n", host, port, strerror(e));
			return -1;
		}
		usleep(100000);
	}
}

/* Reads until EOF; prints the rate from the first byte to EOF. */
static int drain(int c, const char *mode)
{
	char *buf = aligned(MiB);
	uint64_t total = 0;
	double t0 = 0;
	for (;;) {
		ssize_t n = read(c, buf, MiB);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("iobench: read");
			return 1;
		}
		if (n == 0)
			break;
		if (!total)
			t0 = now();
		total += (uint64_t)n;
	}
	double dt = now() - t0;
	if (!total || dt <= 0) {
		fprintf(stderr, "iobench: %s: no data received\n", mode);
		return 1;
	}
	printf("iobench %s %.1f MB/s\n", mode, (double)total / 1e6 / dt);
	return 0;
}

/* Writes MiB of data; with wait_eof, half-closes and waits until the peer has read it all. */
static int pour(int s, long mib, bool wait_eof, const char *mode)
{
	char *buf = aligned(MiB);
	double t0 = now();
	for (long i = 0; i < mib; i++)
		for (size_t off = 0; off < MiB;) {
			ssize_t n = write(s, buf + off, MiB - off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				perror("iobench: write");
				return 1;
			}
			off += (size_t)n;
		}
	if (wait_eof) {
		shutdown(s, SHUT_WR);
		char b;
		while (read(s, &b, 1) > 0)
			;
	}
	printf("iobench %s %.1f MB/s\n", mode, (double)mib * MiB / 1e6 / (now() - t0));
	return 0;
}

static int tcp_sink(int port)
{
	int c = accept_one(port);
	return c < 0 ? 1 : drain(c, "tcp-sink");
}

static int tcp_send(const char *host, int port, long mib)
{
	int s = connect_to(host, port);
	return s < 0 ? 1 : pour(s, mib, true, "tcp-send");
}

/* The sender's rate counts data still in its socket buffer: tcp-recv's figure is the one to read. */
static int tcp_source(int port, long mib)
{
	int c = accept_one(port);
	if (c < 0)
		return 1;
	int rc = pour(c, mib, false, "tcp-source");
	close(c);
	return rc;
}

static int tcp_recv(const char *host, int port)
{
	int s = connect_to(host, port);
	return s < 0 ? 1 : drain(s, "tcp-recv");
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "seqwrite") == 0)
		return seq(argv[2], atol(argv[3]), 1);
	if (argc == 4 && strcmp(argv[1], "seqread") == 0)
		return seq(argv[2], atol(argv[3]), 0);
	if (argc == 4 && strcmp(argv[1], "randread") == 0)
		return randread(argv[2], atof(argv[3]));
	if (argc == 3 && strcmp(argv[1], "tcp-sink") == 0)
		return tcp_sink(atoi(argv[2]));
	if (argc == 5 && strcmp(argv[1], "tcp-send") == 0)
		return tcp_send(argv[2], atoi(argv[3]), atol(argv[4]));
	if (argc == 4 && strcmp(argv[1], "tcp-source") == 0)
		return tcp_source(atoi(argv[2]), atol(argv[3]));
	if (argc == 4 && strcmp(argv[1], "tcp-recv") == 0)
		return tcp_recv(argv[2], atoi(argv[3]));
	fprintf(stderr, "usage: iobench seqwrite|seqread DEV MiB | randread DEV SECONDS | "
			"tcp-sink PORT | tcp-send HOST PORT MiB | tcp-source PORT MiB | tcp-recv HOST PORT\n");
	return 64;
}
