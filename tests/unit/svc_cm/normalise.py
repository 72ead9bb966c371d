"""normalise.py MAP < raw > normalised: hides what differs between etcd and batond for the
same behaviour (ids, ports, sizes, hashes, raft counters, versions, latencies)."""
import json
import re
import sys

subs = []
for line in open(sys.argv[1]):
    if "\t" in line:
        lit, rep = line.rstrip("\n").split("\t")
        subs.append((lit, rep))
subs.sort(key=lambda s: -len(s[0]))


def roles(s):
    for lit, rep in subs:
        if lit.startswith("ROLE:"):
            s = s.replace(lit[5:], rep)
    return s


def ports(s):
    for lit, rep in subs:
        if lit.startswith("ROLE:"):
            continue
        if lit.startswith("DIR:"):
            s = s.replace(lit[4:], rep)
            continue
        s = re.sub(r"(?<=127\.0\.0\.1:)" + lit + r"\b", rep, s)
    return s


def json_norm(v, key=""):
    if isinstance(v, dict):
        return {k: json_norm(x, k) for k, x in v.items() if k not in ("header",)}
    if isinstance(v, list):
        out = [json_norm(x, key) for x in v]
        if key == "members":
            out.sort(key=lambda m: m.get("name", "") + str(m.get("peerURLs")))
        elif all(isinstance(x, dict) and "Endpoint" in x for x in out):
            out.sort(key=lambda x: x["Endpoint"])
        return out
    if isinstance(v, int) and not isinstance(v, bool):
        return "<n>"
    if isinstance(v, str):
        return ports(v)
    return v


def norm(line):
    s = line.strip()
    if s.startswith("{") or s.startswith("["):
        try:
            return json.dumps(json_norm(json.loads(s)), sort_keys=True)
        except ValueError:
            pass
    if "move-leader" in line or line.startswith("Error:"):
        line = roles(line)  # the member that led, the one that took over
    line = ports(line)
    if line.startswith("|") and "ENDPOINT" in line:  # column widths follow the id's length
        line = re.sub(r" +", " ", line)
    if line.startswith("|") and "ENDPOINT" not in line:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 10:  # endpoint status: keep endpoint, leader, learner, errors
            # which member leads is not deterministic (the scenario checks move-leader)
            cells = [cells[0], "<id>", "<ver>", "<size>", "<bool>", cells[5], "<n>", "<n>", "<n>", cells[9]]
        line = "| " + " | ".join(cells) + " |"
    line = re.sub(r"\b[0-9a-f]{12,16}\b", "<id>", line)
    line = re.sub(r"took = [0-9.]+[mµn]?s", "took = <t>", line)
    line = re.sub(r"\bcluster +(<id>|[0-9a-f]+)", "cluster <id>", line)
    # etcdctl prints ids with %16x: a shorter id is padded with spaces
    line = re.sub(r"\bMember +<id>", "Member <id>", line)
    line = re.sub(r"^[+-]+$", "<rule>", line)
    m = re.match(r'^ETCD_INITIAL_CLUSTER="(.*)"$', line)
    if m:  # etcd prints the members in map order
        line = 'ETCD_INITIAL_CLUSTER="%s"' % ",".join(sorted(m.group(1).split(",")))
    return line


# Output sections of commands marked "[sort]" are sorted after normalisation.
sorting, block = False, []
for line in sys.stdin.read().splitlines():
    out = norm(line)
    if line.startswith("=== "):
        sorting = line.startswith("=== [sort] ")
    if line == "--- stderr" and block:
        print("\n".join(sorted(block)))
        block = []
    if sorting and not line.startswith("=== ") and not line.startswith("--- "):
        block.append(out)
        continue
    if block:
        print("\n".join(sorted(block)))
        block = []
    if line.startswith("--- exit"):
        sorting = False
    print(out)
if block:
    print("\n".join(sorted(block)))
