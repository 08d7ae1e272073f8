"""OpenMoji and Fluent Emoji (igpt/emoji_svg.py) on tiny fake packages, rendered by rsvg-convert: no network."""
import io
import json
import os
import shutil
import sys
import tarfile

import numpy as np
import pytest
import torch

from conftest import parse
from igpt import data, emoji, emoji_svg, prepare
from igpt.model import IGpt, IGptConfig
from test_emoji import N_GOOGLE, N_TWITTER, write_package

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import compress_prepared  # noqa: E402
import emoji_test_added  # noqa: E402

needs_rsvg = pytest.mark.skipif(shutil.which("rsvg-convert") is None,
                                reason="rsvg-convert (Debian librsvg2-bin, installed by test.sh) is not here")

# emoji.json of test_emoji.py plus three emoji no datasource set has an image of: only the SVG sets draw them
NEW_ONLY = [("1F98B", "Animals & Nature", 23), ("1F34F", "Food & Drink", 33), ("1F352", "Food & Drink", 34)]


def svg(colour, shape="circle"):
    body = (f'<circle cx="36" cy="36" r="30" fill="{colour}"/>' if shape == "circle"
            else f'<rect x="6" y="20" width="60" height="32" fill="{colour}"/>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">{body}</svg>'


def om_entry(hexcode, annotation, group, tone="", base=""):
    return {"hexcode": hexcode, "annotation": annotation, "group": group, "skintone": tone,
            "skintone_combination": "single" if tone else "", "skintone_base_hexcode": base}


# hexcode, annotation, group, skin tone, base, colour
OPENMOJI = [
    ("1F600", "grinning face", "smileys-emotion", "", "", "#f0c000"),
    ("1F44B", "waving hand", "people-body", "", "", "#e0a000"),
    ("1F44B-1F3FB", "waving hand: light skin tone", "people-body", 1, "1F44B", "#f8d8b0"),
    ("1F44B-1F3FC", "waving hand: medium-light skin tone", "people-body", 2, "1F44B", "#e0b890"),  # not in emoji.json
    ("1F98B", "butterfly", "animals-nature", "", "", "#3070f0"),
    ("1F34F", "green apple", "food-drink", "", "", "#60c030"),
    ("1F352", "cherries", "food-drink", "", "", "#c00020"),
    ("1F3FB", "light skin tone", "component", "", "", "#f8d8b0"),  # Component: excluded
    ("E000", "openmoji extra", "extras-openmoji", "", "", "#808080"),  # no Unicode emoji
]
FLUENT = {"grinning-face": "#ffb02e", "waving-hand-default": "#ffc83d", "waving-hand-light": "#fdd8b5",
          "butterfly": "#1c5cd7", "person-elf": "#00a6ed"}  # Fluent's own name for "elf": not a CLDR name


def write_openmoji(root):
    os.makedirs(os.path.join(root, "data"))
    os.makedirs(os.path.join(root, "color", "svg"))
    with open(os.path.join(root, "data", "openmoji.json"), "w") as f:
        json.dump([om_entry(*e[:5]) for e in OPENMOJI], f)
    for e in OPENMOJI:
        with open(os.path.join(root, "color", "svg", e[0] + ".svg"), "w") as f:
            f.write(svg(e[5]))


def write_fluent(root):
    os.makedirs(os.path.join(root, "icons", "flat"))
    for name, colour in FLUENT.items():
        with open(os.path.join(root, "icons", "flat", name + ".svg"), "w") as f:
            f.write(svg(colour, "rect"))


@pytest.fixture
def cache(tmp_path):
    c = str(tmp_path / "cache")
    for s in emoji.SETS:
        write_package(emoji.package_dir(c, s), s)
        path = os.path.join(emoji.package_dir(c, s), "emoji.json")
        with open(path) as f:
            entries = json.load(f)
        entries += [{"unified": u, "image": u.lower() + ".png", "category": cat, "sort_order": order,
                     "has_img_google": False, "has_img_twitter": False} for u, cat, order in NEW_ONLY]
        with open(path, "w") as f:
            json.dump(entries, f)
    write_openmoji(emoji_svg.package_dir(c, "openmoji"))
    write_fluent(emoji_svg.package_dir(c, "fluent"))
    return c


def test_code_index_matches_without_variation_selectors_and_knows_skin_tones():
    index = emoji.CodeIndex([
        {"unified": "2764-FE0F", "non_qualified": "2764", "category": "Smileys & Emotion"},
        {"unified": "1F44B", "category": "People & Body",
         "skin_variations": {"1F3FB": {"unified": "1F44B-1F3FB"}}},
        {"unified": "1F3FB", "category": "Component"},
    ])
    assert index.lookup("2764") == ("2764-FE0F", "Smileys & Emotion")
    assert index.lookup("2764-fe0f") == ("2764-FE0F", "Smileys & Emotion")
    assert index.lookup("1F44B-1F3FB") == ("1F44B", "People & Body")  # a skin tone is its base emoji's group
    assert index.lookup("1F3FB") == ("1F3FB", None)  # excluded category
    assert index.lookup("1F44B-1F3FF") is None


def test_fluent_names_are_cldr_names_with_tone_suffixes():
    assert emoji_svg.cldr_slug("A button (blood type)") == "a-button-blood-type"
    assert emoji_svg.cldr_slug("piñata") == "pinata" and emoji_svg.cldr_slug("man’s shoe") == "mans-shoe"
    names = emoji_svg.fluent_names([om_entry(*e[:5]) for e in OPENMOJI])
    assert names["grinning-face"] == "1F600" and names["waving-hand-default"] == "1F44B"
    assert names["waving-hand-light"] == "1F44B-1F3FB" and names["waving-hand-medium-light"] == "1F44B-1F3FC"
    assert "person-elf" not in names


@needs_rsvg
def test_svg_sets_join_by_code_point_and_render_at_the_model_size(cache):
    raw = emoji.load_emoji(cache, 16, 16, 3, sets=["google", "twitter", "openmoji", "fluent"], test_fraction=0.25,
                           download=False)
    assert raw.classes == ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink"]
    # openmoji: 7 of 9 (the component and the extra left out; the newer skin tone joins its base emoji)
    # fluent: 4 of 5 (person-elf is not a CLDR name)
    assert raw.info["images_per_set"] == {"google": N_GOOGLE, "twitter": N_TWITTER, "openmoji": 7, "fluent": 4}
    assert raw.info["left_out"] == {"openmoji": {"excluded category": 1, "no emoji-data emoji": 1},
                                    "fluent": {"name not a CLDR name": 1}}
    assert raw.info["new_only_emoji"] == 3
    imgs = np.concatenate([raw.train.images, raw.test.images])
    assert imgs.shape[1:] == (16, 16, 3) and len(imgs) == N_GOOGLE + N_TWITTER + 11
    assert (imgs[:, 0, 0] == 255).all()  # transparent corners on white
    for s in ("openmoji", "fluent"):
        renders = sorted(os.listdir(emoji_svg.render_dir(cache, s, 16, 16)))
        assert len(renders) == raw.info["images_per_set"][s] and all(r.endswith(".png") for r in renders)
    # the rendered butterfly (OpenMoji's #3070f0 disc) is labelled Animals & Nature
    labels = np.concatenate([raw.train.labels, raw.test.labels])
    blue = np.flatnonzero((np.abs(imgs[:, 8, 8].astype(int) - [0x30, 0x70, 0xF0]).sum(1) < 30))
    assert len(blue) == 1 and labels[blue[0]] == raw.classes.index("Animals & Nature")


@needs_rsvg
def test_adding_svg_sets_keeps_the_datasource_test_split(cache):
    for seed in range(4):
        base = emoji.load_emoji(cache, 8, 8, 3, sets=["google", "twitter"], seed=seed, test_fraction=0.3, download=False)
        more = emoji.load_emoji(cache, 8, 8, 3, sets=["google", "twitter", "openmoji", "fluent"], seed=seed,
                                test_fraction=0.3, download=False)
        n = more.info["test_base_images"]
        assert n == len(base.test.labels) and "test_base_images" not in base.info
        assert np.array_equal(more.test.images[:n], base.test.images)
        assert np.array_equal(more.test.labels[:n], base.test.labels)
        assert np.array_equal(more.train.images[:len(base.train.labels)], base.train.images)
        assert not set(more.train.groups) & set(more.test.groups)  # one emoji, one split, every set
        assert sum(more.info["test_added"].values()) == len(more.test.labels) - n
        # an emoji of the datasource sets keeps its OpenMoji and Fluent drawings on its side
        base_test = set(more.test.groups[:n].tolist())
        base_train = set(more.train.groups[:len(base.train.labels)].tolist())
        assert base_test and set(more.test.groups[n:].tolist()) & (base_test | base_train) <= base_test
        assert not set(more.train.groups[len(base.train.labels):].tolist()) & base_test
        assert any(g in base_test for g in more.test.groups[n:].tolist())


@needs_rsvg
def test_new_only_emoji_are_split_by_the_same_rule(cache):
    tested = set()
    for seed in range(8):
        more = emoji.load_emoji(cache, 8, 8, 3, sets=["openmoji", "fluent"], seed=seed, test_fraction=0.3, download=False)
        assert more.info["test_base_images"] == 0  # no datasource set: every emoji is new-only
        assert not set(more.train.groups) & set(more.test.groups)
        assert len(more.test.labels) >= round(0.3 * (len(more.train.labels) + len(more.test.labels)))
        tested.add(tuple(sorted(set(more.test.groups.tolist()))))
    assert len(tested) > 1  # the seed chooses which emoji


@needs_rsvg
def test_prepare_writes_added_test_images_apart_and_the_script_measures_them(cache, tmp_path):
    out = tmp_path / "prepared"
    args = parse(prepare, ["--dataset", "emoji", "--data", cache, "--emoji-sets", "google,twitter,openmoji,fluent",
                           "--height", 8, "--width", 8, "--channels", 3, "--palette-size", 16, "--val", 0.2,
                           "--test-fraction", 0.3, "--out", out])
    meta = prepare.prepare(args)
    base = emoji.load_emoji(cache, 8, 8, 3, sets=["google", "twitter"], test_fraction=0.3, download=False)
    added = meta["source"]["test_added"]
    assert meta["splits"]["test"] == len(base.test.labels)
    assert meta["splits"]["test_added"] == sum(added.values()) > 0
    assert sum(meta["splits"].values()) == N_GOOGLE + N_TWITTER + 11
    assert 10 < meta["test_added_palette_psnr_db"] < 80
    tokens, labels = data.load_prepared(str(out), "test")
    assert np.array_equal(labels, base.test.labels)

    cfg = IGptConfig(palette_size=16, n_positions=64, n_embd=16, n_layer=1, n_head=2, n_classes=4,
                     height=8, width=8, channels=3)
    m = emoji_test_added.added_metrics(IGpt(cfg), str(out), batch_size=4, device=torch.device("cpu"))
    assert m["test_added_images"] == sum(added.values())
    assert 3.0 < m["test_added_bits_per_token"] < 5.0  # an untrained model: about log2(16) bits
    assert 0.0 <= m["test_added_classification_accuracy"] <= 1.0
    assert {k: v["images"] for k, v in m["test_added_by_set"].items()} == added
    n = {k: v["images"] for k, v in m["test_added_by_set"].items()}
    total = sum(v["bits_per_token"] * n[k] for k, v in m["test_added_by_set"].items()) / sum(n.values())
    assert abs(total - m["test_added_bits_per_token"]) < 1e-4  # the sets' figures add up to the total
    generative_only = emoji_test_added.added_metrics(IGpt(IGptConfig(**{**cfg.to_dict(), "n_classes": 0})), str(out),
                                                     batch_size=4, device=torch.device("cpu"))
    assert "test_added_classification_accuracy" not in generative_only

    small = tmp_path / "carry"
    size = compress_prepared.compress(str(out), str(small))
    assert size < sum(os.path.getsize(out / f) for f in os.listdir(out))
    for split in ("train", "val", "test"):
        for a, b in zip(data.load_prepared(str(out), split), data.load_prepared(str(small), split)):
            assert np.array_equal(a, b)
    with np.load(out / "test_added.npz") as a, np.load(small / "test_added.npz") as b:
        assert np.array_equal(a["tokens"], b["tokens"]) and np.array_equal(a["labels"], b["labels"])


def test_extract_keeps_only_the_loader_files(tmp_path):
    src = tmp_path / "src"
    write_fluent(str(src))
    (src / "icons" / "modern").mkdir()
    (src / "icons" / "modern" / "grinning-face.svg").write_text(svg("#000"))
    (src / "LICENSE").write_text("MIT License")
    tgz = tmp_path / "fluentui-emoji-1.3.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for dirpath, _, files in os.walk(src):
            for f in files:
                full = os.path.join(dirpath, f)
                tar.add(full, arcname="package/" + os.path.relpath(full, src))
        info = tarfile.TarInfo("package/../evil.svg")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    out = tmp_path / "out"
    assert emoji_svg.extract_package(str(tgz), str(out), "fluent") == len(FLUENT) + 1
    kept = sorted(os.path.relpath(os.path.join(p, f), out) for p, _, fs in os.walk(out) for f in fs)
    assert kept == ["LICENSE"] + sorted(f"icons/flat/{n}.svg" for n in FLUENT)
    assert not (tmp_path / "evil.svg").exists()
    with pytest.raises(RuntimeError, match="no package/color/svg"):  # not an OpenMoji tarball
        emoji_svg.extract_package(str(tgz), str(tmp_path / "o2"), "openmoji")
