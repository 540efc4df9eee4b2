#!/bin/bash
# SPDX-License-Identifier: MIT
#
# moectl gen-model in every layout and dtype, one file and sharded, then
# moectl forward on each, with outputs compared bitwise across layouts and
# against F32 copies of the BF16/F16 values, and the failures a user meets: a truncated model,
# a header that lies, a wrong input width, NaN in the input, a bad option.
# Each must fail with exit status 1 (2 for usage) and a message naming the
# file, never a crash.
#
# usage: it_gen_model_forward.sh MOECTL
set -u
moectl=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# run: expect exit status $1 from the command; $2: a pattern the log must hold
expect() {
	local want=$1 pattern=$2
	shift 2
	"$@" >"$tmp/log" 2>&1
	local got=$?
	if [ "$got" -ne "$want" ]; then
		bad "expected exit $want, got $got: $*"
		cat "$tmp/log"
	elif [ -n "$pattern" ] && ! grep -q -- "$pattern" "$tmp/log"; then
		bad "no '$pattern' in the output of: $*"
		cat "$tmp/log"
	else
		ok
	fi
}

# Outputs, not only exit codes. With one seed and shape, gen-model writes the
# same values whatever the layout, so moectl forward must give bitwise-equal
# outputs (every tensor: output, routing, aux loss) under moed-native,
# Mixtral, Qwen2-MoE and DeepSeek names; with a shared expert (not in
# Mixtral; Qwen2-MoE adds its gate, so it is compared with its own values
# renamed to moed-native names) likewise. A BF16 or F16 file must give the
# same bits as an F32 file holding its values widened (st_tool.py widen):
# moed keeps half-precision experts in their dtype and widens in registers,
# so with the same kernel (--kernel smallm: F32 would take sgemv for one
# row, which has no half-precision form) the sums are the same sums.
if ! /usr/bin/python3 -c 'import json, re, struct' 2>/dev/null; then
	[ "${CI:-}" = true ] && { echo "FAIL: /usr/bin/python3 is needed under CI"; exit 1; }
	echo "SKIP: no /usr/bin/python3 to compare outputs"
	exit 77
fi
st() { /usr/bin/python3 "$(dirname "$0")/st_tool.py" "$@"; }
# same A B WHAT: the forward outputs A and B are bitwise equal
same() {
	if st same "$1" "$2" >"$tmp/cmp" 2>&1; then
		ok
	else
		bad "$3"
		cat "$tmp/cmp"
	fi
}
# fwd MODEL OUT [OPTION...]: forward layer 1 of MODEL on its own input
fwd() {
	local model=$1 out=$2
	shift 2
	expect 0 "9 tokens" "$moectl" forward --model "$model" --input "$model" --output "$out" \
		--layer 1 "$@"
}

for shared in 0 96; do
	extra=()
	[ "$shared" = 0 ] || extra=(--shared-d-ff "$shared")
	for layout in moed mixtral qwen2_moe deepseek; do
		[ "$shared" != 0 ] && [ "$layout" = mixtral ] && continue
		for dtype in f32 bf16 f16; do
			m="$tmp/$layout-$shared-$dtype"
			expect 0 "" "$moectl" gen-model --output "$m.safetensors" --layout "$layout" \
				--dtype "$dtype" --d-model 64 --d-ff 128 --experts 8 --layers 2 \
				--tokens 9 --seed 5 "${extra[@]}"
			fwd "$m.safetensors" "$m.out"
			[ "$dtype" = f32 ] && continue
			st widen "$m.safetensors" "$m-widened.safetensors" || bad "widen $m"
			fwd "$m.safetensors" "$m.out" --kernel smallm
			fwd "$m-widened.safetensors" "$m-widened.out" --kernel smallm
			same "$m.out" "$m-widened.out" "$layout $dtype: output differs from F32 of the same values"
		done
		m="$tmp/$layout-$shared-f32"
		if [ "$layout" != moed ]; then
			st to-moed "$m.safetensors" "$m-renamed.safetensors" || bad "rename $m"
			fwd "$m-renamed.safetensors" "$m-renamed.out"
			same "$m.out" "$m-renamed.out" "$layout: output differs under moed-native names"
		fi
		[ "$shared" != 0 ] && [ "$layout" = qwen2_moe ] && continue
		same "$tmp/moed-$shared-f32.out" "$m.out" \
			"$layout (shared d_ff $shared): output differs from moed-native's"
	done
done

# sharded: a folder with model.safetensors.index.json
expect 0 "" "$moectl" gen-model --output "$tmp/sharded" --shards 3 --layers 3 --d-model 32 \
	--d-ff 64 --tokens 5
expect 0 "5 tokens" "$moectl" forward --model "$tmp/sharded" \
	--input "$tmp/sharded/model-00003-of-00003.safetensors" --output "$tmp/o" --layer 2

# every router family on a generated moed-native model, with overrides
m="$tmp/moed.safetensors"
"$moectl" gen-model --output "$m" --layout moed --router topk --top-k 2 --d-model 32 \
	--d-ff 64 --experts 8 --tokens 16 2>/dev/null
expect 0 "" "$moectl" forward --model "$m" --input "$m" --output "$tmp/o" --router switch \
	--capacity-factor 0.5 --drop passthrough
expect 0 "" "$moectl" forward --model "$m" --input "$m" --output "$tmp/o" --router gshard \
	--second-policy random --second-threshold 0.3 --seed 7
expect 0 "" "$moectl" forward --model "$m" --input "$m" --output "$tmp/o" --router gshard \
	--top2-variant fairscale --capacity-factor 1
expect 0 "" "$moectl" forward --model "$m" --input "$m" --output "$tmp/o" --router topk \
	--top-k 8 --score sigmoid --normalize true --priority score --capacity-factor 1
expect 0 "" "$moectl" forward --model "$m" --input "$m" --output "$tmp/o" --threads 1 \
	--kernel sgemm

# failures: clear messages, no crash
expect 2 "required" "$moectl" forward --model "$m"
expect 2 "top_k" "$moectl" forward --model "$m" --input "$m" --output "$tmp/o" --top-k
expect 1 "top_k 9 is not within" "$moectl" forward --model "$m" --input "$m" \
	--output "$tmp/o" --top-k 9
expect 1 "not an MoE layer" "$moectl" forward --model "$m" --input "$m" --output "$tmp/o" \
	--layer 5
expect 1 "$tmp/none" "$moectl" forward --model "$tmp/none" --input "$m" --output "$tmp/o"
size=$(stat -c %s "$m")
head -c $((size - 100)) "$m" >"$tmp/truncated.safetensors"
expect 1 "truncated.safetensors" "$moectl" forward --model "$tmp/truncated.safetensors" \
	--input "$m" --output "$tmp/o"
# a header length that points past the end of the file
{ printf '\xff\xff\xff\x00\x00\x00\x00\x00'; tail -c +9 "$m"; } >"$tmp/lying.safetensors"
expect 1 "lying.safetensors" "$moectl" forward --model "$tmp/lying.safetensors" \
	--input "$m" --output "$tmp/o"
# an input of the wrong width
w="$tmp/wide.safetensors"
"$moectl" gen-model --output "$w" --layout moed --d-model 48 --d-ff 64 --tokens 3 2>/dev/null
expect 1 "must be" "$moectl" forward --model "$m" --input "$w" --output "$tmp/o"
# NaN in the input fails the batch with EDOM; sanitize lets it through
if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
	/usr/bin/python3 - "$m" "$tmp/nan.safetensors" <<'PY'
import json, struct, sys
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    data = f.read()
a, b = h["input"]["data_offsets"]
x = np.frombuffer(data[a:b], dtype=np.float32).copy()
x[5] = np.nan
x[40] = np.inf
hdr = json.dumps({"input": {"dtype": "F32", "shape": h["input"]["shape"],
                            "data_offsets": [0, len(x) * 4]}}).encode()
hdr += b" " * (-len(hdr) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(hdr)) + hdr + x.tobytes())
PY
	expect 1 "non-finite" "$moectl" forward --model "$m" --input "$tmp/nan.safetensors" \
		--output "$tmp/o"
	expect 0 "" "$moectl" forward --model "$m" --input "$tmp/nan.safetensors" \
		--output "$tmp/o" --nonfinite sanitize
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
