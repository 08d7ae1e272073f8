"""Process set-up shared by the commands: CPU threads, allocator settings, devices, DDP.

Debian's torch starts with one thread; we set it from the cores this process may use (divided
among the local DDP ranks). glibc's malloc returns freed memory to the OS eagerly, and fresh
pages are expensive on small VMs, so every training step would pay page faults again; the
environment below keeps freed memory in the heap. glibc reads these variables once, when the
process starts, so `ensure_env()` re-executes the interpreter once with them set.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import torch

# Measured on the 2-core dev VM (see training/README.md, "Performance"): keep freed memory in the
# heap (no trimming, big top pad, the largest mmap threshold glibc accepts: 32 MiB) and let idle
# OpenMP threads sleep instead of spinning against the other rank / data thread.
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
    "MALLOC_TOP_PAD_": str(256 * 1024 * 1024),
    "OMP_WAIT_POLICY": "PASSIVE",
}
_REEXEC_MARK = "IGPT_ENV_SET"


def ensure_env(argv: Optional[list] = None) -> None:
    """Re-exec this Python once with ALLOCATOR_ENV set (values already set by the user win).

    Skipped when IGPT_NO_REEXEC=1, when already done, or when every variable is already set.
    """
    if os.environ.get(_REEXEC_MARK) or os.environ.get("IGPT_NO_REEXEC") == "1":
        return
    missing = {k: v for k, v in ALLOCATOR_ENV.items() if k not in os.environ}
    if not missing:
        return
    env = dict(os.environ, **missing, **{_REEXEC_MARK: "1"})
    args = [sys.executable] + (argv if argv is not None else _original_argv())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)


def _original_argv() -> list:
    # `python3 -m igpt ...` leaves sys.argv[0] as the path of __main__.py; rebuild "-m igpt".
    if sys.argv and sys.argv[0].endswith(os.path.join("igpt", "__main__.py")):
        return ["-m", "igpt"] + sys.argv[1:]
    return list(sys.argv)


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int = 0, local_world_size: int = 1) -> int:
    """Set torch's intra-op threads: `threads`, or this process's share of the cores."""
    n = threads if threads > 0 else max(1, cpu_count() // max(1, local_world_size))
    torch.set_num_threads(n)
    return n


# A CPU evaluation batch's [B, n_head, T, T] attention scores (PyTorch 1.13 materializes them) beyond about this many
# bytes leave the caches, and the batch then runs slower per image than small ones (1,024 tokens, 6 x 128, one thread:
# 350-440 ms an image at batches 1-8, 980 ms at 32).
CPU_EVAL_ATTENTION_BYTES = 64 << 20


def eval_batch_size(batch_size: int, n_head: int, seq_len: int, device: torch.device) -> int:
    """The micro-batch an evaluation pass (no gradients) runs `batch_size` examples in: all of them on a GPU, on the CPU
    as many as keep the attention scores within CPU_EVAL_ATTENTION_BYTES (at least one). Sums and per-example outputs do
    not depend on it."""
    if device.type != "cpu":
        return batch_size
    return max(1, min(batch_size, CPU_EVAL_ATTENTION_BYTES // (4 * n_head * seq_len * seq_len)))


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def hardware_string(device: torch.device, world_size: int = 1) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"CPU, {torch.get_num_threads()} threads"
    return f"{world_size}x {what}" if world_size > 1 else what
