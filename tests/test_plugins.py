"""Plugins (docs/plugins.md): worker kinds and after-attempt steps from outside the package, by an
installed distribution's entry point or a dotted path in config.yaml; a bad one refused at the
server's start with the plugin, its distribution and the fix named; the worked example
(examples/local-command-kind) installed with pip into a venv of its own and running a real job.

An installed distribution is a real one here: a ``*.dist-info`` folder with its ``entry_points.txt``
on ``sys.path``, read by importlib.metadata as pip's are."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import requests

from orchestrator.config import load_settings, plugins
from orchestrator.delivery import pull_requests
from orchestrator.engine.core import Engine
from orchestrator.errors import ConfigError
from orchestrator.models import WorkerRecord, WorkerStatus
from orchestrator.outcomes import GateStatus
from orchestrator.process.runner import Wakeup
from orchestrator.quality.gates import gate_log
from orchestrator.quality.steps import StepContext, StepRun, run_steps
from orchestrator.workers.adapters import ADAPTERS, KINDS, SHIPPED, get_adapter, load_plugins, unregister
from orchestrator.workers.adapters.base import WorkerContext

from .conftest import API_KEY, ROOT, make_settings, only_worker, run_job
from .helpers.readme import snippet
from .helpers.served_home import served_home

EXAMPLE = ROOT / "examples" / "local-command-kind"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Make a distribution installed on ``sys.path``: ``installed(name, entry_points, {module: source})``."""

    def install(dist: str, entry_points: str, modules: dict[str, str] | None = None) -> None:
        site = tmp_path / "site"
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
        for name, source in (modules or {}).items():
            (site / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(site))
        plugins.forget_entry_points()

    yield install
    plugins.forget_entry_points()  # monkeypatch takes the folder off sys.path after this
    for name in [k for k in KINDS if k not in SHIPPED]:
        unregister(name)


KIND_MODULE = """
    from orchestrator.workers.adapters.base import Adapter
    from orchestrator.workers.adapters.kind import WorkerKind

    class EchoAdapter(Adapter):
        name = "echo-agent"
        default_program = "echo"

        def build_argv(self, ctx):
            return [self.configured_program(ctx.settings), ctx.task]

        def needs_prompt(self, settings):
            return False

        def needs_prompt_file(self, settings):
            return False

    KIND = WorkerKind(EchoAdapter, rank=200)
    WRONG = "not a kind"
"""


def start_fails(tmp_path, **sections) -> str:
    with pytest.raises(ConfigError) as raised:
        Engine(make_settings(tmp_path, **sections))
    return str(raised.value)


# -- kinds -----------------------------------------------------------------------------------


def test_an_installed_kind_with_a_dash_in_its_name_is_chosen_in_config_and_joins_every_table(installed, tmp_path):
    installed("echo-agent-plugin", "[orchestrator.worker_kinds]\necho-agent = echo_kind:KIND\n", {"echo_kind": KIND_MODULE})
    # Its name is known from the metadata alone, before its code is loaded: config.yaml may choose it.
    settings = make_settings(tmp_path, orchestrator={"worker": "echo-agent"}, tasks={"roles": {"docs": {"worker": "echo-agent"}}})
    assert "echo-agent" not in ADAPTERS
    lines = load_plugins(settings)
    assert lines == ["worker kind echo-agent from entry point 'echo-agent' of echo-agent-plugin 1.0 (echo_kind:KIND)"]
    assert ADAPTERS["echo-agent"]().configured_program(settings) == "echo"  # its program is not named as the kind
    assert "echo-agent" in [k.name for k in KINDS.values()]


@pytest.mark.slow
def test_a_kind_from_config_yaml_runs_a_job_in_the_workers_sandbox(tmp_path, monkeypatch):
    # Given a kind declared by dotted path, its program a script that writes its task to a file
    site = tmp_path / "site"
    site.mkdir()
    (site / "echo_kind.py").write_text(textwrap.dedent(KIND_MODULE))
    monkeypatch.syspath_prepend(str(site))
    script = tmp_path / "agent.sh"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$1" > out.txt\necho "wrote out.txt"\n')
    script.chmod(0o755)
    kinds = {"echo-agent": {"adapter": "echo_kind:KIND", "command": str(script)}}
    engine = Engine(make_settings(tmp_path, workers={"kinds": kinds}, orchestrator={"worker": "echo-agent"}))
    try:
        # When a job runs on it
        job = run_job(engine, "write the out file")
        worker = only_worker(engine, job)
        # Then its program ran in the worker's directory, as any kind's does
        assert job.status.value == "completed", worker.exit_reason
        assert worker.kind == "echo-agent"
        assert (
            engine.workspace.worker_dir(job.root_id, worker.depth, worker.name) / "out.txt"
        ).read_text() == "write the out file\n"
    finally:
        engine.shutdown(timeout=10)
        unregister("echo-agent")


def test_an_entry_point_that_fails_to_import_stops_the_start_naming_it_its_distribution_and_the_fix(installed, tmp_path):
    installed(
        "broken-kinds", "[orchestrator.worker_kinds]\nbroken = broken_kind:KIND\n", {"broken_kind": "import no_such_module\n"}
    )
    said = start_fails(tmp_path)
    assert "plugin 'broken'" in said and "broken-kinds 1.0" in said
    assert "ModuleNotFoundError" in said and "no_such_module" in said
    assert "pip install --force-reinstall broken-kinds" in said and "docs/plugins.md" in said


def test_doctor_says_which_plugin_stops_the_start_and_lists_the_good_ones(installed, tmp_path):
    from orchestrator.cli.doctor import Report, _check_plugins

    installed(
        "broken-kinds", "[orchestrator.worker_kinds]\nbroken = broken_kind:KIND\n", {"broken_kind": "import no_such_module\n"}
    )
    report = Report(None)
    _check_plugins(report, make_settings(tmp_path))
    (problem,) = report.problems
    assert problem.topic == "plugins" and "plugin 'broken'" in problem.text and "broken-kinds 1.0" in problem.text


def test_an_entry_point_taking_a_shipped_kinds_name_is_refused(installed, tmp_path):
    installed("fake-claude", "[orchestrator.worker_kinds]\nclaude = echo_kind:KIND\n", {"echo_kind": KIND_MODULE})
    said = start_fails(tmp_path)
    assert "plugin 'claude'" in said and "fake-claude" in said and "a kind the orchestrator ships" in said
    assert "uninstall fake-claude" in said
    assert ADAPTERS["claude"].__name__ == "ClaudeAdapter"  # the shipped one stays


def test_an_entry_point_named_otherwise_than_its_adapter_is_refused_and_nothing_is_registered(installed, tmp_path):
    installed(
        "two-kinds",
        "[orchestrator.worker_kinds]\necho-agent = echo_kind:KIND\nother = echo_kind:KIND\n",
        {"echo_kind": KIND_MODULE},
    )
    said = start_fails(tmp_path)
    assert "plugin 'other'" in said and "its adapter is named 'echo-agent'" in said
    assert "echo-agent" not in ADAPTERS  # all or nothing: the good one was not registered either


def test_a_dotted_path_that_does_not_resolve_or_is_no_kind_is_refused(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "echo_kind.py").write_text(textwrap.dedent(KIND_MODULE))
    monkeypatch.syspath_prepend(str(site))
    said = start_fails(tmp_path, workers={"kinds": {"echo-agent": {"adapter": "echo_kind:MISSING"}}})
    assert "workers.kinds.echo-agent.adapter" in said and "AttributeError" in said
    assert "correct workers.kinds.echo-agent.adapter to module:attribute" in said
    said = start_fails(tmp_path, workers={"kinds": {"echo-agent": {"adapter": "echo_kind:WRONG"}}})
    assert "is a str, not a WorkerKind" in said


def test_kind_settings_of_a_kind_nothing_declares_stop_the_start(tmp_path):
    said = start_fails(tmp_path, workers={"kinds": {"ghost": {"command": "ghost-cli"}}}, orchestrator={"worker": "ghost"})
    assert "workers.kinds.ghost: no installed package declares the worker kind 'ghost'" in said
    assert "set workers.kinds.ghost.adapter to package.module:KIND" in said


def test_kind_settings_are_checked_where_they_are_written(tmp_path):
    with pytest.raises(ConfigError, match=r"workers.kinds: 'Bad.Name' is not a kind name"):
        load_settings(base_dir=tmp_path, environ={}, overrides={"workers": {"kinds": {"Bad.Name": {}}}})
    with pytest.raises(ConfigError, match=r"workers.kinds.my-kind: unknown key 'program'"):
        load_settings(base_dir=tmp_path, environ={}, overrides={"workers": {"kinds": {"my-kind": {"program": "x"}}}})
    with pytest.raises(ConfigError, match=r"orchestrator.worker='nope'.*workers.kinds.<name>"):
        load_settings(base_dir=tmp_path, environ={}, overrides={"orchestrator": {"worker": "nope"}})


def test_the_pages_kind_module_is_a_kind_from_outside(tmp_path, monkeypatch):
    # docs/plugins.md's kind, as a module of its own named by dotted path
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_agent_kind.py").write_text(snippet("plugin-kind"))
    monkeypatch.syspath_prepend(str(site))
    settings = make_settings(
        tmp_path,
        workers={"kinds": {"my-agent": {"adapter": "my_agent_kind:KIND", "args": ["--quiet"]}}},
        orchestrator={"worker": "my-agent"},
    )
    try:
        assert load_plugins(settings) == ["worker kind my-agent from workers.kinds.my-agent.adapter (my_agent_kind:KIND)"]
        ctx = WorkerContext("a task", "", tmp_path / "p", tmp_path, 0, 1, 1, settings)
        assert get_adapter("my-agent").build_argv(ctx) == ["my-agent-cli", "--quiet", "a task"]
    finally:
        unregister("my-agent")


# -- steps -----------------------------------------------------------------------------------


def test_the_pages_step_module_runs_its_program_through_the_context(tmp_path):
    # docs/plugins.md's step, given a context whose sandboxed runner records what it is asked
    scope: dict = {}
    exec(compile(snippet("plugin-step"), "plugins.md", "exec"), scope)
    asked = []

    def sandboxed(ctx, step, argv, timeout):
        asked.append((step, argv))
        return StepRun(GateStatus.FAILED, 1, "GPL-3.0 in vendor/x", "exit code 1")

    record = WorkerRecord(job_id="j", root_id="j", name="worker_1", index=1, depth=0, task="t", kind="simulated")
    ctx = StepContext(record, tmp_path, 1, WorkerStatus.SUCCESS, "", None, None, Wakeup(), sandboxed=sandboxed)
    verdict = run_steps([scope["Licences"]()], ctx)
    assert asked == [("licences", ["licensee", "detect", "."])]
    assert verdict is not None and verdict[1].reason == "licences: exit code 1"
    assert ctx.updates.findings == {"licences": "GPL-3.0 in vendor/x"}


STEP_MODULE = """
    from orchestrator.quality.steps import PASS, Step, fail

    class ListStep(Step):
        name = "list-files"

        def run(self, ctx):
            done = ctx.run(["ls", "-1"], timeout=30)
            if not done.ok:
                return fail(done.reason)
            ctx.updates.found(self.name, ",".join(sorted(done.output.split())))
            return PASS

    class WriteOutside(Step):  # tries to write a file beside the workspace: outside the worker's checkout

        name = "write-outside"
        target = ""

        def run(self, ctx):
            done = ctx.run(["sh", "-c", 'echo written > "$1"', "sh", self.target], timeout=30)
            ctx.updates.found(self.name, done.status)
            return PASS

    class Clash(Step):
        name = "gates"

        def run(self, ctx):
            return PASS
"""


def test_a_step_that_does_not_resolve_or_clashes_is_refused_at_the_start(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_steps.py").write_text(textwrap.dedent(STEP_MODULE))
    monkeypatch.syspath_prepend(str(site))
    said = start_fails(tmp_path, tasks={"steps": ["my_steps:Missing"]})
    assert "tasks.steps[0]" in said and "AttributeError" in said and "docs/plugins.md" in said
    said = start_fails(tmp_path, tasks={"steps": ["my_steps:Clash"]})
    assert "named 'gates', which another step has" in said


@pytest.mark.slow
def test_a_step_from_config_yaml_runs_its_program_through_the_sandboxed_runner_and_records_it(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_steps.py").write_text(textwrap.dedent(STEP_MODULE))
    monkeypatch.syspath_prepend(str(site))
    outside = tmp_path / "outside.txt"
    (site / "where.py").write_text(f"import my_steps\nmy_steps.WriteOutside.target = {str(outside)!r}\n")
    (site / "my_steps_all.py").write_text("import where\nfrom my_steps import ListStep, WriteOutside\n")
    steps = ["my_steps_all:ListStep", "my_steps_all:WriteOutside"]
    engine = Engine(make_settings(tmp_path, tasks={"steps": steps}))
    try:
        job = run_job(engine, "write a file")
        worker = only_worker(engine, job)
        assert job.status.value == "completed", worker.exit_reason
        # Its program ran in the worker's sandbox: a path outside the checkout was not written
        if worker.sandbox in ("bubblewrap", "landlock"):
            assert worker.findings["write-outside"] == "failed" and not outside.exists()
        else:  # this machine cannot sandbox: the step's program ran as the worker's did, unconfined
            assert worker.findings["write-outside"] == "passed"
        # What it listed is the worker's directory (the file the simulated worker wrote in it)
        assert worker.files_created and set(worker.files_created) <= set(worker.findings["list-files"].split(",")), (
            worker.findings
        )
        log = gate_log(engine.workspace, worker, "step-list-files")  # run as a gate is, in the worker's sandbox
        assert "===== gate step-list-files passed =====" in log.read_text()
    finally:
        engine.shutdown(timeout=10)


# -- the worked example, installed with pip ------------------------------------------------------


def make_venv(tmp_path: Path) -> Path:
    """A venv of its own under ``tmp_path`` that sees the project's .venv packages (flask, ...)
    through a .pth file, so pip installs the example into it alone: the project's .venv is not touched."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "orchestrator_dev.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{ROOT}\n")
    # The venv's own setuptools (ensurepip's, too old to build a wheel) would hide the .venv's pinned one
    shutil.rmtree(Path(site) / "setuptools", ignore_errors=True)
    for info in Path(site).glob("setuptools-*.dist-info"):
        shutil.rmtree(info)
    return python


def make_host(path: Path) -> Path:
    path.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"], ["config", "user.name", "T"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README.md").write_text("the host\n")
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "base"], cwd=path, check=True)
    return path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_example_installed_with_pip_runs_a_real_job_on_a_repository(tmp_path):
    # Given the example installed with pip into a venv of its own, as docs/plugins.md says (built by the
    # setuptools requirements-dev.txt pins, which the venv sees through its .pth: nothing fetched),
    # and its own tests passing there
    python = make_venv(tmp_path)
    example = shutil.copytree(EXAMPLE, tmp_path / "example", ignore=shutil.ignore_patterns("__pycache__"))  # pip builds in it
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(example)]
    built = subprocess.run(pip, capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    found = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(sorted(e.name for e in m.entry_points(group='orchestrator.worker_kinds')))",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert found.stdout.strip() == "['local-command']"
    ran = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'example-tests'}",
            str(example / "tests"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    # And a server of that venv whose config.yaml chooses the kind, its program a script of this machine
    host = make_host(tmp_path / "host")
    agent = tmp_path / "my-agent"
    agent.write_text('#!/bin/sh\nprintf "%s\\nsecond line\\n" "$1" > notes.md\necho "my-agent wrote notes.md"\n')
    agent.chmod(0o755)
    served = served_home(
        tmp_path,
        host,
        worker="orchestrator:\n  worker: local-command\n  planner: heuristic\n"
        f"workers:\n  kinds:\n    local-command:\n      command: {json.dumps(str(agent))}\n",
        python=str(python),
        env={"ORCHESTRATOR_NO_VENV_REEXEC": "1"},
    )
    home, url = served.home, served.url
    server = served.start(log=tmp_path / "server.log", timeout=60)
    try:
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        # When a job is sent
        headers = {"X-API-Key": API_KEY}
        job = requests.post(
            f"{url}/api/v1/orchestrate", json={"request": "write the release notes"}, headers=headers, timeout=30
        ).json()
        done = requests.get(f"{url}/api/v1/jobs/{job['job_id']}/wait", params={"timeout": 60}, headers=headers, timeout=90).json()
        # Then the kind's program did the work, the example's step counted it, and it is on the result branch
        assert done["status"] == "completed", json.dumps(done)[:3000]
        (record,) = [json.loads(p.read_text()) for p in (home / "workspace").glob(f"job_{job['job_id']}/state/workers/*.json")]
        assert record["kind"] == "local-command"
        assert record["findings"] == {"changed-lines": "2 lines in 1 changed file(s)"}
        shown = subprocess.run(
            ["git", "show", f"orchestrator/{job['job_id']}/result:notes.md"], cwd=host, capture_output=True, text=True, check=True
        )
        assert shown.stdout == "write the release notes\nsecond line\n"
        said = "".join(p.read_text() for p in (home / "logs").glob("*.log"))
        assert "plugin: worker kind local-command from entry point 'local-command' of orchestrator-local-command 0.1.0" in said
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- forges ----------------------------------------------------------------------------------

FORGE_MODULE = """
    import dataclasses

    from orchestrator.delivery import forge
    from orchestrator.delivery.pull_requests import Forge

    class Gitea(Forge):
        # Gitea answers GitHub's pulls endpoints: it proposes through them, under its own name.
        name = "gitea"

        def propose(self, project, proposal, http=None):
            return forge.propose(dataclasses.replace(project, forge="github"), proposal, http)
"""


@pytest.mark.slow
def test_a_forge_named_by_dotted_path_proposes_the_result_and_records_its_name(tmp_path, monkeypatch):
    from . import mock_forge_server
    from .helpers.worktree import git, host_engine, make_host

    site = tmp_path / "site"
    site.mkdir()
    (site / "my_forges.py").write_text(textwrap.dedent(FORGE_MODULE))
    monkeypatch.syspath_prepend(str(site))
    host, folder = make_host(tmp_path)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(host, "remote", "add", "origin", str(remote))
    monkeypatch.setenv("TEST_FORGE_TOKEN", "tok-0123456789")
    server = mock_forge_server.start()
    try:
        g = {"isolation": "worktree", "push": "origin", "pull_request": "my_forges:Gitea", "forge_api_url": server.url}
        engine = host_engine(folder, git={**g, "forge_repo": "me/app", "forge_token_env": "TEST_FORGE_TOKEN"})
        try:
            job = run_job(engine, tasks=["echo one > a.txt"])
        finally:
            engine.shutdown(timeout=10)
        (post,) = [c for c in server.calls if c.method == "POST"]
        assert post.path == "/repos/me/app/pulls" and post.body["draft"] is True
        assert job.publish.pull_request is not None and job.publish.pull_request.forge == "gitea"
    finally:
        mock_forge_server.stop(server)
        pull_requests.FORGES.pop("my_forges:Gitea", None)


def test_a_forge_plugin_without_its_token_variable_or_taking_a_shipped_name_is_refused(installed, tmp_path, monkeypatch):
    site = tmp_path / "forge-site"
    site.mkdir()
    (site / "my_forges.py").write_text(textwrap.dedent(FORGE_MODULE))
    monkeypatch.syspath_prepend(str(site))
    said = start_fails(tmp_path, git={"pull_request": "my_forges:Gitea"})
    assert "git.pull_request" in said and "set git.forge_token_env" in said
    said = start_fails(tmp_path, git={"pull_request": "my_forges:Nope", "forge_token_env": "T"})
    assert "AttributeError" in said and "correct git.pull_request" in said
    installed("fake-github", "[orchestrator.forges]\ngithub = my_forges:Gitea\n")
    said = start_fails(tmp_path)
    assert "plugin 'github'" in said and "a forge the orchestrator ships" in said and "uninstall fake-github" in said
