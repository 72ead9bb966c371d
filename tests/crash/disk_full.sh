#!/usr/bin/env bash
# disk_full.sh BATOND: a member whose disk fills up stops with the path and the reason, and
# loses nothing: once there is room again it restarts with every acknowledged write. Runs on a
# real tmpfs of a fixed size (needs root to mount it; exit 77 = skipped otherwise).
#   1. A file system too small for the first WAL segment (64 MiB, preallocated): the member
#      refuses to start, non-zero, naming the WAL directory and "No space left on device".
#   2. Room for the WAL segment and a few MiB more: 1 MB puts until one fails. The member
#      exits non-zero naming its data file and the reason; every put acknowledged before is
#      there after the file system grows and the member restarts, and new puts work.
set -uo pipefail
BATOND=${1:?usage: disk_full.sh BATOND}
export ETCDCTL_API=3
[ "$(id -u)" = 0 ] || { echo "skipped: needs root to mount a tmpfs"; exit 77; }
DIR=$(mktemp -d "${TMPDIR:-/tmp}/baton-diskfull.XXXXXX")
FS=$DIR/fs
PID=""
cleanup() {
    [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    mountpoint -q "$FS" && umount "$FS"
    rm -rf "$DIR"
}
trap cleanup EXIT
. "$(dirname "$0")/../harness/checks.sh"
mkdir -p "$FS"
mount -t tmpfs -o size=40m tmpfs "$FS" || { echo "skipped: cannot mount a tmpfs here"; exit 77; }

. "$(dirname "$0")/../harness/member.sh"
start() { # log file; 0 when the member serves, 1 when it exited (PID empty then)
    "$BATOND" --name f1 --data-dir "$FS/data" \
        --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
        --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
        --initial-cluster "f1=http://127.0.0.1:$PP" --listen-metrics-urls "http://127.0.0.1:$MP" \
        >"$1" 2>&1 &
    PID=$!
    for _ in $(seq 1 150); do
        kill -0 "$PID" 2>/dev/null || { wait "$PID"; echo "exit status $?" >>"$1"; PID=""; return 1; }
        ctl endpoint health >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# 1. Too small to start.
if start "$DIR/log1"; then
    fail "a member started on a 40 MiB file system (its WAL segment is 64 MiB)"
else
    grep -q "exit status [1-9]" "$DIR/log1" && ok "the member refused to start" ||
        fail "the member did not exit non-zero: $(tail -3 "$DIR/log1")"
    grep -q "$FS/data/member/wal" "$DIR/log1" && grep -qi "no space left on device" "$DIR/log1" &&
        ok "start-up error names the WAL directory and the reason: $(grep -i 'no space' "$DIR/log1" | tail -1)" ||
        fail "start-up error lacks the path or the reason: $(tail -3 "$DIR/log1")"
fi
rm -rf "${FS:?}/data"

# 2. Fill the disk with acknowledged writes.
mount -o remount,size=80m "$FS"
start "$DIR/log2" || { fail "the member did not start on 80 MiB: $(tail -5 "$DIR/log2")"; finish; }
head -c 750000 /dev/urandom | base64 -w0 >"$DIR/value"
acked=0
for i in $(seq 1 400); do
    ctl put "k$i" <"$DIR/value" >/dev/null 2>&1 || break
    acked=$i
done
ok "$acked puts of 1 MB acknowledged before the first failure ($(df -h --output=used,avail "$FS" | tail -1))"
[ "$acked" -ge 5 ] || fail "fewer than 5 puts fit: the test did not exercise a full disk"
for _ in $(seq 1 100); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$PID" 2>/dev/null; then
    fail "the member still runs after its disk filled (it should stop: it cannot apply)"
    kill -KILL "$PID"
    wait "$PID" 2>/dev/null
else
    wait "$PID"
    st=$?
    [ "$st" != 0 ] && ok "the member exited with status $st" || fail "the member exited 0 on a full disk"
fi
PID=""
grep -q "$FS/data/member" "$DIR/log2" && grep -qi "no space left on device" "$DIR/log2" &&
    ok "fatal error names the path and the reason: $(grep -i 'fatal' "$DIR/log2" | tail -1)" ||
    fail "fatal error lacks the path or the reason: $(tail -3 "$DIR/log2")"

# 3. Room again: nothing acknowledged is lost.
mount -o remount,size=200m "$FS"
start "$DIR/log3" || { fail "the member did not restart with room: $(tail -5 "$DIR/log3")"; finish; }
want=$(sha256sum <"$DIR/value" | cut -d' ' -f1)
lost=0
for i in $(seq 1 "$acked"); do
    got=$(ctl get "k$i" --print-value-only | tr -d '\n' | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || lost=$((lost + 1))
done
[ "$lost" = 0 ] && ok "all $acked acknowledged puts are there after the restart" ||
    fail "$lost of $acked acknowledged puts are missing or wrong after the restart"
ctl put after-restart yes >/dev/null && [ "$(ctl get after-restart --print-value-only)" = yes ] &&
    ok "writes work again" || fail "a put after the restart failed"
finish
