/*
 * Writes the seed corpus of the snapshot state file fuzz target (fuzz_snapshot.c): a valid
 * file shaped like what cvisor-vmm writes (shape with devices, VM, platform with a UART FIFO,
 * PCI, virtio and vCPU sections, END), the same with its checksums left to the harness to fix,
 * and damaged variants (truncated, wrong version, data after END, no shape).
 * Usage: fuzz-snapshot-seeds DIR
 */
#include <stdbool.h>

#include "seed_writer.h"

#define FIX_CRC 0x01

/* A whole file after the flags byte; `version` and `extra` make broken variants. */
static void file(struct seed *s, uint32_t version, bool shape_first, bool extra)
{
	seed_str(s, "CVISORSS");
	seed_u32(s, version);
	seed_u32(s, 0);
	struct seed p = { 0 };
	seed_lstr(&p, "0.1.0");
	seed_u32(&p, 1);
	seed_u64(&p, 256ULL << 20);
	seed_u64(&p, 256ULL << 20);
	seed_u32(&p, 0);
	seed_u32(&p, 1);
	seed_u32(&p, 2);
	seed_u32(&p, 2);
	seed_u32(&p, 1);
	seed_lstr(&p, "virtio-blk0");
	seed_u32(&p, 4);
	seed_u32(&p, 1);
	seed_lstr(&p, "virtio-rng");
	if (shape_first)
		seed_frame(s, 1, 0, &p);
	seed_reset(&p);
	/* CONFIG: PCI, rng, one disk, one NIC, vsock, balloon (config_state.c). */
	seed_u32(&p, 1);
	seed_u8(&p, 1);
	seed_u32(&p, 1);
	seed_lstr(&p, "root");
	seed_lstr(&p, "/img/root.ext4");
	seed_u8(&p, 0);
	seed_lstr(&p, "");
	seed_u32(&p, 1);
	seed_lstr(&p, "eth0");
	seed_lstr(&p, "tap0");
	uint8_t mac[6] = { 2, 0, 0, 0, 0, 1 };
	seed_bytes(&p, mac, sizeof(mac));
	seed_u8(&p, 1);
	seed_u32(&p, 3);
	seed_lstr(&p, "/run/v.sock");
	seed_u8(&p, 1);
	seed_u32(&p, 16);
	seed_u8(&p, 1);
	seed_u32(&p, 1);
	seed_u8(&p, 0);
	seed_frame(s, 7, 0, &p);
	seed_reset(&p);
	uint8_t blob[64] = { 0 };
	for (int i = 0; i < 5; i++) {   /* VM: irqchips, PIT, clock (short stand-ins) */
		seed_u32(&p, sizeof(blob));
		seed_bytes(&p, blob, sizeof(blob));
	}
	seed_frame(s, 2, 0, &p);
	seed_reset(&p);
	uint8_t uart[11] = { 0x01, 0x03, 0x0b, 0x60, 0xb0, 0, 1, 0, 0xc1, 0, 0 };
	seed_bytes(&p, uart, sizeof(uart));
	seed_u32(&p, 3);
	seed_str(&p, "abc");
	seed_u16(&p, 0);
	seed_u16(&p, 1);
	seed_frame(s, 4, 0, &p);
	seed_reset(&p);
	uint8_t cfg[256] = { 0xf4, 0x1a, 0x42, 0x10 };
	seed_u32(&p, sizeof(cfg));
	seed_bytes(&p, cfg, sizeof(cfg));
	seed_frame(s, 5, 1, &p);
	seed_reset(&p);                    /* KEYBOARD: command byte, no command, 2 bytes queued */
	seed_u8(&p, 0x45);
	seed_u8(&p, 0);
	seed_u8(&p, 0xed);
	seed_u32(&p, 2);
	seed_u8(&p, 0xfa);
	seed_u8(&p, 0x55);
	seed_u32(&p, 2);
	seed_u8(&p, 1);
	seed_u8(&p, 0);
	seed_frame(s, 8, 0, &p);
	seed_reset(&p);                    /* LIMITS: two limiters, one bucket of each in debt */
	seed_u32(&p, 2);
	for (unsigned i = 0; i < 4; i++) {
		seed_u8(&p, i != 3);
		seed_u64(&p, 1000 << i);
		seed_u64(&p, i == 0 ? 500 : 0);
		seed_u64(&p, 100);
		seed_u64(&p, i == 0 ? 200 : 0);
		seed_u64(&p, i == 1 ? (uint64_t)-300 : 700);
		seed_u64(&p, 12345);
	}
	seed_frame(s, 9, 0, &p);
	seed_reset(&p);
	seed_u32(&p, 2);
	seed_u32(&p, 1);
	seed_u64(&p, 1ULL << 32);
	seed_u64(&p, 1ULL << 32);
	seed_u8(&p, 0x0f);
	seed_frame(s, 6, 0, &p);
	seed_reset(&p);
	seed_u32(&p, 2900000);
	seed_u32(&p, 0);
	seed_frame(s, 3, 0, &p);
	if (!shape_first) {
		seed_reset(&p);
		seed_lstr(&p, "0.1.0");
		seed_frame(s, 1, 0, &p);
	}
	seed_reset(&p);
	seed_frame(s, 0x454e4421, 0, &p);
	if (extra)
		seed_frame(s, 2, 0, &p);
	free(p.b);
}

static int one(const char *dir, const char *name, uint8_t flags, uint32_t version,
	       bool shape_first, bool extra, size_t cut)
{
	struct seed s = { 0 };
	seed_u8(&s, flags);
	file(&s, version, shape_first, extra);
	return seed_save_cut(dir, name, &s, cut);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	int rc = 0;
	rc |= one(dir, "valid", 0, 1, true, false, 0);
	rc |= one(dir, "valid-fixcrc", FIX_CRC, 1, true, false, 0);
	rc |= one(dir, "truncated", 0, 1, true, false, 200);
	rc |= one(dir, "truncated-fixcrc", FIX_CRC, 1, true, false, 333);
	rc |= one(dir, "version2", 0, 2, true, false, 0);
	rc |= one(dir, "after-end", 0, 1, true, true, 0);
	rc |= one(dir, "no-shape", FIX_CRC, 1, false, false, 0);
	return rc ? 1 : 0;
}
