"""Emoji drawn as SVG for colour iGPT: OpenMoji and Fluent Emoji, rasterised with librsvg.

- `openmoji` (npm `openmoji`, CC BY-SA 4.0): `data/openmoji.json` (one entry per image with its
  `hexcode`, CLDR `annotation` and `skintone_base_hexcode`) and `color/svg/<hexcode>.svg`.
- `fluent` (npm `fluentui-emoji`, Microsoft's Fluent Emoji, MIT): `icons/flat/<name>.svg`, named
  after the emoji's CLDR name ("grinning-face", "waving-hand-medium-dark"). The package carries no
  code points, so names are matched to OpenMoji's annotations (OpenMoji must be fetched too). The
  flat style, not `icons/modern`: its solid colours stay sharp at 32x32 where the gradients of the
  modern style blur into each other.

Each image maps to a code point sequence, and through it to an emoji of emoji-data's `emoji.json`
(`emoji.CodeIndex`), which gives its group and `category`, so the classes are the same as for the
emoji-datasource PNGs. What maps to no emoji there (OpenMoji's own extras, Fluent names that are
not CLDR names) is left out and counted.

SVGs are rendered at the model's size by `rsvg-convert` (Debian `librsvg2-bin`) into
`<package>/render-<H>x<W>/` once, then decoded like the PNG sets (alpha composited on white).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

from . import emoji

SETS = ("openmoji", "fluent")
PACKAGES = {"openmoji": "openmoji", "fluent": "fluentui-emoji"}
VERSIONS = {"openmoji": "17.0.0", "fluent": "1.3.0"}  # the versions the loader was checked against
LICENCE_FILES = {"openmoji": "LICENSE.txt", "fluent": "LICENSE"}
FLUENT_STYLE = "flat"
# Fluent's skin-tone suffixes, in Unicode's order of the five modifiers (openmoji.json `skintone` 1..5)
FLUENT_TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
RSVG = "rsvg-convert"


def package_dir(cache: str, emoji_set: str) -> str:
    return os.path.join(cache, PACKAGES[emoji_set])


def _svg_subdir(emoji_set: str) -> str:
    return "color/svg" if emoji_set == "openmoji" else f"icons/{FLUENT_STYLE}"


def svg_dir(cache: str, emoji_set: str) -> str:
    return os.path.join(package_dir(cache, emoji_set), *_svg_subdir(emoji_set).split("/"))


def openmoji_json(cache: str) -> str:
    return os.path.join(package_dir(cache, "openmoji"), "data", "openmoji.json")


def is_fetched(cache: str, emoji_set: str) -> bool:
    if not os.path.isdir(svg_dir(cache, emoji_set)):
        return False
    return emoji_set != "openmoji" or os.path.isfile(openmoji_json(cache))


def _wanted(name: str, emoji_set: str) -> bool:
    if emoji_set == "openmoji":
        keep = ("package/data/openmoji.json", "package/LICENSE.txt", "package/package.json", "package/README.md")
    else:
        keep = ("package/LICENSE", "package/package.json", "package/README.md")
    folder = f"package/{_svg_subdir(emoji_set)}/"
    if name in keep:
        return True
    return name.startswith(folder) and name.endswith(".svg") and "/" not in name[len(folder):]


def extract_package(tgz: str, out: str, emoji_set: str) -> int:
    """The loader's files of an npm tarball (entries under `package/`): metadata, licence and the
    SVGs of the chosen style; no path that leaves `out`. Returns the files written."""
    n = emoji.extract_files(tgz, out, lambda name: _wanted(name, emoji_set))
    if not os.path.isdir(os.path.join(out, *_svg_subdir(emoji_set).split("/"))):
        raise RuntimeError(f"{tgz}: no package/{_svg_subdir(emoji_set)}/*.svg")
    return n


def fetch(cache: str, emoji_set: str, version: Optional[str] = None, npm: str = "npm") -> str:
    """`npm pack <package>@<version>` into the cache and extract what the loader reads. Returns the
    package folder; does nothing when it is already there."""
    if emoji_set not in SETS:
        raise ValueError(f"emoji set {emoji_set!r}: one of {SETS}")
    if is_fetched(cache, emoji_set):
        return package_dir(cache, emoji_set)
    spec = f"{PACKAGES[emoji_set]}@{version or VERSIONS[emoji_set]}"
    return emoji.npm_pack(cache, spec, package_dir(cache, emoji_set),
                          lambda tgz, out: extract_package(tgz, out, emoji_set), npm)


# ----------------------------------------------------------------------------- names -> code points

def cldr_slug(name: str) -> str:
    """A CLDR name as Fluent's file names write it: "A button (blood type)" -> "a-button-blood-type"."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.replace("'", "")).strip("-")


def fluent_names(openmoji_entries: Sequence[dict]) -> Dict[str, str]:
    """Fluent file name (without .svg) -> hexcode, from OpenMoji's CLDR annotations.

    An emoji without skin tones is `<name>`; one with them is `<name>-default` and
    `<name>-<tone>` for each single-tone variant, `<name>` being the tone-less emoji's name."""
    annotation = {e["hexcode"]: e["annotation"] for e in openmoji_entries}
    names: Dict[str, str] = {}
    for e in openmoji_entries:
        if e.get("skintone"):
            base = annotation.get(e.get("skintone_base_hexcode") or "")
            if base and e.get("skintone_combination") == "single" and 1 <= int(e["skintone"]) <= 5:
                names.setdefault(f"{cldr_slug(base)}-{FLUENT_TONES[int(e['skintone']) - 1]}", e["hexcode"])
        else:
            names.setdefault(cldr_slug(e["annotation"]), e["hexcode"])
            names.setdefault(cldr_slug(e["annotation"]) + "-default", e["hexcode"])
    return names


def read_openmoji(cache: str) -> List[dict]:
    with open(openmoji_json(cache), encoding="utf-8") as f:
        entries = json.load(f)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "hexcode" in e for e in entries):
        raise ValueError(f"{openmoji_json(cache)}: not OpenMoji's openmoji.json")
    return entries


def image_list(cache: str, emoji_set: str, index, skin_tones: bool = True) -> Tuple[List[Tuple[str, str, str]], Dict[str, int]]:
    """((group, category, svg path) per image the set has that maps to an emoji of `index`
    (an `emoji.CodeIndex`), {why left out: count}). A skin-tone variant emoji.json does not list
    yet joins its base emoji; an emoji it does not list at all is left out."""
    openmoji = read_openmoji(cache)
    base_of = {e["hexcode"]: e.get("skintone_base_hexcode") for e in openmoji}
    dropped: Dict[str, int] = {}
    out: List[Tuple[str, str, str]] = []
    seen = set()

    def add(hexcode: str, path: str, is_tone: bool) -> None:
        if is_tone and not skin_tones:
            return
        hit = index.lookup(hexcode)
        if hit is None and base_of.get(hexcode):  # a skin tone newer than emoji.json: its base emoji's group
            hit = index.lookup(base_of[hexcode])
        if hit is None:
            dropped["no emoji-data emoji"] = dropped.get("no emoji-data emoji", 0) + 1
            return
        if hit[1] is None:
            dropped["excluded category"] = dropped.get("excluded category", 0) + 1
            return
        key = index.normalise(hexcode)
        if key in seen:  # two files of one emoji: the first one
            dropped["duplicate"] = dropped.get("duplicate", 0) + 1
            return
        seen.add(key)
        out.append((hit[0], hit[1], path))

    folder = svg_dir(cache, emoji_set)
    files = set(os.listdir(folder))
    if emoji_set == "openmoji":
        for e in openmoji:
            name = e["hexcode"] + ".svg"
            if name in files:
                add(e["hexcode"], os.path.join(folder, name), bool(e.get("skintone")))
    else:
        names = fluent_names(openmoji)
        tone_suffixes = tuple("-" + t for t in FLUENT_TONES)
        for name in sorted(files):
            stem = name[:-len(".svg")]
            if not name.endswith(".svg"):
                continue
            if stem not in names:
                dropped["name not a CLDR name"] = dropped.get("name not a CLDR name", 0) + 1
                continue
            add(names[stem], os.path.join(folder, name), stem.endswith(tone_suffixes))
    return out, dropped


# ----------------------------------------------------------------------------- rendering

def render(svg: str, png: str, height: int, width: int, rsvg: str = RSVG) -> None:
    """svg -> an RGBA PNG of exactly height x width (the SVGs are square), written atomically."""
    tmp = png + ".tmp"
    r = subprocess.run([rsvg, "-w", str(width), "-h", str(height), "-f", "png", "-o", tmp, svg],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{rsvg} {svg} failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    os.replace(tmp, png)


def render_all(svgs: Sequence[str], out_dir: str, height: int, width: int, workers: int = 0,
               rsvg: str = RSVG) -> List[str]:
    """Render the SVGs not yet rendered into out_dir (librsvg subprocesses in parallel); returns
    the PNG path of every SVG, in order."""
    if shutil.which(rsvg) is None:
        raise FileNotFoundError(f"{rsvg} is needed to render SVG emoji: apt-get install librsvg2-bin")
    os.makedirs(out_dir, exist_ok=True)
    pngs = [os.path.join(out_dir, os.path.basename(s)[:-len(".svg")] + ".png") for s in svgs]
    todo = [(s, p) for s, p in zip(svgs, pngs) if not os.path.isfile(p)]
    if todo:
        print(f"emoji: rendering {len(todo)} SVGs at {height}x{width} -> {out_dir}", flush=True)
        with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1)) as pool:
            list(pool.map(lambda sp: render(sp[0], sp[1], height, width, rsvg), todo))
    return pngs


def render_dir(cache: str, emoji_set: str, height: int, width: int) -> str:
    """Where the set's renders at height x width are kept (named after the SVG folder: its style)."""
    return os.path.join(package_dir(cache, emoji_set), f"render-{_svg_subdir(emoji_set).replace('/', '-')}-{height}x{width}")
