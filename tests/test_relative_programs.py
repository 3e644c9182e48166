"""A gate whose program is a relative path (``.venv/bin/python -m pytest``, ``./run-tests``) runs it
from the worker's checkout as the worker sees it (process/runner.py ``resolve_command``): under
bubblewrap the project view, the repository's ``.venv`` bound in (``workers.sandbox_env_folders``);
without a view (Landlock, the sandbox off) the checkout's own files, and the repository's
environment folder where the checkout lacks it (workers/confinement.py ``environment_program``).
Once, every such gate failed with "'.venv/bin/python' was not found on the worker's PATH": the path
was looked up from the server's folder. Real git, real ``command`` workers and gates, real pytest,
real cargo (Debian's: crates.io is not reachable here, and the crate needs nothing from it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.outcomes import NOT_STARTED
from orchestrator.process.backends import probe
from orchestrator.process.runner import CommandNotFound, resolve_command
from orchestrator.process.sandbox import ProjectView
from orchestrator.workers.confinement import environment_program

from .conftest import run_job
from .helpers.projects import src_layout_host
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env, workers

MODES = ("bubblewrap", "landlock", "off")
PYTEST = [".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
RUN_TESTS = '#!/bin/sh\ngrep -qx good NOTE.md || { echo "NOTE.md does not say good"; exit 1; }\n'


@pytest.fixture(params=MODES)
def mode(request) -> str:
    """Each sandbox backend this machine offers (skipped, saying why, where it lacks one), and no sandbox."""
    if request.param != "off":
        found = probe(backend=request.param)
        if not found.available:
            pytest.skip(f"no {request.param} here: {found.reason}")
    return request.param


def engine_for(folder: Path, mode: str, gates: list[dict], **sections: dict):
    sandbox = {"sandbox": "off"} if mode == "off" else {"sandbox": "on", "sandbox_backend": mode}
    return host_engine(folder, git={"isolation": "worktree"}, tasks={"gates": gates}, workers=sandbox, **sections)


def run(engine, tasks: list[str], timeout: float = 120):
    try:
        job = run_job(engine, tasks=tasks, config={"max_workers": len(tasks)}, timeout=timeout)
        found = workers(engine, job)
        logs = {name: engine.workspace.worker_log(job.root_id, 0, name).read_text() for name in found}
        # (resolved: under Landlock the workspace's folder is a link to the checkout outside, git.checkouts_root)
        logs["checkout"] = str(engine.workspace.worker_dir(job.root_id, 0, "worker_1").resolve())
        job_dir = engine.workspace.job_dir(job.root_id)
        for name, w in found.items():  # each gate's own output, after the worker's
            logs[name] += "".join((job_dir / g.log_path).read_text() for g in w.gates if g.log_path)
    finally:
        engine.shutdown(timeout=10)
    return job, found, logs


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_relative_program_is_found_from_its_cwd_as_the_project_view_shows_it(tmp_path):
    """In a view the checkout is at the repository's path with the host's .venv bound in: the
    program is checked at the host's file the view shows there, and named by the view's path."""
    top, checkout = tmp_path / "repo", tmp_path / "repo" / "ws" / "worker_1"
    executable(top / ".venv" / "bin" / "python")  # the user's, bound in (kept)
    executable(checkout / "run-tests")  # the worker's
    executable(top / "users-only")  # the user's tree, unseen in the view
    (checkout / ".venv").mkdir()  # the mount point: empty on the host
    view = ProjectView(checkout=str(checkout), top=str(top), kept=(str(top / ".venv"),))
    sub = checkout / "sub"
    assert resolve_command(".venv/bin/python", None, checkout, view) == str(top / ".venv" / "bin" / "python")
    assert resolve_command("./run-tests", None, checkout, view) == str(top / "run-tests")
    assert resolve_command("../run-tests", None, sub, view) == str(top / "run-tests")
    with pytest.raises(CommandNotFound) as missing:
        resolve_command("./users-only", None, checkout, view)
    assert missing.value.filename == str(checkout / "users-only")  # the host's file it looked at
    # No view: the process's own folder, never the server's
    assert resolve_command("./run-tests", None, checkout) == str(checkout / "run-tests")
    with pytest.raises(CommandNotFound) as missing:
        resolve_command(".venv/bin/python", None, checkout)
    assert missing.value.filename == str(checkout / ".venv" / "bin" / "python")
    assert "no executable file at" in missing.value.reason(".venv/bin/python")


def test_without_a_view_an_environment_folder_the_checkout_lacks_is_the_repositorys(tmp_path):
    host, folder = make_host(tmp_path)
    python = executable(host / ".venv" / "bin" / "python")
    checkout = tmp_path / "checkout"
    git(host, "worktree", "add", "-q", "-b", "w", str(checkout))
    settings = load_settings(base_dir=folder, environ={}, overrides={})
    argv = [".venv/bin/python", "-m", "pytest"]
    assert environment_program(argv, checkout, checkout, settings, None) == [str(python), "-m", "pytest"]
    assert environment_program(["./x/y"], checkout, checkout, settings, None) == ["./x/y"]  # not an environment folder
    other = load_settings(base_dir=folder, environ={}, overrides={"workers": {"sandbox_env_folders": ["venv"]}})
    assert environment_program(argv, checkout, checkout, other, None) == argv  # not listed
    setup = load_settings(base_dir=folder, environ={}, overrides={"git": {"setup": ["true"]}})
    assert environment_program(argv, checkout, checkout, setup, None) == argv  # a setup builds the checkout's own
    executable(checkout / ".venv" / "bin" / "python")  # the checkout's own: its own is used
    assert environment_program(argv, checkout, checkout, settings, None) == argv
    git(host, "worktree", "remove", "--force", str(checkout))


@pytest.mark.slow
def test_a_gate_run_by_a_relative_path_runs_the_repositorys_venv_and_the_checkouts_script(tmp_path, mode):
    # Given a project with its venv at .venv (ignored by git: never in a worker's checkout) and a
    # committed ./run-tests, gated on both as a user writes them: relative paths, no shell
    host, folder = src_layout_host(tmp_path)
    (host / "run-tests").write_text(RUN_TESTS)
    (host / "run-tests").chmod(0o755)
    git(host, "add", "run-tests")
    git(host, "commit", "--no-verify", "-qm", "a test script", env=user_env())
    before = snapshot(host, folder)
    # (PYTHONPATH=src: without a view, the venv's editable install imports the user's tree: the Landlock issue's)
    gates = [{"name": "pytest", "run": PYTEST, "env": {"PYTHONPATH": "src"}}, {"name": "script", "run": ["./run-tests"]}]
    tasks = ["echo good > NOTE.md", "echo good > NOTE.md && sed -i 's/a + b/a - b/' src/pkg/__init__.py", "echo bad > NOTE.md"]
    # When three workers run: one good, one that breaks add, one whose NOTE.md the script refuses
    job, found, logs = run(engine_for(folder, mode, gates), tasks)
    good, breaks, bad = found["worker_1"], found["worker_2"], found["worker_3"]
    # Then both programs start in every mode, pass the good work and fail the rest closed
    assert good.status is WorkerStatus.SUCCESS and [g.status for g in good.gates] == ["passed", "passed"], logs
    assert breaks.status is WorkerStatus.FAILED and [g.status for g in breaks.gates] == ["failed"], logs
    assert "1 failed" in str(breaks.gates[0].output_tail)
    assert bad.status is WorkerStatus.FAILED and [g.status for g in bad.gates] == ["passed", "failed"], logs
    assert "NOTE.md does not say good" in str(bad.gates[1].output_tail)
    assert job.status is JobStatus.PARTIAL
    assert snapshot(host, folder) == before


@pytest.mark.slow
def test_a_relative_program_that_is_not_there_names_the_path_it_looked_at_and_the_fixes(tmp_path, mode):
    host, folder = make_host(tmp_path)
    before = snapshot(host, folder)
    gates = [{"name": "tests", "run": ["venv/bin/python", "-m", "pytest"]}]
    job, found, logs = run(engine_for(folder, mode, gates), ["echo hi > a.txt"])
    (gate,) = found["worker_1"].gates
    checkout = Path(logs["checkout"])
    assert found["worker_1"].status is WorkerStatus.FAILED and gate.status == NOT_STARTED, logs
    assert gate.reason.startswith(f"'venv/bin/python' was not found: no executable file at {checkout}/venv/bin/python ("), gate
    for fix in ("give its absolute path", "shell: true", "workers.sandbox_env_folders"):
        assert fix in gate.reason, gate.reason
    assert "PATH" not in gate.reason
    assert snapshot(host, folder) == before


CARGO_TOML = '[package]\nname = "calc"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'
LIB_RS = (
    "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\n"
    "#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(2, 3), 5);\n    }\n}\n"
)
# The worker's change: a function and its test, appended to src/lib.rs
DOUBLES = (
    "printf '%s\\n' '' 'pub fn double(a: i32) -> i32 {' '    add(a, a)' '}' '' '#[test]' "
    "'fn doubles() {' '    assert_eq!(double(4), 8);' '}' >> src/lib.rs"
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed (Debian: apt-get install cargo)")
def test_a_rust_host_gated_on_cargo_test_passes_good_work_and_fails_a_broken_test_closed(tmp_path, mode):
    # Given a dependency-free crate at the top of the host repository, gated on `cargo test` as a user writes it
    host, folder = make_host(tmp_path)
    (host / "Cargo.toml").write_text(CARGO_TOML)
    (host / "src").mkdir()
    (host / "src" / "lib.rs").write_text(LIB_RS)
    (host / ".gitignore").write_text(".env\n/target/\nCargo.lock\n")
    git(host, "add", "-A")
    git(host, "commit", "--no-verify", "-qm", "a crate", env=user_env())
    before = snapshot(host, folder)
    gates = [{"name": "cargo", "run": ["cargo", "test"], "timeout": 300}]
    # When one worker adds a function with its test and another breaks add
    job, found, logs = run(engine_for(folder, mode, gates), [DOUBLES, "sed -i 's/a + b/a - b/' src/lib.rs"], timeout=600)
    good, broken = found["worker_1"], found["worker_2"]
    # Then the good one passes its gate and lands; the broken one's test fails and it does not
    assert good.status is WorkerStatus.SUCCESS and good.gates[0].status == "passed", logs
    assert "test result: ok. 2 passed" in logs["worker_1"], logs
    assert broken.status is WorkerStatus.FAILED and broken.gates[0].status == "failed", logs
    assert "adds" in str(broken.gates[0].output_tail)
    # The result branch holds the good work, and its own tests pass there (built outside the host)
    assert job.merge is not None and job.merge.result_commit
    result = tmp_path / "result"
    result.mkdir()
    archive = subprocess.run(["git", "-C", str(host), "archive", job.merge.result_commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(result)], input=archive.stdout, check=True)
    assert "pub fn double" in (result / "src" / "lib.rs").read_text() and "a + b" in (result / "src" / "lib.rs").read_text()
    tested = subprocess.run(
        ["cargo", "test", "--offline", "-q"],
        cwd=result,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target")},
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert not (host / "target").exists()  # built in the workers' checkouts, never the user's tree
    assert snapshot(host, folder) == before
