/*
 * One virtual machine: the context every part of cvisor-vmm hangs off (no other mutable global
 * state). vm_init builds the machine - KVM VM, RAM, in-kernel interrupt controllers and PIT,
 * devices, ACPI and MP tables, vCPUs - and vm_load_kernel puts a kernel in it; vm_run starts the
 * vCPU threads and runs the console/signal loop until the guest powers off, resets, crashes or
 * is stopped, and returns the exit status that outcome maps to (exitcodes.h).
 */
#ifndef CVISOR_VMM_VM_H
#define CVISOR_VMM_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "boot/boot.h"
#include "console.h"
#include "devices.h"
#include "devices/acpi_pm.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/uart.h"
#include "evloop.h"
#include "http.h"
#include "irq.h"
#include "kvm.h"
#include "memory.h"
#include "pci/pci.h"
#include "sandbox.h"

#define VM_MAX_VCPUS 254     /* xAPIC IDs 0..253; the IOAPIC takes the next ID */
#define VM_MIN_MEMORY_MIB 32

struct vcpu;
struct virtio_balloon;

struct vm_config {
	unsigned cpus;
	uint64_t memory_bytes;
	struct console_config console;
	struct device_config devices;
	enum vmm_sandbox_mode sandbox;   /* seccomp + capabilities after setup (sandbox.h) */
	bool track_dirty_pages;      /* log dirty pages, for diff snapshots */
	bool migratable;             /* a control API may ask for a live migration (migrate/) */
};

struct vm {
	struct kvm_system kvm;
	int fd;
	struct guest_memory mem;
	struct io_bus pio;
	struct io_bus mmio;
	struct vcpu *vcpus;
	unsigned n_vcpus;
	unsigned created_vcpus;

	struct console console;
	struct uart uart;
	struct i8042 i8042;
	struct acpi_pm acpi_pm;
	uint64_t rsdp_gpa;

	struct evloop loop;          /* the I/O thread */
	struct irq_routing irq;
	struct pci_bus pci;
	struct vm_virtio *virtio[VM_MAX_VIRTIO];
	unsigned n_virtio;
	struct virtio_mmio_bus *virtio_mmio; /* NULL: the virtio devices are on PCI */
	struct virtio_balloon *balloon;      /* NULL unless configured */
	/*
	 * Called on the main thread every tick_ms while the VM runs (0: never) - the metrics
	 * file's periodic flush. Set before vm_run.
	 */
	void (*tick)(void *ctx);
	void *tick_ctx;
	unsigned tick_ms;
	uint64_t started_ns;         /* CLOCK_MONOTONIC when vm_run started the vCPUs */
	/*
	 * The device configuration the VM was built with (strings owned by the caller of
	 * vm_init), each NIC's MAC filled in as created: snapshots record it so that a bare
	 * cvisor-vmm can rebuild the machine (PUT /snapshot/load).
	 */
	struct device_config devcfg;
	enum vmm_sandbox_mode sandbox;
	atomic_bool sandbox_armed;   /* every thread started: the API thread may lock down */

	/* Stop protocol: the first vm_request_stop wins (under stop_lock) and wakes the main loop. */
	pthread_mutex_t stop_lock;
	atomic_bool stopping;
	int stop_status;
	char stop_reason[256];
	int stop_eventfd;
	int uart_drained_eventfd;

	/*
	 * Pause protocol (pause.c): vCPU threads park outside KVM_RUN on pause_cond, the I/O thread
	 * at its evloop barrier. control_lock serialises pause, resume and snapshots.
	 */
	pthread_mutex_t control_lock;
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	atomic_bool pause_requested;
	unsigned parked;             /* vCPU threads waiting in vm_vcpu_park */
	atomic_bool paused;
	bool resume_hold;            /* a migration holds the pause (under control_lock) */
	struct vm_migration *migration;  /* source side of live migration (migrate/), or NULL */
	int migrate_ack_fd;          /* incoming migration: say RESUMED here once running, or -1 */
	bool migratable;             /* vm_config.migratable: the migration thread is prepared */
	/* Restored VM: guest RAM privately maps this memory file (st_dev, st_ino); else 0, 0. */
	uint64_t mem_file_dev, mem_file_ino;
	/*
	 * Guest RAM equalled a memory file when dirty tracking last started afresh (a snapshot was
	 * written, or the VM was restored), so a diff snapshot has something to apply onto.
	 */
	bool has_diff_base;

	bool trace_io;            /* CVISOR_VMM_TRACE=io: log accesses no device claimed */
	atomic_uint_fast64_t unhandled_io;
};

int vm_init(struct vm *vm, const struct vm_config *cfg, struct cv_error *err);
int vm_load_kernel(struct vm *vm, const struct boot_config *bc, struct boot_plan *plan,
		   struct cv_error *err);

/* Runs the VM to its end; returns its exit status, with vm->stop_reason saying why. */
int vm_run(struct vm *vm, struct cv_error *err);

void vm_destroy(struct vm *vm);

/* Ends the VM with `status` (first caller wins). Safe from any thread. */
void vm_request_stop(struct vm *vm, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Pause (pause.c): every vCPU leaves KVM_RUN with its last exit completed and waits; the I/O
 * thread stops at its barrier; devices finish work in flight (virtio_dev_ops.quiesce); each
 * vCPU's kvmclock is told it was stopped (KVM_KVMCLOCK_CTRL). Guest memory and device state
 * are then stable until vm_resume. Both are idempotent; not callable from vCPU or I/O threads.
 */
int vm_pause(struct vm *vm, struct cv_error *err);
/* False (nothing done) while a live migration holds the VM paused (vm_hold_pause). */
bool vm_resume(struct vm *vm);
/*
 * For live migration: pause and forbid vm_resume until vm_release_pause, which resumes the VM
 * if `resume` (and it was running before the hold). *was_paused tells whether it was paused.
 */
int vm_hold_pause(struct vm *vm, bool *was_paused, struct cv_error *err);
void vm_release_pause(struct vm *vm, bool resume);
static inline bool vm_is_paused(struct vm *vm)
{
	return atomic_load(&vm->paused);
}
/*
 * Marks a VM that has not run yet as paused: vm_run then starts its vCPU and I/O threads
 * parked, and vm_resume lets them go (a snapshot loaded with resume_vm false).
 */
void vm_start_paused(struct vm *vm);
/* Called by a vCPU thread whose KVM_RUN returned EINTR while a pause is requested. */
void vm_vcpu_park(struct vm *vm);

/* Drives an IOAPIC/PIC input line (KVM_IRQ_LINE). */
void vm_set_irq_line(struct vm *vm, unsigned gsi, int level);

#endif
