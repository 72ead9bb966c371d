#!/usr/bin/env bash
# bench-smoke: baton-bench against a 1-member batond it starts itself (a few seconds). Checks
# that every workload either runs with successful operations and JSON that parses, or says
# clearly that the server does not support it yet (exit 3).
#   smoke.sh BATOND BATON_BENCH
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/../../tests/compat/cluster.sh

check() {
    # $1 workload, rest: extra flags
    local w=$1 out rc=0
    shift
    out=$("$bench" --endpoints "$CLUSTER_ENDPOINTS" --duration 1 --warmup 0.2 --keys 200 \
        --conns 2 --inflight 8 --streams 2 --server-pids "$(cat "$CLUSTER_DIR/m1.pid")" \
        --json "$@" "$w") || rc=$?
    if [ $rc = 3 ]; then
        out=$("$bench" --endpoints "$CLUSTER_ENDPOINTS" --duration 0.5 --warmup 0 "$w") || true
        grep -q "not supported by this server yet" <<<"$out" ||
            { echo "FAIL $w: exit 3 without the line: $out"; return 1; }
        echo "ok $w (not supported by this server yet)"
        return 0
    fi
    [ $rc = 0 ] || { echo "FAIL $w: exit $rc: $out"; return 1; }
    printf '%s' "$out" | python3 -c '
import json, sys
w = sys.argv[1]
r = json.load(sys.stdin)
assert r["workload"] == w, r
assert r["requests"] > 0, r
assert r["measured_s"] > 0.5, r
for name, op in r["ops"].items():
    assert op["p50_ms"] <= op["p90_ms"] <= op["p99_ms"] <= op["p99_9_ms"] <= op["max_ms"], op
    assert op["max_ms"] > 0, op
assert r["server_cpu_s"] > 0 and r["server_rss_max_kb"] > 1000, r
assert r["client_cpu_us_per_op"] > 0, r
' "$w" || { echo "FAIL $w: bad JSON: $out"; return 1; }
    echo "ok $w"
}

if [ "${1:-}" != --inside ]; then
    exec "$cluster" run "$1" 1 -- "$0" --inside "$2"
fi
bench=$2
fails=0
for w in put range txn mixed watch lease; do check "$w" || fails=$((fails + 1)); done
check range --serializable || fails=$((fails + 1))
# The table form, too.
"$bench" --endpoints "$CLUSTER_ENDPOINTS" --duration 0.5 --warmup 0 put | grep -q '^put ' ||
    { echo "FAIL table output"; fails=$((fails + 1)); }
echo "bench-smoke: $fails failure(s)"
[ $fails = 0 ]
