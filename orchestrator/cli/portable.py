"""The installed ``orchestrator`` command (the wheel's, from ``pipx install`` or ``uv tool install``).

``orchestrator init [DIR]`` writes the portable folder, the product's first form, into a git
repository: the package as installed (its ``_version.py`` with it) and, beside it, the folder's own
files, which the build put in ``orchestrator/_folder/`` (setup.py). Every other command runs in the
folder found from the current directory, by that folder's own ``orchestrator.sh`` (its ``.venv``,
``config.yaml`` and ``workspace/``), and only when the folder is this command's version: a folder of
another version is named with both versions, never run with this one's code.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import UNRECORDED, __version__, folder_version
from ..errors import EXIT_OK, EXIT_USAGE
from ..git.repository import toplevel
from .failures import ClientCode, CommandFailed, report

PACKAGE = Path(__file__).resolve().parent.parent
PAYLOAD = PACKAGE / "_folder"  # the folder's files beside the package, as the build copied them
# Where `init` writes the folder in the repository when no DIR is given: the README's place for it.
DEFAULT_PLACE = Path("tools") / "orchestrator"
LAUNCHER = "orchestrator.sh"
# Never copied from the installed package into a folder: the payload (it goes beside the package) and
# what Python made there.
NOT_COPIED = ("_folder", "__pycache__")

USAGE = f"""usage: orchestrator init [DIR]     write the orchestrator folder into a git repository
                                  (DIR default: {DEFAULT_PLACE}/ at the top of the repository holding this directory)
       orchestrator COMMAND ...    run COMMAND in the orchestrator folder found from here
                                  (this directory or one above it, else {DEFAULT_PLACE}/ of this repository)
                                  with that folder's ./orchestrator.sh: see `orchestrator --help` there
       orchestrator --version

This is orchestrator {__version__}."""


class Refused(CommandFailed):
    """What the installed command will not do, why, and the fix (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(ClientCode.INVALID_ARGUMENT, message, EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        if not words or words[0] in ("-h", "--help"):
            print(USAGE)
            return EXIT_OK if words else EXIT_USAGE
        if words == ["--version"]:
            print(f"orchestrator {__version__}")
            return EXIT_OK
        if words[0] == "init" and words[1:] in (["-h"], ["--help"]):
            print(USAGE)
            return EXIT_OK
        if words[0] == "init":
            return init(_init_target(words[1:]), Path.cwd())
        run_in_folder(Path.cwd(), words)
    except Refused as refused:
        return report(refused, as_json=False)
    return EXIT_OK  # not reached: run_in_folder replaces this process


def _init_target(args: list[str]) -> Path | None:
    if len(args) > 1 or (args and args[0].startswith("-")):
        raise Refused(f"init takes one folder at most, and no option: {' '.join(args)}\n{USAGE}")
    return Path(args[0]) if args else None


def init(target: Path | None, cwd: Path) -> int:
    """Write the folder at ``target`` (relative to ``cwd``; default DEFAULT_PLACE at the top of the
    repository holding ``cwd``), which must lie in a git repository and not hold another folder."""
    if not PAYLOAD.is_dir():
        raise Refused(
            f"{PACKAGE.parent} is the orchestrator's source, not an installed wheel: it has no folder files to write "
            "(orchestrator/_folder/). That checkout is itself the folder: copy it, or build the wheel (pip wheel .)."
        )
    dest = (cwd / target).absolute() if target else _default_dest(cwd)
    repository = _repository_of(dest)
    if dest.exists() and not _is_empty_dir(dest):
        return _already_there(dest)
    _write_folder(dest)
    shown = os.path.relpath(dest, cwd)
    print(f"wrote orchestrator {__version__} into {dest} (in the git repository {repository})")
    print(f'next: cd {shown} && ./install.sh && ./quick-start.sh "your request"')
    return EXIT_OK


def _default_dest(cwd: Path) -> Path:
    top = toplevel(cwd)
    if top is None:
        raise Refused(
            f"{cwd} is not in a git repository: the orchestrator's workers work in git worktrees of the repository "
            "its folder sits in. Run `git init` (and commit) there first, or name a folder inside a repository: "
            "orchestrator init path/to/repo/tools/orchestrator"
        )
    return top / DEFAULT_PLACE


def _repository_of(dest: Path) -> Path:
    """The top of the git repository ``dest`` will lie in (found from its nearest existing folder)."""
    anchor = next((p for p in (dest, *dest.parents) if p.exists()), Path("/"))
    top = toplevel(anchor) if anchor.is_dir() else None
    if top is None:
        raise Refused(
            f"{dest} would not be in a git repository ({anchor} is in none): the orchestrator's workers work in git "
            "worktrees of the repository its folder sits in. Run `git init` (and commit) in your project first, "
            "or name a folder inside it."
        )
    return top


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _already_there(dest: Path) -> int:
    if not is_folder(dest):
        raise Refused(f"{dest} exists and is not an orchestrator folder: name another DIR, or remove it first")
    found = folder_version(str(dest / "orchestrator"))
    if found == __version__ and found != UNRECORDED:
        print(f"{dest} already holds orchestrator {found}: nothing written")
        return EXIT_OK
    raise Refused(
        f"{dest} holds orchestrator {found}; this command is orchestrator {__version__}. init writes no folder over "
        "another version's: its config.yaml and workspace/ are your settings, key and jobs. Keep using it with its own "
        f"{dest / LAUNCHER}, or move it aside (mv {dest} {dest}.old), run orchestrator init again, and copy its "
        "config.yaml across."
    )


def _write_folder(dest: Path) -> None:
    """The package and the folder's files, assembled beside ``dest`` and renamed into place: an
    interrupted init leaves no half-written folder at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.init-{os.getpid()}"
    try:
        shutil.copytree(PACKAGE, staging / "orchestrator", ignore=lambda _, names: [n for n in names if n in NOT_COPIED])
        shutil.copytree(PAYLOAD, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        _mark_programs_executable(staging)
        if dest.exists():
            dest.rmdir()  # empty (checked): the folder takes its place
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mark_programs_executable(folder: Path) -> None:
    """Every file that starts with ``#!`` (the scripts, orchestrator/bin/*) executable, whatever
    modes the installer kept."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as file:
                if file.read(2) == b"#!":
                    path.chmod(path.stat().st_mode | 0o111)


def is_folder(path: Path) -> bool:
    """Whether ``path`` is an orchestrator folder: its launcher beside its package."""
    return (path / LAUNCHER).is_file() and (path / "orchestrator" / "__init__.py").is_file()


def find_folder(cwd: Path) -> Path | None:
    """The folder a command here means: ``cwd`` or the nearest folder above it that is one, else
    DEFAULT_PLACE at the top of the repository holding ``cwd``."""
    for path in (cwd, *cwd.parents):
        if is_folder(path):
            return path
    top = toplevel(cwd)
    return top / DEFAULT_PLACE if top is not None and is_folder(top / DEFAULT_PLACE) else None


def run_in_folder(cwd: Path, words: list[str]) -> None:
    """Replace this process with the folder's own launcher running ``words``, when the folder found
    from ``cwd`` is this version's."""
    folder = find_folder(cwd)
    if folder is None:
        raise Refused(
            f"no orchestrator folder in {cwd}, above it, or at {DEFAULT_PLACE}/ of its repository: write one with "
            "`orchestrator init`, or run this from inside a folder"
        )
    found = folder_version(str(folder / "orchestrator"))
    if found != __version__ or found == UNRECORDED:
        raise Refused(
            f"{folder} is orchestrator {found}; this command is orchestrator {__version__}, which runs only a folder of "
            f"its own version. Run the folder's own launcher instead: {folder / LAUNCHER} {' '.join(words)}"
        )
    launcher = str(folder / LAUNCHER)
    os.execv(launcher, [launcher, *words])
