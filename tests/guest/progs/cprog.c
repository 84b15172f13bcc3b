/* A plain C program using a bit of everything: a varargs printf with its own
 * integer and floating-point formatting, recursion, structs (by value, in
 * trees and lists), function pointers, 64/128-bit integer math, bitfields,
 * unions, float/double math. Expected values were produced by building
 * this same file natively on x86-64 (cc -DHOST -ffp-contract=off). */
#ifdef HOST
#include <stdio.h>
#include <stdint.h>
#include <stdarg.h>
#include <string.h>
typedef uint64_t u64;
typedef int64_t i64;
typedef uint32_t u32;
typedef int32_t i32;
typedef uint8_t u8;
static void putch(int c) { putchar(c); }
static int rt_failures;
#else
#include <stdarg.h>
#include "rt.h"
#endif

#ifndef CPROG_CHECKSUM
#define CPROG_CHECKSUM 0x3e10695672ac8851UL /* from the native x86-64 build */
#endif

/* ---------------- mini printf ---------------- */
static void out_str(const char *s) {
  while (*s) putch(*s++);
}
static void out_u(u64 v, unsigned base, int width, char pad) {
  char b[72];
  int n = 0;
  do {
    b[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  while (n < width) b[n++] = pad;
  while (n) putch(b[--n]);
}
/* exact decimal rendering of a double with `prec` digits after the point,
 * rounding half away from zero, using 128-bit integer arithmetic */
static void out_f(double x, int prec) { /* prec <= 19 */
  union { double d; u64 u; } un = {x};
  if ((un.u >> 52 & 0x7ff) == 0x7ff) {
    out_str((un.u << 12) ? "nan" : (un.u >> 63) ? "-inf" : "inf");
    return;
  }
  if (un.u >> 63) {
    putch('-');
    x = -x;
  }
  u64 scale = 1;
  for (int i = 0; i < prec; i++) scale *= 10;
  /* x = m * 2^e exactly */
  un.d = x;
  int e = (int)(un.u >> 52 & 0x7ff);
  u64 m = un.u & ((1UL << 52) - 1);
  if (e) m |= 1UL << 52; else e = 1;
  e -= 1075;
  unsigned __int128 v = (unsigned __int128)m * scale;
  unsigned __int128 q;
  if (e >= 0) {
    q = v << e; /* values printed here are small enough */
  } else if (e > -120) {
    unsigned __int128 half = (unsigned __int128)1 << (-e - 1);
    q = (v + half) >> -e;
  } else {
    q = 0;
  }
  u64 ip = (u64)(q / scale), fp = (u64)(q % scale);
  out_u(ip, 10, 1, '0');
  if (prec) {
    putch('.');
    out_u(fp, 10, prec, '0');
  }
}
static void pf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      putch(*fmt);
      continue;
    }
    fmt++;
    int width = 0, prec = 6;
    char pad = ' ';
    if (*fmt == '0') pad = '0', fmt++;
    while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
    if (*fmt == '.') {
      prec = 0;
      fmt++;
      while (*fmt >= '0' && *fmt <= '9') prec = prec * 10 + (*fmt++ - '0');
    }
    switch (*fmt) {
      case 'd': {
        i64 v = va_arg(ap, i64);
        if (v < 0) {
          putch('-');
          out_u(-(u64)v, 10, width, pad);
        } else
          out_u(v, 10, width, pad);
        break;
      }
      case 'u': out_u(va_arg(ap, u64), 10, width, pad); break;
      case 'x': out_u(va_arg(ap, u64), 16, width, pad); break;
      case 's': out_str(va_arg(ap, const char *)); break;
      case 'c': putch(va_arg(ap, int)); break;
      case 'f': out_f(va_arg(ap, double), prec); break;
      case '%': putch('%'); break;
    }
  }
  va_end(ap);
}
static void expect(const char *what, u64 got, u64 exp) {
  if (got != exp) {
    pf("MISMATCH %s: got %x expected %x\n", what, got, exp);
    rt_failures++;
  }
}

/* ---------------- recursion ---------------- */
static u64 fib(int n) { return n < 2 ? (u64)n : fib(n - 1) + fib(n - 2); }
static u64 ack(u64 m, u64 n) {
  if (m == 0) return n + 1;
  if (n == 0) return ack(m - 1, 1);
  return ack(m - 1, ack(m, n - 1));
}
static int queens(int n, int row, u32 cols, u32 d1, u32 d2) {
  if (row == n) return 1;
  int c = 0;
  for (int i = 0; i < n; i++) {
    if ((cols >> i & 1) || (d1 >> (row + i) & 1) || (d2 >> (row - i + n) & 1)) continue;
    c += queens(n, row + 1, cols | 1u << i, d1 | 1u << (row + i), d2 | 1u << (row - i + n));
  }
  return c;
}

/* ---------------- structs ---------------- */
typedef struct { i64 x, y; } vec2;
typedef struct { vec2 a, b; double w; } seg;
static vec2 vadd(vec2 p, vec2 q) { return (vec2){p.x + q.x, p.y + q.y}; }
static seg seg_scale(seg s, i64 k) {
  s.a.x *= k; s.a.y *= k; s.b.x *= k; s.b.y *= k; s.w *= (double)k;
  return s;
}
typedef struct node { u64 key; struct node *l, *r; u32 height : 6, color : 1, pad : 25; } node;
static node pool[2000];
static int npool;
static node *insert(node *t, u64 key) {
  if (!t) {
    node *n = &pool[npool++];
    n->key = key; n->l = n->r = 0; n->height = 1; n->color = key & 1;
    return n;
  }
  if (key < t->key) t->l = insert(t->l, key);
  else t->r = insert(t->r, key);
  u32 hl = t->l ? t->l->height : 0, hr = t->r ? t->r->height : 0;
  u32 h = (hl > hr ? hl : hr) + 1;
  t->height = h > 63 ? 63 : h;
  return t;
}
static u64 walk(node *t, u64 acc) {
  if (!t) return acc;
  acc = walk(t->l, acc);
  acc = (acc * 31 + t->key) ^ t->color;
  return walk(t->r, acc);
}
static u64 rng_state = 0x9e3779b97f4a7c15UL;
static u64 rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
typedef int (*cmp_fn)(const void *, const void *);
static int cmp_i64(const void *a, const void *b) {
  i64 x = *(const i64 *)a, y = *(const i64 *)b;
  return x < y ? -1 : x > y;
}
static void isort(i64 *v, int n, cmp_fn cmp) {
  for (int i = 1; i < n; i++) {
    i64 t = v[i];
    int j = i - 1;
    while (j >= 0 && cmp(&v[j], &t) > 0) { v[j + 1] = v[j]; j--; }
    v[j + 1] = t;
  }
}

/* ---------------- integer math ---------------- */
static u64 gcd(u64 a, u64 b) { while (b) { u64 t = a % b; a = b; b = t; } return a; }
static u64 mulmod(u64 a, u64 b, u64 m) { return (u64)((unsigned __int128)a * b % m); }
static u64 powmod(u64 b, u64 e, u64 m) {
  u64 r = 1;
  for (b %= m; e; e >>= 1, b = mulmod(b, b, m))
    if (e & 1) r = mulmod(r, b, m);
  return r;
}
static int is_prime(u64 n) {
  if (n < 2) return 0;
  static const u64 ws[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
  u64 d = n - 1; int s = 0;
  while (!(d & 1)) { d >>= 1; s++; }
  for (int i = 0; i < 12; i++) {
    u64 a = ws[i] % n;
    if (!a) continue;
    u64 x = powmod(a, d, n);
    if (x == 1 || x == n - 1) continue;
    int comp = 1;
    for (int r = 1; r < s && comp; r++) { x = mulmod(x, x, n); if (x == n - 1) comp = 0; }
    if (comp) return 0;
  }
  return 1;
}

/* ---------------- floating point ---------------- */
static double my_sqrt(double x) {
  double g = x > 1 ? x / 2 : 1;
  for (int i = 0; i < 60; i++) g = 0.5 * (g + x / g);
  return g;
}
static double my_exp(double x) {
  double s = 1, t = 1;
  for (int i = 1; i < 40; i++) { t *= x / i; s += t; }
  return s;
}
static float fsum(int n) {
  float s = 0;
  for (int i = 1; i <= n; i++) s += 1.0f / (float)i;
  return s;
}
union pun { double d; u64 u; float f[2]; u32 w[2]; };

int main(void) {
  pf("cprog: mini printf %d %u %x %s %c %05d %%\n", (i64)-42, (u64)42, (u64)0xbeef, "str", 'z', (i64)7);
  u64 f25 = fib(25);
  pf("fib(25) = %u\n", f25);
  expect("fib", f25, 75025);
  u64 a = ack(2, 3) + ack(3, 3);
  pf("ack(2,3)+ack(3,3) = %u\n", a);
  expect("ack", a, 9 + 61);
  int q = queens(8, 0, 0, 0, 0);
  pf("8 queens: %d\n", (i64)q);
  expect("queens", q, 92);

  vec2 v = vadd((vec2){3, -4}, (vec2){-10, 20});
  seg s = seg_scale((seg){{1, 2}, {3, 4}, 0.5}, -3);
  pf("vadd = (%d,%d); seg = (%d,%d)-(%d,%d) w=%.3f\n", v.x, v.y, s.a.x, s.a.y, s.b.x, s.b.y, s.w);
  expect("vadd", (u64)(v.x * 1000 + v.y), (u64)(-7 * 1000 + 16));
  expect("seg", (u64)(s.a.x + s.b.y), (u64)(-3 + -12));

  node *root = 0;
  for (int i = 0; i < 1500; i++) root = insert(root, rng() % 100000);
  u64 w = walk(root, 0);
  pf("tree: %d nodes, height %u, walk %x\n", (i64)npool, (u64)root->height, w);

  i64 arr[300];
  for (int i = 0; i < 300; i++) arr[i] = (i64)(rng() % 2001) - 1000;
  isort(arr, 300, cmp_i64);
  int sorted = 1;
  u64 sh = 0;
  for (int i = 0; i < 300; i++) {
    if (i && arr[i - 1] > arr[i]) sorted = 0;
    sh = sh * 1000003 + (u64)arr[i];
  }
  pf("isort: sorted=%d min=%d max=%d hash=%x\n", (i64)sorted, arr[0], arr[299], sh);
  expect("sorted", sorted, 1);

  u64 g = gcd(0x123456789abcdefUL * 6, 0xfedcba987654321UL * 4);
  u64 pm = powmod(3, 1000000000000000000UL, 0x1fffffffffffffffUL);
  int primes = 0;
  for (u64 n = 0xffffffffffffff00UL; n != 0; n++) primes += is_prime(n);
  i64 neg = -7;
  pf("gcd=%u powmod=%x primes_near_2^64=%d div=%d rem=%d udiv=%u\n", g, pm, (i64)primes,
     neg / 2, neg % 3, (u64)0xffffffffffffffffUL / 10);
  unsigned __int128 big = (unsigned __int128)0xfedcba9876543210UL * 0x123456789abcdefUL;
  u64 bq = (u64)(big / 1000000007UL), br = (u64)(big % 1000000007UL);
  pf("u128: hi=%x lo=%x /p=%x %%p=%u\n", (u64)(big >> 64), (u64)big, bq, br);

  double r2 = my_sqrt(2.0), e1 = my_exp(1.0), em = my_exp(-2.5);
  float hs = fsum(1000);
  union pun p;
  p.d = r2;
  pf("sqrt2=%.15f e=%.15f exp(-2.5)=%.17f H1000f=%.6f\n", r2, e1, em, (double)hs);
  pf("bits sqrt2=%x e=%x h=%x\n", p.u, (union pun){.d = e1}.u, (u64)(union pun){.f = {hs, 0}}.w[0]);
  double acc = 0;
  for (int i = 0; i < 2000; i++) acc += (i & 1 ? -1.0 : 1.0) / (2 * i + 1);
  pf("pi~%.12f  (i64)(-2.7)=%d (u64)3.99=%u (i32)1e10 avoided, 1e300*1e300=%f\n", 4 * acc, (i64)(-2.7),
     (u64)3.99, 1e300 * 1e300);
  u64 chk = f25 ^ w ^ sh ^ g ^ pm ^ bq ^ br ^ p.u ^ (union pun){.d = e1}.u ^ (union pun){.d = em}.u ^
            (union pun){.d = acc}.u ^ (u64)(union pun){.f = {hs, 0}}.w[0];
  pf("checksum %x\n", chk);
  expect("checksum", chk, CPROG_CHECKSUM);
#ifdef HOST
  return rt_failures != 0;
#else
  finish();
#endif
}
