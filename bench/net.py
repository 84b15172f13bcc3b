#!/usr/bin/env python3
"""Network throughput: `wget` of 50 MiB from an HTTP server on host loopback into the default
Debian guest over user-mode networking (libslirp; 10.0.2.2 is the host), under Rewind (run and
record) and under QEMU (plain TCG, virtio-net on virtio-mmio version 2), side by side. Also
the size of the recording. Prints ratios.

    bench/net.py             # RUNS=3; SKIP_BUILD=1 reuses target/release/rewind
"""

import http.server
import json
import os
import statistics
import subprocess
import tempfile
import threading

from guest_session import REWIND, default_guest, images, qemu, session

SIZE = 50 << 20
SETUP = ["ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up", "route add default gw 10.0.2.2"]


def serve(folder):
    """A threaded HTTP server on loopback for `folder`; returns its port."""
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=folder)  # noqa
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main():
    runs = int(os.environ.get("RUNS", "3"))
    guest = default_guest()
    work = tempfile.mkdtemp(prefix="rewind-net-")
    with open(os.path.join(work, "file"), "wb") as f:
        f.write(os.urandom(SIZE))
    port = serve(work)
    wget = f"wget -O /dev/null http://10.0.2.2:{port}/file"
    recording = os.path.join(work, "net.rwd")
    rewind_run = [REWIND, "run", "--netdev", "user"] + images(guest)
    rewind_record = [REWIND, "record", "-o", recording, "--netdev", "user"] + images(guest)
    qemu_run = qemu(guest, "-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0")
    times = {"rewind run": [], "rewind record": [], "qemu": []}
    for i in range(runs):
        for name, argv in [("rewind run", rewind_run), ("rewind record", rewind_record),
                           ("qemu", qemu_run)]:
            times[name].append(session(argv, SETUP, wget, "100%"))
        print(f"round {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in times:
        print(f"{k:<14} wget of 50 MiB: {med[k]:.2f} s ({50 / med[k]:.1f} MiB/s)")
    print(f"ratio rewind/qemu (time): {med['rewind run'] / med['qemu']:.2f}")
    print(f"recording overhead: {(med['rewind record'] / med['rewind run'] - 1) * 100:+.1f}%")
    info = json.loads(subprocess.run([REWIND, "inspect", "--json", recording], check=True,
                                     capture_output=True, text=True).stdout)
    print(f"recorded events: {info['event_bytes'] / (1 << 20):.1f} MiB in "
          f"{info['events'].get('net', 0)} frames, for {SIZE >> 20} MiB received "
          f"(whole file {os.path.getsize(recording) / (1 << 20):.1f} MiB with the boot images)")


if __name__ == "__main__":
    main()
