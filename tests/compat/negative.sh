#!/usr/bin/env bash
# negative.sh SERVER REF_DIR WORK_DIR: proves that the etcdctl comparison can fail, and that
# the normaliser hides only what it claims to.
#
# It takes a real reference transcript (REF_DIR, written by compat_etcdctl_1; if that is
# missing or incomplete, it runs the scenario against a 1-member cluster of SERVER itself) and
#   - compares it with itself: must be identical;
#   - compares it with a copy where only legitimately varying things were changed (member,
#     cluster and lease ids, ports, raft terms and indexes, sizes, timings, row order):
#     must be identical, or the normaliser is too weak and the real comparison would be flaky;
#   - compares it with copies that each carry one real difference (a value, a revision, an
#     exit status, an error text, a gRPC code, a missing or extra line, a swapped lease, ...):
#     every one must be reported, or the normaliser hides too much.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# = 3 ] || {
    echo "usage: $0 SERVER REF_DIR WORK_DIR" >&2
    exit 2
}
SERVER=$1
REF=$2
WORK=$3
rm -rf "$WORK"
mkdir -p "$WORK"
. "$HERE/../harness/checks.sh"
bad() { fail "$@"; }

if [ ! -s "$REF/count" ] || [ ! -s "$REF/transcript" ] || [ ! -f "$REF/map" ]; then
    echo "negative: no complete reference transcript in $REF; running the scenario on $SERVER"
    REF=$WORK/fresh
    "$HERE/cluster.sh" run "$SERVER" 1 -- bash -c '"$0" "$CLUSTER_DIR" "$1"' \
        "$HERE/etcdctl_scenario.sh" "$REF" >"$WORK/fresh.log" 2>&1 || {
        cat "$WORK/fresh.log"
        echo "negative: could not produce a reference transcript"
        echo "0 passed, 1 failed"
        exit 1
    }
fi

base=$WORK/base
mkdir -p "$base"
cp "$REF/transcript" "$REF/map" "$base/"

# variant NAME PERL: a copy of the base transcript (and map) rewritten by PERL (run with
# perl -0pi, so $_ is the whole file; MAP is rewritten only when the script touches it).
variant() {
    local name=$1 prog=$2
    mkdir -p "$WORK/$name"
    cp "$base/transcript" "$base/map" "$WORK/$name/"
    perl -0pi -e "$prog" "$WORK/$name/transcript" || return 1
    if cmp -s "$base/transcript" "$WORK/$name/transcript"; then
        echo "negative: mutation '$name' changed nothing (the scenario's output changed?)"
        return 1
    fi
}

# 1. Identity.
if "$HERE/compare.sh" diff "$base" "$base" >"$WORK/self.out"; then
    ok "a transcript equals itself ($(grep -o '[0-9]* commands' "$WORK/self.out"))"
else
    bad "a transcript differs from itself"
    cat "$WORK/self.out"
fi

# 2. Legitimate differences only: must still compare equal.
benign='
  # Member, cluster and lease ids: every id, hex (any zero padding) and decimal, XOR a constant.
  my %ids;
  $ids{lc $1} = 1 while /^([0-9a-f]+), (?:un)?started, /mg;
  $ids{lc $1} = 1 while /^lease ([0-9a-f]+) granted/mg;
  $ids{lc $1} = 1 while /^Member ([0-9a-f]+) added to cluster/mg;
  $ids{lc $1} = 1 while /to cluster ([0-9a-f]+)$/mg;
  $ids{sprintf("%x", $1)} = 1 while /"(?:cluster_id|member_id|leader|lease|ID|id)":(\d+)/g;
  $ids{lc $1} = 1 while m{^\w+/([0-9a-f]{8,16})$}mg;
  for my $h (keys %ids) {
      my $v = hex($h); my $w = $v ^ 0x5a5a5a5a;
      my ($hx, $px, $dv) = (sprintf("%x", $w), sprintf("%016x", $w), sprintf("%u", $w));
      my $p16 = sprintf("%016x", $v); my $d = sprintf("%u", $v); $h =~ s/^0+//;
      s/(?<![0-9a-zA-Z])$p16(?![0-9a-zA-Z])/$px/g;
      s/(?<![0-9a-zA-Z])$h(?![0-9a-zA-Z])/$hx/g;
      s/(?<![0-9a-zA-Z])$d(?![0-9a-zA-Z])/$dv/g;
  }
  s/"raft_term":(\d+)/"\"raft_term\":".($1+7)/ge;
  s/"raftIndex":(\d+)/"\"raftIndex\":".($1+70)/ge;
  s/"raftAppliedIndex":(\d+)/"\"raftAppliedIndex\":".($1+70)/ge;
  s/"dbSize":(\d+)/"\"dbSize\":".($1+4096)/ge;
  s/"version":"3\.4\.23"/"version":"0.1.0"/g;
  s/^(\S+, [0-9a-f]+, )3\.4\.23, \d+ kB, (true|false), (true|false), (\d+), (\d+), (\d+)/$1."0.1.0, 99 kB, $2, $3, ".($4+7).", ".($5+70).", ".($6+70)/mge;
  s/took = [0-9.]+[a-z]*s/took = 123.4ms/g;
  s/"took":"[^"]*"/"took":"9.9s"/g;
  s/"ts":"[^"]*"/"ts":"2001-01-01T00:00:00.000Z"/g;
  s/client-[0-9a-f]{8}-[0-9a-f-]+\//client-00000000-1111-2222-3333-444444444444\//g;
  s/remaining\(\d+s\)/remaining(1s)/g;
  s/attached keys\(\[(\S+) (\S+)\]\)/attached keys([$2 $1])/;
  s/(lease \S+ keepalived with TTL\(\d+\)\n)/$1$1/;
  # Row order of member list (swap the first two rows of a list with several rows).
  s/^(=== \[\d+\] member list\n)([^\n]+\n)([0-9a-f][^\n]+\n)/$1$3$2/m;
'
if variant benign "$benign"; then
    # Ports: move every harness-chosen port by 3 in the transcript and its map alike.
    perl -pi -e 's/127\.0\.0\.1:(\d+)/"127.0.0.1:".($1+3)/ge' "$WORK/benign/transcript" \
        "$WORK/benign/map"
    if "$HERE/compare.sh" diff "$base" "$WORK/benign" >"$WORK/benign.out"; then
        ok "ids, ports, terms, indexes, sizes, versions, timings and row order are normalised"
    else
        bad "a transcript with only legitimate differences was reported as different"
        cat "$WORK/benign.out"
    fi
else
    bad "could not build the benign variant"
fi

# 3. Real differences: each must be reported, and the diff must show the changed line.
# NAME|PERL (first match only)|TEXT the diff must contain
harmful=(
    'value|s/^bar2$/bar2-changed/m|bar2-changed'
    'revision|s/"revision":8,/"revision":9,/|"revision":9'
    'exit-status|s/^--- exit 1$/--- exit 0/m|--- exit 0'
    'error-text|s/required revision has been compacted/required revision was compacted/|was compacted'
    'grpc-code|s/code = OutOfRange/code = Unknown/|code = Unknown'
    'missing-line|s/^DELETE\n//m|-DELETE'
    'extra-line|s/^OK\n/OK\nsurprise\n/m|+surprise'
    'ttl|s/TTL\(60s\)/TTL(61s)/|TTL(61s)'
    'learner-flag|s/^([0-9a-f]+, started, m1, .*), false$/$1, true/m|true'
    'watch-order|s/^(PUT\nw\/a\n1\n)(PUT\nw\/b\n2\n)/$2$1/m|w/b'
    'missing-command|s/=== \[\d+\] put final done.*\z//s|final done'
    'check|s/^(=== \[check\] snapshot file is non-empty\n)yes$/${1}no/m|+no'
    'lease-swap|s/("key":"bC9i"[^}]*"lease":)(\d+)/$1 . "1" . $2/e|lease-'
    'key-order|s/^(foo1\nbar1-v2\n)(foo2\nbar2\n)/$2$1/m|foo'
)
for h in "${harmful[@]}"; do
    IFS='|' read -r name prog want <<<"$h"
    if ! variant "$name" "$prog"; then
        bad "mutation '$name' could not be applied"
        continue
    fi
    if "$HERE/compare.sh" diff "$base" "$WORK/$name" >"$WORK/$name.out"; then
        bad "mutation '$name' was NOT detected"
    elif ! grep -qF -- "$want" "$WORK/$name.out"; then
        bad "mutation '$name' failed the comparison but the diff does not show '$want'"
        head -n 30 "$WORK/$name.out"
    else
        ok "mutation '$name' detected"
    fi
done

echo "negative: one mutated diff, for the record:"
sed -n '1,12p' "$WORK/value.out" 2>/dev/null
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
