/*
 * The cvisor-vmm process around its VM (see instance.h): start, the wait for InstanceStart,
 * the run, the teardown.
 */
#include "instance.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "snapshot/snapshot.h"

static bool valid_instance_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > INSTANCE_MAX_ID)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)id[i]) && id[i] != '-' && id[i] != '_')
			return false;
	return true;
}

int instance_init(struct vmm_instance *in, const char *id, struct cv_error *err)
{
	memset(in, 0, sizeof(*in));
	in->start_eventfd = -1;
	in->api.listen_fd = -1;
	in->incoming.listen_fd = -1;
	if (instance_set_id(in, id ? id : INSTANCE_DEFAULT_ID, err) < 0)
		return -1;
	vmm_setup_init(&in->setup);
	pthread_mutex_init(&in->lock, NULL);
	pthread_cond_init(&in->start_cond, NULL);
	vmm_logger_init(&in->log, in->id);
	vmm_metrics_init(&in->metrics);
	in->start_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (in->start_eventfd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "eventfd");
	return 0;
}

int instance_set_id(struct vmm_instance *in, const char *id, struct cv_error *err)
{
	if (!valid_instance_id(id))
		return cv_fail(err, CV_EXIT_USAGE, "--id '%s': 1 to %d letters, digits, '-' or '_'",
			       id, INSTANCE_MAX_ID);
	snprintf(in->id, sizeof(in->id), "%s", id);
	return 0;
}

/* The API thread locks itself down once the VM's threads all run (sandbox.h). */
static int api_thread_hook(void *ctx)
{
	struct vmm_instance *in = ctx;
	struct vm *vm = atomic_load(&in->running);
	return vm ? vm_sandbox_api_start(vm) : 0;
}

int instance_api_start(struct vmm_instance *in, const char *path, struct cv_error *err)
{
	api_server_on_thread_start(&in->api, api_thread_hook, in);
	if (api_server_start(&in->api, path, instance_api_route, in, err) < 0)
		return -1;
	in->api_running = true;
	return 0;
}

static void metrics_tick(void *ctx)
{
	struct vmm_instance *in = ctx;
	struct cv_error err = { 0 };
	if (vmm_metrics_flush(&in->metrics, in->vm, &err) < 0)
		vmm_log(&in->log, LOG_LEVEL_WARNING, "%s", err.msg);
}

/* The logger and metrics sinks of the setup, unless the API opened them already. */
static int open_sinks(struct vmm_instance *in, struct cv_error *err)
{
	if (in->setup.logger.set && in->log.fd < 0 &&
	    vmm_logger_open(&in->log, &in->setup.logger, err) < 0)
		return -1;
	if (in->setup.metrics.path && in->metrics.fd < 0 &&
	    vmm_metrics_open(&in->metrics, in->setup.metrics.path, err) < 0)
		return -1;
	return 0;
}

int instance_start(struct vmm_instance *in, struct cv_error *err)
{
	if (in->vm)
		return cv_fail(err, CV_EXIT_USAGE, "the VM is already started");
	struct vmm_setup *s = &in->setup;
	enum virtio_transport requested = s->vm.devices.transport;
	bool incoming = in->incoming.address || in->incoming.listen_fd >= 0;
	if (!in->restore_state && !in->load && !incoming && vmm_setup_finalize(s, err) < 0)
		return -1;
	/* Only a VM with a control API can be asked to migrate: only it needs the thread. */
	s->vm.migratable = in->api_running;
	if (open_sinks(in, err) < 0)
		goto fail_config;
	struct vm *vm = calloc(1, sizeof(*vm));
	if (!vm) {
		cv_fail(err, CV_EXIT_OSERR, "out of memory");
		goto fail_config;
	}
	struct boot_config boot = s->boot;
	boot.cmdline = s->final_cmdline;
	struct boot_plan plan;
	if (incoming) {
		bool built;
		if (migrate_incoming(vm, &s->vm, &in->incoming, &built, err) < 0) {
			if (built)
				vm_destroy(vm);
			free(vm);
			goto fail_config;
		}
	} else if (in->load) {
		/* The machine is the snapshot's; vm_load_snapshot cleans up after itself. */
		if (vm_load_snapshot(vm, &in->load_cfg, in->load, &s->vm, err) < 0) {
			free(vm);
			goto fail_config;
		}
	} else if (vm_init(vm, &s->vm, err) < 0 ||
		   (in->restore_state ? vm_restore(vm, in->restore_state, in->restore_memory, err)
				      : vm_load_kernel(vm, &boot, &plan, err)) < 0) {
		vm_destroy(vm);
		free(vm);
		goto fail_config;
	}
	if (in->metrics.fd >= 0) {
		vm->tick = metrics_tick;
		vm->tick_ctx = in;
		vm->tick_ms = METRICS_FLUSH_MS;
	}
	in->vm = vm;
	atomic_store(&in->running, vm);
	vmm_log(&in->log, LOG_LEVEL_INFO, "VM started: %u vCPUs, %llu MiB, %u drives, %u NICs, %s",
		s->vm.cpus, (unsigned long long)(s->vm.memory_bytes >> 20), s->vm.devices.n_disks,
		s->vm.devices.n_nets,
		s->vm.devices.transport == VIRTIO_TRANSPORT_MMIO ? "virtio-mmio" : "virtio-pci");
	return 0;

fail_config:
	/* Another try may change the boot arguments: resolve the transport again then. */
	s->vm.devices.transport = requested;
	return -1;
}

int instance_request_start(struct vmm_instance *in, struct cv_error *err)
{
	if (!in->restore_state && !in->load && vmm_setup_check_boot(&in->setup, err) < 0)
		return -1;
	if (!in->main_waiting)
		return cv_fail(err, CV_EXIT_SOFTWARE, "cvisor-vmm is stopping");
	in->start_requested = true;
	in->start_done = false;
	uint64_t one = 1;
	if (write(in->start_eventfd, &one, sizeof(one)) < 0) {
		/* cannot fail: the main thread reads the counter before each wait */
	}
	while (!in->start_done)
		pthread_cond_wait(&in->start_cond, &in->lock);
	in->start_requested = false;
	if (in->start_rc < 0)
		*err = in->start_err;
	return in->start_rc;
}

/* Main thread: answers a pending InstanceStart. Returns true once the VM is built. */
static bool serve_start_request(struct vmm_instance *in)
{
	pthread_mutex_lock(&in->lock);
	bool started = false;
	if (in->start_requested && !in->start_done) {
		memset(&in->start_err, 0, sizeof(in->start_err));
		in->start_rc = instance_start(in, &in->start_err);
		started = in->start_rc == 0;
		in->start_done = true;
		if (started)
			in->main_waiting = false;
		pthread_cond_broadcast(&in->start_cond);
	}
	pthread_mutex_unlock(&in->lock);
	return started;
}

void instance_block_stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
}

/* Waits for InstanceStart or a stop signal; returns 0 when started, else the exit status. */
static int wait_for_start(struct vmm_instance *in, struct cv_error *err)
{
	sigset_t handled;
	instance_block_stop_signals(&handled);
	int sfd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "signalfd");
	pthread_mutex_lock(&in->lock);
	in->main_waiting = true;
	pthread_mutex_unlock(&in->lock);
	int status = -1;
	while (status < 0) {
		struct pollfd fds[2] = { { .fd = in->start_eventfd, .events = POLLIN },
					 { .fd = sfd, .events = POLLIN } };
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			cv_fail_errno(err, CV_EXIT_OSERR, "poll");
			status = CV_EXIT_OSERR;
			break;
		}
		if (fds[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si))
				status = 128 + (int)si.ssi_signo;
		} else if (fds[0].revents & POLLIN) {
			uint64_t v;
			if (read(in->start_eventfd, &v, sizeof(v)) == sizeof(v) &&
			    serve_start_request(in))
				status = 0;
		}
	}
	/* A request arriving from now on must not wait for a main thread that is leaving. */
	pthread_mutex_lock(&in->lock);
	if (status != 0) {
		in->main_waiting = false;
		if (in->start_requested && !in->start_done) {
			in->start_rc = cv_fail(&in->start_err, CV_EXIT_SOFTWARE, "cvisor-vmm is stopping");
			in->start_done = true;
			pthread_cond_broadcast(&in->start_cond);
		}
	}
	pthread_mutex_unlock(&in->lock);
	close(sfd);
	return status;
}

int instance_run(struct vmm_instance *in, struct cv_error *err)
{
	if (!atomic_load(&in->running)) {
		int status = wait_for_start(in, err);
		if (status != 0) {
			if (!err->code)
				cv_fail(err, status, "stopped by signal before the VM started");
			return status;
		}
	}
	struct vm *vm = in->vm;
	int status = vm_run(vm, err);
	vmm_log(&in->log, status == CV_EXIT_OK ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR,
		"VM stopped (exit status %d): %s", status, vm->stop_reason);
	if (in->metrics.fd >= 0) {
		struct cv_error ferr = { 0 };
		vmm_metrics_flush(&in->metrics, vm, &ferr);
	}
	return status;
}

void instance_destroy(struct vmm_instance *in)
{
	/* The API thread is gone before the VM it may be touching. */
	if (in->api_running)
		api_server_stop(&in->api);
	in->api_running = false;
	if (in->vm) {
		vm_destroy(in->vm);
		free(in->vm);
	}
	in->vm = NULL;
	atomic_store(&in->running, NULL);
	if (in->start_eventfd >= 0)
		close(in->start_eventfd);
	in->start_eventfd = -1;
	vmm_metrics_destroy(&in->metrics);
	vmm_logger_close(&in->log);
	vmm_setup_destroy(&in->setup);
	pthread_cond_destroy(&in->start_cond);
	pthread_mutex_destroy(&in->lock);
}
