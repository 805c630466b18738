#!/usr/bin/env bash
# Builds here what scripts/gpu-check.sh runs on a lent GPU machine, which has no Rust toolchain
# and no network, and packs it into .gpu/bundle.tar.gz (.gpu/ is git-ignored), which the device
# tool carries and gpu-check.sh unpacks there:
#
#   bin/crema                            the release binary (hdf5 feature)
#   bin/{caffe_layers,caffe_training,freeze}
#                                        the fixture harnesses' test binaries (their GPU
#                                        variants run with CREMA_TEST_GPU=0)
#   lib/                                 shared libraries the binaries need beyond glibc
#                                        (libhdf5 and its dependencies), found with ldd
#   shared/fixtures/caffe/               the fixtures the harnesses and the timing runs read
#                                        (CREMA_SHARED points there)
#   BUILD.txt                            commit, date, toolchain and glibc of this build
#
# Then, with the device tool: command "bash scripts/gpu-check.sh", carry [".gpu"], timeout 600.
#
# Usage: scripts/gpu-build.sh [--shared DIR]   (default: $CREMA_SHARED, else ../shared)
# Binaries are stripped and the bundle compressed so that it stays well under the device tool's
# 64 MiB (the working tree travels too); the script fails if it does not.
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${CREMA_SHARED:-../shared}
if [ "${1:-}" = "--shared" ]; then
  SHARED=${2:?--shared needs a folder}
fi
FIXTURES="$SHARED/fixtures/caffe"
for d in layers e2e_lmdb e2e_hdf5 frozen timing; do
  if [ ! -d "$FIXTURES/$d" ]; then
    echo "error: $FIXTURES/$d is missing (set CREMA_SHARED or pass --shared DIR)" >&2
    exit 1
  fi
done
LIMIT_MIB=56

echo "== building the release binary"
cargo build --release --locked --features hdf5

echo "== building the harnesses' test binaries"
TESTS=(caffe_layers caffe_training freeze)
args=()
for t in "${TESTS[@]}"; do args+=(--test "$t"); done
json=$(cargo test --release --locked --features hdf5 --no-run --message-format=json "${args[@]}")

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/shared/fixtures/caffe"
cp target/release/crema "$STAGE/bin/crema"
for t in "${TESTS[@]}"; do
  exe=$(printf '%s\n' "$json" | python3 -c '
import json, sys
want = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == want and "test" in m["target"]["kind"]:
        print(m["executable"])
' "$t")
  if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    echo "error: cargo did not report a test binary for $t" >&2
    exit 1
  fi
  cp "$exe" "$STAGE/bin/$t"
done
if command -v strip >/dev/null 2>&1; then
  strip "$STAGE"/bin/*
else
  echo "warning: strip not found; binaries keep their debug information" >&2
fi

echo "== shared libraries beyond glibc"
# glibc's own libraries come from the device image (its glibc must be at least ours: the
# check prints both); everything else the binaries load is carried.
for b in "$STAGE"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.* | libm.so.* | libdl.so.* | librt.so.* | libpthread.so.* | libresolv.so.* | libutil.so.* | ld-linux*.so.* | libgcc_s.so.*) ;;
    *) cp -L "$lib" "$STAGE/lib/" ;;
  esac
done
ls "$STAGE/lib"

echo "== fixtures"
for d in layers e2e_lmdb e2e_hdf5 frozen timing; do
  cp -r "$FIXTURES/$d" "$STAGE/shared/fixtures/caffe/$d"
done
find "$STAGE/shared" -name lock.mdb -delete

{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "rustc: $(rustc --version)"
  echo "glibc: $(ldd --version | head -n 1)"
} >"$STAGE/BUILD.txt"
cat "$STAGE/BUILD.txt"
du -sh "$STAGE"/bin/* "$STAGE/lib" "$STAGE/shared"

rm -rf .gpu
mkdir -p .gpu
tar -C "$STAGE" -czf .gpu/bundle.tar.gz .
cp "$STAGE/BUILD.txt" .gpu/BUILD.txt
size_kib=$(du -sk .gpu | cut -f1)
echo "== .gpu/ holds $((size_kib / 1024)) MiB (unpacked: $(du -sh "$STAGE" | cut -f1))"
if [ "$size_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "error: .gpu/ is over $LIMIT_MIB MiB: with the working tree it would not fit the device tool's 64 MiB" >&2
  exit 1
fi
echo "ready: run scripts/gpu-check.sh on the device with carry [\".gpu\"]"
