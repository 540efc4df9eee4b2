#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Set up and run moed's main job on a fresh Debian 12 machine: install the
# packages, build, start moed on its embedded default model (8 experts,
# top-2, SiLU-gated, Mixtral names: generated into its state folder on the
# first start), drive a client workload through libmoe (moectl workload:
# batches through every layer, a progress line on a terminal), print
# `moectl status`, and stop moed cleanly (SIGTERM drains it; exit 0).
set -euo pipefail
cd "$(dirname "$0")"
.ci/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)"
moed=build/daemon/moed
moectl=build/daemon/moectl
state=$PWD/build/state
socket=$state/moed.sock
mkdir -p "$state"

"$moed" --foreground --socket "$socket" --set state_dir="$state" 2>"$state/moed.log" &
moed_pid=$!
trap 'kill "$moed_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	# moed answers while it loads its experts ("phase": "loading"): wait for serving
	"$moectl" --socket "$socket" status --json 2>/dev/null | grep -q '"phase": "serving"' && break
	kill -0 "$moed_pid" 2>/dev/null || { cat "$state/moed.log"; exit 1; }
	sleep 0.2
done
echo "== moed (pid $moed_pid) serves $socket (log: $state/moed.log)"
"$moectl" --socket "$socket" workload --batches 400 --tokens 32
echo "== moectl status"
"$moectl" --socket "$socket" status
kill -TERM "$moed_pid"
status=0
wait "$moed_pid" || status=$?
trap - EXIT
echo "== moed stopped (exit $status)"
tail -n 3 "$state/moed.log"
exit "$status"
