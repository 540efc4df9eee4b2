#!/usr/bin/python3
# SPDX-License-Identifier: MIT
#
# A few safetensors operations for it_gen_model_forward.sh, in plain Python
# (struct only, no numpy), reading the format by hand: an 8-byte
# little-endian header length, a JSON header, then the data.
#
#   st_tool.py widen SRC DST     every BF16/F16 tensor of SRC as F32 holding
#                                exactly the same values (widening is exact)
#   st_tool.py to-moed SRC DST   SRC's tensors under moed-native names
#                                (from the Mixtral, Qwen2-MoE or DeepSeek
#                                names), bytes and metadata unchanged
#   st_tool.py same A B          exit 0 when A and B hold the same tensors
#                                with bitwise-equal data; else print the first
#                                difference and exit 1
import json
import re
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        tensors[name] = (t["dtype"], t["shape"], data[a:b])
    return meta, tensors


def write(path, meta, tensors):
    header, blobs, off = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def widen(raw, dtype):
    if dtype == "BF16":  # the top half of a float32
        return b"".join(b"\0\0" + raw[i:i + 2] for i in range(0, len(raw), 2))
    n = len(raw) // 2  # F16: struct's 'e' is IEEE half
    return struct.pack("<%df" % n, *struct.unpack("<%de" % n, raw))


# Hugging Face names -> moed-native (daemon/model/model_names.c)
TO_MOED = [
    (r"model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.gate\.weight", r"layers.\1.router.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate\.e_score_correction_bias",
     r"layers.\1.router.selection_bias"),
    (r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight",
     r"layers.\1.experts.\2.\3"),
    (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.gate_proj\.weight", r"layers.\1.experts.\2.w1"),
    (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.down_proj\.weight", r"layers.\1.experts.\2.w2"),
    (r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.up_proj\.weight", r"layers.\1.experts.\2.w3"),
    (r"model\.layers\.(\d+)\.mlp\.shared_experts?\.gate_proj\.weight", r"layers.\1.shared.w1"),
    (r"model\.layers\.(\d+)\.mlp\.shared_experts?\.down_proj\.weight", r"layers.\1.shared.w2"),
    (r"model\.layers\.(\d+)\.mlp\.shared_experts?\.up_proj\.weight", r"layers.\1.shared.w3"),
    (r"model\.layers\.(\d+)\.mlp\.shared_expert_gate\.weight", r"layers.\1.shared.gate"),
]


def to_moed(name):
    for pattern, repl in TO_MOED:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    if name.startswith("model."):
        sys.exit("st_tool: no moed-native name for %s" % name)
    return name


def same(a_path, b_path):
    _, a = read(a_path)
    _, b = read(b_path)
    if sorted(a) != sorted(b):
        print("tensors differ: %s has %s, %s has %s" % (a_path, sorted(a), b_path, sorted(b)))
        return 1
    for name in sorted(a):
        (da, sa, ra), (db, sb, rb) = a[name], b[name]
        if (da, sa) != (db, sb):
            print("%s: %s %s vs %s %s" % (name, da, sa, db, sb))
            return 1
        if ra == rb:
            continue
        size = 4 if da in ("F32", "I32") else 2
        fmt = {"F32": "<f", "I32": "<i"}.get(da, "<H")
        for i in range(0, len(ra), size):
            if ra[i:i + size] != rb[i:i + size]:
                va, vb = struct.unpack(fmt, ra[i:i + size])[0], struct.unpack(fmt, rb[i:i + size])[0]
                print("%s element %d: %r (%s) in %s, %r (%s) in %s" %
                      (name, i // size, va, ra[i:i + size].hex(), a_path, vb,
                       rb[i:i + size].hex(), b_path))
                return 1
    return 0


def main():
    op, src, dst = sys.argv[1:4]
    if op == "same":
        return same(src, dst)
    meta, tensors = read(src)
    if op == "widen":
        tensors = {n: ("F32", s, widen(r, d)) if d in ("BF16", "F16") else (d, s, r)
                   for n, (d, s, r) in tensors.items()}
    elif op == "to-moed":
        tensors = {to_moed(n): t for n, t in tensors.items()}
    else:
        sys.exit("st_tool: unknown operation %s" % op)
    write(dst, meta, tensors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
