/* Rewind guest runtime: tiny freestanding support library. */
#ifndef RT_H
#define RT_H

typedef unsigned long u64;
typedef long i64;
typedef unsigned int u32;
typedef int i32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long size_t;

#define UART0 0x10000000UL
#define FINISHER 0x100000UL
#define CLINT 0x2000000UL
#define CLINT_MSIP (CLINT + 0x0)
#define CLINT_MTIMECMP (CLINT + 0x4000)
#define CLINT_MTIME (CLINT + 0xbff8)

#define MAGIC_EXIT 0x5245574eUL

/* privilege modes */
#define PRV_U 0
#define PRV_S 1
#define PRV_M 3

/* mstatus bits */
#define MSTATUS_SIE (1UL << 1)
#define MSTATUS_MIE (1UL << 3)
#define MSTATUS_SPIE (1UL << 5)
#define MSTATUS_UBE (1UL << 6)
#define MSTATUS_MPIE (1UL << 7)
#define MSTATUS_SPP (1UL << 8)
#define MSTATUS_MPP (3UL << 11)
#define MSTATUS_FS (3UL << 13)
#define MSTATUS_MPRV (1UL << 17)
#define MSTATUS_SUM (1UL << 18)
#define MSTATUS_MXR (1UL << 19)
#define MSTATUS_TVM (1UL << 20)
#define MSTATUS_TW (1UL << 21)
#define MSTATUS_TSR (1UL << 22)

#define IRQ_S_SOFT 1
#define IRQ_M_SOFT 3
#define IRQ_S_TIMER 5
#define IRQ_M_TIMER 7
#define IRQ_S_EXT 9
#define IRQ_M_EXT 11
#define CAUSE_INTR (1UL << 63)

#define CSR_READ(csr) ({ u64 __v; asm volatile("csrr %0, " #csr : "=r"(__v)::"memory"); __v; })
#define CSR_WRITE(csr, v) asm volatile("csrw " #csr ", %0" ::"rK"((u64)(v)) : "memory")
#define CSR_SET(csr, v) asm volatile("csrs " #csr ", %0" ::"rK"((u64)(v)) : "memory")
#define CSR_CLEAR(csr, v) asm volatile("csrc " #csr ", %0" ::"rK"((u64)(v)) : "memory")
#define CSR_SWAP(csr, v) ({ u64 __o; asm volatile("csrrw %0, " #csr ", %1" : "=r"(__o) : "rK"((u64)(v)) : "memory"); __o; })

static inline void mmio_w32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline u32 mmio_r32(u64 a) { return *(volatile u32 *)a; }
static inline void mmio_w64(u64 a, u64 v) { *(volatile u64 *)a = v; }
static inline u64 mmio_r64(u64 a) { return *(volatile u64 *)a; }

/* ---- output ---- */
void putch(int c);
void puts_(const char *s);          /* no newline appended */
void put_hex(u64 v);                /* 0x + 16 digits */
void put_hexn(u64 v);               /* 0x + minimal digits */
void put_dec(i64 v);
void put_udec(u64 v);
void nl(void);

/* ---- checks ---- */
extern int rt_failures;
/* prints "name = 0x..." and fails (records) if got != exp */
void check(const char *name, u64 got, u64 exp);
/* silent check: only prints on mismatch */
void check_q(const char *name, u64 got, u64 exp);
void fail_msg(const char *msg);
/* exit: 0 -> pass, otherwise fail with that code; never returns */
__attribute__((noreturn)) void rt_exit(int code);
/* prints PASS/FAIL summary and exits accordingly */
__attribute__((noreturn)) void finish(void);

/* ---- traps ---- */
typedef struct {
  u64 x[32];
  u64 epc, cause, tval, status;
} frame_t;

typedef struct {
  u64 cause, epc, tval, status; /* status = mstatus/sstatus after trap entry */
  u8 to;                        /* 'M' or 'S' */
} trap_rec_t;

#define TRAP_LOG_MAX 32
extern volatile trap_rec_t trap_log[TRAP_LOG_MAX];
extern volatile int trap_count;

void trap_reset(void);
/* optional per-test hooks: return nonzero when they handled the trap fully */
extern int (*m_trap_hook)(frame_t *f);
extern int (*s_trap_hook)(frame_t *f);
/* print "name: cause=.. tval=.. to=M" for every logged trap, one per line */
void print_traps(const char *name);
/* checks that exactly one trap was logged since trap_reset(), with this cause and tval */
void expect_trap(const char *name, u64 cause, u64 tval);
/* checks that no trap was logged since trap_reset() */
void expect_no_trap(const char *name);
extern volatile int trap_armed;
/* tval value for expect_trap/expect1 meaning "do not print or check tval" */
#define TVAL_ANY 0xdeadbeefdeadbeefUL

/* ---- privilege switching ---- */
u64 enter_mode(int mode, u64 (*fn)(u64), u64 arg, u64 sp);
void m_resume(u64 value) __attribute__((noreturn));
void guest_return(void);
/* leave a lower privilege mode from inside guest code (returns to enter_mode) */
static inline __attribute__((noreturn)) void guest_exit(u64 v) {
  register u64 a0 asm("a0") = v;
  register u64 a7 asm("a7") = MAGIC_EXIT;
  asm volatile("ecall" ::"r"(a0), "r"(a7));
  __builtin_unreachable();
}
void _m_trap_entry(void);
void _s_trap_entry(void);

/* PMP: allow all accesses for S/U (NAPOT over the whole address space) */
void pmp_allow_all(void);

/* optional: maps a trapping epc to the physical address the M handler reads
 * the instruction from (for code running at a non-identity virtual address) */
extern u64 (*rt_epc_to_pa)(u64 va);

/* address of the instruction a test expects to trap (set by MARKED) */
extern volatile u64 pc_mark;
extern const char *const mode_name[4];
/* runs `insn` (which may use %1 = the enclosing function's u64 `a`) after
 * recording its address in pc_mark */
#define MARKED(insn)                                                          \
  asm volatile("lla t0, 1f\n sd t0, 0(%0)\n1: " insn ::"r"(&pc_mark), "r"(a)  \
               : "t0", "t1", "a7", "memory")
/* Checks that exactly one trap was logged since trap_reset(): taken to `to`
 * ('M'/'S') from privilege `from`, with this cause and tval (or TVAL_ANY),
 * and epc == pc_mark. Prints one line; counts a failure on mismatch. */
void expect1(const char *name, u64 cause, u64 tval, char to, int from);
/* A corner where QEMU departs from the spec (an entry of docs/qemu-departures.md):
 * prints "name: spec_text" when spec_ok, else "name: other_text", and never counts a
 * failure: tests/guest_programs.rs allows exactly these documented line pairs to differ. */
void departure(const char *name, int spec_ok, const char *spec_text, const char *other_text);
#define CSRR_T0(csr) (((u64)(csr) << 20) | 0x22f3UL) /* encoding of csrr t0, csr */

/* read instruction length at address */
int insn_len_at(u64 pc);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

extern char _guest_stack_top[], _stack_top[], _end[];

#endif
