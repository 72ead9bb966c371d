#!/usr/bin/env bash
# Installs the Debian packages baton builds and tests with, only when one is missing.
# Idempotent: a machine that has everything runs no apt command at all.
#   scripts/deps.sh          build + test dependencies
#   scripts/deps.sh --build  only what building batond needs
set -eu

build_pkgs=(build-essential cmake pkg-config libuv1-dev libnghttp2-dev libprotobuf-c-dev
            protobuf-c-compiler liblmdb-dev libssl-dev libmicrohttpd-dev)
test_pkgs=(clang libclang-rt-14-dev etcd-server etcd-client iproute2 iptables procps psmisc
           python3 curl)

pkgs=("${build_pkgs[@]}")
[ "${1:-}" = "--build" ] || pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || missing+=("$p")
done
# Node.js and npm: any installation will do (some images ship nodesource's nodejs, which
# bundles npm and conflicts with Debian's npm package).
if [ "${1:-}" != "--build" ] && ! command -v npm >/dev/null 2>&1; then
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  missing+=(npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's etcd-server package starts a system etcd on 2379/2380; baton's tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
fi
exit 0
