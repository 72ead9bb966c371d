# Helpers for the node-registry scenarios (sourced). Run inside `cluster.sh run`, which exports
# CLUSTER_DIR, CLUSTER_ENDPOINTS, CLUSTER_CLIENT_PORT_<i>; CM_NODE is the cm_node binary and
# OUT the directory for transcripts. Every process started here is killed by PID on exit.
set -uo pipefail
CLUSTER_SH=$(cd "$(dirname "${BASH_SOURCE[0]}")/../compat" && pwd)/cluster.sh
PIDS=()
FAILS=0
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; cp "$CLUSTER_DIR"/m*.log "$OUT"/ 2>/dev/null' EXIT

ep() { echo "127.0.0.1:$(eval echo "\$CLUSTER_CLIENT_PORT_$1")"; }

fail() {
    echo "FAIL: $*"
    FAILS=$((FAILS + 1))
}
pass() { echo "ok: $*"; }

# wait_for FILE REGEX SECS: true once a line of FILE matches (grep -E), false after SECS.
wait_for() {
    local file=$1 re=$2 secs=$3 deadline
    deadline=$(($(date +%s%N) / 1000000 + secs * 1000))
    while [ $(($(date +%s%N) / 1000000)) -lt $deadline ]; do
        grep -Eq -- "$re" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# expect NAME FILE REGEX SECS
expect() {
    if wait_for "$2" "$3" "$4"; then pass "$1"; else
        fail "$1: no line matching /$3/ in $2 within $4 s; it holds:"
        tail -n 20 "$2"
    fi
}

# check_out NAME "EXPECTED LINE" COMMAND...: the command's output must contain the line.
check_out() {
    local name=$1 want=$2 out
    shift 2
    out=$("$@" 2>&1)
    if grep -qxF -- "$want" <<<"$out"; then pass "$name"; else
        fail "$name: want the line '$want', got:"
        echo "$out"
    fi
}

# start_bg NAME COMMAND...: runs the command in the background, output in $OUT/NAME.out.
start_bg() {
    local name=$1
    shift
    "$@" >"$OUT/$name.out" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

finish() {
    if [ "$FAILS" = 0 ]; then echo "PASS"; exit 0; fi
    echo "$FAILS check(s) failed"
    exit 1
}
