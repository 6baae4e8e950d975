#!/usr/bin/env bash
# Fleet propagation: control plane + N edge node processes on loopback (see bench/fleet.py).
#   bench/fleet.sh              # N=50 REPS=5
#   N=20 REPS=3 bench/fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p palisade-cli >&2
exec python3 bench/fleet.py "$@"
