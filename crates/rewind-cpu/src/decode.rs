//! Instruction decoding: 32-bit and compressed encodings into one compact [`Op`].
//!
//! Decoding happens once per instruction, when its basic block is first run (see `Ram`'s code
//! cache); the hot loop then dispatches on [`Kind`] with a single `match`. Compressed instructions expand to the same kinds
//! as their 32-bit equivalents, with `len == 2`.

/// What an instruction does. `Undecoded` is the default of an op not yet filled in.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Undecoded = 0,
    Illegal,
    Lui,
    Auipc,
    Jal,
    Jalr,
    Beq,
    Bne,
    Blt,
    Bge,
    Bltu,
    Bgeu,
    Lb,
    Lh,
    Lw,
    Ld,
    Lbu,
    Lhu,
    Lwu,
    Sb,
    Sh,
    Sw,
    Sd,
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Addiw,
    Slliw,
    Srliw,
    Sraiw,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
    Fence,
    FenceI,
    Ecall,
    Ebreak,
    Mret,
    Sret,
    Wfi,
    SfenceVma,
    Csrrw,
    Csrrs,
    Csrrc,
    Csrrwi,
    Csrrsi,
    Csrrci,
    /// LR/SC/AMO on 32 bits; `rm` holds funct5.
    AmoW,
    /// LR/SC/AMO on 64 bits; `rm` holds funct5.
    AmoD,
    Flw,
    Fld,
    Fsw,
    Fsd,
    /// Fused multiply-add family; `fmt` 0 = single, 1 = double, `rs2`'s partner in `rs3`.
    Fmadd,
    Fmsub,
    Fnmsub,
    Fnmadd,
    Fadd,
    Fsub,
    Fmul,
    Fdiv,
    Fsqrt,
    Fsgnj,
    Fsgnjn,
    Fsgnjx,
    Fmin,
    Fmax,
    /// Float to integer; `rs2` selects w/wu/l/lu.
    FcvtToInt,
    /// Integer to float; `rs2` selects w/wu/l/lu.
    FcvtFromInt,
    /// Between single and double; `fmt` is the destination.
    FcvtFmt,
    /// Move float bits to an integer register (fmv.x.w / fmv.x.d).
    FmvToInt,
    /// Move integer bits to a float register (fmv.w.x / fmv.d.x).
    FmvFromInt,
    Feq,
    Flt,
    Fle,
    Fclass,
}

/// A decoded instruction. Fields not used by a kind are zero. Sixteen bytes, aligned, so that
/// the hot loop moves it as one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Op {
    pub kind: Kind,
    pub rd: u8,
    pub rs1: u8,
    pub rs2: u8,
    pub rs3: u8,
    /// Rounding mode for floating point, funct5 for AMOs.
    pub rm: u8,
    /// 0 = single, 1 = double precision.
    pub fmt: u8,
    /// Instruction length in bytes: 2 or 4.
    pub len: u8,
    /// Immediate or CSR number.
    pub imm: i32,
    /// The instruction's own bits (the low 16 only, for compressed ones), for `mtval`.
    pub raw: u32,
}

impl Op {
    pub const UNDECODED: Op = Op {
        kind: Kind::Undecoded,
        rd: 0,
        rs1: 0,
        rs2: 0,
        rs3: 0,
        rm: 0,
        fmt: 0,
        len: 0,
        imm: 0,
        raw: 0,
    };

    /// The op as two words, for compact storage and register-only unpacking.
    #[inline(always)]
    pub(crate) fn to_words(self) -> [u64; 2] {
        let lo = self.kind as u64
            | (self.rd as u64) << 8
            | (self.rs1 as u64) << 16
            | (self.rs2 as u64) << 24
            | (self.rs3 as u64) << 32
            | (self.rm as u64) << 40
            | (self.fmt as u64) << 48
            | (self.len as u64) << 56;
        let hi = self.imm as u32 as u64 | (self.raw as u64) << 32;
        [lo, hi]
    }

    /// Rebuilds an op from [`Op::to_words`]; fields come out of registers, not memory.
    #[inline(always)]
    pub(crate) fn from_words(words: [u64; 2]) -> Op {
        let [lo, hi] = words;
        let kind = lo as u8;
        debug_assert!(kind <= Kind::Fclass as u8);
        Op {
            // SAFETY: the words were made by `to_words` from a valid `Kind` (a `repr(u8)` enum).
            kind: unsafe { std::mem::transmute::<u8, Kind>(kind) },
            rd: (lo >> 8) as u8,
            rs1: (lo >> 16) as u8,
            rs2: (lo >> 24) as u8,
            rs3: (lo >> 32) as u8,
            rm: (lo >> 40) as u8,
            fmt: (lo >> 48) as u8,
            len: (lo >> 56) as u8,
            imm: hi as u32 as i32,
            raw: (hi >> 32) as u32,
        }
    }

    fn new(kind: Kind, rd: u32, rs1: u32, rs2: u32, imm: i32) -> Op {
        Op {
            kind,
            rd: rd as u8,
            rs1: rs1 as u8,
            rs2: rs2 as u8,
            rs3: 0,
            rm: 0,
            fmt: 0,
            len: 4,
            imm,
            raw: 0,
        }
    }

    fn illegal(len: u8) -> Op {
        Op {
            kind: Kind::Illegal,
            len,
            ..Op::UNDECODED
        }
    }
}

/// Length in bytes of the instruction whose low half-word is `low`.
#[inline(always)]
pub fn insn_len(low: u16) -> u8 {
    if low & 3 == 3 {
        4
    } else {
        2
    }
}

/// Decodes one instruction given its bits (the low 16 bits only for compressed ones).
pub fn decode(bits: u32) -> Op {
    if bits & 3 != 3 {
        Op {
            raw: bits & 0xffff,
            ..decode_compressed(bits as u16)
        }
    } else {
        Op {
            raw: bits,
            ..decode_full(bits)
        }
    }
}

fn rd(i: u32) -> u32 {
    (i >> 7) & 31
}
fn rs1(i: u32) -> u32 {
    (i >> 15) & 31
}
fn rs2(i: u32) -> u32 {
    (i >> 20) & 31
}
fn funct3(i: u32) -> u32 {
    (i >> 12) & 7
}
fn funct7(i: u32) -> u32 {
    i >> 25
}
fn imm_i(i: u32) -> i32 {
    (i as i32) >> 20
}
fn imm_s(i: u32) -> i32 {
    (((i & 0xfe00_0000) as i32) >> 20) | ((i >> 7) & 0x1f) as i32
}
fn imm_b(i: u32) -> i32 {
    (((i & 0x8000_0000) as i32) >> 19)
        | (((i >> 7) & 1) << 11) as i32
        | (((i >> 25) & 0x3f) << 5) as i32
        | (((i >> 8) & 0xf) << 1) as i32
}
fn imm_u(i: u32) -> i32 {
    (i & 0xffff_f000) as i32
}
fn imm_j(i: u32) -> i32 {
    (((i & 0x8000_0000) as i32) >> 11)
        | (i & 0xff000) as i32
        | (((i >> 20) & 1) << 11) as i32
        | (((i >> 21) & 0x3ff) << 1) as i32
}

fn decode_full(i: u32) -> Op {
    use Kind::*;
    let (d, s1, s2, f3, f7) = (rd(i), rs1(i), rs2(i), funct3(i), funct7(i));
    let bad = Op::illegal(4);
    let kind = |k: Kind, imm: i32| Op::new(k, d, s1, s2, imm);
    match i & 0x7f {
        0x37 => kind(Lui, imm_u(i)),
        0x17 => kind(Auipc, imm_u(i)),
        0x6f => kind(Jal, imm_j(i)),
        0x67 if f3 == 0 => kind(Jalr, imm_i(i)),
        0x63 => {
            let k = match f3 {
                0 => Beq,
                1 => Bne,
                4 => Blt,
                5 => Bge,
                6 => Bltu,
                7 => Bgeu,
                _ => return bad,
            };
            kind(k, imm_b(i))
        }
        0x03 => {
            let k = match f3 {
                0 => Lb,
                1 => Lh,
                2 => Lw,
                3 => Ld,
                4 => Lbu,
                5 => Lhu,
                6 => Lwu,
                _ => return bad,
            };
            kind(k, imm_i(i))
        }
        0x23 => {
            let k = match f3 {
                0 => Sb,
                1 => Sh,
                2 => Sw,
                3 => Sd,
                _ => return bad,
            };
            kind(k, imm_s(i))
        }
        0x13 => {
            let shamt = ((i >> 20) & 0x3f) as i32;
            match f3 {
                0 => kind(Addi, imm_i(i)),
                2 => kind(Slti, imm_i(i)),
                3 => kind(Sltiu, imm_i(i)),
                4 => kind(Xori, imm_i(i)),
                6 => kind(Ori, imm_i(i)),
                7 => kind(Andi, imm_i(i)),
                1 if i >> 26 == 0 => kind(Slli, shamt),
                5 if i >> 26 == 0 => kind(Srli, shamt),
                5 if i >> 26 == 0x10 => kind(Srai, shamt),
                _ => bad,
            }
        }
        0x1b => {
            let shamt = ((i >> 20) & 0x1f) as i32;
            match (f3, f7) {
                (0, _) => kind(Addiw, imm_i(i)),
                (1, 0) => kind(Slliw, shamt),
                (5, 0) => kind(Srliw, shamt),
                (5, 0x20) => kind(Sraiw, shamt),
                _ => bad,
            }
        }
        0x33 => {
            let k = match (f7, f3) {
                (0, 0) => Add,
                (0x20, 0) => Sub,
                (0, 1) => Sll,
                (0, 2) => Slt,
                (0, 3) => Sltu,
                (0, 4) => Xor,
                (0, 5) => Srl,
                (0x20, 5) => Sra,
                (0, 6) => Or,
                (0, 7) => And,
                (1, 0) => Mul,
                (1, 1) => Mulh,
                (1, 2) => Mulhsu,
                (1, 3) => Mulhu,
                (1, 4) => Div,
                (1, 5) => Divu,
                (1, 6) => Rem,
                (1, 7) => Remu,
                _ => return bad,
            };
            kind(k, 0)
        }
        0x3b => {
            let k = match (f7, f3) {
                (0, 0) => Addw,
                (0x20, 0) => Subw,
                (0, 1) => Sllw,
                (0, 5) => Srlw,
                (0x20, 5) => Sraw,
                (1, 0) => Mulw,
                (1, 4) => Divw,
                (1, 5) => Divuw,
                (1, 6) => Remw,
                (1, 7) => Remuw,
                _ => return bad,
            };
            kind(k, 0)
        }
        0x0f => match f3 {
            // FENCE ignores its unused fields, as on QEMU (fence.tso and hints included).
            0 => kind(Fence, 0),
            1 => kind(FenceI, 0),
            _ => bad,
        },
        0x73 => match f3 {
            0 => match i {
                0x0000_0073 => kind(Ecall, 0),
                0x0010_0073 => kind(Ebreak, 0),
                0x3020_0073 => kind(Mret, 0),
                0x1020_0073 => kind(Sret, 0),
                0x1050_0073 => kind(Wfi, 0),
                _ if f7 == 0x09 && d == 0 => kind(SfenceVma, 0),
                _ => bad,
            },
            4 => bad,
            _ => {
                let k = [Csrrw, Csrrw, Csrrs, Csrrc, Csrrw, Csrrwi, Csrrsi, Csrrci][f3 as usize];
                kind(k, (i >> 20) as i32)
            }
        },
        0x2f => {
            let funct5 = i >> 27;
            let valid = matches!(
                funct5,
                0x00 | 0x01 | 0x04 | 0x08 | 0x0c | 0x10 | 0x14 | 0x18 | 0x1c
            ) || (funct5 == 0x02 && s2 == 0)
                || funct5 == 0x03;
            let k = match f3 {
                2 => AmoW,
                3 => AmoD,
                _ => return bad,
            };
            if !valid {
                return bad;
            }
            Op {
                rm: funct5 as u8,
                ..kind(k, 0)
            }
        }
        0x07 => match f3 {
            2 => kind(Flw, imm_i(i)),
            3 => kind(Fld, imm_i(i)),
            _ => bad,
        },
        0x27 => match f3 {
            2 => kind(Fsw, imm_s(i)),
            3 => kind(Fsd, imm_s(i)),
            _ => bad,
        },
        0x43 | 0x47 | 0x4b | 0x4f => {
            let fmt = f7 & 3;
            if fmt > 1 {
                return bad;
            }
            let k = match i & 0x7f {
                0x43 => Fmadd,
                0x47 => Fmsub,
                0x4b => Fnmsub,
                _ => Fnmadd,
            };
            Op {
                rs3: (i >> 27) as u8,
                rm: f3 as u8,
                fmt: fmt as u8,
                ..kind(k, 0)
            }
        }
        0x53 => decode_fp(i, d, s1, s2, f3, f7).unwrap_or(bad),
        _ => bad,
    }
}

fn decode_fp(i: u32, d: u32, s1: u32, s2: u32, f3: u32, f7: u32) -> Option<Op> {
    use Kind::*;
    let fmt = f7 & 3;
    if fmt > 1 {
        return None;
    }
    let op = |k: Kind, rs2: u32| Op {
        rm: f3 as u8,
        fmt: fmt as u8,
        ..Op::new(k, d, s1, rs2, 0)
    };
    let k = match f7 >> 2 {
        0x00 => op(Fadd, s2),
        0x01 => op(Fsub, s2),
        0x02 => op(Fmul, s2),
        0x03 => op(Fdiv, s2),
        0x0b if s2 == 0 => op(Fsqrt, 0),
        0x04 => match f3 {
            0 => op(Fsgnj, s2),
            1 => op(Fsgnjn, s2),
            2 => op(Fsgnjx, s2),
            _ => return None,
        },
        0x05 => match f3 {
            0 => op(Fmin, s2),
            1 => op(Fmax, s2),
            _ => return None,
        },
        // fcvt.s.d (fmt = 0, rs2 = 1) and fcvt.d.s (fmt = 1, rs2 = 0).
        0x08 if s2 == 1 - fmt => op(FcvtFmt, 0),
        0x14 => match f3 {
            0 => op(Fle, s2),
            1 => op(Flt, s2),
            2 => op(Feq, s2),
            _ => return None,
        },
        0x18 if s2 < 4 => op(FcvtToInt, s2),
        0x1a if s2 < 4 => op(FcvtFromInt, s2),
        0x1c if s2 == 0 && f3 == 0 => op(FmvToInt, 0),
        0x1c if s2 == 0 && f3 == 1 => op(Fclass, 0),
        0x1e if s2 == 0 && f3 == 0 => op(FmvFromInt, 0),
        _ => return None,
    };
    let _ = i;
    Some(k)
}

fn decode_compressed(c: u16) -> Op {
    use Kind::*;
    let c32 = c as u32;
    let bad = Op::illegal(2);
    let op = |k: Kind, rd: u32, rs1: u32, rs2: u32, imm: i32| Op {
        len: 2,
        ..Op::new(k, rd, rs1, rs2, imm)
    };
    let bits = |hi: u32, lo: u32| (c32 >> lo) & ((1 << (hi - lo + 1)) - 1);
    // Registers x8..x15 in the three-bit fields.
    let rd_p = bits(4, 2) + 8;
    let rs1_p = bits(9, 7) + 8;
    let rd_full = bits(11, 7);
    let rs2_full = bits(6, 2);
    let sext = |v: u32, width: u32| ((v << (32 - width)) as i32) >> (32 - width);
    match (c32 & 3, bits(15, 13)) {
        (0, 0) => {
            let imm =
                (bits(10, 7) << 6) | (bits(12, 11) << 4) | (bits(5, 5) << 3) | (bits(6, 6) << 2);
            if imm == 0 {
                return bad;
            }
            op(Addi, rd_p, 2, 0, imm as i32)
        }
        (0, 1) => op(
            Fld,
            rd_p,
            rs1_p,
            0,
            ((bits(6, 5) << 6) | (bits(12, 10) << 3)) as i32,
        ),
        (0, 2) => op(
            Lw,
            rd_p,
            rs1_p,
            0,
            ((bits(5, 5) << 6) | (bits(12, 10) << 3) | (bits(6, 6) << 2)) as i32,
        ),
        (0, 3) => op(
            Ld,
            rd_p,
            rs1_p,
            0,
            ((bits(6, 5) << 6) | (bits(12, 10) << 3)) as i32,
        ),
        (0, 5) => op(
            Fsd,
            0,
            rs1_p,
            rd_p,
            ((bits(6, 5) << 6) | (bits(12, 10) << 3)) as i32,
        ),
        (0, 6) => op(
            Sw,
            0,
            rs1_p,
            rd_p,
            ((bits(5, 5) << 6) | (bits(12, 10) << 3) | (bits(6, 6) << 2)) as i32,
        ),
        (0, 7) => op(
            Sd,
            0,
            rs1_p,
            rd_p,
            ((bits(6, 5) << 6) | (bits(12, 10) << 3)) as i32,
        ),
        (1, 0) => {
            // c.addi; c.nop when rd = 0.
            let imm = sext((bits(12, 12) << 5) | bits(6, 2), 6);
            op(Addi, rd_full, rd_full, 0, imm)
        }
        (1, 1) => {
            if rd_full == 0 {
                return bad;
            }
            let imm = sext((bits(12, 12) << 5) | bits(6, 2), 6);
            op(Addiw, rd_full, rd_full, 0, imm)
        }
        (1, 2) => op(
            Addi,
            rd_full,
            0,
            0,
            sext((bits(12, 12) << 5) | bits(6, 2), 6),
        ),
        (1, 3) => {
            if rd_full == 2 {
                let imm = (bits(12, 12) << 9)
                    | (bits(4, 3) << 7)
                    | (bits(5, 5) << 6)
                    | (bits(2, 2) << 5)
                    | (bits(6, 6) << 4);
                let imm = sext(imm, 10);
                if imm == 0 {
                    return bad;
                }
                op(Addi, 2, 2, 0, imm)
            } else {
                let imm = sext((bits(12, 12) << 17) | (bits(6, 2) << 12), 18);
                if imm == 0 {
                    return bad;
                }
                op(Lui, rd_full, 0, 0, imm)
            }
        }
        (1, 4) => {
            let shamt = ((bits(12, 12) << 5) | bits(6, 2)) as i32;
            match bits(11, 10) {
                0 => op(Srli, rs1_p, rs1_p, 0, shamt),
                1 => op(Srai, rs1_p, rs1_p, 0, shamt),
                2 => op(
                    Andi,
                    rs1_p,
                    rs1_p,
                    0,
                    sext((bits(12, 12) << 5) | bits(6, 2), 6),
                ),
                _ => {
                    let k = match (bits(12, 12), bits(6, 5)) {
                        (0, 0) => Sub,
                        (0, 1) => Xor,
                        (0, 2) => Or,
                        (0, 3) => And,
                        (1, 0) => Subw,
                        (1, 1) => Addw,
                        _ => return bad,
                    };
                    op(k, rs1_p, rs1_p, rd_p, 0)
                }
            }
        }
        (1, 5) => {
            let imm = (bits(12, 12) << 11)
                | (bits(8, 8) << 10)
                | (bits(10, 9) << 8)
                | (bits(6, 6) << 7)
                | (bits(7, 7) << 6)
                | (bits(2, 2) << 5)
                | (bits(11, 11) << 4)
                | (bits(5, 3) << 1);
            op(Jal, 0, 0, 0, sext(imm, 12))
        }
        (1, 6) | (1, 7) => {
            let imm = (bits(12, 12) << 8)
                | (bits(6, 5) << 6)
                | (bits(2, 2) << 5)
                | (bits(11, 10) << 3)
                | (bits(4, 3) << 1);
            let k = if bits(15, 13) == 6 { Beq } else { Bne };
            op(k, 0, rs1_p, 0, sext(imm, 9))
        }
        (2, 0) => op(
            Slli,
            rd_full,
            rd_full,
            0,
            ((bits(12, 12) << 5) | bits(6, 2)) as i32,
        ),
        (2, 1) => op(
            Fld,
            rd_full,
            2,
            0,
            ((bits(4, 2) << 6) | (bits(12, 12) << 5) | (bits(6, 5) << 3)) as i32,
        ),
        (2, 2) => {
            if rd_full == 0 {
                return bad;
            }
            op(
                Lw,
                rd_full,
                2,
                0,
                ((bits(3, 2) << 6) | (bits(12, 12) << 5) | (bits(6, 4) << 2)) as i32,
            )
        }
        (2, 3) => {
            if rd_full == 0 {
                return bad;
            }
            op(
                Ld,
                rd_full,
                2,
                0,
                ((bits(4, 2) << 6) | (bits(12, 12) << 5) | (bits(6, 5) << 3)) as i32,
            )
        }
        (2, 4) => match (bits(12, 12), rd_full, rs2_full) {
            (0, 0, 0) => bad,
            (0, r, 0) => op(Jalr, 0, r, 0, 0),
            (0, r, s) => op(Add, r, 0, s, 0),
            (1, 0, 0) => op(Ebreak, 0, 0, 0, 0),
            (1, r, 0) => op(Jalr, 1, r, 0, 0),
            (1, r, s) => op(Add, r, r, s, 0),
            _ => bad,
        },
        (2, 5) => op(
            Fsd,
            0,
            2,
            rs2_full,
            ((bits(9, 7) << 6) | (bits(12, 10) << 3)) as i32,
        ),
        (2, 6) => op(
            Sw,
            0,
            2,
            rs2_full,
            ((bits(8, 7) << 6) | (bits(12, 9) << 2)) as i32,
        ),
        (2, 7) => op(
            Sd,
            0,
            2,
            rs2_full,
            ((bits(9, 7) << 6) | (bits(12, 10) << 3)) as i32,
        ),
        _ => bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_common_instructions() {
        // addi a0, a0, -1
        let op = decode(0xfff5_0513);
        assert_eq!(
            (op.kind, op.rd, op.rs1, op.imm, op.len),
            (Kind::Addi, 10, 10, -1, 4)
        );
        // c.li a0, 5 = 0x4515
        let op = decode(0x4515);
        assert_eq!(
            (op.kind, op.rd, op.rs1, op.imm, op.len),
            (Kind::Addi, 10, 0, 5, 2)
        );
        // jal ra, -4 = 0xffdff0ef
        let op = decode(0xffdf_f0ef);
        assert_eq!((op.kind, op.rd, op.imm), (Kind::Jal, 1, -4));
        // beq a0, a1, 8 = 0x00b50463
        let op = decode(0x00b5_0463);
        assert_eq!((op.kind, op.rs1, op.rs2, op.imm), (Kind::Beq, 10, 11, 8));
        // sd ra, 8(sp) = 0x00113423
        let op = decode(0x0011_3423);
        assert_eq!((op.kind, op.rs1, op.rs2, op.imm), (Kind::Sd, 2, 1, 8));
        // c.addi16sp sp, -64 = 0x7139
        let op = decode(0x7139);
        assert_eq!((op.kind, op.rd, op.imm), (Kind::Addi, 2, -64));
    }

    #[test]
    fn zero_halfword_is_illegal() {
        let op = decode(0);
        assert_eq!((op.kind, op.len, op.raw), (Kind::Illegal, 2, 0));
    }

    #[test]
    fn every_encoding_decodes_without_panic() {
        for c in 0..=u16::MAX as u32 {
            decode(c & 0xffff);
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            decode(x | 3);
        }
    }
}
