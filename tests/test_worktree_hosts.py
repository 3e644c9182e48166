"""Hosts of unusual shape for git isolation: a repository with a submodule (issue 12's test list).
What happens is documented in the README ("Work in your repository"): a worker's worktree has
the submodule's folder empty, as ``git worktree add`` leaves it; what a worker writes there is
not committed, stays in its folder, and its log says so; the host and its submodule are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.models import JobStatus, WorkerStatus

from .conftest import run_job
from .test_worktree import git, host_engine, make_host, snapshot, user_env

pytestmark = pytest.mark.slow


def add_submodule(tmp_path: Path, host: Path) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "lib.txt").write_text("lib v1\n")
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "lib", env=user_env())
    git(host, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib", env=user_env())
    git(host, "commit", "-q", "--no-verify", "-m", "add the lib submodule", env=user_env())
    return host / "vendor" / "lib"


def test_a_submodule_is_empty_in_a_worktree_and_what_a_worker_writes_there_is_said_not_lost(tmp_path):
    host, folder = make_host(tmp_path)
    submodule = add_submodule(tmp_path, host)
    gitlink = git(host, "ls-tree", "HEAD", "vendor/lib")
    before = snapshot(host, folder)
    before_sub = (git(submodule, "rev-parse", "HEAD"), git(submodule, "status", "--porcelain"))
    engine = host_engine(folder)
    try:
        script = "ls -A vendor/lib > seen.txt; echo mine > vendor/lib/new.txt; echo ok > app2.py"
        job = run_job(engine, "submodule", tasks=[script])
        assert job.status is JobStatus.COMPLETED
        worker = engine.snapshot(job.root_id)[1][0]
        assert worker.status is WorkerStatus.SUCCESS
        directory = engine.workspace.worker_dir(job.root_id, 0, worker.name)
        assert (directory / "seen.txt").read_text() == ""  # the submodule's folder was empty
        committed = git(host, "ls-tree", "-r", "--name-only", worker.commit).split()
        assert "app2.py" in committed and "seen.txt" in committed
        assert "vendor/lib/new.txt" not in committed
        assert git(host, "ls-tree", worker.commit, "vendor/lib") == gitlink  # the pointer is the host's
        assert sorted(f["path"] for f in worker.files_changed) == ["app2.py", "seen.txt"]
        log = engine.workspace.worker_log(job.root_id, 0, worker.name).read_text()
        assert "not committed: the files written inside submodule 'vendor/lib'" in log
        assert (directory / "vendor" / "lib" / "new.txt").read_text() == "mine\n"  # kept in its folder
    finally:
        engine.shutdown(timeout=10)
    assert snapshot(host, folder) == before
    assert (git(submodule, "rev-parse", "HEAD"), git(submodule, "status", "--porcelain")) == before_sub


def test_the_openapi_document_offers_worktree_only_where_it_is_possible_and_asks_git_once(tmp_path, monkeypatch):
    from orchestrator import worktree
    from orchestrator.api.openapi import openapi_document
    from orchestrator.config import load_settings

    def isolation_enum(folder: Path) -> list[str]:
        document = openapi_document(load_settings(base_dir=folder, environ={}))
        return document["components"]["schemas"]["Orchestrate"]["properties"]["config"]["properties"]["isolation"]["enum"]

    host, folder = make_host(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "worktree" in isolation_enum(folder)
    assert "worktree" not in isolation_enum(plain)
    asked = []
    monkeypatch.setattr(worktree, "resolve_isolation", lambda *args: asked.append(args))
    assert "worktree" in isolation_enum(folder) and "worktree" not in isolation_enum(plain)
    assert asked == []  # answered from the first documents: git is asked once per folder
