"""Checks that a device call's upload fits before the call is made (docs/DEPLOY.md, "Device runs").

A device call copies the working tree to the GPU machine: tracked files, untracked files git does
not ignore, a `shared/` folder, and the ignored paths the call names in `carry`, 64 MiB in all. A
call over the limit is refused after the machine may already have been asked for, so check first:

    /usr/bin/python3 scripts/device_carry_check.py [--carry PATH ...] [--limit-mib 64]

Prints the total, the headroom and the largest folders; exits 1 when the total is over the limit.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Dict, Iterable, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT_MIB = 64
MIB = 1024 * 1024


def tree_files(repo: str) -> List[str]:
    """Tracked and untracked-not-ignored files that exist (paths relative to the repository), plus shared/."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         check=True, capture_output=True).stdout.decode()
    files = {p for p in out.split("\0") if p and os.path.lexists(os.path.join(repo, p))}
    files.update(_walk(repo, "shared"))
    return sorted(files)


def _walk(repo: str, path: str) -> Iterable[str]:
    """A path's files, relative to the repository; links as themselves (they travel as links, unfollowed)."""
    full = os.path.join(repo, path)
    if os.path.islink(full) or os.path.isfile(full):
        yield os.path.normpath(path)
    elif os.path.isdir(full):
        for root, dirs, names in os.walk(full):  # os.walk lists linked folders in dirs but does not enter them
            for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                yield os.path.relpath(os.path.join(root, name), repo)


def upload(repo: str, carry: List[str]) -> Tuple[int, Dict[str, int], List[str]]:
    """(total bytes, bytes per top-level folder, carry paths that do not exist)."""
    files = set(tree_files(repo))
    missing = []
    for path in carry:
        rel = os.path.relpath(os.path.abspath(os.path.join(repo, path)), repo)
        if not os.path.lexists(os.path.join(repo, rel)):
            missing.append(path)
            continue
        files.update(_walk(repo, rel))
    by_top: Dict[str, int] = {}
    total = 0
    for f in files:
        size = os.lstat(os.path.join(repo, f)).st_size  # a link travels as a link
        total += size
        top = f.split(os.sep, 1)[0] if os.sep in f else "."
        by_top[top] = by_top.get(top, 0) + size
    return total, by_top, missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--carry", nargs="*", default=[], help="the ignored paths the call will name in carry")
    ap.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    ap.add_argument("--repo", default=REPO)
    args = ap.parse_args(argv)
    total, by_top, missing = upload(args.repo, args.carry)
    limit = int(args.limit_mib * MIB)
    for top, size in sorted(by_top.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {size / MIB:8.2f} MiB  {top}")
    for path in missing:
        print(f"warning: carry path {path} does not exist (the call removes it there)", file=sys.stderr)
    verdict = "fits" if total <= limit else "DOES NOT FIT"
    print(f"{total / MIB:.2f} MiB of {limit / MIB:.0f} MiB: {verdict}; {(limit - total) / MIB:.2f} MiB left")
    return 0 if total <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
