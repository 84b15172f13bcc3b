//! Console input is never lost: bytes typed faster than the guest's UART takes them wait on
//! the host side, across everything that interrupts a live run (a gdb step, a guest reboot),
//! and a recording of the run replays them exactly.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Bytes typed before the `.` that makes the guest print its count: far more than the UART's
/// 16-byte FIFO holds.
const TYPED: usize = 5000;

/// Our bare-metal program that counts console input (tests/guest/special/console_count.c).
fn console_count() -> PathBuf {
    common::guest_program("console_count")
}

fn typed_text(prefix: &str) -> String {
    format!("{prefix}{}.", "x".repeat(TYPED))
}

/// The count the guest printed last.
fn last_count(console: &str) -> usize {
    console
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("count "))
        .unwrap_or_else(|| panic!("no count in:\n{console}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn input_typed_while_gdb_steps_reaches_the_guest() {
    let elf = console_count();
    let (mut child, address) = common::start_waiting_for_gdb(&[
        "run",
        "--bios",
        "none",
        "--kernel",
        elf.to_str().unwrap(),
    ]);
    // Everything is typed at once, while gdb takes the run one instruction at a time.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed_text("").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let script = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-input-steps.gdb");
    std::fs::write(
        &script,
        format!(
            "set pagination off\nset confirm off\nset architecture riscv:rv64\n\
             target remote {address}\nstepi 3000\ncontinue\n"
        ),
    )
    .unwrap();
    // Without the input, the guest would wait for its `.` forever: bound gdb's time.
    let gdb = Command::new("timeout")
        .args(["120", "gdb-multiarch", "-nx", "-batch", "-x"])
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .expect("gdb-multiarch (scripts/install-deps)");
    let gdb_out = String::from_utf8_lossy(&gdb.stdout);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        gdb_out.contains("exited normally"),
        "{gdb_out}\n{}\nconsole:\n{console}",
        String::from_utf8_lossy(&gdb.stderr)
    );
    assert_eq!(last_count(&console), TYPED, "{console}");
}

#[test]
fn input_waiting_when_the_guest_reboots_reaches_it_after_and_replays() {
    let elf = console_count();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-input");
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("reboot.rwd");
    let mut console = common::Console::start(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--bios",
        "none",
        "--kernel",
        elf.to_str().unwrap(),
    ]);
    console.wait_for(0, "ready\n", Duration::from_secs(30));
    // `R` reboots the guest while the rest of the input still waits for the UART.
    console.type_text(&typed_text("R"));
    let status = console.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", console.seen);
    assert!(
        console.seen.contains("ready\nrebooting\nready\n"),
        "{}",
        console.seen
    );
    // The reboot empties the UART's FIFO, as on QEMU; nothing beyond it is lost.
    let count = last_count(&console.seen);
    assert!(
        (TYPED - 16..=TYPED).contains(&count),
        "{count} of {TYPED} bytes arrived"
    );
    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert_eq!(replay.stdout, console.bytes);
}
