#!/usr/bin/env bash
# batonctl.sh BATONCTL BATOND N: batonctl against an N-member batond cluster (cluster.sh run).
# Checks the table and JSON outputs of status and member list against what etcdctl reports,
# snapshot save + snapshot restore (a restored member serves the keys), and bad input: unknown
# commands and flags (usage, exit 2), malformed endpoints (exit 2), unreachable endpoints
# (message, exit 1). Ends with "N passed, N failed".
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

# ---- bad input ----
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

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
