/* F and D arithmetic against an exact reference model (gen/fpmodel.py):
 * add/sub/mul/div/sqrt, the four fused multiply-adds, min/max (sNaN rules),
 * sign injection, compares, fclass, every fcvt between int/f32/f64.
 * Every rounding op runs in all five static rounding modes (rm field) and
 * again with rm=dyn and each mode in frm. Result bits (including NaN-boxing
 * of f32 results) and fflags are compared, each case once with fflags clear and
 * once with inexact already accrued (where emulators take host-FP shortcuts). */
#include "rt.h"
#include "fp_cases.h"

#define FLAG_NX 1

static const char *rmname[5] = {"rne", "rtz", "rdn", "rup", "rmm"};
static u64 hash;
static void mixv(u64 v) { hash = (hash ^ v) * 0x100000001b3UL; }

static void report(const char *name, const char *mode, const fcase_t *c, u64 r, u64 f, u64 er, u64 ef) {
  puts_("MISMATCH ");
  puts_(name);
  putch(' ');
  puts_(mode);
  puts_(" a=");
  put_hexn(c->a);
  puts_(" b=");
  put_hexn(c->b);
  puts_(" c=");
  put_hexn(c->c);
  puts_(" -> ");
  put_hexn(r);
  puts_(" fflags=");
  put_hexn(f);
  puts_(" expected ");
  put_hexn(er);
  puts_(" fflags=");
  put_hexn(ef);
  nl();
}

static void run(const char *name, fexec_t x, const fcase_t *t, int n, int has_rm) {
  int bad = 0;
  hash = 0xcbf29ce484222325UL;
  for (int i = 0; i < n; i++) {
    const fcase_t *c = &t[i];
    int nrm = has_rm ? 5 : 1;
    for (int rm = 0; rm < nrm * 2; rm++) {
      u64 pre = rm / nrm ? FLAG_NX : 0, ef = c->f[rm % nrm] | pre, er = c->r[rm % nrm];
      u64 f, r = x(rm % nrm, c->a, c->b, c->c, pre, &f);
      mixv(r);
      mixv(f);
      if (r != er || f != ef) {
        if (bad++ < 6) report(name, has_rm ? rmname[rm % nrm] : "-", c, r, f, er, ef);
      }
      if (has_rm) { /* same via frm + rm=dyn */
        CSR_WRITE(frm, rm % nrm);
        r = x(5, c->a, c->b, c->c, pre, &f);
        if (r != er || f != ef) {
          if (bad++ < 6) report(name, "dyn", c, r, f, er, ef);
        }
        if (CSR_READ(frm) != (u64)(rm % nrm)) {
          if (bad++ < 6) fail_msg("frm changed by an instruction");
        }
        CSR_WRITE(frm, 0);
      }
    }
  }
  puts_(name);
  puts_(": ");
  put_udec(n);
  puts_(has_rm ? " cases x 5 rm (static+dyn) x 2 fflags, hash " : " cases x 2 fflags, hash ");
  put_hex(hash);
  if (bad) {
    puts_("  FAILED (");
    put_udec(bad);
    puts_(" mismatches)");
    rt_failures++;
  }
  nl();
}

#define RUN(name, asmname, has_rm) run(asmname, x_##name, t_##name, sizeof(t_##name) / sizeof(t_##name[0]), has_rm);

int main(void) {
  FP_TABLES(RUN)
  finish();
}
