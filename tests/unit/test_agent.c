/*
 * Tests of cvisor-agent's operations beyond plain exec: commands on a pseudo-terminal (size,
 * resize, ^C as a byte, signals), the info report, the refusal of shutdown without
 * --allow-poweroff, the shutdown sequence itself inside a PID namespace of the test's own (never
 * on this machine), freeze/thaw on a loop-mounted ext4 image of the test's own (never on a
 * filesystem of this machine), and error events for bad requests. A real agent process listens
 * on a unix socket in a temporary directory; the mount table and /proc parsers are also tested
 * directly on fixed text.
 *
 * AGENT_UNDER_TEST is the path of an agent built for the tests (tests/meson.build), so sanitizer
 * builds, which skip the static cvisor-agent, test an instrumented one.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "mounts.h"
#include "proto.h"
#include "sysinfo.h"
#include "util.h"

#ifndef AGENT_UNDER_TEST
#error "AGENT_UNDER_TEST must name the agent binary"
#endif

/* Everything one test set up, so the fixture's teardown can undo it even after a failure. */
struct agent_fixture {
	char dir[64];
	char sock[96];
	pid_t agent;
	/* freeze tests */
	char image[160];
	char mnt[160];
	bool mounted;
	pid_t probe;          /* a writer blocked on the frozen filesystem, if any */
};

static struct agent_fixture fx;

/*
 * Starts the agent on a unix socket in a new temporary directory. in_pidns: inside a new PID and
 * mount namespace (unshare), with --allow-poweroff, where a shutdown ends only that namespace.
 * Returns false if the agent exited before listening (no unshare, namespaces not permitted).
 */
static bool start_agent_in(bool in_pidns)
{
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/cvisor-agent-test.XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir));
	snprintf(fx.sock, sizeof(fx.sock), "%s/agent.sock", fx.dir);
	char listen[160];
	snprintf(listen, sizeof(listen), "unix:%s", fx.sock);
	fx.agent = fork();
	cr_assert_geq(fx.agent, 0);
	if (fx.agent == 0) {
		if (in_pidns) {
			/* --mount-proc: /proc inside shows the namespace, as the agent must see it. */
			execlp("unshare", "unshare", "--pid", "--fork", "--mount-proc", AGENT_UNDER_TEST,
			       "--listen", listen, "--quiet", "--allow-poweroff", (char *)NULL);
		} else {
			execl(AGENT_UNDER_TEST, AGENT_UNDER_TEST, "--listen", listen, "--quiet",
			      (char *)NULL);
		}
		_exit(127);
	}
	/* Ready when the socket exists; give a sanitizer build time to start. */
	for (int i = 0; i < 500; i++) {
		struct stat st;
		if (stat(fx.sock, &st) == 0)
			return true;
		if (waitpid(fx.agent, NULL, WNOHANG) == fx.agent) {
			fx.agent = 0;
			return false;
		}
		usleep(10000);
	}
	cr_assert_fail("the agent did not create %s", fx.sock);
	return false;
}

static void start_agent(void)
{
	cr_assert(start_agent_in(false), "the agent exited at once");
}

static void thaw_quietly(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		ioctl(fd, FITHAW, 0);
		close(fd);
	}
}

static void teardown(void)
{
	if (fx.mounted) {
		/* Thaw first: a writer blocked on a frozen filesystem cannot even be killed. */
		thaw_quietly(fx.mnt);
		if (umount2(fx.mnt, 0) < 0)
			umount2(fx.mnt, MNT_DETACH);
	}
	if (fx.probe > 0) {
		kill(fx.probe, SIGKILL);
		waitpid(fx.probe, NULL, 0);
	}
	if (fx.agent > 0) {
		kill(fx.agent, SIGTERM);
		waitpid(fx.agent, NULL, 0);
	}
	if (fx.dir[0]) {
		char cmd[200];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", fx.dir);
	}
	memset(&fx, 0, sizeof(fx));
}

/* Skipping ends the test without the suite's .fini, so undo the setup first. */
#define skip_test(...)                    \
	do {                              \
		teardown();               \
		cr_skip_test(__VA_ARGS__); \
	} while (0)

static void setup(void)
{
	memset(&fx, 0, sizeof(fx));
	start_agent();
}

TestSuite(agent, .init = setup, .fini = teardown, .timeout = 60);

static int connect_agent(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.sock);
	int rc = -1;
	for (int i = 0; i < 200 && rc < 0; i++) {
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		if (rc < 0)
			usleep(10000);
	}
	cr_assert_eq(rc, 0, "connect to the agent: %s", strerror(errno));
	/* A hung agent fails the test instead of blocking it. */
	struct timeval tv = { .tv_sec = 20 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void send_control(int fd, const char *json)
{
	struct cv_error err = { 0 };
	cr_assert_eq(agent_send_frame(fd, AGENT_FRAME_CONTROL, json, strlen(json), &err), 0, "%s",
		     err.msg);
}

static void send_stdin(int fd, const char *data, size_t len)
{
	struct cv_error err = { 0 };
	cr_assert_eq(agent_send_frame(fd, AGENT_FRAME_STDIN, data, len, &err), 0, "%s", err.msg);
}

/* The next frame, which must be a control frame; returns its payload (caller frees). */
static char *recv_control(int fd)
{
	struct agent_frame f;
	struct cv_error err = { 0 };
	cr_assert_eq(agent_recv_frame(fd, &f, &err), 1, "no answer from the agent: %s", err.msg);
	cr_assert_eq(f.type, AGENT_FRAME_CONTROL, "frame type %u", f.type);
	cr_assert_not_null(f.data);
	return (char *)f.data;
}

static void expect_error(int fd, const char *request, const char *needle)
{
	send_control(fd, request);
	char *json = recv_control(fd);
	struct agent_event ev;
	struct cv_error err = { 0 };
	cr_assert_eq(agent_parse_event(json, strlen(json), &ev, &err), 0, "%s: %s", err.msg, json);
	cr_assert_eq(ev.kind, AGENT_EV_ERROR, "no error for %s: %s", request, json);
	if (needle)
		cr_assert(strstr(ev.message, needle), "error for %s lacks '%s': %s", request, needle,
			  ev.message);
	agent_event_free(&ev);
	free(json);
}

static void expect_pong(int fd)
{
	send_control(fd, "{\"op\":\"ping\"}");
	char *json = recv_control(fd);
	cr_assert(strstr(json, "\"pong\""), "%s", json);
	free(json);
}

/* Sends a query and parses its reply. */
static void query(int fd, const char *request, struct agent_reply *reply)
{
	send_control(fd, request);
	char *json = recv_control(fd);
	struct cv_error err = { 0 };
	cr_assert_eq(agent_parse_reply(json, strlen(json), reply, &err), 0, "%s: %s", err.msg, json);
	free(json);
}

/* Output and status of an exec; stdout collected as text. */
struct run {
	char out[65536];
	size_t len;
	int status;
};

/* Waits for "started". */
static void expect_started(int fd)
{
	char *json = recv_control(fd);
	cr_assert(strstr(json, "\"started\""), "%s", json);
	free(json);
}

/* Reads frames until "exit", appending STDOUT (and STDERR) to r->out. */
static void collect(int fd, struct run *r)
{
	for (;;) {
		struct agent_frame f;
		struct cv_error err = { 0 };
		cr_assert_eq(agent_recv_frame(fd, &f, &err), 1, "stream ended early: %s", err.msg);
		if (f.type == AGENT_FRAME_STDOUT || f.type == AGENT_FRAME_STDERR) {
			size_t n = CV_MIN((size_t)f.len, sizeof(r->out) - 1 - r->len);
			memcpy(r->out + r->len, f.data, n);
			r->len += n;
			r->out[r->len] = 0;
			agent_frame_free(&f);
			continue;
		}
		cr_assert_eq(f.type, AGENT_FRAME_CONTROL);
		struct agent_event ev;
		cr_assert_eq(agent_parse_event(f.data, f.len, &ev, &err), 0, "%s", err.msg);
		agent_frame_free(&f);
		if (ev.kind == AGENT_EV_ERROR) {
			/* Advisory after start (e.g. a refused resize); the stream goes on. */
			agent_event_free(&ev);
			continue;
		}
		cr_assert_eq(ev.kind, AGENT_EV_EXIT);
		r->status = ev.status;
		agent_event_free(&ev);
		return;
	}
}

/* Reads STDOUT until `needle` has appeared (the command is ready for the next step). */
static void wait_output(int fd, struct run *r, const char *needle)
{
	while (!strstr(r->out, needle)) {
		struct agent_frame f;
		struct cv_error err = { 0 };
		cr_assert_eq(agent_recv_frame(fd, &f, &err), 1, "waiting for '%s': %s (have '%s')",
			     needle, err.msg, r->out);
		cr_assert_eq(f.type, AGENT_FRAME_STDOUT, "waiting for '%s', got frame %u", needle,
			     f.type);
		size_t n = CV_MIN((size_t)f.len, sizeof(r->out) - 1 - r->len);
		memcpy(r->out + r->len, f.data, n);
		r->len += n;
		r->out[r->len] = 0;
		agent_frame_free(&f);
	}
}

/* ---- pseudo-terminal exec ---- */

/*
 * The relay against the real agent, both directions streaming at once. The command writes 8 MiB
 * before it reads its stdin, so the agent stops taking stdin (its buffer is full) and blocks
 * sending output whenever we do not read it: a relay that blocks sending stdin meanwhile never
 * reads again (`cat` of 3 MB in a microVM hung that way). Runs in a child with its stdin and
 * stdout on files, which the test then compares; a hang is a failure, not a stuck suite.
 */
Test(agent, relay_streams_stdin_and_output_at_once)
{
	char in[160], out[160];
	snprintf(in, sizeof(in), "%s/in", fx.dir);
	snprintf(out, sizeof(out), "%s/out", fx.dir);
	enum { SIZE = 8 << 20 };
	uint8_t *data = malloc(SIZE);
	cr_assert_not_null(data);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < SIZE; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		data[i] = (uint8_t)x;
	}
	int fd = open(in, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(cv_write_full(fd, data, SIZE), 0);
	close(fd);
	int conn = connect_agent();
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int i = open(in, O_RDONLY), o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (i < 0 || o < 0 || dup2(i, 0) < 0 || dup2(o, 1) < 0)
			_exit(101);
		char *argv[] = { "sh", "-c", "head -c 8388608 /dev/zero; cat", NULL };
		struct agent_exec_spec spec = { .argv = argv, .cwd = "/" };
		struct agent_relay_opts opts = { .forward_stdin = true, .peer = "test agent" };
		struct cv_error err = { 0 };
		int status = -1;
		if (agent_exec_relay(conn, &spec, NULL, &opts, &status, &err) < 0) {
			fprintf(stderr, "relay: %s\n", err.msg);
			_exit(100);
		}
		_exit(status);
	}
	close(conn);
	int st = 0;
	int waited = 0;
	while (waitpid(pid, &st, WNOHANG) == 0 && waited < 40000) {
		usleep(10000);
		waited += 10;
	}
	if (waited >= 40000) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		cr_assert_fail("the relay hung (40 s) with stdin and output both streaming");
	}
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "relay status 0x%x", st);
	fd = open(out, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	uint8_t *got = malloc(2 * SIZE + 1);
	cr_assert_not_null(got);
	ssize_t n = cv_read_full(fd, got, 2 * SIZE + 1);
	close(fd);
	cr_assert_eq(n, 2 * SIZE, "%zd bytes came back of %d", n, 2 * SIZE);
	for (size_t i = 0; i < SIZE; i++)
		cr_assert_eq(got[i], 0, "output byte %zu is not the command's zero", i);
	cr_assert(memcmp(got + SIZE, data, SIZE) == 0, "stdin did not come back as it went");
	free(got);
	free(data);
}

Test(agent, pty_is_controlling_terminal_with_requested_size)
{
	int fd = connect_agent();
	send_control(fd, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"tty; stty size; "
			 "test -t 0 && test -t 2 && echo all-tty\"],\"tty\":true,\"rows\":33,"
			 "\"cols\":101}");
	expect_started(fd);
	struct run r = { 0 };
	collect(fd, &r);
	cr_assert_eq(r.status, 0, "output: %s", r.out);
	cr_assert(strstr(r.out, "/dev/pts/"), "tty did not name a pty: %s", r.out);
	cr_assert(strstr(r.out, "33 101"), "stty size: %s", r.out);
	cr_assert(strstr(r.out, "all-tty"), "stdin and stderr are the terminal too: %s", r.out);
	/* The line discipline's output processing is on, as on any terminal. */
	cr_assert(strstr(r.out, "\r\n"), "%s", r.out);
	close(fd);
}

Test(agent, pty_default_size_and_controlling_tty)
{
	int fd = connect_agent();
	/* /dev/tty opens only for a process with a controlling terminal. */
	send_control(fd, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"stty size </dev/tty\"],"
			 "\"tty\":true}");
	expect_started(fd);
	struct run r = { 0 };
	collect(fd, &r);
	cr_assert_eq(r.status, 0, "output: %s", r.out);
	cr_assert(strstr(r.out, "24 80"), "default size: %s", r.out);
	close(fd);
}

Test(agent, pty_resize)
{
	int fd = connect_agent();
	send_control(fd, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"echo ready; read x; stty size\"],"
			 "\"tty\":true,\"stdin\":true,\"rows\":10,\"cols\":20}");
	expect_started(fd);
	struct run r = { 0 };
	wait_output(fd, &r, "ready");
	send_control(fd, "{\"op\":\"resize\",\"rows\":40,\"cols\":132}");
	send_stdin(fd, "go\n", 3);
	collect(fd, &r);
	cr_assert_eq(r.status, 0, "output: %s", r.out);
	cr_assert(strstr(r.out, "40 132"), "size after resize: %s", r.out);
	close(fd);
}

Test(agent, pty_ctrl_c_byte_interrupts)
{
	int fd = connect_agent();
	send_control(fd, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"echo ready; exec sleep 30\"],"
			 "\"tty\":true,\"stdin\":true}");
	expect_started(fd);
	struct run r = { 0 };
	wait_output(fd, &r, "ready");
	/* Give the shell time to exec sleep, then type ^C: the line discipline sends SIGINT. */
	usleep(200000);
	send_stdin(fd, "\x03", 1);
	collect(fd, &r);
	cr_assert_eq(r.status, 128 + SIGINT, "status %d, output: %s", r.status, r.out);
	close(fd);
}

Test(agent, pty_signal_reaches_foreground_job)
{
	int fd = connect_agent();
	send_control(fd, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"echo ready; exec sleep 30\"],"
			 "\"tty\":true}");
	expect_started(fd);
	struct run r = { 0 };
	wait_output(fd, &r, "ready");
	send_control(fd, "{\"op\":\"signal\",\"signal\":15}");
	collect(fd, &r);
	cr_assert_eq(r.status, 128 + SIGTERM, "status %d", r.status);
	close(fd);
}

Test(agent, pty_input_is_echoed_and_read)
{
	int fd = connect_agent();
	send_control(fd, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"read a; echo got=$a\"],"
			 "\"tty\":true,\"stdin\":true}");
	expect_started(fd);
	send_stdin(fd, "hello\r", 6);
	struct run r = { 0 };
	collect(fd, &r);
	cr_assert_eq(r.status, 0);
	cr_assert(strstr(r.out, "got=hello"), "%s", r.out);
	close(fd);
}

Test(agent, resize_without_terminal_is_an_error)
{
	int fd = connect_agent();
	expect_error(fd, "{\"op\":\"resize\",\"rows\":24,\"cols\":80}", "no command is running");
	/* During a pipe exec: refused as advisory, the command is unaffected. */
	send_control(fd, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"read x; echo done\"],"
			 "\"stdin\":true}");
	expect_started(fd);
	send_control(fd, "{\"op\":\"resize\",\"rows\":24,\"cols\":80}");
	char *json = recv_control(fd);
	cr_assert(strstr(json, "no terminal"), "%s", json);
	free(json);
	send_stdin(fd, "x\n", 2);
	send_stdin(fd, NULL, 0);
	struct run r = { 0 };
	collect(fd, &r);
	cr_assert_eq(r.status, 0);
	cr_assert_str_eq(r.out, "done\n", "a pipe exec stays byte-exact");
	close(fd);
}

/* ---- info ---- */

Test(agent, info_is_complete_and_sane)
{
	int fd = connect_agent();
	struct agent_reply r;
	query(fd, "{\"op\":\"info\"}", &r);
	cr_assert_eq(r.kind, AGENT_REPLY_INFO);
	struct agent_info *in = &r.info;
	struct utsname u;
	cr_assert_eq(uname(&u), 0);
	cr_assert_str_eq(in->hostname, u.nodename);
	cr_assert_str_eq(in->kernel, u.release);
	cr_assert_gt(in->uptime, 0);
	for (int i = 0; i < 3; i++)
		cr_assert_geq(in->load[i], 0);
	cr_assert_gt(in->mem_total, 0);
	cr_assert_leq(in->mem_free, in->mem_total);
	cr_assert_leq(in->mem_available, in->mem_total);
	cr_assert_eq((long)in->ncpus, sysconf(_SC_NPROCESSORS_ONLN));
	uint64_t busy = 0;
	for (size_t i = 0; i < in->ncpus; i++) {
		for (size_t j = 0; j < i; j++)
			cr_assert_neq(in->cpus[i].id, in->cpus[j].id, "cpu ids are distinct");
		busy += in->cpus[i].user + in->cpus[i].system + in->cpus[i].idle;
	}
	cr_assert_gt(busy, 0, "a running machine has spent time somewhere");
	cr_assert_geq(in->nfs, 1, "the root filesystem at least");
	for (size_t i = 0; i < in->nfs; i++) {
		const struct agent_fs_usage *f = &in->fs[i];
		cr_assert_eq(f->path[0], '/', "%s", f->path);
		cr_assert_not(mounts_type_is_pseudo(f->type), "%s (%s) listed", f->path, f->type);
		cr_assert_gt(f->size, 0, "%s", f->path);
		cr_assert_leq(f->used, f->size, "%s", f->path);
		cr_assert_leq(f->available, f->size, "%s", f->path);
	}
	agent_reply_free(&r);
	expect_pong(fd);   /* the connection serves more requests */
	close(fd);
}

/* ---- shutdown ---- */

Test(agent, shutdown_refused_without_allow_poweroff)
{
	/* This agent was started without --allow-poweroff: nothing may happen to this machine. */
	int fd = connect_agent();
	expect_error(fd, "{\"op\":\"shutdown\",\"action\":\"reboot\"}", "--allow-poweroff");
	expect_error(fd, "{\"op\":\"shutdown\",\"action\":\"poweroff\"}", "--allow-poweroff");
	expect_error(fd, "{\"op\":\"poweroff\"}", "--allow-poweroff");
	expect_pong(fd);
	close(fd);
}

/* ---- bad requests ---- */

Test(agent, bad_requests_get_error_events)
{
	int fd = connect_agent();
	static const char *const bad[][2] = {
		{ "{\"op\":\"launch\"}", "unknown op" },
		{ "{\"op\":\"info\",\"x\":1}", "unexpected field" },
		{ "{\"op\":\"exec\",\"argv\":\"ls\"}", "array" },
		{ "{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":\"yes\"}", "boolean" },
		{ "{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"rows\":0}", "out of range" },
		{ "{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"cols\":70000}", "out of range" },
		{ "{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"rows\":\"24\"}", "integer" },
		{ "{\"op\":\"exec\",\"argv\":[\"sh\"],\"rows\":24}", "tty" },
		{ "{\"op\":\"resize\",\"rows\":-5,\"cols\":80}", "out of range" },
		{ "{\"op\":\"shutdown\",\"action\":\"halt\"}", "poweroff" },
		{ "{\"op\":\"shutdown\",\"action\":true}", "string" },
		{ "{\"op\":\"freeze\",\"paths\":[]}", "empty" },
		{ "{\"op\":\"freeze\",\"paths\":[\"tmp\"]}", "absolute" },
		{ "{\"op\":\"thaw\",\"paths\":{}}", "array" },
		{ "{\"op\":\"signal\",\"signal\":2}", "no command" },
		{ "not json at all", "invalid request" },
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(bad); i++)
		expect_error(fd, bad[i][0], bad[i][1]);
	expect_pong(fd);
	close(fd);
}

/* ---- freeze / thaw on a filesystem of the test's own ---- */

static bool have_mkfs(void)
{
	return system("command -v mkfs.ext4 >/dev/null 2>&1") == 0;
}

/*
 * Attaches the image to a free loop device that detaches itself once unused. Returns the open
 * device: it must stay open until the mount holds the device, or the loop clears right away.
 */
static int attach_loop_once(const char *image, char *dev, size_t len)
{
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return -1;
	int n = ioctl(ctl, LOOP_CTL_GET_FREE);
	close(ctl);
	if (n < 0)
		return -1;
	snprintf(dev, len, "/dev/loop%d", n);
	int lfd = open(dev, O_RDWR | O_CLOEXEC);
	int ifd = open(image, O_RDWR | O_CLOEXEC);
	bool ok = false;
	if (lfd >= 0 && ifd >= 0 && ioctl(lfd, LOOP_SET_FD, ifd) == 0) {
		struct loop_info64 info;
		memset(&info, 0, sizeof(info));
		info.lo_flags = LO_FLAGS_AUTOCLEAR;
		ok = ioctl(lfd, LOOP_SET_STATUS64, &info) == 0;
		if (!ok)
			ioctl(lfd, LOOP_CLR_FD, 0);
	}
	if (ifd >= 0)
		close(ifd);
	if (!ok && lfd >= 0) {
		int e = errno;
		close(lfd);
		errno = e;
		lfd = -1;
	}
	return lfd;
}

/* A device still being released by a previous test can be handed out as free: try again. */
static int attach_loop(const char *image, char *dev, size_t len)
{
	for (int i = 0; i < 20; i++) {
		int fd = attach_loop_once(image, dev, len);
		if (fd >= 0 || errno != EBUSY)
			return fd;
		usleep(50000);
	}
	return -1;
}

/*
 * Makes fx.mnt an ext4 filesystem on a loop device, or skips the test where this machine cannot
 * (no root, no loop devices, no mkfs.ext4, mounting not allowed).
 */
static void mount_scratch_fs(void)
{
	if (geteuid() != 0 || access("/dev/loop-control", R_OK | W_OK) != 0 || !have_mkfs())
		skip_test("needs root, /dev/loop-control and mkfs.ext4");
	snprintf(fx.image, sizeof(fx.image), "%s/fs.img", fx.dir);
	snprintf(fx.mnt, sizeof(fx.mnt), "%s/mnt", fx.dir);
	cr_assert_eq(mkdir(fx.mnt, 0755), 0);
	int fd = open(fx.image, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 32 << 20), 0);
	close(fd);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "mkfs.ext4 -q -F '%s' >/dev/null 2>&1", fx.image);
	if (system(cmd) != 0)
		skip_test("mkfs.ext4 failed here");
	char dev[64];
	int lfd = attach_loop(fx.image, dev, sizeof(dev));
	if (lfd < 0)
		skip_test("cannot attach a loop device: %s", strerror(errno));
	int mrc = mount(dev, fx.mnt, "ext4", 0, NULL);
	int merr = errno;
	/* Once mounted the filesystem holds the device; without a mount this close detaches it. */
	close(lfd);
	if (mrc < 0)
		skip_test("cannot mount ext4 from %s: %s", dev, strerror(merr));
	fx.mounted = true;
	/*
	 * Never freeze anything but the scratch filesystem: the mount point must be on the loop
	 * device, not on the filesystem holding the temporary directory (that could be "/").
	 */
	struct stat m, d, b;
	cr_assert_eq(stat(fx.mnt, &m), 0);
	cr_assert_eq(stat(fx.dir, &d), 0);
	cr_assert_eq(stat(dev, &b), 0);
	cr_assert_neq(m.st_dev, d.st_dev, "the scratch filesystem is not mounted");
	cr_assert_eq(m.st_dev, b.st_rdev, "the mount point is not on %s", dev);
}

/* Starts a process that creates a file on the scratch filesystem; returns its pid. */
static pid_t start_writer(const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", fx.mnt, name);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		_exit(fd >= 0 && write(fd, "x", 1) == 1 ? 0 : 1);
	}
	return pid;
}

/* True if the writer finished (successfully) within ms. */
static bool writer_done(pid_t pid, int ms)
{
	for (int waited = 0; waited <= ms; waited += 10) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the writer failed");
			return true;
		}
		usleep(10000);
	}
	return false;
}

/* Asserts the scratch filesystem accepts writes now. */
static void assert_writable(const char *name)
{
	pid_t w = start_writer(name);
	cr_assert(writer_done(w, 5000), "the scratch filesystem is still frozen");
}

static char *freeze_request(const char *op, const char *extra)
{
	static char buf[600];
	snprintf(buf, sizeof(buf), "{\"op\":\"%s\",\"paths\":[\"%s\"%s%s%s]}", op, fx.mnt,
		 extra ? ",\"" : "", extra ? extra : "", extra ? "\"" : "");
	return buf;
}

Test(agent, freeze_blocks_writes_until_thaw)
{
	mount_scratch_fs();
	int fd = connect_agent();
	struct agent_reply r;
	query(fd, freeze_request("freeze", NULL), &r);
	cr_assert_eq(r.kind, AGENT_REPLY_FROZEN, "%s", r.message ? r.message : "");
	cr_assert_eq(r.fs.nerrors, 0, "%s", r.fs.nerrors ? r.fs.errors[0].message : "");
	cr_assert_eq(r.fs.npaths, 1);
	cr_assert_str_eq(r.fs.paths[0], fx.mnt);
	agent_reply_free(&r);

	fx.probe = start_writer("blocked");
	cr_assert_not(writer_done(fx.probe, 300), "a write went through on a frozen filesystem");

	/* Freezing twice is an error and changes nothing. */
	query(fd, freeze_request("freeze", NULL), &r);
	cr_assert_eq(r.kind, AGENT_REPLY_FROZEN);
	cr_assert_eq(r.fs.npaths, 0);
	cr_assert_eq(r.fs.nerrors, 1);
	cr_assert(strstr(r.fs.errors[0].message, "already frozen"), "%s", r.fs.errors[0].message);
	agent_reply_free(&r);
	cr_assert_not(writer_done(fx.probe, 50));

	query(fd, freeze_request("thaw", NULL), &r);
	cr_assert_eq(r.kind, AGENT_REPLY_THAWED);
	cr_assert_eq(r.fs.nerrors, 0);
	cr_assert_eq(r.fs.npaths, 1);
	agent_reply_free(&r);
	cr_assert(writer_done(fx.probe, 5000), "the blocked write did not complete after thaw");
	fx.probe = 0;

	/* Thaw is idempotent. */
	query(fd, freeze_request("thaw", NULL), &r);
	cr_assert_eq(r.kind, AGENT_REPLY_THAWED);
	cr_assert_eq(r.fs.nerrors, 0);
	cr_assert_eq(r.fs.npaths, 1);
	agent_reply_free(&r);
	close(fd);
}

Test(agent, failed_freeze_leaves_nothing_frozen)
{
	mount_scratch_fs();
	int fd = connect_agent();
	struct agent_reply r;
	/* The scratch fs freezes first; proc cannot be frozen, so the scratch fs must be thawed. */
	query(fd, freeze_request("freeze", "/proc"), &r);
	cr_assert_eq(r.kind, AGENT_REPLY_FROZEN);
	cr_assert_eq(r.fs.npaths, 0, "all or nothing");
	cr_assert_eq(r.fs.nerrors, 1);
	cr_assert_str_eq(r.fs.errors[0].path, "/proc");
	agent_reply_free(&r);
	assert_writable("after-rollback");

	/* A path that cannot be opened fails the request before anything is frozen. */
	char missing[200];
	snprintf(missing, sizeof(missing), "%s/missing", fx.dir);
	query(fd, freeze_request("freeze", missing), &r);
	cr_assert_eq(r.fs.npaths, 0);
	cr_assert_eq(r.fs.nerrors, 1);
	cr_assert_str_eq(r.fs.errors[0].path, missing);
	agent_reply_free(&r);
	assert_writable("after-open-failure");

	/* Thaw reports per path and goes on. */
	query(fd, freeze_request("thaw", missing), &r);
	cr_assert_eq(r.kind, AGENT_REPLY_THAWED);
	cr_assert_eq(r.fs.npaths, 1);
	cr_assert_eq(r.fs.nerrors, 1);
	agent_reply_free(&r);
	close(fd);
}

Test(agent, freeze_dedupes_paths_on_one_filesystem)
{
	mount_scratch_fs();
	char sub[200];
	snprintf(sub, sizeof(sub), "%s/sub", fx.mnt);
	cr_assert_eq(mkdir(sub, 0755), 0);
	int fd = connect_agent();
	struct agent_reply r;
	query(fd, freeze_request("freeze", sub), &r);
	cr_assert_eq(r.fs.nerrors, 0, "%s", r.fs.nerrors ? r.fs.errors[0].message : "");
	cr_assert_eq(r.fs.npaths, 2);
	agent_reply_free(&r);
	query(fd, freeze_request("thaw", sub), &r);
	cr_assert_eq(r.fs.nerrors, 0);
	cr_assert_eq(r.fs.npaths, 2);
	agent_reply_free(&r);
	assert_writable("after-thaw");
	close(fd);
}

Test(agent, connection_end_thaws_what_it_froze)
{
	mount_scratch_fs();
	int fd = connect_agent();
	struct agent_reply r;
	query(fd, freeze_request("freeze", NULL), &r);
	cr_assert_eq(r.fs.npaths, 1);
	agent_reply_free(&r);
	close(fd);
	assert_writable("after-disconnect");
}

/* ---- shutdown, for real, inside a PID namespace of the test's own ---- */

static void no_setup(void)
{
	memset(&fx, 0, sizeof(fx));
}

TestSuite(shutdown, .init = no_setup, .fini = teardown, .timeout = 60);

/* Runs a command through the agent and returns its first output line (static buffer). */
static const char *agent_output(const char *exec_json)
{
	static struct run r;
	memset(&r, 0, sizeof(r));
	int fd = connect_agent();
	send_control(fd, exec_json);
	expect_started(fd);
	collect(fd, &r);
	close(fd);
	cr_assert_eq(r.status, 0, "%s", r.out);
	r.out[strcspn(r.out, "\n")] = 0;
	return r.out;
}

/*
 * The full shutdown sequence with --allow-poweroff, made harmless: the agent is PID 1 of a new
 * PID namespace, where kill(-1) reaches only the namespace's processes and reboot(2) ends the
 * namespace, reporting the action as its init's death signal (SIGHUP reboot, SIGINT poweroff).
 */
static void shutdown_in_namespace(const char *request, int want_signal)
{
	if (geteuid() != 0 || system("command -v unshare >/dev/null 2>&1") != 0)
		skip_test("needs root and unshare(1)");
	if (!start_agent_in(true))
		skip_test("cannot run the agent in a new PID namespace here");

	/* Proof that a shutdown cannot reach this machine: the agent's PID namespace is not ours. */
	char mine[64] = { 0 };
	cr_assert_gt(readlink("/proc/self/ns/pid", mine, sizeof(mine) - 1), 0);
	const char *theirs = agent_output("{\"op\":\"exec\",\"argv\":[\"readlink\",\"/proc/self/ns/pid\"]}");
	cr_assert(strncmp(theirs, "pid:[", 5) == 0, "%s", theirs);
	cr_assert_str_neq(theirs, mine, "the agent is in this machine's PID namespace");
	cr_assert_str_neq(theirs, "pid:[4026531836]", "the agent is in the initial PID namespace");

	/*
	 * A process that records the graceful SIGTERM it gets before everything is killed. Its
	 * output pipes end with the agent's connection handler (SIGTERM'd too), so after "ready" it
	 * writes nowhere else: dash's "Terminated" note on stderr would otherwise earn it a SIGPIPE.
	 */
	char mark[160], script[400], exec_json[600];
	snprintf(mark, sizeof(mark), "%s/terminated", fx.dir);
	snprintf(script, sizeof(script),
		 "trap 'echo term > %s; exit 0' TERM; echo ready; exec >/dev/null 2>&1; "
		 "while :; do sleep 0.1; done", mark);
	snprintf(exec_json, sizeof(exec_json), "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"%s\"]}",
		 script);
	int bystander = connect_agent();
	send_control(bystander, exec_json);
	expect_started(bystander);
	struct run r = { 0 };
	wait_output(bystander, &r, "ready");

	int fd = connect_agent();
	send_control(fd, request);
	/* Accepted: no answer, the connection just ends with the "machine". */
	struct agent_frame f;
	struct cv_error err = { 0 };
	int got = agent_recv_frame(fd, &f, &err);
	if (got > 0) {
		cr_assert_fail("shutdown answered: %.*s", (int)f.len, f.data ? (char *)f.data : "");
	}
	int st;
	pid_t w;
	for (int i = 0; i < 1000 && (w = waitpid(fx.agent, &st, WNOHANG)) == 0; i++)
		usleep(10000);
	cr_assert_eq(w, fx.agent, "the namespace did not end");
	fx.agent = 0;
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == want_signal,
		  "namespace init ended with status %#x, want signal %d", st, want_signal);
	struct cv_buf b;
	cr_assert_eq(cv_read_file(mark, 64, &b, &err), 0, "no SIGTERM before the end: %s", err.msg);
	cr_assert_str_eq((char *)b.data, "term\n");
	cv_buf_free(&b);
	close(fd);
	close(bystander);
}

Test(shutdown, reboot_terminates_processes_then_reboots)
{
	shutdown_in_namespace("{\"op\":\"shutdown\",\"action\":\"reboot\"}", SIGHUP);
}

Test(shutdown, poweroff_alias_powers_off)
{
	shutdown_in_namespace("{\"op\":\"poweroff\"}", SIGINT);
}

/* ---- parsers on fixed text ---- */

Test(mounts, parse_escapes_and_flags)
{
	const char *text =
		"/dev/vda / ext4 rw,relatime 0 0\n"
		"proc /proc proc rw,nosuid 0 0\n"
		"/dev/vdb /mnt/with\\040space ext4 ro,relatime 0 0\n"
		"garbage\n"
		"tmpfs /tmp tmpfs rw 0 0\n";
	struct mount_table t;
	struct cv_error err = { 0 };
	cr_assert_eq(mounts_parse(text, &t, &err), 0, "%s", err.msg);
	cr_assert_eq(t.n, 4, "the malformed line is skipped");
	cr_assert_str_eq(t.v[2].path, "/mnt/with space");
	cr_assert(t.v[2].readonly);
	cr_assert_not(t.v[0].readonly);
	cr_assert_str_eq(t.v[3].type, "tmpfs");
	mounts_free(&t);
}

Test(mounts, freezable_default_set)
{
	const char *mounts =
		"/dev/root / ext4 rw 0 0\n"
		"proc /proc proc rw 0 0\n"
		"devtmpfs /dev devtmpfs rw 0 0\n"
		"tmpfs /tmp tmpfs rw 0 0\n"
		"/dev/vdb /data xfs rw 0 0\n"
		"/dev/vdc /ro ext4 ro 0 0\n"
		"/dev/vdd /over ext4 rw 0 0\n"
		"tmpfs /over tmpfs rw 0 0\n"
		"host0 /host 9p rw 0 0\n";
	const char *filesystems = "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n\txfs\nnodev\t9p\n"
				  "nodev\tdevtmpfs\n";
	struct mount_table t;
	struct fs_types blk;
	struct cv_error err = { 0 };
	cr_assert_eq(mounts_parse(mounts, &t, &err), 0);
	cr_assert_eq(fs_types_parse(filesystems, &blk, &err), 0);
	cr_assert_eq(blk.n, 2);
	cr_assert(fs_types_has(&blk, "ext4"));
	cr_assert_not(fs_types_has(&blk, "tmpfs"));
	char **paths;
	cr_assert_eq(mounts_freezable(&t, &blk, &paths, &err), 0);
	/* Writable block filesystems in mount order; read-only, memory, network, hidden excluded. */
	cr_assert_str_eq(paths[0], "/");
	cr_assert_str_eq(paths[1], "/data");
	cr_assert_null(paths[2]);
	mounts_free_paths(paths);
	fs_types_free(&blk);
	mounts_free(&t);
}

Test(sysinfo, meminfo)
{
	struct agent_info info = { 0 };
	struct cv_error err = { 0 };
	const char *text = "MemTotal:       16384 kB\nMemFree:         1024 kB\n"
			   "MemAvailable:    8192 kB\nBuffers:            0 kB\n";
	cr_assert_eq(sysinfo_parse_meminfo(text, &info, &err), 0, "%s", err.msg);
	cr_assert_eq(info.mem_total, 16384ull * 1024);
	cr_assert_eq(info.mem_free, 1024ull * 1024);
	cr_assert_eq(info.mem_available, 8192ull * 1024);
	cr_assert_eq(sysinfo_parse_meminfo("MemTotal: 1 kB\nMemFree: 1 kB\n", &info, &err), -1);
	cr_assert(strstr(err.msg, "MemAvailable"), "%s", err.msg);
}

Test(sysinfo, proc_stat)
{
	struct agent_info info = { 0 };
	struct cv_error err = { 0 };
	const char *text = "cpu  10 0 10 100 0 0 0 0 0 0\n"
			   "cpu0 150 1 2 3 4 5 6 7 0 0\n"
			   "cpu2 1 2 3 4\n"
			   "intr 12345\n";
	cr_assert_eq(sysinfo_parse_stat(text, 100, &info, &err), 0, "%s", err.msg);
	cr_assert_eq(info.ncpus, 2, "the aggregate line is not a CPU");
	cr_assert_eq(info.cpus[0].id, 0);
	cr_assert_eq(info.cpus[0].user, 1500000000ull, "150 ticks at 100 Hz are 1.5 s");
	cr_assert_eq(info.cpus[0].steal, 70000000ull);
	cr_assert_eq(info.cpus[1].id, 2);
	cr_assert_eq(info.cpus[1].idle, 40000000ull);
	cr_assert_eq(info.cpus[1].iowait, 0, "columns an old kernel lacks are zero");
	free(info.cpus);
	info.cpus = NULL;
	cr_assert_eq(sysinfo_parse_stat("cpu 1 2 3 4\n", 100, &info, &err), -1);
	cr_assert_eq(sysinfo_parse_stat("cpu0 x\n", 100, &info, &err), -1);
	free(info.cpus);
}
