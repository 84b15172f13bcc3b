/* Rewind guest runtime: entry point, M/S trap entry, privilege switching. */
#define FRAME 288   /* 36 dwords: x0..x31, epc, cause, tval, status */
#define MAGIC_EXIT 0x5245574e   /* a7 value of the "return to M-mode" ecall */

  .section .text.init, "ax"
  .globl _start
_start:
  .option push
  .option norelax
  la gp, __global_pointer$
  .option pop
  csrr t0, mhartid
  bnez t0, 9f
  la sp, _stack_top
  la t0, _m_trap_entry
  csrw mtvec, t0
  la t0, _mtrap_stack_top
  csrw mscratch, t0
  la t0, _strap_stack_top
  csrw sscratch, t0
  la t0, __bss_start
  la t1, __bss_end
1:bgeu t0, t1, 2f
  sd zero, 0(t0)
  addi t0, t0, 8
  j 1b
2:li t0, 0x2000          /* mstatus.FS = Initial */
  csrs mstatus, t0
  csrwi fcsr, 0
  call main
  call rt_exit
  /* Other harts (QEMU -bios none starts every hart here) go to the program's
   * secondary_entry if it has one, with a0 = hart id and a1 = device tree, or park. */
9:ld t0, 8f
  beqz t0, 7f
  jr t0
7:wfi
  j 7b
  .balign 8
8:.dword secondary_entry
  .weak secondary_entry

/* One trap entry per mode: save every register, call the C handler with the frame,
 * restore. x is the CSR prefix (m or s). */
.macro TRAP_ENTRY entry, x, handler
  .globl \entry
\entry:
  csrrw sp, \x\()scratch, sp
  addi sp, sp, -FRAME
  sd x1, 1*8(sp)
  sd x3, 3*8(sp)
  sd x4, 4*8(sp)
  sd x5, 5*8(sp)
  sd x6, 6*8(sp)
  sd x7, 7*8(sp)
  sd x8, 8*8(sp)
  sd x9, 9*8(sp)
  sd x10, 10*8(sp)
  sd x11, 11*8(sp)
  sd x12, 12*8(sp)
  sd x13, 13*8(sp)
  sd x14, 14*8(sp)
  sd x15, 15*8(sp)
  sd x16, 16*8(sp)
  sd x17, 17*8(sp)
  sd x18, 18*8(sp)
  sd x19, 19*8(sp)
  sd x20, 20*8(sp)
  sd x21, 21*8(sp)
  sd x22, 22*8(sp)
  sd x23, 23*8(sp)
  sd x24, 24*8(sp)
  sd x25, 25*8(sp)
  sd x26, 26*8(sp)
  sd x27, 27*8(sp)
  sd x28, 28*8(sp)
  sd x29, 29*8(sp)
  sd x30, 30*8(sp)
  sd x31, 31*8(sp)
  csrr t0, \x\()scratch
  sd t0, 2*8(sp)
  csrr t0, \x\()epc
  sd t0, 32*8(sp)
  csrr t0, \x\()cause
  sd t0, 33*8(sp)
  csrr t0, \x\()tval
  sd t0, 34*8(sp)
  csrr t0, \x\()status
  sd t0, 35*8(sp)
  .option push
  .option norelax
  la gp, __global_pointer$
  .option pop
  mv a0, sp
  call \handler
  ld t0, 32*8(sp)
  csrw \x\()epc, t0
  addi t0, sp, FRAME
  csrw \x\()scratch, t0
  ld x1, 1*8(sp)
  ld x3, 3*8(sp)
  ld x4, 4*8(sp)
  ld x5, 5*8(sp)
  ld x6, 6*8(sp)
  ld x7, 7*8(sp)
  ld x8, 8*8(sp)
  ld x9, 9*8(sp)
  ld x10, 10*8(sp)
  ld x11, 11*8(sp)
  ld x12, 12*8(sp)
  ld x13, 13*8(sp)
  ld x14, 14*8(sp)
  ld x15, 15*8(sp)
  ld x16, 16*8(sp)
  ld x17, 17*8(sp)
  ld x18, 18*8(sp)
  ld x19, 19*8(sp)
  ld x20, 20*8(sp)
  ld x21, 21*8(sp)
  ld x22, 22*8(sp)
  ld x23, 23*8(sp)
  ld x24, 24*8(sp)
  ld x25, 25*8(sp)
  ld x26, 26*8(sp)
  ld x27, 27*8(sp)
  ld x28, 28*8(sp)
  ld x29, 29*8(sp)
  ld x30, 30*8(sp)
  ld x31, 31*8(sp)
  ld x2, 2*8(sp)
  \x\()ret
.endm

/* ---- M-mode trap entry (mtvec direct mode, or all vectors for vectored) ---- */
  .text
  .balign 256
  TRAP_ENTRY _m_trap_entry, m, m_trap_c

/* ---- S-mode trap entry (stvec) ---- */
  .balign 256
  TRAP_ENTRY _s_trap_entry, s, s_trap_c

/* u64 enter_mode(int mode, u64 (*fn)(u64), u64 arg, u64 sp)
 * Runs fn(arg) in privilege `mode` (0=U, 1=S, 3=M via mret) on stack sp
 * (0 = the shared guest stack). When fn returns it executes
 * `ecall` with a7=MAGIC_EXIT; the M trap handler then resumes here and
 * enter_mode returns fn's result. mstatus.MPP is left as the trap set it. */
  .globl enter_mode
enter_mode:
  la t0, m_ctx
  sd ra, 0(t0)
  sd sp, 8(t0)
  sd s0, 16(t0)
  sd s1, 24(t0)
  sd s2, 32(t0)
  sd s3, 40(t0)
  sd s4, 48(t0)
  sd s5, 56(t0)
  sd s6, 64(t0)
  sd s7, 72(t0)
  sd s8, 80(t0)
  sd s9, 88(t0)
  sd s10, 96(t0)
  sd s11, 104(t0)
  li t1, 3
  slli t1, t1, 11
  csrc mstatus, t1
  andi a0, a0, 3
  slli a0, a0, 11
  csrs mstatus, a0
  csrw mepc, a1
  mv a0, a2
  bnez a3, 1f
  la a3, _guest_stack_top
1:mv sp, a3
  la ra, guest_return
  mret

  .globl guest_return
guest_return:
  li a7, MAGIC_EXIT
  ecall
1:j 1b

/* void m_resume(u64 value): called from the M trap handler, abandons the trap
 * frame and returns `value` from the pending enter_mode call (in M-mode). */
  .globl m_resume
m_resume:
  la t0, _mtrap_stack_top
  csrw mscratch, t0
  la t0, _strap_stack_top
  csrw sscratch, t0
  la t0, m_ctx
  ld ra, 0(t0)
  ld sp, 8(t0)
  ld s0, 16(t0)
  ld s1, 24(t0)
  ld s2, 32(t0)
  ld s3, 40(t0)
  ld s4, 48(t0)
  ld s5, 56(t0)
  ld s6, 64(t0)
  ld s7, 72(t0)
  ld s8, 80(t0)
  ld s9, 88(t0)
  ld s10, 96(t0)
  ld s11, 104(t0)
  ret

  .bss
  .balign 8
m_ctx: .space 14*8
