#!/usr/bin/env python3
"""Bare-metal kernels, Rewind against QEMU 10 (`-icount shift=0`) side by side in one run.

Each kernel of tests/guest/bench/kernels.c (SHA-256, quicksort, pointer chasing over 256 KiB
and over 16 MiB, an LZ77 compressor, double-precision n-body) and the older compute program
run RUNS times on each machine, alternating. Every program is linked as ordinary programs
are, code and data on separate pages (checked here with objdump -h); every run's output must
equal a native build's (cc -DHOST). Prints each kernel's medians and ratio, and the geometric
mean of the ratios.

    bench/kernels.py              # RUNS=3; SKIP_BUILD=1 reuses target/release/rewind
    KERNELS=sha256,nbody bench/kernels.py
"""

import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
OUT = os.path.join(TARGET, "guest-bench")
REWIND = os.path.join(TARGET, "release", "rewind")
KERNELS = ["sha256", "sort", "chase_256k", "chase_16m", "lz", "nbody"]
PAGE = 4096


def sections(elf):
    """(name, start, end) of the allocated sections, from objdump -h."""
    text = subprocess.run(["riscv64-unknown-elf-objdump", "-h", elf], check=True,
                          capture_output=True, text=True).stdout
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[0].isdigit():
            name, size, vma = fields[1], int(fields[2], 16), int(fields[3], 16)
            if size and name in (".text", ".rodata", ".data", ".bss"):
                found.append((name, vma, vma + size))
    return found


def check_layout(elf):
    """Code (and read-only data) and writable data never share a page."""
    parts = sections(elf)
    code = [p for p in parts if p[0] in (".text", ".rodata")]
    data = [p for p in parts if p[0] in (".data", ".bss")]
    last_code_page = max((end - 1) // PAGE for _, _, end in code)
    first_data_page = min(start // PAGE for _, start, _ in data)
    if last_code_page >= first_data_page:
        sys.exit(f"{elf}: code and data share a page: {parts}")


def native_output(kernel):
    exe = os.path.join(OUT, f"host_{kernel}")
    src = os.path.join(ROOT, "tests/guest/bench",
                       "compute.c" if kernel == "compute" else "kernels.c")
    subprocess.run(["cc", "-DHOST", "-O2", "-ffp-contract=off", f"-DK_{kernel}", "-o", exe, src,
                    "-lm"], check=True)
    out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    # compute.c prints its phases and a checksum; kernels print one line.
    return [l for l in out.splitlines() if ": 0x" in l]


def timed(cmd):
    start = time.monotonic()
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return elapsed, done


def main():
    runs = int(os.environ.get("RUNS", "3"))
    kernels = os.environ.get("KERNELS", ",".join(KERNELS + ["compute"])).split(",")
    targets = [os.path.join(OUT, "compute.elf" if k == "compute" else f"k_{k}.elf")
               for k in kernels]
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "tests/guest"), f"OUT={OUT}"]
                   + targets, check=True)
    if not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "rewind"], cwd=ROOT,
                       check=True)
    print(f"{'kernel':<12} {'instructions':>14} {'rewind s':>9} {'qemu s':>9} {'ratio':>6} "
          f"{'rewind MIPS':>11}")
    ratios = []
    for kernel, elf in zip(kernels, targets):
        check_layout(elf)
        expected = native_output(kernel)
        times = {"rewind": [], "qemu": []}
        executed = None
        for _ in range(runs):
            elapsed, done = timed([REWIND, "run", "--bios", "none", "--kernel", elf,
                                   "--memory", "128M", "--stats"])
            times["rewind"].append(elapsed)
            executed = int(next(l.split()[1] for l in done.stderr.splitlines()
                                if l.startswith("executed:")))
            outputs = [done.stdout]
            elapsed, done = timed(["qemu-system-riscv64", "-M", "virt", "-bios", "none",
                                   "-icount", "shift=0", "-display", "none", "-serial", "stdio",
                                   "-monitor", "none", "-m", "128M", "-kernel", elf])
            times["qemu"].append(elapsed)
            outputs.append(done.stdout)
            for machine, out in zip(["rewind", "qemu"], outputs):
                got = [l for l in out.splitlines() if ": 0x" in l and "instret" not in l]
                if got != expected:
                    sys.exit(f"{kernel} on {machine} printed {got}, natively {expected}")
        rewind, qemu = (statistics.median(times[m]) for m in ("rewind", "qemu"))
        ratios.append(rewind / qemu)
        print(f"{kernel:<12} {executed:>14,} {rewind:>9.3f} {qemu:>9.3f} {rewind / qemu:>6.2f} "
              f"{executed / rewind / 1e6:>11.1f}", flush=True)
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"geometric mean of rewind/qemu (medians of {runs}): {geomean:.2f}; "
          f"highest {max(ratios):.2f}  [targets: mean <= 1.0, none above 1.5; < 1 = Rewind faster]")


if __name__ == "__main__":
    main()
