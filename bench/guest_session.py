"""A timed command in the default Debian guest, shared by the device benchmarks: boot, run
setup commands, time one command from the end of its typing to the next prompt (host wall
time: the guest's own clock is virtual under Rewind), power off."""

import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REWIND = os.path.join(ROOT, "target/release/rewind")
APPEND = "console=ttyS0 rdinit=/init quiet cryptomgr.notests"
PROMPT = b"guest# "
CURSOR_QUERY = b"\x1b[6n"
CURSOR_ANSWER = b"\x1b[1;8R"


def default_guest():
    """The default guest's folder (fetched if needed); builds Rewind unless SKIP_BUILD."""
    guest = subprocess.run([os.path.join(ROOT, "scripts/fetch-guest")], check=True,
                           capture_output=True, text=True).stdout.strip()
    if not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return guest


def images(guest):
    return ["--bios", f"{guest}/fw_dynamic.bin", "--kernel", f"{guest}/Image",
            "--initrd", f"{guest}/initramfs.cpio.gz", "--append", APPEND]


def qemu(guest, *extra):
    return ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic",
            "-global", "virtio-mmio.force-legacy=false",
            "-bios", f"{guest}/fw_dynamic.bin", "-kernel", f"{guest}/Image",
            "-initrd", f"{guest}/initramfs.cpio.gz", "-append", APPEND, *extra]


def session(argv, setup, timed, expect):
    """Boots `argv`, types each `setup` command, then times `timed`; the console must show
    `expect` afterwards. Returns the seconds taken."""
    return session_stats(argv, setup, timed, expect)[0]


def session_stats(argv, setup, timed, expect):
    """As `session`, and also the process's peak resident memory: (seconds, bytes)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    out = bytearray()
    cond = threading.Condition()
    typing = threading.Lock()

    def pump():
        answered = 0
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            with cond:
                out.extend(chunk)
                cond.notify_all()
                asked = out.count(CURSOR_QUERY)
            # Busybox's line editor asks where the cursor is after each prompt and takes
            # what is typed meanwhile for the answer: answer as a terminal does.
            while answered < asked:
                answered += 1
                with typing:
                    try:
                        proc.stdin.write(CURSOR_ANSWER)
                        proc.stdin.flush()
                    except (BrokenPipeError, ValueError):
                        return

    threading.Thread(target=pump, daemon=True).start()
    prompts = 0

    def type_line(line):
        # In small pieces, as a person types: QEMU's rr=record serial input loses bytes that
        # come faster (seen: whole 8- and 16-byte runs of a typed line dropped).
        data = line.encode() + b"\n"
        for i in range(0, len(data), 4):
            with typing:
                proc.stdin.write(data[i:i + 4])
                proc.stdin.flush()
            time.sleep(0.02)

    def command(line):
        nonlocal prompts, start
        time.sleep(0.3)
        type_line(line)
        # Timed from the end of typing, so that the pace of typing costs no machine anything.
        start = time.monotonic()
        prompts += 1
        wait_prompts(prompts + 1)

    def wait_prompts(n):
        with cond:
            if not cond.wait_for(lambda: out.count(PROMPT) >= n, timeout=1800):
                proc.kill()
                sys.exit("no prompt:\n" + out.decode(errors="replace"))

    start = 0.0
    wait_prompts(1)
    for line in setup:
        command(line)
    command(timed)
    elapsed = time.monotonic() - start
    with typing:
        proc.stdin.write(b"poweroff -f\n")
        proc.stdin.flush()
    deadline = time.monotonic() + 60
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("the machine did not power off")
        time.sleep(0.05)
    if expect.encode() not in out:
        sys.exit(f"{timed!r} did not show {expect!r}:\n" + out.decode(errors="replace"))
    return elapsed, usage.ru_maxrss * 1024
