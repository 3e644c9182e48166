"""The orchestrator folder as users place it: copied into host repositories, run from their roots
(and install.sh's PYTHON). Each copy is a real copy of this folder
(its .venv a symlink to ours, to stay fast), driven through its own scripts."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import API_KEY, ROOT
from .helpers.readme import snippet

pytestmark = pytest.mark.slow

LEFT_OUT = {
    ".venv",
    ".git",
    ".cli",
    "workspace",
    "logs",
    "config.yaml",
    "__pycache__",
    ".pytest_cache",
    "artifacts",
    ".server.json",
    ".server.port",
    ".server.lock",
    ".server.start.lock",
    ".server.pid",
    "bench",
    "docs",
    ".schemathesis",
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_folder(dest: Path, port: int) -> Path:
    """This folder copied to ``dest`` with its own config.yaml on ``port`` (simulated workers)."""
    # The folder's own workspace, logs, ... only: the package has a workspace/ of its own.
    shutil.copytree(
        ROOT, dest, ignore=lambda d, names: [n for n in names if n in LEFT_OUT and (Path(d) == ROOT or n == "__pycache__")]
    )
    (dest / ".venv").symlink_to(ROOT / ".venv")
    (dest / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\norchestrator:\n  worker: "simulated"\n'
        "simulated:\n  duration: 0.05\nworkers:\n  kill_grace: 1\n"
    )
    return dest


def user_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.pop("PYTHONPATH", None)
    return env


def sh(argv, cwd, timeout=120, **kw):
    return subprocess.run(argv, cwd=cwd, env=kw.pop("env", user_env()), capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def copies(tmp_path):
    made = []

    def make(dest, port):
        made.append(copy_folder(dest, port))
        return made[-1]

    yield make
    for folder in made:
        sh([str(folder / "quick-start.sh"), "--stop"], cwd=folder)


def job_of(out):
    return re.search(r"^job ([0-9a-f]{12}):", out, re.M).group(1)


def test_two_copies_on_one_machine_each_reach_only_their_own_server(tmp_path, copies):
    port = free_port()  # both configs name the same port, as two copies with the default 8000 would
    a = copies(tmp_path / "repo a" / "orchestrator", port)
    b = copies(tmp_path / "repo b" / "orchestrator", port)
    # A run from its host repo's root, B from above the repos (its paths then hold "repo b")
    out_a = sh([str(a / "quick-start.sh"), "write a", "1", "30"], cwd=a.parent)
    assert out_a.returncode == 0, out_a.stdout + out_a.stderr
    out_b = sh([str(b / "quick-start.sh"), "write b", "1", "30"], cwd=tmp_path)
    assert out_b.returncode == 0, out_b.stdout + out_b.stderr
    assert f"port {port} is in use by another program" in out_b.stdout
    job_a, job_b = job_of(out_a.stdout), job_of(out_b.stdout)
    url_a = f"http://127.0.0.1:{port}"
    url_b = re.search(r"started this folder's API server at (http://127\.0\.0\.1:\d+)", out_b.stdout).group(1)
    assert url_b != url_a and f"keeps running at {url_b}" in out_b.stdout
    assert (b / "workspace" / f"job_{job_b}" / "FINAL_RESULT.md").is_file()
    assert not (a / "workspace" / f"job_{job_b}").exists()
    # each check-status reads its own job from its own server
    for folder, job, url in ((a, job_a, url_a), (b, job_b, url_b)):
        status = sh([str(folder / "check-status.sh"), job], cwd=folder.parent)
        assert status.returncode == 0 and "COMPLETED" in status.stdout and f"(from {url})" in status.stdout, (
            status.stdout + status.stderr
        )
    watched = sh([str(b / "orchestrator.sh"), "watch", job_b], cwd=tmp_path)
    assert watched.returncode == 0 and f"(from {url_b})" in watched.stdout, watched.stdout + watched.stderr
    # and B never sees A's job (it does not ask A's server)
    other = sh([str(b / "check-status.sh"), job_a], cwd=b.parent)
    assert other.returncode == 2 and f"job {job_a}" in other.stderr and "not found" in other.stderr, other.stderr
    # the hint B printed runs as printed, from where it was run
    hint = next(line for line in out_b.stdout.splitlines() if line.startswith("status again:")).split(":", 1)[1].strip()
    assert hint == f"'./repo b/orchestrator/check-status.sh' {job_b}"  # relative to where it ran, quoted
    again = sh(["bash", "-c", hint], cwd=tmp_path)
    assert again.returncode == 0 and f"(from {url_b})" in again.stdout, hint + again.stderr
    # --stop in B stops B's server only
    assert sh([str(b / "quick-start.sh"), "--stop"], cwd=b.parent).returncode == 0
    assert sh([str(a / "check-status.sh"), job_a], cwd=a).stdout.count(f"(from {url_a})") == 1


README_CLIENT_RUN = "PYTHONPATH=orchestrator orchestrator/.venv/bin/python my_script.py"


def test_the_launcher_and_the_readmes_client_snippet_work_from_the_host_repos_root(tmp_path, copies):
    host = tmp_path / "host"
    folder = copies(host / "orchestrator", free_port())
    assert README_CLIENT_RUN in (ROOT / "docs" / "api.md").read_text()  # the command the client section gives
    # the launcher, from the host's root (where ./orchestrator is the folder, not the package)
    run = sh(["orchestrator/orchestrator.sh", "run", "write a", "--no-recursion"], cwd=host)
    assert run.returncode == 0, run.stdout + run.stderr
    job = job_of(run.stdout)
    assert f"tail -f ./orchestrator/workspace/job_{job}/logs/depth_0_worker_1.log" in run.stdout
    for argv in (["status", job], ["config"], ["logs", job, "worker_1"], ["watch", job]):
        out = sh(["orchestrator/orchestrator.sh", *argv], cwd=host)
        assert out.returncode == 0, (argv, out.stdout + out.stderr)
    # a bare python there finds no orchestrator: what the documented command fixes
    start = sh([str(folder / "quick-start.sh"), "--start"], cwd=host)
    assert start.returncode == 0, start.stdout + start.stderr
    url = re.search(r"running at (http://127\.0\.0\.1:\d+)", start.stdout).group(1)
    (host / "my_script.py").write_text(snippet("client").replace("http://localhost:8000", url).replace("your-api-key", API_KEY))
    out = sh(["bash", "-c", README_CLIENT_RUN], cwd=host, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "completed" in out.stdout.splitlines()[-1]


def test_pytest_at_a_host_repos_root_collects_only_the_hosts_tests(tmp_path, copies):
    host = tmp_path / "host"
    folder = copies(host / "orchestrator", free_port())
    (host / "tests").mkdir()
    (host / "tests" / "test_host.py").write_text("def test_host():\n    assert 1 + 1 == 2\n")
    python = str(ROOT / ".venv" / "bin" / "python")
    for extra in ([], ["--strict-markers"]):
        out = sh([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", *extra], cwd=host)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "1 passed" in out.stdout and "warning" not in out.stdout.lower(), out.stdout
    listed = sh([python, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"], cwd=host)
    assert listed.stdout.splitlines()[0] == "tests/test_host.py::test_host", listed.stdout
    # the folder's own run is unchanged: its tests are collected with its settings
    own = sh(
        [".venv/bin/python", "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "tests/test_platform.py"],
        cwd=folder,
    )
    assert own.returncode == 0 and "test_native_is_the_default_and_accepted" in own.stdout, own.stdout + own.stderr


def fake_python(path: Path, version: str) -> Path:
    """An interpreter that answers like an old Python: --version, and a failing version check."""
    path.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Python {version}"; exit 0; fi\nexit 1\n')
    path.chmod(0o755)
    return path


def test_install_refuses_a_python_it_was_told_to_use_but_cannot(tmp_path):
    folder = tmp_path / "fresh"
    folder.mkdir()
    for name in ("install.sh", "requirements.txt", "requirements-dev.txt", "config.template.yaml"):
        shutil.copy(ROOT / name, folder / name)
    old = fake_python(tmp_path / "python3.9", "3.9.18")
    started = time.monotonic()
    out = sh(["./install.sh"], cwd=folder, env={**user_env(), "PYTHON": str(old)})
    assert out.returncode == 1 and f"PYTHON={old} is Python 3.9.18" in out.stderr and "3.10 or newer" in out.stderr, (
        out.stdout + out.stderr
    )
    assert not (folder / ".venv").exists()
    missing = sh(["./install.sh"], cwd=folder, env={**user_env(), "PYTHON": str(tmp_path / "no-such-python")})
    assert missing.returncode == 1 and "not found" in missing.stderr and not (folder / ".venv").exists(), missing.stderr
    assert time.monotonic() - started < 30
