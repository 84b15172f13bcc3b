/* For the TLB tests (tests/snapshots.rs): reads one virtual page while its page-table entry
 * points elsewhere, changed without sfence.vma. Which page a read sees then depends on what
 * the hart's TLB holds, as on hardware; Rewind must give the same answer in every run, with
 * a watchpoint on the page or without, and after restoring a snapshot taken in the middle.
 *   phase 1: one address space, the entry changed under a cached translation;
 *   phase 2: two address spaces (ASIDs 1 and 2), switching satp between them, the entry of
 *            the one not current changed.
 * Each prints how many of its reads went through the old translation; every read goes into
 * `trail`, so memory differs when one read differs. */
#include "rt.h"

#define PTE_V 0x1UL
#define PTE_R 0x2UL
#define PTE_W 0x4UL
#define PTE_X 0x8UL
#define PTE_A 0x40UL
#define PTE_D 0x80UL
#define DATA (PTE_V | PTE_R | PTE_W | PTE_A | PTE_D)
static u64 pte(u64 pa, u64 fl) { return ((pa >> 12) << 10) | fl; }

static u64 root_a[512] __attribute__((aligned(4096)));
static u64 root_b[512] __attribute__((aligned(4096)));
static u64 l1_a[512] __attribute__((aligned(4096)));
static u64 l1_b[512] __attribute__((aligned(4096)));
static u64 l0_a[512] __attribute__((aligned(4096)));
static u64 l0_b[512] __attribute__((aligned(4096)));
static u64 old_page[512] __attribute__((aligned(4096)));
static u64 new_page[512] __attribute__((aligned(4096)));

#define VA 0x40000000UL
#define OLD 0x01d01d01d01d01d0UL
#define NEW 0x0e00e00e00e00e00UL
#define ROUNDS 20000
static u64 trail[ROUNDS];

static u64 satp_of(u64 *root, u64 asid) { return (8UL << 60) | (asid << 44) | ((u64)root >> 12); }
static u64 read_va(void) { return *(volatile u64 *)VA; }
static void sfence_all(void) { asm volatile("sfence.vma" ::: "memory"); }

static u64 phase1(u64 rounds) {
  CSR_WRITE(satp, satp_of(root_a, 1));
  sfence_all();
  u64 stale = 0;
  (void)read_va(); /* caches VA -> old_page */
  l0_a[0] = pte((u64)new_page, DATA);
  for (u64 i = 0; i < rounds; i++) {
    u64 v = read_va();
    stale += v == OLD;
    trail[i] = v;
  }
  sfence_all();
  return read_va() == NEW ? stale : ~0UL;
}

static u64 phase2(u64 rounds) {
  l0_a[0] = pte((u64)old_page, DATA);
  CSR_WRITE(satp, satp_of(root_a, 1));
  sfence_all();
  (void)read_va();
  CSR_WRITE(satp, satp_of(root_b, 2));
  (void)read_va();
  l0_a[0] = pte((u64)new_page, DATA); /* the entry of the address space not current */
  u64 stale = 0;
  for (u64 i = 0; i < rounds; i++) {
    CSR_WRITE(satp, satp_of(root_a, 1));
    u64 v = read_va();
    stale += v == OLD;
    trail[i] += v;
    CSR_WRITE(satp, satp_of(root_b, 2));
    trail[i] += read_va();
  }
  asm volatile("sfence.vma zero, %0" ::"r"(1UL) : "memory"); /* ASID 1 only */
  CSR_WRITE(satp, satp_of(root_a, 1));
  return read_va() == NEW ? stale : ~0UL;
}

static void report(const char *name, u64 stale) {
  puts_(name);
  put_udec(stale);
  puts_(" of ");
  put_udec(ROUNDS);
  puts_(" reads through the old translation\n");
}

int main(void) {
  pmp_allow_all();
  for (u64 *root = root_a; root; root = root == root_a ? root_b : 0) {
    root[0] = pte(0, DATA);                            /* devices */
    root[2] = pte(0x80000000UL, DATA | PTE_X);         /* RAM, identity */
  }
  root_a[1] = pte((u64)l1_a, PTE_V);
  root_b[1] = pte((u64)l1_b, PTE_V);
  l1_a[0] = pte((u64)l0_a, PTE_V);
  l1_b[0] = pte((u64)l0_b, PTE_V);
  l0_a[0] = pte((u64)old_page, DATA);
  l0_b[0] = pte((u64)new_page, DATA);
  old_page[0] = OLD;
  new_page[0] = NEW;

  trap_reset();
  u64 stale1 = enter_mode(PRV_S, phase1, ROUNDS, 0);
  expect_no_trap("phase 1");
  report("phase 1: ", stale1);
  trap_reset();
  u64 stale2 = enter_mode(PRV_S, phase2, ROUNDS, 0);
  expect_no_trap("phase 2");
  report("phase 2: ", stale2);
  CSR_WRITE(satp, 0);
  u64 sum = 0;
  for (u64 i = 0; i < ROUNDS; i++) sum += trail[i];
  puts_("trail sum ");
  put_hex(sum);
  nl();
  return stale1 == ~0UL || stale2 == ~0UL;
}
