"""Checks on a parsed document (a request's JSON body, config.yaml) before anything reads it:
how deep it nests, and which string is no text a file, a log or an argv can hold (a NUL, or a
lone surrogate: JSON's ``"\\ud800"`` parses to one, and UTF-8 cannot encode it).

Both walk without recursion, so a hostile document cannot raise ``RecursionError`` here, and
visit each list or mapping once, so YAML aliases (one node referenced many times, or itself)
cost no more than the document's own size.
"""

from __future__ import annotations

from enum import Enum
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


class TextFault(str, Enum):
    """What is wrong with a string of a document: the sentence an error shows."""

    NUL = "a NUL character (\\u0000), which no request, task, path or setting may hold: remove it"
    SURROGATE = (
        "a lone surrogate ({char}), which is no Unicode text and cannot be written as UTF-8 to a file, a log or an "
        "argv: send the text as UTF-8 (in JSON, a \\uXXXX escape of a character past U+FFFF is a pair, "
        "\\ud800-\\udbff then \\udc00-\\udfff)"
    )


def text_fault(value: Any, where: str = "") -> tuple[str, TextFault, str] | None:
    """The first string (or key, named by its own path) that holds a NUL or is not encodable as
    UTF-8: (where it is, e.g. ``tasks[2]`` or ``config.model``; what is wrong; the character,
    escaped), or None when every string is text."""
    stack: list[tuple[Any, str]] = [(value, where)]
    visited: set[int] = set()
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            fault = _fault(item)
            if fault is not None:
                return (path or "body", *fault)
            continue
        if not isinstance(item, (list, dict)) or id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
            continue
        for key, child in reversed(list(item.items())):
            shown = escaped(str(key)[:60])  # a key is named as written, never with the character itself
            named = f"{path}.{shown}" if path else shown
            fault = _fault(key) if isinstance(key, str) else None
            if fault is not None:
                return (named, *fault)
            stack.append((child, named))
    return None


def escaped(text: str) -> str:
    """``text`` with each NUL and lone surrogate written as its ``\\uXXXX`` escape, so a message
    naming it can be logged and sent."""
    return "".join(f"\\u{ord(c):04x}" if c == "\0" or "\ud800" <= c <= "\udfff" else c for c in text)


def _fault(text: str) -> tuple[TextFault, str] | None:
    if "\0" in text:
        return TextFault.NUL, "\\u0000"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return TextFault.SURROGATE, escaped(text[exc.start])
    return None


def _children(item: Any) -> list[Any]:
    if isinstance(item, dict):
        return list(item.values())
    return item if isinstance(item, list) else []
