"""`python3 -m igpt <command> ...`: each command is a module with add_args(parser) and main(args)."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "prepare": ("prepare", "quantize a dataset with a k-means palette into token files"),
    "train": ("train", "pretrain (next-pixel or BERT objective)"),
    "finetune": ("finetune", "fine-tune a classifier (classification + generative loss)"),
    "soup": ("soup", "average fine-tuned classifiers' weights (greedy model soup on val)"),
    "probe": ("probe", "linear probes on a layer's mean-pooled features"),
    "sample": ("sample", "sample or complete images with a checkpoint"),
    "export": ("export", "write a model package (ONNX graphs, manifest, parity data)"),
    "analysis": ("analysis", "add analysis.onnx to a package; measure probes, bits and the OOD score on its weights"),
    "segments": ("segments", "add the decoder step segments to a package exported before them"),
    "sampling": ("sampling_defaults", "show or set a package's default sampling settings (model.json \"sampling\")"),
    "convert": ("convert", "rewrite a format version 1 package as version 2 (each weight stored once)"),
    "import-hf": ("import_hf", "convert a HuggingFace ImageGPT checkpoint"),
    "pipeline": ("pipeline", "prepare -> pretrain -> fine-tune -> export from a config file"),
}


def build_parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f"igpt.{COMMANDS[command][0]}")  # lazy: only this command's imports
    p = argparse.ArgumentParser(prog=f"python3 -m igpt {command}", description=COMMANDS[command][1])
    module.add_args(p)
    p.set_defaults(_main=module.main)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python3 -m igpt <command> [options]   (python3 -m igpt <command> --help)\n\ncommands:")
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:10s} {what}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    if argv[0] in ("train", "finetune", "probe", "sample", "pipeline", "analysis"):
        from .runtime import ensure_env
        ensure_env()  # allocator settings must be in the environment when the process starts
    args = build_parser(argv[0]).parse_args(argv[1:])
    rc = args._main(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
