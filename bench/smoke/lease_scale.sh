#!/usr/bin/env bash
# bench_lease_scale_smoke: baton-bench lease-scale at a small size (1,000 leases, TTL 10 s,
# renewed every 3 s, 5 s measured) against a 1-member batond it starts itself, so the workload
# does not rot. Checks the JSON: every lease granted, renewed at the rate due, none expired or
# lapsed, all revoked, CPU figures present; then that the leases are really gone (etcdctl).
#   lease_scale.sh BATOND BATON_BENCH
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/../../tests/compat/cluster.sh

if [ "${1:-}" != --inside ]; then
    exec "$cluster" run "$1" 1 -- "$0" --inside "$2"
fi
bench=$2
out=$("$bench" --endpoints "$CLUSTER_ENDPOINTS" --leases 1000 --ttl 10 --renew-ms 3000 \
    --conns 2 --streams 2 --inflight 16 --duration 5 --warmup 1 \
    --server-pids "$(cat "$CLUSTER_DIR/m1.pid")" --json lease-scale) ||
    { echo "FAIL: baton-bench exit $?: $out"; exit 1; }
echo "$out"
printf '%s' "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["workload"] == "lease-scale" and not r["unsupported"], r
assert r["leases"] == 1000 and r["granted"] == 1000 and r["grant_errors"] == 0, r
assert r["measured_s"] > 4.5, r
# 1000 leases every 3 s: 333/s due; allow a wide margin, never a timing bound.
assert r["renewals_per_s"] > 333 * 0.5 and r["renewals_per_s"] < 333 * 1.5, r
assert 0 < r["renewals"] <= r["sent"] + r["leases"], r  # answers to sends before the window
assert r["expired_leases"] == 0 and r["lapsed_leases"] == 0 and r["lost_leases"] == 0 and r["unknown_answers"] == 0, r
assert 0 < r["renew_p50_ms"] <= r["renew_p99_ms"] <= r["renew_max_ms"], r
assert r["server_cpu_s"] > 0 and r["server_us_per_renewal"] > 0, r
assert r["client_cpu_s"] > 0, r
assert r["revoke_total"] == 1000 and r["revoked"] == 1000 and r["revoke_errors"] == 0, r
assert r["revoke_s"] > 0, r
' || { echo "FAIL: bad JSON"; exit 1; }
left=$(ETCDCTL_API=3 etcdctl --endpoints "$CLUSTER_ENDPOINTS" lease list | grep -c '^id' || true)
[ "$left" = 0 ] || { echo "FAIL: $left lease(s) left after the revokes"; exit 1; }
echo "bench_lease_scale_smoke: ok"
