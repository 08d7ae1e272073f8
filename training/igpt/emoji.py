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

OpenMoji and Fluent Emoji (SVG, `emoji_svg.py`) join as sets "openmoji" and "fluent", mapped to
these emoji (and so to their groups and categories) by code point.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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


def npm_pack(cache: str, spec: str, dest: str, extract: Callable[[str, str], object], npm: str = "npm") -> str:
    """`npm pack SPEC` in a staging folder of the cache, `extract(tarball, folder)`, then the folder
    replaces dest. Returns dest."""
    if shutil.which(npm) is None:
        raise FileNotFoundError(f"npm is needed to download {spec} (or put the package extracted at {dest})")
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        print(f"emoji: npm pack {spec} -> {cache}", flush=True)
        r = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True)
        tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        if r.returncode != 0 or len(tgz) != 1:
            raise RuntimeError(f"npm pack {spec} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
        staging = os.path.join(tmp, "package")
        extract(os.path.join(tmp, tgz[0]), staging)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(staging, dest)
    return dest


def extract_files(tgz: str, out: str, wanted: Callable[[str], bool]) -> int:
    """The files of an npm tarball (entries under `package/`) whose entry name `wanted` accepts,
    into out; no path that leaves it. Returns the files written."""
    n = 0
    with tarfile.open(tgz, "r:gz") as tar:
        for m in tar:
            if not m.isfile() or ".." in m.name.split("/") or not m.name.startswith("package/") or not wanted(m.name):
                continue
            path = os.path.join(out, m.name[len("package/"):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with tar.extractfile(m) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
    return n


def fetch(cache: str, emoji_set: str, version: Optional[str] = None, npm: str = "npm") -> str:
    """`npm pack emoji-datasource-<set>[@version]` into the cache and extract what the loader reads.

    Returns the package folder. Does nothing when it is already there."""
    if emoji_set not in SETS:
        raise ValueError(f"emoji set {emoji_set!r}: one of {SETS}")
    if is_fetched(cache, emoji_set):
        return package_dir(cache, emoji_set)
    spec = f"emoji-datasource-{emoji_set}" + (f"@{version}" if version else "")
    return npm_pack(cache, spec, package_dir(cache, emoji_set),
                    lambda tgz, out: extract_package(tgz, out, emoji_set), npm)


def extract_package(tgz: str, out: str, emoji_set: str) -> int:
    """Extract emoji.json, LICENSE, package.json and img/<set>/64/*.png of an npm tarball (entries
    under `package/`); nothing else, and no path that leaves `out`. Returns the files written."""
    keep = {"package/emoji.json", "package/LICENSE", "package/package.json"}
    img_prefix = f"package/img/{emoji_set}/{IMAGE_SIZE}/"
    n = extract_files(tgz, out, lambda name: name in keep or (
        name.startswith(img_prefix) and name.endswith(".png") and "/" not in name[len(img_prefix):]))
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


class CodeIndex:
    """Code point sequence -> (group, category) over emoji-data's emoji.json: every emoji's
    `unified` and `non_qualified` code and its skin-tone variants' codes, compared without the
    variation selectors FE0E/FE0F (packages disagree on them). The group is the base emoji's
    `unified`; the category is None for EXCLUDED_CATEGORIES."""

    def __init__(self, entries: Sequence[dict]):
        self._by_code: Dict[str, Tuple[str, Optional[str]]] = {}
        for e in entries:
            hit = (e["unified"], None if e["category"] in EXCLUDED_CATEGORIES else e["category"])
            codes = [e["unified"], e.get("non_qualified")]
            codes += [v.get("unified") for v in (e.get("skin_variations") or {}).values()]
            for c in codes:
                if c:
                    self._by_code.setdefault(self.normalise(c), hit)

    @staticmethod
    def normalise(code: str) -> str:
        return "-".join(p for p in code.upper().replace(" ", "-").split("-") if p and p not in ("FE0F", "FE0E"))

    def lookup(self, code: str) -> Optional[Tuple[str, Optional[str]]]:
        return self._by_code.get(self.normalise(code))


def _decode_resized(paths: Sequence[str], height: int, width: int, channels: int) -> List[np.ndarray]:
    """Decode (alpha on white) and resize to height x width, one resize per source size."""
    batch = [data.decode_image(p, channels) for p in paths]
    for hw in {b.shape[:2] for b in batch}:
        idx = [i for i, b in enumerate(batch) if b.shape[:2] == hw]
        small = data.resize(np.stack([batch[i] for i in idx]), height, width)
        for i, img in zip(idx, small):
            batch[i] = img
    return batch


def _hold_out(groups: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Which images are test: a seeded `test_fraction` of them in whole groups (data.split_off's
    rule, seed + 1 as it always was). Fewer than two groups: none."""
    if len(np.unique(groups)) < 2:
        return np.zeros(len(groups), bool)
    split = data.RawSplit(np.zeros((len(groups), 1, 1, 1), np.uint8), np.arange(len(groups)), groups)
    n_test = min(max(1, int(round(test_fraction * len(groups)))), len(groups) - 1)
    _, held = data.split_off(split, n_test, seed + 1)
    return np.isin(np.arange(len(groups)), held.labels)


def load_emoji(cache: Optional[str], height: int, width: int, channels: int, sets: Sequence[str] = ("google",),
               seed: int = 0, test_fraction: float = 0.1, skin_tones: bool = True,
               download: bool = True) -> data.RawDataset:
    """Every image of the chosen sets at height x width, labelled by category, grouped by emoji.

    The test split is a seeded `test_fraction` of the emoji-datasource sets' images (SETS) in
    whole emoji, exactly as before SVG sets existed, so it is the same whatever else is added.
    The SVG sets (emoji_svg.SETS) follow: an emoji already in test or train stays there; emoji
    only they draw are split by the same rule among themselves. `test` holds the datasource sets'
    test images first (`info["test_base_images"]` of them), then the added sets' in set order
    (`info["test_added"]`: {set: images}). `skin_tones`: the skin-tone variants too (they make
    "People & Body" about 60% of the images; without them 20%)."""
    from . import emoji_svg

    cache = cache or DEFAULT_CACHE
    sets = list(dict.fromkeys(sets))
    unknown = [s for s in sets if s not in SETS + emoji_svg.SETS]
    if not sets or unknown:
        raise ValueError(f"emoji sets {sets}: choose from {SETS + emoji_svg.SETS}")
    base_sets = [s for s in sets if s in SETS]
    svg_sets = [s for s in sets if s in emoji_svg.SETS]
    # emoji-data's emoji.json names the groups and categories; without a datasource set, Google's is read
    needed = base_sets or ["google"]
    for s in needed:
        if not is_fetched(cache, s):
            if not download:
                raise FileNotFoundError(f"{package_dir(cache, s)}: emoji-datasource-{s} is not there")
            fetch(cache, s)
    for s in dict.fromkeys(svg_sets + (["openmoji"] if svg_sets else [])):  # fluent's names come from openmoji.json
        if not emoji_svg.is_fetched(cache, s):
            if not download:
                raise FileNotFoundError(f"{emoji_svg.package_dir(cache, s)}: {emoji_svg.PACKAGES[s]} is not there")
            emoji_svg.fetch(cache, s)
    reference = read_entries(os.path.join(package_dir(cache, needed[0]), "emoji.json"))
    classes = categories(reference)
    label_of = {c: i for i, c in enumerate(classes)}
    group_ids: Dict[str, int] = {}
    images, labels, groups, origin = [], [], [], []
    per_set: Dict[str, int] = {}
    dropped: Dict[str, Dict[str, int]] = {}

    def add(emoji_set: str, listed: Sequence[Tuple[str, str]], paths: Sequence[str]) -> None:
        for (group, category), img in zip(listed, _decode_resized(paths, height, width, channels)):
            if category not in label_of:
                label_of[category] = len(classes)
                classes.append(category)
            images.append(img)
            labels.append(label_of[category])
            groups.append(group_ids.setdefault(group, len(group_ids)))
            origin.append(emoji_set)
        per_set[emoji_set] = len(paths)

    for s in base_sets:
        entries = reference if s == needed[0] else read_entries(os.path.join(package_dir(cache, s), "emoji.json"))
        folder = _image_dir(cache, s)
        listed, paths = [], []
        for group, category, name in image_list(entries, s, skin_tones):
            path = os.path.join(folder, name)
            if os.path.isfile(path):  # emoji.json may list an image the package does not ship
                listed.append((group, category))
                paths.append(path)
        add(s, listed, paths)
    n_base = len(images)
    index = CodeIndex(reference) if svg_sets else None
    for s in svg_sets:
        found, dropped[s] = emoji_svg.image_list(cache, s, index, skin_tones)
        pngs = emoji_svg.render_all([p for _, _, p in found], emoji_svg.render_dir(cache, s, height, width),
                                    height, width)
        add(s, [(g, c) for g, c, _ in found], pngs)
    if not images:
        raise FileNotFoundError(f"{cache}: no emoji images found for {sets}")

    groups_arr = np.asarray(groups, dtype=np.int64)
    is_test = np.zeros(len(images), bool)
    is_test[:n_base] = _hold_out(groups_arr[:n_base], test_fraction, seed)
    base_test, base_all = set(groups_arr[:n_base][is_test[:n_base]]), set(groups_arr[:n_base])
    added = groups_arr[n_base:]
    new_only = ~np.isin(added, list(base_all))
    is_test[n_base:] = np.isin(added, list(base_test))
    is_test[n_base:][new_only] = _hold_out(added[new_only], test_fraction, seed)
    test_idx, train_idx = np.flatnonzero(is_test), np.flatnonzero(~is_test)  # datasource sets first, as loaded
    everything = data.RawSplit(np.stack(images), np.asarray(labels, dtype=np.int64), groups_arr)
    origin_arr = np.asarray(origin)
    info = {"cache": os.path.abspath(cache), "sets": sets, "skin_tones": skin_tones, "emoji": len(group_ids),
            "images": len(images), "images_per_set": per_set,
            "split": "by emoji (all sets and skin tones of an emoji in one split)"}
    if svg_sets:
        info["test_base_images"] = int(is_test[:n_base].sum())
        info["test_added"] = {s: int((origin_arr[test_idx] == s).sum()) for s in svg_sets}
        info["new_only_emoji"] = int(len(np.unique(added[new_only])))
        info["left_out"] = dropped
        info["renderer"] = "rsvg-convert (librsvg)"
    return data.RawDataset("emoji", everything.take(train_idx), everything.take(test_idx), classes, info)
