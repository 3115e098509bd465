#!/usr/bin/env bash
# Builds the static (musl) release binary that the container image ships, and checks it:
# statically linked, runs, under the size target. The Dockerfile runs this same script.
#
#   scripts/build-static.sh [--check-only]
#
# Needs Debian's musl-tools (musl-gcc, for ring's C parts) and the Rust target
# x86_64-unknown-linux-musl (`rustup target add x86_64-unknown-linux-musl`).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
bin="target/$target/release/redis-k8s-election"
max_bytes=$((15 * 1000 * 1000))

if [[ "${1:-}" != "--check-only" ]]; then
  if ! command -v musl-gcc >/dev/null; then
    echo "musl-gcc not found: apt-get install musl-tools" >&2
    exit 1
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
  fi
  CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --release --locked --target "$target" -p redis-k8s-election
fi

# Static: no program interpreter, no dynamic section.
if readelf -l "$bin" | grep -q "INTERP"; then
  echo "FAIL: $bin has a program interpreter (dynamically linked)" >&2
  exit 1
fi
if readelf -d "$bin" 2>/dev/null | grep -q "NEEDED"; then
  echo "FAIL: $bin needs shared libraries" >&2
  exit 1
fi
size=$(stat -c %s "$bin")
if (( size >= max_bytes )); then
  echo "FAIL: $bin is $size bytes, the target is under $max_bytes" >&2
  exit 1
fi
"$bin" --version
echo "ok: $bin is static and $size bytes (target: under $max_bytes)"
