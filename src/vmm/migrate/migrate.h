/*
 * Pre-copy live migration of a running VM to another cvisor-vmm over TCP
 * (docs/migration-stream.md has the protocol and the guarantees).
 *
 * Source side (source.c): migrate_start hands the job to the VM's migration thread, which
 * sends guest RAM in rounds while the guest runs - all of it, then what KVM's dirty log and the
 * VMM's own device writes (dirty.c) say changed - until what is left fits the downtime budget
 * at the measured bandwidth (or a round limit is hit); then it pauses the VM, sends the rest
 * and the snapshot state (vCPUs, devices, platform: the snapshot code's own encoding), and
 * hands over: the destination says READY, the source says GO, the destination runs and says
 * RESUMED, and only then does the source VM end (exit status CV_EXIT_MIGRATED). Any failure
 * before GO resumes the source as it was; a connection lost after GO leaves the outcome
 * unknown, and the source stays paused rather than risk two copies running.
 *
 * Destination side (dest.c): migrate_incoming accepts one connection, builds the VM with the
 * shape the source announces and the device options of its own command line, and receives
 * everything; vm_run then starts it and sends RESUMED.
 */
#ifndef CVISOR_VMM_MIGRATE_MIGRATE_H
#define CVISOR_VMM_MIGRATE_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct vm;
struct vm_config;

#define MIGRATE_DEFAULT_DOWNTIME_MS 50
#define MIGRATE_DEFAULT_MAX_ROUNDS 30
#define MIGRATE_STALL_ROUNDS 5       /* rounds without the dirty set shrinking: stop trying */
#define MIGRATE_IO_TIMEOUT_MS 10000   /* a peer silent this long (link down) has failed */

enum migrate_state {
	MIGRATE_NONE,        /* never started */
	MIGRATE_SETUP,       /* connecting, handshake */
	MIGRATE_ACTIVE,      /* pre-copy rounds, guest running */
	MIGRATE_STOP_COPY,   /* guest paused: last pages and state */
	MIGRATE_COMPLETED,   /* the destination runs the guest; this VM ends */
	MIGRATE_FAILED,      /* gave up before the switch; the guest runs here as before */
	MIGRATE_CANCELLED,   /* cancelled by the API before the switch; the guest runs here */
	MIGRATE_UNKNOWN,     /* connection lost after GO: the guest may run there; paused here */
};

struct migrate_params {
	char destination[128];       /* tcp:HOST:PORT */
	uint64_t downtime_ms;        /* budget for the paused phase (0: default) */
	uint64_t max_bandwidth;      /* bytes/s, 0 unlimited */
	uint32_t max_rounds;         /* pre-copy rounds before forcing the switch (0: default) */
};

struct migrate_stats {
	enum migrate_state state;
	char error[CV_ERROR_MAX + 256];   /* why it failed / is unknown */
	uint32_t rounds;             /* pre-copy rounds finished */
	uint64_t bytes_sent;
	uint64_t pages_sent;         /* data pages (zero pages are sent as ranges) */
	uint64_t zero_pages;
	uint64_t dirty_pages;        /* dirty set left after the last harvest */
	double dirty_rate;           /* pages/s dirtied during the last round */
	double bandwidth;            /* bytes/s of the last round */
	double expected_downtime_ms; /* dirty set at that bandwidth */
	double total_ms;             /* since start (final once done) */
	double downtime_ms;          /* paused until the destination said RESUMED */
	double setup_ms;
	const char *switch_reason;   /* why pre-copy ended: "converged", "no progress", "max rounds" */
};

const char *migrate_state_name(enum migrate_state s);

/* Starts migrating (returns at once); refused while a migration runs or after one completed. */
int migrate_start(struct vm *vm, const struct migrate_params *p, struct cv_error *err);
/* Asks a running migration to stop before the switch; in state unknown, resumes the guest here
 * (the operator asserts the destination does not run it). */
int migrate_cancel(struct vm *vm, struct cv_error *err);
void migrate_get(struct vm *vm, struct migrate_stats *out);
/* Starts the migration thread now, before the VMM's threads lock down (vm_run calls it). */
int migrate_thread_prepare(struct vm *vm, struct cv_error *err);
/* Stops the migration thread and frees everything (vm_destroy calls it). */
void migrate_destroy(struct vm *vm);
/* True while the migration holds the VM paused: PATCH /vm Resumed must not resume it. */
bool migrate_holds_pause(struct vm *vm);

/*
 * Destination: listens on `address` (tcp:HOST:PORT) unless listen_fd >= 0 is given, accepts one
 * connection, reads the source's machine shape into cfg (vCPUs, memory, transport; given
 * --cpus/--memory must agree), builds the VM with vm_init and receives memory and state. On
 * success the VM is ready for vm_run, which runs it and acknowledges (vm->migrate_ack_fd).
 */
struct migrate_incoming_opts {
	const char *address;
	int listen_fd;
	bool cpus_given, memory_given;
	bool quiet;                  /* no progress on stderr */
};
/* *built: vm_init was called (vm_destroy is then needed, whatever the result). */
int migrate_incoming(struct vm *vm, struct vm_config *cfg, const struct migrate_incoming_opts *o,
		     bool *built, struct cv_error *err);
/* vm_run, once every vCPU thread started: tells the source the guest runs here. */
void migrate_incoming_resumed(struct vm *vm);

/* Listening socket for tcp:HOST:PORT (port 0: any; *port gets the one chosen). */
int migrate_listen(const char *address, unsigned *port, struct cv_error *err);

#endif
