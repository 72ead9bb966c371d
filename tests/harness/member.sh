# member.sh: ports for one member and an etcdctl aimed at it, sourced by the single-member shell
# tests. port() picks a random port below the kernel's ephemeral range (so a restarted member
# never finds its port taken by someone's outgoing connection); CP, PP and MP are the client,
# peer and metrics ports, EP the client endpoint; ctl runs etcdctl against EP.
port() { echo $((20000 + (RANDOM * 32768 + RANDOM) % 12000)); }
CP=$(port)
PP=$(port)
while [ "$PP" = "$CP" ]; do PP=$(port); done
MP=$(port)
while [ "$MP" = "$CP" ] || [ "$MP" = "$PP" ]; do MP=$(port); done
EP=127.0.0.1:$CP
ctl() { etcdctl --endpoints=$EP --dial-timeout=2s --command-timeout=10s "$@"; }
