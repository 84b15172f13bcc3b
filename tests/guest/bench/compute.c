/* Compute-bound benchmark for Rewind: hashing, sorting and pointer chasing.
 * Prints per-phase checksums and PASSes if the final checksum matches the
 * value produced by a native build (cc -DHOST -O2 bench/compute.c). */
#ifdef HOST
#include <stdio.h>
#include <stdint.h>
typedef uint64_t u64;
typedef uint32_t u32;
typedef uint8_t u8;
static void put_hex(u64 v) { printf("0x%016llx", (unsigned long long)v); }
static void puts_(const char *s) { fputs(s, stdout); }
static void nl(void) { putchar('\n'); }
#else
#include "rt.h"
#endif

#ifndef SCALE
#define SCALE 1
#endif
#define BUF_BYTES (1 << 20)
#define HASH_PASSES (80 * SCALE)
#define SORT_N 300000
#define SORT_ROUNDS (7 * SCALE)
#define LIST_N (1 << 20)
#define CHASE_STEPS (40000000UL * SCALE)
#define EXPECTED 0xe096789229c56c3aUL

static u8 buf[BUF_BYTES];
static u32 arr[SORT_N], tmp[SORT_N];
static u32 next_idx[LIST_N];

static u64 rng_s = 0x243f6a8885a308d3UL;
static u64 rng(void) { /* splitmix64 */
  u64 z = (rng_s += 0x9e3779b97f4a7c15UL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
  return z ^ (z >> 31);
}

static u64 fnv1a(const u8 *p, u64 n, u64 h) {
  for (u64 i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3UL;
  return h;
}
static u64 rotl(u64 x, int r) { return (x << r) | (x >> (64 - r)); }
static u64 xxlike(const u8 *p, u64 n, u64 seed) {
  const u64 P1 = 0x9e3779b185ebca87UL, P2 = 0xc2b2ae3d27d4eb4fUL;
  u64 a = seed + P1 + P2, b = seed + P2, c = seed, d = seed - P1;
  for (u64 i = 0; i + 32 <= n; i += 32) {
    const u64 *q = (const u64 *)(p + i);
    a = rotl(a + q[0] * P2, 31) * P1;
    b = rotl(b + q[1] * P2, 31) * P1;
    c = rotl(c + q[2] * P2, 31) * P1;
    d = rotl(d + q[3] * P2, 31) * P1;
  }
  u64 h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18);
  h ^= h >> 33;
  h *= P2;
  return h ^ (h >> 29);
}

static void msort(u32 *v, u32 *t, long n) {
  if (n < 24) {
    for (long i = 1; i < n; i++) {
      u32 x = v[i];
      long j = i - 1;
      while (j >= 0 && v[j] > x) { v[j + 1] = v[j]; j--; }
      v[j + 1] = x;
    }
    return;
  }
  long h = n / 2;
  msort(v, t, h);
  msort(v + h, t + h, n - h);
  long i = 0, j = h, k = 0;
  while (i < h && j < n) t[k++] = v[i] <= v[j] ? v[i++] : v[j++];
  while (i < h) t[k++] = v[i++];
  while (j < n) t[k++] = v[j++];
  for (long m = 0; m < n; m++) v[m] = t[m];
}

static void report(const char *name, u64 v) {
  puts_(name);
  puts_(": ");
  put_hex(v);
  nl();
}

int main(void) {
  for (u64 i = 0; i < BUF_BYTES; i += 8) *(u64 *)(buf + i) = rng();
  u64 h1 = 0xcbf29ce484222325UL, h2 = 0;
  for (int p = 0; p < HASH_PASSES; p++) {
    if (p % 4 == 0) h1 = fnv1a(buf, BUF_BYTES, h1);
    h2 ^= xxlike(buf, BUF_BYTES, h2 + p);
  }
  report("fnv1a", h1);
  report("xxlike", h2);

  u64 hs = 0;
  for (int r = 0; r < SORT_ROUNDS; r++) {
    for (long i = 0; i < SORT_N; i++) arr[i] = (u32)rng();
    msort(arr, tmp, SORT_N);
    for (long i = 1; i < SORT_N; i++)
      if (arr[i - 1] > arr[i]) {
        puts_("sort FAILED\n");
        hs = 0xbad;
      }
    for (long i = 0; i < SORT_N; i += 97) hs = hs * 31 + arr[i];
  }
  report("sort", hs);

  /* a single random cycle through all nodes (Sattolo's algorithm) */
  for (u32 i = 0; i < LIST_N; i++) next_idx[i] = i;
  for (u32 i = LIST_N - 1; i > 0; i--) {
    u32 j = (u32)(rng() % i);
    u32 t = next_idx[i];
    next_idx[i] = next_idx[j];
    next_idx[j] = t;
  }
  u32 cur = 0;
  u64 hc = 0;
  for (u64 s = 0; s < CHASE_STEPS; s++) {
    cur = next_idx[cur];
    hc += cur;
  }
  report("chase", hc ^ cur);

  u64 total = h1 ^ rotl(h2, 17) ^ rotl(hs, 29) ^ rotl(hc ^ cur, 41);
  report("checksum", total);
#ifdef PRINT_INSTRET
  report("instret", CSR_READ(minstret));
#endif
#ifdef HOST
  return 0;
#else
  if (SCALE == 1 && total != EXPECTED) {
    puts_("checksum MISMATCH, expected ");
    put_hex(EXPECTED);
    nl();
    rt_exit(1);
  }
  finish();
#endif
}
