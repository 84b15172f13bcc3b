//! Machine snapshots on the default Debian guest: save → restore → continue is
//! indistinguishable from never stopping, in any order of restores, and bad snapshots are
//! refused.

mod common;

use common::{debian_machine, run_to};
use rewind_machine::Snapshot;

#[test]
fn save_restore_continue_is_indistinguishable_from_never_stopping() {
    const A: u64 = 150_000_000;
    const B: u64 = 300_000_000;
    const END: u64 = 450_000_000;

    // The reference: one run straight through.
    let mut reference = debian_machine(1);
    let reference_out = run_to(&mut reference, END);
    let reference_digest = reference.digest();

    // Stop at A and B to take snapshots, go on to the end.
    let mut machine = debian_machine(1);
    let mut out = run_to(&mut machine, A);
    let at_a: Snapshot = machine.snapshot();
    out.extend(run_to(&mut machine, B));
    let at_b = machine.snapshot();
    out.extend(run_to(&mut machine, END));
    assert_eq!(
        machine.digest(),
        reference_digest,
        "taking snapshots changed the run"
    );
    assert_eq!(out, reference_out);
    assert!(
        at_b.new_pages < at_b.ram.pages() / 2,
        "the second snapshot copied {} pages, not only those written since the first",
        at_b.new_pages
    );

    // Back to A (from the end), then B (forward past nothing), then A again: each continues
    // exactly as the first time.
    for (snapshot, name) in [(&at_a, "A"), (&at_b, "B"), (&at_a, "A again")] {
        machine.restore(snapshot).unwrap();
        assert_eq!(machine.hart.state.icount, snapshot.icount());
        let _ = run_to(&mut machine, END);
        assert_eq!(
            machine.digest(),
            reference_digest,
            "restoring {name} and running on ended elsewhere"
        );
    }
    // A fresh machine restored from a snapshot continues the same way.
    let mut fresh = debian_machine(1);
    fresh.restore(&at_b).unwrap();
    run_to(&mut fresh, END);
    assert_eq!(fresh.digest(), reference_digest);
}

#[test]
fn snapshots_that_break_invariants_are_refused_and_leave_the_machine_alone() {
    let mut machine = debian_machine(1);
    run_to(&mut machine, 20_000_000);
    let good = machine.snapshot();
    let before = machine.digest();
    let mut bad_privilege = good.clone();
    bad_privilege.state.hart.privilege = 2;
    let mut bad_fifo = good.clone();
    bad_fifo.state.uart.rx_fifo = vec![0; 100].into();
    let mut bad_plic = good.clone();
    bad_plic.state.plic.priority[3] = 99;
    let mut other_ram = good.clone();
    other_ram.state.config.ram_size = 256 << 20;
    for (bad, what) in [
        (bad_privilege, "privilege"),
        (bad_fifo, "FIFO"),
        (bad_plic, "PLIC"),
        (other_ram, "RAM"),
    ] {
        let err = machine.restore(&bad).expect_err(what);
        assert!(err.to_string().contains("snapshot"), "{what}: {err}");
        assert_eq!(
            machine.digest(),
            before,
            "a refused {what} snapshot changed the machine"
        );
    }
}

/// Going back in a recording restores the disk overlay and the device states too (disk,
/// entropy, network frames held for the driver): a seek back from after a disk write and
/// network traffic lands in exactly the state of playing straight there.
#[test]
fn going_back_restores_disk_writes_and_device_state() {
    use rewind_debug::timeline::Timeline;
    use rewind_replay::{Player, Recording};
    use std::time::Duration;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("snapshot-devices");
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0x11u8; 1 << 20]).unwrap();
    let recording = dir.join("devices.rwd");
    common::require_default_guest();
    let mut console = common::Console::start(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--drive",
        disk.to_str().unwrap(),
        "--device",
        "virtio-rng",
        "--netdev",
        "user",
    ]);
    console.wait_for(0, common::PROMPT, Duration::from_secs(180));
    let ping = console.command("ping -c 2 10.0.2.2");
    assert!(ping.contains("2 packets received"), "{ping}");
    console.command("echo written | dd of=/dev/vda seek=3 conv=notrunc");
    console.command("sync; head -c 16 /dev/hwrng | od -x");
    console.type_text("poweroff -f\n");
    assert_eq!(console.wait_exit(Duration::from_secs(60)).code(), Some(0));
    drop(console);

    let recording = Recording::open(&recording).unwrap();
    let end = recording.end.as_ref().unwrap().icount;
    let mut timeline = Timeline::new(Player::new(&recording, &[]).unwrap(), 1 << 30);
    timeline.seek(end).unwrap();
    let at_end = timeline.player.machine.digest();
    for target in [end / 3, end - 1_000_000, end / 2] {
        common::assert_seek_lands_as_straight_play(&mut timeline, &recording, &[], target, "");
    }
    timeline.seek(end).unwrap();
    assert_eq!(timeline.player.machine.digest(), at_end);
}

/// Checkpoints share disk blocks and count those they do not share: in the format-1
/// recording (a guest that writes two 64 KiB blocks of its disk per console line), a
/// checkpoint costs at most the two blocks it copied beyond its RAM pages, the timeline's
/// total counts them, and going back under a budget that drops checkpoints still lands in
/// the state of playing straight there.
#[test]
fn checkpoints_share_disk_blocks_and_count_the_ones_they_copy() {
    use rewind_debug::timeline::Timeline;
    use rewind_replay::{Player, Recording};
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkpoint-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("blkecho-disk.raw");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format1-blkecho.rwd");
    let recording = Recording::open(&path).unwrap();
    let drives = [disk.clone()];

    let mut player = Player::new(&recording, &drives).unwrap();
    let (mut disk_bytes, mut total) = (0, 0);
    let mut icount = 0;
    while icount < player.end {
        icount = (icount + 100_000).min(player.end);
        player.play_to(icount).unwrap();
        let checkpoint = player.save();
        let s = &checkpoint.snapshot;
        assert!(s.new_disk_bytes <= 2 << 16, "{} bytes", s.new_disk_bytes);
        assert_eq!(s.cost_bytes(), s.new_pages as u64 * 4096 + s.new_disk_bytes);
        disk_bytes += s.new_disk_bytes;
        total += s.cost_bytes();
    }
    assert!(
        disk_bytes >= 4 * (2 << 16),
        "{disk_bytes} bytes of disk blocks copied"
    );

    let mut timeline = Timeline::new(Player::new(&recording, &drives).unwrap(), 1 << 30);
    timeline.set_spacing(100_000);
    let end = timeline.end();
    timeline.seek(end).unwrap();
    // The same checkpoints but for where they fall (the timeline also keeps instruction 0).
    let counted = timeline.checkpoint_bytes();
    assert!(
        counted >= disk_bytes && counted.abs_diff(total) <= 64 << 10,
        "{counted} {total}"
    );
    // A budget of a third: checkpoints are dropped, and the ones kept count what they no
    // longer share.
    let mut tight = Timeline::new(Player::new(&recording, &drives).unwrap(), total / 3);
    tight.set_spacing(100_000);
    tight.seek(end).unwrap();
    assert!(tight.checkpoint_bytes() <= total / 3 + (2 << 16) + (1 << 20));
    for target in [end / 2, end / 4, end - 1] {
        common::assert_seek_lands_as_straight_play(&mut tight, &recording, &drives, target, "");
    }
}

/// The TLB is guest-visible: `stale_tlb` reads a page whose page-table entry changed without
/// `sfence.vma`, in one address space and then across `satp` switches between two, and what
/// it reads depends on the translations the hart holds. A seek that restores a checkpoint
/// taken in the middle, and a replay with a watchpoint on that page (whose accesses then
/// take the slow path), must each land in the state of playing straight there.
#[test]
fn cached_translations_survive_restores_and_watchpoints() {
    use rewind_cpu::{WatchKind, Watchpoint};
    use rewind_debug::timeline::{DebugStop, Timeline};
    use rewind_replay::{Player, Recording};
    let elf = common::guest_program("stale_tlb");
    let dir = common::scratch("stale-tlb");
    let path = dir.join("stale.rwd");
    let out = common::rewind(&[
        "record",
        "-o",
        path.to_str().unwrap(),
        "--bios",
        "none",
        "--kernel",
        elf.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    // Both phases read through translations their page-table change left behind: the
    // situations below are the ones where a TLB lost on restore would show.
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    for phase in ["phase 1: ", "phase 2: "] {
        let stale: u64 = console
            .lines()
            .find_map(|l| l.strip_prefix(phase)?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {phase} line in:\n{console}"));
        assert!(stale > 0, "{console}");
    }

    let recording = Recording::open(&path).unwrap();
    let mut timeline = Timeline::new(Player::new(&recording, &[]).unwrap(), 1 << 30);
    timeline.set_spacing(50_000);
    let end = timeline.end();
    timeline.seek(end).unwrap();
    for target in [end / 4, end / 2, end * 3 / 4, end - 1] {
        common::assert_seek_lands_as_straight_play(&mut timeline, &recording, &[], target, "");
    }

    // A watchpoint on the read page, where nothing is read: it never stops the run, but every
    // access to the page checks it.
    const VA: u64 = 0x4000_0000;
    let mut watched = Timeline::new(Player::new(&recording, &[]).unwrap(), 1 << 30);
    watched.set_watchpoints(vec![Watchpoint {
        addr: VA + 64,
        len: 8,
        kind: WatchKind::Access,
    }]);
    assert_eq!(watched.resume(end).unwrap(), DebugStop::End);
    let mut straight = Player::new(&recording, &[]).unwrap();
    straight.play_to(end).unwrap();
    assert_eq!(
        watched.player.machine.digest(),
        straight.machine.digest(),
        "a watchpoint on the page changed what the guest read"
    );
}
