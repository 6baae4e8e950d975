#!/usr/bin/env bash
# CDN cache, palisade vs nginx proxy_cache (a memory-backed zone on tmpfs and a disk zone), side by
# side in one run on this machine: cache-hit throughput and latency for 1 KiB and 100 KiB objects
# at 64 and 256 connections, and origin requests under a thundering herd (HERD concurrent
# requests for one cold key; nginx with proxy_cache_lock on).
#   bench/cache.sh                        # 3 rounds x 10 s per cell, HERD=1000
#   ROUNDS=5 DURATION=15 bench/cache.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need nginx nginx-light wrk wrk
# 1000 client sockets at once, and as many on the servers' side.
ulimit -n 65536 2>/dev/null || true
PALISADE_BIN=$(scripts/build-release | tail -1)
export PALISADE_BIN
exec python3 bench/cache_bench.py "$@"
