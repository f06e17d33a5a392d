/*
 * TAP backend setup (see tap.h): TUNSETIFF/TUNGETIFF, the virtio header size and byte order,
 * and a probe of which receive offloads this kernel's TAP accepts.
 */
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "net/vnet.h"

/* The virtio header layout, byte order and a clean offload state for a vnet-header TAP. */
static int setup_vnet_hdr(struct tap *t, struct cv_error *err)
{
	int sz = VNET_HDR_LEN;
	if (ioctl(t->fd, TUNSETVNETHDRSZ, &sz) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "TAP %s: set virtio header size", t->ifname);
	/* VERSION_1 headers are little-endian whatever the host; only matters on big-endian. */
	int le = 1;
	if (ioctl(t->fd, TUNSETVNETLE, &le) < 0 && errno != EINVAL)
		return cv_fail_errno(err, CV_EXIT_OSERR, "TAP %s: set little-endian headers",
				     t->ifname);
	/*
	 * Probe the receive offloads, richest set first: kernels differ (UFO came and went).
	 * What sticks here is what the device may offer the driver.
	 */
	static const unsigned sets[] = {
		TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO,
		TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
		TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
		TUN_F_CSUM,
	};
	t->offloads = 0;
	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		if (ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)sets[i]) == 0) {
			t->offloads = sets[i];
			break;
		}
	}
	/* Until a driver negotiates offloads, the kernel must hand us finished frames. */
	if (ioctl(t->fd, TUNSETOFFLOAD, 0UL) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "TAP %s: clear offloads", t->ifname);
	return 0;
}

static int set_fd_flags(struct tap *t, struct cv_error *err)
{
	int fl = fcntl(t->fd, F_GETFL);
	if (fl < 0 || fcntl(t->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "TAP %s: make non-blocking", t->ifname);
	int fdfl = fcntl(t->fd, F_GETFD);
	if (fdfl < 0 || fcntl(t->fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "TAP %s: set close-on-exec", t->ifname);
	return 0;
}

int tap_open(struct tap *t, const char *name, struct cv_error *err)
{
	memset(t, 0, sizeof(*t));
	t->fd = -1;
	if (!name[0] || strlen(name) >= IF_NAMESIZE)
		return cv_fail(err, CV_EXIT_USAGE, "TAP name '%s' must have 1 to %d characters", name,
			       IF_NAMESIZE - 1);
	memcpy(t->ifname, name, strlen(name) + 1);
	bool existed = if_nametoindex(name) != 0;
	t->fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (t->fd < 0)
		return cv_fail_errno(err, errno == ENOENT ? CV_EXIT_UNAVAILABLE : CV_EXIT_OSERR,
				     "TAP %s: open /dev/net/tun", name);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, name, strlen(name));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(t->fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		tap_close(t);
		errno = e;
		if (e == EPERM)
			return cv_fail_errno(err, CV_EXIT_OSERR,
					     "TAP %s: %s it needs CAP_NET_ADMIN%s", name,
					     existed ? "attaching to" : "creating",
					     existed ? " or ownership of the TAP" : "");
		if (e == EBUSY)
			return cv_fail_errno(err, CV_EXIT_OSERR,
					     "TAP %s: already attached elsewhere (single-queue TAP)",
					     name);
		if (e == EINVAL)
			return cv_fail_errno(err, CV_EXIT_USAGE,
					     "TAP %s: exists but is not a single-queue TAP device", name);
		return cv_fail_errno(err, CV_EXIT_OSERR, "TAP %s: TUNSETIFF", name);
	}
	t->is_tap = true;
	t->vnet_hdr = true;
	t->created = !existed;
	if (set_fd_flags(t, err) < 0 || setup_vnet_hdr(t, err) < 0) {
		tap_close(t);
		return -1;
	}
	return 0;
}

int tap_adopt_fd(struct tap *t, int fd, struct cv_error *err)
{
	memset(t, 0, sizeof(*t));
	t->fd = fd;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	if (fcntl(fd, F_GETFD) < 0) {
		t->fd = -1;
		return cv_fail_errno(err, CV_EXIT_USAGE, "fd=%d", fd);
	}
	if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
		int e = errno;
		tap_close(t);
		errno = e;
		return cv_fail_errno(err, CV_EXIT_USAGE, "fd=%d is not an attached TAP (TUNGETIFF)",
				     fd);
	}
	memcpy(t->ifname, ifr.ifr_name, sizeof(t->ifname) - 1);
	if ((ifr.ifr_flags & (IFF_TUN | IFF_TAP)) != IFF_TAP) {
		tap_close(t);
		return cv_fail(err, CV_EXIT_USAGE, "fd=%d: %s is a TUN (layer 3), not a TAP", fd,
			       ifr.ifr_name);
	}
	if (!(ifr.ifr_flags & IFF_NO_PI)) {
		tap_close(t);
		return cv_fail(err, CV_EXIT_USAGE,
			       "fd=%d: TAP %s was opened without IFF_NO_PI", fd, ifr.ifr_name);
	}
	t->is_tap = true;
	t->vnet_hdr = ifr.ifr_flags & IFF_VNET_HDR;
	if (set_fd_flags(t, err) < 0 || (t->vnet_hdr && setup_vnet_hdr(t, err) < 0)) {
		tap_close(t);
		return -1;
	}
	return 0;
}

int tap_set_offload(struct tap *t, unsigned flags, struct cv_error *err)
{
	if (!t->is_tap || !t->vnet_hdr)
		return 0;
	if (ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)flags) < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "TAP %s: TUNSETOFFLOAD 0x%x", t->ifname,
				     flags);
	return 0;
}

void tap_close(struct tap *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}
