#!/usr/bin/env bash
# membership.sh SERVER: membership changes end to end with etcdctl, on a real 3-member cluster.
#
# A member is added (MemberAdd, then started on a new data dir with --initial-cluster-state
# existing: it must learn the id MemberAdd chose), serves reads and writes, restarts on its
# data dir; it is removed and another one added with a fresh id; the leader removes itself;
# a learner is added and promoted; a member nobody added is refused with a clear message.
# Data written before each step is read back from every member at the end. Runs against
# etcd too (the calibration: SERVER=/usr/bin/etcd).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER=${1:?usage: membership.sh SERVER}
export ETCDCTL_API=3
ETCDCTL=${ETCDCTL:-etcdctl}
C=$HERE/cluster.sh

DIR=$(mktemp -d "${TMPDIR:-/tmp}/baton-membership.XXXXXX")
export CLUSTER_OWNER_PID=$$
cleanup() {
    [ -n "${STRAY_PID:-}" ] && kill -KILL "$STRAY_PID" 2>/dev/null
    "$C" down "$DIR/cluster" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
. "$HERE/../harness/checks.sh"
ctl() {
    . "$DIR/cluster/cluster.env"
    "$ETCDCTL" --endpoints="$CLUSTER_ENDPOINTS" --dial-timeout=2s --command-timeout=5s "$@"
}
ctl_at() {
    local i=$1
    shift
    . "$DIR/cluster/cluster.env"
    local cp="CLUSTER_CLIENT_PORT_$i"
    "$ETCDCTL" --endpoints="127.0.0.1:${!cp}" --dial-timeout=2s --command-timeout=5s "$@"
}
member_id() { # name
    ctl member list | awk -F', ' -v n="$1" '$3 == n { print $1 }'
}
# Puts are retried for a while: a configuration change may leave the cluster without a
# leader for an election.
put_retry() {
    local n
    for n in $(seq 1 50); do
        ctl put "$1" "$2" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

"$C" up "$SERVER" 3 "$DIR/cluster" >/dev/null || {
    fail "cannot start 3 members of $SERVER"
    finish
}
put_retry before-add 1 || fail "put before the add"

# 1. Add m4; it joins, serves, and its writes reach the others.
if i=$("$C" add "$DIR/cluster" | tail -1); then
    ok "member m$i added and healthy"
    ctl_at "$i" put via-new-member 2 >/dev/null && [ "$(ctl_at 1 get via-new-member --print-value-only)" = 2 ] &&
        ok "a write through the new member is read from member 1" ||
        fail "write through the new member"
    [ "$(ctl_at "$i" get before-add --print-value-only)" = 1 ] && ok "the new member has the old data" ||
        fail "the new member lacks data written before it joined"
    id4=$(member_id "m$i")
    [ -n "$id4" ] && ok "member list shows m$i started ($id4)" || fail "m$i missing from member list"
    # Restart on its data dir: same id, healthy again.
    "$C" kill "$DIR/cluster" "$i" && "$C" start "$DIR/cluster" "$i" &&
        [ "$(member_id "m$i")" = "$id4" ] && ok "m$i restarts with its id" || fail "restart of m$i"
else
    fail "member add + join"
    finish
fi

# 2. Remove it; add another member with a new id.
"$C" remove "$DIR/cluster" "$i" && ok "m$i removed" || fail "remove m$i"
[ -z "$(member_id "m$i")" ] && ok "m$i gone from member list" || fail "m$i still listed"
if j=$("$C" add "$DIR/cluster" | tail -1); then
    id5=$(member_id "m$j")
    [ -n "$id5" ] && [ "$id5" != "$id4" ] && ok "m$j joins with a new id" || fail "m$j id '$id5'"
else
    fail "second add"
fi

# 3. The leader removes itself; the rest elect a new leader and keep serving.
if l=$("$C" leader "$DIR/cluster"); then
    "$C" remove "$DIR/cluster" "$l" && ok "leader m$l removed itself" || fail "remove leader m$l"
    put_retry after-leader-removal 3 && ok "writes resume after the leader left" ||
        fail "no writes after the leader left"
else
    fail "no leader found"
fi

# 4. A learner joins and is promoted once in sync.
if k=$("$C" add "$DIR/cluster" --learner | tail -1); then
    lid=$(member_id "m$k")
    ctl member list | grep -q "m$k, .*, true$" && ok "m$k is a learner" || fail "m$k not a learner"
    promoted=0
    for _ in $(seq 1 30); do
        ctl member promote "$lid" >/dev/null 2>&1 && promoted=1 && break
        sleep 0.3
    done
    [ $promoted = 1 ] && ctl member list | grep -q "m$k, .*, false$" && ok "m$k promoted" ||
        fail "promote m$k"
else
    fail "learner add"
fi

# 5. A member nobody added is refused, with a non-zero exit (and our message for batond).
. "$DIR/cluster/cluster.env"
live=1
while case " ${CLUSTER_REMOVED:-} " in *" $live "*) true ;; *) false ;; esac; do live=$((live + 1)); done
lpp="CLUSTER_PEER_PORT_$live"
pp=$((20000 + RANDOM % 12000))
cp=$((20000 + RANDOM % 12000))
mp=$((20000 + RANDOM % 12000))
out=$(timeout 60 "$SERVER" --name stray --data-dir "$DIR/stray.data" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
    --listen-metrics-urls "http://127.0.0.1:$mp" \
    --initial-cluster "m$live=http://127.0.0.1:${!lpp},stray=http://127.0.0.1:$pp" \
    --initial-cluster-state existing 2>&1)
rc=$?
[ $rc != 0 ] && [ $rc != 124 ] && ok "an unannounced member exits ($rc)" || fail "stray member exit $rc"
case "$SERVER" in
*batond*)
    echo "$out" | grep -q "add this member first" && ok "and says to add it first" ||
        fail "stray member message: $(echo "$out" | tail -1)"
    ;;
esac

# Everything written is on every running member.
"$C" wait "$DIR/cluster" 30 || fail "cluster not healthy at the end"
. "$DIR/cluster/cluster.env"
for m in $(seq 1 "$CLUSTER_SIZE"); do
    case " ${CLUSTER_REMOVED:-} " in *" $m "*) continue ;; esac
    got=$(ctl_at "$m" get --prefix "" --keys-only | grep -c .)
    [ "$got" = 3 ] && ok "member m$m has all 3 keys" || fail "member m$m has $got keys"
done
finish
