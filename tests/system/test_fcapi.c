/*
 * Firecracker's getting-started walkthrough, replayed against cvisor-vmm with
 * `curl --unix-socket` in a host where guests boot (the emulated host on PVM machines): the
 * VMM is started with only --api-sock, then the logger, boot source (the walkthrough's
 * "console=ttyS0 reboot=k panic=1 pci=off", plus i8042.nopnp from Firecracker's default
 * arguments, without which Linux does not probe the keyboard controller that
 * SendCtrlAltDel types on), a root drive and a network interface are PUT and
 * InstanceStart boots a real Linux guest from an ext4 root file system, on virtio-mmio. The
 * guest's /sbin/init reports what it sees on the serial console; the test reads it there, and
 * checks the HTTP status of every step, the logger's file, 400s with fault messages once the
 * VM runs, and the end: SendCtrlAltDel reaches the guest's i8042 keyboard, Linux reboots
 * (reboot=k: the i8042 reset line) and cvisor-vmm exits with 80.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "script.h"

const struct script_suite script_suite = { .tag = "fcapitest" };

TestSuite(fcapi, .fini = remove_work, .timeout = 300);

/* The guest's init: what it reports, then it waits for Ctrl-Alt-Del (at most 60 s). */
static const char guest_init[] =
	"#!/bin/sh\n"
	"mount -t proc proc /proc\n"
	"mount -t sysfs sys /sys\n"
	"echo \"GUEST-CMDLINE $(cat /proc/cmdline)\"\n"
	"echo \"GUEST-ROOT $(awk '$2 == \"/\" {print $1, $3, substr($4, 1, 2)}' /proc/mounts)\"\n"
	"echo \"GUEST-MARKER $(cat /marker)\"\n"
	"echo \"GUEST-MMIO-DEVICES $(ls /sys/bus/virtio/devices | wc -l)\"\n"
	"echo \"GUEST-NET $(ls /sys/class/net | grep -c eth0)\"\n"
	"echo \"GUEST-KEYBOARD $(grep -c 'AT Translated Set 2 keyboard' /proc/bus/input/devices)\"\n"
	"echo GUEST-READY\n"
	"sleep 60\n"
	"echo GUEST-TIMEOUT\n"
	"poweroff -f\n";

/*
 * The walkthrough. Scratch space is in /dev/shm (sockets cannot live on the emulated host's
 * 9p /tmp). Each curl prints "CODE-<step> <status>".
 */
static const char walkthrough[] =
	"set -u\n"
	"export PATH=$PATH:/usr/sbin:/sbin\n"
	"S=$(mktemp -d /dev/shm/cvisor-fcapitest.XXXXXX) || exit 99\n"
	"T=cvfc$$\n"
	"cleanup() { ip link del \"$T\" 2>/dev/null; rm -rf \"$S\"; }\n"
	"trap cleanup EXIT\n"
	"ip tuntap add dev \"$T\" mode tap || echo TAP-FAILED\n"
	"mkdir \"$S/root\" && cd \"$S/root\" && cpio -id --quiet < \"$B/initramfs.cpio\" || exit 98\n"
	"rm -f sbin/init && cp \"$W/init\" sbin/init && echo fc-rootfs-ok > marker && cd /\n"
	"truncate -s 64M \"$S/rootfs.ext4\" && mkfs.ext4 -q -d \"$S/root\" \"$S/rootfs.ext4\" || exit 97\n"
	"API_SOCKET=\"$S/firecracker.socket\"\n"
	"timeout -k 5 200 \"$B/cvisor-vmm\" --api-sock \"$API_SOCKET\" "
	"--console \"file:$S/console\" 2>\"$S/stderr\" &\n"
	"vmm=$!\n"
	"i=0; while [ ! -S \"$API_SOCKET\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done\n"
	"call() {   # STEP METHOD PATH [BODY]\n"
	"  step=$1; shift\n"
	"  code=$(curl -s -o \"$S/body\" -w '%{http_code}' -X \"$1\" --unix-socket \"$API_SOCKET\" "
	"-H 'Accept: application/json' -H 'Content-Type: application/json' "
	"${3:+--data \"$3\"} \"http://localhost$2\")\n"
	"  echo \"CODE-$step $code\"; echo \"BODY-$step $(cat \"$S/body\")\"\n"
	"}\n"
	"call state0 GET /\n"
	"call logger PUT /logger \"{\\\"log_path\\\": \\\"$S/fc.log\\\", \\\"level\\\": \\\"Debug\\\", "
	"\\\"show_level\\\": true, \\\"show_log_origin\\\": true}\"\n"
	"call boot PUT /boot-source \"{\\\"kernel_image_path\\\": \\\"$K/vmlinux\\\", "
	"\\\"boot_args\\\": \\\"console=ttyS0 reboot=k panic=1 pci=off i8042.nopnp\\\"}\"\n"
	"call rootfs PUT /drives/rootfs \"{\\\"drive_id\\\": \\\"rootfs\\\", \\\"path_on_host\\\": "
	"\\\"$S/rootfs.ext4\\\", \\\"is_root_device\\\": true, \\\"is_read_only\\\": false}\"\n"
	"call net PUT /network-interfaces/net1 \"{\\\"iface_id\\\": \\\"net1\\\", \\\"guest_mac\\\": "
	"\\\"06:00:AC:10:00:02\\\", \\\"host_dev_name\\\": \\\"$T\\\"}\"\n"
	"call machine PUT /machine-config '{\"vcpu_count\": 1, \"mem_size_mib\": 256}'\n"
	"call badjson PUT /machine-config '{\"vcpu_count\": 2,'\n"
	"sleep 0.015\n"
	"call start PUT /actions '{\"action_type\": \"InstanceStart\"}'\n"
	"i=0; while ! grep -q GUEST-READY \"$S/console\" && [ $i -lt 1200 ]; do sleep 0.1; "
	"i=$((i + 1)); done\n"
	"call state1 GET /\n"
	"call late PUT /boot-source \"{\\\"kernel_image_path\\\": \\\"$K/vmlinux\\\"}\"\n"
	"call config GET /vm/config\n"
	"call cad PUT /actions '{\"action_type\": \"SendCtrlAltDel\"}'\n"
	"wait $vmm; echo \"VMM $?\"\n"
	"tr -d '\\r' < \"$S/console\" | grep '^GUEST-'\n"
	"echo \"LOG-STARTED $(grep -c 'VM started: 1 vCPUs, 256 MiB, 1 drives, 1 NICs, virtio-mmio' "
	"\"$S/fc.log\")\"\n"
	"echo \"LOG-ORIGIN $(grep -c '\\[Info\\] \\[api_setup.c:' \"$S/fc.log\")\"\n"
	"sed 's/^/STDERR /' \"$S/stderr\"\n";

#define EXPECT_NUM(r, key, want) expect_num((r), (key), "==", (want), "fcapi")

/* Step STEP of the walkthrough answered CODE, with PART in its body (NULL: not checked). */
static void expect_step(const struct sys_result *r, const char *step, long long code,
			const char *part)
{
	char key[64], body[16384];
	snprintf(key, sizeof(key), "CODE-%s", step);
	expect_num(r, key, "==", code, step);
	if (!part)
		return;
	snprintf(key, sizeof(key), "BODY-%s", step);
	field(r, key, body);
	cr_assert(strstr(body, part), "%s: %s", key, body);
}

Test(fcapi, firecracker_getting_started_walkthrough)
{
	put("init", guest_init, 0755);
	put("walk.sh", walkthrough, 0755);
	struct sys_result r = sys_guest_host("B='%s' K='%s' W='%s' sh '%s/walk.sh'", sys_build(),
					     sys_kernel_dir(), work(), work());
	char buf[4096];
	cr_assert_not(strstr(r.out, "TAP-FAILED"), "%s", r.out);
	expect_step(&r, "state0", 200, "\"Not started\"");
	expect_step(&r, "logger", 204, NULL);
	expect_step(&r, "boot", 204, NULL);
	expect_step(&r, "rootfs", 204, NULL);
	expect_step(&r, "net", 204, NULL);
	expect_step(&r, "machine", 204, NULL);
	expect_step(&r, "badjson", 400, "fault_message");
	expect_step(&r, "start", 204, NULL);

	/* The guest booted from the drive, as /dev/vda, read-write, on virtio-mmio. */
	field(&r, "GUEST-CMDLINE", buf);
	cr_assert(strstr(buf, "console=ttyS0 reboot=k panic=1 pci=off i8042.nopnp root=/dev/vda rw"),
		  "%s", buf);
	cr_assert(strstr(buf, "virtio_mmio.device="), "%s", buf);
	expect(&r, "GUEST-ROOT", "/dev/root ext4 rw", "the root drive");
	expect(&r, "GUEST-MARKER", "fc-rootfs-ok", "the root file system");
	EXPECT_NUM(&r, "GUEST-MMIO-DEVICES", 2);
	EXPECT_NUM(&r, "GUEST-NET", 1);
	EXPECT_NUM(&r, "GUEST-KEYBOARD", 1);

	expect_step(&r, "state1", 200, "\"Running\"");
	expect_step(&r, "late", 400, "after starting");
	expect_step(&r, "config", 200, "\"host_dev_name\"");
	expect_step(&r, "cad", 204, NULL);
	/* Ctrl-Alt-Del: Linux restarts through the i8042 (reboot=k), which ends the VMM. */
	EXPECT_NUM(&r, "VMM", 80);
	cr_assert_not(strstr(r.out, "GUEST-TIMEOUT"), "%s", r.out);
	EXPECT_NUM(&r, "LOG-STARTED", 1);
	cr_assert_gt(num(&r, "LOG-ORIGIN"), 4, "show_log_origin: %s", r.out);
	sys_free(&r);
}
