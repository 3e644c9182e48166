"""The example plugin's own tests: its kind's argv and settings, its place in the registry, and
its step's count through the step context's sandboxed runner. Run them with the orchestrator's
Python: ``.venv/bin/python -m pytest examples/local-command-kind/tests``."""

from __future__ import annotations

from pathlib import Path

import pytest
from changed_lines_step import ChangedLinesStep
from local_command_kind import KIND, LocalCommandAdapter

from orchestrator.checkouts.checkout import Changes
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.models import WorkerRecord, WorkerStatus
from orchestrator.outcomes import GateStatus
from orchestrator.process.runner import Wakeup
from orchestrator.quality.steps import Action, StepContext, StepRun
from orchestrator.workers.adapters import ADAPTERS, load_plugins, unregister
from orchestrator.workers.adapters.base import WorkerContext


def settings_with(tmp_path: Path, **own):
    kinds = {"local-command": {"adapter": "local_command_kind:KIND", **own}}
    return load_settings(
        base_dir=tmp_path, environ={}, overrides={"workers": {"kinds": kinds}, "orchestrator": {"worker": "local-command"}}
    )


def context(tmp_path: Path, settings) -> WorkerContext:
    return WorkerContext(
        task="write notes.md",
        prompt="the prompt",
        prompt_file=tmp_path / "prompt.md",
        worker_dir=tmp_path,
        depth=0,
        max_recursion_depth=1,
        attempt=1,
        settings=settings,
    )


def test_its_program_is_the_kinds_own_unless_its_settings_name_another(tmp_path):
    default = settings_with(tmp_path)
    assert LocalCommandAdapter().build_argv(context(tmp_path, default)) == ["local-agent", "write notes.md"]
    own = settings_with(tmp_path, command="/opt/agent", args=["--quiet"], options={"prompt_file": True})
    argv = LocalCommandAdapter().build_argv(context(tmp_path, own))
    assert argv == ["/opt/agent", "--quiet", "--prompt-file", str(tmp_path / "prompt.md"), "write notes.md"]
    assert LocalCommandAdapter.command_key == "workers.kinds.local-command.command"
    assert LocalCommandAdapter().configured_program(own) == "/opt/agent"


def test_config_yaml_names_it_by_dotted_path_and_it_joins_the_registry(tmp_path):
    settings = settings_with(tmp_path, command="/bin/echo")
    try:
        lines = load_plugins(settings)
        assert ADAPTERS["local-command"] is LocalCommandAdapter
        assert any("worker kind local-command" in line and "local_command_kind:KIND" in line for line in lines)
    finally:
        unregister("local-command")
    assert KIND.name == "local-command"


def test_a_kind_named_as_a_shipped_one_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="claude.*ships"):
        load_settings(
            base_dir=tmp_path, environ={}, overrides={"workers": {"kinds": {"claude": {"adapter": "local_command_kind:KIND"}}}}
        )


class Recorded:
    """The step context's sandboxed runner, as the engine gives it: here it records what it was asked."""

    def __init__(self, output: str) -> None:
        self.output, self.calls = output, []

    def __call__(self, ctx, step, argv, timeout):
        self.calls.append((step, list(argv)))
        return StepRun(GateStatus.PASSED, 0, self.output, "")


class Folder:
    def __init__(self, files):
        self.files = files

    def changes(self, record):
        return Changes(files_changed=[{"path": f, "change": "added"} for f in self.files])


def step_context(tmp_path, files, runner) -> StepContext:
    record = WorkerRecord(job_id="j", root_id="j", name="worker_1", index=1, depth=0, task="t", kind="local-command")
    return StepContext(
        record=record,
        directory=tmp_path,
        attempt=1,
        status=WorkerStatus.SUCCESS,
        exit_reason="exit code 0",
        parsed=None,
        checkout=Folder(files),
        cancel=Wakeup(),
        sandboxed=runner,
        step="changed-lines",
    )


def test_the_step_counts_through_its_contexts_sandboxed_runner_and_records_what_it_found(tmp_path):
    runner = Recorded("  3 a.md\n  4 b.md\n  7 total\n")
    ctx = step_context(tmp_path, ["a.md", "b.md"], runner)
    verdict = ChangedLinesStep().run(ctx)
    assert verdict.action is Action.PASS
    assert runner.calls == [("changed-lines", ["wc", "-l", "--", "a.md", "b.md"])]
    assert ctx.updates.findings == {"changed-lines": "7 lines in 2 changed file(s)"}


def test_the_step_starts_nothing_when_no_file_changed(tmp_path):
    runner = Recorded("")
    ctx = step_context(tmp_path, [], runner)
    ChangedLinesStep().run(ctx)
    assert runner.calls == []
    assert ctx.updates.findings == {"changed-lines": "no file changed"}
