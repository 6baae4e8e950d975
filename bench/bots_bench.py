"""Bot detection on a labelled traffic mix (bench/bots.sh): real clients against one node whose
zone scores every request (the built-in model) and challenges `bot.score lt 30`. Each client asks
for a path of its own, so the access log's BotScore says which client each score belongs to.
Headless Chromium is driven over WebDriver (chromedriver), a fresh session per visit, and
counts as reaching the site when the origin's page shows (after the challenge, if any)."""
import json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

N = int(os.environ.get("N", "50"))
VISITS = int(os.environ.get("VISITS", "10"))
LOADGEN = os.path.join(benchlib.ROOT, "target", "release", "palisade-loadgen")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ready_line(proc, marker="ready"):
    for line in proc.stdout:
        if marker in line:
            return line
    sys.exit("process ended before it was ready")


def webdriver(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["value"]


def chromium_visits(url, marker, visits):
    """Each visit in a new session (no clearance cookie): (reached, seconds per visit)."""
    port = free_port()
    driver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={port}"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    benchlib.procs.append(driver)
    ready_line(driver, "started successfully")
    reached, times = 0, []
    for _ in range(visits):
        profile = tempfile.mkdtemp(prefix="bots-chromium-")
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--host-resolver-rules=MAP * 127.0.0.1",
                     f"--user-data-dir={profile}"]}}}}
        session = webdriver(port, "POST", "/session", caps)["sessionId"]
        start = time.time()
        webdriver(port, "POST", f"/session/{session}/url", {"url": url})
        ok = False
        while time.time() - start < 30:
            if marker in webdriver(port, "GET", f"/session/{session}/source"):
                ok = True
                break
            time.sleep(0.05)
        times.append(time.time() - start)
        reached += ok
        webdriver(port, "DELETE", f"/session/{session}")
    return reached, times


def main():
    work = tempfile.mkdtemp(prefix="palisade-bots-")
    origin = subprocess.Popen([benchlib.PALISADE, "origin", "--listen", "127.0.0.1:0", "--name", "bots-origin"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    benchlib.procs.append(origin)
    origin_addr = ready_line(origin).split("http=")[1].split()[0]
    access = os.path.join(work, "access.log")
    config = os.path.join(work, "edge.toml")
    with open(config, "w") as f:
        f.write(f"""[listen]
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
[access_log]
target = "{access}"
[[zones]]
name = "site"
hostnames = ["site.example"]
origins = [{{ address = "{origin_addr}" }}]
[zones.ddos]
enabled = false
[zones.bot]
[[zones.rules]]
name = "automated"
expression = 'bot.score lt 30'
action = "challenge"
""")
    edge = subprocess.Popen([benchlib.PALISADE, "edge", "--config", config], stdout=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PALISADE_LOG": "error"})
    benchlib.procs.append(edge)
    edge_addr = ready_line(edge).split("http=")[1].split()[0]
    port = edge_addr.rsplit(":", 1)[1]
    base = f"http://{edge_addr}"
    host = {"Host": "site.example"}

    # Each client a path of its own: /bytes/N.
    clients = [
        ("curl", 1), ("python-requests", 2), ("wrk", 3), ("Rust client (own user agent)", 4),
        ("Rust client (Firefox's headers)", 6), ("headless Chromium", 5),
    ]
    def next_window():
        """Clients share 127.0.0.1: each starts in a behaviour window of its own (10 s)."""
        time.sleep(10 - time.time() % 10 + 0.1)

    reached, times = chromium_visits(f"http://site.example:{port}/bytes/5", "xxxxx", VISITS)
    next_window()
    for _ in range(N):
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Host: site.example", f"{base}/bytes/1"], check=True)
    next_window()
    import requests
    for _ in range(N):
        requests.get(f"{base}/bytes/2", headers=host, timeout=5)
    next_window()
    subprocess.run([LOADGEN, "--target", edge_addr, "--legit", "0", "--warmup-s", "0", "--duration-s", "1",
                    "--attack", "flood", "--attack-conns", "2", "--attack-rate-per-ip", str(N), "--attack-path", "/bytes/4"],
                   check=True, capture_output=True)
    subprocess.run([LOADGEN, "--target", edge_addr, "--legit", str(N), "--legit-path", "/bytes/6", "--warmup-s", "0",
                    "--duration-s", "2"], check=True, capture_output=True)
    next_window()
    subprocess.run(["wrk", "-t1", "-c2", "-d1s", "-H", "Host: site.example", f"{base}/bytes/3"],
                   check=True, capture_output=True)
    time.sleep(0.5)  # the access log's writer flushes behind the requests
    scores = {n: [] for n, _ in clients}
    by_path = {f"/bytes/{p}": n for n, p in clients}
    with open(access) as f:
        for line in f:
            r = json.loads(line)
            name = by_path.get(r["ClientRequestPath"])
            if name and "BotScore" in r:
                scores[name].append(r["BotScore"])
    print(f"built-in model, challenge at bot.score < 30; {N} requests (or 1-2 s) per scripted client, "
          f"{VISITS} fresh Chromium visits")
    print(f"{'client':34} {'requests':>8} {'min':>4} {'p10':>4} {'median':>6} {'p90':>4} {'max':>4} {'below 30':>9}")
    for name, _ in clients:
        s = sorted(scores[name])
        if not s:
            print(f"{name:34} {'0':>8}")
            continue
        q = lambda p: s[min(len(s) - 1, int(p * len(s)))]
        below = 100.0 * sum(1 for v in s if v < 30) / len(s)
        print(f"{name:34} {len(s):8d} {s[0]:4d} {q(0.1):4d} {statistics.median(s):6.0f} {q(0.9):4d} {s[-1]:4d} {below:8.1f}%")
    print(f"headless Chromium reached the origin in {reached}/{VISITS} fresh visits "
          f"(blocked: {100.0 * (VISITS - reached) / VISITS:.0f}%); median {statistics.median(times):.2f} s a visit, "
          f"challenge included")


try:
    main()
finally:
    benchlib.stop_all()
