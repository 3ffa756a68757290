#!/bin/sh
# Debian packages the tests use, installed only when their binary is missing:
# prometheus (a real server scrapes the demo in tests/metrics) and jq (JSON logs).
# The prometheus package would start a system service; policy-rc.d forbids that during the
# install (the tests run the binary themselves, on loopback).
set -eu
missing=""
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v jq >/dev/null 2>&1 || missing="$missing jq"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-debian-tools: need root to install:$missing" >&2
    exit 1
fi
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
[ -n "$made_policy" ] && rm -f "$policy"
exit 0
