"""A prototype graph for measuring an fp16 KV cache on the CPU: decoder.onnx with fp32 weights and
matmuls, but GroupQueryAttention in fp16 (packed QKV cast to fp16 before it, its output cast back to
fp32 after), so past/present, the KV cache the decoder keeps and reads every step, are fp16: half
the bytes of the fp32 cache.

    /usr/bin/python3 bench/make_kv16.py bench/packages/w256 [--out bench/packages/w256-kv16]

Writes a copy of the package with that decoder.onnx (for bench/proto.py's "kv16" variant). A
prototype for the export (training/igpt/onnx_graph.py) to adopt if the numbers say so.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import onnx
from onnx import TensorProto, helper


def convert(model: onnx.ModelProto, mixed: bool = False) -> onnx.ModelProto:
    g = model.graph
    nodes = []
    for node in g.node:
        if node.op_type == "GroupQueryAttention" and not mixed:
            qkv = node.input[0]
            nodes.append(helper.make_node("Cast", [qkv], [qkv + "/fp16"], name=node.name + "/CastIn", to=TensorProto.FLOAT16))
            node.input[0] = qkv + "/fp16"
            out = node.output[0]
            node.output[0] = out + "/fp16"
            nodes.append(node)
            nodes.append(helper.make_node("Cast", [out + "/fp16"], [out], name=node.name + "/CastOut", to=TensorProto.FLOAT))
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    for vi in list(g.input) + list(g.output):
        if vi.name.startswith(("past_key_values.", "present.")):
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    return model


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("package")
    ap.add_argument("--out")
    ap.add_argument("--mixed", action="store_true",
                    help="keep GroupQueryAttention's query, key and value fp32; only past/present become fp16 "
                         "(ONNX Runtime 1.31's CPU kernel reads and writes such a cache)")
    args = ap.parse_args()
    out = args.out or args.package.rstrip("/") + ("-kv16m" if args.mixed else "-kv16")
    if os.path.exists(os.path.join(out, "decoder.onnx")):
        print(f"{out}: present")
        return 0
    shutil.copytree(args.package, out, dirs_exist_ok=True)
    model = convert(onnx.load(os.path.join(args.package, "decoder.onnx")), mixed=args.mixed)
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "decoder.onnx"))
    print(f"wrote {out}/decoder.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
