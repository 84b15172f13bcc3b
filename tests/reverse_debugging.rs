//! QEMU's reverse-debugging procedure (tests/avocado/reverse_debugging.py), driven by Debian's
//! `gdb-multiarch` against `rewind debug` on a recording of the default Debian boot.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{gdb, gdbinit, serve, tagged, Server};

/// A recording of the default guest's first few million instructions (firmware and kernel).
fn boot_recording(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reverse-debugging");
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join(name);
    common::require_default_guest();
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["record", "-o", recording.to_str().unwrap()])
        .args(["--no-pacing", "--max-insns", "40000000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    recording
}

#[test]
fn qemu_reverse_debugging_procedure() {
    let recording = boot_recording("procedure.rwd");
    let server = serve(&recording);
    let step = "stepi\nprintf \"PC %lx\\n\", $pc\n";
    let reverse = "reverse-stepi\nprintf \"PC %lx\\n\", $pc\n";
    let mut commands = String::from("printf \"PC %lx\\n\", $pc\nset debug remote 0\n");
    commands += &step.repeat(10);
    commands += &reverse.repeat(10);
    commands += &step.repeat(10);
    let out = gdb(&server, "set debug remote 1", &commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ReverseStep+") && stderr.contains("ReverseContinue+"),
        "qSupported does not advertise reverse execution:\n{stderr}"
    );
    let pcs = tagged(&stdout, "PC ");
    assert_eq!(pcs.len(), 31, "{stdout}\n{stderr}");
    let forward = &pcs[..11];
    let backward: Vec<u64> = pcs[10..21].to_vec();
    let mut expected_backward = forward.to_vec();
    expected_backward.reverse();
    assert_eq!(backward, expected_backward, "reverse-stepi went elsewhere");
    assert_eq!(
        &pcs[20..31],
        forward,
        "stepping forward again went elsewhere"
    );
    assert_eq!(forward[0], 0x1000, "the hart starts at the reset ROM");

    // Breakpoints on the ten pcs, far ahead, then back: the last hit is the tenth pc, at
    // instruction 10.
    let server = serve(&recording);
    let mut commands = String::new();
    for pc in &forward[1..] {
        commands += &format!("break *{pc:#x}\n");
    }
    commands += "monitor seek 30000000\nmaintenance flush register-cache\n";
    commands += "reverse-continue\nprintf \"PC %lx\\n\", $pc\nmonitor icount\n";
    let out = gdb(&server, "", &commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pcs = tagged(&stdout, "PC ");
    assert_eq!(
        pcs,
        [forward[10]],
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // gdb prints what monitor commands answer on standard error.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.trim() == "10"),
        "monitor icount after reverse-continue:\n{stderr}"
    );
}

#[test]
fn going_back_and_forth_shows_the_same_registers_and_memory() {
    let recording = boot_recording("back-and-forth.rwd");
    let server = serve(&recording);
    // Deep into the kernel (Sv39/48 translation on), look, go back far and come back.
    let look = "printf \"PC %lx\\n\", $pc\nprintf \"SP %lx\\n\", $sp\n\
                printf \"SATP %lx\\n\", $satp\nprintf \"PRIV %lx\\n\", $priv\n\
                printf \"MEM %lx\\n\", *(unsigned long *)$pc\n\
                printf \"BEGIN\\n\"\ninfo all-registers\nprintf \"END\\n\"\n";
    let commands = format!(
        "monitor seek 35000000\nmaintenance flush register-cache\n{look}\
         monitor seek 1000\nmaintenance flush register-cache\nmaintenance flush dcache\n\
         monitor seek 35000000\nmaintenance flush register-cache\nmaintenance flush dcache\n\
         {look}reverse-stepi\nstepi\n{look}"
    );
    let out = gdb(&server, "", &commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for tag in ["PC ", "SP ", "SATP ", "PRIV ", "MEM "] {
        let values = tagged(&stdout, tag);
        assert_eq!(values.len(), 3, "{tag}: {stdout}");
        assert!(
            values.iter().all(|v| *v == values[0]),
            "{tag}differs between visits: {values:x?}"
        );
    }
    assert_ne!(
        tagged(&stdout, "SATP ")[0] >> 60,
        0,
        "the kernel has paging on by then"
    );
    // `info all-registers` lists the whole file, the same each time.
    let dumps: Vec<&str> = stdout
        .split("BEGIN\n")
        .skip(1)
        .map(|d| d.split("END\n").next().unwrap())
        .collect();
    assert_eq!(dumps.len(), 3, "{stdout}");
    assert!(
        dumps[0].contains("satp") && dumps[0].contains("ft0"),
        "{}",
        dumps[0]
    );
    assert!(
        dumps.iter().all(|d| *d == dumps[0]),
        "info all-registers differs"
    );
}

/// Records our bare-metal program that writes `watched` ten times.
fn watched_recording() -> (PathBuf, PathBuf) {
    let elf = common::guest_program("watched");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reverse-debugging");
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("watched.rwd");
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["record", "-o", recording.to_str().unwrap()])
        .args(["--bios", "none", "--kernel", elf.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (recording, elf)
}

#[test]
fn reverse_watchpoints_stop_at_every_write_in_reverse() {
    let (recording, elf) = watched_recording();
    let server = serve(&recording);
    let hit = "printf \"VALUE %lx\\n\", watched\nmonitor icount\n";
    let mut commands = String::from("watch watched\n");
    // Forward: every write, then the end of the recording.
    commands += &format!("continue\n{hit}").repeat(11);
    // From the end: when was it last written? (`rewind gdbinit` commands.)
    commands += "last-write &watched\nwhen\n";
    // Backward from the end: the same writes, newest first, then the beginning.
    commands += &format!("reverse-continue\n{hit}").repeat(11);
    let setup = format!("file {}\nsource {}", elf.display(), gdbinit().display());
    let out = gdb(&server, &setup, &commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let values = tagged(&stdout, "VALUE ");
    let writes: Vec<u64> = (0..10).map(|i| 3 * i + 1).collect();
    assert_eq!(values.len(), 22, "{stdout}\n{stderr}");
    assert_eq!(values[..10], writes[..], "forward hits:\n{stdout}");
    assert!(
        stdout.contains("Hardware watchpoint 1: watched"),
        "gdb did not report watchpoint hits:\n{stdout}"
    );
    // Going back from the end, gdb stops at each write, newest first, just before it (it
    // shows "Old value = 28, New value = 25"): the values before each write, in reverse.
    let before_each: Vec<u64> = (0..10)
        .rev()
        .map(|i| if i == 0 { 0 } else { 3 * i - 2 })
        .collect();
    assert_eq!(
        values[11..21],
        before_each[..],
        "reverse hits:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("Old value = 28\nNew value = 25"),
        "gdb did not see the last write undone:\n{stdout}"
    );
    assert!(
        stdout.contains("No more reverse-execution history.\n0x0000000000001000"),
        "the beginning was not reported:\n{stdout}"
    );
    // Each reverse stop lies before the write it undoes and after the write before that
    // (gdb steps back over the writing instruction itself).
    let counts: Vec<u64> = stderr
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(counts.len(), 23, "{stderr}");
    // last-write names the tenth store (the instruction before the tenth stop) and its pc,
    // and leaves the position at the end.
    let last_write = stderr
        .lines()
        .find_map(|l| l.trim().split_once(" 0x"))
        .unwrap_or_else(|| panic!("no last-write answer:\n{stderr}"));
    assert_eq!(last_write.0.parse::<u64>().unwrap(), counts[9] - 1);
    assert!(stdout.contains(&format!("0x{}", last_write.1)) || !last_write.1.is_empty());
    assert_eq!(counts[11], counts[10], "last-write moved the position");
    let counts = [&counts[..11], &counts[12..]].concat();
    for (k, &at) in counts[11..21].iter().enumerate() {
        let write = 9 - k;
        let after_previous = if write == 0 { 0 } else { counts[write - 1] };
        assert!(
            after_previous <= at && at < counts[write],
            "reverse stop {k} at {at} is not between writes: {counts:?}"
        );
    }
    assert_eq!(counts[21], 0);
}

/// A recording that ends just after a write to the watched variable: gdb steps over the
/// watched write by a breakpoint on the next instruction, which is the last position of the
/// recording. The write is reported, and only then the end of the history.
#[test]
fn a_write_by_the_last_recorded_instruction_is_reported_before_the_end() {
    use rewind_debug::timeline::Timeline;
    use rewind_replay::{Player, Recording};
    let (full, elf) = watched_recording();
    let nm = Command::new("riscv64-unknown-elf-nm")
        .arg(&elf)
        .output()
        .expect("riscv64-unknown-elf-nm (binutils-riscv64-unknown-elf)");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    let watched = symbols
        .lines()
        .find_map(|l| l.strip_suffix(" B watched"))
        .map(|a| u64::from_str_radix(a, 16).unwrap())
        .expect("the symbol `watched`");
    let recording = Recording::open(&full).unwrap();
    let mut timeline = Timeline::new(Player::new(&recording, &[]).unwrap(), u64::MAX);
    timeline.seek(timeline.end()).unwrap();
    let last_store = timeline
        .last_write(watched, 8, &mut |_| {})
        .unwrap()
        .expect("the program writes `watched`")
        .icount;
    let cut = full.with_file_name("watched-ends-after-a-write.rwd");
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["record", "-o", cut.to_str().unwrap()])
        .args(["--bios", "none", "--kernel", elf.to_str().unwrap()])
        .args(["--max-insns", &(last_store + 1).to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    let server = serve(&cut);
    let hit = "printf \"VALUE %lx\\n\", watched\n";
    let commands = format!("watch watched\n{}", format!("continue\n{hit}").repeat(11));
    let out = gdb(&server, &format!("file {}", elf.display()), &commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let writes: Vec<u64> = (0..10).map(|i| 3 * i + 1).collect();
    let values = tagged(&stdout, "VALUE ");
    assert_eq!(values[..10], writes[..], "{stdout}");
    assert!(
        stdout.contains("Old value = 25\nNew value = 28"),
        "{stdout}"
    );
    let (before_end, after_end) = stdout
        .split_once("No more reverse-execution history.")
        .unwrap_or_else(|| panic!("the end was not reported:\n{stdout}"));
    assert_eq!(tagged(before_end, "VALUE ").len(), 10, "{stdout}");
    assert!(!after_end.contains("watchpoint"), "{stdout}");
}

#[test]
fn bad_clients_and_bad_requests_get_errors_and_the_server_keeps_serving() {
    use std::io::Write;
    let recording = boot_recording("bad-clients.rwd");
    let server = serve(&recording);
    // Garbage, then a client that vanishes in the middle of a packet.
    for bytes in [
        &b"\x00\xff garbage $qNonsense#00 $m1000,4#zz +++---"[..],
        &b"$m1000,"[..],
        &b"$qSupported:multiprocess+;swbreak+#"[..],
    ] {
        let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
        let _ = stream.write_all(bytes);
        drop(stream);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Writes fail (a replay cannot be changed); Python keeps the script going after them.
    // A bare qSupported (legal: the client announces no features) is answered like any other.
    let commands = "maint packet qSupported\n\
                    printf \"A0 %lx\\n\", $a0\n\
                    python\n\
                    for c in ['set $a0 = 5', 'set *(long *)0x80000000 = 1']:\n\
                    \x20   try:\n\
                    \x20       gdb.execute(c)\n\
                    \x20   except gdb.error as e:\n\
                    \x20       print('REFUSED', e)\n\
                    end\n\
                    printf \"A0 %lx\\n\", $a0\n\
                    monitor seek 99999999999\n\
                    monitor frobnicate\n\
                    maint packet Tp1.3f\n\
                    maint packet Hcp1.0\n\
                    maint packet bs\n\
                    maint packet vCont;s:p1.3f\n\
                    watch *(long *)0x7000000000\n\
                    continue\n\
                    monitor icount\n\
                    printf \"PC %lx\\n\", $pc\n";
    let out = gdb(&server, "", commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("received: \"PacketSize="),
        "{stdout}\n{stderr}"
    );
    let a0 = tagged(&stdout, "A0 ");
    assert_eq!(a0.len(), 2, "{stdout}\n{stderr}");
    assert_eq!(a0[0], a0[1], "a register write changed the replay");
    assert_eq!(stdout.matches("REFUSED").count(), 2, "{stdout}");
    assert!(stderr.contains("past the end of the recording"), "{stderr}");
    assert!(stderr.contains("unknown command"), "{stderr}");
    // Steps of a thread that is no hart (thread 63), or after asking about one, step the hart.
    assert_eq!(
        stdout.matches("received: \"T05thread:01;").count(),
        2,
        "{stdout}\n{stderr}"
    );
    // The watchpoint on unmapped memory never fires: the replay runs to its end.
    assert!(
        stdout.contains("No more reverse-execution history"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.lines().any(|l| l.trim() == "40000000"), "{stderr}");
    assert_eq!(tagged(&stdout, "PC ").len(), 1);
}

/// Checkpoints stay within their memory budget, dense near the present and sparse far back,
/// and going back still lands exactly.
#[test]
fn checkpoints_fit_their_budget_and_thin_out_far_from_the_present() {
    use rewind_debug::timeline::Timeline;
    use rewind_replay::{Player, Recording};
    let recording = Recording::open(&boot_recording("budget.rwd")).unwrap();
    let timeline = Timeline::new(Player::new(&recording, &[]).unwrap(), u64::MAX);
    // The boot images alone, at instruction 0, plus room for a few checkpoints' pages.
    let budget = timeline.checkpoint_bytes() + (6 << 20);
    let mut timeline = Timeline::new(Player::new(&recording, &[]).unwrap(), budget);
    timeline.set_spacing(1 << 20);
    timeline.seek(39_000_000).unwrap();
    let checkpoints = timeline.checkpoints();
    let held: u64 = checkpoints.iter().map(|(_, bytes)| bytes).sum();
    assert!(
        held <= budget,
        "{held} bytes held, budget {budget}: {checkpoints:?}"
    );
    assert!(checkpoints.len() >= 4, "{checkpoints:?}");
    assert!(
        checkpoints.len() < 39,
        "nothing was dropped: {checkpoints:?}"
    );
    let gaps: Vec<u64> = checkpoints.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps.first() >= gaps.last(),
        "checkpoints are not sparser far back: {checkpoints:?}"
    );
    // Back to a point between two sparse checkpoints: the same state as playing straight.
    common::assert_seek_lands_as_straight_play(&mut timeline, &recording, &[], 5_000_123, "");
}

/// gdb's reverse-finish and reverse-next, built on reverse-step and reverse-continue.
#[test]
fn reverse_finish_and_reverse_next_go_back_by_frames_and_lines() {
    let (recording, elf) = watched_recording();
    let server = serve(&recording);
    let commands = "break puts_\ncontinue\ndelete\nstepi\nstepi\nstepi\n\
                    reverse-finish\n\
                    break watched.c:11\nreverse-continue\nreverse-continue\n\
                    printf \"IVAL %lx\\n\", watched\n\
                    reverse-next\nprintf \"IVAL %lx\\n\", watched\n\
                    reverse-next\nprintf \"IVAL %lx\\n\", watched\n";
    let out = gdb(&server, &format!("file {}", elf.display()), commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("in main () at special/watched.c:13"),
        "reverse-finish did not return to the caller:\n{stdout}\n{stderr}"
    );
    // Two breakpoint hits back: line 11 with watched = 25 (i = 8). reverse-next: line 10,
    // before that store (22); again: line 11 of the iteration before (still 22).
    assert_eq!(tagged(&stdout, "IVAL "), [25, 22, 22], "{stdout}\n{stderr}");
    let after = stdout.split("IVAL 19\n").nth(1).unwrap_or("");
    assert!(
        after.starts_with("10\t    watched = 3 * i + 1;"),
        "{stdout}"
    );
}

/// `--gdb` on a live run that is also recorded: gdb drives it forwards (breakpoint, stepi,
/// watchpoint, continue to the end), and the recording replays.
#[test]
fn gdb_drives_a_live_recorded_run() {
    let (_, elf) = watched_recording();
    let recording = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reverse-debugging/live.rwd");
    // The machine waits for gdb, and says so.
    let (child, address) = common::start_waiting_for_gdb(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--bios",
        "none",
        "--kernel",
        elf.to_str().unwrap(),
    ]);
    let server = Server { child, address };
    let commands = "break main\ncontinue\nprintf \"PC %lx\\n\", $pc\nstepi\nstepi\n\
                    watch watched\ncontinue\nprintf \"VALUE %lx\\n\", watched\n\
                    monitor seek 5\ndelete\ncontinue\n";
    let out = gdb(&server, &format!("file {}", elf.display()), commands);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let gdb_stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("Breakpoint 1, main ()"),
        "{stdout}\n{gdb_stderr}"
    );
    assert_eq!(tagged(&stdout, "VALUE "), [1], "{stdout}\n{gdb_stderr}");
    assert!(gdb_stderr.contains("works on recordings"), "{gdb_stderr}");
    assert!(stdout.contains("exited normally"), "{stdout}\n{gdb_stderr}");
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut console = String::new();
    std::io::Read::read_to_string(server.child.stdout.as_mut().unwrap(), &mut console).unwrap();
    assert!(console.contains("watched done"), "{console}");
    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&replay.stdout), console);
}
