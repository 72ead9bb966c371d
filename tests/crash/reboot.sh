#!/usr/bin/env bash
# reboot.sh BATOND: the store commits without fsync; an operating-system restart must never
# leave a member on a torn store. We cannot cut the power here, so the test plays the two
# halves: a kill -9 (page cache intact: the store is kept), and a simulated reboot (another
# boot id through BATON_BOOT_ID, plus a store file torn on purpose: it must be rebuilt from the
# snapshot and the WAL, losing nothing). A clean stop leaves a store that a reboot keeps.
set -uo pipefail
BATOND=${1:?usage: reboot.sh BATOND}
export ETCDCTL_API=3
DIR=$(mktemp -d "${TMPDIR:-/tmp}/baton-reboot.XXXXXX")
PID=""
cleanup() {
    [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
. "$(dirname "$0")/../harness/checks.sh"
. "$(dirname "$0")/../harness/member.sh"

start() { # [boot id]
    BATON_BOOT_ID=${1:-} "$BATOND" --name r1 --data-dir "$DIR/data" --snapshot-count 10 \
        --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
        --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
        --initial-cluster "r1=http://127.0.0.1:$PP" --listen-metrics-urls "http://127.0.0.1:$MP" \
        >>"$DIR/log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
        kill -0 "$PID" 2>/dev/null || { PID=""; return 1; }
        ctl endpoint health >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
crash() {
    kill -KILL "$PID"
    wait "$PID" 2>/dev/null
    PID=""
}
put_range() { # from to: transactions of 10 puts (with --snapshot-count 10, a snapshot every
    # 100 keys, and WAL entries after the newest one)
    local i j
    for ((i = $1; i <= $2; i += 10)); do
        {
            echo # no compares
            for ((j = i; j < i + 10 && j <= $2; j++)); do echo "put k$j v$j"; done
            echo # end of the success ops
            echo # no failure ops
        } | ctl txn >/dev/null || return 1
    done
}
count_ok() { # n: every k1..kn has its value
    local got
    got=$(ctl get k --prefix --print-value-only | sort -u | grep -c '^v')
    [ "$got" = "$1" ]
}
rebuilds() { grep -c "rebuilding it from the newest snapshot" "$DIR/log"; }

start || { fail "batond does not start"; finish; }
put_range 1 350 || fail "puts"
rev=$(ctl get k1 -w json | sed 's/.*"revision":\([0-9]*\).*/\1/')
ls "$DIR"/data/member/snap/*.snap >/dev/null 2>&1 && ok "snapshots were taken (rebuilds start from one)" ||
    fail "no snapshot file"
crash

# 1. Killed, same boot: the store is kept as it is.
start && count_ok 350 && [ "$(rebuilds)" = 0 ] && ok "kill -9, same boot: store kept, 350 keys" ||
    fail "restart after kill -9"
crash

# 2. Killed, then a reboot: rebuilt from the snapshot + WAL, same data and revision.
start simulated-boot-1 && count_ok 350 && [ "$(rebuilds)" = 1 ] &&
    ok "simulated reboot: store rebuilt, 350 keys" || fail "rebuild after a simulated reboot"
rev2=$(ctl get k1 -w json | sed 's/.*"revision":\([0-9]*\).*/\1/')
[ -n "$rev" ] && [ "$rev" = "$rev2" ] && ok "revision unchanged by the rebuild ($rev)" || fail "revision $rev -> $rev2"
put_range 351 425 || fail "puts after the rebuild"
crash

# 3. A torn store: with the same boot it is refused (the test can fail), after a reboot rebuilt.
dd if=/dev/urandom of="$DIR/data/member/db" bs=4096 count=4 conv=notrunc status=none
if start simulated-boot-1; then
    fail "a torn store was opened"
    crash
else
    grep -q "member/db" "$DIR/log" && ok "a torn store is refused with its path" ||
        fail "no message naming the torn store"
fi
start simulated-boot-2 && count_ok 425 && [ "$(rebuilds)" = 2 ] &&
    ok "torn store after a reboot: rebuilt, 425 keys" || fail "rebuild of a torn store"

# 4. A clean stop syncs: a reboot afterwards keeps the store.
kill -TERM "$PID"
wait "$PID" 2>/dev/null
PID=""
[ ! -e "$DIR/data/member/db-boot" ] && ok "clean stop removes the marker" || fail "marker left"
start simulated-boot-3 && count_ok 425 && [ "$(rebuilds)" = 2 ] &&
    ok "reboot after a clean stop: store kept" || fail "restart after clean stop"
crash
finish
