"""Side-by-side proxy benchmark. See bench/proxy.sh; all traffic stays on 127.0.0.1."""
import os, shutil, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import NGINX, ROOT, PALISADE, start, stop_all, wait_port, hwm_kib, wrk as wrk_url
import benchlib

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
    return benchlib.nginx_conf(work, name, workers, server_block, upstream)

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
# One address sending 40 000+ requests a second, after idling while nginx ran, is what the DDoS
# detector is for (it answered 429 to it); nginx has nothing of the kind running, so it is off.
[zones.ddos]
enabled = false
""")

def wrk(port, size, conns):
    return wrk_url(f"http://127.0.0.1:{port}/{size}", conns, DURATION, WARMUP)

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
    stop_all()
    shutil.rmtree(work, ignore_errors=True)
