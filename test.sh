#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Set up and pass every test on a fresh Debian 12 machine: install the
# packages, build twice (plain, and with AddressSanitizer +
# UndefinedBehaviorSanitizer), run ctest on both. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"
.ci/install-deps.sh
jobs=$(nproc)
werror=OFF
[ -n "${CI:-}" ] && werror=ON
for variant in plain sanitize; do
	dir=build-test-$variant
	flags=(-DMOE_WERROR=$werror)
	[ $variant = sanitize ] && flags+=(-DMOE_SANITIZE=address,undefined)
	echo "== $variant build"
	cmake -S . -B "$dir" "${flags[@]}" >/dev/null
	cmake --build "$dir" -j "$jobs"
	echo "== $variant tests"
	ctest --test-dir "$dir" --output-on-failure -j "$jobs"
done
