/*
 * Destination side of live migration (see migrate.h): one incoming connection, the VM built
 * from the source's announced shape and this command line's devices, memory written as it
 * arrives, then the snapshot state restored. Nothing runs before the source says GO; a lost
 * connection or a bad frame before that ends this process without the guest ever running
 * here, which is what lets the source resume safely.
 */
#include "migrate/migrate.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/stream.h"
#include "virtio/blk.h"
#include "snapshot/snapshot.h"
#include "snapshot/state.h"
#include "util.h"
#include "vm.h"

int migrate_listen(const char *address, unsigned *port, struct cv_error *err)
{
	struct sockaddr_storage sa;
	unsigned sa_len;
	if (mig_parse_address(address, true, &sa, &sa_len, err) < 0)
		return -1;
	int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "socket");
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sa_len) < 0 || listen(fd, 1) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "listen on %s", address);
		close(fd);
		return -1;
	}
	if (port) {
		struct sockaddr_storage got;
		socklen_t gl = sizeof(got);
		getsockname(fd, (struct sockaddr *)&got, &gl);
		*port = got.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&got)->sin_port)
						 : ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
	}
	return fd;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

struct conn {
	int fd;
	int timeout_ms;
};

static int conn_read(void *ctx, void *buf, size_t n, struct cv_error *err)
{
	struct conn *c = ctx;
	uint8_t *p = buf;
	while (n) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int r = poll(&pfd, 1, c->timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cv_fail_errno(err, CV_EXIT_IOERR, "waiting for the source");
		if (r == 0)
			return cv_fail(err, CV_EXIT_IOERR, "the source sent nothing for %d s",
				       c->timeout_ms / 1000);
		ssize_t got = recv(c->fd, p, n, 0);
		if (got == 0)
			return cv_fail(err, CV_EXIT_IOERR, "the source closed the connection");
		if (got < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return cv_fail_errno(err, CV_EXIT_IOERR, "receiving from the source");
		}
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

static int send_buf(int fd, struct snap_buf *b, struct cv_error *err)
{
	if (b->oom)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	size_t off = 0;
	while (off < b->len) {
		ssize_t w = send(fd, b->b + off, b->len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return cv_fail_errno(err, CV_EXIT_IOERR, "sending to the source");
		off += (size_t)w;
	}
	b->len = 0;
	return 0;
}

static int send_control(int fd, uint32_t type, struct cv_error *err)
{
	struct snap_buf b = { 0 };
	mig_put_frame(&b, type, 0, NULL, 0);
	int rc = send_buf(fd, &b, err);
	snap_buf_free(&b);
	return rc;
}

/*
 * Tells the source why we give up, then lets it see the message: closing with unread data
 * would reset the connection at once, so stop sending and read what is still coming (briefly)
 * until the source closes.
 */
static void send_error(int fd, const struct cv_error *why)
{
	struct snap_buf b = { 0 };
	mig_put_error(&b, why->msg);
	struct cv_error ignored = { 0 };
	send_buf(fd, &b, &ignored);
	snap_buf_free(&b);
	shutdown(fd, SHUT_WR);
	double end = now_ms() + 2000;
	uint8_t sink[65536];
	while (now_ms() < end) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
			break;
		if (!pfd.revents)
			continue;
		ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			break;
	}
}

/* HELLO: the machine the source runs; cfg takes its vCPUs, memory and transport. */
static int read_hello(struct mig_reader *rd, struct vm_config *cfg,
		      const struct migrate_incoming_opts *o, struct snap_shape *shape,
		      struct cv_error *err)
{
	struct mig_frame f;
	struct snap_cur c;
	if (mig_read_preamble(rd, err) < 0 || mig_expect(rd, MIG_HELLO, &f, err) < 0 ||
	    mig_decode_hello(&f, &c, err) < 0 || shape_decode(&c, shape, err) < 0)
		return -1;
	if (o->cpus_given && cfg->cpus != shape->n_vcpus)
		return cv_fail(err, CV_EXIT_USAGE, "--cpus %u: the migrating VM has %u vCPUs",
			       cfg->cpus, shape->n_vcpus);
	if (o->memory_given && cfg->memory_bytes != shape->memory_bytes)
		return cv_fail(err, CV_EXIT_USAGE, "--memory %llu: the migrating VM has %llu MiB",
			       (unsigned long long)(cfg->memory_bytes >> 20),
			       (unsigned long long)(shape->memory_bytes >> 20));
	if (shape->n_vcpus < 1 || shape->n_vcpus > VM_MAX_VCPUS ||
	    shape->memory_bytes < CV_MiB(VM_MIN_MEMORY_MIB) || shape->memory_bytes % MIG_PAGE)
		return cv_fail(err, CV_EXIT_DATAERR, "the source announces an impossible machine "
			       "(%u vCPUs, %llu bytes of memory)", shape->n_vcpus,
			       (unsigned long long)shape->memory_bytes);
	uint64_t host = cv_host_memory_bytes();
	if (host && shape->memory_bytes > host)
		return cv_fail(err, CV_EXIT_USAGE, "the migrating VM has %llu MiB, more than this "
			       "host's %llu MiB", (unsigned long long)(shape->memory_bytes >> 20),
			       (unsigned long long)(host >> 20));
	cfg->cpus = shape->n_vcpus;
	cfg->memory_bytes = shape->memory_bytes;
	cfg->devices.transport = (enum virtio_transport)shape->transport;
	return 0;
}

/* Memory rounds until the STATE frame, which is restored. */
static int receive(struct vm *vm, struct mig_reader *rd, bool quiet, struct cv_error *err)
{
	struct mig_frame state;
	struct mig_rx_stats st;
	if (mig_receive_memory(rd, vm->mem.host, vm->mem.size, &state, &st, err) < 0)
		return -1;
	if (!quiet)
		fprintf(stderr, "cvisor-vmm: incoming: %u rounds, %llu pages; loading the state\n",
			st.rounds, (unsigned long long)st.pages);
	return vm_restore_state(vm, state.payload, state.len, err);
}

int migrate_incoming(struct vm *vm, struct vm_config *cfg, const struct migrate_incoming_opts *o,
		     bool *built, struct cv_error *err)
{
	*built = false;
	memset(vm, 0, sizeof(*vm));     /* vm_destroy must work whatever fails below */
	vm->fd = vm->kvm.fd = vm->stop_eventfd = vm->uart_drained_eventfd = -1;
	vm->loop.epfd = vm->loop.wake_fd = -1;
	vm->migrate_ack_fd = -1;
	vm->console.out_fd = vm->console.in_fd = -1;
	int lfd = o->listen_fd;
	if (lfd < 0 && (lfd = migrate_listen(o->address, NULL, err)) < 0)
		return -1;
	if (!o->quiet)
		fprintf(stderr, "cvisor-vmm: incoming: waiting on %s\n",
			o->address ? o->address : "the given socket");
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	int e = errno;
	if (lfd != o->listen_fd)
		close(lfd);
	if (fd < 0) {
		errno = e;
		return cv_fail_errno(err, CV_EXIT_IOERR, "accept an incoming migration");
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	double t0 = now_ms();
	struct conn c = { fd, MIGRATE_IO_TIMEOUT_MS };
	struct mig_reader rd;
	mig_reader_init(&rd, conn_read, &c);
	struct snap_shape shape;
	struct snap_buf pre = { 0 };
	/* Our preamble first, so that even a refusal of the HELLO reaches the source as such. */
	mig_put_preamble(&pre);
	int rc = send_buf(fd, &pre, err);
	if (rc == 0)
		rc = read_hello(&rd, cfg, o, &shape, err);
	if (rc == 0) {
		/* The source holds the disk locks until GO: open the images without. */
		for (unsigned i = 0; i < cfg->devices.n_disks; i++)
			cfg->devices.disks[i].defer_lock = true;
		*built = true;
		rc = vm_init(vm, cfg, err);
		if (rc == 0)
			rc = shape_check(&shape, vm, err);
	}
	if (rc == 0) {
		/*
		 * vm_init wrote boot tables into RAM; the source sends only pages that are not zero
		 * on its side, so start from all zeroes like a fresh guest.
		 */
		madvise(vm->mem.host, vm->mem.size, MADV_DONTNEED);
		mig_put_frame(&pre, MIG_ACCEPT, 0, NULL, 0);
		rc = send_buf(fd, &pre, err);
	}
	if (rc == 0)
		rc = receive(vm, &rd, o->quiet, err);
	if (rc == 0)
		rc = send_control(fd, MIG_READY, err);
	struct mig_frame f;
	if (rc == 0)
		rc = mig_expect(&rd, MIG_GO, &f, err);
	/* The source dropped its disk locks before GO; ours now, or we must not run. */
	if (rc == 0)
		rc = virtio_blk_lock_images(vm, true, err);
	snap_buf_free(&pre);
	mig_reader_free(&rd);
	if (rc < 0) {
		cv_error_wrap(err, "incoming migration");
		send_error(fd, err);
		close(fd);
		return -1;
	}
	if (!o->quiet)
		fprintf(stderr, "cvisor-vmm: incoming: received in %.1f ms, running\n",
			now_ms() - t0);
	vm->migrate_ack_fd = fd;
	return 0;
}

void migrate_incoming_resumed(struct vm *vm)
{
	if (vm->migrate_ack_fd < 0)
		return;
	struct cv_error err = { 0 };
	if (send_control(vm->migrate_ack_fd, MIG_RESUMED, &err) < 0)
		fprintf(stderr, "cvisor-vmm: incoming: %s (the guest runs here anyway)\n", err.msg);
	close(vm->migrate_ack_fd);
	vm->migrate_ack_fd = -1;
}
