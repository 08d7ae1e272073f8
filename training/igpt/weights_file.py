"""A package's weights file (models/README.md, format version 2): each weight stored once.

Every floating-point initializer of a package's graphs is ONNX external data in `weights.data`. A tensor
that several graphs hold (by name: the transformer's weights in the decoder, its segments, the classifier
and the fp16 graphs) is written once and every graph points at the same offset. The fp16 graphs hold the
fp32 tensors and cast them (cast_from_fp32), which ONNX Runtime folds into fp16 initializers when it
creates a session. Integer constants (a few bytes each) stay inside their graphs. Packages written
before kept the fp16 graphs' own fp16 weights in `weights.fp16.data` (FP16_FILE; `igpt convert`).
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP32_FILE = "weights.data"
FP16_FILE = "weights.fp16.data"  # packages exported before the fp16 graphs cast weights.data's tensors
ALIGNMENT = 64  # every tensor starts on a 64-byte boundary (a cache line; SIMD loads of mapped data)
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)


def tensor_bytes(t: onnx.TensorProto) -> bytes:
    """The tensor's little-endian bytes, as external data stores them."""
    if t.data_location == TensorProto.EXTERNAL:
        raise ValueError(f"{t.name}: load the graph with its external data first")
    return t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()


def cast_from_fp32(model: onnx.ModelProto, fp32: Dict[str, onnx.TensorProto]) -> None:
    """Replaces an fp16 graph's float16 initializers with the fp32 tensors of the same names (`fp32`: the fp32 graphs'
    initializers, loaded with their data), each cast to float16 by a Cast at the start of the graph, so that the fp16
    graphs share weights.data instead of storing a half-size copy. ONNX Runtime's constant folding (a basic graph
    optimization, run before the graph is partitioned between providers) turns each Cast into a float16 initializer
    when it creates a session. numpy and ONNX Runtime both round to nearest even, so the folded tensor is the one the
    graph held before: checked here against the graph's own fp16 bytes. The graph is changed in place."""
    renamed: Dict[str, str] = {}
    casts = []
    for t in model.graph.initializer:
        if t.data_type != TensorProto.FLOAT16:
            continue
        source = fp32.get(t.name)
        if source is None or source.data_type != TensorProto.FLOAT:
            raise ValueError(f"{t.name}: no fp32 tensor of that name for the fp16 graph to cast")
        half = numpy_helper.to_array(source).astype(np.float16)
        if list(half.shape) != list(t.dims) or half.tobytes() != tensor_bytes(t):
            raise ValueError(f"{t.name}: the fp16 tensor is not the fp32 one rounded to float16")
        renamed[t.name] = f"{t.name}/fp16"
        casts.append(helper.make_node("Cast", [t.name], [renamed[t.name]], name=f"/weights/{t.name}/Cast",
                                      to=TensorProto.FLOAT16))
        t.CopyFrom(source)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _point(t: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    t.ClearField("raw_data")
    for field in ("float_data", "int32_data"):  # numpy_helper never fills these for floats, others may
        t.ClearField(field)
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = k, v


def write_weights(models: Sequence[onnx.ModelProto], folder: str, file_name: str) -> int:
    """Moves the floating-point initializers of `models` (loaded with their data) into `folder/file_name`,
    each name once, and points the graphs at it (the protos are changed in place; save them after).
    The same name must hold the same bytes in every graph. Returns the file's size in bytes."""
    where: Dict[str, Tuple[int, int, bytes]] = {}  # name -> (offset, length, digest)
    path = os.path.join(folder, file_name)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for model in models:
            for t in model.graph.initializer:
                if t.data_type not in FLOAT_TYPES:
                    continue
                data = tensor_bytes(t)
                digest = hashlib.sha256(data).digest()
                if t.name not in where:
                    f.write(b"\0" * (-f.tell() % ALIGNMENT))
                    where[t.name] = (f.tell(), len(data), digest)
                    f.write(data)
                offset, length, known = where[t.name]
                if known != digest:
                    raise ValueError(f"initializer {t.name!r} differs between the graphs sharing {file_name}")
                _point(t, file_name, offset, length)
        size = f.tell()
    os.replace(tmp, path)
    return size


def save_graphs(models: Sequence[onnx.ModelProto], paths: Sequence[str], file_name: str) -> int:
    """write_weights into the graphs' folder, then the graphs themselves. Returns the weights file's size."""
    folder = os.path.dirname(os.path.abspath(paths[0]))
    assert all(os.path.dirname(os.path.abspath(p)) == folder for p in paths), "one folder"
    size = write_weights(models, folder, file_name)
    for model, path in zip(models, paths):
        onnx.save_model(model, path)
    return size


def point_into_package(model: onnx.ModelProto, folder: str, sources: Sequence[str]) -> None:
    """Makes the graph's float initializers (loaded with their data) external data at the offsets that tensors of the
    same names have in the graphs `sources` (files in `folder`, whose weights file is already written), checking the
    bytes are the same: a graph added to a package this way adds nothing to its weights file. Changed in place."""
    where: Dict[str, Tuple[str, int, int]] = {}
    for source in sources:
        for t in onnx.load(os.path.join(folder, source), load_external_data=False).graph.initializer:
            if t.data_location == TensorProto.EXTERNAL and t.name not in where:
                e = {kv.key: kv.value for kv in t.external_data}
                where[t.name] = (e["location"], int(e["offset"]), int(e["length"]))
    blobs: Dict[str, bytes] = {}
    for t in model.graph.initializer:
        if t.data_type not in FLOAT_TYPES:
            continue
        if t.name not in where:
            raise ValueError(f"{t.name}: not a tensor of {', '.join(sources)} in {folder}")
        location, offset, length = where[t.name]
        if location not in blobs:
            with open(os.path.join(folder, location), "rb") as f:
                blobs[location] = f.read()
        if blobs[location][offset:offset + length] != tensor_bytes(t):
            raise ValueError(f"{t.name}: the package's weights differ from the model rebuilt from them")
        _point(t, location, offset, length)


def external_locations(model: onnx.ModelProto) -> List[str]:
    """The external data files a graph (loaded without its data) points into."""
    found = []
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            location = {kv.key: kv.value for kv in t.external_data}["location"]
            if location not in found:
                found.append(location)
    return found


def manifest_entry(folder: str, file_name: str, dtype: str) -> Dict[str, object]:
    """model.json's files.weights entry: a reader checks the size before it loads a graph."""
    return {"path": file_name, "dtype": dtype, "bytes": os.path.getsize(os.path.join(folder, file_name))}
