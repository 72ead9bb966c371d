#!/usr/bin/env bash
# example_node.sh EXAMPLE BATONCTL BATOND: baton-example-node and batonctl's node commands
# against a 3-member batond cluster (cluster.sh run). The example registers with labels and
# writes fenced data; `batonctl node list/show` (table and JSON) see it up with its labels;
# `batonctl node drain` makes it print DRAIN; `batonctl node remove` makes it stop (exit 0).
set -uo pipefail
EX=${1:?usage: example_node.sh EXAMPLE BATONCTL BATOND}
CTL=${2:?}
BATOND=${3:?}
HERE=$(cd "$(dirname "$0")" && pwd)
export ETCDCTL_API=3
if [ -z "${CLUSTER_ENDPOINTS:-}" ]; then
    export CLUSTER_EXTRA_FLAGS="--node-lease-ttl-ms 2000 --node-heartbeat-interval-ms 200"
    exec "$HERE/../compat/cluster.sh" run "$BATOND" 3 -- "$0" "$@"
fi
E=$CLUSTER_ENDPOINTS
TMP=$(mktemp -d "${TMPDIR:-/tmp}/example-node.XXXXXX")
XPID=""
cleanup() {
    [ -n "$XPID" ] && kill -KILL "$XPID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
passed=0 failed=0
check() { if [ "$2" = 0 ]; then echo "ok   $1"; passed=$((passed + 1)); else echo "FAIL $1"; failed=$((failed + 1)); fi; }
# wait_for FILE PATTERN SECS
wait_for() {
    local i
    for i in $(seq 1 $(($3 * 10))); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

"$EX" --endpoints "$E" --address 127.0.0.1:7100 --label zone=z1 --label rack=r2 \
    --capacity-gb 50 --version 2.0.1 --write-interval-ms 100 >"$TMP/ex.log" 2>&1 &
XPID=$!
wait_for "$TMP/ex.log" "registered node" 20
check "example registers" $?
id=$(sed -n 's/.*registered node \([0-9a-f]*\) epoch.*/\1/p' "$TMP/ex.log" | head -1)
wait_for "$TMP/ex.log" "fenced write /example/$id/data-000001 ok" 20
check "example writes fenced data under /example/<id>/" $?

up=1
for _ in $(seq 1 100); do
    "$CTL" --endpoints "$E" node list >"$TMP/nl.txt" 2>&1
    grep -q "^$id  *127.0.0.1:7100  *up  " "$TMP/nl.txt" && { up=0; break; }
    sleep 0.1
done
check "node list (table): the node is up" $up
grep -q "zone=z1,rack=r2" "$TMP/nl.txt"
check "node list (table): labels" $?
[ "$(head -1 "$TMP/nl.txt" | tr -s ' ')" = "ID ADDRESS STATE EPOCH VERSION CAPACITY USED LABELS" ]
check "node list (table): header" $?
"$CTL" --endpoints "$E" -w json node show "$id" >"$TMP/ns.json"
python3 - "$TMP/ns.json" "$id" <<'EOF'
import json, sys
n = json.load(open(sys.argv[1]))["nodes"][0]
assert n["id"] == int(sys.argv[2], 16) and n["address"] == "127.0.0.1:7100", n
assert n["labels"] == {"zone": "z1", "rack": "r2"} and n["version"] == "2.0.1", n
assert n["capacity_bytes"] == 50 << 30 and n["state"] == "up" and n["epoch"] >= 1, n
EOF
check "node show (json)" $?
# (into a file: with pipefail, grep -q closing the pipe early would fail etcdctl with SIGPIPE)
etcdctl --endpoints "$E" get "/example/$id/" --prefix --keys-only >"$TMP/keys.txt"
grep -q "/example/$id/data-" "$TMP/keys.txt"
check "the data is in the store" $?

"$CTL" --endpoints "$E" node drain "$id" >"$TMP/drain.txt"
rc=$?
[ $rc = 0 ] && grep -q " draining " "$TMP/drain.txt"
check "node drain" $?
wait_for "$TMP/ex.log" "command DRAIN" 10
check "example hears DRAIN" $?
"$CTL" --endpoints "$E" node remove "$id" >/dev/null
check "node remove" $?
wait_for "$TMP/ex.log" "command STOP" 10
check "example hears STOP" $?
code=1
for _ in $(seq 1 100); do
    if ! kill -0 "$XPID" 2>/dev/null; then
        wait "$XPID"
        code=$?
        XPID=""
        break
    fi
    sleep 0.1
done
[ "$code" = 0 ] && grep -q "stopped by the cluster" "$TMP/ex.log"
check "example exits 0 on STOP" $?
"$CTL" --endpoints "$E" node show ffffffffffff >/dev/null 2>"$TMP/err"
[ $? = 1 ] && grep -q "not found" "$TMP/err"
check "node show of an unknown node: exit 1" $?
[ "$failed" = 0 ] || tail -20 "$TMP/ex.log"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
