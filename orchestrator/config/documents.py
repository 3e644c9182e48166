"""Checks on a parsed document (a request's JSON body, config.yaml) before anything reads it:
how deep it nests, and which string holds a NUL.

Both walk without recursion, so a hostile document cannot raise ``RecursionError`` here, and
visit each list or mapping once, so YAML aliases (one node referenced many times, or itself)
cost no more than the document's own size.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32  # lists and mappings inside each other; settings and request bodies need fewer than 8


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists and mappings more than ``limit`` levels deep (a cycle does)."""
    level = [value] if isinstance(value, (list, dict)) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        seen = {id(child): child for item in level for child in _children(item) if isinstance(child, (list, dict))}
        level = list(seen.values())
        depth += 1
    return False


def nul_field(value: Any, where: str = "") -> str | None:
    """Where the first string holding a NUL character is (``tasks[2]``, ``config.model``; a key
    by its own path), or None when there is none."""
    stack: list[tuple[Any, str]] = [(value, where)]
    visited: set[int] = set()
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\0" in item:
                return path or "body"
            continue
        if not isinstance(item, (list, dict)) or id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
            continue
        for key, child in reversed(list(item.items())):
            shown = str(key)[:60].replace("\0", "\\u0000")  # a key is named as written, never with the NUL itself
            named = f"{path}.{shown}" if path else shown
            if isinstance(key, str) and "\0" in key:
                return named
            stack.append((child, named))
    return None


def _children(item: Any) -> list[Any]:
    if isinstance(item, dict):
        return list(item.values())
    return item if isinstance(item, list) else []
