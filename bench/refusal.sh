#!/usr/bin/env bash
# Instructions per refused request (deterministic, whatever else the machine does): one node,
# one worker, under callgrind; a rate limit of one request an hour; one keep-alive connection
# sends N+1 requests (the first passes, the other N get 429). The difference between a run with
# N and one with 0 refused, divided by N.
#   bench/refusal.sh            # N=2000
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need valgrind valgrind
cargo build --release --locked -p palisade-cli >&2
BIN=${PALISADE_BIN:-target/release/palisade} N=${N:-2000}

run() { # prints the instructions of a node that refused $1 requests
  local w
  w=$(mktemp -d)
  cat > "$w/e.toml" <<T
[listen]
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
[[zones]]
name = "site"
hostnames = ["site.example"]
origins = [{ address = "127.0.0.1:9" }]
[zones.ddos]
enabled = false
[[zones.rate_limits]]
name = "one"
characteristics = ["ip.src"]
period_s = 3600
requests = 1
T
  PALISADE_LOG=error valgrind --tool=callgrind --callgrind-out-file="$w/cg.out" "$BIN" edge --config "$w/e.toml" --workers 1 > "$w/out" 2> "$w/err" &
  local pid=$!
  for _ in $(seq 600); do grep -q ready "$w/out" 2>/dev/null && break; sleep 0.1; done
  python3 - "$(grep -o 'http=[^ ]*' "$w/out" | cut -d= -f2)" "$1" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
req = b"GET / HTTP/1.1\r\nHost: site.example\r\nUser-Agent: flood/1.0\r\n\r\n"
buf = b""
for _ in range(int(sys.argv[2]) + 1):
    s.sendall(req)
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            length = [int(l.split(b":")[1]) for l in buf[:end].split(b"\r\n") if l.lower().startswith(b"content-length")][0]
            if len(buf) >= end + 4 + length:
                buf = buf[end + 4 + length:]
                break
        buf += s.recv(65536)
PY
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$w/cg.out"
  rm -rf "$w"
}
base=$(run 0)
with=$(run "$N")
echo "instructions per refused request: $(( (with - base) / N )) ($N refused; $base instructions without them)"
