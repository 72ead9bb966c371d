#!/usr/bin/env bash
# etcdctl_scenario.sh CLUSTER_DIR OUT_DIR
#
# Drives one running cluster (started by cluster.sh; its cluster.env names the endpoints)
# through a fixed etcdctl 3.4 scenario and records a raw transcript in OUT_DIR/transcript:
# for every command its arguments, stdout, stderr and exit status, in this form
#
#   === [7] get foo --prefix --limit 2
#   <stdout>
#   --- stderr
#   <stderr>
#   --- exit 0
#
# Lines "=== [check] ..." are derived facts the scenario computes itself (for example "the id
# that member add printed is the one member list shows"), for what the normaliser has to hide
# (member and lease ids). OUT_DIR/map lists the values the harness chose at random (ports,
# paths), one "literal<TAB>replacement" a line, for normalise.pl.
#
# The scenario is deterministic for a correct server: same commands, same revisions, same
# outputs, whatever the cluster size. Everything that blocks (watch, keep-alive, elect, lock)
# is bounded by `timeout`.
set -uo pipefail

[ $# = 2 ] || {
    echo "usage: $0 CLUSTER_DIR OUT_DIR" >&2
    exit 2
}
CDIR=$(cd "$1" && pwd)
OUT=$2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$CDIR/cluster.env"
export ETCDCTL_API=3
ETCDCTL=${ETCDCTL:-etcdctl}
# Every recorded command runs under this bound: a server that never answers (a watch never
# cancelled, a stream never closed) shows up as exit 124 in the diff instead of a hung test.
CMD_TIMEOUT_S=${CMD_TIMEOUT_S:-30}
EP=$CLUSTER_ENDPOINTS
T=$OUT/transcript
W=$OUT/work
mkdir -p "$W"
: >"$T"
BG_PIDS=()
# Background commands run under `timeout`; TERM makes timeout stop its etcdctl too.
trap 'for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done' EXIT

# The map: ports and paths chosen by the harness, replaced by stable names.
{
    for i in $(seq 1 "$CLUSTER_SIZE"); do
        cp="CLUSTER_CLIENT_PORT_$i"
        pp="CLUSTER_PEER_PORT_$i"
        printf '127.0.0.1:%s\t<client-%s>\n' "${!cp}" "$i"
        printf '127.0.0.1:%s\t<peer-%s>\n' "${!pp}" "$i"
    done
    printf '%s\t<workdir>\n' "$W"
} >"$OUT/map"

# The machine running this is often loaded: a fork can cost 50 ms there, so the per-command
# bookkeeping below uses bash builtins only (read, printf), no cat/tail/date.
append_file() { # append_file FILE: print FILE, ending with a newline if it is not empty
    local content=""
    IFS= read -r -d '' content <"$1" || true
    if [ -n "$content" ]; then
        printf '%s' "$content"
        [ "${content: -1}" = $'\n' ] || printf '\n'
    fi
}

emit() { # emit RC: append the captured stdout/stderr of the last command
    {
        append_file "$W/out"
        echo "--- stderr"
        append_file "$W/err"
        echo "--- exit $1"
    } >>"$T"
}

N=0
header() {
    N=$((N + 1))
    echo "=== [$N] $*" >>"$T"
    echo "$EPOCHREALTIME [$N] $*" >>"$OUT/timing"
}

# c ARGS...: one etcdctl command against every endpoint.
c() {
    header "$@"
    local rc=0
    timeout -k 5 "$CMD_TIMEOUT_S" "$ETCDCTL" --endpoints="$EP" "$@" >"$W/out" 2>"$W/err" \
        </dev/null || rc=$?
    emit $rc
}

# c1 ARGS...: one etcdctl command against member 1 only.
c1() {
    header "(member 1) $*"
    local rc=0
    timeout -k 5 "$CMD_TIMEOUT_S" "$ETCDCTL" --endpoints="127.0.0.1:$CLUSTER_CLIENT_PORT_1" \
        "$@" >"$W/out" 2>"$W/err" </dev/null || rc=$?
    emit $rc
}

# cin INPUT ARGS...: the same with INPUT on stdin (txn).
cin() {
    local input=$1
    shift
    header "$* <<< $(printf '%s' "$input" | tr '\n' '|')"
    local rc=0
    timeout -k 5 "$CMD_TIMEOUT_S" "$ETCDCTL" --endpoints="$EP" "$@" >"$W/out" 2>"$W/err" \
        <<<"$input" || rc=$?
    emit $rc
}

# Commands that block until interrupted (watch, keep-alive, elect, lock) run in the
# background under `timeout` (a hard bound) and are stopped with SIGTERM once their output is
# complete, like a user's ^C. bg_start NAME ARGS... starts one; bg_stop NAME stops it and
# records it (numbered when it ends, so the transcript stays in order).
declare -A BG_HDR BG_PID
bg_start() {
    local name=$1
    shift
    BG_HDR[$name]="(until stopped) $*"
    timeout -s TERM -k 5 "$CMD_TIMEOUT_S" "$ETCDCTL" --endpoints="$EP" "$@" >"$W/$name.out" \
        2>"$W/$name.err" </dev/null &
    BG_PID[$name]=$!
    BG_PIDS+=("$!")
}

# bg_wait NAME PATTERN COUNT: wait (at most 10 s) until COUNT lines of NAME's stdout match
# PATTERN, then 0.3 s more, so that an extra, wrong line would be caught too.
bg_wait() {
    local name=$1 pattern=$2 count=$3
    for _ in $(seq 1 100); do
        [ "$(grep -c -E -- "$pattern" "$W/$name.out")" -ge "$count" ] && break
        sleep 0.1
    done
    sleep 0.3
}

bg_stop() {
    local name=$1 rc=0
    kill -TERM "${BG_PID[$name]}" 2>/dev/null
    wait "${BG_PID[$name]}" || rc=$?
    header "${BG_HDR[$name]}"
    {
        append_file "$W/$name.out"
        echo "--- stderr"
        append_file "$W/$name.err"
        echo "--- exit $rc"
    } >>"$T"
}

# cw PATTERN COUNT ARGS...: a blocking command recorded once COUNT lines match PATTERN.
cw() {
    local pattern=$1 count=$2
    shift 2
    bg_start cw "$@"
    bg_wait cw "$pattern" "$count"
    bg_stop cw
}

# cblock PREFIX COUNT ARGS...: a contender (lock, elect) that must stay blocked: recorded once
# the server holds COUNT keys under PREFIX (the holder's and its own), i.e. it is waiting.
cblock() {
    local prefix=$1 count=$2
    shift 2
    bg_start cb "$@"
    for _ in $(seq 1 100); do
        [ "$("$ETCDCTL" --endpoints="$EP" get "$prefix" --prefix --keys-only 2>/dev/null |
            grep -c .)" -ge "$count" ] && break
        sleep 0.1
    done
    sleep 0.5
    bg_stop cb
}

check() { # check NAME VALUE: a derived fact, compared like any output
    echo "=== [check] $1" >>"$T"
    echo "$2" >>"$T"
}

# The store's current revision, from a response header.
current_rev() {
    "$ETCDCTL" --endpoints="$EP" get probe-revision -w json 2>/dev/null |
        sed -n 's/.*"revision":\([0-9]*\).*/\1/p'
}


# --- key-value: put, get in all its forms ---------------------------------------------------
c put foo bar
c put foo1 bar1
c put foo2 bar2
c put foo3 bar3
c put zoo z1
c put zoo2 z2
c put foo1 bar1-v2
c get foo
c get foo --prefix
c get foo foo3
c get foo --prefix --limit 2
c get foo --prefix --sort-by=VALUE --order=DESCEND
c get foo --prefix --sort-by=MODIFY --order=ASCEND
c get foo --prefix --sort-by=VERSION --order=DESCEND
c get foo --prefix --keys-only
c get foo --prefix --print-value-only
c get foo1 --rev=2
c get foo1 --rev=7
c get foo --prefix -w json
c get foo --prefix --limit 1 -w json
c get zoo --from-key
c get missing
c get missing -w json
c get foo --consistency=s
c get foo --prefix -w fields
c put foo bar-v2 --prev-kv
c put foo bar-v3 --prev-kv -w json
c get foo1 --rev=100
c get
c put "" empty-key

# --- delete ---------------------------------------------------------------------------------
c del foo3
c del missing
c del foo --prefix --prev-kv
c get foo --prefix -w json
c del zoo zoo3 -w json
c get foo1 --rev=9

# --- transactions (from stdin, etcdctl's non-interactive format) -------------------------------
c put t/a 1
cin 'value("t/a") = "1"

put t/b yes
get t/a

put t/b no

' txn
cin 'value("t/a") = "2"

put t/b yes

put t/b no
get t/b

' txn
cin 'mod("t/a") > "0"
version("t/b") = "2"

del t/a
put t/c c

get t/b

' txn -w json
c get t/ --prefix

# --- watch over history (bounded: etcdctl watch never ends by itself) ------------------------
c put w/a 1
c put w/b 2
c put w/a 3
c del w/b
W0=$(current_rev)
check "revision before watch history" "$W0"
cw '^(PUT|DELETE)$' 4 watch w/ --prefix --rev=$((W0 - 3))
cw '^(PUT|DELETE)$' 2 watch w/a --rev=$((W0 - 3)) --prev-kv
cw 'Events' 1 watch w/ --prefix --rev=$((W0 - 3)) --prev-kv -w json

# A live watch: started before the writes, from the next revision (so it is deterministic).
R=$(current_rev)
bg_start live watch live/ --prefix --rev=$((R + 1)) --prev-kv
sleep 0.5
"$ETCDCTL" --endpoints="$EP" put live/x 1 >/dev/null 2>&1
"$ETCDCTL" --endpoints="$EP" put live/y 2 >/dev/null 2>&1
"$ETCDCTL" --endpoints="$EP" put live/x 3 >/dev/null 2>&1
"$ETCDCTL" --endpoints="$EP" del live/ --prefix >/dev/null 2>&1
bg_wait live '^(PUT|DELETE)$' 5
bg_stop live

# --- compaction -----------------------------------------------------------------------------
CR=$(current_rev)
c compaction $((CR - 4))
c compaction $((CR - 4))
c compaction $((CR - 6))
c get foo1 --rev=$((CR - 6))
c get w/ --prefix --rev=$((CR - 4))
c watch w/ --prefix --rev=2
c compaction "$CR" --physical
c get "" --from-key --keys-only

# --- leases ---------------------------------------------------------------------------------
c lease grant 60
L1=$(sed -n 's/^lease \([0-9a-f]*\) granted.*/\1/p' "$W/out")
c lease grant 120
L2=$(sed -n 's/^lease \([0-9a-f]*\) granted.*/\1/p' "$W/out")
c lease grant 30 -w json
c put l/a 1 --lease="$L1"
c put l/b 2 --lease="$L1"
c put l/c 3 --lease="$L2"
c get l/ --prefix -w json
c lease timetolive "$L1"
c lease timetolive "$L1" --keys
c lease timetolive "$L2" --keys -w json
c lease list
# Below the minimum TTL: granted with the minimum (and it expires before anyone looks again).
c lease grant 1
c lease keep-alive --once "$L1"
cw 'keepalived' 1 lease keep-alive "$L2"
c lease revoke "$L1"
c get l/a l/c
c lease timetolive "$L1"
c lease revoke "$L1"
c put l/e 5 --lease=1234abcd
c put l/c 33 --ignore-lease
c get l/c -w json
c lease revoke "$L2"
# A 4-second lease expires by itself: wait for it (bounded), with no other write meanwhile
# (the expiry's delete takes a revision).
c lease grant 4
L3=$(sed -n 's/^lease \([0-9a-f]*\) granted.*/\1/p' "$W/out")
c put l/d 4 --lease="$L3"
gone=no
for _ in $(seq 1 150); do
    [ -z "$("$ETCDCTL" --endpoints="$EP" get l/d --keys-only 2>/dev/null)" ] && gone=yes && break
    sleep 0.1
done
check "key of the 4s lease deleted by expiry within 15s" "$gone"
c lease timetolive "$L3"
c get l/ --prefix -w json

# --- elections ------------------------------------------------------------------------------
bg_start e1 elect e1 p1
bg_wait e1 '^p1$' 1
cw '^p1$' 1 elect -l e1
cblock e1/ 2 elect e1 p2
c get e1/ --prefix --print-value-only
bg_stop e1
c get e1/ --prefix

# --- locks ----------------------------------------------------------------------------------
c lock lk1 -- sh -c 'echo held; test -n "$ETCD_LOCK_KEY" && echo key-set; echo rev=$ETCD_LOCK_REV'
bg_start lk lock lk1
bg_wait lk '^lk1/' 1
cblock lk1/ 2 lock lk1 -- echo should-not-run
bg_stop lk
c lock lk1 -- echo acquired-after-release
c get lk1/ --prefix

# --- members --------------------------------------------------------------------------------
c member list
c member list -w table
LEARNER_PORT=$(
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    while [ -n "$(ss -Htln "sport = :$p")" ]; do p=$((p + 1)); done
    echo $p
)
printf '127.0.0.1:%s\t<peer-learner>\n' "$LEARNER_PORT" >>"$OUT/map"
c member add learner1 --learner --peer-urls="http://127.0.0.1:$LEARNER_PORT"
# etcdctl prints this id with %16x: space-padded when it has fewer than 16 hex digits.
LID=$(sed -n 's/^Member  *\([0-9a-f]*\) added.*/\1/p' "$W/out")
c member list
check "member add id is the unstarted learner in member list" \
    "$("$ETCDCTL" --endpoints="$EP" member list | grep -c "^$LID, unstarted, , http://127.0.0.1:$LEARNER_PORT, , true$")"
c member promote "$LID"
# etcd derives a new member's id from its peer URLs and the current second: a duplicate add in
# the same second as the first answers "member ID already exist" instead of "Peer URLs already
# exists". Wait for the next second so the answer does not depend on timing.
sleep 1.1
c member add learner2 --learner --peer-urls="http://127.0.0.1:$LEARNER_PORT"
c member remove "$LID"
c member remove "$LID"
c member list
c member promote 1234
check "member count" "$("$ETCDCTL" --endpoints="$EP" member list | wc -l)"

# --- leadership -----------------------------------------------------------------------------
LEADER=$("$HERE/cluster.sh" leader "$CDIR" 2>/dev/null)
check "a leader is known" "$([ -n "$LEADER" ] && echo yes || echo no)"
LEADER_ID=$("$ETCDCTL" --endpoints="127.0.0.1:$(eval echo "\$CLUSTER_CLIENT_PORT_$LEADER")" \
    endpoint status | awk -F', ' '{print $2}')
# The target: the next member after the leader (the leader itself in a 1-member cluster).
TI=$((LEADER % CLUSTER_SIZE + 1))
TARGET_ID=$("$ETCDCTL" --endpoints="127.0.0.1:$(eval echo "\$CLUSTER_CLIENT_PORT_$TI")" \
    endpoint status | awk -F', ' '{print $2}')
c move-leader "$TARGET_ID"
check "move-leader printed the old and new leader ids" \
    "$(grep -c "^Leadership transferred from $LEADER_ID to $TARGET_ID$" "$W/out")"
NEWLEADER=""
for _ in $(seq 1 50); do
    NEWLEADER=$("$HERE/cluster.sh" leader "$CDIR" 2>/dev/null) && [ "$NEWLEADER" = "$TI" ] && break
    sleep 0.1
done
check "leader is the move-leader target" "$([ "$NEWLEADER" = "$TI" ] && echo yes || echo no)"
c move-leader 1234

# --- endpoints, maintenance -----------------------------------------------------------------
c endpoint health
c endpoint health --cluster
c endpoint status
c endpoint status --cluster
c1 endpoint status -w json
c1 endpoint health -w json
c alarm list
c alarm disarm
c defrag
c defrag --cluster
c snapshot save "$W/snap.db"
c1 snapshot save "$W/snap.db"
check "snapshot file is non-empty" "$([ -s "$W/snap.db" ] && echo yes || echo no)"
c get foo1 -w json
c put final "done" -w json

echo "$N" >"$OUT/count"
exit 0
