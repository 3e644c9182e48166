"""``select: judge``: an AI CLI compares the eligible candidates two at a time, in a knockout.

The bracket is seeded by the ``best`` ranking. Each round, when the number left is odd, the
best-ranked one gets a bye; the rest meet best against worst (2 v 5, 3 v 4), and the winners,
in seed order, go on. Each comparison shows the task, both candidates' run summaries (their
output, capped), gate results, diffstats and diffs (capped by the engine to
``candidates.judge_diff_bytes``) under the blind labels "Candidate A" and "Candidate B", and is
asked twice, once in each order, to cancel position bias. The answer must be a JSON object
``{"winner": "A" | "B", "reasons": "..."}``; ``parse_verdict`` finds it in prose or a fence,
whatever the keys' case or the spacing. When the two orders pick different candidates, or an
answer is unusable (no such object, the CLI failed or timed out, the selection was cancelled),
that pair falls back to ``best``: the better-ranked one goes on, and the match says why
(``fallback`` true). When the first answer is unusable the second order is not asked.

The CLI runs the way the AI planner's does (planner/ai.py): the adapter's argv from a
WorkerContext, run by the runner in a scratch folder under ``work_dir`` (which keeps each
call's prompt and log), its result and cost read by the adapter. Every call's cost is summed.
A call may take the judge's ``timeout`` (None: ``orchestrator.planner_timeout``); the judge gets
no tool at all, no ORCHESTRATOR_* variable (it cannot start jobs) and the judge's ``model`` (None:
``orchestrator.model``). What it reads is workers' work, so the engine hands it ``confined``
(``Confined``): each call runs in the tree's worker sandbox with the workers' caps, in its own empty
folder; where no sandbox runs it the judge is not asked, and every match falls back to ``best``
saying why (no deputy: docs/sandbox.md).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import defences, protocol
from ..config import Settings
from ..errors import ConfigError
from ..outcomes import JudgeAnswer, JudgeMatch, JudgeRecord, RankingRow
from ..process.cgroups import Limits
from ..process.runner import CommandNotFound, ProcessRunner, signal_name
from ..process.sandbox import SandboxSpec
from ..workers import costs
from ..workers.adapters import get_adapter
from ..workers.adapters.base import WorkerContext
from ..workers.confinement import Confinement
from .decisions import Candidate, Selection
from .scoring import Cancel, wait_for

ANSWER_CHARS = 2000  # of each raw answer, as recorded
OUTPUT_CHARS = 3000  # of each candidate's run summary, as shown to the judge
READ_CHARS = 200_000  # of the CLI's output read back as the answer
REASON_CHARS = 500
MAX_OBJECTS = 200  # JSON objects tried in one answer
LABELS = ("A", "B")
_FENCE = re.compile(r"```[\w-]*[ \t]*\n(.*?)```", re.S)
_FLAT_OBJECT = re.compile(r"\{[^{}]*\}")
_LOOSE_WINNER = re.compile(r"""['"]?winner['"]?\s*[:=]\s*['"]?\s*(?:candidate\s*)?([AB])\b""", re.I)


@dataclass(frozen=True)
class Confined:
    """Where the judge's CLI runs: ``sandbox(folder, env)`` is the sandbox of one call in ``folder``
    (None: this machine runs none, and ``why`` says so); ``limits``: the workers' caps."""

    sandbox: Callable[[Path, Mapping[str, str]], SandboxSpec | None]
    limits: Limits | None
    why: str


@dataclass
class Verdict:
    label: str | None  # "A", "B", or None: unusable
    reasons: str
    problem: str | None = None  # why it is unusable


# -- reading an answer ------------------------------------------------------------------------------
def parse_verdict(text: str) -> Verdict:
    """The winner's label and reasons in an answer. The last object with a ``winner`` in a fence
    wins, else the last one anywhere; single quotes or a trailing comma are read too."""
    text = (text or "").strip()
    if not text:
        return Verdict(None, "", "the answer is empty")
    for chunk in [*reversed([m.group(1) for m in _FENCE.finditer(text)]), text]:
        for obj in reversed(list(_objects(chunk))):
            fields = {str(k).strip().lower(): v for k, v in obj.items()}
            if "winner" in fields:
                return _verdict(fields)
    for span in reversed(_FLAT_OBJECT.findall(text)):
        found = _LOOSE_WINNER.search(span)
        if found:
            return Verdict(found.group(1).upper(), _loose_reasons(span))
    flat = " ".join(text.split())
    return Verdict(None, "", f'no JSON object with a "winner" in the answer: {flat[:120]!r}')


def _objects(text: str) -> list[dict[str, Any]]:
    decoder, found, pos = json.JSONDecoder(), [], 0
    for _ in range(MAX_OBJECTS):
        start = text.find("{", pos)
        if start < 0:
            break
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        if isinstance(obj, dict):
            found.append(obj)
        pos = end
    return found


def _verdict(fields: Mapping[str, Any]) -> Verdict:
    reasons = next((fields[k] for k in ("reasons", "reason", "reasoning", "explanation") if k in fields), "")
    if isinstance(reasons, list):
        reasons = "; ".join(str(r) for r in reasons)
    reasons = " ".join(str(reasons).split())[:REASON_CHARS]
    raw = fields["winner"]
    label = re.sub(r"^candidate\s*", "", " ".join(str(raw).split()).strip(" .'\"").casefold()).upper()
    if label not in LABELS:
        return Verdict(None, reasons, f"the answer's winner is {str(raw)[:40]!r}, not A or B")
    return Verdict(label, reasons)


def _loose_reasons(span: str) -> str:
    found = re.search(r"""['"]?reasons?['"]?\s*[:=]\s*['"]([^'"]*)""", span, re.I)
    return " ".join(found.group(1).split())[:REASON_CHARS] if found else ""


# -- the prompt ---------------------------------------------------------------------------------------
def judge_prompt(task: str, first: Candidate, second: Candidate) -> str:
    parts = [
        "You are judging two candidate solutions to the same coding task, made independently from the same "
        "starting point. Do not change any file and do not run anything: read and answer.",
        f"## The task\n\n{task.strip()}",
    ]
    for label, c in zip(LABELS, (first, second), strict=True):
        parts.append(_shown(label, c))
    parts.append(
        "## Your answer\n\nWhich candidate solves the task better? Weigh correctness first, then completeness, "
        "then simplicity and code quality; a smaller change is better when both are correct. Answer with one "
        'JSON object and nothing else: {"winner": "A" or "B", "reasons": "one to three sentences"}'
    )
    return "\n\n".join(parts) + "\n"


def _shown(label: str, c: Candidate) -> str:
    output = c.output.strip()
    if len(output) > OUTPUT_CHARS:
        output = output[:OUTPUT_CHARS] + "\n[... summary truncated]"
    gates = "; ".join(f"{g.name} {g.status} ({'required' if g.required else 'optional'})" for g in c.gates)
    diff = c.diff + ("\n[... diff truncated]" if c.diff_truncated else "")
    fence = "`" * max(3, _longest_backticks(diff) + 1)
    return (
        f"## Candidate {label}\n\n"
        f"### Summary of its run\n\n{output or '(no summary)'}\n\n"
        f"### Quality gates\n\n{gates or 'none configured'}\n\n"
        f"### Diff stat\n\n{(c.diffstat or '').strip() or f'{c.files_changed} files, +{c.lines_added} -{c.lines_removed}'}\n\n"
        f"### Diff\n\n{fence}diff\n{diff.rstrip()}\n{fence}"
    )


def _longest_backticks(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


# -- one call -------------------------------------------------------------------------------------------
def ask(
    prompt: str,
    judge: Mapping[str, Any],
    *,
    settings: Settings,
    runner: ProcessRunner,
    env: Mapping[str, str],
    call_dir: Path,
    task: str,
    cancel: Cancel | None,
    confined: Confined | None = None,
) -> tuple[str, float | None, str | None]:
    """(the answer text, its cost, why there is no usable answer or None): runs the judge's
    CLI once in ``call_dir`` (``confined``: in its sandbox, under its caps, or not at all);
    never raises for the CLI's misbehaviour."""
    try:
        adapter = get_adapter(judge["kind"])
    except ConfigError as exc:
        return "", None, exc.message
    timeout = float(judge.get("timeout") or settings.orchestrator.planner_timeout)
    call_dir.mkdir(parents=True, exist_ok=True)
    log_path = call_dir / "judge.log"
    log_path.unlink(missing_ok=True)
    made = _call_context(prompt, judge, settings, env, call_dir, task, timeout, confined)
    if isinstance(made, str):
        return "", None, made
    ctx, sandbox = made
    base = ctx.env
    try:
        argv = adapter.build_argv(ctx)
        handle = runner.spawn(
            argv,
            cwd=call_dir,
            env={**base, **adapter.extra_env(ctx)},
            log_path=log_path,
            tag=f"judge.{secrets.token_hex(6)}",
            sandbox=sandbox,
            limits=confined.limits if confined is not None else None,
        )
    except ConfigError as exc:
        return "", None, exc.message
    except CommandNotFound as exc:
        return "", None, f"{exc.strerror}. Install it, or set {adapter.command_key or 'its command'} to its full path"
    except (OSError, ValueError) as exc:
        return "", None, f"could not start the judge's CLI: {exc}"
    try:
        code, why = wait_for(runner, handle, timeout, cancel)
    finally:
        runner.terminate(handle, grace=settings.workers.kill_grace, first_signal=adapter.first_signal)
        runner.release(handle)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    parsed = adapter.parse(text, code, max_chars=READ_CHARS)
    # Counted in the tree's cost and budget like a worker's (an estimate where no cost was reported).
    costs.estimate_for(parsed, adapter, settings, ctx.model)
    if code is None:
        return parsed.output, parsed.cost_usd, why
    if code != 0 or parsed.ok is False:
        how = f"was killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}" if code else "reported a failure"
        return parsed.output, parsed.cost_usd, f"the judge's CLI {how}: {(parsed.error or parsed.output)[-200:]}"
    return parsed.output, parsed.cost_usd, None


def _call_context(
    prompt: str,
    judge: Mapping[str, Any],
    settings: Settings,
    env: Mapping[str, str],
    call_dir: Path,
    task: str,
    timeout: float,
    confined: Confined | None,
) -> tuple[WorkerContext, SandboxSpec | None] | str:
    """What the judge's CLI is started with: its context (no tool, its prompt written in
    ``call_dir``) and its sandbox; or why it is not asked (confined, and no sandbox runs here)."""
    # Never a worker identity or key: a judge must not start jobs.
    base = {k: v for k, v in env.items() if not k.startswith(protocol.PREFIX)}
    sandbox = None
    if confined is not None:
        base = Confinement.helper_env(base, call_dir)
        sandbox = confined.sandbox(call_dir, base)
        if sandbox is None and not defences.off("helper_refusal"):  # (the hostile suite's switch)
            return f"the judge was not asked: the candidates' work is workers' text, and no sandbox runs it here: {confined.why}"
    ctx = WorkerContext(
        task=task,
        prompt=prompt,
        prompt_file=call_dir / "judge_prompt.md",
        worker_dir=call_dir,
        depth=0,
        max_recursion_depth=0,
        attempt=1,
        settings=settings,
        time_left=timeout,
        model=judge.get("model"),
        allowed_tools=(),  # no tool at all: it only reads what it is shown
        sandboxed=sandbox is not None,
        env=base,
    )
    ctx.prompt_file.write_text(prompt, encoding="utf-8")  # kept for the record, whatever the CLI reads
    return ctx, sandbox


# -- the knockout ---------------------------------------------------------------------------------------
def knockout(
    task: str,
    candidates: Sequence[Candidate],
    best: Selection,
    judge: Mapping[str, Any],
    *,
    settings: Settings,
    runner: ProcessRunner,
    env: Mapping[str, str],
    work_dir: Path,
    cancel: Cancel | None = None,
    confined: Confined | None = None,
) -> Selection:
    """The judge's selection: ``best`` (every candidate's score and measures) reordered by how far
    each got in the bracket, with every match recorded. ``confined``: where each call runs (``ask``)."""
    by_name = {c.name: c for c in candidates}
    seeds = [row.worker for row in best.ranking if row.rank is not None]
    seed = {name: i for i, name in enumerate(seeds)}
    kind, model = judge.get("kind"), judge.get("model")
    matches: list[JudgeMatch] = []
    if len(seeds) < 2:
        reason = ("only one eligible candidate, nothing to judge: " + best.reason) if seeds else best.reason
        return Selection(best.winner, reason, best.ranking, JudgeRecord(kind, model), None)
    costs: list[float] = []
    lost: dict[str, tuple[int, str, str]] = {}  # name -> (round, winner, the match's reason)
    alive, round_no = list(seeds), 0
    while len(alive) > 1:
        round_no += 1
        going = []
        if len(alive) % 2:
            going.append(alive[0])
            matches.append(_bye(round_no, alive[0]))
            alive = alive[1:]
        for i in range(len(alive) // 2):
            a, b = alive[i], alive[-1 - i]
            match = _match(round_no, by_name[a], by_name[b], seed, task, judge, settings, runner, env, work_dir, cancel, confined)
            costs.extend(o.cost_usd for o in match.orders if o.cost_usd is not None)
            matches.append(match)
            loser = b if match.winner == a else a
            lost[loser] = (round_no, match.winner, match.reason)
            going.append(match.winner)
        alive = sorted(going, key=seed.__getitem__)
    winner = alive[0]
    ranking = _reordered(best.ranking, lost, winner, round_no)
    final = matches[-1]
    reason = f"won the judge's knockout of {len(seeds)} eligible in {round_no} round(s); final: {final.reason}"
    record = JudgeRecord(kind, model, tuple(matches))
    return Selection(winner, reason[:1000], ranking, record, round(sum(costs), 6) if costs else None)


def _bye(round_no: int, name: str) -> JudgeMatch:
    return JudgeMatch(round_no, name, None, (), name, "a bye (odd one out)", False)


def _match(
    round_no: int,
    a: Candidate,
    b: Candidate,
    seed: Mapping[str, int],
    task: str,
    judge: Mapping[str, Any],
    settings: Settings,
    runner: ProcessRunner,
    env: Mapping[str, str],
    work_dir: Path,
    cancel: Cancel | None,
    confined: Confined | None = None,
) -> JudgeMatch:
    orders: list[JudgeAnswer] = []
    picks: list[str] = []
    problem = None
    for first, second in ((a, b), (b, a)):
        if cancel is not None and cancel.is_set():
            problem = "the selection was cancelled before the judge answered"
            break
        call_dir = work_dir / "judge" / f"round{round_no}-{first.name}-vs-{second.name}"
        answer, cost, error = ask(
            judge_prompt(task, first, second),
            judge,
            settings=settings,
            runner=runner,
            env=env,
            call_dir=call_dir,
            task=task,
            cancel=cancel,
            confined=confined,
        )
        verdict = Verdict(None, "", error) if error else parse_verdict(answer)
        orders.append(
            JudgeAnswer((first.name, second.name), answer[:ANSWER_CHARS], verdict.label, verdict.reasons, cost, verdict.problem)
        )
        if verdict.label is None:
            problem = f"the answer with {first.name} shown as A was unusable: {verdict.problem}"
            break
        picks.append(first.name if verdict.label == "A" else second.name)
    if problem is None and picks[0] == picks[1]:
        reasons = orders[0].reasons or orders[1].reasons
        reason = f"the judge picked {picks[0]} in both orders" + (f": {reasons}" if reasons else "")
        return JudgeMatch(round_no, a.name, b.name, tuple(orders), picks[0], reason, False)
    if problem is None:
        problem = f"the two orders disagreed ({picks[0]} when {a.name} was A, {picks[1]} when {b.name} was A)"
    winner = min((a.name, b.name), key=seed.__getitem__)
    reason = f"fell back to best ({winner} ranks higher): {problem}"
    return JudgeMatch(round_no, a.name, b.name, tuple(orders), winner, reason, True)


def _reordered(rows: list[RankingRow], lost: Mapping[str, tuple[int, str, str]], winner: str, rounds: int) -> list[RankingRow]:
    """The best ranking's rows, the eligible ones by the round they went out in (the winner
    first), then their best rank; each reason says how it fared."""
    eligible = [r for r in rows if r.rank is not None]
    out = [r for r in rows if r.rank is None]
    eligible.sort(key=lambda r: (-(rounds + 1 if r.worker == winner else lost[r.worker][0]), r.rank or 0))
    placed = []
    for place, row in enumerate(eligible, 1):
        if row.worker == winner:
            how = "won the judge's knockout"
        else:
            rnd, by, _ = lost[row.worker]
            how = f"lost to {by} in round {rnd}"
        placed.append(replace(row, reason=f"{how}; best {row.reason}", rank=place))
    return placed + out
