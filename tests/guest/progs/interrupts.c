/* Interrupts: machine timer (CLINT mtimecmp) and software (msip) interrupts,
 * vectored mtvec, priority order when several are pending, delegation of
 * supervisor software/timer/external interrupts to S (set from M via mip),
 * global-enable rules per privilege, wfi wake-up with MIE=0, mip/mie masks.
 * Only causes and ordering are printed, never time values. */
#include "rt.h"

#define MIP_SSIP (1UL << IRQ_S_SOFT)
#define MIP_MSIP (1UL << IRQ_M_SOFT)
#define MIP_STIP (1UL << IRQ_S_TIMER)
#define MIP_MTIP (1UL << IRQ_M_TIMER)
#define MIP_SEIP (1UL << IRQ_S_EXT)
#define PLIC 0xc000000UL

static void msip(u32 v) { mmio_w32(CLINT_MSIP, v); }
static void timer_off(void) { mmio_w64(CLINT_MTIMECMP, ~0UL); }
static void timer_in(u64 ticks) { mmio_w64(CLINT_MTIMECMP, mmio_r64(CLINT_MTIME) + ticks); }

static void print_causes(const char *name, const u64 *exp, int n) {
  int ok = trap_count == n;
  puts_(name);
  puts_(":");
  for (int i = 0; i < trap_count; i++) {
    puts_(" ");
    putch(trap_log[i].to);
    puts_(":");
    put_hexn(trap_log[i].cause);
    if (i < n && trap_log[i].cause != exp[i]) ok = 0;
  }
  if (trap_count == 0) puts_(" none");
  if (!ok) {
    puts_("  MISMATCH, expected");
    for (int i = 0; i < n; i++) {
      puts_(" ");
      put_hexn(exp[i]);
    }
    rt_failures++;
  }
  nl();
  trap_armed = 0;
}

/* ---- vectored mode table: entry i records i in vector_hit, then jumps to
 * the common trap entry ---- */
volatile u64 vector_hit;
#define VEC(i)                                                  \
  "vec" #i ":\n csrrw sp, mscratch, sp\n sd t0, -8(sp)\n sd t1, -16(sp)\n" \
  " li t0, " #i "\n la t1, vector_hit\n sd t0, 0(t1)\n"          \
  " ld t0, -8(sp)\n ld t1, -16(sp)\n csrrw sp, mscratch, sp\n j _m_trap_entry\n"
asm(".text\n .option push\n .option norvc\n .balign 256\n .globl vec_table\n"
    "vec_table:\n j vec0\n j vec1\n j vec2\n j vec3\n j vec4\n j vec5\n j vec6\n j vec7\n"
    " j vec8\n j vec9\n j vec10\n j vec11\n" VEC(0) VEC(1) VEC(2) VEC(3) VEC(4) VEC(5) VEC(6) VEC(7)
    VEC(8) VEC(9) VEC(10) VEC(11) " .option pop\n");
extern char vec_table[];

static void wait_for_trap(void) {
  /* bounded: an emulator may implement wfi as a no-op */
  for (long i = 0; i < 5000000 && trap_count == 0; i++) asm volatile("wfi");
}

static u64 g_spin_sip(u64 a) {
  for (volatile int i = 0; i < 100; i++) {
  }
  return CSR_READ(sip);
}
static u64 g_enable_sie_spin(u64 a) {
  CSR_SET(sie, a);
  CSR_SET(sstatus, MSTATUS_SIE);
  for (volatile int i = 0; i < 100; i++) {
  }
  CSR_CLEAR(sstatus, MSTATUS_SIE);
  return 0;
}
static u64 g_spin(u64 a) {
  for (volatile int i = 0; i < 100; i++) {
  }
  return 0;
}

int main(void) {
  pmp_allow_all();
  CSR_WRITE(mie, 0);
  timer_off();
  msip(0);
  check("mip.MTIP after mtimecmp=-1", CSR_READ(mip) & MIP_MTIP, 0);
  check("mip.MSIP with msip=0", CSR_READ(mip) & MIP_MSIP, 0);

  puts_("[machine timer]\n");
  trap_reset();
  timer_in(2000);
  CSR_WRITE(mie, MIP_MTIP);
  CSR_SET(mstatus, MSTATUS_MIE);
  wait_for_trap();
  CSR_CLEAR(mstatus, MSTATUS_MIE);
  static const u64 e_mti[] = {CAUSE_INTR | 7};
  print_causes("timer interrupt", e_mti, 1);
  check("  mip.MTIP still pending", CSR_READ(mip) & MIP_MTIP, MIP_MTIP);
  check("  handler cleared mie.MTIE", CSR_READ(mie), 0);
  check("  mstatus.MPIE in handler", (trap_log[0].status >> 7) & 1, 1);
  check("  mstatus.MPP in handler", (trap_log[0].status >> 11) & 3, 3);
  timer_off();
  check("  mip.MTIP after mtimecmp=-1", CSR_READ(mip) & MIP_MTIP, 0);

  puts_("[machine software]\n");
  trap_reset();
  msip(1);
  check("mip.MSIP with msip=1", CSR_READ(mip) & MIP_MSIP, MIP_MSIP);
  check("msip readback", mmio_r32(CLINT_MSIP), 1);
  CSR_WRITE(mie, MIP_MSIP);
  CSR_SET(mstatus, MSTATUS_MIE);
  asm volatile("nop");
  CSR_CLEAR(mstatus, MSTATUS_MIE);
  static const u64 e_msi[] = {CAUSE_INTR | 3};
  print_causes("software interrupt", e_msi, 1);
  msip(0);
  check("mip.MSIP after msip=0", CSR_READ(mip) & MIP_MSIP, 0);
  CSR_SET(mip, MIP_MSIP | MIP_MTIP);
  check("csrs mip MSIP|MTIP has no effect", CSR_READ(mip) & (MIP_MSIP | MIP_MTIP), 0);

  puts_("[wfi with MIE=0]\n");
  trap_reset();
  msip(1);
  CSR_WRITE(mie, MIP_MSIP);
  asm volatile("wfi");
  print_causes("wfi returns without trapping", 0, 0);
  CSR_WRITE(mie, 0);
  msip(0);

  puts_("[vectored mtvec]\n");
  CSR_WRITE(mtvec, (u64)vec_table | 1);
  check("mtvec readback", CSR_READ(mtvec), (u64)vec_table | 1);
  vector_hit = 99;
  trap_reset();
  msip(1);
  CSR_WRITE(mie, MIP_MSIP);
  CSR_SET(mstatus, MSTATUS_MIE);
  asm volatile("nop");
  CSR_CLEAR(mstatus, MSTATUS_MIE);
  msip(0);
  print_causes("vectored software interrupt", e_msi, 1);
  check("  vector entry", vector_hit, 3);
  vector_hit = 99;
  trap_reset();
  timer_in(1000);
  CSR_WRITE(mie, MIP_MTIP);
  CSR_SET(mstatus, MSTATUS_MIE);
  wait_for_trap();
  CSR_CLEAR(mstatus, MSTATUS_MIE);
  timer_off();
  print_causes("vectored timer interrupt", e_mti, 1);
  check("  vector entry", vector_hit, 7);
  vector_hit = 99;
  trap_reset();
  asm volatile("ebreak");
  static const u64 e_brk[] = {3};
  print_causes("vectored mode exception", e_brk, 1);
  check("  vector entry (exceptions use base)", vector_hit, 0);
  CSR_WRITE(mtvec, (u64)_m_trap_entry);

  /* Priority. The spec order is MEI > MSI > MTI > SEI > SSI > STI. QEMU 10
   * takes the lowest-numbered pending interrupt instead (docs/qemu-departures.md,
   * D4): sets on which both orders agree are checked ({MSI, MTI, SEI}, {SSI, STI},
   * M-level before delegated S-level), and {MSI, SSI} prints which came first. */
  puts_("[priority]\n");
  trap_reset();
  msip(1);
  mmio_w64(CLINT_MTIMECMP, 0);
  CSR_SET(mip, MIP_SEIP);
  check("mip with MSIP MTIP SEIP pending", CSR_READ(mip) & 0xaaa, MIP_MSIP | MIP_MTIP | MIP_SEIP);
  CSR_WRITE(mie, MIP_MSIP | MIP_MTIP | MIP_SEIP);
  CSR_SET(mstatus, MSTATUS_MIE);
  asm volatile("nop\n nop\n nop\n nop");
  CSR_CLEAR(mstatus, MSTATUS_MIE);
  static const u64 e_prio1[] = {CAUSE_INTR | 3, CAUSE_INTR | 7, CAUSE_INTR | 9};
  print_causes("order (MSI MTI SEI)", e_prio1, 3);
  msip(0);
  timer_off();
  CSR_CLEAR(mip, MIP_SEIP);
  trap_reset();
  CSR_SET(mip, MIP_SSIP | MIP_STIP);
  CSR_WRITE(mie, MIP_SSIP | MIP_STIP);
  CSR_SET(mstatus, MSTATUS_MIE);
  asm volatile("nop\n nop\n nop\n nop");
  CSR_CLEAR(mstatus, MSTATUS_MIE);
  static const u64 e_prio2[] = {CAUSE_INTR | 1, CAUSE_INTR | 5};
  print_causes("order (SSI STI)", e_prio2, 2);
  CSR_CLEAR(mip, MIP_SSIP | MIP_STIP);
  check("mip after clearing", CSR_READ(mip) & 0xaaa, 0);
  /* {MSI, SSI}, both M-level: the spec takes MSI first, QEMU 10 SSI (D4) */
  trap_reset();
  msip(1);
  CSR_SET(mip, MIP_SSIP);
  CSR_WRITE(mie, MIP_MSIP | MIP_SSIP);
  CSR_SET(mstatus, MSTATUS_MIE);
  asm volatile("nop\n nop\n nop\n nop");
  CSR_CLEAR(mstatus, MSTATUS_MIE);
  {
    int both = trap_count == 2 && ((trap_log[0].cause | trap_log[1].cause) & 63) == 3;
    check("order (MSI SSI): both taken", both, 1);
    departure("  first of MSI and SSI", trap_log[0].cause == (CAUSE_INTR | 3), "MSI, as the spec orders",
              "SSI, lowest number first (D4)");
  }
  msip(0);
  CSR_CLEAR(mip, MIP_SSIP);
  CSR_WRITE(mie, 0);
  trap_armed = 0;
  /* M-level (MTI) before delegated S-level (SSI): both pending and enabled
   * when U-mode is entered (in U both levels are globally enabled) */
  CSR_WRITE(stvec, (u64)_s_trap_entry);
  CSR_WRITE(mideleg, MIP_SSIP);
  trap_reset();
  CSR_SET(mip, MIP_SSIP);
  mmio_w64(CLINT_MTIMECMP, 0);
  CSR_WRITE(mie, MIP_MTIP | MIP_SSIP);
  enter_mode(PRV_U, g_spin, 0, 0);
  static const u64 e_prio3[] = {CAUSE_INTR | 7, CAUSE_INTR | 1};
  print_causes("order in U (M-level MTI, then delegated SSI)", e_prio3, 2);
  check("  taken by M then S", trap_log[0].to == 'M' && trap_log[1].to == 'S', 1);
  timer_off();
  CSR_CLEAR(mip, MIP_SSIP);
  CSR_WRITE(mie, 0);
  CSR_WRITE(mideleg, 0);

  puts_("[delegation to S]\n");
  CSR_WRITE(stvec, (u64)_s_trap_entry);
  CSR_WRITE(mideleg, MIP_SSIP | MIP_STIP | MIP_SEIP);
  check("mideleg readback (S bits)", CSR_READ(mideleg) & 0xaaa, MIP_SSIP | MIP_STIP | MIP_SEIP);
  /* pending but S interrupts disabled in S (SIE=0): not taken */
  CSR_SET(mip, MIP_SSIP);
  CSR_WRITE(mie, MIP_SSIP);
  trap_reset();
  u64 sip = enter_mode(PRV_S, g_spin_sip, 0, 0);
  print_causes("S with SIE=0, SSIP pending", 0, 0);
  check("  sip seen in S", sip & 0x222, MIP_SSIP);
  /* enabled in S: taken by S */
  CSR_WRITE(mie, 0);
  trap_reset();
  enter_mode(PRV_S, g_enable_sie_spin, MIP_SSIP, 0);
  static const u64 e_ssi[] = {CAUSE_INTR | 1};
  print_causes("S with SIE=1, SSIP pending", e_ssi, 1);
  check("  taken by S", trap_log[0].to, 'S');
  check("  sstatus.SPP in handler", (trap_log[0].status >> 8) & 1, 1);
  check("  sstatus.SPIE in handler", (trap_log[0].status >> 5) & 1, 1);
  CSR_CLEAR(mip, MIP_SSIP);
  CSR_SET(mip, MIP_STIP);
  trap_reset();
  enter_mode(PRV_S, g_enable_sie_spin, MIP_STIP, 0);
  static const u64 e_sti[] = {CAUSE_INTR | 5};
  print_causes("S with SIE=1, STIP pending", e_sti, 1);
  check("  taken by S", trap_log[0].to, 'S');
  CSR_CLEAR(mip, MIP_STIP);
  /* in U, S-level interrupts are enabled regardless of SIE */
  CSR_SET(mip, MIP_SEIP);
  CSR_WRITE(mie, MIP_SEIP);
  CSR_CLEAR(mstatus, MSTATUS_SIE);
  trap_reset();
  enter_mode(PRV_U, g_spin, 0, 0);
  static const u64 e_sei[] = {CAUSE_INTR | 9};
  print_causes("U with SIE=0, SEIP pending", e_sei, 1);
  check("  taken by S from U (SPP)", trap_log[0].to == 'S' && ((trap_log[0].status >> 8) & 1) == 0, 1);
  CSR_CLEAR(mip, MIP_SEIP);
  /* delegated interrupts are never taken in M */
  CSR_SET(mip, MIP_SSIP);
  CSR_WRITE(mie, MIP_SSIP);
  trap_reset();
  CSR_SET(mstatus, MSTATUS_MIE);
  asm volatile("nop\n nop");
  CSR_CLEAR(mstatus, MSTATUS_MIE);
  print_causes("M with MIE=1, delegated SSIP pending", 0, 0);
  CSR_CLEAR(mip, MIP_SSIP);
  CSR_WRITE(mie, 0);
  /* M interrupts are always enabled in S/U, even with MIE=0 */
  trap_reset();
  msip(1);
  CSR_WRITE(mie, MIP_MSIP);
  enter_mode(PRV_S, g_spin, 0, 0);
  print_causes("S with MIE=0, MSIP pending", e_msi, 1);
  check("  taken by M from S (MPP)", trap_log[0].to == 'M' && ((trap_log[0].status >> 11) & 3) == 1, 1);
  msip(0);
  /* a non-delegated S interrupt goes to M even from S */
  CSR_WRITE(mideleg, 0);
  CSR_SET(mip, MIP_STIP);
  CSR_WRITE(mie, MIP_STIP);
  trap_reset();
  enter_mode(PRV_S, g_spin, 0, 0);
  print_causes("S, STIP not delegated", e_sti, 1);
  check("  taken by M", trap_log[0].to, 'M');
  CSR_CLEAR(mip, MIP_STIP);
  CSR_WRITE(mie, 0);

  puts_("[mip read-modify-write]\n");
  /* The UART's THR-empty interrupt raises SEIP through the PLIC's context 1 (hart 0, S).
   * Setting another bit of mip reads SEIP as 1, but only the software-writable SEIP bit
   * takes part in the write: once the line drops, SEIP must drop too. (OpenSBI sets SSIP
   * this way when it passes an IPI on to Linux.) */
  mmio_w32(PLIC + 4 * 10, 1);      /* source 10 (the UART): priority 1 */
  mmio_w32(PLIC + 0x2080, 1 << 10); /* enabled for context 1 */
  mmio_w32(PLIC + 0x201000, 0);     /* context 1 threshold 0 */
  *(volatile u8 *)(UART0 + 1) = 2;  /* IER: THR empty */
  check("  mip.SEIP from the UART line", CSR_READ(mip) & MIP_SEIP, MIP_SEIP);
  CSR_SET(mip, MIP_SSIP);
  *(volatile u8 *)(UART0 + 1) = 0;
  /* Claim and complete whatever the PLIC still holds pending. */
  u32 claimed = mmio_r32(PLIC + 0x201004);
  if (claimed)
    mmio_w32(PLIC + 0x201004, claimed);
  check("  mip.SEIP after csrs mip, the line dropping and a claim", CSR_READ(mip) & MIP_SEIP, 0);
  CSR_CLEAR(mip, MIP_SSIP);
  mmio_w32(PLIC + 0x2080, 0);
  finish();
}
