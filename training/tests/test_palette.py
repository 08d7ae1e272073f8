"""Palette: k-means fit, exact integer quantization (ties to the lowest index), round trip, PSNR."""
import math

import numpy as np
import torch

from igpt import palette as pal


def test_grey_palette_with_few_values_is_those_values():
    rng = np.random.default_rng(0)
    pixels = rng.choice(np.array([0, 60, 200, 255], np.uint8), size=(50, 8, 8, 1))
    p = pal.fit_palette(pixels, 4)
    assert p.tolist() == [[0], [60], [200], [255]]
    tokens = pal.quantize(pixels, p)
    assert tokens.shape == (50, 8, 8)
    assert np.array_equal(pal.dequantize(tokens, p), pixels)
    assert pal.reconstruction_psnr(pixels, p) == math.inf


def test_kmeans_finds_rgb_clusters_and_palette_is_ints_in_range():
    rng = np.random.default_rng(1)
    centres = np.array([[20, 30, 40], [200, 10, 10], [10, 220, 30], [250, 250, 250]])
    pixels = centres[rng.integers(0, 4, 4000)] + rng.integers(-3, 4, (4000, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8).reshape(40, 10, 10, 3)
    p = pal.fit_palette(pixels, 4, seed=3)
    assert p.dtype.kind == "i" and p.shape == (4, 3) and p.min() >= 0 and p.max() <= 255
    for c in centres:  # every true centre has a palette entry within the noise
        assert np.abs(p - c).max(1).min() <= 2
    assert pal.reconstruction_psnr(pixels, p) > 35


def test_fit_is_deterministic_for_a_seed():
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    assert np.array_equal(pal.fit_palette(pixels, 16, seed=5), pal.fit_palette(pixels, 16, seed=5))
    g = pal.fit_palette(pixels, 16)
    assert np.all(np.diff(g[:, 0]) > 0)  # sorted, distinct


def test_quantize_ties_go_to_the_lowest_index():
    grey = np.array([[10], [0], [20]])
    # 5 is equidistant from 10 (index 0) and 0 (index 1); 15 from 10 (0) and 20 (2)
    px = np.array([5, 15, 0, 20, 10], np.uint8)[:, None]
    assert pal.quantize(px, grey).tolist() == [0, 0, 1, 2, 0]
    rgb = np.array([[0, 0, 2], [0, 2, 0], [2, 0, 0]])
    px = np.array([[1, 1, 1], [0, 1, 1], [1, 1, 0], [2, 0, 1]], np.uint8)
    assert pal.quantize(px, rgb).tolist() == [0, 0, 1, 2]
    assert pal.quantize_torch(torch.from_numpy(px), torch.tensor(rgb)).tolist() == [0, 0, 1, 2]


def test_torch_and_numpy_quantization_agree():
    rng = np.random.default_rng(4)
    p = rng.integers(0, 256, (64, 3))
    p[10] = p[3]  # a duplicate entry: never chosen
    px = rng.integers(0, 256, (3000, 3), dtype=np.uint8)
    a = pal.quantize(px, p)
    b = pal.quantize_torch(torch.from_numpy(px), torch.from_numpy(p), chunk=700).numpy()
    assert np.array_equal(a, b)
    assert 10 not in set(a.tolist())
    # brute force reference
    d = ((px[:, None, :].astype(np.int64) - p[None]) ** 2).sum(-1)
    assert np.array_equal(a, d.argmin(1))


def test_psnr_value():
    a = np.zeros((4, 4, 1), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # mse = 256 / 16 = 16
    assert abs(pal.psnr(a, b) - 10 * math.log10(255 ** 2 / 16)) < 1e-9
