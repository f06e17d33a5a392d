/*
 * Launching the emulated host's QEMU (internal.h). QEMU daemonizes itself (-daemonize): its first
 * process exits only once the machine is set up, so configuration errors (a taken port, a bad
 * path) come back synchronously with QEMU's own message, and the running machine outlives the
 * cvisor process that started it. TCG with +svm,+npt gives the guest working nested AMD-V.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "util.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/*
 * panic=1 with -no-reboot turns a guest panic into QEMU exiting instead of a hung machine.
 * (mitigations=off was measured: no difference, the AMD qemu64 model needs no page-table
 * isolation.)
 */
#define KERNEL_CMDLINE "console=ttyS0 quiet panic=1"

int qemu_pick_port(unsigned *port, struct cv_error *err)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "pick a port: socket");
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(sa);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "pick a port on 127.0.0.1");
		close(fd);
		return -1;
	}
	close(fd);
	*port = ntohs(sa.sin_port);
	return 0;
}

int qemu_launch(const struct qemu_params *p, struct cv_error *err)
{
	const char *qemu = getenv("CVISOR_QEMU");
	if (!qemu || !*qemu)
		qemu = "qemu-system-x86_64";
	char smp[32], mem[32], netdev[128], serial[PATH_MAX + 8], monitor[PATH_MAX + 32];
	snprintf(smp, sizeof(smp), "%u", p->cpus);
	snprintf(mem, sizeof(mem), "%u", p->memory_mib);
	snprintf(netdev, sizeof(netdev), "user,id=n0,hostfwd=tcp:127.0.0.1:%u-:%u", p->port,
		 EMUHOST_AGENT_PORT);
	if (cv_format(serial, sizeof(serial), err, "file:%s", p->console_log) < 0 ||
	    cv_format(monitor, sizeof(monitor), err, "unix:%s,server=on,wait=off", p->monitor) < 0)
		return -1;
	/* Extra kernel arguments, e.g. "loglevel=7" to debug a host that does not come up. */
	char cmdline[1024];
	const char *extra = getenv("CVISOR_EMUHOST_APPEND");
	if (cv_format(cmdline, sizeof(cmdline), err, "%s%s%s", KERNEL_CMDLINE, extra ? " " : "",
		      extra ? extra : "") < 0)
		return -1;
	/*
	 * Multi-threaded TCG by default. Single-threaded TCG avoids a rare stale translation of
	 * kernel text another vCPU just patched (a host CPU looping between exc_page_fault and
	 * int3, seen under heavy load), but it is far worse for guests: measured here, 11 of 25
	 * 'cvisor run -- true' hung in early boot (the guest spinning in the timekeeping seqlock,
	 * an interrupt taken inside its writer), against 0 of 25 with multi-threaded TCG.
	 * CVISOR_EMUHOST_TCG=single selects it anyway.
	 */
	const char *tcg = getenv("CVISOR_EMUHOST_TCG");
	const char *accel = tcg && strcmp(tcg, "single") == 0 ? "tcg,thread=single" : "tcg,thread=multi";
	const char *argv[] = {
		qemu,
		"-name", "cvisor-emuhost",
		"-accel", accel,
		"-cpu", "qemu64,+svm,+npt",
		"-smp", smp,
		"-m", mem,
		"-nodefaults", "-no-user-config", "-no-reboot",
		"-display", "none",
		"-serial", serial,
		"-monitor", monitor,
		"-kernel", p->kernel,
		"-initrd", p->initrd,
		"-append", cmdline,
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=n0",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,multidevs=remap",
		"-daemonize",
		"-pidfile", p->pidfile,
		NULL,
	};
	int logfd = open(p->stderr_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "create '%s'", p->stderr_log);
	pid_t pid = fork();
	if (pid < 0) {
		close(logfd);
		return cv_fail_errno(err, CV_EXIT_OSERR, "start QEMU: fork");
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
			_exit(CV_EXIT_OSERR);
		/*
		 * The daemon lives on after we exit; an inherited pipe (say, the caller's
		 * $(...)) would keep our caller waiting for an EOF that never comes.
		 */
		syscall(SYS_close_range, 3u, ~0u, 0u);
		execvp(qemu, (char *const *)argv);
		dprintf(2, "exec '%s': %s\n", qemu, strerror(errno));
		_exit(errno == ENOENT ? CV_EXIT_NOT_FOUND : CV_EXIT_CANNOT_EXEC);
	}
	close(logfd);
	int st;
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return cv_fail_errno(err, CV_EXIT_OSERR, "start QEMU: wait");
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	char tail[300];
	state_tail(p->stderr_log, tail, sizeof(tail));
	if (strstr(tail, "host forwarding rule"))
		return 1;
	if (WIFEXITED(st) && WEXITSTATUS(st) == CV_EXIT_NOT_FOUND)
		return cv_fail(err, CV_EXIT_UNAVAILABLE,
			       "start QEMU: '%s' not found (apt-get install qemu-system-x86)", qemu);
	return cv_fail(err, CV_EXIT_UNAVAILABLE, "start QEMU (%s): %s", qemu,
		       tail[0] ? tail : "failed without a message");
}
