//! Boards of several harts (`--smp N`): bare-metal programs print what QEMU 10 prints with
//! `-smp N`, Debian finds and uses every hart, and a multi-hart run stays a pure function of
//! its inputs: run twice, under either engine, recorded and replayed, or restored from a
//! snapshot taken in the middle, it ends in the same state.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::PROMPT;
use common::{debian_machine_with, guest_program, require_default_guest, run_to};
use common::{gdb, gdbinit, rewind, scratch, serve, state_hash, stderr, tagged, Console};
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
    let fixed = run_bare(&program, &["--smp", "4"]);
    let schedules = [
        &["--quantum", "10000"][..],
        &["--quantum", "37"],
        &["--chaos=1"],
        &["--chaos=2", "--quantum", "500"],
    ];
    let mut ends = Vec::new();
    for schedule in schedules {
        let runs: Vec<_> = ["jit", "jit", "interp"]
            .iter()
            .map(|engine| {
                let args = [&["--smp", "4", "--engine", engine][..], schedule].concat();
                let out = run_bare(&program, &args);
                assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
                (out.stdout.clone(), state_hash(&out))
            })
            .collect();
        assert_eq!(runs[0], runs[1], "{schedule:?}: two runs differ");
        assert_eq!(
            runs[0], runs[2],
            "{schedule:?}: the interpreter and the compiling engine differ"
        );
        // The program prints nothing that depends on the interleaving.
        assert_eq!(runs[0].0, fixed.stdout, "{schedule:?}: other output");
        ends.push(runs[0].1.clone());
    }
    // Each schedule interleaves the harts its own way: the states differ.
    ends.sort();
    ends.dedup();
    assert_eq!(ends.len(), schedules.len(), "two schedules ran alike");
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
        (
            &["--chaos=3"][..],
            "one hart has none: give --smp 2 or more",
        ),
    ] {
        common::assert_refused(&run_bare(&program, args), says);
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
    power_off_and_replay_under_both_engines(console, &recording);

    // The recording names its harts.
    let info = rewind(&["inspect", "--json", recording.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["machine"]["harts"], 4, "{info}");
}

/// Snapshots taken while Linux brings up its harts, restored in any order, continue exactly
/// as the run that never stopped: under the fixed schedule and in chaos mode.
#[test]
fn restored_snapshots_of_four_harts_continue_as_straight_play() {
    require_default_guest();
    for chaos in [None, Some(5)] {
        snapshots_continue_as_straight_play(chaos);
    }
}

fn snapshots_continue_as_straight_play(chaos: Option<u64>) {
    const A: u64 = 120_000_000;
    const B: u64 = 260_000_000;
    const END: u64 = 400_000_000;
    let mut reference = debian_machine_with(4, chaos);
    let reference_out = run_to(&mut reference, END);
    let reference_digest = reference.digest();
    for id in 1..4 {
        let pc = reference.hart_by_id(id).unwrap().state.pc;
        assert!(
            pc >= 0xffff_ffff_8000_0000,
            "chaos {chaos:?}: Linux has not started hart {id} by {END}: it is at {pc:#x}"
        );
    }

    let mut machine = debian_machine_with(4, chaos);
    let mut out = run_to(&mut machine, A);
    let at_a = machine.snapshot();
    let out_a = out.clone();
    out.extend(run_to(&mut machine, B));
    let at_b = machine.snapshot();
    let out_b = out.clone();
    out.extend(run_to(&mut machine, END));
    assert_eq!(out, reference_out, "chaos {chaos:?}");
    assert_eq!(machine.digest(), reference_digest, "chaos {chaos:?}");

    for (name, snapshot, before) in [("B", &at_b, out_b), ("A", &at_a, out_a)] {
        machine.restore(snapshot).unwrap();
        let mut out = before;
        out.extend(run_to(&mut machine, END));
        assert_eq!(
            out, reference_out,
            "chaos {chaos:?}, restored at {name}: other console output"
        );
        assert_eq!(
            machine.digest(),
            reference_digest,
            "chaos {chaos:?}, restored at {name}: another state at the end"
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

/// Boots the test initramfs to run `command`, then powers off.
fn run_append(command: &str) -> String {
    format!("console=ttyS0 rdinit=/test-init quiet cryptomgr.notests -- {command}")
}

/// The default guest's initramfs with the Linux test programs (`tests/guest/linux`, built with
/// gcc-riscv64-linux-gnu) and `/test-init` added: their cpio archive after the guest's, as the
/// kernel reads them (the later one at a 4-byte boundary).
fn test_initramfs() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = {
        static MAKE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = MAKE.lock().unwrap_or_else(|e| e.into_inner());
        Command::new("make")
            .args(["-s", "-C", "tests/guest", "linux"])
            .current_dir(root)
            .status()
            .expect("make (gcc-riscv64-linux-gnu: scripts/install-deps)")
    };
    assert!(built.success(), "make -C tests/guest linux failed");
    let overlay = std::fs::read(root.join("tests/guest/build/linux/overlay.cpio")).unwrap();
    let mut image = std::fs::read(common::default_guest_dir().join("initramfs.cpio.gz")).unwrap();
    image.resize(image.len().next_multiple_of(4), 0);
    image.extend(overlay);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("smp-test-initramfs.cpio");
    common::write_in_place(&path, &image);
    path
}

/// `--bios`, `--kernel` and `--initrd` options for the default guest with the test initramfs.
fn test_images() -> Vec<String> {
    let dir = common::default_guest_dir();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let initrd = test_initramfs().to_str().unwrap().to_string();
    [
        "--bios",
        &file("fw_dynamic.bin"),
        "--kernel",
        &file("Image"),
        "--initrd",
        &initrd,
    ]
    .map(String::from)
    .to_vec()
}

/// Powers the recorded guest on `console` off, then replays `recording` under both engines:
/// each prints the recorded bytes, and they end in the same state.
fn power_off_and_replay_under_both_engines(mut console: Console, recording: &std::path::Path) {
    console.type_text("poweroff -f\n");
    let status = console.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "the recorded guest must power off");
    let recorded = console.bytes.clone();
    drop(console);
    let hashes: Vec<String> = ["interp", "jit"]
        .iter()
        .map(|engine| common::replay_prints(recording, engine, &recorded))
        .collect();
    assert_eq!(
        hashes[0], hashes[1],
        "the engines ended in different states"
    );
}

/// `rewind SUBCOMMAND` of the default guest on four harts, with the test initramfs and the
/// host's inputs pinned, running `command` and powering off.
fn run_linux(subcommand: &[&str], command: &str, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = subcommand.iter().map(|s| s.to_string()).collect();
    args.extend(test_images());
    for (flag, value) in [
        ("--append", run_append(command)),
        ("--smp", "4".into()),
        ("--rtc-base", "0".into()),
        ("--entropy-seed", "1".into()),
    ] {
        args.extend([flag.to_string(), value]);
    }
    args.extend(["--no-pacing", "--state-hash"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = rewind(&args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    out
}

/// A pthreads program, one thread pinned to each hart, runs on all four, prints what it prints
/// on QEMU 10 with `-smp 4`, and prints the same bytes and ends in the same state twice.
#[test]
fn pthreads_run_on_every_hart_as_on_qemu() {
    require_default_guest();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let out = run_linux(&["run"], "/threads 300000", &[]);
            (out.stdout.clone(), state_hash(&out))
        })
        .collect();
    assert_eq!(runs[0], runs[1], "two runs with pinned inputs differ");
    let ours = String::from_utf8_lossy(&runs[0].0).into_owned();
    let line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("threads: "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("the program printed no result:\n{text}"))
    };
    assert!(
        line(&ours).ends_with("ran on cpus 0 1 2 3"),
        "{}",
        line(&ours)
    );
    assert!(ours.contains("exit status 0"), "{ours}");
    let dir = common::default_guest_dir();
    let qemu = Command::new("timeout")
        .args([
            "300",
            "qemu-system-riscv64",
            "-M",
            "virt",
            "-smp",
            "4",
            "-m",
            "512M",
        ])
        .args([
            "-display", "none", "-serial", "stdio", "-monitor", "none", "-bios",
        ])
        .arg(dir.join("fw_dynamic.bin"))
        .arg("-kernel")
        .arg(dir.join("Image"))
        .arg("-initrd")
        .arg(test_initramfs())
        .args(["-append", &run_append("/threads 300000")])
        .stdin(Stdio::null())
        .output()
        .expect("qemu-system-riscv64 (scripts/install-deps installs it)");
    assert_eq!(
        line(&ours),
        line(&String::from_utf8_lossy(&qemu.stdout)),
        "Rewind and QEMU -smp 4 computed different things"
    );
}

/// Seeds tried before chaos mode must have shown the race.
const CHAOS_SEEDS: u64 = 8;

/// An unsynchronised check-then-act between four threads never goes wrong under the fixed
/// schedule, goes wrong in chaos mode within a few seeds, and the recording of a failing run
/// replays the failure, byte for byte, under both engines.
#[test]
fn chaos_mode_exposes_a_race_and_its_recording_replays_it() {
    require_default_guest();
    let fixed = run_linux(&["run"], "/racy", &[]);
    let text = String::from_utf8_lossy(&fixed.stdout);
    assert!(
        text.contains("no race in 200 rounds on 4 threads"),
        "the fixed schedule let the race happen:\n{text}"
    );

    let (seed, failed) = (1..=CHAOS_SEEDS)
        .find_map(|seed| {
            let out = run_linux(&["run"], "/racy", &[&format!("--chaos={seed}")]);
            assert!(stderr(&out).contains(&format!("chaos mode, seed {seed}")));
            String::from_utf8_lossy(&out.stdout)
                .contains("RACE: ")
                .then_some((seed, out))
        })
        .unwrap_or_else(|| panic!("no race in {CHAOS_SEEDS} chaos seeds"));
    eprintln!("chaos mode showed the race with seed {seed}");

    let dir = scratch("smp-chaos");
    let recording = dir.join("racy.rwd");
    let chaos = format!("--chaos={seed}");
    let recorded = run_linux(
        &["record", "-o", recording.to_str().unwrap()],
        "/racy",
        &[&chaos],
    );
    assert_eq!(
        recorded.stdout, failed.stdout,
        "the recorded run took another interleaving than the run with the same seed"
    );
    assert_eq!(state_hash(&recorded), state_hash(&failed));
    for engine in ["jit", "interp"] {
        let hash = common::replay_prints(&recording, engine, &recorded.stdout);
        assert_eq!(hash, state_hash(&recorded), "{engine}: another end state");
    }
    let info = rewind(&["inspect", recording.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains(&format!("chaos mode, seed {seed}")), "{info}");
    // The seed is the recording's: a replay takes no other.
    let refused = rewind(&["replay", &chaos, recording.to_str().unwrap()]);
    common::assert_refused(&refused, "a replay follows the recorded schedule");

    who_raced_in_gdb(&recording);
}

/// gdb's output and errors (where monitor commands print) for `commands` on `server`, with
/// the symbols of `elf` and the commands of `rewind gdbinit`.
fn gdb_with_rewind_commands(
    server: &common::Server,
    elf: &std::path::Path,
    commands: &str,
) -> (String, String) {
    let setup = format!("file {}\nsource {}", elf.display(), gdbinit().display());
    let out = gdb(server, &setup, commands);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

/// The store and hart of `monitor last-write`'s answer on a board of several harts
/// (`POSITION 0xPC hart H`), among gdb's errors.
fn last_write_answer(stderr: &str) -> (u64, u64) {
    let words: Vec<&str> = stderr
        .lines()
        .find(|l| l.contains(" 0x") && l.contains(" hart "))
        .unwrap_or_else(|| panic!("no last-write answer:\n{stderr}"))
        .split_whitespace()
        .collect();
    let pc = u64::from_str_radix(words[1].trim_start_matches("0x"), 16).unwrap();
    (pc, words[3].parse().unwrap())
}

/// gdb on the failing recording: stopped where a thread finds that another took the slot in
/// its round too, `last-write` and a reverse watchpoint on `owner` name the harts that raced
/// and their store: the last writer, and before it another hart that found the slot free.
fn who_raced_in_gdb(recording: &std::path::Path) {
    let racy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/build/linux/racy");
    let server = serve(recording);
    let write = "reverse-continue\nprintf \"WRITE %d %lx %lx\\n\", $_thread, $pc, owner\n";
    let commands = format!(
        "break collision\ncontinue\nlast-write &owner\nwatch owner\n{}",
        write.repeat(2)
    );
    let (stdout, stderr) = gdb_with_rewind_commands(&server, &racy, &commands);
    assert!(
        stdout.contains("hit Breakpoint 1, collision (round="),
        "no thread met a taken slot:\n{stdout}\n{stderr}"
    );
    let (store, writer) = last_write_answer(&stderr);
    let writes: Vec<Vec<u64>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("WRITE "))
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            vec![
                v[0].parse().unwrap(),
                u64::from_str_radix(v[1], 16).unwrap(),
                u64::from_str_radix(v[2], 16).unwrap(),
            ]
        })
        .collect();
    assert_eq!(writes.len(), 2, "{stdout}\n{stderr}");
    // The newest write is last-write's: its thread is its hart's, at its store.
    assert_eq!(writes[0][..2], [writer + 1, store], "{stdout}\n{stderr}");
    // Before it, another hart wrote there too, with the same store (`owner = id + 1`)...
    assert_ne!(writes[1][0], writes[0][0], "{stdout}");
    assert_eq!(writes[1][1], store, "{stdout}");
    assert!(stdout.contains("owner = id + 1;"), "{stdout}");
    // ... the first found the slot free, and the second overwrote it: the race.
    assert_ne!(
        writes[0][2], 0,
        "the last writer found the slot free:\n{stdout}"
    );
    assert_eq!(writes[1][2], 0, "{stdout}");
    assert_eq!(
        stdout.matches(" hit Hardware watchpoint 2: owner").count(),
        2,
        "{stdout}"
    );
}

/// A bare-metal program on four harts, under gdb: each hart is a thread; a breakpoint stops
/// whichever hart gets there and names its thread; `stepi` and `reverse-stepi` move the
/// selected thread's hart by one of its instructions (the others as the schedule moved them);
/// `reverse-continue` finds the most recent hit on any hart; `last-write` and a reverse
/// watchpoint name the hart that wrote.
#[test]
fn each_hart_is_a_gdb_thread_forwards_and_backwards() {
    let (program, recording) = record_smp("gdb.rwd");
    let server = serve(&recording);
    let hit = "continue\nprintf \"HIT %d %d\\n\", $_thread, hartid\n";
    let look = "printf \"PC %lx\\n\", $pc\nicount\n";
    let commands = format!(
        "break secondary_main\n{}info threads\nthread 3\n{look}stepi\n{look}reverse-stepi\n{look}\
         reverse-continue\nprintf \"BACK %d\\n\", $_thread\n\
         thread 2\nicount\nreverse-stepi\nprintf \"AGAIN %d\\n\", $_thread\nicount\n\
         delete\ncontinue\nlast-write &ipis_taken\nwatch ipis_taken\nreverse-continue\n\
         printf \"WRITER %d %lx\\n\", $_thread, $pc\n",
        hit.repeat(3)
    );
    let (stdout, stderr) = gdb_with_rewind_commands(&server, &program, &commands);
    for hart in 0..4 {
        assert!(
            stdout.contains(&format!("Thread 1.{} (hart {hart})", hart + 1)),
            "info threads:\n{stdout}\n{stderr}"
        );
    }
    // The three secondary harts each stop at the breakpoint, in their thread.
    let hits: Vec<(u64, u64)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("HIT "))
        .map(|l| l.split_once(' ').unwrap())
        .map(|(t, h)| (t.parse().unwrap(), h.parse().unwrap()))
        .collect();
    let mut threads: Vec<u64> = hits.iter().map(|h| h.0).collect();
    threads.sort_unstable();
    assert_eq!(threads, [2, 3, 4], "{stdout}\n{stderr}");
    assert!(
        hits.iter().all(|&(thread, hartid)| thread == hartid + 1),
        "{hits:?}"
    );
    // stepi in thread 3: hart 2 executes one instruction; reverse-stepi: back before it.
    let pcs = tagged(&stdout, "PC ");
    assert_eq!(pcs.len(), 3, "{stdout}\n{stderr}");
    assert_ne!(pcs[1], pcs[0], "stepi did not move thread 3");
    assert_eq!(pcs[2], pcs[0], "reverse-stepi did not undo the step");
    let counts_of = |hart: usize| -> Vec<u64> {
        let prefix = format!("hart {hart}: ");
        stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|l| l.trim_end_matches(" instructions").parse().unwrap())
            .collect()
    };
    let hart2 = counts_of(2);
    assert_eq!(hart2.len(), 5, "{stderr}");
    assert_eq!([hart2[1], hart2[2]], [hart2[0] + 1, hart2[0]], "{stderr}");
    // The others moved as the schedule moved them, and went back only as far as needed: the
    // position after reverse-stepi is hart 2's instruction, the last before the stepi's end.
    let positions: Vec<u64> = stderr
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(positions.len(), 5, "{stderr}");
    assert_eq!(positions[2], positions[1] - 1, "{stderr}");
    // Back from there, the most recent hit is the third.
    let back: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BACK "))
        .unwrap_or_else(|| panic!("{stdout}\n{stderr}"))
        .parse()
        .unwrap();
    assert_eq!(back, hits[2].0, "{stdout}");
    // There, reverse-stepi in thread 2 (gdb first steps the thread at the breakpoint back
    // over it, naming that one): hart 1 goes back by one instruction, and gdb stays in
    // thread 2.
    let again = stdout.lines().find_map(|l| l.strip_prefix("AGAIN "));
    assert_eq!(again, Some("2"), "{stdout}\n{stderr}");
    let hart1 = counts_of(1);
    assert_eq!(hart1[4], hart1[3] - 1, "{stderr}");
    // The last increment of `ipis_taken`: last-write and the reverse watchpoint agree on
    // the hart and the instruction.
    let (store, hart) = last_write_answer(&stderr);
    let writer = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRITER "))
        .unwrap_or_else(|| panic!("{stdout}\n{stderr}"));
    assert_eq!(
        writer,
        format!("{} {store:x}", hart + 1),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "Thread {} hit Hardware watchpoint 2: ipis_taken",
            hart + 1
        )),
        "{stdout}"
    );
}

/// `rewind record` of the bare-metal SMP program on four harts, in turns of 1,000
/// instructions, to `recording`.
fn record_smp_args(program: &std::path::Path, recording: &std::path::Path) -> Vec<String> {
    let (program, recording) = (program.to_str().unwrap(), recording.to_str().unwrap());
    let args = ["record", "-o", recording, "--smp", "4", "--quantum", "1000"];
    let images = ["--bios", "none", "--kernel", program];
    args.iter().chain(&images).map(|a| a.to_string()).collect()
}

/// A recording of the bare-metal SMP program on four harts, and the program.
fn record_smp(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let program = guest_program("smp");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("smp-gdb");
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join(name);
    let args = record_smp_args(&program, &recording);
    let out = rewind(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (program, recording)
}

/// What a client that steps one thread (`vCont;s`) gets from a recording: the run goes on
/// until that hart has executed one more instruction, however long it waits for its turn,
/// and back to where it had executed one fewer; both land in the state of straight play.
#[test]
fn one_hart_steps_forwards_and_backwards_in_a_recording() {
    use rewind_debug::timeline::{DebugStop, Timeline};
    use rewind_replay::{Player, Recording};
    let (_, path) = record_smp("steps.rwd");
    let recording = Recording::open(&path).unwrap();
    let mut timeline = Timeline::new(Player::new(&recording, &[]).unwrap(), u64::MAX);
    let mark = |t: &Timeline, hart: u64| t.player.machine.hart_marks()[hart as usize];
    let assert_straight = |t: &mut Timeline| {
        let mut straight = Player::new(&recording, &[]).unwrap();
        straight.play_to(t.icount()).unwrap();
        assert_eq!(t.player.machine.digest(), straight.machine.digest());
    };
    timeline.seek(200_500).unwrap();
    for hart in [2, 0, 2] {
        let (from, before) = (timeline.icount(), mark(&timeline, hart));
        assert_eq!(timeline.step(hart, u64::MAX).unwrap(), DebugStop::Stepped);
        let after = mark(&timeline, hart);
        assert_eq!(after.executed, before.executed + 1);
        let last = after.last.unwrap();
        assert_eq!(timeline.icount(), last + 1, "stops right after it");
        assert!(last >= from);
        assert_straight(&mut timeline);
        assert_eq!(timeline.reverse_step(hart).unwrap(), DebugStop::Stepped);
        assert_eq!(timeline.icount(), last);
        assert_eq!(mark(&timeline, hart).executed, before.executed);
        assert_straight(&mut timeline);
        timeline.seek(last + 1).unwrap();
    }
}

/// `--gdb` on a live four-hart run that is also recorded: breakpoints stop each secondary
/// hart in its thread, and the recording of the run gdb stopped replays.
#[test]
fn gdb_drives_a_live_four_hart_run_that_replays() {
    let program = guest_program("smp");
    let recording = scratch("smp-gdb-live").join("live.rwd");
    let args = record_smp_args(&program, &recording);
    let (child, address) =
        common::start_waiting_for_gdb(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut server = common::Server { child, address };
    let hit = "continue\nprintf \"HIT %d %d\\n\", $_thread, hartid\n";
    let commands = format!("break secondary_main\n{}delete\ncontinue\n", hit.repeat(3));
    let out = gdb(&server, &format!("file {}", program.display()), &commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut hits: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("HIT "))
        .collect();
    hits.sort_unstable();
    assert_eq!(hits, ["2 1", "3 2", "4 3"], "{stdout}");
    assert!(stdout.contains("exited normally"), "{stdout}");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    let mut console = String::new();
    std::io::Read::read_to_string(server.child.stdout.as_mut().unwrap(), &mut console).unwrap();
    assert!(console.contains("PASS"), "{console}");
    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&replay.stdout), console);
}

/// A typed session in chaos mode, the race and the pthreads program run from the shell,
/// replays byte for byte under both engines.
#[test]
fn a_typed_chaos_session_replays_byte_for_byte() {
    require_default_guest();
    let recording = scratch("smp-chaos-session").join("session.rwd");
    let mut args = [
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--smp",
        "4",
        "--chaos=11",
    ]
    .map(String::from)
    .to_vec();
    args.extend(test_images());
    args.extend(["--append", SHELL_APPEND].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut console = Console::start(&args);
    console.wait_for(0, PROMPT, Duration::from_secs(180));
    let racy = console.command("/racy 500");
    assert!(racy.contains("500 rounds"), "{racy}");
    let threads = console.command("/threads 100000");
    assert!(threads.contains("ran on cpus 0 1 2 3"), "{threads}");
    power_off_and_replay_under_both_engines(console, &recording);
}

/// A replay that stops matching its recording of several harts names the hart and the
/// register that differ.
#[test]
fn a_divergence_names_the_hart_and_the_register() {
    let program = guest_program("smp");
    let recording = scratch("smp-divergence").join("smp.rwd");
    let recorded = rewind(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--bios",
        "none",
        "--kernel",
        program.to_str().unwrap(),
        "--smp",
        "4",
        "--sync-every",
        "100000",
    ]);
    assert_eq!(recorded.status.code(), Some(0), "{}", stderr(&recorded));
    let path = recording.to_str().unwrap();
    let clean = rewind(&["replay", path]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    for (perturb, says) in [
        ("150000:hart2:x10", "hart 2: register x10 (a0): expected"),
        ("150000:x11", "hart 0: register x11 (a1): expected"),
        ("150000:hart3:pc", "hart 3: pc: expected"),
    ] {
        let out = rewind(&["replay", path, "--perturb", perturb]);
        assert_eq!(out.status.code(), Some(3), "{perturb}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{perturb}: {}", stderr(&out));
    }
    let out = rewind(&["replay", path, "--perturb", "150000:hart7:x10"]);
    common::assert_refused(&out, "the board has no hart 7 (it has 4)");
}
