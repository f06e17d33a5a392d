/*
 * Direct KVM tests: tiny hand-written guests (guests.S) run on this host's /dev/kvm through the
 * real cvisor-vmm machine (vm_init: memory, irqchip, devices, tables, vCPUs; cpu_set_entry_state:
 * the long-mode entry Linux uses). They check what the guest did: console bytes, MMIO seen by a
 * device, memory contents, every vCPU running, and the exit status a power-off produces.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot/cpu_state.h"
#include "kvm_harness.h"
#include "kvm_probe.h"
#include "layout.h"
#include "util.h"
#include "vcpu.h"
#include "vm.h"

#define GUEST(name)                                                                   \
	extern const uint8_t guest_##name##_start[], guest_##name##_end[];

GUEST(hello)
GUEST(mmio)
GUEST(memory)
GUEST(smp_bsp)
GUEST(smp_ap)
GUEST(triple_fault)
GUEST(popcnt)

#define CODE_GPA 0x100000ULL
#define TRAMPOLINE_GPA 0x10000ULL
#define TIMEOUT_STATUS 99

struct tiny {
	struct vm vm;
	char console[64];
	pthread_t watchdog;
	unsigned timeout_s;
};

static void tiny_init(struct tiny *t, unsigned cpus, uint64_t mem)
{
	memset(t, 0, sizeof(*t));
	console_file(t->console, sizeof(t->console), "kvm");
	struct vm_config cfg = {
		.cpus = cpus, .memory_bytes = mem,
		.console = { .kind = CONSOLE_FILE, .path = t->console },
	};
	struct cv_error err = { 0 };
	cr_assert_eq(vm_init(&t->vm, &cfg, &err), 0, "vm_init: %s", err.msg);
}

static void tiny_load(struct tiny *t, const uint8_t *start, const uint8_t *end, uint64_t gpa)
{
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_write(&t->vm.mem, gpa, start, (uint64_t)(end - start), &err), 0,
		     "%s", err.msg);
}

static void tiny_enter64(struct tiny *t, uint64_t rsi)
{
	struct cv_error err = { 0 };
	cr_assert_eq(cpu_set_entry_state(t->vm.vcpus[0].fd, BOOT_ENTRY_LINUX64, CODE_GPA, rsi, &err),
		     0, "%s", err.msg);
}

static void *watchdog(void *arg)
{
	struct tiny *t = arg;
	for (unsigned i = 0; i < t->timeout_s * 10 && !atomic_load(&t->vm.stopping); i++)
		usleep(100000);
	vm_request_stop(&t->vm, TIMEOUT_STATUS, "test timeout after %u s", t->timeout_s);
	return NULL;
}

static int tiny_run(struct tiny *t, unsigned timeout_s)
{
	struct cv_error err = { 0 };
	t->timeout_s = timeout_s;
	pthread_create(&t->watchdog, NULL, watchdog, t);
	int status = vm_run(&t->vm, &err);
	pthread_join(t->watchdog, NULL);
	return status;
}

static char *tiny_console(struct tiny *t)
{
	struct cv_buf b;
	struct cv_error err = { 0 };
	cr_assert_eq(cv_read_file(t->console, 1 << 20, &b, &err), 0, "%s", err.msg);
	return (char *)b.data;
}

static void tiny_destroy(struct tiny *t)
{
	vm_destroy(&t->vm);
	unlink(t->console);
}

Test(kvm, uart_output_and_acpi_poweroff, .timeout = 60)
{
	require_kvm();
	struct tiny t;
	tiny_init(&t, 1, CV_MiB(32));
	tiny_load(&t, guest_hello_start, guest_hello_end, CODE_GPA);
	tiny_enter64(&t, 0);
	int status = tiny_run(&t, 30);
	cr_assert_eq(status, CV_EXIT_OK, "status %d: %s", status, t.vm.stop_reason);
	cr_assert(strstr(t.vm.stop_reason, "powered off"), "%s", t.vm.stop_reason);
	char *out = tiny_console(&t);
	cr_assert_str_eq(out, "hello from the guest\n");
	/* 21 bytes, one port write each, plus the power-off write. */
	cr_assert_geq(atomic_load(&t.vm.vcpus[0].stats[VCPU_STAT_IO]), 22);
	free(out);
	tiny_destroy(&t);
}

/* A test device: a 16-byte MMIO window recording writes; reads at offset 8 return a constant. */
struct test_dev {
	uint32_t last32;
	uint64_t last64;
	int writes;
	uint32_t tickets;        /* bit n set when an AP reported ticket n on PORT_TEST */
	pthread_mutex_t lock;
};

static void dev_read(void *o, uint64_t off, uint8_t *d, uint32_t n)
{
	(void)o;
	uint64_t v = off == 8 ? 0xcafef00dULL : 0;
	memcpy(d, &v, n);
}

static void dev_write(void *o, uint64_t off, const uint8_t *d, uint32_t n)
{
	struct test_dev *dev = o;
	pthread_mutex_lock(&dev->lock);
	dev->writes++;
	if (off == 0 && n == 4)
		memcpy(&dev->last32, d, 4);
	if (off == 0x10 && n == 8)
		memcpy(&dev->last64, d, 8);
	pthread_mutex_unlock(&dev->lock);
}

static void port_write(void *o, uint64_t off, const uint8_t *d, uint32_t n)
{
	struct test_dev *dev = o;
	(void)off;
	(void)n;
	pthread_mutex_lock(&dev->lock);
	if (d[0] < 32)
		dev->tickets |= 1u << d[0];
	pthread_mutex_unlock(&dev->lock);
}

static const struct io_ops dev_ops = { dev_read, dev_write };
static const struct io_ops port_ops = { NULL, port_write };

Test(kvm, mmio_exits_reach_the_device, .timeout = 60)
{
	require_kvm();
	struct tiny t;
	struct test_dev dev = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cv_error err = { 0 };
	tiny_init(&t, 1, CV_MiB(32));
	cr_assert_eq(io_bus_register(&t.vm.mmio, 0xd0000000, 0x20, &dev_ops, &dev, "test", &err), 0);
	tiny_load(&t, guest_mmio_start, guest_mmio_end, CODE_GPA);
	tiny_enter64(&t, 0);
	int status = tiny_run(&t, 30);
	cr_assert_eq(status, CV_EXIT_OK, "status %d: %s", status, t.vm.stop_reason);
	cr_assert_eq(dev.last32, 0xdeadbeef);
	cr_assert_eq(dev.last64, 0x1122334455667788ULL);
	cr_assert_eq(dev.writes, 2);
	uint32_t seen;
	memcpy(&seen, guest_memory_ptr(&t.vm.mem, 0x200000, 4), 4);
	cr_assert_eq(seen, 0xcafef00d, "guest stored what the device returned");
	cr_assert_geq(atomic_load(&t.vm.vcpus[0].stats[VCPU_STAT_MMIO]), 3);
	tiny_destroy(&t);
}

Test(kvm, guest_and_vmm_share_memory, .timeout = 120)
{
	require_kvm();
	struct tiny t;
	tiny_init(&t, 1, CV_MiB(64));
	uint8_t *src = guest_memory_ptr(&t.vm.mem, 0x300000, 4096);
	uint32_t want = 0;
	for (int i = 0; i < 4096; i++) {
		src[i] = (uint8_t)(i * 13 + 1);
		want += src[i];
	}
	tiny_load(&t, guest_memory_start, guest_memory_end, CODE_GPA);
	tiny_enter64(&t, 0);
	int status = tiny_run(&t, 100);
	cr_assert_eq(status, CV_EXIT_OK, "status %d: %s", status, t.vm.stop_reason);
	uint32_t sum;
	memcpy(&sum, guest_memory_ptr(&t.vm.mem, 0x200000, 4), 4);
	cr_assert_eq(sum, want, "guest read the VMM's bytes");
	const uint8_t *pat = guest_memory_ptr(&t.vm.mem, 0x400000, 4096);
	for (uint32_t i = 0; i < 1024; i++) {
		uint32_t v;
		memcpy(&v, pat + 4 * i, 4);
		cr_assert_eq(v, i * 0x01010101u, "dword %u", i);
	}
	tiny_destroy(&t);
}

Test(kvm, every_vcpu_runs, .timeout = 120)
{
	require_kvm();
	const unsigned cpus = 4;
	struct tiny t;
	struct test_dev dev = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cv_error err = { 0 };
	tiny_init(&t, cpus, CV_MiB(32));
	cr_assert_eq(io_bus_register(&t.vm.pio, 0x510, 1, &port_ops, &dev, "test-port", &err), 0);
	tiny_load(&t, guest_smp_bsp_start, guest_smp_bsp_end, CODE_GPA);
	tiny_load(&t, guest_smp_ap_start, guest_smp_ap_end, TRAMPOLINE_GPA);
	tiny_enter64(&t, cpus - 1);
	int status = tiny_run(&t, 100);
	cr_assert_eq(status, CV_EXIT_OK, "status %d: %s", status, t.vm.stop_reason);
	char *out = tiny_console(&t);
	cr_assert_str_eq(out, "smp ok\n");
	free(out);
	cr_assert_eq(dev.tickets, 0x2 | 0x4 | 0x8, "tickets 1..3 each reported once: 0x%x",
		     dev.tickets);
	for (unsigned i = 1; i < cpus; i++)
		cr_assert_geq(atomic_load(&t.vm.vcpus[i].stats[VCPU_STAT_IO]), 1,
			      "vCPU %u made no port access", i);
	tiny_destroy(&t);
}

Test(kvm, vm_init_rejects_bad_configuration)
{
	require_kvm();
	struct vm vm;
	struct cv_error err = { 0 };
	struct vm_config cfg = { .cpus = 0, .memory_bytes = CV_MiB(32),
				 .console = { .kind = CONSOLE_NONE } };
	cr_assert_eq(vm_init(&vm, &cfg, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_USAGE);
	vm_destroy(&vm);
	cfg.cpus = 100000;
	cr_assert_eq(vm_init(&vm, &cfg, &err), -1);
	cr_assert(strstr(err.msg, "--cpus"), "%s", err.msg);
	vm_destroy(&vm);
	cfg.cpus = 1;
	cfg.memory_bytes = 4096;
	cr_assert_eq(vm_init(&vm, &cfg, &err), -1);
	vm_destroy(&vm);
}

Test(kvm, triple_fault_ends_the_vm_with_its_own_status, .timeout = 60)
{
	require_kvm();
	struct tiny t;
	tiny_init(&t, 1, CV_MiB(32));
	tiny_load(&t, guest_triple_fault_start, guest_triple_fault_end, CODE_GPA);
	tiny_enter64(&t, 0);
	int status = tiny_run(&t, 30);
	cr_assert_eq(status, CV_EXIT_GUEST_CRASH, "status %d: %s", status, t.vm.stop_reason);
	cr_assert(strstr(t.vm.stop_reason, "triple fault") && strstr(t.vm.stop_reason, "vCPU 0"),
		  "%s", t.vm.stop_reason);
	tiny_destroy(&t);
}

/* Only where the host KVM is PVM: its emulator's gaps are how a KVM internal error looks. */
Test(kvm, kvm_internal_error_ends_the_vm_with_its_own_status, .timeout = 60)
{
	require_kvm();
	struct kvm_host_probe probe;
	kvm_probe_host(&probe);
	if (probe.kind != KVM_HOST_PVM)
		cr_skip_test("needs a PVM host, whose emulator cannot run popcnt at CPL0");
	struct tiny t;
	tiny_init(&t, 1, CV_MiB(32));
	tiny_load(&t, guest_popcnt_start, guest_popcnt_end, CODE_GPA);
	tiny_enter64(&t, 0);
	int status = tiny_run(&t, 30);
	cr_assert_eq(status, CV_EXIT_KVM_ERROR, "status %d: %s", status, t.vm.stop_reason);
	cr_assert(strstr(t.vm.stop_reason, "emulation failed") && strstr(t.vm.stop_reason, "rip 0x"),
		  "%s", t.vm.stop_reason);
	tiny_destroy(&t);
}
