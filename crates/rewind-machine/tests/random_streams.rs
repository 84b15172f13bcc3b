//! Random instruction streams on a fresh machine must only ever cause architectural events:
//! no host panic, whatever the bytes. Each stream also runs twice and must end in the same state,
//! and the compiling engine must end it in the state the interpreter does.

use rewind_cpu::Engine;
use rewind_machine::{Machine, MachineConfig, MachineStop};

/// xorshift64*: a fixed generator, so a failing seed reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Instruction words biased towards valid encodings: random bits with a real major opcode.
fn random_program(seed: u64, words: usize) -> Vec<u8> {
    const OPCODES: [u32; 20] = [
        0x03, 0x07, 0x0f, 0x13, 0x17, 0x1b, 0x23, 0x27, 0x2f, 0x33, 0x37, 0x3b, 0x43, 0x47, 0x4b,
        0x4f, 0x53, 0x63, 0x6f, 0x73,
    ];
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = Vec::with_capacity(words * 4);
    for _ in 0..words {
        let r = rng.next();
        let word = match r % 4 {
            0 => r as u32 >> 3, // anything (often compressed)
            _ => ((r >> 8) as u32 & !0x7f) | OPCODES[(r >> 2) as usize % OPCODES.len()], // a real opcode
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// A floating-point value for a register: mostly normal numbers of moderate size (so that
/// arithmetic on them stays normal and takes the host-arithmetic shortcuts), and zeros,
/// subnormals, infinities and NaNs; singles NaN-boxed, or not.
fn random_float(rng: &mut Rng, single: bool) -> u64 {
    let r = rng.next();
    let (exp_bits, mant_bits) = if single { (8, 23) } else { (11, 52) };
    let exp_max = (1u64 << exp_bits) - 1;
    let exp = match r % 8 {
        0 => 0,
        1 if r & 8 == 0 => 0,
        1 => exp_max,
        // Near the ends of the range, where results overflow or underflow.
        2 if r & 8 == 0 => 1 + (r >> 8) % 24,
        2 => exp_max - 1 - (r >> 8) % 24,
        _ => (exp_max >> 1) - 24 + (r >> 8) % 48,
    };
    let mant = match r % 8 {
        0 => 0,
        _ => (r >> 16) & ((1 << mant_bits) - 1),
    };
    let bits = (r >> 63) << (exp_bits + mant_bits) | exp << mant_bits | mant;
    if single && r % 16 != 5 {
        0xffff_ffff_0000_0000 | bits
    } else {
        bits
    }
}

/// Valid F and D instructions: arithmetic in every rounding mode (some reserved), fused
/// multiply-adds, sign injection, min/max, compares, conversions, moves, loads and stores
/// through `x1` (RAM), `x2` and `x3` (MMIO), and resets of `mstatus.FS` to clean.
fn random_fp_program(seed: u64, words: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = Vec::with_capacity(words * 4);
    for _ in 0..words {
        let r = rng.next();
        let field = |shift: u32, bits: u32| (r >> shift) as u32 & ((1 << bits) - 1);
        let (rd, rs1, rs2, rs3) = (field(8, 5), field(13, 5), field(18, 5), field(23, 5));
        // x1 stays a pointer to RAM, x5 keeps a trace of mstatus.
        let rd = match rd {
            1 => 7,
            5 => 6,
            _ => rd,
        };
        let fmt = field(28, 1);
        let rm = [0, 0, 0, 7, 7, 7, 1, 2, 3, 4, 5, 0, 7, 0, 7, 6][field(29, 4) as usize];
        let op_fp = |funct5: u32, rs2: u32, rm: u32| {
            funct5 << 27 | fmt << 25 | rs2 << 20 | rs1 << 15 | rm << 12 | rd << 7 | 0x53
        };
        let word = match r % 16 {
            0..=3 => op_fp(field(33, 2), rs2, rm), // fadd, fsub, fmul, fdiv
            4 => op_fp(0x0b, 0, rm),               // fsqrt
            5 | 6 => {
                let opcode = [0x43, 0x47, 0x4b, 0x4f][field(35, 2) as usize];
                rs3 << 27 | fmt << 25 | rs2 << 20 | rs1 << 15 | rm << 12 | rd << 7 | opcode
            }
            7 => op_fp(0x04, rs2, field(37, 2) % 3), // fsgnj, fsgnjn, fsgnjx
            8 if r & 0x100_0000 != 0 => op_fp(0x05, rs2, field(37, 1)), // fmin, fmax
            9 => op_fp(0x14, rs2, field(37, 2) % 3), // fle, flt, feq
            10 => op_fp(0x08, 1 - fmt, rm),          // fcvt between formats
            11 => op_fp(0x18 | field(39, 1) << 1, field(40, 2), rm), // fcvt to/from integers
            12 => op_fp(
                0x1c | field(39, 1) << 1,
                0,
                field(41, 1) * (1 - field(39, 1)),
            ), // fmv, fclass
            13 | 14 => {
                // fld/flw or fsd/fsw at x1 (RAM), x2 or x3 (MMIO) + a small offset
                let base = [1, 1, 1, 1, 1, 1, 2, 3][field(42, 3) as usize];
                let imm = field(44, 8) & !7;
                let width = 2 + fmt;
                if r % 16 == 13 {
                    imm << 20 | base << 15 | width << 12 | rd << 7 | 0x07
                } else {
                    (imm >> 5) << 25 | rs2 << 20 | base << 15 | width << 12 | (imm & 31) << 7 | 0x27
                }
            }
            15 => {
                // FS to clean, the old mstatus added to x5: shows when instructions set FS
                // dirty.
                for word in [
                    0x2 << 12 | 31 << 7 | 0x37,                       // lui x31, 0x2
                    0x300 << 20 | 31 << 15 | 3 << 12 | 6 << 7 | 0x73, // csrrc x6, mstatus, x31
                    6 << 20 | 5 << 15 | 5 << 7 | 0x33,                // add x5, x5, x6
                    0x4 << 12 | 31 << 7 | 0x37,                       // lui x31, 0x4
                    0x300 << 20 | 31 << 15 | 2 << 12 | 0x73,          // csrrs x0, mstatus, x31
                ] {
                    out.extend_from_slice(&u32::to_le_bytes(word));
                }
                continue;
            }
            _ => field(45, 12) << 20 | rs1 << 15 | rd << 7 | 0x13, // addi, moving integers
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// Runs one stream and returns the final architectural state and the machine's state hash.
fn run_stream(seed: u64, engine: Engine) -> ((u64, u64, [u64; 32], MachineStop, u64), u64) {
    run_program(random_program(seed, 4096), seed, engine)
}

/// Runs a stream of floating-point instructions and returns what `run_stream` does.
fn run_fp_stream(seed: u64, engine: Engine) -> ((u64, u64, [u64; 32], MachineStop, u64), u64) {
    run_program(random_fp_program(seed, 1024), seed, engine)
}

fn run_program(
    program: Vec<u8>,
    seed: u64,
    engine: Engine,
) -> ((u64, u64, [u64; 32], MachineStop, u64), u64) {
    let mut machine = Machine::bare(MachineConfig {
        ram_size: 4 << 20,
        ..MachineConfig::default()
    })
    .unwrap();
    machine.ram.set_engine(engine).unwrap();
    // Every block is compiled on its first run, so that all of the stream is compared.
    machine.ram.set_hot_threshold(0);
    machine.ram.set_background_compilation(false);
    machine.ram.write(machine.ram.base(), &program).unwrap();
    machine.hart.state.pc = machine.ram.base();
    // Point pointers somewhere interesting: RAM, MMIO, and nowhere.
    let bases = [
        0x8000_0000u64,
        0x8000_8000,
        0x1000_0000,
        0x200_0000,
        0,
        u64::MAX - 7,
    ];
    for (i, x) in machine.hart.state.x.iter_mut().enumerate().skip(1) {
        *x = bases[i % bases.len()].wrapping_add(i as u64 * 8);
    }
    // Floating-point state from the seed: FP registers, FS in each state, every `frm` (a
    // reserved one too), inexact accrued or not.
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    for (i, f) in machine.hart.state.f.iter_mut().enumerate() {
        *f = random_float(&mut rng, i % 2 == 0);
    }
    // FS off, initial, clean or dirty.
    machine.hart.state.csr.mstatus |= (seed % 4) << 13;
    machine.hart.state.csr.frm = [0, 0, 0, 1, 2, 3, 4, 5][seed as usize / 8 % 8];
    machine.hart.state.csr.fflags = !seed.is_multiple_of(3) as u8;
    // Traps land back in the stream, so it keeps going after faults.
    machine.hart.state.csr.mtvec = machine.ram.base() + 0x100;
    let stop = machine.run_unattended(Some(20_000));
    let hash = machine.state_hash();
    let compiled = machine.ram.jit_stats().map_or(0, |s| s.blocks_compiled);
    let state = (
        machine.hart.state.icount,
        machine.hart.state.pc,
        machine.hart.state.x,
        stop,
        hash,
    );
    (state, compiled)
}

#[test]
fn random_streams_never_panic_and_are_deterministic() {
    for seed in 0..2000 {
        let (first, _) = run_stream(seed, Engine::Interp);
        let (second, _) = run_stream(seed, Engine::Interp);
        assert_eq!(first, second, "seed {seed}: two runs differ");
        assert!(
            matches!(
                first.3,
                MachineStop::Limit
                    | MachineStop::PowerOff(_)
                    | MachineStop::Reset
                    | MachineStop::Idle { until: None }
            ),
            "seed {seed}: unexpected stop {:?}",
            first.3
        );
    }
}

#[test]
fn random_streams_compute_the_same_under_both_engines() {
    if Engine::Jit.check_host().is_err() {
        eprintln!("this host has no compiling engine: nothing to compare");
        return;
    }
    let mut blocks = 0;
    for seed in 0..2000 {
        let (interpreted, _) = run_stream(seed, Engine::Interp);
        let (compiled, compiled_blocks) = run_stream(seed, Engine::Jit);
        assert_eq!(
            compiled, interpreted,
            "seed {seed}: the compiling engine differs from the interpreter"
        );
        blocks += compiled_blocks;
    }
    // The streams trap often, but what runs between traps must be compiled code: about
    // seven blocks a stream (14,576 in all when measured).
    assert!(blocks > 10_000, "only {blocks} blocks were compiled");
    eprintln!("{blocks} blocks compiled");
}

#[test]
fn random_fp_streams_compute_the_same_under_both_engines() {
    if Engine::Jit.check_host().is_err() {
        eprintln!("this host has no compiling engine: nothing to compare");
        return;
    }
    for seed in 0..1000 {
        let (interpreted, _) = run_fp_stream(seed, Engine::Interp);
        let (compiled, _) = run_fp_stream(seed, Engine::Jit);
        assert_eq!(
            compiled, interpreted,
            "seed {seed}: the compiling engine differs from the interpreter"
        );
    }
}
