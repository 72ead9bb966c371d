#!/usr/bin/perl
# normalise.pl MAP TRANSCRIPT: print TRANSCRIPT (from etcdctl_scenario.sh) with only what
# legitimately differs between two correct servers replaced by stable placeholders, so the
# reference's and the subject's transcripts can be compared with diff. Everything not named
# below is compared byte for byte: keys, values, revisions, versions of keys, counts, error
# texts, gRPC codes, exit statuses, output formats, the order of events and of results.
#
# The rules, each with its reason (keep this list and the code in step):
#
#  R1  Harness-chosen literals from MAP: client and peer addresses of member i
#      (127.0.0.1:PORT -> <client-i>, <peer-i>), the learner's peer address (<peer-learner>),
#      the scenario's work directory (<workdir>). Why: ports and temp paths are picked at
#      random by cluster.sh / the scenario for each run.
#  R2  Member ids -> <member>: hex ids in `member list` rows (simple and table), "Member ID
#      added to / removed from", "Leadership transferred from ID to ID", the id column of
#      `endpoint status`; decimal ids in "member_id", "leader", "MemberID"; then every other
#      occurrence (hex or decimal) of an id so learned, e.g. in command arguments. Why: etcd
#      derives member ids from peer URLs, cluster token and time, all random per run. (The
#      scenario checks by itself that the ids it uses are consistent: "=== [check]" lines.)
#  R3  Cluster ids -> <cluster>: "cluster_id", "ClusterID", "... to/from cluster ID". Why: a
#      hash of the member ids (R2).
#  R4  Lease ids -> <lease-N>, N in order of first appearance in the transcript: hex ids in
#      "lease ID granted/revoked/keepalived/already expired", the rows of `lease list`, the
#      session-lease suffix of election and lock keys (NAME/ID); decimal ids in "lease", "ID"
#      (lease grant -w json), "id" (timetolive -w json), "Lease" (-w fields); then every other
#      occurrence, hex or decimal. Why: lease ids are generated from the member id and a clock.
#      Numbering (not one placeholder) keeps "the same lease" checkable.
#  R5  Raft terms and indexes: "raft_term", "raftTerm", "RaftTerm", "raftIndex",
#      "raftAppliedIndex", and the term/index/applied-index columns of `endpoint status`. Why:
#      terms count elections, whose number depends on timing; indexes also count
#      internal entries (election no-ops, configuration changes) that are not client-visible.
#  R6  Server versions: "version":"X" in status JSON and the version column of `endpoint
#      status`. Why: the subject is another program with its own version.
#  R7  Database sizes: "dbSize", "dbSizeInUse", the size column of `endpoint status`, "size" in
#      etcdctl's snapshot log lines. Why: storage layout differs between servers and runs.
#  R8  Timings: "took = D" (endpoint health), "took":"D", "took":SECS (snapshot log),
#      timestamps "ts" in etcdctl's JSON log lines (removed), the remaining TTL of a lease
#      ("remaining(Ns)", "ttl":N in timetolive -w json). Why: wall-clock dependent.
#  R9  The random client id in etcdctl's log lines ("endpoint://client-UUID/") -> <uuid>.
#      Why: etcdctl generates it per process.
#  R10 Repeated "lease ID keepalived with TTL(N)" lines in a row collapse to one. Why: how
#      many keep-alives a bounded `lease keep-alive` prints before it is stopped is timing.
#  R11 Row order is ignored (rows sorted) for `member list` (simple and table), `lease list`,
#      every `endpoint ...` and `defrag ...` command (stdout and stderr), the members in
#      ETCD_INITIAL_CLUSTER of `member add`, and the keys attached to a lease ("attached
#      keys([...])", "keys":[...] of `lease timetolive --keys`). Why: etcd orders these by
#      member or lease id (random, R2/R4), by which concurrent health check finishes first,
#      or by iterating a Go map (a lease's keys).
#  R12 In `endpoint status` rows the endpoint becomes <client> (before sorting), and so does
#      the endpoint in the output of `move-leader` (etcdctl sends it to the current leader).
#      Why: which member wins an election is timing; what is kept is the multiset of rows, so
#      "exactly one leader" is still compared.
#  R13 Column padding and border dashes of `-w table` output are collapsed, and so is the
#      padding in "Member ID added to cluster ID" (etcdctl prints both ids with %16x). Why:
#      widths follow the length of ids (R2: ids are printed without leading zeros).
use strict;
use warnings;
no warnings "portable";    # 64-bit ids: hex() above 0xffffffff is fine on our perl

@ARGV == 2 or die "usage: normalise.pl MAP TRANSCRIPT\n";
my ($map_path, $transcript_path) = @ARGV;

# R1: literal substitutions, longest first so one literal never eats part of another.
my @map;
open(my $mf, '<', $map_path) or die "normalise.pl: cannot read $map_path: $!\n";
while (my $l = <$mf>) {
    chomp $l;
    next if $l eq '';
    my ($from, $to) = split /\t/, $l, 2;
    die "normalise.pl: bad map line '$l'\n" unless defined $to && $from ne '';
    push @map, [$from, $to];
}
close $mf;
@map = sort { length($b->[0]) <=> length($a->[0]) } @map;

open(my $tf, '<', $transcript_path) or die "normalise.pl: cannot read $transcript_path: $!\n";
my @lines = <$tf>;
close $tf;
chomp @lines;
for my $l (@lines) {
    for my $m (@map) {
        my ($from, $to) = @$m;
        $l =~ s/\Q$from\E/$to/g;
    }
}

# Pass 1: learn member, cluster and lease ids from the contexts that define them (R2-R4).
my (%kind, @lease_order);    # id (lower-case hex) -> 'member' | 'cluster' | 'lease'
# Ids are keyed by their hex form without leading zeros (etcdctl prints lease ids with %016x
# but member ids with %x).
sub learn_hex {
    my ($k, $hex) = @_;
    $hex = lc $hex;
    $hex =~ s/^0+(?=.)//;
    return if $hex =~ /^0+$/ || exists $kind{$hex};
    $kind{$hex} = $k;
    push @lease_order, $hex if $k eq 'lease';
}
sub learn_dec {
    my ($k, $dec) = @_;
    return if $dec eq '0';
    learn_hex($k, sprintf('%x', $dec));
}
my $in_lease_list = 0;
for my $l (@lines) {
    if ($l =~ /^=== /) {
        $in_lease_list = 0;
    }
    learn_hex('member', $1) if $l =~ /^([0-9a-f]+), (?:un)?started, /;
    learn_hex('member', $1) if $l =~ /^\| ([0-9a-f]+) \| +(?:un)?started \|/;
    if ($l =~ /^Member +([0-9a-f]+) (?:added to|removed from|updated in|promoted in) cluster +([0-9a-f]+)$/) {
        learn_hex('member', $1);
        learn_hex('cluster', $2);
    }
    if ($l =~ /^Leadership transferred from ([0-9a-f]+) to ([0-9a-f]+)$/) {
        learn_hex('member', $1);
        learn_hex('member', $2);
    }
    learn_hex('member', $1) if $l =~ /^\S+, ([0-9a-f]+), [^,]+, [^,]+, (?:true|false), /;
    learn_dec('member', $1) while $l =~ /"(?:member_id|leader)":(\d+)/g;
    learn_dec('member', $1) if $l =~ /^"MemberID" : (\d+)$/;
    learn_dec('cluster', $1) while $l =~ /"cluster_id":(\d+)/g;
    learn_dec('cluster', $1) if $l =~ /^"ClusterID" : (\d+)$/;
    learn_hex('lease', $1)
        if $l =~ /^lease ([0-9a-f]+) (?:granted|revoked|keepalived|already expired)/;
    learn_hex('lease', $1) if $in_lease_list && $l =~ /^([0-9a-f]+)$/;
    $in_lease_list = 1 if $l =~ /^found \d+ leases$/;
    learn_hex('lease', $1) if $l =~ m{^[\w.-]+/([0-9a-f]{8,16})$};
    learn_dec('lease', $1) while $l =~ /"(?:lease|ID|id)":(\d+)/g;
    learn_dec('lease', $1) if $l =~ /^"Lease" : (\d+)$/;
}

# Every learned id, hex and decimal, maps to its placeholder.
my %subst;
my %lease_no;
my $n = 0;
$lease_no{$_} = ++$n for @lease_order;
for my $hex (keys %kind) {
    my $k = $kind{$hex};
    my $to = $k eq 'lease' ? "<lease-$lease_no{$hex}>" : "<$k>";
    $subst{$hex} = $to;
    $subst{sprintf('%016x', hex($hex))} = $to;
    $subst{sprintf('%u', hex($hex))} = $to;
}
my $id_re;
if (%subst) {
    my $alt = join '|', map { quotemeta } sort { length($b) <=> length($a) } keys %subst;
    $id_re = qr/(?<![0-9A-Za-z])($alt)(?![0-9A-Za-z])/;
}

# Pass 2: per-line rules.
for my $l (@lines) {
    $l =~ s/$id_re/$subst{$1}/g if $id_re;
    # R5
    $l =~ s/"(raft_term|raftTerm)":\d+/"$1":<term>/g;
    $l =~ s/"(raftIndex|raftAppliedIndex)":\d+/"$1":<index>/g;
    $l =~ s/^"RaftTerm" : \d+$/"RaftTerm" : <term>/;
    # R6, R7
    $l =~ s/"version":"[^"]*"/"version":"<version>"/g;
    $l =~ s/"(dbSize|dbSizeInUse)":\d+/"$1":<size>/g;
    $l =~ s/"size":"[^"]*"/"size":"<size>"/g;
    # R8
    $l =~ s/took = [0-9.]+[a-zµ]*s/took = <duration>/g;
    $l =~ s/"took":"[^"]*"/"took":"<duration>"/g;
    $l =~ s/,"took":[0-9.e+-]+//g;
    $l =~ s/"ts":(?:"[^"]*"|[0-9.e+]+),//g;
    $l =~ s/remaining\(-?\d+s\)/remaining(<ttl>s)/g;
    $l =~ s/"ttl":-?\d+/"ttl":<ttl>/g;
    # R9
    $l =~ s{endpoint://client-[0-9a-f-]+/}{endpoint://client-<uuid>/}g;
    # R11 (ETCD_INITIAL_CLUSTER)
    if ($l =~ /^ETCD_INITIAL_CLUSTER="(.*)"$/) {
        $l = 'ETCD_INITIAL_CLUSTER="' . join(',', sort split(/,/, $1)) . '"';
    }
    if ($l =~ /attached keys\(\[(.*)\]\)/) {
        my $sorted = join ' ', sort split(/ /, $1);
        $l =~ s/attached keys\(\[.*\]\)/attached keys([$sorted])/;
    }
    if ($l =~ /"keys":\[([^\]]*)\]/) {
        my $sorted = join ',', sort split(/,/, $1);
        $l =~ s/"keys":\[[^\]]*\]/"keys":[$sorted]/;
    }
    # R13
    $l =~ s/^Member +<member> (\S+ \S+) cluster +<cluster>$/Member <member> $1 cluster <cluster>/;
    if ($l =~ /^[+|]/) {
        $l =~ s/ +/ /g;
        $l =~ s/-+/-/g;
    }
}

# Pass 3: per-command rules (R5-R7 and R12 for endpoint status rows, R10, R11), then print.
# A block is a header line and its output up to the next header.
my @out;
my ($cmd, @block) = ('');
sub flush_block {
    return unless @block;
    my $sort = $cmd =~ /(?:^|\) )(?:member list|lease list|endpoint |defrag)/;
    my @sect;    # sections: stdout, '--- stderr', stderr, '--- exit'
    my @b = @block;
    @block = ();
    my $head = shift @b;
    if ($cmd =~ /(?:^|\) )endpoint status/) {
        for (@b) {
            s/^\S+, <member>, [^,]+, [^,]+, (true|false), (true|false), \d+, \d+, \d+, /<client>, <member>, <version>, <size>, $1, $2, <term>, <index>, <index>, /;
        }
    }
    if ($cmd =~ /^move-leader/) {
        s/<client-\d+>/<client>/g for @b;
    }
    if ($cmd =~ /lease keep-alive/) {
        my @c;
        for (@b) {
            push @c, $_ unless /keepalived with TTL/ && @c && $c[-1] eq $_;
        }
        @b = @c;
    }
    if ($sort) {
        # Sort each run of rows between the markers; keep a table's header row in place.
        my (@res, @run);
        my $flush = sub {
            my @r = @run;
            @run = ();
            my @keep;
            push @keep, shift @r while @r && ($r[0] =~ /^\+/ || $r[0] =~ /^\| ID /
                || $r[0] =~ /^found \d+ leases$/);
            my @tail;
            unshift @tail, pop @r while @r && $r[-1] =~ /^\+/;
            push @res, @keep, (sort @r), @tail;
        };
        for (@b) {
            if (/^--- (?:stderr|exit )/) {
                $flush->();
                push @res, $_;
            } else {
                push @run, $_;
            }
        }
        $flush->();
        @b = @res;
    }
    push @out, $head, @b;
}
for my $l (@lines) {
    if ($l =~ /^=== \[[^\]]*\] (.*)$/) {
        flush_block();
        $cmd = $1;
    }
    push @block, $l;
}
flush_block();
print "$_\n" for @out;
