#!/bin/sh
# The Debian package, for real on this machine: build it with CPack from the
# build directory, check its units with systemd-analyze verify, install it
# with dpkg -i, start the installed gateway as the service user with its
# unit's ExecStart line (no systemd runs here), buy once over HTTP, stop it
# (SIGTERM, exit 0), then purge the package and check that nothing of it is
# left: the machine as it was.
#
# Needs root (dpkg). Skipped (77) when not root, or when a seckill-gateway
# package is already installed (an operator's: not ours to replace).
# usage: package_test.sh BUILD_DIR
set -eu
build=$(cd "$1" && pwd)
unit_dir=/lib/systemd/system
state_dir=/var/lib/seckill-gateway

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: dpkg -i needs root"
    exit 77
fi
for tool in cpack dpkg dpkg-deb systemd-analyze setpriv flock curl; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool missing (scripts/install-deps.sh)"; exit 1; }
done

# one run at a time on this machine (several build trees may test at once)
exec 9>/run/lock/seckill-gateway-package-test.lock
flock -w 900 9 || { echo "FAIL: another package test holds the lock"; exit 1; }

if dpkg-query -W -f='${Status}' seckill-gateway 2>/dev/null | grep -q installed; then
    echo "SKIP: a seckill-gateway package is installed already"
    exit 77
fi
user_existed=0
getent passwd seckill >/dev/null && user_existed=1
group_existed=0
getent group seckill >/dev/null && group_existed=1

tmp=$(mktemp -d /tmp/seckill-pkg-XXXXXX)
chmod 755 "$tmp" # the service user writes nothing here, but reads its way through
gw_pid=""
cleanup() {
    set +e
    [ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null
    if dpkg-query -W -f='${Status}' seckill-gateway 2>/dev/null | grep -q 'ok'; then
        dpkg_retry --purge seckill-gateway >/dev/null 2>&1 || true
    fi
    [ "$user_existed" = 0 ] && getent passwd seckill >/dev/null && userdel seckill
    [ "$group_existed" = 0 ] && getent group seckill >/dev/null && groupdel seckill
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# dpkg, waiting while another dpkg or apt holds its lock (up to 3 minutes)
dpkg_retry() {
    i=0
    while :; do
        if dpkg "$@" >"$tmp/dpkg.out" 2>&1; then
            cat "$tmp/dpkg.out"
            return 0
        fi
        if ! grep -q 'lock' "$tmp/dpkg.out" || [ $i -ge 180 ]; then
            cat "$tmp/dpkg.out"
            return 1
        fi
        i=$((i + 1))
        sleep 1
    done
}

echo "== cpack"
(cd "$build" && cpack -G DEB -B "$tmp/pkg") >"$tmp/cpack.out" 2>&1 || { cat "$tmp/cpack.out"; exit 1; }
deb=$(ls "$tmp"/pkg/seckill-gateway_*.deb)
echo "$deb"
dpkg-deb -c "$deb" >"$tmp/contents"
for f in ./usr/bin/seckill-gateway ./usr/bin/seckill-worker ./usr/bin/seckillctl ./etc/seckill-gateway/seckill.ini \
    ./lib/systemd/system/seckill-gateway.service ./lib/systemd/system/seckill-worker@.service \
    ./usr/share/doc/seckill-gateway/operations.md; do
    grep -q " $f\$" "$tmp/contents" || { echo "FAIL: $f not in the package"; cat "$tmp/contents"; exit 1; }
done
dpkg-deb -f "$deb" Depends | grep -q libsystemd0 || { echo "FAIL: no library dependencies"; exit 1; }
dpkg-deb --ctrl-tarfile "$deb" | tar -tf - | grep -q conffiles || { echo "FAIL: no conffiles"; exit 1; }

echo "== dpkg -i"
dpkg_retry -i "$deb"
getent passwd seckill >/dev/null || { echo "FAIL: postinst made no user seckill"; exit 1; }
[ "$(stat -c %U "$state_dir")" = seckill ] || { echo "FAIL: $state_dir not the service user's"; exit 1; }
grep -q '^data_dir = /var/lib/seckill-gateway' /etc/seckill-gateway/seckill.ini ||
    { echo "FAIL: the packaged config keeps its data in $state_dir"; exit 1; }

echo "== systemd-analyze verify"
systemd-analyze verify "$unit_dir/seckill-gateway.service" "$unit_dir/seckill-worker@.service" \
    >"$tmp/verify" 2>&1 || { cat "$tmp/verify"; echo "FAIL: systemd-analyze verify"; exit 1; }
if [ -s "$tmp/verify" ]; then
    cat "$tmp/verify"
    echo "FAIL: systemd-analyze verify has remarks"
    exit 1
fi
for k in 'Type=notify' 'ExecReload=' 'LimitNOFILE=' 'User=seckill' 'StateDirectory=seckill-gateway'; do
    for u in seckill-gateway.service seckill-worker@.service; do
        grep -q "^$k" "$unit_dir/$u" || { echo "FAIL: $u lacks $k"; exit 1; }
    done
done

# the installed binaries, as the service user, from / : the default
# configuration path is absolute
as_service() { (cd / && ASAN_OPTIONS=detect_leaks=0 setpriv --reuid=seckill --regid=seckill --init-groups -- "$@"); }
echo "== the default configuration from /"
as_service /usr/bin/seckill-gateway --check-config | tee "$tmp/check"
grep -q '^/etc/seckill-gateway/seckill.ini: OK' "$tmp/check" || { echo "FAIL: default config"; exit 1; }
as_service /usr/bin/seckill-worker --print-config >/dev/null
as_service /usr/bin/seckillctl --help >/dev/null || { echo "FAIL: seckillctl does not run"; exit 1; }

echo "== start with the unit's ExecStart line"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit_dir/seckill-gateway.service")
echo "ExecStart=$exec_start"
# shellcheck disable=SC2086
(cd / && ASAN_OPTIONS=detect_leaks=0 exec setpriv --reuid=seckill --regid=seckill --init-groups -- \
    $exec_start --listen 127.0.0.1:0) >"$tmp/gw.out" 2>"$tmp/gw.err" &
gw_pid=$!
port=""
i=0
while [ -z "$port" ] && [ $i -lt 400 ]; do
    port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/gw.out")
    kill -0 "$gw_pid" 2>/dev/null || break
    i=$((i + 1))
    sleep 0.05
done
[ -n "$port" ] || { cat "$tmp/gw.out" "$tmp/gw.err"; echo "FAIL: the gateway did not start"; exit 1; }
[ "$(ps -o user= -p "$gw_pid")" = seckill ] || { echo "FAIL: not running as seckill"; exit 1; }

echo "== buy once on port $port"
answer=$(curl -sS -m 20 -X POST "http://127.0.0.1:$port/seckill" -H 'Content-Type: application/json' \
    -H 'X-Request-Id: package-test-1' -d '{"user_id":"pkg-user","item_id":"demo"}' -w ' %{http_code}')
echo "$answer"
case "$answer" in
*'"result":"success"'*' 200') ;;
*) echo "FAIL: no sale"; cat "$tmp/gw.err"; exit 1 ;;
esac
[ -n "$(ls -A "$state_dir")" ] || { echo "FAIL: nothing in $state_dir (the order log)"; exit 1; }

kill -TERM "$gw_pid"
status=0
wait "$gw_pid" || status=$?
gw_pid=""
cat "$tmp/gw.err"
[ "$status" -eq 0 ] || { echo "FAIL: the gateway exited $status after SIGTERM"; exit 1; }

echo "== dpkg --purge"
dpkg_retry --purge seckill-gateway
for f in /usr/bin/seckill-gateway /usr/bin/seckill-worker /usr/bin/seckillctl /etc/seckill-gateway "$unit_dir/seckill-gateway.service" \
    "$unit_dir/seckill-worker@.service" "$state_dir" /usr/share/doc/seckill-gateway; do
    [ ! -e "$f" ] || { echo "FAIL: $f left after purge"; exit 1; }
done
echo "OK: built, verified, installed, sold one, stopped, purged"
