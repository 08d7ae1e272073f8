"""The emoji dataset (igpt/emoji.py) on a tiny fake emoji-datasource layout: no network."""
import io
import json
import os
import stat
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import parse
from igpt import data, emoji, prepare

# (unified, category, sort_order, skin tones?) — categories deliberately not in alphabetical order
EMOJI = [
    ("1F600", "Smileys & Emotion", 1, False), ("1F601", "Smileys & Emotion", 2, False),
    ("1F602", "Smileys & Emotion", 3, False), ("1F44B", "People & Body", 10, True),
    ("1F44D", "People & Body", 11, True), ("1F476", "People & Body", 12, False),
    ("1F436", "Animals & Nature", 20, False), ("1F431", "Animals & Nature", 21, False),
    ("1F98A", "Animals & Nature", 22, False), ("1F34E", "Food & Drink", 30, False),
    ("1F34C", "Food & Drink", 31, False), ("1F355", "Food & Drink", 32, False),
    ("1F3FB", "Component", 5, False),  # a skin-tone swatch: left out (emoji.EXCLUDED_CATEGORIES)
]
TONES = ["1F3FB", "1F3FF"]
MISSING_IN_TWITTER = "1F355"


def emoji_json(emoji_set):
    entries = []
    for unified, cat, order, tones in reversed(EMOJI):  # file order != sort order
        e = {"unified": unified, "image": unified.lower() + ".png", "category": cat, "sort_order": order,
             "has_img_google": True, "has_img_twitter": unified != MISSING_IN_TWITTER}
        if tones:
            e["skin_variations"] = {t: {"unified": f"{unified}-{t}", "image": f"{unified}-{t}".lower() + ".png",
                                        "has_img_google": True, "has_img_twitter": True} for t in TONES}
        entries.append(e)
    return entries


def colour_of(name, emoji_set):
    h = sum(ord(c) * (i + 1) for i, c in enumerate(name + emoji_set))
    return (h * 37 % 256, h * 91 % 256, h * 53 % 256)


def png(name, emoji_set):
    """64x64 RGBA: a coloured disc on a transparent background, a half-transparent band."""
    y, x = np.mgrid[:64, :64]
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = colour_of(name, emoji_set)
    rgba[..., 3] = np.where((x - 32) ** 2 + (y - 32) ** 2 < 24 ** 2, 255, 0)
    rgba[28:36, :, 3] = np.maximum(rgba[28:36, :, 3], 128)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def write_package(root, emoji_set):
    """The extracted layout: root/emoji.json, root/img/<set>/64/*.png (what fetch leaves)."""
    entries = emoji_json(emoji_set)
    img = os.path.join(root, "img", emoji_set, "64")
    os.makedirs(img, exist_ok=True)
    with open(os.path.join(root, "emoji.json"), "w") as f:
        json.dump(entries, f)
    for e in entries:
        names = [e["image"]] if e[f"has_img_{emoji_set}"] else []
        names += [v["image"] for v in (e.get("skin_variations") or {}).values() if v[f"has_img_{emoji_set}"]]
        for n in names:
            with open(os.path.join(img, n), "wb") as f:
                f.write(png(n, emoji_set))


@pytest.fixture
def cache(tmp_path):
    for s in emoji.SETS:
        write_package(emoji.package_dir(str(tmp_path / "cache"), s), s)
    return str(tmp_path / "cache")


N_EMOJI = len(EMOJI) - 1  # less the Component entry
N_GOOGLE = N_EMOJI + 2 * len(TONES)  # 12 emoji + 2 of them with 2 skin tones = 16
N_TWITTER = N_GOOGLE - 1


def test_loads_every_image_labelled_by_category(cache):
    raw = emoji.load_emoji(cache, 32, 32, 3, sets=["google"], test_fraction=0.25, download=False)
    assert raw.name == "emoji"
    assert raw.classes == ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink"]
    n = len(raw.train.labels) + len(raw.test.labels)
    assert n == N_GOOGLE and raw.info["images"] == N_GOOGLE and raw.info["emoji"] == N_EMOJI
    everything = np.concatenate([raw.train.labels, raw.test.labels])
    assert np.bincount(everything).tolist() == [3, 3 + 2 * len(TONES), 3, 3]
    assert raw.train.images.shape[1:] == (32, 32, 3) and raw.train.images.dtype == np.uint8
    # transparent corners are white (alpha composited on white); the disc keeps its colour
    imgs = np.concatenate([raw.train.images, raw.test.images])
    assert (imgs[:, 0, 0] == 255).all()
    assert not (imgs[:, 16, 16] == 255).all()


def test_without_skin_tones(cache):
    raw = emoji.load_emoji(cache, 8, 8, 3, sets=["google"], test_fraction=0.25, skin_tones=False, download=False)
    assert len(raw.train.labels) + len(raw.test.labels) == N_EMOJI
    assert np.bincount(np.concatenate([raw.train.labels, raw.test.labels])).tolist() == [3, 3, 3, 3]


def test_test_split_holds_whole_emoji_and_is_seeded(cache):
    a = emoji.load_emoji(cache, 16, 16, 3, sets=["google", "twitter"], seed=3, test_fraction=0.3, download=False)
    b = emoji.load_emoji(cache, 16, 16, 3, sets=["google", "twitter"], seed=3, test_fraction=0.3, download=False)
    assert np.array_equal(a.test.groups, b.test.groups) and np.array_equal(a.test.images, b.test.images)
    assert len(a.train.labels) + len(a.test.labels) == N_GOOGLE + N_TWITTER
    assert not set(a.train.groups) & set(a.test.groups)  # both sets, all skin tones of an emoji on one side
    assert len(a.test.labels) >= round(0.3 * (N_GOOGLE + N_TWITTER))
    counts = np.bincount(np.concatenate([a.train.groups, a.test.groups]))
    assert sorted(set(counts.tolist())) == [1, 2, 6]  # pizza: google only; 2 sets; 2 sets x (1 + 2 tones)


def test_split_off_with_groups_and_without():
    split = data.RawSplit(np.zeros((10, 1, 1, 1), np.uint8), np.arange(10), np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3]))
    rest, held = data.split_off(split, 4, seed=0)
    assert len(held.labels) >= 4 and not set(rest.groups) & set(held.groups)
    assert sorted(rest.labels.tolist() + held.labels.tolist()) == list(range(10))
    with pytest.raises(ValueError):
        data.split_off(split, 9, seed=0)  # only by taking every group
    plain = data.RawSplit(split.images, split.labels)
    rest, held = data.split_off(plain, 4, seed=0)
    assert len(held.labels) == 4 and held.groups is None


def test_prepare_command_with_emoji(cache, tmp_path):
    out = tmp_path / "prepared"
    args = parse(prepare, ["--dataset", "emoji", "--data", cache, "--emoji-sets", "google,twitter", "--height", 8,
                           "--width", 8, "--channels", 3, "--palette-size", 16, "--val", 0.2, "--test-fraction", 0.2,
                           "--out", out])
    meta = prepare.prepare(args)
    assert meta["dataset"] == "emoji" and meta["channels"] == 3 and len(meta["palette"]) == 16
    assert meta["source"]["sets"] == ["google", "twitter"] and meta["source"]["emoji"] == N_EMOJI
    assert sum(meta["splits"].values()) == N_GOOGLE + N_TWITTER and min(meta["splits"].values()) > 0
    assert 10 < meta["palette_psnr_db"] < 60  # colours of unseen emoji: only roughly right
    tokens, labels = data.load_prepared(str(out), "train")
    assert tokens.shape[1] == 64 and tokens.max() < 16 and labels.max() < 4


def test_missing_package_without_download_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="emoji-datasource-google"):
        emoji.load_emoji(str(tmp_path), 8, 8, 3, download=False)


def _tarball(path, emoji_set):
    src = path.parent / "src"
    write_package(str(src), emoji_set)
    with tarfile.open(path, "w:gz") as tar:
        for dirpath, _, files in os.walk(src):
            for f in files:
                full = os.path.join(dirpath, f)
                tar.add(full, arcname="package/" + os.path.relpath(full, src))
        for name, body in (("package/img/google/32/small.png", b"x"), ("package/README.md", b"x"),
                           ("package/../evil.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def test_fetch_runs_npm_pack_and_keeps_only_what_the_loader_reads(tmp_path):
    tgz = tmp_path / "made" / "emoji-datasource-google-1.0.0.tgz"
    tgz.parent.mkdir()
    _tarball(tgz, "google")
    npm = tmp_path / "npm"  # stands in for npm: `npm pack SPEC` leaves SPEC's tarball in the working folder
    npm.write_text(f"#!{sys.executable}\nimport shutil, sys\nassert sys.argv[1:3] == ['pack', 'emoji-datasource-google']\n"
                   f"shutil.copy({str(tgz)!r}, '.')\n")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    cache = tmp_path / "cache"
    d = emoji.fetch(str(cache), "google", npm=str(npm))
    assert d == emoji.package_dir(str(cache), "google") and emoji.is_fetched(str(cache), "google")
    kept = sorted(os.path.relpath(os.path.join(p, f), d) for p, _, fs in os.walk(d) for f in fs)
    assert "emoji.json" in kept and all(k == "emoji.json" or k.startswith("img/google/64/") for k in kept)
    assert len(kept) == 1 + N_GOOGLE + 1  # emoji.json, the images (the Component one too)
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()
    assert [f for f in os.listdir(cache) if f.startswith(".")] == []  # the staging folder is gone
    npm.write_text("#!/bin/sh\nexit 3\n")  # already there: npm is not run again
    assert emoji.fetch(str(cache), "google", npm=str(npm)) == d
    raw = emoji.load_emoji(str(cache), 8, 8, 3, test_fraction=0.25, download=False)
    assert len(raw.train.labels) + len(raw.test.labels) == N_GOOGLE
