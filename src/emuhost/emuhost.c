/*
 * Lifecycle of the emulated host (emuhost.h): start (prepare the kernel if needed, compose the
 * initramfs, launch QEMU, wait for the agent), stop (agent poweroff, then signals), status. Start
 * and stop hold the state directory's lock, so two of them never race on one host.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "emuhost.h"
#include "internal.h"
#include "util.h"

#define READY_TIMEOUT_MS 120000
#define PING_TIMEOUT_MS 1500
#define POWEROFF_WAIT_MS 30000
#define TERM_WAIT_MS 10000

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
	struct timespec t = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

static bool wait_gone(const struct emuhost_state *st, unsigned ms)
{
	for (unsigned waited = 0; waited < ms; waited += 100) {
		if (!state_qemu_alive(st))
			return true;
		sleep_ms(100);
	}
	return !state_qemu_alive(st);
}

static int make_token(char out[EMUHOST_TOKEN_LEN + 1], struct cv_error *err)
{
	uint8_t raw[EMUHOST_TOKEN_LEN / 2];
	size_t got = 0;
	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return cv_fail_errno(err, CV_EXIT_OSERR, "generate the agent token: getrandom");
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

int emuhost_prepare(struct cv_error *err)
{
	return cache_run_prepare(1, 2, err);
}

/* Kernel from the cache, preparing it first if this machine has none yet. */
static int find_or_prepare_kernel(const struct emuhost_config *cfg, struct emuhost_state *st,
				  struct emuhost_kernel *k, struct cv_error *err)
{
	if (cache_find_kernel(k, err) == 0)
		return 0;
	if (!cfg->quiet)
		fprintf(stderr, "cvisor emuhost: no host kernel prepared yet (%s); preparing it\n",
			err->msg);
	int log = 2;
	char logpath[PATH_MAX];
	if (cfg->quiet) {
		/* Quiet callers still deserve the script's reason when it fails. */
		if (state_path(st, "prepare.log", logpath, sizeof(logpath), err) < 0)
			return -1;
		log = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (log < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "create '%s'", logpath);
	}
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int rc = devnull < 0 ? cv_fail_errno(err, CV_EXIT_OSERR, "open /dev/null")
			     : cache_run_prepare(devnull, log, err);
	if (devnull >= 0)
		close(devnull);
	if (cfg->quiet) {
		close(log);
		if (rc < 0) {
			char tail[200];
			state_tail(logpath, tail, sizeof(tail));
			cv_error_wrap(err, "%s", tail);
		}
	}
	if (rc < 0)
		return -1;
	return cache_find_kernel(k, err);
}

/* Boots QEMU; on success st->pid and st->port describe it. */
static int boot(const struct emuhost_config *cfg, struct emuhost_state *st,
		const struct emuhost_kernel *k, struct cv_error *err)
{
	char initrd[PATH_MAX], console[PATH_MAX], pidfile[PATH_MAX], qlog[PATH_MAX], mon[PATH_MAX];
	if (state_path(st, "initramfs.cpio", initrd, sizeof(initrd), err) < 0 ||
	    state_path(st, "monitor.sock", mon, sizeof(mon), err) < 0 ||
	    state_path(st, "console.log", console, sizeof(console), err) < 0 ||
	    state_path(st, "qemu.pid", pidfile, sizeof(pidfile), err) < 0 ||
	    state_path(st, "qemu.log", qlog, sizeof(qlog), err) < 0)
		return -1;
	/*
	 * One vCPU by default. With two, QEMU 7.2's multi-threaded TCG now and then leaves one of
	 * them looping for good in the host kernel's page-fault path on a direct-map address (RCU
	 * stall reports on the console; the host never recovers): seen in CI runs of the system
	 * suites, even with the idle VM the agent holds (kvm_hold.h). With one vCPU there is no
	 * cross-vCPU translation or TLB race left, and it was not slower where it was measured:
	 * the guest suite took 100 s against 113-189 s with two.
	 */
	struct qemu_params p = {
		.kernel = k->vmlinuz, .initrd = initrd, .console_log = console, .pidfile = pidfile,
		.stderr_log = qlog, .monitor = mon, .cpus = cfg->cpus ? cfg->cpus : 1,
		.memory_mib = cfg->memory_mib ? cfg->memory_mib : 4096,
	};
	if (!cfg->quiet)
		fprintf(stderr, "cvisor emuhost: booting Debian kernel %s in QEMU (TCG, %u vCPUs, %u MiB)\n",
			k->release[0] ? k->release : "(unknown release)", p.cpus, p.memory_mib);
	/* The probed port can be taken before QEMU binds it; QEMU says so, and we pick again. */
	for (int attempt = 0;; attempt++) {
		if (qemu_pick_port(&p.port, err) < 0)
			return -1;
		int r = qemu_launch(&p, err);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		if (attempt == 4)
			return cv_fail(err, CV_EXIT_UNAVAILABLE,
				       "start QEMU: could not forward a loopback port to the agent");
	}
	char text[16];
	snprintf(text, sizeof(text), "%u\n", p.port);
	if (state_write_file(st, "port", text, 0600, err) < 0)
		return -1;
	/* QEMU wrote its pidfile before its launcher exited. */
	struct emuhost_state fresh;
	if (state_open(st->dir, false, &fresh, err) < 0)
		return -1;
	if (fresh.pid <= 0)
		return cv_fail(err, CV_EXIT_UNAVAILABLE, "QEMU started but left no pid in '%s'", pidfile);
	st->pid = fresh.pid;
	st->port = p.port;
	return 0;
}

static int wait_ready(const struct emuhost_config *cfg, struct emuhost_state *st, double t0,
		      struct cv_error *err)
{
	char console[PATH_MAX], tail[320], version[64] = "";
	if (state_path(st, "console.log", console, sizeof(console), err) < 0)
		return -1;
	struct cv_error last = { 0 };
	/* Slow or loaded machines (CI) may need longer than the default. */
	uint64_t timeout_s = READY_TIMEOUT_MS / 1000;
	const char *env = getenv("CVISOR_EMUHOST_TIMEOUT");
	if (env && *env && !cv_parse_u64(env, 1, 3600, &timeout_s))
		return cv_fail(err, CV_EXIT_USAGE,
			       "CVISOR_EMUHOST_TIMEOUT must be a number of seconds in 1..3600, not '%s'", env);
	while (now_s() - t0 < (double)timeout_s) {
		if (!state_qemu_alive(st)) {
			char panic[160];
			if (state_find_line(console, "Kernel panic", panic, sizeof(panic)))
				return cv_fail(err, CV_EXIT_UNAVAILABLE,
					       "the emulated host's kernel panicked while booting: %s (console: %s)",
					       panic, console);
			state_tail(console, tail, sizeof(tail));
			return cv_fail(err, CV_EXIT_UNAVAILABLE,
				       "the emulated host stopped while booting; console (%s) ends: %s",
				       console, tail);
		}
		double t = now_s();
		if (client_ping(st->port, st->token, PING_TIMEOUT_MS, version, sizeof(version),
				&last) == 0) {
			if (!cfg->quiet)
				fprintf(stderr,
					"cvisor emuhost: ready after %.1f s (pid %d, agent %s on 127.0.0.1:%u, console %s)\n",
					now_s() - t0, (int)st->pid, version, st->port, console);
			return 0;
		}
		/* Refused or reset at once while the guest boots; do not spin. */
		double spent = now_s() - t;
		if (spent < 0.25)
			sleep_ms((unsigned)((0.25 - spent) * 1000));
	}
	state_tail(console, tail, sizeof(tail));
	return cv_fail(err, CV_EXIT_UNAVAILABLE,
		       "the emulated host's agent did not answer within %u s (last: %s); console (%s) ends: %s",
		       (unsigned)timeout_s, last.msg, console, tail);
}

/* Boots a host into st (whose lock the caller holds), leaving no trace if that fails. */
static int start_locked(const struct emuhost_config *cfg, struct emuhost_state *st, double t0,
			struct cv_error *err)
{
	state_clear(st);
	struct emuhost_kernel k;
	char self[PATH_MAX], agent[PATH_MAX], initrd[PATH_MAX];
	if (find_or_prepare_kernel(cfg, st, &k, err) < 0 ||
	    cv_self_dir(self, sizeof(self), err) < 0 ||
	    cv_format(agent, sizeof(agent), err, "%s/cvisor-agent", self) < 0 ||
	    state_path(st, "initramfs.cpio", initrd, sizeof(initrd), err) < 0)
		return -1;
	if (access(agent, X_OK) < 0)
		return cv_fail_errno(err, CV_EXIT_UNAVAILABLE,
				     "cvisor-agent must be next to cvisor ('%s'; sanitizer builds do not build it)",
				     agent);
	char token_line[EMUHOST_TOKEN_LEN + 2];
	if (make_token(st->token, err) < 0)
		return -1;
	snprintf(token_line, sizeof(token_line), "%s\n", st->token);
	if (state_write_file(st, "token", token_line, 0600, err) < 0 ||
	    initramfs_compose(k.base_cpio, agent, st->token, initrd, err) < 0)
		goto fail;
	if (boot(cfg, st, &k, err) < 0 || wait_ready(cfg, st, t0, err) < 0)
		goto fail;
	return 0;
fail:
	/* Nothing half-started stays behind; console.log remains for a look. */
	if (st->pid > 0 && state_qemu_alive(st)) {
		kill(st->pid, SIGKILL);
		wait_gone(st, 5000);
	}
	state_clear(st);
	return -1;
}

int emuhost_start(const struct emuhost_config *cfg, struct cv_error *err)
{
	double t0 = now_s();
	struct emuhost_state st;
	if (state_open(cfg->state_dir, true, &st, err) < 0)
		return -1;
	int lock = state_lock(&st, err);
	if (lock < 0)
		return -1;
	int rc = -1;
	/* Reload under the lock: a concurrent start may have finished meanwhile. */
	if (state_open(cfg->state_dir, false, &st, err) < 0)
		goto out;
	if (state_qemu_alive(&st)) {
		cv_fail(err, CV_EXIT_USAGE,
			"an emulated host is already running (pid %d, state directory '%s'); 'cvisor emuhost stop' first",
			(int)st.pid, st.dir);
		goto out;
	}
	rc = start_locked(cfg, &st, t0, err);
out:
	close(lock);
	return rc;
}

int emuhost_run(const struct emuhost_cmd *cmd, int *status, struct cv_error *err)
{
	if (emuhost_is_running(NULL))
		return emuhost_exec(NULL, cmd, status, err);

	/*
	 * No session host: boot a private one for this command and stop it afterwards, rather than
	 * leave a multi-GiB QEMU behind that the user never asked for.
	 */
	char dir[] = "/tmp/cvisor-emuhost-run-XXXXXX";
	if (!mkdtemp(dir))
		return cv_fail_errno(err, CV_EXIT_OSERR, "create a state directory for the emulated host");
	fprintf(stderr, "cvisor: booting a private emulated host for this command (about 10 s; "
			"'cvisor emuhost start' keeps one running for faster runs)\n");
	struct emuhost_config cfg = { .state_dir = dir, .quiet = true };
	int rc = emuhost_start(&cfg, err);
	if (rc == 0)
		rc = emuhost_exec(dir, cmd, status, err);
	struct cv_error stop_err = { 0 };
	if (emuhost_stop(dir, &stop_err) < 0)
		fprintf(stderr, "cvisor: stopping the private emulated host: %s\n", stop_err.msg);
	struct emuhost_state st;
	if (state_open(dir, false, &st, &stop_err) == 0)
		state_remove(&st);
	return rc;
}

int emuhost_stop(const char *state_dir, struct cv_error *err)
{
	struct emuhost_state st;
	if (state_open(state_dir, false, &st, err) < 0)
		return -1;
	if (access(st.dir, F_OK) < 0)
		return 0; /* never started here */
	int lock = state_lock(&st, err);
	if (lock < 0)
		return -1;
	int rc = 0;
	if (state_open(state_dir, false, &st, err) < 0) {
		rc = -1;
		goto out;
	}
	if (state_qemu_alive(&st)) {
		struct cv_error perr = { 0 };
		/* A clean poweroff flushes the guest's writes to the shared filesystem. */
		bool asked = st.port && client_poweroff(st.port, st.token[0] ? st.token : NULL,
							&perr) == 0;
		if (!asked || !wait_gone(&st, POWEROFF_WAIT_MS)) {
			kill(st.pid, SIGTERM);
			if (!wait_gone(&st, TERM_WAIT_MS)) {
				kill(st.pid, SIGKILL);
				if (!wait_gone(&st, 5000)) {
					rc = cv_fail(err, CV_EXIT_OSERR,
						     "QEMU (pid %d) did not exit after SIGKILL", (int)st.pid);
					goto out;
				}
			}
		}
	}
	state_clear(&st);
out:
	close(lock);
	return rc;
}

int emuhost_get_status(const char *state_dir, struct emuhost_status *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	struct emuhost_state st;
	if (state_open(state_dir, false, &st, err) < 0)
		return -1;
	snprintf(out->state_dir, sizeof(out->state_dir), "%s", st.dir);
	if (state_path(&st, "console.log", out->console_log, sizeof(out->console_log), err) < 0)
		return -1;
	if (!state_qemu_alive(&st))
		return 0;
	out->running = true;
	out->pid = (int)st.pid;
	out->port = st.port;
	struct cv_error perr = { 0 };
	if (st.port && client_ping(st.port, st.token[0] ? st.token : NULL, 3000, out->agent_version,
				   sizeof(out->agent_version), &perr) == 0)
		out->agent_ready = true;
	else
		snprintf(out->agent_error, sizeof(out->agent_error), "%s",
			 st.port ? perr.msg : "no agent port recorded");
	return 0;
}

bool emuhost_is_running(const char *state_dir)
{
	struct emuhost_status s;
	struct cv_error err;
	return emuhost_get_status(state_dir, &s, &err) == 0 && s.agent_ready;
}
