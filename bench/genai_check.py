"""Checks that onnxruntime-genai loads model packages through their genai_config.json and decodes what they say.

For each package: the genai worker (bench/IGpt.Bench.Genai, built first) loads the folder, decodes greedily from
parity.json's prompt to the end of the context, and its first token must be the argmax of PyTorch's last prefill
logits (parity.json). With --same-as, the greedy tokens must equal those of another copy of the package (e.g. the
format version 1 original of a converted package).

    dotnet build bench/IGpt.Bench.Genai -c Release
    /usr/bin/python3 bench/genai_check.py models/fashion-mnist-14 [--same-as /tmp/v1/fashion-mnist-14]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import GENAI_DLL, Worker  # noqa: E402


def greedy_tokens(package: str, prompt: List[int]) -> List[int]:
    """genai's greedy tokens after [SOS] + prompt, up to n_positions (one worker process per package)."""
    worker = Worker("genai-check", ["dotnet", GENAI_DLL])
    try:
        worker.call(op="load", package=os.path.abspath(package))
        return worker.call(op="complete", prompt=prompt, batch=1)["tokens"]
    finally:
        worker.close()


def check(package: str, same_as: Optional[str]) -> None:
    with open(os.path.join(package, "parity.json"), encoding="utf-8") as f:
        parity = json.load(f)
    with open(os.path.join(package, "model.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    prompt = parity["prompt"][1:]  # without SOS: the worker puts it first
    tokens = greedy_tokens(package, prompt)
    last = parity["prefill_logits"][-1]
    expected = max(range(manifest["palette_size"]), key=lambda i: last[i])
    want = manifest["architecture"]["n_positions"] - len(parity["prompt"])
    if not tokens or tokens[0] != expected or len(tokens) != want:
        raise SystemExit(f"FAIL {package}: genai's first greedy token {tokens[:1]} (want {expected}), {len(tokens)} tokens (want {want})")
    note = ""
    if same_as:
        other = greedy_tokens(same_as, prompt)
        if other != tokens:
            first = next(i for i, (a, b) in enumerate(zip(tokens, other + [None] * len(tokens))) if a != b)
            raise SystemExit(f"FAIL {package}: greedy tokens differ from {same_as}'s at token {first}")
        note = f"; the same {len(tokens)} tokens as {same_as}"
    print(f"PASS {package} (format version {manifest['format_version']}): genai loads it, first greedy token {expected} "
          f"= PyTorch's argmax, {len(tokens)} tokens{note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="+")
    ap.add_argument("--same-as", nargs="*", default=None, help="another copy of each package, in the same order")
    args = ap.parse_args()
    if not os.path.exists(GENAI_DLL):
        print(f"build the worker first: dotnet build bench/IGpt.Bench.Genai -c Release ({GENAI_DLL} is missing)", file=sys.stderr)
        return 2
    others = args.same_as or [None] * len(args.package)
    for package, other in zip(args.package, others):
        check(package, other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
