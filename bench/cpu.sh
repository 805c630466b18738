#!/usr/bin/env bash
# CPU benchmark: `crema time` (forward + backward, TRAIN phase, 2 threads) on the nets Caffe was
# timed on, next to Caffe 1.0's figures from ../shared/fixtures/caffe/timing/timing_table.md
# (same class of 2-core machine, OpenBLAS 2 threads, best of 3). Prints a table with ratios.
# Usage: bench/cpu.sh [runs]   (run on an idle machine; figures swing 15-50% otherwise)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
TIMING=${CREMA_TIMING_DIR:-../shared/fixtures/caffe/timing}
cargo build --release --quiet
BIN=target/release/crema
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
export GLOG_minloglevel=0

caffe_ms() { # net -> Caffe best-of-3 ms from the table
  case "$1" in
    lenet) grep -m1 '^| LeNet' "$TIMING/timing_table.md" ;;
    cifar10_quick) grep -m1 '^| CIFAR-10 quick' "$TIMING/timing_table.md" ;;
    resnet20_cifar) grep -m1 '^| ResNet-20' "$TIMING/timing_table.md" ;;
  esac | awk -F'|' '{print $3}' | sed 's/ ms.*//; s/ //g'
}
iters() { case "$1" in resnet20_cifar) echo 5 ;; *) echo 20 ;; esac; }

printf "%-16s %10s %12s %12s %10s\n" net run crema_ms caffe_ms speedup
for net in lenet cifar10_quick resnet20_cifar; do
  c=$(caffe_ms "$net")
  for r in $(seq 1 "$RUNS"); do
    ms=$("$BIN" time --model "$TIMING/$net.prototxt" --iterations "$(iters "$net")" 2>&1 \
      | sed -n 's/.*Average Forward-Backward: \([0-9.e+-]*\) ms\./\1/p')
    printf "%-16s %10s %12.2f %12.2f %9.2fx\n" "$net" "$r" "$ms" "$c" "$(echo "$c / $ms" | bc -l)"
  done
done
