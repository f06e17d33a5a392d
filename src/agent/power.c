/*
 * Shutdown sequence of cvisor-agent (power.h). Processes are tracked by pid and start time from
 * /proc, so waiting covers exactly the processes that were asked to stop and a recycled pid is
 * not mistaken for a survivor. Kernel threads ignore signals and are never waited for. In a PID
 * namespace other than the initial one the same sequence ends only that namespace.
 */
#include "power.h"

#include <dirent.h>
#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fsfreeze.h"
#include "mounts.h"
#include "util.h"

#define PF_KTHREAD_FLAG 0x00200000u
/* include/linux/proc_ns.h; stable since Linux 3.8 but not exported to user space. */
#define PROC_PID_INIT_INO 0xEFFFFFFCu
#define POLL_MS 50

struct proc_id {
	pid_t pid;
	unsigned long long start;   /* clock ticks after boot */
};

static bool can_reboot(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return geteuid() == 0;
	return (data[CAP_SYS_BOOT / 32].effective & (1u << (CAP_SYS_BOOT % 32))) != 0;
}

/*
 * Reads state, flags and start time from /proc/PID/stat. The command name may contain spaces and
 * parentheses, so fields are counted from its last ')'. Returns false if the process is gone.
 */
static bool proc_stat(pid_t pid, char *state, unsigned *flags, unsigned long long *start)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p)
		return false;
	return sscanf(p + 1,
		      " %c %*d %*d %*d %*d %*d %u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
		      state, flags, start) == 3;
}

/* Every user-space process but PID 1, this one and `spare`, or NULL with *n = 0 if none. */
static struct proc_id *snapshot(pid_t spare, size_t *n)
{
	*n = 0;
	DIR *d = opendir("/proc");
	if (!d)
		return NULL;
	size_t cap = 0;
	struct proc_id *v = NULL;
	pid_t self = getpid();
	struct dirent *e;
	while ((e = readdir(d))) {
		uint64_t pid;
		if (!cv_parse_u64(e->d_name, 2, 0x7fffffff, &pid) || (pid_t)pid == self ||
		    (pid_t)pid == spare)
			continue;
		char state;
		unsigned flags;
		unsigned long long start;
		if (!proc_stat((pid_t)pid, &state, &flags, &start) || (flags & PF_KTHREAD_FLAG) ||
		    state == 'Z' || state == 'X')
			continue;
		if (*n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct proc_id *nv = realloc(v, ncap * sizeof(*nv));
			if (!nv)
				break;   /* the rest still dies in reboot(2), just without a grace period */
			v = nv;
			cap = ncap;
		}
		v[(*n)++] = (struct proc_id){ .pid = (pid_t)pid, .start = start };
	}
	closedir(d);
	return v;
}

static bool alive(const struct proc_id *p)
{
	char state;
	unsigned flags;
	unsigned long long start;
	return proc_stat(p->pid, &state, &flags, &start) && start == p->start && state != 'Z' &&
	       state != 'X';
}

static bool any_alive(const struct proc_id *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (alive(&v[i]))
			return true;
	return false;
}

/*
 * Signals every process but PID 1, us and `spare`, then waits up to ms for them to be gone.
 * Signalled one by one rather than with kill(-1) so that `spare` survives; a process forked
 * meanwhile is missed here but still ends with the machine.
 */
static void signal_and_wait(int sig, int ms, pid_t spare)
{
	size_t n;
	struct proc_id *v = snapshot(spare, &n);
	for (size_t i = 0; i < n; i++) {
		if (!alive(&v[i]))
			continue;
		kill(v[i].pid, sig);
		/* A stopped process acts on SIGTERM only once continued. */
		if (sig != SIGKILL)
			kill(v[i].pid, SIGCONT);
	}
	for (int waited = 0; waited < ms && any_alive(v, n); waited += POLL_MS) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = POLL_MS * 1000000L };
		nanosleep(&ts, NULL);
	}
	free(v);
}

/*
 * True only in the initial PID namespace. In any other (a container, a test) reboot(2) ends just
 * that namespace, while a read-only remount would still change filesystems shared with the rest
 * of the machine, so it must not happen there. The kernel gives the initial PID namespace a fixed
 * inode number (PROC_PID_INIT_INO); anything unreadable counts as "not ours".
 */
static bool machine_is_ours(void)
{
	struct stat st;
	return stat("/proc/self/ns/pid", &st) == 0 && st.st_ino == PROC_PID_INIT_INO;
}

/* Disk filesystems read-only, innermost first, so their journals are clean for the next boot. */
static void remount_readonly(void)
{
	struct mount_table t;
	struct cv_error err;
	if (mounts_read(MOUNTS_PATH, &t, &err) < 0)
		return;
	for (size_t i = t.n; i-- > 0;) {
		const struct mount_entry *e = &t.v[i];
		if (e->readonly || strncmp(e->source, "/dev/", 5) != 0)
			continue;
		mount(NULL, e->path, NULL, MS_REMOUNT | MS_RDONLY, NULL);
	}
	mounts_free(&t);
}

int power_shutdown(enum agent_shutdown_action action, bool quiet, struct cv_error *err)
{
	const char *what = action == AGENT_SHUTDOWN_REBOOT ? "reboot" : "poweroff";
	/* Checked first: after the processes are killed there is no going back. */
	if (!can_reboot())
		return cv_fail(err, CV_EXIT_OSERR, "%s: this agent lacks CAP_SYS_BOOT", what);
	if (!quiet)
		fprintf(stderr, "cvisor-agent: %s on request\n", what);
	/*
	 * sync and the read-only remount would wait forever on a frozen filesystem. Only on our
	 * own machine: in a container those filesystems are someone else's to thaw.
	 */
	bool ours = machine_is_ours();
	if (ours) {
		struct freeze_hold none;
		struct agent_fs_result thawed;
		struct cv_error ignored;
		freeze_hold_init(&none);
		if (fs_thaw(NULL, &none, &thawed, &ignored) == 0)
			agent_fs_result_free(&thawed);
	}
	sync();
	/*
	 * The listening agent, our parent unless PID 1 started us directly, is spared: if it died
	 * first, the init supervising it would report and restart it while the machine goes down.
	 */
	pid_t parent = getppid();
	pid_t spare = parent > 1 ? parent : 0;
	signal_and_wait(SIGTERM, POWER_TERM_WAIT_MS, spare);
	signal_and_wait(SIGKILL, POWER_KILL_WAIT_MS, spare);
	sync();
	if (ours)
		remount_readonly();
	sync();
	reboot(action == AGENT_SHUTDOWN_REBOOT ? RB_AUTOBOOT : RB_POWER_OFF);
	return cv_fail_errno(err, CV_EXIT_OSERR, "%s: reboot(2)", what);
}
