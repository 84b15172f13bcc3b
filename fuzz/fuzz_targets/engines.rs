//! The compiling engine against the interpreter: any program, run with every block compiled
//! on its first run, must end in the state the interpreter leaves.
//!
//! Run with `cargo fuzz run engines` from the repository root (x86-64 hosts).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_cpu::Engine;
use rewind_machine::{Machine, MachineConfig};

/// Runs the program (registers seeded from `seed`) and returns what a user could compare.
fn run(program: &[u8], seed: u64, engine: Engine) -> (u64, u64, [u64; 32], u64) {
    let mut machine = Machine::bare(MachineConfig {
        ram_size: 2 << 20,
        ..MachineConfig::default()
    })
    .expect("a 2 MiB machine is valid");
    machine.ram.set_engine(engine).expect("x86-64 hosts run both engines");
    machine.ram.set_hot_threshold(0);
    machine.ram.set_background_compilation(false);
    let base = machine.ram.base();
    machine.ram.write(base, program).unwrap();
    machine.hart.pc = base;
    for (i, x) in machine.hart.x.iter_mut().enumerate().skip(1) {
        // Some registers point into RAM, so that loads and stores hit the TLB fast path.
        *x = if i % 3 == 0 {
            base + (seed.rotate_left(i as u32) & 0x1f_fff8)
        } else {
            seed.rotate_left(i as u32 * 7)
        };
    }
    machine.hart.csr.mtvec = base + (seed & 0xffc);
    machine.run_unattended(Some(20_000));
    let hash = machine.state_hash();
    (machine.hart.icount, machine.hart.pc, machine.hart.x, hash)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (seed, program) = data.split_at(8);
    let seed = u64::from_le_bytes(seed.try_into().unwrap());
    let program = &program[..program.len().min(1 << 20)];
    assert_eq!(
        run(program, seed, Engine::Jit),
        run(program, seed, Engine::Interp),
        "the engines differ"
    );
});
