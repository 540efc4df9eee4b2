#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Set up and pass every test on a fresh Debian 12 machine: install the
# packages, then build and run ctest three times: plain (gcc), with
# AddressSanitizer + UndefinedBehaviorSanitizer (gcc), and with clang, the
# sanitizers and libFuzzer (every test again, plus a one-minute smoke run of
# each fuzzer); then a fourth time with ThreadSanitizer (gcc), which builds and
# runs only the concurrency stress tests (ctest label "stress"). The two-node
# NUMA test in a QEMU guest (label "numa-vm") is static and unsanitized: only
# the plain build has it. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"
.ci/install-deps.sh
jobs=$(nproc)
werror=OFF
[ -n "${CI:-}" ] && werror=ON
for variant in plain sanitize fuzz thread; do
	dir=build-test-$variant
	flags=(-DMOE_WERROR=$werror)
	cc=gcc
	case $variant in
	sanitize) flags+=(-DMOE_SANITIZE=address,undefined) ;;
	fuzz) flags+=(-DMOE_SANITIZE=address,undefined -DMOE_FUZZ=ON); cc=clang ;;
	thread) flags+=(-DMOE_SANITIZE=thread) ;;
	esac
	echo "== $variant build ($cc)"
	CC=$cc cmake -S . -B "$dir" "${flags[@]}" >/dev/null
	if [ "$variant" = thread ]; then
		# Only the tests written to race (label "stress") run here, and
		# only their targets are built.
		cmake --build "$dir" --target stress_shm_ring stress_pool stress_executor -j "$jobs"
		echo "== $variant tests"
		ctest --test-dir "$dir" -L stress --output-on-failure
		continue
	fi
	cmake --build "$dir" -j "$jobs"
	echo "== $variant tests"
	ctest --test-dir "$dir" --output-on-failure -j "$jobs"
done
