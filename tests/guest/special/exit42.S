/* Prints a line on UART0, then exits through the test finisher with status 42. */
  .section .text.init, "ax"
  .globl _start
_start:
  la a0, msg
  li a1, 0x10000000
1:lbu a2, 0(a0)
  beqz a2, 2f
  sb a2, 0(a1)
  addi a0, a0, 1
  j 1b
2:li a1, 0x100000
  li a2, (42 << 16) | 0x3333
  sw a2, 0(a1)
3:j 3b
msg: .asciz "exit42: finisher code 42\n"
