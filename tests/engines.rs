//! The compiling engine computes exactly what the interpreter computes: every guest program
//! ends with the same console output, instruction count and state hash under both, with every
//! block compiled on its first run so that nothing escapes the comparison.

mod common;

use rewind_cpu::Engine;
use rewind_machine::{BootImages, InputEvent, Machine, MachineConfig, MachineStop};

/// What a run left behind that a user could tell apart.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    console: String,
    stop: MachineStop,
    icount: u64,
    state_hash: u64,
}

fn run(elf: &[u8], engine: Engine, hot_threshold: u32) -> Outcome {
    run_counting(elf, engine, hot_threshold).0
}

/// As `run`, and how many blocks were compiled.
fn run_counting(elf: &[u8], engine: Engine, hot_threshold: u32) -> (Outcome, u64) {
    let (outcome, stats) = run_with_cache(elf, engine, hot_threshold, None);
    (outcome, stats.blocks_compiled)
}

/// A machine with pinned inputs, loaded with `elf`, that runs it on `engine` and compiles a
/// block (in the run loop, exactly when hot) after `hot_threshold` runs.
fn machine(elf: &[u8], engine: Engine, hot_threshold: u32) -> Machine {
    let images = BootImages {
        kernel: Some(elf.to_vec()),
        ..BootImages::default()
    };
    let mut machine = Machine::new(MachineConfig::default(), &images).expect("the program loads");
    machine.inject(&InputEvent::RtcBase(1_700_000_000_000_000_000));
    machine.inject(&InputEvent::Entropy(vec![7; 32]));
    machine
        .ram
        .set_engine(engine)
        .expect("this host runs the engine");
    machine.ram.set_hot_threshold(hot_threshold);
    // Compiled exactly when hot, so that the comparison covers what the threshold says.
    machine.ram.set_background_compilation(false);
    machine
}

/// As `run`, with `code_cache` bytes of code memory if given; and the compiler's counters.
fn run_with_cache(
    elf: &[u8],
    engine: Engine,
    hot_threshold: u32,
    code_cache: Option<usize>,
) -> (Outcome, rewind_cpu::JitStats) {
    let mut machine = machine(elf, engine, hot_threshold);
    if let Some(bytes) = code_cache {
        machine.ram.set_code_cache_size(bytes);
    }
    let stop = machine.run_unattended(Some(2_000_000_000));
    let stats = machine.ram.jit_stats().unwrap_or_default();
    if engine == Engine::Jit && hot_threshold == 0 {
        assert!(stats.blocks_compiled > 0, "nothing was compiled");
    }
    assert_eq!(stats.refused, 0, "Cranelift refused code it was given");
    let outcome = Outcome {
        console: String::from_utf8_lossy(&machine.take_console_output()).into_owned(),
        stop,
        icount: machine.hart.state.icount,
        state_hash: machine.state_hash(),
    };
    (outcome, stats)
}

/// Whether this host has the compiling engine (saying so when it has not: nothing to compare).
fn host_compiles() -> bool {
    let ok = Engine::Jit.check_host().is_ok();
    if !ok {
        eprintln!("this host has no compiling engine: nothing to compare");
    }
    ok
}

fn programs() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/progs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/guest/progs")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let ext = path.extension()?.to_str()?;
            matches!(ext, "c" | "S").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_guest_program_computes_the_same_under_both_engines() {
    if !host_compiles() {
        return;
    }
    let names = programs();
    assert!(names.len() >= 10, "guest programs not found: {names:?}");
    for name in names {
        let elf = std::fs::read(common::guest_program(&name)).unwrap();
        let reference = run(&elf, Engine::Interp, 0);
        assert_eq!(
            reference.stop,
            MachineStop::PowerOff(0),
            "{name}: the program's checks failed under the interpreter:\n{}",
            reference.console
        );
        for threshold in [0, 3] {
            let compiled = run(&elf, Engine::Jit, threshold);
            assert_eq!(
                compiled, reference,
                "{name}: the compiling engine (hot after {threshold} runs) differs from the \
                 interpreter"
            );
        }
    }
}

/// Where a run of `elf` stands after each of a series of short slices: (count, pc, registers).
fn slice_ends(elf: &[u8], engine: Engine) -> (Vec<(u64, u64, [u64; 32])>, rewind_cpu::JitStats) {
    let mut machine = machine(elf, engine, 0);
    let mut ends = Vec::new();
    // Lengths from 1 to 4,000 in an irregular order, so that slices end at every point of
    // a loop's blocks.
    let mut seed = 12345u64;
    loop {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let slice = 1 + (seed >> 33) % 4000;
        match machine.run(None, slice) {
            MachineStop::Slice => {}
            MachineStop::Idle { until: Some(t) } => machine.skip_idle(t),
            MachineStop::PowerOff(_) => break,
            stop => panic!("{stop:?}"),
        }
        ends.push((
            machine.hart.state.icount,
            machine.hart.state.pc,
            machine.hart.state.x,
        ));
    }
    (ends, machine.ram.jit_stats().unwrap_or_default())
}

#[test]
fn runs_in_short_slices_stop_exactly_where_the_interpreter_stops() {
    if !host_compiles() {
        return;
    }
    for name in ["cprog", "int_ops"] {
        let elf = std::fs::read(common::guest_program(name)).unwrap();
        let (reference, _) = slice_ends(&elf, Engine::Interp);
        let (compiled, stats) = slice_ends(&elf, Engine::Jit);
        assert!(stats.blocks_compiled > 0, "{name}: nothing was compiled");
        assert!(stats.loops_compiled > 0, "{name}: no loop was compiled");
        assert_eq!(compiled.len(), reference.len(), "{name}: slice count");
        for (k, (c, r)) in compiled.iter().zip(&reference).enumerate() {
            assert_eq!(
                c, r,
                "{name}: slice {k} ended elsewhere under the compiling engine"
            );
        }
    }
}

#[test]
fn a_full_code_cache_is_dropped_and_filled_again_without_changing_a_result() {
    if !host_compiles() {
        return;
    }
    // 64 KiB holds a few hundred blocks: these programs compile more than that.
    const SMALL_CACHE: usize = 64 << 10;
    for name in ["cprog", "fp_arith", "vm_sv39"] {
        let elf = std::fs::read(common::guest_program(name)).unwrap();
        let reference = run(&elf, Engine::Interp, 0);
        let (compiled, stats) = run_with_cache(&elf, Engine::Jit, 0, Some(SMALL_CACHE));
        assert!(
            stats.cache_flushes > 0,
            "{name}: {} blocks ({} bytes of code) never filled {SMALL_CACHE} bytes",
            stats.blocks_compiled,
            stats.code_bytes
        );
        assert_eq!(
            compiled, reference,
            "{name}: the compiling engine with a cache that keeps filling differs from the \
             interpreter"
        );
    }
}

#[test]
fn code_that_rewrites_itself_runs_its_new_instructions_under_both_engines() {
    if !host_compiles() {
        return;
    }
    let elf = std::fs::read(common::guest_program("smc")).unwrap();
    let reference = run(&elf, Engine::Interp, 0);
    assert_eq!(
        reference.stop,
        MachineStop::PowerOff(0),
        "stale code ran under the interpreter:\n{}",
        reference.console
    );
    assert!(
        reference.console.contains("stale 0"),
        "{}",
        reference.console
    );
    // Compiled at once, after a few runs, and (the default) after many.
    for threshold in [0, 3, 1024] {
        let compiled = run(&elf, Engine::Jit, threshold);
        assert_eq!(
            compiled, reference,
            "the compiling engine (hot after {threshold} runs) ran other code"
        );
    }
}

#[test]
fn stores_beside_code_leave_its_compiled_blocks_alone() {
    if !host_compiles() {
        return;
    }
    let elf = std::fs::read(common::guest_program("data_beside_code")).unwrap();
    let reference = run(&elf, Engine::Interp, 0);
    assert!(
        reference.console.contains("beside count 9000"),
        "{}",
        reference.console
    );
    let (compiled, blocks) = run_counting(&elf, Engine::Jit, 0);
    assert_eq!(compiled, reference);
    // 3,000 stores into the loop's page: had each dropped the page's code, the loop would
    // have been compiled again every time.
    assert!(blocks < 200, "{blocks} blocks compiled");
}
