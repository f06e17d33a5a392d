/*
 * cvisor-init: PID 1 of cvisor's default guest. Loads the kernel modules the initramfs lists (a
 * stock distribution kernel has its virtio drivers as modules), mounts the pseudo filesystems,
 * then does one of two things:
 *   - runs the command cvisor asked for (the request file /cvisor/run, or arguments after "--" on
 *     the kernel command line, or else an interactive shell) with the console as its terminal,
 *     reports the exit status between markers the host can parse, and powers the VM off;
 *   - or, when the request has an agent= record (or the kernel command line says
 *     cvisor.agent=PORT), keeps cvisor-agent running on that vsock port
 *     (restarting it if it dies) and lets the host drive the guest through it.
 * Static, with no library beyond libc, so it starts in microseconds even under emulation.
 *
 * Module list: MODULES_LIST_PATH, one module per line in load order, "PATH [PARAMETERS]"; blank
 * lines and lines starting with '#' are skipped. Failures are reported and the boot goes on.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "request.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#define MODULES_LIST_PATH "/lib/modules/cvisor.load"
#define AGENT_PATH "/bin/cvisor-agent"
/* An agent that dies this soon after starting counts as a quick death; this many in a row end it. */
#define AGENT_QUICK_DEATH_S 10
#define AGENT_MAX_QUICK_DEATHS 5

#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

struct request {
	char *buf;
	const char *token;
	const char *cwd;
	const char *hostname;
	const char *agent_port;   /* agent=: serve cvisor-agent on this vsock port, run no command */
	char **argv;
	char **envp;
	int argc, envc;
};

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vdprintf(STDERR_FILENO, fmt, ap);
	va_end(ap);
}

static void mount_fs(const char *src, const char *dst, const char *type, unsigned long flags,
		     const char *opts)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, opts) < 0 && errno != EBUSY)
		say("cvisor-init: mount %s on %s failed\n", type, dst);
}

/* The kernel opened /dev/console for us if it existed; make sure 0-2 are usable regardless. */
static void setup_console(void)
{
	if (fcntl(STDOUT_FILENO, F_GETFD) < 0) {
		int fd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
	}
	/* Raw output: the command's bytes reach the host unchanged (no \n -> \r\n). */
	struct termios t;
	if (tcgetattr(STDOUT_FILENO, &t) == 0) {
		t.c_oflag &= (tcflag_t)~OPOST;
		tcsetattr(STDOUT_FILENO, TCSANOW, &t);
	}
}

static void loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
}

/* Parses /cvisor/run; returns false if absent. Malformed requests are reported and refused. */
static bool read_request(struct request *r)
{
	memset(r, 0, sizeof(*r));
	int fd = open(RUN_REQUEST_PATH, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size > RUN_REQUEST_MAX) {
		close(fd);
		say("cvisor-init: %s: bad size\n", RUN_REQUEST_PATH);
		return false;
	}
	size_t len = (size_t)st.st_size;
	r->buf = malloc(len + 1);
	r->argv = calloc(RUN_REQUEST_MAX_ARGS + 1, sizeof(char *));
	r->envp = calloc(RUN_REQUEST_MAX_ARGS + 2, sizeof(char *));
	if (!r->buf || !r->argv || !r->envp || read(fd, r->buf, len) != (ssize_t)len) {
		close(fd);
		say("cvisor-init: cannot read %s\n", RUN_REQUEST_PATH);
		return false;
	}
	close(fd);
	r->buf[len] = 0;   /* a final record without its NUL still ends here */
	for (size_t off = 0; off < len;) {
		char *rec = r->buf + off;
		off += strlen(rec) + 1;
		if (strncmp(rec, "arg=", 4) == 0 && r->argc < RUN_REQUEST_MAX_ARGS)
			r->argv[r->argc++] = rec + 4;
		else if (strncmp(rec, "env=", 4) == 0 && r->envc < RUN_REQUEST_MAX_ARGS)
			r->envp[r->envc++] = rec + 4;
		else if (strncmp(rec, "token=", 6) == 0)
			r->token = rec + 6;
		else if (strncmp(rec, "cwd=", 4) == 0)
			r->cwd = rec + 4;
		else if (strncmp(rec, "hostname=", 9) == 0)
			r->hostname = rec + 9;
		else if (strncmp(rec, "agent=", 6) == 0)
			r->agent_port = rec + 6;
	}
	return r->argc > 0 || r->agent_port;
}

/*
 * "cvisor.agent=PORT" on the kernel command line (before any "--"): serve the agent without a run
 * request, for VMs started by cvisor-vmm directly and driven through their vsock socket. The
 * kernel hands parameters with a dot to no one, so it is read from /proc/cmdline.
 */
static const char *cmdline_agent_port(char *buf, size_t size)
{
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	for (char *save = NULL, *t = strtok_r(buf, " \t\n", &save); t;
	     t = strtok_r(NULL, " \t\n", &save)) {
		if (strcmp(t, "--") == 0)
			break;
		if (strncmp(t, "cvisor.agent=", 13) == 0)
			return t + 13;
	}
	return NULL;
}

/* vsock ports are 32-bit; VMADDR_PORT_ANY (2^32 - 1) means "any" and cannot be listened on. */
static bool valid_port(const char *s)
{
	if (!*s || strlen(s) > 10)
		return false;
	unsigned long long v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned long long)(*p - '0');
	}
	return v >= 1 && v <= 0xfffffffeull;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void load_module(char *line)
{
	char *path = line + strspn(line, " \t");
	if (!*path || *path == '#')
		return;
	char *params = path + strcspn(path, " \t");
	if (*params) {
		*params++ = 0;
		params += strspn(params, " \t");
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		say("cvisor-init: load module %s: %s\n", path, strerror(errno));
		return;
	}
	/* The kernel decompresses by itself when told to (and when built to); let it try. */
	int flags = has_suffix(path, ".xz") || has_suffix(path, ".zst") || has_suffix(path, ".gz")
			    ? MODULE_INIT_COMPRESSED_FILE : 0;
	/* EEXIST: built in or already loaded, which is what was wanted. */
	if (syscall(SYS_finit_module, fd, params, flags) < 0 && errno != EEXIST)
		say("cvisor-init: load module %s: %s\n", path, strerror(errno));
	close(fd);
}

/* Loads the modules listed in the initramfs, if it lists any. */
static void load_modules(void)
{
	FILE *f = fopen(MODULES_LIST_PATH, "re");
	if (!f)
		return;
	char line[4096];
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = 0;
		load_module(line);
	}
	fclose(f);
}

static bool env_has(char **envp, int n, const char *prefix)
{
	for (int i = 0; i < n; i++)
		if (strncmp(envp[i], prefix, strlen(prefix)) == 0)
			return true;
	return false;
}

/* Runs argv in a new session on the console; returns its status as a shell would report it. */
static int run_command(char **argv, char **envp, const char *cwd, bool interactive)
{
	pid_t pid = fork();
	if (pid < 0) {
		say("cvisor-init: fork: %s\n", strerror(errno));
		return 125;
	}
	if (pid == 0) {
		setsid();
		if (interactive) {
			ioctl(STDIN_FILENO, TIOCSCTTY, 1);
		} else {
			int null = open("/dev/null", O_RDONLY);
			if (null >= 0)
				dup2(null, STDIN_FILENO);
		}
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		if (cwd && chdir(cwd) < 0) {
			say("cvisor-init: cd '%s': %s\n", cwd, strerror(errno));
			_exit(126);
		}
		/* execvpe searches the PATH of *our* environment, so make it the command's. */
		for (char **e = envp; *e; e++)
			if (strncmp(*e, "PATH=", 5) == 0)
				setenv("PATH", *e + 5, 1);
		execvpe(argv[0], argv, envp);
		int e = errno;
		say("cvisor-init: exec '%s': %s\n", argv[0], strerror(e));
		_exit(e == ENOENT ? 127 : 126);
	}
	/* As PID 1 we inherit every orphan: reap them all while waiting for ours. */
	for (;;) {
		int status;
		pid_t w = wait(&status);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return 125;
		}
		if (w == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	}
}

static _Noreturn void power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	/* Without ACPI power-off, a reset still ends the VM (cvisor-vmm exits on either). */
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static pid_t start_agent(char **argv, char **envp)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	/* Detached from the console: commands it runs must not get it as a terminal by accident. */
	setsid();
	int null = open("/dev/null", O_RDONLY);
	if (null >= 0)
		dup2(null, STDIN_FILENO);
	signal(SIGINT, SIG_DFL);
	if (chdir("/") < 0)
		say("cvisor-init: cd /: %s\n", strerror(errno));
	execve(argv[0], argv, envp);
	say("cvisor-init: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/*
 * The agent mode: cvisor-agent on vsock, restarted whenever it dies, with a short doubling pause
 * after quick deaths so a broken agent does not spin. The guest ends through the agent's own
 * shutdown request, or here when the agent cannot stay up.
 */
static _Noreturn void serve_agent(const char *port, char **envp)
{
	char listen[32];
	snprintf(listen, sizeof(listen), "vsock:%s", port);
	char *argv[] = { AGENT_PATH, "--listen", listen, "--allow-poweroff", "--quiet", NULL };
	int quick = 0;
	for (;;) {
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		pid_t pid = start_agent(argv, envp);
		int status = 0;
		if (pid < 0) {
			say("cvisor-init: fork: %s\n", strerror(errno));
		} else {
			/* As PID 1 we inherit every orphan: reap them all while waiting for the agent. */
			for (;;) {
				pid_t w = wait(&status);
				if (w == pid || (w < 0 && errno != EINTR))
					break;
			}
		}
		quick = seconds_since(&t0) < AGENT_QUICK_DEATH_S ? quick + 1 : 0;
		if (pid > 0 && WIFSIGNALED(status))
			say("cvisor-init: cvisor-agent killed by signal %d\n", WTERMSIG(status));
		else if (pid > 0)
			say("cvisor-init: cvisor-agent exited with status %d\n", WEXITSTATUS(status));
		if (quick >= AGENT_MAX_QUICK_DEATHS) {
			say("cvisor-init: cvisor-agent died %d times within %d s of starting; powering off\n",
			    quick, AGENT_QUICK_DEATH_S);
			power_off();
		}
		if (quick > 0) {
			long ms = 100L << (quick - 1);
			struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L };
			nanosleep(&ts, NULL);
		}
	}
}

int main(int argc, char **argv)
{
	if (getpid() != 1) {
		fprintf(stderr, "cvisor-init: must run as PID 1 of a cvisor guest\n");
		return 1;
	}
	/* First: the drivers of everything below (virtio, vsock) may be modules. */
	load_modules();
	mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	setup_console();
	mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666");
	mount_fs("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, NULL);
	mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, NULL);
	mount_fs("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	loopback_up();
	signal(SIGINT, SIG_IGN);   /* PID 1 must not die of a stray Ctrl-C from the console */

	struct request req;
	char *shell[] = { "/bin/sh", NULL };
	char *fallback_env[4];
	char **cmd;
	const char *token = "-";
	bool interactive = false;
	char cmdline[4096];
	if (read_request(&req)) {
		cmd = req.argv;
		if (req.token)
			token = req.token;
	} else if ((req.agent_port = cmdline_agent_port(cmdline, sizeof(cmdline)))) {
		cmd = NULL;
	} else if (argc > 1) {
		cmd = argv + 1;   /* kernel command line: "... -- cmd args" */
	} else {
		cmd = shell;
		interactive = true;
	}
	if (!req.envp) {
		req.envp = fallback_env;
		req.envc = 0;
	}
	if (!env_has(req.envp, req.envc, "PATH="))
		req.envp[req.envc++] = DEFAULT_PATH;
	if (!env_has(req.envp, req.envc, "HOME="))
		req.envp[req.envc++] = "HOME=/root";
	req.envp[req.envc] = NULL;
	const char *hostname = req.hostname ? req.hostname : "cvisor";
	sethostname(hostname, strlen(hostname));

	if (req.agent_port) {
		if (!valid_port(req.agent_port)) {
			say("cvisor-init: bad agent port '%s' (1..4294967294); powering off\n",
			    req.agent_port);
			power_off();
		}
		serve_agent(req.agent_port, req.envp);
	}

	if (!interactive)
		dprintf(STDOUT_FILENO, MARKER_START_FMT, token);
	int status = run_command(cmd, req.envp, req.cwd ? req.cwd : "/", interactive);
	/* Everything the command wrote is ahead of the marker in the tty queue; drain both. */
	tcdrain(STDOUT_FILENO);
	dprintf(STDOUT_FILENO, MARKER_EXIT_FMT, token, status);
	tcdrain(STDOUT_FILENO);
	kill(-1, SIGKILL);
	power_off();
	return 0;
}
