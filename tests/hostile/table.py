"""The suite's table: per primitive and context, the attacks tried and the escapes, in each set-up,
with the defences on, and the escapes seen with each primitive's defence off."""

from __future__ import annotations

from collections import defaultdict

from .primitives import AWAITING, PRIMITIVES, Context
from .runner import Run


def rows(runs: list[Run], off_runs: list[Run] = ()) -> list[tuple[str, ...]]:
    setups = [r.setup for r in runs]
    tried: dict[tuple[str, str, str], int] = defaultdict(int)
    ran: dict[tuple[str, str, str], int] = defaultdict(int)
    escaped: dict[tuple[str, str, str], int] = defaultdict(int)
    off_tried: dict[tuple[str, str], int] = defaultdict(int)
    off_escaped: dict[tuple[str, str], int] = defaultdict(int)
    for run in runs:
        for result in run.results:
            key = (result.attack.primitive.name, result.attack.context.value, run.setup)
            tried[key] += 1
            ran[key] += result.ran
            escaped[key] += bool(result.escape)
    for run in off_runs:
        for result in run.results:
            key2 = (result.attack.primitive.name, result.attack.context.value)
            off_tried[key2] += 1
            off_escaped[key2] += bool(result.escape)
    header = (
        "category",
        "primitive",
        "context",
        *[f"{s}: tried/ran/escaped" for s in setups],
        "defence",
        "defence off: escaped/tried",
    )
    made = [header]
    for primitive in PRIMITIVES:
        if primitive.awaiting:
            continue
        contexts = [c.value for c in Context if c in primitive.contexts]
        for number, context in enumerate(contexts):
            cells = [f"{tried[k]}/{ran[k]}/{escaped[k]}" for s in setups for k in [(primitive.name, context, s)]]
            both = (primitive.name, context)
            off = f"{off_escaped[both]}/{off_tried[both]}" if off_tried[both] else ""
            made.append(
                (
                    primitive.category.value,
                    primitive.name if number == 0 else "",
                    context,
                    *cells,
                    primitive.defence if number == 0 else "",
                    off,
                )
            )
    for primitive in AWAITING:
        made.append(
            (
                primitive.category.value,
                primitive.name,
                "(all)",
                *["skipped"] * len(setups),
                f"awaiting {primitive.awaiting.split(':')[0]}",
                "",
            )
        )
    return made


def render(runs: list[Run], off_runs: list[Run] = ()) -> str:
    table = rows(runs, off_runs)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    for run in [*runs, *off_runs]:
        total = len(run.results)
        escapes = sum(bool(r.escape) for r in run.results)
        unseen = [r.attack.id for r in run.results if not r.ran]
        lines.append(
            f"{run.setup}: {total} attacks in {len(run.trees) - 1} trees, {total - len(unseen)} seen to run, "
            f"{escapes} escapes, {run.seconds:.0f} s" + (f"; no trace of {' '.join(unseen)}" if unseen else "")
        )
        for check, broke in run.checks.items():
            lines.append(f"  {check}: {'NO, ' + broke if broke else 'yes'}")
        for name, status in run.trees.items():
            if status not in ("completed", "partial", "failed"):
                lines.append(f"  tree {name} ended {status}")
    for run in runs:  # every escape with the defences on, named (there should be none)
        for result in run.results:
            if result.escape:
                lines.append(
                    f"  ESCAPE ({run.setup}): {result.attack.id} {result.attack.primitive.name} in {result.attack.context.value}: {result.escape}"
                )
    return "\n".join(lines)


def markdown(runs: list[Run], off_runs: list[Run] = ()) -> str:
    """The table summed over contexts, one row per primitive, as docs/sandbox.md shows it."""
    setups = [r.setup for r in runs]
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    off: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for run in runs:
        for result in run.results:
            got = counts[(result.attack.primitive.name, run.setup)]
            got[0] += 1
            got[1] += result.ran
            got[2] += bool(result.escape)
    for run in off_runs:
        for result in run.results:
            off[result.attack.primitive.name][0] += bool(result.escape)
            off[result.attack.primitive.name][1] += 1
    lines = [
        "| primitive | category | contexts | " + " | ".join(setups) + " | defence | off |",
        "|---|---|---|" + "---|" * len(setups) + "---|---|",
    ]
    for primitive in PRIMITIVES:
        contexts = ", ".join(c.value for c in Context if c in primitive.contexts)
        if primitive.awaiting:
            cells = ["skipped"] * len(setups)
            defence, escaped = f"awaiting {primitive.awaiting.split(':')[0]}", ""
        else:
            cells = [
                "gap" if any(b in s for b in primitive.gaps) else "/".join(map(str, counts[(primitive.name, s)])) for s in setups
            ]
            defence = primitive.defence
            escaped = "/".join(map(str, off[primitive.name])) if off[primitive.name][1] else ""
        lines.append(
            f"| {primitive.name} | {primitive.category.value} | {contexts} | " + " | ".join(cells) + f" | {defence} | {escaped} |"
        )
    return "\n".join(lines)
