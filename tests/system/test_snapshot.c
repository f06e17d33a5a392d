/*
 * Snapshot and restore of a real Linux guest, end to end through the control API, where guests
 * boot (the session's emulated host if there is one). The guest counts on its console, wrote a
 * file to an ext4 virtio disk before the snapshot and re-reads it from the disk (caches dropped)
 * as it counts; it powers off by itself at a fixed count. cvisor-vmm is paused, snapshotted and
 * killed; two fresh cvisor-vmm processes are restored from the same files (each with its own
 * copy of the disk as it was at the snapshot). What is checked is what the guest shows: the
 * counter never restarts and has no gap across the snapshot, the file's digest read from the
 * disk after the restore equals the one written before, the disk takes new writes, and the
 * restored guest ends with a normal power-off (exit status 0). Refusals are checked too: a
 * snapshot of a running VM (400), a restore with other device options or a damaged state file
 * (one-line errors, distinct exit statuses).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sys.h"

#ifndef CVISOR_SOURCE_DIR
#error "CVISOR_SOURCE_DIR must name the source tree (set by tests/meson.build)"
#endif

static char work_dir[64];

static const char *work(void)
{
	if (!work_dir[0]) {
		snprintf(work_dir, sizeof(work_dir), "/tmp/cvisor-snaptest-XXXXXX");
		cr_assert_not_null(mkdtemp(work_dir), "mkdtemp");
	}
	return work_dir;
}

static void remove_work(void)
{
	if (!work_dir[0])
		return;
	struct sys_result r = sys_host("rm -rf '%s'", work_dir);
	sys_free(&r);
	work_dir[0] = 0;
}

TestSuite(snapshot, .fini = remove_work, .timeout = 900);

static void put(const char *name, const char *text, mode_t mode)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", work(), name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "create %s", path);
	bool ok = fputs(text, f) >= 0;
	ok = fclose(f) == 0 && ok;
	cr_assert(ok, "write %s", path);
	cr_assert_eq(chmod(path, mode), 0, "chmod %s", path);
}

#define host_ok(...)                                                                      \
	do {                                                                              \
		struct sys_result hr_ = sys_host(__VA_ARGS__);                            \
		cr_assert_eq(hr_.status, 0, "host command failed (%d): %s%s", hr_.status, \
			     hr_.out, hr_.err);                                           \
		sys_free(&hr_);                                                           \
	} while (0)

/* The value of the first output line "KEY value". */
static bool field_opt(const struct sys_result *r, const char *key, char *buf, size_t len)
{
	size_t k = strlen(key);
	for (const char *p = r->out; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		if (n > k && strncmp(p, key, k) == 0 && p[k] == ' ') {
			const char *v = p + k + 1;
			size_t vn = n - k - 1;
			while (vn && (v[vn - 1] == '\r' || v[vn - 1] == ' '))
				vn--;
			if (vn >= len)
				vn = len - 1;
			memcpy(buf, v, vn);
			buf[vn] = 0;
			return true;
		}
		p = eol ? eol + 1 : NULL;
	}
	return false;
}

static void field(const struct sys_result *r, const char *key, char *buf, size_t len)
{
	if (!field_opt(r, key, buf, len))
		cr_assert_fail("no '%s' line in the output:\n%s\n-- stderr:\n%s", key, r->out, r->err);
}

static long long num(const struct sys_result *r, const char *key)
{
	char buf[64], *end;
	field(r, key, buf, sizeof(buf));
	long long v = strtoll(buf, &end, 10);
	cr_assert(end != buf && *end == 0, "%s is not a number: '%s'\n%s", key, buf, r->out);
	return v;
}

#define expect_num(r, key, cond_op, want, why)                                                  \
	do {                                                                                    \
		long long v_ = num((r), (key));                                                 \
		cr_assert(v_ cond_op (want), "%s: %s is %lld, expected %s %lld\n-- output:\n%s" \
			  "\n-- stderr:\n%s", (why), (key), v_, #cond_op, (long long)(want),     \
			  (r)->out, (r)->err);                                                   \
	} while (0)

/* The guest: write a file, then count; every 10th count re-read it from the disk and log. */
static const char guest_script[] =
	"#!/bin/sh\n"
	"mount -t ext4 /dev/vda /mnt || { echo MOUNT-FAILED; exit 1; }\n"
	"dd if=/dev/urandom of=/mnt/data bs=65536 count=16 2>/dev/null\n"
	"sync\n"
	"echo \"WROTE $(sha256sum < /mnt/data | cut -c1-64)\"\n"
	"i=0\n"
	"while [ $i -le 80 ]; do\n"
	"  echo \"COUNT $i\"\n"
	"  if [ $((i % 10)) -eq 5 ]; then\n"
	"    echo $i >> /mnt/log; sync; echo 3 > /proc/sys/vm/drop_caches\n"
	"    echo \"SUM $i $(sha256sum < /mnt/data | cut -c1-64) LOG $(wc -l < /mnt/log)\"\n"
	"  fi\n"
	"  i=$((i + 1)); sleep 0.2\n"
	"done\n"
	"umount /mnt\n"
	"echo DONE\n";

/*
 * The host side. Prints KEY value lines; every run is bounded. Sockets and snapshot files live
 * in the VMM host's /dev/shm (tmpfs: the memory file is mapped from there).
 */
static const char host_script[] =
	"set -u\n"
	"export PATH=$PATH:/usr/sbin:/sbin\n"
	"S=$(mktemp -d /dev/shm/cvisor-snaptest.XXXXXX) || exit 99\n"
	"trap 'kill $(jobs -p) 2>/dev/null; sleep 1; rm -rf \"$S\"' EXIT\n"
	"api() {   # api SOCK METHOD PATH BODY: prints the status code, the body goes to $S/resp\n"
	"  rm -f \"$S/resp\"; curl -s -m 60 -o \"$S/resp\" -w '%{http_code}' --unix-socket \"$1\" -X \"$2\" \"http://localhost$3\" -d \"$4\"\n"
	"}\n"
	"waitfor() {   # waitfor FILE PATTERN [PID]: up to ~240 s, or until PID is gone\n"
	"  w=0; while ! grep -q \"$2\" \"$1\" 2>/dev/null; do\n"
	"    w=$((w + 1)); [ $w -ge 480 ] && return 1\n"
	"    [ -n \"${3:-}\" ] && ! kill -0 \"$3\" 2>/dev/null && return 1\n"
	"    sleep 0.5\n"
	"  done\n"
	"}\n"
	"now() { date +%s%N; }\n"
	"DEV=\"--disk $W/disk.img --rng --vsock cid=7,uds=$S/v.sock --balloon=stats=1\"\n"
	"t0=$(now)\n"
	"CVISOR_VMM_TRACE=snapshot \"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --initrd \"$B/initramfs.cpio\" "
	"--initrd \"$W/g.cpio\" --memory 256 $DEV --api-sock \"$S/api.sock\" "
	"--console \"file:$S/console\" --cmdline \"console=ttyS0 quiet -- /bin/sh /t.sh\" "
	"2>\"$S/err0\" &\n"
	"vmm=$!\n"
	"waitfor \"$S/console\" 'COUNT 0' $vmm && echo \"BOOT-MS $(( ($(now) - t0) / 1000000 ))\"\n"
	"waitfor \"$S/console\" 'COUNT 12' $vmm || { echo BOOT-TIMEOUT; cat \"$S/console\" \"$S/err0\"; exit 1; }\n"
	"BODY=\"{\\\"snapshot_type\\\": \\\"Full\\\", \\\"snapshot_path\\\": \\\"$S/state\\\", \\\"mem_file_path\\\": \\\"$S/mem\\\"}\"\n"
	"echo \"RUNNING-SNAP $(api \"$S/api.sock\" PUT /snapshot/create \"$BODY\")\"\n"
	"grep -q fault_message \"$S/resp\" && echo RUNNING-SNAP-FAULT 1\n"
	"echo \"PAUSE $(api \"$S/api.sock\" PATCH /vm '{\"state\": \"Paused\"}')\"\n"
	"a=$(grep -c COUNT \"$S/console\"); sleep 2; b=$(grep -c COUNT \"$S/console\")\n"
	"echo \"PAUSED-GROWTH $((b - a))\"\n"
	"t0=$(now)\n"
	"echo \"SNAP $(api \"$S/api.sock\" PUT /snapshot/create \"$BODY\")\"\n"
	"t1=$(now)\n"
	"echo \"SNAP-MS $(( (t1 - t0) / 1000000 ))\"\n"
	"echo \"STATE-BYTES $(stat -c %s \"$S/state\")\"\n"
	"echo \"MEM-BYTES $(stat -c %s \"$S/mem\")\"\n"
	"echo \"MEM-DISK-KIB $(du -k \"$S/mem\" | cut -f1)\"\n"
	"sed -n 's/.*snapshot: memory file \\([0-9.]*\\) ms, state file \\([0-9.]*\\) ms.*/SNAP-VMM-MS \\1 \\2/p' \"$S/err0\"\n"
	"cp --sparse=always \"$W/disk.img\" \"$W/disk-at-snapshot.img\"\n"
	"kill -9 $vmm; wait $vmm 2>/dev/null\n"
	"grep -o 'COUNT [0-9]*' \"$S/console\" | tail -n 1 | sed 's/COUNT/LAST/'\n"
	"grep WROTE \"$S/console\" | head -n 1\n"
	"sha256sum < \"$S/mem\" | cut -c1-64 | sed 's/^/MEM-SHA-BEFORE /'\n"
	/* Refusals, before any restore: another device list, a damaged state file. */
	"\"$B/cvisor-vmm\" --restore \"$S/state\" --memory-file \"$S/mem\" --rng --console none "
	"2>\"$S/e1\"; echo \"MISMATCH-STATUS $?\"\n"
	"echo \"MISMATCH-LINES $(wc -l < \"$S/e1\")\"; sed 's/^/MISMATCH-MSG /' \"$S/e1\"\n"
	"cp \"$S/state\" \"$S/bad\"; printf 'X' | dd of=\"$S/bad\" bs=1 seek=100 conv=notrunc 2>/dev/null\n"
	"\"$B/cvisor-vmm\" --restore \"$S/bad\" --memory-file \"$S/mem\" --console none $DEV "
	"2>\"$S/e2\"; echo \"CORRUPT-STATUS $?\"; sed 's/^/CORRUPT-MSG /' \"$S/e2\"\n"
	/* Two restores from the same files, each with the disk as it was at the snapshot. */
	"for n in 1 2; do\n"
	"  cp --sparse=always \"$W/disk-at-snapshot.img\" \"$W/disk.img\"\n"
	"  t0=$(now)\n"
	"  CVISOR_VMM_TRACE=snapshot timeout -k 5 400 \"$B/cvisor-vmm\" --restore \"$S/state\" --memory-file \"$S/mem\" $DEV "
	"--api-sock \"$S/api$n.sock\" --console \"file:$S/console$n\" 2>\"$S/err$n\" &\n"
	"  r=$!\n"
	"  waitfor \"$S/console$n\" 'COUNT' $r && echo \"RESTORE$n-MS $(( ($(now) - t0) / 1000000 ))\"\n"
	"  wait $r; echo \"RESTORE$n-STATUS $?\"\n"
	"  cat \"$S/console\" \"$S/console$n\" | grep -o 'COUNT [0-9]*' | awk '\n"
	"    { if ($2 != NR - 1) bad++ } END { print \"SEQ" "'$n'" "-BAD\", bad + 0; print \"SEQ" "'$n'" "-N\", NR }'\n"
	"  grep -o 'COUNT [0-9]*' \"$S/console$n\" | head -n 1 | sed \"s/COUNT/FIRST$n/\"\n"
	"  grep '^SUM' \"$S/console$n\" | awk '{print $3}' | sort -u | sed \"s/^/SUMS$n /\" | head -n 2\n"
	"  echo \"SUMCOUNT$n $(grep -c '^SUM' \"$S/console$n\")\"\n"
	"  grep '^SUM' \"$S/console$n\" | tail -n 1 | awk '{print \"LOGLINES" "'$n'" "\", $5}'\n"
	"  grep -q '^DONE' \"$S/console$n\" && echo \"DONE$n 1\"\n"
	"  sed -n \"s/.*restore: state loaded in \\([0-9.]*\\) ms.*/LOAD$n-MS \\1/p\" \"$S/err$n\"\n"
	"  grep -v 'restore: state loaded' \"$S/err$n\" | sed \"s/^/ERR$n /\"\n"
	"done\n"
	"sha256sum < \"$S/mem\" | cut -c1-64 | sed 's/^/MEM-SHA-AFTER /'\n";

Test(snapshot, counter_and_disk_survive_two_restores)
{
	host_ok("truncate -s 64M '%s/disk.img' && mkfs.ext4 -q -F '%s/disk.img'", work(), work());
	host_ok("mkdir -p '%s/g.d'", work());
	put("g.d/t.sh", guest_script, 0755);
	host_ok("cd '%s/g.d' && echo t.sh | cpio -o -H newc --quiet -R 0:0 > '%s/g.cpio'", work(),
		work());
	put("host.sh", host_script, 0755);
	struct sys_result r = sys_guest_host("B='%s' K='%s' W='%s' sh '%s/host.sh'", sys_build(),
					     sys_kernel_dir(), work(), work());

	expect_num(&r, "RUNNING-SNAP", ==, 400, "a snapshot of a running VM is refused");
	expect_num(&r, "RUNNING-SNAP-FAULT", ==, 1, "with a fault_message");
	expect_num(&r, "PAUSE", ==, 204, "PATCH /vm Paused");
	expect_num(&r, "PAUSED-GROWTH", ==, 0, "the console is silent while paused");
	expect_num(&r, "SNAP", ==, 204, "PUT /snapshot/create");
	expect_num(&r, "MEM-BYTES", ==, 256LL << 20, "the memory file holds all guest RAM");
	expect_num(&r, "STATE-BYTES", >, 0, "state file");
	long long last = num(&r, "LAST");
	cr_assert_geq(last, 12, "%s", r.out);

	expect_num(&r, "MISMATCH-STATUS", ==, 64, "restore with other devices is a usage error");
	expect_num(&r, "MISMATCH-LINES", ==, 1, "one line says why");
	char msg[512];
	field(&r, "MISMATCH-MSG", msg, sizeof(msg));
	cr_assert(strstr(msg, "device") != NULL, "%s", msg);
	expect_num(&r, "CORRUPT-STATUS", ==, 65, "a damaged state file is a data error");
	field(&r, "CORRUPT-MSG", msg, sizeof(msg));
	cr_assert(strstr(msg, "CRC") != NULL, "%s", msg);

	char wrote[80], sum[80], key[32];
	field(&r, "WROTE", wrote, sizeof(wrote));
	cr_assert_eq(strlen(wrote), 64, "%s", r.out);
	for (int n = 1; n <= 2; n++) {
		snprintf(key, sizeof(key), "RESTORE%d-STATUS", n);
		expect_num(&r, key, ==, 0, "the restored guest powers off normally");
		snprintf(key, sizeof(key), "DONE%d", n);
		expect_num(&r, key, ==, 1, "the guest's script ran to its end");
		snprintf(key, sizeof(key), "FIRST%d", n);
		long long first = num(&r, key);
		/* +2: the snapshot cut a line, which the restored guest then finishes. */
		cr_assert(first > 0 && first <= last + 2,
			  "restore %d: counting resumed at %lld, the snapshot was at %lld\n%s", n,
			  first, last, r.out);
		snprintf(key, sizeof(key), "SEQ%d-BAD", n);
		expect_num(&r, key, ==, 0, "the count has no gap and no restart across the restore");
		snprintf(key, sizeof(key), "SEQ%d-N", n);
		expect_num(&r, key, ==, 81, "0..80 counted exactly once");
		snprintf(key, sizeof(key), "SUMS%d", n);
		field(&r, key, sum, sizeof(sum));
		cr_assert_str_eq(sum, wrote, "restore %d: the file read back from the disk differs", n);
		snprintf(key, sizeof(key), "SUMCOUNT%d", n);
		expect_num(&r, key, >=, 1, "the file was re-read after the restore");
		/* Log lines: one per 10 counts from 5 to 75; all of them, including after the restore. */
		snprintf(key, sizeof(key), "LOGLINES%d", n);
		expect_num(&r, key, ==, 8, "the disk took the writes made after the restore");
	}
	char before[80], after[80];
	field(&r, "MEM-SHA-BEFORE", before, sizeof(before));
	field(&r, "MEM-SHA-AFTER", after, sizeof(after));
	cr_assert_str_eq(before, after, "restores must never modify the memory file");

	/* Figures for the notes (not asserted: the emulated host's speed varies). */
	char vmm_ms[64] = "?", load1[32] = "?", load2[32] = "?";
	field_opt(&r, "SNAP-VMM-MS", vmm_ms, sizeof(vmm_ms));
	field_opt(&r, "LOAD1-MS", load1, sizeof(load1));
	field_opt(&r, "LOAD2-MS", load2, sizeof(load2));
	cr_log_info("256 MiB guest: boot to first output %lld ms; snapshot create %lld ms through "
		    "the API (memory file, state file ms in the VMM: %s), state %lld bytes, memory "
		    "file %lld KiB on disk; restore: state loaded in %s / %s ms, process start to "
		    "first console output %lld / %lld ms", num(&r, "BOOT-MS"), num(&r, "SNAP-MS"),
		    vmm_ms, num(&r, "STATE-BYTES"), num(&r, "MEM-DISK-KIB"), load1, load2,
		    num(&r, "RESTORE1-MS"), num(&r, "RESTORE2-MS"));
	sys_free(&r);
}
