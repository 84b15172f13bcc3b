/* For the console-input tests: prints "ready", then reads the console. 'R' reboots the machine
 * through the finisher; '.' prints how many bytes came before it since boot, and exits. */
#include "rt.h"

#define UART_LSR 5
#define LSR_DATA_READY 1

static int getch(void) {
  while (!(*(volatile u8 *)(UART0 + UART_LSR) & LSR_DATA_READY)) {
  }
  return *(volatile u8 *)UART0;
}

int main(void) {
  puts_("ready\n");
  u64 count = 0;
  for (;;) {
    int c = getch();
    if (c == 'R') {
      puts_("rebooting\n");
      mmio_w32(FINISHER, 0x7777);
      for (;;) {
      }
    }
    if (c == '.') {
      puts_("count ");
      put_udec(count);
      nl();
      return 0;
    }
    count++;
  }
}
