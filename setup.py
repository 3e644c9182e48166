"""The wheel's one build hook: the portable folder's files beside the package, and the version, ride in it.

Everything else about the build is in pyproject.toml. ``orchestrator init`` (orchestrator/cli/portable.py)
writes the folder from the installed package: the package itself, and beside it what FOLDER names,
which this hook copies into the wheel as ``orchestrator/_folder/``. The version setuptools-scm took from
the orchestrator's own git tags is written into ``orchestrator/_version.py`` of the wheel only (the
source tree is left as it is): the installed command and the folders it writes carry it, and nothing
reads a version from a repository at run time. The dependencies are requirements.txt's pins.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PACKAGE = "orchestrator"
PAYLOAD = "_folder"  # orchestrator/_folder/ in the wheel: the folder's files outside the package
VERSION_FILE = "_version.py"
# The folder's own files and folders beside the package: what a user's copy needs to install and run
# (the README's commands), read and configure (the docs, the examples, the template, .gitignore).
FOLDER = (
    ".gitignore",
    "README.md",
    "README_FOR_AI.md",
    "api_server.py",
    "check-status.sh",
    "config.template.yaml",
    "install.sh",
    "orchestrator.sh",
    "quick-start.sh",
    "requirements.txt",
    "docs",
    "examples",
)
# Made empty in the wheel, never copied: the folder's workspace/ is there from the start (where a folder in use
# keeps its jobs, which no build takes).
EMPTY = ("workspace/.gitkeep",)
# What a clone has that the folder leaves out: the orchestrator's own development (its tests and their
# tools, benchmarks, CI, this build). tests/test_wheel.py checks every tracked file is in one of the two.
DEVELOPMENT = (".ci", "bench", "tests", "conftest.py", "pyproject.toml", "setup.py", "requirements-dev.txt")
# Made by using or building a folder, never part of one.
LEFT_OUT = ("__pycache__", "build", "dist", ".pytest_cache")


def requirements(path: Path) -> list[str]:
    """requirements.txt's pins as Requires-Dist: each line without its comment."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def _left_out(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n in LEFT_OUT or n.endswith((".egg-info", ".pyc"))]


class BuildWithFolder(build_py):
    """setuptools' build_py, then the folder's files and the version file into the built package."""

    def run(self) -> None:
        super().run()
        package = Path(self.build_lib) / PACKAGE
        payload = package / PAYLOAD
        shutil.rmtree(payload, ignore_errors=True)
        for name in FOLDER:
            source, target = HERE / name, payload / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=_left_out)
            else:
                shutil.copy2(source, target)
        for name in EMPTY:
            (payload / name).parent.mkdir(parents=True, exist_ok=True)
            (payload / name).write_bytes(b"")
        version = self.distribution.get_version()
        (package / VERSION_FILE).write_text(
            f'"""Written by the build (setup.py) from the orchestrator\'s git tags."""\n\nVERSION = {version!r}\n',
            encoding="utf-8",
        )


if __name__ == "__main__":
    setup(install_requires=requirements(HERE / "requirements.txt"), cmdclass={"build_py": BuildWithFolder})
