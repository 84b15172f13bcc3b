/* For the `--icount-shift auto` tests: watches guest time for two and a half seconds of
 * virtual time, asleep (a CLINT timer and WFI for half a second) and then busy (reading the
 * `time` CSR and CLINT's mtime in a loop, as a boot menu's countdown does), printing mtime
 * every quarter second and checking that time never goes backwards. Under `auto` the shift changes while it
 * runs; the printed values are then the recording's, and a replay must print them again. */
#include "rt.h"

#define TICKS_PER_SEC 10000000UL /* mtime runs at 10 MHz */

static u64 last;
static u64 reads;

/* Both clocks of the guest, checked against each other and against the last read. */
static u64 now(void) {
  u64 csr = CSR_READ(time);
  u64 mmio = mmio_r64(CLINT_MTIME);
  u64 csr2 = CSR_READ(time);
  if (csr < last || mmio < csr || csr2 < mmio) {
    puts_("time went backwards: ");
    put_udec(last);
    puts_(" ");
    put_udec(csr);
    puts_(" ");
    put_udec(mmio);
    puts_(" ");
    put_udec(csr2);
    nl();
    rt_exit(1);
  }
  reads++;
  last = csr2;
  return csr2;
}

int main(void) {
  u64 start = now();
  /* Asleep: a timer interrupt wakes WFI (interrupts globally off: WFI wakes anyway). */
  mmio_w64(CLINT_MTIMECMP, start + TICKS_PER_SEC / 2);
  CSR_SET(mie, 1UL << IRQ_M_TIMER);
  while (now() < start + TICKS_PER_SEC / 2) {
    asm volatile("wfi");
  }
  CSR_CLEAR(mie, 1UL << IRQ_M_TIMER);
  puts_("slept t=");
  put_udec(now() - start);
  nl();
  /* Busy: a countdown polled as fast as the guest runs. */
  u64 next = start + TICKS_PER_SEC / 2;
  for (int i = 0; i < 8; i++) {
    next += TICKS_PER_SEC / 4;
    u64 t;
    while ((t = now()) < next) {
    }
    puts_("busy t=");
    put_udec(t - start);
    nl();
  }
  puts_("reads=");
  put_udec(reads);
  nl();
  puts_("clockwatch done\n");
  return 0;
}
