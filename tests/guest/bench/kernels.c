/* Bare-metal benchmark kernels, one per build (-DK_sha256, -DK_sort, -DK_chase_256k,
 * -DK_chase_16m, -DK_lz, -DK_nbody): ordinary work, each printing one checksum line that a
 * native build (cc -DHOST -O2 -ffp-contract=off -DK_...) must print too. bench/kernels.py
 * runs them under Rewind and QEMU side by side. */
#ifdef HOST
#include <stdint.h>
#include <stdio.h>
typedef uint64_t u64;
typedef uint32_t u32;
typedef uint8_t u8;
static void report(const char *name, u64 v) { printf("%s: 0x%016llx\n", name, (unsigned long long)v); }
#else
#include "rt.h"
static void report(const char *name, u64 v) {
  puts_(name);
  puts_(": ");
  put_hex(v);
  nl();
}
#endif

static u64 rng_s = 0x243f6a8885a308d3UL;
static u64 rng(void) { /* splitmix64 */
  u64 z = (rng_s += 0x9e3779b97f4a7c15UL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
  return z ^ (z >> 31);
}

#if defined(K_sha256)
/* SHA-256 (FIPS 180-4) of a 64 KiB buffer, 100 times, each digest fed into the next. */
#define BUF (64 * 1024)
static u8 buf[BUF];
static const u32 K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
static u32 ror(u32 x, int r) { return (x >> r) | (x << (32 - r)); }
static void block(u32 h[8], const u8 *p) {
  u32 w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (u32)p[4 * i] << 24 | (u32)p[4 * i + 1] << 16 | (u32)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    u32 s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
    u32 s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  u32 a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; i++) {
    u32 t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    u32 t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}
static void sha256(const u8 *p, u64 n, u32 h[8]) {
  static const u32 init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                              0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  for (int i = 0; i < 8; i++) h[i] = init[i];
  u64 i = 0;
  for (; i + 64 <= n; i += 64) block(h, p + i);
  u8 last[128] = {0};
  u64 rest = n - i;
  for (u64 j = 0; j < rest; j++) last[j] = p[i + j];
  last[rest] = 0x80;
  u64 len = rest + 9 <= 64 ? 64 : 128;
  for (int j = 0; j < 8; j++) last[len - 1 - j] = (u8)((n * 8) >> (8 * j));
  for (u64 j = 0; j < len; j += 64) block(h, last + j);
}
static u64 run(void) {
  for (u64 i = 0; i < BUF; i++) buf[i] = (u8)rng();
  u32 h[8];
  for (int pass = 0; pass < 100; pass++) {
    sha256(buf, BUF, h);
    for (int i = 0; i < 8; i++) ((u32 *)buf)[i] ^= h[i];
  }
  return (u64)h[0] << 32 | h[7];
}
#define NAME "sha256"

#elif defined(K_sort)
/* Quicksort (median of three, insertion sort below 16) of 256 Ki random words, 12 times. */
#define N (256 * 1024)
static u32 v[N];
static void qsort_u32(u32 *a, long lo, long hi) {
  while (hi - lo > 16) {
    long mid = lo + (hi - lo) / 2;
    u32 x = a[lo], y = a[mid], z = a[hi];
    u32 pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
    long i = lo, j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        u32 t = a[i];
        a[i++] = a[j];
        a[j--] = t;
      }
    }
    if (j - lo < hi - i) {
      qsort_u32(a, lo, j);
      lo = i;
    } else {
      qsort_u32(a, i, hi);
      hi = j;
    }
  }
  for (long i = lo + 1; i <= hi; i++) {
    u32 x = a[i];
    long j = i - 1;
    while (j >= lo && a[j] > x) {
      a[j + 1] = a[j];
      j--;
    }
    a[j + 1] = x;
  }
}
static u64 run(void) {
  u64 h = 0;
  for (int r = 0; r < 12; r++) {
    for (long i = 0; i < N; i++) v[i] = (u32)rng();
    qsort_u32(v, 0, N - 1);
    for (long i = 1; i < N; i++)
      if (v[i - 1] > v[i]) return 0xbad;
    for (long i = 0; i < N; i += 61) h = h * 31 + v[i];
  }
  return h;
}
#define NAME "sort"

#elif defined(K_chase_256k) || defined(K_chase_16m)
/* Pointer chasing through one random cycle (Sattolo) over 256 KiB or 16 MiB of links. */
#ifdef K_chase_256k
#define LINKS (64 * 1024)
#define STEPS 100000000UL
#define NAME "chase_256k"
#else
#define LINKS (4 * 1024 * 1024)
#define STEPS 15000000UL
#define NAME "chase_16m"
#endif
static u32 next[LINKS];
static u64 run(void) {
  for (u32 i = 0; i < LINKS; i++) next[i] = i;
  for (u32 i = LINKS - 1; i > 0; i--) {
    u32 j = (u32)(rng() % i), t = next[i];
    next[i] = next[j];
    next[j] = t;
  }
  u32 cur = 0;
  u64 h = 0;
  for (u64 s = 0; s < STEPS; s++) {
    cur = next[cur];
    h += cur;
  }
  return h ^ cur;
}

#elif defined(K_lz)
/* A greedy LZ77 compressor (4-byte hash, 64 KiB window) over 1 MiB of text-like data, 12
 * times; the checksum covers the compressed bytes. */
#define IN (1024 * 1024)
static u8 in[IN], out[IN + IN / 8 + 16];
static u32 table[4096];
static const char *words[16] = {"the ",  "machine ", "records ", "replay ", "of ",   "every ",
                                "input ", "and ",    "time ",    "guest ",  "runs ", "debug ",
                                "back ", "step ",   "hart ",    "\n"};
static u64 compress(void) {
  for (int i = 0; i < 4096; i++) table[i] = 0;
  u64 o = 0, i = 0;
  while (i + 4 <= IN) {
    u32 seq = (u32)in[i] | (u32)in[i + 1] << 8 | (u32)in[i + 2] << 16 | (u32)in[i + 3] << 24;
    u32 slot = (seq * 2654435761u) >> 20;
    u64 cand = table[slot];
    table[slot] = (u32)i;
    u64 len = 0;
    if (cand < i && i - cand < 65536)
      while (i + len < IN && len < 255 && in[cand + len] == in[i + len]) len++;
    if (len >= 4) {
      out[o++] = 0xff;
      out[o++] = (u8)len;
      out[o++] = (u8)(i - cand);
      out[o++] = (u8)((i - cand) >> 8);
      i += len;
    } else {
      out[o++] = in[i++];
    }
  }
  while (i < IN) out[o++] = in[i++];
  u64 h = 0xcbf29ce484222325UL;
  for (u64 k = 0; k < o; k++) h = (h ^ out[k]) * 0x100000001b3UL;
  return h ^ o;
}
static u64 run(void) {
  u64 n = 0;
  while (n < IN) {
    const char *w = words[rng() % 16];
    while (*w && n < IN) in[n++] = (u8)*w++;
  }
  u64 h = 0;
  for (int r = 0; r < 12; r++) {
    in[r * 4099 % IN] ^= (u8)r;
    h = h * 31 + compress();
  }
  return h;
}
#define NAME "lz"

#else /* K_nbody */
/* The n-body simulation of five planets (double precision), 150 000 steps. */
#define BODIES 5
static double x[BODIES], y[BODIES], z[BODIES], vx[BODIES], vy[BODIES], vz[BODIES], m[BODIES];
static double sqrt_(double v) {
#ifdef HOST
  return __builtin_sqrt(v);
#else
  double r;
  asm("fsqrt.d %0, %1" : "=f"(r) : "f"(v));
  return r;
#endif
}
static u64 run(void) {
  const double pi = 3.141592653589793, days = 365.24, solar = 4 * pi * pi;
  const double init[BODIES][7] = {
      {0, 0, 0, 0, 0, 0, solar},
      {4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
       1.66007664274403694e-03 * days, 7.69901118419740425e-03 * days,
       -6.90460016972063023e-05 * days, 9.54791938424326609e-04 * solar},
      {8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
       -2.76742510726862411e-03 * days, 4.99852801234917238e-03 * days,
       2.30417297573763929e-05 * days, 2.85885980666130812e-04 * solar},
      {1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
       2.96460137564761618e-03 * days, 2.37847173959480950e-03 * days,
       -2.96589568540237556e-05 * days, 4.36624404335156298e-05 * solar},
      {1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
       2.68067772490389322e-03 * days, 1.62824170038242295e-03 * days,
       -9.51592254519715870e-05 * days, 5.15138902046611451e-05 * solar}};
  for (int i = 0; i < BODIES; i++) {
    x[i] = init[i][0], y[i] = init[i][1], z[i] = init[i][2];
    vx[i] = init[i][3], vy[i] = init[i][4], vz[i] = init[i][5], m[i] = init[i][6];
  }
  const double dt = 0.01;
  for (long step = 0; step < 150000; step++) {
    for (int i = 0; i < BODIES; i++)
      for (int j = i + 1; j < BODIES; j++) {
        double dx = x[i] - x[j], dy = y[i] - y[j], dz = z[i] - z[j];
        double d2 = dx * dx + dy * dy + dz * dz;
        double mag = dt / (d2 * sqrt_(d2));
        vx[i] -= dx * m[j] * mag, vy[i] -= dy * m[j] * mag, vz[i] -= dz * m[j] * mag;
        vx[j] += dx * m[i] * mag, vy[j] += dy * m[i] * mag, vz[j] += dz * m[i] * mag;
      }
    for (int i = 0; i < BODIES; i++) x[i] += dt * vx[i], y[i] += dt * vy[i], z[i] += dt * vz[i];
  }
  double e = 0;
  for (int i = 0; i < BODIES; i++) {
    e += 0.5 * m[i] * (vx[i] * vx[i] + vy[i] * vy[i] + vz[i] * vz[i]);
    for (int j = i + 1; j < BODIES; j++) {
      double dx = x[i] - x[j], dy = y[i] - y[j], dz = z[i] - z[j];
      e -= m[i] * m[j] / sqrt_(dx * dx + dy * dy + dz * dz);
    }
  }
  union {
    double d;
    u64 u;
  } bits = {e};
  return bits.u;
}
#define NAME "nbody"
#endif

int main(void) {
  report(NAME, run());
  return 0;
}
