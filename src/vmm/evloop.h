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

#endif
