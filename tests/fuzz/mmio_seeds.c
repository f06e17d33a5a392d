/*
 * Writes the seed corpus of the virtio-mmio fuzz target (mmio_input.h): Linux's probe and
 * bring-up register by register, the shortcut bring-up with buffers posted and kicked, the
 * shared line raised and acknowledged from both devices, config space at every width, odd
 * widths and offsets on the control registers, and a reset while buffers are in flight. The
 * fuzzer derives the hostile variants.
 * Usage: fuzz-mmio-seeds DIR
 */
#include "mmio_input.h"
#include "seed_writer.h"

/* Register offsets and status bits (virtio 1.2, 4.2.2 and 2.1), as the target's ops take them. */
enum {
	MAGIC = 0x000, DEV_FEAT = 0x010, DEV_FEAT_SEL = 0x014, DRV_FEAT = 0x020, DRV_FEAT_SEL = 0x024,
	QSEL = 0x030, QNUM_MAX = 0x034, QNUM = 0x038, QREADY = 0x044, QNOTIFY = 0x050,
	ISR = 0x060, ACK = 0x064, STATUS = 0x070, QDESC = 0x080, QDRIVER = 0x090, QDEVICE = 0x0a0,
	SHM_SEL = 0x0ac, SHM_LEN = 0x0b0, GEN = 0x0fc, CONFIG = 0x100,
};
#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

static void w32(struct seed *s, uint8_t dev, uint16_t off, uint32_t v)
{
	seed_u8(s, MMF_OP_WRITE32);
	seed_u8(s, dev);
	seed_u16(s, off);
	seed_u32(s, v);
}

static void rd(struct seed *s, uint8_t dev, uint16_t off, uint8_t width_code)
{
	seed_u8(s, MMF_OP_READ);
	seed_u8(s, dev);
	seed_u16(s, off);
	seed_u8(s, width_code);
}

static void wn(struct seed *s, uint8_t dev, uint16_t off, uint8_t width_code, uint64_t v)
{
	seed_u8(s, MMF_OP_WRITE);
	seed_u8(s, dev);
	seed_u16(s, off);
	seed_u8(s, width_code);
	seed_u64(s, v);
}

static void up(struct seed *s, uint8_t dev, uint8_t size_log)
{
	seed_u8(s, MMF_OP_UP);
	seed_u8(s, dev);
	seed_u8(s, size_log);
}

static void post(struct seed *s, uint8_t dev, uint16_t idx, uint32_t len, uint8_t flags)
{
	seed_u8(s, MMF_OP_POST);
	seed_u8(s, dev);
	seed_u16(s, idx);
	seed_u32(s, len);
	seed_u8(s, flags);
}

static void irq(struct seed *s, uint8_t dev, uint8_t what)
{
	seed_u8(s, MMF_OP_IRQ);
	seed_u8(s, dev);
	seed_u8(s, what);
}

static void pump(struct seed *s)
{
	seed_u8(s, MMF_OP_PUMP);
}

/* vm_probe, virtio_dev_probe and vm_setup_vq of Linux's virtio_mmio, for one queue. */
static void linux_probe(struct seed *s, uint8_t dev)
{
	rd(s, dev, MAGIC, 2);
	rd(s, dev, 0x004, 2);
	rd(s, dev, 0x008, 2);
	w32(s, dev, STATUS, 0);
	w32(s, dev, STATUS, S_ACK);
	w32(s, dev, STATUS, S_ACK | S_DRIVER);
	w32(s, dev, DEV_FEAT_SEL, 1);
	rd(s, dev, DEV_FEAT, 2);
	w32(s, dev, DEV_FEAT_SEL, 0);
	rd(s, dev, DEV_FEAT, 2);
	w32(s, dev, DRV_FEAT_SEL, 1);
	w32(s, dev, DRV_FEAT, 1);                    /* VERSION_1 */
	w32(s, dev, DRV_FEAT_SEL, 0);
	w32(s, dev, DRV_FEAT, 0);
	w32(s, dev, STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
	rd(s, dev, STATUS, 2);
	uint32_t ring = MMF_RING_GPA + 0x8000;
	w32(s, dev, QSEL, 0);
	rd(s, dev, QREADY, 2);
	rd(s, dev, QNUM_MAX, 2);
	w32(s, dev, QNUM, 16);
	w32(s, dev, QDESC, ring);
	w32(s, dev, QDESC + 4, 0);
	w32(s, dev, QDRIVER, ring + 0x1000);
	w32(s, dev, QDRIVER + 4, 0);
	w32(s, dev, QDEVICE, ring + 0x2000);
	w32(s, dev, QDEVICE + 4, 0);
	w32(s, dev, QREADY, 1);
	w32(s, dev, STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
	rd(s, dev, STATUS, 2);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	struct seed s = { 0 };
	int rc = 0;

	seed_reset(&s);
	linux_probe(&s, 1);
	w32(&s, 1, QNOTIFY, 0);
	pump(&s);
	w32(&s, 1, QSEL, 1);
	w32(&s, 1, QREADY, 0);
	w32(&s, 1, STATUS, 0);
	rc |= seed_save(dir, "linux-probe", &s);

	seed_reset(&s);
	up(&s, 0, 4);
	post(&s, 0, 0, 64, 2);                       /* device-writable */
	post(&s, 0, 1, 4096, 2);
	pump(&s);
	rd(&s, 0, ISR, 2);
	w32(&s, 0, ACK, 1);
	up(&s, 1, 8);
	post(&s, 1, 3, 16, 0);
	post(&s, 1, 4, 16, 1);                       /* a chain into the next descriptor */
	pump(&s);
	rd(&s, 1, ISR, 2);
	w32(&s, 1, ACK, 3);
	rc |= seed_save(dir, "up-post", &s);

	seed_reset(&s);
	irq(&s, 0, 1);
	irq(&s, 2, 1);
	rd(&s, 0, ISR, 2);
	w32(&s, 0, ACK, 2);
	rd(&s, 2, ISR, 2);
	w32(&s, 2, ACK, 2);
	rd(&s, 2, GEN, 2);
	irq(&s, 1, 1);
	w32(&s, 1, STATUS, 0);
	rc |= seed_save(dir, "shared-line", &s);

	seed_reset(&s);
	for (uint8_t code = 0; code < 4; code++) {
		rd(&s, 1, CONFIG, code);
		rd(&s, 1, CONFIG + 8, code);
		wn(&s, 1, CONFIG + 4, code, 0x1122334455667788ULL);
		rd(&s, 1, 0xffc, code);
		wn(&s, 1, 0xffc, code, ~0ULL);
	}
	rc |= seed_save(dir, "config", &s);

	seed_reset(&s);
	for (uint8_t code = 0; code < 4; code++) {
		rd(&s, 2, MAGIC, code);
		rd(&s, 2, MAGIC + 1, code);
		wn(&s, 2, STATUS, code, 0);
		wn(&s, 2, QNOTIFY, code, 0);
	}
	w32(&s, 2, STATUS, 0x100);
	w32(&s, 2, QSEL, 0xffffffffu);
	w32(&s, 2, QREADY, 1);
	w32(&s, 2, SHM_SEL, 3);
	rd(&s, 2, SHM_LEN, 2);
	w32(&s, 2, 0x1050, 0);                       /* reaches the next window */
	w32(&s, 2, 0xfff0, 0);                       /* reaches nothing */
	rc |= seed_save(dir, "odd-accesses", &s);

	seed_reset(&s);
	up(&s, 2, 6);
	post(&s, 2, 0, 256, 2);
	post(&s, 2, 1, 256, 4);                      /* an indirect table of garbage */
	w32(&s, 2, STATUS, 0);
	pump(&s);
	up(&s, 2, 2);
	w32(&s, 2, QSEL, 0);
	w32(&s, 2, QNUM, 8);
	w32(&s, 2, QREADY, 0);
	irq(&s, 2, 0);
	rc |= seed_save(dir, "reset-in-flight", &s);

	free(s.b);
	return rc ? 1 : 0;
}
