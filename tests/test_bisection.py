"""The search for the workers that break a batch's merged result (delivery/bisection.py), with a
judge made of rules on sets: the breakers named, the rest landed, the gate runs counted against
2⌈log2 N⌉ + 1 for a single breaker."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from orchestrator.delivery.bisection import NOT_REPRODUCED, Breaker, Trial, most_runs, reason_of, settle


def names(n: int) -> list[str]:
    return [f"worker_{i}" for i in range(1, n + 1)]


def judge_failing_when(*bad: frozenset[str]) -> tuple[Callable[[tuple[str, ...], int], Trial], list[tuple[str, ...]]]:
    """A judge whose tree fails when it holds every worker of one of ``bad``; and its calls."""
    calls: list[tuple[str, ...]] = []

    def judge(subset: tuple[str, ...], before: int = 0) -> Trial:
        calls.append(subset)
        for group in bad:
            if group <= set(subset):
                return Trial(False, f"tests failed: {'+'.join(sorted(group))}")
        return Trial(True)

    return judge, calls


def test_a_passing_batch_is_gated_once_and_lands_whole():
    judge, calls = judge_failing_when()
    found = settle(names(16), judge)
    assert found.landed == tuple(names(16)) and found.breakers == [] and found.runs == 1 and len(calls) == 1


@pytest.mark.parametrize("size", [2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_a_single_breaker_anywhere_is_found_within_2_log2_n_plus_1_runs(size):
    for position in range(1, size + 1):
        breaker = f"worker_{position}"
        judge, calls = judge_failing_when(frozenset({breaker}))
        found = settle(names(size), judge)
        assert [b.worker for b in found.breakers] == [breaker]
        assert found.landed == tuple(n for n in names(size) if n != breaker)
        assert found.runs == len(calls) <= most_runs(size) == 2 * math.ceil(math.log2(size)) + 1, (size, position)
        # the landed set itself was judged and passed (or is a prefix that passed)
        assert found.landed in calls and judge(found.landed).passed


def test_one_of_sixteen_costs_at_most_9_runs():
    judge, _ = judge_failing_when(frozenset({"worker_11"}))
    assert settle(names(16), judge).runs <= 9


def test_a_combination_only_failure_leaves_out_the_later_of_the_pair_and_names_the_earlier():
    # each passes alone; worker_2 + worker_4 together fail: worker_4 is the later in merge order
    judge, _ = judge_failing_when(frozenset({"worker_2", "worker_4"}))
    found = settle(names(6), judge)
    assert [b.worker for b in found.breakers] == ["worker_4"]
    assert found.landed == ("worker_1", "worker_2", "worker_3", "worker_5", "worker_6")
    (breaker,) = found.breakers
    # the smallest failing set is named, not the whole prefix it failed after
    assert breaker.combination == ("worker_2",)
    assert reason_of(breaker) == "breaks the combination with worker_2: tests failed: worker_2+worker_4"


def test_the_rename_pair_two_workers_the_second_breaks_the_combination_with_the_first():
    judge, calls = judge_failing_when(frozenset({"worker_1", "worker_2"}))
    found = settle(names(2), judge)
    assert found.breakers == [Breaker("worker_2", "tests failed: worker_1+worker_2", ("worker_1",))]
    assert found.landed == ("worker_1",)
    # the pair, worker_1 alone, worker_2 alone (it breaks only with worker_1), the pair once more (only
    # the whole failed). (A result gate answers a worker alone from its own gates when its tree is theirs.)
    pair = ("worker_1", "worker_2")
    assert calls == [pair, ("worker_1",), ("worker_2",), pair] and found.runs == 4


def test_a_combination_of_three_names_the_prefix_when_no_pair_fails():
    judge, calls = judge_failing_when(frozenset({"worker_1", "worker_3", "worker_5"}))
    found = settle(names(6), judge)
    (breaker,) = found.breakers
    assert breaker.worker == "worker_5" and breaker.combination == ("worker_1", "worker_2", "worker_3")
    assert ("worker_3", "worker_5") in calls  # the pair was tried, and passed


def test_a_breaker_that_fails_alone_names_no_combination():
    judge, _ = judge_failing_when(frozenset({"worker_11"}))
    (breaker,) = settle(names(16), judge).breakers
    assert breaker.combination == () and reason_of(breaker) == "fails on the merged result: tests failed: worker_11"


def test_two_breakers_are_both_left_out_and_the_rest_lands():
    judge, _ = judge_failing_when(frozenset({"worker_3"}), frozenset({"worker_6"}))
    found = settle(names(8), judge)
    assert [b.worker for b in found.breakers] == ["worker_3", "worker_6"]
    assert found.landed == ("worker_1", "worker_2", "worker_4", "worker_5", "worker_7", "worker_8")


def test_three_way_interaction_leaves_out_only_the_third():
    judge, _ = judge_failing_when(frozenset({"worker_1", "worker_3", "worker_5"}))
    found = settle(names(5), judge)
    assert [b.worker for b in found.breakers] == ["worker_5"]
    assert found.landed == ("worker_1", "worker_2", "worker_3", "worker_4")


def test_a_failure_not_reproduced_is_run_once_more_then_the_last_worker_is_left_out():
    outcomes = iter([Trial(False, "tests failed: flaky"), Trial(True), Trial(True), Trial(True), Trial(True)])
    calls: list[tuple[str, ...]] = []

    earlier: list[int] = []

    def judge(subset: tuple[str, ...], before: int) -> Trial:
        calls.append(subset)
        earlier.append(before)
        return next(outcomes)

    found = settle(names(3), judge)
    # the batch (fails), worker_1, worker_1+worker_2 and worker_3 alone (pass), the batch again (passes: not reproduced)
    batch = ("worker_1", "worker_2", "worker_3")
    assert calls == [batch, ("worker_1",), ("worker_1", "worker_2"), ("worker_3",), batch] and earlier == [0, 0, 0, 0, 1]
    (breaker,) = found.breakers
    assert breaker.worker == "worker_3" and breaker.combination == ()
    assert reason_of(breaker).startswith(NOT_REPRODUCED) and "tests failed: flaky" in reason_of(breaker)
    assert found.landed == ("worker_1", "worker_2") and found.runs == 5 <= most_runs(3)


def test_a_batch_of_one_that_fails_is_left_out_at_once():
    judge, calls = judge_failing_when(frozenset({"worker_1"}))
    found = settle(["worker_1"], judge)
    assert found.landed == () and found.runs == 1 and calls == [("worker_1",)]
    assert reason_of(found.breakers[0]) == "fails on the merged result: tests failed: worker_1"


def test_every_worker_breaking_leaves_nothing_to_land():
    judge, _ = judge_failing_when(*(frozenset({n}) for n in names(4)))
    found = settle(names(4), judge)
    assert found.landed == () and [b.worker for b in found.breakers] == names(4)


def test_an_empty_batch_runs_nothing():
    judge, calls = judge_failing_when()
    assert settle([], judge).runs == 0 and calls == []
