#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The multi-host harness (tests/netns/netns.sh) checked on itself: 3 hosts
# reach each other, each fault helper has its effect and its undo undoes it,
# UCX over TCP works between two hosts and goes through the veth (a slow
# link slows it), and cleanup leaves no namespace or device behind.
#
# No assertion is on a duration that could flake: "slow" is 2 MB through a
# 1 mbit/s link not arriving within 2 s (it needs 16 s: an 8x margin), and
# UCX through a 20 mbit/s link (2.4 MB/s) measuring under 10 MB/s (unlimited
# it measures hundreds to thousands).
#
# usage: it_netns_selftest.sh   (as root; exit 77 where it cannot run)
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/netns/netns.sh
. "$here/netns.sh"
# shellcheck source=bench/ucx_baseline.sh
. "$here/../../bench/ucx_baseline.sh"

skip() {
	if [ "${CI:-}" = true ]; then
		echo "FAIL: $* (a skip is a failure under CI=true)"
		exit 1
	fi
	echo "SKIP: $*"
	exit 77
}
passed=0
fail() {
	echo "FAIL: $*"
	echo "$passed passed, 1 failed"
	exit 1
}
ok() {
	echo "ok: $*"
	passed=$((passed + 1))
}

netns_can_run
command -v ucx_perftest >/dev/null || skip "no ucx_perftest (Debian package ucx-utils)"
[ -x /usr/bin/python3 ] || skip "no /usr/bin/python3 (Debian package python3)"
netns_sweep_stale

xfer() { /usr/bin/python3 "$here/netns_xfer.py" "$@"; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/it_netns.XXXXXX") || fail "mktemp"
# Runs after netns.sh's cleanup (netns_setup chains its trap before this one).
trap 'rm -rf "$tmp"' EXIT

netns_setup 3 || fail "netns_setup 3"
tag=${NETNS_TAG:-moe$$}
for i in 1 2 3; do
	ip netns list | grep -qw "$(netns_ns "$i")" || fail "host $i's namespace $(netns_ns "$i") is missing"
	ip -n "$(netns_ns "$i")" -o addr show dev "$(netns_dev "$i")" |
		grep -q "inet $(netns_addr "$i")/24" || fail "host $i has no $(netns_addr "$i")/24"
	ip -n "$(netns_ns "$i")" -o link show lo | grep -q 'state UNKNOWN\|,UP' ||
		fail "lo is down in host $i"
done
ok "3 hosts: $(netns_ns 1)/$(netns_dev 1)/$(netns_addr 1)," \
	"$(netns_ns 2)/$(netns_dev 2)/$(netns_addr 2), $(netns_ns 3)/$(netns_dev 3)/$(netns_addr 3)"
[ "$(netns_exec 2 printenv UCX_TLS UCX_NET_DEVICES | tr '\n' ' ')" = "tcp $(netns_dev 2) " ] ||
	fail "netns_exec does not set UCX_TLS=tcp and UCX_NET_DEVICES=$(netns_dev 2)"
ok "netns_exec sets UCX_TLS=tcp UCX_NET_DEVICES=$(netns_dev 2)"

# every_pair: every host pings every other one.
every_pair() {
	local i j
	for i in 1 2 3; do
		for j in 1 2 3; do
			[ "$i" = "$j" ] && continue
			netns_reachable "$i" "$j" 5 || return 1
		done
	done
}
every_pair || fail "not every host reaches every other one"
ok "every pair of hosts reaches each other"

# isolated I: host I neither reaches nor is reached; the other two still talk.
isolated() {
	local i=$1 j
	for j in 1 2 3; do
		[ "$j" = "$i" ] && continue
		! netns_reachable "$i" "$j" 1 || return 1
		! netns_reachable "$j" "$i" 1 || return 1
	done
	case $i in
	1) netns_reachable 2 3 ;;
	2) netns_reachable 1 3 ;;
	3) netns_reachable 1 2 ;;
	esac
}

# --- loss ---
netns_loss 2 100 || fail "netns_loss 2 100"
isolated 2 || fail "with 100% loss on host 2 it is still reachable (or 1-3 is not)"
ok "netns_loss 2 100: host 2 cut off, hosts 1 and 3 still talk"
netns_loss 2 50 || fail "netns_loss 2 50"
# 40 pings: each round trip survives with probability 1/4; all lost or all
# answered has a probability under 1e-5.
out=$(netns_exec 1 ping -n -q -c 40 -i 0.05 -W 1 "$(netns_addr 2)" 2>&1)
got=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
if [ -z "$got" ] || [ "$got" -eq 0 ] || [ "$got" -eq 40 ]; then
	fail "with 50% loss, $got of 40 pings answered (expected some, not all): $out"
fi
ok "netns_loss 2 50: $got of 40 pings answered"
netns_loss_off 2 || fail "netns_loss_off 2"
netns_loss_off 2 || fail "netns_loss_off 2 a second time"
every_pair || fail "after netns_loss_off 2 not every pair reaches each other"
ok "netns_loss_off 2: every pair reaches each other again"

# --- partition ---
netns_down 3 || fail "netns_down 3"
isolated 3 || fail "with host 3 down it is still reachable (or 1-2 is not)"
ok "netns_down 3: host 3 cut off, hosts 1 and 2 still talk"
netns_up 3 || fail "netns_up 3"
every_pair || fail "after netns_up 3 not every pair reaches each other"
ok "netns_up 3: every pair reaches each other again"

# --- rate ---
# transfer FROM TO BYTES SECONDS: bytes that arrived at host TO from host
# FROM within SECONDS of the connection.
port=5001
transfer() {
	local from=$1 to=$2 bytes=$3 secs=$4 sink src res
	port=$((port + 1))
	netns_spawn "$to" /usr/bin/python3 "$here/netns_xfer.py" sink "$port" "$bytes" "$secs" \
		>"$tmp/sink" 2>&1 || return 1
	sink=$NETNS_PID
	netns_wait_port "$to" "$port" 10 || return 1
	netns_spawn "$from" /usr/bin/python3 "$here/netns_xfer.py" source \
		"$(netns_addr "$to")" "$port" "$bytes" >"$tmp/source" 2>&1 || return 1
	src=$NETNS_PID
	wait "$sink"
	kill "$src" 2>/dev/null
	wait "$src" 2>/dev/null
	res=$(sed -n 's/^received=\([0-9]*\) .*/\1/p' "$tmp/sink")
	if [ -z "$res" ]; then
		echo "transfer $from -> $to failed:" >&2
		cat "$tmp/sink" "$tmp/source" >&2
		return 1
	fi
	echo "$res"
}
mb2=2097152
n=$(transfer 2 1 $mb2 10) || fail "transfer from host 2 to host 1"
[ "$n" -eq $mb2 ] || fail "2 MB from host 2 to host 1 on a plain link: only $n bytes in 10 s"
ok "2 MB from host 2 to host 1 on a plain link: all within 10 s"
netns_slow 2 1mbit || fail "netns_slow 2 1mbit"
for dir in "2 1" "1 2"; do
	# shellcheck disable=SC2086 # two host numbers
	n=$(transfer $dir $mb2 2) || fail "transfer $dir"
	if [ "$n" -eq 0 ] || [ "$n" -ge $mb2 ]; then
		fail "2 MB through host 2's 1 mbit/s link (${dir/ / to }): $n bytes in 2 s"
	fi
	ok "netns_slow 2 1mbit: host ${dir/ / to host }, $n bytes of 2 MB in 2 s"
done
netns_slow_off 2 || fail "netns_slow_off 2"
netns_slow_off 2 || fail "netns_slow_off 2 a second time"
n=$(transfer 1 2 $mb2 10) || fail "transfer from host 1 to host 2"
[ "$n" -eq $mb2 ] || fail "after netns_slow_off 2, only $n of 2 MB in 10 s"
ok "netns_slow_off 2: 2 MB from host 1 to host 2 within 10 s again"

# --- freeze ---
netns_spawn 3 sleep 600 || fail "netns_spawn 3 sleep"
sleeper=$NETNS_PID
netns_freeze 3 || fail "netns_freeze 3"
state=$(awk '/^State:/ { print $2 }' "/proc/$sleeper/status")
[ "$state" = T ] || fail "after netns_freeze 3 a process in host 3 is in state $state, not T"
netns_thaw 3 || fail "netns_thaw 3"
state=$(awk '/^State:/ { print $2 }' "/proc/$sleeper/status")
[ "$state" = S ] || fail "after netns_thaw 3 a process in host 3 is in state $state, not S"
ok "netns_freeze 3 stops host 3's processes, netns_thaw 3 resumes them"
kill "$sleeper"
wait "$sleeper" 2>/dev/null

# --- UCX ---
lat=$(ucx_baseline_lat 1 2 8 2000) || fail "ucx_perftest ucp_am_lat between hosts 1 and 2"
ok "ucx_perftest ucp_am_lat, 8 bytes, host 2 -> host 1: $lat us (median one-way)"
bw=$(ucx_baseline_bw 1 2 65536 500) || fail "ucx_perftest ucp_am_bw between hosts 1 and 2"
ok "ucx_perftest ucp_am_bw, 64 KiB, host 2 -> host 1: $bw MB/s"
netns_slow 1 20mbit || fail "netns_slow 1 20mbit"
bw=$(ucx_baseline_bw 1 2 65536 60) || fail "ucx_perftest ucp_am_bw through a 20 mbit/s link"
awk -v bw="$bw" 'BEGIN { exit !(bw > 0 && bw < 10) }' ||
	fail "ucx_perftest ucp_am_bw through host 1's 20 mbit/s (2.4 MB/s) link: $bw MB/s:" \
		"UCX does not go through the veth"
ok "ucx_perftest ucp_am_bw through host 1's 20 mbit/s link: $bw MB/s (UCX uses the veth)"
netns_slow_off 1 || fail "netns_slow_off 1"

# --- cleanup ---
netns_cleanup || fail "netns_cleanup"
netns_cleanup || fail "netns_cleanup a second time"
rest=$(ip netns list | awk '{ print $1 }' | grep -E "^$tag(hub|probe|[a-z])\$" | tr '\n' ' ')
[ -z "$rest" ] || fail "namespaces left after netns_cleanup: $rest"
rest=$(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' |
	grep -E "^$tag(h[0-9]+|p[0-9]+|br)\$" | tr '\n' ' ')
[ -z "$rest" ] || fail "devices left in the root namespace: $rest"
ok "netns_cleanup leaves no namespace or device behind"
echo "$passed passed, 0 failed"
