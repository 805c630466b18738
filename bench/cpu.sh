#!/usr/bin/env bash
# CPU benchmark: `crema time` (forward + backward, TRAIN phase, float32, RAYON_NUM_THREADS=2)
# on the nets Caffe was timed on (../shared/fixtures/caffe/timing), against baselines measured
# in the same run, interleaved run by run so that load on a shared machine hits all of them:
#   - the arithmetic floor: FLOPs of convolutions and inner products per forward-backward
#     (`crema time --flops`, backward = 2 x forward) over the GEMM rate crema gets from the
#     `gemm` crate on the same threads (examples/sgemm_rate.rs, 2048^3, best of 5);
#   - PyTorch CPU, NCHW and channels_last (bench/pytorch.sh), when torch can be imported
#     ($CREMA_TORCH_PYTHON or python3; see bench/pytorch.sh).
# Prints one line per measurement, then a table: medians over the runs with [min-max], and the
# ratios (median of the per-run ratios; < 1 means crema is faster).
# Usage: bench/cpu.sh [runs] [net...]   (default 3 runs, all three nets)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
shift || true
NETS=("$@")
[ ${#NETS[@]} -gt 0 ] || NETS=(lenet cifar10_quick resnet20_cifar)
TIMING=${CREMA_TIMING_DIR:-${CREMA_SHARED:-../shared}/fixtures/caffe/timing}
[ -d "$TIMING" ] || { echo "no timing nets in $TIMING (set CREMA_SHARED or CREMA_TIMING_DIR)" >&2; exit 2; }
cargo build --release --quiet --bin crema --example sgemm_rate
BIN=target/release/crema
RATE=target/release/examples/sgemm_rate
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
export GLOG_minloglevel=0
THREADS=$RAYON_NUM_THREADS

iters() { case "$1" in resnet20_cifar) echo 5 ;; *) echo 20 ;; esac; }

TORCH=1
bench/pytorch.sh --help >/dev/null 2>&1 || TORCH=0
[ $TORCH = 1 ] || echo "PyTorch columns left out: $(bench/pytorch.sh 2>&1 | head -1)"

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
for r in $(seq 1 "$RUNS"); do
  read -r _ _ gf _ < <("$RATE" 2048 5)
  echo "run $r sgemm_gflops $gf" | tee -a "$LOG"
  for net in "${NETS[@]}"; do
    out=$("$BIN" time --flops --model "$TIMING/$net.prototxt" --iterations "$(iters "$net")" 2>&1) || true
    ms=$(sed -n 's/.*Average Forward-Backward: \([0-9.e+-]*\) ms\./\1/p' <<<"$out")
    flops=$(sed -n 's/.*FLOPs per forward-backward: \([0-9]*\).*/\1/p' <<<"$out")
    [ -n "$ms" ] && [ -n "$flops" ] || { echo "crema time failed on $net:"; echo "$out" | tail -5; exit 1; }
    echo "run $r crema $net $ms $flops" | tee -a "$LOG"
    if [ $TORCH = 1 ]; then
      bench/pytorch.sh --net "$net" --threads "$THREADS" 2>/dev/null \
        | sed "s/^pytorch/run $r pytorch/" | tee -a "$LOG"
    fi
  done
done

echo
echo "threads $THREADS, $RUNS runs; floor = FLOPs / gemm-crate sgemm rate of the same run"
awk -v torch=$TORCH '
  function median(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function lo(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] < m) m = a[i]; return m }
  function hi(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }
  $3 == "sgemm_gflops" { rate[$2] = $4; rates = rates " " $4 }
  $3 == "crema" { if (!($4 in seen)) { seen[$4] = 1; order[++nn] = $4 }
                  crema[$4] = crema[$4] " " $5; flops[$4] = $6
                  floor_ms = $6 / (rate[$2] * 1e9) * 1e3
                  floors[$4] = floors[$4] " " floor_ms; rfloor[$4] = rfloor[$4] " " $5 / floor_ms
                  run_ms[$2, $4] = $5 }
  $3 == "pytorch" { t[$4, $5] = t[$4, $5] " " $6
                    if ($5 == "channels_last") rcl[$4] = rcl[$4] " " run_ms[$2, $4] / $6
                    else rnchw[$4] = rnchw[$4] " " run_ms[$2, $4] / $6 }
  END {
    printf "sgemm 2048^3: %.1f GFLOP/s median [%.1f-%.1f]\n", median(rates), lo(rates), hi(rates)
    printf "%-15s %8s %19s %8s %9s", "net", "GFLOP", "crema ms [min-max]", "floor", "x floor"
    if (torch) printf " %19s %9s %19s %9s", "torch NCHW ms", "x NCHW", "torch CL ms", "x CL"
    printf "\n"
    for (i = 1; i <= nn; i++) {
      n = order[i]
      printf "%-15s %8.2f %7.1f [%4.1f-%4.1f] %8.1f %8.2fx", n, flops[n] / 1e9, median(crema[n]), lo(crema[n]), hi(crema[n]), median(floors[n]), median(rfloor[n])
      if (torch) printf " %7.1f [%4.1f-%4.1f] %8.2fx %7.1f [%4.1f-%4.1f] %8.2fx", \
          median(t[n, "nchw"]), lo(t[n, "nchw"]), hi(t[n, "nchw"]), median(rnchw[n]), \
          median(t[n, "channels_last"]), lo(t[n, "channels_last"]), hi(t[n, "channels_last"]), median(rcl[n])
      printf "\n"
    }
  }' "$LOG"
