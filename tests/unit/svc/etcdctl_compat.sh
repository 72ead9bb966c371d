#!/bin/bash
# Watch and Lease services through etcdctl 3.4 (ETCDCTL_API=3): the same script runs against a
# one-member batond and a throwaway real etcd (/usr/bin/etcd); outputs are compared after lease
# ids are normalised (they are random in both). Then a three-member batond: every lease
# operation sent to each member (two of them followers, which forward to the leader).
# Usage: etcdctl_compat.sh <batond binary>
set -u
BATOND=$1
ETCD=${ETCD:-/usr/bin/etcd}
export ETCDCTL_API=3
T=$(mktemp -d /tmp/svc-etcdctl.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT
fail() { echo "FAIL: $*"; exit 1; }
SECONDS=0
# The system interpreter: a version-manager shim costs seconds per call on a loaded machine.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# free_port VAR: a port nobody listens on now, distinct from those handed out before (no
# subshell, so that USED remembers).
USED=" "
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$("$PY" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
        case "$USED" in *" $p "*) continue ;; esac
        USED="$USED$p "
        printf -v "$1" '%s' "$p"
        return
    done
    fail "no free port"
}

# run_n <lines> <command...>: runs a command that never ends by itself (watch, keep-alive) until
# it printed that many lines (bounded: 20 s), then stops it and prints them.
run_n() {
    local n=$1 f=$T/run.$RANDOM
    shift
    : > "$f" # exists before the loop reads it (the background job may not have opened it yet)
    "$@" > "$f" 2>&1 &
    local pid=$!
    for _ in $(seq 1 200); do
        [ "$(wc -l < "$f")" -ge "$n" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    kill $pid 2>/dev/null
    wait $pid 2>/dev/null
    head -n "$n" "$f"
}

# wait_up <endpoint>: until a Range answers (bounded: 20 s).
wait_up() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && break
        sleep 0.1
    done
    for _ in $(seq 1 200); do
        etcdctl --endpoints="$1" --dial-timeout=1s --command-timeout=1s get probe >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "no answer from $1"
}

# scenario <endpoint>: prints what etcdctl says; lease ids become LEASE, LEASE2, ...
scenario() {
    local E="etcdctl --endpoints=$1 --command-timeout=5s"
    local out=$T/out.$RANDOM
    {
        echo "t=$SECONDS" >&3; echo "## puts"
        $E put foo/a 1; $E put foo/b 2; $E put bar 3; $E put foo/a 11; $E del foo/b
        echo "t=$SECONDS" >&3; echo "## watch prefix from rev 2"
        run_n 12 $E watch --rev=2 --prefix foo/
        echo "t=$SECONDS" >&3; echo "## watch key with prev-kv from rev 2"
        run_n 7 $E watch --rev=2 --prev-kv foo/a
        echo "t=$SECONDS" >&3; echo "## watch a range [bar, foo/b) from rev 1"
        run_n 9 $E watch --rev=1 bar foo/b
        echo "t=$SECONDS" >&3; echo "## live watch"
        local rev
        rev=$($E get bar -w json | "$PY" -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
        $E put live v1; $E del live
        run_n 6 $E watch --rev=$((rev + 1)) live
        echo "t=$SECONDS" >&3; echo "## compact and watch from a compacted revision"
        $E compact 4
        timeout 20 $E watch --rev=2 foo/a; echo "exit=$?"
        echo "t=$SECONDS" >&3; echo "## lease grant, attach, timetolive, list, keep-alive"
        local L
        L=$($E lease grant 60 | awk '{print $2}')
        $E put k1 v1 --lease=$L; $E put k2 v2 --lease=$L
        $E lease timetolive $L --keys
        $E lease timetolive $L
        $E lease list
        $E lease keep-alive --once $L
        run_n 1 $E lease keep-alive $L
        echo "t=$SECONDS" >&3; echo "## revoke: keys go"
        $E get --prefix k
        $E lease revoke $L
        $E get --prefix k
        $E lease timetolive $L
        $E lease keep-alive --once $L; echo "exit=$?"
        $E lease revoke $L; echo "exit=$?"
        echo "t=$SECONDS" >&3; echo "## given id, duplicate id, too large TTL"
        $E lease grant 30 >/dev/null
        etcdctl --endpoints=$1 lease grant 9000000001; echo "exit=$?"
        echo "t=$SECONDS" >&3; echo "## expiry"
        local S
        S=$($E lease grant 2 | awk '{print $2}')
        $E put short v --lease=$S
        $E get short --print-value-only
        local gone=no
        for _ in $(seq 1 75); do
            if [ -z "$($E get short --print-value-only)" ]; then gone=yes; break; fi
            sleep 0.2
        done
        echo "short-lived key gone: $gone"
        $E lease timetolive $S
    } 3>>"$T/times.$2" > "$out" 2>&1
    # Lease ids are random: number them in order of appearance.
    "$PY" - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
ids = {}
def norm(m):
    v = m.group(0)
    if v not in ids:
        ids[v] = "LEASE%d" % (len(ids) + 1)
    return ids[v]
for line in text.splitlines():
    if line.startswith('{"level"'):
        continue  # client-side retry logs
    line = re.sub(r'\b[0-9a-f]{16}\b', norm, line)
    line = re.sub(r'remaining\(\d+s\)', 'remaining(Ns)', line)
    print(line)
PY
}

start_batond() { # name dir client peer metrics cluster
    "$BATOND" --name "$1" --data-dir "$2" --listen-client-urls "http://127.0.0.1:$3" \
        --advertise-client-urls "http://127.0.0.1:$3" --listen-peer-urls "http://127.0.0.1:$4" \
        --initial-advertise-peer-urls "http://127.0.0.1:$4" --listen-metrics-urls "http://127.0.0.1:$5" \
        --initial-cluster "$6" >"$2.log" 2>&1 &
    PIDS+=($!)
}

# ---- One member vs etcd ----------------------------------------------------------------------
free_port BC; free_port BP; free_port BM
start_batond b1 "$T/b1" "$BC" "$BP" "$BM" "b1=http://127.0.0.1:$BP"
free_port EC; free_port EP
"$ETCD" --name e1 --data-dir "$T/etcd" --listen-client-urls "http://127.0.0.1:$EC" \
    --advertise-client-urls "http://127.0.0.1:$EC" --listen-peer-urls "http://127.0.0.1:$EP" \
    --initial-advertise-peer-urls "http://127.0.0.1:$EP" --initial-cluster "e1=http://127.0.0.1:$EP" \
    >"$T/etcd.log" 2>&1 &
PIDS+=($!)
wait_up "127.0.0.1:$BC"
wait_up "127.0.0.1:$EC"
scenario "127.0.0.1:$BC" b > "$T/batond.txt" &
s1=$!
scenario "127.0.0.1:$EC" e > "$T/etcd.txt"
wait $s1
if ! diff -u "$T/etcd.txt" "$T/batond.txt"; then
    echo "--- batond log tail"; tail -20 "$T/b1.log"
    fail "etcdctl output differs between etcd (-) and batond (+)"
fi
echo "one member: etcdctl outputs identical to etcd 3.4 ($(wc -l < "$T/etcd.txt") lines, ${SECONDS}s)"
grep -q "required revision has been compacted" "$T/batond.txt" || fail "no compacted message"
grep -q "short-lived key gone: yes" "$T/batond.txt" || fail "short lease did not expire"

# ---- Three members: lease operations through followers ---------------------------------------
C=(); P=(); M=(); CL=""
for i in 1 2 3; do
    free_port "C[$i]"; free_port "P[$i]"; free_port "M[$i]"
    CL="$CL${CL:+,}m$i=http://127.0.0.1:${P[$i]}"
done
for i in 1 2 3; do start_batond "m$i" "$T/m$i" "${C[$i]}" "${P[$i]}" "${M[$i]}" "$CL"; done
for i in 1 2 3; do wait_up "127.0.0.1:${C[$i]}"; done
# Each operation goes to a different member: at least two of three are followers, which
# forward keep-alive and time-to-live to the leader and proposals through Raft.
EP=("" "127.0.0.1:${C[1]}" "127.0.0.1:${C[2]}" "127.0.0.1:${C[3]}")
e() { local m=$1; shift; etcdctl --endpoints="${EP[$m]}" --command-timeout=5s "$@"; }
L=$(e 1 lease grant 60 | awk '{print $2}')
[ -n "$L" ] || fail "lease grant on member 1"
e 2 put c/k v --lease="$L" >/dev/null || fail "put with lease on member 2"
for i in 1 2 3; do
    got=$(e $i lease timetolive "$L" --keys)
    [[ $got == "lease $L granted with TTL(60s), remaining("*"s), attached keys([c/k])" ]] ||
        fail "member $i: timetolive: $got"
    got=$(e $i lease keep-alive --once "$L")
    [ "$got" = "lease $L keepalived with TTL(60)" ] || fail "member $i: keep-alive: $got"
done
e 3 lease list | grep -qx "$L" || fail "lease list on member 3"
e 3 lease revoke "$L" >/dev/null || fail "revoke on member 3"
[ -z "$(e 1 get c/k)" ] || fail "key survived revoke (read on member 1)"
got=$(e 2 lease keep-alive --once "$L" 2>&1)
[ "$got" = "Error: etcdserver: requested lease not found" ] || fail "keep-alive after revoke: $got"
# Expiry, detected by the leader, seen on every member; a watch on one member sees it.
rev=$(e 1 get x -w json | "$PY" -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
S=$(e 2 lease grant 2 | awk '{print $2}')
e 3 put c/short v --lease="$S" >/dev/null || fail "put short"
got=$(run_n 6 e 1 watch --rev=$((rev + 1)) c/short | tr '\n' ' ')
[ "$got" = "PUT c/short v DELETE c/short  " ] || fail "watch on member 1 of the expiry: $got"
for i in 2 3; do [ -z "$(e $i get c/short)" ] || fail "member $i: short key still there"; done
echo "three members: lease operations and watch through each member (${SECONDS}s)"
# Stop the members gracefully; their logs must hold no sanitizer report.
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
PIDS=()
if grep -l "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" "$T"/*.log; then
    grep -h -A20 "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" "$T"/*.log | head -60
    fail "sanitizer report in a batond log"
fi
echo "PASS (${SECONDS}s)"
