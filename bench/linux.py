#!/usr/bin/env python3
"""Linux workloads in the default Debian guest, side by side in one run: Rewind (`run` and
`record`) against QEMU 10 plain TCG and QEMU `-icount shift=auto,rr=record`.

Each workload boots a fresh machine, prepares its input untimed, then times one command from
the end of its typing to the next prompt (host wall time): `sha256sum` of 64 MiB, `gzip -6` of
32 MiB of text (numbers, one a line), `sort` of 1M shuffled lines. Prints medians and the
ratios.

    bench/linux.py                # RUNS=3; SKIP_BUILD=1 reuses target/release/rewind
    RUNS=1 WORKLOADS=sort bench/linux.py
"""

import os
import statistics
import tempfile

from guest_session import REWIND, default_guest, images, qemu, session

WORKLOADS = {
    "sha256sum": (["dd if=/dev/zero of=/tmp/data bs=1M count=64 2>/dev/null"],
                  "sha256sum /tmp/data && echo done-sha256sum", "done-sha256sum"),
    "gzip": (["seq 1 4400000 > /tmp/text"],
             "gzip -6 -c /tmp/text | wc -c && echo done-gzip", "done-gzip"),
    "sort": (["seq 1 1000000 | shuf > /tmp/lines"],
             "sort /tmp/lines | tail -n 1 && echo done-sort", "done-sort"),
}


def main():
    runs = int(os.environ.get("RUNS", "3"))
    chosen = os.environ.get("WORKLOADS", ",".join(WORKLOADS)).split(",")
    guest = default_guest()
    work = tempfile.mkdtemp(prefix="rewind-linux-")
    machines = {
        "rewind run": [REWIND, "run", "--no-pacing"] + images(guest),
        "rewind record": [REWIND, "record", "--no-pacing", "-o",
                          os.path.join(work, "session.rwd")] + images(guest),
        "qemu tcg": qemu(guest),
        "qemu rr=record": qemu(guest, "-icount",
                               f"shift=auto,rr=record,rrfile={os.path.join(work, 'qemu.rr')}"),
    }
    for name in chosen:
        setup, timed, expect = WORKLOADS[name]
        times = {m: [] for m in machines}
        for i in range(runs):
            for machine, argv in machines.items():
                times[machine].append(session(argv, setup, timed, expect))
            print(f"{name} round {i + 1}/{runs}: " +
                  ", ".join(f"{m} {t[-1]:.2f} s" for m, t in times.items()), flush=True)
        med = {m: statistics.median(t) for m, t in times.items()}
        print(f"{name}: " + ", ".join(f"{m} {t:.2f} s" for m, t in med.items()) +
              f"; rewind run/qemu tcg {med['rewind run'] / med['qemu tcg']:.2f}, "
              f"rewind record/qemu rr=record {med['rewind record'] / med['qemu rr=record']:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
