"""Writes tests/fixtures/faults/decoder-fails-past-40.onnx: the tiny package's decoder that fails at run time.

The graph is tests/fixtures/tiny-package/decoder.onnx with one extra path: a Gather of position_ids from a
table of 40 zeros, added to the logits. Loading, checking and running it at positions 0..39 work exactly as
the original (the added term is zero); any run with a position of 40 or more makes ONNX Runtime throw
("indices element out of data bounds"). So prefills of short prompts succeed and decoding fails mid-image,
a real ORT failure for the service's fault tests (tests/IGpt.Api.Tests/FaultTests.cs).

    /usr/bin/python3 training/scripts/make_failing_decoder.py [--positions 40]
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=40, help="runs with a position at or past this fail")
    ap.add_argument("--src", default=os.path.join(ROOT, "tests", "fixtures", "tiny-package", "decoder.onnx"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or os.path.join(ROOT, "tests", "fixtures", "faults", f"decoder-fails-past-{args.positions}.onnx")

    model = onnx.load(args.src)
    g = model.graph
    # The node that writes "logits" now writes "logits_inner"; logits = logits_inner + table[position_ids][..., None].
    for node in g.node:
        for i, name in enumerate(node.output):
            if name == "logits":
                node.output[i] = "logits_inner"
    g.initializer.append(numpy_helper.from_array(np.zeros(args.positions, np.float32), "fault_position_table"))
    g.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "fault_axes"))
    g.node.extend([
        helper.make_node("Gather", ["fault_position_table", "position_ids"], ["fault_zeros"], name="fault_gather", axis=0),  # [B, S]
        helper.make_node("Unsqueeze", ["fault_zeros", "fault_axes"], ["fault_zeros_3d"], name="fault_unsqueeze"),       # [B, S, 1]
        helper.make_node("Add", ["logits_inner", "fault_zeros_3d"], ["logits"], name="fault_add"),                       # [B, S, vocab]
    ])
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    onnx.save(model, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes): runs fail at positions >= {args.positions}")


if __name__ == "__main__":
    main()
