"""`python3 -m igpt segments <package>`: add the decoder's step segments to an exported package.

Packages exported before the segments existed have decoder.onnx only; this writes
decoder.step.0..n_layer.onnx from decoder.onnx's own weights (they point at the same bytes, in
weights.data, or inside decoder.onnx in a format version 1 package: nothing is copied) and lists
them in model.json. `export` writes them itself.
"""
from __future__ import annotations

import argparse
import os

from .export import add_step_segments


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", nargs="+", help="package folder(s), e.g. models/fashion-mnist-28")


def main(args) -> int:
    for package in args.package:
        for name in add_step_segments(package):
            print(f"{os.path.join(package, name)}  {os.path.getsize(os.path.join(package, name)):,} bytes")
    return 0
