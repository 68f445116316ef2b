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
# the dashboard test: headless Chromium driven from Node (playwright-core, below);
# the API contract test: jsonschema and yaml; promtool checks the alert rules
PKGS="$PKGS chromium python3-jsonschema python3-yaml prometheus"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
# npm packages of the browser test, pinned by its package-lock.json, into
# tests/browser/node_modules (never global)
BROWSER="$(dirname "$0")/../tests/browser"
if [ ! -d "$BROWSER/node_modules/playwright-core" ]; then
    echo "installing: npm packages of tests/browser"
    npm ci --prefix "$BROWSER" --no-audit --no-fund --loglevel=error
fi
