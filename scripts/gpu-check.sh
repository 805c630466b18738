#!/usr/bin/env bash
# The one script a lent GPU machine runs (issue #6): everything that can only be checked on a
# GPU, within 8 minutes, ending with a summary table (the last lines of the output, which the
# device tool returns).
#
# The machine has no Rust toolchain and no network, so build here first and carry the result:
#
#   scripts/gpu-build.sh            # release binary, harness test binaries, libs, fixtures
#                                   # -> .gpu/bundle.tar.gz
#   # device tool: command "bash scripts/gpu-check.sh", carry [".gpu"], timeout_s 600
#
# Then add the summary table to docs/gpu-runs.md (date, card, results).
#
# Steps (each under a timeout; all of them under one deadline, so the script ends in time):
#   environment   glibc there (the binaries were linked against ours: BUILD.txt), nvidia-smi
#   device_query  crema device_query
#   kernels       compile every kernel for the device and load it (then again from the cache)
#   selftest      crema selftest --gpu 0: every layer op and solver update against the CPU
#   fixtures      the Caffe layer cases, training variants and frozen fixture on the GPU
#                 (the harnesses' GPU variants; a variant that says SKIPPED fails here)
#   time_*        crema time on the timing nets, GPU and CPU in the same run (speed-up ratio)
#   mnist_train   crema train of the MNIST example on the GPU with CREMA_GPU_TRAFFIC=1: the
#                 host<->device bytes of a steady-state iteration
#
# Environment: GPU (default 0); CREMA_NVRTC_LIB_DIR (default: found on the machine);
# CREMA_GPU_DIR (an unpacked bundle to use instead of .gpu/bundle.tar.gz);
# OUT (logs; the device tool sets it); BUDGET_S (default 470: the deadline for all steps).
# Exit status: 0 when every step passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

START=$(date +%s)
BUDGET_S=${BUDGET_S:-470}
DEADLINE=$((START + BUDGET_S))
OUT="${OUT:-/tmp/crema-gpu-check}"
mkdir -p "$OUT"
GPU=${GPU:-0}
# What scripts/gpu-build.sh packed, unpacked outside the working tree (CREMA_GPU_DIR: an
# unpacked folder to use instead, for trying the script out).
if [ -n "${CREMA_GPU_DIR:-}" ]; then
  G=$CREMA_GPU_DIR
else
  G="${TMPDIR:-/tmp}/crema-gpu"
  rm -rf "$G"
  mkdir -p "$G"
  if [ -f .gpu/bundle.tar.gz ]; then
    tar -xzf .gpu/bundle.tar.gz -C "$G" || echo "error: cannot unpack .gpu/bundle.tar.gz"
  else
    echo "error: no .gpu/bundle.tar.gz: run scripts/gpu-build.sh here and carry .gpu"
  fi
fi
BIN="$G/bin/crema"
export CREMA_SHARED="$G/shared"
export LD_LIBRARY_PATH="$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export XDG_CACHE_HOME="$OUT/cache"
export GLOG_minloglevel=0

NAMES=()
RESULTS=()
SECS=()
NOTES=()
record() { NAMES+=("$1"); RESULTS+=("$2"); SECS+=("$3"); NOTES+=("$4"); }

# step NAME TIMEOUT_S CHECK COMMAND...: runs COMMAND under min(TIMEOUT_S, time left), logs to
# $OUT/NAME.log, and records PASS when it exits 0 and `CHECK LOG` (a function) agrees.
step() {
  local name=$1 limit=$2 check=$3
  shift 3
  local now left
  now=$(date +%s)
  left=$((DEADLINE - now))
  if [ "$left" -lt 15 ]; then
    record "$name" "NOT-RUN" 0 "out of time (deadline ${BUDGET_S}s)"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo
  echo "==== $name (timeout ${limit}s): $*"
  local log="$OUT/$name.log"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local secs=$((SECONDS - t0))
  tail -n 40 "$log"
  local note
  note=$("$check" "$log" 2>&1)
  local ok=$?
  [ -z "$note" ] && note=$(last_line "$log")
  note=$(printf '%s' "$note" | tr '\n' ' ' | cut -c1-110)
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    record "$name" "TIMEOUT" "$secs" "after ${limit}s; $note"
  elif [ $rc -ne 0 ]; then
    record "$name" "FAIL($rc)" "$secs" "$note"
  elif [ $ok -ne 0 ]; then
    record "$name" "FAIL" "$secs" "$note"
  else
    record "$name" "PASS" "$secs" "$note"
  fi
}

# Checks: print a note; exit status says whether the output is what a pass looks like.
last_line() { grep -v '^\s*$' "$1" | tail -n 1; }
selftest_check() {
  grep -E '^selftest: ' "$1" | tail -n 1
  grep -q '^RESULT: PASS' "$1"
}
harness_check() {
  if grep -q 'SKIPPED: GPU variant' "$1"; then
    grep 'SKIPPED: GPU variant' "$1" | head -n 1
    return 1
  fi
  local summary
  summary=$(grep -E '(layer cases pass|training variants match Caffe) on the GPU|^ok +frozen fixture on the GPU' "$1" | tail -n 1)
  echo "${summary:-no GPU summary line}"
  grep -q 'test result: ok. 1 passed' "$1" && [ -n "$summary" ]
}
time_check() {
  local ms
  ms=$(grep -o 'Average Forward-Backward: [0-9.e+-]* ms' "$1" | grep -o '[0-9.e+-]* ms' | tail -n 1)
  echo "fwd+bwd ${ms:-?}"
  [ -n "$ms" ]
}

echo "==== environment"
echo "glibc here:  $(ldd --version 2>&1 | head -n 1)"
if [ -f "$G/BUILD.txt" ]; then sed 's/^/build: /' "$G/BUILD.txt"; fi
uname -srm
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.log"
  CARD=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
  record nvidia-smi PASS 0 "$CARD"
else
  record nvidia-smi FAIL 0 "nvidia-smi not found"
fi
if [ ! -x "$BIN" ]; then
  record binaries FAIL 0 "missing $BIN (scripts/gpu-build.sh builds it; carry .gpu)"
else
  if "$BIN" --version >"$OUT/version.log" 2>&1; then
    record binaries PASS 0 "$(cat "$OUT/version.log"), glibc $(ldd --version 2>&1 | head -n 1 | awk '{print $NF}') here"
  else
    record binaries FAIL 0 "$(head -c 110 "$OUT/version.log")"
  fi
fi

# NVRTC: the machine's own (crema compiles for the device's exact sm_XX, so a newer 13.x NVRTC
# than the driver is fine: no PTX is handed to the driver).
find_nvrtc() {
  local d
  if [ -n "${CREMA_NVRTC_LIB_DIR:-}" ] && [ -e "$CREMA_NVRTC_LIB_DIR/libnvrtc.so.13" ]; then
    echo "$CREMA_NVRTC_LIB_DIR"
    return
  fi
  d=$(ldconfig -p 2>/dev/null | awk '/libnvrtc\.so\.13 /{print $NF; exit}')
  if [ -n "$d" ]; then
    dirname "$d"
    return
  fi
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    if [ -e "$d/libnvrtc.so.13" ]; then
      echo "$d"
      return
    fi
  done
  for py in python3 /opt/torch/.venv/bin/python3; do
    d=$("$py" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)
    if [ -n "$d" ] && [ -e "$d/libnvrtc.so.13" ]; then
      echo "$d"
      return
    fi
  done
  d=$(find / -xdev -name libnvrtc.so.13 2>/dev/null | head -n 1)
  if [ -n "$d" ]; then dirname "$d"; fi
}
NVRTC_DIR=$(find_nvrtc)
if [ -n "$NVRTC_DIR" ]; then
  export CREMA_NVRTC_LIB_DIR="$NVRTC_DIR"
  export LD_LIBRARY_PATH="$NVRTC_DIR:$LD_LIBRARY_PATH"
  record nvrtc PASS 0 "$NVRTC_DIR"
else
  record nvrtc FAIL 0 "libnvrtc.so.13 not found on this machine"
fi

if [ -x "$BIN" ]; then
  step device_query 30 last_line "$BIN" device_query --gpu "$GPU"
  # Compiles for the device's own architecture and loads every entry point (the disk cache is
  # then warm for every later step); the second run shows the cache is used.
  step kernels_load 150 last_line "$BIN" kernels --load "$GPU"
  step kernels_cached 30 last_line "$BIN" kernels --load "$GPU"
  step selftest 150 selftest_check "$BIN" selftest --gpu "$GPU"
fi

for t in caffe_layers caffe_training freeze; do
  if [ -x "$G/bin/$t" ]; then
    # Only the GPU variants: the CPU tests read files of the source tree that do not travel.
    step "fixtures_$t" 120 harness_check env CREMA_TEST_GPU="$GPU" "$G/bin/$t" on_the_gpu --nocapture --test-threads=1
  else
    record "fixtures_$t" FAIL 0 "missing $G/bin/$t (scripts/gpu-build.sh builds it)"
  fi
done

if [ -x "$BIN" ]; then
  # Throughput: the timing nets on the GPU and on this machine's CPU, in the same run.
  for net in lenet cifar10_quick resnet20_cifar; do
    model="$CREMA_SHARED/fixtures/caffe/timing/$net.prototxt"
    step "time_${net}_gpu" 40 time_check "$BIN" time --model "$model" --gpu "$GPU" --iterations 10
    step "time_${net}_cpu" 40 time_check "$BIN" time --model "$model" --iterations 3
  done

  # A short MNIST training run with the per-iteration traffic log (data converted first).
  MN="$OUT/mnist"
  mkdir -p "$MN"
  D=examples/mnist/data
  "$BIN" convert mnist "$D/train-images-idx3-ubyte.gz" "$D/train-labels-idx1-ubyte.gz" "$MN/mnist_train_lmdb" >"$OUT/mnist_convert.log" 2>&1
  "$BIN" convert mnist "$D/t10k-images-idx3-ubyte.gz" "$D/t10k-labels-idx1-ubyte.gz" "$MN/mnist_test_lmdb" >>"$OUT/mnist_convert.log" 2>&1
  sed -e "s#examples/mnist/mnist_train_lmdb#$MN/mnist_train_lmdb#" \
    -e "s#examples/mnist/mnist_test_lmdb#$MN/mnist_test_lmdb#" \
    examples/mnist/lenet_train_test.prototxt >"$MN/net.prototxt"
  sed -e "s#^net: .*#net: \"$MN/net.prototxt\"#" -e 's#^max_iter: .*#max_iter: 300#' \
    -e 's#^test_interval: .*#test_interval: 150#' -e 's#^display: .*#display: 50#' \
    -e 's#^snapshot: .*#snapshot: 0#' -e "s#^snapshot_prefix: .*#snapshot_prefix: \"$MN/lenet\"#" \
    examples/mnist/lenet_solver.prototxt >"$MN/solver.prototxt"
  mnist_check() {
    # A steady-state iteration: one without a test pass or a display (iteration 120).
    local line acc
    line=$(grep -o 'GPU traffic, iteration 120: .*' "$1" | head -n 1)
    acc=$(grep -o 'Test net output #0: accuracy = [0-9.]*' "$1" | tail -n 1 | awk '{print $NF}')
    echo "iter 120: ${line#*: }; test accuracy ${acc:-?}"
    [ -n "$line" ] && grep -q 'Optimization Done' "$1"
  }
  step mnist_train 90 mnist_check env CREMA_GPU_TRAFFIC=1 "$BIN" train --solver "$MN/solver.prototxt" --gpu "$GPU"
fi

# ---- summary (last, so that the device tool's output tail shows it) ---------------------------
echo
echo "==== summary ($(date -u +%Y-%m-%d), ${CARD:-unknown card}; logs in $OUT; $((SECONDS))s in all)"
printf '%-26s %-9s %6s  %s\n' "step" "result" "time" "note"
failed=0
for i in "${!NAMES[@]}"; do
  printf '%-26s %-9s %5ss  %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECS[$i]}" "${NOTES[$i]}"
  case "${RESULTS[$i]}" in PASS) ;; *) failed=1 ;; esac
done
speedups=""
for net in lenet cifar10_quick resnet20_cifar; do
  g=$(grep -o 'Average Forward-Backward: [0-9.e+-]*' "$OUT/time_${net}_gpu.log" 2>/dev/null | awk '{print $NF}')
  c=$(grep -o 'Average Forward-Backward: [0-9.e+-]*' "$OUT/time_${net}_cpu.log" 2>/dev/null | awk '{print $NF}')
  if [ -n "$g" ] && [ -n "$c" ]; then
    speedups+="$net $(awk -v c="$c" -v g="$g" 'BEGIN { printf "%.1fx", c / g }'); "
  fi
done
[ -n "$speedups" ] && echo "GPU speed-up over this machine's CPU (fwd+bwd): $speedups"
if [ $failed -ne 0 ]; then
  echo "RESULT: FAILED"
  exit 1
fi
echo "RESULT: PASSED"
