"""Branch refs read from the files backend (git/refstore.py) agree with git's own answer, in
real repositories: loose, packed, both, deleted, folders, other object formats, and while
another git moves and packs the refs."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from orchestrator.git.invocation import git_env
from orchestrator.git.job_refs import ref_value
from orchestrator.git.refstore import read_refs
from orchestrator.git.repository import plain_layout


def git(repo: Path, *args: str) -> str:
    env = git_env({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def make_repo(path: Path, *extra: str) -> tuple[Path, list[str]]:
    path.mkdir()
    git(path, "init", "-q", *extra)
    commits = []
    for n in range(3):
        (path / "f.txt").write_text(f"{n}\n")
        git(path, "add", "f.txt")
        git(path, "commit", "-q", "-m", f"c{n}")
        commits.append(git(path, "rev-parse", "HEAD"))
    return path, commits


def gits_answer(repo: Path, refs: list[str]) -> dict[str, str]:
    listed = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", *refs)
    return {ref: oid for ref, _, oid in (line.partition(" ") for line in listed.splitlines()) if ref in refs}


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


def test_loose_packed_overridden_deleted_and_folder_refs_read_as_git_reads_them(repo):
    path, (c0, c1, c2) = repo
    names = [f"refs/heads/orchestrator/r/{n}" for n in ("packed", "loose", "both", "gone")]
    packed, loose, both, gone = names
    for ref in (packed, both, gone):
        git(path, "update-ref", ref, c0)
    git(path, "pack-refs", "--all")  # packed: all three, no loose files left
    assert not (path / ".git" / packed).exists()
    git(path, "update-ref", loose, c1)  # loose only
    git(path, "update-ref", both, c2)  # packed at c0, loose at c2: the loose one counts
    git(path, "update-ref", "-d", gone)
    git(path, "update-ref", "refs/heads/orchestrator/r/dir/below", c1)  # ".../r/dir" is a folder
    asked = [*names, "refs/heads/orchestrator/r/dir", "refs/heads/orchestrator/r/never"]
    assert read_refs(path, asked) == gits_answer(path, asked) == {packed: c0, loose: c1, both: c2}
    for ref in asked:
        assert ref_value(path, ref) == gits_answer(path, [ref]).get(ref)


def test_a_linked_worktree_reads_the_shared_refs(repo, tmp_path):
    path, (c0, _, c2) = repo
    git(path, "worktree", "add", "-q", "-b", "orchestrator/r/w", str(tmp_path / "wt"), c0)
    git(path, "update-ref", "refs/heads/orchestrator/r/x", c2)
    refs = ["refs/heads/orchestrator/r/w", "refs/heads/orchestrator/r/x"]
    assert read_refs(tmp_path / "wt", refs) == gits_answer(path, refs) == {refs[0]: c0, refs[1]: c2}


def test_what_the_files_cannot_answer_is_left_to_git(repo, tmp_path):
    path, (c0, _, _) = repo
    git(path, "symbolic-ref", "refs/heads/orchestrator/r/sym", "refs/heads/master")
    assert read_refs(path, ["refs/heads/orchestrator/r/sym"]) is None  # a symbolic ref
    assert read_refs(path, ["refs/heads/caf\u00e9"]) is None  # a name git must judge
    assert read_refs(path, ["HEAD"]) is None  # not a full ref
    # and ref_value still answers them, through git
    assert ref_value(path, "refs/heads/orchestrator/r/sym") == git(path, "rev-parse", "master")
    other, _ = make_repo(tmp_path / "other")
    git(other, "config", "extensions.worktreeConfig", "true")  # a layout this module does not assume
    assert not plain_layout(str(other))
    assert read_refs(other, ["refs/heads/master"]) is None
    assert read_refs(tmp_path, ["refs/heads/master"]) is None  # not a repository


def test_a_sha256_repository_reads_its_long_ids(tmp_path):
    path, commits = make_repo(tmp_path / "repo256", "--object-format=sha256")
    git(path, "update-ref", "refs/heads/orchestrator/r/a", commits[1])
    git(path, "pack-refs", "--all")
    git(path, "update-ref", "refs/heads/orchestrator/r/b", commits[2])
    refs = ["refs/heads/orchestrator/r/a", "refs/heads/orchestrator/r/b"]
    assert read_refs(path, refs) == gits_answer(path, refs) == {refs[0]: commits[1], refs[1]: commits[2]}
    assert len(commits[1]) == 64


def test_reads_while_another_git_moves_and_packs_the_ref_see_only_values_it_had(repo):
    # Given a ref another thread moves between three commits and packs, over and over
    path, commits = repo
    ref = "refs/heads/orchestrator/r/moving"
    git(path, "update-ref", ref, commits[0])
    stop = threading.Event()

    def mover() -> None:
        n = 0
        while not stop.is_set():
            git(path, "update-ref", ref, commits[n % 3])
            if n % 4 == 0:
                git(path, "pack-refs", "--all")
            n += 1

    thread = threading.Thread(target=mover)
    thread.start()
    seen = []
    try:
        for _ in range(3000):
            seen.append(ref_value(path, ref))
    finally:
        stop.set()
        thread.join(30)
    # Then every read found the ref, at one of the commits it was moved to
    assert set(seen) <= set(commits), set(seen) - set(commits)


def test_a_full_commit_id_is_asked_of_git_once_and_anything_else_each_time(tmp_path, monkeypatch):
    from orchestrator.errors import ValidationError
    from orchestrator.git import job_refs

    repo, commits = make_repo(tmp_path / "ids")
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    asked: list[list[str]] = []
    resolve_all = job_refs.resolve_all
    monkeypatch.setattr(job_refs, "resolve_all", lambda r, names: asked.append(names) or resolve_all(r, names))
    for _ in range(3):
        assert job_refs.resolve_remembered(repo, commits[0]) == commits[0]
        assert job_refs.resolve_remembered(repo, "HEAD") == commits[-1]  # a name moves: asked each time
    assert asked.count([commits[0]]) == 1 and asked.count(["HEAD"]) == 3
    for _ in range(2):  # not a commit: refused each time, never remembered
        with pytest.raises(ValidationError, match="is not a commit"):
            job_refs.resolve_remembered(repo, tree)
    assert asked.count([tree]) == 2
