"""Writes tests/fixtures/fp16-weights-file: the tiny package's fp16 graphs as format 2's first exports wrote them.

Those kept the fp16 graphs' own float16 weights in weights.fp16.data (listed in files.weights); today the fp16
graphs cast weights.data's fp32 tensors (igpt/weights_file.py, models/README.md). The service still reads the
older layout: its tests lay these three files over a copy of tests/fixtures/tiny-package, add the manifest entry,
and check that the fp16 graphs give the same numbers either way.

    /usr/bin/python3 training/scripts/make_fp16_file_fixture.py
"""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "training"))

from igpt import weights_file  # noqa: E402

GRAPHS = ("decoder.fp16.onnx", "classifier.fp16.onnx")


def uncast(m: onnx.ModelProto) -> onnx.ModelProto:
    """An fp16 graph with its own float16 weights and no Casts of weights (the inverse of cast_from_fp32), and its
    GroupQueryAttention nodes without a past also without present outputs (the inverse of convert.with_presents),
    as those exports wrote them; in place."""
    for n in m.graph.node:
        if n.op_type == "GroupQueryAttention" and not n.input[3]:
            del n.output[1:]
    casts = {n.output[0]: n.input[0] for n in m.graph.node if n.name.startswith("/weights/")}
    halves = set(casts.values())
    kept = [n for n in m.graph.node if not n.name.startswith("/weights/")]
    for n in kept:
        n.input[:] = [casts.get(x, x) for x in n.input]
    del m.graph.node[:]
    m.graph.node.extend(kept)
    for t in m.graph.initializer:
        if t.name in halves:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    return m


def write(package: str, out: str) -> int:
    """The package's fp16 graphs, uncast, and their weights.fp16.data into `out`; returns that file's size."""
    os.makedirs(out, exist_ok=True)
    graphs = [uncast(onnx.load(os.path.join(package, name))) for name in GRAPHS if os.path.exists(os.path.join(package, name))]
    return weights_file.save_graphs(graphs, [os.path.join(out, name) for name in GRAPHS[:len(graphs)]], weights_file.FP16_FILE)


if __name__ == "__main__":
    out = os.path.join(ROOT, "tests", "fixtures", "fp16-weights-file")
    size = write(os.path.join(ROOT, "tests", "fixtures", "tiny-package"), out)
    print(f"wrote {out}: {', '.join(GRAPHS)}, {weights_file.FP16_FILE} ({size} bytes)")
