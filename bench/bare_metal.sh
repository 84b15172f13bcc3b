#!/usr/bin/env bash
# Bare-metal speed: Rewind against QEMU (TCG, -icount shift=0) on the compute benchmark
# tests/guest/bench/compute.c (hashing, merge sort, pointer chasing; ~1.1e9 instructions).
#
#   bench/bare_metal.sh            # RUNS=3 runs of each, prints best and median wall times
#   RUNS=5 bench/bare_metal.sh
#   SKIP_BUILD=1 bench/bare_metal.sh   # reuse the existing release binary
#
# Needs riscv64-unknown-elf-gcc, make, python3 and qemu-system-riscv64.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$PWD/$TARGET_DIR" ;; esac
OUT="$TARGET_DIR/guest-bench"
REWIND="$TARGET_DIR/release/rewind"
ELF="$OUT/compute.elf"

make -s -C tests/guest OUT="$OUT" "$ELF" >&2
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet --bin rewind >&2
fi
[ -x "$REWIND" ] || { echo "no $REWIND: build with cargo build --release" >&2; exit 1; }
command -v qemu-system-riscv64 >/dev/null || { echo "install qemu-system-misc" >&2; exit 1; }

now() { date +%s.%N; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run_one NAME CMD...: runs once, appends the wall time to $tmp/NAME.times
run_one() {
    local name=$1
    shift
    local t0 t1 status=0
    t0=$(now)
    "$@" </dev/null >"$tmp/$name.out" 2>"$tmp/$name.err" || status=$?
    t1=$(now)
    if [ "$status" -ne 0 ]; then
        echo "$name failed with status $status:" >&2
        cat "$tmp/$name.out" "$tmp/$name.err" >&2
        exit 1
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >>"$tmp/$name.times"
}

for ((i = 1; i <= RUNS; i++)); do
    run_one rewind "$REWIND" run --bios none --kernel "$ELF" --memory 128M --stats
    run_one qemu qemu-system-riscv64 -M virt -bios none -icount shift=0 -display none \
        -serial stdio -monitor none -m 128M -kernel "$ELF"
    echo "run $i/$RUNS: rewind $(tail -n1 "$tmp/rewind.times") s, qemu $(tail -n1 "$tmp/qemu.times") s" >&2
done

if ! cmp -s "$tmp/rewind.out" "$tmp/qemu.out"; then
    echo "outputs differ:" >&2
    diff "$tmp/rewind.out" "$tmp/qemu.out" >&2 || true
    exit 1
fi

stat() { # best and median of a file of numbers
    sort -n "$1" | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f %.3f\n", v[1], m }'
}
read -r r_best r_med < <(stat "$tmp/rewind.times")
read -r q_best q_med < <(stat "$tmp/qemu.times")
insns=$(awk '/^executed:/ { print $2 }' "$tmp/rewind.err")

echo "compute benchmark: $(grep checksum "$tmp/rewind.out")"
echo "instructions (rewind --stats): $insns"
printf '%-8s best %8.3f s   median %8.3f s   %8.1f MIPS (best)\n' rewind "$r_best" "$r_med" \
    "$(awk -v n="$insns" -v t="$r_best" 'BEGIN { print n / t / 1e6 }')"
printf '%-8s best %8.3f s   median %8.3f s   %8.1f MIPS (best)\n' qemu "$q_best" "$q_med" \
    "$(awk -v n="$insns" -v t="$q_best" 'BEGIN { print n / t / 1e6 }')"
awk -v r="$r_best" -v q="$q_best" -v rm="$r_med" -v qm="$q_med" \
    'BEGIN { printf "ratio rewind/qemu: %.2f (best), %.2f (median)  [< 1 means Rewind is faster]\n", r / q, rm / qm }'
