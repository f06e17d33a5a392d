/*
 * One cvisor-vmm process: the VM's setup, the VM once built, and what lives as long as the
 * process - the control API server, the logger, the metrics. Whatever configured the VM
 * (command line, --config-file, pre-boot API requests), instance_start builds and boots it the
 * same way: vmm_setup_finalize, vm_init, then the kernel (or the snapshot of --restore). The
 * main thread then runs it (instance_run) until the guest ends, while the API thread keeps
 * serving requests against the running VM.
 *
 * States (GET / "state"): "Not started" until InstanceStart, then "Running", or "Paused" while
 * PATCH /vm paused it.
 */
#ifndef CVISOR_VMM_INSTANCE_H
#define CVISOR_VMM_INSTANCE_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "http.h"
#include "load.h"
#include "logger.h"
#include "metrics.h"
#include "migrate/migrate.h"
#include "setup.h"
#include "snapshot/snapshot.h"
#include "vm.h"

#define INSTANCE_MAX_ID 64
#define INSTANCE_DEFAULT_ID "anonymous-instance"
/* The Firecracker API version whose requests cvisor accepts (GET /version). */
#define FC_API_VERSION "1.7.0"

struct vmm_instance {
	char id[INSTANCE_MAX_ID + 1];
	struct vmm_setup setup;
	/* Held by whoever reads or changes the setup or starts the VM (API or main thread). */
	pthread_mutex_t lock;
	struct vm *vm;               /* built VM; NULL before InstanceStart */
	_Atomic(struct vm *) running;   /* vm once started: what the API thread's hook reads */
	const char *restore_state, *restore_memory;   /* --restore: snapshot instead of kernel */
	/*
	 * PUT /snapshot/load: the request, set by the API thread only while it waits for the
	 * main thread to build the VM from it (load.h), and the device configuration the loaded
	 * VM points into.
	 */
	const struct load_request *load;
	struct snap_config load_cfg;
	/* --incoming: the VM is received from a live migration's source (migrate/migrate.h). */
	struct migrate_incoming_opts incoming;
	/*
	 * InstanceStart from the API: the API thread asks (start_requested, start_eventfd) and
	 * waits on start_cond; the main thread builds the VM - so that everything the VM owns is
	 * allocated and freed by the one thread, whose sandbox would refuse what glibc does when
	 * another thread's heap shrinks - and reports start_rc/start_err.
	 */
	int start_eventfd;
	pthread_cond_t start_cond;
	bool start_requested, start_done, main_waiting;
	int start_rc;
	struct cv_error start_err;

	struct api_server api;
	bool api_running;
	struct vmm_logger log;
	struct vmm_metrics metrics;
};

/* Defaults (vmm_setup_init); id NULL: "anonymous-instance". */
int instance_init(struct vmm_instance *in, const char *id, struct cv_error *err);
void instance_destroy(struct vmm_instance *in);

/*
 * Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (threads it starts later inherit
 * the mask) and returns them in set, for the signalfd that waits for a stop.
 */
void instance_block_stop_signals(sigset_t *set);
/* --id: 1..64 letters, digits, '-' or '_'. */
int instance_set_id(struct vmm_instance *in, const char *id, struct cv_error *err);

/* Serves the control API on path (pre-boot requests work from now on). */
int instance_api_start(struct vmm_instance *in, const char *path, struct cv_error *err);

/*
 * Builds and boots the VM from the setup. Main thread, with in->lock held. On failure nothing
 * is left half-built and the instance can be configured and started again.
 */
int instance_start(struct vmm_instance *in, struct cv_error *err);

/* InstanceStart on the API thread, with in->lock held: has the main thread start the VM. */
int instance_request_start(struct vmm_instance *in, struct cv_error *err);

/*
 * Main thread: waits for InstanceStart if the VM is not built yet (SIGINT/SIGTERM end the wait
 * with 128+N), then runs the VM to its end; returns the exit status (exitcodes.h).
 */
int instance_run(struct vmm_instance *in, struct cv_error *err);

/* The control API's routing function (api_setup.c); ctx is the instance. */
void instance_api_route(void *ctx, const struct api_request *req, struct api_response *resp);

/* PATCH /drives and /network-interfaces on the running VM (api_setup.c). */
int vm_replace_drive(struct vm *vm, unsigned disk, const char *path, const char *serial,
		     struct cv_error *err);
int vm_apply_rate_limiter(struct vm *vm, bool is_net, unsigned index,
			  const struct rate_limiter_config *a, const struct rate_limiter_config *b,
			  struct cv_error *err);

#endif
