"""Each folder's face: its ``__init__.py`` docstring ends with a ``Modules:`` list that names exactly the
modules and subfolders beside it (a module added, moved or renamed fails here until its folder says so),
and every ``name.py`` its docstring mentions exists. An entry names a module as ``name`` (a folder as
``name/``) at the start of a bullet or after ``; ``, one or more joined by ``, ``, then a colon:

    - ``steps``: after-attempt steps; ``gates``: quality gates
    - ``tasks_routes``, ``tasks_openapi``: Kage Bunshin's task API

And docs/architecture.md's "The life of a job" names modules (``folder/module``, ``module.function``)
that exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "orchestrator"
ENTRY = re.compile(r"(?:^- |; )((?:``\w+/?``(?:, |,\n\s*)?)+):", re.M)
MENTIONED_FILE = re.compile(r"(?<![\w/.-])([a-z_][\w/]*)\.py\b")


def folders() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts)


def present(folder: Path) -> set[str]:
    """The modules and subfolders (packages) beside ``folder``'s ``__init__.py``."""
    modules = {p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__", "_version")}
    return modules | {f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").is_file()}


def docstring(folder: Path) -> str:
    return ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))) or ""


def named(text: str) -> set[str]:
    """The modules a docstring's ``Modules:`` part names (the entries' heads)."""
    _, found, part = text.partition("\nModules:")
    assert found, "no 'Modules:' part"
    return {name for head in ENTRY.findall(part) for name in re.findall(r"``(\w+/?)``", head)}


def test_every_folders_docstring_names_exactly_the_modules_beside_it():
    wrong = {}
    for folder in folders():
        where = str(folder.relative_to(ROOT))
        try:
            names = named(docstring(folder))
        except AssertionError as exc:
            wrong[where] = str(exc)
            continue
        missing, gone = present(folder) - names, names - present(folder)
        if missing or gone:
            wrong[where] = f"not named: {sorted(missing)}; named but not there: {sorted(gone)}"
    assert not wrong, wrong
    assert len(folders()) > 20


def test_every_file_a_folders_docstring_mentions_exists():
    # a bare name is the folder's module (or api_server.py beside the package); a path is from the package
    stale = []
    for folder in folders():
        for name in MENTIONED_FILE.findall(docstring(folder)):
            places = (PACKAGE / f"{name}.py",) if "/" in name else (folder / f"{name}.py", ROOT / f"{name}.py")
            if not any(place.is_file() for place in places):
                stale.append(f"{folder.relative_to(ROOT)}: {name}.py")
    assert not stale, stale


def test_the_check_reads_entries_as_written():
    text = "Prose ``core`` here.\n\nModules:\n\n- ``a``: x ``nope``, ``no``: y; ``b``, ``c``: z\n- ``d/``, ``e``,\n  ``f``: w"
    assert named(text) == {"a", "b", "c", "d/", "e", "f"}


def test_the_life_of_a_job_names_modules_and_functions_that_exist():
    # docs/architecture.md's walk through one request: each folder/module (and module.function) it names is there
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The life of a job", 1)[1].split("\n## ", 1)[0]
    folders_ = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    named = re.findall(r"(?<![\w/.<-])([a-z_]+)/([a-z_]+)(?:\.([a-z_]+))?", section)
    checked = [(f, m, attr) for f, m, attr in named if f in folders_]
    assert len(checked) > 40, checked
    wrong = []
    for folder, module, attr in checked:
        path = PACKAGE / folder / f"{module}.py"
        if not path.is_file() and not (PACKAGE / folder / module / "__init__.py").is_file():
            wrong.append(f"{folder}/{module}")
        elif attr and not re.search(rf"^\s*(?:def|class) {attr}\b", path.read_text(encoding="utf-8"), re.M):
            wrong.append(f"{folder}/{module}.{attr}")
    assert not wrong, wrong
