#!/usr/bin/env bash
# Boot speed: the default Debian guest booted to its init, which powers off at once
# (rewind.poweroff on the command line), under Rewind and under QEMU (plain TCG) side by side.
#
#   bench/boot.sh              # RUNS=3 runs of each; best and median wall times, and the ratio
#   SKIP_BUILD=1 bench/boot.sh # reuse target/release/rewind
#   SMP=4 bench/boot.sh        # N harts on both (QEMU -smp N: plain TCG, one host thread per
#                              # hart); Rewind with one hart runs alongside, for the cost of N
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SMP=${SMP:-1}
guest=$(scripts/fetch-guest)
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
REWIND=target/release/rewind
command -v qemu-system-riscv64 >/dev/null || { echo "install qemu-system-misc" >&2; exit 1; }
APPEND="console=ttyS0 rdinit=/init quiet cryptomgr.notests rewind.poweroff"

now() { date +%s.%N; }
run_rewind() {
    $REWIND run --no-pacing --smp "$1" --append "$APPEND" </dev/null >/dev/null
}
run_qemu() {
    qemu-system-riscv64 -M virt -m 512M -smp "$SMP" -display none -serial stdio -monitor none \
        -bios "$guest/fw_dynamic.bin" -kernel "$guest/Image" -initrd "$guest/initramfs.cpio.gz" \
        -append "$APPEND" </dev/null >/dev/null
}

declare -a rw qm r1
for i in $(seq "$RUNS"); do
    t0=$(now); run_rewind "$SMP"; t1=$(now); run_qemu; t2=$(now)
    rw+=("$(echo "$t1 - $t0" | bc -l)"); qm+=("$(echo "$t2 - $t1" | bc -l)")
    if [ "$SMP" -gt 1 ]; then
        t3=$(now); run_rewind 1; r1+=("$(echo "$(now) - $t3" | bc -l)")
        printf 'run %d/%d: rewind %.3f s (one hart: %.3f s), qemu %.3f s\n' "$i" "$RUNS" \
            "${rw[-1]}" "${r1[-1]}" "${qm[-1]}"
    else
        printf 'run %d/%d: rewind %.3f s, qemu %.3f s\n' "$i" "$RUNS" "${rw[-1]}" "${qm[-1]}"
    fi
done
python3 - "$SMP" "${rw[*]}" "${qm[*]}" "${r1[*]:-}" <<'PY'
import statistics, sys
smp = int(sys.argv[1])
rw = [float(x) for x in sys.argv[2].split()]
qm = [float(x) for x in sys.argv[3].split()]
print("rewind   best %7.3f s   median %7.3f s   (%d harts)" % (min(rw), statistics.median(rw), smp))
print("qemu     best %7.3f s   median %7.3f s" % (min(qm), statistics.median(qm)))
print("ratio rewind/qemu: %.2f (best), %.2f (median)  [target (issue 12): <= 1.0; < 1 = Rewind faster]" % (
    min(rw) / min(qm), statistics.median(rw) / statistics.median(qm)))
if smp > 1:
    r1 = [float(x) for x in sys.argv[4].split()]
    print("rewind with %d harts / with one: %.2f (medians)  [target (issue 14): <= 1.3]" % (
        smp, statistics.median(rw) / statistics.median(r1)))
PY
