#!/usr/bin/env bash
# run.sh BATOND CLIENT KILLS: baton.v1.Tso and baton.v1.Config on a real 3-member batond cluster.
#   1. cm_tso_client checks: bad input and exact texts, followers, Config, Stream, ids, versions
#   2. cm_tso_client race: two writers race Config.Set CAS, 20 rounds
#   3. cm_tso_client linear: concurrent GetTimestamp/AllocIds clients through every endpoint
#      while the leader is killed with SIGKILL and restarted KILLS times; after every kill the
#      clients must be served again (a new leader) before the next one.
# Every wait is bounded. The last line reads "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER="$HERE/../compat/cluster.sh"
BATOND=${1:?usage: run.sh BATOND CLIENT [KILLS]}
CLIENT=${2:?usage: run.sh BATOND CLIENT [KILLS]}
KILLS=${3:-20}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/baton-cm-tso.XXXXXX")
CLIENT_PID=
cleanup() {
    touch "$DIR/stop" 2>/dev/null
    [ -n "$CLIENT_PID" ] && kill -TERM "$CLIENT_PID" 2>/dev/null && wait "$CLIENT_PID" 2>/dev/null
    if [ "${failed:-0}" != 0 ]; then
        # Members that crashed say why in their logs (ASan reports included).
        for f in "$DIR"/cluster/m*.log; do
            grep -q -E "ERROR: AddressSanitizer|runtime error|Assertion|BATON_ASSERT|panic" "$f" 2>/dev/null &&
                { echo "--- $f:"; grep -E -A30 "ERROR: AddressSanitizer|runtime error|Assertion|assert" "$f" | head -60; }
        done
    fi
    "$CLUSTER" down "$DIR/cluster" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
passed=0
failed=0
tally() { # tally OUTPUT_FILE: adds the client's "N passed, N failed" line
    local p f
    read -r p f < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$1" | tail -1)
    if [ -z "${p:-}" ]; then
        echo "FAIL: $1: the client did not finish"
        failed=$((failed + 1))
        return
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

if ! "$CLUSTER" up "$BATOND" 3 "$DIR/cluster"; then
    echo "cannot start 3 members"
    echo "0 passed, 1 failed"
    exit 1
fi
. "$DIR/cluster/cluster.env"
EPS="127.0.0.1:$CLUSTER_CLIENT_PORT_1,127.0.0.1:$CLUSTER_CLIENT_PORT_2,127.0.0.1:$CLUSTER_CLIENT_PORT_3"

"$CLIENT" checks "$EPS" | tee "$DIR/checks.out"
tally "$DIR/checks.out"
"$CLIENT" race "$EPS" 20 | tee "$DIR/race.out"
tally "$DIR/race.out"

progress() {
    local v
    v=$(cat "$DIR/progress" 2>/dev/null)
    echo "${v:-0}"
}
# Waits until the clients got more answers than $1 (at most $2 seconds).
wait_progress() {
    local from=$1 secs=$2 i
    for i in $(seq 1 $((secs * 10))); do
        [ "$(progress)" -gt "$from" ] && return 0
        sleep 0.1
    done
    return 1
}

"$CLIENT" linear "$EPS" 6 "$DIR/stop" "$DIR/progress" 600 >"$DIR/linear.out" 2>&1 &
CLIENT_PID=$!
if ! wait_progress 0 20; then
    echo "FAIL: no timestamps served before the kills"
    failed=$((failed + 1))
fi
start=$SECONDS
for k in $(seq 1 "$KILLS"); do
    leader=$("$CLUSTER" leader "$DIR/cluster" 2>/dev/null)
    if [ -z "$leader" ]; then
        sleep 0.5
        leader=$("$CLUSTER" leader "$DIR/cluster" 2>/dev/null)
    fi
    if [ -z "$leader" ]; then
        echo "FAIL: kill $k: no leader found"
        failed=$((failed + 1))
        break
    fi
    before=$(progress)
    "$CLUSTER" kill "$DIR/cluster" "$leader" KILL
    # The two others elect a leader that must serve timestamps again.
    if ! wait_progress "$before" 20; then
        echo "FAIL: kill $k: no timestamp served within 20 s after killing member $leader"
        failed=$((failed + 1))
    fi
    if ! "$CLUSTER" start "$DIR/cluster" "$leader"; then
        echo "FAIL: kill $k: member $leader did not restart"
        failed=$((failed + 1))
        break
    fi
    echo "kill $k: member $leader killed and restarted, $(progress) answers so far"
done
echo "$KILLS kills in $((SECONDS - start)) s"
before=$(progress)
wait_progress "$before" 20 || { echo "FAIL: not served after the last restart"; failed=$((failed + 1)); }
touch "$DIR/stop"
wait "$CLIENT_PID"
CLIENT_PID=
cat "$DIR/linear.out"
tally "$DIR/linear.out"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
