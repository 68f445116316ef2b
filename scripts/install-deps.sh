#!/bin/sh
# Install the Debian packages the build and the tests need, only those missing.
# Uses sudo when not root. Safe to run again and again.
# Arguments name more packages that one target alone needs (scripts/fuzz.sh:
# clang and its libFuzzer runtime), installed the same way.
set -eu
PKGS="build-essential cmake pkg-config libmicrohttpd-dev libhiredis-dev uuid-dev libjansson-dev \
libinih-dev libcmocka-dev redis-server wrk curl iproute2 gnuplot-nox python3 $*"
missing=""
# OpenSSL's libcrypto: HMAC-SHA256 and nonces of the rpc/ handshake and frame MAC;
# libssl: optional TLS on rpc/; the openssl command makes the tests' throwaway CA
PKGS="$PKGS libssl-dev openssl"
# promtool (Debian's prometheus package): the tests check /metrics with
# `promtool check metrics`
PKGS="$PKGS prometheus"
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
