"""Tests for the offline heuristic planner (orchestrator.planner.heuristic)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from orchestrator.planner import heuristic
from orchestrator.planner.heuristic import MAX_TASK_CHARS, Plan, is_compound, split_request

from .helpers.planner import CASES

BIG = 1000  # a max_tasks large enough that nothing is merged


@pytest.mark.parametrize(("request_text", "tasks", "goal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_split_request_table(request_text: str, tasks: list[str], goal: str | None) -> None:
    """Each realistic request splits into exactly the expected subtasks and shared goal."""
    assert split_request(request_text, BIG) == Plan(tasks, goal)


def test_table_is_large_enough() -> None:
    """The table covers at least 35 realistic requests, with unique ids."""
    assert len(CASES) >= 35
    assert len({c[0] for c in CASES}) == len(CASES)


def test_the_goal_is_never_a_suffix_of_a_subtask() -> None:
    """No planned subtask carries its goal as text: the goal is the plan's own field."""
    for _, request, _, _ in CASES:
        plan = split_request(request, 3)
        assert all(" for: " not in task for task in plan.tasks)
        assert plan.goal is None or len(plan.tasks) >= 2  # a lone task is the request itself


@pytest.mark.parametrize(
    "request_text",
    [
        "Write a parser in Rust, then benchmark it",
        "Write the parser. Then benchmark it.",
        "Write the parser\nThen benchmark it",
        "Add login; then add logout",
        "Build the API, and afterwards write its docs",
        "Set up CI. Add a release job.",
    ],
)
def test_a_sequence_is_one_worker(request_text: str) -> None:
    """Steps in order (then, afterwards, instruction after instruction) are one subtask, not
    parallel siblings: a later step refers to an earlier one ("benchmark it")."""
    plan = split_request(request_text, BIG)
    assert plan == Plan([" ".join(request_text.split())])
    assert not is_compound(request_text)


def test_merge_keeps_every_item_when_over_max_tasks() -> None:
    """With more parts than max_tasks, parts are merged evenly and no item's text is lost."""
    request = "Build a microservices architecture with auth, users, orders, payments, search, and billing"
    assert len(split_request(request, BIG).tasks) == 6
    assert split_request(request, 4) == Plan(
        ["Auth; users", "Orders; payments", "Search", "Billing"], "Build a microservices architecture"
    )


def test_merge_without_goal_joins_with_semicolons() -> None:
    """Goal-less parts merge as "A; b" in order."""
    assert split_request("Add login; add logout; write tests; update docs; deploy it", 2).tasks == [
        "Add login; add logout; write tests",
        "Update docs; deploy it",
    ]


def test_merged_group_splits_back_into_its_items() -> None:
    """A merged group is compound, and re-planning it recovers the original items."""
    request = "Build a REST API with authentication, user management, and data CRUD operations"
    plan = split_request(request, 1)
    assert plan == Plan(["Authentication; user management; data CRUD operations"], "Build a REST API")
    assert is_compound(plan.tasks[0])
    assert split_request(plan.tasks[0], BIG).tasks == split_request(request, BIG).tasks


def test_merged_sections_split_back() -> None:
    """Items of different sections merge as "Section: item; ..." and split back the same way."""
    request = "## Backend\n- REST API\n- database schema\n## Frontend\n- React UI"
    (merged,) = split_request(request, 1).tasks
    assert merged == "Backend: REST API; Backend: database schema; Frontend: React UI"
    assert split_request(merged, BIG).tasks == split_request(request, BIG).tasks


def test_max_tasks_one_returns_one_task_with_everything() -> None:
    """max_tasks=1 always yields a single subtask that still holds every line."""
    request = "1. Add login\n2. Add logout\n3. Write tests\n4. Deploy to staging"
    assert split_request(request, 1).tasks == ["Add login; Add logout; Write tests; Deploy to staging"]
    assert split_request("Build a full-stack application", 1).tasks == ["Build a full-stack application"]


def test_never_more_than_max_tasks() -> None:
    """For every table request and every cap, the count is between 1 and max_tasks."""
    for _, request, _, _ in CASES:
        for cap in (1, 2, 3):
            assert 1 <= len(split_request(request, cap).tasks) <= cap


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_invalid_max_tasks_raises_value_error(bad: int) -> None:
    """max_tasks below 1 is rejected with a clear message."""
    with pytest.raises(ValueError, match="max_tasks must be at least 1"):
        split_request("Build a blog", bad)


@pytest.mark.parametrize("bad", [1.5, "3", None, True])
def test_non_int_max_tasks_raises_type_error(bad: object) -> None:
    """max_tasks must be a real int (not a bool, float or string)."""
    with pytest.raises(TypeError, match="max_tasks must be an int"):
        split_request("Build a blog", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("empty", ["", "   ", "\n\t \n"])
def test_empty_request_raises_value_error(empty: str) -> None:
    """An empty or whitespace-only request is an error, not an empty plan."""
    with pytest.raises(ValueError, match="request is empty"):
        split_request(empty, 3)


def test_non_string_request_raises_type_error() -> None:
    """A request that is not a str is rejected."""
    with pytest.raises(TypeError, match="request must be a str"):
        split_request(None, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "task",
    [
        "Build a REST API with authentication, user management, and data CRUD operations",
        "Backend with auth, orders and payments",
        "Auth; users",
        "1. Add login\n2. Add logout",
    ],
)
def test_is_compound_true(task: str) -> None:
    """Requests that split into 2+ parts are compound."""
    assert is_compound(task) is True


@pytest.mark.parametrize(
    "task",
    [
        "Build a full-stack application",
        "Add error handling to the login function",
        "Write the parser, then add tests",  # a sequence is one worker's
        "Authentication",
        "Authentication for: Build a REST API",  # a task written by the old planner (on disk)
        "Orders and payments for: Build X",
        "Fix the bug in the login and logout flow",
        "",
        "   ",
    ],
)
def test_is_compound_false(task: str) -> None:
    """Single tasks (planner output items, old suffixed tasks, empty text) are not compound."""
    assert is_compound(task) is False


def test_nested_item_recurses_into_its_own_items() -> None:
    """The compound middle item of a nested enumeration splits again, with its own goal."""
    plan = split_request("Build an e-commerce site with frontend, backend with auth, orders and payments, and database", BIG)
    assert split_request(plan.tasks[1], BIG) == Plan(["Auth", "Orders", "Payments"], "Backend")
    assert not any(is_compound(p) for p in (plan.tasks[0], plan.tasks[2]))


def test_folded_sub_bullets_split_again() -> None:
    """A folded parent item ("Backend: a and b") splits into its sub-items for a worker."""
    assert split_request("Backend: posts API and comments API", BIG) == Plan(["Posts API", "Comments API"], "Backend")


def test_deterministic() -> None:
    """The same input always gives the same output."""
    for _, request, _, _ in CASES:
        assert split_request(request, 3) == split_request(request, 3)


def test_capitalises_but_keeps_identifiers() -> None:
    """Items are capitalised, except a first word like iOS or foo_bar; trailing punctuation goes."""
    assert split_request("Build an iOS app with login and sync.", BIG) == Plan(["Login", "Sync"], "Build an iOS app")
    assert split_request("- iOS build.\n- foo_bar cleanup;\n- docs,", BIG).tasks == ["iOS build", "foo_bar cleanup", "Docs"]


def test_long_parts_are_kept_whole() -> None:
    """A part longer than MAX_TASK_CHARS is kept whole, never truncated."""
    long_item = "Implement the parser " + "carefully " * (MAX_TASK_CHARS // 5)
    assert len(long_item) > MAX_TASK_CHARS
    assert split_request(f"1. {long_item}\n2. Add tests", BIG).tasks == [long_item.strip(), "Add tests"]


def test_very_long_request_plans_and_keeps_all_text() -> None:
    """A 20,000-character request with many lines plans into capped, lossless groups."""
    lines = [f"Add feature number {i}" for i in range(1000)]
    request = "\n".join(lines)
    assert len(request) > 20_000
    result = split_request(request, 8).tasks
    assert len(result) == 8
    joined = " ".join(result)
    assert all(line in joined for line in lines)


@pytest.mark.parametrize(
    "request_text",
    [
        "fix a and " * 2000,
        "build x with a, " * 1300,
        "(" * 20_000,
        "'a " * 7000,
        "write it, then " * 1400,
        "1. " * 7000,
        ". " * 10_000,
        "x" * 20_000,
        "a/b, " * 4000,
        "```" * 7000,
    ],
    ids=["ands", "withs", "parens", "quotes", "thens", "numbers", "dots", "one-word", "paths", "fences"],
)
def test_pathological_long_inputs_complete(request_text: str) -> None:
    """Adversarial 20k-char inputs still return a valid plan (regexes are linear)."""
    result = split_request(request_text, 5).tasks
    assert 1 <= len(result) <= 5
    assert all(part.strip() for part in result)


def test_planner_imports_only_the_standard_library() -> None:
    """The heuristic planner and its package import nothing outside the standard library
    (the simulated worker imports them at start-up)."""
    modules: set[str] = set()
    for path in (Path(heuristic.__file__), Path(heuristic.__file__).with_name("__init__.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module == "heuristic", "the package imports only the heuristic planner"
    assert modules, "expected some imports"
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}


def test_sentences_around_verb_clauses_are_the_goal() -> None:
    """A context sentence is the shared goal of verb clauses too, not glued to each
    clause ("I have a Flask app. add tests")."""
    assert split_request("I have a Flask app. Fix the login bug and add tests.", BIG) == Plan(
        ["Fix the login bug", "Add tests"], "I have a Flask app"
    )


def test_parenthesised_numbers_in_one_line_are_a_list() -> None:
    """A line "(1) x (2) y" is a list, as "1) x 2) y" is, not one task."""
    assert split_request("(1) Add login (2) Add logout", BIG) == Plan(["Add login", "Add logout"])
    assert split_request("Fix (a) the parser and (b) the lexer", BIG) == Plan(["Fix the parser", "Fix the lexer"])


@pytest.mark.parametrize(
    ("request_text", "tasks", "goal"),
    [
        # a hard-wrapped sentence (a line ending in a connector, or a long one) stays one line
        (
            "Build a dashboard that shows the data from\nPostgres and Redis",
            ["Build a dashboard that shows the data from Postgres and Redis"],
            None,
        ),
        (
            "Add a login page.\nThe page should use OAuth and remember\nthe user between sessions.",
            ["Add a login page. The page should use OAuth and remember the user between sessions."],
            None,
        ),
        # a code block on its own lines belongs to the instruction above it
        (
            "Refactor this function\n```\ndef f(a, b): return a; b\n```",
            ["Refactor this function ```\ndef f(a, b): return a; b\n```"],
            None,
        ),
        # verbs listed after a one-word item or another verb are items, not clauses
        (
            "Implement an LRU cache with get, put and delete operations",
            ["Get", "Put", "Delete operations"],
            "Implement an LRU cache",
        ),
        (
            "Add a CLI with subcommands for parse, validate and format",
            ["Subcommands for parse", "Validate", "Format"],
            "Add a CLI",
        ),
        # two headings before a list are both kept, in the goal
        ("Point it at the mock:\nTurns:\n- a\n- b", ["A", "B"], "Point it at the mock. Turns"),
        # text holding the planner's own placeholder characters is planned as it is, losing nothing
        ("Build X with A, \U000f0001B and C", ["A", "\U000f0001B", "C"], "Build X"),
    ],
)
def test_shapes_the_smaller_planner_keeps(request_text: str, tasks: list[str], goal: str | None) -> None:
    """Behaviours of the 515-line planner that the smaller one keeps, beyond the table."""
    assert split_request(request_text, BIG) == Plan(tasks, goal)
