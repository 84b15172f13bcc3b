#!/usr/bin/env bash
# Boot speed: the default Debian guest booted to its init, which powers off at once
# (rewind.poweroff on the command line), under Rewind and under QEMU (plain TCG) side by side.
#
#   bench/boot.sh              # RUNS=3 runs of each; best and median wall times, and the ratio
#   SKIP_BUILD=1 bench/boot.sh # reuse target/release/rewind
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
guest=$(scripts/fetch-guest)
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
REWIND=target/release/rewind
command -v qemu-system-riscv64 >/dev/null || { echo "install qemu-system-misc" >&2; exit 1; }
APPEND="console=ttyS0 rdinit=/init quiet cryptomgr.notests rewind.poweroff"

now() { date +%s.%N; }
run_rewind() {
    $REWIND run --no-pacing --append "$APPEND" </dev/null >/dev/null
}
run_qemu() {
    qemu-system-riscv64 -M virt -m 512M -display none -serial stdio -monitor none \
        -bios "$guest/fw_dynamic.bin" -kernel "$guest/Image" -initrd "$guest/initramfs.cpio.gz" \
        -append "$APPEND" </dev/null >/dev/null
}

declare -a rw qm
for i in $(seq "$RUNS"); do
    t0=$(now); run_rewind; t1=$(now); run_qemu; t2=$(now)
    rw+=("$(echo "$t1 - $t0" | bc -l)"); qm+=("$(echo "$t2 - $t1" | bc -l)")
    printf 'run %d/%d: rewind %.3f s, qemu %.3f s\n' "$i" "$RUNS" "${rw[-1]}" "${qm[-1]}"
done
python3 - "${rw[*]}" "${qm[*]}" <<'PY'
import statistics, sys
rw = [float(x) for x in sys.argv[1].split()]
qm = [float(x) for x in sys.argv[2].split()]
print("rewind   best %7.3f s   median %7.3f s" % (min(rw), statistics.median(rw)))
print("qemu     best %7.3f s   median %7.3f s" % (min(qm), statistics.median(qm)))
print("ratio rewind/qemu: %.2f (best), %.2f (median)  [target (issue 12): <= 1.0; < 1 = Rewind faster]" % (
    min(rw) / min(qm), statistics.median(rw) / statistics.median(qm)))
PY
