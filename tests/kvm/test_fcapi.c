/*
 * cvisor-vmm configured the Firecracker way, on this host's /dev/kvm (PVM included:
 * CVISOR_KVM=direct): the real binary started with only --api-sock, every part of the VM set
 * through HTTP requests on the Unix socket, then InstanceStart; and the same with
 * --config-file --no-api. The "kernel" is a tiny guest (guests.S) wrapped in an ELF with a
 * 64-bit entry, which the loader boots as it boots a vmlinux. The tests check the console
 * output, the instance state, the metrics the guest's port writes produce, the logger's lines,
 * the 400s a running VM gives to pre-boot requests, and the exit status.
 */
#include <criterion/criterion.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvm_harness.h"

extern const uint8_t guest_hello_start[], guest_hello_end[];
extern const uint8_t guest_hello_wait_start[], guest_hello_wait_end[];

#define LOAD_GPA 0x100000ULL

struct fc {
	char dir[64];
	char sock[96], kernel[96], console[96], metrics[96], log[96];
	pid_t pid;
};

/* The test's VMM and files; the suite's fini kills and removes whatever a failed test left. */
static struct fc T;

static void fc_cleanup(struct fc *t);

static void fc_teardown(void)
{
	fc_cleanup(&T);
}

TestSuite(fcapi, .fini = fc_teardown);

/* An ELF64 executable with one PT_LOAD of `code` at LOAD_GPA, entered there. */
static void write_elf(const char *path, const uint8_t *code, size_t len)
{
	Elf64_Ehdr eh = { 0 };
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = LOAD_GPA;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = 1;
	Elf64_Phdr ph = { .p_type = PT_LOAD, .p_flags = PF_R | PF_X,
			  .p_offset = 0x1000, .p_vaddr = LOAD_GPA, .p_paddr = LOAD_GPA,
			  .p_filesz = len, .p_memsz = len, .p_align = 0x1000 };
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fwrite(&eh, sizeof(eh), 1, f);
	fwrite(&ph, sizeof(ph), 1, f);
	fseek(f, 0x1000, SEEK_SET);
	fwrite(code, len, 1, f);
	fclose(f);
}

static void fc_setup(struct fc *t, const uint8_t *start, const uint8_t *end)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/cvisor-fcapi-XXXXXX");
	cr_assert_not_null(mkdtemp(t->dir));
	snprintf(t->sock, sizeof(t->sock), "%s/api.sock", t->dir);
	snprintf(t->kernel, sizeof(t->kernel), "%s/tiny.elf", t->dir);
	snprintf(t->console, sizeof(t->console), "%s/console", t->dir);
	snprintf(t->metrics, sizeof(t->metrics), "%s/metrics", t->dir);
	snprintf(t->log, sizeof(t->log), "%s/log", t->dir);
	write_elf(t->kernel, start, (size_t)(end - start));
}

static void fc_spawn(struct fc *t, char *const args[])
{
	char console_opt[128];
	snprintf(console_opt, sizeof(console_opt), "file:%s", t->console);
	char *argv[16] = { CVISOR_VMM, "--console", console_opt };
	int n = 3;
	for (int i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	t->pid = fork();
	cr_assert_geq(t->pid, 0);
	if (t->pid == 0) {
		setenv("CVISOR_KVM", "direct", 1);
		execv(argv[0], argv);
		_exit(127);
	}
}

/* Waits up to timeout_s for the child; returns its exit status (-1: still running). */
static int fc_wait(struct fc *t, int timeout_s)
{
	for (int i = 0; i < timeout_s * 100; i++) {
		int st;
		pid_t r = waitpid(t->pid, &st, WNOHANG);
		if (r == t->pid) {
			t->pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		usleep(10000);
	}
	return -1;
}

static void fc_cleanup(struct fc *t)
{
	if (!t->dir[0])
		return;
	if (t->pid > 0) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, NULL, 0);
	}
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", t->dir);
	t->dir[0] = 0;
}

/* One HTTP/1.1 request on the API socket; returns the status, *body the parsed JSON or NULL. */
static int http(struct fc *t, const char *method, const char *path, const char *body,
		json_t **out)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t->sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	char req[2048];
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\n"
			 "Connection: close\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n%s", method, path, body ? strlen(body) : 0,
			 body ? body : "");
	cr_assert_eq(write(fd, req, (size_t)n), n);
	static char resp[65536];
	size_t len = 0;
	ssize_t r;
	while (len < sizeof(resp) - 1 && (r = read(fd, resp + len, sizeof(resp) - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	resp[len] = 0;
	int status = -1;
	sscanf(resp, "HTTP/1.1 %d", &status);
	char *b = strstr(resp, "\r\n\r\n");
	if (out) {
		*out = b && b[4] ? json_loads(b + 4, 0, NULL) : NULL;
	}
	return status;
}

static void wait_for_socket(struct fc *t)
{
	for (int i = 0; i < 500; i++) {
		if (http(t, "GET", "/", NULL, NULL) == 200)
			return;
		usleep(10000);
	}
	cr_assert_fail("the API socket did not answer in 5 s");
}

static char *slurp(const char *path)
{
	static char buf[65536];
	buf[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return buf;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static const char *field(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

Test(fcapi, vm_configured_through_the_api_boots, .timeout = 60)
{
	require_kvm();
	struct fc *tp = &T;
#define t (*tp)
	fc_setup(&t, guest_hello_wait_start, guest_hello_wait_end);
	char *args[] = { "--api-sock", t.sock, "--id", "fc-test", NULL };
	fc_spawn(&t, args);
	wait_for_socket(&t);
	char body[512];
	json_t *b;

	cr_assert_eq(http(&t, "GET", "/", NULL, &b), 200);
	cr_assert_str_eq(field(b, "state"), "Not started");
	cr_assert_str_eq(field(b, "id"), "fc-test");
	json_decref(b);
	cr_assert_eq(http(&t, "PUT", "/actions", "{\"action_type\": \"InstanceStart\"}", &b), 400,
		     "no kernel yet");
	cr_assert_not_null(strstr(field(b, "fault_message"), "boot source"));
	json_decref(b);
	snprintf(body, sizeof(body), "{\"kernel_image_path\": \"%s\", \"boot_args\": "
		 "\"console=ttyS0 reboot=k panic=1 pci=off\"}", t.kernel);
	cr_assert_eq(http(&t, "PUT", "/boot-source", body, NULL), 204);
	cr_assert_eq(http(&t, "PUT", "/machine-config", "{\"vcpu_count\": 1, \"mem_size_mib\": 64}",
			  NULL), 204);
	cr_assert_eq(http(&t, "PUT", "/entropy", "{}", NULL), 204);
	snprintf(body, sizeof(body), "{\"metrics_path\": \"%s\"}", t.metrics);
	cr_assert_eq(http(&t, "PUT", "/metrics", body, NULL), 204);
	snprintf(body, sizeof(body), "{\"log_path\": \"%s\", \"level\": \"Info\", "
		 "\"show_level\": true}", t.log);
	cr_assert_eq(http(&t, "PUT", "/logger", body, NULL), 204);
	cr_assert_eq(http(&t, "PUT", "/machine-config", "{\"vcpu_count\": 1, \"mem_size_mib\": 1}",
			  &b), 400);
	cr_assert_not_null(field(b, "fault_message"));
	json_decref(b);
	cr_assert_eq(http(&t, "PUT", "/actions", "{\"action_type\": \"InstanceStart\"}", NULL), 204);

	/* The guest's line on the console. */
	const char *want = "hello from an API-configured guest\n";
	for (int i = 0; i < 1000 && strcmp(slurp(t.console), want) != 0; i++)
		usleep(10000);
	cr_assert_str_eq(slurp(t.console), want);

	cr_assert_eq(http(&t, "GET", "/", NULL, &b), 200);
	cr_assert_str_eq(field(b, "state"), "Running");
	json_decref(b);
	cr_assert_eq(http(&t, "PATCH", "/vm", "{\"state\": \"Paused\"}", NULL), 204);
	cr_assert_eq(http(&t, "GET", "/", NULL, &b), 200);
	cr_assert_str_eq(field(b, "state"), "Paused");
	json_decref(b);
	cr_assert_eq(http(&t, "PATCH", "/vm", "{\"state\": \"Resumed\"}", NULL), 204);

	/* Pre-boot requests are refused now, as Firecracker refuses them. */
	snprintf(body, sizeof(body), "{\"kernel_image_path\": \"%s\"}", t.kernel);
	cr_assert_eq(http(&t, "PUT", "/boot-source", body, &b), 400);
	cr_assert_not_null(strstr(field(b, "fault_message"), "after starting"));
	json_decref(b);
	cr_assert_eq(http(&t, "PUT", "/actions", "{\"action_type\": \"InstanceStart\"}", NULL), 400);
	cr_assert_eq(http(&t, "PATCH", "/drives/nope", "{\"drive_id\": \"nope\"}", NULL), 400);

	/* Metrics: the guest's 36 port writes are I/O exits of vCPU 0; the rng is on virtio-mmio. */
	cr_assert_eq(http(&t, "GET", "/cvisor/metrics", NULL, &b), 200);
	json_t *v0 = json_array_get(json_object_get(b, "vcpus"), 0);
	cr_assert_geq(json_integer_value(json_object_get(json_object_get(v0, "exits"), "io")),
		      (json_int_t)strlen(want));
	cr_assert_gt(json_integer_value(json_object_get(v0, "run_time_us")), 0);
	json_t *d0 = json_array_get(json_object_get(b, "devices"), 0);
	cr_assert_str_eq(field(d0, "kind"), "entropy");
	cr_assert_gt(json_integer_value(json_object_get(json_object_get(b, "vmm"), "rss_bytes")),
		     1 << 20);
	json_decref(b);
	cr_assert_eq(http(&t, "GET", "/vm/config", NULL, &b), 200);
	cr_assert_str_eq(field(json_object_get(b, "boot-source"), "kernel_image_path"), t.kernel);
	json_decref(b);
	cr_assert_eq(http(&t, "PUT", "/actions", "{\"action_type\": \"FlushMetrics\"}", NULL), 204);
	/* Typed on the i8042 keyboard; this guest does not read it, and keeps running. */
	cr_assert_eq(http(&t, "PUT", "/actions", "{\"action_type\": \"SendCtrlAltDel\"}", NULL),
		     204);
	json_t *line = json_loads(slurp(t.metrics), JSON_DISABLE_EOF_CHECK, NULL);
	cr_assert_not_null(line, "the metrics file holds a JSON line: %s", slurp(t.metrics));
	cr_assert_eq(json_array_size(json_object_get(line, "vcpus")), 1);
	json_decref(line);

	kill(t.pid, SIGTERM);
	int st = fc_wait(&t, 10);
	cr_assert_eq(st, 128 + SIGTERM, "exit status %d", st);
	const char *logged = slurp(t.log);
	cr_assert_not_null(strstr(logged, "[Info] API PUT /actions: 204"), "%s", logged);
	cr_assert_not_null(strstr(logged, "[Warning] API PUT /boot-source: 400"), "%s", logged);
	cr_assert_not_null(strstr(logged, "VM started: 1 vCPUs, 64 MiB"), "%s", logged);
	cr_assert_neq(access(t.sock, F_OK), 0, "the socket is removed at exit");
}

Test(fcapi, config_file_boots_without_the_api, .timeout = 60)
{
	require_kvm();
	struct fc *tp = &T;
	fc_setup(&t, guest_hello_start, guest_hello_end);
	char cfg[1024], text[2048];
	snprintf(cfg, sizeof(cfg), "%s/vm.json", t.dir);
	snprintf(text, sizeof(text),
		 "{\"boot-source\": {\"kernel_image_path\": \"%s\", \"boot_args\": \"pci=off\"},\n"
		 " \"machine-config\": {\"vcpu_count\": 2, \"mem_size_mib\": 64, \"smt\": false},\n"
		 " \"entropy\": {},\n \"metrics\": {\"metrics_path\": \"%s\"}}\n", t.kernel, t.metrics);
	FILE *f = fopen(cfg, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	char *args[] = { "--config-file", cfg, "--no-api", "--api-sock", t.sock, NULL };
	fc_spawn(&t, args);
	cr_assert_eq(fc_wait(&t, 30), 0, "the guest powers off: exit status 0");
	cr_assert_str_eq(slurp(t.console), "hello from the guest\n");
	cr_assert_neq(access(t.sock, F_OK), 0, "--no-api: no socket");
	/* The flush at the end: one line, with both vCPUs. */
	json_t *line = json_loads(slurp(t.metrics), JSON_DISABLE_EOF_CHECK, NULL);
	cr_assert_not_null(line);
	cr_assert_eq(json_array_size(json_object_get(line, "vcpus")), 2);
	json_decref(line);
}

Test(fcapi, bad_config_file_is_a_usage_error, .timeout = 30)
{
	struct fc *tp = &T;
	fc_setup(&t, guest_hello_start, guest_hello_end);
	char cfg[1024];
	snprintf(cfg, sizeof(cfg), "%s/vm.json", t.dir);
	FILE *f = fopen(cfg, "w");
	cr_assert_not_null(f);
	fputs("{\"boot-source\": {\"kernel_image_path\": \"/nonexistent\"}}", f);
	fclose(f);
	char *args[] = { "--config-file", cfg, NULL };
	fc_spawn(&t, args);
	cr_assert_eq(fc_wait(&t, 10), 66, "missing kernel: exit status 66 (no input)");
	char *args2[] = { "--kernel", t.kernel, "--config-file", cfg, NULL };
	fc_spawn(&t, args2);
	cr_assert_eq(fc_wait(&t, 10), 64, "--kernel with --config-file: usage error");
}
#undef t
