"""scripts/sampling_study.py's measures on images drawn by hand: what counts as a streak and what does not."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import sampling_study  # noqa: E402

WHITE, RED, BLUE, YELLOW = (255, 255, 255), (220, 30, 30), (30, 60, 220), (250, 210, 40)
H = W = 16
KEPT = 8      # rows 8..14 are measured (15 has no row below)
LENGTH = 4


def canvas() -> np.ndarray:
    image = np.zeros((H, W, 3), np.uint8)
    image[:] = WHITE
    return image


def test_a_one_pixel_tall_dash_is_a_streak_and_counts_once_per_row():
    image = canvas()
    image[10, 2:8] = RED          # a dash of 6 on white
    image[10, 9:15] = BLUE        # a second dash on the same row: still one streaky row
    image[12, 3:7] = YELLOW       # exactly LENGTH
    assert sampling_study.streaky_rows(image, KEPT, LENGTH) == 2


def test_shapes_background_short_dashes_and_kept_rows_are_not_streaks():
    image = canvas()
    image[9:14, 2:12] = YELLOW    # a block: its rows continue the rows around them
    image[14, 2:12] = YELLOW
    image[11, 13:16] = RED        # 3 < LENGTH
    image[4, 0:16] = BLUE         # in the kept rows
    assert sampling_study.streaky_rows(image, KEPT, LENGTH) == 0
    # A dash whose colour is alike the background (within 32 per channel) is background, not a streak.
    dash_on_white = canvas()
    dash_on_white[13, 0:10] = (240, 235, 250)
    assert sampling_study.streaky_rows(dash_on_white, KEPT, LENGTH) == 0


def test_a_dash_half_covered_by_the_row_above_is_not_a_streak():
    image = canvas()
    image[11, 2:10] = RED
    image[10, 2:6] = RED          # half of it continues the row above: not more than half lone
    assert sampling_study.streaky_rows(image, KEPT, LENGTH) == 0
    image[10, 2:6] = WHITE
    image[10, 2:5] = RED          # 3 of 8 covered: 5 lone pixels, a streak
    assert sampling_study.streaky_rows(image, KEPT, LENGTH) == 1


def test_alike_neighbour_shares():
    image = canvas()
    image[KEPT:, :, :] = (np.arange(W) % 2 * 100).astype(np.uint8)[None, :, None]  # stripes: alike above, not left
    left, up = sampling_study.alike_shares(image, KEPT)
    assert up == (H - KEPT - 1) * (W - 1) and left == 0  # the first kept row differs from the white row above it


@pytest.mark.parametrize("temps, ps, ks, count", [([1.0, 0.9], [1.0], [0], 2), ([1.0], [1.0, 0.9, 0.8], [0, 16], 6)])
def test_grid_is_the_product(temps, ps, ks, count):
    settings = sampling_study.grid(temps, ps, ks)
    assert len(settings) == count and all(set(s) == {"temperature", "top_k", "top_p"} for s in settings)
