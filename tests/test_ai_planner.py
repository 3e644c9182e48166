"""The AI planner: reading a model's answer, running the AI CLI once, falling back to the heuristic."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from orchestrator.errors import ConfigError
from orchestrator.models import JobStatus, TaskNode
from orchestrator.planner.ai import (
    AIPlan,
    PlanError,
    choose_planner,
    extract_plan,
    merge_adjacent,
    merge_graph,
    plan_with_ai,
)
from orchestrator.planner.heuristic import split_request
from orchestrator.process.runner import ProcessRunner
from orchestrator.workers.adapters import get_adapter
from orchestrator.workers.adapters.command import CommandAdapter
from orchestrator.workers.adapters.simulated import SimulatedAdapter
from orchestrator.workers.roles import role_table
from tests.conftest import explain, find_cli, make_settings, run_job
from tests.mock_model_server import MockModelServer, Text, prompt_text, subtask


def parse_plan(text, max_tasks):
    """An answer's subtasks as the planner keeps them when it is no graph: capped by merging neighbours."""
    return merge_adjacent(extract_plan(text)[0], max_tasks)


REQUEST = "Build a shop with an auth service, an orders service and a payments service"
ABC = ["Build auth", "Build orders", "Build payments"]

# (answer, expected tasks) with max_tasks=5
GOOD_ANSWERS = [
    ('["Build auth", "Build orders", "Build payments"]', ABC),
    ('```json\n["Build auth", "Build orders", "Build payments"]\n```', ABC),
    ('```\n["Build auth", "Build orders", "Build payments"]\n```', ABC),
    ('Here is the plan:\n["Build auth", "Build orders", "Build payments"]\nGood luck!', ABC),
    ('Sure! I\'d split it into [3] parts:\n\n```json\n["Build auth", "Build orders", "Build payments"]\n```\nLet me know.', ABC),
    ('I see [3] parts: ["Build auth", "Build orders", "Build payments"] (that\'s all)', ABC),
    ('["Build auth", "Build orders", "Build payments",]', ABC),
    ('[\n  "Build auth",\n  "Build orders",\n  "Build payments",\n]\n', ABC),
    ("['Build auth', 'Build orders', \"Build payments\"]", ABC),
    ('{"tasks": ["Build auth", "Build orders", "Build payments"]}', ABC),
    ('{"subtasks": ["Build auth", "Build orders", "Build payments"], "reasoning": "three services"}', ABC),
    ('{"Plan": ["Build auth", "Build orders", "Build payments"]}', ABC),
    ('[{"task": "Build auth"}, {"task": "Build orders", "id": 2}, {"description": "Build payments"}]', ABC),
    ('[{"title": "Auth", "description": "build login"}, {"title": "Orders"}]', ["Auth: build login", "Orders"]),
    ('["Build auth", "build AUTH.", "  Build   auth ", "Build orders", "Build orders", "Build payments"]', ABC),
    ('["1. Build auth", "2) Build orders", "- Build payments"]', ABC),
    ('["Build auth", "", "   ", "Build orders", "Build payments"]', ABC),
    ('["Build\\nauth", "Build\\torders", "Build payments"]', ABC),
    ('["Write \\"hello\\" in `main.py`; use $HOME & {{x}}"]', ['Write "hello" in `main.py`; use $HOME & {{x}}']),
    ('["Do the whole request"]', ["Do the whole request"]),
]

BAD_ANSWERS = [
    ("", "the answer is empty"),
    ("   \n ", "the answer is empty"),
    ("[]", "empty"),
    ('["", "  "]', "empty"),
    ('{"tasks": []}', "empty"),
    ("I cannot help with that.", "no JSON array"),
    ("Build auth, then orders, then payments.", "no JSON array"),
    ('["Build auth", "Build orders"', "no JSON array"),
    ("[1, 2, 3]", "subtask 1 is a int"),
    ('[["Build auth"], ["Build orders"]]', "subtask 1 is a list"),
    ('["Build auth", null]', "subtask 2 is a null"),
    ('[{"id": 1}, {"id": 2}]', "subtask 1 is an object without a task"),
    ('{"a": [1], "b": [2]}', "without a list of tasks"),
    ('"Build auth"', "no JSON array"),
    ('[[[[[[[[[[{"x": [[[]]]}]]]]]]]]]]', "subtask 1 is a list"),
    (json.dumps(["x" * 2001]), "subtask 1 is 2001 characters long; the limit is 2000"),
]


@pytest.mark.parametrize("answer, expected", GOOD_ANSWERS)
def test_parse_plan_reads_usable_answers(answer, expected):
    assert parse_plan(answer, 5) == expected


@pytest.mark.parametrize("answer, reason", BAD_ANSWERS)
def test_parse_plan_refuses_unusable_answers(answer, reason):
    with pytest.raises(PlanError, match=reason) as caught:
        parse_plan(answer, 5)
    assert reason in caught.value.reason


def test_parse_plan_merges_a_long_plan_into_max_tasks_without_losing_any():
    items = [f"Subtask {i:02d}" for i in range(1, 51)]
    tasks = parse_plan(json.dumps(items), 7)
    assert len(tasks) == 7
    assert "; ".join(tasks).split("; ") == items, "every item kept, in order"
    assert [len(t.split("; ")) for t in tasks] == [8, 7, 7, 7, 7, 7, 7]


def test_parse_plan_at_exactly_max_tasks_is_unchanged():
    assert parse_plan(json.dumps(ABC), 3) == ABC
    assert extract_plan(json.dumps(ABC * 2))[0] == ABC


def test_merge_adjacent_refuses_a_bad_limit():
    assert merge_adjacent(ABC, 1) == ["Build auth; Build orders; Build payments"]
    with pytest.raises(ValueError):
        merge_adjacent(ABC, 0)


def test_parse_plan_survives_a_huge_unbalanced_answer_quickly():
    answer = "[" * 5000 + " no plan here " + "{'" * 5000
    started = time.monotonic()
    with pytest.raises(PlanError, match="no JSON array"):
        parse_plan(answer, 5)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "name, kind, expected",
    [
        ("auto", "claude", "ai"),
        ("auto", "codex", "ai"),
        ("auto", "ollama", "ai"),
        ("auto", "simulated", "heuristic"),
        ("auto", "command", "heuristic"),
        ("ai", "simulated", "ai"),
        ("heuristic", "claude", "heuristic"),
    ],
)
def test_choose_planner(name, kind, expected):
    assert choose_planner(name, kind) == expected


def test_choose_planner_refuses_an_unknown_name():
    with pytest.raises(ConfigError, match="planner 'magic' is unknown"):
        choose_planner("magic", "claude")


# -- plan_with_ai with a fake AI CLI (real subprocesses, real ProcessRunner) -------------
@pytest.fixture
def fake_ai(tmp_path):
    """plan(body): run plan_with_ai with a fake AI CLI whose Python source is ``body``."""
    runner = ProcessRunner()
    work_dir = tmp_path / "planning"

    # Tags are found and swept machine-wide: one of this test process's own (another pytest-xdist worker's
    # plan, ending, swept "planner-test" and killed this one's CLI: "killed by SIGKILL", the heuristic used).
    def plan(body, *, command=None, timeout=20.0, max_tasks=5, tag=None, request=REQUEST, **options):
        script = tmp_path / "fake_ai.py"
        script.write_text("import os, sys, time, subprocess\n" + body)
        settings = make_settings(
            tmp_path,
            orchestrator={
                "worker": "command",
                "command": command or [sys.executable, str(script), "{prompt}"],
            },
        )
        return plan_with_ai(
            request,
            max_tasks,
            settings=settings,
            adapter=CommandAdapter(),
            runner=runner,
            work_dir=work_dir,
            timeout=timeout,
            tag=tag or f"planner-test-{os.getpid()}",
            **options,
        )

    plan.runner, plan.work_dir = runner, work_dir
    return plan


def answering(answer):
    return f"open('prompt_seen.md', 'w').write(sys.argv[1])\nsys.stdout.write({answer!r})\n"


def heuristic():
    return split_request(REQUEST, 5).tasks


@pytest.mark.slow
def test_plan_with_ai_uses_a_good_answer(fake_ai):
    result = fake_ai(answering('Plan:\n```json\n["Build the auth service", "Build the orders service"]\n```'))
    assert result == AIPlan(["Build the auth service", "Build the orders service"], "ai", None)
    seen = (fake_ai.work_dir / "prompt_seen.md").read_text()
    assert "ONLY a JSON object" in seen and seen.rstrip().endswith(REQUEST), "the CLI got the planner prompt, in work_dir"
    assert (fake_ai.work_dir / "planner.log").is_file()


@pytest.mark.slow
def test_plan_with_ai_keeps_a_request_that_does_not_split_as_the_user_wrote_it(fake_ai):
    request = "Login form: reject an empty password, with a test"
    reworded = '{"tasks": [{"id": "t1", "task": "Reject an empty password in the login form; with a test", "role": "developer"}]}'
    result = fake_ai(answering(reworded), request=request)
    assert result.planner == "ai" and result.note is None
    assert result.tasks == [request], "one task is the user's sentence, never the model's rewording"
    assert result.nodes is not None and [n.role for n in result.nodes] == ["developer"], "the node's fields are kept"


@pytest.mark.slow
def test_plan_with_ai_merges_a_long_answer_and_says_so(fake_ai):
    items = [f"Part {i}" for i in range(1, 13)]
    result = fake_ai(answering(json.dumps(items)), max_tasks=4)
    assert result.planner == "ai"
    assert result.tasks == [
        "Part 1; Part 2; Part 3",
        "Part 4; Part 5; Part 6",
        "Part 7; Part 8; Part 9",
        "Part 10; Part 11; Part 12",
    ]
    assert result.note == "the AI planner proposed 12 subtasks; adjacent ones were merged into 4 (max_workers)"


@pytest.mark.slow
def test_plan_with_ai_falls_back_when_the_answer_is_not_json(fake_ai):
    result = fake_ai(answering("I would build the auth service first, then the rest."))
    assert result.tasks == heuristic() and result.goal == "Build a shop"  # the heuristic's goal, as a field
    assert result.planner == "heuristic"
    assert result.note.startswith("AI planner failed: the answer has no JSON array: 'I would build")
    assert result.note.endswith("; used the heuristic planner")


@pytest.mark.slow
def test_plan_with_ai_falls_back_on_an_empty_plan(fake_ai):
    result = fake_ai(answering("[]"))
    assert (result.planner, result.tasks) == ("heuristic", heuristic())
    assert "the plan has no subtasks" in result.note


@pytest.mark.slow
def test_plan_with_ai_falls_back_after_a_timeout_and_leaves_no_process(fake_ai):
    # Given a CLI that starts a helper process and then never answers
    body = "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\ntime.sleep(60)\n"
    started = time.monotonic()
    hang = f"planner-hang-{os.getpid()}"
    result = fake_ai(body, timeout=2.0, tag=hang)
    elapsed = time.monotonic() - started
    # Then the heuristic plan is used, soon after the timeout, and nothing of the CLI survives
    assert (result.planner, result.tasks) == ("heuristic", heuristic())
    assert result.note == "AI planner failed: no answer within 2s (orchestrator.planner_timeout); used the heuristic planner"
    assert 2.0 <= elapsed < 6.0
    assert fake_ai.runner.tagged(hang) == []


@pytest.mark.slow
def test_plan_with_ai_falls_back_when_the_cli_is_missing(fake_ai, tmp_path):
    result = fake_ai("", command=[str(tmp_path / "no-such-ai"), "{prompt}"])
    assert (result.planner, result.tasks) == ("heuristic", heuristic())
    assert "No such file or directory" in result.note and "no-such-ai" in result.note
    assert "orchestrator.command" in result.note


@pytest.mark.slow
def test_plan_with_ai_falls_back_when_the_cli_fails(fake_ai):
    result = fake_ai("print('[\"Build auth\"]')\nprint('error: quota exceeded')\nsys.exit(1)\n")
    assert (result.planner, result.tasks) == ("heuristic", heuristic())
    assert result.note == "AI planner failed: the AI CLI exited with code 1: error: quota exceeded; used the heuristic planner"


@pytest.mark.slow
def test_plan_with_ai_falls_back_when_the_cli_is_killed(fake_ai):
    result = fake_ai("import signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert result.planner == "heuristic"
    assert "the AI CLI was killed by SIGKILL" in result.note


@pytest.mark.slow
def test_plan_with_ai_gives_the_cli_no_orchestrator_identity(fake_ai, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_API_KEY", "secret")
    body = "import json\nprint(json.dumps([k for k in os.environ if k.startswith('ORCHESTRATOR') and k != 'ORCHESTRATOR_TAG'] + ['end', 'done']))\n"
    assert fake_ai(body).tasks == ["end", "done"], "no ORCHESTRATOR_ variable reached the CLI"


def test_plan_with_ai_falls_back_when_the_command_is_not_configured(tmp_path):
    settings = make_settings(tmp_path, orchestrator={"worker": "command"})
    result = plan_with_ai(
        REQUEST, 5, settings=settings, adapter=CommandAdapter(), runner=ProcessRunner(), work_dir=tmp_path / "p", timeout=5
    )
    assert result.planner == "heuristic"
    assert "needs orchestrator.command" in result.note


def test_plan_with_ai_does_not_ask_the_simulated_worker(tmp_path):
    settings = make_settings(tmp_path)
    result = plan_with_ai(
        REQUEST, 5, settings=settings, adapter=SimulatedAdapter(), runner=ProcessRunner(), work_dir=tmp_path / "p", timeout=5
    )
    assert (result.planner, result.tasks) == ("heuristic", heuristic())
    assert "simulated worker reads no prompt, so it cannot plan" in result.note
    assert not (tmp_path / "p").exists()


def test_plan_with_ai_with_one_task_needs_no_ai(tmp_path):
    settings = make_settings(tmp_path, orchestrator={"worker": "command", "command": ["/nonexistent"]})
    result = plan_with_ai(
        REQUEST, 1, settings=settings, adapter=CommandAdapter(), runner=ProcessRunner(), work_dir=tmp_path / "p", timeout=5
    )
    # The heuristic plan, its goal kept as a field (not a " for: " suffix on the task)
    assert result == AIPlan(["An auth service; an orders service; a payments service"], "heuristic", None, goal="Build a shop")


# -- graphs: {"tasks": [{"id", "task", "depends_on", "role", "owns"}]} --------------------
ROLES = ["backend", "docs", "testing"]
GRAPH = {
    "tasks": [
        {"id": "db", "task": "Set up the database schema", "role": "backend", "owns": ["db/**"]},
        {"id": "api", "task": "Build the API on the schema", "depends_on": ["db"], "role": "backend", "owns": ["src/api/**"]},
        {"id": "docs", "task": "Document the API", "depends_on": ["api"], "role": "docs"},
    ]
}
GRAPH_TASKS = ["Set up the database schema", "Build the API on the schema", "Document the API"]
GRAPH_NODES = [
    TaskNode("db", [], "backend", ["db/**"]),
    TaskNode("api", ["db"], "backend", ["src/api/**"]),
    TaskNode("docs", ["api"], "docs", []),
]


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps(GRAPH),
        "Here is the graph:\n```json\n" + json.dumps(GRAPH, indent=2) + "\n```\n",
        json.dumps(GRAPH["tasks"]),  # the list alone
        json.dumps(GRAPH).replace('"task"', '"Task"').replace('"depends_on"', '"Depends_On"'),  # keys in any case
    ],
)
def test_extract_plan_reads_a_graph(answer):
    assert extract_plan(answer, ROLES) == (GRAPH_TASKS, GRAPH_NODES)


def test_extract_plan_gives_plain_ids_and_strings_their_nodes():
    # A string id alone makes a graph (the ids are kept); a plain string in it is t<position>
    answer = json.dumps([{"id": "a", "task": "Do A"}, "Do B", {"task": "Do C", "depends_on": ["a", "t2"]}])
    texts, nodes = extract_plan(answer)
    assert texts == ["Do A", "Do B", "Do C"]
    assert [(n.id, n.depends_on) for n in nodes] == [("a", []), ("t2", []), ("t3", ["a", "t2"])]


@pytest.mark.parametrize("answer, expected", GOOD_ANSWERS)
def test_older_answer_shapes_stay_plain_task_lists(answer, expected):
    assert extract_plan(answer, ROLES) == (expected, None)


def graph_with(**changes):
    tasks = [dict(t) for t in GRAPH["tasks"]]
    for index, fields in changes.items():
        tasks[int(index[1:])].update(fields)
    return json.dumps({"tasks": tasks})


@pytest.mark.parametrize(
    "answer, reason",
    [
        (graph_with(t0={"depends_on": ["docs"]}), "form a cycle: db -> docs -> api -> db"),
        (graph_with(t1={"depends_on": ["database"]}), "depends on 'database', which is no task's id"),
        (graph_with(t2={"id": "api"}), "tasks[2].id 'api' is used twice"),
        (graph_with(t1={"depends_on": ["api"]}), "tasks[1] ('api') depends on itself"),
        (graph_with(t2={"role": "wizard"}), "tasks[2].role='wizard' is not a role of this server"),
        (graph_with(t0={"owns": ["../outside/**"]}), "tasks[0].owns"),
        (graph_with(t1={"id": "not an id!"}), "tasks[1].id='not an id!' is not a task id"),
        (json.dumps({"tasks": [GRAPH["tasks"][0], "  "]}), "subtask 2 of the graph has no task text"),
        (graph_with(t2={"task": 7}), "subtask 3 is an object without a task"),
    ],
)
def test_a_graph_that_does_not_hold_is_refused_naming_what_is_wrong(answer, reason):
    with pytest.raises(PlanError) as caught:
        extract_plan(answer, ROLES)
    assert reason in caught.value.reason, caught.value.reason
    assert caught.value.reason.startswith(("the plan's graph is invalid: ", "subtask "))


def test_a_bad_graph_is_not_replaced_by_a_list_found_inside_it():
    # The fenced graph has a cycle; its depends_on lists (["api"]) must not be read as a plan
    answer = "```json\n" + graph_with(t0={"depends_on": ["docs"]}) + "\n```"
    with pytest.raises(PlanError, match="cycle"):
        extract_plan(answer, ROLES)


def test_merge_graph_merges_in_dependency_order_and_keeps_every_dependency_backwards():
    # a -> (b, c) -> d, e independent, f after d; listed out of order
    texts = ["D", "B", "A", "E", "C", "F"]
    nodes = [
        TaskNode("d", ["b", "c"], "testing", ["tests/**"]),
        TaskNode("b", ["a"], "backend", ["src/b/**"]),
        TaskNode("a", [], "backend", ["src/a/**"]),
        TaskNode("e", []),
        TaskNode("c", ["a"], "backend", ["src/c/**"]),
        TaskNode("f", ["d"], "docs"),
    ]
    merged, merged_nodes = merge_graph(texts, nodes, 3)
    # topological order: a, e (free first, plan order), then b, c, then d, then f
    assert merged == ["A; E", "B; C", "D; F"]
    assert merged_nodes == [
        TaskNode("a", [], None, ["src/a/**"]),
        TaskNode("b", ["a"], "backend", ["src/b/**", "src/c/**"]),
        TaskNode("d", ["b"], None, ["tests/**"]),
    ]
    assert merge_graph(texts, nodes, 6) == (
        ["A", "E", "B", "C", "D", "F"],
        [nodes[2], nodes[3], nodes[1], nodes[4], nodes[0], nodes[5]],
    )


@pytest.mark.slow
def test_plan_with_ai_uses_a_graph_answer(fake_ai):
    result = fake_ai(answering(json.dumps(GRAPH)))
    assert result == AIPlan(GRAPH_TASKS, "ai", None, nodes=GRAPH_NODES)
    seen = (fake_ai.work_dir / "prompt_seen.md").read_text()
    assert '"depends_on"' in seen and "ONLY a JSON object" in seen


@pytest.mark.slow
def test_plan_with_ai_falls_back_on_a_graph_with_a_cycle_and_names_it(fake_ai):
    result = fake_ai(answering(graph_with(t0={"depends_on": ["docs"]})))
    assert (result.planner, result.tasks, result.nodes) == ("heuristic", heuristic(), None)
    assert result.note.startswith(
        "AI planner failed: the plan's graph is invalid: the tasks' dependencies form a cycle: db -> docs -> api -> db"
    )
    assert result.note.endswith("; used the heuristic planner")


@pytest.mark.slow
def test_plan_with_ai_merges_a_large_graph_in_dependency_order(fake_ai):
    tasks = [{"id": f"s{i}", "task": f"Step {i}", "depends_on": [f"s{i - 1}"] if i > 1 else []} for i in range(1, 7)]
    result = fake_ai(answering(json.dumps({"tasks": tasks})), max_tasks=3)
    assert result.tasks == ["Step 1; Step 2", "Step 3; Step 4", "Step 5; Step 6"]
    assert [(n.id, n.depends_on) for n in result.nodes] == [("s1", []), ("s3", ["s1"]), ("s5", ["s3"])]
    assert result.note == (
        "the AI planner proposed 6 subtasks; adjacent ones in dependency order were merged into 3 (max_workers)"
    )


# -- the real claude CLI against the loopback mock of the Messages API -------------------
CLAUDE = find_cli("claude")
needs_claude = pytest.mark.skipif(
    CLAUDE is None, reason="claude CLI not found at .cli/node_modules/.bin/claude nor on PATH (run tests/install_cli.sh)"
)


def point_claude_at(mock, monkeypatch, tmp_path):
    """The real claude CLI's environment: the mock's URL and key, a private HOME, nothing of ours."""
    for name in [n for n in os.environ if n.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**mock.client_env("sk-ant-mock-key-0000"), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.real_cli
@needs_claude
def test_real_claude_plans_a_graph_through_the_mock(monkeypatch, tmp_path):
    # Given the real claude CLI, pointed at a mock whose model answers the planning call with a graph
    with MockModelServer([Text(json.dumps(GRAPH))], lifetime=120) as mock:
        point_claude_at(mock, monkeypatch, tmp_path)
        settings = make_settings(tmp_path, orchestrator={"worker": "claude", "claude_command": CLAUDE})
        # When the AI planner plans with it, offering the server's roles
        result = plan_with_ai(
            REQUEST,
            5,
            settings=settings,
            adapter=get_adapter("claude"),
            runner=ProcessRunner(),
            work_dir=tmp_path / "planning",
            timeout=90,
            roles=role_table(settings),
        )
        prompts = [prompt_text(entry.body) for entry in mock.requests if entry.turn not in mock.unscripted]
    # Then the graph came through the CLI, checked, as the plan's nodes
    assert (result.planner, result.note) == ("ai", None), result.note
    assert (result.tasks, result.nodes) == (GRAPH_TASKS, GRAPH_NODES)
    assert result.cost_usd and result.cost_usd > 0
    # And the model was asked for the graph: the schema, with the server's roles
    (prompt,) = prompts
    assert (
        '"depends_on": {"type": "array"' in prompt
        and "one of backend, docs, frontend, infrastructure, integration, testing" in prompt
    )


@pytest.mark.real_cli
@needs_claude
def test_real_claude_graph_is_the_job_s_graph(make_engine, monkeypatch, tmp_path):
    # Given the real claude CLI and a mock whose model plans a chain db -> api -> docs, and whose
    # workers each answer "done"
    def script(body):
        return Text("done") if subtask(body) else Text(json.dumps(GRAPH))

    with MockModelServer(script, lifetime=180) as mock:
        point_claude_at(mock, monkeypatch, tmp_path)
        engine = make_engine(orchestrator={"worker": "claude", "claude_command": CLAUDE, "planner": "ai"})
        # When a job is planned by the AI and run
        job = run_job(engine, REQUEST, config={"isolation": "folder"}, timeout=150)
        why = explain(engine, job, mock)
        order = [subtask(entry.body) for entry in mock.requests if entry.turn not in mock.unscripted]
    # Then the job's record carries the AI's graph (on disk too), and its workers ran in its order
    assert (job.planner, job.tasks, job.status) == ("ai", GRAPH_TASKS, JobStatus.COMPLETED), why
    assert job.nodes == GRAPH_NODES, why
    assert engine.workspace.load_job(job.id).nodes == GRAPH_NODES
    _, workers = engine.queries.snapshot(job.root_id)
    assert [(w.task_id, w.depends_on, w.role) for w in workers] == [
        ("db", [], "backend"),
        ("api", ["db"], "backend"),
        ("docs", ["api"], "docs"),
    ]
    assert order == [None, *GRAPH_TASKS], why  # the planning call, then each task after its prerequisite
    assert workers[1].started_at >= workers[0].ended_at and workers[2].started_at >= workers[1].ended_at


@pytest.mark.slow
def test_plan_with_ai_drops_the_dependencies_of_a_job_that_cannot_run_them(fake_ai):
    # merge_strategy manual in worktrees: the tasks are kept, their dependencies dropped, with a note
    result = fake_ai(answering(json.dumps(GRAPH)), graph=False)
    assert result.tasks == GRAPH_TASKS and result.planner == "ai"
    assert [(n.id, n.depends_on, n.role, n.owns) for n in result.nodes] == [
        ("db", [], "backend", ["db/**"]),
        ("api", [], "backend", ["src/api/**"]),
        ("docs", [], "docs", []),
    ]
    assert result.note == "the AI planner's dependencies were dropped: merge_strategy manual merges no task's work for another"


class RecordingRunner:
    """Stands in for ProcessRunner: each spawn "runs" the claude CLI by writing a plan's result event."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def spawn(self, argv, *, cwd, env, log_path, tag, sandbox=None, limits=None):
        self.calls.append({"argv": argv, "cwd": cwd, "env": env, "sandbox": sandbox, "limits": limits})
        event = {"type": "result", "subtype": "success", "is_error": False, "result": '["Build auth", "Build orders"]'}
        log_path.write_text(json.dumps(event) + "\n")
        return object()

    def wait(self, handle, timeout, wake=None):
        return 0

    def terminate(self, handle, *, grace, first_signal=None):
        return "none"

    def release(self, handle):
        pass


def test_the_ai_planner_gets_no_tool_and_no_orchestrator_variable_whatever_the_workers_tools(tmp_path):
    """A planner reads its prompt and answers: claude gets ``--tools ""`` and none of the workers'
    claude_allowed_tools, and no ORCHESTRATOR_* variable even when the environment handed in has one."""
    settings = make_settings(tmp_path, orchestrator={"claude_allowed_tools": ["Read", "Bash(pytest:*)"]})
    runner = RecordingRunner()
    env = {"PATH": os.environ["PATH"], "ORCHESTRATOR_API_KEY": "k", "HOME": str(tmp_path)}
    result = plan_with_ai(
        REQUEST, 5, settings=settings, adapter=get_adapter("claude"), runner=runner, work_dir=tmp_path / "p", timeout=5, env=env
    )
    assert result.planner == "ai" and result.tasks == ["Build auth", "Build orders"], result
    (call,) = runner.calls
    argv = call["argv"]
    assert argv[argv.index("--tools") + 1] == "" and "--allowedTools" not in argv and "Bash(pytest:*)" not in argv
    assert "ORCHESTRATOR_API_KEY" not in call["env"] and call["cwd"] == tmp_path / "p"
