"""Emoji images for colour iGPT: the emoji-datasource npm packages (iamcal/emoji-data).

`emoji-datasource-google` (and `-twitter`) hold `emoji.json`, one entry per emoji with its
`category` (the class label: "Smileys & Emotion", "Flags", ...), its `image` file name and its
`skin_variations`, and `img/<set>/64/<image>`: 64x64 RGBA PNGs. Images are decoded as a service
decodes them (alpha composited on white) and resized to the model's size (antialiased bicubic).

An emoji's skin-tone variants and its drawings in every set share a group, and splits hold out
whole groups (`RawSplit.groups`, honoured by `data.split_off`), so the same emoji never sits in
both train and test, or train and val.

The packages are fetched once with npm (`npm pack emoji-datasource-<set>`) into a cache folder
(default ~/.cache/igpt/emoji, `--data` to choose): only emoji.json, the licence and the 64 px
images are kept, in `<cache>/emoji-datasource-<set>/`. Google's emoji are Apache-2.0 (Noto
Emoji), Twitter's CC-BY 4.0 (Twemoji); see each folder's LICENSE.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import data

SETS = ("google", "twitter")
# "Component": skin-tone swatches and hair parts (5 images), building blocks rather than emoji
EXCLUDED_CATEGORIES = ("Component",)
IMAGE_SIZE = 64
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "igpt", "emoji")


def package_dir(cache: str, emoji_set: str) -> str:
    return os.path.join(cache, f"emoji-datasource-{emoji_set}")


def _image_dir(cache: str, emoji_set: str) -> str:
    return os.path.join(package_dir(cache, emoji_set), "img", emoji_set, str(IMAGE_SIZE))


def is_fetched(cache: str, emoji_set: str) -> bool:
    return (os.path.isfile(os.path.join(package_dir(cache, emoji_set), "emoji.json"))
            and os.path.isdir(_image_dir(cache, emoji_set)))


def fetch(cache: str, emoji_set: str, version: Optional[str] = None, npm: str = "npm") -> str:
    """`npm pack emoji-datasource-<set>[@version]` into the cache and extract what the loader reads.

    Returns the package folder. Does nothing when it is already there."""
    if emoji_set not in SETS:
        raise ValueError(f"emoji set {emoji_set!r}: one of {SETS}")
    dest = package_dir(cache, emoji_set)
    if is_fetched(cache, emoji_set):
        return dest
    if shutil.which(npm) is None:
        raise FileNotFoundError(f"npm is needed to download emoji-datasource-{emoji_set} (or put the package "
                                f"extracted at {dest})")
    os.makedirs(cache, exist_ok=True)
    spec = f"emoji-datasource-{emoji_set}" + (f"@{version}" if version else "")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        print(f"emoji: npm pack {spec} -> {cache}", flush=True)
        r = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True)
        tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        if r.returncode != 0 or len(tgz) != 1:
            raise RuntimeError(f"npm pack {spec} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
        staging = os.path.join(tmp, "package")
        extract_package(os.path.join(tmp, tgz[0]), staging, emoji_set)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(staging, dest)
    return dest


def extract_package(tgz: str, out: str, emoji_set: str) -> int:
    """Extract emoji.json, LICENSE, package.json and img/<set>/64/*.png of an npm tarball (entries
    under `package/`); nothing else, and no path that leaves `out`. Returns the files written."""
    keep = {"package/emoji.json", "package/LICENSE", "package/package.json"}
    img_prefix = f"package/img/{emoji_set}/{IMAGE_SIZE}/"
    n = 0
    with tarfile.open(tgz, "r:gz") as tar:
        for m in tar:
            name = m.name
            if not m.isfile() or ".." in name.split("/"):
                continue
            wanted = name in keep or (name.startswith(img_prefix) and name.endswith(".png")
                                      and "/" not in name[len(img_prefix):])
            if not wanted:
                continue
            path = os.path.join(out, name[len("package/"):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with tar.extractfile(m) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
    if not os.path.isfile(os.path.join(out, "emoji.json")):
        raise RuntimeError(f"{tgz}: no package/emoji.json")
    return n


def read_entries(emoji_json: str) -> List[dict]:
    with open(emoji_json, encoding="utf-8") as f:
        entries = json.load(f)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "category" in e for e in entries):
        raise ValueError(f"{emoji_json}: not an emoji-datasource emoji.json")
    return entries


def categories(entries: Sequence[dict]) -> List[str]:
    """The categories in Unicode's order (by their first emoji's sort_order), less EXCLUDED_CATEGORIES."""
    first: Dict[str, int] = {}
    for i, e in enumerate(entries):
        if e["category"] in EXCLUDED_CATEGORIES:
            continue
        order = int(e.get("sort_order", i))
        c = e["category"]
        first[c] = min(first.get(c, order), order)
    return sorted(first, key=lambda c: (first[c], c))


def image_list(entries: Sequence[dict], emoji_set: str, skin_tones: bool = True) -> List[Tuple[str, str, str]]:
    """(group = the base emoji's `unified` code, category, image file) for every image the set has:
    each emoji, and its skin-tone variants when `skin_tones`."""
    flag = f"has_img_{emoji_set}"
    out = []
    for e in entries:
        if e["category"] in EXCLUDED_CATEGORIES:
            continue
        group = e["unified"]
        if e.get(flag) and e.get("image"):
            out.append((group, e["category"], e["image"]))
        if skin_tones:
            for key in sorted(e.get("skin_variations") or {}):
                v = e["skin_variations"][key]
                if v.get(flag) and v.get("image"):
                    out.append((group, e["category"], v["image"]))
    return out


def load_emoji(cache: Optional[str], height: int, width: int, channels: int, sets: Sequence[str] = ("google",),
               seed: int = 0, test_fraction: float = 0.1, skin_tones: bool = True,
               download: bool = True) -> data.RawDataset:
    """Every image of the chosen sets at height x width, labelled by category, grouped by emoji;
    a seeded `test_fraction` of the images, in whole emoji, is the test split. `skin_tones`: the
    skin-tone variants too (they make "People & Body" about 60% of the images; without them 20%)."""
    cache = cache or DEFAULT_CACHE
    sets = list(dict.fromkeys(sets))
    if not sets:
        raise ValueError("no emoji set chosen")
    for s in sets:
        if not is_fetched(cache, s):
            if not download:
                raise FileNotFoundError(f"{package_dir(cache, s)}: emoji-datasource-{s} is not there")
            fetch(cache, s)
    # the classes come from the first set's emoji.json; every set names the same emoji and categories
    classes = categories(read_entries(os.path.join(package_dir(cache, sets[0]), "emoji.json")))
    label_of = {c: i for i, c in enumerate(classes)}
    group_ids: Dict[str, int] = {}
    images, labels, groups = [], [], []
    for s in sets:
        entries = read_entries(os.path.join(package_dir(cache, s), "emoji.json"))
        folder = _image_dir(cache, s)
        batch = []
        for group, category, name in image_list(entries, s, skin_tones):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue  # emoji.json lists an image the package does not ship
            if category not in label_of:
                label_of[category] = len(classes)
                classes.append(category)
            batch.append(data.decode_image(path, channels))
            labels.append(label_of[category])
            groups.append(group_ids.setdefault(group, len(group_ids)))
        if batch:
            sizes = {b.shape[:2] for b in batch}
            # the packages' images are all 64x64; resize per size in case one is not
            for hw in sizes:
                idx = [i for i, b in enumerate(batch) if b.shape[:2] == hw]
                small = data.resize(np.stack([batch[i] for i in idx]), height, width)
                for i, img in zip(idx, small):
                    batch[i] = img
            images.extend(batch)
    if not images:
        raise FileNotFoundError(f"{cache}: no emoji images found for {sets}")
    everything = data.RawSplit(np.stack(images), np.asarray(labels, dtype=np.int64),
                               np.asarray(groups, dtype=np.int64))
    n_test = max(1, int(round(test_fraction * len(everything.labels))))
    train, test = data.split_off(everything, n_test, seed + 1)
    info = {"cache": os.path.abspath(cache), "sets": sets, "skin_tones": skin_tones, "emoji": len(group_ids), "images": len(images),
            "split": "by emoji (all sets and skin tones of an emoji in one split)"}
    return data.RawDataset("emoji", train, test, classes, info)
