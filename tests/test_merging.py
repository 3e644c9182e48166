"""Merging workers' branches with real git on real repositories made by each test.

Every operation is wrapped in a snapshot of the user's repository (checked-out branch, status,
index, working-tree file hashes, stash list, refs outside the prefix) taken before and after:
nothing but the job's own refs (and, for ``advance``, the one named branch) may change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import protocol
from orchestrator.errors import ConfigError, ValidationError
from orchestrator.git import job_refs, merging, repository
from orchestrator.git import objects as gitobjects
from orchestrator.git.commits import ORCHESTRATOR, Identity, Source, identity_of, subject_line
from orchestrator.git.invocation import run_git

# Many real git processes on real repositories: the slow tier.
pytestmark = pytest.mark.slow


def commit_tree(repo: Path, tree: str, parent: str, message: str, when: str, who: Identity) -> str:
    """git's own ``commit-tree`` for the same inputs: what every commit the merge writes must equal."""
    env = {**who.env(), "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    return run_git(repo, "-c", "commit.gpgsign=false", "commit-tree", tree, "-p", parent, input=message, env=env).stdout.strip()


PREFIX = "orchestrator/"
ID = "job1"
LINES = [f"line {n}" for n in range(1, 21)]


def git(repo: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> str:
    ident = {"GIT_AUTHOR_NAME": "user", "GIT_AUTHOR_EMAIL": "u@x", "GIT_COMMITTER_NAME": "user", "GIT_COMMITTER_EMAIL": "u@x"}
    return run_git(repo, *args, env={**ident, **(env or {})}, input=input).stdout


def commit_on(repo: Path, branch: str, files: dict[str, str | None], message: str = "work") -> str:
    """Commit ``files`` (None deletes) on ``branch`` through a temporary index, as a worker in
    its own worktree would: the user's index and working tree are not touched."""
    index = repo.parent / f"index-{os.getpid()}-{branch.replace('/', '_')}"
    env = {"GIT_INDEX_FILE": str(index)}
    parent = git(repo, "rev-parse", branch).strip()
    git(repo, "read-tree", parent, env=env)
    for path, text in files.items():
        if text is None:
            git(repo, "update-index", "--force-remove", "--", path, env=env)
        else:
            blob = git(repo, "hash-object", "-w", "--stdin", input=text).strip()
            git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
    tree = git(repo, "write-tree", env=env).strip()
    index.unlink()
    commit = git(repo, "commit-tree", tree, "-p", parent, input=message).strip()
    git(repo, "update-ref", f"refs/heads/{branch}", commit, parent)
    return commit


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The user's repository: several commits, a .gitignore, an ignored .env, a path with spaces,
    a stash entry and a dirty tree (a staged change, an unstaged change, an untracked file)."""
    root = tmp_path / "user repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text(".env\nworkspace/\n")
    (root / "story.txt").write_text("\n".join(LINES) + "\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    (root / "dir with space").mkdir()
    (root / "dir with space" / "notes.txt").write_text("notes\n")
    (root / "other.txt").write_text("other\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "second")
    (root / ".env").write_text("SECRET=1\n")
    (root / "other.txt").write_text("stashed edit\n")
    git(root, "stash", "push", "-q", "-m", "the user's stash")
    (root / "other.txt").write_text("staged edit\n")
    git(root, "add", "other.txt")
    (root / "story.txt").write_text("\n".join(LINES) + "\nunstaged edit\n")
    (root / "untracked.txt").write_text("untracked\n")
    git(root, "tag", "v1", "HEAD")
    for worker in ("w1", "w2", "w3", "w4"):
        git(root, "branch", f"{PREFIX}{ID}/{worker}", "main")
    return root


def snapshot(repo: Path) -> dict[str, Any]:
    files = {}
    for path in sorted(repo.rglob("*")):
        if ".git" not in path.relative_to(repo).parts and path.is_file():
            files[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    refs = [
        line
        for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
        if f"refs/heads/{PREFIX}" not in line
    ]
    return {
        "head": run_git(repo, "symbolic-ref", "-q", "HEAD", check=False).stdout + git(repo, "rev-parse", "HEAD"),
        "status": git(repo, "status", "--porcelain=v2", "--branch", "--untracked-files=all", "--ignored"),
        "index": git(repo, "ls-files", "-s"),
        "files": files,
        "stash": git(repo, "stash", "list", "--format=%H %s"),
        "refs": refs,
    }


def show(repo: Path, ref: str, path: str) -> str:
    return git(repo, "show", f"{ref}:{path}")


def lines_with(changes: dict[int, str]) -> str:
    return "\n".join(changes.get(n, line) for n, line in enumerate(LINES, 1)) + "\n"


def branches(*workers: str) -> list[tuple[str, str]]:
    return [(w, f"{PREFIX}{ID}/{w}") for w in workers]


def merge(repo: Path, strategy: str, *workers: str) -> merging.MergeOutcome:
    return merging.merge_branches(repo, merging.MergeRequest("main", branches(*workers), strategy, prefix=PREFIX, root_id=ID))


RESULT = f"refs/heads/{PREFIX}{ID}/result"


@pytest.mark.parametrize("strategy", ["auto", "theirs"])
@pytest.mark.parametrize("detached", [False, True])
def test_disjoint_edits_merge_cleanly(repo: Path, strategy: str, detached: bool) -> None:
    if detached:
        git(repo, "checkout", "-q", "--detach")  # a detached HEAD, local changes kept
    commit_on(repo, f"{PREFIX}{ID}/w1", {"story.txt": lines_with({3: "w1 was here"})})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"dir with space/notes.txt": "notes by w2\n"})
    commit_on(repo, f"{PREFIX}{ID}/w3", {"new file.txt": "w3\n", "other.txt": None})
    before = snapshot(repo)
    outcome = merge(repo, strategy, "w1", "w2", "w3", "w4")
    assert snapshot(repo) == before
    assert outcome.merged == ("w1", "w2", "w3") and outcome.skipped == () and outcome.conflicts == ()
    assert outcome.unchanged == ("w4",)  # it added nothing: never listed as merged
    assert git(repo, "rev-parse", RESULT).strip() == outcome.result_commit
    assert show(repo, RESULT, "story.txt") == lines_with({3: "w1 was here"})
    assert show(repo, RESULT, "dir with space/notes.txt") == "notes by w2\n"
    assert show(repo, RESULT, "new file.txt") == "w3\n"
    names = git(repo, "ls-tree", "-r", "--name-only", RESULT).splitlines()
    assert "other.txt" not in names and ".env" not in names
    assert outcome.command == f"git merge {PREFIX}{ID}/result"
    assert [c.files for c in outcome.changes] == [
        ("story.txt",),
        ("dir with space/notes.txt",),
        ("new file.txt", "other.txt"),
        (),
    ]
    log = git(repo, "log", "--format=%s%n%b", RESULT)
    assert f"The work of w2 on {PREFIX}{ID}/w2" in log and f"Orchestrator-Job: {ID}" in log
    # One commit per merged worker, each with one parent: no worker's own commit is an ancestor.
    chain = git(repo, "rev-list", "--parents", f"main..{RESULT}").splitlines()
    assert len(chain) == 3 and all(len(line.split()) == 2 for line in chain)
    for worker in ("w1", "w2", "w3"):
        tip = git(repo, "rev-parse", f"{PREFIX}{ID}/{worker}").strip()
        assert not job_refs.is_ancestor(repo, tip, RESULT)
        assert f"Orchestrator-Worker: {worker}" in log and f"Orchestrator-Commit: {tip}" in log


def conflicting(repo: Path) -> None:
    """w1: a file of its own; w2 and w3: the same lines of story.txt (two hunks, plus one line
    each that merges); w4: a file of its own and the same line 2 again."""
    commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n"})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"story.txt": lines_with({2: "w2 two", 10: "w2 ten", 18: "w2 eighteen"})})
    commit_on(repo, f"{PREFIX}{ID}/w3", {"story.txt": lines_with({2: "w3 two", 14: "w3 fourteen", 18: "w3 eighteen"})})
    commit_on(repo, f"{PREFIX}{ID}/w4", {"w4.txt": "w4\n", "story.txt": lines_with({2: "w4 two"})})


def test_same_lines_under_auto_stop_at_the_first_conflict(repo: Path) -> None:
    conflicting(repo)
    before = snapshot(repo)
    outcome = merge(repo, "auto", "w1", "w2", "w3", "w4")
    assert snapshot(repo) == before
    assert outcome.merged == ("w1", "w2") and outcome.skipped == ("w3", "w4")
    actual = [c for c in outcome.conflicts if not c.predicted]
    assert actual == [merging.FileConflict("story.txt", ("w2", "w3"), 2, "content")]
    predicted = [c for c in outcome.conflicts if c.predicted]
    assert [(c.path, c.workers) for c in predicted] == [("story.txt", ("w2", "w4"))]
    # The result holds the clean part only: w1 and w2, nothing of w3 or w4.
    assert show(repo, RESULT, "story.txt") == lines_with({2: "w2 two", 10: "w2 ten", 18: "w2 eighteen"})
    names = git(repo, "ls-tree", "-r", "--name-only", RESULT).splitlines()
    assert "w1.txt" in names and "w4.txt" not in names


def test_same_lines_under_theirs_take_the_later_workers_hunks(repo: Path) -> None:
    conflicting(repo)
    before = snapshot(repo)
    outcome = merge(repo, "theirs", "w1", "w2", "w3")
    assert snapshot(repo) == before
    assert outcome.merged == ("w1", "w2", "w3") and outcome.skipped == ()
    assert outcome.conflicts == (merging.FileConflict("story.txt", ("w2", "w3"), 2, "content", resolved_by="w3"),)
    # Per hunk, as `git merge -X theirs`: w3 wins lines 2 and 18; w2's line 10 and w3's line 14 both stay.
    assert show(repo, RESULT, "story.txt") == lines_with({2: "w3 two", 10: "w2 ten", 14: "w3 fourteen", 18: "w3 eighteen"})
    assert show(repo, RESULT, "w1.txt") == "w1\n"


def test_theirs_resolves_a_delete_against_an_edit_by_the_later_side(repo: Path) -> None:
    commit_on(repo, f"{PREFIX}{ID}/w1", {"other.txt": "edited by w1\n", "dir with space/notes.txt": None})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"other.txt": None, "dir with space/notes.txt": "edited by w2\n"})
    outcome = merge(repo, "theirs", "w1", "w2")
    kinds = {c.path: (c.kind, c.resolved_by) for c in outcome.conflicts}
    assert kinds == {"other.txt": ("modify/delete", "w2"), "dir with space/notes.txt": ("delete/modify", "w2")}
    names = git(repo, "ls-tree", "-r", "--name-only", RESULT).splitlines()
    assert "other.txt" not in names and show(repo, RESULT, "dir with space/notes.txt") == "edited by w2\n"


def test_manual_merges_nothing_and_prepares_the_comparison(repo: Path) -> None:
    conflicting(repo)
    before = snapshot(repo)
    outcome = merge(repo, "manual", "w1", "w2", "w3")
    assert snapshot(repo) == before
    assert run_git(repo, "rev-parse", "--verify", "-q", RESULT, check=False).returncode != 0
    assert outcome.result_commit is None and outcome.merged == () and outcome.skipped == ("w1", "w2", "w3")
    assert [(c.worker, c.files) for c in outcome.changes] == [("w1", ("w1.txt",)), ("w2", ("story.txt",)), ("w3", ("story.txt",))]
    assert outcome.conflicts == (merging.FileConflict("story.txt", ("w2", "w3"), 2, "content", predicted=True),)


def test_predict_conflicts_pairwise_touches_nothing(repo: Path) -> None:
    conflicting(repo)
    before = snapshot(repo)
    found = merging.predict_conflicts(repo, "main", branches("w1", "w2", "w3", "w4"))
    assert snapshot(repo) == before
    assert {(c.path, c.workers, c.hunks) for c in found} == {
        ("story.txt", ("w2", "w3"), 2),
        ("story.txt", ("w2", "w4"), 1),
        ("story.txt", ("w3", "w4"), 1),
    }


@pytest.mark.parametrize("strategy", ["auto", "theirs", "manual"])
def test_a_rerun_is_idempotent(repo: Path, strategy: str) -> None:
    conflicting(repo)
    first = merge(repo, strategy, "w1", "w2", "w3")
    refs = git(repo, "for-each-ref")
    again = merge(repo, strategy, "w1", "w2", "w3")
    assert again == first and git(repo, "for-each-ref") == refs


def test_a_stale_old_value_refuses_to_move_a_ref(repo: Path) -> None:
    commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n"})
    merge(repo, "auto", "w1")
    now = git(repo, "rev-parse", RESULT).strip()
    stale = git(repo, "rev-parse", "main").strip()
    under = f"refs/heads/{PREFIX}{ID}/"
    with pytest.raises(job_refs.RefMoved, match="not .* as expected"):
        job_refs.update_ref(repo, RESULT, stale, stale, under=under)
    with pytest.raises(job_refs.RefMoved):
        job_refs.update_ref(repo, RESULT, stale, None, under=under)  # "must not exist"
    assert git(repo, "rev-parse", RESULT).strip() == now
    with pytest.raises(ValidationError, match="only refs under"):
        job_refs.update_ref(repo, "refs/heads/main", now, stale, under=under)
    assert git(repo, "rev-parse", "main").strip() == stale


def test_bad_names_are_refused_before_git_sees_them(repo: Path) -> None:
    with pytest.raises(ValidationError, match="not a commit"):
        merging.merge_branches(repo, merging.MergeRequest("main", [("w1", "--output=/tmp/x")], "auto", prefix=PREFIX, root_id=ID))
    with pytest.raises(ValidationError, match="cannot name a branch"):
        merging.merge_branches(repo, merging.MergeRequest("main", [], "auto", prefix=PREFIX, root_id="../x"))
    with pytest.raises(ValidationError, match="not one of"):
        merging.merge_branches(repo, merging.MergeRequest("main", [], "ours", prefix=PREFIX, root_id=ID))
    with pytest.raises(ConfigError, match="branch_prefix"):
        merging.merge_branches(repo, merging.MergeRequest("main", [], "auto", prefix="bad prefix/", root_id=ID))


def test_too_old_a_git_is_named_with_the_minimum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\necho 'git version 2.30.1'\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    repository.git_version.cache_clear()  # the one version query is cached per process
    try:
        assert repository.git_version() == (2, 30, 1)
        with pytest.raises(merging.GitTooOld, match=r"git 2\.30\.1 is too old: merging needs git >= 2\.38"):
            merging.require_git(tmp_path)
    finally:
        repository.git_version.cache_clear()


# -- advance --------------------------------------------------------------------------------------


def result_of_w1(repo: Path) -> str:
    commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n"})
    outcome = merge(repo, "auto", "w1")
    assert outcome.result_commit
    return outcome.result_commit


def test_advance_fast_forwards_a_branch_not_checked_out(repo: Path) -> None:
    git(repo, "branch", "release", "main")
    result = result_of_w1(repo)
    before = snapshot(repo)
    assert "moved release" in job_refs.advance(repo, "release", result)
    after = snapshot(repo)
    assert git(repo, "rev-parse", "release").strip() == result
    moved = [r for r in after["refs"] if r not in before["refs"]]
    assert moved == [f"refs/heads/release {result}"]
    assert {k: v for k, v in after.items() if k != "refs"} == {k: v for k, v in before.items() if k != "refs"}
    assert "already at" in job_refs.advance(repo, "release", result)  # idempotent


def test_advance_refuses_a_non_fast_forward(repo: Path) -> None:
    git(repo, "branch", "release", "main")
    result = result_of_w1(repo)
    own = commit_on(repo, "release", {"release.txt": "the user's own commit\n"})
    before = snapshot(repo)
    with pytest.raises(job_refs.MergeRefused, match="not a fast-forward") as refused:
        job_refs.advance(repo, "release", result)
    assert refused.value.command == f"git switch release && git merge {result}"
    assert snapshot(repo) == before and git(repo, "rev-parse", "release").strip() == own


def test_advance_refuses_a_checked_out_branch_in_a_dirty_tree(repo: Path) -> None:
    result = result_of_w1(repo)
    before = snapshot(repo)
    with pytest.raises(job_refs.MergeRefused, match="uncommitted changes") as refused:
        job_refs.advance(repo, "main", result)
    assert refused.value.command == f"git -C '{repo}' merge --ff-only {result}"  # the path has a space
    assert snapshot(repo) == before


def test_advance_fast_forwards_a_checked_out_branch_in_a_clean_tree(repo: Path, tmp_path: Path) -> None:
    # The branch is checked out in a second worktree of the repository, which is clean.
    tree = tmp_path / "second tree"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(tree), "main")
    result = result_of_w1(repo)
    before = snapshot(repo)
    assert "fast-forwarded feature" in job_refs.advance(repo, "feature", result)
    assert (tree / "w1.txt").read_text() == "w1\n"
    assert git(tree, "status", "--porcelain") == "" and git(tree, "rev-parse", "HEAD").strip() == result
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if k != "refs"} == {k: v for k, v in before.items() if k != "refs"}


# -- deleting a job's refs ------------------------------------------------------------------------


def test_delete_job_refs_removes_only_the_jobs_branches(repo: Path, tmp_path: Path) -> None:
    result_of_w1(repo)
    for outside in (f"{PREFIX}{ID}0/w1", f"{PREFIX}job/w1", f"{PREFIX}{ID}-x", "job1/w1"):
        git(repo, "branch", outside, "main")
    git(repo, "worktree", "add", "-q", str(tmp_path / "busy"), f"{PREFIX}{ID}/w4")
    before = snapshot(repo)
    gone = job_refs.delete_job_refs(repo, PREFIX, ID)
    assert snapshot(repo) == before  # the snapshot leaves the prefix out: everything else is the same
    assert set(gone.deleted) == {f"refs/heads/{PREFIX}{ID}/{w}" for w in ("w1", "w2", "w3")}
    assert gone.kept == (RESULT,) and gone.checked_out == (f"refs/heads/{PREFIX}{ID}/w4",)
    left = git(repo, "for-each-ref", "--format=%(refname)", f"refs/heads/{PREFIX}").split()
    assert sorted(left) == sorted(
        [
            RESULT,
            f"refs/heads/{PREFIX}{ID}/w4",
            f"refs/heads/{PREFIX}{ID}0/w1",
            f"refs/heads/{PREFIX}job/w1",
            f"refs/heads/{PREFIX}{ID}-x",
        ]
    )
    assert job_refs.delete_job_refs(repo, PREFIX, ID, keep_result=False).deleted == (RESULT,)


# -- a crash in the middle of a merge -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("disjoint", [False, True], ids=["per-branch", "disjoint"])
def test_kill_9_between_merge_tree_and_update_ref_leaves_no_ref_and_the_merge_runs_again(repo: Path, disjoint: bool) -> None:
    if disjoint:
        for worker in ("w1", "w2", "w3"):
            commit_on(repo, f"{PREFIX}{ID}/{worker}", {f"{worker}.txt": worker})
    else:
        conflicting(repo)
    before = snapshot(repo)
    script = (
        "import sys\nfrom orchestrator.git import merging\n"
        "merging.merge_branches(sys.argv[1], merging.MergeRequest('main', "
        f"[('w1', '{PREFIX}{ID}/w1'), ('w2', '{PREFIX}{ID}/w2'), ('w3', '{PREFIX}{ID}/w3')], 'theirs', prefix='{PREFIX}', root_id='{ID}'))\n"
    )
    env = {**os.environ, protocol.FAILPOINTS: "merge_before_update_ref=1"}
    done = subprocess.run([sys.executable, "-c", script, str(repo)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    assert run_git(repo, "rev-parse", "--verify", "-q", RESULT, check=False).returncode != 0
    assert not list((repo / ".git").rglob("*.lock"))
    assert snapshot(repo) == before
    outcome = merge(repo, "theirs", "w1", "w2", "w3")
    assert git(repo, "rev-parse", RESULT).strip() == outcome.result_commit and outcome.merged == ("w1", "w2", "w3")
    assert merge(repo, "theirs", "w1", "w2", "w3") == outcome  # and once more: the same, no error


def test_the_snapshot_sees_each_kind_of_change(repo: Path) -> None:
    """The checker itself: each thing the safety tests promise is unchanged is seen when it changes."""
    changes = [
        lambda: (repo / "dir with space" / "notes.txt").write_text("changed\n"),
        lambda: (repo / ".env").write_text("SECRET=2\n"),
        lambda: git(repo, "add", "story.txt"),
        lambda: git(repo, "stash", "drop", "-q"),
        lambda: git(repo, "tag", "-f", "v1", "HEAD~1"),
        lambda: git(repo, "checkout", "-q", "--detach"),
    ]
    for change in changes:
        before = snapshot(repo)
        change()
        assert snapshot(repo) != before


def test_a_stale_lock_from_a_crash_is_named_and_nothing_moves(repo: Path) -> None:
    """A git killed inside update-ref leaves ``<ref>.lock``: the merge says so instead of guessing."""
    commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n"})
    lock = repo / ".git" / "refs" / "heads" / PREFIX / ID / "result.lock"
    lock.write_text("")
    with pytest.raises(job_refs.RefMoved, match="stale lock file"):
        merge(repo, "auto", "w1")
    assert run_git(repo, "rev-parse", "--verify", "-q", RESULT, check=False).returncode != 0
    lock.unlink()
    assert merge(repo, "auto", "w1").merged == ("w1",)


def fast_path_taken(repo: Path, *workers: str) -> bool:
    base = git(repo, "rev-parse", "main").strip()
    oids = [git(repo, "rev-parse", b).strip() for _, b in branches(*workers)]
    commits = [(w, b, c) for (w, b), c in zip(branches(*workers), oids)]
    files = merging.changed_files(repo, base, oids)
    sources = {w: Source(w, b, c) for w, b, c in commits}
    objects = gitobjects.loose_objects(repo)
    chain = merging._Chain(ID, "auto", sources, None, ORCHESTRATOR, "1 +0000")
    return merging._disjoint_merge(repo, base, commits, files, chain, objects=lambda: objects) is not None


def test_disjoint_changes_take_the_fast_path_with_the_same_commits_as_the_loop(repo: Path) -> None:
    commit_on(repo, f"{PREFIX}{ID}/w1", {"story.txt": lines_with({3: "w1"}), 'odd "name"\tx.txt': "w1\n"})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"dir with space/notes.txt": None, "dir with space/more.txt": "w2\n"})
    commit_on(repo, f"{PREFIX}{ID}/w3", {"w3/deep/file.txt": "w3\n"})
    assert fast_path_taken(repo, "w1", "w2", "w3", "w4")
    before = snapshot(repo)
    fast = merging.merge_branches(
        repo, merging.MergeRequest("main", branches("w1", "w2", "w3", "w4"), "auto", prefix=PREFIX, root_id="fast")
    )
    slow = merging.merge_branches(
        repo,
        merging.MergeRequest("main", branches("w1", "w2", "w3", "w4"), "auto", prefix=PREFIX, root_id="slow", fast_path=False),
    )
    assert snapshot(repo) == before
    assert fast.merged == slow.merged and fast.unchanged == slow.unchanged == ("w4",)

    def chain(ref: str) -> list[tuple[str, ...]]:  # each merge: its tree, the branch merged, the author and date
        fmt = "%T %P %an %at"
        return [
            tuple(line.split()[:1] + line.split()[2:])
            for line in git(repo, "log", "--first-parent", f"--format={fmt}", ref).splitlines()
        ]

    assert chain(f"{PREFIX}fast/result") == chain(f"{PREFIX}slow/result")
    assert show(repo, f"{PREFIX}fast/result", 'odd "name"\tx.txt') == "w1\n"
    assert git(repo, "rev-list", "--merges", f"{PREFIX}fast/result") == ""  # one squashed commit per worker
    assert len(git(repo, "rev-list", f"main..{PREFIX}fast/result").split()) == 3


@pytest.mark.parametrize("writer", ["python", "git"])
def test_disjoint_branches_write_loose_objects_and_keep_no_pack_however_many_objects(
    repo: Path, writer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disjoint branches' objects go loose, whoever writes them: Python in a plain repository,
    else git (merge-tree and hash-object, branch by branch); no pack is made or kept."""
    if writer == "git":
        monkeypatch.setattr(merging, "loose_objects", lambda repo: None)
    for worker in ("w1", "w2", "w3", "w4"):  # 4 merges of 40 new folders each: ~170 new objects
        commit_on(repo, f"{PREFIX}{ID}/{worker}", {f"{worker}/d{k}/f.txt": f"{worker} {k}\n" for k in range(40)})
    packs = repo / ".git" / "objects" / "pack"
    before = sorted(packs.iterdir()) if packs.exists() else []
    outcome = merge(repo, "auto", "w1", "w2", "w3", "w4")
    assert outcome.merged == ("w1", "w2", "w3", "w4") and not outcome.conflicts
    assert (sorted(packs.iterdir()) if packs.exists() else []) == before
    assert show(repo, RESULT, "w4/d39/f.txt") == "w4 39\n"
    assert git(repo, "fsck", "--connectivity-only", "--no-dangling").strip() == ""


def test_overlapping_or_foreign_branches_are_merged_one_by_one(repo: Path) -> None:
    # A file and a folder of the same name on two branches: a conflict, not a silent mix.
    commit_on(repo, f"{PREFIX}{ID}/w1", {"thing": "a file\n"})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"thing/inside.txt": "a folder\n"})
    assert not fast_path_taken(repo, "w1", "w2")
    outcome = merge(repo, "auto", "w1", "w2")
    assert outcome.merged == ("w1",) and outcome.skipped == ("w2",) and outcome.conflicts
    # A branch made before the base's last commit: merged from its own merge base, so the base's
    # newer files stay (the union of diffs against the base would delete them).
    git(repo, "branch", "-f", f"{PREFIX}{ID}/w3", "main~1")
    commit_on(repo, f"{PREFIX}{ID}/w3", {"w3.txt": "w3\n"})
    assert not fast_path_taken(repo, "w3")
    outcome = merge(repo, "auto", "w3")
    names = git(repo, "ls-tree", "-r", "--name-only", RESULT).splitlines()
    assert "w3.txt" in names and "other.txt" in names and "dir with space/notes.txt" in names


def test_theirs_with_a_file_and_a_folder_of_one_name_and_a_submodule_pointer(repo: Path) -> None:
    """Conflicts merge-file cannot merge: a file against a folder, two submodule commits. The
    later side wins whole (hunks: 1); the merge does not fail."""
    sub = git(repo, "rev-parse", "main").strip()
    commit_on(repo, f"{PREFIX}{ID}/w1", {"thing": "a file\n"})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"thing/inside.txt": "a folder\n"})
    index = repo.parent / "index-sub"
    for worker, target in (("w3", sub), ("w4", git(repo, "rev-parse", "main~1").strip())):
        branch = f"{PREFIX}{ID}/{worker}"
        env = {"GIT_INDEX_FILE": str(index)}
        git(repo, "read-tree", branch, env=env)
        git(repo, "update-index", "--add", "--cacheinfo", f"160000,{target},vendor/lib", env=env)
        tree = git(repo, "write-tree", env=env).strip()
        commit = git(repo, "commit-tree", tree, "-p", branch, input="submodule").strip()
        git(repo, "update-ref", f"refs/heads/{branch}", commit)
    before = snapshot(repo)
    outcome = merge(repo, "theirs", "w1", "w2", "w3", "w4")
    assert snapshot(repo) == before
    assert outcome.merged == ("w1", "w2", "w3", "w4")
    assert show(repo, RESULT, "thing/inside.txt") == "a folder\n"
    assert git(repo, "ls-tree", RESULT, "vendor/lib").split()[:3] == [
        "160000",
        "commit",
        git(repo, "rev-parse", "main~1").strip(),
    ]
    assert [(c.path, c.workers, c.hunks, c.kind, c.resolved_by) for c in outcome.conflicts] == [
        ("thing", ("w1", "w2"), 1, "file/folder", "w2"),  # the later side (the folder) won; w1's file is not in the result
        ("vendor/lib", ("w3", "w4"), 1, "add/add", "w4"),
    ]
    assert [n for n in git(repo, "ls-tree", "-r", "--name-only", RESULT).splitlines() if n.startswith("thing")] == [
        "thing/inside.txt"
    ]


def test_an_outcome_survives_its_record_round_trip(repo: Path) -> None:
    """The job record stores ``MergeOutcome.to_dict()`` as JSON; reading it back gives the same outcome."""
    import json

    outcome = merging.MergeOutcome(
        "theirs",
        "a" * 40,
        "refs/heads/orchestrator/r/result",
        "b" * 40,
        ("depth_0_worker_1", "depth_0_worker_2"),
        (),
        (merging.FileConflict("app.py", ("depth_0_worker_1", "depth_0_worker_2"), 2, "content", "depth_0_worker_2"),),
        (merging.WorkerChanges("depth_0_worker_1", "orchestrator/r/depth_0_worker_1", "c" * 40, ("app.py",)),),
        "git merge orchestrator/r/result",
        ("depth_0_worker_2",),
    )
    assert merging.MergeOutcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome


def test_a_merge_into_a_worker_s_branch_moves_only_that_ref_and_never_one_outside_the_prefix(repo: Path) -> None:
    # A child job's merge (nesting.py): its workers' branches into the parent worker's branch.
    before = snapshot(repo)
    commit_on(repo, f"{PREFIX}{ID}/w2", {"two.txt": "two\n"})
    commit_on(repo, f"{PREFIX}{ID}/w3", {"three.txt": "three\n"})
    parent = f"refs/heads/{PREFIX}{ID}/w1"
    start = git(repo, "rev-parse", parent).strip()
    out = merging.merge_branches(
        repo, merging.MergeRequest(parent, branches("w2", "w3"), "auto", prefix=PREFIX, root_id=ID, target=parent)
    )
    tip = git(repo, "rev-parse", parent).strip()
    assert out.result_ref == parent and out.result_commit == tip != start and out.merged == ("w2", "w3")
    assert git(repo, "log", "-1", "--format=%s", tip).strip() == f"The work of w3 on {PREFIX}{ID}/w3"
    assert f"merged into {PREFIX}{ID}/w1 as one commit" in git(repo, "log", "-1", "--format=%b", tip)
    assert show(repo, parent, "two.txt") == "two\n" and show(repo, parent, "three.txt") == "three\n"
    assert run_git(repo, "rev-parse", "--verify", "-q", RESULT, check=False).returncode != 0  # no result branch made
    with pytest.raises(ValidationError, match="only branches under"):
        merging.merge_branches(
            repo, merging.MergeRequest("main", branches("w2"), "auto", prefix=PREFIX, root_id=ID, target="main")
        )
    assert snapshot(repo) == before


def integrate(repo: Path, strategy: str, worker: str) -> merging.Integrated:
    branch = f"{PREFIX}{ID}/{worker}"
    commit = git(repo, "rev-parse", branch).strip()
    source = Source(worker, branch, commit)
    return merging.integrate(repo, f"{PREFIX}{ID}/result", "main", source, strategy, prefix=PREFIX, root_id=ID)


def test_integration_squashes_each_worker_and_is_idempotent(repo: Path) -> None:
    # A graph job's workers merged one by one into the integration branch as they pass,
    # each as one commit on the branch (never a fast-forward to the worker's own history).
    before = snapshot(repo)
    main = git(repo, "rev-parse", "main").strip()
    commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n"}, message="a first try")
    w1 = commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n", "fix.txt": "fixed\n"})
    first = integrate(repo, "auto", "w1")
    assert first.merged and first.commit == git(repo, "rev-parse", RESULT).strip() != w1
    assert git(repo, "rev-parse", f"{RESULT}^@").split() == [main]  # one parent: the worker's commits are not in its history
    assert git(repo, "rev-parse", f"{RESULT}^{{tree}}") == git(repo, "rev-parse", f"{w1}^{{tree}}")
    assert integrate(repo, "auto", "w1").commit == first.commit  # already in (its trailer says so): nothing moves
    commit_on(repo, f"{PREFIX}{ID}/w2", {"w2.txt": "w2\n"})  # w2 branched from main, before w1's merge
    second = integrate(repo, "auto", "w2")
    assert second.merged and git(repo, "rev-parse", f"{RESULT}^@").split() == [first.commit]
    assert show(repo, RESULT, "w1.txt") == "w1\n" and show(repo, RESULT, "w2.txt") == "w2\n"
    again = integrate(repo, "auto", "w2")  # already in: nothing moves
    assert again.merged and again.commit == second.commit == git(repo, "rev-parse", RESULT).strip()
    assert snapshot(repo) == before


@pytest.mark.parametrize("strategy", ["auto", "theirs"])
def test_an_integration_conflict_leaves_the_branch_under_auto_and_takes_the_workers_side_under_theirs(
    repo: Path, strategy: str
) -> None:
    before = snapshot(repo)
    conflicting(repo)
    integrate(repo, strategy, "w2")
    tip = git(repo, "rev-parse", RESULT).strip()
    done = integrate(repo, strategy, "w3")
    assert [c.path for c in done.conflicts] == ["story.txt"]
    if strategy == "auto":
        assert not done.merged and done.commit == tip == git(repo, "rev-parse", RESULT).strip()
    else:
        assert done.merged and done.conflicts[0].resolved_by == "w3"
        assert "w3 two" in show(repo, RESULT, "story.txt") and "w2 ten" in show(repo, RESULT, "story.txt")
    assert snapshot(repo) == before


def test_a_commit_subject_is_under_72_characters_and_cut_at_a_word_s_end() -> None:
    assert subject_line("  fix   the\nparser. ") == "fix the parser"  # one line, spaces folded, no closing period
    text = "Add thousands separators to intcomma and its docs in src/humanize/number.py, then the locales"
    cut = subject_line(text)
    assert cut == "Add thousands separators to intcomma and its docs in…"  # not ".../numb"
    assert len(cut) < 72 and text.startswith(cut[:-1]) and text[len(cut) - 1] == " "
    # Dropping the long word would leave little: it is cut after a separator inside it instead.
    path = "Refactor src/humanize/number_formatting_helpers_for_every_locale_we_ship.py and its tests"
    assert subject_line(path) == "Refactor src/humanize/number_formatting_helpers_for_every_locale_we_…"
    assert subject_line("short " + "y" * 100) == "short…"  # a word with no separator is dropped whole
    assert subject_line("x" * 100) == "x" * 70 + "…"  # one word and nothing else: cut where it must
    assert all(len(subject_line(t)) < 72 for t in (text, path, "x" * 100, "a " * 40))


@pytest.mark.parametrize("fast_path", [True, False])
def test_result_commits_are_by_the_user_and_credit_the_ai_that_did_the_work(repo: Path, fast_path: bool) -> None:
    git(repo, "config", "user.name", "Ada Lovelace")
    git(repo, "config", "user.email", "ada@example.org")
    commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n"})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"w2.txt": "w2\n"})
    before = snapshot(repo)
    credits = {"w1": "Codex (o3) <noreply@openai.com>", "w2": None}  # w2: a command worker's
    outcome = merging.merge_branches(
        repo,
        merging.MergeRequest(
            "main", branches("w1", "w2"), "auto", prefix=PREFIX, root_id=ID, fast_path=fast_path, credits=credits
        ),
    )
    assert outcome.merged == ("w1", "w2") and snapshot(repo) == before
    sep = "separator=%x2C"
    fmt = (
        f"%an <%ae> %cn <%ce>|%(trailers:key=Orchestrator-Worker,valueonly,{sep})|%(trailers:key=Co-authored-by,valueonly,{sep})"
    )
    made = git(repo, "log", "--reverse", f"--format={fmt}", f"main..{RESULT}").splitlines()
    assert made == [
        "Ada Lovelace <ada@example.org> Ada Lovelace <ada@example.org>|w1|Codex (o3) <noreply@openai.com>",
        "Ada Lovelace <ada@example.org> Ada Lovelace <ada@example.org>|w2|",
    ]
    # An integration branch's squashed commit too (a graph job's, as its worker passes)
    commit = git(repo, "rev-parse", f"{PREFIX}{ID}/w1").strip()
    source = Source("w1", f"{PREFIX}{ID}/w1", commit, "write w1.txt", "Codex (o3) <noreply@openai.com>")
    done = merging.integrate(repo, f"{PREFIX}{ID}/graph", "main", source, "auto", prefix=PREFIX, root_id=ID)
    message = git(repo, "log", "-1", "--format=%an <%ae>%n%B", done.commit or "")
    assert message.startswith("Ada Lovelace <ada@example.org>\nwrite w1.txt\n")
    assert message.endswith(
        "Orchestrator-Worker: w1\nOrchestrator-Strategy: auto\n"
        f"Orchestrator-Commit: {commit}\nCo-authored-by: Codex (o3) <noreply@openai.com>\n\n"
    )


def test_a_graph_jobs_integration_branch_made_by_an_older_version_still_counts_its_workers_as_merged(repo: Path) -> None:
    # Older versions merged each worker into the integration branch with a merge commit (two
    # parents, no Orchestrator-Commit trailer): its worker is in the branch by ancestry.
    w1 = commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n"})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"w2.txt": "w2\n"})
    main = git(repo, "rev-parse", "main").strip()
    tree = git(repo, "rev-parse", f"{w1}^{{tree}}").strip()
    old = git(repo, "commit-tree", tree, "-p", main, "-p", w1, input="orchestrator: merge worker w1\n\nOrchestrator-Worker: w1\n")
    git(repo, "update-ref", RESULT, old.strip())
    before = snapshot(repo)
    outcome = merging.merge_branches(
        repo, merging.MergeRequest("main", branches("w1", "w2"), "auto", prefix=PREFIX, root_id=ID, onto=RESULT)
    )
    assert outcome.merged == ("w1", "w2") and outcome.unchanged == ()
    assert git(repo, "rev-parse", f"{RESULT}~1").strip() == old.strip()  # w2 squashed onto it; w1 not again
    assert snapshot(repo) == before


def test_the_loop_writes_the_commits_commit_tree_makes_with_one_process(repo: Path) -> None:
    """The per-branch loop writes its commits through one ``hash-object --stdin-paths`` process:
    byte for byte those ``commit-tree`` makes, whatever the identity and the message."""
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    parent = git(repo, "rev-parse", "HEAD").strip()
    writer = gitobjects.CommitWriter(repo)
    identities = [ORCHESTRATOR, Identity("Zoë Ünïcode", "z@x"), Identity("A. B", "a.b+c@example.com")]
    messages = ["one line", "no newline", "subject ✓\n\nbody\n\nOrchestrator-Commit: x\nCo-authored-by: A <a@b>\n", "\n\nx  \n\n"]
    for who in identities:
        for message in messages:
            made = writer.commit(tree, parent, message, "1700000000 +0000", who)
            assert made == commit_tree(repo, tree, parent, message, "1700000000 +0000", who)
    writer.close()
    assert writer.process is None and writer.scratch is None
    assert git(repo, "fsck", "--connectivity-only", "--no-dangling").strip() == ""


def test_the_loop_writes_its_commits_in_python_byte_for_byte_as_commit_tree(repo: Path) -> None:
    """Where the repository is plain (sha1, no shared modes, no fsync), the loop's commits are
    written by Python as loose objects: the ids and objects ``commit-tree`` makes, the user's
    identity as ``git var`` tells it, unicode in it and in the message; fsck finds nothing wrong."""
    git(repo, "config", "user.name", "Zoë Ünïcode")
    git(repo, "config", "user.email", "zoe@example.org")
    user = identity_of(repo)  # from git var
    assert user == Identity("Zoë Ünïcode", "zoe@example.org")
    objects = gitobjects.loose_objects(repo)
    assert objects == repo / ".git" / "objects"
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    parent = git(repo, "rev-parse", "HEAD").strip()
    writer = gitobjects.CommitWriter(repo, objects=lambda: objects)
    messages = ["one line", "subject ✓ — ünïcode\n\nbody\n\nOrchestrator-Commit: x\nCo-authored-by: A <a@b>\n", "\n\nx  \n\n"]
    for who in (user, ORCHESTRATOR):
        for message in messages:
            writer.start()  # as while a merge runs: the next object's file made beforehand
            made = writer.commit(tree, parent, message, "1700000000 +0000", who)
            path = objects / made[:2] / made[2:]
            assert path.is_file() and path.stat().st_mode & 0o777 == 0o444 & ~current_umask()
            assert git(repo, "cat-file", "-t", made).strip() == "commit"
            assert made == commit_tree(repo, tree, parent, message, "1700000000 +0000", who)  # git: the same id
            assert writer.commit(tree, parent, message, "1700000000 +0000", who) == made  # there already
    writer.start()
    writer.close()
    assert writer.process is None and not list(objects.glob("tmp_obj_*")) and not list(objects.glob("*/tmp_obj_*"))
    assert git(repo, "fsck", "--strict", "--no-dangling").strip() == ""


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "config",
    [
        {"core.sharedRepository": "group"},
        {"core.fsync": "loose-object"},
        {"core.fsyncObjectFiles": "true"},
        {"core.looseCompression": "9"},
        {"core.createObject": "link"},
        {"extensions.unknown": "x"},
    ],
)
def test_git_writes_the_commits_where_the_repository_is_not_plain(repo: Path, config: dict[str, str]) -> None:
    for key, value in config.items():
        git(repo, "config", key, value)
    assert gitobjects.loose_objects(repo) is None


def test_the_loop_writes_in_the_common_objects_folder_from_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "linked"), "main")
    assert gitobjects.loose_objects(tmp_path / "linked") == (repo / ".git" / "objects").resolve()
    git(repo, "worktree", "remove", "--force", str(tmp_path / "linked"))


def python_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the objects Python writes from now on (``LooseObjects.write``, recorded)."""
    written: list[str] = []
    real_write = gitobjects.LooseObjects.write

    def write(self: gitobjects.LooseObjects, kind: str, body: bytes) -> str:
        written.append(real_write(self, kind, body))
        return written[-1]

    monkeypatch.setattr(gitobjects.LooseObjects, "write", write)
    return written


def test_a_merge_whose_commits_python_writes_makes_the_commits_git_would(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commit_on(repo, f"{PREFIX}{ID}/w1", {"story.txt": lines_with({3: "w1"})})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"story.txt": lines_with({3: "w1", 9: "w2"})})
    commit_on(repo, f"{PREFIX}{ID}/w3", {"w3.txt": "w3\n"})
    git(repo, "config", "user.name", "Zoë Ünïcode")
    before = snapshot(repo)
    tasks = {"w1": "Write ✓ the story", "w2": "Sign — it"}
    written = python_writes(monkeypatch)
    python = merging.merge_branches(
        repo,
        merging.MergeRequest(
            "main", branches("w1", "w2", "w3", "w4"), "auto", prefix=PREFIX, root_id=ID, fast_path=False, tasks=tasks
        ),
    )
    assert len(written) == 3 and written[-1] == python.result_commit  # by Python, not by git
    assert not list((repo / ".git" / "objects").glob("**/tmp_obj_*"))
    assert git(repo, "fsck", "--strict", "--no-dangling").strip() == ""
    git(repo, "update-ref", "-d", RESULT)
    monkeypatch.setattr(merging, "loose_objects", lambda repo: None)  # git writes them: hash-object
    by_git = merging.merge_branches(
        repo,
        merging.MergeRequest(
            "main", branches("w1", "w2", "w3", "w4"), "auto", prefix=PREFIX, root_id=ID, fast_path=False, tasks=tasks
        ),
    )
    assert python == by_git and python.merged == ("w1", "w2", "w3") and python.unchanged == ("w4",)
    assert git(repo, "rev-parse", RESULT).strip() == python.result_commit
    assert git(repo, "log", "-1", "--format=%an", RESULT).strip() == "Zoë Ünïcode"
    assert snapshot(repo) == before


def test_in_a_sha256_repository_git_writes_the_commits(tmp_path: Path) -> None:
    root = tmp_path / "sha256"
    root.mkdir()
    git(root, "init", "-q", "-b", "main", "--object-format=sha256")
    (root / "a.txt").write_text("a\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    assert gitobjects.loose_objects(root) is None
    tree = git(root, "rev-parse", "HEAD^{tree}").strip()
    parent = git(root, "rev-parse", "HEAD").strip()
    writer = gitobjects.CommitWriter(root, objects=lambda: gitobjects.loose_objects(root))
    writer.start()
    assert writer.process is not None  # git's hash-object
    made = writer.commit(tree, parent, "ünïcode ✓\n", "1700000000 +0000", ORCHESTRATOR)
    writer.close()
    assert len(made) == 64 and made == commit_tree(root, tree, parent, "ünïcode ✓\n", "1700000000 +0000", ORCHESTRATOR)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("strategy", ["auto", "theirs"])
def test_a_sha256_repository_merges_and_its_result_ref_moves(tmp_path: Path, strategy: str, fast_path: bool) -> None:
    # Given a sha256 repository and three workers' branches, two of them changing the same line
    root = tmp_path / "sha256"
    root.mkdir()
    git(root, "init", "-q", "-b", "main", "--object-format=sha256")
    (root / "a.txt").write_text("a\n")
    (root / "gone.txt").write_text("x\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    for worker, change in (("w1", "b.txt"), ("w2", "a.txt"), ("w3", "a.txt")):
        git(root, "checkout", "-q", "-b", f"{PREFIX}{ID}/{worker}", "main")
        (root / change).write_text(f"{worker}\n")
        if worker == "w3":
            git(root, "rm", "-q", "gone.txt")
        git(root, "add", ".")
        git(root, "commit", "-qm", worker)
    git(root, "checkout", "-q", "main")
    # When they are merged (a conflict: auto stops at it, theirs takes the later side)
    done = merging.merge_branches(
        root, merging.MergeRequest("main", branches("w1", "w2", "w3"), strategy, prefix=PREFIX, root_id=ID, fast_path=fast_path)
    )
    # Then the result ref holds a 64-character id, and what was merged is in it
    tip = git(root, "rev-parse", RESULT).strip()
    assert len(tip) == 64 and tip == done.result_commit
    assert git(root, "show", f"{RESULT}:b.txt") == "w1\n"
    expected = ("w1", "w2") if strategy == "auto" else ("w1", "w2", "w3")
    assert done.merged == expected
    if strategy == "theirs":
        assert git(root, "show", f"{RESULT}:a.txt") == "w3\n"
        assert "gone.txt" not in git(root, "ls-tree", "--name-only", RESULT).split()
    git(root, "fsck", "--strict")


def commit_entries(repo: Path, branch: str, entries: dict[str, tuple[str, str] | None]) -> str:
    """Commit ``entries`` (path -> (mode, content); None deletes) on ``branch``, any mode."""
    index = repo.parent / f"index-{os.getpid()}-{branch.replace('/', '_')}"
    env = {"GIT_INDEX_FILE": str(index)}
    parent = git(repo, "rev-parse", branch).strip()
    git(repo, "read-tree", parent, env=env)
    for path, entry in entries.items():
        if entry is None:
            git(repo, "update-index", "--force-remove", "-z", "--stdin", env=env, input=path + "\0")
        else:
            blob = git(repo, "hash-object", "-w", "--stdin", input=entry[1]).strip()
            git(repo, "update-index", "--add", "-z", "--index-info", env=env, input=f"{entry[0]} {blob}\t{path}\0")
    tree = git(repo, "write-tree", env=env).strip()
    index.unlink()
    commit = git(repo, "commit-tree", tree, "-p", parent, input="work").strip()
    git(repo, "update-ref", f"refs/heads/{branch}", commit, parent)
    return commit


def test_the_fast_path_writes_in_python_the_objects_git_writes(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disjoint branches in a plain repository: trees and commits written by Python, the same ids
    as git's (merge-tree and hash-object, branch by branch) for the same chain (new nested folders, a folder emptied and removed, modes,
    names git orders specially, unicode), and the same as the per-branch loop's trees."""
    commit_on(repo, "main", {"gone/only.txt": "x\n", "a-b": "file\n", "a/keep.txt": "k\n", "deep/x/y/z.txt": "z\n"})
    for worker in ("w1", "w2", "w3", "w4"):
        git(repo, "update-ref", f"refs/heads/{PREFIX}{ID}/{worker}", "main")
    commit_entries(
        repo, f"{PREFIX}{ID}/w1", {"gone/only.txt": None, "a/new.txt": ("100755", "run\n"), "a.txt": ("100644", "a\n")}
    )
    commit_entries(
        repo,
        f"{PREFIX}{ID}/w2",
        {"new/deeper/still/f.txt": ("100644", "n\n"), "link": ("120000", "a-b"), "a0": ("100644", "0\n")},
    )
    commit_entries(
        repo, f"{PREFIX}{ID}/w3", {"deep/x/y/z.txt": None, "deep/x/w.txt": ("100644", "w\n"), "ünï côde.txt": ("100644", "u\n")}
    )
    commit_entries(
        repo, f"{PREFIX}{ID}/w4", {"dir with space/notes.txt": ("100755", "notes\n"), 'odd "q"\tt.txt': ("100644", "q\n")}
    )
    workers = ("w1", "w2", "w3", "w4")
    assert fast_path_taken(repo, *workers)
    before = snapshot(repo)
    written = python_writes(monkeypatch)
    python = merging.merge_branches(repo, merging.MergeRequest("main", branches(*workers), "auto", prefix=PREFIX, root_id="py"))
    assert written and written[-1] == python.result_commit  # by Python, not by git
    assert not list((repo / ".git" / "objects").glob("**/tmp_obj_*"))  # the files made beforehand: all taken or removed
    assert git(repo, "fsck", "--strict", "--no-dangling").strip() == ""
    monkeypatch.setattr(merging, "loose_objects", lambda repo: None)
    git(repo, "update-ref", "-d", f"refs/heads/{PREFIX}py/result")
    again = merging.merge_branches(
        repo, merging.MergeRequest("main", branches(*workers), "auto", prefix=PREFIX, root_id="py")
    )  # by git
    assert again == python and python.merged == workers
    loop = merging.merge_branches(
        repo, merging.MergeRequest("main", branches(*workers), "auto", prefix=PREFIX, root_id="loop", fast_path=False)
    )

    def trees(ref: str) -> list[str]:
        return git(repo, "log", "--first-parent", "--format=%T", ref).split()

    assert trees(f"{PREFIX}py/result") == trees(f"{PREFIX}loop/result")
    assert loop.result_commit and show(repo, loop.result_commit, "a/new.txt") == "run\n"
    assert git(repo, "ls-tree", "--name-only", f"{PREFIX}py/result").split().count("gone") == 0
    assert snapshot(repo) == before


@pytest.mark.parametrize("fast_path", [True, False])
def test_where_python_cannot_write_git_writes_the_same_commits(
    repo: Path, monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    commit_on(repo, f"{PREFIX}{ID}/w1", {"w1.txt": "w1\n"})
    commit_on(repo, f"{PREFIX}{ID}/w2", {"w2.txt": "w2\n"})
    python = merging.merge_branches(
        repo, merging.MergeRequest("main", branches("w1", "w2"), "auto", prefix=PREFIX, root_id=ID, fast_path=fast_path)
    )
    git(repo, "update-ref", "-d", RESULT)

    def refused(self: gitobjects.LooseObjects) -> tuple[int, Path]:
        raise PermissionError(13, "Permission denied", str(self.objects))

    monkeypatch.setattr(gitobjects.LooseObjects, "_new", refused)
    by_git = merging.merge_branches(
        repo, merging.MergeRequest("main", branches("w1", "w2"), "auto", prefix=PREFIX, root_id=ID, fast_path=fast_path)
    )
    assert by_git == python and git(repo, "rev-parse", RESULT).strip() == python.result_commit
    assert git(repo, "fsck", "--strict", "--no-dangling").strip() == ""


def test_a_loop_that_fails_midway_moves_no_ref_and_leaves_no_process(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for worker in ("w1", "w2", "w3"):
        commit_on(repo, f"{PREFIX}{ID}/{worker}", {f"{worker}.txt": worker})
    before = snapshot(repo)
    started: list[subprocess.Popen[Any]] = []
    real_start, real_merge = merging._ChainedMerges._start, merging._ChainedMerges.merge

    def start(self: merging._ChainedMerges) -> subprocess.Popen[str]:
        started.append(real_start(self))
        return started[-1]

    def merge(self: merging._ChainedMerges, ours: str, theirs: str, more: bool) -> Any:
        if len(started) > 2:
            raise RuntimeError("failed midway")
        return real_merge(self, ours, theirs, more)

    monkeypatch.setattr(merging._ChainedMerges, "_start", start)
    monkeypatch.setattr(merging._ChainedMerges, "merge", merge)
    with pytest.raises(RuntimeError, match="failed midway"):
        merging.merge_branches(
            repo, merging.MergeRequest("main", branches("w1", "w2", "w3"), "auto", prefix=PREFIX, root_id=ID, fast_path=False)
        )
    assert snapshot(repo) == before
    assert run_git(repo, "rev-parse", "--verify", "-q", RESULT, check=False).returncode != 0
    assert started and all(process.poll() is not None for process in started)
    monkeypatch.undo()
    outcome = merging.merge_branches(
        repo, merging.MergeRequest("main", branches("w1", "w2", "w3"), "auto", prefix=PREFIX, root_id=ID, fast_path=False)
    )
    assert outcome.merged == ("w1", "w2", "w3")
