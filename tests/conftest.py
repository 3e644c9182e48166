"""Shared fixtures: a settings object on a temp workspace, an engine, the fake CLI."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from orchestrator import protocol
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine

from .redisserver import fresh_redis, redis_server, unique_prefix  # noqa: F401 (fixtures, for every test file)

# The helpers test files share (tests/helpers/; none imported yet): their asserts explain a failure as a test's do.
pytest.register_assert_rewrite("tests.helpers")

# An illegal status change raises (states.IllegalTransition) in the tests and in every server
# and command they start (they inherit this), instead of being logged and refused.
os.environ[protocol.STRICT_STATES] = "1"

FIXTURES = Path(__file__).parent / "fixtures"
FAKE_CLI = str(FIXTURES / "fake_cli.py")
ROOT = Path(__file__).resolve().parent.parent


def make_settings(tmp_path: Path, **sections):
    """Settings on a temp workspace, fast timings, and any section overrides."""
    overrides = {
        "workers": {"retry_backoff": 0.05, "retry_backoff_max": 0.2, "kill_grace": 0.5, "default_timeout": 30},
        "simulated": {"duration": 0.05},
        "orchestrator": {"worker": "simulated"},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(base_dir=tmp_path, environ={}, overrides=overrides)


def observed(tmp_path: Path) -> Path:
    """A folder outside the host where a test's worker, setup or teardown reports (a sandboxed
    worker may write there only if it is in its ``workers.sandbox_writable``)."""
    folder = tmp_path / "observed"
    folder.mkdir(exist_ok=True)
    return folder


def sleep_marker(k: int) -> str:
    """A ``sleep`` duration (100-199 s) that only this test process uses for ``k``: CI runs the
    cgroup and sandbox tests as root and as an ordinary user at once, and a fixed duration let one
    run's test see the other's leftover sleep as its own."""
    return f"{100 + k}.{os.getpid():07d}"


def processes_with(marker: str) -> list[int]:
    """Live processes on the host whose command line holds ``marker`` (a tagless one too, in any PID namespace)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def fake_command(*args: str) -> list[str]:
    """An argv template running the fake CLI; by default the subtask picks the mode."""
    return [sys.executable, FAKE_CLI, *(args or ("{task}",))]


# A test that starts a real Redis, PostgreSQL or Chromium is marked so by the fixture it asks for
# (pyproject's markers), and slow with it: the default run, the fast tier, leaves it to CI.
SERVER_FIXTURES = {"redis_server": "redis", "fresh_redis": "redis", "postgres_server": "postgres", "browser": "browser"}


# The longest tests of the slow tier and of the real-CLI and chaos run (each a minute or more on CI's
# loaded machine), run first: CI runs the slow tier on several pytest-xdist workers (.ci/run), where
# one of them started near the end would run alone after the others are done. A prefix of node ids; a
# test renamed away from here only loses its place at the front.
LONGEST_FIRST = (
    "tests/chaos/test_server_kill.py::test_server_killed_at_random_points_200_times",
    "tests/test_security.py::test_schemathesis_finds_no_server_error_and_no_failure",
    "tests/test_tasks_api.py::test_kage_bunshins_curl_line_with_the_real_claude_and_gemini_clis",
    "tests/test_real_aider.py::test_rate_limit_is_transient",
    "tests/test_disk.py::test_a_worktree_job_on_a_full_disk",
    "tests/test_security.py::test_schemathesis_with_a_worker_credential",
    "tests/test_real_opencode.py::test_a_hanging_model_call_ends_in_timeout",
    "tests/test_real_aider.py::test_a_hanging_model_call_ends_in_timeout",
    "tests/test_real_gemini.py::test_rate_limit_is_classified_transient",
    "tests/test_real_gemini.py::test_a_hanging_model_call_ends_in_timeout",
    "tests/test_dashboard.py::test_a_500_worker_tree_renders_collapsed",
    "tests/test_commands.py::test_check_status_exits_as_quick_start_does",
    "tests/test_guide_path.py::test_the_guides_blocks_take_a_project",
    "tests/test_stopped_server.py::test_a_stopped_server_times_out_by_the_workers_own_clock",
)


def _longest_first(item: pytest.Item) -> int:
    return next((at for at, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        for fixture in sorted(SERVER_FIXTURES.keys() & set(getattr(item, "fixturenames", ()))):
            item.add_marker(SERVER_FIXTURES[fixture])
            item.add_marker("slow")
    items.sort(key=_longest_first)  # stable: every other test keeps its place (each xdist worker sorts alike)


@pytest.fixture(scope="session", autouse=True)
def private_temp_folder(tmp_path_factory):
    """TMPDIR (and TMP, TEMP, XDG_STATE_HOME) for the whole run, and every process it starts, is a folder under
    pytest's base temp: what the tests, servers and real CLIs leave in "the temp folder" (claude's
    claude-<uid>/ and cc-socks/, gemini's error reports...) goes when pytest removes that base
    (pyproject: tmp_path_retention_policy), instead of piling up in the system's."""
    import os
    import tempfile

    path = str(tmp_path_factory.mktemp("tmp"))
    saved = {name: os.environ.get(name) for name in ("TMPDIR", "TMP", "TEMP", "XDG_STATE_HOME")}
    os.environ.update({name: path for name in ("TMPDIR", "TMP", "TEMP")})
    # The state folder too: where a worker's checkout lives under Landlock (git.checkouts_root's default,
    # workspace/checkout_place.py), not the user's ~/.local/state
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    yield path
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    tempfile.tempdir = None


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def make_engine(tmp_path):
    engines = []

    def factory(**sections):
        engine = Engine(make_settings(tmp_path, **sections))
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.shutdown(timeout=10)


@pytest.fixture
def engine(make_engine):
    return make_engine()


def wait_until(predicate, timeout=15, what="condition"):
    """Poll ``predicate`` until it returns something true, and return that; fail the test after
    ``timeout`` seconds, saying what it returned last."""
    import time

    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout}s (last: {found!r})")


# Workers that say their own pids (and their child's) in a file before they wait: a test learns who
# they are even when a deadline ends them before its first look at the process table.
DEADLINE_SCRIPTS = [
    ("echo $$ > pids.tmp && mv pids.tmp pids; exec sleep 60", -signal.SIGTERM),
    # It and its child ignore SIGTERM: SIGKILL after the grace, the child with the rest of its group.
    ("trap '' TERM; sleep 60 & echo $$ $! > pids.tmp && mv pids.tmp pids; wait", -signal.SIGKILL),
]


def started_members(folder: Path, exit_file: Path) -> dict[int, str | None]:
    """The pids a DEADLINE_SCRIPTS worker wrote in ``folder``, each with its start (None: already ended)."""
    from orchestrator.process.procscan import process_start_id

    pids = folder / "pids"
    wait_until(pids.exists, what=f"the worker's pid file (exit file: {exit_file.read_text() if exit_file.exists() else 'none'})")
    return {int(pid): process_start_id(int(pid)) for pid in pids.read_text().split()}


def warm_supervisor(runner, folder: Path, tag: str) -> None:
    """Start ``runner``'s supervisor with a first worker (``true``) and wait for its end: under load that
    start alone can outlast a short deadline, so a test starts its clock after it."""
    first = runner.spawn(
        ["true"],
        cwd=folder,
        env={"PATH": os.environ["PATH"]},
        log_path=folder / f"{tag}.log",
        tag=tag,
        exit_file=folder / f"{tag}.exit",
    )
    assert first.supervised
    assert runner.wait(first, 30) == 0


def find_cli(name: str) -> str | None:
    """A real AI CLI: the one tests/install_cli.sh put in .cli/, else one on PATH."""
    import os
    import shutil

    local = ROOT / ".cli" / "node_modules" / ".bin" / name
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def only_worker(engine, job):
    """The one worker of ``job`` (its tree may hold others)."""
    _, workers = engine.queries.snapshot(job.root_id)
    (worker,) = [w for w in workers if w.job_id == job.id]
    return worker


def explain(engine, job, mock=None) -> str:
    """What to print when a test (against a mock model server) fails: the tree's logs and the mock's log."""
    root = engine.workspace.job_dir(job.root_id)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((root / "logs").glob("*.log")))
    return logs if mock is None else f"{logs}\n--- mock\n{mock.summary()}"


def run_job(engine, request="job", tasks=None, config=None, timeout=60):
    """Submit and wait; fail the test if the job does not end in time."""
    job = engine.submission.submit(request, config, tasks)
    done = engine.queries.wait(job.id, timeout)
    assert done.status.terminal, f"job {job.id} still {done.status.value} after {timeout}s"
    return done


def three_files_written(engine, mock):
    """The real-CLI tests' first scenario: three workers ("Write a.txt", "Write b.txt", "Write
    c.txt"), each of which must write exactly its file with its task as the content. Returns
    (job, workers, why) for each CLI's own checks."""
    from orchestrator.models import JobStatus, WorkerStatus

    job = run_job(engine, "three files", tasks=["Write a.txt", "Write b.txt", "Write c.txt"], timeout=240)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED, why
    _, workers = engine.queries.snapshot(job.root_id)
    assert len(workers) == 3
    for worker in workers:
        name = worker.task.split()[-1]
        assert worker.status is WorkerStatus.SUCCESS, why
        assert worker.files_created == [name], why
        folder = engine.workspace.worker_dir(job.root_id, 0, worker.name)
        assert (folder / name).read_text() == f"{worker.task}\n", why
    return job, workers, why


def three_files_in_worktrees(hosted_at_root, mock, **sections):
    """The real-CLI tests' first scenario in worktree isolation, the orchestrator's folder inside
    a host repository and the server started from its root (``hosted_at_root``):
    three_files_written, each file its worker's one change, and only_in_their_worktrees.
    Returns (engine, job, workers, why)."""
    from .helpers.worktree import snapshot

    host, folder, make = hosted_at_root
    before = snapshot(host, folder)
    engine = make(**sections)
    job, workers, why = three_files_written(engine, mock)
    for worker in workers:
        assert worker.files_changed == [{"path": worker.task.split()[-1], "change": "added"}], why
    only_in_their_worktrees(hosted_at_root, engine, job, before, why)
    return engine, job, workers, why


def only_in_their_worktrees(hosted, engine, job, before, why=""):
    """Each file a worker of ``job`` added (worktree isolation, in the ``hosted`` host) is in its
    own worktree and committed on its own branch, and no file of that name is anywhere else under
    the test's folder (the host's tree, another worktree, the workspace, the CLIs' homes); the
    host is exactly as it was (helpers.worktree.snapshot, taken ``before``). A job whose
    ``workers.sandbox`` is on or off says each worker ran in bubblewrap (its network a namespace of its
    own, the proxy its one way out), or unconfined."""
    from .helpers.worktree import git, snapshot

    host, folder, _ = hosted
    assert job.config.isolation == "worktree", why
    confined = {"on": "bubblewrap", "off": "none"}.get(job.config.sandbox)
    if confined == "bubblewrap":  # workers.sandbox_network: allow, the default: the CLI reached its mock through the proxy
        assert any("network through the orchestrator's proxy" in note for note in job.notes), job.notes
    for worker in engine.queries.snapshot(job.root_id)[1]:
        own = engine.workspace.worker_dir(job.root_id, worker.depth, worker.name)
        assert confined is None or worker.sandbox == confined, why
        assert worker.branch == f"orchestrator/{job.root_id}/{worker.name}", why
        assert worker.files_changed and all(f["change"] == "added" for f in worker.files_changed), why
        for path in (f["path"] for f in worker.files_changed):
            assert git(host, "show", f"{worker.branch}:{path}") == (own / path).read_text(), why
            assert sorted(p for p in host.parent.rglob(Path(path).name) if p.is_file()) == [own / path], why
    assert snapshot(host, folder) == before, why


def hang_ends_in_timeout(engine, mock, wait=90):
    """The real-CLI tests' hang scenario: a worker whose model call never answers is ended by our
    timeout after one attempt, and nothing carrying its tag is left. Returns (worker, why)."""
    from orchestrator.models import WorkerStatus

    job = engine.submission.submit("Say hi", None, ["Say hi"])
    tags = engine.worker_tags(job.id)
    done = engine.queries.wait(job.id, wait)
    worker = only_worker(engine, done)
    why = explain(engine, done, mock)
    assert worker.status is WorkerStatus.TIMEOUT, why
    assert len(worker.attempts) == 1 and worker.attempts[0].end_reason == "timeout", why
    assert engine.runner.tagged(tags[0]) == []
    return worker, why


API_KEY = "test-key-0123456789abcdefghijklmnop"


@pytest.fixture
def make_live(tmp_path):
    """Start a real waitress server on an ephemeral 127.0.0.1 port with the given settings."""
    from orchestrator.cli.server import start_in_thread

    started = []

    def factory(**sections):
        sections.setdefault("api", {})
        sections["api"] = {"api_key": API_KEY, "host": "127.0.0.1", "port": 0, **sections["api"]}
        settings = make_settings(tmp_path, **sections)
        engine = Engine(settings)
        server = start_in_thread(settings, engine, port=0)
        started.append((server, engine))
        return Live(server.url, API_KEY, engine)

    yield factory
    for server, engine in started:
        engine.shutdown(timeout=10)
        server.close()


class Live:
    """A running server: its URL, admin key and engine, with small request helpers."""

    def __init__(self, url, key, engine):
        self.url, self.key, self.engine = url, key, engine

    def call(self, method, path, key=None, **kwargs):
        import requests

        headers = kwargs.pop("headers", {})
        headers.setdefault("X-API-Key", self.key if key is None else key)
        if headers["X-API-Key"] == "":
            del headers["X-API-Key"]
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.url + path, headers=headers, **kwargs)

    def submit(self, key=None, **body):
        return self.call("POST", "/api/v1/orchestrate", key=key, json=body)

    def wait(self, job_id, timeout=60):
        """The job's document once it ended; fails the test if it has not within ``timeout`` seconds."""
        import time

        # The server holds each request up to ``timeout`` or its api.long_poll_max, whichever is less
        # (tests set that to 1 s): asked again until the job ends or ``timeout`` has passed (the client's
        # own timeout is longer than the server's hold)
        deadline = time.monotonic() + timeout
        while True:
            doc = self.call("GET", f"/api/v1/jobs/{job_id}/wait?timeout={timeout}", timeout=timeout + 30).json()
            if doc["status"] in ("completed", "partial", "failed", "cancelled") or time.monotonic() >= deadline:
                break
        assert doc["status"] in ("completed", "partial", "failed", "cancelled"), doc["status"]
        return doc


@pytest.fixture
def live(make_live):
    return make_live()


@pytest.fixture
def hosted(tmp_path):
    """A host git repository holding an orchestrator folder (helpers.worktree.make_host), and a
    factory of engines in that folder (helpers.worktree.host_engine), shut down at the end."""
    from .helpers.worktree import host_engine, make_host

    host, folder = make_host(tmp_path)
    engines = []

    def factory(**sections: dict):
        engine = host_engine(folder, **sections)
        engines.append(engine)
        return engine

    yield host, folder, factory
    for engine in engines:
        engine.shutdown(timeout=10)


@pytest.fixture(params=["off", "on"], ids=["unsandboxed", "sandboxed"])
def hosted_at_root(request, hosted, monkeypatch):
    """``hosted``, with the server started from the host repository's root as a user starts it
    (``cd repo && tools/orch/orchestrator.sh``): its cwd and ``$PWD`` are the host's root, which
    every worker inherits, so a CLI that takes its directory from ``$PWD`` rather than from its
    own cwd works in the user's checkout. Each test runs twice: ``workers.sandbox`` off, and on
    (bubblewrap; on refuses to run a worker unconfined)."""
    host, folder, factory = hosted
    monkeypatch.chdir(host)
    monkeypatch.setenv("PWD", str(host))

    def make(**sections):
        return factory(**{**sections, "workers": {"sandbox": request.param, **sections.get("workers", {})}})

    return host, folder, make
