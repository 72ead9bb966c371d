#!/usr/bin/env bash
# metrics.sh SERVER [--etcd]: starts one member of SERVER (batond, or etcd with --etcd to
# calibrate the checks on the reference), runs a known workload with etcdctl (7 puts, 4 ranges
# of which one fails with OutOfRange, a lease, a watch that sees one event) and scrapes
# /metrics with curl before, during the watch and after; check_metrics.py validates the format
# and that every family issue 4 asks for carries what the workload did.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || {
    echo "usage: $0 SERVER [--etcd]" >&2
    exit 2
}
SERVER=$1
export MT_FLAG=${2:-} MT_HERE=$HERE

body() {
    set -uo pipefail
    . "$CLUSTER_DIR/cluster.env"
    local ep=$CLUSTER_ENDPOINTS work=$CLUSTER_DIR/work
    local url="http://127.0.0.1:$CLUSTER_METRICS_PORT_1/metrics"
    mkdir -p "$work"
    local e=(etcdctl --endpoints="$ep" --dial-timeout=5s --command-timeout=30s)
    scrape() { curl -sf --max-time 10 "$url" >"$work/$1.prom" || echo "FAIL: scrape $1"; }
    scrape before
    local i
    for i in 1 2 3 4 5; do "${e[@]}" put "k$i" "v$i" >/dev/null || echo "FAIL: put k$i"; done
    for i in 1 2 3; do "${e[@]}" get "k$i" >/dev/null || echo "FAIL: get k$i"; done
    if "${e[@]}" get k1 --rev=1000000 >/dev/null 2>&1; then
        echo "FAIL: a range at a future revision succeeded"
    fi
    local lease
    lease=$("${e[@]}" lease grant 600 | awk '{print $2}')
    "${e[@]}" put --lease="$lease" leased v >/dev/null || echo "FAIL: put with lease $lease"
    # A watch that stays open until its event arrived and the scrape during it is taken.
    "${e[@]}" watch w >"$work/watch.out" 2>&1 &
    local wpid=$! deadline=$((SECONDS + 20))
    # (grep reads a file: with pipefail, grep -q closing a pipe early would fail curl.)
    until scrape during && grep -q '^etcd_debugging_mvcc_watcher_total 1$' "$work/during.prom"; do
        [ $SECONDS -lt $deadline ] || {
            echo "FAIL: the watcher never showed up"
            break
        }
        sleep 0.1
    done
    "${e[@]}" put w seen >/dev/null || echo "FAIL: put w"
    deadline=$((SECONDS + 20))
    until grep -q '^seen$' "$work/watch.out"; do
        [ $SECONDS -lt $deadline ] || {
            echo "FAIL: the watch did not see its event"
            break
        }
        sleep 0.1
    done
    scrape during
    kill "$wpid"
    wait "$wpid" 2>/dev/null
    # The server learns of the closed connection asynchronously: wait for the watch's end.
    deadline=$((SECONDS + 20))
    while :; do
        scrape after
        grep -q '^etcd_debugging_mvcc_watcher_total 0$' "$work/after.prom" &&
            grep -q 'grpc_code="Canceled".*grpc_method="Watch"\|grpc_method="Watch".*grpc_code="Canceled"' \
                "$work/after.prom" && break
        [ $SECONDS -lt $deadline ] || break
        sleep 0.2
    done
    python3 "$MT_HERE/check_metrics.py" "$work/before.prom" "$work/during.prom" \
        "$work/after.prom" $MT_FLAG
}
export -f body
exec "$HERE/../compat/cluster.sh" run "$SERVER" 1 -- bash -c body
