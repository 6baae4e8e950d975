"""Side-by-side proxy benchmark. See bench/proxy.sh; all traffic stays on 127.0.0.1."""
import os, re, shutil, signal, statistics, subprocess, sys, tempfile, time, socket

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
# A discarded run of this many seconds before each measured one. Without it, whichever
# contender ran first in a cell measured 8-15 % low (the machine still settling from the
# previous cell's load), which the alternating order turned into noise in the ratios.
WARMUP = int(os.environ.get("WARMUP", "2"))
SIZES = os.environ.get("SIZES", "1k 100k").split()
CONNS = [int(c) for c in os.environ.get("CONNS", "64 256").split()]
WITH_BASELINE = os.environ.get("BASELINE", "0") == "1"
# EQUAL_WORK=1: also nginx made to add what palisade adds to every exchange (X-Forwarded-*,
# Forwarded, Via, CDN-Loop and a request ID to the origin; Via and X-Request-Id to the client).
WITH_EQUAL_WORK = os.environ.get("EQUAL_WORK", "0") == "1"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binary as shipped, from scripts/build-release (bench/proxy.sh passes it); a plain release
# build otherwise.
PALISADE = os.environ.get("PALISADE_BIN") or os.path.join(ROOT, "target", "release", "palisade")
BASELINE = os.path.join(ROOT, "bench", "hyper-baseline", "target", "release", "hyper-baseline")
ORIGIN_PORT, NGINX_PORT, PALISADE_PORT, ADMIN_PORT, BASELINE_PORT, NGINX_FWD_PORT = 18100, 18101, 18102, 18103, 18104, 18105

work = tempfile.mkdtemp(prefix="palisade-bench-")
os.chmod(work, 0o755)  # nginx workers run unprivileged and must read the files
www = os.path.join(work, "www")
os.makedirs(www, mode=0o755)
with open(os.path.join(www, "1k"), "wb") as f:
    f.write(b"x" * 1024)
with open(os.path.join(www, "100k"), "wb") as f:
    f.write(b"x" * 100 * 1024)

def nginx_conf(name, workers, server_block, upstream=""):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    conf = f"""
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 4096; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  {upstream}
  server {{ {server_block} }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path

origin_conf = nginx_conf("origin", 2, f"listen 127.0.0.1:{ORIGIN_PORT}; root {www}; sendfile on; tcp_nopush on;")
proxy_conf = nginx_conf(
    "proxy", 2,
    f"""listen 127.0.0.1:{NGINX_PORT};
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffers 16 16k; proxy_buffer_size 16k; }}""",
    upstream=f"upstream origin {{ server 127.0.0.1:{ORIGIN_PORT}; keepalive 256; }}",
)
proxy_fwd_conf = nginx_conf(
    "proxy-fwd", 2,
    f"""listen 127.0.0.1:{NGINX_FWD_PORT};
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffers 16 16k; proxy_buffer_size 16k;
                 proxy_set_header Host $host;
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                 proxy_set_header X-Forwarded-Proto $scheme;
                 proxy_set_header X-Forwarded-Host $host;
                 proxy_set_header Forwarded "for=$remote_addr;host=$host;proto=$scheme";
                 proxy_set_header Via "1.1 nginx";
                 proxy_set_header CDN-Loop "nginx";
                 proxy_set_header X-Request-Id $request_id;
                 add_header Via "1.1 nginx"; add_header X-Request-Id $request_id; }}""",
    upstream=f"upstream origin {{ server 127.0.0.1:{ORIGIN_PORT}; keepalive 256; }}",
)
palisade_conf = os.path.join(work, "palisade.toml")
with open(palisade_conf, "w") as f:
    f.write(f"""
[listen]
http = "127.0.0.1:{PALISADE_PORT}"
admin = "127.0.0.1:{ADMIN_PORT}"
[limits]
max_connections_per_ip = 20000
[[zones]]
name = "bench"
hostnames = ["127.0.0.1", "localhost"]
origins = [{{ address = "127.0.0.1:{ORIGIN_PORT}" }}]
""")

procs = []
def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(p)
    return p

def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")

def tree_pids(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(x) for x in out]

def hwm_kib(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+)", f.read())
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total

def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)", v)
    n, u = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[u]

def wrk(port, size, conns):
    if WARMUP > 0:
        subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{WARMUP}s", f"http://127.0.0.1:{port}/{size}"],
                       capture_output=True, text=True)
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{DURATION}s", "--latency", f"http://127.0.0.1:{port}/{size}"],
                         capture_output=True, text=True).stdout
    if "Requests/sec" not in out or not re.search(r"\s99(\.000)?%\s+\S+", out):
        sys.exit(f"wrk against port {port} gave no result:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50(?:\.000)?%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99(?:\.000)?%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return rps, p50, p99, (int(errors.group(1)) if errors else 0), (sock.group(1) if sock else "")

print(f"palisade: {PALISADE}")
try:
    start([NGINX, "-c", origin_conf])
    wait_port(ORIGIN_PORT)
    ngx = start([NGINX, "-c", proxy_conf])
    pal = start([PALISADE, "edge", "--config", palisade_conf] + os.environ.get("PALISADE_ARGS", "").split())
    wait_port(NGINX_PORT); wait_port(PALISADE_PORT)
    contenders = {"nginx": (NGINX_PORT, ngx), "palisade": (PALISADE_PORT, pal)}
    if WITH_EQUAL_WORK:
        fwd = start([NGINX, "-c", proxy_fwd_conf])
        wait_port(NGINX_FWD_PORT)
        contenders["nginx+headers"] = (NGINX_FWD_PORT, fwd)
    if WITH_BASELINE:
        base = start([BASELINE, f"127.0.0.1:{BASELINE_PORT}", f"127.0.0.1:{ORIGIN_PORT}", "2"])
        wait_port(BASELINE_PORT)
        contenders["hyper-baseline"] = (BASELINE_PORT, base)
    results = {}
    for r in range(ROUNDS):
        names = list(contenders)
        order = names[r % len(names):] + names[:r % len(names)]
        for size in SIZES:
            for c in CONNS:
                for name in order:
                    port, _ = contenders[name]
                    res = wrk(port, size, c)
                    if res[3]:
                        sys.exit(f"{name} answered {res[3]} non-2xx responses: the cell is not a fair comparison")
                    results.setdefault((size, c, name), []).append(res)
                    print(f"round {r+1} {size:>4} c{c:<3} {name:<14} {res[0]:>9.0f} req/s  p50 {res[1]:.2f} ms  p99 {res[2]:.2f} ms"
                          + (f"  non-2xx {res[3]}" if res[3] else "") + (f"  socket errors: {res[4]}" if res[4] else ""), flush=True)
    rss = {name: hwm_kib(p.pid) for name, (_, p) in contenders.items()}
    print()
    print(f"median of {ROUNDS} rounds, {DURATION} s each after a {WARMUP} s warm-up, wrk -t2; origin: nginx serving files; all on 127.0.0.1")
    b_head = f" {'baseline':>9} {'base/nginx':>11} {'pal/base':>9}" if WITH_BASELINE else ""
    print("pal/nginx: ratio of the medians; paired: median of the per-round ratios (each round's two runs are")
    print("back to back, so a machine that slows down or speeds up between rounds moves both alike)")
    print(f"{'cell':<12} {'nginx':>8} {'palisade':>9} {'pal/nginx':>10} {'paired':>7}{b_head}   {'p50/p99 ms: nginx':>19} {'palisade':>15}"
          + (f" {'baseline':>15}" if WITH_BASELINE else ""))
    for size in SIZES:
        for c in CONNS:
            med = {name: [statistics.median(x) for x in zip(*[v[:3] for v in results[(size, c, name)]])] for name in contenders}
            n, p = med["nginx"], med["palisade"]
            paired = statistics.median(pr[0] / nr[0] for pr, nr in zip(results[(size, c, "palisade")], results[(size, c, "nginx")]))
            line = f"{size+' c'+str(c):<12} {n[0]:>8.0f} {p[0]:>9.0f} {p[0]/n[0]:>10.2f} {paired:>7.2f}"
            lat = f"{n[1]:>8.2f} / {n[2]:<7.2f} {p[1]:>6.2f} / {p[2]:<6.2f}"
            if WITH_BASELINE:
                b = med["hyper-baseline"]
                line += f" {b[0]:>9.0f} {b[0]/n[0]:>11.2f} {p[0]/b[0]:>9.2f}"
                lat += f" {b[1]:>6.2f} / {b[2]:<6.2f}"
            print(f"{line}   {lat}")
    if WITH_EQUAL_WORK:
        print("palisade against nginx doing the same header work (paired ratio, p50/p99 ms of nginx+headers):")
        for size in SIZES:
            for c in CONNS:
                paired = statistics.median(pr[0] / nr[0] for pr, nr in zip(results[(size, c, "palisade")], results[(size, c, "nginx+headers")]))
                f = [statistics.median(x) for x in zip(*[v[:3] for v in results[(size, c, "nginx+headers")]])]
                print(f"{size+' c'+str(c):<12} nginx+headers {f[0]:>8.0f} req/s  palisade/nginx+headers {paired:.2f}  {f[1]:.2f} / {f[2]:.2f}")
    print(f"peak RSS: nginx (master+workers) {rss['nginx']/1024:.1f} MiB, palisade {rss['palisade']/1024:.1f} MiB "
          f"(ratio {rss['palisade']/max(rss['nginx'],1):.2f})"
          + (f", hyper-baseline {rss['hyper-baseline']/1024:.1f} MiB" if WITH_BASELINE else ""))
finally:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    shutil.rmtree(work, ignore_errors=True)
