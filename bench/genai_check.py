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
import subprocess
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENAI_DLL = os.path.join(ROOT, "bench/IGpt.Bench.Genai/bin/Release/net10.0/IGpt.Bench.Genai.dll")


def greedy_tokens(package: str, prompt: List[int]) -> List[int]:
    """genai's greedy tokens after [SOS] + prompt, up to n_positions (one worker process per package)."""
    proc = subprocess.Popen(["dotnet", GENAI_DLL], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        json.loads(proc.stdout.readline())  # hello
        replies = []
        for request in ({"op": "load", "package": os.path.abspath(package)}, {"op": "complete", "prompt": prompt, "batch": 1}):
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline() or "{}")
            if not reply.get("ok"):
                raise SystemExit(f"FAIL {package}: {request['op']}: {reply.get('error', 'the worker exited')}")
            replies.append(reply)
        return replies[1]["tokens"]
    finally:
        proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
        proc.stdin.close()
        proc.wait(timeout=60)


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
