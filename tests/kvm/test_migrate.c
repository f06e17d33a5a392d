/*
 * Live migration on this host's /dev/kvm between two processes over loopback TCP, with a tiny
 * guest (migrate_guests.S) that rewrites a 4 MiB region continuously. The source is this test
 * process; the destination is a forked child that does what `cvisor-vmm --incoming` does
 * (migrate_incoming, then vm_run) and checks, with the guest paused there, that every page of
 * the region holds a sweep the guest really wrote last (no page lost or stale), that the guest
 * goes on sweeping from where it was (registers came along) and that it powers off normally.
 *
 * Faults: a destination that drops the connection mid-stream, one that refuses the machine,
 * and one that vanishes after GO. The first two must leave the source guest running exactly as
 * before (and report "failed" with the reason); the last must leave it paused in "unknown",
 * refuse a plain resume, and resume only on the operator's cancel.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvm_harness.h"
#include "migrate/migrate.h"
#include "migrate/stream.h"
#include "util.h"
#include "vcpu.h"
#include "vm.h"

extern const uint8_t guest_sweeper_start[], guest_sweeper_end[];

#define DATA_GPA 0x400000ULL
#define DATA_PAGES 1024
#define MEM CV_MiB(64)

/*
 * The region of a paused guest: pages [0, j) hold sweep k+1, [j, N) sweep k, k the last
 * complete sweep, and each page's second word is its sweep xor its address - except that the
 * guest may have been stopped between the two stores of page j (word 0 already k+1, word 1
 * still k's). Returns NULL or what is wrong.
 */
static const char *check_region(struct vm *vm, char *why, size_t len)
{
	uint64_t k = guest_count(vm);
	const uint8_t *base = guest_memory_ptr(&vm->mem, DATA_GPA, (uint64_t)DATA_PAGES * 4096);
	bool in_prefix = true;
	for (unsigned p = 0; p < DATA_PAGES; p++) {
		uint64_t w0, w1;
		memcpy(&w0, base + (size_t)p * 4096, 8);
		memcpy(&w1, base + (size_t)p * 4096 + 8, 8);
		uint64_t addr = DATA_GPA + (uint64_t)p * 4096;
		if (in_prefix && w0 == k + 1 && w1 == ((k + 1) ^ addr))
			continue;
		if (in_prefix && w0 == k + 1 && w1 == (k ^ addr)) {
			in_prefix = false;      /* the page the guest was writing */
			continue;
		}
		in_prefix = false;
		if (w0 != k || w1 != (k ^ addr)) {
			snprintf(why, len, "page %u holds 0x%llx 0x%llx, the guest completed sweep "
				 "0x%llx", p, (unsigned long long)w0, (unsigned long long)w1,
				 (unsigned long long)k);
			return why;
		}
	}
	return NULL;
}

/* A read-write disk image both sides name (shared storage), or none. */
static const char *disk_path;

static void with_disk(struct vm_config *cfg)
{
	if (!disk_path)
		return;
	cfg->devices.disks[0] = (struct disk_config){ .path = disk_path };
	cfg->devices.n_disks = 1;
}

/* Boots the sweeping guest as the source, once it sweeps. */
static void source_make(struct runner *r)
{
	struct vm_config cfg = { .cpus = 1, .memory_bytes = MEM };
	with_disk(&cfg);
	runner_init(r, &cfg, "mig");
	runner_boot(r, guest_sweeper_start, guest_sweeper_end);
	cr_assert_gt(guest_wait_count(&r->vm, 3), 0, "the guest never swept its region");
}

static int listen_any(unsigned *port)
{
	struct cv_error err = { 0 };
	int fd = migrate_listen("tcp:127.0.0.1:0", port, &err);
	cr_assert_geq(fd, 0, "%s", err.msg);
	return fd;
}

static void migrate_to(struct vm *vm, unsigned port, uint64_t max_bandwidth)
{
	struct migrate_params p = { .downtime_ms = 50, .max_bandwidth = max_bandwidth };
	snprintf(p.destination, sizeof(p.destination), "tcp:127.0.0.1:%u", port);
	struct cv_error err = { 0 };
	cr_assert_eq(migrate_start(vm, &p, &err), 0, "%s", err.msg);
}

/* Waits for the migration to leave its running states. */
static struct migrate_stats wait_outcome(struct vm *vm)
{
	struct migrate_stats s;
	for (int i = 0; i < 6000; i++) {
		migrate_get(vm, &s);
		if (s.state != MIGRATE_SETUP && s.state != MIGRATE_ACTIVE &&
		    s.state != MIGRATE_STOP_COPY)
			return s;
		usleep(10000);
	}
	cr_assert_fail("the migration never ended");
	return s;
}

/*
 * Closes this process's copy of the destination's listener, boots the source in r and migrates
 * it to port; returns the outcome.
 */
static struct migrate_stats migrate_source(struct runner *r, int lfd, unsigned port,
					   uint64_t max_bandwidth)
{
	close(lfd);
	source_make(r);
	migrate_to(&r->vm, port, max_bandwidth);
	return wait_outcome(&r->vm);
}

/* The source guest goes on sweeping (after a failed migration). */
static void source_sweeps_on(struct runner *r)
{
	uint64_t now = guest_count(&r->vm);
	cr_assert_gt(guest_wait_count(&r->vm, now + 20), 0, "the source guest goes on sweeping");
}

/* ---- the destination process ---- */

static _Noreturn void dest_fail(const char *what)
{
	fprintf(stderr, "destination: %s\n", what);
	_exit(1);
}

/* `cvisor-vmm --incoming` in a child: receive, run, check the guest, power it off. */
static pid_t spawn_destination(int lfd, uint64_t min_sweeps, bool cpus_two)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid)
		return pid;
	static struct runner d;
	struct cv_error err = { 0 };
	struct vm_config cfg = {
		.cpus = cpus_two ? 2 : 1,
		.console = { .kind = CONSOLE_NONE },
	};
	with_disk(&cfg);
	struct migrate_incoming_opts o = { .listen_fd = lfd, .quiet = true, .cpus_given = cpus_two };
	bool built;
	if (migrate_incoming(&d.vm, &cfg, &o, &built, &err) < 0) {
		fprintf(stderr, "destination: %s\n", err.msg);
		_exit(cpus_two ? 42 : 1);
	}
	uint64_t at = guest_count(&d.vm);
	if (at < min_sweeps)
		dest_fail("the guest arrived with fewer sweeps than the source had done");
	char why[160];
	/* What arrived is consistent before the guest moves on here. */
	if (check_region(&d.vm, why, sizeof(why)))
		dest_fail(why);
	if (pthread_create(&d.thread, NULL, runner_thread, &d))
		dest_fail("thread");
	if (!guest_wait_count(&d.vm, at + 20))
		dest_fail("the guest does not sweep on after arriving");
	if (vm_pause(&d.vm, &err) < 0)
		dest_fail(err.msg);
	if (check_region(&d.vm, why, sizeof(why)))
		dest_fail(why);
	vm_resume(&d.vm);
	guest_stop(&d.vm);
	pthread_join(d.thread, NULL);
	if (d.status != CV_EXIT_OK)
		dest_fail(d.vm.stop_reason);
	_exit(0);
}

static int wait_child(pid_t pid)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TestSuite(migrate);

/* Migrates the sweeping guest to a destination process; returns the source's figures. */
static struct migrate_stats migrate_sweeper(uint64_t max_bandwidth)
{
	unsigned port;
	int lfd = listen_any(&port);
	pid_t child = spawn_destination(lfd, 0, false);
	struct runner r;
	struct migrate_stats s = migrate_source(&r, lfd, port, max_bandwidth);
	cr_assert_eq(s.state, MIGRATE_COMPLETED, "%s: %s", migrate_state_name(s.state), s.error);
	pthread_join(r.thread, NULL);
	cr_assert_eq(r.status, CV_EXIT_MIGRATED, "status %d: %s", r.status, r.vm.stop_reason);
	cr_assert_gt(s.downtime_ms, 0);
	cr_assert_geq(s.pages_sent, DATA_PAGES, "at least the region went over");
	fprintf(stderr, "migrate test (%s): %u rounds (%s), %llu bytes, %llu pages, total %.1f ms, "
		"downtime %.1f ms\n", max_bandwidth ? "throttled" : "unthrottled", s.rounds,
		s.switch_reason, (unsigned long long)s.bytes_sent, (unsigned long long)s.pages_sent,
		s.total_ms, s.downtime_ms);
	cr_assert_eq(wait_child(child), 0, "the destination's checks failed (see its stderr)");
	vm_destroy(&r.vm);
	unlink(r.console);
	return s;
}

Test(migrate, sweeping_guest_moves_between_processes, .timeout = 120)
{
	require_kvm();
	migrate_sweeper(0);
}

/*
 * Throttled to 24 MB/s, each round takes long enough for the guest to rewrite its whole region
 * meanwhile, so pages go again and again: the destination's check then depends on the dirty
 * log being complete.
 */
Test(migrate, pages_rewritten_during_rounds_are_resent, .timeout = 120)
{
	require_kvm();
	struct migrate_stats s = migrate_sweeper(24u << 20);
	cr_assert_geq(s.rounds, 3, "a guest rewriting 4 MiB never fits 50 ms at 24 MB/s at once");
	cr_assert_geq(s.pages_sent, 2 * DATA_PAGES, "pages were resent");
}

/* Whether someone holds a lock on the image (as another cvisor-vmm would find). */
static bool image_locked(const char *path)
{
	int fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	bool locked = fcntl(fd, F_OFD_SETLK, &fl) < 0;
	close(fd);
	return locked;
}

/*
 * With a read-write disk both sides open, the image lock moves with the guest: the destination
 * opens the image unlocked, the source drops its lock just before GO, the destination takes it
 * before running. Afterwards the destination holds it, although the source process still has
 * the image open.
 */
Test(migrate, disk_lock_moves_with_the_guest, .timeout = 120)
{
	require_kvm();
	char img[] = "/tmp/cvisor-mig-disk-XXXXXX";
	int fd = mkstemp(img);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 1 << 20), 0);
	close(fd);
	disk_path = img;
	unsigned port;
	int lfd = listen_any(&port);
	int ready[2];
	cr_assert_eq(pipe(ready), 0);
	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		static struct runner d;
		struct cv_error err = { 0 };
		struct vm_config cfg = { .console = { .kind = CONSOLE_NONE } };
		with_disk(&cfg);
		struct migrate_incoming_opts o = { .listen_fd = lfd, .quiet = true };
		bool built;
		if (migrate_incoming(&d.vm, &cfg, &o, &built, &err) < 0)
			dest_fail(err.msg);
		if (pthread_create(&d.thread, NULL, runner_thread, &d))
			dest_fail("thread");
		/* Running with the lock; wait for the parent to look, then power off. */
		char c;
		if (read(ready[0], &c, 1) != 1)
			dest_fail("pipe");
		guest_stop(&d.vm);
		pthread_join(d.thread, NULL);
		_exit(d.status == CV_EXIT_OK ? 0 : 1);
	}
	close(lfd);
	struct runner r;
	source_make(&r);
	cr_assert(image_locked(img), "the source holds its disk");
	migrate_to(&r.vm, port, 0);
	struct migrate_stats s = wait_outcome(&r.vm);
	cr_assert_eq(s.state, MIGRATE_COMPLETED, "%s: %s", migrate_state_name(s.state), s.error);
	pthread_join(r.thread, NULL);
	cr_assert(image_locked(img), "the destination holds the disk now");
	vm_destroy(&r.vm);
	cr_assert(image_locked(img), "still the destination's once the source closed it");
	cr_assert_eq(write(ready[1], "x", 1), 1);
	cr_assert_eq(wait_child(child), 0);
	cr_assert_not(image_locked(img), "free once the destination ended");
	unlink(r.console);
	unlink(img);
	disk_path = NULL;
}

/* Fake destinations run in a child: fork, and in the child accept the source's connection. */
static pid_t fork_fake_destination(int lfd, int *fd)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid)
		return pid;
	*fd = accept(lfd, NULL, NULL);
	if (*fd < 0)
		_exit(1);
	return 0;
}

/* The fake destination's answer to HELLO: our preamble and ACCEPT. */
static void fake_send_accept(int fd)
{
	struct snap_buf out = { 0 };
	mig_put_preamble(&out);
	mig_put_frame(&out, MIG_ACCEPT, 0, NULL, 0);
	if (write(fd, out.b, out.len) != (ssize_t)out.len)
		_exit(3);
	snap_buf_free(&out);
}

/* A destination that accepts, takes some memory and drops the connection. */
static pid_t spawn_dropper(int lfd, size_t take)
{
	int fd;
	pid_t pid = fork_fake_destination(lfd, &fd);
	if (pid)
		return pid;
	uint8_t buf[65536];
	size_t got = 0;
	while (got < 64) {          /* preamble + HELLO header at least */
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			_exit(2);
		got += (size_t)n;
	}
	fake_send_accept(fd);
	while (got < take) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			_exit(4);
		got += (size_t)n;
	}
	/* A reset, as when the destination host dies. */
	struct linger l = { 1, 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
	_exit(0);
}

Test(migrate, dropped_connection_leaves_the_source_running, .timeout = 120)
{
	require_kvm();
	unsigned port;
	int lfd = listen_any(&port);
	pid_t child = spawn_dropper(lfd, 1u << 20);
	struct runner r;
	/* Throttled so the cut lands mid-stream, not after everything sat in socket buffers. */
	struct migrate_stats s = migrate_source(&r, lfd, port, 8u << 20);
	cr_assert_eq(s.state, MIGRATE_FAILED, "%s", migrate_state_name(s.state));
	cr_assert(s.error[0], "a failure says why");
	cr_assert_eq(wait_child(child), 0);
	cr_assert_not(vm_is_paused(&r.vm), "the source runs on");
	source_sweeps_on(&r);
	struct cv_error err = { 0 };
	cr_assert_eq(vm_pause(&r.vm, &err), 0);
	char why[160];
	const char *bad = check_region(&r.vm, why, sizeof(why));
	cr_assert_null(bad, "%s", bad);
	vm_resume(&r.vm);
	fprintf(stderr, "dropped connection: source reports \"%s\"\n", s.error);
	runner_finish(&r, CV_EXIT_OK);
}

Test(migrate, refused_machine_leaves_the_source_running, .timeout = 120)
{
	require_kvm();
	unsigned port;
	int lfd = listen_any(&port);
	pid_t child = spawn_destination(lfd, 0, true);    /* insists on 2 vCPUs */
	struct runner r;
	struct migrate_stats s = migrate_source(&r, lfd, port, 0);
	cr_assert_eq(s.state, MIGRATE_FAILED, "%s", migrate_state_name(s.state));
	cr_assert(strstr(s.error, "vCPUs") != NULL, "the destination's reason: %s", s.error);
	cr_assert_eq(wait_child(child), 42);
	source_sweeps_on(&r);
	runner_finish(&r, CV_EXIT_OK);
}

static int fd_read(void *ctx, void *buf, size_t n, struct cv_error *err)
{
	int fd = *(int *)ctx;
	uint8_t *p = buf;
	while (n) {
		ssize_t got = read(fd, p, n);
		if (got <= 0)
			return cv_fail(err, CV_EXIT_IOERR, "read");
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

/* A destination that takes everything, says READY, gets GO and vanishes without RESUMED. */
static pid_t spawn_vanisher(int lfd)
{
	int fd;
	pid_t pid = fork_fake_destination(lfd, &fd);
	if (pid)
		return pid;
	struct mig_reader rd;
	struct mig_frame f;
	struct cv_error err = { 0 };
	mig_reader_init(&rd, fd_read, &fd);
	if (mig_read_preamble(&rd, &err) < 0 || mig_expect(&rd, MIG_HELLO, &f, &err) < 0)
		_exit(2);
	fake_send_accept(fd);
	struct snap_buf out = { 0 };
	do {
		if (mig_read_frame(&rd, &f, &err) < 0)
			_exit(4);
	} while (f.type != MIG_STATE);
	mig_put_frame(&out, MIG_READY, 0, NULL, 0);
	if (write(fd, out.b, out.len) != (ssize_t)out.len)
		_exit(5);
	if (mig_expect(&rd, MIG_GO, &f, &err) < 0)
		_exit(6);
	close(fd);
	_exit(0);
}

Test(migrate, lost_ack_after_go_keeps_the_source_paused, .timeout = 120)
{
	require_kvm();
	unsigned port;
	int lfd = listen_any(&port);
	pid_t child = spawn_vanisher(lfd);
	struct runner r;
	struct migrate_stats s = migrate_source(&r, lfd, port, 0);
	cr_assert_eq(s.state, MIGRATE_UNKNOWN, "%s: %s", migrate_state_name(s.state), s.error);
	cr_assert_eq(wait_child(child), 0);
	cr_assert(vm_is_paused(&r.vm), "never both running: the source stays paused");
	uint64_t at = guest_count(&r.vm);
	usleep(200000);
	cr_assert_eq(guest_count(&r.vm), at, "the source guest must not move");
	cr_assert_not(vm_resume(&r.vm), "a plain resume is refused while the outcome is unknown");
	struct migrate_params p = { .downtime_ms = 50 };
	snprintf(p.destination, sizeof(p.destination), "tcp:127.0.0.1:%u", port);
	struct cv_error err = { 0 };
	cr_assert_eq(migrate_start(&r.vm, &p, &err), -1, "no second migration after unknown");
	/* The operator knows better: cancel resumes the guest here. */
	cr_assert_eq(migrate_cancel(&r.vm, &err), 0, "%s", err.msg);
	cr_assert_gt(guest_wait_count(&r.vm, at + 20), 0, "the source guest runs again");
	runner_finish(&r, CV_EXIT_OK);
}
