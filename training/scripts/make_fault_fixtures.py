"""Writes tests/fixtures/faults/: graphs of the tiny package that fail at run time, for the service's fault tests.

decoder-fails-past-40.onnx is tests/fixtures/tiny-package/decoder.onnx with one extra path: a Gather of
position_ids from a table of 40 zeros, added to the logits (its weights stay in the package's weights.data).
Loading, checking and running it at positions 0..39 work exactly as the original (the added term is zero); any run with a position of 40 or more makes
ONNX Runtime throw ("indices element out of data bounds"). So prefills of short prompts succeed and
decoding fails mid-image.

classifier-fails-on-light-pixels.onnx is the tiny classifier with a Gather of input_ids (mod the palette size,
so SOS reads as 0) from a table of 4 zeros, summed per image and added to the logits: images of palette tokens 0..3 (dark) classify as before,
an image with any token of 4 or more (light) makes the run throw.

    /usr/bin/python3 training/scripts/make_fault_fixtures.py [--positions 40] [--tokens 4]
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
    ap.add_argument("--tokens", type=int, default=4, help="classifier runs with a token at or past this fail")
    args = ap.parse_args()
    package = os.path.join(ROOT, "tests", "fixtures", "tiny-package")
    faults = os.path.join(ROOT, "tests", "fixtures", "faults")
    failing_decoder(os.path.join(package, "decoder.onnx"), os.path.join(faults, f"decoder-fails-past-{args.positions}.onnx"), args.positions)
    failing_classifier(os.path.join(package, "classifier.onnx"), os.path.join(faults, "classifier-fails-on-light-pixels.onnx"), args.tokens)


def rename_output(graph: onnx.GraphProto, name: str, new_name: str) -> None:
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out == name:
                node.output[i] = new_name


def save(model: onnx.ModelProto, src: str, out: str, what: str) -> None:
    """Checks the graph with its weights, then points them back into the package's weights file (format version 2):
    the tests copy the fault graph over the graph of the same name in a copy of the tiny package."""
    onnx.checker.check_model(model)
    external = {t.name: t for t in onnx.load(src, load_external_data=False).graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL}
    for t in model.graph.initializer:
        if t.name in external:
            t.CopyFrom(external[t.name])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    onnx.save(model, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes): {what}")


def failing_decoder(src: str, out: str, positions: int) -> None:
    model = onnx.load(src)
    g = model.graph
    # The node that writes "logits" now writes "logits_inner"; logits = logits_inner + table[position_ids][..., None].
    rename_output(g, "logits", "logits_inner")
    g.initializer.append(numpy_helper.from_array(np.zeros(positions, np.float32), "fault_position_table"))
    g.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "fault_axes"))
    g.node.extend([
        helper.make_node("Gather", ["fault_position_table", "position_ids"], ["fault_zeros"], name="fault_gather", axis=0),  # [B, S]
        helper.make_node("Unsqueeze", ["fault_zeros", "fault_axes"], ["fault_zeros_3d"], name="fault_unsqueeze"),       # [B, S, 1]
        helper.make_node("Add", ["logits_inner", "fault_zeros_3d"], ["logits"], name="fault_add"),                       # [B, S, vocab]
    ])
    save(model, src, out, f"runs fail at positions >= {positions}")


def failing_classifier(src: str, out: str, tokens: int, palette_size: int = 8) -> None:
    model = onnx.load(src)
    g = model.graph
    # logits = logits_inner + sum(table[input_ids % palette_size], axis 1, keepdims): zero unless a token is past the table.
    rename_output(g, "logits", "logits_inner")
    g.initializer.append(numpy_helper.from_array(np.zeros(tokens, np.float32), "fault_token_table"))
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "fault_sum_axes"))
    g.initializer.append(numpy_helper.from_array(np.array(palette_size, np.int64), "fault_palette_size"))
    g.node.extend([
        # The input starts with SOS (= palette size): mod palette size makes it token 0.
        helper.make_node("Mod", ["input_ids", "fault_palette_size"], ["fault_tokens"], name="fault_mod"),                    # [B, T]
        helper.make_node("Gather", ["fault_token_table", "fault_tokens"], ["fault_zeros"], name="fault_gather", axis=0),      # [B, T]
        helper.make_node("ReduceSum", ["fault_zeros", "fault_sum_axes"], ["fault_sum"], name="fault_sum", keepdims=1),         # [B, 1]
        helper.make_node("Add", ["logits_inner", "fault_sum"], ["logits"], name="fault_add"),                                  # [B, classes]
    ])
    save(model, src, out, f"runs fail for tokens >= {tokens}")


if __name__ == "__main__":
    main()
