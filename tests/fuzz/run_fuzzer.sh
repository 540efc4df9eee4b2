#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Run a libFuzzer target for a bounded time as a smoke test: a fresh corpus
# folder (where libFuzzer writes what it finds, removed on exit) seeded from
# the given folders, a fixed seed so a failure can be replayed, and inputs
# capped at 64 KiB so each run stays fast. A crash, leak or timeout fails
# the test and leaves its input in a kept folder,
# $MOE_FUZZ_ARTIFACTS/FUZZER-DATE-PID (default: ./fuzz-artifacts, i.e. under
# the build tree when ctest runs it); the test prints its path, a hexdump
# and the command that replays it. A run that finds nothing removes its
# empty folder.
#
# usage: run_fuzzer.sh FUZZER SECONDS [SEED_DIR ...]
set -u
fuzzer=$1
seconds=$2
shift 2
name=$(basename "$fuzzer")
artifacts_base=${MOE_FUZZ_ARTIFACTS:-$PWD/fuzz-artifacts}
artifacts="$artifacts_base/$name-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$artifacts" || exit 1
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"; rmdir "$artifacts" 2>/dev/null' EXIT
seeds=()
for d in "$@"; do
	[ -d "$d" ] && seeds+=("$d")
done
"$fuzzer" -max_total_time="$seconds" -seed=1 -max_len=65536 -timeout=10 \
	-rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 \
	"$corpus" "${seeds[@]}" 2>&1 | tail -40
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
	echo "FAIL: $name exited $status; inputs kept in $artifacts:"
	found=0
	for f in "$artifacts"/*; do
		[ -f "$f" ] || continue
		found=1
		echo "--- $f ($(stat -c %s "$f") bytes); replay: $fuzzer $f"
		od -A x -t x1z -v "$f" | head -64
	done
	[ "$found" = 1 ] || echo "(none: $name failed without writing an input)"
	exit 1
fi
