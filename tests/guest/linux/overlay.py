#!/usr/bin/env python3
"""Writes a cpio archive (newc) of executable files at the root of an initramfs:
overlay.py OUT FILE...  Appended to another initramfs at a 4-byte boundary, the kernel
unpacks it after the first, adding these files."""

import os
import stat
import sys


def newc(files):
    out = bytearray()

    def entry(ino, name, mode, data):
        name = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0)
        out.extend(b"070701" + "".join("%08X" % f for f in fields).encode() + name)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, path in enumerate(files, start=1000):
        with open(path, "rb") as f:
            entry(ino, os.path.basename(path), stat.S_IFREG | 0o755, f.read())
    entry(0, "TRAILER!!!", 0, b"")
    return bytes(out)


if __name__ == "__main__":
    with open(sys.argv[1] + ".tmp", "wb") as f:
        f.write(newc(sys.argv[2:]))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
