#!/usr/bin/env python3
"""make bench: batond against etcd 3.4 on loopback, same workloads back to back.

Both servers run with the same flags (tests/compat/cluster.sh: heartbeat 100 ms, election
1000 ms; both fsync every commit, their default). Each round starts a fresh cluster of each
server (the order alternates between rounds), runs every workload with baton-bench, then
measures the data directories. Start-up (empty data dir -> first successful put) and failover
(kill -9 / SIGSTOP of the leader -> next successful put) run for both as well. The table shows
medians over the rounds and the ratio batond/etcd.

  scripts/bench.py [--members 1|3] [--rounds N] [--duration S] [--warmup S] [--only a,b]
                   [--lease-scale N [--lease-scale-duration S]]
--lease-scale N adds baton-bench lease-scale (issue 6: N leases, TTL 10 s, each renewed every
3 s over 4 connections x 4 streams, at most 64 unanswered per stream, then all revoked) on a fresh cluster of each server per
round; not in the default run (with N = 100000 it takes 1.5-3 minutes per server).
  SAVE=1 also writes bench/results/<date>.md
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "tests/compat/cluster.sh")

# name, baton-bench arguments, the figures compared (key in the JSON "ops", field, better)
WORKLOADS = [
    ("put-64", ["put", "--inflight", "64"], ("put", "per_s", "up")),
    ("put-1", ["put", "--inflight", "1", "--conns", "1"], ("put", "p99_ms", "down")),
    ("range-lin", ["range", "--inflight", "64"], ("range", "per_s", "up")),
    ("range-ser", ["range", "--inflight", "64", "--serializable"], ("range", "per_s", "up")),
    ("txn-cas", ["txn", "--inflight", "64"], ("txn", "per_s", "up")),
    ("mixed-90r", ["mixed", "--inflight", "64", "--read-ratio", "0.9"], ("range", "per_s", "up")),
    ("watch-16", ["watch", "--inflight", "16", "--conns", "4", "--streams", "4"],
     ("event", "p99_ms", "down")),
    ("lease", ["lease", "--inflight", "16", "--conns", "4", "--streams", "4"],
     ("grant", "per_s", "up")),
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, text=True, capture_output=True, **kw)


class Cluster:
    def __init__(self, server, n):
        self.server, self.n = server, n
        self.dir = tempfile.mkdtemp(prefix="baton-bench.")
        os.rmdir(self.dir)
        env = dict(os.environ, CLUSTER_OWNER_PID=str(os.getpid()))
        sh(CLUSTER, "up", server, str(n), self.dir, env=env)
        self.env = self._read_env()

    def _read_env(self):
        env = {}
        with open(os.path.join(self.dir, "cluster.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                env[k] = v
        return env

    def endpoints(self):
        return self.env["CLUSTER_ENDPOINTS"]

    def pid(self, i):
        with open(os.path.join(self.dir, "m%d.pid" % i)) as f:
            return int(f.read())

    def pids(self):
        return [self.pid(i) for i in range(1, self.n + 1)]

    def leader(self):
        """Member index whose metrics say etcd_server_is_leader 1 (both servers export it)."""
        for _ in range(100):
            for i in range(1, self.n + 1):
                port = self.env["CLUSTER_METRICS_PORT_%d" % i]
                try:
                    body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port,
                                                  timeout=1).read().decode()
                except OSError:
                    continue
                for line in body.splitlines():
                    if line.startswith("etcd_server_is_leader ") and line.split()[1] in ("1", "1.0"):
                        return i
            time.sleep(0.1)
        raise RuntimeError("no leader found in %s" % self.dir)

    def data_bytes(self):
        total = 0
        for i in range(1, self.n + 1):
            d = os.path.join(self.dir, "m%d.data" % i)
            for root, _, files in os.walk(d):
                for f in files:
                    try:
                        total += os.stat(os.path.join(root, f)).st_blocks * 512
                    except OSError:
                        pass
        return total // self.n

    def down(self):
        sh(CLUSTER, "down", self.dir, check=False)


def run_bench(bench, args, endpoints, pids, duration, warmup, timeout=None):
    cmd = [bench, "--endpoints", endpoints, "--duration", str(duration), "--warmup", str(warmup),
           "--json"]
    if pids:
        cmd += ["--server-pids", ",".join(map(str, pids))]
    cmd += args
    p = subprocess.run(cmd, text=True, capture_output=True,
                       timeout=timeout or (duration + warmup) * 4 + 60)
    if p.returncode == 3:
        return {"unsupported": True}
    if p.returncode != 0:
        log("  baton-bench failed (%d): %s %s" % (p.returncode, p.stderr.strip(), " ".join(cmd)))
        return None
    return json.loads(p.stdout)


def load_round(name, server, a, bench, results):
    c = Cluster(server, a.members)
    try:
        for wname, wargs, _ in WORKLOADS:
            if a.only and wname not in a.only:
                continue
            r = run_bench(bench, wargs + ["--keys", str(a.keys)], c.endpoints(), c.pids(),
                          a.duration, a.warmup)
            results.setdefault((name, wname), []).append(r)
            if r and not r.get("unsupported"):
                log("  %s %-10s %s" % (name, wname, summary(r)))
            elif r:
                log("  %s %-10s not supported by this server yet" % (name, wname))
        results.setdefault((name, "_disk"), []).append(c.data_bytes())
    finally:
        c.down()


def summary(r):
    parts = []
    for op, s in r["ops"].items():
        parts.append("%s %.0f/s p99 %.2f ms" % (op, s["per_s"], s["p99_ms"]))
    parts.append("srv %.0f us/op" % r.get("server_cpu_us_per_op", -1))
    parts.append("cli %.0f us/op" % r["client_cpu_us_per_op"])
    return ", ".join(parts)


def startup_round(server, n, bench):
    d = tempfile.mkdtemp(prefix="baton-start.")
    os.rmdir(d)
    env = dict(os.environ, CLUSTER_OWNER_PID=str(os.getpid()))
    up = subprocess.Popen([CLUSTER, "up", server, str(n), d], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        envf = os.path.join(d, "cluster.env")
        deadline = time.time() + 30
        while not os.path.exists(envf) or not os.path.exists(os.path.join(d, "m%d.pid" % n)):
            if time.time() > deadline:
                return None
            time.sleep(0.002)
        # The origin: when cluster.sh wrote cluster.env, right before it started the members.
        t0 = os.stat(envf).st_mtime_ns
        eps = None
        with open(envf) as f:
            for line in f:
                if line.startswith("CLUSTER_ENDPOINTS="):
                    eps = line.strip().split("=", 1)[1]
        r = run_bench(bench, ["startup", "--since-ns", str(t0)], eps, [], 30, 0, timeout=60)
        return r.get("startup_ms") if r and r.get("startup_ms") else None
    finally:
        up.wait(timeout=90)
        sh(CLUSTER, "down", d, check=False)


def failover_rounds(server, bench, rounds, results, name):
    c = Cluster(server, 3)
    try:
        for sig in ("KILL", "STOP"):
            for _ in range(rounds):
                li = c.leader()
                others = [c.env["CLUSTER_CLIENT_PORT_%d" % i] for i in range(1, 4) if i != li]
                eps = ",".join("127.0.0.1:" + p for p in
                               [c.env["CLUSTER_CLIENT_PORT_%d" % li]] + others)
                cmd = [bench, "--endpoints", eps, "--duration", "6", "--warmup", "0",
                       "--timeout-ms", "300", "--json", "failover"]
                p = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
                time.sleep(2)
                pid = c.pid(li)
                if sig == "KILL":
                    sh(CLUSTER, "kill", c.dir, str(li), "KILL")
                else:
                    os.kill(pid, 19)  # SIGSTOP
                out, err = p.communicate(timeout=60)
                if sig == "STOP":
                    os.kill(pid, 18)  # SIGCONT
                    time.sleep(1)
                else:
                    sh(CLUSTER, "start", c.dir, str(li))
                gap = None
                if p.returncode == 0:
                    gap = json.loads(out).get("max_gap_ms")
                else:
                    log("  failover probe failed: %s" % err.strip())
                results.setdefault((name, "_failover_" + sig), []).append(gap)
                log("  %s failover %s: %s ms" % (name, sig, gap))
                sh(CLUSTER, "wait", c.dir, "30", check=False)
    finally:
        c.down()


LEASE_SCALE_FIGS = [
    ("renewals_per_s", "renewals/s answered", 0),
    ("expired_pct", "leases answered TTL 0, %", 2),
    ("lapsed_pct", "leases > TTL without renewal, %", 2),
    ("lost_pct", "leases lost (either), %", 2),
    ("server_cores", "server cores during keep-alive", 3),
    ("server_us_per_renewal", "server CPU us per renewal", 1),
    ("renew_p50_ms", "renewal p50 ms", 2),
    ("renew_p99_ms", "renewal p99 ms", 2),
    ("grants_per_s", "grants/s", 0),
    ("revoke_s", "revoke all, s", 1),
    ("client_cores", "client cores during keep-alive", 3),
]


def lease_scale_rounds(servers, a, results):
    args = ["lease-scale", "--leases", str(a.lease_scale), "--ttl", "10", "--renew-ms", "3000",
            "--conns", "4", "--streams", "4", "--inflight", "64",
            # At most 64 unanswered keep-alives per stream from the client, the same for both
            # servers: a client that never waits only measures how deep each server queues.
            "--stream-window", "64"]
    for rnd in range(a.rounds):
        order = servers if rnd % 2 == 0 else servers[::-1]
        for name, path in order:
            c = Cluster(path, a.members)
            try:
                r = run_bench(a.bench, args, c.endpoints(), c.pids(), a.lease_scale_duration, 2,
                              timeout=a.lease_scale_duration * 3 + a.lease_scale / 200 + 120)
            finally:
                c.down()
            results.setdefault((name, "_lease_scale"), []).append(r)
            if r and not r.get("unsupported"):
                log("  %s lease-scale %d: %.0f renewals/s, expired %.2f%%, lapsed %.2f%%, "
                    "server %.3f cores, %.1f us/renewal, revoke %.1f s" % (
                        name, a.lease_scale, r["renewals_per_s"], r["expired_pct"],
                        r["lapsed_pct"], r.get("server_cores", -1),
                        r.get("server_us_per_renewal", -1), r["revoke_s"]))


def lease_scale_table(results, a):
    rb, re_ = results.get(("batond", "_lease_scale"), []), results.get(("etcd", "_lease_scale"), [])
    L = ["", "lease-scale: %d leases, TTL 10 s, renewed every 3 s, 4 conns x 4 streams, "
         "%g s measured, %d member(s), medians of %d round(s)"
         % (a.lease_scale, a.lease_scale_duration, a.members, a.rounds), "",
         "| figure | batond | etcd | batond/etcd |", "|---|---|---|---|"]
    for key, label, nd in LEASE_SCALE_FIGS:
        b, e = top(rb, key), top(re_, key)
        L.append("| %s | %s | %s | %s |" % (label, fmt(b, nd), fmt(e, nd), ratio(b, e)))
    return "\n".join(L)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fig(rs, op, field):
    vals = []
    for r in rs or []:
        if r and not r.get("unsupported") and op in r.get("ops", {}):
            vals.append(r["ops"][op][field])
    return med(vals)


def top(rs, key):
    return med([r.get(key) for r in rs or [] if r and not r.get("unsupported")])


def unsupported(rs):
    return bool(rs) and all(r and r.get("unsupported") for r in rs)


def fmt(x, nd=1):
    if x is None:
        return "-"
    return ("%%.%df" % nd) % x


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else "%.2f" % (a / b)


def table(results, a, extra):
    L = []
    L.append("baton vs etcd 3.4, %d member(s) on loopback, %d round(s), medians; "
             "%g s measured after %g s warm-up per workload; key 16 B, value 256 B, %d keys"
             % (a.members, a.rounds, a.duration, a.warmup, a.keys))
    L.append("")
    L.append("| workload | figure | batond | etcd | batond/etcd | srv CPU us/op batond | etcd "
             "| ratio | client CPU us/op (b/e) |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for wname, _, (op, field, _) in WORKLOADS:
        if a.only and wname not in a.only:
            continue
        rb, re_ = results.get(("batond", wname)), results.get(("etcd", wname))
        unit = "ops/s" if field == "per_s" else "p99 ms"
        if unsupported(rb):
            L.append("| %s | %s | not supported by this server yet | %s | - | - | - | - | - |"
                     % (wname, unit, fmt(fig(re_, op, field), 2)))
            continue
        rows = [(unit, field)]
        if field == "per_s":
            rows.append(("p99 ms", "p99_ms"))
        for i, (u, f) in enumerate(rows):
            b, e = fig(rb, op, f), fig(re_, op, f)
            if i == 0:
                cb, ce = top(rb, "server_cpu_us_per_op"), top(re_, "server_cpu_us_per_op")
                L.append("| %s | %s %s | %s | %s | %s | %s | %s | %s | %s / %s |" % (
                    wname, op, u, fmt(b, 2), fmt(e, 2), ratio(b, e), fmt(cb, 0), fmt(ce, 0),
                    ratio(cb, ce), fmt(top(rb, "client_cpu_us_per_op")),
                    fmt(top(re_, "client_cpu_us_per_op"))))
            else:
                L.append("| | %s %s | %s | %s | %s | | | | |" % (op, u, fmt(b, 2), fmt(e, 2),
                                                              ratio(b, e)))
    L.append("")
    def max_mib(key):
        out = {}
        for name in ("batond", "etcd"):
            vals = []
            for (n, w), rs in results.items():
                if n == name and not w.startswith("_"):
                    vals += [r.get(key) for r in rs
                             if r and not r.get("unsupported") and r.get(key)]
            out[name] = max(vals) / 1024 if vals else None
        return out
    rss, anon = max_mib("server_rss_max_kb"), max_mib("server_anon_max_kb")
    db, de = med(results.get(("batond", "_disk"), [])), med(results.get(("etcd", "_disk"), []))
    L.append("| resource | batond | etcd | batond/etcd |")
    L.append("|---|---|---|---|")
    L.append("| peak RSS per member, MiB (max VmHWM) | %s | %s | %s |" % (
        fmt(rss["batond"]), fmt(rss["etcd"]), ratio(rss["batond"], rss["etcd"])))
    # Both map their data file: VmHWM counts the file's pages they touched (page cache, shared
    # and reclaimable); RssAnon is the memory of the process itself.
    L.append("| private RSS per member after a workload, MiB (max RssAnon) | %s | %s | %s |" % (
        fmt(anon["batond"]), fmt(anon["etcd"]), ratio(anon["batond"], anon["etcd"])))
    L.append("| data dir per member after the load, MiB | %s | %s | %s |" % (
        fmt(db and db / 2**20), fmt(de and de / 2**20), ratio(db, de)))
    for key, label in extra:
        b, e = med(results.get(("batond", key), [])), med(results.get(("etcd", key), []))
        nb = len([x for x in results.get(("batond", key), []) if x is not None])
        ne = len([x for x in results.get(("etcd", key), []) if x is not None])
        L.append("| %s (n=%d/%d) | %s | %s | %s |" % (label, nb, ne, fmt(b), fmt(e), ratio(b, e)))
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--no-startup", action="store_true")
    ap.add_argument("--no-failover", action="store_true")
    ap.add_argument("--lease-scale", type=int, default=0, metavar="N",
                    help="also run lease-scale with N leases (off by default)")
    ap.add_argument("--lease-scale-duration", type=float, default=60)
    ap.add_argument("--batond", default=os.path.join(ROOT, "build/release/src/cmd/batond/batond"))
    ap.add_argument("--bench", default=os.path.join(
        ROOT, "build/release/src/cmd/baton-bench/baton-bench"))
    ap.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd")
    a = ap.parse_args()
    a.only = [x for x in a.only.split(",") if x]
    servers = [("batond", a.batond), ("etcd", a.etcd)]
    for _, path in servers + [("baton-bench", a.bench)]:
        if not os.access(path, os.X_OK):
            sys.exit("bench: %s is not executable (make build; scripts/deps.sh for etcd)" % path)
    t_start = time.time()
    results = {}
    for rnd in range(a.rounds):
        order = servers if rnd % 2 == 0 else servers[::-1]
        for name, path in order:
            log("round %d/%d: %s, %d member(s)" % (rnd + 1, a.rounds, name, a.members))
            load_round(name, path, a, a.bench, results)
    extra = []
    if not a.no_startup:
        sizes = [1, 3] if a.members == 3 else [1]
        for n in sizes:
            key = "_startup_%d" % n
            extra.append((key, "start-up to first put, %d member(s), ms" % n))
            for rnd in range(a.rounds):
                order = servers if rnd % 2 == 0 else servers[::-1]
                for name, path in order:
                    ms = startup_round(path, n, a.bench)
                    log("  %s start-up %d member(s): %s ms" % (name, n, ms))
                    results.setdefault((name, key), []).append(ms)
    if not a.no_failover and a.members == 3:
        extra.append(("_failover_KILL", "failover kill -9 leader -> next put, ms"))
        extra.append(("_failover_STOP", "failover SIGSTOP leader -> next put, ms"))
        for name, path in servers:
            failover_rounds(path, a.bench, a.rounds, results, name)
    if a.lease_scale > 0:
        lease_scale_rounds(servers, a, results)
    out = table(results, a, extra)
    if a.lease_scale > 0:
        out += "\n" + lease_scale_table(results, a)
    out += "\n\ntotal bench time %.0f s; load average at the end %s\n" % (
        time.time() - t_start, " ".join(open("/proc/loadavg").read().split()[:3]))
    print(out)
    if os.environ.get("SAVE") == "1":
        d = os.path.join(ROOT, "bench/results")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "%s%s.md" % (datetime.datetime.now().strftime("%Y-%m-%d-%H%M"),
                                            "" if a.members == 3 else "-single"))
        with open(path, "w") as f:
            f.write("# baton bench, %s\n\n%s" % (datetime.datetime.now().isoformat(" ", "seconds"),
                                                 out))
        log("saved %s" % path)


if __name__ == "__main__":
    main()
