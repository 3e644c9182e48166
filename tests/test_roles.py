"""Roles: a task's role gives its worker a preamble, a worker kind and model,
claude's allowed tools, and gates; the six shipped roles, and tasks.roles in config.yaml."""

from __future__ import annotations

import sys

import pytest

from orchestrator.config import job_config, load_settings
from orchestrator.config.quality import DEFAULT_ROLES
from orchestrator.errors import ConfigError, InvalidGraph
from orchestrator.models import JobRecord, TaskNode, WorkerRecord
from orchestrator.workers import roles
from orchestrator.workers.adapters import get_adapter
from orchestrator.workers.adapters.base import WorkerContext
from orchestrator.workers.prompts import PromptFacts, render_worker_prompt

from .conftest import fake_command, make_settings

SHIPPED = ("frontend", "backend", "testing", "docs", "infrastructure", "integration")
SPAWN_RULES = ["Bash(orchestrator-spawn:*)", "Bash(python -m orchestrator spawn:*)", "Bash(python3 -m orchestrator spawn:*)"]


def from_yaml(tmp_path, text, **overrides):
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    return load_settings(base_dir=tmp_path, environ={}, overrides=overrides or None)


def yaml_error(tmp_path, text) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_yaml(tmp_path, text)
    return info.value


def context(settings, tmp_path, **kw) -> WorkerContext:
    return WorkerContext(
        task="Build the API",
        prompt="the prompt",
        prompt_file=tmp_path / "prompt.md",
        worker_dir=tmp_path,
        depth=0,
        max_recursion_depth=2,
        attempt=1,
        settings=settings,
        **kw,
    )


# -- the shipped roles and tasks.roles in config.yaml ------------------------------------------


def test_the_six_shipped_roles_each_say_who_the_worker_is_and_name_their_gates(settings):
    table = roles.role_table(settings)
    assert tuple(table) == SHIPPED
    for name in SHIPPED:
        role = table[name]
        assert role["preamble"].startswith("You are the ") and 150 < len(role["preamble"]) < 600, name
        assert role["gates"] and set(role["gates"]) <= {"lint", "typecheck", "tests", "security", "docs"}, name
        assert (role["worker"], role["model"], role["allowed_tools"]) == ("", "", []), "the job's kind, model and tools"
    assert "tests" in table["testing"]["gates"] and table["docs"]["gates"] == ["docs"]


def test_tasks_roles_in_config_yaml_adds_a_role_beside_the_shipped_ones(tmp_path):
    settings = from_yaml(
        tmp_path,
        "tasks:\n  roles:\n    security-review:\n      preamble: You review for security.\n"
        "      worker: command\n      model: m-large\n      allowed_tools: [Read, Grep]\n      gates: [security]\n",
    )
    table = roles.role_table(settings)
    assert tuple(table) == (*SHIPPED, "security-review")
    assert table["security-review"] == {
        "preamble": "You review for security.",
        "worker": "command",
        "model": "m-large",
        "allowed_tools": ["Read", "Grep"],
        "gates": ["security"],
    }
    assert table["backend"] == DEFAULT_ROLES["backend"]


def test_a_shipped_role_named_in_config_yaml_changes_only_the_keys_given(tmp_path):
    settings = from_yaml(
        tmp_path,
        "tasks:\n  roles:\n    backend: {model: big-model}\n    docs: {preamble: You write the docs in French., gates: []}\n",
    )
    table = roles.role_table(settings)
    assert table["backend"] == {**DEFAULT_ROLES["backend"], "model": "big-model"}, "preamble and gates kept"
    assert table["docs"]["preamble"] == "You write the docs in French." and table["docs"]["gates"] == []
    assert DEFAULT_ROLES["docs"]["gates"] == ["docs"], "the shipped table itself is untouched"


@pytest.mark.parametrize(
    "role, key, says",
    [
        ("{worker: gpt}", "tasks.roles.r.worker", "is not a worker kind. Kinds: auto, simulated, command, claude"),
        ("{model: --dangerously-skip-permissions}", "tasks.roles.r.model", 'not starting with "-"'),
        ("{allowed_tools: Read}", "tasks.roles.r.allowed_tools", "must be a list of tool rules"),
        ("{allowed_tools: ['']}", "tasks.roles.r.allowed_tools", "must be a list of tool rules"),
        ("{gates: tests}", "tasks.roles.r.gates", "must be a list of names"),
        ("{preamble: [a]}", "tasks.roles.r.preamble", "must be a string"),
        ("{prompt: hi}", "tasks.roles.r", "unknown key(s) prompt. Allowed: preamble, worker, model, allowed_tools, gates"),
        ("You are a reviewer", "tasks.roles.r", "must be an object such as"),
    ],
)
def test_a_bad_role_in_config_yaml_is_a_config_error_naming_the_key(tmp_path, role, key, says):
    error = yaml_error(tmp_path, f"tasks:\n  roles:\n    r: {role}\n")
    assert error.details.get("key") == key and says in error.message, error.message


def test_a_preamble_too_long_or_a_bad_role_name_is_refused(tmp_path):
    long = "x" * 4001
    assert "longer than 4000 characters" in yaml_error(tmp_path, f"tasks:\n  roles:\n    r: {{preamble: {long}}}\n").message
    assert "is not a role name" in yaml_error(tmp_path, "tasks:\n  roles:\n    'a b': {}\n").message


# -- the preamble in the prompt ----------------------------------------------------------------


def render(**kw):
    args = dict(
        task="Build the API",
        request="Build a shop",
        siblings=["Build the API", "Build the UI"],
        index=1,
        depth=0,
        max_recursion_depth=2,
        recursion_enabled=False,
        worker_dir="/ws/w1",
        job_id="j1",
        worker_id="worker_1",
        children_left=0,
    )
    args.update(kw)
    template = args.pop("template", None)
    return render_worker_prompt(PromptFacts(**args), template=template)


def test_a_roles_preamble_comes_first_in_the_prompt_and_the_rest_is_unchanged():
    # (after the job's shared block, which is the same for every role)
    plain = render()
    shared, own = plain.split("\n---\n\n", 1)
    with_role = render(role="backend", preamble=DEFAULT_ROLES["backend"]["preamble"])
    assert with_role == shared + "\n---\n\n" + DEFAULT_ROLES["backend"]["preamble"] + "\n\n" + own
    assert own.startswith("# Your subtask\n\nBuild the API\n")
    assert render(role="backend", preamble="") == plain, "a role without a preamble adds nothing"


def test_a_custom_prompt_template_gets_the_role_and_its_preamble(tmp_path):
    path = tmp_path / "mine.md.j2"
    path.write_text("[{{ role }}] {{ preamble }} / {{ task }}")
    assert render(template=path, role="docs", preamble="  Write docs.  ") == "[docs] Write docs. / Build the API"
    assert render(template=path) == "[None]  / Build the API"


def test_the_engine_renders_a_workers_prompt_with_its_roles_preamble(make_engine):
    engine = make_engine(tasks={"roles": {"reviewer": {"preamble": "You are the reviewer: read, do not write."}}})
    config = job_config(engine.settings, None)[0]
    job = JobRecord(id="a1b2c3d4e5f6", root_id="a1b2c3d4e5f6", request="r", tasks=["Review it"], config=config)
    rec = WorkerRecord(job_id=job.id, root_id=job.id, name="worker_1", index=1, depth=0, task="Review it", kind="claude")
    plain = engine.prompts.render(rec, job).text
    shared, own = plain.split("\n---\n\n", 1)  # the job's shared block first, the same for every role
    rec.role = "reviewer"
    assert engine.prompts.render(rec, job).text == shared + "\n---\n\n" + "You are the reviewer: read, do not write.\n\n" + own
    rec.role = "testing"
    text = engine.prompts.render(rec, job).text
    assert text.startswith(shared + "\n---\n\n" + DEFAULT_ROLES["testing"]["preamble"] + "\n\n# Your subtask\n")


# -- kind and model: decided at submission ----------------------------------------------------


def test_apply_roles_records_a_roles_kind_and_model_on_its_nodes(tmp_path):
    settings = make_settings(
        tmp_path,
        orchestrator={"command": [sys.executable, "-c", "pass"]},
        tasks={"roles": {"fast": {"worker": "command", "model": "m-small"}}},
    )
    cfg = job_config(settings, None)[0]
    nodes = [TaskNode("a", role="fast"), TaskNode("b"), TaskNode("c", role="backend")]
    assert roles.apply_roles(settings, cfg, nodes) == []
    assert [(n.kind, n.model) for n in nodes] == [("command", "m-small"), (None, None), (None, None)]
    job = JobRecord(id="a1b2c3d4e5f6", root_id="a1b2c3d4e5f6", request="r", tasks=["x", "y", "z"], config=cfg)
    job.nodes, job.worker_names = nodes, ["worker_1", "worker_2", "worker_3"]
    restored = JobRecord.from_dict(job.to_dict())
    assert [(n.kind, n.model) for n in restored.nodes] == [("command", "m-small"), (None, None), (None, None)]
    from orchestrator.workspace.layout import Workspace

    pending = [Workspace(tmp_path / "ws").pending_worker(restored, i) for i in (1, 2, 3)]
    assert [(w.kind, w.model, w.role) for w in pending] == [
        ("command", "m-small", "fast"),
        ("simulated", None, None),
        ("simulated", None, "backend"),
    ]


def test_a_role_on_another_cli_without_a_model_runs_that_clis_default_model(tmp_path):
    # orchestrator.model names a model of the job's CLI: another CLI would refuse it.
    settings = make_settings(
        tmp_path,
        orchestrator={"model": "claude-sonnet-4-5", "command": [sys.executable]},
        tasks={"roles": {"scripted": {"worker": "command"}}},
    )
    cfg = job_config(settings, None)[0]
    nodes = [TaskNode("a", role="scripted")]
    notes = roles.apply_roles(settings, cfg, nodes)
    assert (nodes[0].kind, nodes[0].model) == ("command", "")
    assert notes == [
        "role scripted: its workers run command with command's default model (orchestrator.model is for simulated); "
        "set tasks.roles.scripted.model to choose one"
    ]


def test_a_role_whose_kind_is_not_installed_is_refused_naming_the_role_and_kind(tmp_path):
    settings = make_settings(
        tmp_path,
        orchestrator={"codex_command": str(tmp_path / "no-such-codex")},
        tasks={"roles": {"reviewer": {"worker": "codex"}}},
    )
    cfg = job_config(settings, None)[0]
    with pytest.raises(InvalidGraph) as info:
        roles.apply_roles(settings, cfg, [TaskNode("a"), TaskNode("b", role="reviewer")])
    message = info.value.message
    assert info.value.http_status == 422 and info.value.details == {"field": "tasks[1].role"}
    assert "tasks[1].role='reviewer'" in message and "worker kind codex (tasks.roles.reviewer.worker) is not installed" in message
    assert "no-such-codex" in message and "orchestrator.codex_command" in message


def test_a_role_of_the_command_kind_needs_orchestrator_command(tmp_path):
    settings = make_settings(tmp_path, tasks={"roles": {"scripted": {"worker": "command"}}})
    with pytest.raises(InvalidGraph, match="the command kind needs orchestrator.command"):
        roles.apply_roles(settings, job_config(settings, None)[0], [TaskNode("a", role="scripted")])


def test_a_role_of_kind_auto_is_resolved_like_the_jobs(tmp_path):
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    settings = make_settings(
        tmp_path,
        orchestrator={"claude_command": str(fake)},
        workers={"env": {"PATH": str(fake.parent)}},
        tasks={"roles": {"any": {"worker": "auto"}}},
    )
    nodes = [TaskNode("a", role="any")]
    notes = roles.apply_roles(settings, job_config(settings, None)[0], nodes)
    assert nodes[0].kind == "claude" and notes == [f"role any: worker kind auto: found claude on PATH ({fake})"]


def test_a_child_jobs_own_roles_win_over_the_inherited_one(settings):
    nodes = [TaskNode("a"), TaskNode("b", role="docs")]
    notes = roles.apply_roles(settings, job_config(settings, None)[0], nodes, inherited="backend")
    assert [n.role for n in nodes] == ["backend", "docs"] and len(notes) == 1
    assert roles.apply_roles(settings, job_config(settings, None)[0], [TaskNode("c")], inherited="gone") == []


def test_a_role_that_does_not_exist_is_refused_naming_it_and_the_known_roles(settings):
    with pytest.raises(InvalidGraph) as info:
        roles.apply_roles(settings, job_config(settings, None)[0], [TaskNode("a", role="designer")])
    assert info.value.http_status == 422
    assert info.value.message == (
        "tasks[0].role='designer' is not a role of this server. Roles: backend, docs, frontend, infrastructure, "
        "integration, testing (add one under tasks.roles in config.yaml)"
    )


# -- the model and tools reach the adapter's argv -----------------------------------------------


def test_a_roles_model_wins_over_orchestrator_model_in_claudes_argv(tmp_path):
    settings = make_settings(tmp_path, orchestrator={"model": "job-model"})
    claude = get_adapter("claude")
    argv = claude.build_argv(context(settings, tmp_path, model="role-model"))
    assert argv[argv.index("--model") + 1] == "role-model"
    assert "job-model" not in argv
    argv = claude.build_argv(context(settings, tmp_path))
    assert argv[argv.index("--model") + 1] == "job-model", "without a role's model, the job's"
    assert "--model" not in claude.build_argv(context(settings, tmp_path, model="")), '"": the CLI default'


def test_a_roles_model_reaches_the_command_kinds_argv(tmp_path):
    settings = make_settings(tmp_path, orchestrator={"command": ["tool", "--model={model}", "{task}"], "model": "job-m"})
    command = get_adapter("command")
    assert command.build_argv(context(settings, tmp_path, model="role-m")) == ["tool", "--model=role-m", "Build the API"]
    assert command.build_argv(context(settings, tmp_path)) == ["tool", "--model=job-m", "Build the API"]


def test_the_command_kind_fills_placeholders_once_so_a_prompt_naming_one_stays_as_written(tmp_path):
    settings = make_settings(tmp_path, orchestrator={"command": ["tool", "{prompt}", "{task}"]})
    ctx = context(settings, tmp_path)
    ctx = WorkerContext(**{**ctx.__dict__, "prompt": "print {task} and {model}", "task": "T"})
    assert get_adapter("command").build_argv(ctx) == ["tool", "print {task} and {model}", "T"]


def test_a_roles_model_names_the_ollama_and_opencode_model(tmp_path):
    settings = make_settings(tmp_path, orchestrator={"ollama_model": "llama3.2", "opencode_model": "a/b"})
    assert get_adapter("ollama").build_argv(context(settings, tmp_path, model="qwen2.5"))[2] == "qwen2.5"
    assert get_adapter("ollama").build_argv(context(settings, tmp_path))[2] == "llama3.2"
    argv = get_adapter("opencode").build_argv(context(settings, tmp_path, model="x/y"))
    assert argv[argv.index("-m") + 1] == "x/y"


def test_a_roles_tools_replace_claudes_list_and_keep_the_spawn_rules(tmp_path):
    settings = make_settings(tmp_path, tasks={"roles": {"reader": {"allowed_tools": ["Read", "Grep"]}}})
    tools = roles.allowed_tools(settings, "reader")
    assert tools == ("Read", "Grep", *SPAWN_RULES)
    assert roles.allowed_tools(settings, "backend") is None and roles.allowed_tools(settings, None) is None
    argv = get_adapter("claude").build_argv(context(settings, tmp_path, allowed_tools=tools))
    listed = argv[argv.index("--allowedTools") + 1 : argv.index("--")]
    assert listed == ["Read", "Grep", *SPAWN_RULES]
    assert "Write" not in listed and "Edit" not in listed


def test_a_servers_tool_list_without_spawn_rules_does_not_get_them_back_through_a_role(tmp_path):
    settings = make_settings(
        tmp_path,
        orchestrator={"claude_allowed_tools": ["Read", "Bash(orchestrator-lock:*)"]},
        tasks={"roles": {"reader": {"allowed_tools": ["Grep", "Read"]}}},
    )
    assert roles.allowed_tools(settings, "reader") == ("Grep", "Read", "Bash(orchestrator-lock:*)")


# -- through the real API -----------------------------------------------------------------------

# A command worker that prints the model it was given and its prompt's first paragraph.
# The first line of the worker's own part: after its job's shared block, which ends in "\n---\n".
PRINT_MODEL_AND_PREAMBLE = (
    "import sys; print('model=' + sys.argv[1]); print('first=' + sys.argv[2].split('\\n---\\n\\n', 1)[1].split(chr(10))[0])"
)


@pytest.mark.slow
def test_tasks_naming_roles_run_each_worker_with_its_roles_kind_model_and_preamble_through_the_api(make_live):
    live = make_live(
        orchestrator={"command": [sys.executable, "-c", PRINT_MODEL_AND_PREAMBLE, "{model}", "{prompt}"]},
        tasks={"roles": {"scripted": {"worker": "command", "model": "m-role", "preamble": "You are the scripted one."}}},
    )
    tasks = [{"task": "Write the API", "role": "scripted"}, {"task": "Write the docs", "role": "docs"}, "Plain task"]
    answer = live.submit(request="build it", tasks=tasks)
    assert answer.status_code == 202, answer.text
    nodes = answer.json()["nodes"]
    assert [(n["role"], n["kind"], n["model"]) for n in nodes] == [
        ("scripted", "command", "m-role"),
        ("docs", None, None),
        (None, None, None),
    ]
    doc = live.wait(answer.json()["job_id"])
    assert doc["status"] == "completed", doc["results"]["tasks"]
    ran = {t["task"]: t for t in doc["results"]["tasks"]}
    assert [(ran[t]["role"], ran[t]["kind"], ran[t]["model"]) for t in ("Write the API", "Write the docs", "Plain task")] == [
        ("scripted", "command", "m-role"),
        ("docs", "simulated", None),
        (None, "simulated", None),
    ]
    assert ran["Write the API"]["output"].splitlines() == ["model=m-role", "first=You are the scripted one."]


@pytest.mark.slow
def test_a_task_naming_a_role_that_does_not_exist_is_a_422_naming_it_and_the_known_roles(live):
    answer = live.submit(request="build it", tasks=[{"task": "Design it", "role": "designer"}, "Build it"])
    assert answer.status_code == 422
    body = answer.json()
    assert body["message"] == (
        "tasks[0].role='designer' is not a role of this server. Roles: backend, docs, frontend, infrastructure, "
        "integration, testing (add one under tasks.roles in config.yaml)"
    )
    assert body["details"] == {"field": "tasks[0].role"}
    assert live.call("GET", "/api/v1/jobs").json()["total"] == 0


@pytest.mark.slow
def test_a_task_whose_roles_kind_is_not_installed_is_a_422_naming_the_role_and_kind(make_live, tmp_path):
    live = make_live(
        orchestrator={"gemini_command": str(tmp_path / "no-gemini")},
        tasks={"roles": {"reviewer": {"worker": "gemini", "model": "gemini-2.5-pro"}}},
    )
    answer = live.submit(request="review it", tasks=["Build it", {"task": "Review it", "role": "reviewer"}])
    assert answer.status_code == 422
    message = answer.json()["message"]
    assert message.startswith(
        "tasks[1].role='reviewer': the role's worker kind gemini (tasks.roles.reviewer.worker) is not installed"
    )
    assert live.call("GET", "/api/v1/jobs").json()["total"] == 0


@pytest.mark.slow
def test_a_child_jobs_tasks_take_the_role_of_the_worker_that_started_it(make_live):
    # The job's kind is simulated; only the role runs the command kind, whose "tree 2" task
    # starts a child job of two "tree 2" subtasks (plain strings, no role).
    live = make_live(
        orchestrator={"command": fake_command()},
        tasks={"roles": {"scripted": {"worker": "command", "model": "m-role"}}},
    )
    answer = live.submit(request="tree", tasks=[{"task": "tree 2", "role": "scripted"}], config={"max_recursion_depth": 1})
    job_id = answer.json()["job_id"]
    doc = live.wait(job_id, timeout=90)
    assert doc["status"] == "completed", doc["results"]["tasks"]
    jobs, workers = live.engine.queries.snapshot(job_id)
    children = [w for w in workers if w.depth == 1]
    assert len(children) == 2, "the root worker ran the command kind's tree mode, which spawned"
    assert [(w.role, w.kind, w.model) for w in children] == [("scripted", "command", "m-role")] * 2
    child_job = next(j for j in jobs if j.depth == 1)
    assert "tasks without a role take role scripted of the worker that started this job" in child_job.notes


def test_the_docs_roles_example_loads_as_it_says(tmp_path):
    from .conftest import ROOT

    readme = (ROOT / "docs" / "workers.md").read_text()
    example = next(b for b in readme.split("```yaml\n")[1:] if b.startswith("tasks:\n  roles:")).split("```")[0]
    table = roles.role_table(from_yaml(tmp_path, example))
    assert table["backend"] == {**DEFAULT_ROLES["backend"], "model": "claude-opus-4-1"}
    assert (table["reviewer"]["allowed_tools"], table["reviewer"]["gates"]) == (["Read", "Grep", "Bash(git diff:*)"], ["tests"])
    assert (table["porter"]["worker"], table["porter"]["model"], table["porter"]["gates"]) == ("codex", "gpt-5-codex", [])
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip() for line in readme.splitlines() if line.startswith("| `")}
    for name in SHIPPED:  # the page's table lists each shipped role with its gates
        assert rows[name] == ", ".join(DEFAULT_ROLES[name]["gates"]), name
