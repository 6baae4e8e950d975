#!/usr/bin/env bash
# The error budget of the module pipeline: p99 latency with a module failing on every request
# (the `fault` module, fail_open) against the same node with the module switched off (its kill
# switch, through the admin API), alternated round by round on this machine.
#   bench/modules.sh                    # ROUNDS=3 DURATION=10 CONNS=64
#   FAILURE=panic bench/modules.sh      # panics instead of errors
#   BREAKER=50 FAILURE=panic bench/modules.sh   # with the default circuit breaker
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need wrk wrk
# Panic injection is compiled in only on request (shipped nodes never panic on purpose).
cargo build --release --locked -p palisade-cli --features fault-panics >&2
BIN=target/release/palisade
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} CONNS=${CONNS:-64} FAILURE=${FAILURE:-error}
# The breaker threshold: by default so high that it never opens and every request really calls
# the failing module (the worst case); BREAKER=50 is the shipped default.
BREAKER=${BREAKER:-1000000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

"$BIN" origin --listen 127.0.0.1:0 > "$work/origin.out" 2>/dev/null &
until grep -q "ready" "$work/origin.out"; do sleep 0.05; done
origin=$(grep -o 'http=[^ ]*' "$work/origin.out" | head -1 | cut -d= -f2)
percent=$([ "$FAILURE" = panic ] && echo "panic_percent = 100" || echo "error_percent = 100")
cat > "$work/edge.toml" <<TOML
[listen]
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
[[zones]]
name = "site"
hostnames = ["site.example"]
origins = [{ address = "$origin" }]
fault = { $percent }
[zones.modules.fault]
failure_policy = "fail_open"
breaker_threshold = $BREAKER
TOML
PALISADE_LOG=warn "$BIN" edge --config "$work/edge.toml" --workers 1 > "$work/edge.out" 2> "$work/edge.err" &
until grep -q "ready" "$work/edge.out"; do sleep 0.05; done
http=$(grep -o 'http=[^ ]*' "$work/edge.out" | cut -d= -f2)
admin=$(grep -o 'admin=[^ ]*' "$work/edge.out" | cut -d= -f2)

p99() { # prints "req/s p99_ms"; fails on any non-2xx answer (the zone must serve every request)
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: site.example" "http://$http/")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers: $out" >&2; exit 1; fi
  awk '/Requests\/sec/ {rps=$2} /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p=v} END {print rps, p}' <<<"$out"
}
switch() { curl -s -X POST "http://$admin/killswitches/fault/$1" > /dev/null; }

echo "fault module failing every request ($FAILURE, fail_open) vs switched off; $ROUNDS rounds x ${DURATION}s, $CONNS connections, 1 worker"
wrk -t1 -c"$CONNS" -d2s -H "Host: site.example" "http://$http/" > /dev/null  # warm-up
for r in $(seq 1 "$ROUNDS"); do
  switch release; read -r on_rps on_p99 < <(p99)
  switch off; read -r off_rps off_p99 < <(p99)
  echo "round $r: failing: $on_rps req/s, p99 $on_p99 ms | switched off: $off_rps req/s, p99 $off_p99 ms | p99 ratio $(awk -v a="$on_p99" -v b="$off_p99" 'BEGIN {printf "%.3f", a/b}')"
done
m=$(curl -s "http://$admin/metrics")
calls=$(grep '^palisade_module_calls_total' <<<"$m" | awk '{print $2}')
failed=$(grep -E '^palisade_module_(errors|panics)_total' <<<"$m" | awk '{s+=$2} END {print s}')
lines=$(grep -c "module failed" "$work/edge.err" || true)
echo "module calls: $calls, failures: $failed; 'module failed' log lines written: $lines (budget: 5 a second)"
