"""A gate's output where a person or a parent worker reads why a gate failed: the tail kept in
its record entry (``output_tail``: cut once, at gate time, from the output the gate step has
read anyway), which gate failed a task, and the lines every surface shows for it (the MCP
tools' text, the spawn helper's Markdown). The whole output stays in the gate's log
(quality/gates.py writes it), served by the worker log route with ``?gate=NAME``.

A gate entry is outcomes.py's ``GateResult`` or its JSON shape (``{"name", "required", "status",
"exit_code", "reason", "output_tail", ...}``, as the status document holds it). ``output_tail``
is absent (None) where none was kept: a gate that passed, or a record from before tails were kept. This module
imports nothing (so it sits at the top level, below reports/ and quality/ alike): the spawn
helper renders a child's failed gate with it, and its start-up counts (cli/spawn.py).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's import costs the spawn helper's start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

TAIL_LINES = 20  # of a gate's output kept in its record entry
TAIL_CHARS = 2000


def output_tail(output: str) -> str:
    """The end of a gate's output (plain text): its last ``TAIL_LINES`` lines, at most
    ``TAIL_CHARS`` characters, cut at a line's start where one is in reach; "" for none."""
    lines = output.rstrip().splitlines()[-TAIL_LINES:]
    text = "\n".join(line.rstrip() for line in lines).strip("\n")
    if len(text) <= TAIL_CHARS:
        return text
    text = text[-TAIL_CHARS:]
    cut = text.find("\n")
    return text[cut + 1 :] if 0 <= cut < TAIL_CHARS // 2 else text


def _get(gate: Any, key: str, default: Any = None) -> Any:
    if isinstance(gate, dict):
        return gate.get(key, default)
    return getattr(gate, key, default)


def failing_gate(gates: Sequence[Any], exit_reason: str | None) -> Any | None:
    """The required gate whose failure failed a worker (its exit reason names it: "step gates
    failed: gate tests failed: exit code 1"), its latest run; None when no gate failed it (a
    gate entry or its dict)."""
    for gate in reversed(gates or ()):
        if _get(gate, "required", True) and not _get(gate, "passed"):
            return gate if f"gate {_get(gate, 'name')} " in f"{exit_reason or ''} " else None
    return None


def headline(gate: Any) -> str:
    """``gate tests failed (exit code 1)``, ``gate tests timeout (timed out after 600s; ...)``."""
    status = _get(gate, "status") or "failed"
    code = _get(gate, "exit_code")
    reason = _get(gate, "reason") or ""
    if status == "failed" and code is not None:
        detail = f"exit code {code}"
    else:
        detail = reason
    return f"gate {_get(gate, 'name')} {status}" + (f" ({detail})" if detail else "")


def output_lines(gate: Any, indent: str = "    ") -> list[str]:
    """A gate that did not pass as lines for a surface: its headline, then its output's tail,
    each line indented. A record from before output tails were kept (no ``output_tail``) gives
    the headline alone."""
    text = headline(gate)
    text = text[:1].upper() + text[1:]
    tail = _get(gate, "output_tail")
    if tail is None:
        return [text + "."]
    if not tail:
        return [text + "; it printed nothing."]
    return [text + "; the end of its output:"] + [indent + line for line in tail.splitlines()]
