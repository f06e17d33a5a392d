/*
 * VM construction and the main loop (see vm.h). The main thread owns the console input and
 * process signals; vCPU threads own their KVM_RUN loops; they meet in vm_request_stop.
 */
#include "vm.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "api.h"
#include "boot/cpu_state.h"
#include "cpuid.h"
#include "layout.h"
#include "migrate/migrate.h"
#include "tables/acpi.h"
#include "tables/mptable.h"
#include "util.h"
#include "vcpu.h"
#include "virtio/net.h"

void vm_set_irq_line(struct vm *vm, unsigned gsi, int level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };
	ioctl(vm->fd, KVM_IRQ_LINE, &irq);
}

void vm_request_stop(struct vm *vm, int status, const char *fmt, ...)
{
	pthread_mutex_lock(&vm->stop_lock);
	if (!atomic_load(&vm->stopping)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(vm->stop_reason, sizeof(vm->stop_reason), fmt, ap);
		va_end(ap);
		vm->stop_status = status;
		atomic_store(&vm->stopping, true);
		uint64_t one = 1;
		if (vm->stop_eventfd >= 0 && write(vm->stop_eventfd, &one, sizeof(one)) < 0) {
			/* the counter cannot overflow with one write per VM; nothing to do */
		}
	}
	pthread_mutex_unlock(&vm->stop_lock);
	/* Parked vCPUs must see the stop too. */
	pthread_mutex_lock(&vm->pause_lock);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

static void uart_irq(void *ctx, int level)
{
	vm_set_irq_line(ctx, IRQ_COM1, level);
}

static void uart_transmit(void *ctx, const uint8_t *buf, size_t len)
{
	struct vm *vm = ctx;
	console_write(&vm->console, buf, len);
}

static void uart_drained(void *ctx)
{
	struct vm *vm = ctx;
	uint64_t one = 1;
	if (write(vm->uart_drained_eventfd, &one, sizeof(one)) < 0) {
		/* eventfd full: the main loop has a wake-up pending anyway */
	}
}

static void i8042_irq(void *ctx, int level)
{
	vm_set_irq_line(ctx, IRQ_I8042_KBD, level);
}

static void power_event(void *ctx, enum guest_power_event ev, const char *source)
{
	struct vm *vm = ctx;
	if (ev == GUEST_POWER_OFF)
		vm_request_stop(vm, CV_EXIT_OK, "guest powered off (%s)", source);
	else
		vm_request_stop(vm, CV_EXIT_GUEST_REBOOT, "guest requested a reset (%s)", source);
}

static int create_irqchip(struct vm *vm, struct cv_error *err)
{
	/* Intel needs these pages inside the MMIO hole before vCPUs exist; AMD ignores them. */
	if (ioctl(vm->fd, KVM_SET_TSS_ADDR, (unsigned long)LAYOUT_KVM_TSS) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_SET_TSS_ADDR");
	uint64_t identity = LAYOUT_KVM_IDENTITY;
	ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &identity);
	if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_CREATE_IRQCHIP");
	/* The PIT lets Linux calibrate and check IRQ0 routing; port 0x61 is handled in-kernel. */
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_CREATE_PIT2");
	return 0;
}

static int create_devices(struct vm *vm, struct cv_error *err)
{
	struct uart_hooks hooks = {
		.ctx = vm, .set_irq = uart_irq, .transmit = uart_transmit,
		.rx_drained = uart_drained,
	};
	uart_init(&vm->uart, &hooks);
	struct power_hook power = { vm, power_event };
	i8042_init(&vm->i8042, &power, i8042_irq, vm);
	acpi_pm_init(&vm->acpi_pm, &power);
	if (io_bus_register(&vm->pio, PORT_COM1, UART_REGISTERS, &uart_io_ops, &vm->uart,
			    "uart", err) < 0 ||
	    io_bus_register(&vm->pio, PORT_I8042_DATA, PORT_I8042_COMMAND - PORT_I8042_DATA + 1,
			    &i8042_io_ops, &vm->i8042, "i8042", err) < 0 ||
	    io_bus_register(&vm->pio, PORT_ACPI_PM_BASE, ACPI_PM_PORTS, &acpi_pm_io_ops,
			    &vm->acpi_pm, "acpi-pm", err) < 0)
		return -1;
	return 0;
}

static int write_tables(struct vm *vm, const struct device_config *dc, struct cv_error *err)
{
	uint8_t ioapic_id = (uint8_t)vm->n_vcpus;
	uint8_t *acpi = guest_memory_ptr(&vm->mem, LAYOUT_ACPI_TABLES, LAYOUT_ACPI_MAX);
	uint8_t *mp = guest_memory_ptr(&vm->mem, LAYOUT_MPTABLE, LAYOUT_MPTABLE_MAX);
	if (!acpi || !mp)
		return cv_fail(err, CV_EXIT_SOFTWARE, "BIOS area is not RAM");
	struct acpi_params ap = { .n_cpus = vm->n_vcpus, .ioapic_id = ioapic_id,
				  .base = LAYOUT_ACPI_TABLES, .level_irqs = vm_devices_level_irqs(dc),
				  .no_pci_root = dc->transport == VIRTIO_TRANSPORT_MMIO };
	size_t len;
	if (acpi_build(&ap, acpi, LAYOUT_ACPI_MAX, &len, err) < 0)
		return -1;
	vm->rsdp_gpa = LAYOUT_ACPI_TABLES;

	const struct kvm_cpuid_entry2 *leaf1 = cpuid_find(vm->kvm.cpuid, vm->kvm.n_cpuid, 1, 0);
	struct mptable_params mpp = {
		.n_cpus = vm->n_vcpus, .ioapic_id = ioapic_id,
		.cpu_signature = leaf1 ? leaf1->eax : 0, .cpu_features = leaf1 ? leaf1->edx : 0,
		.base = LAYOUT_MPTABLE, .level_irqs = ap.level_irqs,
	};
	return mptable_build(&mpp, mp, LAYOUT_MPTABLE_MAX, &len, err);
}

int vm_init(struct vm *vm, const struct vm_config *cfg, struct cv_error *err)
{
	memset(vm, 0, sizeof(*vm));
	vm->kvm.fd = vm->fd = vm->stop_eventfd = vm->uart_drained_eventfd = -1;
	vm->loop.epfd = vm->loop.wake_fd = -1;
	vm->migrate_ack_fd = -1;
	vm->migratable = cfg->migratable;
	vm->sandbox = cfg->sandbox;
	vm->console.out_fd = vm->console.in_fd = -1;
	io_bus_init(&vm->pio, "port I/O");
	io_bus_init(&vm->mmio, "MMIO");
	pthread_mutex_init(&vm->stop_lock, NULL);
	pthread_mutex_init(&vm->control_lock, NULL);
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	const char *trace = getenv("CVISOR_VMM_TRACE");
	vm->trace_io = trace && strstr(trace, "io");

	if (cfg->memory_bytes < GUEST_MEMORY_MIN)
		return cv_fail(err, CV_EXIT_USAGE, "guest memory must be at least %llu MiB",
			       GUEST_MEMORY_MIN >> 20);
	if (kvm_system_open(&vm->kvm, err) < 0)
		return -1;
	unsigned max_cpus = CV_MIN(vm->kvm.max_vcpus, (unsigned)VM_MAX_VCPUS);
	if (cfg->cpus < 1 || cfg->cpus > max_cpus)
		return cv_fail(err, CV_EXIT_USAGE, "--cpus %u: must be between 1 and %u on this host",
			       cfg->cpus, max_cpus);
	vm->n_vcpus = cfg->cpus;

	vm->fd = ioctl(vm->kvm.fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "KVM_CREATE_VM");
	vm->stop_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vm->uart_drained_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->stop_eventfd < 0 || vm->uart_drained_eventfd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "eventfd");
	if (create_irqchip(vm, err) < 0)
		return -1;
	int routes = ioctl(vm->kvm.fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_ROUTING);
	if (irq_routing_init(&vm->irq, vm->fd, routes > 0 ? (unsigned)routes : GSI_COUNT, err) < 0 ||
	    evloop_init(&vm->loop, err) < 0)
		return -1;
	if (guest_memory_init(&vm->mem, cfg->memory_bytes, err) < 0 ||
	    (cfg->track_dirty_pages && guest_memory_track_dirty(&vm->mem, err) < 0) ||
	    guest_memory_register(&vm->mem, vm->fd, err) < 0)
		return -1;
	if (console_open(&vm->console, &cfg->console, err) < 0)
		return -1;
	if (create_devices(vm, err) < 0 || write_tables(vm, &cfg->devices, err) < 0 ||
	    cpu_write_boot_tables(&vm->mem, err) < 0)
		return -1;
	if (pci_bus_init(&vm->pci, &vm->pio, &vm->mmio, LAYOUT_PCI_WINDOW, LAYOUT_PCI_WINDOW_SIZE,
			 err) < 0 ||
	    vm_devices_create(vm, &cfg->devices, err) < 0)
		return -1;
	vm->devcfg = cfg->devices;
	for (unsigned i = 0, n = 0; i < vm->n_virtio && n < vm->devcfg.n_nets; i++) {
		if (vm->virtio[i]->dev->ops->device_id != VIRTIO_ID_NET)
			continue;
		const struct virtio_net *net = vm->virtio[i]->owner;
		memcpy(vm->devcfg.nets[n].mac, net->mac, 6);
		vm->devcfg.nets[n++].has_mac = true;
	}

	vm->vcpus = calloc(vm->n_vcpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		vm->created_vcpus = i + 1;
		if (vcpu_create(vm, i, &vm->vcpus[i], err) < 0)
			return -1;
	}
	return 0;
}

int vm_load_kernel(struct vm *vm, const struct boot_config *bc, struct boot_plan *plan,
		   struct cv_error *err)
{
	/* virtio-mmio devices exist for the guest only on its command line. */
	char *cmdline;
	if (vm_devices_cmdline(vm, bc->cmdline, &cmdline, err) < 0)
		return -1;
	struct boot_config with = *bc;
	if (cmdline)
		with.cmdline = cmdline;
	int rc = boot_prepare(&with, &vm->mem, vm->rsdp_gpa, plan, err);
	free(cmdline);
	if (rc < 0)
		return -1;
	/* Only the boot CPU gets an entry state; the others wait for INIT/SIPI from the guest. */
	return cpu_set_entry_state(vm->vcpus[0].fd, plan->mode, plan->entry, plan->params, err);
}

/* Moves pending console input into the UART; returns bytes still pending. */
static size_t feed_uart(struct vm *vm, uint8_t *pending, size_t *off, size_t len)
{
	size_t n = uart_receive(&vm->uart, pending + *off, len - *off);
	*off += n;
	return len - *off;
}

int vm_run(struct vm *vm, struct cv_error *err)
{
	sigset_t handled, old;
	sigemptyset(&handled);
	sigaddset(&handled, SIGINT);
	sigaddset(&handled, SIGTERM);
	sigaddset(&handled, SIGHUP);
	/* Blocked before the vCPU threads start so that only the signalfd sees them. */
	pthread_sigmask(SIG_BLOCK, &handled, &old);
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		return cv_fail_errno(err, CV_EXIT_OSERR, "signalfd");
	}
	int rc = vcpu_signals_init(err);
	/* Each thread sandboxes itself where its loop starts (sandbox.h). */
	vm->loop.on_start = vm_sandbox_io_start;
	vm->loop.on_start_ctx = vm;
	if (rc == 0)
		rc = evloop_start(&vm->loop, "io", err);
	/* The migration thread needs TCP, which no thread may reach once sandboxed: start it now. */
	if (rc == 0 && vm->migratable)
		rc = migrate_thread_prepare(vm, err);
	vm->started_ns = cv_monotonic_ns();
	for (unsigned i = 0; rc == 0 && i < vm->n_vcpus; i++)
		rc = vcpu_start(&vm->vcpus[i], err);
	/* An incoming migration: the guest runs here now; the source may stop. */
	if (rc == 0)
		migrate_incoming_resumed(vm);
	if (rc < 0)
		vm_request_stop(vm, err->code, "%s", err->msg);
	else if (vm_sandbox_thread(vm, VMM_ROLE_MAIN, NULL))   /* last: threads inherit it */
		atomic_store(&vm->sandbox_armed, true);

	uint8_t pending[256];
	size_t pending_len = 0, pending_off = 0;
	bool input_open = vm->console.in_fd >= 0;
	uint64_t next_tick = vm->tick_ms ? cv_monotonic_ns() + vm->tick_ms * 1000000ULL : 0;
	while (!atomic_load(&vm->stopping)) {
		int timeout = -1;
		if (next_tick) {
			uint64_t now = cv_monotonic_ns();
			if (now >= next_tick) {
				vm->tick(vm->tick_ctx);
				next_tick = now + vm->tick_ms * 1000000ULL;
			}
			timeout = (int)((next_tick - now) / 1000000ULL) + 1;
		}
		struct pollfd fds[4] = {
			{ .fd = vm->stop_eventfd, .events = POLLIN },
			{ .fd = sfd, .events = POLLIN },
			{ .fd = vm->uart_drained_eventfd, .events = POLLIN },
			{ .fd = (input_open && pending_off == pending_len) ? vm->console.in_fd : -1,
			  .events = POLLIN },
		};
		if (poll(fds, 4, timeout) < 0) {
			if (errno == EINTR)
				continue;
			vm_request_stop(vm, CV_EXIT_OSERR, "poll: %s", strerror(errno));
			break;
		}
		if (fds[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si))
				vm_request_stop(vm, 128 + (int)si.ssi_signo, "stopped by signal %s",
						strsignal((int)si.ssi_signo));
		}
		if (fds[2].revents & POLLIN) {
			uint64_t v;
			if (read(vm->uart_drained_eventfd, &v, sizeof(v)) < 0) {
				/* spurious wake-up: nothing to drain */
			}
			if (pending_off < pending_len)
				feed_uart(vm, pending, &pending_off, pending_len);
		}
		if (fds[3].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(vm->console.in_fd, pending, sizeof(pending));
			if (n <= 0) {
				if (n == 0 || (errno != EINTR && errno != EAGAIN))
					input_open = false;
				continue;
			}
			bool quit;
			pending_len = console_filter_input(&vm->console, pending, (size_t)n, &quit);
			pending_off = 0;
			if (quit)
				vm_request_stop(vm, 128 + SIGINT, "stopped by the user (Ctrl-A x)");
			feed_uart(vm, pending, &pending_off, pending_len);
		}
	}

	for (unsigned i = 0; i < vm->n_vcpus; i++)
		vcpu_join(&vm->vcpus[i]);
	evloop_stop(&vm->loop);
	close(sfd);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	console_close(&vm->console);
	return vm->stop_status;
}

void vm_destroy(struct vm *vm)
{
	migrate_destroy(vm);
	if (vm->migrate_ack_fd >= 0)
		close(vm->migrate_ack_fd);
	vm->migrate_ack_fd = -1;
	for (unsigned i = 0; i < vm->created_vcpus; i++) {
		vcpu_join(&vm->vcpus[i]);
		vcpu_destroy(&vm->vcpus[i]);
	}
	free(vm->vcpus);
	vm->vcpus = NULL;
	evloop_stop(&vm->loop);
	vm_devices_destroy(vm);
	pci_bus_destroy(&vm->pci);
	evloop_destroy(&vm->loop);
	if (vm->irq.entries)
		irq_routing_destroy(&vm->irq);
	console_close(&vm->console);
	uart_destroy(&vm->uart);
	i8042_destroy(&vm->i8042);
	pthread_mutex_destroy(&vm->acpi_pm.lock);
	io_bus_free(&vm->pio);
	io_bus_free(&vm->mmio);
	guest_memory_free(&vm->mem);
	if (vm->stop_eventfd >= 0)
		close(vm->stop_eventfd);
	if (vm->uart_drained_eventfd >= 0)
		close(vm->uart_drained_eventfd);
	if (vm->fd >= 0)
		close(vm->fd);
	kvm_system_close(&vm->kvm);
	pthread_mutex_destroy(&vm->stop_lock);
	pthread_mutex_destroy(&vm->control_lock);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_cond_destroy(&vm->pause_cond);
	vm->fd = vm->stop_eventfd = vm->uart_drained_eventfd = -1;
}
