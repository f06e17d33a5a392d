/*
 * epoll I/O thread (see evloop.h).
 */
#include "evloop.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

int evloop_init(struct evloop *l, struct cv_error *err)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->pause_lock, NULL);
	pthread_cond_init(&l->pause_cond, NULL);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "epoll_create1");
	l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wake_fd < 0) {
		close(l->epfd);
		return cv_fail_errno(err, CV_EXIT_OSERR, "eventfd");
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &ev) < 0) {
		close(l->wake_fd);
		close(l->epfd);
		return cv_fail_errno(err, CV_EXIT_OSERR, "epoll_ctl");
	}
	return 0;
}

void evloop_destroy(struct evloop *l)
{
	evloop_stop(l);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	if (l->epfd >= 0)
		close(l->epfd);
	l->wake_fd = l->epfd = -1;
	pthread_mutex_destroy(&l->pause_lock);
	pthread_cond_destroy(&l->pause_cond);
}

int evloop_add(struct evloop *l, struct evloop_handler *h, uint32_t events, struct cv_error *err)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "epoll add fd %d", h->fd);
	return 0;
}

int evloop_modify(struct evloop *l, struct evloop_handler *h, uint32_t events,
		  struct cv_error *err)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "epoll modify fd %d", h->fd);
	return 0;
}

void evloop_remove(struct evloop *l, struct evloop_handler *h)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, h->fd, NULL);
}

/* Waits here while a pause is requested; evloop_pause returns once `parked` is set. */
static void barrier(struct evloop *l)
{
	pthread_mutex_lock(&l->pause_lock);
	if (l->pause_req && !l->stop) {
		l->parked = true;
		pthread_cond_broadcast(&l->pause_cond);
		while (l->pause_req && !l->stop)
			pthread_cond_wait(&l->pause_cond, &l->pause_lock);
		l->parked = false;
	}
	pthread_mutex_unlock(&l->pause_lock);
}

static void *loop_thread(void *arg)
{
	struct evloop *l = arg;
	/* Process signals belong to the main loop; the vCPU kick signal is not ours either. */
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (l->on_start && !l->on_start(l->on_start_ctx)) {
		/* Nothing will be served: a pause must not wait for this thread to park. */
		pthread_mutex_lock(&l->pause_lock);
		__atomic_store_n(&l->stop, true, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&l->pause_cond);
		pthread_mutex_unlock(&l->pause_lock);
		return NULL;
	}
	struct epoll_event evs[32];
	/* A pause requested before the thread started (a VM loaded paused) holds from the start. */
	barrier(l);
	while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
		int n = epoll_wait(l->epfd, evs, 32, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < n; i++) {
			struct evloop_handler *h = evs[i].data.ptr;
			if (!h) {
				uint64_t v;
				if (read(l->wake_fd, &v, sizeof(v)) < 0) {
					/* EAGAIN: already drained */
				}
				continue;
			}
			/* A pause stops dispatch here; the rest is reported again after it. */
			if (__atomic_load_n(&l->pause_req, __ATOMIC_ACQUIRE))
				break;
			h->fn(h->opaque, evs[i].events);
		}
		barrier(l);
	}
	return NULL;
}

void evloop_pause(struct evloop *l)
{
	pthread_mutex_lock(&l->pause_lock);
	__atomic_store_n(&l->pause_req, true, __ATOMIC_RELEASE);
	if (!l->running) {
		/* Not started yet: the thread parks at its first barrier, before any handler. */
		pthread_mutex_unlock(&l->pause_lock);
		return;
	}
	uint64_t one = 1;
	if (write(l->wake_fd, &one, sizeof(one)) < 0) {
		/* counter far from overflow */
	}
	while (!l->parked && !l->stop)
		pthread_cond_wait(&l->pause_cond, &l->pause_lock);
	pthread_mutex_unlock(&l->pause_lock);
}

void evloop_resume(struct evloop *l)
{
	pthread_mutex_lock(&l->pause_lock);
	__atomic_store_n(&l->pause_req, false, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&l->pause_cond);
	pthread_mutex_unlock(&l->pause_lock);
}

int evloop_start(struct evloop *l, const char *name, struct cv_error *err)
{
	/* Under the lock, so that evloop_pause either sees the thread coming or finds it parked. */
	pthread_mutex_lock(&l->pause_lock);
	l->running = true;
	int rc = pthread_create(&l->thread, NULL, loop_thread, l);
	if (rc)
		l->running = false;
	pthread_mutex_unlock(&l->pause_lock);
	if (rc) {
		errno = rc;
		return cv_fail_errno(err, CV_EXIT_OSERR, "start I/O thread");
	}
	pthread_setname_np(l->thread, name);
	return 0;
}

void evloop_stop(struct evloop *l)
{
	if (!l->running)
		return;
	pthread_mutex_lock(&l->pause_lock);
	__atomic_store_n(&l->stop, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&l->pause_cond);
	pthread_mutex_unlock(&l->pause_lock);
	uint64_t one = 1;
	if (write(l->wake_fd, &one, sizeof(one)) < 0) {
		/* the counter is far from overflow; nothing else can fail here */
	}
	pthread_join(l->thread, NULL);
	l->running = false;
}
