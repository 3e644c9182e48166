"""Helpers of tests/test_readme.py, used by other test files too."""

from __future__ import annotations

import re

from ..conftest import ROOT

README = ROOT / "README.md"

GUIDE = ROOT / "README_FOR_AI.md"

PAGES = [README, GUIDE, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"(?:<!-- test: ([^\n]*?) -->\n)?```(\w*)\n(.*?)```", re.S)


def text(page):
    return page.read_text(encoding="utf-8")


def fences(page):
    """(marker or None, language, code) of every fenced block of ``page``."""
    return FENCE.findall(text(page))


def snippet(name):
    """The one block marked ``<!-- test: name -->`` in README.md and docs/."""
    found = [code for page in PAGES if page != GUIDE for marker, _, code in fences(page) if marker == name]
    assert len(found) == 1, f"{len(found)} blocks are marked {name!r}"
    return found[0]
