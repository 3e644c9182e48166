"""Shell and option injection: hostile subtasks reach each worker CLI as one argv element.

Every adapter whose argv carries the prompt runs a recording fake in place of the
real CLI. The fake writes the argv it got; a shell anywhere on the way would run
the payloads, which would create ``pwned`` files or remove the ``x`` folder.
"""

from __future__ import annotations

import json
import sys

import pytest

from orchestrator.workers.adapters import auto_order

from .conftest import ROOT, run_job

pytestmark = pytest.mark.slow

RECORDER = """#!{python}
import json, os, sys
with open(os.path.join(os.getcwd(), "argv.json"), "w", encoding="utf-8") as handle:
    json.dump(sys.argv[1:], handle)
print("recorded", flush=True)
"""
AI_KINDS = auto_order()  # the AI CLIs auto looks for, from the registry (workers/adapters)
# How each kind passes the prompt: as the element after "--", or glued to its option with "=".
PROMPT_FORM = {"claude": "--", "codex": "--", "ollama": "--", "opencode": "--", "gemini": "--prompt=", "aider": "--message="}


def payloads(tmp_path):
    """Subtasks that do harm if any shell or option parser on the way reads them as code or flags."""
    pwned, victim = tmp_path / "pwned", tmp_path / "x"
    return [
        f"; rm -rf {victim}",
        f"$(touch {pwned}_dollar)",
        f"`touch {pwned}_backtick`",
        "--help",
        "-o out",
        f"a && touch {pwned}_and || touch {pwned}_or",
        f'"double" \'single\' \\" ; touch {pwned}_quote',
        f"| touch {pwned}_pipe > {pwned}_redirect",
        "--output-format=text --model=evil",
        "-",
    ]


@pytest.fixture
def canary(tmp_path):
    """The ``x`` folder a payload tries to remove, and a recording fake CLI."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("still here\n")
    recorder = tmp_path / "recorder"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    return recorder


def recorded_argv(engine, job):
    """The argv each worker's process received, by task."""
    _, workers = engine.queries.snapshot(job.root_id)
    got = {}
    for worker in workers:
        path = engine.workspace.worker_dir(worker.root_id, worker.depth, worker.name) / "argv.json"
        assert path.is_file(), (worker.name, worker.status.value, worker.error, worker.attempts)
        got[worker.task] = json.loads(path.read_text(encoding="utf-8"))
    return got


def assert_no_side_effect(tmp_path):
    made = sorted(str(p) for base in (tmp_path, ROOT) for p in base.glob("pwned*"))
    made += sorted(str(p) for p in tmp_path.rglob("pwned*"))
    assert not made, made
    assert (tmp_path / "x" / "keep").read_text() == "still here\n"


@pytest.mark.parametrize("kind", AI_KINDS)
def test_an_ai_cli_gets_each_hostile_prompt_as_one_argv_element(kind, tmp_path, make_engine, canary):
    # Given an AI worker kind whose CLI is the recorder, and a request with newlines and quotes
    engine = make_engine(orchestrator={"worker": kind, f"{kind}_command": str(canary)}, workers={"max_retries": 0})
    tasks = payloads(tmp_path)
    request = "first line\n$(touch pwned_request)\n'quoted' \"request\"; rm -rf x"
    # When a job runs one worker per hostile subtask
    job = run_job(engine, request, tasks=tasks, config={"max_workers": 4})
    got = recorded_argv(engine, job)
    # Then each worker's prompt (its task and the request, newlines kept) is exactly one element,
    # in the place the adapter's form says, and the argv has the same shape for every payload
    assert set(got) == set(tasks)
    for task, argv in got.items():
        holding = [arg for arg in argv if request in arg]
        assert len(holding) == 1 and task in holding[0], (task, argv)
        prompt = holding[0]
        assert not any(task in arg for arg in argv if arg != prompt and len(task) > 2), (task, argv)
        if PROMPT_FORM[kind] == "--":
            assert argv[-2:] == ["--", prompt]
        else:
            assert prompt.startswith(PROMPT_FORM[kind]) and argv.count(prompt) == 1
    assert len({len(argv) for argv in got.values()}) == 1
    print(f"METRIC injection_{kind}_workers={len(got)} count")
    assert_no_side_effect(tmp_path)


def test_a_command_template_gets_each_hostile_task_as_one_argv_element(tmp_path, make_engine, canary):
    # Given the command kind with the task alone and inside a larger element
    command = [str(canary), "--task", "{task}", "prefix={task}", "{prompt}"]
    engine = make_engine(orchestrator={"worker": "command", "command": command}, workers={"max_retries": 0})
    tasks = payloads(tmp_path)
    # When a job runs one worker per hostile subtask
    job = run_job(engine, "request; rm -rf x", tasks=tasks, config={"max_workers": 4})
    got = recorded_argv(engine, job)
    # Then the argv is exactly the template with the text put in: no element split, added or lost
    assert {task: argv[:3] for task, argv in got.items()} == {task: ["--task", task, f"prefix={task}"] for task in tasks}
    assert all(len(argv) == 4 and task in argv[3] for task, argv in got.items())
    print(f"METRIC injection_command_workers={len(got)} count")
    assert_no_side_effect(tmp_path)
