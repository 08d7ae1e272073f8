"""The PyTorch reference sampler: unconditional samples and completions of the top rows of images.

    python3 -m igpt sample --ckpt CKPT --n 16 --out samples.png
    python3 -m igpt sample --ckpt CKPT --data PREPARED_DIR --rows 14 --n 8 --per-image 4 --out completions.png
    python3 -m igpt sample --ckpt CKPT --images a.png b.jpg --rows 14 --per-image 4 --out completions.png

Sampling order at every step (the C# sampler does the same, so greedy output matches exactly and
seeded output matches in distribution; the random numbers differ):
  1. logits = the model's palette logits at the last position, in float32 (SOS is never a choice:
     the head has `palette_size` outputs).
  2. temperature: temperature <= 0 means greedy: take argmax (ties: the lowest index) and stop.
     Otherwise logits /= temperature.
  3. top-k (k > 0 and k < palette_size): v = the k-th largest scaled logit; every logit < v is
     removed (set to -inf). Ties with v are all kept, so more than k may survive.
  4. top-p (0 < p < 1): probs = softmax of the surviving logits; order tokens by probability,
     descending, equal probabilities by ascending index; a token is kept when the cumulative
     probability of the tokens before it is < p (so the first token is always kept, and the kept
     set is the smallest prefix whose mass reaches p). The rest are removed.
  5. sample: probs = softmax of the surviving logits (renormalized); draw u ~ U[0, 1) from the
     generator (one number per batch row per step, rows in order); the token is the first index i
     (ascending palette order) with cumsum(probs)[i] > u * cumsum(probs)[-1]; if rounding leaves
     none, the last index with a non-zero probability.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .data import decode_image, resize
from .model import IGpt
from .palette import dequantize, quantize


# ---------------------------------------------------------------------------------------------
# Token-level sampling


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> torch.Tensor:
    """Steps 2-4 above for logits [B, V] (temperature > 0): scaled logits with removed tokens at -inf."""
    assert temperature > 0, "temperature <= 0 is greedy; call pick_tokens"
    logits = logits.float() / temperature
    V = logits.size(-1)
    if 0 < top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1] the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        probs = F.softmax(logits, dim=-1)
        # descending probability, ties by ascending index: a stable sort of the negated values
        order = torch.sort(-probs, dim=-1, stable=True).indices  # [B, V]
        sorted_probs = probs.gather(-1, order)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ahead of each one
        remove_sorted = before >= top_p
        remove_sorted[:, 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def pick_tokens(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One token per row of logits [B, V] by the documented order; returns int64 [B]."""
    if temperature <= 0:
        return logits.float().argmax(dim=-1)
    probs = F.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)  # [B, V]
    rng_device = generator.device if generator is not None else probs.device
    u = torch.rand(probs.size(0), generator=generator, device=rng_device,
                   dtype=torch.float64).to(probs.device)  # [B]
    cdf = probs.double().cumsum(-1)  # [B, V]
    target = (u * cdf[:, -1])[:, None]
    above = cdf > target
    idx = torch.where(above.any(-1), above.float().argmax(-1),  # first index with cdf > u*total
                      (probs > 0).float().cumsum(-1).argmax(-1))  # fallback: last non-zero
    return idx


def _prepare_prompt(model: IGpt, prompt_tokens: torch.Tensor, n: Optional[int]):
    cfg = model.config
    if getattr(cfg, "bidirectional", False):
        raise ValueError("a bidirectional (BERT-objective) model cannot sample pixel by pixel")
    if prompt_tokens.dim() == 1:
        prompt_tokens = prompt_tokens[None]
    prompt_tokens = prompt_tokens.long()
    B, P = prompt_tokens.shape
    if n is None:
        n = cfg.n_positions - P
    if P + n > cfg.n_positions:
        raise ValueError(f"prompt {P} + {n} new tokens > n_positions {cfg.n_positions}")
    if P and (int(prompt_tokens.min()) < 0 or int(prompt_tokens.max()) >= cfg.palette_size):
        raise ValueError(f"prompt tokens must be palette indices 0..{cfg.palette_size - 1}")
    sos = torch.full((B, 1), cfg.sos_token_id, dtype=torch.long, device=prompt_tokens.device)
    return torch.cat([sos, prompt_tokens], dim=1), B, P, n


@torch.no_grad()
def sample_tokens(model: IGpt, prompt_tokens: torch.Tensor, n: Optional[int] = None,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Continue prompts [B, P] (pixel tokens, no SOS; P may be 0) by n tokens with the KV cache.

    n defaults to filling the image (n_positions - P). Returns int64 [B, P + n]: the prompt kept
    exactly, then the sampled tokens. Prefill runs [SOS, prompt] at positions 0..P, then each new
    token is fed alone at the next position; the last token is never fed back.
    """
    seq, B, P, n = _prepare_prompt(model, prompt_tokens, n)
    if n == 0:
        return seq[:, 1:]
    out = torch.empty(B, n, dtype=torch.long, device=seq.device)
    logits, past = model(seq)  # prefill
    for t in range(n):
        tok = pick_tokens(logits[:, -1, :], temperature, top_k, top_p, generator)
        out[:, t] = tok
        if t + 1 < n:
            logits, past = model(tok[:, None], past=past, position_offset=P + 1 + t)
    return torch.cat([seq[:, 1:], out], dim=1)


@torch.no_grad()
def sample_tokens_nocache(model: IGpt, prompt_tokens: torch.Tensor, n: Optional[int] = None,
                          temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The same as sample_tokens without a KV cache: a full forward over the growing prefix at every
    step, as openai/image-gpt's sampler does. For benchmarks and cross-checks."""
    seq, B, P, n = _prepare_prompt(model, prompt_tokens, n)
    for t in range(n):
        logits, _ = model(seq)
        tok = pick_tokens(logits[:, -1, :], temperature, top_k, top_p, generator)
        seq = torch.cat([seq, tok[:, None]], dim=1)
    return seq[:, 1:]


# ---------------------------------------------------------------------------------------------
# Images


def tokens_to_image(tokens: np.ndarray, palette: Sequence[Sequence[int]], height: int, width: int) -> np.ndarray:
    """tokens [H*W] (or fewer: the rest is left black) -> uint8 [H, W, C] through the palette."""
    pal = np.asarray(palette, dtype=np.uint8)  # [K, C]
    flat = np.zeros((height * width,), dtype=np.int64)
    tokens = np.asarray(tokens).astype(np.int64).ravel()
    flat[: tokens.size] = tokens
    img = dequantize(flat, pal)
    if tokens.size < flat.size:
        img[tokens.size:] = 0
    return img.reshape(height, width, pal.shape[1])


def load_image_prompt(path: str, height: int, width: int, channels: int, rows: int,
                      palette: Sequence[Sequence[int]]) -> np.ndarray:
    """An image file's top `rows` rows as tokens, prepared like the service does for a completion:
    alpha on white and the model's channels (igpt.data.decode_image), width resized to the model
    width with the height scaled by the same factor (at most the model height), then quantized."""
    img = decode_image(path, channels)  # [h, w, C]
    new_h = max(1, min(height, round(img.shape[0] * width / img.shape[1])))
    img = resize(img[None], new_h, width)[0]
    rows = min(rows, new_h)
    return quantize(img[:rows], np.asarray(palette)).reshape(-1)


def save_grid(images: List[np.ndarray], cols: int, path: str, scale: int = 4, pad: int = 1) -> None:
    """uint8 images [H, W, C] in a grid (row-major), nearest-neighbour scaled, grey padding."""
    from PIL import Image

    H, W, C = images[0].shape
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, C), 128, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        grid[y:y + H, x:x + W] = im
    pil = Image.fromarray(grid[:, :, 0] if C == 1 else grid, "L" if C == 1 else "RGB")
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pil.save(path)


# ---------------------------------------------------------------------------------------------
# Command


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint (.pt)")
    p.add_argument("--out", default="samples.png", help="PNG grid to write")
    p.add_argument("--n", type=int, default=16,
                   help="unconditional samples, or (with --data) how many test images to complete")
    p.add_argument("--data", help="prepared data dir: complete the top rows of its images")
    p.add_argument("--split", default="test", help="split of --data (default test)")
    p.add_argument("--images", nargs="*", default=[], help="image files: complete their top rows")
    p.add_argument("--rows", type=int, default=None, help="prompt rows for completions (default half)")
    p.add_argument("--per-image", type=int, default=4, help="completions per prompt image")
    p.add_argument("--temperature", type=float, default=1.0, help="<= 0: greedy")
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument("--top-p", type=float, default=1.0, help="1: off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour scale of the PNG")
    p.add_argument("--no-cache", action="store_true", help="full forward per token (reference)")
    p.add_argument("--tokens-out", help="also save the sampled tokens as .npy [N, H*W]")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")


def _batched(model, prompts: torch.Tensor, args, gen) -> torch.Tensor:
    fn = sample_tokens_nocache if args.no_cache else sample_tokens
    outs = []
    for i in range(0, prompts.size(0), args.batch_size):
        outs.append(fn(model, prompts[i:i + args.batch_size], None, args.temperature, args.top_k,
                       args.top_p, gen))
    return torch.cat(outs)


def main(args) -> int:
    from .checkpoint import load_checkpoint
    from .runtime import configure_threads, pick_device

    configure_threads(args.threads)
    device = pick_device(args.device)
    model, ck = load_checkpoint(args.ckpt)
    if getattr(model.config, "bidirectional", False):
        print(f"sample: {args.ckpt} is a bidirectional (BERT-objective) model: it cannot sample pixel by pixel")
        return 1
    model = model.to(device).eval()
    cfg = model.config
    H, W, C = cfg.height, cfg.width, cfg.channels
    palette = ck["palette"]
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    rows = args.rows if args.rows is not None else H // 2
    if not 0 <= rows <= H:
        raise SystemExit(f"--rows must be 0..{H}")
    t0 = time.time()
    originals: List[Optional[np.ndarray]] = []
    prompts: List[np.ndarray] = []
    if args.data:
        from .data import load_prepared

        tokens, _ = load_prepared(args.data, args.split)
        for t in tokens[: args.n]:
            originals.append(t.astype(np.int64))
            prompts.append(t[: rows * W].astype(np.int64))
    for path in args.images:
        prompts.append(load_image_prompt(path, H, W, C, rows, palette))
        originals.append(None)

    images: List[np.ndarray] = []
    if prompts:  # completions: one grid row per prompt: [prompt, completions..., original]
        groups = {}
        for i, pr in enumerate(prompts):  # prompts of one length batch together
            groups.setdefault(pr.size, []).append(i)
        results = {}
        for _, idxs in groups.items():
            batch = torch.tensor(np.stack([prompts[i] for i in idxs for _ in range(args.per_image)]),
                                 dtype=torch.long, device=device)
            out = _batched(model, batch, args, gen).cpu().numpy()
            for j, i in enumerate(idxs):
                results[i] = out[j * args.per_image:(j + 1) * args.per_image]
        all_tokens = []
        for i, pr in enumerate(prompts):
            images.append(tokens_to_image(pr, palette, H, W))
            for t in results[i]:
                images.append(tokens_to_image(t, palette, H, W))
                all_tokens.append(t)
            images.append(tokens_to_image(originals[i], palette, H, W) if originals[i] is not None
                          else np.zeros((H, W, C), np.uint8))
        cols = args.per_image + 2
        all_tokens = np.stack(all_tokens)
    else:
        prompt = torch.zeros(args.n, 0, dtype=torch.long, device=device)
        all_tokens = _batched(model, prompt, args, gen).cpu().numpy()
        images = [tokens_to_image(t, palette, H, W) for t in all_tokens]
        cols = max(1, int(math.ceil(math.sqrt(len(images)))))
    dt = time.time() - t0
    save_grid(images, cols, args.out, args.scale)
    if args.tokens_out:
        np.save(args.tokens_out, all_tokens.astype(np.int64))
    n_new = int(all_tokens.shape[0] * all_tokens.shape[1] - (sum(p.size for p in prompts) * args.per_image))
    print(f"wrote {args.out}: {all_tokens.shape[0]} images, {n_new} sampled tokens in {dt:.1f}s "
          f"({n_new / max(dt, 1e-9):.0f} tokens/s, {'no cache' if args.no_cache else 'KV cache'}, {device})")
    return 0
