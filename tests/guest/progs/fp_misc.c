/* F/D state and encoding details: NaN-boxing of f32 inputs/outputs, moves
 * and loads/stores (bit-exact), fcsr/frm/fflags CSR behaviour and flag
 * accrual, invalid rounding modes, mstatus.FS (Off => illegal, Dirty/SD). */
#include "rt.h"

static u64 flags;
#define BOX(x) (0xffffffff00000000UL | (u32)(x))
#define OP2(insn, a, b)                                                                 \
  ({                                                                                    \
    u64 r_;                                                                             \
    asm volatile("fmv.d.x ft0, %2\n fmv.d.x ft1, %3\n csrw fflags, zero\n " insn         \
                 " ft2, ft0, ft1\n fmv.x.d %0, ft2\n csrr %1, fflags"                   \
                 : "=&r"(r_), "=&r"(flags) : "r"((u64)(a)), "r"((u64)(b)) : "ft0", "ft1", "ft2"); \
    r_;                                                                                 \
  })
#define OP3(insn, a, b, c)                                                              \
  ({                                                                                    \
    u64 r_;                                                                             \
    asm volatile("fmv.d.x ft0, %2\n fmv.d.x ft1, %3\n fmv.d.x ft2, %4\n csrw fflags, zero\n " insn \
                 " ft3, ft0, ft1, ft2\n fmv.x.d %0, ft3\n csrr %1, fflags"              \
                 : "=&r"(r_), "=&r"(flags) : "r"((u64)(a)), "r"((u64)(b)), "r"((u64)(c))  \
                 : "ft0", "ft1", "ft2", "ft3");                                         \
    r_;                                                                                 \
  })
#define OP1(insn, a)                                                                    \
  ({                                                                                    \
    u64 r_;                                                                             \
    asm volatile("fmv.d.x ft0, %2\n csrw fflags, zero\n " insn " ft2, ft0\n fmv.x.d %0, ft2\n csrr %1, fflags" \
                 : "=&r"(r_), "=&r"(flags) : "r"((u64)(a)) : "ft0", "ft2");             \
    r_;                                                                                 \
  })
/* fp source, integer destination */
#define OPI(insn, a, b)                                                                 \
  ({                                                                                    \
    u64 r_;                                                                             \
    asm volatile("fmv.d.x ft0, %2\n fmv.d.x ft1, %3\n csrw fflags, zero\n " insn        \
                 "\n csrr %1, fflags"                                                   \
                 : "=&r"(r_), "=&r"(flags) : "r"((u64)(a)), "r"((u64)(b)) : "ft0", "ft1"); \
    r_;                                                                                 \
  })

static void checkf(const char *name, u64 got, u64 exp, u64 expflags) {
  check(name, got, exp);
  puts_("  fflags");
  check("", flags, expflags);
}

#define ONE 0x3f800000U
#define TWO 0x40000000U
#define NEG_ONE 0xbf800000U
#define UNBOXED_ONE 0x000000003f800000UL
#define QNAN_S BOX(0x7fc00000)
#define QNAN_D 0x7ff8000000000000UL

static void test_nanboxing(void) {
  puts_("[NaN-boxing]\n");
  checkf("fadd.s unboxed(1.0) + 1.0", OP2("fadd.s", UNBOXED_ONE, BOX(ONE)), QNAN_S, 0);
  checkf("fadd.s 1.0 + partly-boxed", OP2("fadd.s", BOX(ONE), 0xfffffffe3f800000UL), QNAN_S, 0);
  checkf("fadd.s 1.0 + 1.0 (boxed)", OP2("fadd.s", BOX(ONE), BOX(ONE)), BOX(TWO), 0);
  checkf("fmul.s unboxed * 0", OP2("fmul.s", UNBOXED_ONE, BOX(0)), QNAN_S, 0);
  checkf("fsgnj.s unboxed, -1.0", OP2("fsgnj.s", UNBOXED_ONE, BOX(NEG_ONE)), BOX(0xffc00000), 0);
  checkf("fsgnjn.s unboxed, -1.0", OP2("fsgnjn.s", UNBOXED_ONE, BOX(NEG_ONE)), BOX(0x7fc00000), 0);
  checkf("fsgnjx.s -1.0, unboxed", OP2("fsgnjx.s", BOX(NEG_ONE), UNBOXED_ONE), BOX(NEG_ONE), 0);
  checkf("fmin.s unboxed, 2.0", OP2("fmin.s", UNBOXED_ONE, BOX(TWO)), BOX(TWO), 0);
  checkf("fmax.s 2.0, unboxed", OP2("fmax.s", BOX(TWO), UNBOXED_ONE), BOX(TWO), 0);
  checkf("fmadd.s 1*1+unboxed", OP3("fmadd.s", BOX(ONE), BOX(ONE), UNBOXED_ONE), QNAN_S, 0);
  checkf("fsqrt.s unboxed", OP1("fsqrt.s", UNBOXED_ONE), QNAN_S, 0);
  checkf("fcvt.d.s unboxed", OP1("fcvt.d.s", UNBOXED_ONE), QNAN_D, 0);
  checkf("fcvt.s.d of 1.0 is boxed", OP1("fcvt.s.d", 0x3ff0000000000000UL), BOX(ONE), 0);
  checkf("fclass.s unboxed", OPI("fclass.s %0, ft0", UNBOXED_ONE, 0), 1 << 9, 0);
  checkf("fclass.s boxed 1.0", OPI("fclass.s %0, ft0", BOX(ONE), 0), 1 << 6, 0);
  checkf("feq.s unboxed, unboxed", OPI("feq.s %0, ft0, ft1", UNBOXED_ONE, UNBOXED_ONE), 0, 0);
  checkf("flt.s unboxed, 1.0", OPI("flt.s %0, ft0, ft1", UNBOXED_ONE, BOX(ONE)), 0, 16);
  checkf("fcvt.w.s unboxed", OPI("fcvt.w.s %0, ft0, rtz", UNBOXED_ONE, 0), 0x7fffffff, 16);
  checkf("fmv.x.w unboxed -1.0 (no check)", OPI("fmv.x.w %0, ft0", 0x00000000bf800000UL, 0),
         0xffffffffbf800000UL, 0);
  checkf("fmv.x.w boxed 1.0", OPI("fmv.x.w %0, ft0", BOX(ONE), 0), ONE, 0);
  /* fsw stores the low 32 bits even if the register is not boxed */
  static volatile u64 mem[4];
  mem[0] = 0x5555555555555555UL;
  asm volatile("fmv.d.x ft0, %0\n fsw ft0, 0(%1)" ::"r"(0x123456789abcdef0UL), "r"(mem) : "ft0", "memory");
  check("fsw of unboxed register", mem[0], 0x555555559abcdef0UL);
  u64 r;
  asm volatile("flw ft0, 0(%1)\n fmv.x.d %0, ft0" : "=r"(r) : "r"(mem) : "ft0");
  check("flw boxes", r, BOX(0x9abcdef0));
  asm volatile("fmv.w.x ft0, %1\n fmv.x.d %0, ft0" : "=r"(r) : "r"(0x1234567800000001UL) : "ft0");
  check("fmv.w.x boxes low word", r, BOX(1));
  asm volatile("fcvt.s.w ft0, %1\n fmv.x.d %0, ft0" : "=r"(r) : "r"(3UL) : "ft0");
  check("fcvt.s.w boxes", r, BOX(0x40400000));
  /* bit-exact moves of signalling NaNs and arbitrary patterns */
  asm volatile("fmv.d.x ft0, %1\n fsd ft0, 8(%2)\n fld ft1, 8(%2)\n fmv.x.d %0, ft1"
               : "=r"(r) : "r"(0x7ff0000000000001UL), "r"(mem) : "ft0", "ft1", "memory");
  check("fsd/fld keep sNaN payload", r, 0x7ff0000000000001UL);
  check("  memory", mem[1], 0x7ff0000000000001UL);
  asm volatile("fmv.w.x ft0, %1\n fsgnjn.s ft1, ft0, ft0\n fmv.x.w %0, ft1" : "=r"(r) : "r"(0x7f800001UL) : "ft0", "ft1");
  check("fneg.s of sNaN keeps payload", r, 0xffffffffff800001UL);
  /* misaligned FP loads and stores */
  u8 *b = (u8 *)mem;
  asm volatile("fmv.d.x ft0, %1\n fsd ft0, 3(%2)\n fld ft1, 3(%2)\n fmv.x.d %0, ft1"
               : "=r"(r) : "r"(0x0102030405060708UL), "r"(b) : "ft0", "ft1", "memory");
  check("misaligned fsd/fld", r, 0x0102030405060708UL);
  check("  byte at +3", b[3], 0x08);
  asm volatile("flw ft1, 5(%1)\n fmv.x.d %0, ft1" : "=r"(r) : "r"(b) : "ft1", "memory");
  check("misaligned flw", r, BOX(0x03040506));
}

static void test_fcsr(void) {
  puts_("[fcsr]\n");
  CSR_WRITE(fcsr, 0);
  CSR_WRITE(fflags, 0x1f);
  check("fflags=0x1f -> fcsr", CSR_READ(fcsr), 0x1f);
  CSR_WRITE(frm, 3);
  check("frm=3 -> fcsr", CSR_READ(fcsr), 0x7f);
  CSR_WRITE(fflags, 0xffff);
  check("fflags write masks to 5 bits", CSR_READ(fflags), 0x1f);
  CSR_WRITE(fcsr, 0x1a5);
  check("fcsr write masks to 8 bits", CSR_READ(fcsr), 0xa5);
  check("  frm", CSR_READ(frm), 5);
  check("  fflags", CSR_READ(fflags), 5);
  u64 old;
  asm volatile("csrrw %0, fflags, %1" : "=r"(old) : "r"(0x3UL));
  check("csrrw fflags old", old, 5);
  check("  fcsr", CSR_READ(fcsr), 0xa3);
  asm volatile("csrrwi %0, frm, 1" : "=r"(old));
  check("csrrwi frm old", old, 5);
  check("  fcsr", CSR_READ(fcsr), 0x23);
  /* flags accrue (OR) across instructions */
  CSR_WRITE(fcsr, 0);
  asm volatile("fmv.d.x ft0, %0\n fmv.d.x ft1, zero\n fdiv.d ft2, ft0, ft1\n"
               "fmv.d.x ft1, %1\n fdiv.d ft2, ft0, ft1\n" ::"r"(0x3ff0000000000000UL), "r"(0x4008000000000000UL)
               : "ft0", "ft1", "ft2");
  check("accrued DZ|NX", CSR_READ(fflags), 8 | 1);
  asm volatile("fmv.d.x ft0, %0\n fmv.d.x ft1, %0\n fmul.d ft2, ft0, ft1" ::"r"(0x7fe0000000000000UL)
               : "ft0", "ft1", "ft2");
  check("accrued + OF", CSR_READ(fflags), 8 | 4 | 1);
  asm volatile("fmv.d.x ft0, %0\n feq.d t0, ft0, ft0" ::"r"(0x7ff0000000000001UL) : "ft0", "t0");
  check("accrued + NV (feq sNaN)", CSR_READ(fflags), 16 | 8 | 4 | 1);
  CSR_WRITE(fcsr, 0);
}

static u64 g_frm_dyn_fadd(u64 a) {
  u64 r;
  asm volatile("fmv.d.x ft0, %1\n fadd.d ft1, ft0, ft0, dyn\n fmv.x.d %0, ft1" : "=r"(r) : "r"(a) : "ft0", "ft1");
  return r;
}

static void test_invalid_rm(void) {
  puts_("[invalid rounding modes]\n");
  /* fadd.s ft0, ft1, ft2 with rm = 5 and 6 (reserved) */
  trap_reset();
  asm volatile(".word 0x0020d053 | (5 << 12)" ::: "ft0");
  expect_trap("fadd.s rm=5", 2, 0x0020d053);
  trap_reset();
  asm volatile(".word 0x0020e053" ::: "ft0");
  expect_trap("fadd.s rm=6", 2, 0x0020e053);
  for (int frm = 5; frm <= 7; frm++) {
    CSR_WRITE(frm, frm);
    check("frm readback", CSR_READ(frm), frm);
    trap_reset();
    asm volatile(".word 0x0220f053" ::: "ft0"); /* fadd.d ft0, ft1, ft2, dyn */
    expect_trap("fadd.d dyn with invalid frm", 2, 0x0220f053);
  }
  CSR_WRITE(frm, 4);
  trap_reset();
  check("fadd.d dyn frm=4 (rmm) ok", g_frm_dyn_fadd(0x3ff0000000000000UL), 0x4000000000000000UL);
  expect_no_trap("no trap with frm=4");
  CSR_WRITE(fcsr, 0);
}

static void set_fs(u64 v) {
  CSR_CLEAR(mstatus, MSTATUS_FS);
  CSR_SET(mstatus, v << 13);
}
static u64 fs_sd(void) {
  u64 m = CSR_READ(mstatus);
  return ((m >> 13) & 3) | ((m >> 63) << 4); /* FS | SD<<4 */
}
static u64 g_u_fadd(u64 a) {
  asm volatile(".word 0x02208053" ::: "ft0"); /* fadd.d ft0, ft1, ft2, rne */
  return 0;
}

static void test_fs(void) {
  puts_("[mstatus.FS]\n");
  static const struct { const char *name; u32 insn; } offs[] = {
      {"fadd.d (FS=Off)", 0x02208053}, {"fld (FS=Off)", 0x00013007},   {"fsd (FS=Off)", 0x00013027},
      {"fmv.x.d (FS=Off)", 0xe2000553}, {"csrr fflags (FS=Off)", 0x00102573},
      {"csrr frm (FS=Off)", 0x00202573}, {"csrr fcsr (FS=Off)", 0x00302573}, {"c.fldsp (FS=Off)", 0x2002},
  };
  static u32 code[4] __attribute__((aligned(8)));
  set_fs(0);
  check("FS=Off: FS|SD<<4", fs_sd(), 0);
  for (unsigned i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
    /* execute the instruction from a RAM buffer: insn; ret */
    u32 insn = offs[i].insn;
    if ((insn & 3) != 3) {
      code[0] = insn | (0x8082u << 16); /* c.insn ; c.jr ra */
    } else {
      code[0] = insn;
      code[1] = 0x00008067; /* ret */
    }
    asm volatile("fence.i" ::: "memory");
    trap_reset();
    ((void (*)(void))(u64)code)();
    expect_trap(offs[i].name, 2, insn);
  }
  pmp_allow_all();
  trap_reset();
  enter_mode(PRV_U, g_u_fadd, 0, 0);
  expect_trap("U fadd.d (FS=Off)", 2, 0x02208053);
  set_fs(1);
  check("FS=Initial: FS|SD<<4", fs_sd(), 1);
  asm volatile("fmv.d.x ft0, zero\n fadd.d ft1, ft0, ft0" ::: "ft0", "ft1");
  check("after fadd.d: Dirty, SD=1", fs_sd(), 0x13);
  set_fs(2);
  check("FS=Clean: FS|SD<<4", fs_sd(), 2);
  CSR_WRITE(fflags, 1);
  check("after csrw fflags: Dirty, SD=1", fs_sd(), 0x13);
  set_fs(2);
  asm volatile("fmv.d.x ft0, zero" ::: "ft0");
  check("after fmv.d.x: Dirty, SD=1", fs_sd(), 0x13);
  CSR_WRITE(fcsr, 0);
}

int main(void) {
  test_nanboxing();
  test_fcsr();
  test_invalid_rm();
  test_fs();
  finish();
}
