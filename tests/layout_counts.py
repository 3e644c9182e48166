"""The package's shape in numbers, read from the source (nothing is imported):
``python tests/layout_counts.py [--repo DIR]``.

What a newcomer meets: top-level modules, folders, the import graph's floors and its longest chain,
twins (two modules of one folder whose names differ only by an ending), file names used in two
folders, ``dict[str, Any]`` annotations (those of the JSON edges apart), closed choices compared
as strings, the project modules the engine's core imports, the engine's lines copying the shared
context into ``self``, and the functions over 80 lines. ``tests/test_architecture.py`` holds the rules; this prints where the code stands, for
before/after figures of a change of layout.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_architecture as arch  # noqa: E402

# A name compared with a string constant is a closed choice when it is one of these (an attribute,
# a variable or a dict key): statuses, reasons, modes, kinds, strategies and the like.
CHOICE_NAMES = {
    "status", "state", "phase", "reason", "end_reason", "ended_by", "failure", "failure_class", "kind",
    "worker", "worker_kind", "mode", "executor", "on_failure", "isolation", "strategy", "merge_strategy",
    "select", "ownership", "network", "sandbox", "sandbox_network", "backend", "action", "verdict",
    "outcome", "approval", "into", "forge", "role", "type", "event",
}  # fmt: skip
# Functions whose ``dict[str, Any]`` is a JSON document at an edge (a record's JSON form, a request or
# response body, a document for a reader), counted apart.
EDGE_FUNCTION = re.compile(r"(^|_)(to_dict|from_dict|as_dict|to_json|from_json|doc|document|payload|body|json|schema)s?($|_)")
EDGE_FOLDERS = {"api", "cli", "dashboard"}
# Modules whose dicts are other programs' JSON or a response body: the worker kinds' adapters (each
# CLI's own output), the anthropic worker's tools (the model API's tool schemas and tool calls) and
# the API's status document and its shape.
EDGE_PREFIXES = (
    "orchestrator.workers.adapters.",
    "orchestrator.workers.agent_tools",
    "orchestrator.reports.status_document",
    "orchestrator.reports.status_shapes",
)


# Comparisons that read another program's output outside the adapters: the forges' API answers (GitHub's
# check runs and statuses, GitLab's pipelines and jobs) and git's object types (``git cat-file``).
FOREIGN_CHOICES = {
    "orchestrator.delivery.pr_checks": {"status", "state"},
    "orchestrator.git.tree_checks": {"kind"},
}


def _folder(module: str) -> str:
    return arch._folder_of(module) or "top level"


def floors(graph: dict[str, set[str]]) -> tuple[int, list[str]]:
    """The import graph's depth (a module importing nothing is floor 1) and one longest chain."""
    memo: dict[str, list[str]] = {}

    def chain(node: str, seen: frozenset[str]) -> list[str]:
        if node in memo:
            return memo[node]
        best: list[str] = []
        for nxt in sorted(graph.get(node, ())):
            if nxt in seen:  # a cycle (the architecture test fails on it): not followed
                continue
            candidate = chain(nxt, seen | {nxt})
            if len(candidate) > len(best):
                best = candidate
        memo[node] = [node, *best]
        return memo[node]

    longest = max((chain(n, frozenset({n})) for n in sorted(graph)), key=len)
    return len(longest), longest


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between folders (a top-level module is its own unit), the entry points left
    out as the architecture test leaves them out of its folder rule."""
    folders: dict[str, set[str]] = {}
    for module, imported in graph.items():
        if module in arch.ENTRY_POINTS:
            continue
        unit = arch._folder_of(module) or module
        folders.setdefault(unit, set()).update(u for u in (arch._folder_of(m) or m for m in imported) if u != unit)
    return folders


def twins(modules: list[str]) -> list[tuple[str, str]]:
    """Pairs of one folder whose names differ only by an ending: one the other plus a short or
    underscored suffix (``node``/``nodes``, ``approval``/``approvaldoc``, ``anthropic``/``anthropic_tools``),
    or a common stem of 5+ characters with endings of at most 3 (``supervisor``/``supervised``)."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for module in modules:
        parent, _, name = module.rpartition(".")
        if name not in ("__init__", "__main__"):
            by_folder[parent].append(name)
    found = []
    for parent, names in sorted(by_folder.items()):
        for i, a in enumerate(sorted(names)):
            for b in sorted(names)[i + 1 :]:
                common = len(_common_prefix(a, b))
                short, long_ = sorted((a, b), key=len)
                rest = long_[len(short) :]
                suffixed = long_.startswith(short) and (rest.startswith("_") or len(rest) <= 3)
                if suffixed or (common >= 5 and len(a) - common <= 3 and len(b) - common <= 3):
                    found.append((f"{parent}.{a}", f"{parent}.{b}"))
    return found


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def repeated_names(paths: list[Path]) -> dict[str, list[str]]:
    """File names (not ``__init__``) used in more than one folder."""
    seen: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        if path.name != "__init__.py":
            seen[path.name].append(str(path.parent.relative_to(arch.PACKAGE.parent)))
    return {name: folders for name, folders in sorted(seen.items()) if len(folders) > 1}


def loose_dicts(path: Path, module: str) -> tuple[int, int, int]:
    """(``dict[str, Any]`` in ``path`` outside the JSON edges, those at an edge, and those outside
    the narrow edges alone: ``api/``, ``cli/``, ``dashboard/`` and the ``to_dict``-like functions)."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    edge_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and EDGE_FUNCTION.search(node.name):
            edge_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    inner = edge = narrow = 0
    in_edge_folder = _folder(module) in EDGE_FOLDERS
    at_edge_folder = in_edge_folder or module in arch.ENTRY_POINTS or module.startswith(EDGE_PREFIXES)
    for number, line in enumerate(lines, 1):
        count = line.count("dict[str, Any]")
        if at_edge_folder or number in edge_lines:
            edge += count
        else:
            inner += count
        if not (in_edge_folder or number in edge_lines):
            narrow += count
    return inner, edge, narrow


def _choice_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        first = node.args[0]
        return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
    return None


def _strings(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts)
    return False


def string_choices(path: Path, foreign: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Comparisons (``==``, ``!=``, ``in``, ``not in``) of a closed choice's name with string constants:
    (ours, those of a name in ``foreign``, another program's output)."""
    found: list[str] = []
    theirs: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare) or len(node.ops) != 1:
            continue
        if not isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
            continue
        left, right = node.left, node.comparators[0]
        for named, constant in ((left, right), (right, left)):
            name = _choice_name(named)
            if name in CHOICE_NAMES and _strings(constant):
                where = f"{path.relative_to(arch.PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}"
                (theirs if foreign and name in foreign else found).append(where)
                break
    return found, theirs


def long_functions(path: Path, limit: int = 80) -> list[tuple[int, str]]:
    """Functions (methods and nested ones too) longer than ``limit`` lines from ``def`` to their last
    line, as (lines, ``path:line: Class.name``)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{owner}{child.name}"
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    found.append((length, f"{path.relative_to(arch.PACKAGE.parent)}:{child.lineno}: {name}"))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{owner}{child.name}.")
            else:
                visit(child, owner)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


# A part copying what it shares into itself: ``self.clock = ctx.clock`` (or ``context.``).
CONTEXT_COPY = re.compile(r"^\s*self\.(\w+) = (?:\w+ = )?(?:ctx|context)\.\1\s*(?:#.*)?$")


def context_copies(paths: list[Path]) -> list[str]:
    """Lines of the engine's modules that copy a field of the shared context into ``self``."""
    found = []
    for path in paths:
        if path.parent.name != "engine":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if CONTEXT_COPY.match(line):
                found.append(f"{path.relative_to(arch.PACKAGE.parent)}:{number}: {line.strip()}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="another checkout of the project to count (default: this one)")
    parser.add_argument("--list", action="store_true", help="also list each twin, repeated name and string comparison")
    args = parser.parse_args(argv)
    if args.repo is not None:
        arch.PACKAGE = args.repo.resolve() / "orchestrator"
    modules = arch._modules()
    graph = arch.import_graph()
    paths = sorted(arch.PACKAGE.rglob("*.py"))
    top = [p for p in arch.PACKAGE.glob("*.py") if p.stem not in ("__init__",)]
    depth, chain = floors(graph)
    folder_depth, folder_chain = floors(folder_graph(graph))
    pairs = twins(list(modules))
    repeated = repeated_names(paths)
    inner = edge = narrow = 0
    choices: list[str] = []
    foreign: list[str] = []
    long_ones: list[tuple[int, str]] = []
    for module, path in modules.items():
        long_ones += long_functions(path)
        a, b, c = loose_dicts(path, module)
        inner, edge, narrow = inner + a, edge + b, narrow + c
        found, theirs = string_choices(path, FOREIGN_CHOICES.get(module))
        foreign += theirs
        if module.startswith("orchestrator.workers.adapters.") or module in arch.ENTRY_POINTS:
            foreign += found  # another program's JSON (a CLI's events, the model API's answers)
        else:
            choices += found
    print(f"top-level modules:            {len(top)}")
    print(f"folders:                      {len(arch._folders())}")
    print(f"floors of the import graph:   {depth}")
    print(f"longest chain:                {' -> '.join(m.removeprefix('orchestrator.') for m in chain)}")
    print(f"floors of the folder graph:   {folder_depth} ({' -> '.join(m.removeprefix('orchestrator.') for m in folder_chain)})")
    print(f"twins:                        {len(pairs)}")
    print(f"file names in two folders:    {len(repeated)}")
    print(
        f"dict[str, Any]:               {inner} (and {edge} at the JSON edges: api/, cli/, dashboard/, entry points, adapters, the status document, to_dict and the like)"
    )
    print(f"dict[str, Any], narrow edges: {narrow} (only api/, cli/, dashboard/ and to_dict and the like apart)")
    print(
        f"closed choices as strings:    {len(choices)} in {len({c.split(':')[0] for c in choices})} modules "
        f"(and {len(foreign)} of other programs' output: the adapters, the worker programs, the forges' answers, git's object types)"
    )
    copies = context_copies(paths)
    print(f"engine core imports:          {len(graph.get('orchestrator.engine.core', ()))} project modules")
    print(f"context copies:               {len(copies)} in {len({c.split(':')[0] for c in copies})} engine modules")
    long_ones.sort(key=lambda item: (-item[0], item[1]))
    print(f"functions over 80 lines:      {len(long_ones)}")
    print("\n".join(f"  {lines:4d} {where}" for lines, where in long_ones))
    if args.list:
        print("\n".join(["", "twins:", *(f"  {a} / {b}" for a, b in pairs)]))
        print("\n".join(["file names in two folders:", *(f"  {n}: {', '.join(f)}" for n, f in repeated.items())]))
        print("\n".join(["closed choices as strings:", *(f"  {c}" for c in choices)]))
        print("\n".join(["context copies:", *(f"  {c}" for c in copies)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
