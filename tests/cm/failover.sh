#!/usr/bin/env bash
# Three members, node lease TTL 6 s: 20 agents heartbeat; kill -9 the leader; no node may ever
# be DOWN (a watch on a surviving member sees every record put), and every node is UP at the
# end on the new leader.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
N=20
leader=$("$CLUSTER_SH" leader "$CLUSTER_DIR") || { echo "no leader"; exit 1; }
other=$((leader % 3 + 1))
start_bg watch "$CM_NODE" watch "$(ep "$other")"
expect "watch started" "$OUT/watch.out" '^watching' 10
for i in $(seq 1 $N); do
    start_bg "agent$i" "$CM_NODE" agent "$CLUSTER_ENDPOINTS" --address "10.0.0.$i:9000" --label zone=z$((i % 3))
done
for i in $(seq 1 $N); do
    wait_for "$OUT/agent$i.out" '^registered id=' 20 || fail "agent $i did not register"
done
deadline=$(($(now_ms) + 20000))
while [ "$(grep -c 'state=up epoch=1 ' "$OUT/watch.out")" -lt $N ] && [ "$(now_ms)" -lt $deadline ]; do
    sleep 0.2
done
[ "$(grep -c 'state=up epoch=1 ' "$OUT/watch.out")" -ge $N ] && pass "$N nodes up" || fail "not every node came up"
check_out "a follower refuses heartbeats" "code=FAILED_PRECONDITION message=etcdserver: not leader" \
    "$CM_NODE" call "$(ep "$other")" heartbeat --id 1 --epoch 1
sleep 2
echo "killing leader m$leader"
"$CLUSTER_SH" kill "$CLUSTER_DIR" "$leader" KILL
# Two lease TTLs: long enough for any lapse to be declared, had one happened.
sleep 12
new=$("$CLUSTER_SH" leader "$CLUSTER_DIR") && pass "new leader m$new" || fail "no new leader"
out=$("$CM_NODE" call "$(ep "$other")" list)
up=$(grep -c ' state=up epoch=1 ' <<<"$out")
[ "$up" = $N ] && pass "all $N nodes up with epoch 1 after the failover" || {
    fail "only $up of $N nodes up with epoch 1:"
    echo "$out"
}
if grep -Eq 'state=down|epoch=2' "$OUT/watch.out"; then
    fail "a node was declared down:"
    grep -E 'state=down|epoch=2' "$OUT/watch.out"
else
    pass "no node was ever down"
fi
grep -h 'reregister' "$OUT"/agent*.out && fail "an agent was told to re-register" || pass "no re-registration"
echo "suspected during the failover: $(grep -c 'state=suspect' "$OUT/watch.out")"
grep -h 'stream-closed' "$OUT"/agent*.out | sort | uniq -c
finish
