#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The man pages (daemon/man): each renders through man-db and groff without
# a warning, and each says what the programs it documents say about
# themselves, so that a new setting, command or option without
# documentation fails here:
#   moed.conf.5  has an entry for every key `moed --dump-config` prints (the
#                settings table), with the same default and the same
#                "Changes on reload." / "Needs a restart." as the table;
#   moectl.1     has a section (.SS) for every command `moectl --help`
#                lists, and no section for a command that is gone;
#   moed.8       names every option of `moed --help`.
#
# usage: it_man_pages.sh MAN_DIR MOED MOECTL
set -u
man_dir=$1 moed=$2 moectl=$3

command -v man >/dev/null || { echo "SKIP: no man (man-db)"; exit 77; }
command -v groff >/dev/null || { echo "SKIP: no groff (groff-base)"; exit 77; }
fail=0
failed() { echo "FAIL: $*"; fail=1; }

# -- 1. every page renders without warnings (groff's and man-db's) ---------
for page in "$man_dir"/moed.8 "$man_dir"/moed.conf.5 "$man_dir"/moectl.1; do
	out=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
	if [ -n "$out" ]; then
		failed "$(basename "$page") renders with warnings:"
		echo "$out"
	else
		echo "ok: $(basename "$page") renders without warnings"
	fi
done

# The text of one .TP entry of a page whose tag line is ".B KEY", up to the
# next entry or section, on one line, with font escapes removed and \- as -.
entry_text() { # PAGE KEY
	awk -v key="$2" '
		/^\.(TP|SS|SH)/ { if (on) exit; prev = $0; next }
		on { printf "%s ", $0; next }
		prev ~ /^\.TP/ && $0 == ".B " key { on = 1 }
		{ prev = $0 }
	' "$1" | sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g'
}

# -- 2. moed.conf.5 against the settings table ------------------------------
conf=$man_dir/moed.conf.5
dump=$("$moed" --dump-config) || { failed "moed --dump-config failed"; exit 1; }
n_keys=0
doc=
while IFS= read -r line; do
	case $line in
	'#'*) doc=$line; continue ;;
	*' = '* | *' =') ;;
	*) failed "moed --dump-config: unexpected line: $line"; continue ;;
	esac
	key=${line%% =*}
	value=${line#* =}
	value=${value# }
	n_keys=$((n_keys + 1))
	text=$(entry_text "$conf" "$key")
	if [ -z "$text" ]; then
		failed "moed.conf.5 has no entry (.TP, .B $key) for the setting $key"
		continue
	fi
	want_default="Default: ${value:-empty}."
	[ -n "$value" ] && want_default="Default: $value."
	case $doc in
	*'(changes on reload)') want_reload="Changes on reload." ;;
	*) want_reload="Needs a restart." ;;
	esac
	[[ $text == *"$want_default"* ]] ||
		failed "moed.conf.5, $key: expected \"$want_default\" (the table's default) in: $text"
	[[ $text == *"$want_reload"* ]] ||
		failed "moed.conf.5, $key: expected \"$want_reload\" (the table's reload column) in: $text"
done <<<"$dump"
[ "$n_keys" -ge 10 ] || failed "moed --dump-config printed only $n_keys keys"
echo "ok: moed.conf.5 checked against the $n_keys keys of moed --dump-config"

# -- 3. moectl.1 against moectl --help --------------------------------------
page=$man_dir/moectl.1
help=$("$moectl" --help) || { failed "moectl --help failed"; exit 1; }
# the lines of the "commands:" block that start with a command: two blanks,
# the command (one or two words), then two blanks or more
commands=$(awk '/^commands:/ { on = 1; next } on && /^$/ { exit }
	on && /^  [a-z]/ { sub(/^  /, ""); sub(/  .*/, ""); print }' <<<"$help")
[ -n "$commands" ] || failed "no commands found in moectl --help"
while IFS= read -r cmd; do
	[ -n "$cmd" ] || continue
	if grep -qxF ".SS $cmd" "$page"; then
		echo "ok: moectl.1 documents $cmd"
	else
		failed "moectl.1 has no section \".SS $cmd\" for the command $cmd"
	fi
done <<<"$commands"
# and no section for a command moectl does not have
while IFS= read -r ss; do
	grep -qxF "$ss" <<<"$commands" ||
		failed "moectl.1 documents \"$ss\", which moectl --help does not list"
done < <(awk '/^\.SH COMMANDS/ { on = 1; next } on && /^\.SH/ { exit }
	on && /^\.SS / { sub(/^\.SS /, ""); print }' "$page")

# -- 4. moed.8 against moed --help ------------------------------------------
page=$man_dir/moed.8
for opt in $("$moed" --help | grep -o -- '--[a-z-]*' | sort -u); do
	if grep -qF -- "${opt//-/\\-}" "$page"; then
		echo "ok: moed.8 documents $opt"
	else
		failed "moed.8 does not name the option $opt"
	fi
done
exit $fail
