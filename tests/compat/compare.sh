#!/usr/bin/env bash
# compare.sh: the etcdctl scenario against a reference server and a subject server, compared.
#
#   compare.sh run SIZE SUBJECT REFERENCE OUT_DIR
#       Start a SIZE-member cluster of REFERENCE (etcd) and one of SUBJECT (batond, or etcd to
#       calibrate) side by side, run etcdctl_scenario.sh against each (in parallel: the
#       scenario mostly waits), stop both, then `diff` the two transcripts. OUT_DIR keeps
#       reference/ and subject/ (raw transcripts, maps, normalised copies) for inspection.
#   compare.sh diff REF_DIR SUBJECT_DIR
#       Normalise both transcripts (normalise.pl, whose header lists every rule) and compare
#       them. Exit 0 and print how many commands were compared when they are identical;
#       otherwise print a unified diff of the normalised transcripts and exit 1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# Twice etcd's default heartbeat and election timeout, for both sides: on a loaded machine a
# spurious election in the middle of the scenario would fail a command ("leader changed")
# and read as a difference. (It also sets the minimum lease TTL both servers must grant.)
export CLUSTER_HEARTBEAT_MS=${CLUSTER_HEARTBEAT_MS:-200}
export CLUSTER_ELECTION_MS=${CLUSTER_ELECTION_MS:-2000}

die() {
    echo "compare.sh: $*" >&2
    exit 2
}

cmd_diff() {
    local ref=$1 sub=$2 side
    for side in "$ref" "$sub"; do
        [ -s "$side/transcript" ] || die "no transcript in $side"
        [ -f "$side/map" ] || die "no map in $side"
        # Reuse a normalised copy that is newer than its inputs and the normaliser.
        if [ "$side/normalised" -nt "$side/transcript" ] && [ "$side/normalised" -nt "$side/map" ] &&
            [ "$side/normalised" -nt "$HERE/normalise.pl" ]; then
            continue
        fi
        "$HERE/normalise.pl" "$side/map" "$side/transcript" >"$side/normalised.tmp" ||
            die "normalise.pl failed on $side"
        mv "$side/normalised.tmp" "$side/normalised"
    done
    local nref nsub
    nref=$(grep -c '^=== \[[0-9]' "$ref/normalised" || true)
    nsub=$(grep -c '^=== \[[0-9]' "$sub/normalised" || true)
    if diff -u --label "reference ($ref)" --label "subject ($sub)" \
        "$ref/normalised" "$sub/normalised" >"$sub/diff"; then
        echo "compare: $nref commands compared, outputs identical after normalisation"
        return 0
    fi
    echo "compare: transcripts DIFFER (reference ran $nref commands, subject $nsub)."
    echo "compare: lines starting with - are the reference's, + the subject's:"
    head -n 400 "$sub/diff"
    [ "$(wc -l <"$sub/diff")" -le 400 ] || echo "compare: (diff truncated; full diff in $sub/diff)"
    return 1
}

# One side: a cluster of SERVER in a temp dir, the scenario into OUT, the cluster stopped.
one_side() {
    local size=$1 server=$2 out=$3 cdir=$4
    "$HERE/cluster.sh" up "$server" "$size" "$cdir" >"$out.cluster.log" 2>&1 || {
        echo "compare: cannot start $size x $server:" >&2
        cat "$out.cluster.log" >&2
        return 1
    }
    local rc=0
    "$HERE/etcdctl_scenario.sh" "$cdir" "$out" || rc=$?
    "$HERE/cluster.sh" down "$cdir"
    return $rc
}

cmd_run() {
    local size=$1 subject=$2 reference=$3 out=$4
    [ -x "$subject" ] || die "subject server '$subject' is not executable"
    [ -x "$reference" ] || die "reference server '$reference' is not executable"
    command -v "${ETCDCTL:-etcdctl}" >/dev/null || die "etcdctl not found (Debian: etcd-client)"
    rm -rf "$out/reference" "$out/subject"
    mkdir -p "$out"
    TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/baton-compat.XXXXXX")
    local tmp=$TMP_DIR
    # Whatever happens, both sides (each its own process group) are stopped, both clusters
    # are stopped and the temp dir is removed.
    SIDE_PIDS=()
    # shellcheck disable=SC2154
    trap 'for p in "${SIDE_PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
          "$HERE/cluster.sh" down "$TMP_DIR/ref" 2>/dev/null
          "$HERE/cluster.sh" down "$TMP_DIR/sub" 2>/dev/null; rm -rf "$TMP_DIR"' EXIT
    trap 'exit 130' INT TERM
    local t0=$SECONDS rcr=0 rcs=0
    setsid "$0" side "$size" "$reference" "$out/reference" "$tmp/ref" &
    local pr=$!
    SIDE_PIDS+=("$pr")
    setsid "$0" side "$size" "$subject" "$out/subject" "$tmp/sub" &
    local ps=$!
    SIDE_PIDS+=("$ps")
    wait $pr || rcr=$?
    wait $ps || rcs=$?
    SIDE_PIDS=()
    echo "compare: scenario ran on $size x $reference (reference) and $size x $subject" \
        "(subject) in $((SECONDS - t0)) s"
    [ $rcr = 0 ] || die "the scenario failed on the reference"
    [ $rcs = 0 ] || die "the scenario failed on the subject"
    cmd_diff "$out/reference" "$out/subject"
}

sub=${1:-}
[ $# -gt 0 ] && shift
case "$sub" in
run) [ $# = 4 ] || die "usage: run SIZE SUBJECT REFERENCE OUT_DIR"; cmd_run "$@" ;;
diff) [ $# = 2 ] || die "usage: diff REF_DIR SUBJECT_DIR"; cmd_diff "$@" ;;
side) [ $# = 4 ] || die "usage: side SIZE SERVER OUT CLUSTER_DIR"; one_side "$@" ;;
*) die "unknown subcommand '$sub' (run, diff; side is internal)" ;;
esac
