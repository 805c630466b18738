#!/usr/bin/env bash
# Installs NVIDIA's run-time compiler (NVRTC) and the CUDA 13.0 compiler tools from PyPI wheels
# into a Python virtual environment, so that a machine without a GPU or a CUDA toolkit (CI, a
# developer's laptop) can compile crema's kernels: `crema kernels --check` and the test
# tests/kernels_nvrtc.rs need only libnvrtc; ptxas, nvcc and the headers come along for looking
# at SASS and register use by hand.
#
# Every wheel is pinned to 13.0: NVRTC 13.x newer than the driver emits PTX that a CUDA 13.0
# driver (the GPU machines run driver 580) cannot load, and an unpinned nvidia-cuda-nvcc drags
# in newer parts. See ../shared/docs/TOOLCHAIN.md.
#
#   scripts/install-nvrtc.sh            # venv at $CREMA_NVRTC_VENV or ~/.cache/crema-nvrtc-venv
#   eval "$(scripts/install-nvrtc.sh --env)"   # also sets the variables in this shell
#   scripts/install-nvrtc.sh --minimal  # NVRTC alone (90 MB instead of 186 MB): all CI needs
#
# Prints, last, the lines to export (LD_LIBRARY_PATH, CREMA_NVRTC_LIB_DIR, CREMA_CUDA_INCLUDE).
# Running it again is cheap: pip sees the pinned versions already there.
set -euo pipefail

VENV="${CREMA_NVRTC_VENV:-$HOME/.cache/crema-nvrtc-venv}"
ENV_ONLY=0
MINIMAL=0
for arg in "$@"; do
  case "$arg" in
    --env) ENV_ONLY=1 ;;
    --minimal) MINIMAL=1 ;;
    *) echo "install-nvrtc: unknown argument '$arg' (use --env, --minimal)" >&2; exit 2 ;;
  esac
done

WHEELS=(
  "nvidia-cuda-nvrtc==13.0.88"
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.*"
)
[ "$MINIMAL" = 1 ] && WHEELS=("nvidia-cuda-nvrtc==13.0.88")

say() { if [ "$ENV_ONLY" = 1 ]; then echo "$*" >&2; else echo "$*"; fi; }

if ! command -v python3 >/dev/null 2>&1; then
  echo "install-nvrtc: python3 is needed (with the venv module)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python3" ]; then
  say "install-nvrtc: creating a virtual environment at $VENV"
  python3 -m venv "$VENV"
fi
say "install-nvrtc: installing ${WHEELS[*]}"
start=$(date +%s)
"$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "${WHEELS[@]}" >&2
say "install-nvrtc: pip took $(( $(date +%s) - start )) s"

SITE="$("$VENV/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
CU="$SITE/nvidia/cu13"
if [ ! -e "$CU/lib/libnvrtc.so.13" ]; then
  echo "install-nvrtc: the wheels installed, but $CU/lib/libnvrtc.so.13 is missing" >&2
  exit 1
fi

if [ "$ENV_ONLY" = 0 ]; then
  echo "install-nvrtc: NVRTC is in $CU/lib (ptxas and nvcc in $CU/bin, headers in $CU/include)"
  echo "install-nvrtc: installed size $(du -sh "$VENV" | cut -f1); use these variables:"
fi
echo "export CREMA_NVRTC_LIB_DIR='$CU/lib'"
echo "export LD_LIBRARY_PATH='$CU/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export CREMA_CUDA_INCLUDE='$CU/include'"
echo "export PATH='$CU/bin'\${PATH:+:\$PATH}"
