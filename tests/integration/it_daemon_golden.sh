#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Every golden case served by a real moed: for each case a moed is started
# on it (--model CASE) on a private socket, `moectl --socket S forward`
# sends the case's input through libmoe and the shared-memory ring, and the
# reference checker compares the result file with the case. Each moed must
# then drain and exit 0 on SIGTERM. New cases in the folder are picked up
# without a change here.
#
# Each case is then served again on a simulated four-node topology (nodes
# sharing CPUs 0 and 1) with a replica budget, before and after changes
# to its map (a replica of one expert, another expert moved to a third
# node, then that replica dropped): every output must be bitwise the
# one-node output. BASE layers have no homes: their changes are refused,
# and the four-node output is still compared.
#
# usage: it_daemon_golden.sh MOED MOECTL GOLDEN_DIR
set -u
moed=$1
moectl=$2
golden=$3
. "$(dirname "$0")/golden_prereqs.sh"
tmp=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
sock=$tmp/moed.sock
pass=0 fail=0

# start_moed CASE LOG: moed in the background, answering STATUS within 30 s
# (sanitizer builds start slowly); 0, or 1 with the log printed.
start_moed() {
	local case=$1 log=$2 i
	shift 2
	# kernel_calibration=no: the one-node and four-node outputs are compared
	# bitwise, which needs the same kernel bounds in both daemons (bounds
	# measured on a busy machine are not cached, so each start would measure)
	"$moed" --foreground --model "$case" --socket "$sock" --set "state_dir=$tmp/state" \
		--set store_keep=no --set kernel_calibration=no "$@" \
		>"$log" 2>&1 &
	pid=$!
	for i in $(seq 300); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			echo "moed exited with status $? before it served $sock:"
			cat "$log"
			pid=
			return 1
		fi
		if "$moectl" --socket "$sock" status --json >"$tmp/status.json" 2>/dev/null &&
			grep -q "\"pid\": $pid," "$tmp/status.json" &&
			grep -q '"phase": "serving"' "$tmp/status.json"; then
			return 0
		fi
		sleep 0.1
	done
	echo "moed did not answer STATUS on $sock within 30 s:"
	cat "$log"
	kill -9 "$pid"
	wait "$pid" 2>/dev/null
	pid=
	return 1
}

# stop_moed LOG: SIGTERM, then 0 only if moed exits 0 within 30 s
stop_moed() {
	local log=$1 i st
	kill -TERM "$pid"
	for i in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "moed did not exit within 30 s of SIGTERM:"
		cat "$log"
		kill -9 "$pid"
		wait "$pid" 2>/dev/null
		pid=
		return 1
	fi
	wait "$pid"
	st=$?
	pid=
	if [ "$st" -ne 0 ]; then
		echo "moed exited with status $st after SIGTERM (0 expected):"
		cat "$log"
		return 1
	fi
	return 0
}

printf 'node 0 cpus 0\nnode 1 cpus 1\nnode 2 cpus 0\nnode 3 cpus 1\n' >"$tmp/four-nodes"

# forward_same CASE NAME TAG: forward again; 0 if bitwise the one-node output
forward_same() {
	if ! "$moectl" --socket "$sock" forward --input "$1" --output "$tmp/$2.$3.out" \
		>"$tmp/$2.log" 2>&1; then
		echo "FAIL $2 ($3): moectl forward failed:"
		cat "$tmp/$2.log"
		return 1
	fi
	if ! cmp -s "$tmp/$2.out" "$tmp/$2.$3.out"; then
		echo "FAIL $2 ($3): output differs from the one-node output"
		return 1
	fi
}

# change NAME ARGS...: moectl experts ARGS --wait; a BASE layer's refusal is fine
change() {
	local name=$1 out
	shift
	if ! out=$("$moectl" --socket "$sock" experts "$@" --wait 2>&1); then
		case $out in *BASE*) return 2 ;; esac
		echo "FAIL $name: moectl experts $*: $out"
		return 1
	fi
}

# served_on_four_nodes CASE NAME: the output on four simulated nodes, before
# and after map changes, equals the one-node output bitwise
served_on_four_nodes() {
	local case=$1 name=$2 log=$tmp/$2.moed4.log layer ok=0 r
	start_moed "$case" "$log" --set "topology_file=$tmp/four-nodes" \
		--set replica_budget=64M --set placement=interleave || return 1
	forward_same "$case" "$name" four-nodes || ok=1
	# the first MoE layer with two experts or more
	layer=$("$moectl" --socket "$sock" experts --json | /usr/bin/python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next((l["layer"] for l in m["layers"] if len(l["experts"]) > 1), -1))')
	if [ "$ok" -eq 0 ] && [ "$layer" -ge 0 ]; then
		change "$name" replicate "$layer" 0 1
		r=$?
		if [ "$r" -eq 0 ]; then
			change "$name" move "$layer" 1 2 &&
				forward_same "$case" "$name" changed &&
				change "$name" drop "$layer" 0 1 &&
				forward_same "$case" "$name" dropped || ok=1
		elif [ "$r" -eq 1 ]; then
			ok=1
		fi
	fi
	stop_moed "$log" || ok=1
	return $ok
}

for case in "$golden"/cases/*.safetensors; do
	name=$(basename "$case" .safetensors)
	log=$tmp/$name.moed.log
	if ! start_moed "$case" "$log"; then
		echo "FAIL $name: moed did not start"
		fail=$((fail + 1))
		continue
	fi
	ok=1
	if ! "$moectl" --socket "$sock" forward --input "$case" --output "$tmp/$name.out" \
		>"$tmp/$name.log" 2>&1; then
		echo "FAIL $name: moectl forward through moed failed:"
		cat "$tmp/$name.log" "$log"
		ok=0
	elif ! /usr/bin/python3 "$golden/check.py" "$case" "$tmp/$name.out"; then
		echo "FAIL $name: check.py rejected the daemon's result"
		ok=0
	fi
	if ! stop_moed "$log"; then
		echo "FAIL $name: moed did not drain cleanly"
		ok=0
	fi
	if [ "$ok" -eq 1 ] && ! served_on_four_nodes "$case" "$name"; then
		ok=0
	fi
	if [ "$ok" -eq 1 ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
