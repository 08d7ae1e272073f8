"""DDP: two CPU processes on gloo train the tiny preset and end with the same weights."""
import os
import socket
import time

import numpy as np
import torch
import torch.multiprocessing as mp

from conftest import parse
from igpt.checkpoint import torch_load
from test_train import PALETTE, stripes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, data: str, out: str, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), GLOO_SOCKET_IFNAME="lo")
    from igpt import train
    args = parse(train, ["--data", data, "--out", out, "--preset", "tiny", "--batch-size", 8,
                         "--max-steps", 12, "--eval-interval", 6, "--eval-samples", 16, "--warmup-steps", 2,
                         "--final-eval-samples", 16, "--no-progress", "--device", "cpu", "--dropout", 0.1])
    model = train.run(args)
    torch.save(model.state_dict(), os.path.join(result, f"rank{rank}.pt"))


def test_two_gloo_ranks_end_with_the_same_weights(tmp_path):
    from igpt.data import save_prepared
    rng = np.random.default_rng(0)
    data = str(tmp_path / "data")
    meta = {"dataset": "stripes", "height": 8, "width": 8, "channels": 1, "palette_size": 8, "palette": PALETTE,
            "classes": ["a", "b"], "splits": {"train": 128, "val": 16, "test": 16}}
    save_prepared(data, meta, {"train": stripes(128, rng), "val": stripes(16, rng), "test": stripes(16, rng)})
    out = str(tmp_path / "run")
    ctx = mp.start_processes(worker, args=(2, free_port(), data, out, str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.time() + 300  # a hung rank fails the test instead of hanging the suite
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError("DDP workers did not finish within 300 s")
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    ckpt = torch_load(os.path.join(out, "last.pt"))
    assert ckpt["step"] == 12 and ckpt["tokens_seen"] == 12 * 8 * 2 * 64  # global batch = 2 x 8
    assert set(ckpt["rng"]) == {"0", "1"} and "2x CPU" in ckpt["hardware"]
    torch.manual_seed(1337)
    from igpt.model import IGpt, IGptConfig
    init = IGpt(IGptConfig.from_dict(ckpt["config"])).state_dict()
    changed = False
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.equal(w0[k], ckpt["model"][k]), k
        changed |= not torch.equal(w0[k], init[k])
    assert changed
