"""`python3 -m igpt convert <package>...`: bring a package to the current layout of format version 2.

Version 1 stored each graph's weights inside the graph (decoder.onnx, classifier.onnx and their fp16
twins each carried a copy). Version 2 stores every weight once, in weights.data; its first exports kept
the fp16 graphs' fp16 copies in weights.fp16.data, where the fp16 graphs now cast weights.data's fp32
tensors (weights_file.cast_from_fp32, models/README.md). Both are rewritten to what `export` writes today:
the same graphs, the same weights' bytes (the fp16 ones checked to be the fp32 ones rounded), parity.json's
logits and every other file as they are, so the service's answers do not change. An fp16 graph whose
GroupQueryAttention nodes run without a past (classifier.fp16.onnx) gets the present outputs that ONNX
Runtime's CUDA kernel requires (`with_presents`); in a package already in the current weights layout only
such graphs are rewritten. A package already in the current layout is left alone.
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
from .model_card import FILES_INTRO, FP16_FILE_CARD_TEXT, GENAI_CARD_TEXT, weights_card_text


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", nargs="+", help="package folder(s), e.g. models/fashion-mnist-28")


def main(args) -> int:
    for package in args.package:
        written = convert_package(package)
        if not written:
            print(f"{package}: already format version {FORMAT_VERSION}, current layout")
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
    """Converts `package` in place; returns the file names written (none when it is already current)."""
    manifest_path = os.path.join(package, "model.json")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    version = manifest.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"{manifest_path}: format_version {version!r} (convert reads versions 1 and {FORMAT_VERSION})")
    files = manifest["files"]
    if version == FORMAT_VERSION and [w["path"] for w in files.get("weights") or []] == [weights_file.FP32_FILE]:
        return _add_attention_presents(package, _graphs(files, "float16"))
    fp32, fp16 = _graphs(files, "float32"), _graphs(files, "float16")
    # Everything is read before anything is written: the v1 segments point into decoder.onnx's own bytes.
    loaded = {name: onnx.load(os.path.join(package, name)) for name in fp32 + fp16}
    old_data = {loc for name in loaded for loc in
                weights_file.external_locations(onnx.load(os.path.join(package, name), load_external_data=False))}
    tensors = {t.name: t for name in fp32 for t in loaded[name].graph.initializer}
    for name in fp16:
        with_presents(loaded[name])
        weights_file.cast_from_fp32(loaded[name], tensors)
    os.remove(manifest_path)  # the folder is not a package until the new manifest is written
    names = fp32 + fp16
    weights_file.save_graphs([loaded[n] for n in names], [os.path.join(package, n) for n in names], weights_file.FP32_FILE)
    for location in old_data - {weights_file.FP32_FILE} - set(loaded):  # weights.fp16.data; v1's `<graph>.data`
        os.remove(os.path.join(package, location))

    if version == 1:
        _set_format_version(os.path.join(package, files.get("parity") or "parity.json"))
    card = os.path.join(package, files.get("model_card") or "MODEL_CARD.md")
    if os.path.exists(card):
        with open(card, encoding="utf-8") as f:
            text = f.read()
        words = weights_card_text(bool(fp16))
        if version == 1:
            text = text.replace(FILES_INTRO.format(1), FILES_INTRO.format(FORMAT_VERSION), 1)
            text = text.replace(GENAI_CARD_TEXT, words + GENAI_CARD_TEXT, 1)
        else:
            text = text.replace(FP16_FILE_CARD_TEXT, words, 1)
        with open(card, "w", encoding="utf-8") as f:
            f.write(text)
    manifest["format_version"] = FORMAT_VERSION
    files.pop("weights", None)
    manifest["files"] = {"weights": [weights_file.manifest_entry(package, weights_file.FP32_FILE, "float32")], **files}
    _write_json(manifest_path, manifest)
    return names + [weights_file.FP32_FILE, "model.json"]


def with_presents(model: onnx.ModelProto) -> bool:
    """Gives every GroupQueryAttention node without a past its present key and value outputs (unused, named after the
    node), as `export` writes them in the fp16 graphs now: ONNX Runtime's CUDA kernel refuses to run without them, so
    classifier.fp16.onnx failed on CUDA (the fp32 graphs, the CPU's, stay without: faster there). Returns whether
    the graph changed."""
    changed = False
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention" and len(node.output) == 1:
            prefix = node.name.rsplit("/", 1)[0]  # /h.{i}/attn
            node.output.extend([f"{prefix}/present.key", f"{prefix}/present.value"])
            changed = True
    return changed


def _add_attention_presents(package: str, names: List[str]) -> List[str]:
    """with_presents for a current package's fp16 graphs, rewriting only the graphs it changes (their weights stay
    in weights.data, untouched)."""
    written = []
    for name in names:
        path = os.path.join(package, name)
        model = onnx.load(path, load_external_data=False)
        if with_presents(model):
            onnx.save(model, path)
            written.append(name)
    return written


def _set_format_version(path: str) -> None:
    """parity.json carries the package's format version; its logits are kept byte for byte."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(re.sub(r'"format_version": 1\b', f'"format_version": {FORMAT_VERSION}', text, count=1))
