/*
 * Loading, diff snapshots and clones on this host's /dev/kvm with the tiny guests of
 * snapshot_guests.S. What is checked is what the guest or the files show:
 *   - diff: after a full snapshot, a diff holds exactly the pages written since (guest writes
 *     from KVM's dirty log, VMM writes from its own bitmap); merged onto a copy of the base it
 *     equals, byte for byte, a full snapshot taken at the same moment, and the VM restored from
 *     it goes on counting from the right value; a diff needs tracking and a base;
 *   - load paused: a VM loaded with resume_vm false does not run (counter still, I/O thread
 *     parked) until vm_resume;
 *   - clones: overrides give the restored devices a new vsock CID and socket, a new TAP and
 *     MAC (the guest's own address is kept by the receive filter), and bad overrides fail;
 *   - the process: a bare `cvisor-vmm --api-sock` loads the snapshot through PUT
 *     /snapshot/load, reports Not started / Paused / Running in GET /, runs only after
 *     PATCH /vm Resumed, refuses a second load, and two clones of one snapshot run at once.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvm_harness.h"
#include "load.h"
#include "snapshot/snapshot.h"
#include "sparse_merge.h"
#include "util.h"
#include "vcpu.h"
#include "virtio/net.h"
#include "virtio/vsock.h"
#include "vm.h"

extern const uint8_t guest_counter_start[], guest_counter_end[];
extern const uint8_t guest_ticker_start[], guest_ticker_end[];

#define DEVICE_GPA 0x300000ULL   /* a page only the "device" (the test) writes */
#define MEM CV_MiB(32)

TestSuite(snapload, .fini = remove_work);

/* WORK/NAME in a buffer of its own (a compound literal, living to the end of the block). */
#define wpath(name) work_path("snapload", (name), (char[128]){ 0 }, 128)

static void vm_make(struct runner *r, const struct device_config *dc, bool track)
{
	struct vm_config cfg = {
		.cpus = 1, .memory_bytes = MEM,
		.sandbox = VMM_SANDBOX_OFF, .track_dirty_pages = track,
	};
	if (dc)
		cfg.devices = *dc;
	if (cfg.devices.transport == VIRTIO_TRANSPORT_AUTO)
		cfg.devices.transport = VIRTIO_TRANSPORT_PCI;
	runner_init(r, &cfg, "snapload");
}

static volatile uint64_t *counter(struct runner *r)
{
	return guest_ctrl(&r->vm);
}

/* Ends a counter guest through its stop word, or any guest with a stop request. */
static void finish(struct runner *r, bool counter_guest)
{
	if (r->started) {
		if (counter_guest)
			vm_resume(&r->vm);
		else
			vm_request_stop(&r->vm, CV_EXIT_OK, "test done");
	}
	runner_finish(r, CV_EXIT_OK);
}

/* Boots the counter guest in r (see vm_make), lets it count past ABOVE and pauses it there. */
static void counted_and_paused(struct runner *r, const struct device_config *dc, bool track,
			       uint64_t above)
{
	struct cv_error err = { 0 };
	vm_make(r, dc, track);
	runner_boot(r, guest_counter_start, guest_counter_end);
	wait_count(r, above);
	cr_assert_eq(vm_pause(&r->vm, &err), 0, "%s", err.msg);
}

static uint64_t allocated(const char *path)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "%s", path);
	return (uint64_t)st.st_blocks * 512;
}

static void run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run_cmd(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(snapload, diff_merged_onto_base_equals_full_and_restores, .timeout = 120)
{
	require_kvm();
	struct runner r;
	struct cv_error err = { 0 };
	counted_and_paused(&r, NULL, true, 1000);
	cr_assert_eq(vm_snapshot_create(&r.vm, wpath("base.state"), wpath("base.mem"), false, NULL,
					&err), 0, "%s", err.msg);
	vm_resume(&r.vm);
	uint64_t before = *counter(&r);
	wait_count(&r, before + 1000);
	cr_assert_eq(vm_pause(&r.vm, &err), 0, "%s", err.msg);
	/* What a device does: write guest RAM through the VMM's mapping and say so. */
	uint8_t *dev = guest_memory_ptr(&r.vm.mem, DEVICE_GPA, 4096);
	memset(dev, 0x5a, 4096);
	guest_memory_mark_dirty(&r.vm.mem, dev, 4096);
	uint64_t at = *counter(&r);
	struct snapshot_times t;
	cr_assert_eq(vm_snapshot_create(&r.vm, wpath("d1.state"), wpath("d1.mem"), true, &t, &err),
		     0, "%s", err.msg);
	cr_assert_eq(t.memory_pages_written, 2, "the counter page and the device page, not %llu",
		     (unsigned long long)t.memory_pages_written);
	cr_assert_eq(allocated(wpath("d1.mem")), 2 * 4096, "the diff is sparse: two pages");
	/* The reference: a full snapshot of the very same paused state. */
	cr_assert_eq(vm_snapshot_create(&r.vm, wpath("full.state"), wpath("full.mem"), false, NULL,
					&err), 0, "%s", err.msg);
	finish(&r, true);

	run_cmd("cp --sparse=always '%s' '%s'", wpath("base.mem"), wpath("merged.mem"));
	uint64_t copied;
	cr_assert_eq(sparse_merge(wpath("merged.mem"), wpath("d1.mem"), &copied, &err), 0, "%s",
		     err.msg);
	cr_assert_eq(copied, 2 * 4096);
	run_cmd("cmp -s '%s' '%s'", wpath("merged.mem"), wpath("full.mem"));
	/* ...which the base alone is not. */
	cr_assert_neq(system("cmp -s /tmp/cvisor-snapload-*/base.mem /tmp/cvisor-snapload-*/full.mem"),
		      0);

	/* The diff's state with the merged memory is the VM at the diff. */
	vm_make(&r, NULL, true);
	cr_assert_eq(vm_restore(&r.vm, wpath("d1.state"), wpath("merged.mem"), &err), 0, "%s",
		     err.msg);
	cr_assert_eq(*counter(&r), at);
	cr_assert_eq(*(uint8_t *)guest_memory_ptr(&r.vm.mem, DEVICE_GPA + 100, 1), 0x5a);
	runner_start(&r);
	wait_count(&r, at + 1000);
	/* Restored with tracking: a diff relative to the loaded file holds the counter page. */
	cr_assert_eq(vm_pause(&r.vm, &err), 0, "%s", err.msg);
	cr_assert_eq(vm_snapshot_create(&r.vm, wpath("d2.state"), wpath("d2.mem"), true, &t, &err),
		     0, "%s", err.msg);
	cr_assert_eq(t.memory_pages_written, 1);
	finish(&r, true);
}

Test(snapload, diff_needs_tracking_and_a_base, .timeout = 120)
{
	require_kvm();
	struct runner r;
	struct cv_error err = { 0 };
	counted_and_paused(&r, NULL, false, 100);
	cr_assert_eq(vm_snapshot_create(&r.vm, wpath("x.state"), wpath("x.mem"), true, NULL, &err),
		     -1);
	cr_assert(strstr(err.msg, "dirty page tracking") != NULL, "%s", err.msg);
	finish(&r, true);

	counted_and_paused(&r, NULL, true, 100);
	cr_assert_eq(vm_snapshot_create(&r.vm, wpath("x.state"), wpath("x.mem"), true, NULL, &err),
		     -1);
	cr_assert(strstr(err.msg, "needs a base") != NULL, "%s", err.msg);
	cr_assert_eq(access(wpath("x.state"), F_OK), -1, "no state file for a refused diff");
	finish(&r, true);
}

/* A counter-guest snapshot with the given devices. */
static uint64_t snapshot_counter(const struct device_config *dc, const char *state,
				 const char *mem)
{
	struct runner r;
	struct cv_error err = { 0 };
	counted_and_paused(&r, dc, false, 1000);
	uint64_t at = *counter(&r);
	cr_assert_eq(vm_snapshot_create(&r.vm, state, mem, false, NULL, &err), 0, "%s", err.msg);
	finish(&r, true);
	return at;
}

static json_t *body(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *body(const char *fmt, ...)
{
	char s[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s, sizeof(s), fmt, ap);
	va_end(ap);
	json_error_t je;
	json_t *j = json_loads(s, 0, &je);
	cr_assert_not_null(j, "%s: %s", s, je.text);
	return j;
}

static struct vm_config base_config(struct runner *r)
{
	console_file(r->console, sizeof(r->console), "snapload");
	return (struct vm_config){ .console = { .kind = CONSOLE_FILE, .path = r->console },
				   .sandbox = VMM_SANDBOX_OFF };
}

/*
 * Loads into r, as PUT /snapshot/load does, the request J (which it releases); returns what
 * vm_load_snapshot returned, with err.
 */
static int load_into(struct runner *r, json_t *j, struct cv_error *err)
{
	memset(r, 0, sizeof(*r));
	struct vm_config base = base_config(r);
	static struct snap_config cfg;
	struct load_request req;
	cr_assert_eq(load_request_parse(j, &req, err), 0, "%s", err->msg);
	int rc = vm_load_snapshot(&r->vm, &cfg, &req, &base, err);
	json_decref(j);
	return rc;
}

Test(snapload, loaded_paused_runs_only_after_resume, .timeout = 120)
{
	require_kvm();
	uint64_t at = snapshot_counter(NULL, wpath("p.state"), wpath("p.mem"));
	struct runner r;
	struct cv_error err = { 0 };
	json_t *j = body("{\"snapshot_path\": \"%s\", \"mem_backend\": {\"backend_type\": \"File\", "
			 "\"backend_path\": \"%s\"}, \"resume_vm\": false}", wpath("p.state"),
			 wpath("p.mem"));
	cr_assert_eq(load_into(&r, j, &err), 0, "%s", err.msg);
	cr_assert(vm_is_paused(&r.vm));
	runner_start(&r);
	/* The I/O thread parks at its first barrier; the vCPU never enters the guest. */
	for (int i = 0; i < 500 && !__atomic_load_n(&r.vm.loop.parked, __ATOMIC_ACQUIRE); i++)
		usleep(2000);
	cr_assert(__atomic_load_n(&r.vm.loop.parked, __ATOMIC_ACQUIRE),
		  "the I/O thread of a VM loaded paused must not run");
	usleep(200000);
	cr_assert_eq(*counter(&r), at, "a VM loaded paused ran");
	vm_resume(&r.vm);
	cr_assert(!vm_is_paused(&r.vm));
	wait_count(&r, at + 1000);
	/* Pause and resume work as on any VM. */
	cr_assert_eq(vm_pause(&r.vm, &err), 0, "%s", err.msg);
	uint64_t p = *counter(&r);
	usleep(100000);
	cr_assert_eq(*counter(&r), p);
	finish(&r, true);
}

Test(snapload, clone_overrides_vsock_cid_socket_tap_and_mac, .timeout = 120)
{
	require_kvm();
	if (access("/dev/net/tun", R_OK | W_OK) != 0 || geteuid() != 0)
		cr_skip_test("needs root and /dev/net/tun for TAP devices");
	char tap_a[16], tap_b[16];
	snprintf(tap_a, sizeof(tap_a), "cvsla%d", getpid() % 100000);
	snprintf(tap_b, sizeof(tap_b), "cvslb%d", getpid() % 100000);
	struct device_config dc = { .transport = VIRTIO_TRANSPORT_PCI, .n_nets = 1,
				    .vsock = { .enabled = true, .cid = 5,
					       .uds_path = wpath("v.sock") } };
	dc.nets[0] = (struct net_config){ .id = "net-a", .tap = tap_a, .tap_fd = -1,
					  .mac = { 0x02, 0, 0, 0, 0, 0x0a }, .has_mac = true };
	uint64_t at = snapshot_counter(&dc, wpath("c.state"), wpath("c.mem"));
	unlink(wpath("v.sock"));

	for (int clone = 0; clone < 2; clone++) {
		struct runner r;
		struct cv_error err = { 0 };
		const char *sock = clone ? wpath("v1.sock") : wpath("v0.sock");
		json_t *j = body("{\"snapshot_path\": \"%s\", \"mem_file_path\": \"%s\", "
				 "\"resume_vm\": true, \"vsock_override\": {\"uds_path\": \"%s\"}, "
				 "\"network_overrides\": [{\"iface_id\": \"net-a\", "
				 "\"host_dev_name\": \"%s\"}], \"cvisor\": {\"vsock_cid\": %d, "
				 "\"network_overrides\": [{\"iface_id\": \"net-a\", \"guest_mac\": "
				 "\"02:00:00:00:01:%02x\"}]}}", wpath("c.state"), wpath("c.mem"), sock,
				 tap_b, 100 + clone, clone);
		cr_assert_eq(load_into(&r, j, &err), 0, "%s", err.msg);
		cr_assert_not(vm_is_paused(&r.vm));
		cr_assert_eq(*counter(&r), at);
		struct virtio_net *net = NULL;
		struct virtio_vsock *vs = NULL;
		for (unsigned i = 0; i < r.vm.n_virtio; i++) {
			if (r.vm.virtio[i]->dev->ops->device_id == VIRTIO_ID_NET)
				net = r.vm.virtio[i]->owner;
			if (r.vm.virtio[i]->dev->ops->device_id == VIRTIO_ID_VSOCK)
				vs = r.vm.virtio[i]->owner;
		}
		cr_assert(net && vs);
		cr_assert_eq(vs->guest_cid, 100u + (unsigned)clone, "the clone's CID");
		struct stat st;
		cr_assert_eq(stat(sock, &st), 0, "the clone listens on its own vsock socket");
		cr_assert(S_ISSOCK(st.st_mode));
		cr_assert_str_eq(r.vm.devcfg.nets[0].tap, tap_b);
		const uint8_t want[6] = { 0x02, 0, 0, 0, 1, (uint8_t)clone };
		cr_assert_arr_eq(net->mac, want, 6, "the configured MAC is the clone's");
		cr_assert_arr_eq(r.vm.devcfg.nets[0].mac, want, 6, "and its next snapshot's");
		/* No driver ever set the MAC in this guest: its address is the snapshot's. */
		cr_assert_eq(net->filter.mac[5], 0x0a, "the receive filter keeps the guest's MAC");
		runner_start(&r);
		wait_count(&r, at + 1000);
		finish(&r, true);
		unlink(sock);
	}

	/* Overrides that do not fit the snapshot fail before anything runs. */
	struct runner r;
	struct cv_error err = { 0 };
	json_t *j = body("{\"snapshot_path\": \"%s\", \"mem_file_path\": \"%s\", "
			 "\"network_overrides\": [{\"iface_id\": \"eth9\", \"host_dev_name\": "
			 "\"x\"}]}", wpath("c.state"), wpath("c.mem"));
	cr_assert_eq(load_into(&r, j, &err), -1);
	cr_assert(strstr(err.msg, "no interface 'eth9' (it has: net-a)") != NULL, "%s", err.msg);
	unlink(r.console);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "ip link del %s 2>/dev/null; ip link del %s 2>/dev/null", tap_a,
		 tap_b);
	if (system(cmd) != 0) {
		/* persistent TAPs are not created by tap_open; nothing to clean */
	}
}

/* ---- the cvisor-vmm process ----------------------------------------------------------------- */

static char *http(const char *sock, const char *method, const char *path, const char *data,
		  int *status)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "curl -s -o - -w '\\n%%{http_code}' --unix-socket '%s' -X %s "
		 "'http://localhost%s'%s%s%s", sock, method, path, data ? " -d '" : "",
		 data ? data : "", data ? "'" : "");
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	static char out[4096];
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = 0;
	pclose(p);
	char *nl = strrchr(out, '\n');
	cr_assert_not_null(nl, "no answer from %s: '%s'", sock, out);
	*status = atoi(nl + 1);
	*nl = 0;
	return out;
}

static pid_t vmm_pids[2];

/* Never leave a cvisor-vmm behind, whatever assertion ended the test. */
static void kill_vmms(void)
{
	for (int i = 0; i < 2; i++)
		if (vmm_pids[i] > 0) {
			kill(vmm_pids[i], SIGKILL);
			waitpid(vmm_pids[i], NULL, 0);
			vmm_pids[i] = 0;
		}
}

static pid_t spawn_vmm(const char *sock, const char *console)
{
	unlink(sock);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char errfile[160];
		snprintf(errfile, sizeof(errfile), "%s.err", console);
		if (!freopen(errfile, "w", stderr))
			_exit(126);
		char con[160];
		snprintf(con, sizeof(con), "file:%s", console);
		/* The tiny guest runs on PVM: skip the probe for unmodified Linux guests. */
		setenv("CVISOR_KVM", "direct", 1);
		execl(CVISOR_VMM, CVISOR_VMM, "--api-sock", sock, "--console", con, (char *)NULL);
		_exit(127);
	}
	vmm_pids[vmm_pids[0] ? 1 : 0] = pid;
	for (int i = 0; i < 500 && access(sock, F_OK) != 0; i++)
		usleep(10000);
	cr_assert_eq(access(sock, F_OK), 0, "cvisor-vmm never served %s", sock);
	return pid;
}

static off_t fsize(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

static void wait_output(const char *console, off_t above)
{
	for (int i = 0; i < 1500 && fsize(console) <= above; i++)
		usleep(10000);
	cr_assert_gt(fsize(console), above, "the guest printed nothing more");
}

/* SIGTERM ends a VM with status 128+15, like any cvisor-vmm. */
static void stop_vmm(pid_t pid, const char *console)
{
	kill(pid, SIGTERM);
	int ws;
	cr_assert_eq(waitpid(pid, &ws, 0), pid);
	for (int i = 0; i < 2; i++)
		if (vmm_pids[i] == pid)
			vmm_pids[i] = 0;
	char errfile[160], msg[512] = "";
	snprintf(errfile, sizeof(errfile), "%s.err", console);
	FILE *f = fopen(errfile, "r");
	if (f) {
		size_t n = fread(msg, 1, sizeof(msg) - 1, f);
		msg[n] = 0;
		fclose(f);
	}
	cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 128 + SIGTERM,
		  "wait status 0x%x, stderr: %s", ws, msg);
}

Test(snapload, bare_process_loads_through_the_api_and_clones_run_at_once, .timeout = 180,
     .fini = kill_vmms)
{
	require_kvm();
	/* The ticker snapshot, made in this process. */
	struct runner r;
	struct cv_error err = { 0 };
	vm_make(&r, NULL, false);
	runner_boot(&r, guest_ticker_start, guest_ticker_end);
	wait_output(r.console, 2);
	cr_assert_eq(vm_pause(&r.vm, &err), 0, "%s", err.msg);
	cr_assert_eq(vm_snapshot_create(&r.vm, wpath("t.state"), wpath("t.mem"), false, NULL, &err),
		     0, "%s", err.msg);
	finish(&r, false);

	const char *sock = wpath("api0.sock"), *con = wpath("con0");
	int st;
	pid_t pid = spawn_vmm(sock, con);
	char *out = http(sock, "GET", "/", NULL, &st);
	cr_assert_eq(st, 200);
	cr_assert(strstr(out, "\"Not started\"") != NULL, "%s", out);
	out = http(sock, "PATCH", "/vm", "{\"state\": \"Resumed\"}", &st);
	cr_assert_eq(st, 400, "no VM yet: %s", out);
	out = http(sock, "PUT", "/snapshot/load", "{\"snapshot_path\": \"/nonexistent\", "
		   "\"mem_file_path\": \"/nonexistent\"}", &st);
	cr_assert_eq(st, 400);
	cr_assert(strstr(out, "nonexistent") != NULL, "%s", out);
	char req[1024];
	snprintf(req, sizeof(req), "{\"snapshot_path\": \"%s\", \"mem_backend\": {\"backend_type\":"
		 " \"File\", \"backend_path\": \"%s\"}, \"resume_vm\": false}", wpath("t.state"),
		 wpath("t.mem"));
	out = http(sock, "PUT", "/snapshot/load", req, &st);
	cr_assert_eq(st, 204, "the failed load left the process usable: %s", out);
	out = http(sock, "GET", "/", NULL, &st);
	cr_assert(strstr(out, "\"Paused\"") != NULL, "%s", out);
	off_t before = fsize(con);
	usleep(300000);
	cr_assert_eq(fsize(con), before, "a VM loaded paused printed");
	out = http(sock, "PUT", "/snapshot/load", req, &st);
	cr_assert_eq(st, 400, "loaded twice: %s", out);
	out = http(sock, "PATCH", "/vm", "{\"state\": \"Resumed\"}", &st);
	cr_assert_eq(st, 204, "%s", out);
	wait_output(con, before);
	out = http(sock, "GET", "/", NULL, &st);
	cr_assert(strstr(out, "\"Running\"") != NULL, "%s", out);

	/* A second clone of the same files, resumed at load, runs alongside. */
	const char *sock1 = wpath("api1.sock"), *con1 = wpath("con1");
	pid_t pid1 = spawn_vmm(sock1, con1);
	snprintf(req, sizeof(req), "{\"snapshot_path\": \"%s\", \"mem_file_path\": \"%s\", "
		 "\"resume_vm\": true}", wpath("t.state"), wpath("t.mem"));
	out = http(sock1, "PUT", "/snapshot/load", req, &st);
	cr_assert_eq(st, 204, "%s", out);
	wait_output(con1, 0);
	before = fsize(con);
	wait_output(con, before);
	stop_vmm(pid1, con1);
	stop_vmm(pid, con);
}
