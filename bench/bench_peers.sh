#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench_peers.sh: moed daemons on two or three namespaced hosts
# (tests/netns/netns.sh) serving one model together over UCX on TCP, each
# figure a ratio against a baseline measured in the same run (absolute
# times drift on shared machines; both sides run on the same CPUs):
#
#   bandwidth_vs_perftest  token bytes per second between a and b (bytes_out
#                          + bytes_in of `moectl peers --json`, over the
#                          workload's wall time) while every expert is on b
#                          and a model of d_model 4096, d_ff 16 makes the
#                          transfer dominate, against ucx_perftest ucp_am_bw
#                          at moed's message size (bytes per call) on the
#                          same pair with UCX_RNDV_THRESH=inf: moed's peers
#                          send eagerly only (transport_ucx_opts.eager_only),
#                          so that is the fair baseline; the figure against
#                          UCX's default (rendezvous for large messages) is
#                          printed too (_rndv). With 2 workload clients at
#                          once as well (_2clients), so that two requests
#                          can be in flight (runs_in_flight = 2). At 512
#                          tokens a batch (16 MiB a call each way) and, as
#                          _64tok*, at 64 (2 MiB a call).
#   latency_vs_perftest    the per-layer time of one-token batches with every
#                          expert on b, against 2 x ucp_am_lat's one-way time
#                          at moed's request size (a round trip) plus the
#                          per-layer time of the same workload on a daemon
#                          with every expert local; _8b: the same with
#                          ucp_am_lat at 8 bytes.
#   split_speedup          tokens/s with experts 4-7 on b against one host
#                          holding all 8 (d_model 1024, d_ff 2048); also the
#                          share of the remote time hidden behind local
#                          compute (overlap in `moectl peers --json`).
#   survivors              tokens/s on three hosts (experts 0-2 on a, 3-5 on
#                          b, 6-7 on c, peer_failure = drop) after c is
#                          killed (SIGKILL, then seen down) against before
#                          (c restarted between rounds);
#                          _share: the share of the slots still served
#                          against the 6/8 of the experts that survive.
#
# usage: bench/bench_peers.sh [MOED [MOECTL]] [--reps N] [--only LIST]
#     MOED, MOECTL: the binaries (default build/daemon/moed and
#     build/daemon/moectl of this source tree; the script builds nothing);
#     --reps N: rounds of every figure (default 3), each figure the median;
#     --only LIST: some of bandwidth,latency,split,survivors.
# As root (network namespaces). Output: a short header (lines with '#'),
# then one line per figure:
#
#     bench_peers NAME ratio=X.XX (ours=... baseline=... unit=... ...)
#
# where ratio is the median of the rounds' ratios (ours / baseline of the
# same round, each listed in rounds=) and ours, baseline the medians of
# each side. Exit status 0,
# 1 when something fails (a daemon does not serve, a peer is not up within
# 20 s, a workload or ucx_perftest fails), 2 for a bad command line, 77
# when the hosts cannot be made here. Takes about 3 minutes.

set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/ucx_baseline.sh
. "$here/ucx_baseline.sh"

moed=$root/build/daemon/moed
moectl=$root/build/daemon/moectl
reps=3
only=bandwidth,latency,split,survivors
npos=0
while [ $# -gt 0 ]; do
	case $1 in
	--reps | --only)
		[ $# -ge 2 ] || { echo "bench_peers: $1 needs a value" >&2; exit 2; }
		if [ "$1" = --reps ]; then reps=$2; else only=$2; fi
		shift 2
		;;
	-h | --help)
		sed -n '/^# usage/,/^#     --only/p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	-*)
		echo "bench_peers: unknown option '$1' (see --help)" >&2
		exit 2
		;;
	*)
		npos=$((npos + 1))
		case $npos in
		1) moed=$1 ;;
		2) moectl=$1 ;;
		*) echo "bench_peers: too many arguments (see --help)" >&2; exit 2 ;;
		esac
		shift
		;;
	esac
done
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "bench_peers: --reps '$reps' is not a positive number" >&2; exit 2; }
for b in "$moed" "$moectl"; do
	[ -x "$b" ] || { echo "bench_peers: $b is not an executable (build moed and moectl first)" >&2; exit 1; }
done
moed=$(realpath "$moed")
moectl=$(realpath "$moectl")
wants() { [[ ",$only," == *",$1,"* ]]; }
IFS=, read -ra figs <<<"$only"
for f in "${figs[@]}"; do
	case $f in
	bandwidth | latency | split | survivors) ;;
	*) echo "bench_peers: --only: '$f' is not one of bandwidth,latency,split,survivors" >&2; exit 2 ;;
	esac
done

netns_can_run
command -v ucx_perftest >/dev/null || { echo "SKIP: no ucx_perftest (Debian package ucx-utils)"; exit 77; }
netns_sweep_stale

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench_peers.XXXXXX") || exit 1
declare -A pid=()
port=7400
store_prefix=benchpeers$$

# ---- cleanup: our daemons (SIGTERM, a clean drain frees their stores), then
# netns.sh's namespaces (netns_cleanup), then what a killed daemon left in
# /dev/shm and our folder. Set after netns_setup, whose EXIT trap it replaces
# (netns.sh: "call netns_cleanup from that one"); its INT/TERM traps stay and
# exit, which runs this one.
cleanup() {
	local n i
	for n in "${!pid[@]}"; do
		kill -CONT "${pid[$n]}" 2>/dev/null
		kill -TERM "${pid[$n]}" 2>/dev/null
	done
	for n in "${!pid[@]}"; do
		for ((i = 0; i < 50; i++)); do
			kill -0 "${pid[$n]}" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "${pid[$n]}" 2>/dev/null
		wait "${pid[$n]}" 2>/dev/null
		unset "pid[$n]"
	done
	netns_cleanup
	rm -f /dev/shm/"$store_prefix"-*
	rm -rf "$tmp"
}

die() {
	echo "bench_peers: FAIL: $*" >&2
	exit 1
}

netns_setup 3 || { rm -rf "$tmp"; exit 1; }
trap cleanup EXIT
host_of() { case $1 in a*) echo 1 ;; b*) echo 2 ;; c*) echo 3 ;; esac; }
addr_of() { echo "$(netns_addr "$(host_of "$1")"):$port"; }

# start NAME MODEL ARGS...: moed NAME (its first letter is its host: a, b,
# c) serving on $tmp/NAME.sock within 60 s, or the script fails. MODEL
# empty: the embedded default model.
start() {
	local name=$1 model=$2 end
	shift 2
	local sock=$tmp/$name.sock log=$tmp/$name.log
	local args=(--foreground --socket "$sock" --set "state_dir=$tmp/state-$name"
		--set "store_name=$store_prefix-$name" --set store_keep=no)
	[ -n "$model" ] && args+=(--model "$model")
	netns_spawn "$(host_of "$name")" "$moed" "${args[@]}" "$@" >"$log" 2>&1 ||
		die "cannot start moed $name"
	pid[$name]=$NETNS_PID
	end=$((SECONDS + 60))
	while [ "$SECONDS" -lt "$end" ]; do
		if ! kill -0 "${pid[$name]}" 2>/dev/null; then
			unset "pid[$name]"
			tail -n 20 "$log" >&2
			die "moed $name exited before it served (its log above)"
		fi
		if "$moectl" --socket "$sock" status --json 2>/dev/null |
			grep -q '"phase": "serving"'; then
			return 0
		fi
		sleep 0.1
	done
	tail -n 20 "$log" >&2
	die "moed $name did not serve within 60 s (its log above)"
}

# stop NAME...: SIGTERM, wait; a non-zero exit is reported, not fatal
stop() {
	local name st
	for name in "$@"; do
		[ -n "${pid[$name]:-}" ] || continue
		kill -TERM "${pid[$name]}" 2>/dev/null
		wait "${pid[$name]}"
		st=$?
		unset "pid[$name]"
		if [ "$st" -ne 0 ]; then
			echo "# note: moed $name exited with status $st after SIGTERM; its last lines:"
			tail -n 5 "$tmp/$name.log" | sed 's/^/#   /'
		fi
	done
}

# crash NAME: SIGKILL, as a host that dies; its expert store (left behind:
# only a clean exit frees it) is removed
crash() {
	kill -KILL "${pid[$1]}"
	wait "${pid[$1]}" 2>/dev/null
	unset "pid[$1]"
	rm -f /dev/shm/"$store_prefix-$1".*
}

# peer NAME PEER: "state calls bytes_out bytes_in tokens_out rtt_avg_us
# remote_span_s waited_s" from NAME's `moectl peers --json` (state "none"
# when NAME has no such peer); 1 with a message when moed cannot be asked
peer() {
	local out
	out=$("$moectl" --socket "$tmp/$1.sock" peers --json 2>&1) || {
		echo "bench_peers: moectl peers through $1 failed: $out" >&2
		return 1
	}
	python3 -c '
import json, sys
p = json.load(sys.stdin) or {}
x = next((x for x in p.get("peers", []) if x["name"] == sys.argv[1]), None)
o = p.get("overlap", {})
if x is None:
    print("none 0 0 0 0 0 0 0")
else:
    print(x["state"], x["calls"], x["bytes_out"], x["bytes_in"], x["tokens_out"],
          x["rtt_avg_us"], o.get("remote_span_s", 0), o.get("waited_s", 0))
' "$2" <<<"$out"
}

# wait_peer NAME PEER up|gone: NAME sees PEER up (or not up) within 20 s
# of wall time, or the script fails
wait_peer() {
	local end=$((SECONDS + 20)) s
	while :; do
		s=$(peer "$1" "$2") || die "cannot read the peers of moed $1"
		s=${s%% *}
		if [ "$3" = up ]; then [ "$s" = up ] && return 0; else [ "$s" != up ] && return 0; fi
		[ "$SECONDS" -lt "$end" ] || break
		sleep 0.1
	done
	if [ "$3" = up ]; then
		tail -n 10 "$tmp/$1.log" >&2
		die "moed $1 never saw peer $2 up within 20 s (its state: $s; $1's log above)"
	fi
	die "moed $1 still sees peer $2 up 20 s after it was killed"
}

# workload NAME BATCHES TOKENS: "seconds tokens_per_s dropped layers" of
# one `moectl workload` through NAME, or the script fails (seconds from the
# tokens/s figure, which has more digits than the printed time)
workload() {
	local out
	out=$(timeout 300 "$moectl" --socket "$tmp/$1.sock" workload --batches "$2" \
		--tokens "$3" 2>&1) || die "workload through $1 ($2 batches of $3 tokens) failed: $out"
	wl_parse "$out" || die "cannot read the workload's summary: $out"
}

# wl_parse OUTPUT: the figures of a workload's output (see workload)
wl_parse() {
	awk '
	/^workload: .* batches of .* through [0-9]+ layers/ {
		for (i = 1; i < NF; i++) if ($(i + 1) == "layers") layers = $i
	}
	/^workload: [0-9]+ batches, [0-9]+ tokens in .* slots dropped$/ {
		tok = $4; rate = $9; drop = $(NF - 2); ok = rate > 0
	}
	END { if (!ok || !layers) exit 1; printf "%.6f %s %s %s\n", tok / rate, rate, drop, layers }
	' <<<"$1"
}

# batches_for NAME TOKENS SECONDS: a warm-up (2 batches: the first touches
# the weights and buffers), then the batches that take about SECONDS (at
# least 4), timed on 4, 16, 64, ... batches until a run takes 0.3 s
batches_for() {
	local n=4 w s
	workload "$1" 2 "$2" >/dev/null || return 1
	while :; do
		w=$(workload "$1" "$n" "$2") || return 1
		s=${w%% *}
		if awk -v s="$s" 'BEGIN { exit !(s >= 0.3) }' || [ "$n" -ge 4096 ]; then
			break
		fi
		n=$((n * 4))
	done
	awk -v n="$n" -v s="$s" -v t="$3" 'BEGIN { b = int(n * t / s + 0.999); if (b < 4) b = 4; print b }'
}

# calc EXPR: awk arithmetic on numbers
calc() { awk "BEGIN { printf \"%.6g\n\", $1 }"; }

# median V...: the median of the values (the lower middle one for an even count)
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# report NAME OURS_LIST BASE_LIST UNIT [EXTRA]: the figure's line; the
# lists are the rounds' values (space-separated, the same count)
report() {
	local name=$1 unit=$4 extra=${5:-} o b r=() i
	read -ra o <<<"$2"
	read -ra b <<<"$3"
	for ((i = 0; i < ${#o[@]}; i++)); do
		r+=("$(calc "${o[i]} / ${b[i]}")")
	done
	printf 'bench_peers %s ratio=%.2f (ours=%s baseline=%s unit=%s rounds=%s%s)\n' "$name" \
		"$(median "${r[@]}")" "$(median "${o[@]}")" "$(median "${b[@]}")" "$unit" \
		"$(printf '%.2f\n' "${r[@]}" | paste -sd/)" "${extra:+ $extra}"
}

mib() { calc "$1 / 1048576"; }

mtu=$(ip -n "$(netns_ns 1)" -o link show "$(netns_dev 1)" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
echo "# bench_peers: moed daemons on namespaced hosts (veth + bridge, MTU $mtu, UCX_TLS=tcp," \
	"UCX $(ucx_info -v 2>/dev/null | sed -n 's/^# Version //p' | head -n 1)), $(nproc) CPUs" \
	"shared by every host, each figure the median of $reps rounds"
echo "# ratio = ours / baseline (median of the rounds' ratios); MB = MiB = 2^20 bytes;" \
	"load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"


# ---- 1. bandwidth ----

# bw_measure NAME TOKENS BATCHES CLIENTS: "MiB/s bytes_per_call" of CLIENTS
# workload clients at once through NAME (every expert on peer b): bytes
# out + in over the wall time (one client: the workload's own time; more:
# from their launch to the last one's end)
bw_measure() {
	local name=$1 t=$2 n=$3 k=$4 c0 o0 i0 c1 o1 i1 t0 t1 j secs w wp=()
	ps=$(peer "$name" b) || return 1
	read -r _ c0 o0 i0 _ <<<"$ps"
	t0=$EPOCHREALTIME
	for ((j = 0; j < k; j++)); do
		timeout 300 "$moectl" --socket "$tmp/$name.sock" workload --batches "$n" \
			--tokens "$t" >"$tmp/wl$j" 2>&1 &
		wp+=($!)
	done
	for ((j = 0; j < k; j++)); do
		wait "${wp[j]}" || die "workload client $((j + 1)) of $k through $name failed:" \
			"$(cat "$tmp/wl$j")"
	done
	t1=$EPOCHREALTIME
	ps=$(peer "$name" b) || return 1
	read -r _ c1 o1 i1 _ <<<"$ps"
	[ "$c1" -gt "$c0" ] || die "no calls to peer b during the workload through $name"
	if [ "$k" -eq 1 ]; then
		w=$(wl_parse "$(cat "$tmp/wl0")") || die "cannot read the workload's summary"
		secs=${w%% *}
	else
		secs=$(calc "$t1 - $t0")
	fi
	echo "$(mib "($o1 - $o0 + $i1 - $i0) / $secs") $(((o1 - o0) / (c1 - c0)))"
}

# bw_figure NAME TOKENS ROUNDS_EXTRA: the bandwidth figures at TOKENS per
# batch; ROUNDS_EXTRA yes: also UCX's default protocols and 2 clients
bw_figure() {
	local name=$1 t=$2 full=$3 n r m size iters ours=() eager=() rndv=() two=()
	n=$(batches_for a1 "$t" 2) || exit 1
	for ((r = 0; r < reps; r++)); do
		m=$(bw_measure a1 "$t" "$n" 1) || exit 1
		ours+=("${m% *}")
		size=${m#* }
		# about 512 MiB per perftest run (at least 20 messages); client on a
		# (host 1), server on b (host 2): the requests' direction
		iters=$((536870912 / size))
		[ "$iters" -ge 20 ] || iters=20
		m=$(UCX_RNDV_THRESH=inf ucx_baseline_bw 2 1 "$size" "$iters") ||
			die "ucx_perftest ucp_am_bw (UCX_RNDV_THRESH=inf) failed"
		eager+=("$m")
		[ "$full" = yes ] || continue
		m=$(ucx_baseline_bw 2 1 "$size" "$iters") || die "ucx_perftest ucp_am_bw failed"
		rndv+=("$m")
		m=$(bw_measure a1 "$t" "$n" 2) || exit 1
		two+=("${m% *}")
	done
	report "$name" "${ours[*]}" "${eager[*]}" MiB/s \
		"size=$size tokens=$t batches=$n baseline=ucp_am_bw,RNDV_THRESH=inf"
	[ "$full" = yes ] || return 0
	report "${name}_rndv" "${ours[*]}" "${rndv[*]}" MiB/s \
		"size=$size tokens=$t baseline=ucp_am_bw,default"
	report "${name}_2clients" "${two[*]}" "${eager[*]}" MiB/s \
		"size=$size tokens=$t clients=2 batches=$n+$n baseline=ucp_am_bw,RNDV_THRESH=inf"
}

if wants bandwidth; then
	"$moectl" gen-model --output "$tmp/bw.safetensors" --d-model 4096 --d-ff 16 --experts 8 \
		--layers 1 --top_k 2 >/dev/null 2>&1 || die "gen-model (bandwidth model) failed"
	start b1 "$tmp/bw.safetensors" --set "listen=$(addr_of b1)"
	start a1 "$tmp/bw.safetensors" --set "peers=b=$(addr_of b1)" --set "expert_hosts=0-7@b" \
		--set peer_deadline_ms=30000 --set peer_failure=error
	wait_peer a1 b up
	echo "# bandwidth: d_model 4096, d_ff 16, 8 experts on b, top-2, 1 layer; ours = token" \
		"bytes out + in per second (request, then reply, per engine call); perftest:" \
		"one way, streaming"
	bw_figure bandwidth_vs_perftest 512 yes
	bw_figure bandwidth_vs_perftest_64tok 64 yes
	stop a1 b1
fi

# ---- 2. latency ----
if wants latency; then
	start b2 "" --set "listen=$(addr_of b2)"
	start a2rem "" --set "peers=b=$(addr_of b2)" --set "expert_hosts=0-7@b" \
		--set peer_deadline_ms=30000 --set peer_failure=error
	start a2loc ""
	wait_peer a2rem b up
	echo "# latency: the default model (d_model 256, d_ff 512, 8 experts, top-2, 2 layers)," \
		"one-token batches; a2rem has every expert on b, a2loc every expert local (both on host a)"
	nl=$(batches_for a2loc 1 1) || exit 1
	nr=$(batches_for a2rem 1 1) || exit 1
	rem=() base=() base8=() lat=() latavg=() lat8=() loc=() rtt=()
	for ((r = 0; r < reps; r++)); do
		w=$(workload a2loc "$nl" 1) || exit 1
		read -r s _ _ layers <<<"$w"
		loc+=("$(calc "$s * 1e6 / ($nl * $layers)")")
		ps=$(peer a2rem b) || exit 1
		read -r _ c0 o0 _ <<<"$ps"
		w=$(workload a2rem "$nr" 1) || exit 1
		read -r s _ _ layers <<<"$w"
		ps=$(peer a2rem b) || exit 1
		read -r _ c1 o1 _ _ ravg _ <<<"$ps"
		rem+=("$(calc "$s * 1e6 / ($nr * $layers)")")
		rtt+=("$(calc "$ravg")")
		size=$(((o1 - o0) / (c1 - c0)))
		# ucp_am_lat's Final: numbers; 2: median one-way latency (us), 4: average
		m=$(UCX_RNDV_THRESH=inf ucx_baseline_run 2 1 ucp_am_lat "$size" 10000) ||
			die "ucx_perftest ucp_am_lat ($size bytes) failed"
		lat+=("$(awk '{ print $2 }' <<<"$m")")
		latavg+=("$(awk '{ print $4 }' <<<"$m")")
		m=$(UCX_RNDV_THRESH=inf ucx_baseline_run 2 1 ucp_am_lat 8 10000) ||
			die "ucx_perftest ucp_am_lat (8 bytes) failed"
		lat8+=("$(awk '{ print $2 }' <<<"$m")")
		base+=("$(calc "2 * ${lat[r]} + ${loc[r]}")")
		base8+=("$(calc "2 * ${lat8[r]} + ${loc[r]}")")
	done
	report latency_vs_perftest "${rem[*]}" "${base[*]}" us/layer \
		"size=$size local=$(median "${loc[@]}") am_lat_oneway=$(median "${lat[@]}") am_lat_oneway_avg=$(median "${latavg[@]}") peer_rtt_avg=$(median "${rtt[@]}") batches=$nr"
	report latency_vs_perftest_8b "${rem[*]}" "${base8[*]}" us/layer \
		"size=8 local=$(median "${loc[@]}") am_lat_oneway=$(median "${lat8[@]}")"
	stop a2rem a2loc b2
fi

# ---- 3. split ----
split_model() {
	[ -e "$tmp/split.safetensors" ] && return 0
	"$moectl" gen-model --output "$tmp/split.safetensors" --d-model 1024 --d-ff 2048 \
		--experts 8 --layers 1 --top_k 2 >/dev/null 2>&1 || die "gen-model (split model) failed"
}
split_tokens=64
if wants split; then
	split_model
	start b3 "$tmp/split.safetensors" --set "listen=$(addr_of b3)"
	start a3split "$tmp/split.safetensors" --set "peers=b=$(addr_of b3)" \
		--set "expert_hosts=4-7@b" --set peer_deadline_ms=30000 --set peer_failure=error
	start a3one "$tmp/split.safetensors"
	wait_peer a3split b up
	echo "# split: d_model 1024, d_ff 2048, 8 experts, top-2, 1 layer, $split_tokens-token" \
		"batches; experts 4-7 on b against all 8 on one host (both hosts on the same $(nproc) CPUs)"
	n=$(batches_for a3one "$split_tokens" 1.5) || exit 1
	batches_for a3split "$split_tokens" 1 >/dev/null || exit 1
	one=() two=() hid=()
	for ((r = 0; r < reps; r++)); do
		w=$(workload a3one "$n" "$split_tokens") || exit 1
		one+=("$(echo "$w" | awk '{ print $2 }')")
		ps=$(peer a3split b) || exit 1
		read -r _ _ _ _ _ _ sp0 wt0 <<<"$ps"
		w=$(workload a3split "$n" "$split_tokens") || exit 1
		two+=("$(echo "$w" | awk '{ print $2 }')")
		ps=$(peer a3split b) || exit 1
		read -r _ _ _ _ _ _ sp1 wt1 <<<"$ps"
		hid+=("$(calc "1 - ($wt1 - $wt0) / ($sp1 - $sp0)")")
	done
	report split_speedup "${two[*]}" "${one[*]}" tokens/s \
		"hidden_share=$(median "${hid[@]}") tokens=$split_tokens batches=$n"
	stop a3split a3one b3
fi

# ---- 4. survivors ----
# Rounds of: a workload with a, b, c up; c killed; once a sees c down, the
# same workload again; c restarted (a new store name: the killed one's
# store is removed) for the next round, so each after is paired with its
# before.
if wants survivors; then
	split_model
	start b4 "$tmp/split.safetensors" --set "listen=$(addr_of b4)"
	start c4 "$tmp/split.safetensors" --set "listen=$(addr_of c4)"
	start a4 "$tmp/split.safetensors" --set "peers=b=$(addr_of b4),c=$(addr_of c4)" \
		--set "expert_hosts=3-5@b;6-7@c" --set peer_deadline_ms=5000 --set peer_failure=drop
	wait_peer a4 b up
	wait_peer a4 c up
	echo "# survivors: the split model, experts 0-2 on a, 3-5 on b, 6-7 on c," \
		"peer_failure = drop, $split_tokens-token batches; each round: all up, then c killed" \
		"(SIGKILL), then c restarted for the next round"
	n=$(batches_for a4 "$split_tokens" 1.5) || exit 1
	before=() after=() share=() exp=() c=c4
	for ((r = 0; r < reps; r++)); do
		if [ "$r" -gt 0 ]; then
			c=c4r$r
			start "$c" "$tmp/split.safetensors" --set "listen=$(addr_of "$c")"
			wait_peer a4 c up
			workload a4 2 "$split_tokens" >/dev/null || exit 1
		fi
		w=$(workload a4 "$n" "$split_tokens") || exit 1
		read -r _ rate drop _ <<<"$w"
		[ "$drop" -eq 0 ] || echo "# note: $drop slots dropped with all three hosts up (round $((r + 1)))"
		before+=("$rate")
		crash "$c"
		wait_peer a4 c gone
		workload a4 2 "$split_tokens" >/dev/null || exit 1
		w=$(workload a4 "$n" "$split_tokens") || exit 1
		read -r _ rate drop _ <<<"$w"
		after+=("$rate")
		share+=("$(calc "1 - $drop / ($n * $split_tokens * 2)")")
		exp+=(0.75)
	done
	report survivors "${after[*]}" "${before[*]}" tokens/s "after/before c died; batches=$n"
	report survivors_share "${share[*]}" "${exp[*]}" share_of_slots_served \
		"expected=6/8 of the experts"
	stop a4 b4
fi

echo "# bench_peers: done in $SECONDS s"
