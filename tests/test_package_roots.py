"""workers/package_roots.py: the package roots a repository declares for each common build backend and
those an editable install in its venv names, which a gate without a project view (Landlock) puts
first on PYTHONPATH from the worker's checkout; and Confinement.user_tree, what of the user's working
tree such a process is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.workers.confinement import _PACKAGE_ROOT, Confinement
from orchestrator.workers.package_roots import declared_roots, installed_roots
from orchestrator.workspace.layout import Workspace

from .helpers.worktree import git, make_host

needs_tomllib = pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 has no tomllib")


@needs_tomllib
@pytest.mark.parametrize(
    ("pyproject", "files", "roots"),
    [
        ('[tool.setuptools.packages.find]\nwhere = ["lib"]\n', (), ["lib"]),
        ('[tool.setuptools]\npackage-dir = {"" = "code"}\n', (), ["code"]),
        ('[tool.hatch.build.targets.wheel]\npackages = ["lib/pkg", "other/two"]\n', (), ["lib", "other"]),
        ('[tool.hatch.build.targets.wheel]\npackages = ["pkg"]\n', (), ["."]),
        ('[tool.hatch.build.targets.wheel]\nsources = ["py"]\n', (), ["py"]),
        ('[tool.hatch.build.targets.wheel.sources]\n"py" = ""\n"x" = "y"\n', (), ["py"]),
        ('[tool.hatch.build]\npackages = ["code/pkg"]\n', (), ["code"]),
        (
            '[project]\nname = "my-pkg"\n[build-system]\nbuild-backend = "flit_core.buildapi"\n',
            ("src/my_pkg/__init__.py",),
            ["src"],
        ),
        ('[project]\nname = "mod"\n[build-system]\nbuild-backend = "flit_core.buildapi"\n', ("src/mod.py",), ["src"]),
        ('[project]\nname = "mod"\n[build-system]\nbuild-backend = "flit_core.buildapi"\n', ("mod.py",), []),
        ('[tool.pdm.build]\npackage-dir = "source"\n', (), ["source"]),
        ('[tool.poetry]\npackages = [{include = "pkg", from = "lib"}, {include = "top"}]\n', (), ["lib", "."]),
        ('[tool.poetry]\npackages = [{include = "pkg", from = "../elsewhere"}, {include = "p", from = "/abs"}]\n', (), []),
        ('[project]\nname = "plain"\n', (), []),
        ("not toml [", (), []),
    ],
)
def test_each_backends_declared_package_root_is_read(tmp_path, pyproject, files, roots):
    (tmp_path / "pyproject.toml").write_text(pyproject)
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert declared_roots(tmp_path / "pyproject.toml") == roots


def test_an_editable_install_names_its_roots_inside_the_repository_only(tmp_path):
    top = tmp_path / "repo"
    venv = top / ".venv"
    site = venv / "lib" / "python3.12" / "site-packages"
    site.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (site / "_pkg.pth").write_text(f"{top / 'lib'}\n# a comment\nimport _virtualenv\n")
    (site / "top.pth").write_text(f"{top}\n")
    (site / "elsewhere.pth").write_text(f"{tmp_path / 'other'}\n{site / 'sub'}\n{top}/../repo2\nrelative/dir\n")
    (site / "__editable___pkg_0_1_finder.py").write_text(
        f"import sys\nMAPPING: dict[str, str] = {{'pkg': '{top / 'code' / 'pkg'}', 'x': '/else/x'}}\nNAMESPACES = {{}}\n"
    )
    (site / "__editable___bad_finder.py").write_text("MAPPING = {__import__('os').system('false'): 1}\n")  # never run
    assert installed_roots(top, [venv]) == ["lib", ".", "code"]  # .pth files first, each once
    assert installed_roots(top, [top / "venv"]) == []  # not a venv: nothing read


def test_under_landlock_a_process_is_refused_the_users_tree_but_what_it_needs(tmp_path, monkeypatch):
    # Given make_host's repository (the orchestrator's folder in it) in the home folder, a venv and a CLI installed in it
    monkeypatch.setenv("HOME", str(tmp_path))
    host, folder = make_host(tmp_path)
    (host / ".venv" / "bin").mkdir(parents=True)
    (host / "src" / "pkg").mkdir(parents=True)
    program = host / "tools" / ".cli" / "agent"
    program.parent.mkdir(parents=True)
    program.write_text("")
    settings = load_settings(base_dir=folder, environ={}, overrides={"orchestrator": {"claude_command": str(program)}})
    confinement = Confinement(settings, Workspace(settings.workspace_root))
    checkout = tmp_path / "checkouts" / "worker_1"
    git(host, "worktree", "add", "-q", "--detach", str(checkout))
    # Then what a process in a checkout outside is refused: every folder and file of the tree on no needed path
    folders, files = confinement.user_tree(checkout)
    assert sorted(folders) == sorted(str(host / n) for n in (".git", "src")), folders
    assert sorted(files) == sorted(str(host / n) for n in (".env", ".gitignore", "app.py"))
    assert not any(p.startswith(str(folder) + "/") for p in folders) and str(program) not in files
    # And nothing for a checkout inside the repository (a result gate's tree in the workspace there), nor
    # for a repository that holds the orchestrator's own package
    inside = settings.workspace_root / "job_x" / "result_gate" / "tree"
    git(host, "worktree", "add", "-q", "--detach", str(inside))
    assert confinement.user_tree(inside) == ([], [])
    assert Path(_PACKAGE_ROOT) / "orchestrator" == Path(__file__).resolve().parents[1] / "orchestrator"
