#!/usr/bin/env python3
"""Parity of import-hf and the export with HuggingFace transformers' own ImageGPT (run where transformers is installed).

    pip install torch transformers onnxruntime onnx numpy      # e.g. on a GPU machine; not possible offline
    cd training && python3 scripts/hf_parity.py [--device cuda] [--onnx | --no-onnx] [--keep DIR]
    cd training && python3 scripts/hf_parity.py --hf-dir ../imagegpt-small --tol 1e-3   # the real weights

Three implementations on the same inputs: transformers (the reference), our PyTorch model after
`igpt.import_hf`, and our exported `decoder.onnx` (and `decoder.fp16.onnx`) in onnxruntime's
CPU provider. Every pair is compared.

Without --hf-dir: builds random ImageGPTForCausalImageModeling and ImageGPTForImageClassification
models with transformers at iGPT's format (32x32, 512 clusters; smaller width and depth; norm
gains and biases randomized too, so no parameter sits at an identity init), saves each with
save_pretrained as safetensors and as pytorch_model.bin plus a preprocessor_config.json with random
clusters, imports every folder and compares logits (fp32, max |diff| <= --tol). With --hf-dir:
loads that folder (e.g. openai/imagegpt-small as `huggingface-cli download` leaves it) with
transformers and imports the same folder.

The ONNX checks run when onnxruntime is installed (--onnx requires them, --no-onnx skips them):
the imported causal model is exported (igpt.export) and decoder.onnx's logits are compared with
transformers' and ours for a prefill of whole rows, and for a prefill of half a row followed by
one token at a time with the shared past/present buffer the service uses; decoder.fp16.onnx's
prefill within --fp16-tol.

transformers' ImageGPT divides attention scores by `torch_float(sqrt(head size))`, and its torch_float
returns int() outside tracing (huggingface/transformers#47468, open; 5.17 has it): with a head size whose
square root is not whole (32 here, iGPT-M's 128, iGPT-L's 96; not iGPT-S's 64) transformers computes
1/5 for 1/5.657. Where that is so, an INFO line says it and the checks run against transformers with
that one function fixed (float()), as the pull request does: ours is GPT-2's attention as written.

Prints one line per check and exits 0 when every check passed, 1 otherwise (also when
transformers, or for --onnx onnxruntime, is missing: nothing unchecked counts as a pass).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Dict, List, Optional

import numpy as np
import torch

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING not in sys.path:
    sys.path.insert(0, TRAINING)

from igpt.import_hf import import_hf  # noqa: E402


# --- parts that need no transformers (tested in tests/test_import_hf.py) ---------------------------

def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Move norm gains away from 1 and biases away from 0, in place, so a mixed-up parameter shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(".bias") or ("ln_" in name and name.endswith(".weight")):
                base = 1.0 if name.endswith(".weight") else 0.0
                p.copy_(base + scale * torch.randn(p.shape, generator=g))


def write_preprocessor_config(path: str, clusters: np.ndarray, height: int, width: int) -> None:
    """The ImageGPTImageProcessor config HF writes: clusters in [-1, 1], the image size."""
    with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "ImageGPTImageProcessor", "clusters": np.asarray(clusters).tolist(),
                   "do_resize": True, "size": {"height": height, "width": width}, "do_normalize": True,
                   "do_color_quantize": True, "resample": 2}, f)


def max_abs_diff(a, b) -> float:
    a = torch.as_tensor(a).detach().float().cpu()
    b = torch.as_tensor(b).detach().float().cpu()
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max())


def our_logits(hf_dir: str, input_ids: torch.Tensor, classifier: bool = False, device: str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Import hf_dir with igpt.import_hf and run it: generative logits, or class logits."""
    model, _ = import_hf(hf_dir, allow_missing_lm_head=classifier)
    model = model.to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        if classifier:
            return model.classify(input_ids.to(device))[0].cpu()
        return model(input_ids.to(device))[0].cpu()


def _session(package_dir: str, graph: str):
    import onnxruntime as ort  # noqa: PLC0415

    with open(os.path.join(package_dir, "model.json")) as f:
        manifest = json.load(f)
    sess = ort.InferenceSession(os.path.join(package_dir, graph), providers=["CPUExecutionProvider"])
    return sess, manifest


def _cache_dtype(sess) -> type:
    past = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    return np.float16 if past and "float16" in past[0].type else np.float32


def onnx_decoder_logits(package_dir: str, input_ids: torch.Tensor, graph: str = "decoder.onnx") -> np.ndarray:
    """decoder.onnx prefill (empty past, batch rows run one at a time) on the CPU provider; the
    palette columns (the SOS column, fixed at -1e9, dropped)."""
    sess, manifest = _session(package_dir, graph)
    arch = manifest["architecture"]
    dtype = _cache_dtype(sess)
    rows = []
    for row in input_ids.numpy().astype(np.int64):
        S = row.shape[0]
        feeds = {"input_ids": row[None], "attention_mask": np.ones((1, S), np.int64),
                 "position_ids": np.arange(S, dtype=np.int64)[None]}
        for i in range(arch["n_layer"]):
            for kv in ("key", "value"):
                feeds[f"past_key_values.{i}.{kv}"] = np.zeros((1, arch["n_head"], 0, arch["head_size"]), dtype)
        logits = sess.run(["logits"], feeds)[0]
        rows.append(logits[0, :, : manifest["palette_size"]])
    return np.stack(rows)


def onnx_decode_logits(package_dir: str, row: torch.Tensor, prefill: int, steps: int,
                       graph: str = "decoder.onnx") -> np.ndarray:
    """How the service drives decoder.onnx: one past/present buffer of n_positions per layer, a
    prefill of row[:prefill] at positions 0..prefill-1, then row[prefill + j] alone at its position.
    Returns the logits of positions prefill-1 .. prefill+steps-1 (palette columns): [steps + 1, palette]."""
    sess, manifest = _session(package_dir, graph)
    arch = manifest["architecture"]
    dtype = _cache_dtype(sess)
    n_pos, L = arch["n_positions"], arch["n_layer"]
    cache = {f"past_key_values.{i}.{kv}": np.zeros((1, arch["n_head"], n_pos, arch["head_size"]), dtype)
             for i in range(L) for kv in ("key", "value")}
    ids = row.numpy().astype(np.int64)
    out_names = ["logits"] + [f"present.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    got = []
    for start, end in [(0, prefill)] + [(prefill + j, prefill + j + 1) for j in range(steps)]:
        feeds = {"input_ids": ids[None, start:end], "attention_mask": np.ones((1, end), np.int64),
                 "position_ids": np.arange(start, end, dtype=np.int64)[None], **cache}
        outs = sess.run(out_names, feeds)
        got.append(outs[0][0, -1, : manifest["palette_size"]])
        for name, value in zip(out_names[1:], outs[1:]):  # present.{i} -> past_key_values.{i}
            cache["past_key_values." + name[len("present."):]] = value
    return np.stack(got)


class Report:
    def __init__(self):
        self.failed = 0

    def check(self, what: str, diff: float, tol: float) -> None:
        ok = diff <= tol
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {what}: max |diff| {diff:.3g} (tolerance {tol:g})", flush=True)

    @staticmethod
    def info(what: str) -> None:
        print(f"INFO  {what}", flush=True)

    def fail(self, what: str) -> None:
        self.failed += 1
        print(f"FAIL  {what}", flush=True)


def trace_modules(hf_model, hf_dir: str, ids: torch.Tensor, shown: int = 12) -> None:
    """Where two float64 runs part: every submodule both models have by name (they share GPT-2's names), its
    output in transformers against ours, in the order ours runs them; prints the first that differ (INFO lines)."""
    import copy  # noqa: PLC0415
    theirs = copy.deepcopy(hf_model).double().eval()
    ours, _ = import_hf(hf_dir)
    ours = ours.double().eval()
    outputs = {"hf": {}, "ours": {}}
    inputs = {"hf": {}, "ours": {}}
    masks: Dict[str, object] = {}  # the attention_mask transformers hands each module that takes one
    order: List[str] = []

    def hook(side, name):
        def record(_module, args, kwargs, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            if torch.is_tensor(t):
                outputs[side][name] = t.detach()
                if args and torch.is_tensor(args[0]):
                    inputs[side][name] = args[0].detach()
                if side == "hf" and "attention_mask" in kwargs:
                    masks[name] = kwargs["attention_mask"]
                if side == "ours" and name not in order:
                    order.append(name)
        return record
    def register(module, record):
        try:
            return module.register_forward_hook(record, with_kwargs=True)
        except TypeError:  # PyTorch 1.x: hooks see no keyword arguments
            return module.register_forward_hook(lambda m, args, out: record(m, args, {}, out))
    hf_names = dict(theirs.named_modules())
    handles = [register(m, hook("hf", n)) for n, m in hf_names.items() if n]
    handles += [register(m, hook("ours", n)) for n, m in ours.named_modules() if n and n in hf_names]
    with torch.no_grad():
        theirs(input_ids=ids)
        ours(ids)
    for h in handles:
        h.remove()
    parted = 0
    for name in order:
        a, b = outputs["ours"].get(name), outputs["hf"].get(name)
        if b is None or a.shape != b.shape:
            continue
        diff, size = float((a.double() - b.double()).abs().max()), float(b.abs().max())
        if diff > 1e-6 * max(1.0, size):
            where = (a.double() - b.double()).abs().reshape(-1, a.shape[-1]).max(-1).values.argmax()
            Report.info(f"module {name}: max |diff| {diff:.3g} (largest |output| {size:.3g}, first at row {int(where)})")
            if parted == 0:  # the first to part: was it given the same input, does it hold the same parameters?
                x, y = inputs["ours"].get(name), inputs["hf"].get(name)
                if x is not None and y is not None and x.shape == y.shape:
                    Report.info(f"  its input: max |diff| {float((x.double() - y.double()).abs().max()):.3g}")
                theirs_params = dict(hf_names[name].named_parameters())
                for pname, value in dict(ours.get_submodule(name).named_parameters()).items():
                    other = theirs_params.get(pname)
                    same = other is not None and other.shape == value.shape
                    Report.info(f"  its {pname} {tuple(value.shape)}: " + (
                        f"max |diff| {float((value.double() - other.double()).abs().max()):.3g}" if same else
                        f"transformers holds {None if other is None else tuple(other.shape)}"))
                owner = name.rsplit(".", 1)[0] if name.endswith(".c_proj") else name
                if owner.endswith(".attn") and owner in inputs["hf"]:
                    attention_probe(owner, hf_names[owner], inputs["hf"][owner], masks.get(owner),
                                    outputs["hf"][owner], outputs["ours"].get(owner))
            parted += 1
            if parted == shown:
                break
    if not parted:
        Report.info("every module both models have agrees in float64: the difference is outside them")


def attention_probe(name: str, module, x: torch.Tensor, mask, hf_out: torch.Tensor, our_out) -> None:
    """For an attention module where the two part: the mask transformers gave it, and GPT-2 attention computed here
    in float64 from the module's own c_attn and c_proj, causal and not, against both outputs, by position."""
    n_head = getattr(module, "num_heads", None) or module.n_head  # transformers' name, else ours
    Report.info(f"  {name} attention_mask from transformers: " + (
        "None" if mask is None else f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {tuple(getattr(mask, 'shape', ()))}"
        + (f" min {float(mask.double().min()):.3g} max {float(mask.double().max()):.3g}" if torch.is_tensor(mask) else "")))
    with torch.no_grad():
        B, S, C = x.shape
        hs = C // n_head
        q, k, v = module.c_attn(x.double()).split(C, dim=2)
        q, k, v = (t.reshape(B, S, n_head, hs).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hs)
        for kind, masked in (("causal", True), ("not causal", False)):
            att = scores
            if masked:
                keep = torch.ones(S, S, dtype=torch.bool).tril()
                att = att.masked_fill(~keep, float("-inf"))
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, S, C)
            y = module.c_proj(y)
            for side, out in (("transformers", hf_out), ("ours", our_out)):
                if out is None:
                    continue
                by_pos = (out.double() - y).abs().amax(dim=(0, 2))
                Report.info(f"  {kind} GPT-2 attention vs {side}: max |diff| {float(by_pos.max()):.3g}; positions 0-5 "
                            + " ".join(f"{float(d):.2g}" for d in by_pos[:6]))


def fix_attention_scale(rep: "Report", head_size: int) -> Optional[str]:
    """When this transformers' ImageGPT truncates sqrt(head size) (module docstring), fixes it for this process, says
    so in an INFO line and returns what was fixed; None when nothing needed fixing."""
    from transformers.models.imagegpt import modeling_imagegpt  # noqa: PLC0415
    cast = getattr(modeling_imagegpt, "torch_float", None)
    if cast is None or cast(1.5) == 1.5:
        return None
    modeling_imagegpt.torch_float = float
    fixed = (f"transformers' ImageGPT scales attention by 1/torch_float(sqrt(head size)), and its torch_float returns "
            f"int() (huggingface/transformers#47468): head size {head_size} gives 1/{int(math.sqrt(head_size))} for "
            f"1/{math.sqrt(head_size):.4g}. Checked against transformers with torch_float = float, as that pull request fixes it")
    rep.info(fixed)
    return fixed


def float64_checks(rep: Report, hf_model, hf_dir: str, ids: torch.Tensor, hf_logits: torch.Tensor,
                   ours: torch.Tensor) -> None:
    """Both models again in float64 (ours takes its norms and softmax in float64 too), where rounding cannot hide a
    difference in the computation: ours must match transformers to 1e-9 relative there. Then how far each float32
    run is from transformers' float64 logits, which tells rounding (both about as far) from a real difference when a
    float32 check fails."""
    import copy  # noqa: PLC0415
    with torch.no_grad():
        ref = copy.deepcopy(hf_model).double()(input_ids=ids).logits.cpu()
    ours64 = our_logits(hf_dir, ids, dtype=torch.float64)
    scale = float(ref.abs().max())
    rep.check(f"ours vs transformers, both float64 (largest |logit| {scale:.3g})", float((ours64 - ref).abs().max()),
              1e-9 * max(1.0, scale))
    if float((ours64 - ref).abs().max()) > 1e-9 * max(1.0, scale):
        trace_modules(hf_model, hf_dir, ids)
    hf_err, our_err = (ref - hf_logits.double()).abs(), (ref - ours.double()).abs()
    where = divmod(int(our_err.reshape(our_err.shape[0], -1).max(0).values.argmax()), ref.shape[-1])
    rep.info(f"float32 against transformers' float64: transformers {float(hf_err.max()):.3g}, ours {float(our_err.max()):.3g} "
             f"(ours largest at position {where[0]}, colour {where[1]}); mean |error| transformers {float(hf_err.mean()):.3g}, "
             f"ours {float(our_err.mean()):.3g}")



# --- the check ----------------------------------------------------------------------------------

def _save(model, path: str, safe: bool) -> None:
    try:
        model.save_pretrained(path, safe_serialization=safe)
    except TypeError:  # an old transformers without safe_serialization: .bin only
        if safe:
            raise
        model.save_pretrained(path)
    bin_path, safe_path = os.path.join(path, "pytorch_model.bin"), os.path.join(path, "model.safetensors")
    if not safe and not os.path.exists(bin_path):  # transformers 5 writes safetensors only: the Hub's .bin by hand
        torch.save(model.state_dict(), bin_path)
        os.remove(safe_path)


def onnx_checks(rep: "Report", pkg: str, ids: torch.Tensor, hf_logits: torch.Tensor, ours: torch.Tensor,
                tol: float, fp16_tol: float) -> None:
    """decoder.onnx against transformers and against our PyTorch; decoder.fp16.onnx loosely."""
    got = onnx_decoder_logits(pkg, ids)
    rep.check("decoder.onnx prefill logits vs transformers", max_abs_diff(got, hf_logits), tol)
    rep.check("decoder.onnx prefill logits vs ours (PyTorch)", max_abs_diff(got, ours), tol)
    S = ids.shape[1]
    prefill = max(1, S // 2)
    steps = min(8, S - prefill)
    dec = onnx_decode_logits(pkg, ids[0], prefill, steps)
    rep.check(f"decoder.onnx shared-buffer prefill {prefill} + {steps} single steps vs transformers",
              max_abs_diff(dec, hf_logits[0, prefill - 1:prefill + steps]), tol)
    if os.path.isfile(os.path.join(pkg, "decoder.fp16.onnx")):
        got16 = onnx_decoder_logits(pkg, ids, "decoder.fp16.onnx")
        rep.check("decoder.fp16.onnx prefill logits vs transformers", max_abs_diff(got16, hf_logits), fp16_tol)


def _export(hf_dir: str, root: str, model_id: str) -> str:
    from igpt.checkpoint import save_checkpoint  # noqa: PLC0415
    from igpt.export import export_package, load  # noqa: PLC0415

    model, fields = import_hf(hf_dir)
    ck = os.path.join(root, f"{model_id}.pt")
    save_checkpoint(ck, model, **fields)
    m, ckpt = load(ck)
    pkg = os.path.join(root, model_id)
    export_package(m, ckpt, pkg, model_id=model_id, fp16=True)
    return pkg


def _want_onnx(a, rep: "Report") -> bool:
    if a.no_onnx:
        return False
    try:
        import onnxruntime  # noqa: F401,PLC0415
        return True
    except ImportError:
        if a.onnx:
            rep.fail("--onnx: onnxruntime is not installed")
        else:
            print("SKIP  onnx checks: onnxruntime is not installed (pip install onnxruntime; --onnx makes it required)")
        return False


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hf-dir", default=None,
                   help="a local HF ImageGPT folder (e.g. imagegpt-small) to check instead of random models")
    p.add_argument("--palette", type=int, default=512)
    p.add_argument("--side", type=int, default=32, help="image side (n_positions = side^2)")
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=3)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--fp16-tol", type=float, default=5e-2, help="decoder.fp16.onnx against transformers' fp32")
    p.add_argument("--device", default="cpu")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--onnx", action="store_true", help="require the ONNX checks (fail when onnxruntime is missing)")
    g.add_argument("--no-onnx", action="store_true", help="skip the ONNX checks")
    p.add_argument("--keep", default=None, help="write the folders here instead of a temporary dir")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        import transformers  # noqa: PLC0415
        from transformers import (ImageGPTConfig, ImageGPTForCausalImageModeling,  # noqa: PLC0415
                                  ImageGPTForImageClassification)
    except ImportError as e:
        print(f"hf_parity: cannot run: transformers with ImageGPT is not installed ({e}); nothing was checked")
        return 1
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {a.device}")
    rep = Report()
    root = a.keep or tempfile.mkdtemp(prefix="hf_parity_")
    os.makedirs(root, exist_ok=True)
    with_onnx = _want_onnx(a, rep)
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed + 2)

    if a.hf_dir:  # the real weights: transformers loads the folder, we import the same folder
        causal = ImageGPTForCausalImageModeling.from_pretrained(a.hf_dir).to(a.device).eval()
        palette, n_pos = causal.config.vocab_size - 1, causal.config.n_positions
        fix_attention_scale(rep, causal.config.n_embd // causal.config.n_head)
        pixels = torch.randint(0, palette, (a.batch, n_pos), generator=g)
        ids = torch.cat([torch.full((a.batch, 1), palette), pixels[:, :-1]], dim=1)  # [SOS, x0..x(n-2)]
        with torch.no_grad():
            hf_logits = causal(input_ids=ids.to(a.device)).logits.float().cpu()
        ours = None
        try:
            ours = our_logits(a.hf_dir, ids, device=a.device)
            rep.check(f"{os.path.basename(os.path.normpath(a.hf_dir))} ours vs transformers logits",
                      max_abs_diff(ours, hf_logits), a.tol)
        except Exception as e:  # noqa: BLE001
            rep.fail(f"import: {type(e).__name__}: {e}")
        if with_onnx and ours is not None:
            try:
                onnx_checks(rep, _export(a.hf_dir, root, "hf-parity"), ids, hf_logits, ours, a.tol, a.fp16_tol)
            except Exception as e:  # noqa: BLE001
                rep.fail(f"onnx: {type(e).__name__}: {e}")
        print(f"{'all checks passed' if rep.failed == 0 else f'{rep.failed} check(s) failed'} (folders in {root})")
        return 0 if rep.failed == 0 else 1

    n_pos = a.side * a.side
    fix_attention_scale(rep, a.n_embd // a.n_head)
    cfg = ImageGPTConfig(vocab_size=a.palette + 1, n_positions=n_pos, n_embd=a.n_embd, n_layer=a.n_layer,
                         n_head=a.n_head, activation_function="quick_gelu")
    causal = ImageGPTForCausalImageModeling(cfg).eval()
    randomize_(causal, a.seed)
    cls_cfg = ImageGPTConfig(**{**cfg.to_dict(), "num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"},
                                "label2id": {"a": 0, "b": 1, "c": 2}})
    classifier = ImageGPTForImageClassification(cls_cfg).eval()
    randomize_(classifier, a.seed + 1)
    clusters = np.random.default_rng(a.seed).uniform(-1, 1, (a.palette, 3))
    pixels = torch.randint(0, a.palette, (a.batch, n_pos), generator=g)
    ids = torch.cat([torch.full((a.batch, 1), a.palette), pixels[:, :-1]], dim=1)  # [SOS, x0..x(n-2)]
    with torch.no_grad():
        hf_logits = causal(input_ids=ids).logits.float()  # [B, S, palette]
        hf_class = classifier(input_ids=ids).logits.float()  # [B, 3]

    ours_causal = None
    for name, model, safe in (("causal-safetensors", causal, True), ("causal-bin", causal, False),
                              ("classifier-safetensors", classifier, True)):
        d = os.path.join(root, name)
        try:
            _save(model, d, safe)
            write_preprocessor_config(d, clusters, a.side, a.side)
            files = sorted(os.listdir(d))
            ours = our_logits(d, ids, classifier=name.startswith("classifier"), device=a.device)
            want = hf_class if name.startswith("classifier") else hf_logits
            rep.check(f"{name} ({', '.join(f for f in files if 'model' in f)}) ours vs transformers logits",
                      max_abs_diff(ours, want), a.tol)
            if name == "causal-safetensors":
                ours_causal = ours
                float64_checks(rep, causal, d, ids, hf_logits, ours)
        except Exception as e:  # noqa: BLE001 - report and go on with the other checks
            rep.fail(f"{name}: {type(e).__name__}: {e}")

    if with_onnx:
        if ours_causal is None:
            rep.fail("onnx: the causal import failed, nothing to export")
        else:
            try:
                pkg = _export(os.path.join(root, "causal-safetensors"), root, "hf-parity")
                onnx_checks(rep, pkg, ids, hf_logits, ours_causal, a.tol, a.fp16_tol)
            except Exception as e:  # noqa: BLE001
                rep.fail(f"onnx: {type(e).__name__}: {e}")

    print(f"{'all checks passed' if rep.failed == 0 else f'{rep.failed} check(s) failed'} (folders in {root})")
    return 0 if rep.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
