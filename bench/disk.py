#!/usr/bin/env python3
"""Disk throughput: `dd` of 64 MiB from a virtio-blk disk in the default Debian guest, under
Rewind (run and record) and under QEMU (plain TCG, virtio-mmio version 2), side by side.
Then the recording overhead of writing: `dd` of WRITE_MIB (1024) MiB of zeros to the disk,
`run` (writing through to a scratch image) against `record` (writing to the overlay), with
each one's peak memory.

The time measured is the host's wall time from typing the command to the next prompt (the
guest's own clock is virtual in Rewind). Prints ratios.

    bench/disk.py            # RUNS=3; SKIP_BUILD=1 reuses target/release/rewind
    WRITE_ONLY=1 RUNS=1 WRITE_MIB=1024 bench/disk.py
"""

import os
import statistics
import tempfile

from guest_session import REWIND, default_guest, images, qemu, session, session_stats

DD = "dd if=/dev/vda of=/dev/null bs=1M count=64"


def write_overhead(guest, work, runs):
    """`run` against `record` for a dd that writes WRITE_MIB MiB to the disk."""
    mib = int(os.environ.get("WRITE_MIB", "1024"))
    disk = os.path.join(work, "write.img")
    dd = f"dd if=/dev/zero of=/dev/vda bs=1M count={mib} && sync"
    stats = {"rewind run": [], "rewind record": []}
    for i in range(runs):
        for name in stats:
            with open(disk, "wb") as f:
                f.truncate((mib + 64) << 20)
            sub = ["run"] if name == "rewind run" else ["record", "-o",
                                                      os.path.join(work, "write.rwd")]
            argv = [REWIND, *sub, "--drive", disk] + images(guest)
            stats[name].append(session_stats(argv, [], dd, f"{mib}+0 records out"))
        print(f"write round {i + 1}/{runs}: " + ", ".join(
            f"{k} {v[-1][0]:.2f} s, peak {v[-1][1] >> 20} MiB" for k, v in stats.items()),
            flush=True)
    med = {k: statistics.median(t for t, _ in v) for k, v in stats.items()}
    for k, v in stats.items():
        print(f"{k:<14} dd of {mib} MiB to the disk: {med[k]:.2f} s "
              f"({mib / med[k]:.0f} MiB/s), peak RSS {max(m for _, m in v) >> 20} MiB")
    print(f"recording overhead (write): {(med['rewind record'] / med['rewind run'] - 1) * 100:+.1f}%")
    os.remove(disk)


def main():
    runs = int(os.environ.get("RUNS", "3"))
    guest = default_guest()
    work = tempfile.mkdtemp(prefix="rewind-disk-")
    if os.environ.get("WRITE_ONLY"):
        write_overhead(guest, work, runs)
        return
    disk = os.path.join(work, "disk.img")
    with open(disk, "wb") as f:
        f.write(os.urandom(128 << 20))
    rewind_run = [REWIND, "run", "--drive", f"{disk},readonly=on"] + images(guest)
    rewind_record = [REWIND, "record", "-o", os.path.join(work, "disk.rwd"),
                     "--drive", f"{disk},readonly=on"] + images(guest)
    qemu_run = qemu(guest, "-drive", f"file={disk},if=none,format=raw,id=d,readonly=on",
                    "-device", "virtio-blk-device,drive=d")
    times = {"rewind run": [], "rewind record": [], "qemu": []}
    for i in range(runs):
        for name, argv in [("rewind run", rewind_run), ("rewind record", rewind_record),
                           ("qemu", qemu_run)]:
            times[name].append(session(argv, [], DD, "64+0 records in"))
        print(f"round {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    mib_s = {k: 64 / v for k, v in med.items()}
    for k in times:
        print(f"{k:<14} dd of 64 MiB: {med[k]:.2f} s ({mib_s[k]:.0f} MiB/s)")
    print(f"ratio rewind/qemu (time): {med['rewind run'] / med['qemu']:.2f}")
    print(f"recording overhead: {(med['rewind record'] / med['rewind run'] - 1) * 100:+.1f}%")
    write_overhead(guest, work, runs)


if __name__ == "__main__":
    main()
