"""Change a few keys of ``config.yaml`` in place, keeping every comment and every other line.

``doctor --write`` merges its settings this way. A YAML library that keeps comments (ruamel.yaml)
is not a dependency, and config.yaml's shape is simple and known (one level of sections, one
key per line, values in flow style, as config.template.yaml writes them), so the merge is
textual: a key's line (and the lines its value continues on) is replaced by ``key: VALUE``
with the line's own comment kept; a missing key is added at its section's end; a missing
section at the file's end. Values are written as JSON, which is YAML's flow style.

The result is checked by parsing it: the changed keys must hold exactly the new values and
everything else must read as before, else nothing is returned and the caller writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ConfigError

_SECTION = re.compile(r"([A-Za-z_][\w-]*):[ \t]*(#.*)?$")
_KEY = re.compile(r"([ \t]+)([A-Za-z_][\w-]*):(?:[ \t]|$)")


@dataclass(frozen=True)
class _Span:
    """Lines [start, end) of one key or section."""

    start: int
    end: int


def merge_settings(text: str, changes: Mapping[str, Mapping[str, Any]], where: str = "config.yaml") -> str:
    """``text`` with ``changes`` ({section: {key: value}}) set; ConfigError when it cannot be
    done safely (the message says what to edit by hand)."""
    before = _load(text, where)
    lines = text.splitlines()
    for section, keys in changes.items():
        for key, value in keys.items():
            lines = _set(lines, section, key, value, where)
    merged = "\n".join(lines) + "\n"
    expected = {name: dict(values) for name, values in before.items()}
    for section, keys in changes.items():
        expected.setdefault(section, {}).update(keys)
    try:
        same = _load(merged, where) == expected
    except ConfigError:
        same = False
    if not same:
        raise ConfigError(
            f"could not merge into {where} without changing other settings (its layout is not the template's); "
            f"set these by hand: {json.dumps(changes)}"
        )
    return merged


def _load(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML ({exc}); fix it before merging") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        raise ConfigError(f"{where} must be a mapping of sections (orchestrator:, workers:, ...) to merge into it")
    return {name: values or {} for name, values in data.items()}


def _set(lines: list[str], section: str, key: str, value: Any, where: str) -> list[str]:
    rendered = json.dumps(value, ensure_ascii=False)
    found = _section(lines, section, where)
    if found is None:
        tail = [""] if lines and lines[-1].strip() else []
        return [*lines, *tail, f"{section}:", f"  {key}: {rendered}"]
    indent = _indent_of(lines, found)
    span = _key(lines, found, key, indent)
    if span is None:
        at = _last_content(lines, found)
        return [*lines[:at], f"{indent}{key}: {rendered}", *lines[at:]]
    comment = _comment(lines[span.start].split(":", 1)[1])
    line = f"{indent}{key}: {rendered}" + (f"  {comment}" if comment else "")
    return [*lines[: span.start], line, *lines[span.end :]]


def _section(lines: list[str], name: str, where: str) -> _Span | None:
    for index, line in enumerate(lines):
        if line.startswith(f"{name}:"):
            if not _SECTION.match(line):
                raise ConfigError(f"section {name}: of {where} is written on one line; give it one key per line to merge into it")
            end = index + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
                end += 1
            return _Span(index, end)
    return None


def _indent_of(lines: list[str], section: _Span) -> str:
    for line in lines[section.start + 1 : section.end]:
        match = _KEY.match(line)
        if match:
            return match.group(1)
    return "  "


def _key(lines: list[str], section: _Span, key: str, indent: str) -> _Span | None:
    for index in range(section.start + 1, section.end):
        match = _KEY.match(lines[index])
        if match and match.group(1) == indent and match.group(2) == key:
            end = index + 1
            while end < section.end and _continues(lines[end], indent):
                end += 1
            while end > index + 1 and not lines[end - 1].strip():
                end -= 1  # blank lines after the value stay
            return _Span(index, end)
    return None


def _continues(line: str, indent: str) -> bool:
    """Whether ``line`` is part of the value of a key indented by ``indent``: blank, deeper, or a
    block sequence's ``- item`` at the key's own indent."""
    stripped = line.lstrip(" \t")
    depth = len(line) - len(stripped)
    return not stripped or depth > len(indent) or (depth == len(indent) and stripped.startswith("- "))


def _last_content(lines: list[str], section: _Span) -> int:
    """Where a new key goes: after the section's last indented line (its comments between sections stay below)."""
    at = section.start + 1
    for index in range(section.start + 1, section.end):
        if lines[index].strip() and lines[index][0] in " \t":
            at = index + 1
    return at


def _comment(rest: str) -> str:
    """The ``# comment`` ending a key's line (``rest``: what follows its colon), outside quotes."""
    quote, index = "", 0
    while index < len(rest):
        char = rest[index]
        if quote:
            if char == "\\" and quote == '"':
                index += 1  # an escaped character, a quote too
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or rest[index - 1] in " \t"):
            return rest[index:].rstrip()
        index += 1
    return ""
