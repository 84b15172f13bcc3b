/* Physical memory protection: TOR, NAPOT and NA4 regions denying S/U reads,
 * writes and executes (access faults 1/5/7), priority of lower-numbered
 * entries, partial matches, no-match semantics for S/U, M-mode exemption
 * unless locked, MPRV+MPP, and locked entries (M-mode enforcement, write
 * protection of pmpcfg/pmpaddr including the TOR base rule). */
#include "rt.h"

#define PMP_R 0x01UL
#define PMP_W 0x02UL
#define PMP_X 0x04UL
#define PMP_TOR 0x08UL
#define PMP_NA4 0x10UL
#define PMP_NAPOT 0x18UL
#define PMP_L 0x80UL

static u8 reg[4][4096] __attribute__((aligned(4096)));
#define TOR_BASE ((u64)reg[0])
#define TOR_TOP ((u64)reg[0] + 4096)
#define NAPOT_BASE ((u64)reg[1])
#define NA4_ADDR ((u64)reg[2] + 0x100)
#define LOCK_BASE ((u64)reg[3])

static void set_addr(int i, u64 v) {
  switch (i) {
#define C(n) case n: CSR_WRITE(pmpaddr##n, v); break;
    C(0) C(1) C(2) C(3) C(4) C(5) C(6) C(7) C(8) C(9) C(10) C(11) C(12) C(13) C(14) C(15)
#undef C
  }
}
static u64 get_addr(int i) {
  switch (i) {
#define C(n) case n: return CSR_READ(pmpaddr##n);
    C(0) C(1) C(2) C(3) C(4) C(5) C(6) C(7) C(8) C(9) C(10) C(11) C(12) C(13) C(14) C(15)
#undef C
  }
  return 0;
}
static u64 napot(u64 base, u64 size) { return (base >> 2) | ((size >> 3) - 1); }
static void sync(void) { asm volatile("sfence.vma" ::: "memory"); }

static u64 g_ld(u64 a) {
  u64 v = 0;
  asm volatile("lla t0, 1f\n sd t0, 0(%1)\n1: ld %0, 0(%2)" : "+r"(v) : "r"(&pc_mark), "r"(a) : "t0", "memory");
  return v;
}
static u64 g_lw(u64 a) {
  u64 v = 0;
  asm volatile("lla t0, 1f\n sd t0, 0(%1)\n1: lw %0, 0(%2)" : "+r"(v) : "r"(&pc_mark), "r"(a) : "t0", "memory");
  return v;
}
static u64 g_sd(u64 a) {
  asm volatile("lla t0, 1f\n sd t0, 0(%0)\n1: sd %1, 0(%2)" ::"r"(&pc_mark), "r"(0x5a5a5a5a5a5a5a5aUL), "r"(a)
               : "t0", "memory");
  return 0;
}
static u64 g_call(u64 a) {
  pc_mark = a;
  u64 r = ((u64(*)(void))a)();
  asm volatile("" ::: "memory");
  return r;
}
static u64 run(int mode, u64 (*fn)(u64), u64 a) {
  trap_reset();
  return enter_mode(mode, fn, a, 0);
}
static void ok_val(const char *name, u64 got, u64 exp) {
  expect_no_trap(name);
  check("  value", got, exp);
}
static u64 mprv_lw(u64 mpp, u64 a) {
  u64 v = 0;
  CSR_CLEAR(mstatus, MSTATUS_MPP);
  CSR_SET(mstatus, mpp << 11);
  asm volatile("lla t0, 1f\n sd t0, 0(%1)\n li t1, %3\n csrs mstatus, t1\n"
               "1: lw %0, 0(%2)\n csrc mstatus, t1"
               : "+r"(v) : "r"(&pc_mark), "r"(a), "i"(MSTATUS_MPRV) : "t0", "t1", "memory");
  return v;
}

int main(void) {
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4096; j += 8) *(u64 *)&reg[i][j] = 0x1000000000000000UL * (i + 1) + j;
  /* li a0, 77 ; ret in the X-only NAPOT page and the read-only TOR page */
  ((u32 *)reg[1])[0] = 0x04d00513;
  ((u32 *)reg[1])[1] = 0x00008067;
  ((u32 *)reg[0])[0] = 0x04d00513;
  ((u32 *)reg[0])[1] = 0x00008067;
  asm volatile("fence.i" ::: "memory");

  /* entry 15: allow everything (lowest priority) */
  set_addr(15, ~0UL >> 10);
  CSR_WRITE(pmpcfg2, (PMP_NAPOT | PMP_R | PMP_W | PMP_X) << 56);
  /* e0 OFF (TOR base), e1 TOR read-only, e2 NAPOT 4K execute-only, e3 NA4 no access */
  set_addr(0, TOR_BASE >> 2);
  set_addr(1, TOR_TOP >> 2);
  set_addr(2, napot(NAPOT_BASE, 4096));
  set_addr(3, NA4_ADDR >> 2);
  u64 cfg0 = ((PMP_TOR | PMP_R) << 8) | ((PMP_NAPOT | PMP_X) << 16) | (PMP_NA4 << 24);
  CSR_WRITE(pmpcfg0, cfg0);
  sync();
  puts_("[readback]\n");
  check("pmpcfg0", CSR_READ(pmpcfg0), cfg0);
  check("pmpcfg2", CSR_READ(pmpcfg2), (PMP_NAPOT | PMP_R | PMP_W | PMP_X) << 56);
  check("pmpaddr0 (TOR base)", get_addr(0), TOR_BASE >> 2);
  check("pmpaddr1 (TOR top)", get_addr(1), TOR_TOP >> 2);
  check("pmpaddr2 (NAPOT 4K)", get_addr(2), napot(NAPOT_BASE, 4096));
  check("pmpaddr3 (NA4)", get_addr(3), NA4_ADDR >> 2);

  for (int m = PRV_U; m <= PRV_S; m++) {
    puts_("[mode ");
    puts_(mode_name[m]);
    puts_("]\n");
    ok_val("TOR R: load", run(m, g_ld, TOR_BASE + 0x10), 0x1000000000000010UL);
    ok_val("TOR R: load last dword", run(m, g_ld, TOR_TOP - 8), 0x1000000000000ff8UL);
    run(m, g_sd, TOR_BASE + 0x18);
    expect1("TOR R: store", 7, TOR_BASE + 0x18, 'M', m);
    run(m, g_call, TOR_BASE);
    expect1("TOR R: execute", 1, TOR_BASE, 'M', m);
    ok_val("NA4 page outside the NA4 word: load (entry 15)", run(m, g_ld, (u64)reg[2] + 0x200), 0x3000000000000200UL);
    ok_val("NAPOT X: execute", run(m, g_call, NAPOT_BASE), 77);
    run(m, g_ld, NAPOT_BASE + 0x20);
    expect1("NAPOT X: load", 5, NAPOT_BASE + 0x20, 'M', m);
    run(m, g_sd, NAPOT_BASE + 0xff8);
    expect1("NAPOT X: store", 7, NAPOT_BASE + 0xff8, 'M', m);
    run(m, g_lw, NA4_ADDR);
    expect1("NA4 none: lw", 5, NA4_ADDR, 'M', m);
    ok_val("NA4 none: lw of next word", run(m, g_lw, NA4_ADDR + 4), 0x30000000UL);
    ok_val("NA4 none: lw of previous word", run(m, g_lw, NA4_ADDR - 4), 0x30000000UL);
    run(m, g_ld, NA4_ADDR - 4);
    expect1("NA4 none: ld partially overlapping", 5, NA4_ADDR - 4, 'M', m);
    run(m, g_sd, NA4_ADDR);
    expect1("NA4 none: sd", 7, NA4_ADDR, 'M', m);
  }
  puts_("[M-mode, unlocked entries]\n");
  trap_reset();
  *(volatile u64 *)(TOR_BASE + 0x20) = 0x77;
  check("M store into TOR R region", *(volatile u64 *)(TOR_BASE + 0x20), 0x77);
  ok_val("M load NAPOT X region", g_ld(NAPOT_BASE + 8), 0x2000000000000008UL);
  ok_val("M load NA4 region", g_lw(NA4_ADDR), 0x100UL);
  trap_reset();
  g_ld(NA4_ADDR);
  expect1("M ld partially matching NA4 entry (fails even in M)", 5, NA4_ADDR, 'M', PRV_M);
  puts_("[MPRV]\n");
  trap_reset();
  mprv_lw(PRV_S, NAPOT_BASE + 0x30);
  expect1("M load MPRV=1 MPP=S of X-only region", 5, NAPOT_BASE + 0x30, 'M', PRV_M);
  trap_reset();
  mprv_lw(PRV_U, NA4_ADDR);
  expect1("M load MPRV=1 MPP=U of NA4 region", 5, NA4_ADDR, 'M', PRV_M);
  trap_reset();
  ok_val("M load MPRV=1 MPP=M", mprv_lw(PRV_M, NA4_ADDR), 0x100UL);
  CSR_CLEAR(mstatus, MSTATUS_MPRV | MSTATUS_MPP);

  puts_("[no matching entry]\n");
  /* only RAM is accessible to S/U: entry 15 covers 0x80000000..+128M */
  set_addr(15, napot(0x80000000UL, 0x8000000UL));
  sync();
  check("pmpaddr15 (NAPOT 128M)", get_addr(15), napot(0x80000000UL, 0x8000000UL));
  ok_val("S load RAM", run(PRV_S, g_ld, (u64)reg[2] + 0x208), 0x3000000000000208UL);
  run(PRV_S, g_lw, UART0 + 4);
  expect1("S load outside every entry (UART)", 5, UART0 + 4, 'M', PRV_S);
  run(PRV_U, g_sd, CLINT_MTIMECMP + 0x100);
  expect1("U store outside every entry (CLINT)", 7, CLINT_MTIMECMP + 0x100, 'M', PRV_U);
  puts_("M prints via UART outside every entry: ok\n");

  puts_("[locked entries]\n");
  /* e7: NAPOT over reg[3], locked read-only: applies to M too */
  set_addr(7, napot(LOCK_BASE, 4096));
  cfg0 |= (PMP_NAPOT | PMP_L | PMP_R) << 56;
  CSR_WRITE(pmpcfg0, cfg0);
  /* e8: OFF with the TOR base, e9: locked TOR read/write over reg[3] first half */
  set_addr(8, LOCK_BASE >> 2);
  set_addr(9, (LOCK_BASE + 2048) >> 2);
  u64 cfg2 = ((PMP_TOR | PMP_L | PMP_R | PMP_W) << 8) | ((PMP_NAPOT | PMP_R | PMP_W | PMP_X) << 56);
  CSR_WRITE(pmpcfg2, cfg2);
  sync();
  check("pmpcfg0 with locked entry 7", CSR_READ(pmpcfg0), cfg0);
  check("pmpcfg2 with locked TOR entry 9", CSR_READ(pmpcfg2), cfg2);
  trap_reset();
  ok_val("M load locked R region", g_ld(LOCK_BASE + 0x800), 0x4000000000000800UL);
  trap_reset();
  g_sd(LOCK_BASE + 0x808);
  expect1("M store locked R region", 7, LOCK_BASE + 0x808, 'M', PRV_M);
  trap_reset();
  g_call(LOCK_BASE);
  expect1("M execute locked R region", 1, LOCK_BASE, 'M', PRV_M);
  /* writes to locked entries are ignored */
  CSR_WRITE(pmpcfg0, cfg0 & ~(0xffUL << 56));
  check("pmpcfg0 after clearing locked byte", CSR_READ(pmpcfg0), cfg0);
  set_addr(7, 0x1234);
  check("pmpaddr7 (locked) after write", get_addr(7), napot(LOCK_BASE, 4096));
  set_addr(8, 0x1234);
  check("pmpaddr8 (base of locked TOR) after write", get_addr(8), LOCK_BASE >> 2);
  set_addr(9, 0x1234);
  check("pmpaddr9 (locked TOR) after write", get_addr(9), (LOCK_BASE + 2048) >> 2);
  /* unlocked entries can still change */
  CSR_WRITE(pmpcfg0, cfg0 & ~(0xffUL << 24));
  check("pmpcfg0 after clearing unlocked entry 3", CSR_READ(pmpcfg0), cfg0 & ~(0xffUL << 24));
  finish();
}
