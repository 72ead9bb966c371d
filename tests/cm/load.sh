#!/usr/bin/env bash
# Heartbeat throughput and memory per node on one member: cm_node load with NODES nodes over
# CONNS connections for SECONDS (each heartbeat sent when the last is answered, or each node
# once every INTERVAL_MS), measuring batond's CPU time and RSS from /proc.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
NODES=${NODES:-1000} CONNS=${CONNS:-4} SECONDS_RUN=${SECONDS_RUN:-3} INTERVAL_MS=${INTERVAL_MS:-0}
pid=$(cat "$CLUSTER_DIR/m1.pid")
"$CM_NODE" load "$(ep 1)" --nodes "$NODES" --conns "$CONNS" --seconds "$SECONDS_RUN" --pid "$pid" \
    --interval-ms "$INTERVAL_MS" |
    tee "$OUT/load.out"
grep -q "^registered=$NODES failed=0 " "$OUT/load.out" && pass "$NODES nodes registered" || fail "registration"
rate=$(sed -n 's/^heartbeats=[0-9]* seconds=[0-9.]* rate=\([0-9]*\)\/s/\1/p' "$OUT/load.out")
[ "${rate:-0}" -gt 0 ] && pass "heartbeats answered ($rate/s)" || fail "no heartbeat answered"
grep -q '^stream_failures=0' "$OUT/load.out" && pass "no stream failed" || fail "streams failed"
finish
