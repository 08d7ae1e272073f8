"""Default sampling settings in a package's manifest: `export --sampling` and `python3 -m igpt sampling`."""
import json
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "training", "scripts"))

from igpt import __main__ as cli  # noqa: E402
from igpt import export, sampling_defaults  # noqa: E402
from igpt.checkpoint import save_checkpoint  # noqa: E402
import make_test_package  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny-package")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("settings, expected", [
    ({"temperature": 0.9, "top_p": 0.95}, {"temperature": 0.9, "top_p": 0.95}),
    ({"top_p": 1, "top_k": 40, "temperature": 0}, {"temperature": 0.0, "top_k": 40, "top_p": 1.0}),  # KEYS order
    ({"temperature": 100}, {"temperature": 100.0}),
    ({}, {}),
])
def test_check_accepts_the_request_ranges(settings, expected):
    out = sampling_defaults.check(settings)
    assert out == expected and list(out) == [k for k in sampling_defaults.KEYS if k in expected]


@pytest.mark.parametrize("settings, words", [
    ({"temprature": 0.9}, "unknown setting(s) temprature"),
    ({"temperature": -0.1}, "temperature must be 0 to 100"),
    ({"temperature": 100.5}, "temperature must be 0 to 100"),
    ({"temperature": float("nan")}, "temperature must be a number"),
    ({"temperature": "0.9"}, "temperature must be a number"),
    ({"temperature": True}, "temperature must be a number"),
    ({"top_p": 0}, "top_p must be greater than 0"),
    ({"top_p": 1.01}, "top_p must be greater than 0"),
    ({"top_k": -1}, "top_k must be an integer >= 0"),
    ({"top_k": 2.5}, "top_k must be an integer >= 0"),
    ({"top_k": False}, "top_k must be an integer >= 0"),
    ([0.9], "must be a JSON object"),
])
def test_check_refuses_what_no_request_could_send(settings, words):
    with pytest.raises(ValueError) as e:
        sampling_defaults.check(settings)
    assert words in str(e.value)


def test_export_writes_the_defaults_into_the_manifest_and_card(tmp_path, capsys):
    model = make_test_package.make_model()
    ckpt = make_test_package.make_checkpoint(model, ["dark", "mid", "light"])
    ckpt_path = str(tmp_path / "tiny.pt")
    save_checkpoint(ckpt_path, model, **{k: v for k, v in ckpt.items() if k not in ("config", "model")})
    out = tmp_path / "pkg"
    assert cli.main(["export", "--ckpt", ckpt_path, "--out", str(out), "--no-fp16",
                     "--sampling", '{"top_p": 0.9, "temperature": 0.8}']) == 0
    manifest = json.loads(_read(out / "model.json"))
    assert manifest["sampling"] == {"temperature": 0.8, "top_p": 0.9}
    assert list(manifest).index("sampling") == list(manifest).index("classes") + 1
    card = _read(out / "MODEL_CARD.md")
    assert "## Sampling defaults" in card and "| temperature | 0.8 |" in card and "| top_k | 0 (the service's) |" in card
    assert card.index("## Sampling defaults") < card.index("## Files")

    # Without --sampling the manifest has no such key (the service's global settings apply).
    export.export_package(model, ckpt, str(tmp_path / "plain"), model_id="plain", fp16=False)
    assert "sampling" not in json.loads(_read(tmp_path / "plain" / "model.json"))
    assert "Sampling defaults" not in _read(tmp_path / "plain" / "MODEL_CARD.md")


def test_export_refuses_bad_settings_before_writing_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "--ckpt", "missing.pt", "--out", str(tmp_path / "pkg"), "--sampling", '{"top_p": 2}'])
    assert e.value.code == 2
    assert "top_p must be greater than 0" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


def test_sampling_command_sets_replaces_and_clears_only_the_defaults(tmp_path, capsys):
    pkg = tmp_path / "pkg"
    shutil.copytree(FIXTURE, pkg)
    manifest_before, card_before = _read(pkg / "model.json"), _read(pkg / "MODEL_CARD.md")

    assert cli.main(["sampling", str(pkg), "--set", '{"temperature": 0.9, "top_p": 0.95}']) == 0
    manifest = json.loads(_read(pkg / "model.json"))
    assert manifest["sampling"] == {"temperature": 0.9, "top_p": 0.95}
    assert {k: v for k, v in manifest.items() if k != "sampling"} == json.loads(manifest_before)
    assert '"temperature": 0.9, "top_k": 0, "top_p": 0.95' in capsys.readouterr().out  # what a request gets
    card = _read(pkg / "MODEL_CARD.md")
    assert card.count("## Sampling defaults") == 1 and "| top_p | 0.95 |" in card

    # --set replaces the whole object; the card keeps one section.
    assert cli.main(["sampling", str(pkg), "--set", '{"top_k": 16}']) == 0
    assert json.loads(_read(pkg / "model.json"))["sampling"] == {"top_k": 16}
    card = _read(pkg / "MODEL_CARD.md")
    assert card.count("## Sampling defaults") == 1 and "| top_k | 16 |" in card and "| top_p | 0.95 |" not in card

    # --clear gives back the package as it was, byte for byte.
    assert cli.main(["sampling", str(pkg), "--clear"]) == 0
    assert _read(pkg / "model.json") == manifest_before
    assert _read(pkg / "MODEL_CARD.md") == card_before
    assert "sampling = none" in capsys.readouterr().out


def test_sampling_command_refuses_bad_settings_and_leaves_the_package(tmp_path, capsys):
    pkg = tmp_path / "pkg"
    shutil.copytree(FIXTURE, pkg)
    before = _read(pkg / "model.json")
    for bad in ('{"temperature": 0.9', '{"top_k": -3}', '{"greedy": true}'):
        with pytest.raises(SystemExit) as e:
            cli.main(["sampling", str(pkg), "--set", bad])
        assert e.value.code == 2
    assert "top_k must be an integer >= 0" in capsys.readouterr().err
    assert _read(pkg / "model.json") == before
