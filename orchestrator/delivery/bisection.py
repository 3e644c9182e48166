"""Which workers of a batch break the merged result: the search, apart from git and gates.

The workers ready to merge are merged, in merge order, and gated together once (``Trial``: the
caller merges a set of them onto the result so far and runs the gates on that tree). When the
batch fails, a binary search over its prefixes finds the first worker whose addition turns a
passing prefix into a failing one: that worker is the breaker, the later in merge order of the
smallest failing set. It is tried alone on the result: failing, it breaks alone; passing, it breaks
only in combination with work merged before it, and a second search over that work finds the
shortest prefix it fails after, whose last worker is named (with the breaker, a failing pair), or
that whole prefix when the pair alone passes (``_partners``). It is left out, and the rest is gated
again, the search going on past the prefix known to pass, until the set left passes. A single
breaker among N costs at most 2⌈log2 N⌉ + 1 gate runs (1 for the batch, ⌈log2 N⌉ for the search, 1
alone, 1 for the rest).

The empty set is the result so far, taken as passing (every worker's own gates passed on its
work, and the result holds only gated trees). A failure that no smaller set reproduces (every
proper prefix passed, and its last worker alone: only the whole batch failed, once) is run once more: failing again, its
last worker is the breaker of that combination; passing, the failure was not reproduced, and the
batch's last worker is left out all the same, as "failed in combination, not reproduced" (the
result never moves to a tree that failed a run whose cause is unknown). A batch of one is that
worker alone on the result: it is left out at once.

Each set is tried once (``Trial`` results are remembered here; the caller's stage ledger keeps
them across a server's restart), but for that one re-run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

NOT_REPRODUCED = "failed in combination, not reproduced"


@dataclass(frozen=True)
class Trial:
    """One gate run's verdict on the tree of a set of workers merged in order."""

    passed: bool
    reason: str = ""  # why it failed ("" when it passed), e.g. "tests failed: ImportError: ..."


# (the workers merged in order, how many times that set was judged before) -> the gates' verdict
# on their merged tree (a set is judged again only for the re-run of a failure nothing smaller shows)
Judge = Callable[[tuple[str, ...], int], Trial]


@dataclass(frozen=True)
class Breaker:
    """A worker left out of the result: its reason, and the workers it broke the result with."""

    worker: str
    reason: str
    combination: tuple[str, ...]  # the workers merged before it in the failing set ((): alone)


@dataclass
class Settled:
    """What a batch's search found: the workers that land (their merged tree passed its gates, or
    the batch was empty), the breakers left out, and how many gate runs it took."""

    landed: tuple[str, ...]
    breakers: list[Breaker] = field(default_factory=list)
    runs: int = 0


def most_runs(size: int) -> int:
    """The gate runs a batch of ``size`` with a single breaker may take: 2⌈log2 N⌉ + 1."""
    return 2 * math.ceil(math.log2(size)) + 1 if size > 0 else 0


def settle(workers: Sequence[str], judge: Judge) -> Settled:
    """The workers of the batch (in merge order) that land together, and the breakers found
    (see the module docstring). ``judge`` runs the gates on a set's merged tree."""
    found = Settled(())
    seen: dict[tuple[str, ...], Trial] = {}
    times: dict[tuple[str, ...], int] = {}

    def trial(subset: tuple[str, ...], again: bool = False) -> Trial:
        if subset not in seen or again:
            found.runs += 1
            seen[subset] = judge(subset, times.get(subset, 0))
            times[subset] = times.get(subset, 0) + 1
        return seen[subset]

    left = tuple(workers)
    known = 0  # how many of ``left``'s first workers are known to pass together
    while left:
        whole = trial(left)
        if whole.passed:
            found.landed = left
            return found
        passing, failing, reason = known, len(left), whole.reason
        while failing - passing > 1:  # invariant: left[:passing] passes, left[:failing] fails
            middle = (passing + failing) // 2
            verdict = trial(left[:middle])
            if verdict.passed:
                passing = middle
            else:
                failing, reason = middle, verdict.reason
        worker, before = left[failing - 1], left[: failing - 1]
        combination: tuple[str, ...] = ()
        alone = trial((worker,)) if before else None  # it breaks alone: no combination to name
        if alone is not None and not alone.passed:
            reason = alone.reason
        elif before:
            if failing == len(left):
                again = trial(left, again=True)  # only the whole batch failed, once: is it so?
                if again.passed:
                    reason = f"{NOT_REPRODUCED} (the batch failed once: {reason}; it passed when run again)"
            if not reason.startswith(NOT_REPRODUCED):
                combination, reason = _partners(before, worker, trial, reason)
        found.breakers.append(Breaker(worker, reason, combination))
        left, known = before + left[failing:], failing - 1
        if known == len(left):  # what is left is a prefix known to pass
            found.landed = left
            return found
    return found


def _partners(
    before: tuple[str, ...], worker: str, trial: Callable[[tuple[str, ...]], Trial], reason: str
) -> tuple[tuple[str, ...], str]:
    """The workers ``worker`` breaks the result with (it passes alone, and after all of ``before``
    it fails): the shortest prefix of ``before`` it fails after, by a binary search; its last worker
    alone when the two of them fail (a pair), else that whole prefix. With the failing run's reason."""
    passing, failing = 0, len(before)  # before[:passing] + worker passes (0: alone), before[:failing] + worker fails
    while failing - passing > 1:
        middle = (passing + failing) // 2
        verdict = trial(before[:middle] + (worker,))
        if verdict.passed:
            passing = middle
        else:
            failing, reason = middle, verdict.reason
    partner = before[failing - 1]
    if failing == 1:
        return (partner,), reason
    pair = trial((partner, worker))
    return ((partner,), pair.reason) if not pair.passed else (before[:failing], reason)


def reason_of(breaker: Breaker) -> str:
    """What the breaker's entry in the merge's ``left_out`` says."""
    if breaker.reason.startswith(NOT_REPRODUCED):
        return breaker.reason
    if not breaker.combination:
        return f"fails on the merged result: {breaker.reason}"
    return f"breaks the combination with {', '.join(breaker.combination)}: {breaker.reason}"
