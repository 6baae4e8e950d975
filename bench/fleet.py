#!/usr/bin/env python3
"""Fleet propagation on loopback: a control plane, N edge node processes (default 50), a demo origin.

Measures, with steady traffic on every node:
  - good change: time from the rollout assigning a version to each node's ACK (p50 / p99 / max), and
    whether all N nodes ran it within 1 s; REPS rollouts of one stage ("100%", no bake);
  - kill switch: time from an operator switching a module off (or releasing it) to each node's
    acknowledgement (p50 / p99 / max);
  - bad push (the zone's origin is gone): time from the push to the rollout rolled back and every node
    on the good version again, with the default stages and a 30 s bake; failed requests per node.

    bench/fleet.sh                   # builds, then N=50 REPS=5
    N=20 REPS=3 bench/fleet.sh
    BACKEND=etcd bench/fleet.sh      # the same with two control-plane replicas on a 3-member etcd
                                     # cluster (Debian's etcd-server); half the nodes talk to each

Everything is on 127.0.0.1, bounded in time, and stops by itself.
"""
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

N = int(os.environ.get("N", "50"))
BACKEND = os.environ.get("BACKEND", "sqlite")
REPS = int(os.environ.get("REPS", "5"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PALISADE_BIN") or os.path.join(ROOT, "target", "release", "palisade")
OPERATOR = "0perat0r" * 5

work = tempfile.mkdtemp(prefix="palisade-fleet-")
procs = []


def start(args, ready):
    """Starts a palisade process and returns (proc, its ready line)."""
    p = subprocess.Popen([BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=dict(os.environ, PALISADE_LOG="error"))
    procs.append(p)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stdout.readline()
        if ready in line:
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, line
    raise SystemExit(f"no ready line from {args[0]}")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_etcd(n=3):
    """A fresh etcd cluster of n members on loopback; returns the client URLs."""
    ports = [(free_port(), free_port()) for _ in range(n)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
    urls = []
    for i, (client, peer) in enumerate(ports):
        url = f"http://127.0.0.1:{client}"
        procs.append(subprocess.Popen(
            ["etcd", "--name", f"m{i}", "--data-dir", os.path.join(work, f"etcd-m{i}"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", cluster, "--initial-cluster-state", "new",
             "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(url)
    deadline = time.time() + 30
    for url in urls:
        while True:
            try:
                host, port = url[len("http://"):].split(":")
                c = http.client.HTTPConnection(host, int(port), timeout=2)
                c.request("POST", "/v3/kv/range", body='{"key":"AA=="}')
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit(f"etcd member {url} not ready")
            time.sleep(0.1)
    return urls


def field(line, key):
    m = re.search(rf"{key}=(\S+)", line)
    return m.group(1)


def api(addr, method, path, body=None):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"authorization": f"Bearer {OPERATOR}", "content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


def config(origin, hosts):
    hs = ", ".join(f'"{h}"' for h in hosts)
    return (f'[listen]\nhttp = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n[[zones]]\nname = "site"\n'
            f'hostnames = [{hs}]\norigins = [{{ address = "{origin}" }}]\n')


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    with open(os.path.join(work, "tokens"), "w") as f:
        f.write(f"operator {OPERATOR}\n")
    names = [f"node{i:03d}" for i in range(N)]
    with open(os.path.join(work, "node-tokens"), "w") as f:
        for n in names:
            f.write(f"{n} {n}-{'t' * 32}\n")
    control = ["control", "--listen", "127.0.0.1:0", "--tokens", os.path.join(work, "tokens"),
               "--node-tokens", os.path.join(work, "node-tokens")]
    if BACKEND == "etcd":
        etcd = ",".join(start_etcd())
        replicas = []
        for r in ("a", "b"):
            _, line = start(control + ["--data-dir", os.path.join(work, f"control-{r}"), "--etcd", etcd, "--replica", r],
                            "palisade control ready")
            replicas.append(field(line, "http"))
        ctl = replicas[0]
        print(f"backend: etcd, 3 members; control-plane replicas at {replicas[0]} and {replicas[1]}; "
              f"half the nodes talk to each")
    else:
        _, line = start(control + ["--data-dir", os.path.join(work, "control")], "palisade control ready")
        ctl = field(line, "http")
        replicas = [ctl]
        print("backend: sqlite (one control plane)")
    _, line = start(["origin", "--listen", "127.0.0.1:0", "--name", "fleet-origin"], "palisade origin ready")
    origin = field(line, "http")
    boot = config(origin, ["site.example"])
    edges = {}
    t0 = time.time()
    for i, n in enumerate(names):
        d = os.path.join(work, n)
        os.makedirs(d)
        with open(os.path.join(d, "boot.toml"), "w") as f:
            f.write(boot)
        with open(os.path.join(d, "token"), "w") as f:
            f.write(f"{n}-{'t' * 32}")
        _, line = start(["edge", "--config", os.path.join(d, "boot.toml"), "--state-dir", os.path.join(d, "state"),
                         "--workers", "1", "--control", ",".join(f"http://{r}" for r in replicas[i % len(replicas):] + replicas[:i % len(replicas)]),
                         "--node-token-file", os.path.join(d, "token"),
                         "--city", n, "--report-interval-ms", "500"], "palisade edge ready")
        edges[n] = field(line, "http")
    while api(ctl, "GET", "/v1/nodes")[1]["nodes"].__len__() < N:
        time.sleep(0.05)
    print(f"{N} nodes started and registered in {time.time() - t0:.1f} s")

    # Steady traffic: every node, round robin, from a few threads with kept-alive connections.
    stop = threading.Event()
    failures = {n: 0 for n in names}
    served = {n: 0 for n in names}

    def visitor(mine):
        conns = {n: None for n in mine}
        while not stop.is_set():
            for n in mine:
                try:
                    if conns[n] is None:
                        h, p = edges[n].split(":")
                        conns[n] = http.client.HTTPConnection(h, int(p), timeout=5)
                    conns[n].request("GET", "/", headers={"host": "site.example"})
                    r = conns[n].getresponse()
                    r.read()
                    if r.status == 200:
                        served[n] += 1
                    else:
                        failures[n] += 1
                except Exception:
                    failures[n] += 1
                    conns[n] = None
            time.sleep(0.02)

    threads = [threading.Thread(target=visitor, args=(names[i::4],), daemon=True) for i in range(4)]
    for t in threads:
        t.start()

    # Good changes: one stage of 100 %, no bake; assignment -> ACK per node, from the audit log.
    lat = []
    worst = []
    hosts = ["site.example"]
    for rep in range(REPS):
        hosts.append(f"www{rep}.site.example")
        s, v = api(ctl, "POST", "/v1/versions", {"content": config(origin, hosts), "message": f"rep {rep}"})
        version = v["version"]["number"]
        s, v = api(ctl, "POST", "/v1/rollouts", {"version": version, "stages": ["100%"], "bake_ms": 0})
        rid = v["rollout"]["id"]
        while True:
            s, v = api(ctl, "GET", f"/v1/rollouts/{rid}")
            if v["rollout"]["state"] != "running":
                break
            time.sleep(0.05)
        assert v["rollout"]["state"] == "done", v
        assigned = next(e["at_ms"] for e in v["events"] if "assigned to" in e["message"])
        s, a = api(ctl, "GET", "/v1/audit?limit=1000")
        acks = [r["at_ms"] for r in a["records"]
                if r["action"] == "ack" and r["target"] == f"config v{version}" and r["actor"] in edges]
        assert len(acks) == N, f"{len(acks)} ACKs for v{version}"
        d = [x - assigned for x in acks]
        lat += d
        worst.append(max(d))
    print(f"good change, {REPS} rollouts x {N} nodes: assignment -> ACK p50 {statistics.median(lat):.0f} ms, "
          f"p99 {percentile(lat, 99):.0f} ms, max {max(lat)} ms; all {N} within 1 s in "
          f"{sum(1 for w in worst if w <= 1000)}/{REPS} rollouts (slowest node per rollout: {worst} ms)")

    # Kill switch: engaged -> each node's acknowledgement (audit times, control plane clock).
    klat = []
    for rep in range(REPS):
        for release in (False, True):
            if release:
                s, v = api(ctl, "DELETE", "/v1/killswitches/access_log")
            else:
                s, v = api(ctl, "POST", "/v1/killswitches", {"name": "access_log", "reason": f"bench {rep}"})
            gen = v["generation"]
            deadline = time.time() + 10
            while True:
                s, a = api(ctl, "GET", "/v1/audit?limit=1000")
                recs = a["records"]
                acks = [r["at_ms"] for r in recs if r["action"] == "killswitch ack" and r["target"] == f"generation {gen}"]
                if len(acks) == N or time.time() > deadline:
                    break
                time.sleep(0.05)
            flipped = next(r["at_ms"] for r in recs if r["action"] == "killswitch" and r["result"] in ("engaged", "released"))
            assert len(acks) == N, f"{len(acks)} nodes acknowledged generation {gen}"
            klat += [x - flipped for x in acks]
    print(f"kill switch, {2 * REPS} flips x {N} nodes: switch -> node ACK p50 {statistics.median(klat):.0f} ms, "
          f"p99 {percentile(klat, 99):.0f} ms, max {max(klat)} ms")

    # A bad push: default stages, 30 s bake; time until the whole fleet is back on the good version.
    good = version
    before = dict(failures)
    t_push = time.time()
    s, v = api(ctl, "POST", "/v1/versions", {"content": config("127.0.0.1:1", hosts), "message": "origin gone"})
    bad = v["version"]["number"]
    s, v = api(ctl, "POST", "/v1/rollouts", {"version": bad, "bake_ms": 30000})
    rid = v["rollout"]["id"]
    while True:
        s, v = api(ctl, "GET", f"/v1/rollouts/{rid}")
        if v["rollout"]["state"] != "running":
            break
        if time.time() - t_push > 120:
            raise SystemExit("bad rollout still running after 120 s")
        time.sleep(0.05)
    t_decided = time.time() - t_push
    while not all(n["applied"] == good for n in api(ctl, "GET", "/v1/nodes")[1]["nodes"]):
        time.sleep(0.05)
    t_back = time.time() - t_push
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    failed = {n: failures[n] - before[n] for n in names if failures[n] - before[n]}
    canary = names[0]
    outside = sum(c for n, c in failed.items() if n != canary)
    print(f"bad push (origin gone), stages 1/10%/50%/100%, 30 s bake: {v['rollout']['state']} after "
          f"{t_decided:.2f} s, every node on v{good} after {t_back:.2f} s")
    print(f"  reason: {v['rollout']['reason']}")
    print(f"  failed requests: canary ({canary}) {failed.get(canary, 0)}, other {N - 1} nodes {outside}; "
          f"requests served in the run: {sum(served.values())}")


try:
    main()
finally:
    for p in procs:
        try:
            p.send_signal(signal.SIGINT)
        except Exception:
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except Exception:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)
