//! `rewind record`, `rewind replay` and `rewind inspect` on real guests: a typed Debian shell
//! session replayed byte for byte from the recording alone, divergence detection, recorders
//! stopped by signals and killed, and recordings that are corrupted, cut or foreign.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::POWEROFF_APPEND;
use common::{require_default_guest, rewind, scratch, state_hash, stderr, Console, PROMPT};

/// The default guest's images, copied into `dir` so that a test can delete them.
fn copy_default_guest(dir: &Path) -> [PathBuf; 3] {
    let guest = common::default_guest_dir();
    ["fw_dynamic.bin", "Image", "initramfs.cpio.gz"].map(|name| {
        let copy = dir.join(name);
        std::fs::copy(guest.join(name), &copy).unwrap();
        copy
    })
}

fn image_args(images: &[PathBuf; 3]) -> Vec<String> {
    let [bios, kernel, initrd] = images;
    ["--bios", "--kernel", "--initrd"]
        .iter()
        .zip([bios, kernel, initrd])
        .flat_map(|(opt, path)| [opt.to_string(), path.display().to_string()])
        .collect()
}

fn inspect_json(recording: &Path) -> serde_json::Value {
    let out = rewind(&["inspect", "--json", recording.to_str().unwrap()]);
    assert!(out.status.success(), "inspect failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

#[test]
fn a_typed_debian_session_replays_byte_for_byte_without_its_images() {
    let dir = scratch("session");
    let images = copy_default_guest(&dir);
    let recording = dir.join("session.rwd");
    let mut args = vec![
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--append",
        "console=ttyS0 rdinit=/init quiet cryptomgr.notests",
        "--device",
        "virtio-rng",
    ];
    let image_args = image_args(&images);
    args.extend(image_args.iter().map(String::as_str));
    let mut console = Console::start(&args);
    console.wait_for(0, PROMPT, Duration::from_secs(180));
    let random = console.command("head -c 32 /dev/urandom | od -x");
    assert_eq!(random.lines().count(), 3, "od printed:\n{random}");
    // virtio-rng: bytes from the host's entropy, through the recorded input boundary.
    let hwrng = console.command("head -c 32 /dev/hwrng | od -x");
    assert_eq!(hwrng.lines().count(), 3, "od printed:\n{hwrng}");
    console.command("date");
    let interrupts = console.command("cat /proc/interrupts");
    assert!(interrupts.contains("ttyS0"), "{interrupts}");
    console.command("sleep 1; echo slept");
    console.type_text("poweroff -f\n");
    let status = console.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "the recorded guest must power off");
    let recorded_output = console.bytes.clone();
    drop(console);

    // The recording needs nothing but itself.
    for image in &images {
        std::fs::remove_file(image).unwrap();
    }
    // Recorded with the compiling engine (the default), replayed with both: the engine is
    // not part of the recording.
    let interp = common::replay_prints(&recording, "interp", &recorded_output);
    let jit = common::replay_prints(&recording, "jit", &recorded_output);
    assert_eq!(
        interp, jit,
        "replays with the interpreter and the compiling engine ended in different states"
    );

    // What inspect says about it.
    let info = inspect_json(&recording);
    assert_eq!(info["format_version"], rewind_replay::FORMAT_VERSION);
    assert_eq!(info["complete"], true);
    let position = info["position"].as_u64().unwrap();
    assert!(position > 500_000_000, "{info}");
    assert_eq!(
        info["virtual_ns"].as_u64(),
        Some(position),
        "icount shift 0: 1 ns per instruction"
    );
    // The guest slept at its prompt: fewer instructions ran than the clock shows.
    let executed = info["executed"].as_u64().unwrap();
    assert!(executed > 0 && executed < position, "{info}");
    assert_eq!(info["events"]["rtc_base"], 1);
    assert_eq!(info["events"]["entropy"], 1);
    assert!(info["events"]["rng"].as_u64().unwrap() >= 1, "{info}");
    assert_eq!(info["machine"]["devices"][0], "VirtioRng");
    let typed_lines = 7;
    assert!(
        info["events"]["console"].as_u64().unwrap() >= typed_lines,
        "{info}"
    );
    let event_bytes = info["event_bytes"].as_u64().unwrap();
    assert!(event_bytes > 0 && event_bytes < 40_000, "{info}");
    let names: Vec<&str> = info["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bios", "kernel", "initrd", "dtb"]);
    assert_eq!(info["machine"]["ram_size"], 512 << 20);
    assert!(info["machine"]["bootargs"]
        .as_str()
        .unwrap()
        .contains("rdinit=/init"));
}

/// Records the default guest booting to its init, which powers off at once.
fn record_boot(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, Output) {
    require_default_guest();
    let recording = dir.join(name);
    let mut args = vec![
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--no-pacing",
        "--state-hash",
        "--append",
        POWEROFF_APPEND,
    ];
    args.extend_from_slice(extra);
    let out = rewind(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (recording, out)
}

#[test]
fn replay_ends_in_the_recorded_state_and_divergence_is_caught_at_the_next_sync_point() {
    let dir = scratch("divergence");
    // Recorded by the interpreter, replayed by the compiling engine: every sync point is met.
    let (recording, recorded) = record_boot(
        &dir,
        "boot.rwd",
        &["--sync-every", "50000000", "--engine", "interp"],
    );
    let path = recording.to_str().unwrap();
    let replay = common::replay_ok(&["--engine", "jit", "--state-hash", path]);
    assert_eq!(replay.stdout, recorded.stdout);
    assert_eq!(
        state_hash(&replay),
        state_hash(&recorded),
        "the replay must end in the recorder's final state"
    );

    // A flipped bit in RAM that the guest does not touch: the next sync point sees it.
    let out = rewind(&["replay", path, "--perturb", "120000000:ram:0x90000000"]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{message}");
    assert!(
        message.contains("sync point at instruction 150000000 differs"),
        "{message}"
    );
    assert!(
        message.contains("RAM differs in 0x90000000..0x90400000"),
        "{message}"
    );
    // A register changed exactly at a sync point is named there.
    let out = rewind(&["replay", path, "--perturb", "200000000:x10"]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{message}");
    assert!(
        message.contains("sync point at instruction 200000000 differs")
            && message.contains("register x10 (a0)"),
        "{message}"
    );
    // The console output before the divergence is the recorded run's.
    assert!(recorded.stdout.starts_with(&out.stdout));
    let out = rewind(&["replay", path, "--perturb", "250000000:pc"]);
    let message = stderr(&out);
    assert!(message.contains("\n  pc: expected"), "{message}");
}

/// A recorder ended by a signal writes a whole recording; one killed by SIGKILL leaves one
/// that replays up to its last whole chunk and says it was cut.
#[test]
fn signals_end_recordings_cleanly_and_a_killed_recorder_leaves_a_replayable_prefix() {
    let dir = scratch("signals");
    for (signal, complete) in [("TERM", true), ("INT", true), ("KILL", false)] {
        let recording = dir.join(format!("{signal}.rwd"));
        let mut console = Console::start(&["record", "-o", recording.to_str().unwrap()]);
        console.wait_for(0, PROMPT, Duration::from_secs(180));
        console.command("echo before-the-signal");
        // Let the recorder write out the events (it does at least once a second).
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Command::new("kill")
            .args([format!("-{signal}"), console.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = console.wait_exit(Duration::from_secs(30));
        let recorded_output = console.bytes.clone();
        drop(console);

        let info = inspect_json(&recording);
        let replay = rewind(&["replay", recording.to_str().unwrap()]);
        let message = stderr(&replay);
        if complete {
            assert_eq!(status.code(), Some(0), "SIG{signal}");
            assert_eq!(info["complete"], true, "SIG{signal}: {info}");
            assert_eq!(replay.status.code(), Some(0), "SIG{signal}: {message}");
            assert_eq!(replay.stdout, recorded_output, "SIG{signal}");
        } else {
            assert_eq!(info["complete"], false, "{info}");
            assert_eq!(replay.status.code(), Some(4), "{message}");
            assert!(message.contains("was cut at byte"), "{message}");
            assert!(
                recorded_output.starts_with(&replay.stdout),
                "a cut replay printed bytes the recorded run did not"
            );
            let replayed = String::from_utf8_lossy(&replay.stdout);
            assert!(
                replayed.contains("before-the-signal"),
                "the prefix lost the typed command:\n{replayed}"
            );
        }
    }
}

/// A small recording of a bare-metal program, fast to replay.
fn small_recording(dir: &Path) -> (PathBuf, Vec<u8>) {
    let program = common::guest_program("cprog");
    let recording = dir.join("small.rwd");
    let out = rewind(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--bios",
        "none",
        "--kernel",
        program.to_str().unwrap(),
        "--sync-every",
        "1000000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("PASS"));
    (recording, out.stdout)
}

#[test]
fn corrupted_cut_foreign_and_newer_recordings_are_refused_without_console_output() {
    let dir = scratch("bad-recordings");
    let (recording, output) = small_recording(&dir);
    let good = std::fs::read(&recording).unwrap();
    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert_eq!(replay.stdout, output);
    let bad = dir.join("bad.rwd");
    let bad_path = bad.to_str().unwrap();

    // Flipped bytes anywhere: refused before the first instruction.
    let positions: Vec<usize> = (0..24)
        .chain((24..good.len()).step_by(good.len() / 60))
        .collect();
    for &i in &positions {
        let mut data = good.clone();
        data[i] ^= 0x40;
        std::fs::write(&bad, &data).unwrap();
        let out = rewind(&["replay", bad_path]);
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "byte {i}: {message}");
        assert!(
            out.stdout.is_empty(),
            "byte {i}: console bytes from a bad file"
        );
        assert!(
            ["corrupted", "newer", "not a Rewind recording"]
                .iter()
                .any(|m| message.contains(m)),
            "byte {i}: {message}"
        );
        assert!(!message.contains("panicked"), "byte {i}: {message}");
        let inspected = rewind(&["inspect", bad_path]);
        assert_eq!(inspected.status.code(), Some(1), "inspect, byte {i}");
    }

    // Cut anywhere: a prefix of the recorded output, and a clear word that it was cut.
    for len in (0..good.len()).step_by(good.len() / 40) {
        std::fs::write(&bad, &good[..len]).unwrap();
        let out = rewind(&["replay", bad_path]);
        let message = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "cut at {len}: {message}");
        assert!(output.starts_with(&out.stdout), "cut at {len}");
        assert!(
            message.contains("cut") || message.contains("not a Rewind recording"),
            "cut at {len}: {message}"
        );
        assert!(!message.contains("panicked"), "cut at {len}: {message}");
    }

    // Not a recording at all, or from a newer Rewind.
    let elf = common::guest_program("cprog");
    for (file, expected) in [
        (elf.to_str().unwrap(), "not a Rewind recording"),
        ("/nonexistent.rwd", "cannot read /nonexistent.rwd"),
        ("/", "cannot read /"),
    ] {
        let out = rewind(&["replay", file]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        assert!(stderr(&out).contains(expected), "{file}: {}", stderr(&out));
    }
    let mut newer = good.clone();
    newer[8] = 3;
    std::fs::write(&bad, &newer).unwrap();
    let out = rewind(&["replay", bad_path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("format version 3, newer"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

/// Boots with `args`, reads the first MiB of /dev/vda (its sha256sum line), writes a sector
/// and reads it back past the page cache, and powers off. Returns the hash line, the sector
/// read back and the console bytes.
fn disk_session(args: &[&str]) -> (String, String, Vec<u8>) {
    common::require_default_guest();
    let mut console = Console::start(args);
    console.wait_for(0, PROMPT, Duration::from_secs(180));
    let hash = console.command("dd if=/dev/vda bs=1M count=1 2>/dev/null | sha256sum");
    // Short lines: the terminal would wrap longer echoes.
    console.command("echo rewind-was-here | dd of=/dev/vda seek=100 conv=notrunc");
    console.command("sync; echo 3 > /proc/sys/vm/drop_caches");
    let back = console.command("dd if=/dev/vda skip=100 count=1 2>/dev/null | head -c 15");
    console.type_text("poweroff -f\n");
    assert_eq!(console.wait_exit(Duration::from_secs(60)).code(), Some(0));
    (hash, back, console.bytes.clone())
}

/// A raw disk image on virtio-blk: the guest reads its first MiB (hash checked), writes a
/// sector and reads it back from the device. Recording never writes to the image (the
/// overlay holds the write), the replay matches byte for byte, and a replay on a changed
/// image is refused. A plain run writes through to the image.
#[test]
fn a_disk_is_read_written_recorded_and_replayed_on_the_same_image() {
    use sha2::{Digest, Sha256};
    let dir = scratch("disk");
    let disk = dir.join("disk.img");
    let content: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&disk, &content).unwrap();
    let first_mib: String = Sha256::digest(&content[..1 << 20])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let recording = dir.join("disk.rwd");
    let disk_arg = disk.to_str().unwrap();
    let kept = dir.join("kept.img");
    let (hash, back, recorded_output) = disk_session(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--drive",
        disk_arg,
        "--disk-out",
        kept.to_str().unwrap(),
    ]);
    assert!(
        hash.contains(&first_mib),
        "the guest read other bytes: {hash}"
    );
    assert_eq!(back.trim(), "rewind-was-here");
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        content,
        "recording wrote to the base image"
    );
    // --disk-out kept the guest's changes in a new image.
    let kept = std::fs::read(&kept).unwrap();
    assert_eq!(kept.len(), content.len());
    assert_eq!(&kept[100 * 512..100 * 512 + 15], b"rewind-was-here");
    assert_eq!(kept[..100 * 512], content[..100 * 512]);

    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert_eq!(replay.stdout, recorded_output);
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        content,
        "replaying wrote to the base image"
    );

    // The same image elsewhere replays too (the state digests know nothing of host files).
    let copy = dir.join("copy.img");
    std::fs::copy(&disk, &copy).unwrap();
    let moved = common::replay_ok(&[
        recording.to_str().unwrap(),
        "--drive",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(moved.stdout, recorded_output);

    // Another base image is refused before anything runs.
    let other = dir.join("other.img");
    let mut changed = content.clone();
    changed[5] ^= 1;
    std::fs::write(&other, &changed).unwrap();
    common::assert_other_drive_refused(&recording, &other);

    // A plain run writes through to the image.
    let (_, back, _) = disk_session(&["run", "--drive", disk_arg]);
    assert_eq!(back.trim(), "rewind-was-here");
    let written = std::fs::read(&disk).unwrap();
    assert_eq!(&written[100 * 512..100 * 512 + 15], b"rewind-was-here");
}

/// A qcow2 image (made by Debian's qemu-img) on virtio-blk: the guest reads the same bytes as
/// from the raw image, a recording leaves the qcow2 file untouched and replays, and a plain
/// run writes into it in a way `qemu-img check` accepts.
#[test]
fn a_qcow2_disk_is_read_recorded_replayed_and_written() {
    use sha2::{Digest, Sha256};
    let dir = scratch("qcow2");
    let raw = dir.join("disk.raw");
    let content: Vec<u8> = (0..4u32 << 20).map(|i| (i * 11 + 5) as u8).collect();
    std::fs::write(&raw, &content).unwrap();
    let qcow2 = dir.join("disk.qcow2");
    let converted = Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .args([&raw, &qcow2])
        .status()
        .expect("qemu-img");
    assert!(converted.success());
    let first_mib: String = Sha256::digest(&content[..1 << 20])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let original = std::fs::read(&qcow2).unwrap();
    let recording = dir.join("qcow2.rwd");
    let (hash, back, recorded) = disk_session(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--drive",
        &format!("{},format=qcow2", qcow2.display()),
    ]);
    assert!(hash.contains(&first_mib), "{hash}");
    assert_eq!(back.trim(), "rewind-was-here");
    assert_eq!(
        std::fs::read(&qcow2).unwrap(),
        original,
        "recording wrote to the image"
    );
    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert_eq!(replay.stdout, recorded);

    let (_, back, _) = disk_session(&["run", "--drive", qcow2.to_str().unwrap()]);
    assert_eq!(back.trim(), "rewind-was-here");
    let check = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&qcow2)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let out = dir.join("out.raw");
    assert!(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .args([&qcow2, &out])
        .status()
        .unwrap()
        .success());
    let written = std::fs::read(&out).unwrap();
    assert_eq!(&written[100 * 512..100 * 512 + 15], b"rewind-was-here");
    assert_eq!(written[..100 * 512], content[..100 * 512]);

    // A qcow2 with a backing file is refused with what to do.
    let top = dir.join("top.qcow2");
    assert!(Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-F", "qcow2", "-b"])
        .args([&qcow2, &top])
        .output()
        .unwrap()
        .status
        .success());
    let refused = rewind(&["run", "--drive", top.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("qemu-img convert"),
        "{}",
        stderr(&refused)
    );
}

/// A recording made in format 1 (device digests from `Debug` text; see tests/data/README.md)
/// still replays and meets every sync point, disk overlay and virtio queues included.
#[test]
fn a_format_1_recording_still_replays_and_meets_its_sync_points() {
    let dir = scratch("format-1");
    let disk = dir.join("blkecho-disk.raw");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let recording = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format1-blkecho.rwd");
    let info = inspect_json(&recording);
    assert_eq!(info["format_version"], 1, "{info}");
    let out = rewind(&[
        "replay",
        recording.to_str().unwrap(),
        "--drive",
        disk.to_str().unwrap(),
    ]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{message}");
    assert!(message.contains("13 sync points matched"), "{message}");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("line 3: last line") && console.ends_with("PASS\n"),
        "{console}"
    );
}

/// `rewind inspect FILE | head -1`: a reader that goes away early is no error (it was a panic).
#[test]
fn inspect_into_a_closed_pipe_ends_quietly() {
    use std::os::fd::FromRawFd;
    let recording = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format1-blkecho.rwd");
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe(2) just returned these descriptors, and nothing else owns them.
    let (reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    for args in [
        &["inspect", recording.to_str().unwrap()][..],
        &["gdbinit"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args(args)
            .stdout(writer.try_clone().unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

/// Waits for `child` to end and returns its exit code and peak resident memory in bytes
/// (`wait4`'s rusage of that child alone).
fn wait_with_peak_memory(child: &std::process::Child, timeout: Duration) -> (i32, u64) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: `rusage` is plain data that wait4 fills in; zeroes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only to the two pointers, which are valid for the call.
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, libc::WNOHANG, &mut usage) };
        if pid == child.id() as i32 {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            return (code, usage.ru_maxrss as u64 * 1024);
        }
        assert!(pid == 0, "wait4 failed");
        assert!(std::time::Instant::now() < deadline, "rewind did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A guest that writes 1 GiB to its disk is recorded holding the overlay and little more: the
/// recorder's peak memory is within guest RAM + the overlay + a fixed bound (sync points no
/// longer copy the overlay or format it as text), and the recording replays.
#[test]
fn recording_a_gib_of_disk_writes_costs_the_overlay_and_replays() {
    const MIB: u64 = 1 << 20;
    let dir = scratch("gib-write");
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(1100 * MIB))
        .unwrap();
    let recording = dir.join("gib.rwd");
    let mut console = Console::start(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--memory",
        "256M",
        "--drive",
        disk.to_str().unwrap(),
    ]);
    console.wait_for(0, PROMPT, Duration::from_secs(180));
    std::thread::sleep(Duration::from_millis(300));
    let from = console.seen.len();
    console.type_text("dd if=/dev/zero of=/dev/vda bs=1M count=1024 && sync\n");
    console.wait_for(from, "1024+0 records out", Duration::from_secs(900));
    console.wait_for(from, PROMPT, Duration::from_secs(300));
    console.type_text("poweroff -f\n");
    let (code, peak) = wait_with_peak_memory(&console.child, Duration::from_secs(120));
    // Reaped here: the console must not kill or wait for it again.
    std::mem::forget(console);
    assert_eq!(code, 0);
    let bound = 256 * MIB + 1024 * MIB + 384 * MIB;
    assert!(
        peak <= bound,
        "the recorder peaked at {} MiB, more than {} MiB (RAM + overlay + 384 MiB)",
        peak / MIB,
        bound / MIB
    );
    // Sparse, and still without a block of data: the overlay took every write.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&disk).unwrap().blocks(),
        0,
        "the recording wrote to the image"
    );
    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains("1024+0 records out"),
        "the replay did not write the GiB"
    );
}
