/* Exceptions and privilege transitions in M, S and U mode: ecall causes,
 * illegal instructions (32-bit, compressed, CSR privilege, xRET, WFI),
 * ebreak, access faults, misaligned LR/AMO, delegation to S via medeleg,
 * mret/sret state transitions, TVM/TW/TSR, counter-enable traps. */
#include "rt.h"


static u64 run(int mode, u64 (*fn)(u64), u64 arg) {
  trap_reset();
  return enter_mode(mode, fn, arg, 0);
}

/* ---------------- guest functions (run in any mode) ---------------- */
static u64 g_ecall(u64 a) {
  asm volatile("li a7, 0\n lla t0, 1f\n sd t0, 0(%0)\n1: ecall" ::"r"(&pc_mark) : "t0", "a7", "memory");
  return 0;
}
static u64 g_illegal32(u64 a) { MARKED(".word 0xfe000033"); return 0; }
static u64 g_illegal16(u64 a) { MARKED(".half 0x0000"); return 0; }
static u64 g_illegal_clui(u64 a) { MARKED(".half 0x6501"); return 0; } /* c.lui a0,0 */
static u64 g_ebreak(u64 a) { MARKED(".option push\n .option norvc\n ebreak\n .option pop"); return 0; }
static u64 g_cebreak(u64 a) { MARKED("c.ebreak"); return 0; }
static u64 g_load(u64 a) { MARKED("ld t1, 0(%1)"); return 0; }
static u64 g_store(u64 a) { MARKED("sd t1, 0(%1)"); return 0; }
static u64 g_lr(u64 a) { MARKED("lr.w t1, (%1)"); return 0; }
static u64 g_amo(u64 a) { MARKED("amoadd.w t1, t1, (%1)"); return 0; }
static u64 g_fetch(u64 a) {
  pc_mark = a;
  ((void (*)(void))a)();
  asm volatile("" ::: "memory");
  return 1;
}
static u64 g_mret(u64 a) { MARKED("mret"); return 0; }
static u64 g_sret(u64 a) { MARKED("sret"); return 0; }
static u64 g_wfi(u64 a) { MARKED("wfi"); return 0; }
static u64 g_sfence(u64 a) { MARKED("sfence.vma"); return 0; }
static u64 g_rd_mstatus(u64 a) { MARKED("csrr t0, mstatus"); return 0; }
static u64 g_rd_sstatus(u64 a) { MARKED("csrr t0, sstatus"); return 0; }
static u64 g_rd_satp(u64 a) { MARKED("csrr t0, satp"); return 0; }
static u64 g_rd_mscratch(u64 a) { MARKED("csrr t0, mscratch"); return 0; }
static u64 g_wr_mhartid(u64 a) { MARKED("csrw mhartid, zero"); return 0; }
static u64 g_rs_mhartid(u64 a) { MARKED("csrrs t0, mhartid, zero\n csrrsi t0, mhartid, 0\n csrrc t0, mhartid, zero"); return 0; }
static u64 g_rd_cycle(u64 a) { MARKED("csrr t0, cycle"); return 0; }
static u64 g_rd_time(u64 a) { MARKED("csrr t0, time"); return 0; }
static u64 g_rd_instret(u64 a) { MARKED("csrr t0, instret"); return 0; }
static u64 g_rd_mcycle(u64 a) { MARKED("csrr t0, mcycle"); return 0; }
static u64 g_misaligned_ok(u64 a) {
  u64 v;
  asm volatile("sd %1, 3(%2)\n ld %0, 3(%2)" : "=&r"(v) : "r"(0x1122334455667788UL), "r"(a) : "memory");
  return v;
}

static u8 scratch[64] __attribute__((aligned(64)));

static void test_basic(void) {
  static const int modes[3] = {PRV_M, PRV_S, PRV_U};
  static const char *ecall_names[3] = {"ecall from M", "ecall from S", "ecall from U"};
  static const u64 ecall_causes[3] = {11, 9, 8};
  for (int i = 0; i < 3; i++) {
    int m = modes[i];
    run(m, g_ecall, 0);
    expect1(ecall_names[i], ecall_causes[i], 0, 'M', m);
  }
  for (int i = 0; i < 3; i++) {
    int m = modes[i];
    puts_("[mode ");
    puts_(mode_name[m]);
    puts_("]\n");
    run(m, g_illegal32, 0);
    expect1("illegal 0xfe000033", 2, 0xfe000033, 'M', m);
    run(m, g_illegal16, 0);
    expect1("illegal c.0x0000", 2, 0, 'M', m);
    run(m, g_illegal_clui, 0);
    expect1("illegal c.lui a0,0 (0x6501)", 2, 0x6501, 'M', m);
    run(m, g_ebreak, 0);
    expect1("ebreak", 3, pc_mark, 'M', m);
    run(m, g_cebreak, 0);
    expect1("c.ebreak", 3, pc_mark, 'M', m);
    run(m, g_load, 0);
    expect1("load from 0x0", 5, 0, 'M', m);
    run(m, g_store, 0);
    expect1("store to 0x0", 7, 0, 'M', m);
    run(m, g_load, 0x88000000UL);
    expect1("load past end of RAM", 5, 0x88000000UL, 'M', m);
    run(m, g_store, 0x88000010UL);
    expect1("store past end of RAM", 7, 0x88000010UL, 'M', m);
    run(m, g_fetch, 0);
    expect1("fetch from 0x0", 1, 0, 'M', m);
    run(m, g_fetch, 0x88000000UL);
    expect1("fetch past end of RAM", 1, 0x88000000UL, 'M', m);
    run(m, g_lr, (u64)scratch + 2);
    expect1("lr.w misaligned", 4, (u64)scratch + 2, 'M', m);
    /* misaligned AMO: must trap and leave memory unchanged; the spec's cause is 6,
     * QEMU 10 reports 4 (docs/qemu-departures.md, D2) */
    *(volatile u64 *)scratch = 0x0123456789abcdefUL;
    run(m, g_amo, (u64)scratch + 1);
    {
      int ok = trap_count == 1 && (trap_log[0].cause == 4 || trap_log[0].cause == 6) &&
               trap_log[0].tval == (u64)scratch + 1 && trap_log[0].epc == pc_mark;
      check("misaligned amoadd.w traps", ok, 1);
      departure("  misaligned amoadd.w cause", trap_log[0].cause == 6,
                "6, store/AMO address misaligned", "4, load address misaligned (D2)");
      check("  memory unchanged", *(volatile u64 *)scratch, 0x0123456789abcdefUL);
      trap_armed = 0;
    }
    check("misaligned ld/sd succeed", run(m, g_misaligned_ok, (u64)scratch), 0x1122334455667788UL);
    expect_no_trap("  misaligned ld/sd");
    run(m, g_wr_mhartid, 0);
    expect1("csrw mhartid (read-only)", 2, 0xf1401073, 'M', m);
    if (m == PRV_M) {
      run(m, g_rs_mhartid, 0);
      expect_no_trap("csrrs/csrrsi/csrrc mhartid with x0/0 (no write)");
    }
    if (m != PRV_M) {
      run(m, g_mret, 0);
      expect1("mret", 2, TVAL_ANY, 'M', m);
      departure("  mret mtval", trap_log[0].tval == 0x30200073,
                "the instruction, 0x30200073", "stale bits, not the instruction (D1)");
      run(m, g_rd_mstatus, 0);
      expect1("csrr mstatus", 2, CSRR_T0(0x300), 'M', m);
      run(m, g_rd_mscratch, 0);
      expect1("csrr mscratch", 2, CSRR_T0(0x340), 'M', m);
      run(m, g_rd_mcycle, 0);
      expect1("csrr mcycle", 2, CSRR_T0(0xb00), 'M', m);
    }
    if (m == PRV_U) {
      run(m, g_sret, 0);
      expect1("sret", 2, 0x10200073, 'M', m);
      run(m, g_rd_sstatus, 0);
      expect1("csrr sstatus", 2, CSRR_T0(0x100), 'M', m);
      run(m, g_rd_satp, 0);
      expect1("csrr satp", 2, CSRR_T0(0x180), 'M', m);
      run(m, g_wfi, 0);
      expect1("wfi (U, TW=0)", 2, 0x10500073, 'M', m);
      run(m, g_sfence, 0);
      expect1("sfence.vma", 2, 0x12000073, 'M', m);
    }
  }
}

/* ---- TVM / TW / TSR ---- */
static void test_tvm_tw_tsr(void) {
  puts_("[mstatus trap bits]\n");
  run(PRV_S, g_rd_satp, 0);
  expect_no_trap("S csrr satp, TVM=0");
  run(PRV_S, g_sfence, 0);
  expect_no_trap("S sfence.vma, TVM=0");
  CSR_SET(mstatus, MSTATUS_TVM);
  run(PRV_S, g_rd_satp, 0);
  expect1("S csrr satp, TVM=1", 2, CSRR_T0(0x180), 'M', PRV_S);
  run(PRV_S, g_sfence, 0);
  expect1("S sfence.vma, TVM=1", 2, 0x12000073, 'M', PRV_S);
  run(PRV_M, g_rd_satp, 0);
  expect_no_trap("M csrr satp, TVM=1");
  CSR_CLEAR(mstatus, MSTATUS_TVM);
  CSR_SET(mstatus, MSTATUS_TW);
  run(PRV_S, g_wfi, 0);
  expect1("S wfi, TW=1", 2, 0x10500073, 'M', PRV_S);
  run(PRV_U, g_wfi, 0);
  expect1("U wfi, TW=1", 2, 0x10500073, 'M', PRV_U);
  CSR_CLEAR(mstatus, MSTATUS_TW);
  CSR_SET(mstatus, MSTATUS_TSR);
  run(PRV_S, g_sret, 0);
  expect1("S sret, TSR=1", 2, 0x10200073, 'M', PRV_S);
  CSR_CLEAR(mstatus, MSTATUS_TSR);
}

/* ---- counter enables ---- */
static void test_counteren(void) {
  static u64 (*const fns[3])(u64) = {g_rd_cycle, g_rd_time, g_rd_instret};
  static const char *names[3] = {"cycle", "time", "instret"};
  puts_("[counter enables]\n");
  for (int c = 0; c < 3; c++) {
    for (int mce = 0; mce < 2; mce++)
      for (int sce = 0; sce < 2; sce++) {
        CSR_WRITE(mcounteren, mce << c);
        CSR_WRITE(scounteren, sce << c);
        for (int m = PRV_U; m <= PRV_S; m++) {
          if (m == PRV_S && sce) continue; /* scounteren irrelevant for S */
          run(m, fns[c], 0);
          int should_trap = m == PRV_S ? !mce : !(mce && sce);
          puts_(names[c]);
          puts_(" from ");
          puts_(mode_name[m]);
          puts_(" mcounteren=");
          putch('0' + mce);
          if (m == PRV_U) {
            puts_(" scounteren=");
            putch('0' + sce);
          }
          puts_(": ");
          int ok;
          if (trap_count == 0) {
            puts_("allowed");
            ok = !should_trap;
          } else {
            puts_("trap cause=");
            put_hexn(trap_log[0].cause);
            puts_(" tval=");
            put_hexn(trap_log[0].tval);
            ok = should_trap && trap_count == 1 && trap_log[0].cause == 2 &&
                 trap_log[0].tval == CSRR_T0(0xc00 + c) && trap_log[0].epc == pc_mark;
          }
          if (!ok) {
            puts_("  MISMATCH");
            rt_failures++;
          }
          nl();
          trap_armed = 0;
        }
      }
  }
  CSR_WRITE(mcounteren, 7);
  CSR_WRITE(scounteren, 7);
  run(PRV_M, g_rd_cycle, 0);
  expect_no_trap("M reads cycle regardless");
}

/* ---- delegation to S ---- */
static u64 g_sie_trap(u64 a) {
  /* S-mode: set SIE, take a delegated illegal-instruction trap, return sstatus */
  asm volatile("csrsi sstatus, 2");
  MARKED(".word 0xfe000033");
  return CSR_READ(sstatus);
}
static u64 g_s_then_u(u64 fn) {
  /* S-mode: sret into U-mode function fn (which exits via guest_return) */
  CSR_WRITE(sepc, fn);
  CSR_CLEAR(sstatus, MSTATUS_SPP);
  asm volatile("la ra, guest_return\n sret" ::: "ra", "memory");
  return 0;
}

static void test_delegation(void) {
  puts_("[delegation to S]\n");
  CSR_WRITE(stvec, (u64)_s_trap_entry);
  u64 deleg = (1UL << 2) | (1UL << 3) | (1UL << 8) | (1UL << 5) | (1UL << 7) | (1UL << 1);
  CSR_WRITE(medeleg, deleg);
  check("medeleg readback (delegated bits)", CSR_READ(medeleg) & deleg, deleg);
  CSR_WRITE(mcause, 0x5);
  run(PRV_U, g_illegal32, 0);
  expect1("U illegal -> S", 2, 0xfe000033, 'S', PRV_U);
  run(PRV_U, g_cebreak, 0);
  expect1("U c.ebreak -> S (stval = pc)", 3, pc_mark, 'S', PRV_U);
  run(PRV_U, g_ecall, 0);
  expect1("U ecall -> S", 8, 0, 'S', PRV_U);
  run(PRV_U, g_load, 0);
  expect1("U load 0x0 -> S", 5, 0, 'S', PRV_U);
  run(PRV_U, g_store, 0x88000008UL);
  expect1("U store past RAM -> S", 7, 0x88000008UL, 'S', PRV_U);
  run(PRV_U, g_fetch, 0x88000000UL);
  expect1("U fetch past RAM -> S", 1, 0x88000000UL, 'S', PRV_U);
  run(PRV_U, g_rd_sstatus, 0);
  expect1("U csrr sstatus -> S", 2, CSRR_T0(0x100), 'S', PRV_U);
  run(PRV_S, g_illegal16, 0);
  expect1("S illegal -> S", 2, 0, 'S', PRV_S);
  run(PRV_S, g_ecall, 0);
  expect1("S ecall (not delegated) -> M", 9, 0, 'M', PRV_S);
  run(PRV_M, g_illegal32, 0);
  expect1("M illegal (delegated) stays in M", 2, 0xfe000033, 'M', PRV_M);
  u64 ss = run(PRV_S, g_sie_trap, 0);
  expect1("S illegal with SIE=1 -> S", 2, 0xfe000033, 'S', PRV_S);
  u64 st = trap_log[0].status;
  check("  sstatus in handler: SIE", (st >> 1) & 1, 0);
  check("  sstatus in handler: SPIE", (st >> 5) & 1, 1);
  check("  sstatus in handler: SPP", (st >> 8) & 1, 1);
  check("  sstatus after sret: SIE", (ss >> 1) & 1, 1);
  check("  sstatus after sret: SPIE", (ss >> 5) & 1, 1);
  check("  sstatus after sret: SPP", (ss >> 8) & 1, 0);
  check("mcause untouched by S traps (still the M ecall)", CSR_READ(mcause), 9);
  /* S -> U via sret, then U traps are delegated back to S */
  run(PRV_S, g_s_then_u, (u64)g_illegal32);
  expect1("S sret->U, U illegal -> S", 2, 0xfe000033, 'S', PRV_U);
  CSR_WRITE(medeleg, 0);
  CSR_WRITE(stvec, 0);
}

/* ---- mret / sret state transitions ---- */
static u64 mret_self(u64 set) {
  u64 out;
  asm volatile(
      "li t1, %2\n csrc mstatus, t1\n csrs mstatus, %1\n"
      "la t1, 1f\n csrw mepc, t1\n mret\n"
      "1: csrr %0, mstatus\n csrci mstatus, 8"
      : "=&r"(out)
      : "r"(set), "i"(MSTATUS_MIE | MSTATUS_MPIE | MSTATUS_MPP)
      : "t1", "memory");
  return out & (MSTATUS_MIE | MSTATUS_MPIE | MSTATUS_MPP);
}
static u64 g_sret_self(u64 set) {
  u64 out;
  asm volatile(
      "li t1, %2\n csrc sstatus, t1\n csrs sstatus, %1\n"
      "la t1, 1f\n csrw sepc, t1\n sret\n"
      "1: csrr %0, sstatus\n csrci sstatus, 2"
      : "=&r"(out)
      : "r"(set), "i"(MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP)
      : "t1", "memory");
  return out & (MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP);
}

static void test_xret(void) {
  puts_("[xret transitions]\n");
  CSR_WRITE(mie, 0);
  check("mret MPP=M MPIE=1 MIE=0 -> MIE=1 MPIE=1 MPP=U",
        mret_self(MSTATUS_MPIE | MSTATUS_MPP), MSTATUS_MIE | MSTATUS_MPIE);
  check("mret MPP=M MPIE=0 MIE=1 -> MIE=0 MPIE=1 MPP=U",
        mret_self(MSTATUS_MIE | MSTATUS_MPP), MSTATUS_MPIE);
  u64 r = run(PRV_S, g_sret_self, MSTATUS_SPP | MSTATUS_SPIE);
  expect_no_trap("sret S->S");
  check("sret SPP=S SPIE=1 SIE=0 -> SIE=1 SPIE=1 SPP=U", r, MSTATUS_SIE | MSTATUS_SPIE);
  r = run(PRV_S, g_sret_self, MSTATUS_SPP | MSTATUS_SIE);
  check("sret SPP=S SPIE=0 SIE=1 -> SIE=0 SPIE=1 SPP=U", r, MSTATUS_SPIE);
  trap_armed = 0;
  run(PRV_S, g_s_then_u, (u64)g_ecall);
  expect1("sret SPP=U enters U (ecall)", 8, 0, 'M', PRV_U);
}

static u64 g_sstatus(u64 a) { return CSR_READ(sstatus); }
static void test_status_views(void) {
  puts_("[status views]\n");
  CSR_CLEAR(mstatus, MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_MPIE);
  u64 ms = CSR_READ(mstatus);
  check("mstatus.UXL", (ms >> 32) & 3, 2);
  check("mstatus.SXL", (ms >> 34) & 3, 2);
  CSR_SET(mstatus, MSTATUS_SUM | MSTATUS_MXR | MSTATUS_SPIE);
  u64 ss = run(PRV_S, g_sstatus, 0);
  expect_no_trap("S reads sstatus");
  check("sstatus in S (SIE|SPIE|SPP|SUM|MXR|UXL)",
        ss & (MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_SUM | MSTATUS_MXR | (3UL << 32)),
        MSTATUS_SUM | MSTATUS_MXR | MSTATUS_SPIE | (2UL << 32));
  check("sstatus hides MIE/MPIE/MPP/TVM/TW/TSR/MPRV",
        ss & (MSTATUS_MIE | MSTATUS_MPIE | MSTATUS_MPP | MSTATUS_TVM | MSTATUS_TW | MSTATUS_TSR | MSTATUS_MPRV), 0);
  CSR_CLEAR(mstatus, MSTATUS_SUM | MSTATUS_MXR | MSTATUS_SPIE | MSTATUS_MPIE);
  /* writes to sstatus only touch S fields */
  CSR_SET(sstatus, MSTATUS_MPIE | MSTATUS_SUM);
  check("csrs sstatus MPIE|SUM -> mstatus", CSR_READ(mstatus) & (MSTATUS_MPIE | MSTATUS_SUM), MSTATUS_SUM);
  CSR_CLEAR(mstatus, MSTATUS_SUM);
  /* sie/sip are views of mie/mip restricted to mideleg */
  CSR_WRITE(mideleg, 0);
  CSR_WRITE(mie, (1UL << IRQ_S_SOFT) | (1UL << IRQ_M_SOFT));
  check("sie with mideleg=0", CSR_READ(sie), 0);
  CSR_WRITE(mideleg, (1UL << IRQ_S_SOFT) | (1UL << IRQ_S_TIMER) | (1UL << IRQ_S_EXT));
  check("sie with mideleg=S-irqs", CSR_READ(sie), 1UL << IRQ_S_SOFT);
  CSR_WRITE(sie, (1UL << IRQ_S_TIMER));
  check("write sie -> mie", CSR_READ(mie), (1UL << IRQ_S_TIMER) | (1UL << IRQ_M_SOFT));
  CSR_WRITE(mie, 0);
  CSR_WRITE(mideleg, 0);
}

/* ---- WARL corners: mepc/sepc bit 0, misa ---- */
static void test_warl(void) {
  puts_("[WARL corners]\n");
  CSR_WRITE(mepc, 0x80001001UL);
  u64 v = CSR_READ(mepc);
  check("mepc bits 63..1 after writing 0x80001001", v & ~1UL, 0x80001000UL);
  departure("  mepc bit 0", (v & 1) == 0, "0, as IALIGN=16 requires", "1, as written (D3)");
  CSR_WRITE(sepc, 0x80001003UL);
  v = CSR_READ(sepc);
  check("sepc bits 63..1 after writing 0x80001003", v & ~1UL, 0x80001002UL);
  departure("  sepc bit 0", (v & 1) == 0, "0, as IALIGN=16 requires", "1, as written (D3)");
  u64 misa = CSR_READ(misa);
  check("misa without H: RV64 ACDFIMSU", misa & ~(1UL << 7), 0x800000000014112dUL);
  departure("  misa.H", !(misa & (1UL << 7)), "0, no hypervisor", "1, QEMU's hart has H (D5)");
}

int main(void) {
  pmp_allow_all();
  test_basic();
  test_tvm_tw_tsr();
  test_counteren();
  test_delegation();
  test_xret();
  test_status_views();
  test_warl();
  finish();
}
