"""Side-by-side cache benchmark. See bench/cache.sh; all traffic stays on 127.0.0.1."""
import asyncio, json, os, shutil, statistics, sys, tempfile, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import NGINX, PALISADE, start, stop_all, wait_port, hwm_kib, wrk
import benchlib

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
WARMUP = int(os.environ.get("WARMUP", "2"))
SIZES = os.environ.get("SIZES", "1k 100k").split()
CONNS = [int(c) for c in os.environ.get("CONNS", "64 256").split()]
HERD = int(os.environ.get("HERD", "1000"))
FILE_ORIGIN, DEMO_ORIGIN, NGX_MEM, NGX_DISK, PAL, PAL_ADMIN = 18110, 18111, 18112, 18113, 18114, 18115

work = tempfile.mkdtemp(prefix="palisade-cache-bench-")
os.chmod(work, 0o755)
www = os.path.join(work, "www")
os.makedirs(www, mode=0o755)
for name, size in (("1k", 1024), ("100k", 100 * 1024)):
    with open(os.path.join(www, name), "wb") as f:
        f.write(b"x" * size)
# nginx's memory-backed zone lives on tmpfs; its disk zone on the work directory's disk.
shm = tempfile.mkdtemp(prefix="ngx-cache-", dir="/dev/shm")
os.chmod(shm, 0o777)
disk = os.path.join(work, "ngx-disk")
os.makedirs(disk, mode=0o777)

# The origin for throughput: nginx serving files, cacheable for an hour.
origin_conf = benchlib.nginx_conf(work, "origin", 2, f"""listen 127.0.0.1:{FILE_ORIGIN}; root {www};
    sendfile on; tcp_nopush on; add_header Cache-Control "public, max-age=3600";""")
cache_paths = (f"proxy_cache_path {shm} levels=1:2 keys_zone=mem:64m max_size=1g inactive=1h use_temp_path=off;\n"
               f"  proxy_cache_path {disk} levels=1:2 keys_zone=disk:64m max_size=1g inactive=1h use_temp_path=off;")
upstreams = (f"upstream files {{ server 127.0.0.1:{FILE_ORIGIN}; keepalive 256; }}\n"
             f"  upstream demo {{ server 127.0.0.1:{DEMO_ORIGIN}; keepalive 256; }}")


def nginx_cache(name, port, zone):
    # proxy_cache_lock: nginx's request coalescing (off by default), on for the herd.
    return benchlib.nginx_conf(work, name, 2, f"""listen 127.0.0.1:{port};
    location /cache/ {{ proxy_pass http://demo; proxy_http_version 1.1; proxy_set_header Connection "";
                       proxy_cache {zone}; proxy_cache_lock on; proxy_cache_lock_timeout 5s; }}
    location / {{ proxy_pass http://files; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffers 16 16k; proxy_buffer_size 16k; proxy_cache {zone}; proxy_cache_lock on;
                 add_header X-Cache $upstream_cache_status; }}""", upstreams, cache_paths)


ngx_mem_conf = nginx_cache("nginx-mem", NGX_MEM, "mem")
ngx_disk_conf = nginx_cache("nginx-disk", NGX_DISK, "disk")
palisade_conf = os.path.join(work, "palisade.toml")
with open(palisade_conf, "w") as f:
    f.write(f"""
[listen]
http = "127.0.0.1:{PAL}"
admin = "127.0.0.1:{PAL_ADMIN}"
[limits]
max_connections_per_ip = 20000
[[zones]]
name = "files"
hostnames = ["127.0.0.1", "localhost"]
origins = [{{ address = "127.0.0.1:{FILE_ORIGIN}" }}]
# One address sending 60 000+ requests a second is what the DDoS detector is for; nginx has
# nothing of the kind running, so it is off here.
[zones.ddos]
enabled = false
[[zones]]
name = "demo"
hostnames = ["demo.test"]
origins = [{{ address = "127.0.0.1:{DEMO_ORIGIN}" }}]
""")


def origin_requests():
    """Requests the demo origin has served, not counting this question itself."""
    with urllib.request.urlopen(f"http://127.0.0.1:{DEMO_ORIGIN}/__origin/stats") as r:
        return json.load(r)["requests"] - 1


async def one(port, path, host):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    data = await r.read()
    w.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


async def herd(port, path, host):
    statuses = await asyncio.gather(*(one(port, path, host) for _ in range(HERD)), return_exceptions=True)
    return sum(1 for s in statuses if s == 200)


print(f"palisade: {PALISADE}")
try:
    start([NGINX, "-c", origin_conf])
    start([PALISADE, "origin", "--listen", f"127.0.0.1:{DEMO_ORIGIN}", "--name", "demo"])
    ngx_mem = start([NGINX, "-c", ngx_mem_conf])
    ngx_disk = start([NGINX, "-c", ngx_disk_conf])
    pal = start([PALISADE, "edge", "--config", palisade_conf] + os.environ.get("PALISADE_ARGS", "").split())
    for p in (FILE_ORIGIN, DEMO_ORIGIN, NGX_MEM, NGX_DISK, PAL):
        wait_port(p)
    contenders = {"nginx-mem": (NGX_MEM, ngx_mem), "nginx-disk": (NGX_DISK, ngx_disk), "palisade": (PAL, pal)}

    # The thundering herd: HERD concurrent requests for one cold key on a slow origin (1 s).
    herd_rows = []
    for name, (port, _) in contenders.items():
        host = "demo.test" if name == "palisade" else "127.0.0.1"
        path = f"/cache/herd-{name}?ms=1000&h=cache-control%3Amax-age%3D600"
        before = origin_requests() + 1  # the question counts itself
        ok = asyncio.run(herd(port, path, host))
        herd_rows.append((name, ok, origin_requests() - before))
        print(f"herd {name:<10} {ok}/{HERD} answered 200, origin requests {herd_rows[-1][2]}", flush=True)

    results = {}
    for r in range(ROUNDS):
        names = list(contenders)
        order = names[r % len(names):] + names[:r % len(names)]
        for size in SIZES:
            for c in CONNS:
                for name in order:
                    port, _ = contenders[name]
                    res = wrk(f"http://127.0.0.1:{port}/{size}", c, DURATION, WARMUP)
                    if res[3]:
                        sys.exit(f"{name} answered {res[3]} non-2xx responses: the cell is not a fair comparison")
                    results.setdefault((size, c, name), []).append(res)
                    print(f"round {r+1} {size:>4} c{c:<3} {name:<10} {res[0]:>9.0f} req/s  p50 {res[1]:.2f} ms  p99 {res[2]:.2f} ms"
                          + (f"  socket errors: {res[4]}" if res[4] else ""), flush=True)
    rss = {name: hwm_kib(p.pid) for name, (_, p) in contenders.items()}
    print()
    print(f"cache hits: median of {ROUNDS} rounds, {DURATION} s each after a {WARMUP} s warm-up, wrk -t2, 2 workers each; all on 127.0.0.1")
    print("paired: median of the per-round ratios palisade / nginx")
    print(f"{'cell':<10} {'nginx-mem':>10} {'nginx-disk':>11} {'palisade':>9} {'vs mem':>7} {'vs disk':>8}   p50/p99 ms: {'nginx-mem':>15} {'nginx-disk':>15} {'palisade':>15}")
    for size in SIZES:
        for c in CONNS:
            med = {n: [statistics.median(x) for x in zip(*[v[:3] for v in results[(size, c, n)]])] for n in contenders}
            paired = {n: statistics.median(p[0] / o[0] for p, o in zip(results[(size, c, "palisade")], results[(size, c, n)]))
                      for n in ("nginx-mem", "nginx-disk")}
            lat = "  ".join(f"{med[n][1]:>6.2f} / {med[n][2]:<6.2f}" for n in contenders)
            print(f"{size+' c'+str(c):<10} {med['nginx-mem'][0]:>10.0f} {med['nginx-disk'][0]:>11.0f} {med['palisade'][0]:>9.0f} "
                  f"{paired['nginx-mem']:>7.2f} {paired['nginx-disk']:>8.2f}   {lat}")
    print()
    print(f"thundering herd: {HERD} concurrent requests for one cold key, origin answering in 1 s")
    for name, ok, n in herd_rows:
        print(f"  {name:<10} origin requests {n:>4}   answered 200: {ok}/{HERD}")
    print("peak RSS MiB: " + ", ".join(f"{n} {rss[n]/1024:.1f}" for n in contenders))
finally:
    stop_all()
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(shm, ignore_errors=True)
