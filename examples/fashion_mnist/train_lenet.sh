#!/usr/bin/env bash
# Trains Caffe's LeNet on Fashion-MNIST from Debian's package dataset-fashion-mnist.
# Run from anywhere: examples/fashion_mnist/train_lenet.sh [crema train flags]
# The first run converts the package's gzip'd IDX files into LMDBs (as Caffe's
# convert_mnist_data does). FASHION_MNIST_DIR points at another folder holding the same four
# files; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
         t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  if [ ! -f "$D/$f" ]; then
    echo "error: Fashion-MNIST not found: $D/$f is missing." >&2
    echo "Install Debian's package:  sudo apt-get install dataset-fashion-mnist" >&2
    echo "(or set FASHION_MNIST_DIR to a folder holding its four *-ubyte.gz files)." >&2
    exit 1
  fi
done
CREMA=${CREMA:-target/release/crema}
if [ ! -x "$CREMA" ]; then
  cargo build --release --quiet
fi
for split in train:train t10k:test; do
  src=${split%%:*}; dst=examples/fashion_mnist/fashion_${split##*:}_lmdb
  if [ ! -d "$dst" ]; then
    # Converted under a temporary name so that an interrupted run converts again.
    rm -rf "$dst.partial"
    "$CREMA" convert mnist "$D/$src-images-idx3-ubyte.gz" "$D/$src-labels-idx1-ubyte.gz" "$dst.partial"
    mv "$dst.partial" "$dst"
  fi
done
exec "$CREMA" train --solver examples/fashion_mnist/lenet_solver.prototxt "$@"
