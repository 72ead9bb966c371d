#!/usr/bin/env bash
# scenario.sh OUT_DIR: run inside `cluster.sh run` (its variables describe the cluster). Drives
# the Cluster and Maintenance services with etcdctl 3.4 and writes OUT_DIR/transcript, already
# normalised for what legitimately differs between etcd and batond: member ids, ports, sizes,
# hashes, raft indexes, versions, latencies. What must be equal is kept: texts, errors, exit
# codes, which member is leader/learner, whether the members' hashes agree.
set -uo pipefail
OUT=$1
mkdir -p "$OUT"
export ETCDCTL_API=3
E=$CLUSTER_ENDPOINTS
T=$OUT/transcript
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3 # not a pyenv shim: those take seconds on a loaded machine
RAW=$OUT/raw
: >"$RAW"
: >"$OUT/map"
for i in $(seq 1 "$CLUSTER_SIZE"); do
    cp="CLUSTER_CLIENT_PORT_$i"
    pp="CLUSTER_PEER_PORT_$i"
    printf '%s\t<client-%s>\n%s\t<peer-%s>\n' "${!cp}" "$i" "${!pp}" "$i" >>"$OUT/map"
done
SPARE1=$((CLUSTER_PEER_PORT_1 + 7))
SPARE2=$((CLUSTER_PEER_PORT_1 + 9))
printf '%s\t<spare-1>\n%s\t<spare-2>\n' "$SPARE1" "$SPARE2" >>"$OUT/map"
printf 'DIR:%s\t<out>\n' "$(cd "$OUT" && pwd)" >>"$OUT/map"

# run [--sort] ARGS...: one etcdctl command into the transcript (stdout normalised, optionally
# sorted; stderr without the client's JSON log lines; exit status).
run() {
    local tag=""
    if [ "$1" = --sort ]; then
        tag="[sort] "
        shift
    fi
    echo "=== $tag$*" | sed "s|$E|<all>|g" >>"$RAW"
    timeout 20 etcdctl --dial-timeout=3s --command-timeout=10s "$@" >>"$RAW" 2>"$OUT/err"
    local rc=$?
    echo "--- stderr" >>"$RAW"
    grep -v '^{"level"' "$OUT/err" >>"$RAW"
    echo "--- exit $rc" >>"$RAW"
    return $rc
}

check() { echo "=== [check] $*" >>"$RAW"; }

run --sort --endpoints="$E" member list
run --endpoints="$E" member list -w json
run --endpoints="$E" put k1 v1
run --endpoints="$E" put k2 v2
run --sort --endpoints="$E" endpoint status --cluster -w table
run --sort --endpoints="$E" endpoint health --cluster
run --endpoints="$E" endpoint hashkv --cluster -w json
hashes=$(etcdctl --endpoints="$E" endpoint hashkv --cluster -w json 2>/dev/null |
    $PY -c 'import json,sys; print(len({x["HashKV"]["hash"] for x in json.load(sys.stdin)}))')
check "distinct hashkv values over the members: $hashes"
run --endpoints="$E" alarm list
run --sort --endpoints="$E" defrag --cluster
run --endpoints="$E" get k --prefix
run --endpoints="$E" member add spare1 --learner --peer-urls="http://127.0.0.1:$SPARE1"
run --sort --endpoints="$E" member list
LID=$(etcdctl --endpoints="$E" member list | grep unstarted | cut -d, -f1)
run --endpoints="$E" member promote "$LID"
run --endpoints="$E" member add spare2 --learner --peer-urls="http://127.0.0.1:$SPARE2"
# etcd derives a new member's id from its peer URLs and the current second: a duplicate add in
# the same second as the first answers "member ID already exist" instead of "Peer URLs already
# exists". Wait for the next second so the answer does not depend on timing.
sleep 1.1
run --endpoints="$E" member add spare2 --peer-urls="http://127.0.0.1:$SPARE1"
run --endpoints="$E" member remove "$LID"
run --endpoints="$E" member remove "$LID"
run --endpoints="$E" member promote "$(printf %x $((0x${LID} ^ 1)))"
run --sort --endpoints="$E" member list
# The leader and the other members, from endpoint status.
etcdctl --endpoints="$E" endpoint status -w json >"$OUT/status.json" 2>/dev/null
LEADER_EP=$($PY -c 'import json,sys; d=json.load(open(sys.argv[1]))
print([x["Endpoint"] for x in d if x["Status"]["leader"]==x["Status"]["header"]["member_id"]][0])' "$OUT/status.json")
FOLLOWER=$($PY -c 'import json,sys; d=json.load(open(sys.argv[1]))
f=[x for x in d if x["Status"]["leader"]!=x["Status"]["header"]["member_id"]]
print("%x %s" % (f[0]["Status"]["header"]["member_id"], f[0]["Endpoint"]) if f else "")' "$OUT/status.json")
# Which member leads is not deterministic: name the leader and the target by role.
printf 'ROLE:%s\t<leader>\n' "$LEADER_EP" >>"$OUT/map"
[ -n "$FOLLOWER" ] && printf 'ROLE:%s\t<target>\n' "${FOLLOWER#* }" >>"$OUT/map"
if [ -n "$FOLLOWER" ]; then
    run --endpoints="$LEADER_EP" move-leader "${FOLLOWER%% *}"
    check "leader after move-leader is the target: $(etcdctl --endpoints="${FOLLOWER#* }" endpoint status -w json 2>/dev/null |
        $PY -c 'import json,sys; x=json.load(sys.stdin)[0]["Status"]; print(x["leader"]==x["header"]["member_id"])')"
    run --endpoints="$LEADER_EP" move-leader "${FOLLOWER%% *}"
else
    run --endpoints="$LEADER_EP" move-leader 1234
fi
run --endpoints="$E" put k3 v3
rm -f "$OUT/snap.db"
run --endpoints="$(echo "$E" | cut -d, -f1)" snapshot save "$OUT/snap.db"
check "snapshot size is 32 mod 512: $(($(stat -c %s "$OUT/snap.db") % 512 == 32))"
$PY "$HERE/normalise.py" "$OUT/map" <"$RAW" >"$OUT/transcript"
