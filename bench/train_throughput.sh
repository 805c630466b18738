#!/usr/bin/env bash
# Training throughput of `crema train` on the CPU: Caffe's LeNet on 28x28 MNIST digits, fed by
# the Data layer from an LMDB (the digits shipped in examples/mnist/data, converted with
# `crema convert mnist`), against the same net and solver fed by DummyData (no loading at all)
# measured in the same run. DummyData draws uniform pixels and labels (0-9) every batch: a
# constant batch makes the net saturate into slow denormal arithmetic and flatters the Data layer. Prints images/s of each, their ratio, and the share of training
# time the Data layer made the net wait for its prefetch thread (goal: under 5%).
# Usage: bench/train_throughput.sh [iterations] [runs]   (defaults 500 and 3; best run counts)
# Run on an idle machine if you can: on a busy one the figures swing.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=${1:-500}
RUNS=${2:-3}
# CREMA_BIN: another build to measure (say, main before a change), instead of this tree's.
if [ -z "${CREMA_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${CREMA_BIN:-$PWD/target/release/crema}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
export GLOG_minloglevel=0
TMP=$(mktemp -d)
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT

D=examples/mnist/data
GLOG_minloglevel=1 "$BIN" convert mnist "$D/train-images-idx3-ubyte.gz" "$D/train-labels-idx1-ubyte.gz" "$TMP/train_lmdb"

# The train half of examples/mnist/lenet_train_test.prototxt, with its input layer swapped.
net() { # input-layer text -> net
  cat <<NET
name: "LeNet"
$1
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
NET
}
net 'layer { name: "mnist" type: "Data" top: "data" top: "label" transform_param { scale: 0.00390625 }
  data_param { source: "'"$TMP"'/train_lmdb" batch_size: 64 backend: LMDB } }' > "$TMP/data.prototxt"
net 'layer { name: "mnist" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 }
    data_filler { type: "uniform" min: 0 max: 1 } data_filler { type: "uniform" min: 0 max: 9.99 } } }' > "$TMP/dummy.prototxt"
for v in data dummy; do
  cat > "$TMP/solver_$v.prototxt" <<SOLVER
net: "$TMP/$v.prototxt"
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75
display: 100 max_iter: $ITERS random_seed: 1701 snapshot: 0 snapshot_after_train: false
SOLVER
done

# `Trained N iterations (M images) in T s: X images/s; testing 0.00 s; waiting for data W s (P% ...)`
# On a shared machine wall-clock figures swing with the load; the process's CPU time (user +
# system, all threads, the prefetch thread included) per 1,000 images swings much less.
run() { # variant -> "images/s share% cpu_s_per_1000_images"
  local TIMEFORMAT='%U %S' u s
  { time "$BIN" train --solver "$TMP/solver_$1.prototxt" --no-progress 2>"$TMP/log_$1"; } 2>"$TMP/cpu_$1"
  read -r u s < "$TMP/cpu_$1"
  sed -n 's/.*\] Trained [0-9]* iterations (\([0-9]*\) images).*: \([0-9.]*\) images\/s;.*(\([0-9.]*\)% of training time)$/\2 \3 \1/p' "$TMP/log_$1" \
    | { read -r ips share images; echo "$ips $share $(echo "1000 * ($u + $s) / $images" | bc -l)"; }
}

echo "LeNet, batch 64, $ITERS iterations, RAYON_NUM_THREADS=$RAYON_NUM_THREADS, $(nproc) CPUs, load average $(cut -d' ' -f1 /proc/loadavg)"
printf "%-4s %-8s %10s %16s %20s\n" run input images/s data_wait_share cpu_s_per_1k_images
best_data=0; best_dummy=0; share_at_best=0; cpu_data=999999; cpu_dummy=999999
less() { (( $(echo "$1 < $2" | bc -l) )); }
for r in $(seq 1 "$RUNS"); do
  for v in data dummy; do
    read -r ips share cpu < <(run "$v")
    printf "%-4s %-8s %10.1f %15.1f%% %20.3f\n" "$r" "$v" "$ips" "$share" "$cpu"
    if [ "$v" = data ]; then
      if less "$best_data" "$ips"; then best_data=$ips; share_at_best=$share; fi
      if less "$cpu" "$cpu_data"; then cpu_data=$cpu; fi
    else
      if less "$best_dummy" "$ips"; then best_dummy=$ips; fi
      if less "$cpu" "$cpu_dummy"; then cpu_dummy=$cpu; fi
    fi
  done
done
printf "best wall:  Data layer %.1f images/s, DummyData %.1f images/s, ratio %.3f\n" \
  "$best_data" "$best_dummy" "$(echo "$best_data / $best_dummy" | bc -l)"
printf "best CPU:   Data layer %.3f s, DummyData %.3f s per 1000 images, ratio %.3f\n" \
  "$cpu_data" "$cpu_dummy" "$(echo "$cpu_data / $cpu_dummy" | bc -l)"
printf "waiting for data: %s%% of training time in the fastest Data run (goal: under 5%%)\n" "$share_at_best"
