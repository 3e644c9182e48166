"""The project view (process/sandbox.py ProjectView): in its sandbox a worker's checkout is also at
the host repository's own path, its cwd there. Real bubblewrap, real git, real ``command`` workers
and gates, real pytest: an editable install of the host resolves to the worker's code, walk-up
configuration stops at the project's, and git works inside."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from orchestrator.cli.doctor import Report, _check_project, _suggested_gate, find_project
from orchestrator.config import load_settings
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.backends import probe
from orchestrator.workers.confinement import Confinement
from orchestrator.workspace.layout import Workspace

from .conftest import run_job
from .helpers.projects import src_layout_host
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env, workers

SUPPORT = probe()
pytestmark = [
    pytest.mark.skipif(not SUPPORT.available, reason=f"no sandbox on this machine: {SUPPORT.reason}"),
    pytest.mark.slow,
]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]


def run_with_gate(
    folder: Path, gate: list[str], task: str, sandbox: str = "auto", backend: str = "auto", repo: Path | None = None
):
    """``repo``: the repository when the orchestrator's ``folder`` is not inside it (make_host's is)."""
    outside = {"repo": str(repo), "checkouts_root": str(repo.parent / "checkouts")} if repo is not None else {}
    engine = host_engine(
        folder,
        git={"isolation": "worktree", **outside},  # (host_engine: the checkouts outside go to <tmp>/checkouts)
        tasks={"gates": [{"name": "tests", "run": gate}]},
        workers={"sandbox": sandbox, "sandbox_backend": backend},
    )
    try:
        job = run_job(engine, tasks=[task])
        w = workers(engine, job)["worker_1"]
        log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
        inside = engine.workspace.worker_dir(job.root_id, 0, "worker_1")
        if backend == "landlock":  # no project view: the checkout lives outside the orchestrator's folder
            host = repo if repo is not None else folder.parents[1]
            assert inside.is_symlink() and not inside.resolve().is_relative_to(host), inside.resolve()
            assert inside.resolve().is_relative_to(host.parent / "checkouts")
        elif backend == "bubblewrap":  # the view shows it at the repository's path: it stays in the workspace
            assert inside.is_dir() and not inside.is_symlink()
    finally:
        engine.shutdown(timeout=10)
    return job, w, log


# Each backend the machine offers, pinned (Landlock: as where bubblewrap cannot start).
BACKENDS = [
    pytest.param(b, marks=pytest.mark.skipif(not probe(backend=b).available, reason=f"no {b} here: {probe(backend=b).reason}"))
    for b in ("bubblewrap", "landlock")
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_editable_install_of_the_host_tests_the_workers_code(tmp_path, backend):
    host, folder = src_layout_host(tmp_path)
    gate = [str(host / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    before = snapshot(host, folder)
    breaking = "sed -i 's/a + b/a - b/' src/pkg/__init__.py"
    _, bad, log = run_with_gate(folder, gate, breaking, sandbox="on", backend=backend)
    assert bad.status is WorkerStatus.FAILED and bad.gates[0].status == "failed", log  # it broke add
    _, good, log = run_with_gate(folder, gate, "echo note > NOTE.md", sandbox="on", backend=backend)
    assert good.status is WorkerStatus.SUCCESS and good.gates[0].status == "passed", log
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_declared_package_root_of_an_editable_install_is_the_workers_under_landlock(tmp_path, backend):
    # Given a project whose pyproject names its package root for setuptools (lib/, not src/), installed editable
    host, folder = src_layout_host(tmp_path)
    git(host, "mv", "src", "lib")
    (host / "pyproject.toml").write_text(
        '[project]\nname = "pkg"\nversion = "0.1"\n\n[tool.setuptools.packages.find]\nwhere = ["lib"]\n'
    )
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "lib layout", env=user_env())
    site = next((host / ".venv" / "lib").glob("python*/site-packages"))
    (site / "__editable__.pkg-0.1.pth").write_text(f"{host / 'lib'}\n")
    gate = [str(host / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    before = snapshot(host, folder)
    # When a worker breaks add, then the gate imports the worker's lib/pkg and fails it
    _, bad, log = run_with_gate(folder, gate, "sed -i 's/a + b/a - b/' lib/pkg/__init__.py", sandbox="on", backend=backend)
    assert bad.status is WorkerStatus.FAILED and bad.gates[0].status == "failed", log
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_walk_up_configuration_is_the_projects_not_the_orchestrator_folders(tmp_path, backend):
    host, folder = make_host(tmp_path)
    (host / "tests").mkdir()
    (host / "tests" / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "tests", env=user_env())
    # The orchestrator's folder (around the workspace) has a pytest section the project does not.
    (folder / "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = "--no-such-option-of-pytest"\n')
    # (and a conftest.py that fails every collection: the orchestrator's, never the project's)
    (folder / "conftest.py").write_text("raise ImportError('the orchestrator folder conftest.py was loaded')\n")
    before = snapshot(host, folder)
    job, w, log = run_with_gate(folder, PYTEST, "echo hi > a.txt", sandbox="on", backend=backend)
    assert job.status is JobStatus.COMPLETED and w.gates[0].status == "passed", log
    assert snapshot(host, folder) == before


@pytest.mark.skipif(not probe(backend="landlock").available, reason="no Landlock here")
def test_under_landlock_the_checkout_lives_outside_and_goes_with_its_job(tmp_path):
    # Given a job under Landlock whose worker writes a file and records where it ran
    host, folder = make_host(tmp_path)
    before = snapshot(host, folder)
    engine = host_engine(folder, git={"isolation": "worktree"}, workers={"sandbox": "on", "sandbox_backend": "landlock"})
    try:
        # (and reads a file of its own it made unreadable: a file's own mode, no refusal of the sandbox)
        task = (
            'pwd -P > where.txt && echo mine > mine.txt && echo x > own && chmod 000 own && (cat "$PWD/own" || true) && rm -f own'
        )
        job = run_job(engine, tasks=[task])
        w = workers(engine, job)["worker_1"]
        log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
        assert job.status is JobStatus.COMPLETED and w.status is WorkerStatus.SUCCESS, log
        # Then it ran outside the orchestrator's folder and the repository, under git.checkouts_root, 0700 on the way,
        # and the workspace's folder of it is a link there
        where = Path(git(host, "show", f"{w.branch}:where.txt").strip())
        outside = tmp_path / "checkouts"
        assert where.is_relative_to(outside) and not where.is_relative_to(host), where
        assert where.parts[-3:] == (f"job_{job.root_id}", "depth_0", "worker_1")
        assert (where.parents[2].stat().st_mode & 0o777) == 0o700
        link = engine.workspace.worker_dir(job.root_id, 0, "worker_1")
        assert link.is_symlink() and link.resolve() == where and (link / "mine.txt").read_text() == "mine\n"
        assert git(host, "show", f"{w.branch}:mine.txt") == "mine\n"
        assert not (host / "mine.txt").exists()
        assert "Permission denied" in log and w.said_refused == [] and w.refusals == [], (w.said_refused, log)
        # When the job is deleted, its worktree and its folder outside go, the branch prefix's refs with them
        engine.delete(job.root_id, all_branches=True)
        assert not where.parents[1].exists() and str(where) not in git(host, "worktree", "list", "--porcelain")
    finally:
        engine.shutdown(timeout=10)
    assert snapshot(host, folder) == before


@pytest.mark.skipif(not probe(backend="landlock").available, reason="no Landlock here")
def test_under_landlock_a_worker_cannot_read_another_trees_checkout_outside(tmp_path):
    # Given a finished job under Landlock whose worker left a secret in its checkout (outside the workspace)
    host, folder = make_host(tmp_path)
    engine = host_engine(folder, git={"isolation": "worktree"}, workers={"sandbox": "on", "sandbox_backend": "landlock"})
    try:
        first = run_job(engine, tasks=["echo SECRET-OF-THE-FIRST > secret.txt"])
        theirs = engine.workspace.worker_dir(first.root_id, 0, "worker_1").resolve()
        assert (theirs / "secret.txt").read_text() == "SECRET-OF-THE-FIRST\n"
        # When another tree's worker reads it, and lists the folder of all the checkouts
        task = f"(cat '{theirs}/secret.txt'; ls '{theirs.parents[2]}') > seen.txt 2>&1; true"
        second = run_job(engine, tasks=[task])
        w = workers(engine, second)["worker_1"]
        seen = git(host, "show", f"{w.branch}:seen.txt")
    finally:
        engine.shutdown(timeout=10)
    # Then it read nothing of it: the workspace's checkouts outside are refused as the workspace is
    assert "SECRET-OF-THE-FIRST" not in seen and "secret.txt: Permission denied" in seen, seen
    assert f"cannot open directory '{theirs.parents[2]}': Permission denied" in seen, seen  # (listed nothing)
    if not probe(backend="bubblewrap").available:
        return
    # And a worker of the same folder under bubblewrap (its checkout in the workspace) sees that folder empty
    engine = host_engine(folder, git={"isolation": "worktree"}, workers={"sandbox": "on", "sandbox_backend": "bubblewrap"})
    try:
        third = run_job(engine, tasks=[task])
        w = workers(engine, third)["worker_1"]
        seen = git(host, "show", f"{w.branch}:seen.txt")
    finally:
        engine.shutdown(timeout=10)
    assert "SECRET-OF-THE-FIRST" not in seen and "secret.txt: No such file or directory" in seen, seen


@pytest.mark.skipif(not probe(backend="landlock").available, reason="no Landlock here")
def test_under_landlock_a_checkouts_root_others_can_write_refuses_the_worker_naming_it(tmp_path):
    host, folder = make_host(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    before = snapshot(host, folder)
    engine = host_engine(
        folder,
        git={"isolation": "worktree", "checkouts_root": str(shared / "checkouts")},
        workers={"sandbox": "on", "sandbox_backend": "landlock", "max_retries": 0},
    )
    try:
        job = run_job(engine, tasks=["echo hi > a.txt"])
        w = workers(engine, job)["worker_1"]
    finally:
        engine.shutdown(timeout=10)
    assert w.status is WorkerStatus.FAILED and f"{shared} is writable by others" in (w.error or ""), w.error
    assert "git.checkouts_root" in (w.error or "") and not (shared / "checkouts").exists()
    assert not engine.workspace.worker_dir(job.root_id, 0, "worker_1").exists()
    assert snapshot(host, folder) == before


def test_the_worker_works_at_the_repositorys_path_and_its_files_land_in_its_checkout(tmp_path):
    host, folder = make_host(tmp_path)
    before = snapshot(host, folder)
    task = (
        "pwd > where.txt && echo mine > rel.txt && mkdir -p sub && echo deep > sub/deep.txt"
        " && git add rel.txt && git -c user.name=w -c user.email=w@x commit --no-verify -qm 'its own commit'"
        " && git status --porcelain > status.txt && ls -a > listing.txt"
    )
    engine = host_engine(folder, git={"isolation": "worktree"})
    try:
        job = run_job(engine, tasks=[task])
        w = workers(engine, job)["worker_1"]
        log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    finally:
        engine.shutdown(timeout=10)
    assert job.status is JobStatus.COMPLETED and w.status is WorkerStatus.SUCCESS, log
    branch = w.branch
    assert git(host, "show", f"{branch}:where.txt") == f"{host}\n"  # its cwd: the repository's own path
    assert git(host, "show", f"{branch}:rel.txt") == "mine\n"
    assert git(host, "show", f"{branch}:sub/deep.txt") == "deep\n"
    assert "its own commit" in git(host, "log", "--format=%s", branch)
    status = git(host, "show", f"{branch}:status.txt").splitlines()
    assert "?? where.txt" in status and "?? sub/" in status and not any("rel.txt" in s for s in status)
    # The orchestrator's folder is tracked here: the worker sees its own copy, its hidden files unchanged.
    assert not any("tools/" in s for s in status), status
    changed = {f["path"] for f in w.files_changed}
    assert changed == {"where.txt", "rel.txt", "sub/deep.txt", "status.txt", "listing.txt"}, w.files_changed
    assert not (host / "where.txt").exists() and not (host / "rel.txt").exists()
    assert snapshot(host, folder) == before


def test_doctor_finds_the_editable_install_and_unsandboxed_proposes_a_gate_that_tests_the_checkout(tmp_path):
    host, folder = src_layout_host(tmp_path)
    project = find_project(host, [host / ".venv"])
    assert project.src_layout and [e.name for e in project.editable] == ["__editable__.pkg-0.1.pth"]
    python = str(host / ".venv" / "bin" / "python")
    sandboxed = _suggested_gate(Report(tmp_path / "c.yaml"), host, project, sandboxed=True)
    assert sandboxed is not None and sandboxed["run"] == [python, "-m", "pytest", "-q"]
    unconfined = _suggested_gate(Report(tmp_path / "c.yaml"), host, project, sandboxed=False)
    assert unconfined is not None and unconfined["run"] == ["env", "PYTHONPATH=src", python, "-m", "pytest", "-q"]
    report = Report(tmp_path / "c.yaml")
    _check_project(report, load_settings(base_dir=folder, environ={}), host, sandboxed=False)
    texts = " ".join(f.text + " " + f.fix for f in report.findings)
    assert "find this folder's before or instead of your project's" in texts
    assert "tests the wrong code" in texts and "PYTHONPATH=src" in texts
    report = Report(tmp_path / "c.yaml")
    _check_project(report, load_settings(base_dir=folder, environ={}), host, sandboxed=True)
    assert [f.level.value for f in report.findings] == ["ok"] and "runs the worker's code" in report.findings[0].text
    # Unconfined, the venv's own python tests the main checkout and passes a breaking worker (what the
    # note warns of); the proposed gate fails it.
    before = snapshot(host, folder)
    breaking = "sed -i 's/a + b/a - b/' src/pkg/__init__.py"
    # (No bytecode: unconfined, the import would write __pycache__ into the main checkout, the host.)
    quiet = ["env", "PYTHONDONTWRITEBYTECODE=1"]
    _, plain, log = run_with_gate(folder, [*quiet, python, "-m", "pytest", "-q"], breaking, sandbox="off")
    assert plain.gates[0].status == "passed", log
    _, proposed, log = run_with_gate(folder, [*quiet, *unconfined["run"]], breaking, sandbox="off")
    assert proposed.status is WorkerStatus.FAILED and proposed.gates[0].status == "failed", log
    assert snapshot(host, folder) == before


def test_a_link_the_worker_planted_where_a_mount_point_goes_makes_no_folder_outside_and_no_view(tmp_path):
    host, folder = make_host(tmp_path)
    settings = load_settings(base_dir=folder, environ={})
    confinement = Confinement(settings, Workspace(settings.workspace_root))
    checkout = confinement.workspace.root / "job_0123456789ab" / "depth_0" / "worker_1"
    git(host, "worktree", "add", "-q", "--detach", str(checkout))
    view = confinement.project_view(checkout, confinement.workspace.job_dir("0123456789ab") / ".git-view")
    assert (
        view is not None and view.top == str(host) and view.kept == (str(folder / "workspace"),)
    )  # the folder is tracked: its ignored workspace only
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(checkout / "tools")
    (checkout / "tools").symlink_to(elsewhere)  # where the orchestrator's folder is bound back
    assert confinement.project_view(checkout, confinement.workspace.job_dir("0123456789ab") / ".git-view") is None
    assert list(elsewhere.iterdir()) == []


CARGO = shutil.which("cargo")


@pytest.mark.skipif(CARGO is None, reason="cargo is not installed")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cargo_workspace_host_is_built_and_tested_in_the_workers_checkout_with_the_trees_cargo_home(tmp_path, backend):
    # Given a host that is a Cargo workspace (one member crate with its tests), the orchestrator's folder in it
    host, folder = make_host(tmp_path)
    (host / "Cargo.toml").write_text('[workspace]\nmembers = ["crates/calc"]\nresolver = "2"\n')
    crate = host / "crates" / "calc"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "calc"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "src" / "lib.rs").write_text(
        "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\n"
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(2, 3), 5);\n    }\n}\n"
    )
    (host / ".gitignore").write_text(".env\n/target/\n")
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "a cargo workspace", env=user_env())
    before = snapshot(host, folder)
    gate = [str(CARGO), "test", "--offline", "-q", "--workspace"]
    # When a worker breaks add, and another adds a file: each gated on the workspace's own tests
    _, bad, log = run_with_gate(folder, gate, "sed -i 's/a + b/a - b/' crates/calc/src/lib.rs", sandbox="on", backend=backend)
    assert bad.status is WorkerStatus.FAILED and bad.gates[0].status == "failed", log
    _, good, log = run_with_gate(folder, gate, "echo note > NOTE.md", sandbox="on", backend=backend)
    # Then the breaking one fails its gate, the other passes: cargo built the worker's checkout, its
    # registry and build locks in the tree's own CARGO_HOME (the user's ~/.cargo is read-only there)
    assert good.status is WorkerStatus.SUCCESS and good.gates[0].status == "passed", log
    assert not (host / "target").exists()  # built in the worker's checkout, never the user's
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("where", ["folder", "repository"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_program_installed_in_the_orchestrators_folder_runs_in_the_view(tmp_path, backend, where):
    # Given a tracked orchestrator folder whose CLI is installed, untracked, in its own .cli (as
    # tests/install_cli.sh and doctor put one), or in an ignored .cli of the repository's top,
    # configured by its absolute path
    host, folder = make_host(tmp_path)
    program = (folder if where == "folder" else host) / ".cli" / "bin" / "agent"
    program.parent.mkdir(parents=True)
    program.write_text('#!/bin/sh\necho "ran from $0" > ran.txt\n')
    program.chmod(0o755)
    if where == "repository":
        (host / ".git" / "info" / "exclude").write_text("/.cli/\n")
    before = snapshot(host, folder)
    # (Landlock: no view; the program is granted where it lies, the rest of the user's tree refused)
    engine = host_engine(
        folder,
        git={"isolation": "worktree"},
        orchestrator={"worker": "command", "command": [str(program)]},
        workers={"sandbox_backend": backend},
    )
    try:
        job = run_job(engine, tasks=["x"])
        w = workers(engine, job)["worker_1"]
        log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    finally:
        engine.shutdown(timeout=10)
    # Then the worker runs it (its folder bound back in the view), and writes its own checkout
    assert job.status is JobStatus.COMPLETED and w.status is WorkerStatus.SUCCESS, log
    assert git(host, "show", f"{w.branch}:ran.txt") == f"ran from {program}\n"
    assert snapshot(host, folder) == before


def _editable_host(tmp_path: Path, layout: dict[str, str], pyproject: str | None, pth: str) -> tuple[Path, Path, list[str]]:
    """src_layout_host's repository reshaped: its files replaced by ``layout`` (path: text), its
    pyproject.toml by ``pyproject`` (None: none), and the venv's editable install by one ``.pth``
    naming ``pth`` (relative to the host's top; "" its top), as that backend installs it. The gate: the venv's
    python running the project's tests."""
    host, folder = src_layout_host(tmp_path)
    git(host, "rm", "-rq", "src", "pyproject.toml")
    for name, text in layout.items():
        (host / name).parent.mkdir(parents=True, exist_ok=True)
        (host / name).write_text(text)
    if pyproject is not None:
        (host / "pyproject.toml").write_text(pyproject)
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "another layout", env=user_env())
    site = next((host / ".venv" / "lib").glob("python*/site-packages"))
    (site / "__editable__.pkg-0.1.pth").unlink()
    (site / "_pkg.pth").write_text(f"{host / pth if pth else host}\n")
    return host, folder, [str(host / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]


ADD = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hatch_project_installed_editable_tests_the_workers_code(tmp_path, backend):
    # Given a hatch project whose package root is lib/ (not src/, nor setuptools'), installed editable
    # (hatchling's dev mode: a .pth naming <host>/lib)
    pyproject = (
        '[project]\nname = "pkg"\nversion = "0.1"\n\n[build-system]\nrequires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n\n[tool.hatch.build.targets.wheel]\npackages = ["lib/pkg"]\n'
    )
    host, folder, gate = _editable_host(tmp_path, {"lib/pkg/__init__.py": ADD}, pyproject, "lib")
    before = snapshot(host, folder)
    # When a worker breaks add, then its gate fails (it imported the worker's lib/pkg, or nothing: never the user's)
    _, bad, log = run_with_gate(folder, gate, "sed -i 's/a + b/a - b/' lib/pkg/__init__.py", sandbox="on", backend=backend)
    assert bad.status is WorkerStatus.FAILED and bad.gates[0].status == "failed", log
    # And a worker that keeps add passes it: the worker's lib/ is found
    _, good, log = run_with_gate(folder, gate, "echo note > NOTE.md", sandbox="on", backend=backend)
    assert good.status is WorkerStatus.SUCCESS and good.gates[0].status == "passed", log
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_plain_pth_naming_the_repositorys_top_tests_the_workers_code(tmp_path, backend):
    # Given a package at the top of a repository that also has a src/ folder (its C sources), no
    # Python packaging at all, and a venv whose site-packages has a plain .pth naming the repository's top
    layout = {"pkg/__init__.py": ADD, "src/add.c": "int add(int a, int b) { return a + b; }\n"}
    host, inside, _ = _editable_host(tmp_path, layout, None, "")
    # (and the orchestrator's folder beside the repository, not in it: nothing of the repository refused by it)
    folder = tmp_path / "orch"
    folder.mkdir()
    git(host, "rm", "-rq", "tools")
    git(host, "commit", "--no-verify", "-qm", "no orchestrator folder here", env=user_env())
    shutil.rmtree(inside.parent, ignore_errors=True)  # (git rm took its tracked files; its workspace, ignored, stays)
    # (run by the venv's pytest script, as pip installs it: ``python -m`` would put the cwd, the checkout, first)
    # (its path has a space, which a #! line cannot hold: a shell script runs the script beside it)
    script = host / ".venv" / "bin" / "pytest"
    (host / ".venv" / "bin" / "pytest_main.py").write_text("import sys\nimport pytest\nsys.exit(pytest.console_main())\n")
    script.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" "$(dirname "$0")/pytest_main.py" "$@"\n')
    script.chmod(0o755)
    gate = [str(script), "-q", "-p", "no:cacheprovider", "tests"]
    before = snapshot(host, folder)
    # When a worker breaks add, then its gate fails: it never imports the user's pkg
    breaking = "sed -i 's/a + b/a - b/' pkg/__init__.py"
    _, bad, log = run_with_gate(folder, gate, breaking, sandbox="on", backend=backend, repo=host)
    assert bad.status is WorkerStatus.FAILED and bad.gates[0].status == "failed", log
    # And a worker that keeps add passes it: the worker's pkg is found
    _, good, log = run_with_gate(folder, gate, "echo note > NOTE.md", sandbox="on", backend=backend, repo=host)
    assert good.status is WorkerStatus.SUCCESS and good.gates[0].status == "passed", log
    assert snapshot(host, folder) == before


@pytest.mark.skipif(CARGO is None, reason="cargo is not installed")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cargo_path_dependency_by_absolute_path_never_builds_the_users_checkout(tmp_path, backend):
    # Given a crate whose path dependency is given by the repository's absolute path (which no checkout follows)
    host, folder = make_host(tmp_path)
    (host / "crates" / "dep" / "src").mkdir(parents=True)
    (host / "crates" / "dep" / "Cargo.toml").write_text('[package]\nname = "dep"\nversion = "0.1.0"\nedition = "2021"\n')
    (host / "crates" / "dep" / "src" / "lib.rs").write_text("pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n")
    (host / "crates" / "app" / "src").mkdir(parents=True)
    (host / "crates" / "app" / "Cargo.toml").write_text(
        f'[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\ndep = {{ path = "{host}/crates/dep" }}\n'
    )
    (host / "crates" / "app" / "src" / "lib.rs").write_text(
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(dep::add(2, 3), 5);\n    }\n}\n"
    )
    (host / ".gitignore").write_text(".env\ntarget/\nCargo.lock\n")
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "a crate with an absolute path dependency", env=user_env())
    before = snapshot(host, folder)
    gate = [str(CARGO), "test", "--offline", "-q", "--manifest-path", "crates/app/Cargo.toml"]
    # When a worker breaks add in its checkout's dep, then its gate fails: never the user's dep built instead
    breaking = "sed -i 's/a + b/a - b/' crates/dep/src/lib.rs"
    _, bad, log = run_with_gate(folder, gate, breaking, sandbox="on", backend=backend)
    assert bad.status is WorkerStatus.FAILED and bad.gates[0].status == "failed", log
    _, good, log = run_with_gate(folder, gate, "echo note > NOTE.md", sandbox="on", backend=backend)
    if backend == "bubblewrap":  # the view shows the worker's checkout at that path: its own dep
        assert good.status is WorkerStatus.SUCCESS and good.gates[0].status == "passed", log
    else:  # Landlock refuses the user's tree: the gate fails closed, saying where it was led
        output = good.gates[0].output_tail or ""
        assert good.status is WorkerStatus.FAILED and good.gates[0].status == "failed", log
        assert "Permission denied" in output and f"{host}/crates/dep" in output, output
    assert not (host / "crates" / "dep" / "target").exists() and not (host / "crates" / "app" / "target").exists()
    assert snapshot(host, folder) == before
