"""The result gate's checkout, reused between the candidates of one search (delivery/result_gate.py):
made once, moved to each next candidate in the workers' sandbox, and nothing a gate left there
(untracked or ignored files, a nested repository, its TMPDIR, its index's skip-worktree bit on
an edited file) reaches the next candidate's verdict. Real git, real gate processes, the real
sandbox where the machine has one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.delivery import result_gate
from orchestrator.delivery.result_gate import ResultGate
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.workspace.layout import Workspace

from .helpers.worktree import git, user_env

pytestmark = pytest.mark.slow
ROOT = "a1b2c3d4e5f6"

# Each run first notes what an earlier run left, then leaves all of it again, then judges n.txt.
# A leftover ``ignored/pass`` makes a run pass whatever n.txt says; any other leftover makes it fail.
HOSTILE = r"""
if [ -e ignored/pass ]; then echo "passed by a leftover"; exit 0; fi
bad=""
[ -e leftover ] && bad="$bad leftover"
[ -e sub ] && bad="$bad sub"
[ -n "$(ls -A "$TMPDIR")" ] && bad="$bad tmp"
grep -qx one a.txt || bad="$bad a.txt"
echo x > leftover
mkdir -p ignored sub && echo x > ignored/pass && git -C sub init -q
echo x > "$TMPDIR/junk"
echo two > a.txt && git update-index --skip-worktree a.txt
[ -z "$bad" ] || { echo "Error: left by an earlier run:$bad"; exit 1; }
grep -qx good n.txt || { echo "Error: n.txt is not good"; exit 1; }
"""


def _commit(repo: Path, n: str) -> str:
    (repo / "n.txt").write_text(f"{n}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--no-verify", "-qm", n, env=user_env())
    return git(repo, "rev-parse", "HEAD").strip()


def _gate(tmp_path: Path, backend: str = "auto") -> tuple[ResultGate, list[str]]:
    """A job of one worker whose required gate is :data:`HOSTILE`, run in the sandbox of ``backend``
    (skipped where this machine has none), and three candidate commits: n.txt good, bad, good
    (each a tree of its own)."""
    repo, home = tmp_path / "repo", tmp_path / "home"
    repo.mkdir()
    home.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("one\n")
    (repo / ".gitignore").write_text("ignored/\n")
    for index in range(50):  # files no candidate changes: the reuse leaves them as they are
        (repo / f"same_{index}.txt").write_text(f"{index}\n")
    commits = [_commit(repo, n) for n in ("good", "bad")]
    (repo / "b.txt").write_text("a tree of its own\n")
    commits.append(_commit(repo, "good"))
    settings = load_settings(base_dir=home, environ={}, overrides={"workers": {"sandbox_backend": backend}})
    job = JobRecord(id=ROOT, root_id=ROOT, request="x", status=JobStatus.COMPLETED, worker_names=["w1"])
    job.config = dataclasses.replace(
        job.config, gates=[{"name": "hostile", "run": ["sh", "-c", HOSTILE], "required": True, "timeout": 60}]
    )
    worker = WorkerRecord(ROOT, ROOT, "w1", 1, 0, "task", "command", status=WorkerStatus.SUCCESS)
    gate = ResultGate(settings=settings, workspace=Workspace(home / "workspace"), repo=repo, job=job, workers=[worker])
    spec = gate.confinement.spec_at(ROOT, None, gate.tree, gate.tmp, job.config)
    if spec is None or (backend != "auto" and spec.backend.value != backend):
        pytest.skip(f"no {backend} sandbox on this machine")
    return gate, commits


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_gate_s_leftovers_never_reach_the_next_candidate_s_verdict_in_the_reused_checkout(tmp_path, monkeypatch, backend):
    """Three candidates in one checkout (added once): each gate run leaves an untracked file, an
    ignored one that would make the next run pass, a nested repository, a file in its TMPDIR and an
    edit of a tracked file hidden by the index's skip-worktree bit; each next verdict is the
    candidate's own: pass, fail on n.txt, pass."""
    gate, (good, bad, good_again) = _gate(tmp_path, backend)
    added: list[str] = []
    real_add = result_gate.add_detached_worktree
    monkeypatch.setattr(
        result_gate, "add_detached_worktree", lambda repo, tree, commit: (added.append(commit), real_add(repo, tree, commit))
    )
    try:
        verdicts = [gate.judge(["w1"], commit) for commit in (good, bad, good_again)]
        assert [v.passed for v in verdicts] == [True, False, True], verdicts
        assert verdicts[1].reason == "hostile failed: Error: n.txt is not good"
        assert added == [good]  # one worktree, moved to the next two candidates
        assert git(gate.tree, "rev-parse", "HEAD").strip() == good_again
        assert gate.runs == 3
    finally:
        gate.close()
    assert not gate.tree.exists()
    assert "result_gate/tree" not in git(tmp_path / "repo", "worktree", "list")


def test_a_checkout_whose_pointer_a_gate_changed_is_made_again_not_reused(tmp_path, monkeypatch):
    """A gate that rewrites the worktree's ``.git`` pointer (writable where the sandbox cannot pin it,
    and outside any sandbox) leaves nothing to reuse: the next candidate gets a new worktree, and
    its verdict is its own."""
    gate, (good, bad, _) = _gate(tmp_path)
    added: list[str] = []
    real_add = result_gate.add_detached_worktree
    monkeypatch.setattr(
        result_gate, "add_detached_worktree", lambda repo, tree, commit: (added.append(commit), real_add(repo, tree, commit))
    )
    try:
        assert gate.judge(["w1"], good).passed
        (gate.tree / ".git").chmod(0o644)
        (gate.tree / ".git").write_text(f"gitdir: {tmp_path / 'elsewhere'}\n")
        verdict = gate.judge(["w1"], bad)
        assert not verdict.passed and verdict.reason == "hostile failed: Error: n.txt is not good", verdict
        assert added == [good, bad]
    finally:
        gate.close()
