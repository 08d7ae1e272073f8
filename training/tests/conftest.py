"""pytest set-up: import igpt from training/, keep torch small and quiet."""
import os
import sys

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING not in sys.path:
    sys.path.insert(0, TRAINING)
os.environ.setdefault("IGPT_NO_REEXEC", "1")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


def parse(module, argv):
    """args for an igpt command module, as `python3 -m igpt <cmd> argv...` would build them."""
    import argparse
    p = argparse.ArgumentParser()
    module.add_args(p)
    return p.parse_args([str(a) for a in argv])
