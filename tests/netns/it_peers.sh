#!/bin/bash
# SPDX-License-Identifier: MIT
#
# moed daemons on three "hosts" (network namespaces joined by veth pairs
# and a bridge, tests/netns/netns.sh) serving one model together over UCX
# on TCP, as the README's multi-host example does.
#
# 1. Every golden case split over the hosts (host a keeps experts 0, 3, 6,
#    ..., b computes 1, 4, 7, ..., c computes 2, 5, 8, ...; hierarchical
#    cases whole groups: 4-7 on b, 12-15 on c, so that the first level
#    chooses hosts): `moectl forward` through a gives bitwise the output of
#    a serving the case alone.
# 2. Node-limited routing (max_hosts_per_token = 1, experts 0-3 on a, 4-7 on
#    b): each token's experts lie on one host, bitwise the routing with the
#    hosts as expert groups (DeepSeek-V3's node limit).
# 3. Faults, with the default model (experts 2-4 on b, 5-7 on c), deadline
#    500 ms, peer_failure = drop, a client stream through a's socket:
#    - c killed (SIGKILL) in the middle of a stream: every batch completes,
#      the lost slots are counted as dropped, b keeps serving; c restarted
#      is reconnected and the stream has no drops again;
#    - b hung (SIGSTOP): batches complete with drops, a counts the deadline
#      miss; b resumed is back;
#    - c's link down (a partition), then up again;
#    - 20% packet loss on b (nft): each output is bitwise the reference or
#      reports its drops, never silently different;
#    - b's link slowed to 1 Mbit/s (tc tbf): a large batch misses the
#      deadline and completes with drops instead of waiting;
#    - with peer_failure = error, a batch whose host is gone fails with
#      "No route to host" and the next batches keep failing fast;
#    - c restarted with another model of the same shape is refused, and both
#      logs say why.
# Every daemon must exit 0 on SIGTERM (a clean drain).
#
# usage: it_peers.sh MOED MOECTL GOLDEN_DIR
set -u
moed=$1
moectl=$2
golden=$3
here=$(cd "$(dirname "$0")" && pwd)
st_tool=$here/../integration/st_tool.py
. "$here/netns.sh"
netns_can_run
netns_sweep_stale

tmp=$(mktemp -d)
declare -A pid
fail=0
cleanup() {
	local n
	for n in "${!pid[@]}"; do
		kill -CONT "${pid[$n]}" 2>/dev/null
		kill -9 "${pid[$n]}" 2>/dev/null
	done
	netns_cleanup
	# the stores of daemons killed on purpose (store_keep=no frees only at a clean exit)
	rm -f /dev/shm/itpeers$$-*
	if [ "$fail" -gt 0 ]; then
		for n in "$tmp"/[abc].log; do
			echo "== last lines of $n"
			tail -n 15 "$n"
		done
	fi
	rm -rf "$tmp"
}
netns_setup 3 || exit 1
trap cleanup EXIT
host_of() { case $1 in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; esac; }
port=7400
addr_of() { echo "$(netns_addr "$(host_of "$1")"):$port"; }

# Sanitizer builds start and compute several times slower.
slow=1
[ -n "${MOE_SANITIZE_BUILD:-}" ] && slow=4

# start NAME MODEL ARGS...: moed NAME in its host's namespace (MODEL empty:
# the default model), serving on $tmp/NAME.sock within 60 s; 0 or 1 (log shown)
start() {
	local name=$1 model=$2 i
	shift 2
	local sock=$tmp/$name.sock log=$tmp/$name.log
	# kernel_calibration=no: outputs are compared bitwise across daemons and
	# with moectl's in-process engine, which needs the same kernel bounds
	# everywhere; bounds measured on a loaded machine differ run to run
	local args=(--foreground --socket "$sock" --set "state_dir=$tmp/state-$name"
		--set "store_name=itpeers$$-$name" --set store_keep=no
		--set kernel_calibration=no)
	[ -n "$model" ] && args+=(--model "$model")
	netns_spawn "$(host_of "$name")" "$moed" "${args[@]}" "$@" >"$log" 2>&1
	pid[$name]=$NETNS_PID
	for i in $(seq $((600 * slow))); do
		if ! kill -0 "${pid[$name]}" 2>/dev/null; then
			echo "moed $name exited before it served:"
			cat "$log"
			unset "pid[$name]"
			return 1
		fi
		if "$moectl" --socket "$sock" status --json 2>/dev/null |
			grep -q '"phase": "serving"'; then
			return 0
		fi
		sleep 0.1
	done
	echo "moed $name did not serve within $((60 * slow)) s:"
	cat "$log"
	return 1
}

# stop NAME: SIGTERM; 0 only if moed exits 0 (a clean drain)
stop() {
	local name=$1 st
	[ -n "${pid[$name]:-}" ] || return 0
	kill -CONT "${pid[$name]}" 2>/dev/null
	kill -TERM "${pid[$name]}"
	wait "${pid[$name]}"
	st=$?
	unset "pid[$name]"
	if [ "$st" -ne 0 ]; then
		echo "moed $name exited with status $st after SIGTERM:"
		tail -n 20 "$tmp/$name.log"
		return 1
	fi
}

# crash NAME: SIGKILL, as a host that dies
crash() {
	kill -9 "${pid[$1]}"
	wait "${pid[$1]}" 2>/dev/null
	unset "pid[$1]"
}

# peer_field NAME PEER FIELD: FIELD of PEER in NAME's `moectl peers --json`
peer_field() {
	"$moectl" --socket "$tmp/$1.sock" peers --json 2>/dev/null | /usr/bin/python3 -c '
import json, sys
p = json.load(sys.stdin) or {}
print(next((str(x[sys.argv[2]]) for x in p.get("peers", []) if x["name"] == sys.argv[1]), "?"))
' "$2" "$3"
}

# wait_state NAME PEER STATE: within 20 s (x slow)
wait_state() {
	local i
	for i in $(seq $((200 * slow))); do
		[ "$(peer_field "$1" "$2" state)" = "$3" ] && return 0
		sleep 0.1
	done
	echo "FAIL: $1 never saw peer $2 $3 (it is $(peer_field "$1" "$2" state):" \
		"$(peer_field "$1" "$2" why))"
	return 1
}

# store_field NAME FIELD: FIELD of the store in NAME's `moectl status --json`
store_field() {
	"$moectl" --socket "$tmp/$1.sock" status --json 2>/dev/null |
		/usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["store"][sys.argv[1]])' "$2"
}

check() {
	if ! "$@"; then
		echo "FAIL: $*"
		fail=$((fail + 1))
		return 1
	fi
}

# workload NAME BATCHES TOKENS: a client stream through NAME; prints the dropped slots
workload() {
	local out
	out=$(timeout $((120 * slow)) "$moectl" --socket "$tmp/$1.sock" workload \
		--batches "$2" --tokens "$3" 2>&1) || {
		echo "workload through $1 failed: $out" >&2
		echo fail
		return 1
	}
	echo "$out" | sed -n 's/.*, \([0-9]*\) slots dropped$/\1/p'
}

# ---- 1. golden cases split over three hosts ----

# "1,4,7,...@b;2,5,8,...@c" over 96 experts (entries for every layer skip
# indices a layer lacks)
split=""
for r in 1 2; do
	list=$(seq -s, "$r" 3 95)
	split+="${split:+;}$list@$([ "$r" = 1 ] && echo b || echo c)"
done
cases=("$golden"/cases/*.safetensors)
[ -d "$golden/cases" ] || cases=()
n_case=0
for case in "${cases[@]}"; do
	name=$(basename "$case" .safetensors)
	n_case=$((n_case + 1))
	# sanitizer builds: every third case (each case starts four daemons)
	[ "$slow" -gt 1 ] && [ $((n_case % 3)) -ne 1 ] && continue
	ok=1
	start a "$case" || ok=0
	[ "$ok" = 1 ] && "$moectl" --socket "$tmp/a.sock" forward --input "$case" \
		--output "$tmp/$name.ref" >"$tmp/fwd.log" 2>&1 || ok=0
	stop a || ok=0
	start b "$case" --set "listen=$(addr_of b)" || ok=0
	start c "$case" --set "listen=$(addr_of c)" || ok=0
	# hierarchical cases: whole groups of 4 per host, so the first level picks hosts
	hosts=$split
	case $name in hierarchical_*) hosts="4-7@b;12-15@c" ;; esac
	start a "$case" --set "peers=b=$(addr_of b),c=$(addr_of c)" \
		--set "expert_hosts=$hosts" --set peer_deadline_ms=$((10000 * slow)) || ok=0
	case $name in hierarchical_*)
		grep -q 'first level chooses hosts' "$tmp/a.log" || {
			echo "FAIL $name: moed did not see its groups on single hosts"
			ok=0
		} ;;
	esac
	if [ "$ok" = 1 ] && wait_state a b up && wait_state a c up; then
		if ! "$moectl" --socket "$tmp/a.sock" forward --input "$case" \
			--output "$tmp/$name.split" >"$tmp/fwd.log" 2>&1; then
			echo "FAIL $name: forward over three hosts failed:"
			cat "$tmp/fwd.log"
			ok=0
		elif ! cmp -s "$tmp/$name.ref" "$tmp/$name.split"; then
			echo "FAIL $name: the output over three hosts differs from one host's"
			/usr/bin/python3 "$st_tool" same "$tmp/$name.ref" "$tmp/$name.split"
			ok=0
		fi
	else
		ok=0
	fi
	stop a || ok=0
	stop b || ok=0
	stop c || ok=0
	if [ "$ok" = 1 ]; then
		echo "ok   $name: bitwise the same over three hosts"
	else
		fail=$((fail + 1))
		tail -n 5 "$tmp"/[abc].log
	fi
done

# ---- 2. faults, with the default model ----

start_a() {
	start a "" --set "peers=b=$(addr_of b),c=$(addr_of c)" --set "expert_hosts=2-4@b;5-7@c" \
		--set peer_deadline_ms=$((500 * slow)) --set "peer_failure=$1"
}
start b "" --set "listen=$(addr_of b)" || exit 1
start c "" --set "listen=$(addr_of c)" || exit 1
start_a drop || exit 1
wait_state a b up && wait_state a c up || exit 1

# a holds only what it computes: experts 0-1 of both layers (12 of the 16
# are b's and c's), so its store takes about a quarter of the bytes of b's,
# which holds every expert (plus the routers both hold)
remote_a=$(store_field a remote_experts)
bytes_a=$(store_field a weight_bytes)
bytes_b=$(store_field b weight_bytes)
check [ "$remote_a" = 12 ] && check [ "$(store_field b remote_experts)" = 0 ] &&
	check [ $((bytes_a * 3)) -lt "$bytes_b" ] &&
	echo "ok   a holds its own experts only: $bytes_a of $bytes_b bytes, 12 experts elsewhere"

d=$(workload a 200 32)
check [ "$d" = 0 ] && echo "ok   three hosts, 200 batches: no drops"
"$moectl" --socket "$tmp/a.sock" forward --model "$tmp/state-a/default-model.safetensors" \
	--input "$tmp/state-a/default-model.safetensors" --output "$tmp/default.ref" \
	>/dev/null 2>&1 || { echo "FAIL: the reference forward"; fail=$((fail + 1)); }

# node-limited routing: with max_hosts_per_token = 1 and experts 0-3 here,
# 4-7 on b, every token's experts lie on one host, and the output is bitwise
# the one host's with the hosts as DeepSeek's expert groups
check stop a
dm=$tmp/state-a/default-model.safetensors
if start a "" --set "peers=b=$(addr_of b)" --set "expert_hosts=4-7@b" \
	--set max_hosts_per_token=1 && wait_state a b up &&
	"$moectl" --socket "$tmp/a.sock" forward --input "$dm" --output "$tmp/limited.out" \
		>/dev/null 2>&1 &&
	"$moectl" forward --model "$dm" --input "$dm" --output "$tmp/limited.ref" \
		--expert_groups 2 --topk_groups 1 --group_score top2 >/dev/null 2>&1; then
	check /usr/bin/python3 "$st_tool" same "$tmp/limited.ref" "$tmp/limited.out" &&
		check /usr/bin/python3 - "$tmp/limited.out" <<'PY' &&
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    data = f.read()
t = h["expert_index"]
a, b = t["data_offsets"]
idx = struct.unpack("<%di" % ((b - a) // 4), data[a:b])
k = t["shape"][1]
rows = [idx[i:i + k] for i in range(0, len(idx), k)]
bad = [r for r in rows if len({e // 4 for e in r if e >= 0}) > 1]
sys.exit(1 if bad or not rows else 0)
PY
		echo "ok   max_hosts_per_token=1: one host per token, bitwise the grouped routing"
else
	echo "FAIL: node-limited routing did not run"
	fail=$((fail + 1))
fi
check stop a
start_a drop && wait_state a b up && wait_state a c up || exit 1

# c dies in the middle of a stream
timeout $((120 * slow)) "$moectl" --socket "$tmp/a.sock" workload --batches 3000 --tokens 32 \
	>"$tmp/stream.out" 2>&1 &
stream=$!
sleep 1
calls_b=$(peer_field a b calls)
crash c
if wait "$stream"; then
	d=$(sed -n 's/.*, \([0-9]*\) slots dropped$/\1/p' "$tmp/stream.out")
	check [ "${d:-0}" -gt 0 ] && echo "ok   c killed mid-stream: the stream completed, $d slots dropped"
else
	echo "FAIL: the stream through a did not complete after c died:"
	cat "$tmp/stream.out"
	fail=$((fail + 1))
fi
check [ "$(peer_field a c state)" != up ]
check [ "$(peer_field a b state)" = up ]
check [ "$(peer_field a b calls)" -gt "$calls_b" ] && echo "ok   b kept serving"
start c "" --set "listen=$(addr_of c)" && wait_state a c up &&
	d=$(workload a 100 32) && check [ "$d" = 0 ] && echo "ok   c restarted: reconnected, no drops"

# b hangs
misses=$(peer_field a b deadline_misses)
netns_freeze 2
d=$(workload a 20 32)
check [ "${d:-0}" != fail ] && check [ "${d:-0}" -gt 0 ] &&
	echo "ok   b stopped (SIGSTOP): batches completed with $d slots dropped"
check [ "$(peer_field a b deadline_misses)" -gt "$misses" ]
netns_thaw 2
wait_state a b up && d=$(workload a 50 32) && check [ "$d" = 0 ] &&
	echo "ok   b resumed: back, no drops"

# a partition
netns_down 3
d=$(workload a 20 32)
check [ "${d:-0}" != fail ] && check [ "${d:-0}" -gt 0 ] &&
	echo "ok   c's link down: batches completed with $d slots dropped"
netns_up 3
wait_state a c up && d=$(workload a 50 32) && check [ "$d" = 0 ] &&
	echo "ok   c's link up: back, no drops"

# packet loss: right or reported, never silently wrong
netns_loss 2 20
lossy_ok=1
for i in 1 2 3 4 5; do
	if ! "$moectl" --socket "$tmp/a.sock" forward \
		--model "$tmp/state-a/default-model.safetensors" \
		--input "$tmp/state-a/default-model.safetensors" --output "$tmp/lossy.$i" \
		>"$tmp/lossy.log" 2>&1; then
		echo "FAIL: forward under loss failed:"
		cat "$tmp/lossy.log"
		lossy_ok=0
		continue
	fi
	dropped=$(sed -n 's/.* tokens, \([0-9]*\) slots dropped.*/\1/p' "$tmp/lossy.log")
	if ! cmp -s "$tmp/default.ref" "$tmp/lossy.$i" && [ "${dropped:-0}" = 0 ]; then
		echo "FAIL: under loss an output differs from the reference without drops"
		lossy_ok=0
	fi
done
netns_loss_off 2
check [ "$lossy_ok" = 1 ] && echo "ok   20% loss on b: every output right or its drops reported"
wait_state a b up

# a slow link: a large batch misses the deadline instead of waiting
netns_slow 2 1mbit
d=$(workload a 2 1024)
check [ "${d:-0}" != fail ] && check [ "${d:-0}" -gt 0 ] &&
	echo "ok   b at 1 Mbit/s: a 1024-token batch completed with $d slots dropped"
netns_slow_off 2
wait_state a b up && d=$(workload a 20 32) && check [ "$d" = 0 ] &&
	echo "ok   b's link fast again: no drops"

# peer_failure = error
check stop a
start_a error && wait_state a b up && wait_state a c up
crash b
out=$(timeout $((60 * slow)) "$moectl" --socket "$tmp/a.sock" workload --batches 5 \
	--tokens 32 2>&1)
st=$?
if [ "$st" -eq 1 ] && echo "$out" | grep -q 'No route to host'; then
	echo "ok   peer_failure=error: the batch failed with -EHOSTUNREACH"
else
	echo "FAIL: with peer_failure=error and b gone, workload said ($st): $out"
	fail=$((fail + 1))
fi

# c comes back with another model of the same shape
check stop c
"$moectl" gen-model --output "$tmp/other.safetensors" --seed 99 >/dev/null 2>&1 ||
	{ echo "FAIL: gen-model"; fail=$((fail + 1)); }
start c "$tmp/other.safetensors" --set "listen=$(addr_of c)" &&
	wait_state a c refused &&
	check grep -q 'another model' <<<"$(peer_field a c why)" &&
	check grep -q 'refused' "$tmp/c.log" &&
	echo "ok   c with another model: refused, both logs say why"

check stop a
check stop c
echo "$fail failure(s)"
[ "$fail" -eq 0 ]
