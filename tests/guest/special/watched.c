/* For the reverse-watchpoint test: writes `watched` ten times (1, 4, 7, ... 28), reading
 * it between writes, then exits. Debuggers watch it by symbol. */
#include "rt.h"

volatile u64 watched;
volatile u64 sink;

int main(void) {
  for (u64 i = 0; i < 10; i++) {
    watched = 3 * i + 1;
    sink += watched;
  }
  puts_("watched done\n");
  return 0;
}
