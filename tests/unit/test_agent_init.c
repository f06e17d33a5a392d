/*
 * Tests of cvisor-init (guest/init/init.c) without a VM: the default initramfs is unpacked into a
 * temporary directory and its /init runs chrooted as PID 1 of new PID, mount, UTS, network and
 * IPC namespaces, so its mounts, hostname and final reboot(2) stay inside them (reboot in a
 * child PID namespace only ends that namespace, reporting SIGINT for poweroff). Covered: the
 * command mode is unchanged (markers and status), and the agent mode (agent= record) starts
 * cvisor-agent with the expected arguments and environment, prints nothing but errors, restarts
 * it, and powers off after repeated quick deaths; a module list with a bad entry is reported and
 * the boot goes on.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#ifndef INITRAMFS
#error "INITRAMFS must name the default initramfs"
#endif

/* One unpacked initramfs and the namespace running it. */
struct init_fixture {
	char dir[64];
	char root[96];
	char console[128];
	pid_t ns;             /* the unshare process; its child is the guest's PID 1 */
};

static struct init_fixture fx;

static void teardown(void)
{
	if (fx.ns > 0) {
		/* Killing the namespace's init ends every process in it. */
		pid_t init = 0;
		for (int i = 0; i < 3 && init <= 0; i++) {
			char path[64];
			snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)fx.ns, (int)fx.ns);
			FILE *f = fopen(path, "re");
			if (f) {
				if (fscanf(f, "%d", &init) != 1)
					init = 0;
				fclose(f);
			}
		}
		if (init > 0)
			kill(init, SIGKILL);
		kill(fx.ns, SIGKILL);
		waitpid(fx.ns, NULL, 0);
	}
	if (fx.dir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", fx.dir);
	}
	memset(&fx, 0, sizeof(fx));
}

static void setup(void)
{
	memset(&fx, 0, sizeof(fx));
}

TestSuite(init, .init = setup, .fini = teardown, .timeout = 60);

#define skip_test(...)                     \
	do {                               \
		teardown();                \
		cr_skip_test(__VA_ARGS__); \
	} while (0)

static void write_file(const char *rel, const void *data, size_t len)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", fx.root, rel);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(cv_write_full(fd, data, len), 0);
	close(fd);
}

static void unpack(void)
{
	if (geteuid() != 0 || system("command -v unshare >/dev/null && command -v cpio >/dev/null") != 0)
		skip_test("needs root, unshare(1) and cpio(1)");
	if (access(INITRAMFS, R_OK) != 0)
		skip_test("no initramfs at %s", INITRAMFS);
	char children[64];
	snprintf(children, sizeof(children), "/proc/%d/task/%d/children", (int)getpid(), (int)getpid());
	if (access(children, R_OK) != 0)
		skip_test("needs /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)");
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/cvisor-init-test.XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir));
	snprintf(fx.root, sizeof(fx.root), "%s/root", fx.dir);
	snprintf(fx.console, sizeof(fx.console), "%s/console", fx.dir);
	cr_assert_eq(mkdir(fx.root, 0755), 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "cd '%s' && cpio -id --quiet < '%s' 2>/dev/null", fx.root,
		 INITRAMFS);
	cr_assert_eq(system(cmd), 0, "unpacking %s failed", INITRAMFS);
}

/* Runs /init as PID 1 of new namespaces, console to a file. */
static void boot(void)
{
	fx.ns = fork();
	cr_assert_geq(fx.ns, 0);
	if (fx.ns == 0) {
		int fd = open(fx.console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execlp("unshare", "unshare", "--pid", "--fork", "--mount", "--uts", "--net", "--ipc",
		       "--propagation", "private", "chroot", fx.root, "/init", (char *)NULL);
		_exit(127);
	}
}

/* Waits up to ms for the namespace to end; returns its wait status, or -1. */
static int wait_end(int ms)
{
	for (int waited = 0; waited <= ms; waited += 20) {
		int st;
		if (waitpid(fx.ns, &st, WNOHANG) == fx.ns) {
			fx.ns = 0;
			return st;
		}
		usleep(20000);
	}
	return -1;
}

static char *console(void)
{
	struct cv_buf b;
	struct cv_error err = { 0 };
	cr_assert_eq(cv_read_file(fx.console, 1 << 20, &b, &err), 0, "%s", err.msg);
	return (char *)b.data;
}

/* A child of `parent` whose command name is `comm`, or 0. */
static pid_t child_named(pid_t parent, const char *comm)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)parent, (int)parent);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	int pid;
	pid_t found = 0;
	while (!found && fscanf(f, "%d", &pid) == 1) {
		char cpath[64], name[64] = { 0 };
		snprintf(cpath, sizeof(cpath), "/proc/%d/comm", pid);
		FILE *c = fopen(cpath, "re");
		if (c) {
			if (fgets(name, sizeof(name), c))
				name[strcspn(name, "\n")] = 0;
			fclose(c);
		}
		if (strcmp(name, comm) == 0)
			found = pid;
	}
	fclose(f);
	return found;
}

/* Reads a NUL-separated /proc file of pid as one string with NULs turned into spaces. */
static void proc_text(pid_t pid, const char *what, char *out, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	ssize_t n = read(fd, out, len - 1);
	close(fd);
	cr_assert_geq(n, 0);
	for (ssize_t i = 0; i < n; i++)
		if (!out[i])
			out[i] = ' ';
	out[n] = 0;
}

Test(init, command_mode_unchanged)
{
	unpack();
	static const char run[] = "token=T1\0arg=sh\0arg=-c\0arg=echo hi; exit 3\0";
	write_file("cvisor/run", run, sizeof(run) - 1);
	boot();
	int st = wait_end(20000);
	cr_assert_neq(st, -1, "init did not finish");
	char *out = console();
	cr_assert_str_eq(out, "[cvisor-start T1]\nhi\n\n[cvisor-exit T1 3]\n");
	free(out);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "status %#x: not a poweroff", st);
}

Test(init, agent_mode_restarts_then_gives_up)
{
	unpack();
	/* A port unlikely to be taken: vsock ports are not namespaced. */
	char run[128];
	unsigned port = 0x40000000u + (unsigned)getpid();
	int n = snprintf(run, sizeof(run), "agent=%u%cenv=CVTEST=yes%c", port, 0, 0);
	write_file("cvisor/run", run, (size_t)n);
	static const char load[] = "# modules\n\n/lib/modules/missing.ko opt=1\n";
	write_file("lib/modules/cvisor.load", load, sizeof(load) - 1);
	boot();

	/* Where vsock cannot listen the agent dies at once and init gives up by itself. */
	pid_t init = 0;
	int st = -1;
	for (int i = 0; i < 250 && !init; i++) {
		init = child_named(fx.ns, "init");
		if (!init)
			usleep(20000);
	}
	cr_assert_gt(init, 0, "no init process");
	int kills = 0;
	pid_t last = 0;
	for (int i = 0; i < 1500 && (st = wait_end(0)) == -1; i++) {
		pid_t agent = child_named(init, "cvisor-agent");
		if (agent > 0 && agent != last) {
			char text[512];
			if (kills == 0) {
				proc_text(agent, "cmdline", text, sizeof(text));
				char want[128];
				snprintf(want, sizeof(want),
					 "/bin/cvisor-agent --listen vsock:%u --allow-poweroff --quiet ", port);
				cr_assert_str_eq(text, want);
				proc_text(agent, "environ", text, sizeof(text));
				cr_assert(strstr(text, "CVTEST=yes"), "%s", text);
				cr_assert(strstr(text, "PATH="), "%s", text);
			}
			kill(agent, SIGKILL);
			last = agent;
			kills++;
		}
		usleep(10000);
	}
	cr_assert_neq(st, -1, "init did not power off");
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "status %#x: not a poweroff", st);
	char *out = console();
	cr_assert(strstr(out, "cvisor-init: load module /lib/modules/missing.ko: No such file"),
		  "%s", out);
	cr_assert(strstr(out, "died 5 times"), "%s", out);
	/* Nothing but error lines (init's, or the agent's if vsock is missing): no markers, no banner. */
	for (char *line = out; *line;) {
		cr_assert(strncmp(line, "cvisor-init: ", 13) == 0 || strncmp(line, "cvisor-agent: ", 14) == 0,
			  "unexpected console line: %s", line);
		char *nl = strchr(line, '\n');
		line = nl ? nl + 1 : line + strlen(line);
	}
	free(out);
}
