"""Jinja filters that keep Markdown valid whatever a worker or a user wrote.

Tasks, requests, outputs and file names are free text: a ``|`` would split a
table cell, a newline would end a table row, a leading ``#`` would start a
heading and a run of backticks would close a code block. Every user-provided
value goes through one of these filters.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum
from typing import Any
from urllib.parse import quote

from ..outcomes import CostBasis

DASH = "—"

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_UNCLEAN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\r]")  # anything clean() changes (ESC is \x1b)
_BACKTICKS = re.compile(r"`+")
# Characters that would start a block (heading, quote, list, setext underline)
# when they open a line or a list item.
_BLOCK_START = re.compile(r"^(\d+(?=[.)](?:\s|$))|)([#>+\-*=]|(?<=\d)[.)])")
_CELL_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "`": "\\`", "<": "&lt;"})


def clean(value: Any) -> str:
    """Text without terminal colours or control characters; ``\\r`` becomes a newline."""
    if value is None:
        return ""
    text = value.value if isinstance(value, Enum) else value
    text = str(text)
    if not _UNCLEAN.search(text):  # the usual case, one scan: a report calls this ~6 times per worker
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", _ANSI.sub("", text))


def md_cell(value: Any, max_len: int | None = 120) -> str:
    """One line of escaped text, safe in a table cell or a list item.

    Whitespace collapses to single spaces; long text is cut with "…" before
    escaping, so an escape is never cut in half. None or blank gives "—".
    """
    text = " ".join(clean(value).split())
    if not text:
        return DASH
    if max_len is not None and len(text) > max_len:
        text = text[: max(1, max_len - 1)].rstrip() + "…"
    text = text.translate(_CELL_ESCAPES)
    return _BLOCK_START.sub(r"\1\\\2", text, count=1)


def md_inline_code(value: Any, cell: bool = False) -> str:
    """An inline code span holding ``value`` verbatim on one line.

    With ``cell=True`` the span is safe inside a table: GFM splits cells on
    ``|`` even inside code, so pipes are escaped, and text holding a backslash
    as well falls back to escaped plain text, which GFM reads unambiguously.
    """
    text = " ".join(clean(value).split("\n")).strip()
    if not text:
        return DASH
    if cell and "|" in text:
        if "\\" in text:
            return md_cell(text, max_len=None)
        text = text.replace("|", "\\|")
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_code_block(value: Any, lang: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside."""
    text = clean(value).rstrip("\n")
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    body = f"{text}\n" if text else ""
    return f"{fence}{lang}\n{body}{fence}"


def md_link(path: Any, base: str = "", text: Any = None, cell: bool = False) -> str:
    """A link to ``path`` (relative to the job folder) from a file in ``base``.

    Reports sit at different depths of the job folder, so ``base`` is the
    report's own folder (``""`` for FINAL_RESULT.md, ``"depth_1"`` for a level
    report). The target is percent-encoded and the text shown as code; pass
    ``cell=True`` inside a table. Without a path, the text alone is shown.
    """
    target = clean(path).strip()
    label = md_inline_code(target if text is None else text, cell=cell)
    if not label.startswith("`"):  # plain-text fallback: brackets would end the link text
        label = label.replace("[", "\\[").replace("]", "\\]")
    if not target:
        return label
    up = "../" * len([part for part in base.split("/") if part])
    return f"[{label}]({quote(up + target, safe='/._-~')})"


def job_path(worker_dir: Any, file: Any) -> str:
    """A created file's path relative to the job folder: ``depth_0/worker_1/app.py``."""
    head, tail = clean(worker_dir).strip().rstrip("/"), clean(file).strip().lstrip("/")
    return f"{head}/{tail}" if head else tail


def duration(seconds: float | None) -> str:
    """``1.2s`` under a minute, ``3m 04s`` under an hour, ``2h 05m`` beyond."""
    if seconds is None:
        return DASH
    if round(seconds, 1) < 60:
        return f"{max(0.0, seconds):.1f}s"
    total = int(round(seconds))
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def iso(timestamp: float | None) -> str:
    """An epoch timestamp in ISO 8601 UTC, to the second."""
    if timestamp is None:
        return DASH
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pct(ratio: float | None) -> str:
    return DASH if ratio is None else f"{ratio * 100:.1f}%"


def usd(amount: float | None) -> str:
    return DASH if amount is None else f"${amount:,.4f}"


def worker_cost(worker: Any) -> str:
    """A worker's cost as its report shows it: ``$0.0123``, ``$0.0123 (estimated)`` when a price table
    gave it, or ``cost unknown (model X)`` when it reported tokens and no price is known."""

    def field(name: str) -> Any:  # a record, or a candidate's row (a dict)
        return worker.get(name) if isinstance(worker, dict) else getattr(worker, name)

    if field("cost_usd") is None:
        return md_cell(field("cost_note"), 80) if field("cost_note") else DASH
    return usd(field("cost_usd")) + (" (estimated)" if field("cost_basis") == CostBasis.ESTIMATED else "")


def count(number: int | None) -> str:
    return DASH if number is None else f"{number:,}"


def size(number: int | None) -> str:
    """Bytes as ``812 KiB``, ``12.3 MiB``, ``1.50 GiB``."""
    if number is None:
        return DASH
    if number < 1 << 20:
        return f"{number / 1024:.0f} KiB"
    if number < 1 << 30:
        return f"{number / (1 << 20):.1f} MiB"
    return f"{number / (1 << 30):.2f} GiB"


def dash(value: Any) -> Any:
    """None or empty text shows as "—"; anything else unchanged."""
    return DASH if value is None or value == "" else value


def _longest_backtick_run(text: str) -> int:
    if "`" not in text:
        return 0
    return max((len(m) for m in _BACKTICKS.findall(text)), default=0)


FILTERS = {
    "md_cell": md_cell,
    "md_inline_code": md_inline_code,
    "md_code_block": md_code_block,
    "md_link": md_link,
    "job_path": job_path,
    "duration": duration,
    "iso": iso,
    "pct": pct,
    "usd": usd,
    "worker_cost": worker_cost,
    "count": count,
    "size": size,
    "dash": dash,
}
