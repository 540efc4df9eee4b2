#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Every golden case through the real command-line tool and the reference
# checker: moectl forward --model CASE --input CASE writes a result file that
# ../shared/golden/check.py compares with the case. New cases in the folder
# are picked up without a change here.
#
# usage: it_golden_moectl.sh MOECTL GOLDEN_DIR
set -u
moectl=$1
golden=$2
. "$(dirname "$0")/golden_prereqs.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
for case in "$golden"/cases/*.safetensors; do
	name=$(basename "$case" .safetensors)
	if ! "$moectl" forward --model "$case" --input "$case" --output "$tmp/$name.out" \
		2>"$tmp/$name.log"; then
		echo "FAIL $name: moectl forward failed:"
		cat "$tmp/$name.log"
		fail=$((fail + 1))
		continue
	fi
	if /usr/bin/python3 "$golden/check.py" "$case" "$tmp/$name.out"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
