#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The systemd units as installed (moed.service, moed@.service and their
# sockets, with this build's moed in ExecStart=): systemd-analyze verify
# finds no error in them, and the sandbox's exposure as systemd-analyze
# security --offline rates it stays at or below MAX_EXPOSURE (the issue's
# aim: 2.5; lower is safer). The score is printed for the README.
#
# usage: it_units.sh BUILD_SYSTEMD_DIR SOURCE_SYSTEMD_DIR MOED
set -u
built=$1 src=$2 moed=$3
MAX_EXPOSURE=2.5

command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$built/moed.service" "$built/moed@.service" "$src/moed.socket" "$src/moed@.socket" "$tmp/"
# verify checks that ExecStart= names an executable: this build's
sed -i "s|^ExecStart=[^ ]*/moed |ExecStart=$moed |" "$tmp"/*.service
cd "$tmp" || exit 1
fail=0

# a unit that verify accepts for sure tells whether verify can run here at all
printf '[Service]\nExecStart=/bin/true\n' >probe.service
if ! systemd-analyze verify --man=no ./probe.service >probe.log 2>&1; then
	echo "SKIP: systemd-analyze verify does not run here:"
	cat probe.log
	exit 77
fi
rm probe.service

check_verify() {
	if ! out=$(systemd-analyze verify --man=no "$@" 2>&1) || [ -n "$out" ]; then
		echo "FAIL: systemd-analyze verify $*:"
		echo "$out"
		fail=1
	else
		echo "ok: verify $*"
	fi
}
check_verify ./moed.service ./moed.socket
# a template verifies as an instance
cp moed@.service moed@big.service
cp moed@.socket moed@big.socket
check_verify ./moed@big.service ./moed@big.socket

for unit in moed.service moed@big.service; do
	line=$(systemd-analyze security --offline=yes "./$unit" 2>&1 | grep 'Overall exposure level')
	score=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
	if [ -z "$score" ]; then
		echo "FAIL: no exposure score for $unit:"
		systemd-analyze security --offline=yes "./$unit"
		fail=1
	elif awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
		echo "FAIL: $unit: exposure $score above $MAX_EXPOSURE:"
		systemd-analyze security --offline=yes "./$unit" | grep '✗'
		fail=1
	else
		echo "ok: $unit exposure $score (at most $MAX_EXPOSURE)"
	fi
done
exit $fail
