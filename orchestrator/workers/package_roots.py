"""Where a repository's Python packages are imported from, relative to its top: what a gate without a
project view (Landlock, Seatbelt) puts first on ``PYTHONPATH`` from the worker's checkout
(confinement.py ``project_imports``), so that an editable install of the repository runs the worker's
code rather than the user's checkout's.

Two sources, both the user's (the repository's top and its environment folders, never the worker's
checkout): what ``pyproject.toml`` declares for each common build backend (:func:`declared_roots`), and
what an editable install in one of the repository's venvs names inside it (:func:`installed_roots`: a
``.pth`` line, setuptools' finder ``MAPPING``). Every root is relative, without ``..``.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

_FINDER_MAPPING = re.compile(r"^MAPPING\s*(?::[^=]*)?=\s*(\{.*?\})\s*$", re.MULTILINE | re.DOTALL)


def declared_roots(pyproject: Path) -> list[str]:
    """The package roots ``pyproject`` declares: setuptools' ``package-dir`` ``""`` and
    ``packages.find.where``; hatch's wheel (or build) ``packages`` (each one's parent) and ``sources``
    (a list, or a table whose prefix is removed); flit's module under ``src/``; pdm's ``package-dir``;
    poetry's ``packages`` ``from`` (default the top). None where it declares none or cannot be read
    (Python 3.10 has no tomllib: then src/ or the top, as for an undeclared layout)."""
    try:
        data = importlib.import_module("tomllib").loads(pyproject.read_text(encoding="utf-8"))
    except (ImportError, OSError, ValueError):
        return []
    tool = _table(data, "tool")
    given: list[object] = []
    setuptools = _table(tool, "setuptools")
    package_dir = setuptools.get("package-dir")
    if isinstance(package_dir, dict) and isinstance(package_dir.get(""), str):
        given.append(package_dir[""])
    where = _table(_table(setuptools, "packages"), "find").get("where")
    given.extend(where if isinstance(where, list) else [])
    hatch = _table(tool, "hatch")
    for build in (_table(_table(_table(hatch, "build"), "targets"), "wheel"), _table(hatch, "build")):
        packages = build.get("packages")
        given.extend(os.path.dirname(str(p).rstrip("/")) or "." for p in _strings(packages))
        sources = build.get("sources")
        given.extend(_strings(sources))
        if isinstance(sources, dict):  # {"lib" = ""}: lib/pkg installs as pkg; another target is no root
            given.extend(prefix for prefix, target in sources.items() if target == "")
    backend = str(_table(data, "build-system").get("build-backend", ""))
    module = _table(_table(tool, "flit"), "module").get("name") or _table(data, "project").get("name")
    if backend.startswith("flit") and isinstance(module, str) and module:  # flit finds src/<module> itself
        name, top = module.replace("-", "_"), pyproject.parent
        if (top / "src" / name).is_dir() or (top / "src" / f"{name}.py").is_file():
            given.append("src")
    given.append(_table(_table(tool, "pdm"), "build").get("package-dir"))
    poetry = _table(tool, "poetry").get("packages")
    if isinstance(poetry, list):
        given.extend(str(p.get("from", ".")) for p in poetry if isinstance(p, dict) and isinstance(p.get("include"), str))
    return _relative(given)


def installed_roots(top: Path, venvs: Iterable[Path]) -> list[str]:
    """The folders inside ``top`` an editable install in one of ``venvs`` imports from, relative to
    ``top``: each ``.pth`` line naming a folder there (setuptools' ``__editable__`` for a src layout,
    hatch, flit's ``--pth-file``, pdm, poetry, a plain ``.pth`` someone wrote) and the parent of each
    package setuptools' editable finder maps there. Nothing inside a venv (its own site folders)."""
    base = os.path.realpath(top)
    named: list[str] = []
    for venv in venvs:
        if not (venv / "pyvenv.cfg").is_file():
            continue
        for site in sorted(venv.glob("lib*/python*/site-packages")):
            for pth in sorted(site.glob("*.pth")):
                named += [line.strip() for line in _text(pth).splitlines() if line.strip() and not _code_line(line)]
            for finder in sorted(site.glob("__editable___*_finder.py")):
                named += [os.path.dirname(str(p).rstrip("/")) for p in _finder_mapping(_text(finder))]
    venv_dirs = [os.path.realpath(v) for v in venvs]
    found = []
    for path in named:
        if not os.path.isabs(path):
            continue
        real = os.path.realpath(path)
        if _below(real, base) and not any(_below(real, v) for v in venv_dirs):
            found.append(os.path.relpath(real, base))
    return _relative(found)


def _finder_mapping(text: str) -> list[str]:
    """The paths of setuptools' editable finder's ``MAPPING`` (a literal dict: read, never run)."""
    match = _FINDER_MAPPING.search(text)
    try:
        mapping = ast.literal_eval(match.group(1)) if match else {}
    except (ValueError, SyntaxError):
        return []
    return [v for v in mapping.values() if isinstance(v, str)] if isinstance(mapping, dict) else []


def _code_line(line: str) -> bool:
    """A ``.pth`` line that site runs (``import ...``) or a comment: no path."""
    stripped = line.lstrip()
    return stripped.startswith(("#", "import ", "import\t"))


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _table(data: object, key: str) -> dict:
    value = data.get(key, {}) if isinstance(data, dict) else {}
    return value if isinstance(value, dict) else {}


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _relative(given: Sequence[object]) -> list[str]:
    """Each relative root once, normalised, without ``..`` (never a path outside the repository)."""
    out: list[str] = []
    for g in given:
        if isinstance(g, str) and g and not os.path.isabs(g) and ".." not in Path(g).parts:
            root = os.path.normpath(g)
            if root not in out:
                out.append(root)
    return out


def _below(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
