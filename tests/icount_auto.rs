//! `--icount-shift auto`: the clock's shift follows the wall clock in live runs, every change
//! is recorded at its instruction count, and a replay follows the same piecewise clock to the
//! same bytes and state. The guest is `clockwatch`, which sleeps half a virtual second on a
//! timer, polls `time` and CLINT's mtime for two more, and checks that time never goes
//! backwards (it exits with status 1 if it does).

mod common;
use common::{rewind, scratch, state_hash, stderr};

use std::path::Path;
use std::time::{Duration, Instant};

/// Virtual seconds `clockwatch` watches (half a second asleep, two busy).
const GUEST_SECONDS: f64 = 2.5;

/// The `busy t=N` and `slept t=N` values the guest printed (mtime ticks since it started).
fn printed_times(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|l| l.split_once(" t=").and_then(|(_, t)| t.trim().parse().ok()))
        .collect()
}

fn clockwatch_args(program: &Path) -> Vec<String> {
    ["--bios", "none", "--kernel"]
        .iter()
        .map(|s| s.to_string())
        .chain([program.display().to_string()])
        .chain(["--memory", "128M", "--state-hash", "--stats"].map(String::from))
        .collect()
}

#[test]
fn a_recording_under_auto_holds_its_shift_changes_and_replays_to_the_same_bytes_and_state() {
    let program = common::guest_program("clockwatch");
    let dir = scratch("icount-auto-record");
    let file = dir.join("clockwatch.rwd");
    let mut args: Vec<String> = ["record", "-o", file.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    // Sync points every 2^24 instructions: the digests, clock included, are checked all along.
    // Without pacing, the guest's first half second asleep passes at once: its clock is then
    // ahead of the wall's, and auto must slow it down, whatever this host's speed.
    args.extend(
        [
            "--icount-shift",
            "auto",
            "--sync-every",
            "16777216",
            "--no-pacing",
        ]
        .map(String::from),
    );
    args.extend(clockwatch_args(&program));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let recorded = rewind(&args);
    assert!(recorded.status.success(), "record: {}", stderr(&recorded));
    let console = String::from_utf8_lossy(&recorded.stdout).into_owned();
    assert!(console.contains("clockwatch done"), "{console}");
    let times = printed_times(&console);
    assert_eq!(times.len(), 9, "{console}");
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{console}");

    // The recording says where the shift changed: at least once (see `--no-pacing` above).
    let inspect = rewind(&["inspect", "--json", file.to_str().unwrap()]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let changes = info["events"]["icount_shift"].as_u64().unwrap_or(0);
    assert!(changes >= 1, "no shift change recorded: {info:#}");
    assert_eq!(info["machine"]["icount_auto"], true);
    assert_eq!(info["machine"]["icount_shift"], 3, "auto starts at shift 3");
    let virtual_ns = info["virtual_ns"].as_u64().unwrap();
    assert!(
        (2_500_000_000..2_600_000_000).contains(&virtual_ns),
        "the guest watched 2.5 s, the recording says {virtual_ns} ns"
    );

    // The replay never looks at the host's clock: same bytes, same state, every sync point.
    for _ in 0..2 {
        let replayed = common::replay_ok(&["--state-hash", file.to_str().unwrap()]);
        assert_eq!(replayed.stdout, recorded.stdout);
        assert_eq!(state_hash(&replayed), state_hash(&recorded));
        assert!(stderr(&replayed).contains("sync points matched"));
    }

    // Going back (as `rewind debug` does: restore a checkpoint, play forward) lands in the
    // state of playing straight there, on either side of a change of shift.
    use rewind_debug::timeline::Timeline;
    use rewind_machine::InputEvent;
    use rewind_replay::{Item, Player, Recording};
    let recording = Recording::open(&file).unwrap();
    let changes: Vec<u64> = recording
        .timeline
        .iter()
        .filter(|e| matches!(e.item, Item::Event(InputEvent::IcountShift(_))))
        .map(|e| e.icount)
        .collect();
    let mut timeline = Timeline::new(Player::new(&recording, &[]).unwrap(), 1 << 30);
    timeline.set_spacing(1 << 22);
    let end = timeline.end();
    timeline.seek(end).unwrap();
    // Around the first and the last change (each straight play costs a replay from 0).
    let (first, last) = (changes[0], changes[changes.len() - 1]);
    let mut targets = vec![end - 1, last + 1, last - 1, end / 2, first + 1, first - 1];
    targets.dedup();
    for target in targets {
        let context = format!(" (shift changes at {changes:?})");
        let straight = common::assert_seek_lands_as_straight_play(
            &mut timeline,
            &recording,
            &[],
            target,
            &context,
        );
        assert_eq!(timeline.player.machine.clock(), straight.machine.clock());
    }
}

#[test]
fn under_auto_guest_seconds_take_about_wall_seconds() {
    let program = common::guest_program("clockwatch");
    let mut args = vec!["run".to_string(), "--icount-shift".into(), "auto".into()];
    args.extend(clockwatch_args(&program));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = rewind(&args);
    let wall = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("clockwatch done"), "{console}");
    // Under a fixed shift 0, 2.5 virtual seconds are 2.5e9 instructions: 10 to 25 s at this
    // machine's 100-250 MIPS (17 s measured). Under auto the shift rises until virtual time
    // keeps up with the wall: about 2.5 s. Loosely, for noisy machines; on a host fast
    // enough for shift 0 to keep up, auto settles there and the bound holds as well.
    let executed: u64 = stderr(&out)
        .lines()
        .find_map(|l| l.strip_prefix("executed: "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in:\n{}", stderr(&out)));
    // Its two busy seconds are 2e9 instructions at shift 0; its half second asleep is paced.
    let mips = executed as f64 / (wall.as_secs_f64() - 0.5).max(0.1) / 1e6;
    let shift0 = 0.5 + 2e9 / (mips * 1e6);
    eprintln!("auto: {wall:?} for {executed} instructions; shift 0 would take about {shift0:.1} s");
    assert!(
        wall < Duration::from_secs_f64(3.0 * GUEST_SECONDS),
        "{GUEST_SECONDS} guest seconds took {wall:?} of wall time under auto"
    );
}

#[test]
fn shifts_out_of_range_are_refused_and_a_fixed_shift_records_no_clock_changes() {
    for bad in ["11", "-1", "automatic", ""] {
        let out = rewind(&["run", &format!("--icount-shift={bad}"), "--bios", "none"]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("icount-shift"), "{}", stderr(&out));
    }
    // A fixed shift writes no shift events and no `icount_auto` in the manifest.
    let program = common::guest_program("exit42");
    let dir = scratch("icount-auto-fixed");
    let file = dir.join("exit42.rwd");
    let out = rewind(&[
        "record",
        "-o",
        file.to_str().unwrap(),
        "--icount-shift",
        "2",
        "--bios",
        "none",
        "--kernel",
        program.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
    let inspect = rewind(&["inspect", "--json", file.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(info["events"].get("icount_shift").is_none(), "{info:#}");
    assert!(info["machine"].get("icount_auto").is_none(), "{info:#}");
    assert_eq!(info["machine"]["icount_shift"], 2);
    assert_eq!(info["icount_shift"], 2);
}

#[test]
fn a_debian_boot_recorded_under_auto_replays_to_the_same_state() {
    // Linux reads time through the Sstc `time` CSR and programs `stimecmp`, and the RTC at
    // boot: all on the clock whose shift changes while it runs.
    common::require_default_guest();
    let dir = scratch("icount-auto-debian");
    let file = dir.join("boot.rwd");
    let recorded = rewind(&[
        "record",
        "-o",
        file.to_str().unwrap(),
        "--icount-shift",
        "auto",
        "--sync-every",
        "67108864",
        "--state-hash",
        "--append",
        "console=ttyS0 rdinit=/init quiet cryptomgr.notests rewind.poweroff",
    ]);
    assert_eq!(recorded.status.code(), Some(0), "{}", stderr(&recorded));
    let replayed = common::replay_ok(&["--state-hash", file.to_str().unwrap()]);
    assert_eq!(replayed.stdout, recorded.stdout);
    assert_eq!(state_hash(&replayed), state_hash(&recorded));
    let inspect = rewind(&["inspect", "--json", file.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    // Reported, not asserted: how often the shift changed and how much virtual time passed
    // follow this host's speed.
    eprintln!(
        "auto: {} shift changes, {} ns of virtual time",
        info["events"]["icount_shift"], info["virtual_ns"]
    );
}
