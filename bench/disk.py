#!/usr/bin/env python3
"""Disk throughput: `dd` of 64 MiB from a virtio-blk disk in the default Debian guest, under
Rewind (run and record) and under QEMU (plain TCG, virtio-mmio version 2), side by side.

The time measured is the host's wall time from typing the command to the next prompt (the
guest's own clock is virtual in Rewind). Prints ratios.

    bench/disk.py            # RUNS=3; SKIP_BUILD=1 reuses target/release/rewind
"""

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REWIND = os.path.join(ROOT, "target/release/rewind")
APPEND = "console=ttyS0 rdinit=/init quiet cryptomgr.notests"
PROMPT = b"guest# "
DD = "dd if=/dev/vda of=/dev/null bs=1M count=64"


def session(argv):
    """Boots, times the dd from typing it to the next prompt, powers off."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    out = bytearray()
    cond = threading.Condition()

    def pump():
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            with cond:
                out.extend(chunk)
                cond.notify_all()

    threading.Thread(target=pump, daemon=True).start()

    def wait_prompts(n):
        with cond:
            if not cond.wait_for(lambda: out.count(PROMPT) >= n, timeout=300):
                proc.kill()
                sys.exit("no prompt:\n" + out.decode(errors="replace"))

    wait_prompts(1)
    time.sleep(0.3)
    start = time.monotonic()
    proc.stdin.write(DD.encode() + b"\n")
    proc.stdin.flush()
    wait_prompts(2)
    elapsed = time.monotonic() - start
    proc.stdin.write(b"poweroff -f\n")
    proc.stdin.flush()
    proc.wait(timeout=60)
    if b"64+0 records in" not in out:
        sys.exit("dd did not read 64 MiB:\n" + out.decode(errors="replace"))
    return elapsed


def main():
    runs = int(os.environ.get("RUNS", "3"))
    guest = subprocess.run([os.path.join(ROOT, "scripts/fetch-guest")], check=True,
                           capture_output=True, text=True).stdout.strip()
    if not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="rewind-disk-")
    disk = os.path.join(work, "disk.img")
    with open(disk, "wb") as f:
        f.write(os.urandom(128 << 20))
    images = ["--bios", f"{guest}/fw_dynamic.bin", "--kernel", f"{guest}/Image",
              "--initrd", f"{guest}/initramfs.cpio.gz", "--append", APPEND]
    rewind_run = [REWIND, "run", "--drive", f"{disk},readonly=on"] + images
    rewind_record = [REWIND, "record", "-o", os.path.join(work, "disk.rwd"),
                     "--drive", f"{disk},readonly=on"] + images
    qemu = ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic",
            "-global", "virtio-mmio.force-legacy=false",
            "-bios", f"{guest}/fw_dynamic.bin", "-kernel", f"{guest}/Image",
            "-initrd", f"{guest}/initramfs.cpio.gz", "-append", APPEND,
            "-drive", f"file={disk},if=none,format=raw,id=d,readonly=on",
            "-device", "virtio-blk-device,drive=d"]
    times = {"rewind run": [], "rewind record": [], "qemu": []}
    for i in range(runs):
        times["rewind run"].append(session(rewind_run))
        times["rewind record"].append(session(rewind_record))
        times["qemu"].append(session(qemu))
        print(f"round {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    mib_s = {k: 64 / v for k, v in med.items()}
    for k in times:
        print(f"{k:<14} dd of 64 MiB: {med[k]:.2f} s ({mib_s[k]:.0f} MiB/s)")
    print(f"ratio rewind/qemu (time): {med['rewind run'] / med['qemu']:.2f}")
    print(f"recording overhead: {(med['rewind record'] / med['rewind run'] - 1) * 100:+.1f}%")


if __name__ == "__main__":
    main()
