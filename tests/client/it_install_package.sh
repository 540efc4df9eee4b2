#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Install libmoe from a build tree into a temporary prefix and use it as an
# outside project would: build the consumer in consumer/ with CMake
# (find_package(moe), moe::moe) and with pkg-config, run both, and check the
# shared object's contract: SONAME libmoe.so.1, only moe_* symbols exported,
# every one in version node MOE_1 (or a later MOE_1.N) and declared in moe.h, and find_package
# refusing another major version.
#
#   it_install_package.sh BUILD_DIR CONSUMER_DIR [CC] [MOE_SANITIZE]
#
# With sanitizers, libmoe.so needs their runtime, so the consumer is built
# with the same -fsanitize flags. Exits 77 (skip) when a tool is missing.
set -euo pipefail

build=${1:?build dir}
consumer_src=${2:?consumer dir}
cc=${3:-cc}
sanitize=${4:-}

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

for tool in cmake pkg-config readelf nm "$cc"; do
	command -v "$tool" >/dev/null || skip "$tool not found"
done
[ -d "$build/libclient" ] || fail "$build is not a moed build tree"

tmp=$(mktemp -d /tmp/moe-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

# Only libmoe's component: the rest of the tree need not be built.
cmake --install "$build" --prefix "$prefix" --component libmoe >/dev/null ||
	fail "cmake --install (is target moe built?)"

lib=$(find "$prefix" -name 'libmoe.so.1' -print -quit)
[ -n "$lib" ] || fail "no libmoe.so.1 under $prefix"
libdir=$(dirname "$lib")
for f in "$prefix/include/moe.h" "$libdir/libmoe.so" "$libdir/pkgconfig/moe.pc" \
	 "$libdir/cmake/moe/moeConfig.cmake" "$libdir/cmake/moe/moeConfigVersion.cmake" \
	 "$libdir/cmake/moe/moeTargets.cmake"; do
	[ -e "$f" ] || fail "not installed: ${f#"$prefix"/}"
done
# Nothing but libmoe's own files (no static moe_shm, no internal headers).
extra=$(cd "$prefix" && find . \( -type f -o -type l \) | grep -vE \
	'^\./include/moe\.h$|/libmoe\.so(\.1(\.[0-9]+\.[0-9]+)?)?$|/pkgconfig/moe\.pc$|/cmake/moe/moe[A-Za-z-]*\.cmake$' || true)
[ -z "$extra" ] || fail "unexpected installed files: $extra"

# ---- the shared object's contract ----
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libmoe.so.1" ] || fail "SONAME is '$soname', expected libmoe.so.1"

syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
[ -n "$syms" ] || fail "no exported symbols"
declared=$(sed -n 's/^MOE_API .*[ *]\(moe_[a-z_]*\)(.*/\1/p' "$prefix/include/moe.h" | sort)
exported=""
for s in $syms; do
	case "$s" in
	MOE_1 | MOE_1.[0-9]*) continue ;; # the version nodes themselves
	moe_*@@MOE_1 | moe_*@@MOE_1.[0-9]*) exported="$exported ${s%@@MOE_1*}" ;;
	*) fail "exported symbol outside moe_*/MOE_1[.N]: $s" ;;
	esac
done
exported=$(printf '%s\n' $exported | sort)
[ "$exported" = "$declared" ] ||
	fail "exports differ from moe.h's MOE_API list:"$'\n'"$(diff <(echo "$declared") <(echo "$exported") || true)"
echo "libmoe.so.1: SONAME ok, $(echo "$exported" | wc -l) symbols, all moe_* in MOE_1 or MOE_1.N"

sanflags=()
if [ -n "$sanitize" ]; then
	sanflags=(-fsanitize="$sanitize" -fno-omit-frame-pointer)
fi
want=$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --modversion moe)

# ---- CMake consumer ----
cmake -S "$consumer_src" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
	-DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="${sanflags[*]}" \
	-DCMAKE_EXE_LINKER_FLAGS="${sanflags[*]}" >"$tmp/cmake.log" 2>&1 ||
	{ cat "$tmp/cmake.log"; fail "consumer: cmake configure"; }
cmake --build "$tmp/cmake-build" >"$tmp/build.log" 2>&1 ||
	{ cat "$tmp/build.log"; fail "consumer: cmake build"; }
readelf -d "$tmp/cmake-build/consumer" | grep -q 'NEEDED.*\[libmoe\.so\.1\]' ||
	fail "consumer (CMake) does not need libmoe.so.1"
got=$(LD_LIBRARY_PATH="$libdir" "$tmp/cmake-build/consumer") || fail "consumer (CMake) failed"
[ "$got" = "$want" ] || fail "consumer (CMake) printed '$got', expected '$want'"
echo "CMake consumer: $got"

# SameMajorVersion: the next major must not be accepted.
next=$(( ${want%%.*} + 1 )).0
if cmake -S "$consumer_src" -B "$tmp/cmake-build-next" -DCMAKE_PREFIX_PATH="$prefix" \
	-DCMAKE_C_COMPILER="$cc" -DMOE_REQUIRED_VERSION="$next" >/dev/null 2>&1; then
	fail "find_package(moe $next) accepted version $want"
fi

# ---- pkg-config consumer ----
pcflags=$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs moe) ||
	fail "pkg-config moe"
# shellcheck disable=SC2086 # pcflags is a list of words
"$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror "${sanflags[@]}" \
	-o "$tmp/consumer-pc" "$consumer_src/consumer.c" $pcflags ||
	fail "consumer (pkg-config) build with: $pcflags"
got=$(LD_LIBRARY_PATH="$libdir" "$tmp/consumer-pc") || fail "consumer (pkg-config) failed"
[ "$got" = "$want" ] || fail "consumer (pkg-config) printed '$got', expected '$want'"
echo "pkg-config consumer: $got ($pcflags)"
echo "PASS"
