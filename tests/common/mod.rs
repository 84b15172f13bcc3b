//! Helpers shared by the tests that boot the default guest.
#![allow(dead_code)] // each test file uses its own part

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const PROMPT: &str = "guest# ";

/// Runs `rewind ARGS` to its end with no input, capturing its output.
pub fn rewind(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rewind")
}

/// Runs `rewind replay ARGS`, which must succeed (exit 0); its output, for comparisons.
pub fn replay_ok(args: &[&str]) -> std::process::Output {
    let out = rewind(&[&["replay"], args].concat());
    assert_eq!(out.status.code(), Some(0), "replay: {}", stderr(&out));
    out
}

/// A replay of `recording` given `other` as its disk image, which is not the one recorded,
/// is refused before anything runs, with a message that says so.
pub fn assert_other_drive_refused(recording: &std::path::Path, other: &std::path::Path) {
    let refused = rewind(&[
        "replay",
        recording.to_str().unwrap(),
        "--drive",
        other.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(refused.stdout.is_empty());
    assert!(
        stderr(&refused).contains("is not the one recorded"),
        "{}",
        stderr(&refused)
    );
}

/// `out` is a refusal before the guest ran: exit status 1, nothing on standard output, and
/// `says` in the message.
pub fn assert_refused(out: &std::process::Output, says: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(out.stdout.is_empty(), "the guest ran: {}", stderr(out));
    assert!(stderr(out).contains(says), "{}", stderr(out));
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The hash `--state-hash` printed.
pub fn state_hash(out: &std::process::Output) -> String {
    stderr(out)
        .lines()
        .find_map(|l| l.strip_prefix("state hash: "))
        .unwrap_or_else(|| panic!("no state hash in:\n{}", stderr(out)))
        .to_string()
}

/// Replays `recording` with `engine` (`interp` or `jit`), which must end the replay without
/// divergence and print exactly `recorded`, the console bytes of the recorded run; returns the
/// state hash it ended with.
pub fn replay_prints(recording: &std::path::Path, engine: &str, recorded: &[u8]) -> String {
    let out = rewind(&[
        "replay",
        "--engine",
        engine,
        "--state-hash",
        recording.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{engine}: {}", stderr(&out));
    assert!(
        out.stdout == recorded,
        "the {engine} replay printed other bytes than the recorded run:\n--- recorded\n{}\n--- replayed\n{}",
        String::from_utf8_lossy(recorded),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr(&out).contains("replay complete"), "{}", stderr(&out));
    state_hash(&out)
}

/// Seeks `timeline` to `target` and checks that it lands in the state of playing the
/// recording (with `drives`) straight there; `context` goes into the failure message. Returns
/// the straight player, for further comparisons.
pub fn assert_seek_lands_as_straight_play(
    timeline: &mut rewind_debug::timeline::Timeline,
    recording: &rewind_replay::Recording,
    drives: &[std::path::PathBuf],
    target: u64,
    context: &str,
) -> rewind_replay::Player {
    timeline.seek(target).unwrap();
    let mut straight = rewind_replay::Player::new(recording, drives).unwrap();
    straight.play_to(target).unwrap();
    assert_eq!(
        timeline.player.machine.digest(),
        straight.machine.digest(),
        "seeking back to {target} differs from playing there{context}"
    );
    straight
}

/// An empty directory for one test's files.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `rewind run` whose console we read and type into.
pub struct Console {
    pub child: Child,
    pub stdin: ChildStdin,
    output: Receiver<Vec<u8>>,
    /// Everything the console showed, as text.
    pub seen: String,
    /// Everything the console showed, as bytes.
    pub bytes: Vec<u8>,
}

impl Console {
    /// Starts `rewind` with `args` (a subcommand and its options).
    pub fn start(args: &[&str]) -> Console {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rewind"));
        command.args(args);
        Console::start_command(command)
    }

    /// Starts any program whose standard input and output are a guest's console (QEMU's
    /// `-nographic`, say).
    pub fn start_command(mut command: Command) -> Console {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the machine");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Console {
            child,
            stdin,
            output,
            seen: String::new(),
            bytes: Vec::new(),
        }
    }

    /// Reads until `needle` appears after `from`; returns everything after `from` up to and
    /// including it.
    pub fn wait_for(&mut self, from: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.seen[from..].find(needle) {
                return self.seen[from..from + pos + needle.len()].to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => {
                    self.seen.push_str(&String::from_utf8_lossy(&bytes));
                    self.bytes.extend_from_slice(&bytes);
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no {needle:?} within {timeout:?}; the console showed:\n{}",
                        self.seen
                    );
                }
            }
        }
    }

    /// Types a command at the prompt and returns what it printed before the next prompt.
    pub fn command(&mut self, line: &str) -> String {
        // busybox asks the terminal for the cursor position after printing the prompt; give it
        // a moment so that the typed line is not taken for the answer.
        std::thread::sleep(Duration::from_millis(300));
        let from = self.seen.len();
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into the console");
        self.stdin.flush().unwrap();
        let echoed = self.wait_for(from, &format!("{line}\r\n"), Duration::from_secs(30));
        let rest = self.wait_for(from + echoed.len(), PROMPT, Duration::from_secs(60));
        rest[..rest.len() - PROMPT.len()].to_string()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // A failed assertion must not leave the machine running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fetches the default guest once per test process (the script also locks against others).
pub fn require_default_guest() {
    static FETCHED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    FETCHED.get_or_init(fetch_default_guest);
}

fn fetch_default_guest() {
    let status = Command::new("scripts/fetch-guest")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/fetch-guest");
    assert!(
        status.success(),
        "scripts/fetch-guest failed: the default guest is needed (Debian's riscv64 packages)"
    );
}

impl Console {
    /// Types `text` without waiting for anything.
    pub fn type_text(&mut self, text: &str) {
        self.stdin
            .write_all(text.as_bytes())
            .expect("type into the console");
        self.stdin.flush().unwrap();
    }

    /// Waits for the process to end (reading all its output); returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at end of file: take what is left.
                while let Ok(bytes) = self.output.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push_str(&String::from_utf8_lossy(&bytes));
                    self.bytes.extend_from_slice(&bytes);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rewind did not end:\n{}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The folder holding the default guest's images (fetched first if needed).
pub fn default_guest_dir() -> std::path::PathBuf {
    require_default_guest();
    let out = Command::new("scripts/fetch-guest")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run scripts/fetch-guest");
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A loopback address with a port nobody listens on.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// Starts `rewind ARGS --gdb ADDRESS` on a free loopback port and waits until the machine says
/// it waits for gdb; returns the process (standard input and output piped) and the address.
pub fn start_waiting_for_gdb(args: &[&str]) -> (Child, String) {
    use std::io::BufRead;
    let address = free_address();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .args(["--gdb", &address])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("waiting for gdb") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "rewind ended early"
        );
    }
    // Its later messages go to the test's output (a closed pipe would fail its writes).
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::stderr()));
    (child, address)
}

/// One of our bare-metal programs, `tests/guest/build/NAME.elf`, built first if needed. Tests
/// of one process build one at a time: two makes writing the same file would let a test read
/// a half-written program.
pub fn guest_program(name: &str) -> std::path::PathBuf {
    static MAKE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKE.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = format!("build/{name}.elf");
    let status = Command::new("make")
        .args(["-s", "-C", "tests/guest", &target])
        .current_dir(root)
        .status()
        .expect("make (gcc-riscv64-unknown-elf: scripts/install-deps)");
    assert!(status.success(), "make {target} failed");
    root.join("tests/guest").join(target)
}

/// The default guest's kernel command line for runs whose init powers off at once.
pub const POWEROFF_APPEND: &str =
    "console=ttyS0 rdinit=/init quiet cryptomgr.notests rewind.poweroff";

/// The default guest on a board of `harts` harts, its init powering off at once, with the
/// host's inputs pinned.
pub fn debian_machine(harts: u32) -> rewind_machine::Machine {
    debian_machine_with(harts, None)
}

/// [`debian_machine`] with the schedule of chaos mode from `chaos`, if given.
pub fn debian_machine_with(harts: u32, chaos: Option<u64>) -> rewind_machine::Machine {
    use rewind_machine::{BootImages, InputEvent, Machine, MachineConfig};
    let dir = default_guest_dir();
    let read = |name: &str| std::fs::read(dir.join(name)).expect("the default guest's images");
    let images = BootImages {
        bios: Some(read("fw_dynamic.bin")),
        kernel: Some(read("Image")),
        initrd: Some(read("initramfs.cpio.gz")),
        dtb: None,
        disks: Vec::new(),
    };
    let config = MachineConfig {
        ram_size: 512 << 20,
        bootargs: Some(POWEROFF_APPEND.into()),
        harts,
        chaos,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config, &images).unwrap();
    machine.inject(&InputEvent::RtcBase(1_795_894_200_000_000_000));
    machine.inject(&InputEvent::Entropy(vec![7; 32]));
    machine
}

/// Runs to position `target` with nobody at the console; returns the console output.
pub fn run_to(machine: &mut rewind_machine::Machine, target: u64) -> Vec<u8> {
    use rewind_machine::MachineStop;
    let mut out = Vec::new();
    loop {
        let stop = machine.run(Some(target), u64::MAX);
        out.extend(machine.take_console_output());
        match stop {
            MachineStop::Limit => return out,
            MachineStop::Idle { until } => {
                machine.skip_idle(until.map_or(target, |u| u.min(target)))
            }
            MachineStop::Slice => {}
            other => panic!("the guest stopped early: {other:?}"),
        }
    }
}

/// `rewind debug` (or a live run waiting for gdb), killed when dropped.
pub struct Server {
    pub child: Child,
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rewind debug` on a free loopback port and waits until it listens.
pub fn serve(recording: &Path) -> Server {
    let address = free_address();
    let child = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["debug", recording.to_str().unwrap(), "--gdb", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(Instant::now() < deadline, "rewind debug did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // That probe connection was a client too: the server waits for the next one.
    std::thread::sleep(Duration::from_millis(200));
    Server { child, address }
}

/// Runs gdb-multiarch on `commands` after `target remote`; `setup` comes before it.
pub fn gdb(server: &Server, setup: &str, commands: &str) -> Output {
    let script = format!(
        "set pagination off\nset confirm off\nset architecture riscv:rv64\n{setup}\n\
         target remote {}\n{commands}\nkill\n",
        server.address
    );
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "gdb-{}.gdb",
        server.address.replace([':', '.'], "-")
    ));
    std::fs::write(&file, script).unwrap();
    // Bounded, so that a server that never answers fails the test instead of hanging it.
    Command::new("timeout")
        .args([
            "300",
            "gdb-multiarch",
            "-nx",
            "-batch",
            "-x",
            file.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("gdb-multiarch (Debian's package; scripts/install-deps)")
}

/// Values printed by `printf "TAG %lx\n", ...` lines, in order.
pub fn tagged(text: &str, tag: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(tag))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .collect()
}

/// The gdb commands of `rewind gdbinit`, in a file to `source`.
pub fn gdbinit() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rewind.gdb");
    write_in_place(&path, &rewind(&["gdbinit"]).stdout);
    path
}

/// Writes `bytes` to `path` as a whole: tests run in parallel, and each writes the same bytes
/// under a name of its own, then renames them into place, so none reads a half-written file.
pub fn write_in_place(path: &Path, bytes: &[u8]) {
    let unique = path.with_extension(format!("{:?}", std::thread::current().id()));
    std::fs::write(&unique, bytes).unwrap();
    std::fs::rename(&unique, path).unwrap();
}
