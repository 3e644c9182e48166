"""A readable transcript of a worker's log, one log line at a time (``./orchestrator.sh logs``).

The CLIs that stream JSON write one event per line; a person wants the assistant's text, each tool
call and a shortened view of its result, the final answer and what it cost. Each adapter whose CLI
streams JSON gives its own ``readable(line)`` (its format is documented in its module); this module
holds what they share. A line that is not an event of the format (the CLI's own stderr, a line the
orchestrator wrote) is shown as it is: nothing in the log is hidden except events with nothing
for a reader (a stream's bookkeeping), and ``logs --raw`` shows every line as written.
"""

from __future__ import annotations

import json
from typing import Any

ARGS_CHARS = 160  # a tool call's arguments, on one line
RESULT_CHARS = 300  # a tool's result, on up to RESULT_LINES lines
RESULT_LINES = 4


def event_of(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line``, or None when it holds none."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def one_line(value: Any, limit: int = ARGS_CHARS) -> str:
    """``value`` (text, or JSON for anything else) on one line, at most ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def shortened(text: str, limit: int = RESULT_CHARS, lines: int = RESULT_LINES, indent: str = "    ") -> str:
    """A tool's output: its first ``lines`` non-blank lines, at most ``limit`` characters, indented,
    with how much was left out."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    shown = "\n".join(kept[:lines])
    cut = len(kept) > lines
    if len(shown) > limit:
        shown, cut = shown[: limit - 1] + "…", True
    if not shown:
        return f"{indent}(no output)"
    more = f"\n{indent}… ({len(kept)} lines, {len(text)} characters in all)" if cut else ""
    return "\n".join(indent + line for line in shown.splitlines()) + more


def cost_line(cost: Any, tokens_in: Any = None, tokens_out: Any = None) -> str:
    """ "cost $0.0123, 1200 tokens in, 340 out": the parts that were reported."""
    parts = []
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        parts.append(f"cost ${cost:.4f}")
    if isinstance(tokens_in, int):
        parts.append(f"{tokens_in} tokens in")
    if isinstance(tokens_out, int):
        parts.append(f"{tokens_out} out")
    return ", ".join(parts)


def text_of(content: Any) -> str:
    """The text of a tool result's content: a string, or the text blocks of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return "" if content is None else one_line(content, RESULT_CHARS)
