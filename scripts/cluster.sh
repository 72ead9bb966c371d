#!/usr/bin/env bash
# A three-member batond cluster on loopback, in the background (like etcd's Procfile):
#   scripts/cluster.sh start [BATOND]   clients on 127.0.0.1:12379, 22379, 32379
#   scripts/cluster.sh stop
# Data and logs live in build/cluster/; PIDs in build/cluster/*.pid.
set -eu
cd "$(dirname "$0")/.."
dir=build/cluster
bin=${2:-build/release/src/cmd/batond/batond}
cluster="m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"

case "${1:-}" in
start)
  mkdir -p "$dir"
  for i in 1 2 3; do
    if [ -f "$dir/m$i.pid" ] && kill -0 "$(cat "$dir/m$i.pid")" 2>/dev/null; then
      echo "m$i is running already (pid $(cat "$dir/m$i.pid"))"; continue
    fi
    "$bin" --name "m$i" --data-dir "$dir/m$i.baton" \
      --listen-client-urls "http://127.0.0.1:${i}2379" --advertise-client-urls "http://127.0.0.1:${i}2379" \
      --listen-peer-urls "http://127.0.0.1:${i}2380" --initial-advertise-peer-urls "http://127.0.0.1:${i}2380" \
      --listen-metrics-urls "http://127.0.0.1:${i}2381" \
      --initial-cluster "$cluster" --initial-cluster-token baton-local \
      >"$dir/m$i.log" 2>&1 &
    echo $! >"$dir/m$i.pid"
  done
  sleep 1
  echo "cluster started; endpoints: 127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379"
  echo "  ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379 member list"
  echo "logs: $dir/m*.log   stop: make cluster-stop"
  ;;
stop)
  for i in 1 2 3; do
    f="$dir/m$i.pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$f"
  done
  echo "cluster stopped (data kept in $dir; rm -rf it for a fresh start)"
  ;;
*)
  echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
