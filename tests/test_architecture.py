"""The package's shape: its folders are its layers, and imports point one way (down the folders,
no cycle between modules or between folders, imports inside functions included). Read from the
source with ``ast``: nothing is imported, so a cycle that only bites at run time (an import
inside a function) is found too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"
# The one writer of statuses and worker phases (see its docstring for the tables).
STATUS_WRITER = "orchestrator.states"
STATE_ATTRIBUTES = ("status", "phase")
# Classes whose own ``self.status`` / ``self.phase`` is a record's or a held worker's state:
# only states.py may write those too. Any other class's ``self.status`` is its own business
# (an HTTP response's status code, say).
STATEFUL_CLASSES = {"JobRecord", "WorkerRecord", "LiveWorker"}


def _module_name(path: Path) -> str:
    parts = ["orchestrator", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The orchestrator modules ``name`` imports anywhere in its source (top level, in functions,
    under TYPE_CHECKING), relative imports resolved. ``from . import x`` counts as importing the
    module ``x`` when there is one, else the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # "import orchestrator.api.client" imports the named module (and its packages, which
            # are its parents, never its dependents: they do not form a cycle with it).
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("orchestrator") and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted
    list: every cycle lies inside one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """The shortest cycle through the component's first module, for the failure message (a -> b -> a)."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The checker itself: a cycle closed only by an import inside a function is found."""
    import textwrap

    graph_of = {}
    for name, source in {
        "orchestrator.a": "from .b import x\n",
        "orchestrator.b": "def f():\n    from . import a\n    import orchestrator.c\n",
        "orchestrator.c": "x = 1\n",
    }.items():
        path = tmp_path / f"{name.rpartition('.')[2]}.py"
        path.write_text(textwrap.dedent(source))
        graph_of[name] = path
    known = set(graph_of)
    graph = {name: _imports(name, path, known) for name, path in graph_of.items()}
    assert graph == {
        "orchestrator.a": {"orchestrator.b"},
        "orchestrator.b": {"orchestrator.a", "orchestrator.c"},
        "orchestrator.c": set(),
    }
    assert find_cycles(graph) == [["orchestrator.a", "orchestrator.b"]]


@pytest.mark.slow
def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "orchestrator.engine.core" in graph and graph["orchestrator.engine.core"], "the graph is empty: the parser is broken"
    cycles = find_cycles(graph)
    shown = [
        f"  {' -> '.join(_one_cycle(graph, c))}; the imports among {', '.join(c)}: "
        + ", ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a] & set(c)))
        for c in cycles
    ]
    assert not cycles, "import cycles (move the shared piece down a layer):\n" + "\n".join(shown)


def state_writes(source: str) -> list[str]:
    """Every assignment to a ``.status`` or ``.phase`` attribute in ``source`` (plain, augmented,
    annotated, in a tuple, or by ``setattr``), as "line N: text", except a class's own
    ``self.status`` when the class is not one of STATEFUL_CLASSES."""
    tree = ast.parse(source)
    owner: dict[ast.AST, str] = {}
    for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
        for node in ast.walk(cls):
            owner[node] = cls.name  # walked outer classes first: the innermost class wins
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in STATE_ATTRIBUTES
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
            continue
        else:
            continue
        while any(isinstance(t, (ast.Tuple, ast.List, ast.Starred)) for t in targets):
            flat: list[ast.expr] = []
            for t in targets:
                flat.extend(t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t.value] if isinstance(t, ast.Starred) else [t])
            targets = flat
        for target in targets:
            if not isinstance(target, ast.Attribute) or target.attr not in STATE_ATTRIBUTES:
                continue
            own = isinstance(target.value, ast.Name) and target.value.id == "self"
            if own and owner.get(node) not in STATEFUL_CLASSES:
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_state_write_checker_finds_every_form_of_write():
    """The checker itself: each way of writing a status is found; a non-record's own status is not."""
    source = """
def f(job, rec, live, copy):
    job.status = 1
    rec.status, rec.ended_at = 2, 3
    live.phase = 4
    copy.status: int = 5
    (a, (b, copy.status)) = 6, (7, 8)
    setattr(job, "status", 9)
    job.state = 10
class Response:
    def __init__(self):
        self.status, self.reason = 200, "OK"
class WorkerRecord:
    def reset(self):
        self.status = 0
"""
    lines = [w.split(":")[0] for w in state_writes(source)]
    assert lines == ["line 3", "line 4", "line 5", "line 6", "line 7", "line 8", "line 15"], state_writes(source)


@pytest.mark.slow
def test_only_states_writes_a_status_or_a_phase():
    """Every status and worker-phase change goes through states.py, which checks it against its
    transition tables: no other module assigns ``.status`` or ``.phase`` on a record."""
    offenders = {}
    for name, path in _modules().items():
        if name == STATUS_WRITER:
            continue
        writes = state_writes(path.read_text(encoding="utf-8"))
        if writes:
            offenders[name] = writes
    assert "orchestrator.states" in _modules(), "states.py is missing"
    assert state_writes(_modules()[STATUS_WRITER].read_text(encoding="utf-8")), "states.py writes no status: the checker is blind"
    assert not offenders, (
        f"status or phase written outside states.py (use states.set_job_status, set_worker_status or set_phase): {offenders}"
    )


def _mentions_any(hint: object) -> bool:
    import typing

    return hint is typing.Any or any(_mentions_any(arg) for arg in typing.get_args(hint))


def test_the_engine_s_public_interface_has_no_any():
    import inspect
    import typing

    from orchestrator.engine.core import Engine

    loose = []
    for name, member in inspect.getmembers(Engine, inspect.isfunction):
        if name.startswith("_") and name != "__init__":
            continue
        hints = typing.get_type_hints(member)
        loose += [f"{name}({param})" for param, hint in hints.items() if _mentions_any(hint)]
        missing = [p for p in inspect.signature(member).parameters if p != "self" and p not in hints]
        loose += [f"{name}({param}: no type)" for param in missing]
    assert not loose, f"the engine's public interface is typed loosely: {loose}"
    assert _mentions_any(dict[str, typing.Any]) and not _mentions_any(dict[str, int]), "the check is blind"


# The package's layers, lowest first: one line per folder of orchestrator/. A module imports
# its own folder, a lower one, or the top level (the pure bottom: errors, models, states, events,
# protocol, clock, failpoints), never a higher folder. The top level imports only itself and
# config (a record's typed job config); the entry points (``__main__``, and ``testing``: an engine on fakes for users' tests) import anything.
LAYERS = [
    "network",  # a sandboxed worker's way out: the allow-list policy, the proxy, an attempt's listeners
    "config",  # settings: defaults < config.yaml < environment < a job's own config
    "workspace",  # the on-disk layout, records, logs, durable writes
    "process",  # the one door to the OS: processes, /proc, cgroups, sandbox, the executor seam
    "git",  # git commands, refs, the host repository, commits, merges, diffs
    "audit",  # the signed record of a run (RECORD.json), its key, and its verification
    "reports",  # records turned into text: reports, analytics, the status document, metrics
    "workers",  # worker kinds (adapters), a worker's environment, sandbox choice, roles, prompts
    "planner",  # a request split into tasks, and the task graph
    "selection",  # candidates and choosing among them
    "checkouts",  # where a worker works: the seam, worktrees, bootstrap, path locks in a shared folder
    "retention",  # how long job trees, worktrees and branches are kept, and their deletion
    "quality",  # what judges a worker's work: after-attempt steps, gates, ownership, test runs
    "delivery",  # what takes work to its result: integration, landing, resolving, approval, publishing
    "index",  # the queryable task history (SQLite or PostgreSQL)
    "webhooks",  # outgoing webhooks and callbacks
    "cluster",  # workers on several machines (Redis and RQ)
    "engine",  # jobs, their workers and every state change
    "dashboard",  # the web dashboard's pages
    "api",  # the HTTP API and its Python client
    "cli",  # the programs: command line, server, spawn and lock helpers, the MCP server
]
# Entry points above every folder: the command line, the fakes shipped for users' tests (an engine
# on them), and the programs a worker runs (each its own process, started by its kind's argv; kept
# beside the worker kinds they serve, and free to use a higher folder, as the simulated worker uses
# the offline planner to decide whether its task splits).
ENTRY_POINTS = {
    "orchestrator.__main__",
    "orchestrator.testing",
    "orchestrator.workers.simulated_worker",
    "orchestrator.workers.anthropic_worker",
}


def _folder_of(module: str) -> str | None:
    """The top-level folder a module lives in; None for a module of the top level itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else None


def _folders() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def _upward(imports: dict[str, set[str]]) -> list[str]:
    """Every import that points up the layers (or from the top level into a folder but config)."""
    found = []
    for module, targets in sorted(imports.items()):
        if module in ENTRY_POINTS:
            continue
        here = _folder_of(module)
        for target in sorted(targets):
            there = _folder_of(target)
            if there is None or there == here:
                continue
            if here is None and module != "orchestrator":
                if there != "config":
                    found.append(f"{module} (top level) imports {target} ({there}/)")
            elif here is not None and LAYERS.index(there) > LAYERS.index(here):
                found.append(f"{module} ({here}/) imports {target} ({there}/, a higher layer)")
    return found


def test_every_folder_is_a_layer():
    assert sorted(LAYERS) == _folders(), "LAYERS must name every folder of orchestrator/, once each"


def test_imports_point_down_the_folders():
    assert not _upward(import_graph()), "imports pointing up the layers: " + "; ".join(_upward(import_graph()))
    # The checker sees an upward import when there is one.
    assert _upward(
        {"orchestrator.models": {"orchestrator.engine.core"}, "orchestrator.git.invocation": {"orchestrator.cli.main"}}
    ) == [
        "orchestrator.git.invocation (git/) imports orchestrator.cli.main (cli/, a higher layer)",
        "orchestrator.models (top level) imports orchestrator.engine.core (engine/)",
    ]


def test_no_import_cycle_between_folders():
    """Each folder (and each top-level module) as one node: the graph between them has no cycle."""
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if module in ENTRY_POINTS or module == "orchestrator":
            continue
        node = _folder_of(module) or module
        graph.setdefault(node, set())
        graph[node] |= {_folder_of(t) or t for t in targets} - {node}
    for node in list(graph):
        graph[node] = {t for t in graph[node] if t in graph}
    assert "engine" in graph and graph["engine"], "the folder graph is empty: the parser is broken"
    assert not find_cycles(graph), f"import cycles between folders: {find_cycles(graph)}"


def test_the_readme_maps_every_folder():
    """The README's Architecture section is a map of the folders, one line each: none is missing."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Architecture")
    section = readme[start : readme.find("\n## ", start + 1)]
    missing = [folder for folder in _folders() if f"{folder}/" not in section]
    assert not missing, f"folders missing from the README's Architecture map: {missing}"


def test_every_git_the_orchestrator_starts_goes_through_its_pinned_runners():
    """git/invocation.py (outside a sandbox) and git/sandboxed.py (on a worker's checkout): no other module
    builds a git argv (a list or tuple that starts with "git"), so no git runs without the pins (no
    hook, fsmonitor or submodule command of whatever config git reads)."""
    root = Path(__file__).resolve().parent.parent / "orchestrator"
    allowed = {root / "git" / "invocation.py", root / "git" / "sandboxed.py"}
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
                first = node.elts[0]
                if isinstance(first, ast.Constant) and first.value == "git" and path not in allowed:
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []


def _architecture_rows() -> dict[str, str]:
    """docs/architecture.md's table of folders: the row's first cell (``top level`` or a folder) -> the row."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and line.startswith("| ") and cells[0] not in ("folder", "---"):
            rows[cells[0].strip("`").rstrip("/")] = cells[1]
    return rows


def _named(cell: str) -> set[str]:
    """The names a row's modules cell writes in backticks, a trailing "/" kept (a subfolder)."""
    import re

    return set(re.findall(r"`([A-Za-z_][\w./]*)`", cell))


def test_docs_architecture_names_every_module_in_its_folder_s_row():
    """docs/architecture.md has a row per folder of the package (and one for the top level), and each
    row names every module of its folder and every subfolder (``adapters/``): a module added, moved
    or renamed shows here or fails this test."""
    rows = _architecture_rows()
    assert "engine" in rows and "top level" in rows, f"the table was not read: {sorted(rows)}"
    missing_rows = [folder for folder in _folders() if folder not in rows]
    assert not missing_rows, f"folders without a row in docs/architecture.md: {missing_rows}"
    unnamed: dict[str, list[str]] = {}
    for folder, cell in rows.items():
        place = PACKAGE if folder == "top level" else PACKAGE / folder
        assert place.is_dir(), f"docs/architecture.md has a row for {folder}/, which is not a folder of the package"
        names = _named(cell)
        wanted = [p.stem for p in sorted(place.glob("*.py")) if p.stem not in ("__init__", "__main__")]
        wanted += [f"{p.name}/" for p in sorted(place.iterdir()) if (p / "__init__.py").is_file() and folder != "top level"]
        gone = [w for w in wanted if w not in names and w.rstrip("/") not in names]
        if gone:
            unnamed[folder] = gone
    assert not unnamed, f"modules docs/architecture.md does not name in their folder's row: {unnamed}"
    assert _named("`a` (x), `b/` and `c`") == {"a", "b/", "c"}, "the reader of a row is blind"
