#!/usr/bin/env bash
# One member, node lease TTL 3 s, heartbeats every 500 ms (batond flags set by run.sh):
# bad input and its exact texts, kill -9 → DOWN with epoch + 1 within the TTL plus slack,
# SIGSTOP past the TTL → the agent learns the new epoch and its old-epoch fenced write fails,
# drain → decommission → remove with the commands a node sees.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
E=$(ep 1)
TTL_S=3

# ---- bad input ---------------------------------------------------------------------------
check_out "malformed label key" \
    "code=INVALID_ARGUMENT message=baton: malformed label key: byte 0x5a at 0, want [a-z0-9_.-]{1,63}" \
    "$CM_NODE" call "$E" register --label Zone=a
check_out "duplicate label" \
    'code=INVALID_ARGUMENT message=baton: malformed labels: duplicate key "zone"' \
    "$CM_NODE" call "$E" register --label zone=a --label zone=b
check_out "malformed version" \
    'code=INVALID_ARGUMENT message=baton: malformed version "1.2": want major.minor.patch' \
    "$CM_NODE" call "$E" register --version 1.2
check_out "empty address" "code=INVALID_ARGUMENT message=baton: malformed address: empty" \
    "$CM_NODE" call "$E" register --address ""
check_out "heartbeat of an unknown node" "code=NOT_FOUND message=baton: node not found" \
    "$CM_NODE" call "$E" heartbeat --id 12345 --epoch 1
check_out "get of an unknown node" "code=NOT_FOUND message=baton: node not found" \
    "$CM_NODE" call "$E" get --id 12345
check_out "re-register of an unknown node" "code=NOT_FOUND message=baton: node not found" \
    "$CM_NODE" call "$E" register --id 12345

# ---- watch every record change -------------------------------------------------------------
start_bg watch "$CM_NODE" watch "$E"
expect "watch started" "$OUT/watch.out" '^watching' 10

# ---- kill -9: DOWN with epoch 2 within TTL + slack -------------------------------------------
start_bg a "$CM_NODE" agent "$E" --label zone=a --label rack=r1
A_PID=$LAST_PID
expect "agent a registered" "$OUT/a.out" '^registered id=' 10
A_ID=$(sed -n 's/^registered id=\([0-9a-f]*\) .*/\1/p' "$OUT/a.out" | head -1)
expect "agent a up" "$OUT/watch.out" "^node id=$A_ID state=up epoch=1 " 10
check_out "stale epoch answered with the current one and REREGISTER" \
    "heartbeat epoch=1 state=up command=reregister" \
    "$CM_NODE" call "$E" heartbeat --id "0x$A_ID" --epoch 7
sleep 2
kill -9 "$A_PID"
wait "$A_PID" 2>/dev/null
t0=$(now_ms)
# Lease TTL, plus the expiry scan and a services tick, plus slack for a loaded ASan machine.
expect "agent a down with epoch 2" "$OUT/watch.out" "^node id=$A_ID state=down epoch=2 " $((TTL_S + 12))
echo "kill -9 to DOWN: $(($(now_ms) - t0)) ms (lease TTL ${TTL_S} s)"
grep -q "^node id=$A_ID state=suspect epoch=1 " "$OUT/watch.out" && pass "a was suspected first" ||
    fail "a went down without being suspected first"
check_out "heartbeat of the dead node's old epoch" "heartbeat epoch=2 state=down command=reregister" \
    "$CM_NODE" call "$E" heartbeat --id "0x$A_ID" --epoch 1

# ---- SIGSTOP past the TTL, then SIGCONT: fenced ------------------------------------------------
start_bg b "$CM_NODE" agent "$E" --label zone=b
B_PID=$LAST_PID
expect "agent b registered" "$OUT/b.out" '^registered id=' 10
B_ID=$(sed -n 's/^registered id=\([0-9a-f]*\) .*/\1/p' "$OUT/b.out" | head -1)
expect "agent b up" "$OUT/watch.out" "^node id=$B_ID state=up epoch=1 " 10
kill -STOP "$B_PID"
expect "stopped agent b down with epoch 2" "$OUT/watch.out" "^node id=$B_ID state=down epoch=2 " $((TTL_S + 12))
kill -CONT "$B_PID"
expect "b told to re-register" "$OUT/b.out" "^state id=$B_ID epoch=2 state=down command=reregister" 10
expect "b's write fenced with epoch 1 fails" "$OUT/b.out" "^fence id=$B_ID epoch=1 succeeded=0" 10
expect "b registered again with epoch 2" "$OUT/b.out" "^registered id=$B_ID epoch=2 state=up" 10
expect "b's write fenced with epoch 2 succeeds" "$OUT/b.out" "^fence id=$B_ID epoch=2 succeeded=1" 10
expect "b up again" "$OUT/watch.out" "^node id=$B_ID state=up epoch=2 " 10

# ---- list, drain, decommission, remove -------------------------------------------------------
check_out "list by label" "count=1" "$CM_NODE" call "$E" list --label zone=b
check_out "list by state" "count=1" "$CM_NODE" call "$E" list --state 4
check_out "decommission needs a drain first" \
    "code=FAILED_PRECONDITION message=baton: node is up; decommission needs decommissioning (drain it first)" \
    "$CM_NODE" call "$E" decommission --id "0x$B_ID"
check_out "drain of a down node" \
    "code=FAILED_PRECONDITION message=baton: node is down; drain needs up or suspect" \
    "$CM_NODE" call "$E" drain --id "0x$A_ID"
check_out "drain" "code=OK message=" "$CM_NODE" call "$E" drain --id "0x$B_ID"
expect "b told to drain" "$OUT/b.out" "^state id=$B_ID epoch=2 state=decommissioning command=drain" 10
check_out "decommission" "code=OK message=" "$CM_NODE" call "$E" decommission --id "0x$B_ID"
expect "b told to stop" "$OUT/b.out" "^stop id=$B_ID" 10
check_out "remove" "code=OK message=" "$CM_NODE" call "$E" remove --id "0x$A_ID"
check_out "remove again (idempotent)" "code=OK message=" "$CM_NODE" call "$E" remove --id "0x$A_ID"
check_out "removed node's heartbeat gets STOP" "heartbeat epoch=2 state=removed command=stop" \
    "$CM_NODE" call "$E" heartbeat --id "0x$A_ID" --epoch 2
check_out "removed node cannot register" \
    "code=FAILED_PRECONDITION message=baton: node was removed" \
    "$CM_NODE" call "$E" register --id "0x$A_ID"
expect "every transition is a put on the record" "$OUT/watch.out" "^node id=$A_ID state=removed epoch=2 " 5
check_out "etcdctl sees the epoch key" "2" etcdctl --endpoints="$E" get --print-value-only "/baton/nodes/$B_ID/epoch"
finish
