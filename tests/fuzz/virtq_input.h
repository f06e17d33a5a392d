/*
 * Layout of one input of the virtqueue fuzz target, shared by the target (fuzz_virtq.c) and the
 * seed generator (virtq_seeds.c). The whole input is also the guest memory image: it is copied to
 * guest physical address `image base` (0, or just below the 3-4 GiB hole with VQF_FAR), so the
 * header bytes double as ring bytes and the fuzzer controls every byte the rings can reach.
 */
#ifndef CVISOR_TESTS_FUZZ_VIRTQ_INPUT_H
#define CVISOR_TESTS_FUZZ_VIRTQ_INPUT_H

#include "layout.h"

/* Guest RAM of the target: 3 GiB below the hole and 64 KiB from 4 GiB. */
#define VQF_RAM_SIZE (LAYOUT_MMIO_HOLE + 0x10000ULL)
#define VQF_WINDOW 0x10000u                        /* image bytes used, at most */
#define VQF_FAR_BASE (LAYOUT_MMIO_HOLE - VQF_WINDOW)   /* image right below the hole */

/* Byte 0. */
#define VQF_SIZE_LOG_MASK 0x0f   /* queue size = 1 << (b & 15): 1 .. 32768 */
#define VQF_INDIRECT 0x10        /* negotiate VIRTIO_RING_F_INDIRECT_DESC */
#define VQF_EVENT_IDX 0x20       /* negotiate VIRTIO_RING_F_EVENT_IDX */
#define VQF_FAR 0x40             /* image (and rings) at VQF_FAR_BASE instead of 0 */
#define VQF_TOGGLE 0x80          /* switch kick requests off/on between pops */
/* Byte 1. */
#define VQF_UNPOP 0x01           /* unpop every chain and pop it again */
#define VQF_NOTIFY_EACH 0x02     /* ask virtq_should_notify after every push, not per round */
#define VQF_BUMPS_SHIFT 2        /* bits 2-4: rounds after the first, each moving avail->idx */
#define VQF_BUMPS_MASK 0x07
#define VQF_RAW_SIZE 0x20        /* queue size from VQF_OFF_RAW_SIZE (any value, even invalid) */

/* Byte offsets of the header fields (all little endian). */
#define VQF_OFF_DESC 2           /* u16: desc ring offset from the image base */
#define VQF_OFF_AVAIL 4          /* u16: avail ring offset */
#define VQF_OFF_USED 6           /* u16: used ring offset */
#define VQF_OFF_WRITTEN 8        /* u16: "bytes written" the device reports, times the pop count */
#define VQF_OFF_BUMPS 10         /* u8[7]: how far each later round moves avail->idx */
#define VQF_OFF_RAW_SIZE 17      /* u16 */
/*
 * Optional fill: writes `count` descriptors from a template into the image, so that long chains
 * and full tables cost the fuzzer a few header bytes instead of thousands of exact ones. Copy k
 * gets addr = template.addr + k * template.len and next = template.next + k.
 */
#define VQF_OFF_FILL 19          /* u8: VQF_FILL_* */
#define VQF_FILL_ON 0x01
#define VQF_FILL_LAST_ENDS 0x02  /* the last copy has NEXT cleared: the chain ends there */
#define VQF_OFF_FILL_AT 20       /* u16: image offset of the first copy */
#define VQF_OFF_FILL_COUNT 22    /* u16: copies, clipped to the image window */
#define VQF_OFF_FILL_DESC 24     /* 16 bytes: the template descriptor */
#define VQF_HEADER 40

#endif
