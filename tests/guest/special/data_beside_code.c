/* A counter in the page of the loop that updates it, in a 64-byte chunk of its own (as when a
 * linker packs small data beside code): for the engine tests, the stores must not make the
 * loop's code be decoded or compiled again. Prints the final count (3 x 3000 = 9000). */
#include "rt.h"

u64 beside_loop(u64 iterations);

asm(".text\n"
    ".balign 128\n"
    ".globl beside_loop\n"
    "beside_loop:\n"
    "  la t0, beside_word\n"
    "1: ld t1, 0(t0)\n"
    "  addi t1, t1, 3\n"
    "  sd t1, 0(t0)\n"
    "  addi a0, a0, -1\n"
    "  bnez a0, 1b\n"
    "  ld a0, 0(t0)\n"
    "  ret\n"
    ".balign 64\n"
    "beside_word: .dword 0\n");

int main(void) {
  u64 count = beside_loop(3000);
  puts_("beside count ");
  put_dec((i64)count);
  puts_("\n");
  return count != 9000;
}
