"""The orchestrator's environment variable names are spelled once, in ``orchestrator.protocol``,
and that is what a real worker gets."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from orchestrator import protocol

from .conftest import run_job

PACKAGE = Path(protocol.__file__).resolve().parent
NAME = re.compile(rf"{protocol.PREFIX}\w*=?\Z")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _spelled_out(path: Path) -> list[str]:
    """Every string or bytes constant in ``path`` that is an ORCHESTRATOR variable's name (or
    prefix), or code that names one (the perl shim). Prose (docstrings, messages) may name them."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in skip and isinstance(node.value, (str, bytes)):
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if NAME.match(text) or "$ENV{" + protocol.PREFIX in text:
                hits.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {text[:60]!r}")
    return hits


@pytest.mark.slow
def test_every_orchestrator_variable_name_is_spelled_only_in_the_protocol_module():
    hits = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "protocol.py" for hit in _spelled_out(path)]
    assert hits == []


def test_the_protocol_module_imports_nothing_and_names_only_orchestrator_variables():
    tree = ast.parse((PACKAGE / "protocol.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]  # the spawn helper's start-up
    names = {k: v for k, v in vars(protocol).items() if k.isupper()}
    assert names and all(isinstance(v, str) and v.startswith(protocol.PREFIX) for v in names.values())
    assert len(set(names.values())) == len(names)  # no variable has two names


def test_the_spawn_helper_script_names_only_protocol_variables():
    """orchestrator-spawn is a shell script (it cannot import protocol.py): every ORCHESTRATOR_*
    name it uses must be one the protocol module defines."""
    text = (PACKAGE / "bin" / "orchestrator-spawn").read_text(encoding="utf-8")
    used = set(re.findall(rf"{protocol.PREFIX}_[A-Z_]+", text))
    defined = {v for k, v in vars(protocol).items() if k.isupper()}
    assert used and used <= defined, used - defined


@pytest.mark.slow
def test_a_worker_gets_the_protocol_variables_by_these_names(make_engine):
    dump = ["sh", "-c", "env > seen.env", "{task}"]
    engine = make_engine(orchestrator={"worker": "command", "command": dump}, recursion={"max_depth": 2})
    job = run_job(engine, "x", tasks=["show"])
    _, (worker,) = engine.queries.snapshot(job.root_id)
    text = (engine.workspace.job_dir(job.root_id) / worker.dir_path / "seen.env").read_text()
    seen = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert (seen[protocol.JOB_ID], seen[protocol.ROOT_JOB_ID], seen[protocol.WORKER_ID]) == (job.id, job.root_id, "worker_1")
    assert (seen[protocol.DEPTH], seen[protocol.MAX_RECURSION_DEPTH], seen[protocol.ENABLE_RECURSION]) == ("0", "2", "1")
    assert seen[protocol.ATTEMPT] == "1" and seen[protocol.TAG].startswith(f"{job.root_id}.")
    assert Path(seen[protocol.WORKER_DIR]) == engine.workspace.job_dir(job.root_id) / worker.dir_path
    assert Path(seen[protocol.PYTHON]).is_file()
    assert protocol.API_URL not in seen and protocol.API_KEY not in seen  # no API in this engine: no way to recurse
