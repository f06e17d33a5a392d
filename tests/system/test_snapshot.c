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

#include "script.h"

const struct script_suite script_suite = { .tag = "snaptest", .vm_seconds = 400 };

TestSuite(snapshot, .fini = remove_work, .timeout = 900);

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
 * The host side (after the common head of script.h). Prints KEY value lines; every run is
 * bounded. Sockets and snapshot files live in the VMM host's /dev/shm (tmpfs: the memory file
 * is mapped from there).
 */
static const char host_body[] =
	"cleanup() { kill $(jobs -p) 2>/dev/null; sleep 1; rm -rf \"$S\"; }\n"
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
	guest_cpio("g", guest_script);
	struct sys_result r = host_script("host.sh", host_body);

	expect_num(&r, "RUNNING-SNAP", "==", 400, "a snapshot of a running VM is refused");
	expect_num(&r, "RUNNING-SNAP-FAULT", "==", 1, "with a fault_message");
	expect_num(&r, "PAUSE", "==", 204, "PATCH /vm Paused");
	expect_num(&r, "PAUSED-GROWTH", "==", 0, "the console is silent while paused");
	expect_num(&r, "SNAP", "==", 204, "PUT /snapshot/create");
	expect_num(&r, "MEM-BYTES", "==", 256LL << 20, "the memory file holds all guest RAM");
	expect_num(&r, "STATE-BYTES", ">", 0, "state file");
	long long last = num(&r, "LAST");
	cr_assert_geq(last, 12, "%s", r.out);

	expect_num(&r, "MISMATCH-STATUS", "==", 64, "restore with other devices is a usage error");
	expect_num(&r, "MISMATCH-LINES", "==", 1, "one line says why");
	char msg[512];
	field(&r, "MISMATCH-MSG", msg);
	cr_assert(strstr(msg, "device") != NULL, "%s", msg);
	expect_num(&r, "CORRUPT-STATUS", "==", 65, "a damaged state file is a data error");
	field(&r, "CORRUPT-MSG", msg);
	cr_assert(strstr(msg, "CRC") != NULL, "%s", msg);

	char wrote[80], sum[80], key[32];
	field(&r, "WROTE", wrote);
	cr_assert_eq(strlen(wrote), 64, "%s", r.out);
	for (int n = 1; n <= 2; n++) {
		snprintf(key, sizeof(key), "RESTORE%d-STATUS", n);
		expect_num(&r, key, "==", 0, "the restored guest powers off normally");
		snprintf(key, sizeof(key), "DONE%d", n);
		expect_num(&r, key, "==", 1, "the guest's script ran to its end");
		snprintf(key, sizeof(key), "FIRST%d", n);
		long long first = num(&r, key);
		/* +2: the snapshot cut a line, which the restored guest then finishes. */
		cr_assert(first > 0 && first <= last + 2,
			  "restore %d: counting resumed at %lld, the snapshot was at %lld\n%s", n,
			  first, last, r.out);
		snprintf(key, sizeof(key), "SEQ%d-BAD", n);
		expect_num(&r, key, "==", 0, "the count has no gap and no restart across the restore");
		snprintf(key, sizeof(key), "SEQ%d-N", n);
		expect_num(&r, key, "==", 81, "0..80 counted exactly once");
		snprintf(key, sizeof(key), "SUMS%d", n);
		field(&r, key, sum);
		cr_assert_str_eq(sum, wrote, "restore %d: the file read back from the disk differs", n);
		snprintf(key, sizeof(key), "SUMCOUNT%d", n);
		expect_num(&r, key, ">=", 1, "the file was re-read after the restore");
		/* Log lines: one per 10 counts from 5 to 75; all of them, including after the restore. */
		snprintf(key, sizeof(key), "LOGLINES%d", n);
		expect_num(&r, key, "==", 8, "the disk took the writes made after the restore");
	}
	char before[80], after[80];
	field(&r, "MEM-SHA-BEFORE", before);
	field(&r, "MEM-SHA-AFTER", after);
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
