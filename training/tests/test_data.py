"""Loaders for idx / CIFAR (pickle and binary) / image folders, preprocessing, and `prepare`."""
import gzip
import json
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from conftest import parse
from igpt import data, prepare


def write_idx(path, arr, gz):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)


def make_idx(root, n_train=60, n_test=20, gz=True, side=28):
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    sets = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte"), imgs, gz)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte"), labels, gz)
        sets[prefix] = (imgs, labels)
    return sets


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader(tmp_path, gz):
    sets = make_idx(str(tmp_path), gz=gz)
    raw = data.load_raw("fashion-mnist", str(tmp_path), 28, 28, 1)
    assert raw.train.images.shape == (60, 28, 28, 1) and raw.test.images.shape == (20, 28, 28, 1)
    assert np.array_equal(raw.train.images[..., 0], sets["train"][0])
    assert raw.train.labels.dtype == np.int64 and raw.train.labels.tolist() == sets["train"][1].tolist()
    assert raw.classes[0] == "T-shirt/top" and len(raw.classes) == 10


def test_idx_rejects_garbage(tmp_path):
    p = tmp_path / "x-idx"
    p.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError):
        data.read_idx(str(p))


def cifar_arrays(n, rng):
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    flat = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)  # CIFAR stores channel planes
    return imgs, flat


def test_cifar10_pickle_and_binary(tmp_path):
    rng = np.random.default_rng(1)
    imgs, flat = cifar_arrays(12, rng)
    labels = list(range(10)) + [3, 4]
    pk = tmp_path / "pk" / "cifar-10-batches-py"
    pk.mkdir(parents=True)
    for i, sl in enumerate((slice(0, 5), slice(5, 8))):
        with open(pk / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({b"data": flat[sl], b"labels": labels[sl]}, f)
    with open(pk / "test_batch", "wb") as f:
        pickle.dump({b"data": flat[8:], b"labels": labels[8:]}, f)
    with open(pk / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    raw = data.load_raw("cifar10", str(tmp_path / "pk"), 32, 32, 3)
    assert np.array_equal(raw.train.images, imgs[:8]) and np.array_equal(raw.test.images, imgs[8:])
    assert raw.train.labels.tolist() == labels[:8] and raw.classes[2] == "c2"

    b = tmp_path / "bin"
    b.mkdir()
    rec = np.concatenate([np.array(labels, np.uint8)[:, None], flat], axis=1)
    rec[:8].tofile(b / "data_batch_1.bin")
    rec[8:].tofile(b / "test_batch.bin")
    (b / "batches.meta.txt").write_text("\n".join(f"n{i}" for i in range(10)) + "\n")
    raw2 = data.load_raw("cifar10", str(b), 32, 32, 3)
    assert np.array_equal(raw2.train.images, imgs[:8]) and raw2.test.labels.tolist() == labels[8:]
    assert raw2.classes[9] == "n9"


def test_cifar100_pickle_and_binary(tmp_path):
    rng = np.random.default_rng(2)
    imgs, flat = cifar_arrays(6, rng)
    fine = [0, 99, 5, 7, 42, 1]
    pk = tmp_path / "cifar-100-python"
    pk.mkdir()
    with open(pk / "train", "wb") as f:
        pickle.dump({b"data": flat[:4], b"fine_labels": fine[:4], b"coarse_labels": [0] * 4}, f)
    with open(pk / "test", "wb") as f:
        pickle.dump({b"data": flat[4:], b"fine_labels": fine[4:], b"coarse_labels": [0] * 2}, f)
    raw = data.load_raw("cifar100", str(tmp_path), 32, 32, 3)
    assert raw.train.labels.tolist() == fine[:4] and np.array_equal(raw.test.images, imgs[4:])
    assert len(raw.classes) == 100

    b = tmp_path / "b100"
    b.mkdir()
    rec = np.concatenate([np.full((6, 1), 7, np.uint8), np.array(fine, np.uint8)[:, None], flat], axis=1)
    rec[:4].tofile(b / "train.bin")
    rec[4:].tofile(b / "test.bin")
    raw2 = data.load_raw("cifar100", str(b), 32, 32, 3)
    assert raw2.train.labels.tolist() == fine[:4] and np.array_equal(raw2.train.images, imgs[:4])


def test_folder_loader_alpha_grey_and_split(tmp_path):
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    # fully transparent black -> white; half-transparent red on white -> (255, 128, 128)
    Image.new("RGBA", (10, 6), (0, 0, 0, 0)).save(root / "cat" / "a.png")
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(root / "cat" / "b.png")
    Image.new("L", (8, 8), 77).save(root / "dog" / "c.jpg", quality=100)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "dog" / "d.png")
    (root / "dog" / "notes.txt").write_text("ignored")
    raw = data.load_folder(str(root), channels=3, height=4, width=4, test_fraction=0.25, seed=0)
    assert raw.classes == ["cat", "dog"]
    imgs = np.concatenate([raw.train.images, raw.test.images])
    labels = np.concatenate([raw.train.labels, raw.test.labels])
    assert imgs.shape == (4, 4, 4, 3) and len(raw.test.labels) == 1 and sorted(labels.tolist()) == [0, 0, 1, 1]
    got = {tuple(im[0, 0]) for im in imgs}
    assert got == {(255, 255, 255), (255, 127, 127), (77, 77, 77), (10, 20, 30)}
    grey = data.decode_image(str(root / "dog" / "d.png"), 1)
    assert grey.shape == (8, 8, 1) and grey[0, 0, 0] == round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)


def test_folder_with_train_and_test_dirs(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c in ("a", "b"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("L", (6, 6), 40 * i).save(d / f"{i}.png")
    raw = data.load_raw("folder", str(tmp_path), 3, 3, 1)
    assert raw.train.images.shape == (6, 3, 3, 1) and raw.test.images.shape == (4, 3, 3, 1)
    assert raw.test.labels.tolist() == [0, 0, 1, 1]


def test_preprocess_channels_and_resize():
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    g = data.to_channels(rgb, 1)
    assert g.shape == (2, 8, 8, 1) and int(g[0, 0, 0, 0]) == 76  # round(0.299 * 255)
    assert data.to_channels(g, 3).shape == (2, 8, 8, 3)
    small = data.preprocess(rgb, 4, 2, 1)
    assert small.shape == (2, 4, 2, 1) and np.all(small == 76)  # a flat image stays flat


def test_split_off_is_seeded_and_disjoint():
    s = data.RawSplit(np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1), np.arange(100))
    rest, held = data.split_off(s, 10, seed=3)
    rest2, held2 = data.split_off(s, 10, seed=3)
    assert held.labels.tolist() == held2.labels.tolist()
    assert len(rest.labels) == 90 and not set(rest.labels) & set(held.labels)
    assert data.split_off(s, 10, seed=4)[1].labels.tolist() != held.labels.tolist()


def test_prepare_writes_the_contract(tmp_path):
    make_idx(str(tmp_path / "raw"), n_train=50, n_test=20)
    out = tmp_path / "prep"
    args = parse(prepare, ["--dataset", "fashion-mnist", "--data", tmp_path / "raw", "--height", 14,
                           "--width", 14, "--channels", 1, "--palette-size", 8, "--val", 10, "--out", out])
    assert prepare.main(args) == 0
    meta = data.read_meta(str(out))
    assert meta["splits"] == {"train": 40, "val": 10, "test": 20}
    assert meta["height"] == 14 and meta["palette_size"] == 8 and len(meta["palette"]) == 8
    assert all(len(c) == 1 and 0 <= c[0] <= 255 and isinstance(c[0], int) for c in meta["palette"])
    assert meta["classes"][9] == "Ankle boot" and meta["palette_psnr_db"] > 20
    json.dumps(meta)
    for split, n in meta["splits"].items():
        tokens, labels = data.load_prepared(str(out), split)
        assert tokens.dtype == np.uint16 and tokens.shape == (n, 196) and tokens.max() < 8
        assert labels.dtype == np.int64 and labels.shape == (n,)
    # the tokens are the palette quantization of the resized images
    raw = data.load_raw("fashion-mnist", str(tmp_path / "raw"), 14, 14, 1)
    test_tokens, _ = data.load_prepared(str(out), "test")
    from igpt.palette import quantize
    expect = quantize(data.preprocess(raw.test.images, 14, 14, 1), np.array(meta["palette"]))
    assert np.array_equal(test_tokens, expect.reshape(20, 196))


def test_prepare_an_rgb_folder(tmp_path):
    rng = np.random.default_rng(5)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 240, 240)]
    for c in ("x", "y"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            arr = np.array(colours, np.uint8)[rng.integers(0, 4, (8, 8))]
            Image.fromarray(arr, "RGB").save(tmp_path / "imgs" / c / f"{i}.png")
    out = tmp_path / "prep"
    args = parse(prepare, ["--dataset", "folder", "--data", tmp_path / "imgs", "--height", 8, "--width", 8,
                           "--channels", 3, "--palette-size", 4, "--val", 2, "--test-fraction", 0.25, "--out", out])
    prepare.main(args)
    meta = data.read_meta(str(out))
    assert sorted(map(tuple, meta["palette"])) == sorted(colours) and meta["palette_psnr_db"] is None  # exact
    assert meta["splits"] == {"train": 7, "val": 2, "test": 3} and meta["classes"] == ["x", "y"]
