"""The reference sampler: filtering semantics, seeded determinism, prompts kept, cache == no cache."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)

from igpt.checkpoint import save_checkpoint  # noqa: E402
from igpt.data import save_prepared  # noqa: E402
from igpt.model import IGpt, preset  # noqa: E402
from igpt.sample import (filter_logits, pick_tokens, sample_tokens, sample_tokens_nocache,  # noqa: E402
                         tokens_to_image)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = IGpt(preset("tiny")).eval()
    with torch.no_grad():  # sharper than the 0.02 init, so greedy and sampled paths differ
        m.lm_head.weight.mul_(50)
    return m


def kept(logits):
    return torch.isfinite(logits)


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0, 3.0, -1.0]])
    out = filter_logits(logits, temperature=0.5)
    assert torch.allclose(out, logits / 0.5)


def test_top_k_keeps_the_k_largest_and_ties():
    logits = torch.tensor([[0.1, 3.0, 2.0, 2.5, -1.0]])
    assert kept(filter_logits(logits, 1.0, top_k=2)).tolist() == [[False, True, False, True, False]]
    tied = torch.tensor([[1.0, 2.0, 2.0, 0.0]])  # the 2nd largest ties: both kept
    assert kept(filter_logits(tied, 1.0, top_k=2)).tolist() == [[False, True, True, False]]
    assert kept(filter_logits(logits, 1.0, top_k=0)).all()  # 0 = off
    assert kept(filter_logits(logits, 1.0, top_k=99)).all()


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    # sorted: 0.5 (1), 0.3 (2), 0.15 (3), 0.05 (0); mass before: 0, .5, .8, .95
    assert kept(filter_logits(logits, 1.0, top_p=0.5)).tolist() == [[False, True, False, False]]
    assert kept(filter_logits(logits, 1.0, top_p=0.51)).tolist() == [[False, True, True, False]]
    assert kept(filter_logits(logits, 1.0, top_p=0.9)).tolist() == [[False, True, True, True]]
    assert kept(filter_logits(logits, 1.0, top_p=0.01)).tolist() == [[False, True, False, False]]
    assert kept(filter_logits(logits, 1.0, top_p=1.0)).all()


def test_top_p_applies_after_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0, -5.0]])
    # after top-k=3 and T=1 the probs are softmax([2,1,0]) = .665 .245 .090: p=.7 keeps two
    assert kept(filter_logits(logits, 1.0, top_k=3, top_p=0.7)).tolist() == [[True, True, False, False]]
    # a high temperature flattens them (.39 .33 .28): p=.7 now needs all three
    assert kept(filter_logits(logits, 10.0, top_k=3, top_p=0.7)).tolist() == [[True, True, True, False]]


def test_sampled_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[1.0, 0.0, 2.0, -1.0, 0.5]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(1)
    for T, k, p in [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.5, 0, 0.8)]:
        toks = pick_tokens(logits, T, k, p, g)
        freq = torch.bincount(toks, minlength=5).float() / len(toks)
        want = F.softmax(filter_logits(logits[:1], T, k, p), -1)[0]
        assert torch.allclose(freq, want, atol=0.015), (T, k, p, freq, want)
        assert (freq[want == 0] == 0).all()


def test_greedy_is_argmax_with_lowest_index_on_ties():
    logits = torch.tensor([[0.0, 3.0, 3.0, 1.0], [5.0, 1.0, 5.0, 0.0]])
    assert pick_tokens(logits, temperature=0).tolist() == [1, 0]


def test_seeded_sampling_is_deterministic(model):
    prompt = torch.zeros(3, 0, dtype=torch.long)
    a = sample_tokens(model, prompt, generator=torch.Generator().manual_seed(7))
    b = sample_tokens(model, prompt, generator=torch.Generator().manual_seed(7))
    c = sample_tokens(model, prompt, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 64)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < model.config.palette_size  # SOS never sampled


def test_completion_keeps_the_prompt_rows(model):
    torch.manual_seed(3)
    prompt = torch.randint(0, 8, (4, 3 * 8))  # 3 rows of an 8x8 image
    out = sample_tokens(model, prompt, temperature=1.0, top_k=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 64)
    assert torch.equal(out[:, :24], prompt)
    part = sample_tokens(model, prompt, n=5, generator=torch.Generator().manual_seed(0))
    assert part.shape == (4, 29)
    with pytest.raises(ValueError):
        sample_tokens(model, prompt, n=64)
    with pytest.raises(ValueError):
        sample_tokens(model, torch.full((1, 8), 8))  # SOS is not a pixel token
    with pytest.raises(ValueError, match="bidirectional"):
        sample_tokens(IGpt(preset("tiny", bidirectional=True)), prompt)


def test_cached_equals_uncached_greedy(model):
    torch.manual_seed(4)
    for P in (0, 16):
        prompt = torch.randint(0, 8, (3, P))
        a = sample_tokens(model, prompt, temperature=0)
        b = sample_tokens_nocache(model, prompt, temperature=0)
        assert torch.equal(a, b)


def test_cached_logits_match_full_forward(model):
    # the sampler's prefill + one-token steps see the same logits a full forward gives
    torch.manual_seed(5)
    seq = torch.cat([torch.full((2, 1), 8), torch.randint(0, 8, (2, 63))], dim=1)
    full, _ = model(seq)
    logits, past = model(seq[:, :10])
    steps = [logits]
    for t in range(10, 64):
        logits, past = model(seq[:, t:t + 1], past=past, position_offset=t)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_tokens_to_image_uses_the_palette():
    pal = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    img = tokens_to_image(np.array([1, 2, 0, 1]), pal, 2, 3)
    assert img.shape == (2, 3, 3)
    assert img[0, 0].tolist() == [255, 0, 0] and img[0, 1].tolist() == [0, 0, 255]
    assert img[1].tolist() == [[255, 0, 0], [0, 0, 0], [0, 0, 0]]  # the unfilled rest is black


def test_sample_command_writes_grids(tmp_path, model):
    from PIL import Image

    pal = [[i * 36] for i in range(8)]
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(str(ckpt), model, palette=pal)
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 8, (5, 64)).astype(np.uint16)
    save_prepared(str(tmp_path / "data"), {"dataset": "toy", "palette": pal, "classes": []},
                  {"train": (toks, np.zeros(5)), "val": (toks, np.zeros(5)), "test": (toks, np.zeros(5))})
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), "L").save(tmp_path / "in.png")
    env = dict(os.environ, IGPT_NO_REEXEC="1")
    run = lambda *a: subprocess.run([sys.executable, "-m", "igpt", "sample", "--ckpt", str(ckpt), *a],
                                    cwd=TRAINING, env=env, capture_output=True, text=True, timeout=120)
    r = run("--n", "4", "--out", str(tmp_path / "u.png"), "--scale", "2", "--tokens-out", str(tmp_path / "u.npy"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "u.png").size == (2 * (2 * 9 + 1), 2 * (2 * 9 + 1))  # 2x2 grid, 1px padding
    assert np.load(tmp_path / "u.npy").shape == (4, 64)
    r = run("--data", str(tmp_path / "data"), "--n", "2", "--images", str(tmp_path / "in.png"), "--rows", "3",
            "--per-image", "2", "--out", str(tmp_path / "c.png"), "--scale", "1", "--tokens-out", str(tmp_path / "c.npy"),
            "--top-k", "3", "--top-p", "0.9", "--temperature", "0.8")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "c.png").size == (4 * 9 + 1, 3 * 9 + 1)  # prompt, 2 completions, original
    c = np.load(tmp_path / "c.npy")
    assert c.shape == (6, 64)
    assert (c[:2, :24] == toks[0, :24]).all() and (c[2:4, :24] == toks[1, :24]).all()
