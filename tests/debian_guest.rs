//! Boots the default guest (Debian's riscv64 kernel under Debian's OpenSBI, busybox
//! initramfs; fetched by scripts/fetch-guest) to its shell, types commands over the console
//! as a user would, and powers off.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{require_default_guest, Console, PROMPT};

#[test]
fn debian_boots_to_a_shell_answers_and_powers_off() {
    require_default_guest();
    let mut console = Console::start(&["run"]);
    let banner = console.wait_for(0, PROMPT, Duration::from_secs(180));
    assert!(
        banner.contains("OpenSBI v"),
        "OpenSBI did not start:\n{banner}"
    );
    assert!(
        banner.contains("Rewind default guest: Debian Linux"),
        "the initramfs did not run:\n{banner}"
    );

    let out = console.command("echo rewind-$((6 * 7))");
    assert_eq!(out.trim(), "rewind-42");

    let cpuinfo = console.command("cat /proc/cpuinfo");
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in /proc/cpuinfo:\n{cpuinfo}"))
    };
    assert_eq!(field("processor"), "0");
    assert!(field("isa").starts_with("rv64imafdc"), "{cpuinfo}");
    assert_eq!(field("mmu"), "sv48");

    // The RTC starts from the host's clock: the guest's year is the host's.
    let date = console.command("date +%Y");
    let host_year = Command::new("date").arg("+%Y").output().unwrap().stdout;
    assert_eq!(date.trim(), String::from_utf8_lossy(&host_year).trim());

    // Interrupts reach the kernel through the PLIC: the UART's source 10 has counted some.
    let interrupts = console.command("cat /proc/interrupts");
    let uart_count = interrupts
        .lines()
        .find(|l| l.contains("PLIC  10 ") && l.ends_with("ttyS0"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no UART line in /proc/interrupts:\n{interrupts}"));
    assert!(uart_count > 0, "{interrupts}");

    // A reboot restarts the board from its images, back to a shell.
    std::thread::sleep(Duration::from_millis(300));
    let from = console.seen.len();
    console.stdin.write_all(b"reboot -f\n").unwrap();
    console.stdin.flush().unwrap();
    let reboot = console.wait_for(from, PROMPT, Duration::from_secs(180));
    assert!(reboot.contains("OpenSBI v"), "no second boot:\n{reboot}");
    let out = console.command("echo again");
    assert_eq!(out.trim(), "again");

    console.stdin.write_all(b"poweroff -f\n").unwrap();
    console.stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = console.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the guest did not power off");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "poweroff must end rewind with status 0"
    );
}

#[test]
fn bad_images_are_refused_before_the_machine_starts() {
    let dir = env!("CARGO_TARGET_TMPDIR");
    let text = format!("{dir}/not-a-kernel.txt");
    std::fs::write(&text, "hello").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--bios".into(),
                "none".into(),
                "--kernel".into(),
                text.clone(),
            ],
            "it is a text file, not a program",
        ),
        (
            vec![
                "--bios".into(),
                "none".into(),
                "--kernel".into(),
                "/bin/true".into(),
            ],
            "not RISC-V",
        ),
        (
            vec![
                "--bios".into(),
                "/nonexistent/fw.bin".into(),
                "--kernel".into(),
                text.clone(),
            ],
            "cannot read firmware",
        ),
        (
            vec![
                "--memory".into(),
                "1M".into(),
                "--bios".into(),
                "none".into(),
                "--kernel".into(),
                "/bin/true".into(),
            ],
            "--memory",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
            .arg("run")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(out.stdout.is_empty(), "{args:?} printed on the console");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Boots the default guest to its init, which powers off at once, with the host's inputs
/// pinned; returns (console bytes, state hash).
fn pinned_boot(entropy_seed: &str) -> (Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "run",
            "--rtc-base",
            "2026-01-01T12:00:00",
            "--entropy-seed",
            entropy_seed,
        ])
        .args(["--state-hash", "--append"])
        .arg("console=ttyS0 rdinit=/init quiet cryptomgr.notests rewind.poweroff")
        .stdin(Stdio::null())
        .output()
        .expect("run rewind");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let hash = stderr
        .lines()
        .find_map(|l| l.strip_prefix("state hash: "))
        .unwrap_or_else(|| panic!("no state hash in:\n{stderr}"))
        .to_string();
    (out.stdout, hash)
}

#[test]
fn runs_with_pinned_inputs_are_identical() {
    require_default_guest();
    let (out1, hash1) = pinned_boot("42");
    let (out2, hash2) = pinned_boot("42");
    assert!(
        String::from_utf8_lossy(&out1).contains("Rewind default guest"),
        "the guest did not reach its init"
    );
    assert_eq!(out1, out2, "two runs printed different bytes");
    assert_eq!(hash1, hash2, "two runs ended in different states");
    // The hash sees the inputs: other entropy, other final state.
    let (_, hash3) = pinned_boot("43");
    assert_ne!(hash1, hash3, "the state hash missed a different rng-seed");
}

/// OpenSBI's fw_jump also boots the default guest's kernel to its init, which powers off. Its
/// ELF build is position-independent and linked at 0, outside RAM: refused with a message
/// (QEMU 10 refuses it too, with "Some ROM regions are overlapping").
#[test]
fn opensbi_fw_jump_boots_and_an_elf_linked_outside_ram_is_refused() {
    require_default_guest();
    let guest = String::from_utf8(
        Command::new("scripts/fetch-guest")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let guest = guest.trim();
    let opensbi = format!("{guest}/root/usr/lib/riscv64-linux-gnu/opensbi/generic");
    let elf = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .arg("run")
        .args(["--bios", &format!("{opensbi}/fw_dynamic.elf")])
        .args(["--kernel", &format!("{guest}/Image")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(elf.status.code(), Some(1));
    assert!(elf.stdout.is_empty());
    assert!(String::from_utf8_lossy(&elf.stderr).contains("outside RAM"));
    let firmware = "fw_jump.bin";
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .arg("run")
        .args(["--bios", &format!("{opensbi}/{firmware}")])
        .args(["--kernel", &format!("{guest}/Image")])
        .args(["--initrd", &format!("{guest}/initramfs.cpio.gz")])
        .args([
            "--append",
            "console=ttyS0 rdinit=/init quiet cryptomgr.notests rewind.poweroff",
        ])
        .arg("--no-pacing")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{firmware}: {console}");
    assert!(console.contains("OpenSBI v"), "{firmware}: {console}");
    assert!(
        console.contains("Rewind default guest: Debian Linux"),
        "{firmware}: {console}"
    );
}

/// On a terminal the console is raw and `Ctrl-A x` quits, as in QEMU; a recording ended that
/// way is complete and replays. `script` (util-linux) gives rewind a pseudo-terminal and types
/// what we send into it.
#[test]
fn ctrl_a_x_quits_on_a_terminal_and_completes_the_recording() {
    require_default_guest();
    let recording = format!("{}/ctrl-a-x.rwd", env!("CARGO_TARGET_TMPDIR"));
    let command = format!("{} record -o {recording}", env!("CARGO_BIN_EXE_rewind"));
    let mut child = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1) from util-linux");
    let mut stdin = child.stdin.take().unwrap();
    // Let the machine start, then type Ctrl-A x.
    std::thread::sleep(Duration::from_secs(2));
    stdin.write_all(b"\x01x").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("Ctrl-A x did not end the run");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("terminated (Ctrl-A x)"), "{output}");
    let replay = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["replay", &recording])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(0), "{message}");
    assert!(message.contains("the user quit (Ctrl-A x)"), "{message}");
}

/// U-Boot (Debian's u-boot-qemu, S-mode), a raw binary given as the kernel, starts under
/// OpenSBI, finds nothing to boot and waits at its prompt, where it answers: on Rewind as on
/// QEMU 10.
#[test]
fn u_boot_given_as_a_raw_kernel_reaches_its_prompt_as_under_qemu() {
    let guest = common::default_guest_dir();
    let firmware = guest.join("fw_dynamic.bin");
    let u_boot = guest.join("u-boot.bin");
    let mut qemu = Command::new("qemu-system-riscv64");
    qemu.args([
        "-M", "virt", "-m", "512M", "-display", "none", "-serial", "stdio",
    ])
    .args(["-monitor", "none", "-nic", "none", "-bios"])
    .arg(&firmware)
    .arg("-kernel")
    .arg(&u_boot);
    let rewind = Console::start(&[
        "run",
        "--bios",
        firmware.to_str().unwrap(),
        "--kernel",
        u_boot.to_str().unwrap(),
    ]);
    for (name, mut console) in [("rewind", rewind), ("qemu", Console::start_command(qemu))] {
        let boot = console.wait_for(0, "=> ", Duration::from_secs(120));
        assert!(boot.contains("OpenSBI v"), "{name}:\n{boot}");
        let from = console.seen.len();
        console.type_text("version\r");
        let answer = console.wait_for(from, "\n=> ", Duration::from_secs(30));
        assert!(answer.contains("U-Boot 20"), "{name}:\n{answer}");
    }
}
