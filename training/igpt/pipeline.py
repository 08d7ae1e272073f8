"""`python3 -m igpt pipeline --config configs/NAME.json --out DIR`: prepare -> train -> finetune -> export.

A config is a JSON object with one section per stage; each section's keys are that command's
options (`palette_size` for `--palette-size`; `true` for a flag). The pipeline fills in the paths:
    DIR/data      prepare --out                 DIR/pretrain  train --data DIR/data --out
    DIR/finetune  finetune --data --init DIR/pretrain/last.pt --out
    DIR/package   export --ckpt DIR/finetune/best.pt (or the config's export.out / --package-out)
Training stages run with --resume, so re-running a pipeline continues where it stopped; a stage
whose output is complete is skipped unless --force names it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import time

from .checkpoint import torch_load

STAGES = ("prepare", "train", "finetune", "export")
MODULES = {"prepare": "prepare", "train": "train", "finetune": "finetune", "export": "export"}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config (training/configs/*.json)")
    p.add_argument("--out", required=True, help="work folder for data, checkpoints and the package")
    p.add_argument("--data", default=None, help="dataset path (overrides the config's prepare.data)")
    p.add_argument("--package-out", default=None, help="package folder (default: config export.out or OUT/package)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    p.add_argument("--force", default="", help="comma-separated stages to redo even if complete")
    p.add_argument("--device", default=None, help="device for train/finetune (default: their own)")


def to_argv(options: dict) -> list:
    """{"palette_size": 16, "amp": true, "x": null} -> ["--palette-size", "16", "--amp"]."""
    argv = []
    for k, v in options.items():
        if k.startswith("_") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            argv.append(flag)
        elif isinstance(v, (list, tuple)):
            argv += [flag] + [str(x) for x in v]
        else:
            argv += [flag, str(v)]
    return argv


def run_stage(stage: str, options: dict, paths: dict) -> None:
    module = importlib.import_module(f"igpt.{MODULES[stage]}")
    p = argparse.ArgumentParser(prog=f"igpt {stage}")
    module.add_args(p)
    argv = to_argv({**options, **paths})
    print(f"\n== {stage}: python3 -m igpt {stage} {shlex.join(argv)}", flush=True)
    args = p.parse_args(argv)
    t0 = time.time()
    rc = module.main(args)
    if rc not in (None, 0):
        raise SystemExit(f"pipeline: {stage} failed with exit code {rc}")
    print(f"== {stage} done in {time.time() - t0:.1f} s", flush=True)


def _pretrained(ckpt_path: str) -> bool:
    """train finished (its step or time budget, not an interruption) and evaluated."""
    if not os.path.isfile(ckpt_path):
        return False
    return torch_load(ckpt_path).get("metrics", {}).get("stop_reason") in ("max steps", "time budget")


def _finetuned(ft_dir: str) -> bool:
    """finetune finished: its best model carries the test accuracy."""
    p = os.path.join(ft_dir, "best.pt")
    return os.path.isfile(p) and "classification_accuracy" in torch_load(p).get("metrics", {})


def main(args) -> int:
    with open(args.config) as f:
        cfg = json.load(f)
    unknown = set(cfg) - set(STAGES) - {"id", "description", "notes"}
    if unknown:
        raise SystemExit(f"{args.config}: unknown sections {sorted(unknown)}")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    force = {s.strip() for s in args.force.split(",") if s.strip()}
    for s in stages + sorted(force):
        if s not in STAGES:
            raise SystemExit(f"unknown stage {s!r}; stages: {', '.join(STAGES)}")
    out = os.path.abspath(args.out)
    data_dir, pre_dir, ft_dir = (os.path.join(out, d) for d in ("data", "pretrain", "finetune"))
    export_opts = dict(cfg.get("export", {}))
    package = args.package_out or export_opts.pop("out", None) or os.path.join(out, "package")
    export_opts.pop("out", None)
    if cfg.get("id") and "id" not in export_opts:
        export_opts["id"] = cfg["id"]
    if cfg.get("description") and "description" not in export_opts:
        export_opts["description"] = cfg["description"]
    device = {"device": args.device} if args.device else {}
    t0 = time.time()

    if "prepare" in stages:
        opts = dict(cfg.get("prepare", {}))
        if args.data:
            opts["data"] = args.data
        if "prepare" in force or not os.path.isfile(os.path.join(data_dir, "meta.json")):
            run_stage("prepare", opts, {"out": data_dir})
        else:
            print(f"== prepare: {data_dir} exists, skipped")
    if "train" in stages:
        opts = {**cfg.get("train", {}), **device}
        if "train" in force or not _pretrained(os.path.join(pre_dir, "last.pt")):
            run_stage("train", {**opts, "resume": "train" not in force}, {"data": data_dir, "out": pre_dir})
        else:
            print(f"== train: {pre_dir}/last.pt is complete, skipped")
    ft_ckpt = None
    if "finetune" in stages or "export" in stages:
        opts = {**cfg.get("finetune", {}), **device}
        if "finetune" in stages and ("finetune" in force or not _finetuned(ft_dir)):
            run_stage("finetune", {**opts, "resume": "finetune" not in force},
                      {"data": data_dir, "init": os.path.join(pre_dir, "last.pt"), "out": ft_dir})
        elif "finetune" in stages:
            print(f"== finetune: {ft_dir}/best.pt is complete, skipped")
        for name in ("best.pt", "last.pt"):
            if os.path.isfile(os.path.join(ft_dir, name)):
                ft_ckpt = os.path.join(ft_dir, name)
                break
    if "export" in stages:
        ckpt = ft_ckpt or os.path.join(pre_dir, "last.pt")
        run_stage("export", export_opts, {"ckpt": ckpt, "out": package})

    summary = {"minutes": round((time.time() - t0) / 60, 2), "package": package if "export" in stages else None}
    final = ft_ckpt or os.path.join(pre_dir, "last.pt")
    if os.path.isfile(final):
        summary["metrics"] = torch_load(final).get("metrics", {})
    print("\n== pipeline done: " + json.dumps(summary, default=str), flush=True)
    return 0
