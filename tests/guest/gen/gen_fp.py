#!/usr/bin/env python3
"""Generates progs/fp_cases.h: F/D test vectors + executors.

Expected results/flags come from gen/fpmodel.py (exact rational arithmetic),
independent of any emulator. Run by the Makefile: python3 gen/gen_fp.py OUT/gen/fp_cases.h
"""
import itertools, os, sys, struct
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fpmodel as m
from fpmodel import S, D

RMS = ['rne', 'rtz', 'rdn', 'rup', 'rmm']

def f2b(x): return struct.unpack('<I', struct.pack('<f', x))[0]
def d2b(x): return struct.unpack('<Q', struct.pack('<d', x))[0]

S_VALS = [0x00000000, 0x80000000, 0x3f800000, 0xbf800000, 0x3fc00000, 0x40400000,
          0x00800000, 0x80800000, 0x007fffff, 0x00000001, 0x80000001, 0x7f7fffff, 0xff7fffff,
          0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffc00001,
          0x3f800001, 0x4b800000, 0x33800000, 0x3eaaaaab, 0xc0490fdb, 0x7f000000,
          0x0ca00000, 0x32ffffff]
D_VALS = [0x0000000000000000, 0x8000000000000000, 0x3ff0000000000000, 0xbff0000000000000,
          0x3ff8000000000000, 0x4008000000000000, 0x0010000000000000, 0x8010000000000000,
          0x000fffffffffffff, 0x0000000000000001, 0x8000000000000001, 0x7fefffffffffffff,
          0xffefffffffffffff, 0x7ff0000000000000, 0xfff0000000000000, 0x7ff8000000000000,
          0x7ff0000000000001, 0xfff8000000000001, 0x3ff0000000000001, 0x4340000000000000,
          0x3ca0000000000000, 0x3fd5555555555555, 0xc00921fb54442d18, 0x7fe0000000000000,
          0x2000000000000000, 0x1ff0000000000001]

# targeted pairs: rounding ties/near-ties, overflow, underflow, cancellation
S_PAIRS = [(0x3f800000, 0x33800000), (0x3f800000, 0x33800001), (0x3f800001, 0x33800000),
           (0xbf800000, 0xb3800000), (0xbf800001, 0xb3800000), (0x3f800000, 0xb3800000),
           (0x3f800000, 0x33000000), (0x3f800000, 0xb3000000), (0x7f7fffff, 0x73800000),
           (0x7f7fffff, 0x73000000), (0xff7fffff, 0xf3800000), (0x00800000, 0x80000001),
           (0x00800001, 0x80800000), (0x3f800000, 0xbf800000), (0x40000000, 0x3f000000),
           (0x1f800000, 0x1f800000), (0x1f000000, 0x20000001), (0x00ffffff, 0x3f000000),
           (0x00800001, 0x3f7ffffe), (0x007ffffe, 0x3f800001), (0x3f7fffff, 0x00800000),
           (0x40400000, 0x40e00000), (0x3f800000, 0x40400000), (0xbf800000, 0x40400000),
           (0x00000003, 0x3f000000), (0x00000001, 0x3f000000), (0x00000001, 0x3f400000)]
D_PAIRS = [(0x3ff0000000000000, 0x3ca0000000000000), (0x3ff0000000000000, 0x3ca0000000000001),
           (0x3ff0000000000001, 0x3ca0000000000000), (0xbff0000000000000, 0xbca0000000000000),
           (0x3ff0000000000000, 0xbca0000000000000), (0x3ff0000000000000, 0x3c90000000000000),
           (0x7fefffffffffffff, 0x7c90000000000000), (0x7fefffffffffffff, 0x7ca0000000000000),
           (0x0010000000000000, 0x8000000000000001), (0x3ff0000000000000, 0xbff0000000000000),
           (0x1ff0000000000000, 0x1ff0000000000000), (0x001fffffffffffff, 0x3fe0000000000000),
           (0x0010000000000001, 0x3feffffffffffffe), (0x3fefffffffffffff, 0x0010000000000000),
           (0x4008000000000000, 0x401c000000000000), (0x3ff0000000000000, 0x4008000000000000),
           (0x0000000000000003, 0x3fe0000000000000), (0x0000000000000001, 0x3fe8000000000000)]

# fma: a, b from FMA_*[:8], c from all of FMA_*
FMA_S = [0x00000000, 0x80000000, 0x3f800001, 0xbeaaaaab, 0x7f7fffff, 0x7f800000, 0x00800000,
         0x7f800001, 0xbf800000, 0x33800000, 0xff800000, 0x7fc00000]
FMA_D = [0x0000000000000000, 0x8000000000000000, 0x3ff0000000000001, 0xbfd5555555555555,
         0x7fefffffffffffff, 0x7ff0000000000000, 0x0010000000000000, 0x7ff0000000000001,
         0xbff0000000000000, 0x3ca0000000000000, 0xfff0000000000000, 0x7ff8000000000000]

CVT_S_EXTRA = [f2b(x) for x in [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, -0.25, 0.75, -0.75, 3.5,
                                 2147483520.0, 2147483648.0, -2147483648.0, -2147483904.0,
                                 4294967040.0, 4294967296.0, 9.2233715e18, 9.223372e18,
                                 -9.223372e18, -9.2233731e18, 1.8446743e19, 1.8446744e19, -1.0e30]]
CVT_D_EXTRA = [d2b(x) for x in [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, -0.25, 0.75, -0.75, 3.5,
                                 2147483647.5, 2147483647.0, 2147483648.0, -2147483648.5,
                                 -2147483649.0, -2147483648.0, 4294967295.5, 4294967296.0,
                                 9223372036854774784.0, 9223372036854775808.0,
                                 -9223372036854775808.0, -9223372036854777856.0,
                                 18446744073709549568.0, 18446744073709551616.0, -1e300, 0.9999999999999999]]
INT_VALS = [0, 1, 0xffffffffffffffff, 0x7fffffff, 0x80000000, 0xffffffff, 0x1000001, 0x1000003,
            0xffffffff80000000, 0xdeadbeef00000007, 0x20000000000001, 0x20000000000003,
            0x7fffffffffffffff, 0x8000000000000000, 0xfffffffffffffffe, 0x123456789abcdef1,
            0x7fffffc0, 0x7fffffbf, 0xfffffff0]

def box(x): return 0xffffffff00000000 | x

def rm_results(fn):
    res = [fn(rm) for rm in range(5)]
    return [r for r, _ in res], [f for _, f in res]

TABLES = []   # (name, asm, kind, nrm, cases) ; case = (a,b,c,[r],[f])

def add_table(name, asm, kind, has_rm, cases):
    TABLES.append((name, asm, kind, has_rm, cases))

def build():
    for fmt, vals, pairs, sfx in ((S, S_VALS, S_PAIRS, 's'), (D, D_VALS, D_PAIRS, 'd')):
        bx = box if fmt is S else (lambda x: x)
        rb = box if fmt is S else (lambda x: x)
        allpairs = list(itertools.product(vals, vals)) + pairs + [(b, a) for a, b in pairs]
        for op, fn in (('fadd', m.add), ('fsub', m.sub), ('fmul', m.mul), ('fdiv', m.div)):
            cases = []
            for a, b in allpairs:
                rs, fs = rm_results(lambda rm: fn(fmt, a, b, rm))
                cases.append((bx(a), bx(b), 0, [rb(r) for r in rs], fs))
            add_table(f'{op}_{sfx}', f'{op}.{sfx}', 'ff2', True, cases)
        sq = vals + [a for a, _ in pairs] + [b for _, b in pairs]
        if fmt is S:
            sq += [0x40000000, 0x3f800002, 0x3f7ffffe, 0x00000002, 0x7e800001]
        else:
            sq += [0x4000000000000000, 0x3ff0000000000002, 0x3feffffffffffffe, 0x0000000000000002]
        cases = []
        for a in dict.fromkeys(sq):
            rs, fs = rm_results(lambda rm: m.sqrt(fmt, a, rm))
            cases.append((bx(a), 0, 0, [rb(r) for r in rs], fs))
        add_table(f'fsqrt_{sfx}', f'fsqrt.{sfx}', 'ff1', True, cases)
        fvals = FMA_S if fmt is S else FMA_D
        triples = list(itertools.product(fvals[:8], fvals[:8], fvals))
        # near-cancellation fma cases (exact product matters)
        if fmt is S:
            triples += [(0x3f800001, 0x3f800001, 0xbf800002), (0x3f800001, 0x3f7fffff, 0xbf800000),
                        (0x5f800000, 0x5f800000, 0xff800000), (0x00800000, 0x3f000000, 0x80000000),
                        (0x3f800000, 0x00000001, 0x80000001), (0x00ffffff, 0x3f000000, 0x00000000)]
        else:
            triples += [(0x3ff0000000000001, 0x3ff0000000000001, 0xbff0000000000002),
                        (0x3ff0000000000001, 0x3fefffffffffffff, 0xbff0000000000000),
                        (0x0010000000000000, 0x3fe0000000000000, 0x8000000000000000)]
        for op, fn in (('fmadd', m.fmadd), ('fmsub', m.fmsub), ('fnmsub', m.fnmsub), ('fnmadd', m.fnmadd)):
            cases = []
            for a, b, c in triples:
                rs, fs = rm_results(lambda rm: fn(fmt, a, b, c, rm))
                cases.append((bx(a), bx(b), bx(c), [rb(r) for r in rs], fs))
            add_table(f'{op}_{sfx}', f'{op}.{sfx}', 'ff3', True, cases)
        # no-rm binary ops
        for op, fn in (('fmin', m.fmin), ('fmax', m.fmax),
                       ('fsgnj', lambda f, a, b: m.sgnj(f, a, b, 'j')),
                       ('fsgnjn', lambda f, a, b: m.sgnj(f, a, b, 'n')),
                       ('fsgnjx', lambda f, a, b: m.sgnj(f, a, b, 'x'))):
            cases = []
            for a, b in itertools.product(vals, vals):
                r, fl = fn(fmt, a, b)
                cases.append((bx(a), bx(b), 0, [rb(r)], [fl]))
            add_table(f'{op}_{sfx}', f'{op}.{sfx}', 'ff2n', False, cases)
        for op in ('eq', 'lt', 'le'):
            cases = []
            for a, b in itertools.product(vals, vals):
                r, fl = m.cmp(fmt, a, b, op)
                cases.append((bx(a), bx(b), 0, [r], [fl]))
            add_table(f'f{op}_{sfx}', f'f{op}.{sfx}', 'cmp', False, cases)
        cases = []
        for a in vals:
            r, fl = m.fclass(fmt, a)
            cases.append((bx(a), 0, 0, [r], [fl]))
        add_table(f'fclass_{sfx}', f'fclass.{sfx}', 'cls', False, cases)
        # float -> int
        cvals = vals + (CVT_S_EXTRA if fmt is S else CVT_D_EXTRA)
        for it, bits, signed in (('w', 32, True), ('wu', 32, False), ('l', 64, True), ('lu', 64, False)):
            cases = []
            for a in cvals:
                rs, fs = rm_results(lambda rm: m.to_int(fmt, a, rm, bits, signed))
                cases.append((bx(a), 0, 0, rs, fs))
            add_table(f'fcvt_{it}_{sfx}', f'fcvt.{it}.{sfx}', 'fi', True, cases)
        # int -> float
        for it, bits, signed in (('w', 32, True), ('wu', 32, False), ('l', 64, True), ('lu', 64, False)):
            exact = fmt is D and bits == 32
            cases = []
            for x in INT_VALS:
                rs, fs = rm_results(lambda rm: m.from_int(fmt, x, rm, bits, signed))
                if exact:
                    assert len(set(rs)) == 1 and fs == [0] * 5
                    cases.append((x, 0, 0, [rb(rs[0])], [fs[0]]))
                else:
                    cases.append((x, 0, 0, [rb(r) for r in rs], fs))
            add_table(f'fcvt_{sfx}_{it}', f'fcvt.{sfx}.{it}', 'if' if not exact else 'ifn', not exact, cases)
    # fcvt.s.d / fcvt.d.s
    cases = []
    for a in D_VALS + [d2b(x) for x in (1.0 + 2**-24, 1.0 + 2**-24 + 2**-52, 1 + 3 * 2**-24, 3.4028235677973366e38,
                                         3.4028234663852886e38 + 2**103, 1.1754942807573643e-38,
                                         1.1754943508222875e-38 - 2**-151, 1.401298464324817e-45 / 2,
                                         1.401298464324817e-45 * 0.75, 1e-50, -1e-50, 1e40)]:
        rs, fs = rm_results(lambda rm: m.cvt_fmt(S, D, a, rm))
        cases.append((a, 0, 0, [box(r) for r in rs], fs))
    add_table('fcvt_s_d', 'fcvt.s.d', 'ff1', True, cases)
    cases = []
    for a in S_VALS:
        r, fl = m.cvt_fmt(D, S, a, 0)
        cases.append((box(a), 0, 0, [r], [fl]))
    add_table('fcvt_d_s', 'fcvt.d.s', 'ff1n', False, cases)


def asm_body(kind, asm, rm):
    """inline asm for one executor variant; returns C statement"""
    rmx = f', {rm}' if rm else ''
    pre = 'csrw fflags, %5\\n\\t'
    post = '\\n\\tcsrr %1, fflags'
    ins = 'fmv.d.x ft0, %2\\n\\tfmv.d.x ft1, %3\\n\\tfmv.d.x ft2, %4\\n\\t'
    if kind in ('ff2', 'ff2n'):
        body = f'{ins}{pre}{asm} ft3, ft0, ft1{rmx}\\n\\tfmv.x.d %0, ft3{post}'
    elif kind in ('ff1', 'ff1n'):
        body = f'{ins}{pre}{asm} ft3, ft0{rmx}\\n\\tfmv.x.d %0, ft3{post}'
    elif kind == 'ff3':
        body = f'{ins}{pre}{asm} ft3, ft0, ft1, ft2{rmx}\\n\\tfmv.x.d %0, ft3{post}'
    elif kind == 'cmp':
        body = f'{ins}{pre}{asm} %0, ft0, ft1{post}'
    elif kind == 'cls':
        body = f'{ins}{pre}{asm} %0, ft0{post}'
    elif kind == 'fi':
        body = f'{ins}{pre}{asm} %0, ft0{rmx}{post}'
    elif kind in ('if', 'ifn'):
        body = f'{pre}{asm} ft3, %2{rmx}\\n\\tfmv.x.d %0, ft3{post}'
    else:
        raise ValueError(kind)
    return (f'asm volatile("{body}" : "=&r"(r), "=&r"(f) : "r"(a), "r"(b), "r"(c), "r"(pre) '
            f': "ft0", "ft1", "ft2", "ft3");')


def emit(path):
    out = []
    p = out.append
    p('/* Generated by gen/gen_fp.py from gen/fpmodel.py -- do not edit. */')
    p('typedef struct { u64 a, b, c; u64 r[5]; u8 f[5]; } fcase_t;')
    p('typedef u64 (*fexec_t)(int rm, u64 a, u64 b, u64 c, u64 pre, u64 *fl);')
    for name, asm, kind, has_rm, cases in TABLES:
        p(f'static u64 x_{name}(int rm, u64 a, u64 b, u64 c, u64 pre, u64 *fl) {{')
        p('  u64 r, f;')
        if has_rm:
            p('  switch (rm) {')
            for i, rmn in enumerate(RMS + ['dyn']):
                p(f'  case {i}: {asm_body(kind, asm, rmn)} break;')
            p('  default: r = f = 0;')
            p('  }')
        else:
            p('  (void)rm;')
            p('  ' + asm_body(kind, asm, None))
        p('  *fl = f;')
        p('  return r;')
        p('}')
        p(f'static const fcase_t t_{name}[] = {{')
        for a, b, c, rs, fs in cases:
            rs = rs + [0] * (5 - len(rs))
            fs = fs + [0] * (5 - len(fs))
            p('  {0x%xUL, 0x%xUL, 0x%xUL, {%s}, {%s}},' % (
                a, b, c, ', '.join('0x%xUL' % r for r in rs), ', '.join(str(f) for f in fs)))
        p('};')
    p('#define FP_TABLES(X) \\')
    p(' \\\n'.join(f'  X({name}, "{asm}", {1 if has_rm else 0})' for name, asm, kind, has_rm, _ in TABLES))
    p('')
    with open(path, 'w') as fh:
        fh.write('\n'.join(out) + '\n')


build()
emit(sys.argv[1])
print(sum(len(t[4]) for t in TABLES), 'cases in', len(TABLES), 'tables')
