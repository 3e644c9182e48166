"""``orchestrator init`` and the installed command's refusals, on this source checkout with a payload
the test makes (the build's ``orchestrator/_folder/``, setup.py) and version it sets: real git
repositories, no build. tests/test_wheel.py proves the same through a built and installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.cli import portable

from .helpers.worktree import git


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """The folder's files beside the package, as the build would ship them, and a version of 2.0.0."""
    folder = tmp_path / "payload"
    (folder / "docs").mkdir(parents=True)
    (folder / "install.sh").write_text("#!/bin/sh\necho installed\n")
    (folder / "orchestrator.sh").write_text('#!/bin/sh\necho launched "$@"\n')
    (folder / "docs" / "page.md").write_text("# page\n")
    monkeypatch.setattr(portable, "PAYLOAD", folder)
    monkeypatch.setattr(portable, "__version__", "2.0.0")
    return folder


def repository(path):
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-q", "--allow-empty", "-m", "start")
    return path


def test_init_writes_the_package_and_the_folders_files_at_the_repositorys_tools_orchestrator(tmp_path, payload, capsys):
    repo = repository(tmp_path / "repo")
    (repo / "src").mkdir()
    assert portable.init(None, repo / "src") == 0
    folder = repo / "tools" / "orchestrator"
    assert (folder / "docs" / "page.md").read_text() == "# page\n"
    assert os.access(folder / "install.sh", os.X_OK) and os.access(folder / "orchestrator.sh", os.X_OK)
    assert (folder / "orchestrator" / "cli" / "portable.py").is_file() and not (folder / "orchestrator" / "_folder").exists()
    assert not list(folder.rglob("__pycache__")) and not list(folder.parent.glob(".orchestrator.init-*"))
    assert portable.is_folder(folder) and portable.find_folder(repo / "src") == folder
    assert f"wrote orchestrator 2.0.0 into {folder}" in capsys.readouterr().out
    assert git(repo, "status", "--porcelain") == "?? tools/\n"


def test_init_refuses_a_directory_in_no_repository(tmp_path, payload):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(portable.Refused, match="is not in a git repository.*git init"):
        portable.init(None, plain)
    with pytest.raises(portable.Refused, match="would not be in a git repository"):
        portable.init(plain / "tools" / "orchestrator", plain)
    assert list(plain.iterdir()) == []


@pytest.mark.slow  # a real interpreter started to exec the folder's launcher
def test_a_folder_of_another_version_is_refused_by_init_and_by_any_command_naming_both(tmp_path, payload, capsys):
    repo = repository(tmp_path / "repo")
    portable.init(None, repo)
    folder = repo / "tools" / "orchestrator"
    (folder / "orchestrator" / "_version.py").write_text('VERSION = "1.0.0"\n')
    with pytest.raises(portable.Refused, match=r"holds orchestrator 1\.0\.0; this command is orchestrator 2\.0\.0"):
        portable.init(None, repo)
    with pytest.raises(portable.Refused, match=r"is orchestrator 1\.0\.0; this command is orchestrator 2\.0\.0"):
        portable.run_in_folder(folder / "docs", ["status"])
    # the same version: init writes nothing, and a command runs by the folder's own launcher
    (folder / "orchestrator" / "_version.py").write_text('VERSION = "2.0.0"\n')
    assert portable.init(None, repo) == 0 and "already holds orchestrator 2.0.0: nothing written" in capsys.readouterr().out
    # (the written folder's own package, whose _version.py says 2.0.0, finds itself and execs its launcher)
    code = "import sys; from pathlib import Path; from orchestrator.cli import portable; portable.run_in_folder(Path.cwd(), ['jobs'])"
    launched = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder / "docs",
        env={**os.environ, "PYTHONPATH": str(folder)},
        capture_output=True,
        text=True,
    )
    assert launched.stdout == "launched jobs\n", launched.stdout + launched.stderr


def test_init_refuses_a_folder_that_is_not_an_orchestrators(tmp_path, payload):
    repo = repository(tmp_path / "repo")
    (repo / "mine").mkdir()
    (repo / "mine" / "notes.txt").write_text("mine\n")
    with pytest.raises(portable.Refused, match="exists and is not an orchestrator folder"):
        portable.init(repo / "mine", repo)
    assert [p.name for p in (repo / "mine").iterdir()] == ["notes.txt"]
