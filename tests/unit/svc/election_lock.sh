#!/bin/bash
# v3election, v3lock and Auth: the same grpc-js transcript (election_lock.js) against a one-member
# batond and a real etcd 3.4.23, diffed (lease ids and revisions normalised by the script); then
# etcdctl 3.4 (which has no `auth status`) `user list`, `role list` compared, and etcdctl `lock` with two
# lockers on batond (mutual exclusion; the lock passes on when the holder is killed -9).
# Usage: election_lock.sh <batond> <source dir>
set -u
BATOND=$1
SRC=$2
ETCD=${ETCD:-/usr/bin/etcd}
export ETCDCTL_API=3
export NODE_PATH=${NODE_PATH:-/root/.cache/baton/npm/grpc-js/node_modules}
[ -d "$NODE_PATH/@grpc/grpc-js" ] || { echo "SKIP: no @grpc/grpc-js under $NODE_PATH"; exit 77; }
T=$(mktemp -d /tmp/svc-el.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- batond log tail"; tail -20 "$T/b.log"; exit 1; }
free_port() {
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}
wait_up() {
    for _ in $(seq 1 100); do
        etcdctl --endpoints="$1" --dial-timeout=1s --command-timeout=1s get probe >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "no answer from $1"
}
BC=$(free_port); BP=$(free_port); BM=$(free_port); EC=$(free_port); EP=$(free_port)
"$BATOND" --name b1 --data-dir "$T/b" --listen-client-urls "http://127.0.0.1:$BC" \
    --advertise-client-urls "http://127.0.0.1:$BC" --listen-peer-urls "http://127.0.0.1:$BP" \
    --initial-advertise-peer-urls "http://127.0.0.1:$BP" --listen-metrics-urls "http://127.0.0.1:$BM" \
    --initial-cluster "b1=http://127.0.0.1:$BP" >"$T/b.log" 2>&1 &
PIDS+=($!)
"$ETCD" --name e1 --data-dir "$T/e" --listen-client-urls "http://127.0.0.1:$EC" \
    --advertise-client-urls "http://127.0.0.1:$EC" --listen-peer-urls "http://127.0.0.1:$EP" \
    --initial-advertise-peer-urls "http://127.0.0.1:$EP" --initial-cluster "e1=http://127.0.0.1:$EP" \
    >"$T/e.log" 2>&1 &
PIDS+=($!)
wait_up "127.0.0.1:$BC"
wait_up "127.0.0.1:$EC"

# ---- grpc-js transcript, both servers at once ---------------------------------------------------
node "$SRC/election_lock.js" "127.0.0.1:$EC" "$SRC/../../../proto" ref >"$T/e.out" 2>&1 &
EJ=$!
node "$SRC/election_lock.js" "127.0.0.1:$BC" "$SRC/../../../proto" >"$T/b.out" 2>&1 ||
    { cat "$T/b.out"; fail "transcript on batond"; }
wait $EJ || { cat "$T/e.out"; fail "transcript on etcd"; }
# AuthStatus is etcd 3.5's (etcd 3.4 answers UNIMPLEMENTED): batond answers it as 3.5 does.
grep -qxF "auth status: enabled=false" "$T/b.out" || { cat "$T/b.out"; fail "AuthStatus"; }
grep -q "^auth status: error code=12" "$T/e.out" || { cat "$T/e.out"; fail "etcd's AuthStatus"; }
head -n "$(wc -l <"$T/e.out")" "$T/b.out" | grep -v "^auth status" >"$T/b.head"
grep -v "^auth status" "$T/e.out" >"$T/e.cmp"
diff "$T/e.cmp" "$T/b.head" || fail "batond differs from etcd (< etcd, > batond)"
for want in "lock b: l/L5 c waiting: true" "lock c after b's lease revoked: l/L6" \
    "lock no lease: error code=5 etcdserver: requested lease not found" "unlock c: ok"; do
    grep -qxF "$want" "$T/b.out" || { cat "$T/b.out"; fail "missing: $want"; }
done
echo "t=${SECONDS}s transcript: $(wc -l <"$T/e.out") lines identical to etcd, lock hand-offs ok"

# ---- etcdctl auth -------------------------------------------------------------------------------
for cmd in "user list" "role list" "user get nobody" "auth enable"; do
    # The client's own retry log lines carry a time and a client id: dropped.
    e=$(etcdctl --endpoints="127.0.0.1:$EC" $cmd 2>&1 | grep -v '^{"level"'; echo "exit=${PIPESTATUS[0]}")
    b=$(etcdctl --endpoints="127.0.0.1:$BC" $cmd 2>&1 | grep -v '^{"level"'; echo "exit=${PIPESTATUS[0]}")
    [ "$e" = "$b" ] || fail "etcdctl $cmd: etcd said [$e], batond said [$b]"
done
echo "t=${SECONDS}s etcdctl auth: identical"

# ---- etcdctl elect: two campaigners and an observer, on both servers --------------------------
# wait_lines <file> <n>: until the file has n lines (bounded: 15 s).
wait_lines() {
    for _ in $(seq 1 150); do
        [ "$(wc -l <"$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
# elect_scenario <endpoint> <dir>: the first campaigner wins, the second waits until the first's
# lease is revoked (etcdctl 3.4 elect has no --ttl: its sessions live 60 s after a kill -9); the
# observer sees both. Lease ids become LEASE.
elect_scenario() {
    local E="etcdctl --endpoints=$1" d=$2
    mkdir -p "$d"
    $E elect el p1 >"$d/c1" 2>&1 &
    local c1=$!
    PIDS+=($c1)
    wait_lines "$d/c1" 2 || echo "first campaigner did not win"
    $E elect -l el >"$d/obs" 2>&1 &
    local ob=$!
    PIDS+=($ob)
    $E elect el p2 >"$d/c2" 2>&1 &
    local c2=$!
    PIDS+=($c2)
    wait_lines "$d/obs" 2 || echo "observer saw nothing"
    sleep 1
    echo "second campaigner lines while the first leads: $(wc -l <"$d/c2")"
    $E lease revoke "$(head -1 "$d/c1" | sed 's#^el/##')" >/dev/null
    wait_lines "$d/c2" 2 || echo "second campaigner never won"
    wait_lines "$d/obs" 4 || echo "observer did not see the second leader"
    kill -9 $c1 $c2 $ob
    wait $c1 $c2 $ob 2>/dev/null
    head -2 "$d/c1" >"$d/c1.head"
    mv "$d/c1.head" "$d/c1"
    for f in c1 c2 obs; do
        echo "## $f"
        sed -E 's#^el/[0-9a-f]+$#el/LEASE#' "$d/$f"
    done
}
elect_scenario "127.0.0.1:$EC" "$T/ee" >"$T/elect.etcd" &
EE=$!
elect_scenario "127.0.0.1:$BC" "$T/eb" >"$T/elect.batond"
wait $EE
diff "$T/elect.etcd" "$T/elect.batond" || fail "etcdctl elect differs (< etcd, > batond)"
grep -qx "second campaigner lines while the first leads: 0" "$T/elect.batond" ||
    fail "etcdctl elect: $(cat "$T/elect.batond")"
echo "t=${SECONDS}s etcdctl elect: identical to etcd"

# ---- etcdctl lock: two lockers on batond --------------------------------------------------------
E="etcdctl --endpoints=127.0.0.1:$BC"
$E lock --ttl=2 L1 >"$T/l1.out" 2>&1 &
L1=$!
PIDS+=($L1)
for _ in $(seq 1 100); do [ -s "$T/l1.out" ] && break; sleep 0.1; done
grep -q '^L1/' "$T/l1.out" || fail "first locker did not get the lock: $(cat "$T/l1.out")"
$E lock --ttl=2 L1 >"$T/l2.out" 2>&1 &
L2=$!
PIDS+=($L2)
sleep 1
[ -s "$T/l2.out" ] && fail "second locker got the lock while the first holds it: $(cat "$T/l2.out")"
kill -9 $L1
for _ in $(seq 1 150); do [ -s "$T/l2.out" ] && break; sleep 0.1; done
grep -q '^L1/' "$T/l2.out" || fail "lock did not pass on after the holder was killed"
[ "$(head -1 "$T/l1.out")" != "$(head -1 "$T/l2.out")" ] || fail "both lockers got the same key"
kill $L2
echo "etcdctl lock: exclusive, passed on after kill -9 of the holder"
echo "ok (${SECONDS}s)"
