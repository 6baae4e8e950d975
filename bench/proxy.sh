#!/usr/bin/env bash
# Reverse-proxy throughput, palisade edge vs a tuned nginx reverse proxy, side by side in one run
# on this machine (same origin, same load generator, contenders alternated every round).
#   bench/proxy.sh                 # default: 3 rounds x 10 s per cell
#   ROUNDS=5 DURATION=15 bench/proxy.sh
#   WARMUP=0 bench/proxy.sh       # no discarded warm-up run before each measured one (default 2 s)
# EQUAL_WORK=1 adds nginx configured to add the same forwarding headers palisade adds.
# BASELINE=1 adds a third contender, bench/hyper-baseline (the smallest hyper proxy), for
# comparison with a plain hyper stack. Prints req/s, p50/p99 latency, peak RSS and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need nginx nginx-light wrk wrk
# The binary as it ships: profile-guided (scripts/build-release; PGO=0 for a plain release build).
PALISADE_BIN=$(scripts/build-release | tail -1)
export PALISADE_BIN
if [ "${BASELINE:-0}" = 1 ]; then
  cargo build --release --manifest-path bench/hyper-baseline/Cargo.toml
fi
exec python3 bench/proxy_bench.py "$@"
