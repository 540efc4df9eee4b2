#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Run a libFuzzer target for a bounded time as a smoke test: a fresh corpus
# folder (where libFuzzer writes what it finds) seeded from the given
# folders, a fixed seed so a failure can be replayed, and inputs capped at
# 64 KiB so each run stays fast. A crash leaves its input in the corpus
# folder and fails the test.
#
# usage: run_fuzzer.sh FUZZER SECONDS [SEED_DIR ...]
set -u
fuzzer=$1
seconds=$2
shift 2
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
seeds=()
for d in "$@"; do
	[ -d "$d" ] && seeds+=("$d")
done
"$fuzzer" -max_total_time="$seconds" -seed=1 -max_len=65536 -timeout=10 \
	-rss_limit_mb=2048 -artifact_prefix="$corpus/" -print_final_stats=1 \
	"$corpus" "${seeds[@]}" 2>&1 | tail -15
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
	echo "FAIL: $(basename "$fuzzer") exited $status; artifacts:"
	ls "$corpus"/crash-* "$corpus"/leak-* "$corpus"/timeout-* 2>/dev/null
	exit 1
fi
