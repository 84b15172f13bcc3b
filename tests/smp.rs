//! Boards of several harts (`--smp N`): bare-metal programs print what QEMU 10 prints with
//! `-smp N`, Debian finds and uses every hart, and a multi-hart run stays a pure function of
//! its inputs: run twice, under either engine, recorded and replayed, or restored from a
//! snapshot taken in the middle, it ends in the same state.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{debian_machine, guest_program, require_default_guest, run_to};
use common::{rewind, scratch, state_hash, stderr, Console, PROMPT};
use rewind_machine::{Machine, MachineConfig};

const SHELL_APPEND: &str = "console=ttyS0 rdinit=/init quiet cryptomgr.notests";

/// `rewind run` of bare-metal `program` with `args`, with the host's inputs pinned.
fn run_bare(program: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "run",
        "--bios",
        "none",
        "--kernel",
        program.to_str().unwrap(),
    ];
    all.extend(["--rtc-base", "0", "--entropy-seed", "1", "--state-hash"]);
    all.extend(args);
    rewind(&all)
}

#[test]
fn bare_metal_harts_print_what_qemu_prints() {
    let program = guest_program("smp");
    for harts in [1u32, 2, 4] {
        let ours = run_bare(&program, &["--smp", &harts.to_string()]);
        assert_eq!(
            ours.status.code(),
            Some(0),
            "--smp {harts}: {}",
            stderr(&ours)
        );
        let qemu = Command::new("timeout")
            .args(["120", "qemu-system-riscv64", "-M", "virt", "-bios", "none"])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .args(["-smp", &harts.to_string(), "-kernel"])
            .arg(&program)
            .stdin(Stdio::null())
            .output()
            .expect("qemu-system-riscv64 (scripts/install-deps installs it)");
        assert_eq!(qemu.status.code(), Some(0), "QEMU -smp {harts}: {qemu:?}");
        let text = String::from_utf8_lossy(&ours.stdout);
        assert_eq!(
            text,
            String::from_utf8_lossy(&qemu.stdout),
            "--smp {harts}: Rewind and QEMU printed different things"
        );
        // What the program checks, so that agreement is not agreement on a failure.
        assert!(text.contains(&format!("harts in the device tree: {harts}\n")));
        let others = format!("{:#018x}", harts - 1);
        assert!(text.contains(&format!("IPIs taken = {others}")), "{text}");
        assert!(text.contains(&format!("timers fired = {others}")), "{text}");
        assert!(text.ends_with("PASS\n"), "{text}");
    }
}

#[test]
fn a_multi_hart_run_is_the_same_twice_and_under_both_engines() {
    let program = guest_program("smp");
    for quantum in ["10000", "37"] {
        let runs: Vec<_> = ["jit", "jit", "interp"]
            .iter()
            .map(|engine| {
                let args = ["--smp", "4", "--quantum", quantum, "--engine", engine];
                let out = run_bare(&program, &args);
                assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
                (out.stdout.clone(), state_hash(&out))
            })
            .collect();
        assert_eq!(runs[0], runs[1], "quantum {quantum}: two runs differ");
        assert_eq!(
            runs[0], runs[2],
            "quantum {quantum}: the interpreter and the compiling engine differ"
        );
    }
}

#[test]
fn bad_hart_counts_and_quanta_are_refused_before_the_guest_starts() {
    let program = guest_program("smp");
    for (args, says) in [
        (&["--smp", "0"][..], "give --smp between 1 and 32"),
        (&["--smp", "33"][..], "give --smp between 1 and 32"),
        (
            &["--smp", "2", "--quantum", "0"][..],
            "give --quantum 1 or more",
        ),
    ] {
        let out = run_bare(&program, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}: the guest ran");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// Debian on four harts: Linux brings up every hart, and a typed session recorded on them
/// replays byte for byte under both engines.
#[test]
fn debian_on_four_harts_records_and_replays_byte_for_byte() {
    require_default_guest();
    let dir = scratch("smp-session");
    let recording = dir.join("smp4.rwd");
    let mut console = Console::start(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--smp",
        "4",
        "--append",
        SHELL_APPEND,
    ]);
    console.wait_for(0, PROMPT, Duration::from_secs(180));
    assert_eq!(console.command("nproc").trim(), "4");
    assert_eq!(
        console.command("grep -c ^processor /proc/cpuinfo").trim(),
        "4"
    );
    assert_eq!(
        console.command("cat /sys/devices/system/cpu/online").trim(),
        "0-3"
    );
    // Work on every hart at once: four shells hashing, then the IPIs and timer interrupts
    // each hart took.
    console.command("for i in 1 2 3 4; do sha256sum /bin/busybox > /tmp/h$i & done; wait");
    let hashes = console.command("cat /tmp/h? | sort | uniq -c");
    assert!(
        hashes.trim().starts_with("4 "),
        "four hashes of the same file differ:\n{hashes}"
    );
    let interrupts = console.command("grep -E 'IPI|riscv-timer' /proc/interrupts");
    assert!(interrupts.contains("IPI"), "{interrupts}");
    console.type_text("poweroff -f\n");
    let status = console.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "the recorded guest must power off");
    let recorded = console.bytes.clone();
    drop(console);

    let replays: Vec<String> = ["interp", "jit"]
        .iter()
        .map(|engine| common::replay_prints(&recording, engine, &recorded))
        .collect();
    assert_eq!(
        replays[0], replays[1],
        "the engines ended in different states"
    );

    // The recording names its harts; gdb cannot take it yet, and says so.
    let info = rewind(&["inspect", "--json", recording.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["machine"]["harts"], 4, "{info}");
    let debug = rewind(&["debug", recording.to_str().unwrap()]);
    assert_eq!(debug.status.code(), Some(1));
    assert!(stderr(&debug).contains("has 4 harts"), "{}", stderr(&debug));
}

/// Snapshots taken while Linux brings up its harts, restored in any order, continue exactly
/// as the run that never stopped.
#[test]
fn restored_snapshots_of_four_harts_continue_as_straight_play() {
    require_default_guest();
    const A: u64 = 120_000_000;
    const B: u64 = 260_000_000;
    const END: u64 = 400_000_000;
    let mut reference = debian_machine(4);
    let reference_out = run_to(&mut reference, END);
    let reference_digest = reference.digest();
    for id in 1..4 {
        let pc = reference.hart_by_id(id).unwrap().state.pc;
        assert!(
            pc >= 0xffff_ffff_8000_0000,
            "Linux has not started hart {id} by {END}: it is at {pc:#x}"
        );
    }

    let mut machine = debian_machine(4);
    let mut out = run_to(&mut machine, A);
    let at_a = machine.snapshot();
    let out_a = out.clone();
    out.extend(run_to(&mut machine, B));
    let at_b = machine.snapshot();
    let out_b = out.clone();
    out.extend(run_to(&mut machine, END));
    assert_eq!(out, reference_out);
    assert_eq!(machine.digest(), reference_digest);

    for (name, snapshot, before) in [("B", &at_b, out_b), ("A", &at_a, out_a)] {
        machine.restore(snapshot).unwrap();
        let mut out = before;
        out.extend(run_to(&mut machine, END));
        assert_eq!(
            out, reference_out,
            "restored at {name}: other console output"
        );
        assert_eq!(
            machine.digest(),
            reference_digest,
            "restored at {name}: another state at the end"
        );
    }
    // A snapshot of four harts does not fit a board of one.
    let mut one = Machine::bare(MachineConfig {
        ram_size: 512 << 20,
        ..MachineConfig::default()
    })
    .unwrap();
    let refused = one.restore(&at_a).unwrap_err().to_string();
    assert!(refused.contains("not of a board with 1 harts"), "{refused}");
}
