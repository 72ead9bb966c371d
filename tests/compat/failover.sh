#!/usr/bin/env bash
# failover.sh SERVER [ROUNDS]: leader failover under client load, with etcdctl as the client.
#
# A 3-member cluster of SERVER. Four writers put keys in a loop: one per member endpoint, one
# through all three endpoints (etcdctl's own balancing). Each round: writes run, the leader
# is killed with SIGKILL, and we measure the failover time = from the kill to the end of the
# first successful put that was started after the kill; then the killed member is restarted
# on its data dir and rejoins. At the end, every acknowledged put is read back (key and
# value), and all members must converge on the same revision and key count.
# Prints the failover time of every round. Bounded: every wait has a deadline.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER=${1:?usage: failover.sh SERVER [ROUNDS]}
ROUNDS=${2:-3}
export ETCDCTL_API=3
ETCDCTL=${ETCDCTL:-etcdctl}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/baton-failover.XXXXXX")
WRITER_PIDS=()
cleanup() {
    touch "$DIR/stop" 2>/dev/null
    for p in "${WRITER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${WRITER_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    "$HERE/cluster.sh" down "$DIR/cluster" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
failed=0
fail() {
    echo "FAIL: $*"
    failed=$((failed + 1))
}

"$HERE/cluster.sh" up "$SERVER" 3 "$DIR/cluster" || {
    echo "failover: cannot start 3 members of $SERVER"
    echo "0 passed, 1 failed"
    exit 1
}
. "$DIR/cluster/cluster.env"
ep() { local v="CLUSTER_CLIENT_PORT_$1"; echo "127.0.0.1:${!v}"; }

# writer NAME ENDPOINTS: put NAME/<n> = n until the stop file appears. Logs one line per
# acknowledged put: "n start end" (EPOCHREALTIME seconds, no fork to take the time).
writer() {
    local name=$1 eps=$2 n=0 s e
    : >"$DIR/$name.acks"
    while [ ! -e "$DIR/stop" ]; do
        n=$((n + 1))
        s=$EPOCHREALTIME
        if "$ETCDCTL" --endpoints="$eps" --dial-timeout=1s --command-timeout=2s \
            put "fo/$name/$n" "$n" >/dev/null 2>&1; then
            e=$EPOCHREALTIME
            echo "$n $s $e" >>"$DIR/$name.acks"
        else
            echo "$n" >>"$DIR/$name.fails"
            sleep 0.05
        fi
    done
}
WRITERS=(w1 w2 w3 wall)
writer w1 "$(ep 1)" &
WRITER_PIDS+=($!)
writer w2 "$(ep 2)" &
WRITER_PIDS+=($!)
writer w3 "$(ep 3)" &
WRITER_PIDS+=($!)
writer wall "$CLUSTER_ENDPOINTS" &
WRITER_PIDS+=($!)

# First ack (end time) among puts started at or after T; empty if none yet.
first_ack_after() {
    cat "$DIR"/*.acks 2>/dev/null | awk -v t="$1" '$2 >= t { print $3 }' | sort -n | head -1
}

times=()
sleep 2
for r in $(seq 1 "$ROUNDS"); do
    leader=""
    for n in $(seq 1 100); do
        leader=$("$HERE/cluster.sh" leader "$DIR/cluster" 2>/dev/null) && break
        sleep 0.1
    done
    if [ -z "$leader" ]; then
        fail "round $r: no leader found within 10s"
        break
    fi
    # Kill first, timestamp right then; cluster.sh kill then only reaps and tidies up.
    pid=$(cat "$DIR/cluster/m$leader.pid")
    t0=$EPOCHREALTIME
    kill -KILL "$pid"
    "$HERE/cluster.sh" kill "$DIR/cluster" "$leader" KILL
    ack=""
    for n in $(seq 1 300); do
        ack=$(first_ack_after "$t0")
        [ -n "$ack" ] && break
        sleep 0.1
    done
    if [ -z "$ack" ]; then
        fail "round $r: no write succeeded within 30s of killing leader m$leader"
        break
    fi
    ms=$(awk -v a="$ack" -v b="$t0" 'BEGIN { printf "%d", (a - b) * 1000 }')
    times+=("$ms")
    newleader='?'
    for n in $(seq 1 20); do
        newleader=$("$HERE/cluster.sh" leader "$DIR/cluster" 2>/dev/null) && break
        newleader='?'
        sleep 0.1
    done
    echo "failover: round $r: killed leader m$leader (kill -9); first successful put after" \
        "$ms ms; new leader m$newleader"
    sleep 0.5
    if ! "$HERE/cluster.sh" start "$DIR/cluster" "$leader"; then
        fail "round $r: restarted member m$leader did not become healthy"
        break
    fi
    sleep 1
done

touch "$DIR/stop"
for p in "${WRITER_PIDS[@]}"; do wait "$p" 2>/dev/null; done
WRITER_PIDS=()

# Read back every acknowledged put, through all endpoints (linearizable).
"$ETCDCTL" --endpoints="$CLUSTER_ENDPOINTS" --command-timeout=10s get fo/ --prefix \
    >"$DIR/all.kv" 2>"$DIR/all.err" || fail "read-back failed: $(cat "$DIR/all.err")"
acked=0
missing=0
for w in "${WRITERS[@]}"; do
    acked=$((acked + $(wc -l <"$DIR/$w.acks")))
done
# all.kv alternates key and value lines; every acked "fo/NAME/n" must be there with value n.
missing=$(
    awk 'NR==FNR { if (FNR % 2 == 1) k = $0; else kv[k] = $0; next }
         { split(FILENAME, parts, "/"); f = parts[length(parts)]; sub(/\.acks$/, "", f)
           key = "fo/" f "/" $1
           if (!(key in kv) || kv[key] != $1) { print key; bad++ } }
         END { }' "$DIR/all.kv" "$DIR"/*.acks
)
nmissing=$(printf '%s' "$missing" | grep -c . || true)
stored=$(($(wc -l <"$DIR/all.kv") / 2))
fails=$(cat "$DIR"/*.fails 2>/dev/null | wc -l)
echo "failover: $acked puts acknowledged, $fails failed or timed out (allowed during" \
    "failover), $stored keys stored"
if [ "$nmissing" != 0 ]; then
    fail "$nmissing acknowledged puts are missing or wrong after failover, e.g.: $(echo "$missing" | head -5 | tr '\n' ' ')"
else
    echo "ok: every acknowledged put is read back with its value"
fi
[ "$acked" -gt 0 ] || fail "no put was acknowledged at all"

# Every member converges on the same revision and key count (serializable, local reads).
converged=no
for n in $(seq 1 100); do
    states=""
    for i in 1 2 3; do
        s=$("$ETCDCTL" --endpoints="$(ep "$i")" --command-timeout=2s get fo/ --prefix \
            --consistency=s -w json 2>/dev/null |
            sed -n 's/.*"revision":\([0-9]*\).*"count":\([0-9]*\).*/rev=\1 keys=\2/p')
        states="$states|$s"
    done
    a=$(echo "$states" | cut -d'|' -f2)
    if [ -n "$a" ] && [ "$states" = "|$a|$a|$a" ]; then
        converged=yes
        break
    fi
    sleep 0.1
done
if [ $converged = yes ]; then
    echo "ok: all 3 members converged ($a)"
else
    fail "members did not converge within 10s: $states"
fi

if [ ${#times[@]} -gt 0 ]; then
    echo "failover: times (kill -9 of the leader -> next successful put): ${times[*]} ms" \
        "over ${#times[@]} rounds"
fi
[ ${#times[@]} = "$ROUNDS" ] || fail "only ${#times[@]} of $ROUNDS rounds completed"
echo "$((failed == 0 ? 1 : 0)) passed, $((failed == 0 ? 0 : 1)) failed"
[ $failed = 0 ]
