/* A extension: every AMO in .w and .d forms (with aq/rl variants), .w sign
 * extension and upper-half preservation, LR/SC success and failure. */
#include "rt.h"

static volatile u64 mem[16] __attribute__((aligned(64)));
static u64 hash = 0xcbf29ce484222325UL;
static void mixv(u64 v) { hash = (hash ^ v) * 0x100000001b3UL; }

#define AMO_OPS(X)                                                                    \
  X(amoswap) X(amoadd) X(amoxor) X(amoand) X(amoor) X(amomin) X(amomax) X(amominu) X(amomaxu)

#define AMO2(name, insn)                                                              \
  static u64 f_##name(volatile void *p, u64 v) {                                      \
    u64 r;                                                                            \
    asm volatile(insn " %0, %2, (%1)" : "=&r"(r) : "r"(p), "r"(v) : "memory");        \
    return r;                                                                         \
  }
#define DEFS(op) AMO2(op##_d, #op ".d") AMO2(op##_w, #op ".w") AMO2(op##_d_aqrl, #op ".d.aqrl") \
  AMO2(op##_w_aq, #op ".w.aq") AMO2(op##_w_rl, #op ".w.rl")
AMO_OPS(DEFS)

static u64 model(int op, u64 a, u64 b, int w) {
  if (w) {
    i64 sa = (i32)a, sb = (i32)b;
    u64 ua = (u32)a, ub = (u32)b;
    switch (op) {
      case 0: return ub;
      case 1: return (u32)(ua + ub);
      case 2: return ua ^ ub;
      case 3: return ua & ub;
      case 4: return ua | ub;
      case 5: return (u32)(sa < sb ? sa : sb);
      case 6: return (u32)(sa > sb ? sa : sb);
      case 7: return ua < ub ? ua : ub;
      case 8: return ua > ub ? ua : ub;
    }
  } else {
    i64 sa = a, sb = b;
    switch (op) {
      case 0: return b;
      case 1: return a + b;
      case 2: return a ^ b;
      case 3: return a & b;
      case 4: return a | b;
      case 5: return sa < sb ? a : b;
      case 6: return sa > sb ? a : b;
      case 7: return a < b ? a : b;
      case 8: return a > b ? a : b;
    }
  }
  return 0;
}

typedef u64 (*amo_fn)(volatile void *, u64);
static const char *names[9] = {"amoswap", "amoadd", "amoxor", "amoand", "amoor",
                               "amomin", "amomax", "amominu", "amomaxu"};
#define ROW(op) {f_##op##_d, f_##op##_d_aqrl, f_##op##_w, f_##op##_w_aq, f_##op##_w_rl},
static const amo_fn fns[9][5] = {AMO_OPS(ROW)};

static const u64 vals[] = {0, 1, 0xffffffffffffffffUL, 0x7fffffffffffffffUL, 0x8000000000000000UL,
                           0x80000000UL, 0x7fffffffUL, 0xffffffff7fffffffUL, 0x12345678fedcba98UL};
#define NV (sizeof(vals) / sizeof(vals[0]))

static void test_amos(void) {
  for (int op = 0; op < 9; op++) {
    int bad = 0;
    for (int k = 0; k < 5; k++) {
      int w = k >= 2;
      for (unsigned i = 0; i < NV; i++)
        for (unsigned j = 0; j < NV; j++) {
          u64 a = vals[i], b = vals[j];
          /* .w operates on the upper word too (offset 4) to check both halves */
          int hi = w && ((i + j) & 1);
          mem[0] = 0x5a5a5a5a5a5a5a5aUL;
          mem[1] = 0xa5a5a5a5a5a5a5a5UL;
          volatile void *p = (volatile u8 *)&mem[0] + (hi ? 4 : 0);
          if (w)
            *(volatile u32 *)p = (u32)a;
          else
            mem[0] = a;
          u64 r = fns[op][k](p, b);
          u64 er, em0;
          if (w) {
            er = (u64)(i64)(i32)a;
            u64 nw = model(op, a, b, 1);
            em0 = hi ? ((nw << 32) | 0x5a5a5a5aUL) : (0x5a5a5a5a00000000UL | nw);
          } else {
            er = a;
            em0 = model(op, a, b, 0);
          }
          mixv(r);
          mixv(mem[0]);
          if (r != er || mem[0] != em0 || mem[1] != 0xa5a5a5a5a5a5a5a5UL) {
            if (bad++ < 4) {
              puts_("MISMATCH ");
              puts_(names[op]);
              puts_(w ? ".w a=" : ".d a=");
              put_hex(a);
              puts_(" b=");
              put_hex(b);
              puts_(" rd=");
              put_hex(r);
              puts_(" mem=");
              put_hex(mem[0]);
              puts_(" expected rd=");
              put_hex(er);
              puts_(" mem=");
              put_hex(em0);
              nl();
            }
          }
        }
    }
    puts_(names[op]);
    puts_(bad ? ": FAILED\n" : ": ok\n");
    if (bad) rt_failures++;
  }
  puts_("amo hash ");
  put_hex(hash);
  nl();
  /* rd == rs2 and rd == x0 forms */
  mem[0] = 40;
  u64 v = 2;
  asm volatile("amoadd.d %0, %0, (%1)" : "+r"(v) : "r"(&mem[0]) : "memory");
  check("amoadd.d rd==rs2: rd", v, 40);
  check("amoadd.d rd==rs2: mem", mem[0], 42);
  asm volatile("amoswap.d x0, %0, (%1)" ::"r"(7UL), "r"(&mem[0]) : "memory");
  check("amoswap.d rd=x0: mem", mem[0], 7);
}

static u64 lr_d(volatile u64 *p) {
  u64 r;
  asm volatile("lr.d %0, (%1)" : "=r"(r) : "r"(p) : "memory");
  return r;
}
static u64 sc_d(volatile u64 *p, u64 v) {
  u64 r;
  asm volatile("sc.d %0, %2, (%1)" : "=&r"(r) : "r"(p), "r"(v) : "memory");
  return r;
}
static u64 lr_w(volatile void *p) {
  u64 r;
  asm volatile("lr.w.aq %0, (%1)" : "=r"(r) : "r"(p) : "memory");
  return r;
}
static u64 sc_w(volatile void *p, u64 v) {
  u64 r;
  asm volatile("sc.w.rl %0, %2, (%1)" : "=&r"(r) : "r"(p), "r"(v) : "memory");
  return r;
}

static void test_lrsc(void) {
  mem[0] = 0x1111111111111111UL;
  mem[8] = 0x8888888888888888UL;
  check("sc.d without reservation fails", sc_d(&mem[0], 5) != 0, 1);
  check("  memory unchanged", mem[0], 0x1111111111111111UL);
  check("lr.d value", lr_d(&mem[0]), 0x1111111111111111UL);
  check("sc.d after lr.d succeeds (rd=0)", sc_d(&mem[0], 0x2222UL), 0);
  check("  memory written", mem[0], 0x2222UL);
  check("second sc.d fails", sc_d(&mem[0], 0x3333UL) != 0, 1);
  check("  memory unchanged", mem[0], 0x2222UL);
  lr_d(&mem[0]);
  check("sc.d to other granule fails", sc_d(&mem[8], 0x4444UL) != 0, 1);
  check("  memory unchanged", mem[8], 0x8888888888888888UL);
  sc_d(&mem[0], 0); /* clear any reservation */
  mem[1] = 0x00000000f0000001UL;
  check("lr.w sign-extends", lr_w(&mem[1]), 0xfffffffff0000001UL);
  check("sc.w succeeds", sc_w(&mem[1], 0xffffffff00000077UL), 0);
  check("  only the word is written", mem[1], 0x0000000000000077UL);
  mem[2] = 0xdeadbeef80000000UL;
  check("lr.w upper word", lr_w((volatile u8 *)&mem[2] + 4), 0xffffffffdeadbeefUL);
  check("sc.w upper word", sc_w((volatile u8 *)&mem[2] + 4, 0x12345678UL), 0);
  check("  memory", mem[2], 0x1234567880000000UL);
  /* a classic LR/SC increment loop */
  mem[3] = 0;
  for (int i = 0; i < 100; i++) {
    u64 t, fail;
    asm volatile("1: lr.d %0, (%2)\n addi %0, %0, 3\n sc.d %1, %0, (%2)\n bnez %1, 1b"
                 : "=&r"(t), "=&r"(fail) : "r"(&mem[3]) : "memory");
  }
  check("lr/sc loop total", mem[3], 300);
}

int main(void) {
  test_amos();
  test_lrsc();
  finish();
}
