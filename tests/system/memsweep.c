/*
 * memsweep: a guest program for the live-migration test and bench (static, packed into the
 * guest's initramfs). It rewrites a memory region continuously and checks it as it goes, so a
 * page that a migration lost or delivered stale is caught by the guest itself.
 *
 *   memsweep MiB SECONDS [REPORT_MS]
 *   memsweep fill MiB          fill MiB with non-zero data, then sleep (static memory)
 *   memsweep tick MS SECONDS   print "tick N" every MS (for timing the migration from outside)
 *
 * Sweep k writes, into every 4 KiB page p, k (word 0) and k ^ p ^ salt (word 1); before that
 * it checks that every page holds sweep k-1 and that the sum of word 0 over the region (a
 * checksum of the whole region) is (k-1) * pages. Prints "memsweep sweep K" every REPORT_MS
 * (default 500) of guest time, "memsweep CORRUPT ..." and exits 1 on the first mismatch, and
 * "memsweep ok K" and exits 0 after SECONDS.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <time.h>

#define SALT 0x5eed5eed5eed5eedULL

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fill(uint64_t mib)
{
	uint64_t *m = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (m == MAP_FAILED) {
		perror("memsweep: mmap");
		return 1;
	}
	uint64_t x = 88172645463325252ULL;
	for (uint64_t i = 0; i < (mib << 20) / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		m[i] = x;
	}
	printf("memsweep filled %llu MiB\n", (unsigned long long)mib);
	fflush(stdout);
	for (;;)
		pause();
}

static int tick(double ms, double seconds)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	double start = now_s();
	struct timespec ts = { (time_t)(ms / 1e3), (long)((ms - 1e3 * (double)(time_t)(ms / 1e3)) * 1e6) };
	for (unsigned long n = 0; now_s() - start < seconds; n++) {
		printf("tick %lu\n", n);
		nanosleep(&ts, NULL);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "fill") == 0)
		return fill(strtoull(argv[2], NULL, 10));
	if (argc == 4 && strcmp(argv[1], "tick") == 0)
		return tick(strtod(argv[2], NULL), strtod(argv[3], NULL));
	if (argc < 3) {
		fprintf(stderr, "usage: memsweep MiB SECONDS [REPORT_MS]\n");
		return 2;
	}
	uint64_t mib = strtoull(argv[1], NULL, 10);
	double seconds = strtod(argv[2], NULL);
	double report = argc > 3 ? strtod(argv[3], NULL) / 1e3 : 0.5;
	if (mib == 0 || mib > 1 << 20 || seconds <= 0 || report <= 0) {
		fprintf(stderr, "memsweep: bad arguments\n");
		return 2;
	}
	uint64_t pages = mib * 256;
	volatile uint64_t *m = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (m == MAP_FAILED) {
		perror("memsweep: mmap");
		return 1;
	}
	for (uint64_t p = 0; p < pages; p++) {
		m[p * 512] = 0;
		m[p * 512 + 1] = p ^ SALT;
	}
	double start = now_s(), next = start + report;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("memsweep start %llu MiB\n", (unsigned long long)mib);
	uint64_t k;
	for (k = 1;; k++) {
		uint64_t sum = 0;
		for (uint64_t p = 0; p < pages; p++) {
			uint64_t w0 = m[p * 512], w1 = m[p * 512 + 1];
			sum += w0;
			if (w0 != k - 1 || w1 != ((k - 1) ^ p ^ SALT)) {
				printf("memsweep CORRUPT sweep %llu page %llu: 0x%llx 0x%llx\n",
				       (unsigned long long)k, (unsigned long long)p,
				       (unsigned long long)w0, (unsigned long long)w1);
				return 1;
			}
			m[p * 512] = k;
			m[p * 512 + 1] = k ^ p ^ SALT;
		}
		if (sum != (k - 1) * pages) {
			printf("memsweep CORRUPT sweep %llu: checksum %llu, expected %llu\n",
			       (unsigned long long)k, (unsigned long long)sum,
			       (unsigned long long)((k - 1) * pages));
			return 1;
		}
		double t = now_s();
		if (t >= next) {
			printf("memsweep sweep %llu\n", (unsigned long long)k);
			next = t + report;
		}
		if (t - start >= seconds)
			break;
	}
	printf("memsweep ok %llu\n", (unsigned long long)k);
	return 0;
}
