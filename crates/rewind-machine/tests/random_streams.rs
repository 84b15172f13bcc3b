//! Random instruction streams on a fresh machine must only ever cause architectural events:
//! no host panic, whatever the bytes. Each stream also runs twice and must end in the same state,
//! and the compiling engine must end it in the state the interpreter does.

use rewind_cpu::Engine;
use rewind_machine::{Machine, MachineConfig, Stop};

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
    const OPCODES: [u32; 16] = [
        0x03, 0x07, 0x0f, 0x13, 0x17, 0x1b, 0x23, 0x27, 0x2f, 0x33, 0x37, 0x3b, 0x53, 0x63, 0x6f,
        0x73,
    ];
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = Vec::with_capacity(words * 4);
    for _ in 0..words {
        let r = rng.next();
        let word = match r % 4 {
            0 => r as u32 >> 3, // anything (often compressed)
            _ => ((r >> 8) as u32 & !0x7f) | OPCODES[(r >> 2) as usize % 16], // a real opcode
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// Runs one stream and returns the final architectural state and the machine's state hash.
fn run_stream(seed: u64, engine: Engine) -> ((u64, u64, [u64; 32], Stop, u64), u64) {
    let mut machine = Machine::bare(MachineConfig {
        ram_size: 4 << 20,
        ..MachineConfig::default()
    })
    .unwrap();
    machine.ram.set_engine(engine).unwrap();
    // Every block is compiled on its first run, so that all of the stream is compared.
    machine.ram.set_hot_threshold(0);
    machine.ram.set_background_compilation(false);
    let program = random_program(seed, 4096);
    machine.ram.write(machine.ram.base(), &program).unwrap();
    machine.hart.pc = machine.ram.base();
    // Point pointers somewhere interesting: RAM, MMIO, and nowhere.
    let bases = [
        0x8000_0000u64,
        0x8000_8000,
        0x1000_0000,
        0x200_0000,
        0,
        u64::MAX - 7,
    ];
    for (i, x) in machine.hart.x.iter_mut().enumerate().skip(1) {
        *x = bases[i % bases.len()].wrapping_add(i as u64 * 8);
    }
    // Traps land back in the stream, so it keeps going after faults.
    machine.hart.csr.mtvec = machine.ram.base() + 0x100;
    let stop = machine.run_unattended(Some(20_000));
    let hash = machine.state_hash();
    let compiled = machine.ram.jit_stats().map_or(0, |s| s.blocks_compiled);
    let state = (
        machine.hart.icount,
        machine.hart.pc,
        machine.hart.x,
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
                Stop::Limit | Stop::PowerOff(_) | Stop::Reset | Stop::Idle { until: None }
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
