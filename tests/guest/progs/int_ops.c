/* RV64I + M: every ALU op (reg/imm, W variants), mul/div corner cases,
 * branches, lui/auipc/jal/jalr, loads/stores of every width (aligned and
 * misaligned), CSR instructions, fence.i with self-modifying code.
 * Expected values come from gen/gen_int.py (independent Python model). */
#include "rt.h"

static u64 hash, ncases;
static u64 mix(u64 h, u64 v) {
  h ^= v;
  h *= 0x100000001b3UL;
  return h ^ (h >> 29);
}
static void tally(const char *op, u64 a, u64 b, u64 got, u64 exp) {
  hash = mix(hash, got);
  ncases++;
  if (got != exp) {
    puts_("MISMATCH ");
    puts_(op);
    puts_(" ");
    put_hex(a);
    puts_(" ");
    put_hex(b);
    puts_(" -> ");
    put_hex(got);
    puts_(" expected ");
    put_hex(exp);
    nl();
    rt_failures++;
  }
}
static void summary(const char *what) {
  puts_(what);
  puts_(": ");
  put_udec(ncases);
  puts_(" cases, hash ");
  put_hex(hash);
  nl();
  hash = 0xcbf29ce484222325UL;
  ncases = 0;
}

#define T_I(op, a, imm, exp)                                                   \
  do {                                                                         \
    u64 r_;                                                                    \
    asm volatile(#op " %0, %1, %2" : "=r"(r_) : "r"((u64)(a)), "i"(imm));      \
    tally(#op, a, (u64)(i64)(imm), r_, exp);                                   \
  } while (0)
#define T_LUI(imm, exp)                                                        \
  do {                                                                         \
    u64 r_;                                                                    \
    asm volatile("lui %0, %1" : "=r"(r_) : "i"(imm));                          \
    tally("lui", imm, 0, r_, exp);                                             \
  } while (0)
#define T_B(op, a, b, exp)                                                     \
  do {                                                                         \
    u64 r_;                                                                    \
    asm volatile("li %0, 1\n " #op " %1, %2, 1f\n li %0, 0\n1:"                \
                 : "=&r"(r_) : "r"((u64)(a)), "r"((u64)(b)));                  \
    tally(#op, a, b, r_, exp);                                                 \
  } while (0)

#include "int_cases.h"

#define DEF_R(op)                                                              \
  static __attribute__((noinline)) u64 f_##op(u64 a, u64 b) {                  \
    u64 r;                                                                     \
    asm volatile(#op " %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));                \
    return r;                                                                  \
  }
R_OPS(DEF_R)

static void run_r(const char *name, u64 (*f)(u64, u64), const rcase_t *c, int n) {
  for (int i = 0; i < n; i++) tally(name, c[i].a, c[i].b, f(c[i].a, c[i].b), c[i].r);
  summary(name);
}
#define RUN_R(op) run_r(#op, f_##op, rc_##op, sizeof(rc_##op) / sizeof(rc_##op[0]));

static u8 buf[64] __attribute__((aligned(16)));

static void test_loads(void) {
  for (int i = 0; i < 64; i++) buf[i] = (u8)(0x80 + i * 7);
  /* every width at every offset 0..8 (misaligned included) */
  for (int off = 0; off < 9; off++) {
    u64 p = (u64)buf + off, v;
    u64 le = 0;
    for (int k = 7; k >= 0; k--) le = (le << 8) | buf[off + k];
    asm volatile("lb %0, 0(%1)" : "=r"(v) : "r"(p));
    check_q("lb", v, (u64)(i64)(signed char)le);
    asm volatile("lbu %0, 0(%1)" : "=r"(v) : "r"(p));
    check_q("lbu", v, le & 0xff);
    asm volatile("lh %0, 0(%1)" : "=r"(v) : "r"(p));
    check_q("lh", v, (u64)(i64)(short)le);
    asm volatile("lhu %0, 0(%1)" : "=r"(v) : "r"(p));
    check_q("lhu", v, le & 0xffff);
    asm volatile("lw %0, 0(%1)" : "=r"(v) : "r"(p));
    check_q("lw", v, (u64)(i64)(i32)le);
    asm volatile("lwu %0, 0(%1)" : "=r"(v) : "r"(p));
    check_q("lwu", v, le & 0xffffffffUL);
    asm volatile("ld %0, 0(%1)" : "=r"(v) : "r"(p));
    check_q("ld", v, le);
    hash = mix(hash, v);
  }
  /* negative and positive offsets */
  u64 v1, v2;
  asm volatile("ld %0, -8(%2)\n ld %1, 2047(%3)" : "=&r"(v1), "=&r"(v2)
               : "r"((u64)buf + 16), "r"((u64)buf + 8 - 2047));
  check("ld -8(buf+16)", v1, *(u64 *)(buf + 8));
  check("ld 2047(buf+8-2047)", v2, *(u64 *)(buf + 8));
  /* stores of every width, aligned and misaligned */
  for (int off = 0; off < 9; off++) {
    memset(buf, 0xee, 32);
    u64 p = (u64)buf + off;
    asm volatile("sd %0, 0(%1)" ::"r"(0x0102030405060708UL), "r"(p) : "memory");
    asm volatile("sw %0, 8(%1)" ::"r"(0xa1a2a3a4a5a6a7a8UL), "r"(p) : "memory");
    asm volatile("sh %0, 12(%1)" ::"r"(0xb1b2b3b4UL), "r"(p) : "memory");
    asm volatile("sb %0, 14(%1)" ::"r"(0xc1c2UL), "r"(p) : "memory");
    static const u8 exp[15] = {8, 7, 6, 5, 4, 3, 2, 1, 0xa8, 0xa7, 0xa6, 0xa5, 0xb4, 0xb3, 0xc2};
    for (int k = 0; k < off; k++) check_q("store: byte before", buf[k], 0xee);
    for (int k = 0; k < 15; k++) check_q("store: byte", buf[off + k], exp[k]);
    for (int k = off + 15; k < 32; k++) check_q("store: byte after", buf[k], 0xee);
    for (int k = 0; k < 32; k++) hash = mix(hash, buf[k]);
  }
  ncases = 9;
  summary("loads/stores");
}

static void test_jumps(void) {
  u64 link, here, tgt;
  asm volatile("jal %0, 1f\n1: auipc %1, 0" : "=r"(link), "=r"(here));
  check("jal link == next pc", link == here, 1);
  asm volatile(".option push\n .option norvc\n la %2, 1f+1\n jalr %0, %2, 0\n nop\n nop\n1: auipc %1, 0\n .option pop"
               : "=r"(link), "=r"(here), "=&r"(tgt));
  check("jalr clears bit0, link = pc+4", link + 8 == here, 1);
  asm volatile("la %0, 1f\n addi %0, %0, 16\n jalr %0, %0, -16\n1: auipc %1, 0"
               : "=&r"(link), "=r"(here));
  check("jalr rd==rs1 uses old rs1", link == here, 1);
  u64 a, b;
  asm volatile("1: auipc %0, 0\n la %1, 1b" : "=r"(a), "=r"(b));
  check("auipc 0 == pc", a == b, 1);
  asm volatile("1: auipc %0, 0x80000\n la %1, 1b" : "=r"(a), "=r"(b));
  check("auipc 0x80000 == pc - 2^31", a == b - 0x80000000UL, 1);
  asm volatile("1: auipc %0, 0x7ffff\n la %1, 1b" : "=r"(a), "=r"(b));
  check("auipc 0x7ffff == pc + 0x7ffff000", a == b + 0x7ffff000UL, 1);
  asm volatile("li %0, 5\n add x0, %0, %0\n addi x0, x0, 9\n mv %0, x0" : "=&r"(a));
  check("x0 stays zero", a, 0);
}

static void test_csr_insns(void) {
  u64 o;
  CSR_WRITE(mscratch, 0xf0f0);
  asm volatile("csrrw %0, mscratch, %1" : "=r"(o) : "r"(0x1234UL));
  check("csrrw old", o, 0xf0f0);
  asm volatile("csrrs %0, mscratch, %1" : "=r"(o) : "r"(0xff0000UL));
  check("csrrs old", o, 0x1234);
  asm volatile("csrrc %0, mscratch, %1" : "=r"(o) : "r"(0x0f0004UL));
  check("csrrc old", o, 0xff1234);
  asm volatile("csrrwi %0, mscratch, 31" : "=r"(o));
  check("csrrwi old", o, 0xf01230);
  asm volatile("csrrsi %0, mscratch, 0" : "=r"(o));
  check("csrrsi 0 (no write) old", o, 31);
  asm volatile("csrrci %0, mscratch, 5" : "=r"(o));
  check("csrrci old", o, 31);
  check("mscratch final", CSR_READ(mscratch), 26);
  asm volatile("csrrw x0, mscratch, %0" ::"r"(-1UL));
  check("csrrw rd=x0 writes", CSR_READ(mscratch), -1UL);
  check("mhartid", CSR_READ(mhartid), 0);
}

/* code buffer for self-modifying code (M-mode: no PMP restrictions) */
static u32 codebuf[4] __attribute__((aligned(16)));
static void test_fence_i(void) {
  /* addi a0, zero, IMM ; ret */
  for (u32 imm = 1; imm <= 3; imm++) {
    codebuf[0] = 0x00000513 | (imm << 20);
    codebuf[1] = 0x00008067;
    asm volatile("fence.i" ::: "memory");
    u64 r = ((u64(*)(void))(u64)codebuf)();
    check("self-modified code returns", r, imm);
  }
  asm volatile("fence rw, rw\n fence iorw, iorw\n fence.tso\n fence" ::: "memory");
}

int main(void) {
  hash = 0xcbf29ce484222325UL;
  R_OPS(RUN_R)
  run_imm_cases();
  summary("imm/lui/branch");
  test_loads();
  test_jumps();
  test_csr_insns();
  test_fence_i();
  finish();
}
