#!/usr/bin/env python3
"""Several harts, side by side in one run: the default Debian guest on four harts runs a
program of ours from the test initramfs (tests/guest/linux, appended to the guest's), then
powers off. Timed from start to exit (host wall time), under `rewind run`, `rewind record` and
QEMU 10 `-smp 4` (plain TCG, which runs the four harts on host threads of their own: this
host has 2 cores).

Workloads: `boot` (the init runs `true`: boot and power-off only) and `threads` (a CPU-bound
thread pinned to each hart, `threads ROUNDS`). The workload's own time is `threads - boot`.
Prints the medians, Rewind/QEMU for both and for the workload alone, and record/run: the
cost of recording four harts.

    bench/smp.py                      # RUNS=3, SMP=4, ROUNDS=20000000
    SKIP_BUILD=1 RUNS=1 bench/smp.py  # reuse target/release/rewind
"""

import os
import statistics
import subprocess
import tempfile
import time

from guest_session import REWIND, ROOT, default_guest


def initramfs(guest, work):
    """The guest's initramfs with the Linux test programs added."""
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "tests/guest"), "linux"], check=True)
    with open(os.path.join(guest, "initramfs.cpio.gz"), "rb") as f:
        image = f.read()
    image += b"\0" * (-len(image) % 4)
    with open(os.path.join(ROOT, "tests/guest/build/linux/overlay.cpio"), "rb") as f:
        image += f.read()
    path = os.path.join(work, "initramfs.cpio")
    with open(path, "wb") as f:
        f.write(image)
    return path


def timed(argv, expect):
    start = time.monotonic()
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=1800)
    seconds = time.monotonic() - start
    if expect.encode() not in out.stdout:
        raise SystemExit(f"{argv[0]}: no `{expect}` in its output:\n"
                         f"{out.stdout.decode(errors='replace')[-2000:]}")
    return seconds


def main():
    runs = int(os.environ.get("RUNS", "3"))
    smp = os.environ.get("SMP", "4")
    rounds = os.environ.get("ROUNDS", "20000000")
    guest = default_guest()
    work = tempfile.mkdtemp(prefix="rewind-smp-")
    initrd = initramfs(guest, work)
    workloads = {"boot": ("true", "exit status 0"),
                 "threads": (f"/threads {rounds}", "ran on cpus")}
    images = ["--bios", f"{guest}/fw_dynamic.bin", "--kernel", f"{guest}/Image",
              "--initrd", initrd]
    append = "console=ttyS0 rdinit=/test-init quiet cryptomgr.notests -- "
    machines = {
        "rewind run": lambda cmd: [REWIND, "run", "--no-pacing", "--smp", smp] + images +
        ["--append", append + cmd],
        "rewind record": lambda cmd: [REWIND, "record", "--no-pacing", "--smp", smp, "-o",
                                      os.path.join(work, "smp.rwd")] + images +
        ["--append", append + cmd],
        "qemu tcg": lambda cmd: ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-smp", smp,
                                 "-display", "none", "-serial", "stdio", "-monitor", "none"] +
        ["-bios", f"{guest}/fw_dynamic.bin", "-kernel", f"{guest}/Image", "-initrd", initrd,
         "-append", append + cmd],
    }
    times = {(w, m): [] for w in workloads for m in machines}
    for i in range(runs):
        for name, (cmd, expect) in workloads.items():
            for machine, argv in machines.items():
                times[(name, machine)].append(timed(argv(cmd), expect))
            print(f"{name} round {i + 1}/{runs}: " +
                  ", ".join(f"{m} {times[(name, m)][-1]:.2f} s" for m in machines), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in workloads:
        print(f"{name}: " + ", ".join(f"{m} {med[(name, m)]:.2f} s" for m in machines) +
              f"; rewind run/qemu {med[(name, 'rewind run')] / med[(name, 'qemu tcg')]:.2f}, "
              f"record/run {med[(name, 'rewind record')] / med[(name, 'rewind run')]:.3f}")
    own = {m: med[("threads", m)] - med[("boot", m)] for m in machines}
    print("threads alone (threads - boot): " +
          ", ".join(f"{m} {t:.2f} s" for m, t in own.items()) +
          f"; rewind run/qemu {own['rewind run'] / own['qemu tcg']:.2f}, "
          f"record/run {own['rewind record'] / own['rewind run']:.3f}")


if __name__ == "__main__":
    main()
