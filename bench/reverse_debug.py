#!/usr/bin/env python3
"""Reverse debugging speed: the default Debian boot recorded, then driven from gdb-multiarch.

From gdb (its Python API times each command): seek to 90% of the recording, then time
reverse-stepi and stepi there, reverse-continue back to the start (no breakpoints: a scan
of the whole recording), and `monitor seek` to random points. Also reverse-stepi right at a
checkpoint (the worst case: a whole checkpoint interval replayed) and the checkpoints' memory.

Targets (issue 5): reverse-stepi under 0.1 s typical and under 1 s at worst; any seek under
5 s; checkpoints within their budget. With QEMU=1, also runs QEMU's record/replay with
rrsnapshot under gdb for the same steps, with a timeout per command.

    bench/reverse_debug.py            # SKIP_BUILD=1 to reuse target/release/rewind
"""

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REWIND = os.path.join(ROOT, "target/release/rewind")
APPEND = "console=ttyS0 rdinit=/init quiet cryptomgr.notests rewind.poweroff"
CHECKPOINT_MEM = "1G"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.2)
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("the debug server did not listen")


GDB_TIMING = r'''
python
import json, random, time
def timed(cmd):
    start = time.monotonic()
    gdb.execute(cmd, to_string=True)
    return time.monotonic() - start
def icount():
    return int(gdb.execute("monitor icount", to_string=True).strip())
results = {}
end, spacing = %(end)d, %(spacing)d
target = end * 9 // 10
results["seek_90"] = timed("monitor seek %%d" %% target)
gdb.execute("maintenance flush register-cache")
results["reverse_stepi"] = [timed("reverse-stepi") for _ in range(20)]
results["stepi"] = [timed("stepi") for _ in range(20)]
# The worst case: right at a checkpoint, one step back replays a whole interval.
at = (target // spacing) * spacing
timed("monitor seek %%d" %% at)
gdb.execute("maintenance flush register-cache")
results["reverse_stepi_at_checkpoint"] = timed("reverse-stepi")
results["reverse_continue_to_start"] = timed("reverse-continue")
results["position_after_reverse_continue"] = icount()
rng = random.Random(7)
points = [rng.randrange(end) for _ in range(10)]
results["random_seeks"] = [timed("monitor seek %%d" %% p) for p in points]
checkpoints = gdb.execute("monitor checkpoints", to_string=True).split("\n")
results["checkpoints"] = [list(map(int, l.split())) for l in checkpoints if l.strip()]
print("RESULTS " + json.dumps(results))
end
'''


def main():
    guest = subprocess.run([os.path.join(ROOT, "scripts/fetch-guest")], check=True,
                           capture_output=True, text=True).stdout.strip()
    if not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="rewind-revbench-")
    rec = os.path.join(work, "boot.rwd")
    start = time.monotonic()
    subprocess.run([REWIND, "record", "-o", rec, "--no-pacing", "--append", APPEND],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    record_time = time.monotonic() - start
    info = json.loads(subprocess.run([REWIND, "inspect", "--json", rec], check=True,
                                     capture_output=True, text=True).stdout)
    end = info["instructions"]
    print(f"recorded the default boot: {end:,} instructions in {record_time:.2f} s")

    port = free_port()
    server = subprocess.Popen([REWIND, "debug", rec, "--gdb", f"127.0.0.1:{port}",
                               "--checkpoint-mem", CHECKPOINT_MEM],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        script = os.path.join(work, "timing.gdb")
        with open(script, "w") as f:
            f.write("set pagination off\nset confirm off\nset architecture riscv:rv64\n")
            f.write(f"target remote 127.0.0.1:{port}\n")
            f.write(GDB_TIMING % {"end": end, "spacing": 1 << 24})
            f.write("kill\n")
        out = subprocess.run(["gdb-multiarch", "-nx", "-batch", "-x", script],
                             capture_output=True, text=True, timeout=600)
    finally:
        server.kill()
        server.wait()
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULTS ")), None)
    if line is None:
        sys.exit("gdb printed no results:\n" + out.stdout + out.stderr)
    r = json.loads(line[len("RESULTS "):])
    ms = lambda v: f"{v * 1000:.1f} ms"
    print(f"seek to 90% ({end * 9 // 10:,}) from the start: {r['seek_90']:.2f} s  [target < 5 s]")
    rs = r["reverse_stepi"]
    print(f"reverse-stepi at 90%: median {ms(statistics.median(rs))}, max {ms(max(rs))}"
          f"  [target < 100 ms typical]")
    print(f"reverse-stepi right at a checkpoint (worst case): "
          f"{ms(r['reverse_stepi_at_checkpoint'])}  [target < 1 s]")
    st = r["stepi"]
    print(f"stepi at 90%: median {ms(statistics.median(st))}, max {ms(max(st))}")
    print(f"reverse-continue back to the start: {r['reverse_continue_to_start']:.2f} s "
          f"(stopped at instruction {r['position_after_reverse_continue']})")
    seeks = r["random_seeks"]
    print(f"monitor seek to 10 random points: median {ms(statistics.median(seeks))}, "
          f"max {ms(max(seeks))}  [target < 5 s]")
    cps = r["checkpoints"]
    total = sum(b for _, b in cps)
    print(f"checkpoints: {len(cps)}, holding {total / 2**20:.1f} MiB of RAM pages "
          f"(budget {CHECKPOINT_MEM})")


if __name__ == "__main__":
    main()
