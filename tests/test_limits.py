"""Admission and limits (limits.py) as pure functions: request shape, tasks, depth, fan-out,
tree size, budget, and how many workers dispatch may start. No process, no server, no engine."""

from __future__ import annotations

import pytest

from orchestrator.engine import limits
from orchestrator.errors import InvalidGraph, RecursionLimit, ValidationError
from orchestrator.planner import graph


# -- request shape ---------------------------------------------------------------------------
def test_a_request_is_stripped_and_kept():
    assert limits.check_request("  Build a REST API \n", 100) == "Build a REST API"


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (None, "request must be a string describing the work"),
        (42, "request must be a string describing the work"),
        ("   \n", "request is empty: describe the work to do"),
        ("x" * 11, "request is 11 characters; the limit is 10 (orchestrator.max_request_chars)"),
    ],
)
def test_a_malformed_request_is_refused_saying_why(request_, words):
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        limits.check_request(request_, 10)


def test_the_request_limit_is_inclusive():
    assert limits.check_request("x" * 10, 10) == "x" * 10


def test_config_must_be_an_object_or_left_out():
    assert limits.check_config(None) is None and limits.check_config({"max_workers": 2}) == {"max_workers": 2}
    with pytest.raises(ValidationError, match="config must be a JSON object"):
        limits.check_config(["max_workers", 2])


# -- tasks --------------------------------------------------------------------------------------
def test_tasks_left_out_let_the_planner_split_the_request():
    assert graph.check_tasks(None, 5, 100) is None


def test_tasks_have_their_whitespace_collapsed():
    texts, nodes = graph.check_tasks(["  a\n  b ", "c"], 5, 100)
    assert texts == ["a b", "c"]
    assert [(n.id, n.depends_on) for n in nodes] == [("t1", []), ("t2", [])]  # plain strings: independent


@pytest.mark.parametrize(
    ("tasks", "words"),
    [
        ([], "tasks must be a non-empty list of strings"),
        ("a; b", "tasks must be a non-empty list of strings"),
        (["a"] * 6, "6 tasks given; at most 5 are accepted"),
        (["a", 3], r"tasks\[1\] must be a non-empty string"),
        (["a", "  "], r"tasks\[1\] must be a non-empty string"),
        (["x" * 101], r"tasks\[0\] is longer than orchestrator.max_request_chars"),
    ],
)
def test_malformed_tasks_are_refused_naming_the_task(tasks, words):
    with pytest.raises(InvalidGraph, match=words) as refused:
        graph.check_tasks(tasks, 5, 100)
    assert refused.value.http_status == 422


# -- depth --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "depth"), [(None, 0), ({}, 0), ({"current_depth": 2}, 2), ({"current_depth": None}, 0)])
def test_a_root_is_at_depth_zero_unless_its_body_says_deeper(config, depth):
    assert limits.admitted_depth(config) == depth


def test_a_child_one_level_past_the_limit_is_refused_with_the_depths():
    limits.check_depth(1, 2, "worker worker_1 of job J")  # a child at depth 2 of max 2: fine
    with pytest.raises(RecursionLimit, match="Max recursion depth reached: worker worker_1 of job J is at depth 2") as refused:
        limits.check_depth(2, 2, "worker worker_1 of job J")
    assert refused.value.details == {"depth": 3, "max_depth": 2}


def test_recursion_disabled_is_refused():
    limits.check_recursion_enabled(True, "J")
    with pytest.raises(RecursionLimit, match="recursion is disabled for job J"):
        limits.check_recursion_enabled(False, "J")


# -- fan-out ------------------------------------------------------------------------------------
def test_fan_out_allows_up_to_the_cap():
    limits.check_fan_out(2, 3, "worker w of job J")
    with pytest.raises(
        RecursionLimit,
        match=r"Max children per worker reached: worker w of job J already started 3 child job\(s\) \(max_children_per_worker=3\)",
    ):
        limits.check_fan_out(3, 3, "worker w of job J")


# -- tree size ----------------------------------------------------------------------------------
def test_a_root_plan_must_fit_the_tree():
    limits.check_root_plan(10, 10)
    with pytest.raises(ValidationError, match="11 tasks exceed recursion.max_workers_per_root=10; give at most 10"):
        limits.check_root_plan(11, 10)


def test_a_child_plan_that_fits_is_kept():
    assert limits.tree_room("R", used=4, max_per_root=10, planned=6, explicit=False) is None


def test_a_child_plan_too_big_is_merged_into_the_room_left():
    assert limits.tree_room("R", used=7, max_per_root=10, planned=6, explicit=False) == 3
    assert limits.merged_note(3, 10) == "plan merged into 3 subtask(s): the tree is near recursion.max_workers_per_root=10"


def test_explicit_tasks_are_never_merged():
    with pytest.raises(RecursionLimit, match=r"6 tasks asked for, but tree R has room for 3 more worker\(s\)"):
        limits.tree_room("R", used=7, max_per_root=10, planned=6, explicit=True)


def test_a_full_tree_starts_no_child_job():
    with pytest.raises(RecursionLimit, match="Max workers per root tree reached: tree R already has 10 workers"):
        limits.tree_room("R", used=10, max_per_root=10, planned=1, explicit=False)


# -- budget -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spent", "budget", "out"), [(0.0, 0.0, False), (5.0, 0.0, False), (0.99, 1.0, False), (1.0, 1.0, True), (1.5, 1.0, True)]
)
def test_a_budget_is_spent_once_the_cost_reaches_it(spent, budget, out):
    assert limits.budget_spent(spent, budget) is out


def test_a_spent_budget_skips_workers_and_refuses_child_jobs_saying_so():
    assert limits.budget_note(1.23456, 1.0) == "skipped: the tree's AI cost $1.2346 reached its budget max_cost_usd=$1.0000"
    limits.check_budget(0.5, 1.0)
    with pytest.raises(
        RecursionLimit,
        match=r"^no child job: the tree's AI cost \$1\.0000 reached its budget max_cost_usd=\$1\.0000\. Do the rest directly\.$",
    ):
        limits.check_budget(1.0, 1.0)


# -- dispatch -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pending", "job_running", "job_max", "slots_used", "global_max", "n"),
    [
        (5, 0, 3, 0, 10, 3),  # the job's max_workers
        (5, 0, 10, 8, 10, 2),  # the server's global_max_workers
        (2, 0, 10, 0, 10, 2),  # all that wait
        (5, 3, 3, 0, 10, 0),  # the job is full
        (5, 0, 3, 10, 10, 0),  # the server is full
        (5, 0, 3, 12, 10, 0),  # over (a child job lent slots back): never negative
        (0, 0, 3, 0, 10, 0),
    ],
)
def test_dispatch_starts_as_many_as_both_limits_allow(pending, job_running, job_max, slots_used, global_max, n):
    assert limits.startable(pending, job_running, job_max, slots_used, global_max) == n
