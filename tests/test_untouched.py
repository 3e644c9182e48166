"""checkouts/untouched.py: whether anything was written in a checkout since the orchestrator left it,
from the kernel's ctimes, on a real file system; each kind of write a worker can make is seen."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.checkouts import untouched


@pytest.fixture(autouse=True, params=["in-process", "find"])
def walk(request, monkeypatch):
    """Every test twice: a checkout walked in the server's process, and one past its budget, by find(1)."""
    if request.param == "find":
        monkeypatch.setattr(untouched, "_WALK_BUDGET", 0)
    return request.param


@pytest.fixture
def checkout(tmp_path):
    """A worktree-like folder (files, a subfolder, a ``.git`` file) and its git dir, marked and settled."""
    directory, git_dir = tmp_path / "tree", tmp_path / "gitdir"
    (directory / "sub").mkdir(parents=True)
    git_dir.mkdir()
    (directory / "a.txt").write_text("a\n")
    (directory / "sub" / "b.txt").write_text("b\n")
    (directory / ".git").write_text(f"gitdir: {git_dir}\n")
    (git_dir / "index").write_bytes(b"index")
    since = untouched.mark(directory)
    if since is None:
        pytest.skip(f"{tmp_path} is not on a local file system")
    assert untouched.settle(since)
    return directory, git_dir, since


def test_nothing_written_since_the_mark_reads_as_untouched(checkout):
    directory, git_dir, since = checkout
    assert not untouched.written_since(since, directory, git_dir)
    (git_dir / "orchestrator-refs-shown").write_text("x\n")  # the orchestrator's own files in the git dir do not count
    assert not untouched.written_since(since, directory, git_dir)


@pytest.mark.parametrize(
    "write",
    [
        lambda d, g: (d / "sub" / "b.txt").write_text("changed\n"),  # a file rewritten in a subfolder
        lambda d, g: (d / "sub" / "new.txt").write_text("new\n"),
        lambda d, g: (d / "a.txt").unlink(),
        lambda d, g: (d / "a.txt").rename(d / "sub" / "a.txt"),
        lambda d, g: os.chmod(d / "sub" / "b.txt", 0o755),
        lambda d, g: os.link(d / "a.txt", d / "sub" / "hard"),
        lambda d, g: os.utime(d / "sub" / "b.txt", (0, 0)),  # an old mtime set by hand: the ctime still moves
        lambda d, g: (g / "index").write_bytes(b"another index"),  # git rm --cached, git add
        lambda d, g: (g / "config.worktree").write_text("[core]\n"),  # settings that change what add -A takes
        lambda d, g: (g / "info").mkdir(),
    ],
    ids=["rewrite", "create", "delete", "rename", "chmod", "hard-link", "old-mtime", "index", "config-worktree", "info"],
)
def test_every_kind_of_write_is_seen(checkout, write):
    directory, git_dir, since = checkout
    write(directory, git_dir)
    assert untouched.written_since(since, directory, git_dir)


def test_a_write_through_a_link_out_of_the_checkout_is_not_followed(checkout, tmp_path):
    directory, git_dir, since = checkout
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, directory / "link")  # the link itself is a write of the checkout
    assert untouched.written_since(since, directory, git_dir)
    # find never follows it: a write outside only counts as what it is, outside
    again = untouched.mark(directory)
    assert again is not None and untouched.settle(again)
    (outside / "x").write_text("x\n")
    assert not untouched.written_since(again, directory, git_dir)


def test_a_file_system_whose_clock_is_not_this_machines_gives_no_mark():
    assert untouched._fstype(os.stat("/proc").st_dev) == "proc"
    assert untouched.mark(Path("/proc")) is None


def test_the_commit_of_a_sandboxed_worker_that_wrote_only_through_git_is_taken(tmp_path):
    """A real repository: ``git rm --cached`` changes only the index, and is seen."""
    repo = tmp_path / "r"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (repo / "f").write_text("f\n")
    run("add", "f")
    since = untouched.mark(repo)
    if since is None:
        pytest.skip("not a local file system")
    assert untouched.settle(since)
    assert not untouched.written_since(since, repo, repo / ".git")
    run("rm", "-q", "--cached", "f")
    assert untouched.written_since(since, repo, repo / ".git")


def test_only_the_top_git_is_left_out_and_a_nested_one_counts(checkout):
    directory, git_dir, since = checkout
    (directory / ".git").write_text(f"gitdir: {git_dir}\n")  # the orchestrator's pointer, rewritten in place: not the worker's
    assert not untouched.written_since(since, directory, git_dir)
    (directory / "sub" / ".git").write_text("x\n")  # a worker's own .git deeper down is its work
    assert untouched.written_since(since, directory, git_dir)


def test_a_write_deep_in_a_checkout_larger_than_the_walks_budget_is_seen(checkout, monkeypatch):
    directory, git_dir, since = checkout
    monkeypatch.setattr(untouched, "_WALK_BUDGET", min(untouched._WALK_BUDGET, 5))
    (directory / "d1" / "d2" / "d3").mkdir(parents=True)  # (each mkdir is a write: all of them new)
    assert untouched.written_since(since, directory, git_dir)
    again = untouched.mark(directory)
    assert again is not None and untouched.settle(again)
    assert not untouched.written_since(again, directory, git_dir)
    (directory / "d1" / "d2" / "d3" / "late.txt").write_text("late\n")
    assert untouched.written_since(again, directory, git_dir)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder; an ordinary user's run shows the refusal")
def test_a_folder_that_cannot_be_read_counts_as_written(checkout):
    directory, git_dir, since = checkout
    os.chmod(directory / "sub", 0o000)
    try:
        assert untouched.written_since(since, directory, git_dir)
    finally:
        os.chmod(directory / "sub", 0o755)
