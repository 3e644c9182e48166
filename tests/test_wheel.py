"""The wheel, the orchestrator's second form: built from this folder's files (as a clone of them with a
tag of its own, vX.Y.Z), it holds every dependency the folder installs (requirements.txt's pins) and
every file the folder needs, and installed in a fresh venv it gives ``orchestrator``, whose ``init``
writes the folder into a repository the test makes, after which the README's wheel block runs there
on the built-in defaults (no AI CLI) and leaves the result branch.

Installing the wheel's dependencies from PyPI here would take minutes each run: the fresh venv gets
the wheel with ``--no-deps`` and sees this folder's ``.venv`` (the same pins, installed by
./install.sh) through a ``.pth`` line, and ``pip check`` there proves every Requires-Dist satisfied.
The folder init writes links that ``.venv`` too, as tests/helpers/scratch.py's copies do, so its
./install.sh installs nothing new. The fast tests check, without a build, that the package imports no
distribution requirements.txt does not pin and that every tracked file is the folder's or the
development's.
"""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT
from .helpers.readme import snippet
from .helpers.scratch import GIT_IDENTITY, VENV, path_without_ai_clis, run, user_shell
from .helpers.worktree import git, snapshot

TAG = "v1.2.3"
VERSION = "1.2.3"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]+\])?)==(\S+)$")
needs_venv = pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason="no .venv beside the orchestrator (./install.sh)")


def setup_constant(name: str) -> tuple[str, ...]:
    """A tuple setup.py assigns, read from its text (setup.py runs only as the build's hook)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"setup.py assigns no {name}")


def pinned() -> dict[str, str]:
    """requirements.txt as {name: version}: every line a pin (``name==version``), comments aside."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = PIN.match(line)
            assert match, f"requirements.txt: {line!r} is not pinned (name==version)"
            pins[match.group(1)] = match.group(2)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def tracked() -> list[str]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout.decode()
    return [name for name in out.split("\0") if name and (ROOT / name).exists()]


def test_every_distribution_the_package_imports_is_pinned_in_requirements():
    # Given every module the package imports outside the standard library and itself
    imported = set()
    for path in (ROOT / "orchestrator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "orchestrator"}
    # When each is mapped to the distribution that provides it here
    provided = importlib.metadata.packages_distributions()
    missing = {name for name in third_party if name not in provided}
    assert not missing, f"imported but installed by no distribution in .venv: {sorted(missing)}"
    needed = {canonical(dist) for name in third_party for dist in provided[name]}
    # Then requirements.txt (the wheel's Requires-Dist, install.sh's list) pins each one, or one that requires it
    # (werkzeug comes with flask, urllib3 with requests, anyio with mcp)
    assert needed and needed <= installed_with(pinned()), sorted(needed - installed_with(pinned()))


def installed_with(pins: dict[str, str]) -> set[str]:
    """The pinned distributions and everything they require (extras aside), transitively, as installed here."""
    seen: set[str] = set()
    todo = [canonical(name) for name in pins]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:  # required only where a marker holds (another Python, OS)
            continue
        for line in requires:
            if "extra ==" not in line:
                todo.append(canonical(re.match(r"[A-Za-z0-9._-]+", line).group(0)))
    return seen


def test_every_tracked_file_is_the_folders_or_the_orchestrators_development():
    folder, development = setup_constant("FOLDER") + setup_constant("EMPTY"), setup_constant("DEVELOPMENT")
    assert not set(folder) & set(development)
    for name in tracked():
        top = name.split("/")[0]
        assert top == "orchestrator" or name in folder or top in folder or name in development or top in development, (
            f"{name}: add it to setup.py's FOLDER (a user's folder needs it) or DEVELOPMENT (the orchestrator's own)"
        )


# The build, the install and init: real processes, once for the module.


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A clone of this repository with the working tree's files as they are now, committed and
    tagged TAG: what a release build sees."""
    src = tmp_path_factory.mktemp("wheel") / "src"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
    for name in (
        subprocess.run(["git", "-C", str(src), "ls-files", "-z"], capture_output=True, check=True).stdout.decode().split("\0")
    ):
        if name and not (ROOT / name).exists():
            (src / name).unlink()
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {**user_shell(src.parent / "home", path_without_ai_clis()), **GIT_IDENTITY}
    for argv in (["add", "-A"], ["commit", "-q", "--allow-empty", "-m", "as the working tree is"], ["tag", TAG]):
        subprocess.run(["git", "-C", str(src), *argv], check=True, env=env)
    return src


@pytest.fixture(scope="module")
def wheel(source):
    """The README's build line in the clone (``pip`` being this .venv's)."""
    line = snippet("wheel").splitlines()[0].split("  #")[0].strip()
    assert line == "pip wheel --no-deps --wheel-dir dist ."
    # (with the build tools requirements-dev.txt pins in this .venv, as pyproject.toml's: nothing fetched)
    done = subprocess.run(
        [str(VENV / "bin" / "python"), "-m", *line.split(), "--no-build-isolation"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (source / "dist").glob("orchestrator-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel):
    """A fresh venv under the test's folder with the wheel installed (its dependencies: see the module's doc)."""
    venv = wheel.parent.parent.parent / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    done = subprocess.run([*pip, "install", "-q", "--no-deps", str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def repository(path: Path) -> Path:
    """A user's project: a git repository with one commit, on main."""
    path.mkdir(parents=True)
    (path / "app.py").write_text("print('hello')\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "app")
    return path


def command(installed, cwd: Path, *words: str) -> subprocess.CompletedProcess[str]:
    env = user_shell(cwd.parent / "home", f"{installed / 'bin'}:{path_without_ai_clis()}")
    return run(cwd, ["orchestrator", *words], env)


@pytest.mark.slow
@needs_venv
def test_the_wheel_pins_requirements_and_holds_the_folders_files_and_its_tags_version(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(archive.read(metadata).decode())
        version_file = archive.read("orchestrator/_version.py").decode()
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    # the version is the clone's tag, stored in the package
    assert wheel.name.startswith(f"orchestrator-{VERSION}-") and meta["Version"] == VERSION
    assert f"VERSION = {VERSION!r}" in version_file
    assert "orchestrator = orchestrator.cli.portable:main" in entry_points
    # Requires-Dist is requirements.txt, pin for pin (the test extra aside)
    required = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(required) == sorted(f"{name}=={version}" for name, version in pinned().items())
    # every tracked file of the package, its data included, and every file of the folder beside it
    folder = setup_constant("FOLDER") + setup_constant("EMPTY")
    for name in tracked():
        if name.startswith("orchestrator/"):
            assert name in names, name
        elif name in folder or name.split("/")[0] in folder:
            assert f"orchestrator/_folder/{name}" in names, name
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "orchestrator/_folder/tests/"))]


@pytest.mark.slow
@needs_venv
def test_the_installed_command_inits_a_folder_in_a_repository_and_refuses_what_it_must(installed, tmp_path):
    python = str(installed / "bin" / "python")
    env = user_shell(tmp_path / "home", path_without_ai_clis())
    where = run(tmp_path, [python, "-c", "import orchestrator; print(orchestrator.__file__)"], env)
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr
    checked = run(tmp_path, [python, "-m", "pip", "check"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # every Requires-Dist satisfied
    assert command(installed, tmp_path, "--version").stdout == f"orchestrator {VERSION}\n"

    # a directory in no git repository: refused, nothing written
    plain = tmp_path / "plain"
    plain.mkdir()
    refused = command(installed, plain, "init")
    assert refused.returncode == 2 and "is not in a git repository" in refused.stderr and "git init" in refused.stderr
    assert list(plain.iterdir()) == []

    # from a subfolder of a repository: the folder at the repository's top, tools/orchestrator/
    repo = repository(tmp_path / "project")
    (repo / "src").mkdir()
    before = snapshot(repo, repo / "tools" / "orchestrator")
    done = command(installed, repo / "src", "init")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = repo / "tools" / "orchestrator"
    assert f"wrote orchestrator {VERSION} into {folder}" in done.stdout
    for name in ("install.sh", "quick-start.sh", "orchestrator.sh", "check-status.sh", "config.template.yaml", ".gitignore"):
        assert (folder / name).is_file(), name
    for program in ("install.sh", "quick-start.sh", "orchestrator.sh", "check-status.sh", "orchestrator/bin/orchestrator-spawn"):
        assert (folder / program).stat().st_mode & 0o111, program
    assert (folder / "orchestrator" / "_version.py").read_text().endswith(f"VERSION = {VERSION!r}\n")
    assert not (folder / "orchestrator" / "_folder").exists() and not list(folder.rglob("__pycache__"))
    # the user's repository: only the new untracked folder (head, index, refs, stash, files unchanged)
    after = snapshot(repo, folder)
    assert git(repo, "status", "--porcelain") == "?? tools/\n"
    assert {k: v for k, v in after.items() if k not in ("files", "status")} == {
        k: v for k, v in before.items() if k not in ("files", "status")
    }
    assert {k: v for k, v in after["files"].items() if not k.startswith("tools/")} == before["files"]

    # init again: the same version is there, nothing written
    again = command(installed, repo, "init")
    assert again.returncode == 0 and "already holds orchestrator 1.2.3: nothing written" in again.stdout

    # a folder of another version: init refuses naming both, and so does any other command there
    (folder / "orchestrator" / "_version.py").write_text("VERSION = '0.9.0'\n")
    refused = command(installed, repo, "init", "tools/orchestrator")
    assert refused.returncode == 2 and "holds orchestrator 0.9.0; this command is orchestrator 1.2.3" in refused.stderr
    other = command(installed, folder / "docs", "status")
    assert other.returncode == 2 and "is orchestrator 0.9.0; this command is orchestrator 1.2.3" in other.stderr
    assert f"{folder / 'orchestrator.sh'} status" in other.stderr

    # a folder that is not the orchestrator's: refused
    (repo / "elsewhere").mkdir()
    (repo / "elsewhere" / "notes.txt").write_text("mine\n")
    refused = command(installed, repo, "init", "elsewhere")
    assert refused.returncode == 2 and "exists and is not an orchestrator folder" in refused.stderr
    assert [p.name for p in (repo / "elsewhere").iterdir()] == ["notes.txt"]


@pytest.mark.slow
@needs_venv
def test_the_readmes_wheel_block_inits_a_repository_and_its_first_command_leaves_the_result_branch(installed, tmp_path):
    lines = [line.split("  #")[0].strip() for line in snippet("wheel").splitlines()]
    assert lines[1] == "pipx install dist/orchestrator-*.whl"  # done by the fixtures: the build, then a fresh venv
    assert lines[2].startswith("cd ") and lines[2].endswith(" && orchestrator init")
    repo = repository(tmp_path / "my project")
    env = user_shell(tmp_path / "home", f"{installed / 'bin'}:{path_without_ai_clis()}")
    before = snapshot(repo, repo / "tools" / "orchestrator")
    init = run(tmp_path, ["bash", "-c", f"cd {str(repo)!r} && orchestrator init"], env)
    assert init.returncode == 0, init.stdout + init.stderr
    folder = repo / "tools" / "orchestrator"
    (folder / ".venv").symlink_to(VENV)  # what its ./install.sh makes: this folder's pins (module doc)
    try:
        done = run(repo, ["bash", "-c", lines[3]], env, timeout=600)
    finally:  # quick-start leaves the folder's server running, as the README says
        run(folder, ["./quick-start.sh", "--stop"], env)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    job_id = re.search(r"^job ([0-9a-f]{12}): \d+ subtask\(s\), worker kind simulated$", done.stdout, flags=re.M).group(1)
    assert f"Job {job_id} completed" in out and f"take it: git merge orchestrator/{job_id}/result" in out, out
    # the result branch is in the user's repository, with the workers' files on top of main
    result = f"orchestrator/{job_id}/result"
    changed = git(repo, "diff", "--name-only", "main", result).split()
    assert changed and not [name for name in changed if name.startswith("tools/")], changed
    assert git(repo, "merge-base", "main", result) == git(repo, "rev-parse", "main")  # on top of main
    after = snapshot(repo, folder)
    assert after["head"] == before["head"] and after["index"] == before["index"] and after["stash"] == before["stash"]
    assert {k: v for k, v in after["files"].items() if not k.startswith("tools/")} == before["files"]
    assert git(repo, "status", "--porcelain") == "?? tools/\n"
