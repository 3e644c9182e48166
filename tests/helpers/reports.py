"""Helpers of tests/test_reports.py, used by other test files too."""

from __future__ import annotations

import re


def split_cells(line):
    """Cells of a GFM table row: a backslash escapes the next character, ``|`` splits."""
    body = line.strip()[1:-1]
    cells, current, i = [], "", 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            current += body[i : i + 2]
            i += 2
            continue
        if body[i] == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += body[i]
        i += 1
    return cells + [current.strip()]


def prose_lines(markdown):
    """Lines outside fenced code blocks."""
    fence = None
    for line in markdown.splitlines():
        run = re.match(r"^(`{3,})", line)
        if fence is None and run:
            fence = run.group(1)
        elif fence is not None and line.strip() == "`" * len(line.strip()) and len(line.strip()) >= len(fence):
            fence = None
        elif fence is None:
            yield line


def tables(markdown):
    """Every table outside code blocks, as a list of rows of cells (header first)."""
    found, current = [], []
    for line in list(prose_lines(markdown)) + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return [[split_cells(line) for line in table] for table in found]


def table_with(markdown, first_header):
    return next(t for t in tables(markdown) if t[0][0] == first_header)


def code_blocks(markdown):
    return [m.group(2) for m in re.finditer(r"^(`{3,})\w*\n(.*?)^\1$", markdown, re.M | re.S)]


def assert_tables_are_rectangular(markdown):
    for table in tables(markdown):
        assert re.fullmatch(r"-+:?", table[1][0].strip(":")), table[1]
        assert {len(row) for row in table} == {len(table[0])}, table
