"""Hosts of unusual shape for git isolation: a repository with a submodule.
What happens is documented in docs/worktrees.md ("Limits"): a worker's worktree has
the submodule's folder empty, as ``git worktree add`` leaves it; what a worker writes there is
not committed, stays in its folder, and its log says so; the host and its submodule are untouched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.models import JobStatus, WorkerStatus

from .conftest import run_job
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env

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
        worker = engine.queries.snapshot(job.root_id)[1][0]
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
    from orchestrator.api.openapi import openapi_document
    from orchestrator.checkouts import isolated
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
    monkeypatch.setattr(isolated, "resolve_isolation", lambda *args: asked.append(args))
    assert "worktree" in isolation_enum(folder) and "worktree" not in isolation_enum(plain)
    assert asked == []  # answered from the first documents: git is asked once per folder


# -- a folder that is a git clone of the orchestrator ---------------------------------------------

PROJECT = Path(__file__).resolve().parent.parent


def clone_project(into: Path) -> Path:
    """``git clone`` of this project, as users get the folder; where the project is no git
    repository of its own (an unpacked copy), a stand-in one holding its .gitignore is cloned."""
    source = PROJECT
    if not (PROJECT / ".git").exists():
        source = into.parent / "stand-in"
        source.mkdir()
        (source / ".gitignore").write_text((PROJECT / ".gitignore").read_text())
        git(source, "init", "-q", "-b", "main")
        git(source, "add", "-A")
        git(source, "commit", "-qm", "stand-in", env=user_env())
    subprocess.run(["git", "clone", "-q", "--", str(source), str(into)], check=True, capture_output=True)
    return into


def plain_host(tmp_path: Path) -> Path:
    host = tmp_path / "my app"
    host.mkdir()
    git(host, "init", "-q", "-b", "main")
    (host / "app.py").write_text("print('v1')\n")
    git(host, "add", "-A")
    git(host, "commit", "-qm", "one", env=user_env())
    return host


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--list", "orchestrator/*", "--format=%(refname:short)").split()


@pytest.mark.parametrize("added", ["untracked", "gitlink"])
def test_a_cloned_folder_inside_a_repository_works_in_that_repository_not_in_its_own(tmp_path, added):
    host = plain_host(tmp_path)
    folder = clone_project(host / "tools" / "orchestrator")
    if added == "gitlink":  # `git add` of a clone records it as a gitlink: git refuses paths inside it
        git(host, "add", "tools/orchestrator")
        git(host, "commit", "-q", "-m", "the orchestrator", env=user_env())
    own_refs = git(folder, "for-each-ref")
    before = snapshot(host, folder)
    engine = host_engine(folder)
    try:
        job = run_job(engine, "clone", tasks=["echo added >> app.py"])
    finally:
        engine.shutdown(timeout=10)
    assert job.status is JobStatus.COMPLETED, [w.error for w in engine.queries.snapshot(job.root_id)[1]]
    assert job.config.isolation == "worktree"
    assert (
        f"isolation auto: worktree, because this folder {folder} is a git repository of its own (as a clone is) inside "
        f"the git repository {host}, the host" in "\n".join(job.notes)
    )
    assert f"orchestrator/{job.id}/result" in branches(host) and f"orchestrator/{job.id}/worker_1" in branches(host)
    assert branches(folder) == [] and git(folder, "for-each-ref") == own_refs
    assert git(folder, "status", "--porcelain") == ""  # the folder's own clone does not see the worktrees
    assert snapshot(host, folder) == before
    # What the summary says to run works in the host
    git(host, "merge", "-q", f"orchestrator/{job.id}/result", env=user_env())
    assert (host / "app.py").read_text() == "print('v1')\nadded\n"


def test_a_cloned_folder_that_nothing_encloses_uses_folders_and_says_why(tmp_path):
    folder = clone_project(tmp_path / "orchestrator")
    own_refs = git(folder, "for-each-ref")
    engine = host_engine(folder)
    try:
        job = run_job(engine, "alone", tasks=["echo x > x.txt"])
    finally:
        engine.shutdown(timeout=10)
    assert job.status is JobStatus.COMPLETED and job.config.isolation == "folder"
    assert (
        f"isolation auto: folder, because this folder {folder} is a git repository of its own (as a clone is) and no "
        'repository encloses it: set git.repo to the repository the workers should change (git.repo: "." for this one)'
    ) in job.notes
    assert git(folder, "for-each-ref") == own_refs and git(folder, "status", "--porcelain") == ""


@pytest.mark.parametrize("enclosed", [False, True], ids=["alone", "inside a host"])
def test_git_repo_names_the_host_of_a_cloned_folder(tmp_path, enclosed):
    host = plain_host(tmp_path) if enclosed else None
    folder = clone_project((host or tmp_path) / "orchestrator")
    before = snapshot(host, folder) if host else None
    engine = host_engine(folder, git={"repo": "."})
    try:
        job = run_job(engine, "own", tasks=["echo x > x.txt"])
    finally:
        engine.shutdown(timeout=10)
    assert job.status is JobStatus.COMPLETED and job.config.isolation == "worktree"
    assert f"isolation auto: worktree, because {folder} is a git repository" in "\n".join(job.notes)
    assert f"orchestrator/{job.id}/result" in branches(folder)
    assert git(folder, "status", "--porcelain") == ""
    if host is not None:
        assert branches(host) == [] and snapshot(host, folder) == before
