#!/bin/bash
# SPDX-License-Identifier: MIT
#
# moectl's bash completion: the first word completes to every command of
# `moectl --help` (and nothing else), a command's options to those of its
# usage (status: --json; reload: --timeout; top: --interval, --batch,
# --iterations), experts to its subcommands, --socket to a file.
#
# usage: it_completion.sh COMPLETION_FILE MOECTL
set -u
completion=$1 moectl=$2
fail=0

# complete WORD...: what _moectl offers for the last word
complete_words() {
	bash -c '
		. "$0"
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		_moectl
		printf "%s\n" "${COMPREPLY[@]}" | sort
	' "$completion" "$@"
}

expect() { # expect WHAT WANT GOT
	if [ "$2" = "$3" ]; then
		echo "ok: $1"
	else
		echo "FAIL: $1: want [$2], got [$3]"
		fail=1
	fi
}

commands=$("$moectl" --help | sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p' | sort)
[ "$(echo "$commands" | wc -l)" -ge 10 ] || { echo "FAIL: moectl --help lists too few commands"; exit 1; }
expect "the commands" "$(printf '%s\n' --socket $commands | sort)" "$(complete_words "$moectl" "")"
expect "after --socket PATH too" "$(printf '%s\n' $commands | grep '^re' | sort)" \
	"$(complete_words "$moectl" --socket /run/moed/moed.sock re)"
expect "status options" "$(printf '%s\n' --help --json | sort)" \
	"$(complete_words "$moectl" status --)"
expect "reload options" "$(printf '%s\n' --help --timeout | sort)" \
	"$(complete_words "$moectl" reload --)"
expect "top options" "$(printf '%s\n' --batch --help --interval --iterations | sort)" \
	"$(complete_words "$moectl" top --)"
expect "experts subcommands" "$(printf '%s\n' --json drop move replicate | sort)" \
	"$(complete_words "$moectl" experts "")"
dir=$(mktemp -d)
touch "$dir/moed.sock"
expect "--socket completes a file" "$dir/moed.sock" "$(complete_words "$moectl" --socket "$dir/mo")"
rm -rf "$dir"
exit $fail
