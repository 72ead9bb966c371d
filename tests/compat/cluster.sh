#!/usr/bin/env bash
# cluster.sh: start, inspect and stop a local cluster of 1..5 members of any server binary
# that accepts etcd's flags (etcd itself, or batond). Every member listens on 127.0.0.1 only,
# on random free high ports, with its data dir under one cluster directory. The directory is
# the handle: it records the PIDs this script started, so several clusters can live side by
# side and any language can drive them through these subcommands.
#
#   cluster.sh up SERVER N DIR     start N members in DIR (created; must be empty or absent),
#                                  wait until every member is healthy, write DIR/cluster.env
#   cluster.sh down DIR            kill -9 the members this script started, remove DIR
#                                  (a watchdog does this by itself when the process that ran
#                                  `up` dies without calling `down`, e.g. a test killed at
#                                  its timeout: members run in their own sessions, so nobody
#                                  else would)
#   cluster.sh kill DIR I [SIG]    send SIG (default KILL) to member I (1-based), wait for exit
#   cluster.sh start DIR I         restart member I on its data dir (after kill), wait healthy
#   cluster.sh add DIR [--learner] MemberAdd m<N+1>, start it (existing state), wait healthy
#   cluster.sh remove DIR I        MemberRemove member I, stop it, delete its data dir
#   cluster.sh leader DIR          print the index of the current leader (via endpoint status)
#   cluster.sh wait DIR [SECS]     wait until every running member reports healthy
#   cluster.sh run SERVER N -- CMD...
#                                  up in a fresh temp dir, export CLUSTER_DIR and the variables
#                                  of cluster.env, run CMD, always down (trap), exit with CMD's
#                                  status (CMD runs with stdin from /dev/null)
#
# DIR/cluster.env (sourceable) defines CLUSTER_SIZE, CLUSTER_SERVER, CLUSTER_ENDPOINTS
# (comma-separated host:port of every client URL), and for each member I: CLUSTER_NAME_I,
# CLUSTER_CLIENT_PORT_I, CLUSTER_PEER_PORT_I, CLUSTER_METRICS_PORT_I.
#
# Environment: CLUSTER_HEARTBEAT_MS and CLUSTER_ELECTION_MS (default 100 and 1000, etcd's),
# CLUSTER_OWNER_PID (the process whose death stops the cluster; default: the
# caller of `up`), CLUSTER_UP_TIMEOUT (seconds to become healthy, default 30), CLUSTER_EXTRA_FLAGS
# (appended to every member's command line), ETCDCTL (default etcdctl).
set -euo pipefail

ETCDCTL=${ETCDCTL:-etcdctl}
export ETCDCTL_API=3
HERE=$(cd "$(dirname "$0")" && pwd)

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

# A random port in [20000, 32000) that nothing listens on now: below the kernel's ephemeral
# range (32768-60999), so an outgoing connection cannot take a killed member's port before it
# restarts. Another process may still take it before our member binds; `up` detects that (the
# member exits) and retries with new ports. Sets PORT, and remembers it in PICKED_PORTS so that
# no two ports of one cluster are the same (call it directly: in a $(...) subshell the memory
# would be lost, and two members were once given one peer port).
pick_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        case " ${PICKED_PORTS:-} " in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ]; then
            PICKED_PORTS="${PICKED_PORTS:-} $p"
            PORT=$p
            return 0
        fi
    done
    die "no free port found after 200 tries"
}

# True when PID is alive and is one of ours: its command line mentions DIR. This guards
# against killing an unrelated process that reused a recorded PID.
is_ours() {
    local pid=$1 dir=$2
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/"
}

# True while member PID may still become or be our server: ours by is_ours, or our own child
# that has not exec'ed the server yet (under load that can take a while after the fork).
member_alive() {
    local pid=$1 dir=$2 ppid
    is_ours "$pid" "$dir" && return 0
    [ -r "/proc/$pid/stat" ] || return 1
    ppid=$(sed 's/^.*) [A-Za-z] \([0-9]*\) .*$/\1/' "/proc/$pid/stat" 2>/dev/null)
    [ "$ppid" = "$$" ]
}

member_cmd() {
    local dir=$1 i=$2 state=$3
    # shellcheck disable=SC1091
    . "$dir/cluster.env"
    local name_var="CLUSTER_NAME_$i" cp_var="CLUSTER_CLIENT_PORT_$i"
    local pp_var="CLUSTER_PEER_PORT_$i" mp_var="CLUSTER_METRICS_PORT_$i"
    local initial="" j nv pv
    for j in $(seq 1 "$CLUSTER_SIZE"); do
        case " ${CLUSTER_REMOVED:-} " in *" $j "*) continue ;; esac
        nv="CLUSTER_NAME_$j"
        pv="CLUSTER_PEER_PORT_$j"
        initial="${initial:+$initial,}${!nv}=http://127.0.0.1:${!pv}"
    done
    # shellcheck disable=SC2086
    echo "$CLUSTER_SERVER" --name "${!name_var}" --data-dir "$dir/${!name_var}.data/" \
        --listen-client-urls "http://127.0.0.1:${!cp_var}" \
        --advertise-client-urls "http://127.0.0.1:${!cp_var}" \
        --listen-peer-urls "http://127.0.0.1:${!pp_var}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${!pp_var}" \
        --listen-metrics-urls "http://127.0.0.1:${!mp_var}" \
        --initial-cluster "$initial" --initial-cluster-state "$state" \
        --initial-cluster-token "$(basename "$dir")" \
        --heartbeat-interval "$CLUSTER_HEARTBEAT_MS" --election-timeout "$CLUSTER_ELECTION_MS" \
        ${CLUSTER_EXTRA_FLAGS:-}
}

start_member() {
    local dir=$1 i=$2 state=$3
    local cmd
    cmd=$(member_cmd "$dir" "$i" "$state")
    # setsid: the member gets its own process group, so a ^C in the caller's terminal
    # reaches the caller (whose trap stops us) rather than racing it.
    # shellcheck disable=SC2086
    setsid $cmd >>"$dir/m$i.log" 2>&1 </dev/null &
    echo $! >"$dir/m$i.pid"
    disown $!
}

endpoint_of() {
    local dir=$1 i=$2
    . "$dir/cluster.env"
    local cp_var="CLUSTER_CLIENT_PORT_$i"
    echo "127.0.0.1:${!cp_var}"
}

# Wait until every member whose pid file names a live process answers `endpoint health`.
# Fails early if a member we started has exited (e.g. its port was taken).
wait_healthy() {
    local dir=$1 secs=${2:-${CLUSTER_UP_TIMEOUT:-30}}
    . "$dir/cluster.env"
    local deadline=$((SECONDS + secs)) i pid ok
    while :; do
        ok=1
        for i in $(seq 1 "$CLUSTER_SIZE"); do
            [ -f "$dir/m$i.pid" ] || continue
            pid=$(cat "$dir/m$i.pid")
            if ! member_alive "$pid" "$dir"; then
                echo "cluster.sh: member $i (pid $pid) exited; last log lines:" >&2
                tail -n 15 "$dir/m$i.log" >&2 || true
                return 2
            fi
            # etcd's learners answer no client RPC but this refusal: up is all we can know.
            if ! "$ETCDCTL" --endpoints="$(endpoint_of "$dir" "$i")" --dial-timeout=1s \
                --command-timeout=2s endpoint health >"$dir/health.out" 2>&1 &&
                ! grep -q "not supported for learner" "$dir/health.out"; then
                ok=0
            fi
        done
        [ $ok = 1 ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            echo "cluster.sh: cluster in $dir not healthy after ${secs}s" >&2
            for i in $(seq 1 "$CLUSTER_SIZE"); do
                echo "--- member $i log tail:" >&2
                tail -n 10 "$dir/m$i.log" >&2 || true
            done
            return 1
        fi
        sleep 0.2
    done
}

kill_member() {
    local dir=$1 i=$2 sig=${3:-KILL}
    local pid n
    [ -f "$dir/m$i.pid" ] || return 0
    pid=$(cat "$dir/m$i.pid")
    if member_alive "$pid" "$dir"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        # Bounded wait for the process to go away (5 s, then KILL, then 5 s more).
        for n in $(seq 1 100); do
            member_alive "$pid" "$dir" || break
            [ "$n" = 50 ] && kill -KILL "$pid" 2>/dev/null || true
            sleep 0.1
        done
        member_alive "$pid" "$dir" && echo "cluster.sh: pid $pid did not exit" >&2
    fi
    rm -f "$dir/m$i.pid"
}

# The watchdog: its own session (so a test runner killing the test's process tree leaves it
# alone), polls the owner once a second and runs `down` when the owner is gone. `down` stops
# it first. It exits by itself if DIR disappears.
WATCHDOG_TAG=baton-cluster-watchdog
start_watchdog() {
    local dir=$1 owner=$2
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -f "$2/cluster.env" ]; do sleep 1; done
                    [ -f "$2/cluster.env" ] && exec "$3" down "$2"' \
        "$WATCHDOG_TAG" "$owner" "$dir" "$HERE/cluster.sh" </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/watchdog.pid"
    disown $!
}

stop_watchdog() {
    local dir=$1 pid
    [ -f "$dir/watchdog.pid" ] || return 0
    pid=$(cat "$dir/watchdog.pid")
    rm -f "$dir/watchdog.pid"
    # Only if it is still our watchdog for this DIR (and not ourselves: the watchdog runs down).
    [ "$pid" != "$$" ] || return 0
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
    case "$cmd" in
    *"$WATCHDOG_TAG"*"$dir"*) kill -TERM -- "-$pid" 2>/dev/null || true ;;
    esac
}

cmd_up() {
    local server=$1 n=$2 dir=$3
    [ -x "$server" ] || die "server binary '$server' is not executable"
    case "$n" in [1-5]) ;; *) die "cluster size must be 1..5, got '$n'" ;; esac
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
    local i rc
    for _ in 1 2 3; do
        {
            echo "CLUSTER_SIZE=$n"
            echo "CLUSTER_SERVER=$server"
            echo "CLUSTER_HEARTBEAT_MS=${CLUSTER_HEARTBEAT_MS:-100}"
            echo "CLUSTER_ELECTION_MS=${CLUSTER_ELECTION_MS:-1000}"
            local eps=""
            for i in $(seq 1 "$n"); do
                local cp pp mp
                pick_port && cp=$PORT
                pick_port && pp=$PORT
                pick_port && mp=$PORT
                echo "CLUSTER_NAME_$i=m$i"
                echo "CLUSTER_CLIENT_PORT_$i=$cp"
                echo "CLUSTER_PEER_PORT_$i=$pp"
                echo "CLUSTER_METRICS_PORT_$i=$mp"
                eps="${eps:+$eps,}127.0.0.1:$cp"
            done
            echo "CLUSTER_ENDPOINTS=$eps"
        } >"$dir/cluster.env"
        for i in $(seq 1 "$n"); do
            start_member "$dir" "$i" new
        done
        rc=0
        wait_healthy "$dir" || rc=$?
        if [ $rc = 0 ]; then
            start_watchdog "$dir" "${CLUSTER_OWNER_PID:-$PPID}"
            return 0
        fi
        # Tear down what we started before retrying (or giving up).
        for i in $(seq 1 "$n"); do kill_member "$dir" "$i"; done
        # Retry only when a member exited because one of its ports was taken meanwhile.
        [ $rc = 2 ] && cat "$dir"/m*.log 2>/dev/null | grep -qi 'address already in use' || break
        echo "cluster.sh: a port was taken meanwhile; retrying with new ports" >&2
        find "$dir" -mindepth 1 -maxdepth 1 -name '*.data' -exec rm -rf {} +
    done
    die "could not start $n members of $server in $dir"
}

# Rewrites VAR=value in DIR/cluster.env (appends it when missing).
env_set() {
    local dir=$1 var=$2 val=$3
    if grep -q "^$var=" "$dir/cluster.env"; then
        sed -i "s|^$var=.*|$var=$val|" "$dir/cluster.env"
    else
        echo "$var=$val" >>"$dir/cluster.env"
    fi
}

# CLUSTER_ENDPOINTS from the members not removed.
env_endpoints() {
    local dir=$1 i eps="" cv
    . "$dir/cluster.env"
    for i in $(seq 1 "$CLUSTER_SIZE"); do
        case " ${CLUSTER_REMOVED:-} " in *" $i "*) continue ;; esac
        cv="CLUSTER_CLIENT_PORT_$i"
        eps="${eps:+$eps,}127.0.0.1:${!cv}"
    done
    env_set "$dir" CLUSTER_ENDPOINTS "$eps"
}

# add DIR [--learner]: MemberAdd a new member m<N+1> through the running members, then start
# it with --initial-cluster-state existing on a new data dir and wait until it is healthy.
cmd_add() {
    local dir=$1 learner=${2:-}
    . "$dir/cluster.env"
    local i=$((CLUSTER_SIZE + 1)) cp pp mp
    PICKED_PORTS=""
    pick_port && cp=$PORT
    pick_port && pp=$PORT
    pick_port && mp=$PORT
    # etcd refuses an add ("unhealthy cluster") until its members have been connected for 5 s.
    local n
    for n in $(seq 1 40); do
        # shellcheck disable=SC2086
        "$ETCDCTL" --endpoints="$CLUSTER_ENDPOINTS" --dial-timeout=2s --command-timeout=5s \
            member add "m$i" --peer-urls="http://127.0.0.1:$pp" $learner >"$dir/m$i.add" 2>&1 &&
            break
        grep -q "unhealthy cluster" "$dir/m$i.add" || n=40
        [ "$n" = 40 ] && { cat "$dir/m$i.add" >&2; die "member add m$i failed"; }
        sleep 0.5
    done
    env_set "$dir" CLUSTER_SIZE "$i"
    env_set "$dir" "CLUSTER_NAME_$i" "m$i"
    env_set "$dir" "CLUSTER_CLIENT_PORT_$i" "$cp"
    env_set "$dir" "CLUSTER_PEER_PORT_$i" "$pp"
    env_set "$dir" "CLUSTER_METRICS_PORT_$i" "$mp"
    env_endpoints "$dir"
    start_member "$dir" "$i" existing
    wait_healthy "$dir" || die "member m$i did not become healthy"
    echo "$i"
}

# remove DIR I: MemberRemove member I through the others, stop it, delete its data dir.
cmd_remove() {
    local dir=$1 i=$2
    . "$dir/cluster.env"
    local nv="CLUSTER_NAME_$i" id
    id=$("$ETCDCTL" --endpoints="$CLUSTER_ENDPOINTS" --dial-timeout=2s --command-timeout=5s \
        member list | awk -F', ' -v n="${!nv}" '$3 == n { print $1 }')
    [ -n "$id" ] || die "member $i (${!nv}) is not in the member list"
    env_set "$dir" CLUSTER_REMOVED "\"${CLUSTER_REMOVED:-} $i\""
    env_endpoints "$dir"
    . "$dir/cluster.env"
    local n
    for n in $(seq 1 40); do
        "$ETCDCTL" --endpoints="$CLUSTER_ENDPOINTS" --dial-timeout=2s --command-timeout=5s \
            member remove "$id" >"$dir/m$i.remove" 2>&1 && break
        grep -q "unhealthy cluster" "$dir/m$i.remove" || n=40
        [ "$n" = 40 ] && { cat "$dir/m$i.remove" >&2; die "member remove $id failed"; }
        sleep 0.5
    done
    kill_member "$dir" "$i"
    rm -rf "${dir:?}/${!nv}.data"
}

cmd_down() {
    local dir=$1 i
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd)
    stop_watchdog "$dir"
    if [ -f "$dir/cluster.env" ]; then
        . "$dir/cluster.env"
        for i in $(seq 1 "$CLUSTER_SIZE"); do kill_member "$dir" "$i"; done
    fi
    rm -rf "$dir"
}

cmd_leader() {
    local dir=$1 i out
    . "$dir/cluster.env"
    for i in $(seq 1 "$CLUSTER_SIZE"); do
        [ -f "$dir/m$i.pid" ] || continue
        # Simple format: endpoint, id, version, db size, is leader, is learner, term, ...
        out=$("$ETCDCTL" --endpoints="$(endpoint_of "$dir" "$i")" --dial-timeout=1s \
            --command-timeout=2s endpoint status 2>/dev/null) || continue
        if [ "$(echo "$out" | awk -F', ' '{print $5}')" = true ]; then
            echo "$i"
            return 0
        fi
    done
    return 1
}

cmd_run() {
    local server=$1 n=$2
    shift 2
    [ "${1:-}" = "--" ] && shift
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/baton-cluster.XXXXXX")
    rmdir "$dir"
    RUN_PID=""
    # On any exit: stop the command if it still runs, then the cluster.
    trap '[ -n "$RUN_PID" ] && kill -TERM "$RUN_PID" 2>/dev/null; cmd_down "$dir"' EXIT
    trap 'exit 130' INT TERM
    CLUSTER_OWNER_PID=$$ cmd_up "$server" "$n" "$dir"
    set -a
    . "$dir/cluster.env"
    set +a
    export CLUSTER_DIR=$dir
    local rc=0
    # In the background and waited for, so that a TERM to us is handled at once.
    "$@" &
    RUN_PID=$!
    wait "$RUN_PID" || rc=$?
    RUN_PID=""
    exit $rc
}

sub=${1:-}
[ $# -gt 0 ] && shift
case "$sub" in
up) [ $# = 3 ] || die "usage: up SERVER N DIR"; cmd_up "$@" ;;
down) [ $# = 1 ] || die "usage: down DIR"; cmd_down "$1" ;;
kill) [ $# -ge 2 ] || die "usage: kill DIR I [SIG]"; kill_member "$(cd "$1" && pwd)" "$2" "${3:-KILL}" ;;
start)
    [ $# = 2 ] || die "usage: start DIR I"
    d=$(cd "$1" && pwd)
    [ -f "$d/m$2.pid" ] && is_ours "$(cat "$d/m$2.pid")" "$d" && die "member $2 is running"
    start_member "$d" "$2" existing
    wait_healthy "$d"
    ;;
add) [ $# -ge 1 ] || die "usage: add DIR [--learner]"; cmd_add "$(cd "$1" && pwd)" "${2:-}" ;;
remove) [ $# = 2 ] || die "usage: remove DIR I"; cmd_remove "$(cd "$1" && pwd)" "$2" ;;
leader) [ $# = 1 ] || die "usage: leader DIR"; cmd_leader "$(cd "$1" && pwd)" ;;
wait) [ $# -ge 1 ] || die "usage: wait DIR [SECS]"; wait_healthy "$(cd "$1" && pwd)" "${2:-}" ;;
run) [ $# -ge 3 ] || die "usage: run SERVER N -- CMD..."; cmd_run "$@" ;;
*) die "unknown subcommand '$sub' (up, down, kill, start, add, remove, leader, wait, run)" ;;
esac
