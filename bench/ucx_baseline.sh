#!/bin/bash
# SPDX-License-Identifier: MIT
#
# ucx_baseline.sh: what UCX itself does between two namespaced hosts over
# TCP on a veth (tests/netns/netns.sh), the baseline that moed's transport
# bench is set against in the same run. ucx_perftest's UCP active-message
# tests (the API moed's transport uses), server on host A, client on host B:
#
#     ucp_am_bw   bandwidth: the client streams SIZE-byte messages
#     ucp_am_lat  latency: a ping-pong of SIZE-byte messages
#
# usage: bench/ucx_baseline.sh [--bw SIZES] [--lat SIZES] [--iters N] [--reps R]
#     SIZES: comma-separated byte counts, k/m suffixes for KiB/MiB
#     (defaults: --bw 64k, --lat 8); --iters N: iterations of every test
#     (default: about 512 MiB per bandwidth test, 200 to 200000 iterations;
#     20000 latency round trips, fewer for messages over 64 KiB); --reps R:
#     runs of each test, each figure the median of the R runs (default 3:
#     on a shared 2-CPU machine single runs vary by 2x and more).
# It sets up 2 hosts, prints one line per test and removes the hosts:
#
#     ucx_perftest am_bw size=65536 MBps=2537.28 msgps=40596 iters=8192
#     ucx_perftest am_lat size=8 usec=6.701 avg_usec=7.367 iters=20000
#
# Lines starting with '#' are comments. Exit 77 when the hosts cannot be
# made (not root, no ip netns, ...), 1 when ucx_perftest fails (its output
# on stderr).
#
# The figures, from the client's "Final:" line, whose columns are: iterations;
# latency (usec): median of the run's last 2048 iterations, average since the
# previous report, overall average; bandwidth (MB/s): since the previous
# report, overall; message rate (msg/s): since the previous report, overall.
#     MBps      overall bandwidth, in ucx_perftest's MB = 2^20 bytes
#     msgps     overall message rate
#     usec      median one-way latency (ping-pong round trip / 2)
#     avg_usec  overall average one-way latency
# In a bandwidth test the latency columns are the sender's time per
# message, not a latency: not printed.
#
# Source-able: `. bench/ucx_baseline.sh` defines the functions below (and
# sources netns.sh) without running anything; with hosts from netns_setup:
#     ucx_baseline_bw A B SIZE [ITERS]    prints MBps
#     ucx_baseline_lat A B SIZE [ITERS]   prints usec (median one-way)
#     ucx_baseline_run A B TEST SIZE ITERS   prints the Final: line's 8 numbers
# Each returns 1 with ucx_perftest's output on stderr if it fails.
# $UCX_BASELINE_PORT: ucx_perftest's own TCP port on host A (13337);
# $UCX_BASELINE_TIMEOUT: seconds one test may take (120).

_ucx_baseline_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/netns/netns.sh
. "$_ucx_baseline_dir/../tests/netns/netns.sh"

: "${UCX_BASELINE_PORT:=13337}"
: "${UCX_BASELINE_TIMEOUT:=120}"

# ucx_baseline_run A B TEST SIZE ITERS: ucx_perftest -t TEST with SIZE-byte
# messages, ITERS iterations (and ITERS/10, at most 1000, of warm-up), its
# server on host A and its client on host B; prints the 8 numbers of the
# client's Final: line: iterations, median / average / overall latency (us),
# average / overall MB/s, average / overall msg/s ("average": since the last
# once-a-second progress report, so only "overall" covers the whole run).
ucx_baseline_run() {
	local a=${1:-} b=${2:-} test=${3:-} size=${4:-} iters=${5:-} warm tmp srv rc src final
	if [ $# -ne 5 ] || ! [[ $size =~ ^[1-9][0-9]*$ && $iters =~ ^[1-9][0-9]*$ ]]; then
		echo "ucx_baseline_run: usage: ucx_baseline_run HOST_A HOST_B TEST SIZE ITERS" >&2
		return 1
	fi
	netns_ns "$a" >/dev/null && netns_ns "$b" >/dev/null || return 1
	warm=$((iters / 10))
	[ "$warm" -le 1000 ] || warm=1000
	local args=(-t "$test" -s "$size" -n "$iters" -w "$warm" -p "$UCX_BASELINE_PORT")
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/ucx_baseline.XXXXXX") || return 1
	netns_spawn "$a" timeout "$UCX_BASELINE_TIMEOUT" ucx_perftest "${args[@]}" \
		>"$tmp/server" 2>&1 || { rm -rf "$tmp"; return 1; }
	srv=$NETNS_PID
	if ! netns_wait_port "$a" "$UCX_BASELINE_PORT" 10; then
		kill "$srv" 2>/dev/null
		wait "$srv" 2>/dev/null
		echo "ucx_baseline: the ucx_perftest server on host $a did not listen:" >&2
		cat "$tmp/server" >&2
		rm -rf "$tmp"
		return 1
	fi
	netns_exec "$b" timeout "$UCX_BASELINE_TIMEOUT" ucx_perftest "$(netns_addr "$a")" \
		"${args[@]}" >"$tmp/client" 2>&1
	rc=$?
	wait "$srv"
	src=$?
	# Final: ITERS P50_LAT AVG_LAT OVERALL_LAT AVG_BW OVERALL_BW AVG_MR OVERALL_MR
	final=$(awk '$1 == "Final:" && NF == 9 { $1 = ""; print substr($0, 2) }' "$tmp/client")
	if [ "$rc" -ne 0 ] || [ "$src" -ne 0 ] || [ -z "$final" ]; then
		echo "ucx_baseline: ucx_perftest -t $test -s $size failed (client exit $rc," \
			"server exit $src)" >&2
		echo "--- client (host $b):" >&2
		cat "$tmp/client" >&2
		echo "--- server (host $a):" >&2
		cat "$tmp/server" >&2
		rm -rf "$tmp"
		return 1
	fi
	rm -rf "$tmp"
	echo "$final"
}

# _ucx_baseline_field N A B TEST SIZE ITERS: field N of the Final: numbers.
_ucx_baseline_field() {
	local n=$1 line
	shift
	line=$(ucx_baseline_run "$@") || return 1
	awk -v n="$n" '{ print $n }' <<<"$line"
}

# ucx_baseline_bw A B SIZE [ITERS]: ucp_am_bw's overall MB/s (2^20 bytes).
ucx_baseline_bw() {
	_ucx_baseline_field 6 "${1:-}" "${2:-}" ucp_am_bw "${3:-}" \
		"${4:-$(_ucx_baseline_bw_iters "${3:-1}")}"
}

# ucx_baseline_lat A B SIZE [ITERS]: ucp_am_lat's median one-way latency (us).
ucx_baseline_lat() {
	_ucx_baseline_field 2 "${1:-}" "${2:-}" ucp_am_lat "${3:-}" \
		"${4:-$(_ucx_baseline_lat_iters "${3:-1}")}"
}

# Default iterations: about 512 MiB per bandwidth test (200 to 200000);
# 20000 latency round trips, down to 1000 for large messages.
_ucx_baseline_bw_iters() {
	local n=$((536870912 / $1))
	[ "$n" -ge 200 ] || n=200
	[ "$n" -le 200000 ] || n=200000
	echo "$n"
}
_ucx_baseline_lat_iters() {
	local n=$((1342177280 / $1))
	[ "$n" -ge 1000 ] || n=1000
	[ "$n" -le 20000 ] || n=20000
	echo "$n"
}

# _ucx_baseline_sizes LIST: LIST's sizes in bytes, one a line (k = KiB, m = MiB).
_ucx_baseline_sizes() {
	local s list
	IFS=, read -ra list <<<"$1"
	[ ${#list[@]} -gt 0 ] || return 1
	for s in "${list[@]}"; do
		case ${s,,} in
		*k) s=${s%[kK]} && [[ $s =~ ^[0-9]+$ ]] && s=$((s * 1024)) ;;
		*m) s=${s%[mM]} && [[ $s =~ ^[0-9]+$ ]] && s=$((s * 1048576)) ;;
		esac
		[[ $s =~ ^[1-9][0-9]*$ ]] || return 1
		echo "$s"
	done
}

# _ucx_baseline_median: the median of the numbers on stdin, one a line.
_ucx_baseline_median() {
	sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

_ucx_baseline_main() {
	local bw=64k lat=8 iters="" reps=3 sizes s kind n r f mtu a b c runs
	set -u
	while [ $# -gt 0 ]; do
		case $1 in
		--bw | --lat | --iters | --reps)
			if [ $# -lt 2 ]; then
				echo "ucx_baseline.sh: $1 needs a value (see --help)" >&2
				return 2
			fi
			case $1 in
			--bw) bw=$2 ;;
			--lat) lat=$2 ;;
			--iters) iters=$2 ;;
			--reps) reps=$2 ;;
			esac
			shift 2
			;;
		-h | --help)
			sed -n '/^# usage/,/^#     ucx_perftest am_lat/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
			return 0
			;;
		*)
			echo "ucx_baseline.sh: unknown argument '$1' (see --help)" >&2
			return 2
			;;
		esac
	done
	if [ -n "$iters" ] && ! [[ $iters =~ ^[1-9][0-9]*$ ]]; then
		echo "ucx_baseline.sh: --iters '$iters' is not a positive number" >&2
		return 2
	fi
	if ! [[ $reps =~ ^[1-9][0-9]*$ ]]; then
		echo "ucx_baseline.sh: --reps '$reps' is not a positive number" >&2
		return 2
	fi
	for kind in bw lat; do
		if [ $kind = bw ]; then sizes=$bw; else sizes=$lat; fi
		if ! _ucx_baseline_sizes "$sizes" >/dev/null; then
			echo "ucx_baseline.sh: bad size list '$sizes' for --$kind (e.g. 8,4k,64k,1m)" >&2
			return 2
		fi
	done
	netns_can_run
	if ! command -v ucx_perftest >/dev/null; then
		echo "SKIP: no ucx_perftest (Debian package ucx-utils)"
		return 77
	fi
	netns_setup 2 || return 1
	runs=$(mktemp "${TMPDIR:-/tmp}/ucx_baseline.XXXXXX") || return 1
	mtu=$(ip -n "$(netns_ns 2)" -o link show "$(netns_dev 2)" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
	echo "# UCX $(ucx_info -v 2>/dev/null | sed -n 's/^# Version //p' | head -n 1)," \
		"UCX_TLS=tcp over veth and a bridge (MTU $mtu), server host 1, client host 2," \
		"$(nproc) CPUs, each figure the median of $reps runs"
	for kind in bw lat; do
		if [ $kind = bw ]; then sizes=$bw; else sizes=$lat; fi
		for s in $(_ucx_baseline_sizes "$sizes"); do
			n=${iters:-$("_ucx_baseline_${kind}_iters" "$s")}
			: >"$runs"
			for ((r = 0; r < reps; r++)); do
				f=$(ucx_baseline_run 1 2 "ucp_am_$kind" "$s" "$n") || { rm -f "$runs"; return 1; }
				echo "$f" >>"$runs"
			done
			# Final: columns 2 (median latency), 4 (average latency), 6 (MB/s), 8 (msg/s)
			a=$(awk '{ print $2 }' "$runs" | _ucx_baseline_median)
			b=$(awk '{ print $4 }' "$runs" | _ucx_baseline_median)
			c=$(awk '{ print $6 }' "$runs" | _ucx_baseline_median)
			f=$(awk '{ print $8 }' "$runs" | _ucx_baseline_median)
			if [ $kind = bw ]; then
				echo "ucx_perftest am_bw size=$s MBps=$c msgps=$f iters=$n"
			else
				echo "ucx_perftest am_lat size=$s usec=$a avg_usec=$b iters=$n"
			fi
		done
	done
	rm -f "$runs"
	netns_cleanup
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	_ucx_baseline_main "$@"
	exit $?
fi
