#!/usr/bin/env python3
"""Runs one scripted sequence against mvcc (through mvcc-script) and against a throwaway real
etcd (through etcdctl -w json, and etcd's JSON gateway for Range options etcdctl 3.4 lacks),
normalises both, and diffs them. Exit 0 when equal, 1 on a difference, 77 (SKIPPED) when etcd
or etcdctl is not installed.

Usage: etcd_compare.py MVCC_SCRIPT_BINARY SEQUENCE_FILE
"""
import base64
import concurrent.futures
import difflib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

LEASES = []  # etcd lease ids in grant order: L1, L2, ...


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(s):
    return base64.b64encode(s.encode()).decode()


def unb64(s):
    return base64.b64decode(s).decode() if s else ""


def lease_name(i):
    i = int(i or 0)
    if i in LEASES:
        return "L%d" % (LEASES.index(i) + 1)
    return str(i)


def lease_id(name):
    if name.startswith("L"):
        k = int(name[1:]) - 1
        return LEASES[k] if 0 <= k < len(LEASES) else 999999
    return int(name)


def fmt_kv(kv):
    return "%s:%s:%d:%d:%d:%s" % (unb64(kv.get("key")), unb64(kv.get("value")),
                                  int(kv.get("create_revision", 0)),
                                  int(kv.get("mod_revision", 0)), int(kv.get("version", 0)),
                                  lease_name(kv.get("lease", 0)))


def fmt_range(r):
    return "rev=%d count=%d more=%d kvs=[%s]" % (
        int(r["header"]["revision"]), int(r.get("count", 0)), 1 if r.get("more") else 0,
        ",".join(fmt_kv(kv) for kv in r.get("kvs", [])))


def fmt_put(r):
    s = "rev=%d" % int(r["header"]["revision"])
    if r.get("prev_kv"):
        s += " prev=" + fmt_kv(r["prev_kv"])
    return s


def fmt_del(r):
    return "rev=%d deleted=%d prev=[%s]" % (int(r["header"]["revision"]), int(r.get("deleted", 0)),
                                          ",".join(fmt_kv(kv) for kv in r.get("prev_kvs", [])))


# Both stores are throwaway: keep them on tmpfs when there is one, so fsync costs nothing and the
# comparison's time goes to the commands themselves.
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class Etcd:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mvcc-etcd-", dir=SCRATCH)
        self.port = free_port()
        peer = free_port()
        url = "http://127.0.0.1:%d" % self.port
        purl = "http://127.0.0.1:%d" % peer
        self.log = open(os.path.join(self.dir, "etcd.log"), "w")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "cmp", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
             "--initial-cluster", "cmp=" + purl],
            stdout=self.log, stderr=self.log)
        self.env = dict(os.environ, ETCDCTL_API="3")
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("etcd exited; see " + self.log.name)
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("etcd did not become healthy")

    def ctl(self, args, stdin=None):
        p = subprocess.run(["etcdctl", "--endpoints=127.0.0.1:%d" % self.port, "-w", "json"] + args,
                           input=stdin, capture_output=True, text=True, env=self.env, timeout=20)
        if p.returncode != 0:
            errs = [l[len("Error: "):] for l in p.stderr.splitlines() if l.startswith("Error: ")]
            return None, (errs[-1] if errs else p.stderr.strip())
        return p.stdout, None

    def gateway(self, path, body):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path),
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            return json.loads(urllib.request.urlopen(req, timeout=10).read()), None
        except urllib.error.HTTPError as e:
            return None, json.loads(e.read()).get("message", str(e))

    def stop(self):
        # A throwaway server: no graceful shutdown needed.
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def map_leases(args):
    return ["--lease=%x" % lease_id(a[len("--lease="):]) if a.startswith("--lease=") else a
            for a in args]


def prefix_end(k):
    b = bytearray(k.encode())
    while b:
        if b[-1] < 0xff:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def run_watch(etcd, words, cur_rev):
    """History of a watch through etcd's JSON gateway (etcdctl 3.4 has no filter flags): read
    responses until the event at the current revision, a cancel, or a quiet second."""
    key, end, body = None, None, {"prev_kv": False}
    for w in words[1:]:
        if w == "--prefix":
            end = prefix_end(key)
        elif w == "--from-key":
            end = b"\0"
        elif w == "--prev-kv":
            body["prev_kv"] = True
        elif w == "--no-put":
            body.setdefault("filters", []).append("NOPUT")
        elif w == "--no-delete":
            body.setdefault("filters", []).append("NODELETE")
        elif w.startswith("--rev="):
            body["start_revision"] = int(w[6:])
        elif key is None:
            key = w
        else:
            end = w.encode()
    body["key"] = b64(key)
    if end is not None:
        body["range_end"] = base64.b64encode(end).decode()
    req = urllib.request.Request("http://127.0.0.1:%d/v3/watch" % etcd.port,
                                 data=json.dumps({"create_request": body}).encode())
    out, n = [], 0
    resp = urllib.request.urlopen(req, timeout=10)
    resp.fp.raw._sock.settimeout(1.0)
    try:
        while True:
            line = resp.readline()
            if not line:
                break
            r = json.loads(line).get("result", {})
            if int(r.get("compact_revision", 0) or 0) > 0:
                return out + ["compacted=%d" % int(r["compact_revision"])]
            last = 0
            for ev in r.get("events") or []:
                kind = "DELETE" if ev.get("type") == "DELETE" else "PUT"
                s = "  %s %s" % (kind, fmt_kv(ev["kv"]))
                if ev.get("prev_kv"):
                    s += " prev=" + fmt_kv(ev["prev_kv"])
                out.append(s)
                n += 1
                last = int(ev["kv"].get("mod_revision", 0))
            if last >= cur_rev:
                break
    except (socket.timeout, TimeoutError):
        pass
    finally:
        resp.close()
    return out + ["events=%d" % n]


def run_txn(etcd, parts):
    out = []
    conv = lambda l: " ".join(map_leases(l.split()))
    # etcdctl reads compares, success ops, failure ops, each list ended by a blank line.
    stdin = "\n".join(parts[0] + [""] + [conv(l) for l in parts[1]] + [""] +
                      [conv(l) for l in parts[2]] + [""]) + "\n"
    res, err = etcd.ctl(["txn"], stdin)
    if err:
        return ["error: " + err]
    r = json.loads(res)
    out.append("rev=%d succeeded=%d" % (int(r["header"]["revision"]),
                                        1 if r.get("succeeded") else 0))
    for resp in r.get("responses") or []:
        body = resp["Response"]
        if "ResponseRange" in body:
            out.append("  " + fmt_range(body["ResponseRange"]))
        elif "ResponsePut" in body:
            out.append("  " + fmt_put(body["ResponsePut"]))
        elif "ResponseDeleteRange" in body:
            out.append("  " + fmt_del(body["ResponseDeleteRange"]))
    return out


def run_rangereq(etcd, words):
    body = {}
    for w in words[1:]:
        k, v = w.split("=", 1)
        if k == "key":
            body["key"] = b64(v)
        elif k == "end":
            body["range_end"] = b64("\0" if v == "\\0" else v)
        elif k in ("count_only", "keys_only"):
            body[k] = v == "1"
        elif k in ("min_mod", "max_mod", "min_create", "max_create"):
            body[k + "_revision"] = int(v)
        else:
            body[k] = int(v)
    r, err = etcd.gateway("/v3/kv/range", body)
    return ["error: " + err if err else fmt_range(r)]


def run_lease(etcd, words):
    sub = words[1]
    if sub == "grant":
        res, err = etcd.ctl(["lease", "grant", words[2]])
        if err:
            return ["error: " + err]
        r = json.loads(res)
        LEASES.append(int(r["ID"]))
        return ["id=L%d ttl=%d" % (len(LEASES), int(r["TTL"]))]
    if sub == "revoke":
        res, err = etcd.ctl(["lease", "revoke", "%x" % lease_id(words[2])])
        if err and err.startswith("failed to revoke lease ("):
            err = err[len("failed to revoke lease ("):-1]  # etcdctl's wrapping
        return ["error: " + err if err else "rev=%d" % int(json.loads(res)["header"]["revision"])]
    res, err = etcd.ctl(["lease", "timetolive", "%x" % lease_id(words[2]), "--keys"])
    if err:
        return ["error: " + err]
    r = json.loads(res)
    if int(r.get("ttl", 0)) == -1:
        return ["error: etcdserver: requested lease not found"]
    keys = sorted(unb64(k) for k in r.get("keys") or [])
    return ["granted=%d keys=[%s]" % (int(r["granted-ttl"]), ",".join(keys))]


def run_compact(etcd, words):
    p = subprocess.run(["etcdctl", "--endpoints=127.0.0.1:%d" % etcd.port, "compact", words[1],
                        "--physical"], capture_output=True, text=True, env=etcd.env, timeout=20)
    if p.returncode != 0:
        errs = [l[7:] for l in p.stderr.splitlines() if l.startswith("Error: ")]
        return ["error: " + (errs[-1] if errs else p.stderr.strip())]
    return ["ok"]


def run_one(etcd, line, cur_rev):
    """One command other than txn; returns its output lines."""
    words = line.split()
    cmd = words[0]
    if cmd == "watch":
        return run_watch(etcd, words, cur_rev)
    if cmd == "rangereq":
        return run_rangereq(etcd, words)
    if cmd == "lease":
        return run_lease(etcd, words)
    if cmd == "compact":
        return run_compact(etcd, words)
    res, err = etcd.ctl(map_leases(words))
    if err:
        return ["error: " + err]
    r = json.loads(res)
    return [{"put": fmt_put, "get": fmt_range, "del": fmt_del}[cmd](r)]


def read_only(line):
    w = line.split()
    return w[0] in ("get", "rangereq", "watch") or w[:2] == ["lease", "timetolive"]


def run_etcd(etcd, lines):
    """Runs the script in order; runs of consecutive read-only commands go to etcd concurrently
    (they cannot affect each other), which keeps the comparison's time down."""
    out = []
    cur_rev = 1
    i = 0
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
    while i < len(lines):
        for l in out[-4:]:
            for w in l.split():
                if w.startswith("rev="):
                    cur_rev = max(cur_rev, int(w[4:]))
        if read_only(lines[i]):
            j = i
            while j < len(lines) and read_only(lines[j]):
                j += 1
            group = lines[i:j]
            for line, res in zip(group, pool.map(lambda l: run_one(etcd, l, cur_rev), group)):
                out.append("> " + line)
                out.extend(res)
            i = j
            continue
        line = lines[i]
        i += 1
        out.append("> " + line)
        if line.split()[0] == "txn":
            parts = [[], [], []]
            sec = 0
            while lines[i] != "end":
                if lines[i] == "--":
                    sec += 1
                else:
                    parts[sec].append(lines[i])
                    out.append("  " + lines[i])
                i += 1
            i += 1
            out.extend(run_txn(etcd, parts))
            continue
        out.extend(run_one(etcd, line, cur_rev))
    pool.shutdown()
    return out


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    binary, seq = sys.argv[1], sys.argv[2]
    if not shutil.which("etcd") or not shutil.which("etcdctl"):
        print("SKIPPED: no etcd")
        return 77
    lines = [l.rstrip("\n") for l in open(seq) if l.strip() and not l.startswith("#")]
    t0 = time.time()
    # Our side runs meanwhile: it is independent of the reference.
    with tempfile.TemporaryDirectory(prefix="mvcc-script-", dir=SCRATCH) as d:
        ours = subprocess.Popen([binary, seq, d], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        etcd = None
        try:
            etcd = Etcd()
            theirs = run_etcd(etcd, lines)
        finally:
            if etcd:
                etcd.stop()
            mine_out, mine_err = ours.communicate(timeout=30)
    if ours.returncode != 0:
        print("mvcc-script failed:", mine_err)
        return 1
    mine = mine_out.splitlines()
    diff = list(difflib.unified_diff(theirs, mine, "etcd", "mvcc", lineterm=""))
    print("%d commands, %d output lines, %.1f s" % (sum(1 for l in theirs if l.startswith("> ")),
                                                    len(theirs), time.time() - t0))
    if diff:
        print("\n".join(diff))
        print("FAIL: mvcc differs from etcd")
        return 1
    print("OK: mvcc matches etcd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
