/*
 * cvisor-vmm without a VM yet (see preboot.h). The API thread builds the VM when the load
 * request comes (vm_load_snapshot) and wakes the main thread through an eventfd; the main
 * thread then runs it with vm_run, whose own API server stays unused: this one keeps serving,
 * and from then on hands every request to the VM's router.
 */
#include "preboot.h"

#include <errno.h>
#include <microhttpd.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "api.h"
#include "load.h"
#include "sandbox.h"
#include "snapshot/snapshot.h"
#include "vm.h"

struct preboot {
	struct api_server api;
	const struct vm_config *base;
	struct vm vm;
	struct snap_config cfg;      /* the loaded VM's device configuration points into it */
	atomic_bool loaded;
	int loaded_fd;               /* eventfd: the VM is ready to run */
};

static void load(struct preboot *pb, const struct api_request *req, struct api_response *resp)
{
	struct cv_error err = { 0 };
	struct load_request r;
	if (!req->body) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "this request needs a JSON body");
		return;
	}
	if (load_request_parse(req->body, &r, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	if (vm_load_snapshot(&pb->vm, &pb->cfg, &r, pb->base, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "cannot load the snapshot: %s", err.msg);
		return;
	}
	atomic_store(&pb->loaded, true);
	uint64_t one = 1;
	if (write(pb->loaded_fd, &one, sizeof(one)) < 0) {
		/* a fresh eventfd cannot be full */
	}
	api_no_content(resp);
}

static void route(void *ctx, const struct api_request *req, struct api_response *resp)
{
	struct preboot *pb = ctx;
	bool is_load = strcmp(req->path, "/snapshot/load") == 0;
	if (atomic_load(&pb->loaded)) {
		if (is_load)
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "a snapshot was already loaded: loading "
				  "is only allowed before the VM exists");
		else
			vmm_api_route(&pb->vm, req, resp);
		return;
	}
	if (is_load && strcmp(req->method, "PUT") == 0) {
		load(pb, req, resp);
	} else if (strcmp(req->path, "/") == 0 && strcmp(req->method, "GET") == 0) {
		api_ok(resp, json_pack("{s:s, s:s, s:s, s:s}", "app_name", "cvisor", "id",
				       "anonymous-instance", "state", "Not started", "vmm_version",
				       CVISOR_VERSION));
	} else {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "there is no VM yet: %s %s needs one (this "
			  "cvisor-vmm was started without --kernel; PUT /snapshot/load makes one)",
			  req->method, req->path);
	}
}

/* The API thread locks itself down like a normal VM's, once the loaded VM runs. */
static int thread_hook(void *ctx)
{
	struct preboot *pb = ctx;
	if (!atomic_load(&pb->loaded))
		return 0;
	return vm_sandbox_api_start(&pb->vm);
}

/* Waits for the load or a terminating signal (sfd); -1 with err (128+N) on a signal. */
static int wait_for_load(struct preboot *pb, int sfd, struct cv_error *err)
{
	for (;;) {
		struct pollfd fds[2] = { { .fd = pb->loaded_fd, .events = POLLIN },
					 { .fd = sfd, .events = POLLIN } };
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return cv_fail_errno(err, CV_EXIT_OSERR, "poll");
		}
		if (fds[0].revents & POLLIN)
			return 0;
		struct signalfd_siginfo si;
		if ((fds[1].revents & POLLIN) && read(sfd, &si, sizeof(si)) == sizeof(si))
			return cv_fail(err, 128 + (int)si.ssi_signo, "stopped by signal %s before a "
				       "VM was loaded", strsignal((int)si.ssi_signo));
	}
}

int vmm_preboot_run(const struct vm_config *base, struct cv_error *err)
{
	struct preboot *pb = calloc(1, sizeof(*pb));
	if (!pb)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	pb->base = base;
	pb->api.listen_fd = -1;
	pb->loaded_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pb->loaded_fd < 0) {
		free(pb);
		return cv_fail_errno(err, CV_EXIT_OSERR, "eventfd");
	}
	/*
	 * Blocked before the API thread starts, so that it inherits the mask and only a signalfd
	 * sees them: ours until the load, vm_run's after (a signal arriving in between stays
	 * pending for it).
	 */
	sigset_t handled, old;
	sigemptyset(&handled);
	sigaddset(&handled, SIGINT);
	sigaddset(&handled, SIGTERM);
	sigaddset(&handled, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &handled, &old);
	int sfd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
	int status = -1;
	api_server_on_thread_start(&pb->api, thread_hook, pb);
	if (sfd < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "signalfd");
	} else if (api_server_start(&pb->api, base->api_sock, route, pb, err) == 0 &&
		   wait_for_load(pb, sfd, err) == 0) {
		close(sfd);
		sfd = -1;
		status = vm_run(&pb->vm, err);
		if (status != CV_EXIT_OK)
			fprintf(stderr, "cvisor-vmm: %s\n", pb->vm.stop_reason);
	}
	if (sfd >= 0)
		close(sfd);
	api_server_stop(&pb->api);
	if (atomic_load(&pb->loaded))
		vm_destroy(&pb->vm);
	close(pb->loaded_fd);
	free(pb);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return status;
}
