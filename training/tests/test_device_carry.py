"""scripts/device_carry_check.py: what a device call uploads (tracked + untracked-not-ignored + shared/ + carry)."""
from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import device_carry_check  # noqa: E402

KIB = 1024


def _repo(tmp_path):
    def write(path, size):
        full = tmp_path / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(b"x" * size)

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("build/\n*.log\n")
    write("tracked/a.bin", 100 * KIB)
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    write("untracked.bin", 10 * KIB)           # travels: untracked, not ignored
    write("build/out.bin", 1000 * KIB)         # ignored: travels only when carried
    write("run.log", 500 * KIB)                # ignored
    write("shared/data.bin", 20 * KIB)         # shared/ always travels
    os.symlink("/usr", tmp_path / "link")      # a link travels as itself, unfollowed
    return tmp_path


def test_counts_the_tree_shared_and_carried_paths_only(tmp_path):
    repo = str(_repo(tmp_path))
    total, by_top, missing = device_carry_check.upload(repo, [])
    gitignore = len("build/\n*.log\n")
    link = os.lstat(os.path.join(repo, "link")).st_size
    assert total == 130 * KIB + gitignore + link and missing == []
    assert by_top["tracked"] == 100 * KIB and by_top["shared"] == 20 * KIB and "build" not in by_top
    carried, by_top, missing = device_carry_check.upload(repo, ["build", "gone"])
    assert carried == total + 1000 * KIB and by_top["build"] == 1000 * KIB and missing == ["gone"]
    assert device_carry_check.upload(repo, ["shared", "tracked/a.bin"])[0] == total  # counted once


def test_exit_code_says_whether_it_fits(tmp_path, capsys):
    repo = str(_repo(tmp_path))
    assert device_carry_check.main(["--repo", repo, "--limit-mib", "1"]) == 0
    assert device_carry_check.main(["--repo", repo, "--limit-mib", "1", "--carry", "build"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_this_repository_leaves_room_for_a_gpu_run():
    """The tree itself must leave at least 32 MiB of the 64 for what a GPU run carries (docs/DEPLOY.md)."""
    total, _, _ = device_carry_check.upload(ROOT, [])
    assert total <= (device_carry_check.LIMIT_MIB - 32) * device_carry_check.MIB, f"{total / device_carry_check.MIB:.1f} MiB"
