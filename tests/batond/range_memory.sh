#!/usr/bin/env bash
# range_memory.sh SERVER [CONCURRENT]: a member's memory under concurrent large Range responses
# (issue 4). Puts KEYS values of VALUE_BYTES (50 x 1 MiB: 50 MiB in all, each put under etcd's
# default --max-request-bytes), then runs CONCURRENT (default 8) full ranges over them at once
# with etcdctl, each on its own connection, and reads the member's peak RSS (VmHWM) from
# /proc/<pid>/status. Passes when
#   - every range returned every key with its full value,
#   - VmHWM after the ranges < RSS before them + CONCURRENT x response size x 2.5 (a generous
#     bound: batond holds each response once and measured 0.9-1.1x per range on a release
#     build, 1.3x under ASan; it was 3.1x when a response existed three times; etcd 3.4 on
#     the same machine: 2.0x), and
#   - the member still answers a small request afterwards.
# MEASURE_ONLY=1 prints the figures without judging them (e.g. SERVER=/usr/bin/etcd).
# No timing is asserted; etcdctl gets a generous command timeout.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || {
    echo "usage: $0 SERVER [CONCURRENT]" >&2
    exit 2
}
SERVER=$1
export RM_CONCURRENT=${2:-8}
export RM_KEYS=${KEYS:-50} RM_VALUE_BYTES=${VALUE_BYTES:-1048576}
export MEASURE_ONLY=${MEASURE_ONLY:-0}

# The body runs inside cluster.sh run (1 member, always torn down).
body() {
    set -uo pipefail
    local ep=$CLUSTER_ENDPOINTS pid work e
    pid=$(cat "$CLUSTER_DIR/m1.pid")
    work=$CLUSTER_DIR/work
    mkdir -p "$work"
    e=(etcdctl --endpoints="$ep" --dial-timeout=5s --command-timeout=300s)
    # Printable values without newlines, so etcdctl's output is one line per key and value.
    head -c "$RM_VALUE_BYTES" /dev/urandom | base64 -w0 | head -c "$RM_VALUE_BYTES" >"$work/value"
    local j
    # Four puts at a time (etcdctl's start-up dominates); each is one request under the bound.
    export RM_VALUE_FILE=$work/value RM_EP=$ep
    if ! seq -w 1 "$RM_KEYS" | xargs -P 4 -I{} sh -c \
        'etcdctl --endpoints="$RM_EP" --command-timeout=120s put "big/{}" <"$RM_VALUE_FILE" >/dev/null'; then
        echo "FAIL: puts"
        return 1
    fi
    [ "$("${e[@]}" get --prefix big/ --keys-only | grep -c '^big/')" = "$RM_KEYS" ] || {
        echo "FAIL: not every put landed"
        return 1
    }
    local resp_bytes=$((RM_KEYS * RM_VALUE_BYTES))
    kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }
    local rss_before hwm_before
    rss_before=$(kib VmRSS)
    hwm_before=$(kib VmHWM)
    for j in $(seq 1 "$RM_CONCURRENT"); do
        "${e[@]}" get --prefix big/ >"$work/out.$j" 2>"$work/err.$j" &
    done
    local failed=0
    for j in $(seq 1 "$RM_CONCURRENT"); do
        wait -n || failed=$((failed + 1))
    done
    local hwm_after rss_after
    hwm_after=$(kib VmHWM)
    rss_after=$(kib VmRSS)
    # Per key: "big/NN\n" and the value's "\n".
    local want_lines=$((RM_KEYS * 2)) want_bytes=$((resp_bytes + RM_KEYS * (4 + ${#RM_KEYS} + 2)))
    for j in $(seq 1 "$RM_CONCURRENT"); do
        local lines bytes
        lines=$(wc -l <"$work/out.$j")
        bytes=$(wc -c <"$work/out.$j")
        if [ "$lines" != "$want_lines" ] || [ "$bytes" != "$want_bytes" ] ||
            ! cmp -s <(sed -n 2p "$work/out.$j" | head -c "$RM_VALUE_BYTES") "$work/value"; then
            echo "FAIL: range $j returned $lines lines, $bytes bytes (want $want_lines, $want_bytes)"
            head -c 300 "$work/err.$j"
            failed=$((failed + 1))
        fi
    done
    local growth_kib=$((hwm_after - rss_before))
    local per_req_x100=$((growth_kib * 1024 * 100 / RM_CONCURRENT / resp_bytes))
    local limit_kib=$((rss_before + RM_CONCURRENT * resp_bytes * 5 / 2 / 1024))
    echo "range_memory: $RM_CONCURRENT concurrent ranges of $((resp_bytes / 1048576)) MiB:" \
        "RSS before ${rss_before} KiB (VmHWM ${hwm_before} KiB), VmHWM after ${hwm_after} KiB," \
        "RSS after ${rss_after} KiB; growth ${growth_kib} KiB =" \
        "$((per_req_x100 / 100)).$(printf %02d $((per_req_x100 % 100)))x the response per range" \
        "(limit VmHWM < ${limit_kib} KiB)"
    if [ "$MEASURE_ONLY" != 1 ] && [ "$hwm_after" -ge "$limit_kib" ]; then
        echo "FAIL: VmHWM ${hwm_after} KiB >= limit ${limit_kib} KiB"
        failed=$((failed + 1))
    fi
    if ! "${e[@]}" put small/after ok >/dev/null ||
        [ "$("${e[@]}" get small/after --print-value-only)" != ok ]; then
        echo "FAIL: the member does not answer a small request after the ranges"
        failed=$((failed + 1))
    fi
    echo "$((failed == 0 ? 1 : 0)) passed, $failed failed"
    [ "$failed" = 0 ]
}
export -f body
exec "$HERE/../compat/cluster.sh" run "$SERVER" 1 -- bash -c body
