/*
 * cvisor-vmm: one process per VM. Parses the command line, checks that this host's /dev/kvm can
 * run a guest (or hands the whole command to the emulated host), builds the VM and runs it until
 * the guest powers off; the exit status says how the guest ended (docs/exit-status.md).
 */
#include <getopt.h>
#include <signal.h>
#include <sys/socket.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devopts.h"
#include "fcjson.h"
#include "instance.h"
#include "exitcodes.h"
#include "kvm_probe.h"
#include "migrate/migrate.h"
#include "migrate/stream.h"
#include "sandbox.h"
#include "snapshot/snapshot.h"
#include "util.h"
#include "vm.h"

#define DEFAULT_MEMORY_MIB 256
#define DEFAULT_CMDLINE "console=ttyS0"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cvisor-vmm --kernel PATH [options]\n"
		"       cvisor-vmm --config-file FILE [--api-sock PATH | --no-api] [options]\n"
		"       cvisor-vmm --api-sock PATH [options]\n"
		"\n"
		"Boots a Linux kernel (vmlinux ELF with a PVH note or 64-bit entry, or a bzImage) in\n"
		"a KVM virtual machine with a 16550 serial console. Configured by these options, by a\n"
		"Firecracker-style JSON file, or through the control API before InstanceStart\n"
		"(docs/api/README.md).\n"
		"\n"
		"  --kernel PATH          kernel image\n"
		"  --initrd PATH          initramfs (cpio, plain or gzip); repeat to concatenate up to %d\n"
		"  --cmdline STRING       kernel command line (default \"%s\")\n"
		"  --cpus N               vCPUs, 1..%d and at most what KVM allows (default 1)\n"
		"  --memory MiB           guest RAM, at least %d MiB and at most the host's (default %d)\n"
		"  --rng                  add a virtio-rng entropy device\n"
		"  --disk PATH[,ro][,serial=ID][,cache=writeback|unsafe][,bw=SIZE/MS][,bw_burst=SIZE]\n"
		"         [,ops=N/MS][,ops_burst=N]\n"
		"                         add a virtio-blk disk backed by a raw image (repeat for more);\n"
		"                         bw= and ops= limit it with token buckets: SIZE bytes (suffix\n"
		"                         K, M, G) or N requests, refilled every MS ms (bw=2M/1000 is\n"
		"                         2 MiB/s); _burst= adds a one-time allowance on top\n"
		"  --net tap=NAME|fd=N[,mac=MAC][,rx_bw=SIZE/MS][,tx_bw=SIZE/MS][,rx_ops=N/MS]...\n"
		"                         add a virtio-net NIC on a TAP device (repeat for more); rate\n"
		"                         limits as for --disk, per direction (rx_, tx_ prefixes)\n"
		"  --vsock cid=N,uds=PATH add virtio-vsock; host side is the Unix socket PATH\n"
		"                         (connect and send \"CONNECT <port>\\n\"; guest connections to port P\n"
		"                         go to PATH_P)\n"
		"  --balloon [size=MiB][,deflate-on-oom][,stats=SECONDS][,free-page-reporting]\n"
		"                         add virtio-balloon, optionally inflated to size MiB at boot\n"
		"  --console stdio|file:PATH|none\n"
		"                         where the serial console goes (default stdio; on a terminal,\n"
		"                         Ctrl-A x quits)\n"
		"  --transport pci|mmio   how virtio devices reach the guest: virtio-pci, or virtio-mmio\n"
		"                         declared on the kernel command line (virtio_mmio.device=...);\n"
		"                         default: mmio if the command line has pci=off, else pci\n"
		"  --api-sock PATH        serve the control API (HTTP+JSON) on the Unix socket PATH;\n"
		"                         without --kernel or --config-file, wait there for the VM's\n"
		"                         configuration and PUT /actions {\"action_type\": \"InstanceStart\"}\n"
		"  --config-file FILE     configuration in Firecracker's JSON shape (boot-source, drives,\n"
		"                         machine-config, network-interfaces, vsock, balloon, entropy,\n"
		"                         logger, metrics); boots without API calls\n"
		"  --no-api               serve no control API (even with --api-sock)\n"
		"  --id ID                instance id reported by GET / (default anonymous-instance)\n"
		"  --metrics-path PATH    append a JSON metrics line there every 60 s (PUT /metrics)\n"
		"  --track-dirty-pages    log the pages the guest and devices write, so that\n"
		"                         PUT /snapshot/create can write \"Diff\" snapshots\n"
		"  --restore STATE --memory-file MEM\n"
		"                         resume a snapshot's VM (PUT /snapshot/create) instead of\n"
		"                         booting a kernel; give the device options it had, in the same\n"
		"                         order (vCPUs and memory come from STATE; MEM is mapped\n"
		"                         copy-on-write and never modified)\n"
		"  --incoming tcp:HOST:PORT\n"
		"                         receive a live migration (PUT /cvisor/migrate on the source)\n"
		"                         instead of booting: listen there, accept one source, run its\n"
		"                         guest; give the source's device options in the same order\n"
		"                         (vCPUs and memory come from the source)\n"
		"  --seccomp kill|log|off once the VM runs, each thread allows only the syscalls its\n"
		"                         role needs and capabilities are dropped; kill (default):\n"
		"                         another syscall kills the VMM with SIGSYS; log: allowed but\n"
		"                         logged in the kernel log (docs/sandboxing.md); off: no sandbox\n"
		"  --emulated-host        if /dev/kvm cannot run a guest here (PVM, or none), run this\n"
		"                         command inside cvisor's emulated host instead (slow)\n"
		"  --help, --version\n"
		"\n"
		"Exit status: 0 guest powered off, 80 guest reset (reboot), 81 guest triple fault,\n"
		"82 KVM error, 64 usage, 65 bad image, 66 missing file, 69 no usable KVM,\n"
		"128+N stopped by signal N.\n",
		BOOT_MAX_INITRDS, DEFAULT_CMDLINE, VM_MAX_VCPUS, VM_MIN_MEMORY_MIB, DEFAULT_MEMORY_MIB);
}

/* What the command line says beyond the VM's setup. */
struct options {
	bool emulated_host;
	const char *restore;         /* --restore STATE */
	const char *memory_file;     /* --memory-file MEM */
	const char *api_sock, *config_file, *id;
	bool no_api;
	bool cpus_given, memory_given, cmdline_given;
	const char *incoming;        /* --incoming tcp:HOST:PORT */
};

static int parse_args(int argc, char **argv, struct options *o, struct vmm_setup *setup,
		      struct cv_error *err)
{
	enum { OPT_KERNEL = 1, OPT_INITRD, OPT_CMDLINE, OPT_CPUS, OPT_MEMORY, OPT_CONSOLE,
	       OPT_EMUHOST, OPT_API_SOCK, OPT_RNG, OPT_DISK, OPT_NET, OPT_VSOCK, OPT_BALLOON, OPT_HELP,
	       OPT_VERSION, OPT_SECCOMP, OPT_TRANSPORT, OPT_RESTORE, OPT_MEMORY_FILE,
	       OPT_CONFIG_FILE, OPT_NO_API, OPT_ID, OPT_METRICS_PATH, OPT_TRACK_DIRTY,
	       OPT_INCOMING };
	static const struct option longopts[] = {
		{ "kernel", required_argument, NULL, OPT_KERNEL },
		{ "initrd", required_argument, NULL, OPT_INITRD },
		{ "cmdline", required_argument, NULL, OPT_CMDLINE },
		{ "cpus", required_argument, NULL, OPT_CPUS },
		{ "memory", required_argument, NULL, OPT_MEMORY },
		{ "console", required_argument, NULL, OPT_CONSOLE },
		{ "emulated-host", no_argument, NULL, OPT_EMUHOST },
		{ "rng", no_argument, NULL, OPT_RNG },
		{ "api-sock", required_argument, NULL, OPT_API_SOCK },
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "net", required_argument, NULL, OPT_NET },
		{ "vsock", required_argument, NULL, OPT_VSOCK },
		{ "balloon", optional_argument, NULL, OPT_BALLOON },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ "seccomp", required_argument, NULL, OPT_SECCOMP },
		{ "transport", required_argument, NULL, OPT_TRANSPORT },
		{ "restore", required_argument, NULL, OPT_RESTORE },
		{ "memory-file", required_argument, NULL, OPT_MEMORY_FILE },
		{ "config-file", required_argument, NULL, OPT_CONFIG_FILE },
		{ "no-api", no_argument, NULL, OPT_NO_API },
		{ "id", required_argument, NULL, OPT_ID },
		{ "metrics-path", required_argument, NULL, OPT_METRICS_PATH },
		{ "track-dirty-pages", no_argument, NULL, OPT_TRACK_DIRTY },
		{ "incoming", required_argument, NULL, OPT_INCOMING },
		{ NULL, 0, NULL, 0 },
	};
	memset(o, 0, sizeof(*o));
	struct vm_config *vm = &setup->vm;
	struct boot_config *boot = &setup->boot;
	uint64_t host_mib = cv_host_memory_bytes() >> 20;
	if (host_mib < VM_MIN_MEMORY_MIB)
		host_mib = UINT32_MAX;   /* unknown: let mmap decide */

	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		uint64_t v;
		switch (c) {
		case OPT_KERNEL:
			boot->kernel = optarg;
			break;
		case OPT_INITRD:
			if (boot->n_initrds == BOOT_MAX_INITRDS)
				return cv_fail(err, CV_EXIT_USAGE, "at most %d --initrd files",
					       BOOT_MAX_INITRDS);
			boot->initrds[boot->n_initrds++] = optarg;
			break;
		case OPT_CMDLINE:
			boot->cmdline = optarg;
			o->cmdline_given = true;
			break;
		case OPT_CPUS:
			if (!cv_parse_u64(optarg, 1, VM_MAX_VCPUS, &v))
				return cv_fail(err, CV_EXIT_USAGE,
					       "--cpus '%s': expected a number from 1 to %d", optarg,
					       VM_MAX_VCPUS);
			vm->cpus = (unsigned)v;
			o->cpus_given = true;
			break;
		case OPT_MEMORY:
			if (!cv_parse_u64(optarg, VM_MIN_MEMORY_MIB, host_mib, &v))
				return cv_fail(err, CV_EXIT_USAGE,
					       "--memory '%s': expected MiB from %d to %llu (this host's RAM)",
					       optarg, VM_MIN_MEMORY_MIB, (unsigned long long)host_mib);
			vm->memory_bytes = CV_MiB(v);
			o->memory_given = true;
			break;
		case OPT_CONSOLE:
			if (console_parse(optarg, &vm->console, err) < 0)
				return -1;
			break;
		case OPT_EMUHOST:
			o->emulated_host = true;
			break;
		case OPT_RNG:
			vm->devices.rng = true;
			break;
		case OPT_SECCOMP:
			if (vmm_sandbox_mode_parse(optarg, &vm->sandbox, err) < 0)
				return -1;
			break;
		case OPT_API_SOCK:
			o->api_sock = optarg;
			break;
		case OPT_CONFIG_FILE:
			o->config_file = optarg;
			break;
		case OPT_NO_API:
			o->no_api = true;
			break;
		case OPT_ID:
			o->id = optarg;
			break;
		case OPT_METRICS_PATH:
			setup->metrics.path = optarg;
			break;
		case OPT_TRACK_DIRTY:
			vm->track_dirty_pages = true;
			break;
		case OPT_DISK:
			if (vm->devices.n_disks == VM_MAX_DISKS)
				return cv_fail(err, CV_EXIT_USAGE, "at most %d --disk", VM_MAX_DISKS);
			if (devopts_disk(optarg, &vm->devices.disks[vm->devices.n_disks++], err) < 0)
				return -1;
			break;
		case OPT_NET:
			if (vm->devices.n_nets == VM_MAX_NETS)
				return cv_fail(err, CV_EXIT_USAGE, "at most %d --net", VM_MAX_NETS);
			if (devopts_net(optarg, &vm->devices.nets[vm->devices.n_nets++], err) < 0)
				return -1;
			break;
		case OPT_VSOCK:
			if (vm->devices.vsock.enabled)
				return cv_fail(err, CV_EXIT_USAGE, "only one --vsock");
			if (devopts_vsock(optarg, &vm->devices.vsock, err) < 0)
				return -1;
			break;
		case OPT_BALLOON: {
			char empty[1] = "";
			if (devopts_balloon(optarg ? optarg : empty, &vm->devices.balloon, err) < 0)
				return -1;
			break;
		}
		case OPT_RESTORE:
			o->restore = optarg;
			break;
		case OPT_MEMORY_FILE:
			o->memory_file = optarg;
			break;
		case OPT_INCOMING:
			o->incoming = optarg;
			break;
		case OPT_TRANSPORT:
			if (strcmp(optarg, "pci") == 0)
				vm->devices.transport = VIRTIO_TRANSPORT_PCI;
			else if (strcmp(optarg, "mmio") == 0)
				vm->devices.transport = VIRTIO_TRANSPORT_MMIO;
			else
				return cv_fail(err, CV_EXIT_USAGE,
					       "--transport '%s': expected pci or mmio", optarg);
			break;
		case OPT_HELP:
			usage(stdout);
			exit(0);
		case OPT_VERSION:
			printf("cvisor-vmm %s\n", CVISOR_VERSION);
			exit(0);
		default:
			return cv_fail(err, CV_EXIT_USAGE, "unknown or incomplete option '%s' (see --help)",
				       argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cv_fail(err, CV_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
	if (o->incoming) {
		if (o->restore || o->memory_file || boot->kernel || boot->n_initrds || o->config_file)
			return cv_fail(err, CV_EXIT_USAGE, "--incoming receives a running VM: no "
				       "--kernel, --initrd, --restore or --config-file");
		struct sockaddr_storage sa;
		unsigned sa_len;
		if (mig_parse_address(o->incoming, true, &sa, &sa_len, err) < 0)
			return cv_error_wrap(err, "--incoming");
		return 0;    /* the machine's shape comes from the source */
	}
	if (o->restore || o->memory_file) {
		if (!o->restore || !o->memory_file)
			return cv_fail(err, CV_EXIT_USAGE, "--restore and --memory-file go together");
		if (boot->kernel || boot->n_initrds || o->config_file)
			return cv_fail(err, CV_EXIT_USAGE, "--restore resumes a snapshot: no --kernel, "
				       "--initrd or --config-file");
		return 0;    /* the rest of the machine comes from the snapshot */
	}
	if (o->config_file) {
		if (boot->kernel || boot->n_initrds || o->cmdline_given || o->cpus_given ||
		    o->memory_given)
			return cv_fail(err, CV_EXIT_USAGE, "--config-file has the boot source and machine "
				       "configuration: no --kernel, --initrd, --cmdline, --cpus or "
				       "--memory with it");
		return fc_load_config_file(setup, o->config_file, err);
	}
	if (boot->kernel) {
		/* The command line's own defaults, older than the API's (Firecracker's). */
		if (!o->memory_given)
			vm->memory_bytes = CV_MiB(DEFAULT_MEMORY_MIB);
		if (!o->cmdline_given)
			boot->cmdline = DEFAULT_CMDLINE;
		return 0;
	}
	if (!o->api_sock || o->no_api)
		return cv_fail(err, CV_EXIT_USAGE, "--kernel, --config-file or --api-sock is required "
			       "(see --help)");
	if (vm->devices.n_disks || vm->devices.n_nets || o->cpus_given || o->memory_given)
		return cv_fail(err, CV_EXIT_USAGE, "without --kernel the VM is configured through the "
			       "API: no --disk, --net, --cpus or --memory");
	return 0;
}

/*
 * Re-runs this very command inside the emulated host, where /dev/kvm is real AMD-V. The `cvisor`
 * front end next to us owns the emulated host; CVISOR_KVM=direct stops the inner run recursing.
 */
static int run_in_emulated_host(int argc, char **argv, struct cv_error *err)
{
	char dir[PATH_MAX], cvisor[PATH_MAX + 16], self[PATH_MAX + 16];
	if (cv_self_dir(dir, sizeof(dir), err) < 0)
		return -1;
	snprintf(cvisor, sizeof(cvisor), "%s/cvisor", dir);
	snprintf(self, sizeof(self), "%s/cvisor-vmm", dir);
	char **args = calloc((size_t)argc + 8, sizeof(char *));
	if (!args)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	int n = 0;
	args[n++] = cvisor;
	args[n++] = "emuhost";
	args[n++] = "exec";
	args[n++] = "--boot-if-needed";
	args[n++] = "--";
	args[n++] = self;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--emulated-host") != 0)
			args[n++] = argv[i];
	setenv("CVISOR_KVM", "direct", 1);
	execv(cvisor, args);
	free(args);
	return cv_fail_errno(err, CV_EXIT_UNAVAILABLE, "run '%s'", cvisor);
}

/* --restore: the machine's vCPUs, memory and transport are the snapshot's. */
static int restore_shape(struct options *o, struct vm_config *vm, struct cv_error *err)
{
	struct snap_shape s;
	if (vm_snapshot_read_shape(o->restore, &s, err) < 0)
		return -1;
	if (o->cpus_given && vm->cpus != s.n_vcpus)
		return cv_fail(err, CV_EXIT_USAGE, "--cpus %u: the snapshot has %u vCPUs", vm->cpus,
			       s.n_vcpus);
	if (o->memory_given && vm->memory_bytes != s.memory_bytes)
		return cv_fail(err, CV_EXIT_USAGE, "--memory %llu: the snapshot has %llu MiB",
			       (unsigned long long)(vm->memory_bytes >> 20),
			       (unsigned long long)(s.memory_bytes >> 20));
	vm->cpus = s.n_vcpus;
	vm->memory_bytes = s.memory_bytes;
	vm->devices.transport = (enum virtio_transport)s.transport;
	return 0;
}

int main(int argc, char **argv)
{
	vmm_sandbox_prepare_process();
	struct cv_error err = { 0 };
	struct options o;
	struct vmm_instance *in = calloc(1, sizeof(*in));
	/* The instance id is known only after parsing: give it the default, rename after. */
	if (!in || instance_init(in, NULL, &err) < 0 ||
	    parse_args(argc, argv, &o, &in->setup, &err) < 0 ||
	    (o.id && instance_set_id(in, o.id, &err) < 0)) {
		cv_error_print(&err, "cvisor-vmm");
		if (in) {
			instance_destroy(in);
			free(in);
		}
		return err.code ? err.code : CV_EXIT_OSERR;
	}

	struct kvm_host_probe probe;
	kvm_probe_host(&probe);
	if (probe.kind != KVM_HOST_USABLE) {
		if (o.emulated_host) {
			fprintf(stderr, "cvisor-vmm: %s; running inside the emulated host (slow)\n",
				probe.reason);
			run_in_emulated_host(argc, argv, &err);
		} else {
			cv_fail(&err, CV_EXIT_UNAVAILABLE,
				"%s; add --emulated-host to run inside cvisor's emulated host", probe.reason);
		}
		cv_error_print(&err, "cvisor-vmm");
		instance_destroy(in);
		free(in);
		return err.code;
	}

	/* Blocked before any thread starts, so that only the main loop's signalfd sees them. */
	sigset_t handled;
	instance_block_stop_signals(&handled);

	int status = CV_EXIT_OK;
	/* Decided before the API serves: from then on its requests may set a kernel too. */
	bool boot_now = in->setup.boot.kernel || o.restore || o.incoming;
	if (o.incoming) {
		in->incoming.address = o.incoming;
		in->incoming.listen_fd = -1;
		in->incoming.cpus_given = o.cpus_given;
		in->incoming.memory_given = o.memory_given;
	}
	if (o.restore) {
		in->restore_state = o.restore;
		in->restore_memory = o.memory_file;
		if (restore_shape(&o, &in->setup.vm, &err) < 0)
			status = err.code;
	}
	/* The main thread will serve InstanceStart: say so before the first request can come. */
	in->main_waiting = !boot_now;
	if (status == CV_EXIT_OK && o.api_sock && !o.no_api &&
	    instance_api_start(in, o.api_sock, &err) < 0)
		status = err.code;
	if (status == CV_EXIT_OK && boot_now) {
		pthread_mutex_lock(&in->lock);
		if (instance_start(in, &err) < 0)
			status = err.code;
		pthread_mutex_unlock(&in->lock);
	}
	if (status == CV_EXIT_OK) {
		status = instance_run(in, &err);
		if (status != CV_EXIT_OK)
			fprintf(stderr, "cvisor-vmm: %s\n", in->vm ? in->vm->stop_reason : err.msg);
	} else {
		cv_error_print(&err, "cvisor-vmm");
	}
	instance_destroy(in);
	free(in);
	return status;
}
