/*
 * Layout of one input of the virtio-mmio fuzz target, shared by the target (fuzz_mmio.c) and the
 * seed generator (mmio_seeds.c): a sequence of operations, each an op byte and its fields (little
 * endian; missing bytes read as zero). The guest's register accesses go through the MMIO bus
 * decoder at any offset and width; the other ops stand in for the I/O thread, the device side
 * and guest RAM, so every register path, the queues behind them and the interrupt line are
 * reachable.
 */
#ifndef CVISOR_TESTS_FUZZ_MMIO_INPUT_H
#define CVISOR_TESTS_FUZZ_MMIO_INPUT_H

#define MMF_DEVICES 3            /* 0 virtio-rng, 1 and 2 recording devices; 0 and 2 share a line */
#define MMF_RING_GPA 0x10000u    /* where MMF_OP_UP lays out queue q: + q * 0x4000 */
#define MMF_MEM_WINDOW 0x100000u /* MMF_OP_MEM writes below this guest address */

enum {
	/* u8 dev, u16 offset (from the device's window; may reach past it), u32 value */
	MMF_OP_WRITE32 = 0,
	/* u8 dev, u16 offset, u8 width code (1 << (c & 3) bytes) */
	MMF_OP_READ,
	/* u8 dev, u16 offset, u8 width code, u64 value */
	MMF_OP_WRITE,
	/* run the I/O thread's ready handlers (queue notifications) */
	MMF_OP_PUMP,
	/* u8 dev, u8 what: bit 0 config change, else "used buffers" on queue what >> 1 */
	MMF_OP_IRQ,
	/* u16 gpa / 16, u8 len, len bytes: guest RAM contents (rings, descriptors) */
	MMF_OP_MEM,
	/* u8 dev, u8 queue size log2: the Linux driver's whole bring-up, as a shortcut */
	MMF_OP_UP,
	/* u8 dev, u16 desc index, u32 len, u8 flags: post one buffer on queue 0 of a device MMF_OP_UP
	 * brought up (descriptor + avail entry), then kick through QueueNotify */
	MMF_OP_POST,
	MMF_OPS
};

#endif
