#!/usr/bin/env bash
# batonctl.sh BATONCTL BATOND N: batonctl against an N-member batond cluster (cluster.sh run).
# Both runs check the table and JSON outputs of status and member list against what etcdctl
# reports, and snapshot save. N=1 adds snapshot restore (a restored member serves the keys)
# and bad input: unknown commands and flags (usage, exit 2), malformed endpoints (exit 2),
# unreachable endpoints (message, exit 1). N=3 adds member add/promote/remove, leader
# transfer, and (BATONCTL_CM=1: batond serves baton.v1.Tso / Config) tso, id and config
# get/set/watch. Ends with "N passed, N failed".
set -uo pipefail
CTL=${1:?usage: batonctl.sh BATONCTL BATOND N}
BATOND=${2:?}
N=${3:?}
HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER_SH=$HERE/../compat/cluster.sh
export ETCDCTL_API=3

if [ -z "${CLUSTER_ENDPOINTS:-}" ]; then
    exec "$CLUSTER_SH" run "$BATOND" "$N" -- "$0" "$@"
fi

E=$CLUSTER_ENDPOINTS
TMP=$(mktemp -d "${TMPDIR:-/tmp}/batonctl-test.XXXXXX")
RPID=""
cleanup() {
    [ -n "$RPID" ] && kill -KILL "$RPID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
# check NAME COND_EXIT_CODE: record the outcome of the last test expression.
check() { if [ "$2" = 0 ]; then ok "$1"; else bad "$1"; fi; }

# ---- status ----
"$CTL" --endpoints "$E" status >"$TMP/status.txt" 2>"$TMP/status.err"
rc=$?
head=$(head -1 "$TMP/status.txt")
rows=$(grep -c '^http://127.0.0.1' "$TMP/status.txt")
col=$(head -1 "$TMP/status.txt" | grep -bo 'IS LEADER' | cut -d: -f1)
leaders=$(awk -v c="$col" 'NR>1 && substr($0, c + 1, 5) == "true "' "$TMP/status.txt" | wc -l)
[ $rc = 0 ] && [[ "$head" == ENDPOINT*"IS LEADER"*"RAFT TERM"*"RAFT INDEX"* ]] && [ "$rows" = "$N" ] &&
    [ "$leaders" = 1 ] && grep -q '^cluster version: ' "$TMP/status.txt"
check "status table: $N members, one leader" $?
# Columns are aligned: every row has IS LEADER where the header has it.
aligned=$(awk -v c="$col" 'NR>1 && NR<='"$((N + 1))"' { s = substr($0, c + 1, 5); if (s != "true " && s != "false") bad = 1 } END { print bad ? 1 : 0 }' "$TMP/status.txt")
check "status table columns aligned" "$aligned"

"$CTL" --endpoints "$E" -w json status >"$TMP/status.json"
python3 - "$TMP/status.json" "$N" "$E" <<'EOF'
import json, subprocess, sys
s = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
assert len(s["members"]) == n, s
leaders = [m for m in s["members"] if m["is_leader"]]
assert len(leaders) == 1 and leaders[0]["id"] == s["leader"], s
for m in s["members"]:
    assert m["raft_term"] >= 1 and m["raft_index"] >= 1 and m["db_size"] > 0, m
# etcdctl agrees on the leader and the members.
out = subprocess.run(["etcdctl", "--endpoints", sys.argv[3], "endpoint", "status", "-w", "json"],
                     capture_output=True, text=True, check=True).stdout
es = json.loads(out)
ids = sorted(e["Status"]["header"]["member_id"] for e in es)
assert ids == sorted(m["id"] for m in s["members"]), (ids, s)
assert {e["Status"]["leader"] for e in es} == {s["leader"]}, (es, s)
EOF
check "status json agrees with etcdctl endpoint status" $?

# ---- member list ----
"$CTL" --endpoints "$E" member list >"$TMP/ml.txt"
rc=$?
[ $rc = 0 ] && [ "$(head -1 "$TMP/ml.txt" | tr -s ' ')" = "ID STATUS NAME PEER ADDRS CLIENT ADDRS IS LEARNER" ] &&
    [ "$(($(wc -l <"$TMP/ml.txt") - 1))" = "$N" ]
check "member list table" $?
etcdctl --endpoints "$E" member list | awk -F', ' '{print $1, $3}' | sort >"$TMP/ml.etcdctl"
awk 'NR>1 {print $1, $3}' "$TMP/ml.txt" | sort >"$TMP/ml.ours"
diff "$TMP/ml.etcdctl" "$TMP/ml.ours" >/dev/null
check "member list ids and names match etcdctl" $?
"$CTL" --endpoints "$E" -w json member list >"$TMP/ml.json"
python3 - "$TMP/ml.json" "$N" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["members"]
assert len(m) == int(sys.argv[2]) and all(x["id"] > 0 and x["name"] and x["client_urls"] for x in m), m
EOF
check "member list json" $?

# ---- snapshot save and restore ----
etcdctl --endpoints "$E" put snapkey snapval >/dev/null
"$CTL" --endpoints "$E" snapshot save "$TMP/snap.db" >"$TMP/save.txt"
rc=$?
[ $rc = 0 ] && [ -s "$TMP/snap.db" ] && grep -q "^Snapshot saved at $TMP/snap.db" "$TMP/save.txt" &&
    [ ! -e "$TMP/snap.db.part" ]
check "snapshot save" $?
"$CTL" --endpoints "$E" -w json snapshot save "$TMP/snap2.db" >"$TMP/save.json"
python3 -c "import json,sys,os; d=json.load(open(sys.argv[1])); assert d['bytes']==os.path.getsize(sys.argv[2])>0, d" \
    "$TMP/save.json" "$TMP/snap2.db"
check "snapshot save json" $?

port() { echo $((20000 + (RANDOM * 32768 + RANDOM) % 12000)); }
# The rest is split between the two runs to keep the wall time down: restore and bad input on
# 1 member; membership, leadership, TSO and config on 3.
if [ "$N" = 1 ]; then
CP=$(port) PP=$(port) MP=$(port)
"$CTL" snapshot restore "$TMP/snap.db" --data-dir "$TMP/restored" --batond "$BATOND" --name r1 \
    --initial-cluster "r1=http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
    --listen-peer-urls "http://127.0.0.1:$PP" --listen-client-urls "http://127.0.0.1:$CP" \
    --advertise-client-urls "http://127.0.0.1:$CP" --listen-metrics-urls "http://127.0.0.1:$MP" \
    >"$TMP/restored.log" 2>&1 &
RPID=$!
got=""
for _ in $(seq 1 150); do
    got=$(etcdctl --endpoints="127.0.0.1:$CP" --dial-timeout=1s --command-timeout=2s \
        get snapkey --print-value-only 2>/dev/null)
    [ -n "$got" ] && break
    kill -0 $RPID 2>/dev/null || break
    sleep 0.2
done
kill -TERM $RPID 2>/dev/null
wait $RPID 2>/dev/null
RPID=""
[ "$got" = snapval ]
check "snapshot restore: the restored member serves the snapshot's keys" $?
[ "$got" = snapval ] || tail -5 "$TMP/restored.log"
"$CTL" snapshot restore "$TMP/snap.db" --data-dir "$TMP/restored" --batond "$BATOND" \
    >/dev/null 2>"$TMP/rerr"
rc=$?
[ $rc = 1 ] && grep -q "exists; restore into a new directory" "$TMP/rerr"
check "snapshot restore refuses an existing data dir" $?
fi

# ---- membership and leadership (3 members) ----
if [ "$N" -ge 3 ]; then
    pp=$(port)
    "$CTL" --endpoints "$E" member add spare --peer-urls "http://127.0.0.1:$pp" --learner >"$TMP/add.txt"
    rc=$?
    id=$(sed -n 's/^Member \([0-9a-f]*\) added.*/\1/p' "$TMP/add.txt")
    "$CTL" --endpoints "$E" member list >"$TMP/ml2.txt"
    [ $rc = 0 ] && [ -n "$id" ] && grep -q "^$id  *unstarted  .*http://127.0.0.1:$pp  .*true$" "$TMP/ml2.txt"
    check "member add --learner: listed as an unstarted learner" $?
    "$CTL" --endpoints "$E" member promote "$id" >/dev/null 2>"$TMP/err"
    rc=$?
    [ $rc = 1 ] && grep -q "etcdserver: can only promote a learner member which is in sync with leader" "$TMP/err"
    check "member promote of a learner that never started: etcd's message, exit 1" $?
    [ $rc = 1 ] || cat "$TMP/err"
    "$CTL" --endpoints "$E" member remove "$id" >/dev/null && "$CTL" --endpoints "$E" member list >"$TMP/ml3.txt" &&
        ! grep -q "^$id " "$TMP/ml3.txt"
    check "member remove" $?

    target=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("%x" % [m["id"] for m in s["members"] if not m["is_leader"]][0])' "$TMP/status.json")
    "$CTL" --endpoints "$E" leader transfer "$target" >"$TMP/lt.txt" 2>&1
    rc=$?
    now=""
    for _ in $(seq 1 50); do
        now=$("$CTL" --endpoints "$E" -w json status | python3 -c 'import json,sys; print("%x" % json.load(sys.stdin)["leader"])')
        [ "$now" = "$target" ] && break
        sleep 0.1
    done
    [ $rc = 0 ] && [ "$now" = "$target" ]
    check "leader transfer $target" $?
    [ $rc = 0 ] || cat "$TMP/lt.txt"
fi

# ---- TSO, ids, config (when batond serves baton.v1.Tso / Config) ----
if [ "${BATONCTL_CM:-0}" = 1 ] && [ "$N" -ge 3 ]; then
    "$CTL" --endpoints "$E" -w json tso 10 >"$TMP/tso1.json" && "$CTL" --endpoints "$E" -w json tso >"$TMP/tso2.json"
    python3 - "$TMP/tso1.json" "$TMP/tso2.json" <<'EOF2'
import json, sys, time
a, b = (json.load(open(f)) for f in sys.argv[1:3])
assert a["count"] == 10 and b["count"] == 1 and b["first"] >= a["first"] + 10, (a, b)
assert a["physical_ms"] == a["first"] >> 18 and abs(a["physical_ms"] / 1000 - time.time()) < 86400, a
EOF2
    check "tso (json): increasing, physical part is wall-clock ms" $?
    "$CTL" --endpoints "$E" tso 3 >"$TMP/tso.txt"
    grep -q "(physical 20[0-9-]*T[0-9:.]*Z, logical [0-9]*) .. [0-9]* (3 timestamps)" "$TMP/tso.txt"
    check "tso (table)" $?
    a=$("$CTL" --endpoints "$E" id 5 | sed -n 's/^\([0-9]*\) .. \([0-9]*\) (5 ids)$/\1 \2/p')
    b=$("$CTL" --endpoints "$E" id)
    [ -n "$a" ] && [ "$(( ${a#* } - ${a% *} ))" = 4 ] && [ "$b" -gt "${a#* }" ]
    check "id: ranges never repeat" $?
    "$CTL" --endpoints "$E" config watch --limit 2 -w json >"$TMP/cw.json" &
    wpid=$!
    # The watch prints the current configuration first: wait for it before changing anything.
    for _ in $(seq 1 300); do [ -s "$TMP/cw.json" ] && break; sleep 0.1; done
    "$CTL" --endpoints "$E" config set '{"zones":3}' --force >"$TMP/cs.txt"
    rc=$?
    v=$(sed -n 's/^config version \([0-9]*\)$/\1/p' "$TMP/cs.txt")
    [ $rc = 0 ] && [ -n "$v" ]
    check "config set --force" $?
    "$CTL" --endpoints "$E" config set '{"zones":4}' --expected-version 0 >/dev/null 2>"$TMP/err"
    [ $? = 1 ] && grep -q "version mismatch" "$TMP/err"
    check "config set with a stale version: conflict, exit 1" $?
    "$CTL" --endpoints "$E" config set '{"zones":5}' >/dev/null
    check "config set (compare-and-set on the version read)" $?
    "$CTL" --endpoints "$E" -w json config get | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["config"] == {"zones": 5} and d["version"] >= 2, d'
    check "config get (json)" $?
    for _ in $(seq 1 50); do kill -0 $wpid 2>/dev/null || break; sleep 0.1; done
    kill $wpid 2>/dev/null
    wait $wpid
    python3 -c 'import json,sys; l=[json.loads(x) for x in open(sys.argv[1])]; assert len(l) == 2 and l[1]["config"] == {"zones": 3} and l[1]["version"] == l[0]["version"] + 1, l' "$TMP/cw.json"
    check "config watch --limit 2 (json lines)" $?
    "$CTL" --endpoints "$E" config set '{bad' --force >/dev/null 2>"$TMP/err"
    [ $? = 1 ]
    check "config set of malformed JSON: exit 1" $?
fi

# ---- bad input ----
if [ "$N" = 1 ]; then
"$CTL" --endpoints "$E" --bogus status >/dev/null 2>"$TMP/err"
rc=$?
[ $rc = 2 ] && grep -q "unknown flag '--bogus'" "$TMP/err" && grep -q '^usage: batonctl' "$TMP/err"
check "unknown flag: usage, exit 2" $?
"$CTL" --endpoints "$E" frobnicate >/dev/null 2>"$TMP/err"
rc=$?
[ $rc = 2 ] && grep -q "unknown command 'frobnicate'" "$TMP/err"
check "unknown command: usage, exit 2" $?
"$CTL" --endpoints "$E" member frob >/dev/null 2>"$TMP/err"
[ $? = 2 ]
check "unknown subcommand: exit 2" $?
"$CTL" --endpoints "$E" -w yaml status >/dev/null 2>"$TMP/err"
[ $? = 2 ] && grep -q "unknown output format 'yaml'" "$TMP/err"
check "unknown output format: exit 2" $?
"$CTL" --endpoints "127.0.0.1:2379,bad host" member list >/dev/null 2>"$TMP/err"
rc=$?
[ $rc = 2 ] && grep -q "malformed endpoint 'bad host'" "$TMP/err"
check "malformed endpoint: exit 2" $?
"$CTL" --endpoints 127.0.0.1:1 --command-timeout 1s member list >/dev/null 2>"$TMP/err"
rc=$?
[ $rc = 1 ] && grep -q "127.0.0.1:1: connection refused" "$TMP/err"
check "unreachable endpoint: message, exit 1" $?
[ $rc = 1 ] || cat "$TMP/err"
"$CTL" --endpoints "$E" --command-timeout 2x status >/dev/null 2>"$TMP/err"
[ $? = 2 ] && grep -q "bad duration '2x'" "$TMP/err"
check "bad duration: exit 2" $?
"$CTL" --endpoints "$E" member remove 0 >/dev/null 2>"$TMP/err"
[ $? = 2 ]
check "member remove without a valid id: exit 2" $?
"$CTL" --endpoints "$E" member remove abcdef >/dev/null 2>"$TMP/err"
rc=$?
[ $rc = 1 ] && grep -q "etcdserver: member not found" "$TMP/err"
check "member remove of an unknown id: etcd's message, exit 1" $?
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
