/*
 * Pausing and resuming a running VM (see vm.h). A paused VM is one whose guest-visible state
 * no thread changes: vCPU threads wait in vm_vcpu_park, outside KVM_RUN and after their last
 * exit completed (KVM finishes a pending port/MMIO read on the KVM_RUN that returns EINTR, so
 * the registers are consistent); the I/O thread waits at its evloop barrier; every virtio
 * device has finished the work it had in flight (virtio-blk waits for its io_uring). That is
 * the state a snapshot captures.
 */
#include <errno.h>
#include <sys/ioctl.h>
#include <time.h>

#include "vcpu.h"
#include "virtio/device.h"
#include "vm.h"

void vm_vcpu_park(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->pause_cond);
	while (atomic_load(&vm->pause_requested) && !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	vm->parked--;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

static unsigned started_vcpus(const struct vm *vm)
{
	unsigned n = 0;
	for (unsigned i = 0; i < vm->created_vcpus; i++)
		n += vm->vcpus[i].thread_started;
	return n;
}

static void deadline_in(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_nsec += ms * 1000000L;
	ts->tv_sec += ts->tv_nsec / 1000000000L;
	ts->tv_nsec %= 1000000000L;
}

/* Parks every running vCPU thread; false if the VM started stopping meanwhile. */
static bool park_vcpus(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->pause_requested, true);
	bool ok = true;
	while (vm->parked < started_vcpus(vm)) {
		if (atomic_load(&vm->stopping)) {
			ok = false;
			break;
		}
		/*
		 * Kick every time round: a kick that lands between a thread's check and its
		 * KVM_RUN is covered by immediate_exit, but not on kernels without it.
		 */
		for (unsigned i = 0; i < vm->created_vcpus; i++)
			vcpu_kick(&vm->vcpus[i]);
		struct timespec ts;
		deadline_in(&ts, 10);
		pthread_cond_timedwait(&vm->pause_cond, &vm->pause_lock, &ts);
	}
	pthread_mutex_unlock(&vm->pause_lock);
	return ok;
}

static void unpark_vcpus(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->pause_requested, false);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

/* vm_pause with control_lock held. */
static int pause_locked(struct vm *vm, struct cv_error *err)
{
	if (atomic_load(&vm->paused))
		return 0;
	if (!park_vcpus(vm)) {
		unpark_vcpus(vm);
		return cv_fail(err, CV_EXIT_SOFTWARE, "the VM is shutting down");
	}
	/* vCPUs first: a kick they sent is then already in the I/O thread's eventfds. */
	evloop_pause(&vm->loop);
	for (unsigned i = 0; i < vm->n_virtio; i++) {
		struct virtio_dev *d = vm->virtio[i]->dev;
		pthread_mutex_lock(&d->lock);
		if (d->ops->quiesce)
			d->ops->quiesce(d);
		pthread_mutex_unlock(&d->lock);
	}
	/*
	 * Tell each guest kvmclock that it was stopped, so the guest's soft-lockup watchdog does
	 * not take the pause for a hung CPU. EINVAL: the guest does not use kvmclock.
	 */
	for (unsigned i = 0; i < vm->created_vcpus; i++)
		if (ioctl(vm->vcpus[i].fd, KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
			break;
	atomic_store(&vm->paused, true);
	return 0;
}

int vm_pause(struct vm *vm, struct cv_error *err)
{
	pthread_mutex_lock(&vm->control_lock);
	int rc = pause_locked(vm, err);
	pthread_mutex_unlock(&vm->control_lock);
	return rc;
}

static void resume_locked(struct vm *vm)
{
	if (atomic_load(&vm->paused)) {
		evloop_resume(&vm->loop);
		unpark_vcpus(vm);
		atomic_store(&vm->paused, false);
	}
}

bool vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->control_lock);
	bool ok = !vm->resume_hold;
	if (ok)
		resume_locked(vm);
	pthread_mutex_unlock(&vm->control_lock);
	return ok;
}

int vm_hold_pause(struct vm *vm, bool *was_paused, struct cv_error *err)
{
	pthread_mutex_lock(&vm->control_lock);
	*was_paused = atomic_load(&vm->paused);
	int rc = pause_locked(vm, err);
	if (rc == 0)
		vm->resume_hold = true;
	pthread_mutex_unlock(&vm->control_lock);
	return rc;
}

void vm_release_pause(struct vm *vm, bool resume)
{
	pthread_mutex_lock(&vm->control_lock);
	vm->resume_hold = false;
	if (resume)
		resume_locked(vm);
	pthread_mutex_unlock(&vm->control_lock);
}

void vm_start_paused(struct vm *vm)
{
	pthread_mutex_lock(&vm->control_lock);
	atomic_store(&vm->pause_requested, true);
	evloop_pause(&vm->loop);     /* not running yet: the thread will park before any handler */
	/* As for any pause: the guest's watchdogs must not count the wait as a hang. */
	for (unsigned i = 0; i < vm->created_vcpus; i++)
		if (ioctl(vm->vcpus[i].fd, KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
			break;
	atomic_store(&vm->paused, true);
	pthread_mutex_unlock(&vm->control_lock);
}
