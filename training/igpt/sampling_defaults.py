"""`python3 -m igpt sampling <package> [--set JSON | --clear]`: a package's default sampling settings.

model.json's optional `sampling` object (models/README.md) names any of temperature (0 to 100, 0 = greedy), top_k
(an integer >= 0, 0 = off) and top_p (0 < p <= 1, 1 = off): the settings the service uses for each of them that a
completion or samples request leaves out. A setting the object does not name is the service's global one
(temperature 1, top_k 0, top_p 1). `export --sampling JSON` writes it; this command shows it, sets it on a package
already exported (only model.json's `sampling` and the card's "Sampling defaults" section change), or removes it.

    python3 -m igpt sampling models/emoji-32
    python3 -m igpt sampling models/emoji-32 --set '{"temperature": 0.9, "top_p": 0.95}'
    python3 -m igpt sampling models/emoji-32 --clear
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from typing import Any, Dict, Optional

KEYS = ("temperature", "top_k", "top_p")
GLOBAL = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
MAX_TEMPERATURE = 100.0  # the service's request range (src/IGpt.Api/Requests/RequestShape.cs)
CARD_TITLE = "## Sampling defaults"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", help="package folder, e.g. models/emoji-32")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--set", dest="settings", type=argument, default=None, metavar="JSON",
                      help='the defaults, replacing any there, e.g. \'{"temperature": 0.9, "top_p": 0.95}\'')
    what.add_argument("--clear", action="store_true", help="remove the defaults (the service's global ones apply)")


def main(args) -> int:
    if args.settings is not None or args.clear:
        set_package_sampling(args.package, None if args.clear else args.settings)
    manifest = _read_manifest(args.package)
    named = manifest.get("sampling")
    effective = {**GLOBAL, **(named or {})}
    print(f"{args.package}: model.json sampling = {json.dumps(named) if named else 'none'}; "
          f"a request that names none of them gets {json.dumps(effective)}")
    return 0


def check(settings: Any) -> Dict[str, Any]:
    """The settings in KEYS order, checked against the service's request ranges; ValueError naming what is wrong."""
    if not isinstance(settings, dict):
        raise ValueError(f"sampling must be a JSON object with any of {', '.join(KEYS)}; got {settings!r}")
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        raise ValueError(f"sampling: unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(KEYS)}")
    out: Dict[str, Any] = {}
    for key in KEYS:
        if key not in settings:
            continue
        v = settings[key]
        # bool is an int in Python, and JSON true is no number
        if key == "top_k":
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"sampling: top_k must be an integer >= 0 (0 = off); got {v!r}")
            out[key] = v
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"sampling: {key} must be a number; got {v!r}")
        if key == "temperature" and not 0 <= v <= MAX_TEMPERATURE:
            raise ValueError(f"sampling: temperature must be 0 to {MAX_TEMPERATURE:g} (0 = greedy); got {v!r}")
        if key == "top_p" and not 0 < v <= 1:
            raise ValueError(f"sampling: top_p must be greater than 0 and at most 1 (1 = off); got {v!r}")
        out[key] = float(v)
    return out


def parse(text: str) -> Dict[str, Any]:
    """`--sampling` / `--set`'s JSON text, checked."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"sampling: not JSON ({e}): {text!r}") from e
    return check(settings)


def argument(text: str) -> Dict[str, Any]:
    """`parse` as an argparse type: a bad value is a usage error naming the option."""
    try:
        return parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def with_sampling(manifest: Dict[str, Any], settings: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The manifest with `sampling` set to the checked settings (after `classes`), or without it when None or empty."""
    out = {k: v for k, v in manifest.items() if k != "sampling"}
    if not settings:
        return out
    keys = list(out)
    at = keys.index("classes") + 1 if "classes" in keys else len(keys)
    items = list(out.items())
    return dict(items[:at] + [("sampling", check(settings))] + items[at:])


def card_section(settings: Optional[Dict[str, Any]]) -> str:
    """The model card's section on the defaults ("" when the package has none)."""
    if not settings:
        return ""
    rows = "\n".join(f"| {k} | {settings[k]:g} |" if k in settings else f"| {k} | {GLOBAL[k]:g} (the service's) |"
                     for k in KEYS)
    return (f"{CARD_TITLE}\n\nThe service uses these for each of temperature, top_k and top_p that a completion or "
            "samples request leaves out (model.json `sampling`, models/README.md); `GET /v1/models/{id}` shows them.\n\n"
            f"| setting | default |\n|---|---|\n{rows}\n")


def set_card_section(card: str, settings: Optional[Dict[str, Any]]) -> str:
    """The card with its sampling section replaced by `settings`' (placed before "## Files"), or removed."""
    card = re.sub(rf"{re.escape(CARD_TITLE)}\n.*?(?=^## |\Z)", "", card, flags=re.S | re.M)
    section = card_section(settings)
    if not section:
        return card
    at = card.find("\n## Files")
    return card + "\n" + section if at < 0 else card[:at + 1] + section + "\n" + card[at + 1:]


def _read_manifest(package: str) -> Dict[str, Any]:
    with open(os.path.join(package, "model.json"), encoding="utf-8") as f:
        return json.load(f)


def set_package_sampling(package: str, settings: Optional[Dict[str, Any]]) -> None:
    """Writes `settings` (None or empty: removes them) into an exported package's model.json and card."""
    from .export import _write_json  # the exporter's layout, so that nothing else in model.json changes

    manifest = with_sampling(_read_manifest(package), settings)
    card = os.path.join(package, manifest.get("files", {}).get("model_card") or "MODEL_CARD.md")
    if os.path.exists(card):
        with open(card, encoding="utf-8") as f:
            text = f.read()
        with open(card, "w", encoding="utf-8") as f:
            f.write(set_card_section(text, manifest.get("sampling")))
    _write_json(os.path.join(package, "model.json"), manifest)
