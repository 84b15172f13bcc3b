"""Exact-rational reference model of RISC-V F/D arithmetic (IEEE 754-2008 with
RISC-V's choices: canonical NaN results, tininess detected after rounding,
fmin/fmax = minimumNumber/maximumNumber (2.2), fcvt saturation).
Values are bit patterns (ints); results are (bits, fflags)."""
from fractions import Fraction as F

NV, DZ, OF, UF, NX = 16, 8, 4, 2, 1
RNE, RTZ, RDN, RUP, RMM = 0, 1, 2, 3, 4


class Fmt:
    def __init__(self, name, ebits, p):
        self.name, self.ebits, self.p = name, ebits, p
        self.bits = ebits + p
        self.bias = (1 << (ebits - 1)) - 1
        self.emax = self.bias
        self.emin = 1 - self.bias
        self.mmask = (1 << (p - 1)) - 1
        self.emask = (1 << ebits) - 1
        self.sbit = 1 << (self.bits - 1)
        self.qnan = (self.emask << (p - 1)) | (1 << (p - 2))
        self.inf = self.emask << (p - 1)
        self.maxf = ((self.emask - 1) << (p - 1)) | self.mmask


S = Fmt('s', 8, 24)
D = Fmt('d', 11, 53)


def decode(fmt, b):
    """-> (kind, sign, value) kind in zero/sub/norm/inf/qnan/snan"""
    s = (b >> (fmt.bits - 1)) & 1
    e = (b >> (fmt.p - 1)) & fmt.emask
    m = b & fmt.mmask
    if e == fmt.emask:
        if m == 0:
            return 'inf', s, None
        return ('qnan' if m >> (fmt.p - 2) else 'snan'), s, None
    if e == 0:
        if m == 0:
            return 'zero', s, F(0)
        return 'sub', s, F(m) * F(2) ** (fmt.emin - (fmt.p - 1))
    return 'norm', s, F(m | (1 << (fmt.p - 1))) * F(2) ** (e - fmt.bias - (fmt.p - 1))


def isnan(k):
    return k in ('qnan', 'snan')


def ilog2(a):
    """floor(log2(a)) for positive Fraction a"""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if F(2) ** e > a:
        e -= 1
    elif F(2) ** (e + 1) <= a:
        e += 1
    return e


def round_int(m, neg, rm):
    """round positive Fraction magnitude m to an integer according to rm
    (neg = sign of the true value)."""
    fl = m.numerator // m.denominator
    frac = m - fl
    if frac == 0:
        return fl
    if rm == RNE:
        if frac > F(1, 2) or (frac == F(1, 2) and fl & 1):
            return fl + 1
        return fl
    if rm == RMM:
        return fl + 1 if frac >= F(1, 2) else fl
    if rm == RTZ:
        return fl
    if rm == RDN:
        return fl + 1 if neg else fl
    if rm == RUP:
        return fl if neg else fl + 1
    raise ValueError(rm)


def encode(fmt, neg, v):
    """exact representable magnitude v -> bits"""
    s = fmt.sbit if neg else 0
    if v == 0:
        return s
    e = ilog2(v)
    if e < fmt.emin:
        m = v / F(2) ** (fmt.emin - (fmt.p - 1))
        assert m.denominator == 1
        return s | int(m)
    m = v / F(2) ** (e - (fmt.p - 1))
    assert m.denominator == 1 and (1 << (fmt.p - 1)) <= m < (1 << fmt.p)
    return s | ((e + fmt.bias) << (fmt.p - 1)) | (int(m) & fmt.mmask)


def round_val(fmt, neg, a, rm):
    """round exact nonzero magnitude a (Fraction > 0) -> (bits, flags)"""
    assert a > 0
    e = ilog2(a)
    # tininess after rounding: round to p bits with unbounded exponent
    mu = round_int(a / F(2) ** (e - (fmt.p - 1)), neg, rm)
    vu = mu * F(2) ** (e - (fmt.p - 1))
    tiny = vu < F(2) ** fmt.emin
    q = F(2) ** (max(e, fmt.emin) - (fmt.p - 1))
    m = a / q
    M = round_int(m, neg, rm)
    inexact = M != m
    v = M * q
    flags = NX if inexact else 0
    if v >= F(2) ** (fmt.emax + 1):
        flags = OF | NX
        to_inf = rm in (RNE, RMM) or (rm == RUP and not neg) or (rm == RDN and neg)
        bits = fmt.inf if to_inf else fmt.maxf
        return bits | (fmt.sbit if neg else 0), flags
    if tiny and inexact:
        flags |= UF
    return encode(fmt, neg, v), flags


def from_exact(fmt, x, rm, zero_sign=None):
    """x: exact Fraction result (signed). zero_sign used when x == 0."""
    if x == 0:
        return (fmt.sbit if zero_sign else 0), 0
    return round_val(fmt, x < 0, abs(x), rm)


def nan_result(fmt, *ops):
    fl = NV if any(decode(fmt, o)[0] == 'snan' for o in ops) else 0
    return fmt.qnan, fl


def val(kind, s, v):
    return -v if s else v


def add(fmt, a, b, rm, negb=False):
    ka, sa, va = decode(fmt, a)
    kb, sb, vb = decode(fmt, b)
    if negb:
        sb ^= 1
    if isnan(ka) or isnan(kb):
        return nan_result(fmt, a, b)
    if ka == 'inf' and kb == 'inf':
        if sa != sb:
            return fmt.qnan, NV
        return fmt.inf | (fmt.sbit if sa else 0), 0
    if ka == 'inf':
        return fmt.inf | (fmt.sbit if sa else 0), 0
    if kb == 'inf':
        return fmt.inf | (fmt.sbit if sb else 0), 0
    x = val(ka, sa, va) + val(kb, sb, vb)
    if x == 0:
        if ka == 'zero' and kb == 'zero' and sa == sb:
            zs = sa
        else:
            zs = 1 if rm == RDN else 0
        return from_exact(fmt, x, rm, zs)
    return from_exact(fmt, x, rm)


def sub(fmt, a, b, rm):
    return add(fmt, a, b, rm, negb=True)


def mul(fmt, a, b, rm):
    ka, sa, va = decode(fmt, a)
    kb, sb, vb = decode(fmt, b)
    if isnan(ka) or isnan(kb):
        return nan_result(fmt, a, b)
    s = sa ^ sb
    if (ka == 'inf' and kb == 'zero') or (kb == 'inf' and ka == 'zero'):
        return fmt.qnan, NV
    if ka == 'inf' or kb == 'inf':
        return fmt.inf | (fmt.sbit if s else 0), 0
    x = va * vb
    return from_exact(fmt, -x if s else x, rm, s)


def div(fmt, a, b, rm):
    ka, sa, va = decode(fmt, a)
    kb, sb, vb = decode(fmt, b)
    if isnan(ka) or isnan(kb):
        return nan_result(fmt, a, b)
    s = sa ^ sb
    sg = fmt.sbit if s else 0
    if ka == 'inf' and kb == 'inf':
        return fmt.qnan, NV
    if ka == 'zero' and kb == 'zero':
        return fmt.qnan, NV
    if ka == 'inf':
        return fmt.inf | sg, 0
    if kb == 'inf':
        return sg, 0
    if kb == 'zero':
        return fmt.inf | sg, DZ
    x = va / vb
    return from_exact(fmt, -x if s else x, rm, s)


def isqrt(n):
    import math
    return math.isqrt(n)


def sqrt(fmt, a, rm):
    ka, sa, va = decode(fmt, a)
    if isnan(ka):
        return nan_result(fmt, a)
    if ka == 'zero':
        return a, 0
    if sa:
        return fmt.qnan, NV
    if ka == 'inf':
        return a, 0
    # sqrt(va) with enough precision + sticky
    k = 2 * fmt.p + 20 - ilog2(va) // 2
    k = max(k, 0)
    n = va * F(4) ** k
    n_floor = n.numerator // n.denominator
    r = isqrt(n_floor)
    exact = (r * r == n) if n.denominator == 1 else False
    if exact:
        x = F(r, 2 ** k)
    else:
        x = F(2 * r + 1, 2 ** (k + 1))
    return round_val(fmt, False, x, rm)


def fma(fmt, a, b, c, rm, negp=False, negc=False):
    ka, sa, va = decode(fmt, a)
    kb, sb, vb = decode(fmt, b)
    kc, sc, vc = decode(fmt, c)
    if negc:
        sc ^= 1
    sp = sa ^ sb ^ (1 if negp else 0)
    inv_prod = (ka == 'inf' and kb == 'zero') or (ka == 'zero' and kb == 'inf')
    if isnan(ka) or isnan(kb) or isnan(kc):
        bits, fl = nan_result(fmt, a, b, c)
        if inv_prod:
            fl |= NV
        return bits, fl
    if inv_prod:
        return fmt.qnan, NV
    pinf = ka == 'inf' or kb == 'inf'
    if pinf and kc == 'inf' and sp != sc:
        return fmt.qnan, NV
    if pinf:
        return fmt.inf | (fmt.sbit if sp else 0), 0
    if kc == 'inf':
        return fmt.inf | (fmt.sbit if sc else 0), 0
    p = va * vb
    x = (-p if sp else p) + val(kc, sc, vc)
    if x == 0:
        if p == 0 and kc == 'zero' and sp == sc:
            zs = sp
        else:
            zs = 1 if rm == RDN else 0
        return from_exact(fmt, x, rm, zs)
    return from_exact(fmt, x, rm)


def fmadd(fmt, a, b, c, rm): return fma(fmt, a, b, c, rm)
def fmsub(fmt, a, b, c, rm): return fma(fmt, a, b, c, rm, negc=True)
def fnmsub(fmt, a, b, c, rm): return fma(fmt, a, b, c, rm, negp=True)
def fnmadd(fmt, a, b, c, rm): return fma(fmt, a, b, c, rm, negp=True, negc=True)


def minmax(fmt, a, b, is_max):
    ka, sa, va = decode(fmt, a)
    kb, sb, vb = decode(fmt, b)
    fl = NV if (ka == 'snan' or kb == 'snan') else 0
    if isnan(ka) and isnan(kb):
        return fmt.qnan, fl
    if isnan(ka):
        return b, fl
    if isnan(kb):
        return a, fl

    def key(k, s, v):
        if k == 'inf':
            return (F(-1) if s else F(1)) * F(2) ** 5000, 0
        return (val(k, s, v), 0 if s else 1)  # -0 < +0
    x, y = key(ka, sa, va), key(kb, sb, vb)
    if is_max:
        return (a if x >= y else b), fl
    return (a if x <= y else b), fl


def fmin(fmt, a, b): return minmax(fmt, a, b, False)
def fmax(fmt, a, b): return minmax(fmt, a, b, True)


def cmp(fmt, a, b, op):
    ka, sa, va = decode(fmt, a)
    kb, sb, vb = decode(fmt, b)
    if isnan(ka) or isnan(kb):
        sig = ka == 'snan' or kb == 'snan'
        return 0, (NV if (op != 'eq' or sig) else 0)

    def num(k, s, v):
        if k == 'inf':
            return (F(-1) if s else F(1)) * F(2) ** 5000
        return val(k, s, v)
    x, y = num(ka, sa, va), num(kb, sb, vb)
    return int({'eq': x == y, 'lt': x < y, 'le': x <= y}[op]), 0


def fclass(fmt, a):
    k, s, v = decode(fmt, a)
    idx = {('inf', 1): 0, ('norm', 1): 1, ('sub', 1): 2, ('zero', 1): 3,
           ('zero', 0): 4, ('sub', 0): 5, ('norm', 0): 6, ('inf', 0): 7}
    if k == 'snan':
        return 1 << 8, 0
    if k == 'qnan':
        return 1 << 9, 0
    return 1 << idx[(k, s)], 0


def sgnj(fmt, a, b, mode):
    sa = (a >> (fmt.bits - 1)) & 1
    sb = (b >> (fmt.bits - 1)) & 1
    s = {'j': sb, 'n': sb ^ 1, 'x': sa ^ sb}[mode]
    return (a & ~fmt.sbit) | (fmt.sbit if s else 0), 0


def to_int(fmt, a, rm, bits, signed):
    """-> (integer value as 64-bit pattern, sign-extended for 32-bit), flags"""
    k, s, v = decode(fmt, a)
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    if isnan(k):
        r, fl = hi, NV
    elif k == 'inf':
        r, fl = (lo if s else hi), NV
    else:
        mag = round_int(v, bool(s), rm) if v != 0 else 0
        r = -mag if s else mag
        if r < lo:
            r, fl = lo, NV
        elif r > hi:
            r, fl = hi, NV
        else:
            fl = NX if (v != 0 and F(mag) != v) else 0
    r &= (1 << bits) - 1
    if bits == 32 and r >> 31:
        r |= 0xffffffff00000000
    return r, fl


def from_int(fmt, x, rm, bits, signed):
    x &= (1 << bits) - 1
    if signed and x >> (bits - 1):
        x -= 1 << bits
    if x == 0:
        return 0, 0
    return round_val(fmt, x < 0, F(abs(x)), rm)


def cvt_fmt(dst, src, a, rm):
    k, s, v = decode(src, a)
    if isnan(k):
        return dst.qnan, (NV if k == 'snan' else 0)
    if k == 'inf':
        return dst.inf | (dst.sbit if s else 0), 0
    if k == 'zero':
        return (dst.sbit if s else 0), 0
    return round_val(dst, bool(s), v, rm)
