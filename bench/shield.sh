#!/usr/bin/env bash
# Shield under attack: Palisade vs hardened nginx (limit_req, limit_conn, short timeouts) vs
# HAProxy (stick tables), side by side on this machine, on loopback with client addresses
# spread over 127.0.0.0/8 (bench/loadgen binds them).
#
# An origin with a bounded capacity (8 workers x 10 ms: 800 requests/s), 50 legitimate clients
# at one request a second each from their own address, and one attack at a time, each DURATION
# seconds after WARMUP seconds of legitimate traffic alone (each proxy is started fresh per run):
#   (a) flood: one address, 200 connections, as fast as answers come
#   (b) flood: 250 addresses, 2000 connections, 8 requests/s per address (under every per-address limit)
#   (c) slowloris: 250 addresses, 1000 connections that never finish a request head
# Per run: legitimate success (2xx within 5 s of being due) and p99 latency (of those) during the attack, when the attack
# stopped being served (mitigated_after_s), and the proxy's CPU (user + system, the whole run)
# per refused attack request (an error answer, or a connection closed without one). Each run's
# JSON is kept in target/shield/PROXY-ATTACK.json.
#   bench/shield.sh                          # DURATION=30 WARMUP=12 PROXIES="palisade nginx haproxy" ATTACKS="a b c"
#   DURATION=10 ATTACKS=b bench/shield.sh     # a quick look at one attack
#   DDOS_ACTION=drop ATTACKS=a bench/shield.sh  # mitigated floods dropped, not answered
#   PIN=1 ATTACKS=a bench/shield.sh         # the proxy alone on core 0 (one worker), everything
#                                           # else on the other cores: steadier CPU figures
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need nginx nginx-light haproxy haproxy
export PATH="$PATH:/usr/sbin"
cargo build --release --locked -p palisade-cli -p palisade-loadgen >&2
BIN=target/release/palisade
GEN=target/release/palisade-loadgen
DURATION=${DURATION:-30} WARMUP=${WARMUP:-12} PIN=${PIN:-0}
# With PIN=1, the proxy runs alone on core 0 with one worker, the origin and the load generators
# on the others: no contender shares a core with the load it is measured under.
if [ "$PIN" = 1 ]; then
  WORKERS=1 ON_PROXY="taskset -c 0" ON_REST="taskset -c 1-$(($(nproc) - 1))"
else
  WORKERS=2 ON_PROXY="" ON_REST=""
fi
PROXIES=${PROXIES:-"palisade nginx haproxy"} ATTACKS=${ATTACKS:-"a b c"} DDOS_ACTION=${DDOS_ACTION:-block}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
PORT=18480
results=target/shield
mkdir -p "$results"

$ON_REST "$BIN" origin --listen 127.0.0.1:0 --workers 8 --delay-ms 10 > "$work/origin.out" 2>/dev/null &
until grep -q "ready" "$work/origin.out"; do sleep 0.05; done
origin=$(grep -o 'http=[^ ]*' "$work/origin.out" | head -1 | cut -d= -f2)

cat > "$work/palisade.toml" <<TOML
[listen]
http = "127.0.0.1:$PORT"
admin = "127.0.0.1:0"
[limits]
header_timeout_ms = 5000
[[zones]]
name = "site"
hostnames = ["site.example"]
origins = [{ address = "$origin" }]
# The same per-address limit as nginx's limit_req and HAProxy's stick table.
[[zones.rate_limits]]
name = "per-ip"
characteristics = ["ip.src"]
period_s = 1
requests = 10
# The origin's capacity: 8 at a time; the quietest sources first while they wait.
[zones.concurrency]
max_in_flight = 8
max_queue = 512
queue_timeout_ms = 2000
# What a mitigated flood gets: 429 (the default, DDOS_ACTION=block), or DDOS_ACTION=drop: no
# answer (a reset), and a mitigated source's new connections reset at accept.
[zones.ddos]
action = "$DDOS_ACTION"
TOML

cat > "$work/nginx.conf" <<NGINX
worker_processes $WORKERS;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err crit;
worker_rlimit_nofile 20000;
events { worker_connections 9000; }
http {
  access_log off;
  limit_req_zone \$binary_remote_addr zone=perip:10m rate=10r/s;
  limit_conn_zone \$binary_remote_addr zone=connip:10m;
  client_header_timeout 5s;
  client_body_timeout 5s;
  send_timeout 5s;
  keepalive_timeout 15s;
  reset_timedout_connection on;
  upstream origin { server $origin; keepalive 64; }
  server {
    listen 127.0.0.1:$PORT reuseport;
    limit_req zone=perip burst=10 nodelay;
    limit_conn connip 10;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_connect_timeout 2s;
      proxy_read_timeout 5s;
    }
  }
}
NGINX

cat > "$work/haproxy.cfg" <<HAPROXY
global
  maxconn 9000
  nbthread $WORKERS
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 15s
  timeout server 5s
  timeout http-request 5s
  timeout http-keep-alive 15s
  timeout queue 2s
frontend fe
  bind 127.0.0.1:$PORT
  stick-table type ip size 100k expire 30s store http_req_rate(1s),conn_cur
  tcp-request connection track-sc0 src
  tcp-request connection reject if { sc_conn_cur(0) gt 10 }
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 10 }
  default_backend be
backend be
  server o1 $origin maxconn 8
HAPROXY

start_proxy() {
  case $1 in
    palisade)
      PALISADE_LOG=error $ON_PROXY "$BIN" edge --config "$work/palisade.toml" --workers "$WORKERS" > "$work/p.out" 2> "$work/p.err" &
      until grep -q "ready" "$work/p.out"; do sleep 0.05; done
      ;;
    nginx) $ON_PROXY nginx -c "$work/nginx.conf" 2> "$work/p.err" & ;;
    haproxy) $ON_PROXY haproxy -f "$work/haproxy.cfg" > /dev/null 2> "$work/p.err" & ;;
  esac
  pid=$!
  for _ in $(seq 200); do curl -s -o /dev/null -H "Host: site.example" "http://127.0.0.1:$PORT/" && return; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  echo "$1 did not start:" >&2; cat "$work/p.err" >&2; exit 1
}
# CPU ticks of the proxy and its children: "user system".
cpu_ticks() {
  local u=0 s=0 p
  for p in $pid $(pgrep -P "$pid" || true); do
    read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo 0 0)
    u=$((u + pu)) s=$((s + ps))
  done
  echo "$u $s"
}
attack_args() {
  case $1 in
    a) echo "--attack flood --attack-ips 1 --attack-conns 200" ;;
    b) echo "--attack flood --attack-ips 250 --attack-conns 2000 --attack-rate-per-ip 8" ;;
    c) echo "--attack slowloris --attack-ips 250 --attack-conns 1000" ;;
  esac
}

echo "origin: 8 workers x 10 ms; 50 legitimate clients at 1 req/s; ${WARMUP}s warm-up, then ${DURATION}s of attack; $(nproc) cores; proxy workers: $WORKERS$([ "$PIN" = 1 ] && echo ", pinned to core 0")"
printf "%-9s %-6s %9s %9s %9s %14s %13s %10s %14s %10s\n" proxy attack legit_ok% legit_p50 legit_p99 mitigated_after attack_2xx refused cpu_ms/1k_refused user/sys
for attack in $ATTACKS; do
  for proxy in $PROXIES; do
    start_proxy "$proxy"
    before=$(cpu_ticks)
    # Legitimate clients and the attack in processes of their own: a client's latency is the
    # proxy's, not the attacking process's scheduling.
    $ON_REST "$GEN" --target "127.0.0.1:$PORT" --warmup-s "$WARMUP" --duration-s "$DURATION" > "$work/legit.json" 2> "$work/legit.err" &
    legit_pid=$!
    # shellcheck disable=SC2046
    $ON_REST "$GEN" --target "127.0.0.1:$PORT" --warmup-s "$WARMUP" --duration-s "$DURATION" --legit 0 $(attack_args "$attack") > "$work/attack.json"
    wait $legit_pid
    after=$(cpu_ticks)
    python3 -c 'import json,sys; l=json.load(open(sys.argv[1])); a=json.load(open(sys.argv[2])); a["legit"]=l["legit"]; a["legit_before"]=l["legit_before"]; print(json.dumps(a))' \
      "$work/legit.json" "$work/attack.json" > "$work/out.json"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    [ -f "$work/nginx.pid" ] && { kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; rm -f "$work/nginx.pid"; }
    cp "$work/out.json" "$results/$proxy-$attack.json"
    python3 - "$work/out.json" "$proxy" "$attack" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
o = json.load(open(sys.argv[1])); proxy, attack = sys.argv[2], sys.argv[3]
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[4:6]); hz = int(sys.argv[6])
ticks = (u1 - u0) + (s1 - s0)
a = o["attack_requests"]; l = o["legit"]
# Refused: answered with an error, or the connection closed without an answer.
refused = a["429"] + a["503"] + a["other"] + a["conn_errors"]
per = lambda t: "-" if refused == 0 else "%.1f" % (t * 1000.0 / hz / refused * 1000)
cpu = per(ticks)
split = "-" if refused == 0 else "%s/%s" % (per(u1 - u0), per(s1 - s0))
m = o["mitigated_after_s"]
print("%-9s %-6s %9.2f %9.1f %9.1f %14s %13d %10d %14s %10s" % (proxy, attack, l["success_pct"], l["p50_ms"], l["p99_ms"],
      "-" if m is None else "%.2f s" % m, a["2xx"], refused, cpu, split))
if l["errors"]:
    print("          legit failures: %s" % json.dumps(l["errors"]))
PY
    sleep 1
  done
done
