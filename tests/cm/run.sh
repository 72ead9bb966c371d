#!/usr/bin/env bash
# run.sh SCENARIO BATOND CM_NODE OUT_DIR: runs tests/cm/SCENARIO.sh against a fresh cluster of
# batond (1 member, or 3 for failover) started by tests/compat/cluster.sh, which stops it
# whatever happens. Node lease TTL and heartbeat interval are set short so the scenarios are.
set -uo pipefail
[ $# = 4 ] || { echo "usage: $0 single|failover|load BATOND CM_NODE OUT_DIR" >&2; exit 2; }
SCENARIO=$1 BATOND=$2
export CM_NODE=$3
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$4" && mkdir -p "$4"
export OUT
OUT=$(cd "$4" && pwd)
export ETCDCTL_API=3
case $SCENARIO in
single)
    n=1
    export CLUSTER_EXTRA_FLAGS="--node-lease-ttl-ms 3000 --node-heartbeat-interval-ms 500"
    ;;
failover)
    n=3
    export CLUSTER_EXTRA_FLAGS="--node-lease-ttl-ms 6000 --node-heartbeat-interval-ms 500"
    ;;
load)
    n=1
    export CLUSTER_EXTRA_FLAGS="--node-lease-ttl-ms 10000 --node-heartbeat-interval-ms 1000"
    ;;
*) echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac
exec "$HERE/../compat/cluster.sh" run "$BATOND" "$n" -- "$HERE/$SCENARIO.sh"
