"""Tests for the offline heuristic planner (orchestrator.planner.heuristic)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from orchestrator.planner import heuristic
from orchestrator.planner.heuristic import MAX_TASK_CHARS, Plan, is_compound, split_request

BIG = 1000  # a max_tasks large enough that nothing is merged

# (id, request, exact expected subtasks, expected shared goal). Grouped by rule; ids name the rule.
# The goal is a field of the plan, not a " for: <goal>" suffix on every subtask.
CASES: list[tuple[str, str, list[str], str | None]] = [
    # --- seed examples from the brief ---
    (
        "seed-rest-api",
        "Build a REST API with authentication, user management, and data CRUD operations",
        ["Authentication", "User management", "Data CRUD operations"],
        "Build a REST API",
    ),
    (
        # Each part has its own "with": the colon introduces the list, and no part loses its noun.
        "colon-list-of-parts-each-with-details",
        "Build a web shop: a catalog with search and filters, a cart with discounts and taxes, and checkout with payments and receipts",
        ["A catalog with search and filters", "A cart with discounts and taxes", "Checkout with payments and receipts"],
        "Build a web shop",
    ),
    (
        "colon-then-one-part-with-a-list",
        "Build a blog: backend with auth, posts and comments",
        ["Auth", "Posts", "Comments"],
        "Build a blog: backend",
    ),
    (
        "seed-two-items-after-with",
        "Build a complete e-commerce site with frontend and backend",
        ["Frontend", "Backend"],
        "Build a complete e-commerce site",
    ),
    (
        "seed-ml-pipeline",
        "Create a machine learning pipeline with data preprocessing, training, and evaluation",
        ["Data preprocessing", "Training", "Evaluation"],
        "Create a machine learning pipeline",
    ),
    ("seed-full-stack", "Build a full-stack application", ["Build a full-stack application"], None),
    (
        "seed-break-down",
        "Break down this complex backend into microservices",
        ["Break down this complex backend into microservices"],
        None,
    ),
    (
        "seed-microservices",
        "Build a microservices architecture with auth, users, orders, and payments",
        ["Auth", "Users", "Orders", "Payments"],
        "Build a microservices architecture",
    ),
    (
        "seed-plus-chain",
        "Create a React + FastAPI + PostgreSQL application",
        ["React", "FastAPI", "PostgreSQL"],
        "Create a React + FastAPI + PostgreSQL application",
    ),
    (
        "seed-documentation",
        "Generate comprehensive documentation for this codebase",
        ["Generate comprehensive documentation for this codebase"],
        None,
    ),
    ("seed-error-handling", "Add error handling to the login function", ["Add error handling to the login function"], None),
    ("seed-no-oxford-comma", "Build X with A, B and C", ["A", "B", "C"], "Build X"),
    # --- things that are not enumerations ---
    ("bare-and-noun-phrase", "Fix the bug in the login and logout flow", ["Fix the bug in the login and logout flow"], None),
    ("slash-path", "Refactor the read/write path", ["Refactor the read/write path"], None),
    ("backticks", "Add a `foo, bar` flag", ["Add a `foo, bar` flag"], None),
    ("parentheses", "Support (a, b, c) tuples", ["Support (a, b, c) tuples"], None),
    (
        "number-commas",
        "Import 1,000,000 rows from the legacy CSV export",
        ["Import 1,000,000 rows from the legacy CSV export"],
        None,
    ),
    ("adjective-list", "Build a fast, reliable, and secure API", ["Build a fast, reliable, and secure API"], None),
    ("search-and-replace", "Add a search and replace feature", ["Add a search and replace feature"], None),
    ("keyboard-chord", "Add a Ctrl+Shift+P shortcut", ["Add a Ctrl+Shift+P shortcut"], None),
    (
        "collective-verb",
        "Compare the old API, the new API, and the proposal",
        ["Compare the old API, the new API, and the proposal"],
        None,
    ),
    ("with-as-complement", "Run the tests with coverage and profiling", ["Run the tests with coverage and profiling"], None),
    ("conditional-then", "If the tests pass, then deploy to staging", ["If the tests pass, then deploy to staging"], None),
    ("file-paths", "Update src/app.py and docs/setup.md", ["Update src/app.py and docs/setup.md"], None),
    # "Write parses it" is no subtask: the list belongs to the relative clause, not to "Write"
    (
        "relative-clause-list",
        "Write a script that downloads a file, parses it, and saves the result",
        ["Write a script that downloads a file, parses it, and saves the result"],
        None,
    ),
    (
        "prose-lines-stay-one-task",
        "Please build a blog.\nIt needs posts and comments.\nUse Django.",
        ["Please build a blog. It needs posts and comments. Use Django."],
        None,
    ),
    # --- enumerations with a goal ---
    (
        "numbers-inside-items",
        "Build a dashboard with charts for 1,000,000 rows, filters, and export",
        ["Charts for 1,000,000 rows", "Filters", "Export"],
        "Build a dashboard",
    ),
    ("including", "Write docs including install, usage, and API reference", ["Install", "Usage", "API reference"], "Write docs"),
    ("that-has", "Build an app that has login, search and a feed", ["Login", "Search", "A feed"], "Build an app"),
    ("ampersand", "Build a chat app with websockets & presence", ["Websockets", "Presence"], "Build a chat app"),
    (
        "or-final-conjunction",
        "Build a shop with a cart, a checkout, or a wishlist",
        ["A cart", "A checkout", "A wishlist"],
        "Build a shop",
    ),
    (
        "colon-introducer",
        "Implement the following: login, signup, and logout",
        ["Login", "Signup", "Logout"],
        "Implement the following",
    ),
    (
        "politeness-dropped-from-goal",
        "Can you build a REST API with auth and payments?",
        ["Auth", "Payments"],
        "Build a REST API",
    ),
    (
        "context-sentence-joins-goal",
        "Build a REST API with auth, users, and orders. Use FastAPI.",
        ["Auth", "Users", "Orders"],
        "Build a REST API. Use FastAPI",
    ),
    (
        "nested-enumeration-left-whole",
        "Build an e-commerce site with frontend, backend with auth, orders and payments, and database",
        ["Frontend", "Backend with auth, orders and payments", "Database"],
        "Build an e-commerce site",
    ),
    ("unicode-items", "Build a café app with menü, Bestellungen, and 支付", ["Menü", "Bestellungen", "支付"], "Build a café app"),
    ("duplicate-items-in-enumeration", "Build a shop with cart, Cart, and billing", ["Cart", "Billing"], "Build a shop"),
    # --- verb clauses and shared verbs (no goal) ---
    ("verb-clauses-and", "Fix the login bug and add a regression test", ["Fix the login bug", "Add a regression test"], None),
    (
        "verb-clauses-commas",
        "Write the parser, add tests, and update the docs",
        ["Write the parser", "Add tests", "Update the docs"],
        None,
    ),
    (
        "with-complement-then-clause",
        "Replace the old logger with structlog and update imports",
        ["Replace the old logger with structlog", "Update imports"],
        None,
    ),
    (
        "quoted-commas-and-clauses",
        "Add a \"save, load\" menu and fix the 'open, close' dialog",
        ['Add a "save, load" menu', "Fix the 'open, close' dialog"],
        None,
    ),
    (
        "url-never-split",
        "Fetch https://example.com/a,b;c?x=1 and summarise it",
        ["Fetch https://example.com/a,b;c?x=1", "Summarise it"],
        None,
    ),
    (
        "shared-verb-files",
        "Write unit tests for auth.py, db.py, and api.py",
        ["Write unit tests for auth.py", "Write unit tests for db.py", "Write unit tests for api.py"],
        None,
    ),
    (
        "shared-verb-objects",
        "Create a landing page, a pricing page, and a contact form",
        ["Create a landing page", "Create a pricing page", "Create a contact form"],
        None,
    ),
    (
        "shared-verb-preposition",
        "Translate the README into French, German, and Japanese",
        ["Translate the README into French", "Translate the README into German", "Translate the README into Japanese"],
        None,
    ),
    # --- sequences: semicolons split; "then" and instruction after instruction are one worker ---
    ("semicolons", "Add login; add logout; write tests", ["Add login", "Add logout", "Write tests"], None),
    ("semicolons-plain", "a; b; c", ["A", "B", "C"], None),
    # A then-sequence is one worker's, done in order (parallel workers would lose the referent).
    (
        "then-commas",
        "Write the parser, then add tests, then document it",
        ["Write the parser, then add tests, then document it"],
        None,
    ),
    # A then-sequence is one worker's, done in order (parallel workers would lose the referent).
    ("and-then", "Write the parser and then add tests", ["Write the parser and then add tests"], None),
    # A then-sequence is one worker's, done in order (parallel workers would lose the referent).
    (
        "first-then-finally",
        "First, set up the repo. Then add CI. Finally, write the README.",
        ["First, set up the repo. Then add CI. Finally, write the README."],
        None,
    ),
    # A then-sequence is one worker's, done in order (parallel workers would lose the referent).
    (
        "and-finally",
        "Write a date parser, then write tests for it, and finally benchmark it",
        ["Write a date parser, then write tests for it, and finally benchmark it"],
        None,
    ),
    # A then-sequence is one worker's, done in order (parallel workers would lose the referent).
    (
        "mixed-sentences-and-semicolon",
        "Rewrite the CLI in Rust. Then add shell completions; finally publish to crates.io.",
        ["Rewrite the CLI in Rust. Then add shell completions; finally publish to crates.io."],
        None,
    ),
    # A then-sequence is one worker's, done in order (parallel workers would lose the referent).
    (
        "context-sentence-stays-with-task",
        "Build a todo app. It should use React. Add tests.",
        ["Build a todo app. It should use React. Add tests."],
        None,
    ),
    # --- lists and lines ---
    ("numbered-list", "1. Add login\n2. Add logout\n3. Write tests", ["Add login", "Add logout", "Write tests"], None),
    ("numbered-list-parens", "1) Add login\n2) Add logout", ["Add login", "Add logout"], None),
    ("bullets-with-heading", "Build a blog:\n- posts\n- comments\n- tags", ["Posts", "Comments", "Tags"], "Build a blog"),
    ("checkboxes", "- [ ] Add login\n- [x] Add logout\n- [ ] Write tests", ["Add login", "Add logout", "Write tests"], None),
    ("bullet-dots", "• Add login\n• Add logout", ["Add login", "Add logout"], None),
    ("steps", "Step 1: scaffold the app\nStep 2: add auth\nStep 3: deploy", ["Scaffold the app", "Add auth", "Deploy"], None),
    (
        "nested-bullets-folded",
        "Build a blog:\n- backend:\n  - posts API\n  - comments API\n- frontend",
        ["Backend: posts API and comments API", "Frontend"],
        "Build a blog",
    ),
    # A section heading prefixes its items (not the suffix " for: Backend").
    (
        "markdown-sections",
        "## Backend\n- REST API\n- database schema\n## Frontend\n- React UI",
        ["Backend: REST API", "Backend: database schema", "Frontend: React UI"],
        None,
    ),
    (
        "list-trailer-joins-goal",
        "Tasks:\n* one\n* two\n\nUse Python for all of it.",
        ["One", "Two"],
        "Tasks. Use Python for all of it",
    ),
    ("single-bullet-is-planned", "- Build X with A, B and C", ["A", "B", "C"], "Build X"),
    ("one-per-line", "Add login\nAdd logout\nWrite tests", ["Add login", "Add logout", "Write tests"], None),
    (
        "prose-line-joins-the-instruction-before",
        "Add login\nAdd logout\nIt should use JWT.",
        ["Add login", "Add logout. It should use JWT"],
        None,
    ),
    ("one-per-line-nouns", "login page\nsignup page\nprofile page", ["Login page", "Signup page", "Profile page"], None),
    ("lines-with-heading", "Build these pages:\nlogin page\nsignup page", ["Login page", "Signup page"], "Build these pages"),
    (
        "hard-wrapped-line",
        "Build a REST API with authentication,\nuser management, and CRUD",
        ["Authentication", "User management", "CRUD"],
        "Build a REST API",
    ),
    ("wrapped-instruction", "Build a full-stack\napplication", ["Build a full-stack application"], None),
    ("duplicate-lines", "Add tests\nadd tests\nAdd  Tests", ["Add tests"], None),
    # A then-sequence is one worker's, done in order (parallel workers would lose the referent).
    (
        "code-fence-kept",
        "Refactor this:\n```\nx = f(a, b); y = 1\n```\nThen add tests.",
        ["Refactor this: ```\nx = f(a, b); y = 1\n``` Then add tests."],
        None,
    ),
    ("heading-semicolons", "Build a blog: posts; comments; tags", ["Posts", "Comments", "Tags"], "Build a blog"),
    (
        "inline-numbered-list",
        "Please do the following: 1. add login 2. add logout 3. write tests",
        ["Add login", "Add logout", "Write tests"],
        "Do the following",
    ),
    ("inline-list-shares-verb", "Add 1) caching and 2) retries", ["Add caching", "Add retries"], None),
    # A numbered list on one line, starting with its marker, is a list, not one item
    # "Write the parser 2. Write the tests 3. Write docs" and then split at each "N. ".
    (
        "inline-numbered-list-from-the-start",
        "1. Write the parser 2. Write the tests 3. Write docs",
        ["Write the parser", "Write the tests", "Write docs"],
        None,
    ),
    (
        "inline-parenthesised-list-from-the-start",
        "1) Write the parser 2) Write the tests 3) Write docs",
        ["Write the parser", "Write the tests", "Write docs"],
        None,
    ),
    ("whitespace-normalised", "  Build   a\tfull-stack   application  ", ["Build a full-stack application"], None),
    ("crlf-lines", "Add login\r\nAdd logout\r\n", ["Add login", "Add logout"], None),
]


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
