/*
 * bench-boot: boots the same kernel and initramfs with cvisor-vmm and with QEMU's microvm
 * machine (KVM), alternating, and reports medians of
 *   (a) process start -> the guest init's first output line,
 *   (b) process start -> process exit (boot, run `true`, power off),
 *   (c) VMM resident memory beyond guest RAM, sampled when init first speaks,
 * with cvisor/QEMU ratios. Figures, not a test: the machine is noisy, so read medians and ranges.
 * With --cli PATH it also times the front end, `PATH run -- true` with the same kernel, initramfs,
 * memory and vCPUs, as (d) against QEMU's (b): what a user waits for. The front end's output is
 * its own (it consumes the markers), so that run only counts if it exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNS 64
#define INIT_MARK "[cvisor-start"
#define EXIT_MARK "[cvisor-exit - 0]"

struct sample {
	double first_ms;      /* start -> init's first output */
	double total_ms;      /* start -> exit */
	double rss_extra_kib; /* resident KiB outside the guest RAM mapping */
	double rss_total_kib;
};

struct peer {
	const char *name;
	char **argv;
	bool markers;         /* the console shows init's markers (a VMM, not the cvisor front end) */
	struct sample s[MAX_RUNS];
	int n;
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/*
 * Sums Rss over the process's mappings, separately for mappings at least as large as guest RAM
 * (the guest's memory: one such mapping in both VMMs) and the rest (the VMM's own memory).
 */
static void sample_rss(pid_t pid, uint64_t guest_bytes, struct sample *s)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char line[512];
	bool guest = false;
	double extra = 0, total = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi, kib;
		if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			guest = hi - lo >= guest_bytes;
		else if (sscanf(line, "Rss: %llu kB", &kib) == 1) {
			total += (double)kib;
			if (!guest)
				extra += (double)kib;
		}
	}
	fclose(f);
	s->rss_extra_kib = extra;
	s->rss_total_kib = total;
}

/* One boot: returns 0 if the guest ran the command and powered off cleanly. */
static int run_once(struct peer *p, uint64_t guest_bytes, bool verbose)
{
	int fds[2];
	if (pipe(fds) < 0)
		return -1;
	struct sample s = { 0 };
	double t0 = now_ms();
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		close(fds[0]);
		close(fds[1]);
		int null = open("/dev/null", O_RDONLY);
		dup2(null, STDIN_FILENO);
		execvp(p->argv[0], p->argv);
		_exit(127);
	}
	close(fds[1]);
	char out[1 << 16];
	size_t len = 0;
	bool seen_init = false;
	for (;;) {
		ssize_t n = read(fds[0], out + len, sizeof(out) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		out[len] = 0;
		if (!seen_init && strstr(out, INIT_MARK)) {
			s.first_ms = now_ms() - t0;
			seen_init = true;
			sample_rss(pid, guest_bytes, &s);
		}
		if (len == sizeof(out) - 1)
			len = 0;   /* keep reading; the markers are short and near the end */
	}
	close(fds[0]);
	int ws;
	waitpid(pid, &ws, 0);
	s.total_ms = now_ms() - t0;
	bool ok = p->markers ? seen_init && strstr(out, EXIT_MARK)
			     : WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
	if (verbose || !ok)
		fprintf(stderr, "%s: exit %d, output:\n%s\n", p->name,
			WIFEXITED(ws) ? WEXITSTATUS(ws) : -1, out);
	if (!ok)
		return -1;
	p->s[p->n++] = s;
	return 0;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Median, min and max of one field over a peer's runs. */
static void stats(const struct peer *p, size_t off, double *med, double *min, double *max)
{
	double v[MAX_RUNS];
	for (int i = 0; i < p->n; i++)
		v[i] = *(const double *)((const char *)&p->s[i] + off);
	qsort(v, (size_t)p->n, sizeof(double), cmp);
	*min = v[0];
	*max = v[p->n - 1];
	*med = p->n % 2 ? v[p->n / 2] : (v[p->n / 2 - 1] + v[p->n / 2]) / 2;
}

static void row(const char *label, const char *unit, const struct peer *a, const struct peer *b,
		size_t off)
{
	double am, amin, amax, bm, bmin, bmax;
	stats(a, off, &am, &amin, &amax);
	stats(b, off, &bm, &bmin, &bmax);
	printf("%-38s %9.1f %-3s [%7.1f-%7.1f] %9.1f %-3s [%7.1f-%7.1f]  %6.3f\n", label, am, unit,
	       amin, amax, bm, unit, bmin, bmax, bm > 0 ? am / bm : 0.0);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench-boot --vmm PATH --kernel PATH --initrd PATH [--qemu PATH] "
			"[--cli PATH] [--runs N] [--memory MiB] [--cpus N] [--verbose]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	const char *vmm = NULL, *kernel = NULL, *initrd = NULL, *qemu = "qemu-system-x86_64";
	const char *cli = NULL;
	int runs = 5, memory = 256, cpus = 1;
	bool verbose = false;
	static const struct option opts[] = {
		{ "vmm", required_argument, NULL, 'v' }, { "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' }, { "qemu", required_argument, NULL, 'q' },
		{ "runs", required_argument, NULL, 'n' }, { "memory", required_argument, NULL, 'm' },
		{ "cpus", required_argument, NULL, 'c' }, { "verbose", no_argument, NULL, 'V' },
		{ "cli", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'v': vmm = optarg; break;
		case 'k': kernel = optarg; break;
		case 'i': initrd = optarg; break;
		case 'q': qemu = optarg; break;
		case 'n': runs = atoi(optarg); break;
		case 'm': memory = atoi(optarg); break;
		case 'c': cpus = atoi(optarg); break;
		case 'V': verbose = true; break;
		case 'l': cli = optarg; break;
		default: usage();
		}
	}
	if (!vmm || !kernel || !initrd || runs < 1 || runs > MAX_RUNS || memory < 32 || cpus < 1)
		usage();

	static const char cmdline[] = "console=ttyS0 quiet -- true";
	char mem[16], smp[16];
	snprintf(mem, sizeof(mem), "%d", memory);
	snprintf(smp, sizeof(smp), "%d", cpus);
	char *cv_argv[] = { (char *)vmm, "--kernel", (char *)kernel, "--initrd", (char *)initrd,
			    "--cmdline", (char *)cmdline, "--memory", mem, "--cpus", smp,
			    "--console", "stdio", NULL };
	/* microvm with the settings its documentation recommends for fast boot. */
	char *q_argv[] = { (char *)qemu, "-M", "microvm,x-option-roms=off,rtc=off", "-enable-kvm",
			   "-cpu", "host", "-m", mem, "-smp", smp, "-nodefaults", "-no-user-config",
			   "-nographic", "-serial", "stdio", "-no-reboot", "-kernel", (char *)kernel,
			   "-initrd", (char *)initrd, "-append", (char *)cmdline, NULL };
	char *cli_argv[] = { (char *)cli, "run", "--kernel", (char *)kernel, "--initrd",
			     (char *)initrd, "--memory", mem, "--cpus", smp, "--", "true", NULL };
	struct peer cv = { .name = "cvisor-vmm", .argv = cv_argv, .markers = true };
	struct peer qm = { .name = "qemu microvm", .argv = q_argv, .markers = true };
	struct peer cr = { .name = "cvisor run", .argv = cli_argv };
	/* Alternate so that drift in the machine's load spreads over every peer alike. */
	struct peer *peers[3] = { &cv, &qm, &cr };
	int npeers = cli ? 3 : 2;
	uint64_t guest_bytes = (uint64_t)memory << 20;

	printf("bench-boot: %d runs each, alternating; %d MiB, %d vCPU, kernel %s\n", runs, memory,
	       cpus, kernel);
	fflush(stdout);
	for (int i = 0; i < runs; i++) {
		struct peer *order[3];
		for (int k = 0; k < npeers; k++)
			order[k] = peers[i % 2 ? npeers - 1 - k : k];
		for (int k = 0; k < npeers; k++) {
			if (run_once(order[k], guest_bytes, verbose) < 0) {
				fprintf(stderr, "bench-boot: %s run %d failed\n", order[k]->name, i);
				return 1;
			}
			const struct sample *s = &order[k]->s[order[k]->n - 1];
			if (!order[k]->markers) {
				printf("  run %d %-13s total %8.1f ms\n", i, order[k]->name, s->total_ms);
				fflush(stdout);
				continue;
			}
			printf("  run %d %-13s first output %8.1f ms, total %8.1f ms, RSS beyond guest "
			       "RAM %7.0f KiB\n", i, order[k]->name, s->first_ms, s->total_ms,
			       s->rss_extra_kib);
			fflush(stdout);
		}
	}
	printf("\n%-38s %-34s %-34s %s\n", "median [min-max]", "cvisor-vmm", "qemu -M microvm",
	       "cvisor/qemu");
	row("(a) start -> init's first output", "ms", &cv, &qm, offsetof(struct sample, first_ms));
	row("(b) start -> finished run", "ms", &cv, &qm, offsetof(struct sample, total_ms));
	row("(c) VMM RSS beyond guest RAM", "KiB", &cv, &qm, offsetof(struct sample, rss_extra_kib));
	row("    (total RSS at that moment)", "KiB", &cv, &qm, offsetof(struct sample, rss_total_kib));
	if (cli)
		row("(d) `cvisor run -- true` vs QEMU (b)", "ms", &cr, &qm,
		    offsetof(struct sample, total_ms));
	return 0;
}
