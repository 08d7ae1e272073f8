"""The colour palette: k-means on pixel values, and quantization with the integer palette.

k-means runs on pixel values scaled to [-1, 1] (as iGPT does) with k-means++ initialisation,
over the distinct values of a pixel sample weighted by their counts (all pixels for grey:
the histogram has 256 bins). The centres are then rounded to 0-255 integers, and that integer
palette is authoritative (models/README.md): a pixel's token is the argmin of the squared
Euclidean distance to the palette entries in 0-255 space, ties to the lowest index.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def _to_unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 127.5 - 1.0


def _weighted_kmeanspp(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = len(points)
    centres = np.empty((k, points.shape[1]))
    centres[0] = points[rng.choice(n, p=weights / weights.sum())]
    d2 = ((points - centres[0]) ** 2).sum(1)
    for i in range(1, k):
        p = weights * d2
        total = p.sum()
        j = rng.choice(n, p=p / total) if total > 0 else rng.integers(n)
        centres[i] = points[j]
        d2 = np.minimum(d2, ((points - centres[i]) ** 2).sum(1))
    return centres


def _assign(points: np.ndarray, centres: np.ndarray, chunk: int = 16384):
    labels = np.empty(len(points), dtype=np.int64)
    d2 = np.empty(len(points))
    c2 = (centres ** 2).sum(1)
    for s in range(0, len(points), chunk):
        p = points[s:s + chunk]
        d = (p ** 2).sum(1)[:, None] - 2 * p @ centres.T + c2[None]  # [chunk, k]
        labels[s:s + chunk] = d.argmin(1)
        d2[s:s + chunk] = np.maximum(d[np.arange(len(p)), labels[s:s + chunk]], 0)
    return labels, d2


def kmeans(points: np.ndarray, weights: np.ndarray, k: int, iters: int = 100, seed: int = 0,
           tol: float = 1e-7) -> np.ndarray:
    """Weighted Lloyd's k-means with k-means++ init; empty clusters move to the worst-fit point."""
    rng = np.random.default_rng(seed)
    weights = weights.astype(np.float64)
    centres = _weighted_kmeanspp(points, weights, k, rng)
    for _ in range(iters):
        labels, d2 = _assign(points, centres)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, points * weights[:, None])
        mass = np.bincount(labels, weights=weights, minlength=k)
        new = centres.copy()
        filled = mass > 0
        new[filled] = sums[filled] / mass[filled, None]
        for j in np.flatnonzero(~filled):  # re-seed an empty cluster at the worst-served point
            worst = int(np.argmax(weights * d2))
            new[j] = points[worst]
            d2[worst] = 0
        shift = np.abs(new - centres).max()
        centres = new
        if shift < tol:
            break
    return centres


def fit_palette(pixels: np.ndarray, k: int, max_samples: int = 300_000, iters: int = 100,
                seed: int = 0) -> np.ndarray:
    """k-means palette of uint8 pixels [..., C] -> int palette [k, C] (0-255), sorted by luma.

    If the pixels hold no more than k distinct values, those values are the palette (the rest
    repeats the last entry; a repeated entry is never chosen, since ties go to the lowest index).
    """
    c = pixels.shape[-1]
    flat = pixels.reshape(-1, c)
    if c > 1 and len(flat) > max_samples:
        flat = flat[np.random.default_rng(seed).choice(len(flat), max_samples, replace=False)]
    if c == 1:  # the full histogram: 256 bins
        counts = np.bincount(flat[:, 0], minlength=256)
        values = np.flatnonzero(counts)[:, None]
        counts = counts[values[:, 0]]
    else:
        values, counts = np.unique(flat, axis=0, return_counts=True)
    if len(values) <= k:
        palette = values.astype(np.int64)
    else:
        centres = kmeans(_to_unit(values), counts, k, iters=iters, seed=seed)
        palette = np.clip(np.rint((centres + 1.0) * 127.5), 0, 255).astype(np.int64)
        palette = np.unique(palette, axis=0)  # rounding can merge centres
    palette = sort_palette(palette)
    if len(palette) < k:
        palette = np.concatenate([palette, np.repeat(palette[-1:], k - len(palette), axis=0)])
    return palette


def sort_palette(palette: np.ndarray) -> np.ndarray:
    if palette.shape[1] == 1:
        keys = palette[:, 0]
        return palette[np.argsort(keys, kind="stable")]
    luma = palette @ np.array([0.299, 0.587, 0.114])
    return palette[np.lexsort((palette[:, 2], palette[:, 1], palette[:, 0], luma))]


def quantize(pixels: np.ndarray, palette: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """uint8 pixels [..., C] -> tokens [...] (int64): nearest integer palette entry, ties lowest index.

    Exact integer arithmetic. Distinct colours are quantized once (256 for grey).
    """
    palette = np.asarray(palette, dtype=np.int64)
    c = palette.shape[1]
    if pixels.shape[-1] != c:
        raise ValueError(f"pixels have {pixels.shape[-1]} channels, palette {c}")
    shape = pixels.shape[:-1]
    flat = pixels.reshape(-1, c).astype(np.int64)
    if c == 1:
        lut = _nearest(np.arange(256, dtype=np.int64)[:, None], palette)
        return lut[flat[:, 0]].reshape(shape)
    packed = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse = np.unique(packed, return_inverse=True)
    colours = np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], axis=1)
    tokens = np.concatenate([_nearest(colours[s:s + chunk], palette) for s in range(0, len(colours), chunk)])
    return tokens[inverse].reshape(shape)


def _nearest(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    d = ((colours[:, None, :] - palette[None, :, :]) ** 2).sum(-1)  # [n, k] exact ints
    return d.argmin(1)  # numpy returns the first (lowest) index of the minimum


def quantize_torch(pixels: torch.Tensor, palette: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """The same quantization in torch (any device): uint8/int pixels [..., C] -> int64 tokens [...]."""
    pal = palette.to(device=pixels.device, dtype=torch.int32)
    flat = pixels.reshape(-1, pal.shape[1]).to(torch.int32)
    out = torch.empty(flat.shape[0], dtype=torch.int64, device=pixels.device)
    idx = torch.arange(pal.shape[0], device=pixels.device, dtype=torch.int64)
    k = pal.shape[0]
    for s in range(0, flat.shape[0], chunk):
        d = ((flat[s:s + chunk, None, :] - pal[None]) ** 2).sum(-1).to(torch.int64)  # [n, k]
        # argmin with an explicit lowest-index tie break (argmin's tie rule varies by backend)
        out[s:s + chunk] = (d * k + idx[None]).argmin(1)
    return out.reshape(pixels.shape[:-1])


def dequantize(tokens: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """tokens [...] -> uint8 pixels [..., C]."""
    return np.asarray(palette, dtype=np.uint8)[np.asarray(tokens, dtype=np.int64)]


def psnr(original: np.ndarray, reconstructed: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of uint8 images (inf when identical)."""
    mse = np.mean((original.astype(np.float64) - reconstructed.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def reconstruction_psnr(pixels: np.ndarray, palette: np.ndarray) -> float:
    return psnr(pixels, dequantize(quantize(pixels, palette), palette))
