#!/usr/bin/env bash
# run.sh BATOND REFERENCE N OUT_DIR [restore]
# Runs scenario.sh against N batond members and (REFERENCE not "-") N members of the reference
# etcd, side by side, and fails when the normalised transcripts differ (the diff is printed and
# kept in OUT_DIR/diff). With "restore": the snapshot batond streamed is restored with
# `batond --restore` into a new data directory, which must serve the keys written before it;
# a damaged copy must be refused with exit 1 and a message naming the file.
set -uo pipefail
[ $# -ge 4 ] || {
    echo "usage: $0 BATOND REFERENCE N OUT_DIR [restore]" >&2
    exit 2
}
BATOND=$1 REF=$2 N=$3 OUT=$4 MODE=${5:-}
HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER=$HERE/../../compat/cluster.sh
export ETCDCTL_API=3
rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
fail=0

if [ "$REF" != - ]; then
    "$CLUSTER" run "$REF" "$N" -- "$HERE/scenario.sh" "$OUT/ref" >"$OUT/ref.log" 2>&1 &
    ref_pid=$!
fi
"$CLUSTER" run "$BATOND" "$N" -- "$HERE/scenario.sh" "$OUT/sub" >"$OUT/sub.log" 2>&1 || {
    echo "FAIL: batond scenario did not complete"
    tail -20 "$OUT/sub.log"
    fail=1
}
if [ "$REF" != - ]; then
    wait "$ref_pid" || {
        echo "FAIL: reference scenario did not complete"
        tail -20 "$OUT/ref.log"
        fail=1
    }
    if ! diff -u "$OUT/ref/transcript" "$OUT/sub/transcript" >"$OUT/diff"; then
        echo "FAIL: batond's transcript differs from etcd's:"
        cat "$OUT/diff"
        fail=1
    else
        echo "ok: $(grep -c '^===' "$OUT/sub/transcript") commands, same normalised output as etcd"
    fi
fi
# Facts that must hold whatever the reference says.
for want in "distinct hashkv values over the members: 1" "snapshot size is 32 mod 512: 1"; do
    grep -qF "[check] $want" "$OUT/sub/transcript" || {
        echo "FAIL: missing check: $want"
        fail=1
    }
done
if [ "$N" -gt 1 ]; then
    grep -qF "[check] leader after move-leader is the target: True" "$OUT/sub/transcript" || {
        echo "FAIL: move-leader did not move the leadership"
        fail=1
    }
fi

if [ "$MODE" = restore ]; then
    SNAP=$OUT/sub/snap.db
    port() { echo $((20000 + (RANDOM * 32768 + RANDOM) % 12000)); }
    CP=$(port) PP=$(port) MP=$(port)
    DATA=$OUT/restored
    "$BATOND" --restore "$SNAP" --data-dir "$DATA" --name r1 \
        --initial-cluster "r1=http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
        --listen-peer-urls "http://127.0.0.1:$PP" --listen-client-urls "http://127.0.0.1:$CP" \
        --advertise-client-urls "http://127.0.0.1:$CP" --listen-metrics-urls "http://127.0.0.1:$MP" \
        >"$OUT/restored.log" 2>&1 &
    pid=$!
    got=""
    for _ in $(seq 1 100); do
        got=$(etcdctl --endpoints="127.0.0.1:$CP" --dial-timeout=1s --command-timeout=2s \
            get k --prefix 2>/dev/null | tr '\n' ' ')
        [ -n "$got" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.2
    done
    members=$(etcdctl --endpoints="127.0.0.1:$CP" member list 2>&1 | cut -d, -f2,3 | tr '\n' ' ')
    kill -TERM $pid 2>/dev/null
    wait $pid
    if [ "$got" != "k1 v1 k2 v2 k3 v3 " ]; then
        echo "FAIL: restored member serves '$got' (want k1 v1 k2 v2 k3 v3)"
        tail -20 "$OUT/restored.log"
        fail=1
    elif [ "$members" != " started, r1 " ]; then
        echo "FAIL: restored member's table is '$members' (want only r1)"
        fail=1
    else
        echo "ok: batond --restore of etcdctl's snapshot serves the keys, member table reset"
    fi
    # A damaged snapshot: one byte changed.
    cp "$SNAP" "$OUT/bad.db"
    printf 'X' | dd of="$OUT/bad.db" bs=1 seek=100 conv=notrunc 2>/dev/null
    "$BATOND" --restore "$OUT/bad.db" --data-dir "$OUT/bad.data" --name r1 \
        --initial-cluster "r1=http://127.0.0.1:$PP" >"$OUT/bad.log" 2>&1
    rc=$?
    if [ $rc != 1 ] || ! grep -q "bad.db: snapshot checksum mismatch" "$OUT/bad.log" || [ -e "$OUT/bad.data/member" ]; then
        echo "FAIL: damaged snapshot: exit $rc, $(cat "$OUT/bad.log")"
        fail=1
    else
        echo "ok: damaged snapshot refused: $(cat "$OUT/bad.log")"
    fi
fi
exit $fail
