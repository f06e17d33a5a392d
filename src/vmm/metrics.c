/*
 * Metrics collection (see metrics.h). Everything is read from counters the vCPU loop and the
 * devices keep anyway; device counters are copied under the device lock.
 */
#include "metrics.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "vcpu.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "vm.h"

void vmm_metrics_init(struct vmm_metrics *m)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	m->fd = -1;
	m->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
}

int vmm_metrics_open(struct vmm_metrics *m, const char *path, struct cv_error *err)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return cv_fail_errno(err, CV_EXIT_IOERR, "metrics: open '%s'", path);
	pthread_mutex_lock(&m->lock);
	if (m->fd >= 0)
		close(m->fd);
	m->fd = fd;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void vmm_metrics_destroy(struct vmm_metrics *m)
{
	if (m->fd >= 0)
		close(m->fd);
	if (m->statm_fd >= 0)
		close(m->statm_fd);
	m->fd = m->statm_fd = -1;
	pthread_mutex_destroy(&m->lock);
}

static uint64_t rss_bytes(struct vmm_metrics *m)
{
	char buf[128];
	if (m->statm_fd < 0)
		return 0;
	ssize_t n = pread(m->statm_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	unsigned long long size, resident;
	if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
		return 0;
	return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static json_t *vcpus_json(struct vm *vm)
{
	json_t *arr = json_array();
	for (unsigned i = 0; arr && i < vm->created_vcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		uint64_t io = atomic_load(&v->stats[VCPU_STAT_IO]);
		uint64_t mmio = atomic_load(&v->stats[VCPU_STAT_MMIO]);
		uint64_t intr = atomic_load(&v->stats[VCPU_STAT_INTR]);
		uint64_t other = atomic_load(&v->stats[VCPU_STAT_OTHER]);
		json_array_append_new(arr, json_pack(
			"{s:i, s:{s:I, s:I, s:I, s:I, s:I}, s:I}", "id", (int)i, "exits",
			"io", (json_int_t)io, "mmio", (json_int_t)mmio, "intr", (json_int_t)intr,
			"other", (json_int_t)other, "total", (json_int_t)(io + mmio + intr + other),
			"run_time_us", (json_int_t)(atomic_load(&v->run_ns) / 1000)));
	}
	return arr;
}

static json_t *device_json(struct vm_virtio *v)
{
	struct virtio_dev *d = v->dev;
	json_t *o = json_pack("{s:s}", "name", d->name);
	if (!o)
		return NULL;
	switch (d->ops->device_id) {
	case VIRTIO_ID_BLOCK: {
		struct virtio_blk *b = v->owner;
		pthread_mutex_lock(&d->lock);
		struct virtio_blk_stats s = b->stats;
		pthread_mutex_unlock(&d->lock);
		json_object_set_new(o, "kind", json_string("block"));
		json_object_set_new(o, "read_count", json_integer((json_int_t)s.reads));
		json_object_set_new(o, "read_bytes", json_integer((json_int_t)s.read_bytes));
		json_object_set_new(o, "write_count", json_integer((json_int_t)s.writes));
		json_object_set_new(o, "write_bytes", json_integer((json_int_t)s.written_bytes));
		json_object_set_new(o, "flush_count", json_integer((json_int_t)(s.flushes + s.flushes_ignored)));
		json_object_set_new(o, "discard_count", json_integer((json_int_t)s.discards));
		json_object_set_new(o, "errors", json_integer((json_int_t)(s.ioerr + s.unsupp)));
		break;
	}
	case VIRTIO_ID_NET: {
		struct net_stats s;
		virtio_net_get_stats(v->owner, &s);
		json_object_set_new(o, "kind", json_string("net"));
		json_object_set_new(o, "rx_packets_count", json_integer((json_int_t)s.rx_packets));
		json_object_set_new(o, "rx_bytes_count", json_integer((json_int_t)s.rx_bytes));
		json_object_set_new(o, "rx_dropped", json_integer((json_int_t)s.rx_dropped));
		json_object_set_new(o, "tx_packets_count", json_integer((json_int_t)s.tx_packets));
		json_object_set_new(o, "tx_bytes_count", json_integer((json_int_t)s.tx_bytes));
		json_object_set_new(o, "tx_dropped", json_integer((json_int_t)s.tx_dropped));
		json_object_set_new(o, "errors",
				    json_integer((json_int_t)(s.rx_errors + s.tx_errors)));
		break;
	}
	default: {
		static const struct { unsigned id; const char *kind; } kinds[] = {
			{ VIRTIO_ID_RNG, "entropy" }, { VIRTIO_ID_BALLOON, "balloon" },
			{ VIRTIO_ID_VSOCK, "vsock" },
		};
		const char *kind = "virtio";
		for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
			if (kinds[i].id == d->ops->device_id)
				kind = kinds[i].kind;
		json_object_set_new(o, "kind", json_string(kind));
	}
	}
	/* Every device: whether its driver runs, and whether it hit a fatal driver error. */
	pthread_mutex_lock(&d->lock);
	bool running = virtio_dev_running(d), broken = d->status & VIRTIO_STATUS_NEEDS_RESET;
	pthread_mutex_unlock(&d->lock);
	json_object_set_new(o, "driver_ok", json_boolean(running));
	json_object_set_new(o, "needs_reset", json_boolean(broken));
	return o;
}

json_t *vmm_metrics_json(struct vmm_metrics *m, struct vm *vm)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	json_t *o = json_pack("{s:I, s:{s:I, s:I, s:I}, s:{s:I, s:I}}",
			      "utc_timestamp_ms",
			      (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, "vmm",
			      "rss_bytes", (json_int_t)rss_bytes(m), "uptime_ms",
			      (json_int_t)(vm && vm->started_ns ?
					   (cv_monotonic_ns() - vm->started_ns) / 1000000 : 0),
			      "unhandled_io",
			      (json_int_t)(vm ? atomic_load(&vm->unhandled_io) : 0),
			      "api", "requests", (json_int_t)atomic_load(&m->api_requests),
			      "errors", (json_int_t)atomic_load(&m->api_errors));
	if (!o)
		return NULL;
	json_t *devs = json_array();
	if (vm)
		for (unsigned i = 0; devs && i < vm->n_virtio; i++)
			json_array_append_new(devs, device_json(vm->virtio[i]));
	json_object_set_new(o, "vcpus", vm && vm->vcpus ? vcpus_json(vm) : json_array());
	json_object_set_new(o, "devices", devs);
	return o;
}

int vmm_metrics_flush(struct vmm_metrics *m, struct vm *vm, struct cv_error *err)
{
	pthread_mutex_lock(&m->lock);
	if (m->fd < 0) {
		pthread_mutex_unlock(&m->lock);
		return cv_fail(err, CV_EXIT_USAGE, "no metrics file is configured (PUT /metrics)");
	}
	json_t *o = vmm_metrics_json(m, vm);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	int rc = 0;
	if (!text) {
		rc = cv_fail(err, CV_EXIT_OSERR, "metrics: out of memory");
	} else {
		size_t len = strlen(text);
		text[len] = '\n';    /* json_dumps' terminator becomes the line end */
		if (write(m->fd, text, len + 1) != (ssize_t)(len + 1))
			rc = cv_fail_errno(err, CV_EXIT_IOERR, "metrics: write");
		else
			m->flushes++;
		free(text);
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}
