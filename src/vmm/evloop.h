/*
 * The VM's I/O thread: an epoll loop that runs device work off the vCPU threads. Queue
 * notifications arrive as ioeventfds (KVM signals them without leaving the kernel), backends
 * (TAP, sockets, io_uring completions) as their own fds; each fd has one handler. Handlers run
 * only on the loop thread, one at a time.
 */
#ifndef CVISOR_VMM_EVLOOP_H
#define CVISOR_VMM_EVLOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

typedef void (*evloop_fn)(void *opaque, uint32_t events);

struct evloop_handler {
	int fd;
	evloop_fn fn;
	void *opaque;
};

struct evloop {
	int epfd;
	int wake_fd;                 /* eventfd: stop request */
	pthread_t thread;
	bool running;
	bool stop;
	/* Pause barrier: the loop thread waits here between events while pause_req is set. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	bool pause_req;
	bool parked;
	/*
	 * Called first on the loop thread, before any handler (cvisor-vmm sandboxes the thread
	 * there); false ends the thread. Set after evloop_init, before evloop_start.
	 */
	bool (*on_start)(void *ctx);
	void *on_start_ctx;
};

int evloop_init(struct evloop *l, struct cv_error *err);
void evloop_destroy(struct evloop *l);

/*
 * Watches fd for `events` (EPOLLIN...). The handler struct must stay valid until removed or the
 * loop is destroyed; callers embed it in the object that owns the fd.
 */
int evloop_add(struct evloop *l, struct evloop_handler *h, uint32_t events, struct cv_error *err);
int evloop_modify(struct evloop *l, struct evloop_handler *h, uint32_t events,
		  struct cv_error *err);
void evloop_remove(struct evloop *l, struct evloop_handler *h);

int evloop_start(struct evloop *l, const char *name, struct cv_error *err);
void evloop_stop(struct evloop *l);

/*
 * Stops the loop thread between two handlers and returns once it waits: no handler runs until
 * evloop_resume. Events that arrive meanwhile stay pending (handlers are level-triggered). On a
 * loop not started yet it returns at once and the thread, once started, waits at the barrier
 * before running any handler. Never call from the loop thread itself.
 */
void evloop_pause(struct evloop *l);
void evloop_resume(struct evloop *l);

#endif
