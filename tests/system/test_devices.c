/*
 * cvisor's virtual hardware seen from real Linux guests, end to end: virtio-blk (data persists
 * across runs, read-only disks, several disks with serials, the root file system on a disk,
 * DISCARD and WRITE_ZEROES punching holes in the image), virtio-net on a TAP (MAC, ping, 32 MiB
 * each way with SHA-256), virtio-vsock both ways with checksums, virtio-rng, virtio-balloon
 * driven through the control API, and Debian's stock cloud kernel whose virtio drivers are
 * modules. Every check compares what one side did with what the other side observed: bytes in
 * the host's image file, digests computed on both ends, the guest's /proc/meminfo.
 *
 * Shape of a test: the C code writes a host-side script (and a guest script) into a work
 * directory under /tmp, then runs the host script where guests can boot (sys_guest_host: in the
 * session's emulated host if there is one). Host scripts keep sockets, TAPs and tmpfs images
 * inside that host (/dev/shm) and remove them on exit; they print "KEY value" lines that the
 * test reads back. Guest boots are slow in the emulated host, so related checks share a boot.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "script.h"
#include "util.h"

const struct script_suite script_suite = {
	.tag = "devtest", .peer = "devices_peer.py", .vm_seconds = 240,
};

TestSuite(devices, .fini = remove_work, .timeout = 300);

/* ------------------------------------------------------------------------------------------ */
/* virtio-blk */

Test(devices, blk_file_written_in_one_run_is_read_in_the_next)
{
	host_ok("truncate -s 64M '%s/disk.img' && mkfs.ext4 -q -F '%s/disk.img'", work(), work());
	struct sys_result r = host_script("persist.sh",
		"vm \"$B/cvisor\" run --disk \"$W/disk.img\" -- sh -c '\n"
		"  mount -t ext4 /dev/vda /mnt || exit 1\n"
		"  dd if=/dev/urandom of=/mnt/data bs=65536 count=32 2>/dev/null\n"
		"  echo \"WROTE $(sha256sum < /mnt/data | cut -d\" \" -f1)\"\n"
		"  sync; umount /mnt'\n"
		"echo \"RUN1 $?\"\n"
		"vm \"$B/cvisor\" run --disk \"$W/disk.img\" -- sh -c '\n"
		"  mount -t ext4 -o ro /dev/vda /mnt || exit 1\n"
		"  echo \"READ $(sha256sum < /mnt/data | cut -d\" \" -f1)\"\n"
		"  umount /mnt'\n"
		"echo \"RUN2 $?\"\n");
	expect_num(&r, "RUN1", "==", 0, "first run");
	expect_num(&r, "RUN2", "==", 0, "second run");
	char wrote[80];
	field(&r, "WROTE", wrote);
	cr_assert(is_sha256(wrote), "%s", r.out);
	expect(&r, "READ", wrote, "the second run reads what the first wrote");
	sys_free(&r);

	/* The host's own ext4 tools see the same file in a consistent file system. */
	r = sys_host("debugfs -R 'cat /data' '%s/disk.img' 2>/dev/null | sha256sum | cut -d' ' -f1",
		     work());
	cr_assert_eq(r.status, 0);
	cr_assert_eq(strncmp(r.out, wrote, 64), 0, "host reads %s, guest wrote %s", r.out, wrote);
	sys_free(&r);
	host_ok("e2fsck -fn '%s/disk.img' >/dev/null 2>&1", work());
}

Test(devices, blk_read_only_disk_refuses_writes)
{
	host_ok("head -c 4194304 /dev/urandom > '%s/ro.img'", work());
	struct sys_result h = sys_host("sha256sum < '%s/ro.img' | cut -d' ' -f1", work());
	char before[80];
	snprintf(before, sizeof(before), "%.64s", h.out);
	sys_free(&h);
	cr_assert(is_sha256(before), "sha256sum of the image: '%s'", before);

	struct sys_result r = host_script("ro.sh",
		"vm \"$B/cvisor\" run --disk \"$W/ro.img,ro\" -- sh -c '\n"
		"  echo \"RO $(cat /sys/block/vda/ro)\"\n"
		"  dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync 2>/dev/null; echo \"DD $?\"\n"
		"  blkdiscard /dev/vda 2>/dev/null; echo \"DISCARD $?\"\n"
		"  echo \"READ $(sha256sum < /dev/vda | cut -d\" \" -f1)\"'\n"
		"echo \"RUN $?\"\n");
	expect_num(&r, "RUN", "==", 0, "the guest run");
	expect_num(&r, "RO", "==", 1, "the guest sees the disk read-only");
	expect_num(&r, "DD", "!=", 0, "dd to a read-only disk must fail");
	expect_num(&r, "DISCARD", "!=", 0, "discard on a read-only disk must fail");
	expect(&r, "READ", before, "the guest reads the image's bytes");
	sys_free(&r);

	h = sys_host("sha256sum < '%s/ro.img' | cut -d' ' -f1", work());
	cr_assert_eq(strncmp(h.out, before, 64), 0, "image changed: %s -> %s", before, h.out);
	sys_free(&h);
}

Test(devices, blk_two_disks_keep_order_serials_and_sizes)
{
	host_ok("truncate -s 1M '%s/a.img' && truncate -s 3M '%s/b.img'", work(), work());
	struct sys_result r = host_script("two.sh",
		"vm \"$B/cvisor\" run --disk \"$W/a.img,serial=cvisor-alpha\" "
		"--disk \"$W/b.img,serial=cvisor-beta-2\" -- sh -c '\n"
		"  for d in vda vdb; do\n"
		"    echo \"SERIAL-$d $(cat /sys/block/$d/serial)\"\n"
		"    echo \"SECTORS-$d $(cat /sys/block/$d/size)\"\n"
		"    echo \"written to $d\" | dd of=/dev/$d conv=fsync 2>/dev/null; echo \"WRITE-$d $?\"\n"
		"  done'\n"
		"echo \"RUN $?\"\n");
	expect_num(&r, "RUN", "==", 0, "the guest run");
	expect(&r, "SERIAL-vda", "cvisor-alpha", "first disk");
	expect(&r, "SERIAL-vdb", "cvisor-beta-2", "second disk");
	expect_num(&r, "SECTORS-vda", "==", 2048, "size of the first disk");
	expect_num(&r, "SECTORS-vdb", "==", 6144, "size of the second disk");
	expect_num(&r, "WRITE-vda", "==", 0, "write to the first disk");
	expect_num(&r, "WRITE-vdb", "==", 0, "write to the second disk");
	sys_free(&r);

	/* Each write landed in its own image, at offset 0. */
	size_t len;
	char *a = slurp_work("a.img", 64, &len);
	cr_assert_eq(strncmp(a, "written to vda\n", 15), 0, "a.img starts with '%.15s'", a);
	char *b = slurp_work("b.img", 64, &len);
	cr_assert_eq(strncmp(b, "written to vdb\n", 15), 0, "b.img starts with '%.15s'", b);
	free(a);
	free(b);
}

/* The guest's whole root file system is an ext4 image: no initramfs, our kernel mounts vda. */
Test(devices, blk_root_filesystem_on_a_disk_boots_without_initramfs)
{
	host_ok("mkdir -p '%s/root/bin' '%s/root/dev' '%s/root/proc' && "
		"cp /bin/busybox '%s/root/bin/busybox'", work(), work(), work(), work());
	put("root/init",
	    "#!/bin/busybox sh\n"
	    "bb=/bin/busybox\n"
	    "$bb mount -t proc proc /proc\n"
	    "echo \"ROOT $($bb awk '$2 == \"/\" {print $1, $3, substr($4, 1, 2)}' /proc/mounts)\"\n"
	    "token=$($bb cat /proc/sys/kernel/random/uuid)\n"
	    "echo \"written by the guest $token\" > /file\n"
	    "$bb sync\n"
	    "echo \"ROOTFS-MARKER $token\"\n"
	    "$bb poweroff -f\n", 0755);
	host_ok("truncate -s 32M '%s/root.ext4' && mkfs.ext4 -q -F -d '%s/root' '%s/root.ext4'",
		work(), work(), work());
	struct sys_result r = host_script("rootfs.sh",
		"vm \"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --disk \"$W/root.ext4\" "
		"--cmdline \"console=ttyS0 quiet root=/dev/vda rw init=/init\"\n"
		"echo \"VMM $?\"\n");
	expect_num(&r, "VMM", "==", 0, "guest power-off ends cvisor-vmm with 0");
	char token[64];
	expect(&r, "ROOT", "/dev/root ext4 rw", "the guest's root file system");
	field(&r, "ROOTFS-MARKER", token);
	cr_assert_eq(strlen(token), 36, "uuid: '%s'", token);
	sys_free(&r);

	r = sys_host("debugfs -R 'cat /file' '%s/root.ext4' 2>/dev/null", work());
	cr_assert_eq(r.status, 0);
	char want[128];
	snprintf(want, sizeof(want), "written by the guest %s\n", token);
	cr_assert_str_eq(r.out, want, "the file the guest's /init wrote is in the image: '%s'",
			 r.out);
	sys_free(&r);
	host_ok("e2fsck -fn '%s/root.ext4' >/dev/null 2>&1", work());
}

/*
 * blkdiscard in the guest becomes VIRTIO_BLK_T_DISCARD and cvisor punches a hole: on tmpfs the
 * image's allocation drops by exactly the range, the range reads back as zeroes, and the bytes
 * around it are untouched.
 */
Test(devices, blk_discard_punches_a_hole_in_the_image)
{
	struct sys_result r = host_script("discard.sh",
		"f=\"$S/disk.img\"\n"
		"head -c 16777216 /dev/urandom > \"$f\"\n"
		"sum() { dd if=\"$f\" bs=1048576 skip=$1 count=$2 2>/dev/null | sha256sum | cut -d' ' -f1; }\n"
		"nonzero() { dd if=\"$f\" bs=1048576 skip=$1 count=$2 2>/dev/null | tr -d '\\000' | wc -c; }\n"
		"echo \"BYTES-BEFORE $(( $(stat -c '%b * %B' \"$f\") ))\"\n"
		"echo \"HEAD-BEFORE $(sum 0 1)\"; echo \"TAIL-BEFORE $(sum 5 11)\"\n"
		"echo \"NONZERO-BEFORE $(nonzero 1 4)\"\n"
		"vm \"$B/cvisor\" run --disk \"$f\" -- sh -c '\n"
		"  echo \"DISCARD-MAX $(cat /sys/block/vda/queue/discard_max_bytes)\"\n"
		"  blkdiscard -o 1048576 -l 4194304 /dev/vda; echo \"DISCARD $?\"'\n"
		"echo \"RUN $?\"\n"
		"echo \"BYTES-AFTER $(( $(stat -c '%b * %B' \"$f\") ))\"\n"
		"echo \"HEAD-AFTER $(sum 0 1)\"; echo \"TAIL-AFTER $(sum 5 11)\"\n"
		"echo \"NONZERO-AFTER $(nonzero 1 4)\"\n");
	expect_num(&r, "RUN", "==", 0, "the guest run");
	expect_num(&r, "DISCARD-MAX", ">", 0, "the disk offers DISCARD");
	expect_num(&r, "DISCARD", "==", 0, "blkdiscard in the guest");
	long long before = num(&r, "BYTES-BEFORE"), after = num(&r, "BYTES-AFTER");
	cr_assert_eq(before - after, 4194304, "allocated %lld -> %lld bytes", before, after);
	expect_num(&r, "NONZERO-BEFORE", ">", 4000000, "the range starts as random bytes");
	expect_num(&r, "NONZERO-AFTER", "==", 0, "the discarded range reads back as zeroes");
	char x[80], y[80];
	field(&r, "HEAD-BEFORE", x);
	field(&r, "HEAD-AFTER", y);
	cr_assert(is_sha256(x) && strcmp(x, y) == 0, "first MiB changed");
	field(&r, "TAIL-BEFORE", x);
	field(&r, "TAIL-AFTER", y);
	cr_assert(is_sha256(x) && strcmp(x, y) == 0, "bytes after the range changed");
	sys_free(&r);
}

/*
 * busybox has no tool for BLKZEROOUT, but ext4's lazy inode-table initialisation zeroes the
 * tables with blkdev_issue_zeroout, which becomes VIRTIO_BLK_T_WRITE_ZEROES (with the unmap
 * flag) when the disk offers it. The image is created full of random bytes with mkfs.ext4
 * -E nodiscard,lazy_itable_init=1, so the tables hold garbage until the guest zeroes them: they
 * must read as zeroes afterwards, the groups be flagged ITABLE_ZEROED, the allocation drop (on
 * tmpfs, which can punch holes; the host's e2fsck checks are left to the other tests, since
 * every program started in the emulated host costs a second or more).
 */
Test(devices, blk_write_zeroes_from_ext4_lazy_init)
{
	/* 8 MiB of 1 KiB blocks in groups of 2048: four groups, each with its own inode table. */
	struct sys_result r = host_script("wzeroes.sh",
		"f=\"$S/disk.img\"\n"
		"head -c 8388608 /dev/urandom > \"$f\"\n"
		"mkfs.ext4 -q -F -b 1024 -g 2048 -E nodiscard,lazy_itable_init=1 \"$f\" || exit 1\n"
		"info() {   # block size, groups, groups flagged ITABLE_ZEROED, group 1's inode table\n"
		"  dumpe2fs \"$f\" 2>/dev/null | awk '/^Block size:/ {bs = $3} /^Group [0-9]/ {g++}\n"
		"    /ITABLE_ZEROED/ {z++}\n"
		"    g == 2 && /Inode table at/ && !n {split($4, r, \"-\"); s = r[1]; n = r[2] - r[1] + 1}\n"
		"    END {print bs, g, z + 0, s, n}'\n"
		"}\n"
		"nonzero() { dd if=\"$f\" bs=$1 skip=$4 count=$5 2>/dev/null | tr -d '\\000' | wc -c; }\n"
		"set -- $(info)\n"
		"echo \"ITABLE-BYTES $(($1 * $5))\"\n"
		"echo \"GROUPS $2\"\n"
		"echo \"ZEROED-BEFORE $3\"\n"
		"echo \"NONZERO-BEFORE $(nonzero \"$@\")\"\n"
		"echo \"BYTES-BEFORE $(( $(stat -c '%b * %B' \"$f\") ))\"\n"
		"vm \"$B/cvisor\" run --disk \"$f\" -- sh -c '\n"
		"  echo \"WZ-MAX $(cat /sys/block/vda/queue/write_zeroes_max_bytes)\"\n"
		"  mount -t ext4 -o init_itable=0 /dev/vda /mnt || exit 1\n"
		"  i=0\n"
		"  while ps | grep -q \"[e]xt4lazyinit\" && [ $i -lt 600 ]; do i=$((i + 1)); sleep 0.1; done\n"
		"  echo \"LAZYINIT-WAITED $i\"\n"
		"  umount /mnt'\n"
		"echo \"RUN $?\"\n"
		"echo \"BYTES-AFTER $(( $(stat -c '%b * %B' \"$f\") ))\"\n"
		"echo \"NONZERO-AFTER $(nonzero \"$@\")\"\n"
		"set -- $(info)\n"
		"echo \"ZEROED-AFTER $3\"\n");
	expect_num(&r, "RUN", "==", 0, "the guest run");
	expect_num(&r, "WZ-MAX", ">", 0, "the disk offers WRITE_ZEROES");
	expect_num(&r, "LAZYINIT-WAITED", "<", 600, "ext4lazyinit finishes");
	long long groups = num(&r, "GROUPS"), itable = num(&r, "ITABLE-BYTES");
	cr_assert_eq(groups, 4, "%s", r.out);
	cr_assert_gt(itable, 0, "%s", r.out);
	expect_num(&r, "ZEROED-BEFORE", "==", 0, "mkfs left the tables to the guest");
	expect_num(&r, "NONZERO-BEFORE", ">", itable / 2, "the table starts as random bytes");
	expect_num(&r, "ZEROED-AFTER", "==", groups, "every group's table was zeroed");
	expect_num(&r, "NONZERO-AFTER", "==", 0, "group 1's inode table reads back as zeroes");
	long long before = num(&r, "BYTES-BEFORE"), after = num(&r, "BYTES-AFTER");
	cr_assert_geq(before - after, itable, "allocated %lld -> %lld bytes: holes punched",
		      before, after);
	sys_free(&r);
}

/*
 * Rate limiting seen from a real guest: dd through a disk limited to 2 MiB/s (bw=1M/500) runs
 * at about that rate, both ways, while the same dd on an unlimited disk beside it is much
 * faster. The bucket starts full (1 MiB free), so 8 MiB cannot take less than 3.5 s; the
 * check is that floor (less a margin for the guest clock), never a speed the host must reach:
 * a slow emulated host makes every transfer slower, the limit is what may not be exceeded.
 */
Test(devices, blk_rate_limit_holds_a_disk_to_its_bandwidth)
{
	struct sys_result r = host_script("ratelimit.sh",
		"truncate -s 16M \"$S/lim.img\" \"$S/free.img\" || exit 99\n"
		"vm \"$B/cvisor\" run --disk \"$S/lim.img,bw=1M/500\" --disk \"$S/free.img\" -- sh -c '\n"
		"  cs() { cut -d\" \" -f1 /proc/uptime | tr -d .; }\n"
		"  a=$(cs); dd if=/dev/vda of=/dev/null bs=1M count=8 iflag=direct 2>/dev/null\n"
		"  echo \"LIM-READ $?\"; echo \"LIM-READ-CS $(($(cs) - a))\"\n"
		"  a=$(cs); dd if=/dev/vdb of=/dev/null bs=1M count=8 iflag=direct 2>/dev/null\n"
		"  echo \"FREE-READ $?\"; echo \"FREE-READ-CS $(($(cs) - a))\"\n"
		"  a=$(cs); dd if=/dev/zero of=/dev/vda bs=1M count=8 oflag=direct 2>/dev/null\n"
		"  echo \"LIM-WRITE $?\"; echo \"LIM-WRITE-CS $(($(cs) - a))\"\n"
		"  a=$(cs); dd if=/dev/zero of=/dev/vdb bs=1M count=8 oflag=direct 2>/dev/null\n"
		"  echo \"FREE-WRITE $?\"; echo \"FREE-WRITE-CS $(($(cs) - a))\"'\n"
		"echo \"RUN $?\"\n");
	expect_num(&r, "RUN", "==", 0, "the guest run");
	expect_num(&r, "LIM-READ", "==", 0, "read from the limited disk");
	expect_num(&r, "FREE-READ", "==", 0, "read from the unlimited disk");
	expect_num(&r, "LIM-WRITE", "==", 0, "write to the limited disk");
	expect_num(&r, "FREE-WRITE", "==", 0, "write to the unlimited disk");
	const char *dirs[2][2] = { { "LIM-READ-CS", "FREE-READ-CS" },
				   { "LIM-WRITE-CS", "FREE-WRITE-CS" } };
	for (int i = 0; i < 2; i++) {
		long long lim = num(&r, dirs[i][0]), free_cs = num(&r, dirs[i][1]);
		/* 8 MiB over at least 3 s; KiB/s = 8192 * 100 / centiseconds. */
		cr_assert_geq(lim, 300, "%s: %lld cs (%lld KiB/s through a 2048 KiB/s limit): the "
			      "limit did not hold\n%s", dirs[i][0], lim, 8192 * 100 / CV_MAX(lim, 1),
			      r.out);
		cr_assert_lt(free_cs * 3, lim, "%s: the unlimited disk took %lld cs, the limited %lld",
			     dirs[i][1], free_cs, lim);
	}
	fprintf(stderr, "rate limit: read %lld cs, write %lld cs (limited); %lld, %lld (free)\n",
		num(&r, "LIM-READ-CS"), num(&r, "LIM-WRITE-CS"), num(&r, "FREE-READ-CS"),
		num(&r, "FREE-WRITE-CS"));
	sys_free(&r);
}

/* ------------------------------------------------------------------------------------------ */
/* virtio-net */

Test(devices, net_tap_mac_ping_and_32mib_each_way)
{
	put("net-guest.sh",
	    "ip link set eth0 up && ip addr add \"$G/24\" dev eth0\n"
	    "echo \"MAC $(cat /sys/class/net/eth0/address)\"\n"
	    "ping -c 3 \"$H\" > /dev/null; echo \"PING $?\"\n"
	    "dd if=/dev/urandom of=/tmp/d bs=1048576 count=32 2>/dev/null\n"
	    "echo \"SENT $(sha256sum < /tmp/d | cut -d' ' -f1)\"\n"
	    "nc \"$H\" 7001 < /tmp/d; echo \"NC-SEND $?\"\n"
	    "rm /tmp/d\n"
	    "echo \"RECEIVED $(nc \"$H\" 7002 | sha256sum | cut -d' ' -f1)\"\n", 0644);
	struct sys_result r = host_script("net.sh",
		"tap cvdt 10.213\n"
		"tcp_peer 7001 7002 33554432\n"
		"vm \"$B/cvisor\" run --memory 512 --net \"tap=$T,mac=52:54:00:5e:a1:07\" -e \"H=$H\" "
		"-e \"G=$G\" -- sh -c \"$(cat \"$W/net-guest.sh\")\"\n"
		"run=$?; echo \"RUN $run\"\n"
		"[ $run = 0 ] || kill $peer 2>/dev/null   # no guest: do not wait for its connections\n"
		"wait $peer; echo \"PEER $?\"\n"
		"echo \"NEIGH $(cat \"$S/neigh\")\"\n"
		"echo \"HOST-IN $(cat \"$S/in\")\"\n"
		"echo \"HOST-OUT $(cat \"$S/out\")\"\n");
	expect_num(&r, "RUN", "==", 0, "the guest run");
	char sent[80], received[80], want[128];
	expect(&r, "MAC", "52:54:00:5e:a1:07", "the guest's eth0 has the MAC given");
	expect(&r, "NEIGH", "52:54:00:5e:a1:07", "the host's ARP table has the guest's MAC");
	expect_num(&r, "PING", "==", 0, "guest pings the host");
	expect_num(&r, "PEER", "==", 0, "the host-side peer");

	/* guest -> host: what the host received is what the guest sent. */
	field(&r, "SENT", sent);
	cr_assert(is_sha256(sent), "%s", r.out);
	expect_num(&r, "NC-SEND", "==", 0, "guest nc sending");
	snprintf(want, sizeof(want), "33554432 %s", sent);
	expect(&r, "HOST-IN", want, "guest -> host 32 MiB");

	/* host -> guest */
	field(&r, "RECEIVED", received);
	snprintf(want, sizeof(want), "33554432 %s", received);
	expect(&r, "HOST-OUT", want, "host -> guest 32 MiB");
	sys_free(&r);
}

/*
 * A NIC limited to 1 MiB/s each way (rx_bw=, tx_bw=1M/1000): 5 MiB over TCP take about 4 s in
 * each direction at the least (the first MiB is the full bucket; TCP/IP headers count too);
 * the check is that floor, not a speed the emulated host must reach, and that the bytes arrive
 * intact.
 */
Test(devices, net_rate_limit_holds_each_direction)
{
	put("netrl-guest.sh",
	    "ip link set eth0 up && ip addr add \"$G/24\" dev eth0\n"
	    "cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }\n"
	    "dd if=/dev/urandom of=/tmp/d bs=1048576 count=5 2>/dev/null\n"
	    "echo \"SENT $(sha256sum < /tmp/d | cut -d' ' -f1)\"\n"
	    "a=$(cs); nc \"$H\" 7001 < /tmp/d; echo \"NC-SEND $?\"; echo \"TX-CS $(($(cs) - a))\"\n"
	    "rm /tmp/d\n"
	    "a=$(cs); nc \"$H\" 7002 > /tmp/r; echo \"RX-CS $(($(cs) - a))\"\n"
	    "echo \"RECEIVED $(sha256sum < /tmp/r | cut -d' ' -f1)\"\n", 0644);
	const char *body =
		"tap cvdt 10.213\n"
		"tcp_peer 7001 7002 5242880\n"
		"vm \"$B/cvisor\" run --memory 256 "
		"--net \"tap=$T,mac=52:54:00:5e:a1:08,rx_bw=1M/1000,tx_bw=1M/1000\" -e \"H=$H\" "
		"-e \"G=$G\" -- sh -c \"$(cat \"$W/netrl-guest.sh\")\"\n"
		"run=$?; echo \"RUN $run\"\n"
		"[ $run = 0 ] || kill $peer 2>/dev/null\n"
		"wait $peer; echo \"PEER $?\"\n"
		"echo \"HOST-IN $(cat \"$S/in\")\"\n"
		"echo \"HOST-OUT $(cat \"$S/out\")\"\n";
	struct sys_result r = host_script("netrl.sh", body);
	expect_num(&r, "RUN", "==", 0, "the guest run");
	expect_num(&r, "PEER", "==", 0, "the host-side peer");
	expect_num(&r, "NC-SEND", "==", 0, "guest nc sending");
	char sent[80], received[80], want[128];
	field(&r, "SENT", sent);
	snprintf(want, sizeof(want), "5242880 %s", sent);
	expect(&r, "HOST-IN", want, "guest -> host 5 MiB");
	field(&r, "RECEIVED", received);
	snprintf(want, sizeof(want), "5242880 %s", received);
	expect(&r, "HOST-OUT", want, "host -> guest 5 MiB");
	const char *dirs[] = { "TX-CS", "RX-CS" };
	for (int i = 0; i < 2; i++) {
		long long cs = num(&r, dirs[i]);
		cr_assert_geq(cs, 300, "%s: %lld cs for 5 MiB (%lld KiB/s) through 1 MiB/s: the limit "
			      "did not hold\n%s", dirs[i], cs, 5120 * 100 / CV_MAX(cs, 1), r.out);
	}
	fprintf(stderr, "net rate limit: tx %lld cs, rx %lld cs for 5 MiB\n", num(&r, "TX-CS"),
		num(&r, "RX-CS"));
	sys_free(&r);
}

/* ------------------------------------------------------------------------------------------ */
/* virtio-vsock (host side: cvisor-vmm's hybrid Unix sockets; guest side: cvisor-vsock-test) */

#define VSOCK_VMM                                                                          \
	"vm \"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --initrd \"$B/initramfs.cpio\" "      \
	"--initrd \"$W/g.cpio\" --vsock \"cid=3,uds=$S/v.sock\" --console \"file:$S/console\" " \
	"--cmdline \"console=ttyS0 quiet -- /bin/sh /t.sh\""
#define VSOCK_PY "/usr/bin/python3 \"$SRC/guest/tools/vsock-host.py\""

/*
 * Host-initiated (devices_peer.py vsock): 16 MiB of random data echoed by the guest come back
 * intact; a port nobody listens on is refused with a plain close; another 16 MiB of random
 * data host -> guest arrive with the digest the host computed.
 */
Test(devices, vsock_host_connects_to_the_guest)
{
	guest_cpio("g",
		"#!/bin/sh\n"
		"cvisor-vsock-test listen 1234; echo \"GUEST-ECHO $?\"\n"
		"echo \"GUEST-GOT $(cvisor-vsock-test listen -o 1235 | sha256sum | cut -d' ' -f1)\"\n");
	struct sys_result r = host_script("vsock-h.sh",
		VSOCK_VMM " &\n"
		"vmm=$!\n"
		"/usr/bin/python3 \"$PEER\" vsock \"$S/v.sock\" 1234 999 1235 16777216\n"
		"peer=$?; echo \"PEER $peer\"\n"
		"[ $peer = 0 ] || kill $vmm 2>/dev/null\n"
		"wait $vmm; echo \"VMM $?\"\n"
		"cat \"$S/console\"\n");
	expect_num(&r, "PEER", "==", 0, "the host side");
	expect_num(&r, "VMM", "==", 0, "cvisor-vmm");
	char sent[128];
	field(&r, "ECHO-SENT", sent);
	cr_assert(strncmp(sent, "16777216 ", 9) == 0 && is_sha256(sent + 9), "%s", r.out);
	expect(&r, "ECHO-BACK", sent, "16 MiB round trip through the guest's echo");
	expect_num(&r, "GUEST-ECHO", "==", 0, "the guest's echo server");
	expect(&r, "NO-PORT", "closed", "a port nobody listens on");
	field(&r, "SINK-SENT", sent);
	cr_assert(strncmp(sent, "16777216 ", 9) == 0 && is_sha256(sent + 9), "%s", r.out);
	expect(&r, "GUEST-GOT", sent + 9, "host -> guest 16 MiB");
	sys_free(&r);
}

/*
 * Guest-initiated: the guest connects to CID 2 port 5000 (the host's SOCK_5000 listener, which
 * echoes); the digest of what the guest sent, of what the host received and of what came back
 * must agree. A port without a host listener is reset.
 */
Test(devices, vsock_guest_connects_to_the_host)
{
	guest_cpio("g",
		"#!/bin/sh\n"
		"dd if=/dev/urandom of=/tmp/data bs=65536 count=256 2>/dev/null\n"
		"echo \"GUEST-SENT $(sha256sum < /tmp/data | cut -d' ' -f1)\"\n"
		"echo \"GUEST-BACK $(cvisor-vsock-test connect 2 5000 < /tmp/data | sha256sum | cut -d' ' -f1)\"\n"
		"cvisor-vsock-test connect 2 5999 < /dev/null 2>/tmp/err; echo \"GUEST-NOPORT $?\"\n"
		"echo \"GUEST-NOPORT-ERR $(cat /tmp/err)\"\n");
	struct sys_result r = host_script("vsock-g.sh",
		VSOCK_PY " serve \"$S/v.sock_5000\" echo > \"$S/serve.log\" 2>&1 &\n"
		"serve=$!\n"
		"i=0; while [ ! -S \"$S/v.sock_5000\" ] && [ $i -lt 300 ]; do i=$((i + 1)); sleep 0.1; done\n"
		VSOCK_VMM "\n"
		"vmm=$?; echo \"VMM $vmm\"\n"
		"[ $vmm = 0 ] || kill $serve 2>/dev/null   # no guest: do not wait for its connection\n"
		"wait $serve\n"
		"echo \"HOST $(grep -o 'received [0-9]* bytes sha256 [0-9a-f]*' \"$S/serve.log\")\"\n"
		"cat \"$S/console\"\n");
	expect_num(&r, "VMM", "==", 0, "cvisor-vmm");
	char sent[80], err[160], want[160];
	field(&r, "GUEST-SENT", sent);
	cr_assert(is_sha256(sent), "%s", r.out);
	snprintf(want, sizeof(want), "received 16777216 bytes sha256 %s", sent);
	expect(&r, "HOST", want, "guest -> host 16 MiB");
	expect(&r, "GUEST-BACK", sent, "host -> guest: the echo came back intact");
	expect_num(&r, "GUEST-NOPORT", "==", 1, "guest connecting to a port without listener");
	field(&r, "GUEST-NOPORT-ERR", err);
	cr_assert(strstr(err, "Connection reset"), "'%s'", err);
	sys_free(&r);
}

/* ------------------------------------------------------------------------------------------ */
/* virtio-rng (cvisor run always adds it) */

Test(devices, rng_hwrng_gives_fresh_random_bytes)
{
	struct sys_result r = host_script("rng.sh",
		"vm \"$B/cvisor\" run -- sh -c '\n"
		"  echo \"CURRENT $(cat /sys/class/misc/hw_random/rng_current)\"\n"
		"  head -c 65536 /dev/hwrng > /tmp/a; head -c 65536 /dev/hwrng > /tmp/b\n"
		"  echo \"SIZE $(cat /tmp/a | wc -c)\"\n"
		"  echo \"A $(sha256sum < /tmp/a | cut -d\" \" -f1)\"\n"
		"  echo \"B $(sha256sum < /tmp/b | cut -d\" \" -f1)\"\n"
		"  echo \"GZIP $(gzip -9 -c < /tmp/a | wc -c)\"\n"
		"  echo \"DISTINCT $(od -An -v -tu1 /tmp/a | tr -s \" \" \"\\n\" | grep . | sort -u | wc -l)\"'\n"
		"echo \"RUN $?\"\n");
	expect_num(&r, "RUN", "==", 0, "the guest run");
	char a[80], b[80];
	expect(&r, "CURRENT", "virtio_rng.0", "/dev/hwrng is the virtio device");
	expect_num(&r, "SIZE", "==", 65536, "bytes read from /dev/hwrng");
	field(&r, "A", a);
	field(&r, "B", b);
	cr_assert(is_sha256(a) && strcmp(a, b) != 0, "two reads gave the same bytes");
	/* Random bytes do not compress and use every byte value; a stuck or patterned source does. */
	expect_num(&r, "GZIP", ">=", 65536, "64 KiB from the device compress: not random");
	expect_num(&r, "DISTINCT", "==", 256, "all byte values occur in 64 KiB");
	sys_free(&r);
}

/* ------------------------------------------------------------------------------------------ */
/* virtio-balloon through cvisor-vmm's control API (cvisor run does not expose --api-sock) */

Test(devices, balloon_inflates_and_deflates_through_the_api)
{
	/* The guest reports MemTotal/MemAvailable (kB) at each stage and waits for the next. */
	guest_cpio("g",
		"#!/bin/sh\n"
		"mem() { awk '/^MemTotal:/ {t = $2} /^MemAvailable:/ {a = $2} END {print t, a}' /proc/meminfo; }\n"
		"wait_for() {   # wait_for COND: until COND holds ($1 = MemTotal), at most 60 s\n"
		"  cond=$1; i=0\n"
		"  while :; do set -- $(mem); eval \"$cond\" && break; i=$((i + 1)); [ $i -ge 600 ] && break; sleep 0.1; done\n"
		"}\n"
		"set -- $(mem); t0=$1\n"
		"echo \"BEFORE $(mem)\"\n"
		"wait_for '[ $((t0 - $1)) -ge 130048 ]'\n"
		"echo \"INFLATED $(mem)\"\n"
		"wait_for '[ $((t0 - $1)) -le 1024 ]'\n"
		"echo \"DEFLATED $(mem)\"\n");
	struct sys_result r = host_script("balloon.sh",
		"vm \"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --initrd \"$B/initramfs.cpio\" "
		"--initrd \"$W/g.cpio\" --memory 512 --balloon=stats=1 --api-sock \"$S/api.sock\" "
		"--console \"file:$S/console\" --cmdline \"console=ttyS0 quiet -- /bin/sh /t.sh\" &\n"
		"vmm=$!\n"
		"/usr/bin/python3 \"$PEER\" balloon \"$S/api.sock\" \"$S/console\" 128 $vmm\n"
		"echo \"PEER $?\"\n"
		"wait $vmm; echo \"VMM $?\"\n"
		"cat \"$S/console\"\n");
	expect_num(&r, "VMM", "==", 0, "cvisor-vmm");
	expect_num(&r, "PEER", "==", 0, "the API client");
	expect_num(&r, "PATCH-INFLATE", "==", 204, "PATCH /balloon {amount_mib: 128}");
	expect_num(&r, "PATCH-DEFLATE", "==", 204, "PATCH /balloon {amount_mib: 0}");
	expect_num(&r, "AMOUNT-MIB", "==", 128, "GET /balloon");
	expect_num(&r, "ACTUAL-MIB", "==", 128, "the driver reports the balloon's size");

	char s[512];
	unsigned long t[3], a[3];
	static const char *const stage[3] = { "BEFORE", "INFLATED", "DEFLATED" };
	for (int i = 0; i < 3; i++) {
		field(&r, stage[i], s);
		cr_assert_eq(sscanf(s, "%lu %lu", &t[i], &a[i]), 2, "%s: '%s'", stage[i], s);
	}
	/* Without deflate-on-oom the driver takes the pages out of MemTotal: 128 MiB = 131072 kB. */
	long dt = (long)t[0] - (long)t[1], da = (long)a[0] - (long)a[1];
	cr_assert(dt >= 131072 - 1024 && dt <= 131072 + 1024, "MemTotal dropped by %ld kB", dt);
	cr_assert(da >= 131072 - 16384 && da <= 131072 + 16384, "MemAvailable dropped by %ld kB", da);
	dt = (long)t[0] - (long)t[2];
	cr_assert(dt >= -1024 && dt <= 1024, "MemTotal after deflating differs by %ld kB", dt);
	sys_free(&r);
}

/* ------------------------------------------------------------------------------------------ */
/* Debian's stock cloud kernel: virtio drivers are modules that cvisor-init loads */

Test(devices, cloud_kernel_sees_disk_nic_and_rng, .timeout = 600)
{
	struct sys_result p = sys_host("'%s/guest/cloud/prepare.sh'", CVISOR_SOURCE_DIR);
	if (p.status != 0)
		cr_skip_test("guest/cloud/prepare.sh could not prepare the cloud kernel: %s", p.err);
	char dir[512];
	snprintf(dir, sizeof(dir), "%.*s", (int)strcspn(p.out, "\n"), p.out);
	sys_free(&p);
	char release[128] = { 0 };
	p = sys_host("cat '%s/kernel.release'", dir);
	cr_assert_eq(p.status, 0);
	snprintf(release, sizeof(release), "%.*s", (int)strcspn(p.out, "\n"), p.out);
	sys_free(&p);

	host_ok("head -c 1048576 /dev/urandom > '%s/cloud.img'", work());
	p = sys_host("sha256sum < '%s/cloud.img' | cut -d' ' -f1", work());
	char disk_sum[80];
	snprintf(disk_sum, sizeof(disk_sum), "%.64s", p.out);
	sys_free(&p);
	cr_assert(is_sha256(disk_sum), "sha256sum of the image: '%s'", disk_sum);

	put("cloud-guest.sh",
	    "echo \"UNAME $(uname -r)\"\n"
	    "echo \"BLOCK $(ls /sys/block | grep vd | tr '\\n' ' ')\"\n"
	    "echo \"SERIAL $(cat /sys/block/vda/serial)\"\n"
	    "echo \"DISK $(sha256sum < /dev/vda | cut -d' ' -f1)\"\n"
	    "echo \"MAC $(cat /sys/class/net/eth0/address)\"\n"
	    "echo \"RNG $(cat /sys/class/misc/hw_random/rng_current)\"\n"
	    "ip link set eth0 up && ip addr add \"$G/24\" dev eth0\n"
	    "ping -c 2 \"$H\" > /dev/null; echo \"PING $?\"\n", 0644);
	char body[4096];
	snprintf(body, sizeof(body),
		 "tap cvdt 10.213\n"
		 "C='%s'\n"
		 "vm \"$B/cvisor\" run --memory 512 --kernel \"$C/vmlinuz\" "
		 "--initrd \"$B/initramfs.cpio\" --initrd \"$C/modules.cpio\" "
		 "--disk \"$W/cloud.img,serial=cloud-disk-0\" "
		 "--net \"tap=$T,mac=52:54:00:c1:0d:01\" -e \"H=$H\" -e \"G=$G\" "
		 "-- sh -c \"$(cat \"$W/cloud-guest.sh\")\"\n"
		 "echo \"RUN $?\"\n", dir);
	struct sys_result r = host_script("cloud.sh", body);
	expect_num(&r, "RUN", "==", 0, "the guest run");
	expect(&r, "UNAME", release, "the stock kernel runs");
	expect(&r, "BLOCK", "vda", "virtio_blk bound the disk");
	expect(&r, "SERIAL", "cloud-disk-0", "the disk's serial");
	expect(&r, "DISK", disk_sum, "the guest reads the image's bytes");
	expect(&r, "MAC", "52:54:00:c1:0d:01", "virtio_net bound the NIC");
	expect(&r, "RNG", "virtio_rng.0", "virtio_rng is the current hwrng");
	expect_num(&r, "PING", "==", 0, "the NIC passes traffic");
	sys_free(&r);
}
