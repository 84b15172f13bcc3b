/* For the format-1 recording in tests/data: reads console lines and, for each, writes it to
 * the virtio-blk disk (sector n, and again across a sector boundary), reads the sector back
 * and prints it, then computes a little; "quit" ends with PASS. Drives virtio-mmio version 2
 * by polling (no interrupts). */
#include "rt.h"

#define BLK 0x10008000UL /* the first device is in the last slot, as on QEMU's virt */
#define R(off) (*(volatile u32 *)(BLK + (off)))

struct desc {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
};
static struct desc descs[8] __attribute__((aligned(4096)));
static volatile u16 avail[2 + 8] __attribute__((aligned(4096)));
static volatile u32 used[1 + 2 * 8] __attribute__((aligned(4096)));
static struct {
  u32 type, reserved;
  u64 sector;
} header;
static u8 buf[1024];
static volatile u8 status_byte;
static u16 next_avail;

static void put32(u32 off, u64 v) {
  R(off) = (u32)v;
  R(off + 4) = (u32)(v >> 32);
}

static void request(u32 type, u64 sector, u8 *data, u32 len) {
  header.type = type;
  header.sector = sector;
  descs[0] = (struct desc){(u64)&header, 16, 1, 1};
  descs[1] = (struct desc){(u64)data, len, (u16)(1 | (type == 0 ? 2 : 0)), 2};
  descs[2] = (struct desc){(u64)&status_byte, 1, 2, 0};
  status_byte = 0xff;
  avail[2 + next_avail % 8] = 0;
  asm volatile("fence rw, rw");
  avail[1] = ++next_avail;
  asm volatile("fence rw, rw");
  R(0x50) = 0;
  while ((u16)(used[0] >> 16) != next_avail) {
  }
  check("request status", status_byte, 0);
}

static int getch(void) {
  volatile u8 *u = (volatile u8 *)UART0;
  while (!(u[5] & 1)) {
  }
  return u[0];
}

int main(void) {
  check("magic", R(0), 0x74726976);
  check("device id", R(8), 2);
  R(0x70) = 1;
  R(0x70) = 3;
  R(0x24) = 1;
  R(0x20) = 1; /* VERSION_1 */
  R(0x70) = 3 | 8;
  check("features ok", R(0x70) & 8, 8);
  R(0x30) = 0;
  R(0x38) = 8;
  put32(0x80, (u64)descs);
  put32(0x90, (u64)avail);
  put32(0xa0, (u64)used);
  R(0x44) = 1;
  R(0x70) = 3 | 8 | 4;
  u64 acc = 1;
  for (u64 line = 0;; line++) {
    u32 n = 0;
    for (;;) {
      int c = getch();
      if (c == '\n' || n == 511) break;
      buf[n++] = (u8)c;
    }
    for (u32 i = n; i < 1024; i++) buf[i] = (u8)(line + i);
    if (n == 4 && buf[0] == 'q' && buf[1] == 'u' && buf[2] == 'i' && buf[3] == 't') break;
    request(1, line, buf, 512);
    request(1, 1000 + 3 * line, buf, 1024);
    for (u32 i = 0; i < 1024; i++) buf[i] = 0;
    request(0, line, buf, 512);
    puts_("line ");
    put_udec(line);
    puts_(": ");
    for (u32 i = 0; i < n; i++) putch(buf[i]);
    nl();
    for (u64 i = 0; i < 200000; i++) acc = acc * 6364136223846793005UL + i;
  }
  puts_("acc ");
  put_hex(acc);
  nl();
  finish();
  return 0;
}
