//! Random instruction streams on a fresh machine: whatever the bytes, only architectural
//! events may happen (traps, device errors), never a host panic.
//!
//! Run with `cargo fuzz run random_instructions` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_machine::{Machine, MachineConfig};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let mut machine = Machine::bare(MachineConfig {
        ram_size: 2 << 20,
        ..MachineConfig::default()
    })
    .expect("a 2 MiB machine is valid");
    // The first bytes seed the registers; the rest is the program, run from the start of RAM.
    let (seed, program) = data.split_at(8);
    let seed = u64::from_le_bytes(seed.try_into().unwrap());
    let base = machine.ram.base();
    machine.ram.write(base, &program[..program.len().min(1 << 20)]).unwrap();
    machine.hart.pc = base;
    for (i, x) in machine.hart.x.iter_mut().enumerate().skip(1) {
        *x = seed.rotate_left(i as u32 * 7) ^ base;
    }
    // Traps land back in the program so that it keeps going after faults.
    machine.hart.csr.mtvec = base + (seed & 0xffc);
    machine.run_unattended(Some(50_000));
});
