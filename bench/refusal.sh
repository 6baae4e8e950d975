#!/usr/bin/env bash
# Instructions per refused request (deterministic, whatever else the machine does), Palisade and
# nginx side by side: one worker, under callgrind (user space only: the kernel's share is the
# same recv and send for both); a limit of one request per period per address (Palisade: a rate
# limit of one an hour; nginx: limit_req 1r/m); one keep-alive connection sends N+1 requests
# (the first passes, the other N are refused: 429 and 503). The difference between a run with
# N and one with 0 refused, divided by N.
#   bench/refusal.sh            # N=2000
#   NGINX=0 bench/refusal.sh    # Palisade only
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need valgrind valgrind
need nginx nginx-light
export PATH="$PATH:/usr/sbin"
cargo build --release --locked -p palisade-cli >&2
BIN=${PALISADE_BIN:-target/release/palisade} N=${N:-2000}

# Sends N+1 requests on one connection to host:port $1, reading each answer.
client() {
  python3 - "$1" "$2" <<'PY'
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
        data = s.recv(65536)
        if not data:
            sys.exit("the connection closed")
        buf += data
PY
}

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
  client "$(grep -o 'http=[^ ]*' "$w/out" | cut -d= -f2)" "$1"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$w/cg.out"
  rm -rf "$w"
}
run_nginx() { # prints the instructions of an nginx that refused $1 requests
  local w port=18497
  w=$(mktemp -d)
  cat > "$w/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
master_process off;
pid $w/nginx.pid;
error_log $w/err crit;
events { worker_connections 64; }
http {
  access_log off;
  keepalive_requests 100000;
  limit_req_zone \$binary_remote_addr zone=perip:1m rate=1r/m;
  server { listen 127.0.0.1:$port; limit_req zone=perip; location / { proxy_pass http://127.0.0.1:$((port + 1)); } }
  server { listen 127.0.0.1:$((port + 1)); location / { return 200 "ok"; } }
}
NGINX
  valgrind --tool=callgrind --callgrind-out-file="$w/cg.out" nginx -c "$w/nginx.conf" > /dev/null 2> "$w/vg.err" &
  local pid=$!
  for _ in $(seq 600); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  client "127.0.0.1:$port" "$1"
  kill -QUIT "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$w/cg.out"
  rm -rf "$w"
}

base=$(run 0)
with=$(run "$N")
echo "palisade: instructions per refused request: $(( (with - base) / N )) ($N refused; $base instructions without them)"
[ "${NGINX:-1}" = 0 ] && exit 0
base=$(run_nginx 0)
with=$(run_nginx "$N")
echo "nginx:    instructions per refused request: $(( (with - base) / N )) ($N refused; $base instructions without them)"
