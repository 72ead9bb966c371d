#!/usr/bin/env bash
# etcd3_watch_lease.sh SERVER: run etcd3_watch_lease.js (npm `etcd3`) against a 1-member
# cluster of SERVER.
#
# The npm package is installed once into a cache outside the repository,
# BATON_NPM_CACHE (default ~/.cache/baton/npm-compat), with `npm install --prefix`, and reused
# from there; no network is needed once it is present. If it is missing and cannot be
# installed (offline machine), the test fails and says so.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER=${1:?usage: etcd3_watch_lease.sh SERVER}
ETCD3_VERSION=1.1.2
CACHE=${BATON_NPM_CACHE:-$HOME/.cache/baton/npm-compat}

command -v node >/dev/null || {
    echo "etcd3: node is not installed (scripts/deps.sh installs nodejs and npm)" >&2
    exit 1
}
if [ ! -f "$CACHE/node_modules/etcd3/package.json" ] ||
    ! grep -q "\"version\": \"$ETCD3_VERSION\"" "$CACHE/node_modules/etcd3/package.json"; then
    command -v npm >/dev/null || {
        echo "etcd3: npm is not installed and $CACHE has no etcd3@$ETCD3_VERSION" >&2
        exit 1
    }
    echo "etcd3: installing etcd3@$ETCD3_VERSION into $CACHE (once)"
    mkdir -p "$CACHE"
    # A lock, so that two tests starting together do not install over each other.
    if ! (
        flock -w 300 9 || exit 1
        [ -f "$CACHE/node_modules/etcd3/package.json" ] &&
            grep -q "\"version\": \"$ETCD3_VERSION\"" "$CACHE/node_modules/etcd3/package.json" &&
            exit 0
        timeout 240 npm install --prefix "$CACHE" --no-audit --no-fund --loglevel=error \
            "etcd3@$ETCD3_VERSION"
    ) 9>"$CACHE/.lock"; then
        echo "etcd3: FAILED to install the npm package etcd3@$ETCD3_VERSION into $CACHE." >&2
        echo "etcd3: this test needs it once (npm registry access); install it by hand with" >&2
        echo "etcd3:   npm install --prefix $CACHE etcd3@$ETCD3_VERSION" >&2
        exit 1
    fi
fi

export NODE_PATH=$CACHE/node_modules
exec "$HERE/cluster.sh" run "$SERVER" 1 -- node "$HERE/etcd3_watch_lease.js"
