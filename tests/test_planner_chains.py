"""The heuristic planner's chains: a "then"-sequence is a chain of tasks, each
waiting on the one before; a step that splits is a stage of parallel tasks the next step waits on.
Requests without a chain plan exactly as ``split_request`` plans them (tests/test_planner.py)."""

from __future__ import annotations

import time

import pytest

from orchestrator.models import JobStatus, TaskNode
from orchestrator.planner.ai import AIPlan, heuristic_plan
from orchestrator.planner.graph import check_graph
from orchestrator.planner.heuristic import Plan, plan_request, split_request

from .conftest import run_job
from .helpers.planner import CASES

BIG = 1000

# (request, tasks, each task's prerequisites as indexes, goal)
CHAINS: list[tuple[str, list[str], list[list[int]], str | None]] = [
    (
        "Set up the database, then build the API, then write the tests",
        ["Set up the database", "Build the API", "Write the tests"],
        [[], [0], [1]],
        None,
    ),
    ("Write the parser and then add tests", ["Write the parser", "Add tests"], [[], [0]], None),
    ("Add login; then add logout", ["Add login", "Add logout"], [[], [0]], None),
    ("Write the parser\nThen benchmark it", ["Write the parser", "Benchmark it"], [[], [0]], None),
    ("Please set up the database, then build the API", ["Set up the database", "Build the API"], [[], [0]], None),
    # once there is a "then", "finally" / "lastly" cut too, and a leading "First," goes
    (
        "First, set up the repo. Then add CI. Finally, write the README.",
        ["Set up the repo", "Add CI", "Write the README"],
        [[], [0], [1]],
        None,
    ),
    (
        "Write a date parser, then write tests for it, and finally benchmark it",
        ["Write a date parser", "Write tests for it", "Benchmark it"],
        [[], [0], [1]],
        None,
    ),
    (
        "Rewrite the CLI in Rust. Then add shell completions; finally publish to crates.io.",
        ["Rewrite the CLI in Rust", "Add shell completions", "Publish to crates.io"],
        [[], [0], [1]],
        None,
    ),
    # mixed: a step that splits is a stage; the next step waits on every task of it
    ("Build A, B and C, then deploy", ["Build A", "Build B", "Build C", "Deploy"], [[], [], [], [0, 1, 2]], None),
    (
        "Build a REST API with authentication, user management, and data CRUD operations, then deploy it to staging",
        ["Authentication", "User management", "Data CRUD operations", "Deploy it to staging"],
        [[], [], [], [0, 1, 2]],
        "Build a REST API",
    ),
    (
        "Set up the database, then build the users API and add an orders API, then write the tests",
        ["Set up the database", "Build the users API", "Add an orders API", "Write the tests"],
        [[], [0], [0], [1, 2]],
        None,
    ),
    # sentences before the first instruction are the goal
    (
        "I have a Flask app. Fix the login bug and add tests, then deploy it.",
        ["Fix the login bug", "Add tests", "Deploy it"],
        [[], [], [0, 1]],
        "I have a Flask app",
    ),
    # code and quotes do not cut: their "then" is text
    ("Write `a then b` in the docs, then add tests", ["Write `a then b` in the docs", "Add tests"], [[], [0]], None),
    (
        "Refactor this:\n```\nx = f(a, b); y = 1\n```\nThen add tests.",
        ["Refactor this: ```\nx = f(a, b); y = 1\n```", "Add tests"],
        [[], [0]],
        None,
    ),
]

# Not chains: they plan as today (split_request).
NOT_CHAINS = [
    "If the tests pass, then deploy to staging",  # the condition's "then"
    "Build the app. If the tests pass, then deploy it",
    "When the build is green, then tag a release",
    "Build the API, and afterwards write its docs",  # no "then": as today (one worker)
    "Set up CI. Add a release job.",
    "Use the then-current schema and build the API",
    "1. Set up the DB\n2. Then build the API",  # a marker list keeps its items
    "Fix the bug in the finally block, then",  # nothing to do after the "then"
    "The API is slow, then the cache fails",  # no instruction before the "then"
]


@pytest.mark.parametrize(("request_text", "tasks", "after", "goal"), CHAINS, ids=[c[0][:40] for c in CHAINS])
def test_a_then_sequence_is_a_chain(request_text: str, tasks: list[str], after: list[list[int]], goal: str | None) -> None:
    assert plan_request(request_text, BIG) == Plan(tasks, goal, after)


@pytest.mark.parametrize("request_text", NOT_CHAINS)
def test_what_is_not_a_chain_plans_as_before(request_text: str) -> None:
    assert plan_request(request_text, BIG) == split_request(request_text, BIG)


def test_every_request_without_then_plans_exactly_as_before() -> None:
    """The whole table of tests/test_planner.py, at every cap: no "then", no change."""
    for _, request_text, _, _ in CASES:
        if "then" in request_text.lower():
            continue
        for cap in (1, 2, 3, BIG):
            assert plan_request(request_text, cap) == split_request(request_text, cap), request_text


def test_more_steps_than_max_tasks_merge_into_adjacent_steps_in_order() -> None:
    request = "Set up the database, then build the API, then write the tests"
    assert plan_request(request, 2) == Plan(["Set up the database, then build the API", "Write the tests"], None, [[], [0]])
    # one task: no chain, the request as one worker's (as before)
    assert plan_request(request, 1) == split_request(request, 1) == Plan([request])


def test_a_stage_gets_the_spare_tasks_in_turn_and_merges_the_rest() -> None:
    request = "Build A, B and C, then deploy"
    assert plan_request(request, 3) == Plan(["Build A; Build B", "Build C", "Deploy"], None, [[], [], [0, 1]])
    assert plan_request(request, 2) == Plan(["Build A; Build B; Build C", "Deploy"], None, [[], [0]])


@pytest.mark.parametrize("request_text", ["write it, then " * 1400, "then " * 40_000, "add x, then " * 1700])
def test_long_chains_are_planned_quickly_within_max_tasks(request_text: str) -> None:
    started = time.monotonic()
    plan = plan_request(request_text, 5)
    assert time.monotonic() - started < 5
    assert 1 <= len(plan.tasks) <= 5 and all(t.strip() for t in plan.tasks)


def test_heuristic_plan_gives_a_chain_its_nodes() -> None:
    plan = heuristic_plan("Set up the database, then build the API, then write the tests", 5)
    assert plan == AIPlan(
        ["Set up the database", "Build the API", "Write the tests"],
        "heuristic",
        nodes=[TaskNode("t1"), TaskNode("t2", ["t1"]), TaskNode("t3", ["t2"])],
    )
    check_graph(plan.nodes or [])  # a valid graph
    mixed = heuristic_plan("Build A, B and C, then deploy", 5)
    assert [(n.id, n.depends_on) for n in mixed.nodes or []] == [("t1", []), ("t2", []), ("t3", []), ("t4", ["t1", "t2", "t3"])]


def test_heuristic_plan_without_a_chain_has_no_nodes() -> None:
    plan = heuristic_plan("Build a blog with posts, comments and tags", 5)
    assert plan == AIPlan(["Posts", "Comments", "Tags"], "heuristic", goal="Build a blog")
    assert plan.nodes is None


@pytest.mark.slow
def test_a_chained_request_runs_as_a_chain(make_engine):
    # Given the heuristic planner and the simulated worker
    engine = make_engine(orchestrator={"planner": "heuristic"})
    # When a "then"-sequence is submitted
    job = run_job(engine, "Build A, B and C, then deploy", config={"isolation": "folder"})
    # Then the job's graph is the chain, and deploy started after the three had ended
    assert job.status is JobStatus.COMPLETED
    assert job.tasks == ["Build A", "Build B", "Build C", "Deploy"]
    assert [(n.id, n.depends_on) for n in job.nodes] == [("t1", []), ("t2", []), ("t3", []), ("t4", ["t1", "t2", "t3"])]
    _, workers = engine.queries.snapshot(job.root_id)
    deploy = next(w for w in workers if w.task_id == "t4")
    assert deploy.depends_on == ["t1", "t2", "t3"]
    assert deploy.started_at >= max(w.ended_at for w in workers if w is not deploy)


def test_without_graphs_a_sequence_stays_one_task() -> None:
    # merge_strategy manual in worktrees merges nothing, so no task could wait on another's work
    request = "Set up the database, then build the API, then write the tests"
    assert heuristic_plan(request, 5, graph=False) == AIPlan([request], "heuristic")


@pytest.mark.slow
def test_a_then_request_in_a_manual_worktree_job_is_one_task_not_a_422(hosted):
    # Given a worktree job whose merge_strategy is manual (a graph with dependencies is a 422 there)
    _, _, make = hosted
    engine = make(orchestrator={"worker": "simulated", "planner": "heuristic"})
    request = "Set up the database, then build the API"
    # When a "then"-sequence is planned by the heuristic: it is one task (a manual merge leaves no chain to build on)
    job = run_job(engine, request, config={"merge_strategy": "manual"})
    assert (job.status, job.tasks, [n.depends_on for n in job.nodes]) == (JobStatus.COMPLETED, [request], [[]])
    # And with a merge strategy that merges, it is a chain
    chained = run_job(engine, request)
    assert chained.status is JobStatus.COMPLETED, chained.notes
    assert (chained.tasks, [n.depends_on for n in chained.nodes]) == (["Set up the database", "Build the API"], [[], ["t1"]])
