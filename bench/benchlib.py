"""What the side-by-side benches share: processes, ports, nginx configs, wrk runs. Loopback only."""
import os, re, signal, socket, subprocess, sys, time, shutil

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binary as shipped (scripts/build-release, passed by the shell script); a plain release
# build otherwise.
PALISADE = os.environ.get("PALISADE_BIN") or os.path.join(ROOT, "target", "release", "palisade")

procs = []


def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


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
    """Peak RSS of a process and its children, in KiB."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+)", f.read())
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def nginx_conf(work, name, workers, server_block, upstream="", http_extra=""):
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
  {http_extra}
  {upstream}
  server {{ {server_block} }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)", v)
    n, u = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[u]


def wrk(url, conns, duration, warmup):
    """(req/s, p50 ms, p99 ms, non-2xx count, socket errors) of one wrk -t2 run after a warm-up."""
    if warmup > 0:
        subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{warmup}s", url], capture_output=True, text=True)
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True).stdout
    if "Requests/sec" not in out or not re.search(r"\s99(\.000)?%\s+\S+", out):
        sys.exit(f"wrk against {url} gave no result:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50(?:\.000)?%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99(?:\.000)?%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return rps, p50, p99, (int(errors.group(1)) if errors else 0), (sock.group(1) if sock else "")
