#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run-mutants.sh: does the test suite notice when an invariant breaks? It
# copies the tree (the files git knows plus untracked ones it does not
# ignore, as they are in the working tree, uncommitted changes included)
# into a scratch folder, configures and builds it once, runs every mutant's
# tests unmutated (the baseline: a test that fails already cannot kill
# anything), then for each mutant of tests/mutation/mutants.txt: replaces its
# one-line snippet, rebuilds incrementally, runs its ctest regex, and puts
# the file back. A mutant is killed when one of its tests fails; one that
# survives names an invariant that no test pins. The source tree itself is
# never touched.
#
# On demand, not in CI (it rebuilds and runs integration tests once per
# mutant: the whole list takes 7 to 20 minutes on 2 CPUs, the first build
# included):
#
#     tests/mutation/run-mutants.sh              # every mutant
#     tests/mutation/run-mutants.sh NAME...      # only these
#     tests/mutation/run-mutants.sh --list       # names and invariants
#
# Environment: MUT_JOBS (build and ctest parallelism, default 2), MUT_WORKDIR
# (a scratch folder to use and keep: a second run there rebuilds only what
# changed; default a temporary folder removed at exit), MUT_TIMEOUT (seconds
# for one mutant's tests, default 1800; a timeout counts as killed and says
# so), MUT_CMAKE_ARGS (more cmake options, e.g. -DMOE_SANITIZE=address,undefined).
#
# Exit status: 0 when every mutant was killed; 1 when one survived, is stale
# (its snippet does not occur exactly once) or does not build; 2 when the
# baseline fails or the tree cannot be built.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(git -C "$here" rev-parse --show-toplevel) || exit 2
list_file=$here/mutants.txt
jobs=${MUT_JOBS:-2}
test_timeout=${MUT_TIMEOUT:-1800}

usage() {
	sed -n '/^# On demand/,/^# baseline fails/p' "$0" | sed 's/^# \{0,1\}//'
}

# ---- the mutants list ----

names=() files=() origs=() muts=() regexes=() invs=()

trim() {
	local s=$1

	s=${s#"${s%%[![:space:]]*}"}
	s=${s%"${s##*[![:space:]]}"}
	printf '%s' "$s"
}

# Append the record being read, if any, after checking it is complete.
flush_record() {
	[ -z "$r_name$r_file$r_orig$r_mut$r_tests" ] && return 0
	if [ -z "$r_name" ] || [ -z "$r_file" ] || [ -z "$r_orig" ] || [ -z "$r_tests" ] ||
		[ "$r_mut_set" != 1 ]; then
		echo "$list_file: incomplete record ending at line $lineno (name '$r_name')" >&2
		exit 2
	fi
	names+=("$r_name") files+=("$r_file") origs+=("$r_orig") muts+=("$r_mut")
	regexes+=("$r_tests") invs+=("$r_inv")
	r_name='' r_file='' r_orig='' r_mut='' r_mut_set=0 r_tests='' r_inv=''
}

read_mutants() {
	local line key val

	r_name='' r_file='' r_orig='' r_mut='' r_mut_set=0 r_tests='' r_inv='' lineno=0
	while IFS= read -r line || [ -n "$line" ]; do
		lineno=$((lineno + 1))
		[[ $line == \#* ]] && continue
		if [[ -z ${line//[[:space:]]/} ]]; then
			flush_record
			continue
		fi
		key=${line%%:*}
		val=$(trim "${line#*:}")
		case $key in
		name) r_name=$val ;;
		file) r_file=$val ;;
		original) r_orig=$val ;;
		mutant) r_mut=$val r_mut_set=1 ;;
		tests) r_tests=$val ;;
		invariant) r_inv=$val ;;
		*)
			echo "$list_file:$lineno: unknown field '$key'" >&2
			exit 2
			;;
		esac
	done <"$list_file"
	flush_record
}

read_mutants

if [ "${1:-}" = --list ]; then
	for i in "${!names[@]}"; do
		printf '%-28s %-34s %s\n' "${names[$i]}" "${files[$i]}" "${invs[$i]}"
	done
	exit 0
fi
if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
	usage
	exit 0
fi

# Which mutants to run: all, or those named.
selected=()
if [ $# -eq 0 ]; then
	selected=("${!names[@]}")
else
	for want in "$@"; do
		found=
		for i in "${!names[@]}"; do
			[ "${names[$i]}" = "$want" ] && found=$i
		done
		if [ -z "$found" ]; then
			echo "no mutant named '$want' (--list shows them)" >&2
			exit 2
		fi
		selected+=("$found")
	done
fi

# ---- the scratch copy ----

if [ -n "${MUT_WORKDIR:-}" ]; then
	work=$MUT_WORKDIR
	mkdir -p "$work" || exit 2
else
	work=$(mktemp -d "${TMPDIR:-/tmp}/moed-mutants.XXXXXX") || exit 2
	# the copy and its build go; the logs stay for a look at a survivor
	trap 'rm -rf "$work/src" "$work/build" "$work/stage" "$work/original"' EXIT
fi
src=$work/src
build=$work/build
logs=$work/logs
mkdir -p "$src" "$logs"

echo "== copying $top into $src"
# Tracked and untracked-but-not-ignored files as they are now; a tracked
# file deleted in the working tree is left out. They land in a staging
# folder first, and only a file whose content differs from the copy's is
# copied over (with a fresh mtime): so a kept MUT_WORKDIR rebuilds only
# what changed, and never mistakes an object built from a mutant for one
# built from the original (the original's old mtime would).
stage=$work/stage
rm -rf "$stage" && mkdir -p "$stage" || exit 2
(cd "$top" && git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do
		[ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
	done | tar -cf - --null -T -) | tar -xf - -C "$stage" || exit 2
(cd "$stage" && find . \( -type f -o -type l \) -print0) |
	while IFS= read -r -d '' f; do
		cmp -s "$stage/$f" "$src/$f" && continue
		mkdir -p "$(dirname "$src/$f")" && cp -P "$stage/$f" "$src/$f" || exit 2
	done || exit 2
rm -rf "$stage"

cmake_args=()
# The golden cases live beside the repository, which the copy is not.
golden=$(cd "$top/.." && pwd)/shared/golden
[ -d "$golden" ] && cmake_args+=("-DMOE_GOLDEN_DIR=$golden")
# shellcheck disable=SC2206 # word splitting of extra options is wanted
[ -n "${MUT_CMAKE_ARGS:-}" ] && cmake_args+=(${MUT_CMAKE_ARGS})

echo "== configuring and building (-j$jobs; log: $logs/build.log)"
if ! cmake -S "$src" -B "$build" "${cmake_args[@]}" >"$logs/build.log" 2>&1 ||
	! cmake --build "$build" -j "$jobs" >>"$logs/build.log" 2>&1; then
	tail -30 "$logs/build.log"
	echo "the unmutated tree does not build" >&2
	exit 2
fi

# ---- stale mutants: the snippet must occur exactly once ----

# Number of literal occurrences of $2 in file $1.
count_in() {
	local content rest n=0

	content=$(cat "$1" && printf x) || return 1
	rest=${content%x}
	while [[ $rest == *"$2"* ]]; do
		rest=${rest#*"$2"}
		n=$((n + 1))
	done
	echo "$n"
}

declare -A result detail
runnable=()
all_tests=''
for i in "${selected[@]}"; do
	f=$src/${files[$i]}
	if [ ! -f "$f" ]; then
		result[$i]=STALE detail[$i]="${files[$i]} does not exist"
		continue
	fi
	n=$(count_in "$f" "${origs[$i]}")
	if [ "$n" != 1 ]; then
		result[$i]=STALE detail[$i]="snippet found $n times in ${files[$i]}, not once"
		continue
	fi
	# a regex that names no test would count as a kill (ctest --no-tests=error)
	matched=$(ctest --test-dir "$build" -N -R "${regexes[$i]}" |
		sed -n 's/^ *Test *#[0-9]*: *\([^ ]*\).*/\1/p')
	if [ -z "$matched" ]; then
		result[$i]=STALE detail[$i]="no test matches ${regexes[$i]}"
		continue
	fi
	all_tests+=$'\n'$matched
	runnable+=("$i")
done

# ---- baseline: every test a mutant relies on passes unmutated ----

# Names of the tests ctest reports as failed (or timed out) in log $1.
failed_tests() {
	sed -n '/The following tests FAILED/,$ s/^[[:space:]]*[0-9]* - \([^ ]*\) (.*/\1/p' "$1" |
		sort -u | tr '\n' ' '
}

if [ ${#runnable[@]} -gt 0 ]; then
	# by name, in one group: CMake's regular expressions allow few groups
	union="^($(sort -u <<<"$all_tests" | grep . | paste -sd '|'))\$"
	echo "== baseline: the mutants' tests on the unmutated tree (log: $logs/baseline.log)"
	if ! ctest --test-dir "$build" -R "$union" --no-tests=error -j "$jobs" \
		--output-on-failure >"$logs/baseline.log" 2>&1; then
		tail -40 "$logs/baseline.log"
		echo "baseline fails ($(failed_tests "$logs/baseline.log")): fix that first;" \
			"a failing test cannot kill a mutant" >&2
		exit 2
	fi
	skipped=$(sed -n 's/^.*Test *#[0-9]*: \([^ ]*\) .*\*\*\*Skipped.*/\1/p' \
		"$logs/baseline.log" | tr '\n' ' ')
	grep -E '(tests passed|Total Test time)' "$logs/baseline.log"
	[ -n "$skipped" ] && echo "   skipped at baseline (cannot kill anything here): $skipped"
fi

# ---- the mutants ----

# Replace the one occurrence of $2 by $3 in file $1 (literal, no regex).
apply_mutant() {
	local content

	content=$(cat "$1" && printf x) || return 1
	content=${content%x}
	printf '%s' "${content/"$2"/"$3"}" >"$1"
}

for i in "${runnable[@]}"; do
	name=${names[$i]}
	f=$src/${files[$i]}
	log=$logs/$name.log
	echo "== $name: ${files[$i]}: ${invs[$i]}"
	cp "$f" "$work/original" || exit 2
	apply_mutant "$f" "${origs[$i]}" "${muts[$i]}"
	if ! cmake --build "$build" -j "$jobs" >"$log" 2>&1; then
		result[$i]=NO-BUILD detail[$i]="the mutant does not compile (see $log)"
	else
		timeout "$test_timeout" ctest --test-dir "$build" -R "${regexes[$i]}" \
			--no-tests=error -j "$jobs" --output-on-failure >>"$log" 2>&1
		rc=$?
		ran=$(sed -n 's/.*tests passed, [0-9]* tests failed out of \([0-9]*\).*/\1/p' "$log")
		if [ $rc -eq 124 ]; then
			result[$i]=KILLED detail[$i]="its tests timed out after ${test_timeout}s"
		elif [ $rc -ne 0 ]; then
			result[$i]=KILLED detail[$i]="failed: $(failed_tests "$log")"
		else
			result[$i]=SURVIVED detail[$i]="all ${ran:-?} tests of ${regexes[$i]} pass"
		fi
	fi
	# A fresh mtime, so that the next build compiles the original again.
	cp "$work/original" "$f" || exit 2
	echo "   ${result[$i]}: ${detail[$i]}"
done

# A kept copy's build matches its sources again (the last original is back).
if [ -n "${MUT_WORKDIR:-}" ] && [ ${#runnable[@]} -gt 0 ]; then
	cmake --build "$build" -j "$jobs" >"$logs/rebuild.log" 2>&1 ||
		echo "warning: rebuilding the restored copy failed (see $logs/rebuild.log)"
fi

# ---- report ----

killed=0 bad=0
echo
echo "== mutation report (tree: $(git -C "$top" rev-parse --short HEAD)$(
	git -C "$top" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes'))"
for i in "${selected[@]}"; do
	printf '%-9s %-28s %s\n' "${result[$i]}" "${names[$i]}" "${invs[$i]}"
	[ "${result[$i]}" = KILLED ] || printf '%-9s %-28s %s\n' "" "" "${detail[$i]}"
	if [ "${result[$i]}" = KILLED ]; then
		killed=$((killed + 1))
	else
		bad=$((bad + 1))
	fi
done
echo "killed $killed of ${#selected[@]} mutants"
echo "logs: $logs"
[ $bad -eq 0 ]
