#!/bin/sh
# Seeds fuzz/corpus/<target>/ from the Caffe fixtures (small files only; corpus dirs are not
# committed). Usage: fuzz/seed_corpus.sh [SHARED_DIR]   (default: ../shared next to the repo)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
shared=${1:-${CREMA_SHARED:-$here/../../shared}}
fx=$shared/fixtures/caffe
[ -d "$fx" ] || { echo "no fixtures at $fx" >&2; exit 1; }
mkdir -p "$here/corpus/text_parser" "$here/corpus/binary_decoder"
n=0
for f in $(find "$fx" -name '*.prototxt' -size -8k | sort); do
  n=$((n + 1)); cp "$f" "$here/corpus/text_parser/$(echo "$f" | sed "s|$fx/||; s|/|_|g")"
done
for f in "$here"/../tests/data/*.prototxt; do cp "$f" "$here/corpus/text_parser/seed_$(basename "$f")"; done
for f in $(find "$fx" \( -name '*.caffemodel' -o -name '*.solverstate' -o -name '*.binaryproto' \) -size -20k | sort); do
  n=$((n + 1)); cp "$f" "$here/corpus/binary_decoder/$(echo "$f" | sed "s|$fx/||; s|/|_|g")"
done
# A V0 net (nested `layer {}` with flat fields, a padding layer folded into its consumer).
cat > "$here/corpus/text_parser/v0_net.prototxt" <<'V0'
name: "v0"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 biasterm: false
  weight_filler { type: "gaussian" std: 0.1 } blobs_lr: 1 weight_decay: 1 } bottom: "pad1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 } bottom: "pool1" top: "norm1" }
layers { layer { name: "data" type: "data" source: "x" batchsize: 4 cropsize: 6 mirror: true meanfile: "m" scale: 0.5 } top: "d2" }
V0
chmod -R u+w "$here/corpus"
echo "seeded $n files"
