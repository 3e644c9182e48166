"""Helpers of tests/test_planner.py, used by other test files too."""

from __future__ import annotations

# (id, request, exact expected subtasks, expected shared goal). Grouped by rule; ids name the rule.
# The goal is a field of the plan, not a " for: <goal>" suffix on every subtask.
CASES: list[tuple[str, str, list[str], str | None]] = [
    # --- the original spec's example requests (the README this orchestrator was first described by) ---
    (
        "spec-rest-api",
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
        "spec-two-items-after-with",
        "Build a complete e-commerce site with frontend and backend",
        ["Frontend", "Backend"],
        "Build a complete e-commerce site",
    ),
    (
        "spec-ml-pipeline",
        "Create a machine learning pipeline with data preprocessing, training, and evaluation",
        ["Data preprocessing", "Training", "Evaluation"],
        "Create a machine learning pipeline",
    ),
    ("spec-full-stack", "Build a full-stack application", ["Build a full-stack application"], None),
    (
        "spec-break-down",
        "Break down this complex backend into microservices",
        ["Break down this complex backend into microservices"],
        None,
    ),
    (
        "spec-microservices",
        "Build a microservices architecture with auth, users, orders, and payments",
        ["Auth", "Users", "Orders", "Payments"],
        "Build a microservices architecture",
    ),
    (
        "spec-plus-chain",
        "Create a React + FastAPI + PostgreSQL application",
        ["React", "FastAPI", "PostgreSQL"],
        "Create a React + FastAPI + PostgreSQL application",
    ),
    (
        "spec-documentation",
        "Generate comprehensive documentation for this codebase",
        ["Generate comprehensive documentation for this codebase"],
        None,
    ),
    ("spec-error-handling", "Add error handling to the login function", ["Add error handling to the login function"], None),
    ("spec-no-oxford-comma", "Build X with A, B and C", ["A", "B", "C"], "Build X"),
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
