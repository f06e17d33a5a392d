/*
 * Per-thread seccomp allow-lists and capability dropping (see sandbox.h).
 *
 * A filter is assembled from groups, each a set of syscalls with one reason to exist; a role is
 * the union of the groups its thread's code needs. The lists were found by reading the code
 * that runs on each thread after setup and confirmed by running real guests with every device
 * in mode log (docs/sandboxing.md has the procedure and the per-role tables). Arguments are
 * checked where the kernel lets a filter see them: ioctl request numbers, the socket domain,
 * fcntl commands, madvise advice, no PROT_EXEC in mmap/mprotect, tgkill only within this
 * process. Pointers (paths, structs) cannot be inspected by seccomp, so syscalls that take
 * paths are avoided after setup instead (only the main thread may unlink, at teardown).
 *
 * When adding a code path that runs after setup: run a guest that exercises it with
 * --seccomp log, read the kernel log for "type=1326" lines, and add what it needs to the
 * narrowest group here (and to the tables in docs/sandboxing.md).
 */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/if_tun.h>
#include <linux/fs.h>
#include <linux/kvm.h>
#include <malloc.h>
#include <seccomp.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include "vm.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define CV_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define CV_SANITIZED 1
#endif
#endif

static const char *const mode_names[] = {
	[VMM_SANDBOX_OFF] = "off",
	[VMM_SANDBOX_LOG] = "log",
	[VMM_SANDBOX_KILL] = "kill",
};

static const char *const role_names[VMM_ROLE_COUNT] = {
	[VMM_ROLE_VCPU] = "vCPU",
	[VMM_ROLE_IO] = "I/O",
	[VMM_ROLE_API] = "API",
	[VMM_ROLE_MAIN] = "main",
	[VMM_ROLE_MIGRATE] = "migration",
};

int vmm_sandbox_mode_parse(const char *s, enum vmm_sandbox_mode *out, struct cv_error *err)
{
	for (unsigned m = 0; m < sizeof(mode_names) / sizeof(mode_names[0]); m++) {
		if (strcmp(s, mode_names[m]) == 0) {
			*out = (enum vmm_sandbox_mode)m;
			return 0;
		}
	}
	return cv_fail(err, CV_EXIT_USAGE, "--seccomp '%s': expected off, log or kill", s);
}

const char *vmm_sandbox_mode_name(enum vmm_sandbox_mode mode)
{
	return (unsigned)mode < sizeof(mode_names) / sizeof(mode_names[0]) ? mode_names[mode] : "?";
}

const char *vmm_thread_role_name(enum vmm_thread_role role)
{
	return (unsigned)role < VMM_ROLE_COUNT ? role_names[role] : "?";
}

/* ------------------------------------------------------------------------------------------ */
/* Filter assembly */

struct builder {
	scmp_filter_ctx ctx;
	int rc;                      /* first libseccomp error (negative errno), 0 if none */
	const char *failed;          /* the syscall whose rule failed */
};

static void add(struct builder *b, int nr, const char *name, unsigned n,
		const struct scmp_arg_cmp *cmp)
{
	if (b->rc)
		return;
	int rc = seccomp_rule_add_array(b->ctx, SCMP_ACT_ALLOW, nr, n, cmp);
	if (rc < 0) {
		b->rc = rc;
		b->failed = name;
	}
}

/*
 * Integer arguments are compared on their low 32 bits: the kernel sees whole registers, and
 * what a C caller leaves in the upper half of an int argument is not defined.
 */
#define ARG32(i, value) SCMP_CMP((i), SCMP_CMP_MASKED_EQ, 0xffffffffULL, (uint64_t)(value))
/* Argument i has none of the bits in mask. */
#define ARG_NONE_OF(i, mask) SCMP_CMP((i), SCMP_CMP_MASKED_EQ, (uint64_t)(mask), 0)

#define ALLOW(b, name) add((b), SCMP_SYS(name), #name, 0, NULL)
#define ALLOW_IF(b, name, cmp)                                   \
	do {                                                     \
		const struct scmp_arg_cmp c_[1] = { cmp };       \
		add((b), SCMP_SYS(name), #name, 1, c_);          \
	} while (0)

struct ioctl_req {
	unsigned long req;
	const char *name;
};
#define REQ(r) { (unsigned long)(r), #r }

static void allow_ioctls(struct builder *b, const struct ioctl_req *reqs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ALLOW_IF(b, ioctl, ARG32(1, reqs[i].req));
}
#define ALLOW_IOCTLS(b, list) allow_ioctls((b), (list), sizeof(list) / sizeof((list)[0]))

/* ------------------------------------------------------------------------------------------ */
/* Groups */

/*
 * malloc (brk, mmap, mremap, munmap; mprotect when a thread arena grows), the balloon giving
 * guest pages back (madvise DONTNEED/REMOVE/FREE), glibc returning a dead thread's stack
 * (DONTNEED). Never new executable memory.
 */
static void grp_memory(struct builder *b)
{
	ALLOW(b, brk);
	ALLOW_IF(b, mmap, ARG_NONE_OF(2, PROT_EXEC));
	ALLOW_IF(b, mprotect, ARG_NONE_OF(2, PROT_EXEC));
	ALLOW(b, mremap);
	ALLOW(b, munmap);
	static const int advice[] = { MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_NORMAL,
				      MADV_WILLNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE,
				      MADV_DONTDUMP };
	for (size_t i = 0; i < sizeof(advice) / sizeof(advice[0]); i++)
		ALLOW_IF(b, madvise, ARG32(2, advice[i]));
}

/*
 * Locks, condition variables and joins (futex), time, sleeping, signal masks and returning
 * from the vCPU kick handler, pthread_kill/raise (tgkill, restricted to this process: it
 * needs getpid and gettid), a thread or the process ending.
 */
static void grp_threads(struct builder *b, pid_t self)
{
	ALLOW(b, futex);
	ALLOW(b, sched_yield);
	ALLOW(b, clock_gettime);     /* the vDSO falls back to it on some clock sources */
	ALLOW(b, gettimeofday);
	ALLOW(b, nanosleep);
	ALLOW(b, clock_nanosleep);
	ALLOW(b, restart_syscall);
	ALLOW(b, rt_sigprocmask);
	ALLOW(b, rt_sigreturn);
	ALLOW(b, getpid);
	ALLOW(b, gettid);
	ALLOW_IF(b, tgkill, ARG32(0, self));
	ALLOW(b, exit);
	ALLOW(b, exit_group);
}

/*
 * Reading and writing descriptors the thread already has: eventfds, the console, TAP
 * (readv/writev), sockets (read/write too), closing them, fstat (stdio does it on first use).
 */
static void grp_fd_io(struct builder *b)
{
	ALLOW(b, read);
	ALLOW(b, write);
	ALLOW(b, readv);
	ALLOW(b, writev);
	ALLOW(b, close);
	ALLOW(b, fstat);
	ALLOW_IF(b, newfstatat, SCMP_CMP(3, SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
}

/*
 * Interrupts, from whichever thread raises them: MSI-X vectors get their irqfd and route when
 * the guest first unmasks them (eventfd2, KVM_IRQFD, KVM_SET_GSI_ROUTING), legacy lines
 * (UART, INTx) go through KVM_IRQ_LINE, KVM_SIGNAL_MSI injects an MSI directly.
 */
static void grp_irq(struct builder *b)
{
	static const struct ioctl_req reqs[] = {
		REQ(KVM_IRQ_LINE), REQ(KVM_IRQ_LINE_STATUS), REQ(KVM_SIGNAL_MSI), REQ(KVM_IRQFD),
		REQ(KVM_SET_GSI_ROUTING),
	};
	ALLOW(b, eventfd2);
	ALLOW_IOCTLS(b, reqs);
}

/*
 * Device activation and reset, which the guest triggers by writing device registers (so they
 * run on vCPU threads) and teardown repeats on the main thread: queue notifiers move with the
 * BAR (KVM_IOEVENTFD), backends join or leave the I/O loop (epoll_ctl), the balloon's and
 * vsock's timers and the rate limiters' wake-ups (also re-armed by the API thread when a limit
 * changes) are armed or stopped, virtio-blk drains its io_uring, virtio-net sets the
 * TAP's offloads to what the driver accepted, vsock closes its host connections.
 */
static void grp_device_control(struct builder *b)
{
	static const struct ioctl_req reqs[] = { REQ(KVM_IOEVENTFD), REQ(TUNSETOFFLOAD) };
	ALLOW_IOCTLS(b, reqs);
	ALLOW(b, epoll_ctl);
	ALLOW(b, timerfd_settime);
	ALLOW(b, timerfd_gettime);
	ALLOW(b, io_uring_enter);
	ALLOW(b, shutdown);
}

/* Running the vCPU, and reading its registers to say where a failing guest was. */
static void grp_vcpu(struct builder *b)
{
	static const struct ioctl_req reqs[] = { REQ(KVM_RUN), REQ(KVM_GET_REGS) };
	ALLOW_IOCTLS(b, reqs);
}

/*
 * A vCPU's architectural state, read and written when the VM is paused, saved or restored
 * (snapshots, migration): by the vCPU's own thread, or by the controlling thread (API, main)
 * while the vCPU is parked; KVM_KVMCLOCK_CTRL tells the guest's clock a pause happened.
 */
static void grp_vcpu_state(struct builder *b)
{
	static const struct ioctl_req reqs[] = {
		REQ(KVM_GET_REGS), REQ(KVM_SET_REGS), REQ(KVM_GET_SREGS), REQ(KVM_SET_SREGS),
		REQ(KVM_GET_FPU), REQ(KVM_SET_FPU), REQ(KVM_GET_XSAVE), REQ(KVM_SET_XSAVE),
#ifdef KVM_GET_XSAVE2
		REQ(KVM_GET_XSAVE2),
#endif
		REQ(KVM_GET_XCRS), REQ(KVM_SET_XCRS), REQ(KVM_GET_MSRS), REQ(KVM_SET_MSRS),
		REQ(KVM_GET_LAPIC), REQ(KVM_SET_LAPIC), REQ(KVM_GET_VCPU_EVENTS),
		REQ(KVM_SET_VCPU_EVENTS), REQ(KVM_GET_MP_STATE), REQ(KVM_SET_MP_STATE),
		REQ(KVM_GET_DEBUGREGS), REQ(KVM_SET_DEBUGREGS), REQ(KVM_KVMCLOCK_CTRL),
		REQ(KVM_GET_TSC_KHZ), REQ(KVM_SET_TSC_KHZ), REQ(KVM_SET_CPUID2), REQ(KVM_GET_CPUID2),
	};
	ALLOW_IOCTLS(b, reqs);
}

/* VM-wide state for pause, snapshot and migration: irqchips, PIT, kvmclock, dirty pages. */
static void grp_vm_state(struct builder *b)
{
	static const struct ioctl_req reqs[] = {
		REQ(KVM_GET_IRQCHIP), REQ(KVM_SET_IRQCHIP), REQ(KVM_GET_PIT2), REQ(KVM_SET_PIT2),
		REQ(KVM_GET_CLOCK), REQ(KVM_SET_CLOCK), REQ(KVM_GET_DIRTY_LOG),
		REQ(KVM_CLEAR_DIRTY_LOG),
	};
	ALLOW_IOCTLS(b, reqs);
}

/*
 * The I/O thread's loop; virtio-rng's entropy; vsock checking whether a host connection hung
 * up (a poll with no timeout).
 */
static void grp_io_loop(struct builder *b)
{
	ALLOW(b, epoll_wait);
	ALLOW(b, epoll_pwait);
	ALLOW(b, poll);
	ALLOW(b, getrandom);
}

/*
 * Host-side Unix sockets: virtio-vsock accepts host connections and connects to PATH_PORT
 * listeners. Only AF_UNIX sockets can be created: no network access from the VMM.
 */
static void grp_unix_sockets(struct builder *b)
{
	ALLOW_IF(b, socket, ARG32(0, AF_UNIX));
	ALLOW(b, connect);
	ALLOW(b, accept4);
	ALLOW(b, sendmsg);
	ALLOW(b, recvmsg);
	ALLOW(b, sendto);
	ALLOW(b, recvfrom);
	ALLOW(b, getsockopt);
	ALLOW(b, shutdown);
	static const int cmds[] = { F_GETFL, F_SETFL, F_GETFD, F_SETFD };
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		ALLOW_IF(b, fcntl, ARG32(1, cmds[i]));
}

/*
 * Snapshot files, written and read on the API thread while the VM is paused: the state file
 * (written to PATH.tmp, then renamed), the memory file (sized, written, or mapped back over
 * guest RAM on restore), /proc/self/pagemap to skip pages never touched, KVM capability
 * checks for the optional state blocks. Paths come from the API client, which may already
 * do anything the VMM's user can; the guest cannot reach these calls.
 */
static void grp_snapshot_files(struct builder *b)
{
	ALLOW(b, openat);
	ALLOW(b, ftruncate);
	ALLOW(b, fallocate);
	ALLOW(b, pread64);
	ALLOW(b, pwrite64);
	ALLOW(b, lseek);
	ALLOW(b, fsync);
	ALLOW(b, fdatasync);
	ALLOW(b, rename);
	ALLOW(b, renameat);
	ALLOW(b, renameat2);
	ALLOW(b, unlink);
	ALLOW(b, unlinkat);
	ALLOW(b, newfstatat);
	static const struct ioctl_req reqs[] = { REQ(KVM_CHECK_EXTENSION) };
	ALLOW_IOCTLS(b, reqs);
}

/*
 * Live migration hands the disk image locks over (block/image.h): the migration thread drops
 * them before GO and takes them back if the destination refuses; the API thread takes them
 * back when the operator resumes a source whose migration ended unknown.
 */
static void grp_disk_locks(struct builder *b)
{
	ALLOW_IF(b, fcntl, ARG32(1, F_OFD_SETLK));
}

/*
 * PATCH /drives/ID {"path_on_host"} on the API thread: the new image is opened (openat is in
 * grp_snapshot_files), locked against other writers (F_OFD_SETLK) and, for a host block
 * device, sized (BLKGETSIZE64, BLKSSZGET). The API client names the file, as it does for
 * snapshots.
 */
static void grp_drive_swap(struct builder *b)
{
	grp_disk_locks(b);
	static const struct ioctl_req reqs[] = { REQ(BLKGETSIZE64), REQ(BLKSSZGET) };
	ALLOW_IOCTLS(b, reqs);
}

/*
 * libmicrohttpd's server thread (internal polling with poll()): accepting on the listening
 * socket it was given, per-connection socket options, its inter-thread wake-up.
 */
static void grp_api(struct builder *b)
{
	ALLOW(b, poll);
	ALLOW(b, ppoll);
	ALLOW(b, accept);
	ALLOW(b, setsockopt);
	static const struct ioctl_req reqs[] = { REQ(FIONBIO) };
	ALLOW_IOCTLS(b, reqs);
}

/*
 * The main thread after start: waiting for console input, signals (signalfd) and the stop
 * request; kicking vCPUs out of KVM_RUN (tgkill, in grp_threads); at the end restoring the
 * terminal (TCSETS) and removing the sockets it created (API, vsock listener); flushing the
 * metrics file every 60 s.
 */
static void grp_main(struct builder *b)
{
	ALLOW(b, poll);
	ALLOW(b, ppoll);
	ALLOW(b, unlink);
	ALLOW(b, unlinkat);
	ALLOW(b, newfstatat);        /* vsock checks its listener is still its own before unlink */
	ALLOW(b, pread64);           /* metrics: VMM RSS from /proc/self/statm, opened before */
	static const struct ioctl_req reqs[] = { REQ(TCSETS), REQ(TCSETSW), REQ(TCGETS) };
	ALLOW_IOCTLS(b, reqs);
}

/*
 * The live-migration thread (migrate/source.c): a TCP connection to the destination (IPv4 or
 * IPv6 only, opened when a migration starts; the address comes from the API client), dirty
 * page logging turned on and off on the RAM slots, the dirty logs read, /proc/self/pagemap
 * (opened before the sandbox) read to skip pages never touched, waiting for the peer's answers.
 */
static void grp_migrate(struct builder *b)
{
	ALLOW_IF(b, socket, ARG32(0, AF_INET));
	ALLOW_IF(b, socket, ARG32(0, AF_INET6));
	ALLOW(b, connect);
	ALLOW(b, setsockopt);
	ALLOW(b, sendto);
	ALLOW(b, sendmsg);
	ALLOW(b, recvfrom);
	ALLOW(b, recvmsg);
	ALLOW(b, shutdown);
	ALLOW(b, poll);
	ALLOW(b, ppoll);
	ALLOW(b, pread64);
	static const struct ioctl_req reqs[] = {
		REQ(KVM_SET_USER_MEMORY_REGION), REQ(KVM_GET_DIRTY_LOG), REQ(KVM_CHECK_EXTENSION),
	};
	ALLOW_IOCTLS(b, reqs);
}

#ifdef CV_SANITIZED
/*
 * Sanitizer builds only: what ASan/UBSan/LSan do behind the program's back - error reports
 * (reading /proc/self/maps; the symbolizer runs in a child of its own), the leak check at exit
 * (a tracer thread that stops the others with ptrace and reads /proc/self/task), alternate
 * signal stacks. Unit tests that expect these to be refused skip that check here.
 */
static void grp_sanitizer(struct builder *b)
{
	static const int nrs[] = {
		SCMP_SYS(openat), SCMP_SYS(open), SCMP_SYS(readlink), SCMP_SYS(readlinkat),
		SCMP_SYS(getdents), SCMP_SYS(getdents64), SCMP_SYS(lseek), SCMP_SYS(prctl),
		SCMP_SYS(sigaltstack),
		SCMP_SYS(rt_sigaction), SCMP_SYS(clone), SCMP_SYS(ptrace), SCMP_SYS(wait4),
		SCMP_SYS(sched_getaffinity), SCMP_SYS(getppid), SCMP_SYS(pipe2), SCMP_SYS(dup2),
		SCMP_SYS(getrlimit), SCMP_SYS(setrlimit), SCMP_SYS(prlimit64), SCMP_SYS(stat),
		SCMP_SYS(newfstatat), SCMP_SYS(uname),
	};
	for (size_t i = 0; i < sizeof(nrs) / sizeof(nrs[0]); i++)
		add(b, nrs[i], "sanitizer", 0, NULL);
}
#endif

static void build_role(struct builder *b, enum vmm_thread_role role, pid_t self)
{
	grp_memory(b);
	grp_threads(b, self);
	grp_fd_io(b);
	grp_irq(b);
	switch (role) {
	case VMM_ROLE_VCPU:
		grp_device_control(b);
		grp_vcpu(b);
		grp_vcpu_state(b);
		break;
	case VMM_ROLE_IO:
		grp_device_control(b);
		grp_io_loop(b);
		grp_unix_sockets(b);
		break;
	case VMM_ROLE_API:
		grp_device_control(b);       /* pause: devices finish work in flight */
		grp_unix_sockets(b);
		grp_api(b);
		grp_vcpu_state(b);
		grp_vm_state(b);
		grp_snapshot_files(b);
		grp_drive_swap(b);           /* includes the disk locks */
		break;
	case VMM_ROLE_MIGRATE:
		grp_device_control(b);       /* pause: devices finish work in flight */
		grp_vcpu_state(b);
		grp_vm_state(b);
		grp_migrate(b);
		grp_disk_locks(b);
		break;
	case VMM_ROLE_MAIN:
	case VMM_ROLE_COUNT:
		grp_device_control(b);
		grp_vcpu_state(b);
		grp_vm_state(b);
		grp_main(b);
		break;
	}
#ifdef CV_SANITIZED
	grp_sanitizer(b);
#endif
}

int vmm_seccomp_install(enum vmm_thread_role role, enum vmm_sandbox_mode mode,
			struct cv_error *err)
{
	if (mode == VMM_SANDBOX_OFF)
		return 0;
	if ((unsigned)role >= VMM_ROLE_COUNT)
		return cv_fail(err, CV_EXIT_SOFTWARE, "seccomp: unknown thread role %d", (int)role);
	uint32_t deflt = mode == VMM_SANDBOX_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
	struct builder b = { .ctx = seccomp_init(deflt) };
	if (!b.ctx)
		return cv_fail(err, CV_EXIT_OSERR, "seccomp: cannot create a filter (libseccomp)");
	build_role(&b, role, getpid());
	int rc = b.rc;
	if (rc == 0) {
		/* No TSYNC: the filter is this thread's own. NO_NEW_PRIVS is set on the way. */
		rc = seccomp_load(b.ctx);
		if (rc < 0)
			b.failed = "(loading the filter)";
	}
	seccomp_release(b.ctx);
	if (rc < 0) {
		errno = -rc;
		return cv_fail_errno(err, CV_EXIT_OSERR, "seccomp: %s filter, %s",
				     role_names[role], b.failed ? b.failed : "?");
	}
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Capabilities */

int vmm_caps_drop(struct cv_error *err)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "capget");
	/*
	 * The bounding set limits what an exec could ever gain back; emptying it needs
	 * CAP_SETPCAP, which an unprivileged VMM (e.g. under cvisor-jailer) does not have, nor
	 * need: its permitted set is empty already.
	 */
	if (data[CAP_TO_INDEX(CAP_SETPCAP)].effective & CAP_TO_MASK(CAP_SETPCAP)) {
		for (unsigned long cap = 0; cap < 64; cap++) {
			if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
				if (errno == EINVAL)
					break;          /* past the last capability this kernel knows */
				return cv_fail_errno(err, CV_EXIT_OSERR, "drop capability %lu", cap);
			}
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return cv_fail_errno(err, CV_EXIT_OSERR, "clear ambient capabilities");
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "capset (drop all)");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "PR_SET_NO_NEW_PRIVS");
	return 0;
}

void vmm_sandbox_prepare_process(void)
{
	mallopt(M_ARENA_MAX, 1);
}

int vmm_sandbox_enter(enum vmm_thread_role role, enum vmm_sandbox_mode mode,
		      struct cv_error *err)
{
	if (mode == VMM_SANDBOX_OFF)
		return 0;
	/* Capabilities are per thread like filters; capset is not in any allow-list. */
	if (vmm_caps_drop(err) < 0 || vmm_seccomp_install(role, mode, err) < 0)
		return cv_error_wrap(err, "sandbox of the %s thread", role_names[role]);
	return 0;
}

bool vm_sandbox_thread(struct vm *vm, enum vmm_thread_role role, const char *name)
{
	if (name)
		prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
	struct cv_error err = { 0 };
	if (vmm_sandbox_enter(role, vm->sandbox, &err) == 0)
		return true;
	vm_request_stop(vm, err.code, "%s thread%s%s: %s", role_names[role], name ? " " : "",
			name ? name : "", err.msg);
	return false;
}

bool vm_sandbox_io_start(void *ctx)
{
	return vm_sandbox_thread(ctx, VMM_ROLE_IO, "io");
}

int vm_sandbox_api_start(void *ctx)
{
	struct vm *vm = ctx;
	/* Before the VM runs, the API thread may still be setting it up (and start threads). */
	if (!atomic_load(&vm->sandbox_armed))
		return 0;
	return vm_sandbox_thread(vm, VMM_ROLE_API, "api") ? 1 : -1;
}
