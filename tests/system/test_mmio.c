/*
 * The virtio-mmio transport seen from real Linux guests: booted with pci=off as Firecracker's
 * clients do (cvisor run --cmdline-extra pci=off), the guest finds every device kind on the
 * kernel command line (virtio_mmio.device=...) and none on PCI; the disk's bytes agree with the
 * image on the host both ways; the NIC passes traffic; the agent answers over virtio-vsock (that
 * is how cvisor run gets the command's output). With more devices than interrupt lines, lines
 * are shared (level-triggered): a disk and the NIC on one line move data at the same time and
 * every byte arrives. The balloon follows the control API through config-change interrupts.
 * `--transport mmio` without pci=off, on a guest that reads the MP table (acpi=off), works too.
 *
 * Same shape as test_devices.c: the C code writes a host script into a work directory and runs
 * it where guests can boot (the session's emulated host if there is one); the script prints
 * "KEY value" lines that the test checks against what the host observed.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "script.h"

const struct script_suite script_suite = {
	.tag = "mmiotest", .peer = "devices_peer.py", .vm_seconds = 240,
};

TestSuite(mmio, .fini = remove_work, .timeout = 300);

/* SHA-256 of LEN bytes at OFF of WORK/NAME, computed on this host. */
static void host_sum(const char *name, unsigned off_mib, unsigned len_mib, char out[80])
{
	struct sys_result h = sys_host("dd if='%s/%s' bs=1048576 skip=%u count=%u 2>/dev/null | "
				       "sha256sum | cut -d' ' -f1", work(), name, off_mib, len_mib);
	cr_assert_eq(h.status, 0);
	snprintf(out, 80, "%.64s", h.out);
	sys_free(&h);
	cr_assert(is_sha256(out), "sha256 of %s: '%s'", name, out);
}

/* What the guest reports about its virtio devices (shared by the tests). */
#define GUEST_INVENTORY                                                                        \
	"cd /sys/bus/virtio/devices\n"                                                         \
	"echo \"IDS $(for d in *; do cat $d/device; done | sort | tr '\\n' ' ')\"\n"          \
	"echo \"DRIVERS $(for d in *; do basename $(readlink $d/driver); done | sort | "        \
	"tr '\\n' ' ')\"\n"                                                                    \
	"echo \"ON-MMIO $(for d in *; do readlink $d; done | grep -c /virtio-mmio-cmdline/)\"\n" \
	"echo \"VIRTIO-PCI $(ls /sys/bus/pci/drivers/virtio-pci 2>/dev/null | grep -c :)\"\n"  \
	"echo \"LEVEL-LINES $(grep virtio /proc/interrupts | grep -c fasteoi)\"\n"             \
	"cd /\n"

/*
 * pci=off, every device kind: rng, disk, NIC, vsock (the agent), balloon. The first 4 MiB of
 * the image are random bytes the guest must read back; the guest writes 4 MiB at 8 MiB that the
 * host must find in the image.
 */
Test(mmio, pci_off_guest_finds_every_device_and_moves_data)
{
	host_ok("head -c 4194304 /dev/urandom > '%s/disk.img' && truncate -s 16M '%s/disk.img'",
		work(), work());
	char head_sum[80];
	host_sum("disk.img", 0, 4, head_sum);
	put("guest.sh",
	    GUEST_INVENTORY
	    "echo \"PCI-DEVICES $(ls /sys/bus/pci/devices 2>/dev/null | wc -l)\"\n"
	    "echo \"CMDLINE-DEVICES $(tr ' ' '\\n' < /proc/cmdline | grep -c '^virtio_mmio.device=')\"\n"
	    "echo \"READ $(head -c 4194304 /dev/vda | sha256sum | cut -d' ' -f1)\"\n"
	    "dd if=/dev/urandom of=/tmp/w bs=65536 count=64 2>/dev/null\n"
	    "echo \"WROTE $(sha256sum < /tmp/w | cut -d' ' -f1)\"\n"
	    "dd if=/tmp/w of=/dev/vda bs=65536 seek=128 conv=fsync 2>/dev/null; echo \"DD $?\"\n"
	    "echo \"RNG $(cat /sys/class/misc/hw_random/rng_current)\"\n"
	    "echo \"RNG-BYTES $(head -c 4096 /dev/hwrng | wc -c)\"\n"
	    "ip link set eth0 up && ip addr add \"$G/24\" dev eth0\n"
	    "echo \"MAC $(cat /sys/class/net/eth0/address)\"\n"
	    "ping -c 3 \"$H\" > /dev/null; echo \"PING $?\"\n"
	    "echo \"UNAME $(uname -s)\"\n", 0644);
	struct sys_result r = host_script("all.sh",
		 "tap cvmm 10.214\n"
		 "vm \"$B/cvisor\" run --cmdline-extra pci=off --disk \"$W/disk.img\" "
		 "--net \"tap=$T,mac=52:54:00:3d:00:01\" --balloon -e \"H=$H\" -e \"G=$G\" "
		 "-- sh -c \"$(cat \"$W/guest.sh\")\"\n"
		 "echo \"RUN $?\"\n");
	expect_num(&r, "RUN", "==", 0, "cvisor run: the agent answered over virtio-vsock on mmio");
	expect(&r, "UNAME", "Linux", "the command ran in the guest");
	/* net 1, block 2, rng 4, balloon 5, vsock 19 */
	expect(&r, "IDS", "0x0001 0x0002 0x0004 0x0005 0x0013", "device IDs on the virtio bus");
	expect(&r, "DRIVERS", "virtio_balloon virtio_blk virtio_net virtio_rng "
			      "vmw_vsock_virtio_transport", "every device has its driver");
	expect_num(&r, "ON-MMIO", "==", 5, "all devices came from the command line");
	expect_num(&r, "CMDLINE-DEVICES", "==", 5, "one virtio_mmio.device= per device");
	expect_num(&r, "VIRTIO-PCI", "==", 0, "nothing on virtio-pci");
	expect_num(&r, "PCI-DEVICES", "==", 0, "pci=off: no PCI devices at all");
	expect_num(&r, "LEVEL-LINES", "==", 5, "each line is level-triggered (fasteoi)");
	expect(&r, "READ", head_sum, "the guest reads the image's bytes");
	expect_num(&r, "DD", "==", 0, "the guest's write");
	expect(&r, "RNG", "virtio_rng.0", "/dev/hwrng is the virtio device");
	expect_num(&r, "RNG-BYTES", "==", 4096, "bytes from /dev/hwrng");
	expect(&r, "MAC", "52:54:00:3d:00:01", "the NIC's MAC");
	expect_num(&r, "PING", "==", 0, "the guest pings the host");
	char wrote[80], landed[80];
	field(&r, "WROTE", wrote);
	cr_assert(is_sha256(wrote), "%s", r.out);
	sys_free(&r);
	host_sum("disk.img", 8, 4, landed);
	cr_assert_str_eq(landed, wrote, "the image holds what the guest wrote at 8 MiB");
}

/* What Firecracker's walkthrough does first: a plain command through the agent. */
Test(mmio, cvisor_run_uname_with_pci_off)
{
	struct sys_result r = sys_guest_host("timeout -k 5 240 '%s/cvisor' run --cmdline-extra "
					     "pci=off -- uname -a", sys_build());
	cr_assert_eq(r.status, 0, "exit %d\n%s\n%s", r.status, r.out, r.err);
	cr_assert_eq(strncmp(r.out, "Linux cvisor ", 13), 0, "'%s'", r.out);
	sys_free(&r);
}

/*
 * Eleven devices on seven lines: rng, seven disks, the NIC, vsock, balloon go round-robin over
 * IRQs 5,6,7,10,11,14,15, so vda (device 1) and the NIC (device 8) share IRQ 6. The guest writes
 * 16 MiB to vda while it sends 16 MiB to the host and receives 16 MiB from it; all three
 * transfers must arrive intact, and the interrupt counter of the shared line must have moved.
 */
Test(mmio, shared_line_carries_disk_and_network_at_once, .timeout = 400)
{
	host_ok("truncate -s 24M '%s/vda.img' && for i in 1 2 3 4 5 6; do "
		"truncate -s 1M \"%s/small$i.img\"; done", work(), work());
	put("guest.sh",
	    GUEST_INVENTORY
	    "echo \"IRQ6 $(grep '^ *6:' /proc/interrupts | grep -o 'virtio[0-9]*' | tr '\\n' ' ')\"\n"
	    "before=$(awk '$1 == \"6:\" {print $2}' /proc/interrupts)\n"
	    "ip link set eth0 up && ip addr add \"$G/24\" dev eth0\n"
	    "dd if=/dev/urandom of=/tmp/d bs=1048576 count=16 2>/dev/null\n"
	    "echo \"SUM $(sha256sum < /tmp/d | cut -d' ' -f1)\"\n"
	    "dd if=/tmp/d of=/dev/vda bs=1048576 conv=fsync 2>/dev/null & disk=$!\n"
	    "nc \"$H\" 7001 < /tmp/d & send=$!\n"
	    "echo \"RECEIVED $(nc \"$H\" 7002 | sha256sum | cut -d' ' -f1)\"\n"
	    "wait $disk; echo \"DISK-WRITE $?\"\n"
	    "wait $send; echo \"NC-SEND $?\"\n"
	    "echo \"IRQ6-COUNT $(( $(awk '$1 == \"6:\" {print $2}' /proc/interrupts) - before ))\"\n",
	    0644);
	struct sys_result r = host_script("shared.sh",
		 "tap cvmm 10.214\n"
		 "tcp_peer 7001 7002 16777216\n"
		 "d=\"--disk $W/vda.img\"\n"
		 "for i in 1 2 3 4 5 6; do d=\"$d --disk $W/small$i.img\"; done\n"
		 "vm \"$B/cvisor\" run --memory 256 --cmdline-extra pci=off $d "
		 "--net \"tap=$T,mac=52:54:00:3d:00:02\" --balloon -e \"H=$H\" -e \"G=$G\" "
		 "-- sh -c \"$(cat \"$W/guest.sh\")\"\n"
		 "echo \"RUN $?\"\n"
		 "wait $peer; echo \"PEER $?\"\n"
		 "echo \"HOST-IN $(cat \"$S/in\")\"\n"
		 "echo \"HOST-OUT $(cat \"$S/out\")\"\n");
	expect_num(&r, "RUN", "==", 0, "the guest run");
	expect_num(&r, "ON-MMIO", "==", 11, "eleven devices");
	expect_num(&r, "LEVEL-LINES", "==", 7, "seven lines, all level-triggered");
	expect(&r, "IRQ6", "virtio1 virtio8", "vda and the NIC share IRQ 6");
	expect_num(&r, "PEER", "==", 0, "the host-side peer");
	expect_num(&r, "DISK-WRITE", "==", 0, "the disk write");
	expect_num(&r, "NC-SEND", "==", 0, "the guest's send");
	char sum[80], want[128], got[80];
	field(&r, "SUM", sum);
	cr_assert(is_sha256(sum), "%s", r.out);
	snprintf(want, sizeof(want), "16777216 %s", sum);
	expect(&r, "HOST-IN", want, "guest -> host 16 MiB over the shared line");
	field(&r, "RECEIVED", got);
	snprintf(want, sizeof(want), "16777216 %s", got);
	expect(&r, "HOST-OUT", want, "host -> guest 16 MiB over the shared line");
	long long irqs = num(&r, "IRQ6-COUNT");
	cr_assert_gt(irqs, 0, "IRQ 6 fired during the transfers");
	sys_free(&r);
	char landed[80];
	host_sum("vda.img", 0, 16, landed);
	cr_assert_str_eq(landed, sum, "vda.img holds the 16 MiB the guest wrote");
}

/*
 * --transport mmio without pci=off, and a guest that ignores ACPI (acpi=off) and learns its
 * interrupt lines from the MP table, whose entries must make them level-triggered too. Such a
 * guest cannot power off; it ends with a reset, which cvisor-vmm reports as status 80.
 */
Test(mmio, transport_option_with_an_mp_table_guest)
{
	host_ok("head -c 1048576 /dev/urandom > '%s/d.img'", work());
	char sum[80];
	host_sum("d.img", 0, 1, sum);
	guest_cpio("t",
	    "#!/bin/sh\n"
	    GUEST_INVENTORY
	    "echo \"ACPI $(ls /sys/firmware/acpi/tables 2>/dev/null | wc -l)\"\n"
	    "echo \"READ $(sha256sum < /dev/vda | cut -d' ' -f1)\"\n"
	    /* Without ACPI there is no power-off: reset through the keyboard controller. */
	    "reboot -f\n");
	struct sys_result r = host_script("mp.sh",
		"vm \"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --initrd \"$B/initramfs.cpio\" "
		"--initrd \"$W/t.cpio\" --transport mmio --rng --disk \"$W/d.img\" "
		"--console \"file:$S/console\" "
		"--cmdline \"console=ttyS0 quiet acpi=off -- /bin/sh /t.sh\"\n"
		"echo \"VMM $?\"\n"
		"cat \"$S/console\"\n");
	expect_num(&r, "VMM", "==", 80, "cvisor-vmm: the guest reset itself (exit status 80)");
	expect_num(&r, "ACPI", "==", 0, "the guest did not use ACPI");
	expect(&r, "IDS", "0x0002 0x0004", "disk and rng");
	expect_num(&r, "ON-MMIO", "==", 2, "both on virtio-mmio");
	expect_num(&r, "VIRTIO-PCI", "==", 0, "nothing on virtio-pci");
	expect_num(&r, "LEVEL-LINES", "==", 2, "MP table: level-triggered lines");
	expect(&r, "READ", sum, "the guest reads the image's bytes");
	sys_free(&r);
}

/*
 * The balloon is driven by configuration changes (the new target), so this is the config
 * interrupt's path: PATCH /balloon on the control API, the guest gives 64 MiB back and takes
 * them again, and the driver's report reaches the API.
 */
Test(mmio, balloon_follows_the_api_through_config_interrupts)
{
	guest_cpio("b",
	    "#!/bin/sh\n"
	    "mem() { awk '/^MemTotal:/ {print $2}' /proc/meminfo; }\n"
	    "wait_for() {   # until MemTotal satisfies COND ($1), at most 60 s\n"
	    "  i=0; while :; do set -- $(mem); eval \"$cond\" && break; i=$((i + 1));\n"
	    "    [ $i -ge 600 ] && break; sleep 0.1; done\n"
	    "}\n"
	    "t0=$(mem)\n"
	    "echo \"BEFORE $t0\"\n"
	    "cond='[ $((t0 - $1)) -ge 64512 ]'; wait_for\n"
	    "echo \"INFLATED $(mem)\"\n"
	    "cond='[ $((t0 - $1)) -le 1024 ]'; wait_for\n"
	    "echo \"DEFLATED $(mem)\"\n"
	    "echo \"ON-MMIO $(readlink /sys/bus/virtio/devices/virtio0 | grep -c /virtio-mmio-cmdline/)\"\n");
	struct sys_result r = host_script("balloon.sh",
		"vm \"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --initrd \"$B/initramfs.cpio\" "
		"--initrd \"$W/b.cpio\" --memory 256 --balloon=stats=1 --api-sock \"$S/api.sock\" "
		"--console \"file:$S/console\" "
		"--cmdline \"console=ttyS0 quiet pci=off -- /bin/sh /t.sh\" &\n"
		"vmm=$!\n"
		"/usr/bin/python3 \"$PEER\" balloon \"$S/api.sock\" \"$S/console\" 64 $vmm\n"
		"echo \"PEER $?\"\n"
		"wait $vmm; echo \"VMM $?\"\n"
		"cat \"$S/console\"\n");
	expect_num(&r, "VMM", "==", 0, "cvisor-vmm");
	expect_num(&r, "PEER", "==", 0, "the API client");
	expect_num(&r, "ON-MMIO", "==", 1, "the balloon is a virtio-mmio device");
	expect_num(&r, "PATCH-INFLATE", "==", 204, "PATCH /balloon {amount_mib: 64}");
	expect_num(&r, "ACTUAL-MIB", "==", 64, "the driver reports the balloon's size");
	expect_num(&r, "PATCH-DEFLATE", "==", 204, "PATCH /balloon {amount_mib: 0}");
	long long before = num(&r, "BEFORE"), inflated = num(&r, "INFLATED"),
		  deflated = num(&r, "DEFLATED");
	cr_assert(before - inflated >= 65536 - 1024 && before - inflated <= 65536 + 1024,
		  "MemTotal dropped by %lld kB\n%s", before - inflated, r.out);
	cr_assert(before - deflated <= 1024 && deflated - before <= 1024,
		  "MemTotal after deflating differs by %lld kB", deflated - before);
	sys_free(&r);
}

/* Option errors need no guest. */
Test(mmio, bad_transport_is_a_usage_error)
{
	struct sys_result r = sys_host("'%s/cvisor-vmm' --kernel /nonexistent --transport isa",
				       sys_build());
	cr_assert_eq(r.status, 64, "exit %d: %s", r.status, r.err);
	cr_assert(strstr(r.err, "--transport 'isa': expected pci or mmio"), "%s", r.err);
	sys_free(&r);
}
