#!/usr/bin/env bash
# PyTorch CPU timings of the timing nets (bench/pytorch.py), 2 threads, NCHW and channels_last.
# The interpreter is $CREMA_TORCH_PYTHON, else python3 on PATH; one that cannot import torch
# gives exit status 3 and a line saying so (bench/cpu.sh then leaves the PyTorch columns out).
# Usage: bench/pytorch.sh [pytorch.py options]   e.g. --net lenet --layout channels_last
set -euo pipefail
cd "$(dirname "$0")"
PY=${CREMA_TORCH_PYTHON:-python3}
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "SKIPPED: '$PY' cannot import torch (set CREMA_TORCH_PYTHON to an interpreter that can)" >&2
  exit 3
fi
exec "$PY" pytorch.py "$@"
