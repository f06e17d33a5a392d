/*
 * The virtio-net backend: a Linux TAP interface, opened by name through /dev/net/tun or handed
 * over as an already open fd by a parent process. Frames are exchanged with read/write, each
 * preceded by the 12-byte virtio-net header when the TAP has IFF_VNET_HDR, which is how the
 * device passes checksum and segmentation offloads to the host kernel unchanged.
 *
 * The same struct also describes a test stand-in (a datagram socket pair): the device only does
 * TAP ioctls when is_tap is set.
 */
#ifndef CVISOR_VMM_NET_TAP_H
#define CVISOR_VMM_NET_TAP_H

#include <stdbool.h>
#include <net/if.h>

#include "error.h"

struct tap {
	int fd;                      /* non-blocking, close-on-exec */
	char ifname[IF_NAMESIZE];
	bool is_tap;                 /* a real TAP: TUNSETOFFLOAD applies */
	bool vnet_hdr;               /* every frame carries a 12-byte virtio_net_hdr */
	bool created;                /* TUNSETIFF created the interface (it vanishes with the fd) */
	unsigned offloads;           /* TUN_F_* the kernel accepted when probed */
};

/*
 * Attaches to the TAP interface `name`, creating it if it does not exist (which, like
 * attaching to one we do not own, needs CAP_NET_ADMIN). IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
 * header size 12, little-endian headers, receive offloads off until a driver asks.
 */
int tap_open(struct tap *t, const char *name, struct cv_error *err);

/*
 * Takes over an open fd that must be an attached TAP without packet information (TUNGETIFF).
 * A TAP opened without IFF_VNET_HDR works too, without offloads. The fd is owned from now on,
 * also on failure.
 */
int tap_adopt_fd(struct tap *t, int fd, struct cv_error *err);

/* Enables exactly the TUN_F_* receive offloads `flags` (no-op on a non-TAP stand-in). */
int tap_set_offload(struct tap *t, unsigned flags, struct cv_error *err);

void tap_close(struct tap *t);

#endif
