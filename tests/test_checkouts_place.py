"""Where a worker's worktree lives when no project view shows it (workspace/checkout_place.py): the folder's
checks on a real file system, and what doctor says under a sandbox without a view (Landlock)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator.cli.doctor import Report, _check_project
from orchestrator.config import load_settings
from orchestrator.errors import WorkspaceError
from orchestrator.workspace import checkout_place as place

from .helpers.projects import src_layout_host


def settings_at(folder: Path, root: str = ""):
    return load_settings(base_dir=folder, environ={}, overrides={"git": {"checkouts_root": root}})


def test_the_default_is_the_users_state_folder(tmp_path, monkeypatch):
    settings = settings_at(tmp_path)
    assert place.checkouts_root(settings, {"XDG_STATE_HOME": "/state"}) == Path("/state/orchestrator/checkouts")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert place.checkouts_root(settings, {"XDG_STATE_HOME": "relative"}) == tmp_path / "home/.local/state/orchestrator/checkouts"
    assert place.checkouts_root(settings_at(tmp_path, "~/mine"), {}) == tmp_path / "home/mine"


def test_the_folder_is_made_private_and_one_per_workspace(tmp_path):
    settings = settings_at(tmp_path / "orch", str(tmp_path / "state" / "checkouts"))
    first = place.make_private(settings, tmp_path / "orch" / "workspace", (tmp_path / "orch",))
    other = place.workspace_folder(settings, tmp_path / "elsewhere" / "workspace")
    assert first.is_dir() and first.parent == tmp_path / "state" / "checkouts" and other.parent == first.parent
    assert first != other
    assert stat.S_IMODE(first.stat().st_mode) == 0o700 and stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    assert place.worker_checkout(settings, tmp_path / "orch" / "workspace", "0123456789ab", 1, "worker_2") == (
        first / "job_0123456789ab" / "depth_1" / "worker_2"
    )


def test_a_folder_on_the_way_writable_by_others_is_refused_naming_it_and_the_fix(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone may rename what the user makes in it
    settings = settings_at(tmp_path / "orch", str(shared / "checkouts"))
    with pytest.raises(WorkspaceError) as caught:
        place.make_private(settings, tmp_path / "orch" / "workspace", (tmp_path / "orch",))
    said = str(caught.value)
    assert f"{shared} is writable by others (mode 777)" in said and "git.checkouts_root" in said and "chmod go-w" in said
    assert not (shared / "checkouts").exists()  # nothing made below it


def test_a_root_inside_the_orchestrators_folder_or_the_repository_is_refused(tmp_path):
    orch = tmp_path / "repo" / "tools" / "orch"
    orch.mkdir(parents=True)
    for inside in (orch / "checkouts", tmp_path / "repo" / ".checkouts"):
        settings = settings_at(orch, str(inside))
        with pytest.raises(WorkspaceError, match="would find that folder's configuration"):
            place.make_private(settings, orch / "workspace", (orch, tmp_path / "repo"))
        assert not inside.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a folder owned by another user, made as root")
def test_a_folder_owned_by_another_user_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 4242, 4242)
    settings = settings_at(tmp_path / "orch", str(theirs / "checkouts"))
    with pytest.raises(WorkspaceError, match="is owned by another user"):
        place.make_private(settings, tmp_path / "orch" / "workspace", (tmp_path / "orch",))


def test_doctor_without_a_project_view_says_where_the_checkouts_live_and_what_still_leads_to_your_checkout(tmp_path, monkeypatch):
    # Given a src-layout project installed editable, with a node_modules link to one of its own packages
    host, folder = src_layout_host(tmp_path)
    (host / "packages" / "ui").mkdir(parents=True)
    (host / "node_modules").mkdir()
    (host / "node_modules" / "ui").symlink_to(host / "packages" / "ui")
    settings = load_settings(base_dir=folder, environ={}, overrides={"git": {"checkouts_root": str(tmp_path / "state")}})
    # When doctor looks at it for a sandbox without a view (Landlock)
    report = Report(tmp_path / "c.yaml")
    _check_project(report, settings, host, sandboxed=True, view=False)
    texts = [(f.level.value, f.text) for f in report.findings]
    # Then it says where the worktrees live, that your working tree is refused to workers and gates, that the
    # gate runs the worker's code, and names the link it cannot redirect, which fails the gate
    assert texts[0][0] == "ok" and str(place.workspace_folder(settings, settings.workspace_root)) in texts[0][1]
    assert texts[1][0] == "ok" and f"are refused your working tree at {host}" in texts[1][1]
    assert texts[2][0] == "ok" and "runs the worker's code" in texts[2][1] and "PYTHONPATH" in texts[2][1]
    assert texts[3][0] == "note" and "node_modules links to the repository's own packages (ui" in texts[3][1]
    assert "fails (Permission denied) rather than testing your code" in texts[3][1] and len(texts) == 4
    # And for a repository that is the home folder (nothing of it can be refused), a note saying so instead
    monkeypatch.setenv("HOME", str(host))
    report = Report(tmp_path / "c.yaml")
    _check_project(report, settings, host, sandboxed=True, view=False)
    assert [f.level.value for f in report.findings] == ["ok", "note"], report.findings
    assert "workers and gates read your checkout there" in report.findings[1].text
    # And with a checkouts root inside the repository, a problem naming it
    inside = load_settings(base_dir=folder, environ={}, overrides={"git": {"checkouts_root": str(host / "co")}})
    report = Report(tmp_path / "c.yaml")
    _check_project(report, inside, host, sandboxed=True, view=False)
    assert [f.level.value for f in report.findings] == ["problem"] and str(host / "co") in report.findings[0].text
