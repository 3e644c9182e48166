"""bench/probe_switches.py runs end to end at a small size (its figures are bench/README.md's): the
switches per worker at each concurrency, then the inodes a job left per worker and what a new one
costs, counted from the workspace as it is (files and folders, not links)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.probe_switches import _inodes, _new_inode

BENCH = Path(__file__).resolve().parent.parent / "bench" / "probe_switches.py"


def test_the_inodes_of_a_workspace_are_its_files_and_folders_not_its_links(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f").write_text("x")
    (tmp_path / "g").write_text("y")
    os.symlink(tmp_path / "a", tmp_path / "link")  # not followed, not counted as a folder
    assert _inodes(tmp_path) == 4  # a, a/b, a/f, g (the link is a name, not an inode of its own)


def test_a_new_inode_is_timed_in_a_folder_of_its_own_that_goes_after(tmp_path):
    file_us, folder_us = _new_inode(tmp_path, 20)
    assert file_us > 0 and folder_us > 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_probe_runs_end_to_end_at_a_small_size():
    probe = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "10", "--at-once", "2", "--repeat", "1", "--creates", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "inodes each job left in its workspace: " in probe.stdout, probe.stdout
    assert "a new inode in " in probe.stdout, probe.stdout
