#!/usr/bin/env bash
# The chaos runner: starts N members of an etcd-flag-compatible server (etcd today, batond
# later), each in its own network namespace on a private bridge, runs the workload clients from
# a namespace of their own, injects faults from a seeded schedule, heals everything, and checks
# the recorded history. Closing line:
#   ops=N ok=N fail=N info=N faults=N anomalies=N result=valid|invalid
# Exit status: 0 valid, 1 invalid, 2 setup or usage error, 3 the checker could not decide,
# 77 skipped (not root, or no network namespaces here).
#
# Everything it creates (namespaces bc<pid>n<i>/bc<pid>c, bridge bc<pid>br, veths, iptables
# rules inside those namespaces, server processes) is removed on exit, on failure and on
# Ctrl-C; leftovers of a killed run (whose pid is gone) are removed at the next start.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

SERVER=/usr/bin/etcd
ETCDCTL=${ETCDCTL:-/usr/bin/etcdctl}
DURATION=60
SEED=${SEED:-$(date +%s)}
NODES=3
WORKLOAD=reg,append,watch,lock
NEMESIS=partition,kill,pause,transfer,member
SERIALIZABLE=0
CHECKER=""
OUT="$HERE/out"
KEEP=0
NET=auto
NPM_PREFIX=${CHAOS_NPM_PREFIX:-${HOME:-/root}/.cache/baton/npm}
ETCD3_VERSION=1.1.2

usage() {
    cat >&2 <<EOF
usage: $0 [--server PATH] [--duration S] [--seed N] [--nodes 3|5] [--workload LIST]
          [--nemesis LIST] [--serializable-reads] [--checker PATH] [--out DIR] [--keep]
          [--net auto|netns|loopback]
  --workload  comma list of: reg append watch lock        (default $WORKLOAD)
  --nemesis   comma list of: partition kill pause transfer member none
              partition-leader (calibration: isolate the leader, pause it)
                                                          (default $NEMESIS)
EOF
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --server) SERVER=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --workload) WORKLOAD=$2; shift 2 ;;
    --nemesis) NEMESIS=$2; shift 2 ;;
    --serializable-reads) SERIALIZABLE=1; shift ;;
    --checker) CHECKER=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --net) NET=$2; shift 2 ;;
    *) usage ;;
    esac
done

die() { echo "chaos: $*" >&2; exit 2; }
[[ $DURATION =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 5 ] && [ "$DURATION" -le 86400 ] ||
    die "--duration must be 5..86400 seconds"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed must be a number"
[[ $NET =~ ^(auto|netns|loopback)$ ]] || die "--net must be auto, netns or loopback"
[ "$NODES" = 3 ] || [ "$NODES" = 5 ] || die "--nodes must be 3 or 5"
[ -x "$SERVER" ] || die "--server $SERVER is not an executable"
[ -x "$ETCDCTL" ] || die "etcdctl not found at $ETCDCTL (set ETCDCTL)"
skip() { echo "chaos: SKIPPED: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, iptables)"
command -v node >/dev/null || die "node is not installed"
if [ -z "$CHECKER" ]; then
    for c in "$ROOT"/build/release/tests/chaos/chaos_check "$ROOT"/build/asan/tests/chaos/chaos_check; do
        [ -x "$c" ] && CHECKER=$c && break
    done
fi
[ -n "$CHECKER" ] && [ -x "$CHECKER" ] || die "chaos_check not built (make build, or --checker PATH)"

RID="bc$$"
CNS="${RID}c"
BR="${RID}br"
# Namespaces where they can be made; else loopback: members on 127.77.<run>.1i, each in a
# cgroup of its own whose traffic is SNATed to its address, so iptables can cut member from
# member by address as it does inside namespaces.
if [ "$NET" = auto ]; then
    if ip netns add "$RID-probe" 2>/dev/null && ip netns del "$RID-probe"; then NET=netns; else
        NET=loopback; echo "chaos: network namespaces unavailable: falling back to loopback + iptables"; fi
fi
CHAIN="BC$$"
CG2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
if [ "$NET" = netns ]; then
    SUBNET=10.77.0 CPORT=2379 PPORT=2380
else
    SUBNET=127.77.$(($$ % 200 + 20)) CPORT=32379 PPORT=32380
fi
CLIENT_IP=$SUBNET.100
RUN_DIR="$OUT/$(date +%Y%m%d-%H%M%S)-seed$SEED-$$"
mkdir -p "$RUN_DIR"
NEMLOG="$RUN_DIR/nemesis.log"
T0=$EPOCHREALTIME

log() { printf '%s t=%s %s\n' "$(date +%H:%M:%S)" "$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN{printf "%.3f", a - b}')" "$*" >>"$NEMLOG"; }
say() { echo "chaos: $*"; log "$*"; }

member_ns() { echo "${RID}n$1"; }
member_ip() { echo "$SUBNET.$((10 + $1))"; }
member_cg() { echo "$CG2/$RID/m$1"; }
# Runs a command as member $1: in its namespace, or (loopback) in its cgroup. It execs, so
# call it in a background subshell: $! is then the server's own pid (a signal to $! reaches
# the server, not a shell waiting for it).
mexec() {
    local i=$1
    shift
    if [ "$NET" = netns ]; then
        exec ip netns exec "$(member_ns "$i")" "$@"
    else
        exec sh -c 'echo $$ >"$0" && exec "$@"' "$(member_cg "$i")/cgroup.procs" "$@"
    fi
}
# Runs a command as a client: in the clients' namespace, or (loopback) in the clients' cgroup
# (so that a dead run's clients can be found too).
cexec() {
    if [ "$NET" = netns ]; then
        ip netns exec "$CNS" "$@"
    else
        mkdir -p "$CG2/$RID/client"
        sh -c 'echo $$ >"$0" && exec "$@"' "$CG2/$RID/client/cgroup.procs" "$@"
    fi
}
INITIAL_CLUSTER=""
for i in $(seq 1 "$NODES"); do
    INITIAL_CLUSTER+="${INITIAL_CLUSTER:+,}m$i=http://$(member_ip "$i"):$PPORT"
done
ENDPOINTS=""
for i in $(seq 1 "$NODES"); do ENDPOINTS+="${ENDPOINTS:+,}$(member_ip "$i"):$CPORT"; done

declare -A PID=()     # member -> server pid
declare -A PAUSED=()  # member -> 1 while SIGSTOPped
declare -A REMOVED=() # member -> 1 while removed from the cluster
WORKLOAD_PID=""
NAP_PID=""
FAULTS=0

# --- cleanup -------------------------------------------------------------------------------

# Removes the namespaces, bridge and veths of run $1 (a "bc<pid>" prefix), killing what runs
# inside those namespaces (only our servers and clients ever do).
remove_run() {
    local rid=$1 ns p cg chain="BC${1#bc}"
    # loopback mode: processes in the run's cgroups, its chains, the cgroups
    if [ -n "$CG2" ] && [ -d "$CG2/$rid" ]; then
        for cg in "$CG2/$rid"/*/; do
            for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do
                kill -CONT "$p" 2>/dev/null || true
                kill -9 "$p" 2>/dev/null || true
            done
        done
    fi
    iptables -D INPUT -j "$chain" 2>/dev/null || true
    iptables -F "$chain" 2>/dev/null && iptables -X "$chain" 2>/dev/null || true
    iptables -t nat -D POSTROUTING -j "$chain" 2>/dev/null || true
    iptables -t nat -F "$chain" 2>/dev/null && iptables -t nat -X "$chain" 2>/dev/null || true
    if [ -n "$CG2" ] && [ -d "$CG2/$rid" ]; then
        sleep 0.3
        rmdir "$CG2/$rid"/*/ "$CG2/$rid" 2>/dev/null || true
    fi
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${rid}(n[0-9]+|c)$" || true); do
        for p in $(ip netns pids "$ns" 2>/dev/null || true); do
            kill -CONT "$p" 2>/dev/null || true
            kill -9 "$p" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
        grep -E "^${rid}(br|v[0-9]+|vc)$" || true); do
        ip link del "$l" 2>/dev/null || true
    done
}

cleanup_stale() {
    local rid pid
    for rid in $( (ip netns list 2>/dev/null | awk '{print $1}'
        ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//'
        iptables -S 2>/dev/null | awk '$1 == "-N" {print $2}' | sed -n 's/^BC/bc/p'
        [ -n "$CG2" ] && ls "$CG2" 2>/dev/null) |
        grep -oE '^bc[0-9]+$|^bc[0-9]+(n[0-9]+|c|br|v[0-9]+|vc)$' | grep -oE '^bc[0-9]+' | sort -u); do
        pid=${rid#bc}
        [ "$pid" = "$$" ] && continue
        if kill -0 "$pid" 2>/dev/null && grep -q "run.sh" "/proc/$pid/cmdline" 2>/dev/null; then
            continue # a live run of someone else
        fi
        echo "chaos: removing leftovers of dead run $rid"
        remove_run "$rid"
    done
}

CLEANED=0
cleanup() {
    local rc=$?
    [ "$CLEANED" = 1 ] && return
    CLEANED=1
    trap - EXIT INT TERM
    if [ -n "$WORKLOAD_PID" ]; then kill -9 "$WORKLOAD_PID" 2>/dev/null || true; fi
    if [ -n "$NAP_PID" ]; then kill "$NAP_PID" 2>/dev/null || true; fi
    for i in "${!PID[@]}"; do
        kill -CONT "${PID[$i]}" 2>/dev/null || true
        kill -9 "${PID[$i]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    remove_run "$RID"
    if ip netns list | grep -q "^$RID" || ip -o link show | grep -q ": $RID" ||
        iptables -S | grep -q -- "-N $CHAIN\$" || { [ -n "$CG2" ] && [ -d "$CG2/$RID" ]; }; then
        echo "chaos: WARNING: cleanup left something behind for $RID" >&2
    fi
    return $rc
}
trap cleanup EXIT
trap 'echo "chaos: interrupted" >&2; exit 130' INT TERM

# --- setup ---------------------------------------------------------------------------------

setup_loopback() {
    [ -n "$CG2" ] || skip "neither network namespaces nor a cgroup2 mount (loopback fallback) here"
    local i
    iptables -N "$CHAIN"
    iptables -I INPUT -j "$CHAIN"
    iptables -t nat -N "$CHAIN"
    iptables -t nat -I POSTROUTING -j "$CHAIN"
    for i in $(seq 1 "$NODES"); do
        mkdir -p "$(member_cg "$i")"
        iptables -t nat -A "$CHAIN" -m cgroup --path "$RID/m$i" -j SNAT --to-source "$(member_ip "$i")"
    done
}

setup_net() {
    [ "$NET" = loopback ] && { setup_loopback; return; }
    ip netns add "$RID-probe" 2>/dev/null && ip netns del "$RID-probe" ||
        die "network namespaces are unavailable here (ip netns add failed); try --net loopback"
    ip link add "$BR" type bridge
    ip link set "$BR" up
    local i
    for i in $(seq 1 "$NODES") c; do
        local ns veth ip
        if [ "$i" = c ]; then ns=$CNS veth="${RID}vc" ip=$CLIENT_IP; else
            ns=$(member_ns "$i") veth="${RID}v$i" ip=$(member_ip "$i"); fi
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BR" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$ip/24" dev eth0
        ip -n "$ns" link set eth0 up
        if [ "$i" != c ]; then
            ip netns exec "$ns" iptables -N CHAOS
            ip netns exec "$ns" iptables -I INPUT -j CHAOS
        fi
    done
}

ensure_client() {
    if [ ! -f "$NPM_PREFIX/node_modules/etcd3/package.json" ] ||
        ! grep -q "\"version\": \"$ETCD3_VERSION\"" "$NPM_PREFIX/node_modules/etcd3/package.json"; then
        echo "chaos: installing npm etcd3@$ETCD3_VERSION into $NPM_PREFIX"
        mkdir -p "$NPM_PREFIX"
        timeout 300 npm install --prefix "$NPM_PREFIX" --no-audit --no-fund "etcd3@$ETCD3_VERSION" \
            >"$RUN_DIR/npm.log" 2>&1 || die "npm install failed, see $RUN_DIR/npm.log"
    fi
}

start_member() { # $1 member, $2 new|existing, [$3 initial cluster]
    local i=$1 ns ip cluster=${3:-$INITIAL_CLUSTER}
    ns=$(member_ns "$i") ip=$(member_ip "$i")
    mexec "$i" "$SERVER" --name "m$i" --data-dir "$RUN_DIR/data/m$i" \
        --listen-client-urls "http://$ip:$CPORT" --advertise-client-urls "http://$ip:$CPORT" \
        --listen-peer-urls "http://$ip:$PPORT" --initial-advertise-peer-urls "http://$ip:$PPORT" \
        --initial-cluster "$cluster" --initial-cluster-state "$2" \
        --initial-cluster-token "chaos-$RID" --heartbeat-interval 100 --election-timeout 1000 \
        >>"$RUN_DIR/m$i.log" 2>&1 &
    PID[$i]=$!
}

ctl() { # etcdctl from the client namespace, bounded
    local pre=()
    [ "$NET" = netns ] && pre=(ip netns exec "$CNS")
    timeout 10 "${pre[@]}" "$ETCDCTL" --dial-timeout=2s --command-timeout=4s "$@"
}

# Prints the number of the member that leads (empty when none answers as leader).
leader() {
    local line i
    line=$(ctl --endpoints "$ENDPOINTS" endpoint status -w simple 2>/dev/null | awk -F', ' '$5 == "true" {print $1}' | head -1)
    for i in $(seq 1 "$NODES"); do
        [ "${line#http://}" = "$(member_ip "$i"):$CPORT" ] && echo "$i" && return
    done
    true
}

member_id() { # hex id of member $1, found by its peer URL (an added member has no name yet)
    ctl --endpoints "$ENDPOINTS" member list -w simple 2>/dev/null |
        awk -F', ' -v u="http://$(member_ip "$1"):$PPORT" '$4 == u {print $1}' | head -1
}

wait_healthy() { # all members answer a linearizable read; bounded by $1 seconds
    local deadline=$((SECONDS + $1))
    while [ $SECONDS -lt $deadline ]; do
        if ctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    return 1
}

# --- nemesis -------------------------------------------------------------------------------

# The schedule's PRNG: a 48-bit LCG in the main shell (bash's RANDOM is reseeded in every
# $(...) subshell, so it cannot replay a schedule). rnd N sets R to 0..N-1.
PRNG_STATE=0
# An interruptible sleep: a trap runs at once instead of after the sleep.
nap() {
    sleep "$1" &
    NAP_PID=$!
    wait $NAP_PID || true
    NAP_PID=""
}

rnd() {
    PRNG_STATE=$(( (PRNG_STATE * 25214903917 + 11) & 0xFFFFFFFFFFFF ))
    R=$(( (PRNG_STATE >> 17) % $1 ))
}

block() { # member $1 drops everything arriving from member $2
    if [ "$NET" = netns ]; then
        ip netns exec "$(member_ns "$1")" iptables -A CHAOS -s "$(member_ip "$2")" -j DROP
    else
        iptables -A "$CHAIN" -s "$(member_ip "$2")" -d "$(member_ip "$1")" -j DROP
    fi
}

partition() { # "$1" and "$2": space-separated member lists cut from each other
    local a b
    for a in $1; do for b in $2; do block "$a" "$b"; block "$b" "$a"; done; done
}

heal_net() {
    local i
    if [ "$NET" = loopback ]; then iptables -F "$CHAIN"; return; fi
    for i in $(seq 1 "$NODES"); do ip netns exec "$(member_ns "$i")" iptables -F CHAOS; done
}

SHUF=()
shuffle_members() { # SHUF = members 1..NODES in a seeded random order (Fisher-Yates)
    local i j t
    SHUF=($(seq 1 "$NODES"))
    for ((i = NODES - 1; i > 0; i--)); do
        rnd $((i + 1)); j=$R
        t=${SHUF[i]} SHUF[i]=${SHUF[j]} SHUF[j]=$t
    done
}

fault_partition() {
    local kind all l half a b m
    rnd 5; kind=$R
    shuffle_members; all="${SHUF[*]}"
    half=$(( NODES / 2 ))
    case $kind in
    0) a=$(echo $all | cut -d' ' -f1-$half); b=$(echo $all | cut -d' ' -f$((half + 1))-)
        say "fault=partition kind=halves a=[$a] b=[$b]"; partition "$a" "$b" ;;
    1) l=$(leader); [ -n "$l" ] || l=1; b=$(seq 1 "$NODES" | grep -vx "$l" | tr '\n' ' ')
        say "fault=partition kind=isolate-leader leader=$l"; partition "$l" "$b" ;;
    2) m=$(echo $all | cut -d' ' -f1); b=$(echo $all | cut -d' ' -f2-)
        say "fault=partition kind=minority-one a=[$m] b=[$b]"; partition "$m" "$b" ;;
    3) # bridge: m sees both halves, the halves do not see each other
        m=$(echo $all | cut -d' ' -f1); a=$(echo $all | cut -d' ' -f2-$((half + 1)))
        b=$(echo $all | cut -d' ' -f$((half + 2))-)
        say "fault=partition kind=bridge via=$m a=[$a] b=[$b]"; partition "$a" "$b" ;;
    4) l=$(leader); [ -n "$l" ] || l=1
        say "fault=partition kind=one-way leader=$l hears nobody (others still hear it)"
        for m in $(seq 1 "$NODES" | grep -vx "$l"); do block "$l" "$m"; done ;;
    esac
}

fault_kill() {
    local m l
    l=$(leader)
    rnd 2
    if [ "$R" = 0 ] && [ -n "$l" ]; then m=$l; else rnd "$NODES"; m=$((R + 1)); fi
    say "fault=kill member=m$m pid=${PID[$m]} leader=${l:-none}"
    kill -9 "${PID[$m]}" 2>/dev/null || true
    wait "${PID[$m]}" 2>/dev/null || true
    rnd 3; nap $((R + 1))
    say "heal=restart member=m$m"
    start_member "$m" new
}

fault_pause() {
    local m l
    l=$(leader)
    rnd 2
    if [ "$R" = 0 ] && [ -n "$l" ]; then m=$l; else rnd "$NODES"; m=$((R + 1)); fi
    say "fault=pause member=m$m leader=${l:-none}"
    kill -STOP "${PID[$m]}" 2>/dev/null || true
    PAUSED[$m]=1
}

fault_transfer() {
    local l t id
    l=$(leader)
    [ -n "$l" ] || { say "fault=transfer skipped=no-leader"; return; }
    rnd $((NODES - 1)); t=$((R + 1)); [ "$t" -lt "$l" ] || t=$((t + 1))
    id=$(member_id "$t")
    say "fault=transfer from=m$l to=m$t id=$id"
    ctl --endpoints "$(member_ip "$l"):$CPORT" move-leader "$id" >>"$NEMLOG" 2>&1 || say "transfer failed (counted anyway)"
}

others() { # client endpoints of every member but $1
    local i e=""
    for i in $(seq 1 "$NODES"); do [ "$i" = "$1" ] || e+="${e:+,}$(member_ip "$i"):$CPORT"; done
    echo "$e"
}

# Removes member $1 from the cluster and stops it. 0 when it is out (also when an earlier
# attempt that reported an error had removed it), 1 when it stays.
remove_member() {
    local m=$1 id tries=0 msg
    id=$(member_id "$m")
    [ -n "$id" ] || { say "member m$m not in the member list"; return 1; }
    say "fault=member-remove member=m$m id=$id"
    # etcd refuses while a member is not connected ("unhealthy cluster"): retry, bounded.
    until msg=$(ctl --endpoints "$(others "$m")" member remove "$id" 2>&1); do
        echo "$msg" >>"$NEMLOG"
        if echo "$msg" | grep -q "member not found"; then break; fi
        tries=$((tries + 1))
        [ $tries -lt 10 ] || { say "member remove failed 10 times; m$m stays"; return 1; }
        sleep 1
    done
    REMOVED[$m]=1
    sleep 1
    kill -9 "${PID[$m]}" 2>/dev/null || true
    wait "${PID[$m]}" 2>/dev/null || true
    rm -rf "$RUN_DIR/data/m$m"
}

# Adds member $1 back with an empty data dir and starts it with the cluster that member add
# reports (the current membership, which may lack another member).
readd_member() {
    local m=$1 tries=0 msg cluster
    until msg=$(ctl --endpoints "$(others "$m")" member add "m$m" --peer-urls="http://$(member_ip "$m"):$PPORT" 2>&1); do
        echo "$msg" >>"$NEMLOG"
        tries=$((tries + 1))
        [ $tries -lt 20 ] || { say "member add of m$m failed 20 times"; return 1; }
        sleep 1
    done
    echo "$msg" >>"$NEMLOG"
    cluster=$(echo "$msg" | sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p')
    [ -n "$cluster" ] || cluster=$INITIAL_CLUSTER
    unset 'REMOVED[$m]'
    say "heal=member-add member=m$m cluster=$cluster"
    start_member "$m" existing "$cluster"
}

fault_member() {
    local m
    rnd "$NODES"; m=$((R + 1))
    remove_member "$m" || return 0
    rnd 3; nap $((R + 1))
    readd_member "$m" || true
}

heal_all() {
    local i
    heal_net
    for i in "${!PAUSED[@]}"; do kill -CONT "${PID[$i]}" 2>/dev/null || true; done
    PAUSED=()
    for i in "${!REMOVED[@]}"; do readd_member "$i" || true; done
    for i in $(seq 1 "$NODES"); do
        if ! kill -0 "${PID[$i]}" 2>/dev/null; then say "heal=restart-dead member=m$i"; start_member "$i" existing; fi
    done
}

nemesis() {
    local end=$(( SECONDS + DURATION )) kinds f n
    IFS=',' read -r -a kinds <<<"$NEMESIS"
    n=${#kinds[@]}
    [ "$NEMESIS" = none ] && { nap "$DURATION"; return; }
    while [ $SECONDS -lt $((end - 3)) ]; do
        rnd 3; nap $((R + 2))
        [ $SECONDS -lt $((end - 3)) ] || break
        rnd "$n"; f=${kinds[$R]}
        FAULTS=$((FAULTS + 1))
        case $f in
        partition) fault_partition ;;
        partition-leader) # calibration: cut the leader off, or pause it, and let reads hit it
            rnd 2
            if [ "$R" = 0 ]; then
                local l; l=$(leader); [ -n "$l" ] || l=1
                say "fault=partition kind=isolate-leader leader=$l"
                partition "$l" "$(seq 1 "$NODES" | grep -vx "$l" | tr '\n' ' ')"
            else fault_pause; fi ;;
        kill) fault_kill ;;
        pause) fault_pause ;;
        transfer) fault_transfer ;;
        member) fault_member ;;
        *) die "unknown nemesis $f" ;;
        esac
        local hold
        rnd 5; hold=$((R + 3))
        [ $((SECONDS + hold)) -lt $end ] || hold=$(( end - SECONDS > 1 ? end - SECONDS - 1 : 1 ))
        nap "$hold"
        say "heal=all"
        heal_all
    done
    while [ $SECONDS -lt $end ]; do sleep 1; done
}

# --- run -----------------------------------------------------------------------------------

cleanup_stale
ensure_client
setup_net
PRNG_STATE=$(( (SEED ^ 0x5DEECE66D) & 0xFFFFFFFFFFFF ))
say "run=$RID server=$SERVER nodes=$NODES seed=$SEED duration=$DURATION workload=$WORKLOAD nemesis=$NEMESIS serializable=$SERIALIZABLE net=$NET dir=$RUN_DIR"
for i in $(seq 1 "$NODES"); do start_member "$i" new; done
wait_healthy 60 || die "cluster did not become healthy in 60 s (logs in $RUN_DIR)"
say "cluster healthy leader=m$(leader)"

SER_FLAG=()
[ "$SERIALIZABLE" = 1 ] && SER_FLAG=(--serializable-reads)
HEALED="$RUN_DIR/healed"
cexec env CHAOS_NODE_MODULES="$NPM_PREFIX/node_modules" node "$HERE/client/workload.js" --endpoints "$ENDPOINTS" --duration "$DURATION" \
    --workload "$WORKLOAD" --out "$RUN_DIR/history.jsonl" --seed "$SEED" --healed "$HEALED" \
    "${SER_FLAG[@]}" >"$RUN_DIR/workload.log" 2>&1 &
WORKLOAD_PID=$!

nemesis
heal_all
UNRECOVERED=0
wait_healthy 60 || { UNRECOVERED=1; say "anomaly kind=unrecovered: cluster not healthy 60 s after healing"; }
say "healed faults=$FAULTS"
touch "$HEALED"

# The workload's final phase is bounded by itself; this bounds it once more.
for _ in $(seq 1 300); do kill -0 "$WORKLOAD_PID" 2>/dev/null || break; sleep 1; done
kill -9 "$WORKLOAD_PID" 2>/dev/null || true
wrc=0
wait "$WORKLOAD_PID" || wrc=$?
WORKLOAD_PID=""
cat "$RUN_DIR/workload.log"
[ "$wrc" = 0 ] || die "workload exited with $wrc (see $RUN_DIR/workload.log)"

crc=0
"$CHECKER" --out "$RUN_DIR" "$RUN_DIR/history.jsonl" >"$RUN_DIR/check.txt" 2>&1 || crc=$?
grep '^anomaly' "$RUN_DIR/check.txt" | head -20 || true
summary=$(grep '^ops=' "$RUN_DIR/check.txt" || true)
[ -n "$summary" ] || { cat "$RUN_DIR/check.txt"; die "checker failed (exit $crc)"; }
ops=${summary%% anomalies=*}
rest=${summary#* anomalies=}
anomalies=${rest%% *}
result=${summary##*result=}
if [ "$UNRECOVERED" = 1 ]; then # a cluster that does not come back is a failure too
    echo "anomaly kind=unrecovered the cluster was not healthy 60 s after every fault was healed"
    anomalies=$((anomalies + 1)) result=invalid crc=1
fi
if [ "$crc" = 0 ] && [ "$KEEP" = 0 ]; then
    rm -rf "$RUN_DIR"
else
    rm -rf "$RUN_DIR/data"
    echo "chaos: history, nemesis log and failing key kept in $RUN_DIR"
fi
echo "$ops faults=$FAULTS anomalies=$anomalies result=$result"
case $crc in 0) exit 0 ;; 1) exit 1 ;; 3) exit 3 ;; *) exit 2 ;; esac
