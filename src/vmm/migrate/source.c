/*
 * Source side of live migration (see migrate.h): the migration thread, pre-copy rounds, the
 * stop-and-copy phase and the hand-over. The thread is started before the VMM's threads lock
 * themselves down (it needs TCP, which no other role may use) and waits for a job.
 *
 * Why the hand-over has three steps (READY, GO, RESUMED): at every moment at most one side
 * may run the guest. Until the source has sent GO, the destination never runs it (it refuses
 * anything but GO after READY, and exits on a lost connection), so any failure up to then
 * resumes the source safely. Once GO left, the destination may be running it; if RESUMED then
 * never arrives, the source cannot know and stays paused in state "unknown" rather than risk
 * two running copies. An operator who knows the destination is gone resumes it with DELETE
 * /cvisor/migrate.
 */
#include "migrate/migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/dirty.h"
#include "migrate/stream.h"
#include "snapshot/snapshot.h"
#include "snapshot/state.h"
#include "util.h"
#include "virtio/blk.h"
#include "vm.h"

#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define FLUSH_BYTES (1u << 20)
#define HANDOVER_TIMEOUT_MS 30000    /* the destination loads the state before READY */

struct vm_migration {
	struct vm *vm;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool job, quit, busy;
	struct migrate_params params;
	struct migrate_stats stats;      /* under lock */
	atomic_bool cancel;
	atomic_bool committed;           /* GO sent: a cancel can no longer stop it */
	int sock;                        /* under lock: cancel shuts it down */
	int pagemap_fd;
	struct mig_dirty dirty;
	double t0;
	/* Job-local, touched by the thread only. */
	struct snap_buf out;
	bool send_failed;
	uint64_t round_bytes, job_bytes;
	double round_t0;
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *const state_names[] = {
	[MIGRATE_NONE] = "none", [MIGRATE_SETUP] = "setup", [MIGRATE_ACTIVE] = "active",
	[MIGRATE_STOP_COPY] = "stop-copy", [MIGRATE_COMPLETED] = "completed",
	[MIGRATE_FAILED] = "failed", [MIGRATE_CANCELLED] = "cancelled",
	[MIGRATE_UNKNOWN] = "unknown",
};

const char *migrate_state_name(enum migrate_state s)
{
	return (unsigned)s < CV_ARRAY_SIZE(state_names) ? state_names[s] : "?";
}

static void set_state(struct vm_migration *m, enum migrate_state s)
{
	pthread_mutex_lock(&m->lock);
	m->stats.state = s;
	pthread_mutex_unlock(&m->lock);
}

/* ---- sending ---- */

static int sock_write(struct vm_migration *m, const uint8_t *p, size_t n, struct cv_error *err)
{
	while (n) {
		if (atomic_load(&m->cancel))
			return cv_fail(err, CV_EXIT_IOERR, "cancelled");
		ssize_t w = send(m->sock, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			m->send_failed = true;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return cv_fail(err, CV_EXIT_IOERR, "sending to the destination: no progress "
					       "for %d s", MIGRATE_IO_TIMEOUT_MS / 1000);
			return cv_fail_errno(err, CV_EXIT_IOERR, "sending to the destination");
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Sends what is buffered; sleeps as needed to stay under max_bandwidth. */
static int flush(struct vm_migration *m, struct cv_error *err)
{
	if (m->out.oom)
		return cv_fail(err, CV_EXIT_OSERR, "migration: out of memory");
	if (!m->out.len)
		return 0;
	if (sock_write(m, m->out.b, m->out.len, err) < 0)
		return -1;
	m->round_bytes += m->out.len;
	m->job_bytes += m->out.len;
	m->out.len = 0;
	pthread_mutex_lock(&m->lock);
	m->stats.bytes_sent = m->job_bytes;
	pthread_mutex_unlock(&m->lock);
	uint64_t bw = m->params.max_bandwidth;
	if (bw) {
		double due = (double)m->round_bytes * 1e3 / (double)bw;
		double ahead = due - (now_ms() - m->round_t0);
		while (ahead > 0 && !atomic_load(&m->cancel)) {
			double step = ahead < 100 ? ahead : 100;
			struct timespec ts = { 0, (long)(step * 1e6) };
			nanosleep(&ts, NULL);
			ahead -= step;
		}
	}
	return 0;
}

static int maybe_flush(struct vm_migration *m, struct cv_error *err)
{
	return m->out.len >= FLUSH_BYTES ? flush(m, err) : 0;
}

struct sock_ctx {
	struct vm_migration *m;
	int timeout_ms;
};

/* Reader callback: exactly n bytes within the timeout, or an error. */
static int sock_read(void *ctx, void *buf, size_t n, struct cv_error *err)
{
	struct sock_ctx *c = ctx;
	uint8_t *p = buf;
	double deadline = now_ms() + c->timeout_ms;
	while (n) {
		if (atomic_load(&c->m->cancel) && !atomic_load(&c->m->committed))
			return cv_fail(err, CV_EXIT_IOERR, "cancelled");
		int left = (int)(deadline - now_ms());
		if (left <= 0)
			return cv_fail(err, CV_EXIT_IOERR, "no answer from the destination for %d s",
				       c->timeout_ms / 1000);
		struct pollfd pfd = { .fd = c->m->sock, .events = POLLIN };
		int r = poll(&pfd, 1, left < 200 ? left : 200);
		if (r < 0 && errno != EINTR)
			return cv_fail_errno(err, CV_EXIT_IOERR, "waiting for the destination");
		if (r <= 0)
			continue;
		ssize_t got = recv(c->m->sock, p, n, 0);
		if (got == 0)
			return cv_fail(err, CV_EXIT_IOERR, "the destination closed the connection");
		if (got < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return cv_fail_errno(err, CV_EXIT_IOERR, "receiving from the destination");
		}
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

/* Runs of pages being collected into one frame. */
struct run {
	uint64_t start, n;
	bool zero;
	uint64_t data_pages, zero_pages;
};

static int flush_run(struct vm_migration *m, struct run *r, struct cv_error *err)
{
	if (!r->n)
		return 0;
	const uint8_t *base = m->vm->mem.host;
	if (r->zero) {
		mig_put_zero(&m->out, r->start * MIG_PAGE, r->n);
		r->zero_pages += r->n;
	} else {
		mig_put_pages(&m->out, r->start * MIG_PAGE, base + r->start * MIG_PAGE,
			      (uint32_t)r->n);
		r->data_pages += r->n;
	}
	r->n = 0;
	return maybe_flush(m, err);
}

static int add_page(struct vm_migration *m, struct run *r, uint64_t pg, bool send_zero,
		    struct cv_error *err)
{
	bool zero = guest_page_is_zero(m->vm->mem.host + pg * MIG_PAGE);
	if (zero && !send_zero)
		return flush_run(m, r, err);
	if (r->n && (r->zero != zero || r->start + r->n != pg ||
		     (!zero && r->n == MIG_MAX_RUN_PAGES))) {
		if (flush_run(m, r, err) < 0)
			return -1;
	}
	if (!r->n) {
		r->start = pg;
		r->zero = zero;
	}
	r->n++;
	return 0;
}

/*
 * Round 1: every page that holds anything. The destination's RAM starts all zero, so zero
 * pages are skipped, and pages the guest never touched (pagemap: neither present nor
 * swapped) are skipped unread.
 */
static int send_all(struct vm_migration *m, struct run *r, struct cv_error *err)
{
	struct vm *vm = m->vm;
	uint64_t pages = vm->mem.size / MIG_PAGE;
	uint64_t ent[512];
	for (uint64_t pg = 0; pg < pages; pg += 512) {
		unsigned n = (unsigned)CV_MIN((uint64_t)512, pages - pg);
		bool have = false;
		if (m->pagemap_fd >= 0 && !vm->mem_file_ino) {
			off_t where = (off_t)(((uintptr_t)(vm->mem.host + pg * MIG_PAGE) / MIG_PAGE) * 8);
			have = pread(m->pagemap_fd, ent, n * 8, where) == (ssize_t)(n * 8);
		}
		for (unsigned i = 0; i < n; i++) {
			if (have && !(ent[i] & (PM_PRESENT | PM_SWAPPED))) {
				if (flush_run(m, r, err) < 0)
					return -1;
				continue;
			}
			if (add_page(m, r, pg + i, false, err) < 0)
				return -1;
		}
	}
	return flush_run(m, r, err);
}

/* A later round: the pages in the dirty set, zero ones as ranges; clears the set. */
static int send_dirty(struct vm_migration *m, struct run *r, struct cv_error *err)
{
	struct mig_dirty *d = &m->dirty;
	for (size_t w = 0; w < d->words; w++) {
		uint64_t bits = d->bits[w];
		d->bits[w] = 0;
		while (bits) {
			unsigned b = (unsigned)__builtin_ctzll(bits);
			bits &= bits - 1;
			uint64_t pg = (uint64_t)w * 64 + b;
			if (pg < d->pages && add_page(m, r, pg, true, err) < 0)
				return -1;
		}
	}
	return flush_run(m, r, err);
}

/* Sends one round (all pages in round 1), ends it with a ROUND frame, updates the stats. */
static int round_send(struct vm_migration *m, uint32_t round, struct cv_error *err)
{
	struct run r = { 0 };
	m->round_bytes = 0;
	m->round_t0 = now_ms();
	int rc = round == 1 ? send_all(m, &r, err) : send_dirty(m, &r, err);
	if (rc < 0)
		return -1;
	mig_put_round(&m->out, round, r.data_pages + r.zero_pages);
	if (flush(m, err) < 0)
		return -1;
	double dt = now_ms() - m->round_t0;
	pthread_mutex_lock(&m->lock);
	m->stats.pages_sent += r.data_pages;
	m->stats.zero_pages += r.zero_pages;
	m->stats.rounds = round;
	/* Rounds of a few KiB say nothing about the link; keep the last real measurement. */
	if (m->round_bytes >= (1u << 20) && dt > 0)
		m->stats.bandwidth = (double)m->round_bytes * 1e3 / dt;
	m->stats.total_ms = now_ms() - m->t0;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

/* ---- one job ---- */

static int connect_to(struct vm_migration *m, struct cv_error *err)
{
	struct sockaddr_storage sa;
	unsigned sa_len;
	if (mig_parse_address(m->params.destination, false, &sa, &sa_len, err) < 0)
		return -1;
	int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "socket");
	/* Send timeout: a destination that stops reading (link down, no reset) is a failure. */
	struct timeval tv = { MIGRATE_IO_TIMEOUT_MS / 1000, 0 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	pthread_mutex_lock(&m->lock);
	m->sock = fd;
	pthread_mutex_unlock(&m->lock);
	if (connect(fd, (struct sockaddr *)&sa, sa_len) < 0)
		return cv_fail_errno(err, CV_EXIT_IOERR, "connect to %s", m->params.destination);
	return 0;
}

static void close_sock(struct vm_migration *m)
{
	pthread_mutex_lock(&m->lock);
	int fd = m->sock;
	m->sock = -1;
	pthread_mutex_unlock(&m->lock);
	if (fd >= 0)
		close(fd);
}

static void finish_stats(struct vm_migration *m, enum migrate_state s, const char *why)
{
	pthread_mutex_lock(&m->lock);
	m->stats.state = s;
	m->stats.total_ms = now_ms() - m->t0;
	if (why)
		snprintf(m->stats.error, sizeof(m->stats.error), "%.*s",
			 (int)sizeof(m->stats.error) - 1, why);
	pthread_mutex_unlock(&m->lock);
}

static void run_job(struct vm_migration *m)
{
	struct vm *vm = m->vm;
	struct cv_error err = { 0 };
	struct mig_reader rd;
	struct sock_ctx sc = { m, MIGRATE_IO_TIMEOUT_MS };
	mig_reader_init(&rd, sock_read, &sc);
	m->out.len = 0;
	m->out.oom = false;
	m->job_bytes = 0;
	m->send_failed = false;
	bool held = false, was_paused = false, committed = false;
	uint64_t budget = m->params.downtime_ms ? m->params.downtime_ms
						: MIGRATE_DEFAULT_DOWNTIME_MS;
	uint32_t max_rounds = m->params.max_rounds ? m->params.max_rounds
						   : MIGRATE_DEFAULT_MAX_ROUNDS;
	const char *trace = getenv("CVISOR_VMM_TRACE");
	bool verbose = trace && strstr(trace, "migrate");
	double t_pause = 0;

	/* Handshake: the destination checks the machine shape before any memory moves. */
	if (connect_to(m, &err) < 0)
		goto fail;
	struct snap_buf shape = { 0 }, hello = { 0 };
	shape_save(vm, SNAP_TYPE_FULL, &shape);
	snap_put_u32(&hello, MIG_PAGE);
	snap_put_blob(&hello, shape.b, shape.len);
	mig_put_preamble(&m->out);
	mig_put_frame(&m->out, MIG_HELLO, 0, hello.b, hello.len);
	if (shape.oom || hello.oom)
		m->out.oom = true;
	snap_buf_free(&shape);
	snap_buf_free(&hello);
	struct mig_frame f;
	if (flush(m, &err) < 0 || mig_read_preamble(&rd, &err) < 0 ||
	    mig_expect(&rd, MIG_ACCEPT, &f, &err) < 0)
		goto fail;
	pthread_mutex_lock(&m->lock);
	m->stats.setup_ms = now_ms() - m->t0;
	m->stats.state = MIGRATE_ACTIVE;
	pthread_mutex_unlock(&m->lock);

	/* Pre-copy. Logging starts before round 1 reads anything, so no write is missed. */
	if (mig_dirty_start(&m->dirty, &err) < 0)
		goto fail;
	uint64_t best = UINT64_MAX;
	unsigned stalled = 0;
	for (uint32_t round = 1;; round++) {
		double t = now_ms();
		if (round_send(m, round, &err) < 0)
			goto fail;
		if (mig_dirty_harvest(&m->dirty, &err) < 0)
			goto fail;
		double dt = (now_ms() - t) / 1e3;
		uint64_t left = mig_dirty_count(&m->dirty);
		pthread_mutex_lock(&m->lock);
		m->stats.dirty_pages = left;
		m->stats.dirty_rate = dt > 0 ? (double)left / dt : 0;
		double bw = m->stats.bandwidth;
		m->stats.expected_downtime_ms = bw > 0 ? (double)left * MIG_PAGE * 1e3 / bw : 0;
		double expect = m->stats.expected_downtime_ms;
		pthread_mutex_unlock(&m->lock);
		if (verbose)
			fprintf(stderr, "cvisor-vmm: migrate: round %u: %.0f ms, %llu dirty pages left, "
				"%.1f MB/s, expected downtime %.1f ms\n", round, dt * 1e3,
				(unsigned long long)left, bw / 1e6, expect);
		/*
		 * Switch when the rest fits the budget. A guest that dirties memory as fast as the
		 * link moves it never gets there: once the dirty set has not shrunk for a few rounds,
		 * more rounds only cost bandwidth, so switch with the downtime it takes.
		 */
		if (left < best - best / 10) {
			best = left;
			stalled = 0;
		} else {
			stalled++;
		}
		const char *why = NULL;
		if (bw > 0 && expect <= (double)budget)
			why = "converged";
		else if (bw == 0 && left <= 256)
			why = "converged";     /* rounds too small to measure: the rest is too */
		else if (stalled >= MIGRATE_STALL_ROUNDS)
			why = "no progress";
		else if (round >= max_rounds)
			why = "max rounds";
		if (why) {
			pthread_mutex_lock(&m->lock);
			m->stats.switch_reason = why;
			pthread_mutex_unlock(&m->lock);
			break;
		}
	}

	/*
	 * Stop and copy: the guest is paused from here until the hand-over is decided. The rest
	 * goes at full speed: max_bandwidth spares the link while the guest runs, but now every
	 * millisecond is downtime.
	 */
	set_state(m, MIGRATE_STOP_COPY);
	m->params.max_bandwidth = 0;
	t_pause = now_ms();
	if (vm_hold_pause(vm, &was_paused, &err) < 0)
		goto fail;
	held = true;
	if (was_paused) {
		/* The destination would run it: a VM someone paused must not move that way. */
		cv_fail(&err, CV_EXIT_USAGE, "the VM was paused during the migration; resume it and "
			"migrate again");
		goto fail;
	}
	if (mig_dirty_harvest(&m->dirty, &err) < 0)
		goto fail;
	pthread_mutex_lock(&m->lock);
	uint32_t last = m->stats.rounds + 1;
	pthread_mutex_unlock(&m->lock);
	double t_paused = now_ms();
	if (round_send(m, last, &err) < 0)
		goto fail;
	double t_last = now_ms();
	struct snap_buf state = { 0 };
	if (vm_snapshot_state(vm, &state, &err) < 0) {
		snap_buf_free(&state);
		goto fail;
	}
	mig_put_frame(&m->out, MIG_STATE, 0, state.b, state.len);
	snap_buf_free(&state);
	sc.timeout_ms = HANDOVER_TIMEOUT_MS;
	if (flush(m, &err) < 0)
		goto fail;
	double t_state = now_ms();
	if (mig_expect(&rd, MIG_READY, &f, &err) < 0)
		goto fail;
	double t_ready = now_ms();
	if (atomic_load(&m->cancel)) {
		cv_fail(&err, CV_EXIT_IOERR, "cancelled");
		goto fail;
	}
	/* The point of no return: from now on the destination may run the guest. */
	pthread_mutex_lock(&m->lock);
	if (atomic_load(&m->cancel)) {
		pthread_mutex_unlock(&m->lock);
		cv_fail(&err, CV_EXIT_IOERR, "cancelled");
		goto fail;
	}
	/* Hand the disk image locks over: the destination takes them on GO. */
	if (virtio_blk_lock_images(vm, false, &err) < 0) {
		pthread_mutex_unlock(&m->lock);
		virtio_blk_lock_images(vm, true, &(struct cv_error){ 0 });
		goto fail;
	}
	atomic_store(&m->committed, true);
	pthread_mutex_unlock(&m->lock);
	mig_put_frame(&m->out, MIG_GO, 0, NULL, 0);
	committed = true;
	sc.timeout_ms = MIGRATE_IO_TIMEOUT_MS;
	if (flush(m, &err) < 0 || mig_expect(&rd, MIG_RESUMED, &f, &err) < 0)
		goto fail;
	/*
	 * The guest runs again: downtime ends here, as documented. What follows is the source's
	 * own cleanup, mostly turning dirty logging off (KVM walks the memory slots), which the
	 * guest does not wait for; counting it overstated a 1 GiB guest's downtime by 130 ms in
	 * the emulated host (171.6 ms reported, 41.6 ms in the phases above).
	 */
	double t_resumed = now_ms();

	if (verbose)
		fprintf(stderr, "cvisor-vmm: migrate: downtime: pause %.1f ms, last round %.1f ms, "
			"state %.1f ms, destination loads it %.1f ms, GO to RESUMED %.1f ms\n",
			t_paused - t_pause, t_last - t_paused, t_state - t_last, t_ready - t_state,
			t_resumed - t_ready);
	mig_dirty_stop(&m->dirty);
	close_sock(m);
	mig_reader_free(&rd);
	pthread_mutex_lock(&m->lock);
	m->stats.downtime_ms = t_resumed - t_pause;
	m->stats.state = MIGRATE_COMPLETED;
	m->stats.total_ms = now_ms() - m->t0;
	struct migrate_stats s = m->stats;
	pthread_mutex_unlock(&m->lock);
	/* One line for logs and scripts (the API goes away with the VM). */
	fprintf(stderr, "cvisor-vmm: migrate: {\"state\": \"completed\", \"destination\": \"%s\", "
		"\"total_ms\": %.1f, \"downtime_ms\": %.1f, \"setup_ms\": %.1f, \"rounds\": %u, "
		"\"bytes_sent\": %llu, \"pages_sent\": %llu, \"zero_pages\": %llu, "
		"\"switch_reason\": \"%s\"}\n",
		m->params.destination, s.total_ms, s.downtime_ms, s.setup_ms, s.rounds,
		(unsigned long long)s.bytes_sent, (unsigned long long)s.pages_sent,
		(unsigned long long)s.zero_pages, s.switch_reason ? s.switch_reason : "?");
	vm_request_stop(vm, CV_EXIT_MIGRATED, "migrated to %s (downtime %.1f ms, total %.1f ms)",
			m->params.destination, s.downtime_ms, s.total_ms);
	return;

fail:
	if (!committed && m->send_failed && !atomic_load(&m->cancel) && m->sock >= 0) {
		/*
		 * A destination that gives up sends ERROR and closes; we notice when a send fails.
		 * Its reason is usually still in our receive queue: report that, not the reset.
		 */
		struct cv_error peer = { 0 };
		struct mig_frame ef;
		sc.timeout_ms = 1000;
		if (mig_read_frame(&rd, &ef, &peer) < 0 && strncmp(peer.msg, "the peer gave up", 16) == 0)
			err = peer;
	}
	if (!committed) {
		/* Tell the destination why, if the connection still carries it; it then exits. */
		if (m->sock >= 0) {
			m->out.len = 0;
			mig_put_error(&m->out, err.msg);
			atomic_store(&m->cancel, false);
			flush(m, &(struct cv_error){ 0 });
		}
	}
	close_sock(m);
	mig_reader_free(&rd);
	mig_dirty_stop(&m->dirty);
	if (committed && strncmp(err.msg, "the peer gave up", 16) == 0 &&
	    virtio_blk_lock_images(vm, true, &(struct cv_error){ 0 }) == 0) {
		/*
		 * An ERROR after GO is the destination saying it will not run the guest (it could
		 * not take a disk lock, say): it is ours again, disks included.
		 */
		committed = false;
	}
	if (committed) {
		/* Never resume here on our own: the destination may be running the guest. */
		char why[CV_ERROR_MAX + 200];
		snprintf(why, sizeof(why), "the destination did not confirm it runs the guest (%.*s); "
			 "it may or may not run it: this VM stays paused", CV_ERROR_MAX - 1, err.msg);
		finish_stats(m, MIGRATE_UNKNOWN, why);
		fprintf(stderr, "cvisor-vmm: migrate: outcome unknown: %s\n", why);
		return;
	}
	if (held)
		vm_release_pause(vm, !was_paused);
	bool cancelled = strcmp(err.msg, "cancelled") == 0;
	finish_stats(m, cancelled ? MIGRATE_CANCELLED : MIGRATE_FAILED, err.msg);
	if (verbose || !cancelled)
		fprintf(stderr, "cvisor-vmm: migrate: %s: %s; the guest keeps running here\n",
			cancelled ? "cancelled" : "failed", err.msg);
}

static void *migration_thread(void *arg)
{
	struct vm_migration *m = arg;
	if (!vm_sandbox_thread(m->vm, VMM_ROLE_MIGRATE, "migrate"))
		return NULL;
	pthread_mutex_lock(&m->lock);
	for (;;) {
		while (!m->job && !m->quit)
			pthread_cond_wait(&m->cond, &m->lock);
		if (m->quit)
			break;
		m->job = false;
		pthread_mutex_unlock(&m->lock);
		run_job(m);
		pthread_mutex_lock(&m->lock);
		m->busy = false;
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

/* ---- control ---- */

static int ensure(struct vm *vm, struct cv_error *err)
{
	if (vm->migration)
		return 0;
	struct vm_migration *m = calloc(1, sizeof(*m));
	if (!m)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	m->vm = vm;
	m->sock = -1;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	m->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (mig_dirty_init(&m->dirty, vm, err) < 0) {
		if (m->pagemap_fd >= 0)
			close(m->pagemap_fd);
		free(m);
		return -1;
	}
	vm->migration = m;
	return 0;
}

int migrate_thread_prepare(struct vm *vm, struct cv_error *err)
{
	if (ensure(vm, err) < 0)
		return -1;
	struct vm_migration *m = vm->migration;
	if (m->thread_started)
		return 0;
	int rc = pthread_create(&m->thread, NULL, migration_thread, m);
	if (rc) {
		errno = rc;
		return cv_fail_errno(err, CV_EXIT_OSERR, "start the migration thread");
	}
	m->thread_started = true;
	return 0;
}

int migrate_start(struct vm *vm, const struct migrate_params *p, struct cv_error *err)
{
	struct sockaddr_storage sa;
	unsigned sa_len;
	if (mig_parse_address(p->destination, false, &sa, &sa_len, err) < 0)
		return -1;
	if (atomic_load(&vm->stopping))
		return cv_fail(err, CV_EXIT_USAGE, "the VM is stopping");
	if (vm_is_paused(vm))
		return cv_fail(err, CV_EXIT_USAGE, "the VM is paused: resume it first (a migrated VM "
			       "runs on the destination)");
	if (!vm->migration || !vm->migration->thread_started) {
		/* Once the VMM is sandboxed no thread may be created with network access. */
		if (atomic_load(&vm->sandbox_armed) && vm->sandbox != VMM_SANDBOX_OFF)
			return cv_fail(err, CV_EXIT_SOFTWARE, "no migration thread in this VMM");
		if (migrate_thread_prepare(vm, err) < 0)
			return -1;
	}
	struct vm_migration *m = vm->migration;
	pthread_mutex_lock(&m->lock);
	int rc = 0;
	if (m->busy)
		rc = cv_fail(err, CV_EXIT_USAGE, "a migration is already running (%s)",
			     migrate_state_name(m->stats.state));
	else if (m->stats.state == MIGRATE_COMPLETED || m->stats.state == MIGRATE_UNKNOWN)
		rc = cv_fail(err, CV_EXIT_USAGE, "the last migration ended %s: this VM cannot "
			     "migrate again", migrate_state_name(m->stats.state));
	if (rc == 0) {
		m->params = *p;
		memset(&m->stats, 0, sizeof(m->stats));
		m->stats.state = MIGRATE_SETUP;
		m->t0 = now_ms();
		atomic_store(&m->cancel, false);
		atomic_store(&m->committed, false);
		m->job = m->busy = true;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int migrate_cancel(struct vm *vm, struct cv_error *err)
{
	struct vm_migration *m = vm->migration;
	if (!m)
		return cv_fail(err, CV_EXIT_USAGE, "no migration is running");
	pthread_mutex_lock(&m->lock);
	int rc = 0;
	if (m->stats.state == MIGRATE_UNKNOWN && !m->busy) {
		/*
		 * The operator says the destination does not run the guest: resume it here, once
		 * the disks are ours again (a destination that runs it holds them).
		 */
		if (virtio_blk_lock_images(vm, true, err) < 0) {
			pthread_mutex_unlock(&m->lock);
			return cv_error_wrap(err, "not resumed: the destination may run the guest");
		}
		m->stats.state = MIGRATE_CANCELLED;
		pthread_mutex_unlock(&m->lock);
		vm_release_pause(vm, true);
		return 0;
	}
	if (!m->busy)
		rc = cv_fail(err, CV_EXIT_USAGE, "no migration is running (last: %s)",
			     migrate_state_name(m->stats.state));
	else if (atomic_load(&m->committed))
		rc = cv_fail(err, CV_EXIT_USAGE, "too late to cancel: the destination has been told "
			     "to run the guest");
	else {
		atomic_store(&m->cancel, true);
		if (m->sock >= 0)
			shutdown(m->sock, SHUT_RDWR);
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

void migrate_get(struct vm *vm, struct migrate_stats *out)
{
	struct vm_migration *m = vm->migration;
	memset(out, 0, sizeof(*out));
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	*out = m->stats;
	if (m->busy)
		out->total_ms = now_ms() - m->t0;
	pthread_mutex_unlock(&m->lock);
}

bool migrate_holds_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->control_lock);
	bool h = vm->resume_hold;
	pthread_mutex_unlock(&vm->control_lock);
	return h;
}

void migrate_destroy(struct vm *vm)
{
	struct vm_migration *m = vm->migration;
	if (!m)
		return;
	if (m->thread_started) {
		pthread_mutex_lock(&m->lock);
		m->quit = true;
		atomic_store(&m->cancel, true);
		if (m->sock >= 0)
			shutdown(m->sock, SHUT_RDWR);
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
		pthread_join(m->thread, NULL);
	}
	mig_dirty_stop(&m->dirty);
	mig_dirty_free(&m->dirty);
	snap_buf_free(&m->out);
	if (m->pagemap_fd >= 0)
		close(m->pagemap_fd);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->cond);
	free(m);
	vm->migration = NULL;
}
