"""Datasets from local files, image preprocessing, and the prepared-data format.

Raw loaders return `RawSplit`s of uint8 images [N, H, W, C] (C = 1 or 3) with int64 labels.
`preprocess` makes them what a model sees, in the same order a service does (models/README.md):
alpha composited on white (done while decoding), channels (grey = BT.601 luma), then resize.

Prepared data (docs/CONTRACTS.md): DIR/meta.json and DIR/{train,val,test}.npz holding
`tokens` uint16 [N, H*W] (raster order, no SOS) and `labels` int64 [N].
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "folder", "emoji")


@dataclass
class RawSplit:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    groups: Optional[np.ndarray] = None  # int64 [N]: examples of one group are split together (emoji)

    def take(self, idx: np.ndarray) -> "RawSplit":
        return RawSplit(self.images[idx], self.labels[idx], None if self.groups is None else self.groups[idx])


@dataclass
class RawDataset:
    name: str
    train: RawSplit
    test: RawSplit
    classes: List[str]
    info: dict = field(default_factory=dict)  # loader details recorded in meta.json ("source")


# ----------------------------------------------------------------------------- idx (MNIST family)

def _open_maybe_gz(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """An idx file (the MNIST format): magic 0 0 dtype ndim, big-endian dims, then the data."""
    with _open_maybe_gz(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown idx data type 0x{data[2]:02x}")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


def _find(root: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(root, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{root}: no {stem}[.gz]")


def load_idx_dataset(root: str, name: str = "fashion-mnist", classes: Optional[List[str]] = None) -> RawDataset:
    def split(prefix: str) -> RawSplit:
        images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"{root}: {prefix} images {images.shape} vs labels {labels.shape}")
        return RawSplit(np.ascontiguousarray(images[..., None], dtype=np.uint8), labels)

    train, test = split("train"), split("t10k")
    if classes is None:
        classes = [str(i) for i in range(int(max(train.labels.max(), test.labels.max())) + 1)]
    return RawDataset(name, train, test, classes)


# ----------------------------------------------------------------------------- CIFAR

def _cifar_images(flat: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), dtype=np.uint8)


def _unpickle(path: str) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _key(d: dict, name: str):
    return d[name.encode()] if name.encode() in d else d[name]


def _names(values) -> List[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def load_cifar(root: str, which: str = "cifar10") -> RawDataset:
    """CIFAR-10/100 from the python-pickle or the binary distribution (extracted), found under root."""
    if which not in ("cifar10", "cifar100"):
        raise ValueError(which)
    candidates = [root] + [os.path.join(root, d) for d in sorted(os.listdir(root))
                           if os.path.isdir(os.path.join(root, d))]
    for d in candidates:
        if which == "cifar10" and os.path.exists(os.path.join(d, "data_batch_1")):
            return _cifar10_pickle(d)
        if which == "cifar10" and os.path.exists(os.path.join(d, "data_batch_1.bin")):
            return _cifar_bin(d, "cifar10")
        if which == "cifar100" and os.path.exists(os.path.join(d, "train")) and \
                os.path.isfile(os.path.join(d, "train")):
            return _cifar100_pickle(d)
        if which == "cifar100" and os.path.exists(os.path.join(d, "train.bin")):
            return _cifar_bin(d, "cifar100")
    raise FileNotFoundError(f"{root}: no {which} python or binary batches found")


def _cifar10_pickle(d: str) -> RawDataset:
    def split(files: List[str]) -> RawSplit:
        batches = [_unpickle(os.path.join(d, f)) for f in files]
        images = _cifar_images(np.concatenate([np.asarray(_key(b, "data")) for b in batches]))
        labels = np.concatenate([np.asarray(_key(b, "labels"), dtype=np.int64) for b in batches])
        return RawSplit(images, labels)

    train_files = sorted(f for f in os.listdir(d) if f.startswith("data_batch_"))
    meta = os.path.join(d, "batches.meta")
    classes = _names(_key(_unpickle(meta), "label_names")) if os.path.exists(meta) else [str(i) for i in range(10)]
    return RawDataset("cifar10", split(train_files), split(["test_batch"]), classes)


def _cifar100_pickle(d: str) -> RawDataset:
    def split(f: str) -> RawSplit:
        b = _unpickle(os.path.join(d, f))
        return RawSplit(_cifar_images(np.asarray(_key(b, "data"))),
                        np.asarray(_key(b, "fine_labels"), dtype=np.int64))

    meta = os.path.join(d, "meta")
    classes = _names(_key(_unpickle(meta), "fine_label_names")) if os.path.exists(meta) else [str(i) for i in range(100)]
    return RawDataset("cifar100", split("train"), split("test"), classes)


def _cifar_bin(d: str, which: str) -> RawDataset:
    n_label = 1 if which == "cifar10" else 2  # cifar100 records: coarse label, fine label

    def split(files: List[str]) -> RawSplit:
        raw = np.concatenate([np.fromfile(os.path.join(d, f), dtype=np.uint8) for f in files])
        rec = n_label + 3072
        if raw.size % rec:
            raise ValueError(f"{d}: {files} is not a whole number of {rec}-byte records")
        raw = raw.reshape(-1, rec)
        return RawSplit(_cifar_images(raw[:, n_label:]), raw[:, n_label - 1].astype(np.int64))

    if which == "cifar10":
        train_files = sorted(f for f in os.listdir(d) if f.startswith("data_batch_") and f.endswith(".bin"))
        test_files, names_file, n = ["test_batch.bin"], "batches.meta.txt", 10
    else:
        train_files, test_files, names_file, n = ["train.bin"], ["test.bin"], "fine_label_names.txt", 100
    p = os.path.join(d, names_file)
    classes = [l.strip() for l in open(p) if l.strip()] if os.path.exists(p) else [str(i) for i in range(n)]
    return RawDataset(which, split(train_files), split(test_files), classes)


# ----------------------------------------------------------------------------- image folders

def decode_image(path_or_file, channels: int) -> np.ndarray:
    """PNG/JPEG -> uint8 [H, W, channels]: alpha composited on white, grey = BT.601 luma."""
    with Image.open(path_or_file) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            arr = np.asarray(im, dtype=np.float32)
            a = arr[..., 3:4] / 255.0
            rgb = arr[..., :3] * a + 255.0 * (1.0 - a)
            arr = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        elif im.mode in ("L", "I", "I;16", "F", "1"):
            arr = np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
        else:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return to_channels(arr[None], channels)[0]


def _class_dirs(root: str) -> List[str]:
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def _load_folder_split(root: str, classes: List[str], channels: int, size: Tuple[int, int]) -> RawSplit:
    images, labels = [], []
    for label, c in enumerate(classes):
        cdir = os.path.join(root, c)
        if not os.path.isdir(cdir):
            continue
        for f in sorted(os.listdir(cdir)):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                img = decode_image(os.path.join(cdir, f), channels)
                images.append(resize(img[None], *size)[0])  # folders mix sizes: resize on load
                labels.append(label)
    if not images:
        return RawSplit(np.zeros((0, size[0], size[1], channels), np.uint8), np.zeros(0, np.int64))
    return RawSplit(np.stack(images), np.asarray(labels, dtype=np.int64))


def load_folder(root: str, channels: int, height: int, width: int, test_fraction: float = 0.1,
                seed: int = 0) -> RawDataset:
    """ROOT/<class>/*.png|jpg, or ROOT/train/<class>/... with an optional ROOT/test/<class>/...

    Without a test folder a seeded `test_fraction` of the images becomes the test split.
    """
    if os.path.isdir(os.path.join(root, "train")):
        classes = _class_dirs(os.path.join(root, "train"))
        train = _load_folder_split(os.path.join(root, "train"), classes, channels, (height, width))
        test_dir = os.path.join(root, "test")
        test = _load_folder_split(test_dir, classes, channels, (height, width)) if os.path.isdir(test_dir) else None
    else:
        classes = _class_dirs(root)
        train, test = _load_folder_split(root, classes, channels, (height, width)), None
    if not classes or len(train.labels) == 0:
        raise FileNotFoundError(f"{root}: no class sub-folders with PNG/JPEG images")
    if test is None:
        train, test = split_off(train, max(1, int(round(test_fraction * len(train.labels)))), seed + 1)
    return RawDataset("folder", train, test, classes)


# ----------------------------------------------------------------------------- preprocessing

def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> [N, H, W, channels]; RGB -> grey is ITU-R BT.601 luma."""
    c = images.shape[-1]
    if c == channels:
        return images
    if channels == 1 and c == 3:
        luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    if channels == 3 and c == 1:
        return np.repeat(images, 3, axis=-1)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> [N, height, width, C] with PIL's antialiased bicubic filter."""
    n, h, w, c = images.shape
    if (h, w) == (height, width):
        return images
    out = np.empty((n, height, width, c), dtype=np.uint8)
    for i in range(n):
        im = Image.fromarray(images[i, :, :, 0] if c == 1 else images[i], "L" if c == 1 else "RGB")
        r = np.asarray(im.resize((width, height), Image.BICUBIC, reducing_gap=None))
        out[i] = r[..., None] if c == 1 else r
    return out


def preprocess(images: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    return resize(to_channels(images, channels), height, width)


def split_off(split: RawSplit, n: int, seed: int) -> Tuple[RawSplit, RawSplit]:
    """Seeded random hold-out of n examples: (rest, held_out), each keeping its original order.

    A split with `groups` holds out whole groups, in a seeded order, until at least n examples."""
    if not 0 < n < len(split.labels):
        raise ValueError(f"cannot hold out {n} of {len(split.labels)} examples")
    rng = np.random.default_rng(seed)
    if split.groups is None:
        perm = rng.permutation(len(split.labels))
        held, rest = np.sort(perm[:n]), np.sort(perm[n:])
    else:
        ids, counts = np.unique(split.groups, return_counts=True)
        order = rng.permutation(len(ids))
        k = int(np.searchsorted(np.cumsum(counts[order]), n)) + 1  # the first k groups reach n
        if k >= len(ids):
            raise ValueError(f"cannot hold out {n} of {len(split.labels)} examples in whole groups")
        mask = np.isin(split.groups, ids[order[:k]])
        held, rest = np.flatnonzero(mask), np.flatnonzero(~mask)
    return split.take(rest), split.take(held)


def subset(split: RawSplit, n: int, seed: int) -> RawSplit:
    if n <= 0 or n >= len(split.labels):
        return split
    return split_off(split, n, seed)[1]


def load_raw(dataset: str, path: Optional[str], height: int, width: int, channels: int,
             seed: int = 0, test_fraction: float = 0.1, emoji_sets=("google",),
             emoji_skin_tones: bool = True) -> RawDataset:
    if dataset in ("fashion-mnist", "mnist"):
        classes = FASHION_MNIST_CLASSES if dataset == "fashion-mnist" else [str(i) for i in range(10)]
        return load_idx_dataset(path or FASHION_MNIST_DIR, dataset, classes)
    if dataset in ("cifar10", "cifar100"):
        if not path:
            raise ValueError(f"--data PATH is required for {dataset}")
        return load_cifar(path, dataset)
    if dataset == "folder":
        if not path:
            raise ValueError("--data PATH is required for folder")
        return load_folder(path, channels, height, width, test_fraction, seed)
    if dataset == "emoji":  # igpt/emoji.py; path = the npm package cache (fetched when missing)
        from .emoji import load_emoji
        return load_emoji(path, height, width, channels, emoji_sets, seed, test_fraction, emoji_skin_tones)
    raise ValueError(f"unknown dataset {dataset!r}; one of {DATASETS}")


# ----------------------------------------------------------------------------- prepared data

SPLITS = ("train", "val", "test")


def save_prepared(out_dir: str, meta: dict, splits: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name, (tokens, labels) in splits.items():
        tmp = os.path.join(out_dir, f".{name}.tmp.npz")
        np.savez(tmp, tokens=tokens.astype(np.uint16), labels=labels.astype(np.int64))
        os.replace(tmp, os.path.join(out_dir, f"{name}.npz"))
    tmp = os.path.join(out_dir, ".meta.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "meta.json"))


def read_meta(data_dir: str) -> dict:
    with open(os.path.join(data_dir, "meta.json")) as f:
        return json.load(f)


def load_prepared(data_dir: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """(tokens uint16 [N, H*W], labels int64 [N]) of a prepared split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    with np.load(os.path.join(data_dir, f"{split}.npz")) as z:
        return z["tokens"], z["labels"]
