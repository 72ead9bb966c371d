#!/usr/bin/env python3
"""check_metrics.py BEFORE DURING AFTER [--etcd]: validates three /metrics scrapes taken by
metrics.sh around a known workload, in Prometheus text format 0.0.4, and checks that every
family issue 4 asks for is present with values that match what the workload did.

The format check is a small parser (promtool is not available): every line is a comment
("# HELP name text", "# TYPE name type") or a sample "name{labels} value"; every sample
belongs to a family declared by TYPE before it; histograms have _bucket (cumulative, ending at
le="+Inf" equal to _count), _sum and _count. --etcd: the subject is etcd itself (calibration),
so baton's own families are not required."""
import math
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?,?\})? ([^ ]+)( -?[0-9]+)?$" % (NAME, LABEL, LABEL))
HELP = re.compile(r"^# HELP (%s) .*$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    return float(s)


def parse(path):
    """Returns {(name, frozenset(labels)): value} and {family: type}; format errors fail."""
    samples, types = {}, {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.endswith("\n"):
        fail("%s: does not end with a newline" % path)
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "%s:%d: %r" % (path, n, line[:120])
        if line.startswith("#"):
            m = TYPE.match(line)
            if m:
                if m.group(1) in types:
                    fail(where + ": family typed twice")
                types[m.group(1)] = m.group(2)
            elif not HELP.match(line):
                fail(where + ": a comment that is neither HELP nor TYPE")
            continue
        m = SAMPLE.match(line)
        if not m:
            fail(where + ": not a sample line")
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        try:
            v = parse_value(value)
        except ValueError:
            fail(where + ": bad value")
            continue
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and (types.get(base) == "histogram" or
                                          (types.get(base) == "summary" and suffix != "_bucket")):
                family = base
        if family not in types:
            fail(where + ": sample of a family without TYPE before it")
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
        key = (name, pairs)
        if key in samples:
            fail(where + ": duplicate series")
        samples[key] = v
    check_histograms(path, samples, types)
    return samples, types


def check_histograms(path, samples, types):
    for fam, t in types.items():
        if t != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                rest = frozenset(p for p in labels if p[0] != "le")
                le = dict(labels).get("le")
                series.setdefault(rest, []).append((parse_value(le), v))
        for rest, buckets in series.items():
            buckets.sort()
            counts = [c for _, c in buckets]
            if counts != sorted(counts):
                fail("%s: %s buckets are not cumulative" % (path, fam))
            if buckets[-1][0] != math.inf:
                fail("%s: %s has no +Inf bucket" % (path, fam))
            count = samples.get((fam + "_count", rest))
            if (fam + "_sum", rest) not in samples or count is None:
                fail("%s: %s lacks _sum or _count" % (path, fam))
            elif buckets[-1][1] != count:
                fail("%s: %s +Inf bucket %s != _count %s" % (path, fam, buckets[-1][1], count))


def get(samples, name, **labels):
    want = frozenset(labels.items())
    for (n, ls), v in samples.items():
        if n == name and want <= ls:
            return v
    return None


def grpc(samples, metric, method, code=None):
    labels = {"grpc_method": method}
    if code:
        labels["grpc_code"] = code
    total = 0
    for (n, ls), v in samples.items():
        if n == metric and frozenset(labels.items()) <= ls:
            total += v
    return total


def main():
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    etcd = "--etcd" in sys.argv
    if len(paths) != 3:
        print(__doc__)
        return 2
    (b, bt), (d, dt), (a, at) = (parse(p) for p in paths)

    def expect(what, got, ok):
        print("%-60s %s" % (what, got))
        if not ok:
            fail("%s: %s" % (what, got))

    def present(s, name, **labels):
        v = get(s, name, **labels)
        if v is None:
            fail("%s%s missing" % (name, labels or ""))
        return v

    # Raft and proposals. The workload: 5 puts, 1 lease grant, 1 put with the lease, 1 put
    # seen by the watcher: 8 proposals, all applied, none failed.
    expect("etcd_server_has_leader", present(a, "etcd_server_has_leader"),
           get(a, "etcd_server_has_leader") == 1)
    expect("etcd_server_is_leader", present(a, "etcd_server_is_leader"),
           get(a, "etcd_server_is_leader") == 1)
    ids = [dict(ls).get("server_id") for (n, ls), v in a.items() if n == "etcd_server_id" and v == 1]
    expect("etcd_server_id{server_id=<hex>} 1", ids,
           len(ids) == 1 and re.fullmatch(r"[0-9a-f]+", ids[0] or "") is not None)
    lc = present(a, "etcd_server_leader_changes_seen_total")
    expect("etcd_server_leader_changes_seen_total (one member)", lc, lc == 1)
    for name in ("etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total"):
        v0, v1 = present(b, name) or 0, present(a, name) or 0
        expect(name + " grew by >= 8", v1 - v0, v1 - v0 >= 8)
    fl = present(a, "etcd_server_proposals_failed_total")
    expect("etcd_server_proposals_failed_total", fl, fl == 0)
    pe = present(a, "etcd_server_proposals_pending")
    expect("etcd_server_proposals_pending", pe, pe == 0)
    if not etcd:
        for name in ("baton_raft_term", "baton_raft_index"):
            v = present(a, name)
            expect(name, v, v is not None and v >= 1)
        ix0, ix1 = get(b, "baton_raft_index") or 0, get(a, "baton_raft_index") or 0
        expect("baton_raft_index grew by >= 8", ix1 - ix0, ix1 - ix0 >= 8)
    rev0 = present(b, "etcd_debugging_mvcc_current_revision") or 0
    rev1 = present(a, "etcd_debugging_mvcc_current_revision") or 0
    expect("etcd_debugging_mvcc_current_revision grew by 7 (7 puts)", rev1 - rev0,
           rev1 - rev0 == 7)

    # Disk histograms: the puts were fsynced and committed.
    for fam in ("etcd_disk_wal_fsync_duration_seconds",
                "etcd_disk_backend_commit_duration_seconds"):
        if at.get(fam) != "histogram":
            fail(fam + " is not a histogram")
            continue
        c0, c1 = get(b, fam + "_count") or 0, get(a, fam + "_count") or 0
        s1 = get(a, fam + "_sum") or 0
        n_buckets = sum(1 for (n, _) in a if n == fam + "_bucket")
        expect(fam + " _count grew", c1 - c0, c1 - c0 >= 1)
        expect(fam + " _sum > 0", s1, s1 > 0)
        expect(fam + " buckets (etcd: 14 + Inf)", n_buckets, n_buckets == 15)
    for name in ("etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes"):
        v = present(a, name)
        expect(name, v, v is not None and v > 0)

    # gRPC calls by method and code (deltas: the harness's health checks also call Range).
    def delta(metric, method, code=None):
        return grpc(a, metric, method, code) - grpc(b, metric, method, code)

    checks = [
        ("grpc_server_started_total", "Put", None, 7),
        ("grpc_server_handled_total", "Put", "OK", 7),
        ("grpc_server_started_total", "Range", None, 4),
        ("grpc_server_handled_total", "Range", "OK", 3),
        ("grpc_server_handled_total", "Range", "OutOfRange", 1),
        ("grpc_server_started_total", "LeaseGrant", None, 1),
        ("grpc_server_handled_total", "LeaseGrant", "OK", 1),
        ("grpc_server_started_total", "Watch", None, 1),
        ("grpc_server_handled_total", "Watch", "Canceled", 1),
    ]
    for metric, method, code, want in checks:
        got = delta(metric, method, code)
        expect("%s %s %s" % (metric, method, code or ""), got, got == want)
    for (n, ls) in a:
        if n == "grpc_server_handled_total":
            d_ = dict(ls)
            if not all(k in d_ for k in ("grpc_type", "grpc_service", "grpc_method", "grpc_code")):
                fail("grpc_server_handled_total without its four labels: %s" % d_)
    svc = get(a, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK")
    expect("Put labelled grpc_service=etcdserverpb.KV, grpc_type=unary", svc,
           get(a, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK",
               grpc_service="etcdserverpb.KV", grpc_type="unary") is not None)
    for name in ("etcd_network_client_grpc_received_bytes_total",
                 "etcd_network_client_grpc_sent_bytes_total"):
        v0, v1 = present(b, name) or 0, present(a, name) or 0
        expect(name + " grew", v1 - v0, v1 > v0)

    # Watchers, leases, connections: during the watch and after it ended.
    w_during = present(d, "etcd_debugging_mvcc_watcher_total")
    w_after = present(a, "etcd_debugging_mvcc_watcher_total")
    expect("etcd_debugging_mvcc_watcher_total during / after the watch", (w_during, w_after),
           w_during == 1 and w_after == 0)
    if not etcd:
        leases = present(a, "baton_leases")
        expect("baton_leases", leases, leases == 1)
        cd, ca = present(d, "baton_grpc_connections"), present(a, "baton_grpc_connections")
        expect("baton_grpc_connections during / after the watch", (cd, ca),
               cd is not None and ca is not None and cd >= 1 and ca == 0)
        ct0, ct1 = get(b, "baton_grpc_connections_total") or 0, \
            get(a, "baton_grpc_connections_total") or 0
        expect("baton_grpc_connections_total grew by >= 11 (one per etcdctl)", ct1 - ct0,
               ct1 - ct0 >= 11)
        rss = present(a, "process_resident_memory_bytes")
        expect("process_resident_memory_bytes", rss, rss is not None and rss > 1 << 20)

    print("%d passed, %d failed" % (0 if failures else 1, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
