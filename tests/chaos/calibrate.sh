#!/usr/bin/env bash
# Calibration: proves the chaos harness can fail. Against the same cluster, workers pinned to
# each member read serializably (member-local) while the nemesis cuts the leader off or pauses
# it, so a cut-off member keeps answering reads with old values while the majority moves on.
# The lock clients check their lock the same broken way, so fencing violations usually show up
# too (reported, not required: they need a holder on the cut-off member at the right time).
# The checker must report stale reads (nonlinearizable registers); this script exits 0 only
# then, and 1 when the harness misses them. Other arguments go to run.sh (--server, --checker,
# --seed, --duration).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /tmp/chaos-calibrate.XXXXXX)
log="$out/run.txt"
"$HERE/run.sh" --duration 40 --seed 7 --nodes 3 --workload reg,lock --nemesis partition-leader \
    --serializable-reads --out "$out" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" = 77 ] && exit 77
if [ "$rc" = 1 ] && grep -q '^anomaly kind=nonlinearizable' "$log" &&
    grep -q 'result=invalid$' "$log" && ls "$out"/*/failing-key.jsonl >/dev/null 2>&1; then
    echo "calibration: stale reads caught: $(grep -c '^anomaly kind=nonlinearizable' "$log") keys nonlinearizable;" \
        "fencing violations by the serializable lock client: $(grep -c '^anomaly kind=fence' "$log") (not required);" \
        "first lines of the failing key ($(ls "$out"/*/failing-key.jsonl)):"
    head -3 "$out"/*/failing-key.jsonl
    rm -rf "$out"
    echo "calibration: PASS (the harness fails when it must)"
    exit 0
fi
echo "calibration: FAIL: run.sh exited $rc and the checker did not report stale reads; kept $out" >&2
exit 1
