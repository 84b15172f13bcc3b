/* Several harts on one board (QEMU -smp N -bios none, or rewind --smp N): every hart enters
 * here with a0 = its hart id and a1 = the device tree. Hart 0 counts the harts in the device
 * tree, lets the others go, and prints only what does not depend on how the harts
 * interleave:
 *   - every hart's AMO and LR/SC increments of shared counters arrive (atomicity);
 *   - every other hart wakes from WFI on its own CLINT timer (mtimecmp per hart);
 *   - every other hart wakes from WFI on an IPI that hart 0 sends through its msip. */
#include "rt.h"

#define MAX_HARTS 32
#define ROUNDS 5000
#define MIP_MSIP (1UL << IRQ_M_SOFT)
#define MIP_MTIP (1UL << IRQ_M_TIMER)

/* In .data, not .bss: hart 0 clears .bss while the others already wait on it. */
volatile u64 ready = 1;
static volatile u32 arrived, finished, timers_fired, ipis_taken, id_mismatches;
static volatile u32 amo_counter;
static volatile u64 lrsc_counter;
u8 secondary_stacks[MAX_HARTS][4096] __attribute__((aligned(16)));

/* Waits for `ready` before touching its stack, then runs secondary_main. */
asm(".globl secondary_entry\n"
    "secondary_entry:\n"
    ".option push\n.option norelax\n"
    "  la gp, __global_pointer$\n"
    ".option pop\n"
    "  li t1, 32\n"
    "  bgeu a0, t1, 3f\n"
    "  la t0, ready\n"
    "  li t2, 2\n"
    "1:ld t1, 0(t0)\n"
    "  bne t1, t2, 1b\n"
    "  fence r, rw\n"
    "  la sp, secondary_stacks\n"
    "  addi t1, a0, 1\n"
    "  slli t1, t1, 12\n"
    "  add sp, sp, t1\n"
    "  call secondary_main\n"
    "3:wfi\n"
    "  j 3b\n");

static u32 be32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }

/* How many nodes of the device tree are named cpu@N. */
static u32 count_cpus(const u8 *fdt) {
  if (be32(fdt) != 0xd00dfeed)
    return 0;
  const u8 *p = fdt + be32(fdt + 8);
  u32 cpus = 0;
  for (;;) {
    u32 token = be32(p);
    p += 4;
    if (token == 1) { /* begin node: name, padded */
      const char *name = (const char *)p;
      if (name[0] == 'c' && name[1] == 'p' && name[2] == 'u' && name[3] == '@')
        cpus++;
      u64 len = 0;
      while (name[len])
        len++;
      p += (len + 4) & ~3UL;
    } else if (token == 3) { /* property: length, name offset, value, padded */
      p += 8 + ((be32(p) + 3) & ~3U);
    } else if (token == 2 || token == 4) {
    } else {
      return cpus;
    }
  }
}

static void lrsc_add(volatile u64 *p, u64 v) {
  u64 old, tmp;
  asm volatile("1: lr.d %0, (%2)\n"
               "   add %1, %0, %3\n"
               "   sc.d %1, %1, (%2)\n"
               "   bnez %1, 1b"
               : "=&r"(old), "=&r"(tmp)
               : "r"(p), "r"(v)
               : "memory");
}

static void count_up(void) {
  for (int i = 0; i < ROUNDS; i++) {
    __atomic_fetch_add(&amo_counter, 1, __ATOMIC_RELAXED);
    lrsc_add(&lrsc_counter, 1);
  }
}

/* Sleeps until interrupt `bit` is pending (interrupts stay globally off: WFI wakes anyway). */
static void wait_for(u64 bit) {
  CSR_SET(mie, bit);
  while (!(CSR_READ(mip) & bit))
    asm volatile("wfi");
  CSR_CLEAR(mie, bit);
}

void secondary_main(u64 hartid) {
  if (CSR_READ(mhartid) != hartid)
    __atomic_fetch_add(&id_mismatches, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&arrived, 1, __ATOMIC_SEQ_CST);
  count_up();

  /* This hart's own timer: due a little later. */
  mmio_w64(CLINT_MTIMECMP + 8 * hartid, mmio_r64(CLINT_MTIME) + 500);
  wait_for(MIP_MTIP);
  mmio_w64(CLINT_MTIMECMP + 8 * hartid, ~0UL);
  __atomic_fetch_add(&timers_fired, 1, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&finished, 1, __ATOMIC_SEQ_CST);

  /* Then an IPI from hart 0. */
  wait_for(MIP_MSIP);
  mmio_w32(CLINT_MSIP + 4 * hartid, 0);
  __atomic_fetch_add(&ipis_taken, 1, __ATOMIC_SEQ_CST);
}

int main(u64 hartid, u64 dtb) {
  u32 harts = count_cpus((const u8 *)dtb);
  puts_("harts in the device tree: ");
  put_udec(harts);
  nl();
  if (harts == 0 || harts > MAX_HARTS)
    rt_exit(5);
  check("hart id in a0", hartid, 0);
  /* Hart 0's own timer stays quiet. */
  mmio_w64(CLINT_MTIMECMP, ~0UL);
  __atomic_store_n(&ready, 2, __ATOMIC_SEQ_CST);

  count_up();
  while (__atomic_load_n(&finished, __ATOMIC_SEQ_CST) != harts - 1)
    ;
  check("harts arrived", arrived, harts - 1);
  check("AMO increments", amo_counter, (u64)harts * ROUNDS);
  check("LR/SC increments", lrsc_counter, (u64)harts * ROUNDS);
  check("timers fired", timers_fired, harts - 1);
  check("mhartid = a0 on every hart", id_mismatches, 0);

  for (u32 h = 1; h < harts; h++)
    mmio_w32(CLINT_MSIP + 4 * h, 1);
  while (__atomic_load_n(&ipis_taken, __ATOMIC_SEQ_CST) != harts - 1)
    ;
  check("IPIs taken", ipis_taken, harts - 1);
  for (u32 h = 0; h < harts; h++)
    check_q("msip cleared", mmio_r32(CLINT_MSIP + 4 * h), 0);
  finish();
}
