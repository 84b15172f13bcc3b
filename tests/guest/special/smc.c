/* Self-modifying code, for the engine tests: a store that rewrites an instruction further on
 * in the block it runs in (no fence.i: Rewind sees stores to code at once, in both engines),
 * and one that rewrites another function, followed by fence.i as the spec asks. Each is done
 * thousands of times, so that the code is hot enough to be compiled. Prints a checksum of
 * what the rewritten instructions computed and exits 1 if any saw stale code. */
#include "rt.h"

long smc_same_block(u32 insn);
long smc_other_block(void);

asm(".option push\n"
    ".option norvc\n"
    ".text\n"
    ".balign 4\n"
    ".globl smc_same_block\n"
    "smc_same_block:\n"
    "  la t0, 1f\n"
    "  sw a0, 0(t0)\n"
    "1: addi a0, zero, 1\n"
    "  ret\n"
    ".balign 4\n"
    ".globl smc_other_block\n"
    "smc_other_block:\n"
    "  addi a0, zero, 1\n"
    "  ret\n"
    ".option pop\n");

/* addi a0, zero, imm */
static u32 li_a0(u32 imm) { return imm << 20 | 10 << 7 | 0x13; }

int main(void) {
  u64 sum = 0;
  int stale = 0;
  for (u32 i = 0; i < 3000; i++) {
    u32 same = i & 1023;
    long r = smc_same_block(li_a0(same));
    stale += r != (long)same;
    sum += r;
    u32 other = (i * 7) & 1023;
    *(volatile u32 *)(void *)smc_other_block = li_a0(other);
    asm volatile("fence.i" ::: "memory");
    r = smc_other_block();
    stale += r != (long)other;
    sum = sum * 31 + r;
  }
  puts_("smc sum ");
  put_hex(sum);
  puts_(" stale ");
  put_dec(stale);
  puts_("\n");
  return stale != 0;
}
