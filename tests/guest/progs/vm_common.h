/* Shared body of vm_sv39.c / vm_sv48.c (LEVELS = 3 or 4).
 * Page-table walks with 4K pages, 2M/1G (and 512G in Sv48) superpages, each
 * page-fault kind (fetch 12, load 13, store/AMO 15), permissions (R/W/X,
 * W-without-R, U vs SUM, MXR), misaligned superpages, non-leaf at level 0,
 * reserved PTE bits, non-canonical addresses, hardware A/D updates, sfence.vma after a PTE
 * change, MPRV/MPP translation of M-mode accesses, delegation of page faults. */
#include "rt.h"

#define PTE_V 0x1UL
#define PTE_R 0x2UL
#define PTE_W 0x4UL
#define PTE_X 0x8UL
#define PTE_U 0x10UL
#define PTE_G 0x20UL
#define PTE_A 0x40UL
#define PTE_D 0x80UL
static u64 pte(u64 pa, u64 fl) { return ((pa >> 12) << 10) | fl; }

static u64 root[512] __attribute__((aligned(4096)));
#if LEVELS == 4
static u64 l2[512] __attribute__((aligned(4096)));
#define TOP l2
#define SATP_MODE 9UL
#define MODE_NAME "sv48"
#else
#define TOP root
#define SATP_MODE 8UL
#define MODE_NAME "sv39"
#endif
static u64 l1[512] __attribute__((aligned(4096)));
static u64 l0[512] __attribute__((aligned(4096)));
static u64 l0b[512] __attribute__((aligned(4096)));
static u8 pages[8][4096] __attribute__((aligned(4096)));

#define UALIAS 0x40000000UL /* U-mode alias of RAM: VA = PA + UALIAS */
#define TV(i) (0x40000000UL + (u64)(i) * 0x1000)
#define MEGA_VA 0x40200000UL
#define MEGA_PA 0x80800000UL
#define MEGA_MISALIGNED_VA 0x40400000UL
#define MEGA_U_VA 0x40600000UL
#define NONLEAF0_VA 0x40800000UL
#define GIGA_RO_VA 0x100000000UL
#define GIGA_MISALIGNED_VA 0x140000000UL
#define MARK(i) (0xa0a0a0a0a0a0a0a0UL + (i))

static u64 epc_to_pa(u64 va) {
  return (va >= 0xc0000000UL && va < 0x100000000UL) ? va - UALIAS : va;
}

static void sfence_all(void) { asm volatile("sfence.vma" ::: "memory"); }

static void setup(void) {
  TOP[0] = pte(0x0, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D); /* devices */
  TOP[1] = pte((u64)l1, PTE_V);
  TOP[2] = pte(0x80000000UL, PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D | PTE_G);
  TOP[3] = pte(0x80000000UL, PTE_V | PTE_R | PTE_W | PTE_X | PTE_U | PTE_A | PTE_D);
  TOP[4] = pte(0x80000000UL, PTE_V | PTE_R | PTE_A);
  TOP[5] = pte(0x80200000UL, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D); /* misaligned 1G */
#if LEVELS == 4
  root[0] = pte((u64)l2, PTE_V);
  root[1] = pte(0x0, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);         /* 512G at 0x8000000000 */
  root[2] = pte(0x40000000UL, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D); /* misaligned 512G */
#endif
  l1[0] = pte((u64)l0, PTE_V);
  l1[1] = pte(MEGA_PA, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
  l1[2] = pte(MEGA_PA + 0x1000, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D); /* misaligned 2M */
  l1[3] = pte(MEGA_PA, PTE_V | PTE_R | PTE_W | PTE_U | PTE_A | PTE_D);
  l1[4] = pte((u64)l0b, PTE_V);
  l0b[0] = pte((u64)pages[0], PTE_V); /* pointer PTE at the last level */
  l0[0] = pte((u64)pages[0], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
  l0[1] = pte((u64)pages[1], PTE_V | PTE_R | PTE_A);
  l0[2] = pte((u64)pages[2], PTE_V | PTE_X | PTE_A);
  l0[3] = pte((u64)pages[3], PTE_V | PTE_W | PTE_A | PTE_D); /* reserved: W without R */
  l0[4] = pte((u64)pages[0], PTE_R | PTE_W | PTE_X);         /* V=0 */
  l0[5] = pte((u64)pages[0], PTE_V | PTE_R | PTE_W | PTE_U | PTE_A | PTE_D);
  l0[6] = pte((u64)pages[4], PTE_V | PTE_R | PTE_W);         /* A=0 D=0 */
  l0[7] = pte((u64)pages[5], PTE_V | PTE_R | PTE_X);         /* code, A=0 */
  l0[9] = pte((u64)pages[0], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
  l0[10] = pte((u64)pages[6], PTE_V | PTE_R | PTE_W | PTE_A); /* D=0 */
  l0[11] = pte((u64)pages[0], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D) | (1UL << 60); /* reserved */
  l0[13] = pte((u64)pages[0], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D) | (1UL << 62); /* PBMT, no Svpbmt */
  l0[14] = pte((u64)pages[0], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D) | (1UL << 63); /* N, no Svnapot */
  l0[15] = pte((u64)pages[0], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D) | (3UL << 8);  /* RSW: ignored */
  l0[12] = pte((u64)pages[2], PTE_V | PTE_X | PTE_U | PTE_A); /* user code */
  for (int i = 0; i < 8; i++) *(u64 *)pages[i] = MARK(i);
  /* li a0, 42 ; ret   and   li a0, 43 ; ret */
  ((u32 *)pages[2])[0] = 0x02a00513;
  ((u32 *)pages[2])[1] = 0x00008067;
  ((u32 *)pages[5])[0] = 0x02b00513;
  ((u32 *)pages[5])[1] = 0x00008067;
  *(volatile u64 *)(MEGA_PA + 0x1238) = 0x6d6567615f706167UL;
  asm volatile("fence.i" ::: "memory");
  CSR_WRITE(satp, (SATP_MODE << 60) | ((u64)root >> 12));
  sfence_all();
}

/* ---- guest helpers (S or U; all PC-relative so they work at the U alias) ---- */
static u64 g_ld(u64 a) {
  u64 v = 0;
  asm volatile("lla t0, 1f\n sd t0, 0(%1)\n1: ld %0, 0(%2)" : "+r"(v) : "r"(&pc_mark), "r"(a) : "t0", "memory");
  return v;
}
static u64 g_sd(u64 a) {
  asm volatile("lla t0, 1f\n sd t0, 0(%0)\n1: sd %1, 0(%2)" ::"r"(&pc_mark), "r"(0x5a5a5a5a5a5a5a5aUL), "r"(a)
               : "t0", "memory");
  return 0;
}
static u64 g_amo(u64 a) {
  u64 v = 0;
  asm volatile("lla t0, 1f\n sd t0, 0(%1)\n1: amoadd.d %0, %3, (%2)" : "+r"(v) : "r"(&pc_mark), "r"(a), "r"(1UL)
               : "t0", "memory");
  return v;
}
static u64 g_call(u64 a) {
  pc_mark = a;
  u64 r = ((u64(*)(void))a)();
  asm volatile("" ::: "memory");
  return r;
}
static u64 g_sfence_ld(u64 a) {
  asm volatile("sfence.vma %0, zero" ::"r"(a) : "memory");
  return g_ld(a);
}
static u64 u_ld(u64 a) { guest_exit(g_ld(a)); }
static u64 u_sd(u64 a) { guest_exit(g_sd(a)); }
static u64 u_call(u64 a) { guest_exit(g_call(a)); }

static u64 in_s(u64 (*fn)(u64), u64 a) {
  trap_reset();
  return enter_mode(PRV_S, fn, a, 0);
}
static u64 in_u(u64 (*fn)(u64), u64 a) {
  trap_reset();
  return enter_mode(PRV_U, (u64(*)(u64))((u64)fn + UALIAS), a, (u64)_guest_stack_top + UALIAS);
}
static void ok_val(const char *name, u64 got, u64 exp) {
  expect_no_trap(name);
  check("  value", got, exp);
}
static void pte_ad(const char *name, u64 p, u64 exp_ad) {
  check(name, p & (PTE_A | PTE_D), exp_ad);
}

static u64 mprv_ld(u64 mpp, u64 va) {
  u64 v = 0;
  CSR_CLEAR(mstatus, MSTATUS_MPP);
  CSR_SET(mstatus, mpp << 11);
  asm volatile("lla t0, 1f\n sd t0, 0(%1)\n li t1, %3\n csrs mstatus, t1\n"
               "1: ld %0, 0(%2)\n csrc mstatus, t1"
               : "+r"(v) : "r"(&pc_mark), "r"(va), "i"(MSTATUS_MPRV) : "t0", "t1", "memory");
  return v;
}

static u64 var_for_alias = 0x1234abcd5678ef90UL;

int main(void) {
  pmp_allow_all();
  rt_epc_to_pa = epc_to_pa;
  setup();
  puts_(MODE_NAME ": satp.MODE = ");
  put_udec(CSR_READ(satp) >> 60);
  nl();
  check("satp.MODE readback", CSR_READ(satp) >> 60, SATP_MODE);

  puts_("[translation]\n");
  ok_val("S load 4K page", in_s(g_ld, TV(0)), MARK(0));
  in_s(g_sd, TV(0) + 8);
  expect_no_trap("S store 4K page");
  check("  physical memory", *(u64 *)(pages[0] + 8), 0x5a5a5a5a5a5a5a5aUL);
  ok_val("S amoadd.d 4K page", in_s(g_amo, TV(0) + 8), 0x5a5a5a5a5a5a5a5aUL);
  check("  physical memory", *(u64 *)(pages[0] + 8), 0x5a5a5a5a5a5a5a5bUL);
  ok_val("S load 2M page", in_s(g_ld, MEGA_VA + 0x1238), 0x6d6567615f706167UL);
  u64 alias = GIGA_RO_VA + ((u64)&var_for_alias - 0x80000000UL);
  ok_val("S load 1G page (read-only alias)", in_s(g_ld, alias), 0x1234abcd5678ef90UL);
  in_s(g_sd, alias);
  expect1("S store to read-only 1G page", 15, alias, 'M', PRV_S);
  ok_val("S call X-only page", in_s(g_call, TV(2)), 42);
#if LEVELS == 4
  u64 tera = 0x8000000000UL + (u64)&var_for_alias;
  ok_val("S load 512G page", in_s(g_ld, tera), 0x1234abcd5678ef90UL);
  in_s(g_ld, 0x10000000000UL + 0x1000);
  expect1("S load misaligned 512G page", 13, 0x10000000000UL + 0x1000, 'M', PRV_S);
  in_s(g_ld, 0x800000000000UL);
  expect1("S load non-canonical (bit 47 set, upper clear)", 13, 0x800000000000UL, 'M', PRV_S);
  in_s(g_ld, 0x4000000000UL);
  expect1("S load canonical unmapped 0x4000000000", 13, 0x4000000000UL, 'M', PRV_S);
  in_s(g_ld, 0xffff800000000000UL);
  expect1("S load canonical unmapped 0xffff800000000000", 13, 0xffff800000000000UL, 'M', PRV_S);
#else
  in_s(g_ld, 0x4000000000UL);
  expect1("S load non-canonical (bit 38 set, upper clear)", 13, 0x4000000000UL, 'M', PRV_S);
  in_s(g_sd, 0x8000000080000000UL);
  expect1("S store non-canonical 0x8000000080000000", 15, 0x8000000080000000UL, 'M', PRV_S);
  in_s(g_ld, 0xffffffc000000000UL);
  expect1("S load canonical unmapped 0xffffffc000000000", 13, 0xffffffc000000000UL, 'M', PRV_S);
#endif

  puts_("[faults]\n");
  in_s(g_ld, TV(4));
  expect1("S load invalid PTE", 13, TV(4), 'M', PRV_S);
  in_s(g_sd, TV(4) + 0x10);
  expect1("S store invalid PTE", 15, TV(4) + 0x10, 'M', PRV_S);
  in_s(g_amo, TV(4) + 0x18);
  expect1("S amoadd invalid PTE", 15, TV(4) + 0x18, 'M', PRV_S);
  in_s(g_call, TV(4));
  expect1("S fetch invalid PTE", 12, TV(4), 'M', PRV_S);
  ok_val("S load read-only page", in_s(g_ld, TV(1)), MARK(1));
  in_s(g_sd, TV(1));
  expect1("S store read-only page", 15, TV(1), 'M', PRV_S);
  in_s(g_amo, TV(1));
  expect1("S amoadd read-only page", 15, TV(1), 'M', PRV_S);
  in_s(g_ld, TV(2));
  expect1("S load X-only page (MXR=0)", 13, TV(2), 'M', PRV_S);
  CSR_SET(mstatus, MSTATUS_MXR);
  ok_val("S load X-only page (MXR=1)", in_s(g_ld, TV(2)), 0x0000806702a00513UL);
  CSR_CLEAR(mstatus, MSTATUS_MXR);
  in_s(g_sd, TV(2));
  expect1("S store X-only page", 15, TV(2), 'M', PRV_S);
  in_s(g_call, TV(0));
  expect1("S fetch non-X page", 12, TV(0), 'M', PRV_S);
  in_s(g_ld, TV(3));
  expect1("S load W-without-R PTE", 13, TV(3), 'M', PRV_S);
  in_s(g_sd, TV(3));
  expect1("S store W-without-R PTE", 15, TV(3), 'M', PRV_S);
  in_s(g_ld, TV(11) + 8);
  expect1("S load PTE with reserved bit 60", 13, TV(11) + 8, 'M', PRV_S);
  in_s(g_ld, TV(13));
  expect1("S load PTE with bit 62 (PBMT unsupported)", 13, TV(13), 'M', PRV_S);
  in_s(g_sd, TV(14));
  expect1("S store PTE with bit 63 (N unsupported)", 15, TV(14), 'M', PRV_S);
  ok_val("S load PTE with RSW bits set", in_s(g_ld, TV(15)), MARK(0));
  in_s(g_ld, MEGA_MISALIGNED_VA + 0x10);
  expect1("S load misaligned 2M page", 13, MEGA_MISALIGNED_VA + 0x10, 'M', PRV_S);
  in_s(g_ld, GIGA_MISALIGNED_VA);
  expect1("S load misaligned 1G page", 13, GIGA_MISALIGNED_VA, 'M', PRV_S);
  in_s(g_ld, NONLEAF0_VA);
  expect1("S load via pointer PTE at level 0", 13, NONLEAF0_VA, 'M', PRV_S);

  puts_("[U bit, SUM]\n");
  in_s(g_ld, TV(5));
  expect1("S load U page, SUM=0", 13, TV(5), 'M', PRV_S);
  in_s(g_sd, TV(5));
  expect1("S store U page, SUM=0", 15, TV(5), 'M', PRV_S);
  in_s(g_ld, MEGA_U_VA + 0x1238);
  expect1("S load U 2M page, SUM=0", 13, MEGA_U_VA + 0x1238, 'M', PRV_S);
  CSR_SET(mstatus, MSTATUS_SUM);
  ok_val("S load U page, SUM=1", in_s(g_ld, TV(5)), MARK(0));
  in_s(g_sd, TV(5) + 16);
  expect_no_trap("S store U page, SUM=1");
  ok_val("S load U 2M page, SUM=1", in_s(g_ld, MEGA_U_VA + 0x1238), 0x6d6567615f706167UL);
  in_s(g_call, TV(12));
  expect1("S fetch U page, SUM=1", 12, TV(12), 'M', PRV_S);
  CSR_CLEAR(mstatus, MSTATUS_SUM);
  /* The translations made while SUM was set must not outlive it. */
  in_s(g_ld, TV(5));
  expect1("S load U page, SUM cleared again", 13, TV(5), 'M', PRV_S);
  in_s(g_sd, TV(5) + 16);
  expect1("S store U page, SUM cleared again", 15, TV(5) + 16, 'M', PRV_S);
  CSR_SET(sstatus, MSTATUS_SUM);
  ok_val("S load U page, SUM set again", in_s(g_ld, TV(5)), MARK(0));
  CSR_CLEAR(sstatus, MSTATUS_SUM);
  ok_val("U load U page", in_u(u_ld, TV(5)), MARK(0));
  in_u(u_sd, TV(5) + 24);
  expect_no_trap("U store U page");
  check("  physical memory", *(u64 *)(pages[0] + 24), 0x5a5a5a5a5a5a5a5aUL);
  ok_val("U call U code page", in_u(u_call, TV(12)), 42);
  in_u(u_ld, TV(0));
  expect1("U load S page", 13, TV(0), 'M', PRV_U);
  in_u(u_sd, TV(0));
  expect1("U store S page", 15, TV(0), 'M', PRV_U);
  in_u(u_call, TV(2));
  expect1("U fetch S code page", 12, TV(2), 'M', PRV_U);
  in_u(u_ld, TV(2) + UALIAS); /* TV(2)+UALIAS = 0x80002000: S-only identity RAM */
  expect1("U load S gigapage", 13, TV(2) + UALIAS, 'M', PRV_U);

  puts_("[A/D bits]\n");
  pte_ad("PTE A/D before any access", l0[6], 0);
  ok_val("S load A=0 page", in_s(g_ld, TV(6)), MARK(4));
  pte_ad("PTE A/D after load", l0[6], PTE_A);
  in_s(g_sd, TV(6) + 8);
  expect_no_trap("S store A=1 D=0 page");
  pte_ad("PTE A/D after store", l0[6], PTE_A | PTE_D);
  in_s(g_sd, TV(10));
  expect_no_trap("S store A=1 D=0 page");
  pte_ad("PTE A/D after store", l0[10], PTE_A | PTE_D);
  ok_val("S call code page with A=0", in_s(g_call, TV(7)), 43);
  pte_ad("PTE A/D after fetch", l0[7], PTE_A);
  check("non-leaf PTE unchanged", l1[0], pte((u64)l0, PTE_V));
  check("PPN/perm bits unchanged", l0[6] & ~(PTE_A | PTE_D), pte((u64)pages[4], PTE_V | PTE_R | PTE_W));

  puts_("[sfence.vma]\n");
  ok_val("load TV(9) -> page 0", in_s(g_ld, TV(9)), MARK(0));
  l0[9] = pte((u64)pages[1], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
  ok_val("after PTE change + sfence.vma va: page 1", in_s(g_sfence_ld, TV(9)), MARK(1));
  l0[9] = 0;
  in_s(g_sfence_ld, TV(9));
  expect1("after invalidating the PTE + sfence.vma va", 13, TV(9), 'M', PRV_S);
  l0[9] = pte((u64)pages[3], PTE_V | PTE_R | PTE_A);
  sfence_all();
  ok_val("after PTE change + M-mode sfence.vma", in_s(g_ld, TV(9)), MARK(3));

  puts_("[MPRV]\n");
  trap_reset();
  ok_val("M load with MPRV=1 MPP=S", mprv_ld(PRV_S, TV(1)), MARK(1));
  trap_reset();
  mprv_ld(PRV_U, TV(1));
  expect1("M load with MPRV=1 MPP=U of S page", 13, TV(1), 'M', PRV_M);
  trap_reset();
  ok_val("M load with MPRV=1 MPP=U of U page", mprv_ld(PRV_U, TV(5)), MARK(0));
  trap_reset();
  mprv_ld(PRV_S, TV(5));
  expect1("M load with MPRV=1 MPP=S of U page, SUM=0", 13, TV(5), 'M', PRV_M);
  trap_reset();
  ok_val("M load with MPRV=1 MPP=M (untranslated)", mprv_ld(PRV_M, (u64)pages[2] + 8), 0);
  CSR_CLEAR(mstatus, MSTATUS_MPRV | MSTATUS_MPP);

  puts_("[delegated page faults]\n");
  CSR_WRITE(stvec, (u64)_s_trap_entry);
  CSR_WRITE(medeleg, (1UL << 12) | (1UL << 13) | (1UL << 15));
  in_s(g_ld, TV(4) + 0x20);
  expect1("S load fault -> S", 13, TV(4) + 0x20, 'S', PRV_S);
  in_s(g_sd, TV(1) + 0x28);
  expect1("S store fault -> S", 15, TV(1) + 0x28, 'S', PRV_S);
  in_s(g_call, TV(4));
  expect1("S fetch fault -> S", 12, TV(4), 'S', PRV_S);
  in_u(u_ld, TV(0) + 0x30);
  expect1("U load fault -> S", 13, TV(0) + 0x30, 'S', PRV_U);
  CSR_WRITE(medeleg, 0);

  puts_("[bare]\n");
  CSR_WRITE(satp, 0);
  sfence_all();
  ok_val("S load with satp=bare (physical)", in_s(g_ld, (u64)pages[1]), MARK(1));
  finish();
}
