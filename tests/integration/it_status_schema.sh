#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The status JSON as documented: `moectl status --json` of a real moed is
# valid against daemon/control/status.schema.json (JSON Schema 2020-12,
# every object closed), on one host with a client connected and the
# configuration shown (root), and with peers configured (one unreachable,
# so the peers object is filled in) and bf16_dot on (reported where the
# CPU has AVX512_BF16, refused with a warning elsewhere). A field moed adds without documenting
# it, or one it drops or retypes, fails here.
#
# usage: it_status_schema.sh MOED MOECTL SCHEMA
set -u
moed=$1 moectl=$2 schema=$3
py=/usr/bin/python3
$py -c 'import jsonschema' 2>/dev/null || { echo "SKIP: no python3-jsonschema"; exit 77; }
tmp=$(mktemp -d)
shm=$(mktemp -d /dev/shm/moed-schema.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp" "$shm"
}
trap cleanup EXIT
fail=0

# start_moed NAME [--set KEY=VALUE...]: a moed on $tmp/NAME.sock, waited for
start_moed() {
	local name=$1
	shift
	"$moed" --foreground --socket "$tmp/$name.sock" --set state_dir="$tmp/state" \
		--set store_dir="$shm" --set store_keep=no "$@" 2>>"$tmp/$name.log" &
	pids+=($!)
	for _ in $(seq 600); do
		"$moectl" --socket "$tmp/$name.sock" status --json 2>/dev/null |
			grep -q '"phase": "serving"' && return 0
		sleep 0.1
	done
	echo "FAIL: moed $name did not start:"
	cat "$tmp/$name.log"
	exit 1
}

validate() { # validate WHAT FILE
	if $py - "$schema" "$2" <<'PY'; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
doc = json.load(open(sys.argv[2]))
# the form the phase names, so that errors point into it rather than at oneOf
form = dict(schema, oneOf=None, **{"$ref": "#/$defs/" + doc["daemon"]["phase"]})
del form["oneOf"]
errors = sorted(Draft202012Validator(form).iter_errors(doc), key=lambda e: list(e.absolute_path))
errors += list(Draft202012Validator(schema).iter_errors(doc))[:1 if not errors else 0]
for e in errors[:10]:
    print("  at /%s: %s" % ("/".join(map(str, e.absolute_path)), e.message[:300]))
sys.exit(1 if errors else 0)
PY
}

start_moed one
"$moectl" --socket "$tmp/one.sock" workload --batches 1000000 >"$tmp/workload.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	"$moectl" --socket "$tmp/one.sock" status --json >"$tmp/one.json" 2>/dev/null &&
		grep -q '"in_flight"' "$tmp/one.json" && break
	sleep 0.1
done
if ! grep -q '"in_flight"' "$tmp/one.json"; then
	echo "FAIL: the workload's client never showed:"
	cat "$tmp/workload.log"
	fail=1
fi
grep -q '"config"' "$tmp/one.json" || { echo "FAIL: no config for root"; fail=1; }
grep -q '"bf16_dot": false' "$tmp/one.json" || { echo "FAIL: bf16_dot not off by default"; fail=1; }
validate "one host, a client connected, the configuration shown" "$tmp/one.json"

start_moed two --set listen=127.0.0.1:17491 --set peers=b=127.0.0.1:17492 \
	--set expert_hosts=6-7@b --set peer_failure=drop --set bf16_dot=yes
"$moectl" --socket "$tmp/two.sock" workload --batches 2 >/dev/null 2>&1
"$moectl" --socket "$tmp/two.sock" status --json >"$tmp/two.json"
grep -q '"served_by_us"' "$tmp/two.json" || { echo "FAIL: no peers object"; fail=1; }
want_dot=false
grep -qw avx512_bf16 /proc/cpuinfo && want_dot=true
grep -q "\"bf16_dot\": $want_dot" "$tmp/two.json" ||
	{ echo "FAIL: bf16_dot = yes, expected \"bf16_dot\": $want_dot in the status"; fail=1; }
validate "peers configured, one unreachable" "$tmp/two.json"
exit $fail
