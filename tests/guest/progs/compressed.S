/* C extension (RV64C): every compressed instruction written with explicit
 * c.* mnemonics, results checked against hand-computed values. */
  .option rvc

/* CHK "name", reg, expected: calls check(name, reg, expected) (clobbers caller-saved) */
.macro CHK name, reg, exp
  .pushsection .rodata
.Lstr\@: .asciz "\name"
  .popsection
  mv a1, \reg
  li a2, \exp
  la a0, .Lstr\@
  call check
.endm

  .text
  .globl main
main:
  addi sp, sp, -128
  sd ra, 120(sp)
  sd s0, 112(sp)
  sd s1, 104(sp)
  sd s2, 96(sp)
  sd s3, 88(sp)
  sd s4, 80(sp)
  sd s5, 72(sp)
  sd s6, 64(sp)

  /* ---- quadrant 1: immediates and ALU ---- */
  c.li s0, -32
  CHK "c.li -32", s0, -32
  c.li s0, 31
  c.addi s0, -32
  CHK "c.addi", s0, -1
  c.li a5, 1
  c.addiw a5, -2
  CHK "c.addiw", a5, -1
  li a4, 0x7fffffff
  c.addiw a4, 1
  CHK "c.addiw wraps+sext", a4, 0xffffffff80000000
  li a3, 0x123456789
  c.addiw a3, 0
  CHK "c.addiw 0 = sext.w", a3, 0x23456789
  c.lui s1, 0x1f
  CHK "c.lui 0x1f", s1, 0x1f000
  c.lui s1, 0xfffe0
  CHK "c.lui 0xfffe0", s1, 0xfffffffffffe0000
  c.lui s1, 0xfffff
  CHK "c.lui 0xfffff", s1, 0xfffffffffffff000
  li a0, 0x8000000000000f00
  c.srli a0, 4
  CHK "c.srli", a0, 0x08000000000000f0
  li a5, 0x8000000000000f00
  c.srli a5, 63
  CHK "c.srli 63", a5, 1
  li a4, 0x8000000000000f00
  c.srai a4, 8
  CHK "c.srai", a4, 0xff8000000000000f
  li a4, 0x8000000000000f00
  c.srai a4, 32
  CHK "c.srai 32", a4, 0xffffffff80000000
  li a3, 0xffffffffffffffff
  c.andi a3, -16
  CHK "c.andi -16", a3, 0xfffffffffffffff0
  li a3, 0x12345
  c.andi a3, 0x1f
  CHK "c.andi 0x1f", a3, 5
  li s0, 100
  li s1, 142
  c.sub s0, s1
  CHK "c.sub", s0, -42
  li s0, 0xff00ff00ff00ff00
  li s1, 0x0ff00ff00ff00ff0
  mv a0, s0
  c.xor a0, s1
  CHK "c.xor", a0, 0xf0f0f0f0f0f0f0f0
  li s0, 0xff00ff00ff00ff00
  li s1, 0x0ff00ff00ff00ff0
  mv a0, s0
  c.or a0, s1
  CHK "c.or", a0, 0xfff0fff0fff0fff0
  li s0, 0xff00ff00ff00ff00
  li s1, 0x0ff00ff00ff00ff0
  mv a0, s0
  c.and a0, s1
  CHK "c.and", a0, 0x0f000f000f000f00
  li a4, 0x100000000
  li a5, 1
  c.subw a4, a5
  CHK "c.subw", a4, -1
  li a4, 0x7fffffff
  li a5, 0x7fffffff
  c.addw a4, a5
  CHK "c.addw", a4, -2
  li a4, 0x80000000
  li a5, 0x180000000
  c.addw a4, a5
  CHK "c.addw 0", a4, 0
  c.nop
  /* ---- quadrant 2: slli, mv, add ---- */
  li s3, 0x1
  c.slli s3, 63
  CHK "c.slli 63", s3, 0x8000000000000000
  li s3, 0x123
  c.slli s3, 4
  CHK "c.slli", s3, 0x1230
  li s4, 0x5555
  c.mv s5, s4
  CHK "c.mv", s5, 0x5555
  li s4, 0x5555
  li s5, -0x5556
  c.add s5, s4
  CHK "c.add", s5, -1

  /* ---- stack pointer forms ---- */
  mv s6, sp
  c.addi16sp sp, -496
  sub a1, s6, sp
  li a2, 496
  la a0, .Lsp1
  call check
  c.addi4spn a0, sp, 1020
  sub a1, a0, sp
  li a2, 1020
  la a0, .Lsp2
  call check
  li t0, 0x1122334455667788
  c.sdsp t0, 504(sp)
  c.ldsp t1, 504(sp)
  CHK "c.sdsp/c.ldsp", t1, 0x1122334455667788
  li t0, 0x00000000cafebabe
  c.swsp t0, 252(sp)
  c.lwsp t2, 252(sp)
  CHK "c.swsp/c.lwsp sext", t2, 0xffffffffcafebabe
  ld t3, 504(sp)
  CHK "c.sdsp wrote memory", t3, 0x1122334455667788
  lwu t3, 252(sp)
  CHK "c.swsp wrote memory", t3, 0xcafebabe
  /* fp stack forms */
  li t0, 0x400921fb54442d18
  fmv.d.x ft0, t0
  c.fsdsp ft0, 496(sp)
  c.fldsp fa5, 496(sp)
  fmv.x.d t1, fa5
  CHK "c.fsdsp/c.fldsp", t1, 0x400921fb54442d18
  c.addi16sp sp, 496
  sub a1, s6, sp
  li a2, 0
  la a0, .Lsp3
  call check

  /* ---- register-based loads/stores ---- */
  la s0, cbuf
  li a5, 0x8877665544332211
  c.sd a5, 248(s0)
  c.ld a4, 248(s0)
  CHK "c.sd/c.ld", a4, 0x8877665544332211
  li a5, 0x8877665544332211
  c.sd a5, 120(s0)
  c.ld a4, 120(s0)
  CHK "c.sd/c.ld", a4, 0x8877665544332211
  li a5, 0x80000001
  c.sw a5, 64(s0)
  c.lw a3, 64(s0)
  CHK "c.sw/c.lw sext", a3, 0xffffffff80000001
  c.lw a3, 120(s0)
  CHK "c.lw low half of dword", a3, 0x44332211
  li a5, 0xbff0000000000000
  fmv.d.x fa3, a5
  c.fsd fa3, 8(s0)
  c.fld fa4, 8(s0)
  fmv.x.d a2, fa4
  CHK "c.fsd/c.fld", a2, 0xbff0000000000000

  /* ---- control flow ---- */
  li s1, 0
  c.li a0, 3
1:c.addi s1, 5
  c.addi a0, -1
  c.bnez a0, 1b
  CHK "c.bnez loop", s1, 15
  li s1, 0
  c.li a0, 0
  c.beqz a0, 2f
  c.li s1, 1
2:c.li a0, 1
  c.beqz a0, 3f
  c.addi s1, 2
3:CHK "c.beqz taken/not", s1, 2
  li s1, 0
  c.j 4f
  c.li s1, 9
4:CHK "c.j", s1, 0
  la t0, 5f
  c.jr t0
  c.li s1, 9
5:CHK "c.jr", s1, 0
  la t1, cfunc
  c.jalr t1
  CHK "c.jalr call", a0, 0x77
  /* c.jalr link = address after the 2-byte instruction */
  la t1, retlink
  c.jalr t1
6:la t2, 6b
  sub a1, a0, t2
  li a2, 0
  la a0, .Llink
  call check

  /* ---- c.ebreak traps (cause 3, mtval = its pc, as QEMU 10); handler skips 2 bytes ---- */
  call trap_reset
7:c.ebreak
  la a0, .Lebreak
  li a1, 3
  la a2, 7b
  call expect_trap
  call trap_reset
8:ebreak
  la a0, .Lebreak32
  li a1, 3
  la a2, 8b
  call expect_trap

  /* ---- a 32-bit instruction straddling a 4 KiB boundary ---- */
  call straddle
  CHK "insn across 4K boundary", a0, 1234

  ld ra, 120(sp)
  ld s0, 112(sp)
  ld s1, 104(sp)
  ld s2, 96(sp)
  ld s3, 88(sp)
  ld s4, 80(sp)
  ld s5, 72(sp)
  ld s6, 64(sp)
  addi sp, sp, 128
  tail finish

cfunc:
  li a0, 0x77
  c.jr ra
retlink:
  mv a0, ra
  ret

  .balign 4096
  .skip 4096 - 64
straddle:
  .fill 29, 2, 0x0001      /* 29 x c.nop: 58 bytes */
  .option push
  .option norvc
  li a0, 0                 /* at page-6 */
  addi a0, a0, 1234        /* at page-2: straddles the page boundary */
  .option pop
  c.jr ra

  .section .rodata
.Lsp1: .asciz "c.addi16sp -496"
.Lsp2: .asciz "c.addi4spn 1020"
.Lsp3: .asciz "sp restored"
.Llink: .asciz "c.jalr link = pc+2"
.Lebreak: .asciz "c.ebreak"
.Lebreak32: .asciz "ebreak"

  .bss
  .balign 8
cbuf: .space 512
