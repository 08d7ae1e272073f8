#!/usr/bin/env python3
"""Copy prepared data with its token files deflate-compressed, small enough to travel.

    /usr/bin/python3 scripts/compress_prepared.py SRC DST

`prepare` writes plain .npz files (fast to read); a lent GPU machine takes the repository and the
paths a call carries within 64 MiB together, and the repository alone is most of that. Emoji
tokens are mostly the white background and shrink about 7x (emoji-32 with four sets: 29.9 MB ->
4.0 MB). Every reader (`data.load_prepared`, `np.load`) reads the copy as it reads the original.
"""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np


def compress(src: str, dst: str) -> int:
    """Write DST/meta.json and DST/<split>.npz (compressed) for every .npz of SRC; returns DST's bytes."""
    if not os.path.isfile(os.path.join(src, "meta.json")):
        raise FileNotFoundError(f"{src}: no meta.json (not prepared data)")
    os.makedirs(dst, exist_ok=True)
    shutil.copyfile(os.path.join(src, "meta.json"), os.path.join(dst, "meta.json"))
    for name in sorted(os.listdir(src)):
        if name.endswith(".npz"):
            with np.load(os.path.join(src, name)) as z:
                arrays = {k: z[k] for k in z.files}
            tmp = os.path.join(dst, f".{name}.tmp.npz")
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, os.path.join(dst, name))
    return sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    size = compress(sys.argv[1], sys.argv[2])
    print(f"{sys.argv[2]}: {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
