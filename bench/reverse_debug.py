#!/usr/bin/env python3
"""Reverse debugging speed: a Debian session recorded, then driven from gdb-multiarch.

The session (about 3e9 instructions, issue 12's size): the default guest boots to its shell
and a driver types `dd if=/dev/zero bs=1M count=28 | sha256sum; poweroff -f` at the prompt.

From gdb (its Python API times each command): seek to 90% of the recording, then time
reverse-stepi and stepi there, reverse-continue back to the start (no breakpoints: a scan
of the whole recording), and `monitor seek` to random points. Also reverse-stepi right at a
checkpoint (the worst case: a whole checkpoint interval replayed) and the checkpoints' memory.

Targets (issue 5): reverse-stepi under 0.1 s typical and under 1 s at worst; any seek under
5 s; checkpoints within their budget. Then QEMU 10 records the same boot
(-icount shift=0,rr=record,rrsnapshot=init with a qcow2 drive for the snapshot, as its docs
say) and replays it under the same gdb procedure (its seek is the `replay_seek` monitor
command); each answer is printed as it comes, and QEMU gets QEMU_TIMEOUT seconds (120) in all.
QEMU=0 skips it.

With SMP=N the session runs on N harts, and gdb's steps are those of thread 1 (hart 0): its
reverse-stepi goes back to hart 0's previous instruction, however far back the other harts
ran. QEMU refuses to record more than one CPU; the bench shows what it says.

    bench/reverse_debug.py            # SKIP_BUILD=1 to reuse target/release/rewind
    SMP=4 bench/reverse_debug.py
"""

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from record_replay import PROMPT, executed, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REWIND = os.path.join(ROOT, "target/release/rewind")
APPEND = "console=ttyS0 rdinit=/init quiet cryptomgr.notests"
WORKLOAD = b"dd if=/dev/zero bs=1M count=28 2>/dev/null | sha256sum; poweroff -f\n"
MIN_POSITION = 3_000_000_000
CHECKPOINT_MEM = "1G"
SMP = int(os.environ.get("SMP", "1"))


def type_workload(proc, out, seen):
    """Types the workload once the shell's prompt shows."""
    with seen:
        if not seen.wait_for(lambda: PROMPT in out, timeout=300):
            proc.kill()
            sys.exit("no prompt within 300 s:\n" + out.decode(errors="replace"))
    # busybox asks the terminal for the cursor after its prompt: let that pass.
    time.sleep(0.3)
    proc.stdin.write(WORKLOAD)
    proc.stdin.flush()


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
    # The position: the first line (then, with several harts, each hart's count).
    return int(gdb.execute("monitor icount", to_string=True).split()[0])
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


QEMU_PROCEDURE = r'''
python
import sys, time
def timed(label, cmd):
    start = time.monotonic()
    said = gdb.execute(cmd, to_string=True).strip().replace("\n", " ")
    print("QEMU %%s %%.3f %%s" %% (label, time.monotonic() - start, said))
    sys.stdout.flush()
timed("stepi", "stepi")
timed("reverse-stepi", "reverse-stepi")
timed("seek_90", "monitor replay_seek %(target)d")
timed("reverse-stepi_at_90", "reverse-stepi")
timed("stepi_at_90", "stepi")
timed("reverse-continue_to_start", "reverse-continue")
end
'''


def qemu_procedure(guest, work, end):
    """QEMU's answers to the same procedure, as far as it answers within QEMU_TIMEOUT."""
    limit = float(os.environ.get("QEMU_TIMEOUT", "120"))
    drive = os.path.join(work, "rr-snapshot.qcow2")
    log = os.path.join(work, "boot.qrr")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", drive, "1M"], check=True)
    qemu = ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic", "-net", "none",
            "-bios", f"{guest}/fw_dynamic.bin", "-kernel", f"{guest}/Image",
            "-initrd", f"{guest}/initramfs.cpio.gz", "-append", APPEND,
            "-drive", f"file={drive},if=none,id=rr"]
    rr = f"shift=0,rrfile={log},rrsnapshot=init"
    timed(qemu + ["-icount", "rr=record," + rr], stdin=subprocess.PIPE, driver=type_workload)
    port = free_port()
    server = subprocess.Popen(qemu + ["-icount", "rr=replay," + rr, "-S", "-gdb",
                                      f"tcp:127.0.0.1:{port}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    answers = {}
    try:
        wait_listening(port)
        script = os.path.join(work, "qemu.gdb")
        with open(script, "w") as f:
            f.write("set pagination off\nset confirm off\nset architecture riscv:rv64\n")
            f.write(f"set remotetimeout {int(limit)}\ntarget remote 127.0.0.1:{port}\n")
            f.write(QEMU_PROCEDURE % {"target": end * 9 // 10})
        gdb = subprocess.Popen(["gdb-multiarch", "-nx", "-batch", "-x", script],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            out, _ = gdb.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            gdb.kill()
            out, _ = gdb.communicate()
        for line in out.splitlines():
            if line.startswith("QEMU "):
                _, label, seconds, said = (line.split(maxsplit=3) + [""])[:4]
                answers[label] = (float(seconds), said)
    finally:
        server.kill()
        server.wait()
    return answers, limit


def main():
    guest = subprocess.run([os.path.join(ROOT, "scripts/fetch-guest")], check=True,
                           capture_output=True, text=True).stdout.strip()
    if not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="rewind-revbench-")
    rec = os.path.join(work, "boot.rwd")
    # Paced, as a user records: unpaced, the idle wait at the prompt would jump virtual time
    # (and the position) far ahead.
    record_time, _, _, err = timed([REWIND, "record", "-o", rec, "--stats", "--append", APPEND,
                                    "--smp", str(SMP)],
                                   stdin=subprocess.PIPE, driver=type_workload)
    info = json.loads(subprocess.run([REWIND, "inspect", "--json", rec], check=True,
                                     capture_output=True, text=True).stdout)
    end = info["position"]
    print(f"recorded the session: position {end:,} ({executed(err):,} instructions executed) "
          f"in {record_time:.2f} s")
    if end < MIN_POSITION:
        print(f"note: the session is shorter than the {MIN_POSITION:,} instructions it should be")

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
    print(f"seek to 90% ({end * 9 // 10:,}) from the start: {r['seek_90']:.2f} s  [target < 4 s]")
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
    if os.environ.get("QEMU", "1") == "1" and SMP > 1:
        refused = subprocess.run(["qemu-system-riscv64", "-M", "virt", "-smp", str(SMP),
                                  "-nographic", "-icount", "shift=0,rr=record,rrfile=/dev/null",
                                  "-bios", "none"],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        said = (refused.stderr.strip().splitlines() or ["(nothing)"])[-1]
        print(f"QEMU 10 with -smp {SMP}: {said}")
    elif os.environ.get("QEMU", "1") == "1" and not shutil.which("qemu-img"):
        print("QEMU: skipped (its snapshot needs qemu-img: apt install qemu-utils)")
    elif os.environ.get("QEMU", "1") == "1":
        answers, limit = qemu_procedure(guest, work, end)
        print(f"QEMU 10 (rr=replay, rrsnapshot=init), same procedure, {limit:.0f} s allowed:")
        for label in ["stepi", "reverse-stepi", "seek_90", "reverse-stepi_at_90",
                      "stepi_at_90", "reverse-continue_to_start"]:
            if label in answers:
                seconds, said = answers[label]
                print(f"  {label}: {seconds * 1000:.1f} ms" + (f" ({said[:100]})" if said else ""))
            else:
                print(f"  {label}: no answer")


if __name__ == "__main__":
    main()
