"""`python3 -m igpt convert <package>...`: rewrite a format version 1 package as version 2.

Version 1 stored each graph's weights inside the graph (decoder.onnx, classifier.onnx and their fp16
twins each carried a copy); version 2 stores every weight once per precision, in weights.data and
weights.fp16.data (weights_file.py, models/README.md). The graphs, their weights' bytes, parity.json's
logits and every other file stay as they are, so the service's answers do not change. A version 2
package is left alone.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from typing import Dict, List

import onnx

from . import weights_file
from .export import FORMAT_VERSION, _write_json
from .model_card import FILES_INTRO, GENAI_CARD_TEXT, weights_card_text


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", nargs="+", help="package folder(s), e.g. models/fashion-mnist-28")


def main(args) -> int:
    for package in args.package:
        written = convert_package(package)
        if not written:
            print(f"{package}: already format version {FORMAT_VERSION}")
        for name in written:
            print(f"{os.path.join(package, name)}  {os.path.getsize(os.path.join(package, name)):,} bytes")
    return 0


def _graphs(files: Dict, dtype: str) -> List[str]:
    """The package's graph files whose weights are `dtype`, the decoder's first (segments follow it)."""
    names: List[str] = []
    for kind in ("decoder", "classifier"):
        for variant in (files.get(kind) or {}).values():
            if variant.get("dtype", "float32") == dtype:
                names += [variant["path"]] + list(variant.get("step_segments") or [])
    return names


def convert_package(package: str) -> List[str]:
    """Converts `package` in place; returns the file names written (none when it is already version 2)."""
    manifest_path = os.path.join(package, "model.json")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    version = manifest.get("format_version")
    if version == FORMAT_VERSION:
        return []
    if version != 1:
        raise ValueError(f"{manifest_path}: format_version {version!r} (convert reads version 1)")
    files = manifest["files"]
    groups = {weights_file.FP32_FILE: _graphs(files, "float32"), weights_file.FP16_FILE: _graphs(files, "float16")}
    # Everything is read before anything is written: the v1 segments point into decoder.onnx's own bytes.
    loaded = {name: onnx.load(os.path.join(package, name)) for names in groups.values() for name in names}
    old_data = {loc for name in loaded for loc in
                weights_file.external_locations(onnx.load(os.path.join(package, name), load_external_data=False))}
    os.remove(manifest_path)  # the folder is not a package until the new manifest is written
    written: List[str] = []
    entries = []
    for data_file, names in groups.items():
        if names:
            weights_file.save_graphs([loaded[n] for n in names], [os.path.join(package, n) for n in names], data_file)
            entries.append(weights_file.manifest_entry(package, data_file, "float16" if data_file == weights_file.FP16_FILE
                                                       else "float32"))
            written += names + [data_file]
    for location in old_data - set(groups) - set(loaded):  # v1's `<graph>.data` of a graph past 2 GB
        os.remove(os.path.join(package, location))

    _set_format_version(os.path.join(package, files.get("parity") or "parity.json"))
    card = os.path.join(package, files.get("model_card") or "MODEL_CARD.md")
    if os.path.exists(card):
        with open(card, encoding="utf-8") as f:
            text = f.read()
        text = text.replace(FILES_INTRO.format(1), FILES_INTRO.format(FORMAT_VERSION), 1)
        text = text.replace(GENAI_CARD_TEXT, weights_card_text(bool(groups[weights_file.FP16_FILE])) + GENAI_CARD_TEXT, 1)
        with open(card, "w", encoding="utf-8") as f:
            f.write(text)
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {"weights": entries, **files}
    _write_json(manifest_path, manifest)
    return written + ["model.json"]


def _set_format_version(path: str) -> None:
    """parity.json carries the package's format version; its logits are kept byte for byte."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(re.sub(r'"format_version": 1\b', f'"format_version": {FORMAT_VERSION}', text, count=1))
