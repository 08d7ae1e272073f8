"""bench/gpu/: the random iGPT-S-size package's recipe (rebuilt bit for bit on a GPU machine) and the driver's PNG codec."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GPU = os.path.join(ROOT, "bench", "gpu")
sys.path.insert(0, GPU)

import igpt_s_package  # noqa: E402


def _driver_codec():
    """gpu_driver.py's png() and pixels(), without running the driver (it starts services at import)."""
    src = open(os.path.join(GPU, "gpu_driver.py"), encoding="utf-8").read()
    start, end = src.index("def png("), src.index("def step(")
    scope = {}
    exec("import base64, struct, zlib\nimport numpy as np\n" + src[start:end], scope)  # noqa: S102
    return scope["png"], scope["pixels"]


def _recipe(tmp_path, tensors, size, kept=b""):
    (tmp_path / igpt_s_package.KEPT).write_bytes(kept)
    (tmp_path / igpt_s_package.RECIPE).write_text(json.dumps({"size": size, "tensors": tensors}))


def test_fill_rebuilds_the_same_bytes_and_refuses_another_digest(tmp_path):
    kept = np.arange(16, dtype="<f4").tobytes()
    tensors = [{"name": "a", "offset": 0, "length": 64, "std": 0.02},
               {"name": "b", "offset": 64, "length": 64, "kept": 0},
               {"name": "c", "offset": 192, "length": 4096, "std": 0.5}]
    _recipe(tmp_path, tensors, 192 + 4096, kept)
    digest = igpt_s_package.fill(str(tmp_path))
    data = (tmp_path / "weights.data").read_bytes()
    assert len(data) == 192 + 4096 and data[64:128] == kept and data[128:192] == bytes(64)  # the gap stays zero
    a = np.frombuffer(data[:64], "<f4")
    np.testing.assert_array_equal(a, (np.random.default_rng([igpt_s_package.SEED, 0]).standard_normal(16) * 0.02).astype("<f4"))
    assert abs(float(np.frombuffer(data[192:], "<f4").std()) - 0.5) < 0.05
    assert igpt_s_package.fill(str(tmp_path)) == digest  # the same bytes every time
    recipe = json.loads((tmp_path / igpt_s_package.RECIPE).read_text())
    recipe["sha256"] = "0" * 64
    (tmp_path / igpt_s_package.RECIPE).write_text(json.dumps(recipe))
    with pytest.raises(SystemExit, match="rebuilt with sha256"):
        igpt_s_package.fill(str(tmp_path))


def test_redrawn_tensors_are_the_large_matrices_only():
    r = igpt_s_package.REDRAWN
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.23.attn.c_attn.weight",
                 "transformer.h.0.mlp.c_proj.weight"):
        assert r.match(name), name
    for name in ("transformer.h.0.ln_1.weight", "transformer.h.0.attn.c_attn.bias", "lm_head.weight_padded",
                 "lm_head.sos_mask", "transformer.ln_f.weight"):
        assert not r.match(name), name


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_driver_png_codec_reads_what_pil_writes(mode):
    png, pixels = _driver_codec()
    rng = np.random.default_rng(3)
    grey = (rng.integers(0, 256, (28, 28)) // 17 * 17).astype(np.uint8)  # runs of equal values: every filter type
    assert np.array_equal(pixels(base64.b64encode(png(grey)))[..., 0], grey)
    img = Image.fromarray(grey).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    got = pixels(base64.b64encode(buf.getvalue()))
    want = np.array(img.convert("RGB" if mode == "P" else mode)).reshape(28, 28, -1)
    assert np.array_equal(got, want)
