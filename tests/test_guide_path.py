"""README_FOR_AI.md's path from a fresh folder to a merged, tested result, run as the guide's own
blocks in one shell session: install (``<!-- test: install -->``), then on a project of the
user's (``<!-- test: project -->``): a ``command`` worker set with ``config set``, the project's
tests as a gate, a restart, a job whose second worker fails its gate, its reason read through
the API, the result merged into the user's branch, the job deleted, the server stopped.

The project is a real git repository the test makes (a small Python package with its pytest
tests); the orchestrator folder in it is this checkout's files, linked (its ``.venv`` too), as
``cp -r`` would copy them, with ``ORCHESTRATOR_HOME`` naming the copy (the package's own path
resolves to this checkout). The blocks are this repository's own text: running them runs our
code; nothing from outside reaches a shell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from .conftest import ROOT
from .helpers.worktree import git, user_env
from .test_examples import VENV_PYTHON, guide

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not VENV_PYTHON.exists(), reason="no .venv beside the orchestrator (./install.sh)"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]

# What cp -r brings that the blocks use (the rest of this checkout is not needed to run them).
LINKED = (
    *("orchestrator", ".venv", "orchestrator.sh", "install.sh", "quick-start.sh", "check-status.sh", "api_server.py"),
    *("tests", "docs", "examples", "bench", "README.md", "README_FOR_AI.md"),
)
# conftest.py keeps the folder's files (its workspace too) out of the project's own pytest run
COPIED = ("config.template.yaml", "requirements.txt", "requirements-dev.txt", ".gitignore", "conftest.py", "pyproject.toml")
CP_LINE = "cp -r /path/to/this/folder /path/to/your/project/orchestrator && cd /path/to/your/project/orchestrator"


def block(marker: str) -> str:
    (text,) = re.findall(rf"<!-- test: {marker} -->\n```bash\n(.*?)\n```", guide(), flags=re.S)
    return text


def project(tmp_path: Path) -> tuple[Path, Path]:
    """A user's Python project under git, with its tests, and the orchestrator folder copied in."""
    host = tmp_path / "my project"
    (host / "tests").mkdir(parents=True)
    (host / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (host / "tests" / "test_calc.py").write_text("from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (host / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    git(host, "init", "-q", "-b", "main")
    git(host, "add", "-A")
    git(host, "commit", "-qm", "calc", env=user_env())
    folder = host / "orchestrator"
    folder.mkdir()
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    for name in COPIED:
        shutil.copy2(ROOT / name, folder / name)
    return host, folder


def shell_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in user_env().items() if not k.startswith("ORCHESTRATOR")}
    # python3 and pytest as the user's project has them: here, the orchestrator's own venv
    env["PATH"] = f"{VENV_PYTHON.parent}{os.pathsep}{env['PATH']}"
    env["ORCHESTRATOR_HOME"] = str(folder)
    return env


@pytest.mark.timeout(600)  # the blocks' own limit below: 41 s alone, past 120 s on a loaded 2-CPU machine
def test_the_guides_blocks_take_a_project_from_install_to_a_merged_tested_result(tmp_path):
    host, folder = project(tmp_path)
    install = block("install")
    assert install.startswith(CP_LINE + "\n")
    script = "set -e\n" + f"cd {json.dumps(str(folder))}\n" + install[len(CP_LINE) + 1 :] + "\n"
    # A wait holds api.long_poll_max at most: at 5 s, the block's job outlasts one, so its wait loop is proven
    script += "./orchestrator.sh config set api.long_poll_max 5 >/dev/null\n"
    script += 'echo "API=$API"\n' + block("project") + "\n"
    env = shell_env(folder)
    try:
        out = subprocess.run(
            ["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
        )
    finally:  # never leave a server behind, whatever the blocks did
        subprocess.run([str(folder / "orchestrator.sh"), "stop-server"], env=env, capture_output=True, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    api = re.search(r"^API=(http://127\.0\.0\.1:\d+)$", out.stdout, flags=re.M).group(1)
    # config set said what it wrote and what the running server does with it
    assert 'orchestrator.worker: "command"' in out.stdout and f"the server at {api} applies it to its next job" in out.stdout
    assert "stopped this folder's API server" in out.stdout and "started this folder's API server" in out.stdout
    # the wait block: partial, worker_1 passed its gate, worker_2 failed it with the reason
    lines = out.stdout.splitlines()
    assert "partial" in lines, text
    assert any(re.fullmatch(r"worker_1 success\s+\[\('tests', 'passed'\)\]", line) for line in lines), text
    assert any(re.fullmatch(r"worker_3 recursive_success\s+\[\('tests', 'passed'\)\]", line) for line in lines), text
    failed = next(line for line in lines if line.startswith("worker_2 "))
    assert failed.startswith("worker_2 failed gate tests failed") and failed.endswith("[('tests', 'failed')]"), failed
    # the gate's own output, through the API
    assert "1 failed" in out.stdout and "test_no" in out.stdout, text
    # merged into the user's branch: what passed its gate, and nothing else
    assert git(host, "show", "HEAD:NOTES.md") == "notes\n"
    assert git(host, "show", "HEAD:A.md") == "a\n" and git(host, "show", "HEAD:B.md") == "b\n"  # the child job's
    assert "tests/test_no.py" not in git(host, "ls-tree", "-r", "--name-only", "HEAD")
    assert not (host / "tests" / "test_no.py").exists()
    assert git(host, "status", "--porcelain") == "?? orchestrator/\n"
    # the job deleted: its folder, worktrees and workers' branches gone; the result branch kept
    job = re.search(r"orchestrator/([0-9a-f]{12})/result", git(host, "branch", "-a")).group(1)
    assert not (folder / "workspace" / f"job_{job}").exists()
    assert git(host, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(host, "for-each-ref", "--format=%(refname)", "refs/heads/orchestrator/").split() == [
        f"refs/heads/orchestrator/{job}/result"
    ]
    # the long job cancelled, then deleted with its result branch
    assert "cancelled" in lines, text
    # the server stopped
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{api}/health", timeout=5)
