"""Measures and rankings: ``select`` best (a weighted score), cheapest, fastest and first_passing.

Measures of a candidate (``measures`` in its ranking row, raw values):

- ``gates_passed``: the fraction of its gates (required and optional) that passed; None without gates.
- ``diff_lines``: lines added plus lines removed against the task's base.
- ``cost_usd``, ``duration``: what its runs cost (None: unknown) and its seconds of work.
- every key of the JSON object ``scoring.command`` printed in its worktree (``tests_passed``,
  ``tests_failed``, ``coverage``, ``lint_warnings``...); numbers are scored by their weight,
  other values kept as they are. ``scoring_command`` says how the command went: ``ok``, or
  why it gave nothing (``failed: exit code 2``, ``timed out after 120s``, ``no JSON object in
  its output``, ``not run: ...``); such a candidate simply has no command measures.

``best`` scores each eligible candidate: per measure with a non-zero weight that at least one
of them has, its value normalised across them (config/score_weights.py: the best gets 1) times the
weight's size are its ``parts``; the score is 100 times their sum over those weights' sizes.
A candidate without a measure gets no points for it, except an unknown ``cost_usd`` (a CLI that
reported no cost and whose model has no known price: workers/costs.py), which counts as the
median of the known costs: an unpriced model neither wins nor loses on cost.

Ties break, always the same way, by: higher score (rounded to 2 decimals, as recorded), then
lower cost (unknown after known), then earlier end (``ended_at``), then the worker's name in
natural order (worker_2 before worker_10). The row that lost a tie says which rule ranked it.
cheapest and fastest rank by cost and duration (unknown after known) and then the same rules;
first_passing by the earliest end, then the name. Ineligible candidates rank after all the
eligible ones (``rank`` None, ``score`` None) with why they are out.
"""

from __future__ import annotations

import functools
import math
import re
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from .. import failpoints, protocol
from ..config import Select, Settings
from ..config.keys import StrEnum
from ..config.score_weights import BUILTIN
from ..outcomes import GateResult, Measure, RankingRow
from ..process.cgroups import Limits
from ..process.monitor import CAPPED, HelperWatch
from ..process.runner import CommandNotFound, ProcessHandle, ProcessRunner, Wakeup, signal_name
from ..workers.adapters.aicli import last_json_object
from ..workers.confinement import environment_program, project_imports
from .decisions import Candidate, Selection

Cancel = threading.Event | Wakeup
STATUS_KEY = "scoring_command"  # how the scoring command went, in a candidate's measures
POLL = 0.25  # seconds between looks at a cancel flag that cannot wake a wait (threading.Event)
OUTPUT_BYTES = 64 * 1024  # the end of the scoring command's output that is read for its JSON object
MAX_KEYS = 64  # a scoring command's keys kept per candidate
TEXT_CHARS = 200  # a non-number value of the command's, as kept
MEDIAN_WHEN_UNKNOWN = ("cost_usd",)  # measures an unknown value of which counts as the known ones' median


class ScoringStatus(StrEnum):
    """How the scoring command went (``STATUS_KEY`` in a candidate's measures): ``ok``; any other
    value is a sentence saying why its measures are missing ("not run: ...", "failed: ...")."""

    OK = "ok"


# -- measuring ----------------------------------------------------------------------------------
def gates_passed(gates: Sequence[GateResult]) -> float | None:
    return sum(1 for g in gates if g.passed) / len(gates) if gates else None


def builtin_measures(candidate: Candidate) -> dict[str, Measure]:
    return {
        "gates_passed": gates_passed(candidate.gates),
        "diff_lines": candidate.lines_added + candidate.lines_removed,
        "cost_usd": candidate.cost_usd,
        "duration": candidate.duration,
    }


# How a candidate's scoring command runs once across a server's restarts (engine/choosing.py
# keeps its verdict in workspace/stages.py): given the candidate and the run, its measures.
Once = Callable[[Candidate, Callable[[], dict[str, Measure]]], dict[str, Measure]]


def measure(
    candidates: Sequence[Candidate],
    *,
    settings: Settings,
    runner: ProcessRunner,
    env: Mapping[str, str],
    work_dir: Path,
    cancel: Cancel | None = None,
    command: bool = True,
    once: Once | None = None,
    limits: Limits | None = None,
) -> dict[str, dict[str, Measure]]:
    """Each candidate's measures, by name; ``command`` False (or no scoring.command): the
    built-in ones only. The command runs for eligible candidates only, one after the other, in
    the candidate's sandbox (``Candidate.sandbox``) under ``limits`` (the workers' caps), each
    through ``once`` when given (its measures from before a restart are not measured again)."""
    argv = list(settings.scoring.command)
    found = {}
    for candidate in candidates:
        values = builtin_measures(candidate)
        if command and argv and candidate.eligible:
            if cancel is not None and cancel.is_set():
                values[STATUS_KEY] = "not run: the selection was cancelled"
            else:
                run = functools.partial(run_command, candidate, argv, settings, runner, env, work_dir, cancel, limits)
                values.update(once(candidate, run) if once is not None else run())
        found[candidate.name] = values
    return found


def run_command(
    candidate: Candidate,
    argv: list[str],
    settings: Settings,
    runner: ProcessRunner,
    env: Mapping[str, str],
    work_dir: Path,
    cancel: Cancel | None,
    limits: Limits | None = None,
) -> dict[str, Measure]:
    """The measures the scoring command printed in the candidate's worktree, with STATUS_KEY;
    never raises for the command's misbehaviour."""
    cwd = candidate.cwd
    if cwd is None or not cwd.is_dir():
        return {STATUS_KEY: "not run: the candidate's worktree is gone"}
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / f"scoring-{candidate.name}.log"
    log_path.unlink(missing_ok=True)  # one run per log: the runner appends
    env = {k: v for k, v in env.items() if k not in (protocol.API_KEY, protocol.API_KEY_FILE)}  # never the worker's key
    timeout = settings.scoring.timeout
    try:
        tag = f"{candidate.tree_tag}scoring-{candidate.name}-{secrets.token_hex(4)}"
        program = environment_program(argv, cwd, cwd, settings, candidate.sandbox)
        env = project_imports(env, cwd, candidate.sandbox, settings, program[0])  # no view: the candidate's code first
        handle = runner.spawn(program, cwd=cwd, env=env, log_path=log_path, tag=tag, sandbox=candidate.sandbox, limits=limits)
        failpoints.hit(f"scoring_running.{candidate.name}")  # the chaos tests' stop in the middle of a scoring
    except CommandNotFound as exc:  # (./score.sh: the candidate's, found in its worktree by the runner)
        return {STATUS_KEY: f"not run: {exc.reason(argv[0], 'the PATH')} (scoring.command)"}
    except (OSError, ValueError) as exc:
        return {STATUS_KEY: f"not run: {argv[0]!r} could not start: {exc}"}
    watch = HelperWatch.of(limits, settings.workers.monitor_interval, (cwd,)) if limits is not None else None
    try:
        code, why = wait_for(runner, handle, timeout, cancel, watch)
    finally:
        runner.terminate(handle, grace=settings.workers.kill_grace)  # ends it if still running, sweeps either way
        runner.release(handle)
    if code is None:
        return {STATUS_KEY: why}
    text = _tail(log_path)
    if code != 0:
        how = f"killed by {signal_name(-code)}" if code < 0 else f"exit code {code}"
        return {STATUS_KEY: f"failed: {how}" + _last_line(text)}
    found = last_json_object(text, lambda obj: True)
    if found is None:
        return {STATUS_KEY: "no JSON object in its output" + _last_line(text)}
    return {**command_measures(found), STATUS_KEY: ScoringStatus.OK.value}


def command_measures(found: Mapping[str, Any]) -> dict[str, Measure]:
    """The command's keys as measures: finite numbers as they are, short text and booleans kept
    (weight 0: not numbers), anything else and the built-in measures' names left out."""
    kept: dict[str, Measure] = {}
    for key, value in list(found.items())[:MAX_KEYS]:
        key = str(key)[:64]
        if key in BUILTIN or key == STATUS_KEY:
            continue
        if is_number(value) or isinstance(value, bool) or value is None:
            kept[key] = value
        elif isinstance(value, str):
            kept[key] = value[:TEXT_CHARS]
    return kept


def wait_for(
    runner: ProcessRunner, handle: ProcessHandle, timeout: float, cancel: Cancel | None, watch: HelperWatch | None = None
) -> tuple[int | None, str]:
    """The exit code, or None with why it did not come: a timeout, the cancel flag, or a worker's cap
    it was stopped at (``watch``: the workers' caps it runs under, read as a worker's are; the caller
    ends it)."""
    deadline = time.monotonic() + timeout
    wake = cancel if isinstance(cancel, Wakeup) else None
    while True:
        if cancel is not None and cancel.is_set():
            return None, "cancelled: the selection was cancelled"
        left = deadline - time.monotonic()
        if left <= 0:
            return None, f"timed out after {timeout:g}s; its process group was killed"
        step = left if wake is not None or cancel is None else min(left, POLL)
        if watch is None:
            code = runner.wait(handle, step, wake=wake)
        else:
            code, breach = watch.wait(runner, handle, step, wake)
            if breach is None and code is not None:
                breach = watch.ended(handle)  # held by the kernel at a cap, whatever it exited with
            if breach:
                return None, f"{CAPPED}: {breach}"
        if code is not None:
            return code, ""


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - OUTPUT_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f": {lines[-1][:TEXT_CHARS]}" if lines else ""


def is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- ranking --------------------------------------------------------------------------------------
def natural(name: str) -> tuple[Any, ...]:
    """worker_2 before worker_10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _unknown_last(value: float | None) -> tuple[bool, float]:
    return (value is None, value if value is not None else 0.0)


# The tie rules after the mode's own key, in order: (name in a row's reason, key).
TIE_RULES: list[tuple[str, Callable[[Candidate], Any]]] = [
    ("lower cost", lambda c: _unknown_last(c.cost_usd)),
    ("earlier end", lambda c: _unknown_last(c.ended_at)),
    ("name", lambda c: natural(c.name)),
]


def normalised(value: float, values: Sequence[float], higher: bool) -> float:
    """``value`` on 0..1 among ``values``: its ratio to the best when none is negative (the best
    gets 1; 0 for the lower-is-better side is the best), else its place between min and max."""
    if all(v >= 0 for v in values):
        if higher:
            top = max(values)
            return 1.0 if top == 0 else value / top
        low = min(values)
        return 1.0 if value == 0 else low / value
    lo, hi = min(values), max(values)
    if hi == lo:
        return 1.0
    return (value - lo) / (hi - lo) if higher else (hi - value) / (hi - lo)


def scores(
    eligible: Sequence[Candidate], measures: Mapping[str, Mapping[str, Measure]], weights: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, float]]:
    """(score by name, parts by name, the weights that counted)."""
    used = {m: w for m, w in weights.items() if w and any(is_number(measures[c.name].get(m)) for c in eligible)}
    total = sum(abs(w) for w in used.values())
    score, parts = {}, {}
    for c in eligible:
        mine = {}
        for m, w in used.items():
            value = measures[c.name].get(m)
            values = [v for e in eligible if is_number(v := measures[e.name].get(m))]
            if m in MEDIAN_WHEN_UNKNOWN and not is_number(value):
                value = statistics.median(values)
            mine[m] = abs(w) * normalised(value, values, w > 0) if is_number(value) else 0.0
        parts[c.name] = {m: round(p, 2) for m, p in mine.items()}
        score[c.name] = round(100 * sum(mine.values()) / total, 2) if total else 0.0
    return score, parts, used


def rank(
    candidates: Sequence[Candidate],
    select: str,
    measures: Mapping[str, Mapping[str, Measure]],
    weights: Mapping[str, float],
) -> Selection:
    """The selection by ``select`` (best, cheapest, fastest, first_passing): rows best first."""
    eligible = [c for c in candidates if c.eligible]
    score: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = {}
    used: dict[str, float] = {}
    if select == Select.BEST:
        score, parts, used = scores(eligible, measures, weights)
    own = _own_key(select, score)
    rules = TIE_RULES[2:] if select == Select.FIRST_PASSING else TIE_RULES  # its own key is the end
    order = sorted(eligible, key=lambda c: (own(c), *(key(c) for _, key in rules)))
    rows = []
    for place, c in enumerate(order, 1):
        why = _why(select, c, score.get(c.name), parts.get(c.name, {}), used, measures[c.name])
        if place > 1 and own(order[place - 2]) == own(c):
            before = order[place - 2]
            rule = next((name for name, key in rules if key(before) != key(c)), "name")
            why += f"; tied with {before.name}, ranked after it by {rule}"
        rows.append(_row(c, score.get(c.name), parts.get(c.name, {}), measures[c.name], place, why))
    for c in sorted((c for c in candidates if not c.eligible), key=lambda c: natural(c.name)):
        rows.append(_row(c, None, {}, measures[c.name], None, "not eligible: " + out_reason(c)))
    if not order:
        return Selection(None, no_winner(candidates), rows)
    first = order[0]
    ties = [
        f"{c.name} by {next((name for name, key in rules if key(first) != key(c)), 'name')}"
        for c in order[1:]
        if own(c) == own(first)
    ]
    return Selection(first.name, _winner_reason(select, rows[0], len(order), ties), rows)


def _own_key(select: str, score: Mapping[str, float]) -> Callable[[Candidate], Any]:
    if select == Select.BEST:
        return lambda c: -score[c.name]
    if select == Select.CHEAPEST:
        return lambda c: _unknown_last(c.cost_usd)
    if select == Select.FASTEST:
        return lambda c: _unknown_last(c.duration)
    if select == Select.FIRST_PASSING:
        return lambda c: _unknown_last(c.ended_at)
    raise ValueError(f"unknown select {select!r}")


def _row(
    c: Candidate, score: float | None, parts: dict[str, float], measures: Mapping[str, Measure], place: int | None, why: str
) -> RankingRow:
    return RankingRow(c.name, c.kind, c.model, c.eligible, score, parts, dict(measures), place, why)


def _why(
    select: str,
    c: Candidate,
    score: float | None,
    parts: Mapping[str, float],
    used: Mapping[str, float],
    measures: Mapping[str, Measure],
) -> str:
    if select == Select.BEST:
        shown = ", ".join(f"{m} {parts[m]:g}/{abs(w):g}" for m, w in used.items())
        why = f"score {score:g}" + (f": {shown}" if shown else " (no measure to score)")
        if "cost_usd" in used and not is_number(measures.get("cost_usd")):
            why += "; cost unknown, counted as the median of the known costs"
    elif select == Select.CHEAPEST:
        why = f"cost {_money(c.cost_usd)}"
    elif select == Select.FASTEST:
        why = "duration unknown" if c.duration is None else f"duration {c.duration:.1f}s"
    else:
        why = "end unknown" if c.ended_at is None else "ended at " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.ended_at))
    status = measures.get(STATUS_KEY)
    if status is not None and status != ScoringStatus.OK:
        why += f"; scoring command {status}"
    return why


def _money(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.4f}"


def _winner_reason(select: str, top: RankingRow, eligible: int, ties: list[str]) -> str:
    labels: dict[str, str] = {
        Select.BEST: "best score",
        Select.CHEAPEST: "cheapest",
        Select.FASTEST: "fastest",
        Select.FIRST_PASSING: "first to pass",
    }
    label = labels[select]
    detail = top.reason
    if select == Select.BEST:
        label += f" {top.score:g}"
        detail = detail.removeprefix(f"score {top.score:g}").removeprefix(": ").strip() or "no measure to score"
    text = f"{label} of {eligible} eligible: {detail}"
    return text + (f" (won a tie with {', '.join(ties)})" if ties else "")


def out_reason(c: Candidate) -> str:
    """Why an ineligible candidate is out: a required gate that did not pass, else its status."""
    for gate in c.gates:
        if gate.required and not gate.passed:
            return f"required gate {gate.name} did not pass ({gate.reason or gate.status})"
    if c.ended_at is None:  # first_passing chooses while the others may still run
        return f"it had not passed when the choice was made (status {c.status})"
    return f"it ended {c.status}"


def no_winner(candidates: Sequence[Candidate]) -> str:
    if not candidates:
        return "no candidate to choose from"
    outs = "; ".join(f"{c.name}: {out_reason(c)}" for c in sorted(candidates, key=lambda c: natural(c.name)))
    return f"no candidate is eligible ({outs})"[:1000]
