/* Rewind guest runtime: UART output, checks, exit, trap bookkeeping. */
#include "rt.h"

int rt_failures;
volatile trap_rec_t trap_log[TRAP_LOG_MAX];
volatile int trap_count;
volatile int trap_armed;
int (*m_trap_hook)(frame_t *f);
int (*s_trap_hook)(frame_t *f);
u64 (*rt_epc_to_pa)(u64 va);
volatile u64 pc_mark;
const char *const mode_name[4] = {"U", "S", "?", "M"};

void putch(int c) {
  volatile u8 *u = (volatile u8 *)UART0;
  while (!(u[5] & 0x20)) {
  }
  u[0] = (u8)c;
}
void puts_(const char *s) {
  while (*s) putch(*s++);
}
void nl(void) { putch('\n'); }
static const char hexd[] = "0123456789abcdef";
void put_hex(u64 v) {
  putch('0');
  putch('x');
  for (int i = 60; i >= 0; i -= 4) putch(hexd[(v >> i) & 15]);
}
void put_hexn(u64 v) {
  putch('0');
  putch('x');
  int started = 0;
  for (int i = 60; i >= 0; i -= 4) {
    int d = (v >> i) & 15;
    if (d || started || i == 0) {
      putch(hexd[d]);
      started = 1;
    }
  }
}
void put_udec(u64 v) {
  char b[24];
  int n = 0;
  do {
    b[n++] = '0' + v % 10;
    v /= 10;
  } while (v);
  while (n) putch(b[--n]);
}
void put_dec(i64 v) {
  if (v < 0) {
    putch('-');
    put_udec(-(u64)v);
  } else
    put_udec(v);
}

void fail_msg(const char *msg) {
  puts_("FAILED: ");
  puts_(msg);
  nl();
  rt_failures++;
}
void check(const char *name, u64 got, u64 exp) {
  puts_(name);
  puts_(" = ");
  put_hex(got);
  if (got != exp) {
    puts_("  MISMATCH, expected ");
    put_hex(exp);
    rt_failures++;
  }
  nl();
}
void check_q(const char *name, u64 got, u64 exp) {
  if (got != exp) {
    puts_(name);
    puts_(" = ");
    put_hex(got);
    puts_("  MISMATCH, expected ");
    put_hex(exp);
    nl();
    rt_failures++;
  }
}

void rt_exit(int code) {
  if (code == 0)
    mmio_w32(FINISHER, 0x5555);
  else
    mmio_w32(FINISHER, ((u32)(code & 0xffff) << 16) | 0x3333);
  for (;;) asm volatile("wfi");
}
void finish(void) {
#ifdef RT_PRINT_INSTRET /* measurement builds only: never in the transcript */
  puts_("instret ");
  put_udec(CSR_READ(minstret));
  nl();
#endif
  if (rt_failures) {
    puts_("FAIL (");
    put_udec(rt_failures);
    puts_(" checks failed)\n");
    rt_exit(1);
  }
  puts_("PASS\n");
  rt_exit(0);
}

/* ---- traps ---- */
int insn_len_at(u64 pc) {
  if (rt_epc_to_pa) pc = rt_epc_to_pa(pc);
  u16 lo = *(volatile u16 *)pc;
  return (lo & 3) == 3 ? 4 : 2;
}

void trap_reset(void) {
  trap_count = 0;
  for (int i = 0; i < TRAP_LOG_MAX; i++) {
    trap_log[i].cause = trap_log[i].epc = trap_log[i].tval = trap_log[i].status = 0;
    trap_log[i].to = 0;
  }
  trap_armed = 1;
}

static void unexpected(frame_t *f, char to) {
  puts_("UNEXPECTED TRAP to ");
  putch(to);
  puts_(": cause=");
  put_hexn(f->cause);
  puts_(" epc=");
  put_hexn(f->epc);
  puts_(" tval=");
  put_hexn(f->tval);
  nl();
  rt_exit(2);
}

static void log_trap(frame_t *f, char to) {
  if (!trap_armed) unexpected(f, to);
  if (trap_count >= TRAP_LOG_MAX) {
    puts_("too many traps\n");
    rt_exit(3);
  }
  volatile trap_rec_t *r = &trap_log[trap_count++];
  r->cause = f->cause;
  r->epc = f->epc;
  r->tval = f->tval;
  r->status = f->status;
  r->to = to;
}

static void skip_insn(frame_t *f) {
  u64 c = f->cause;
  if (c == 0 || c == 1 || c == 12)
    f->epc = f->x[1]; /* instruction fetch faults: return to caller */
  else
    f->epc += insn_len_at(f->epc);
}

void m_trap_c(frame_t *f) {
  if (m_trap_hook && m_trap_hook(f)) return;
  u64 c = f->cause;
  if (!(c >> 63) && (c == 8 || c == 9 || c == 11) && f->x[17] == MAGIC_EXIT) m_resume(f->x[10]);
  log_trap(f, 'M');
  if (c >> 63) {
    CSR_CLEAR(mie, 1UL << (c & 63));
    return;
  }
  skip_insn(f);
}

void s_trap_c(frame_t *f) {
  if (s_trap_hook && s_trap_hook(f)) return;
  u64 c = f->cause;
  if (!(c >> 63) && c == 8 && f->x[17] == MAGIC_EXIT) guest_exit(f->x[10]);
  log_trap(f, 'S');
  if (c >> 63) {
    CSR_CLEAR(sie, 1UL << (c & 63));
    return;
  }
  u64 old = CSR_READ(sstatus);
  CSR_SET(sstatus, MSTATUS_SUM | MSTATUS_MXR);
  skip_insn(f);
  CSR_WRITE(sstatus, old);
}

static int hide_tval;
void print_traps(const char *name) {
  trap_armed = 0;
  for (int i = 0; i < trap_count; i++) {
    volatile trap_rec_t *r = &trap_log[i];
    puts_(name);
    puts_(": trap to ");
    putch(r->to);
    puts_(" cause=");
    put_hexn(r->cause);
    if (!hide_tval) {
      puts_(" tval=");
      put_hexn(r->tval);
    }
    nl();
  }
  if (trap_count == 0) {
    puts_(name);
    puts_(": no trap\n");
  }
}

void pmp_allow_all(void) {
  CSR_WRITE(pmpaddr0, ~0UL >> 10);
  CSR_WRITE(pmpcfg0, 0x1f); /* NAPOT, RWX */
}

void *memset(void *d, int c, size_t n) {
  u8 *p = d;
  while (n--) *p++ = (u8)c;
  return d;
}
void *memcpy(void *d, const void *s, size_t n) {
  u8 *p = d;
  const u8 *q = s;
  while (n--) *p++ = *q++;
  return d;
}
void *memmove(void *d, const void *s, size_t n) {
  u8 *p = d;
  const u8 *q = s;
  if (p < q)
    while (n--) *p++ = *q++;
  else
    while (n--) p[n] = q[n];
  return d;
}
int memcmp(const void *a, const void *b, size_t n) {
  const u8 *p = a, *q = b;
  for (; n; n--, p++, q++)
    if (*p != *q) return *p - *q;
  return 0;
}

void expect_trap(const char *name, u64 cause, u64 tval) {
  int n = trap_count;
  u64 c = trap_log[0].cause, t = trap_log[0].tval;
  hide_tval = tval == TVAL_ANY;
  print_traps(name);
  hide_tval = 0;
  if (n != 1 || c != cause || (tval != TVAL_ANY && t != tval)) {
    puts_(name);
    puts_(": MISMATCH, expected exactly one trap cause=");
    put_hexn(cause);
    if (tval != TVAL_ANY) {
      puts_(" tval=");
      put_hexn(tval);
    }
    nl();
    rt_failures++;
  }
}

void expect_no_trap(const char *name) {
  int n = trap_count;
  trap_armed = 0;
  puts_(name);
  if (n) {
    puts_(": UNEXPECTED trap cause=");
    put_hexn(trap_log[0].cause);
    puts_(" tval=");
    put_hexn(trap_log[0].tval);
    rt_failures++;
  } else
    puts_(": no trap");
  nl();
}

static int from_of(volatile trap_rec_t *r) {
  return r->to == 'M' ? (int)((r->status >> 11) & 3) : (int)((r->status >> 8) & 1);
}

void expect1(const char *name, u64 cause, u64 tval, char to, int from) {
  volatile trap_rec_t *r = &trap_log[0];
  int n = trap_count;
  int got_from = n ? from_of(r) : -1;
  puts_(name);
  puts_(": ");
  if (n == 0) {
    puts_("no trap");
  } else {
    puts_("trap to ");
    putch(r->to);
    puts_(" cause=");
    put_hexn(r->cause);
    if (tval != TVAL_ANY) {
      puts_(" tval=");
      put_hexn(r->tval);
    }
    puts_(" from=");
    puts_(mode_name[got_from & 3]);
    puts_(r->epc == pc_mark ? " epc=ok" : " epc=WRONG");
    if (n > 1) {
      puts_(" (+");
      put_udec(n - 1);
      puts_(" more)");
    }
  }
  if (n != 1 || r->cause != cause || (tval != TVAL_ANY && r->tval != tval) || r->to != to ||
      got_from != from || r->epc != pc_mark) {
    puts_("  MISMATCH, expected trap to ");
    putch(to);
    puts_(" cause=");
    put_hexn(cause);
    if (tval != TVAL_ANY) {
      puts_(" tval=");
      put_hexn(tval);
    }
    puts_(" from=");
    puts_(mode_name[from]);
    rt_failures++;
  }
  nl();
  trap_armed = 0;
}

void departure(const char *name, int spec_ok, const char *spec_text, const char *other_text) {
  puts_(name);
  puts_(": ");
  puts_(spec_ok ? spec_text : other_text);
  nl();
}
