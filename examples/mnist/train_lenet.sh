#!/usr/bin/env bash
# Trains Caffe's LeNet on the 10,000 real MNIST digits shipped in examples/mnist/data.
# Run from the repository root: examples/mnist/train_lenet.sh
# The first run converts the digits into LMDBs (as Caffe's convert_mnist_data does).
set -euo pipefail
cd "$(dirname "$0")/../.."
CREMA=${CREMA:-target/release/crema}
if [ ! -x "$CREMA" ]; then
  cargo build --release --quiet
fi
D=examples/mnist/data
for split in train:train t10k:test; do
  src=${split%%:*}; dst=examples/mnist/mnist_${split##*:}_lmdb
  if [ ! -d "$dst" ]; then
    "$CREMA" convert mnist "$D/$src-images-idx3-ubyte.gz" "$D/$src-labels-idx1-ubyte.gz" "$dst"
  fi
done
exec "$CREMA" train --solver examples/mnist/lenet_solver.prototxt "$@"
