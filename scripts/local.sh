#!/usr/bin/env bash
# The main job on a fresh machine, in one command: installs what `local` needs when it is
# missing (Debian's redis-server and redis-tools: the pods' Redis, and redis-cli to talk to
# it), builds the release binary, and runs the local HA group with the flags given:
#
#   bash scripts/local.sh [--tls] [--replicas N] …     (every flag of `redis-k8s-election local`)
#
# The first build takes about 7 minutes on 2 cores; later runs start in seconds. Nothing else
# is needed: kubesim (the Kubernetes stand-in) is built into the binary. Ctrl-C stops the
# group and removes every file it made.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  step "installing redis-server and redis-tools (apt): the pods' Redis and redis-cli"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends redis-server redis-tools
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (rustup, https://rustup.rs), then run this again" >&2
  exit 1
fi
step "building the release binary (the first build takes about 7 minutes on 2 cores)"
cargo build --release --locked -p redis-k8s-election
step "starting the local group (Ctrl-C stops it and removes its files)"
exec target/release/redis-k8s-election local "$@"
