"""``python -m orchestrator``: run, status, logs and config, as real subprocesses on a temp home."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
import yaml
from waitress import wasyncore

from orchestrator.cli.server import embedded_server

from .conftest import ROOT

pytestmark = pytest.mark.slow

API_KEY = "k3y-0123456789abcdefghijklmnopqr"  # 32 characters
REST_API = "Build a REST API with authentication, user management, and data CRUD operations"
SHOP = "Build an e-commerce site with frontend, backend with auth, orders and payments, and database"


def write_config(home, **simulated):
    """config.yaml in ``home``: simulated workers, fast timings, an API key, and any simulated.* knobs."""
    data = {
        "orchestrator": {"worker": "simulated"},
        "simulated": {"duration": 0.05, **simulated},
        "workers": {"retry_backoff": 0.05},
        "api": {"api_key": API_KEY},
    }
    (home / "config.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return home


def cli_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    return {**env, "ORCHESTRATOR_HOME": str(home)}


def cli(home, *args, timeout=60):
    """Run the CLI with ``home`` as its orchestrator folder (config.yaml and workspace/)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_id_of(result):
    match = re.search(r"^job ([0-9a-f]{12}): ", result.stdout, re.M)
    assert match, result.stdout + result.stderr
    return match.group(1)


def run_json(home, *args):
    result = cli(home, "run", *args, "--json")
    return result, json.loads(result.stdout)


@pytest.fixture
def home(tmp_path):
    return write_config(tmp_path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A home holding one completed three-worker job, and that job's id (read-only for tests)."""
    home = write_config(tmp_path_factory.mktemp("home"))
    result = cli(home, "run", REST_API)
    assert result.returncode == 0, result.stderr
    return home, job_id_of(result)


# -- run ----------------------------------------------------------------------------


def test_run_output_names_the_job_three_subtasks_and_an_existing_report(home):
    result = cli(home, "run", REST_API)
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"^job [0-9a-f]{12}: 3 subtask\(s\) \(heuristic planner\), worker kind simulated\ngoal: Build a REST API$",
        result.stdout,
        re.M,
    )  # the goal is a field, shown once (no " for: " on each task)
    report = re.search(r"^report: (.+FINAL_RESULT\.md)$", result.stdout, re.M)
    assert report and os.path.isfile(report.group(1))
    assert "completed: 3/3 workers succeeded" in result.stdout


def test_run_without_a_tty_prints_one_line_per_worker_state_change(home):
    result = cli(home, "run", REST_API)
    changes = re.findall(r"^\[ *[0-9.]+s\] (depth_0_worker_\d+) +(\w+)", result.stdout, re.M)
    by_worker: dict[str, list[str]] = {}
    for worker, state in changes:
        by_worker.setdefault(worker, []).append(state)
    assert sorted(by_worker) == ["depth_0_worker_1", "depth_0_worker_2", "depth_0_worker_3"]
    for worker, states in by_worker.items():
        assert len(states) == len(set(states)), f"{worker} repeated a state: {states}"
        assert states[-1] == "success", worker
    assert "\x1b[" not in result.stdout  # no redraw codes when not a terminal


def test_run_json_prints_the_status_document_shape(home):
    result, doc = run_json(home, "x", "--tasks", "a", "b")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{12}", doc["job_id"]) and doc["status"] == "completed"
    tasks = doc["results"]["tasks"]
    assert [t["worker_id"] for t in tasks] == ["worker_1", "worker_2"]
    for task in tasks:
        assert task["status"] == "success" and "RESULT: wrote" in task["output"]
        assert len(task["files_created"]) == 1
    assert doc["results"]["workspace"] == str(home.resolve() / "workspace" / f"job_{doc['job_id']}")
    assert os.path.isfile(doc["results"]["final_report"])


def test_run_json_keeps_progress_off_stdout(home):
    result, _ = run_json(home, "x", "--tasks", "a")
    assert "depth_0_worker_1" in result.stderr


# -- exit codes ---------------------------------------------------------------------


def test_a_partial_job_exits_3(tmp_path):
    home = write_config(tmp_path, fail_matching="beta")
    result, doc = run_json(home, "two tasks", "--tasks", "alpha", "beta", "--retries", "0")
    assert result.returncode == 3
    assert doc["status"] == "partial"
    assert [t["status"] for t in doc["results"]["tasks"]] == ["success", "failed"]


def test_a_failed_job_exits_1(tmp_path):
    home = write_config(tmp_path, fail_matching=".")
    result, doc = run_json(home, "two tasks", "--tasks", "alpha", "beta", "--retries", "0")
    assert result.returncode == 1
    assert doc["status"] == "failed"


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", ""], "request is empty"),
        (["run", "x", "--workers", "0"], "config.max_workers=0 is out of range"),
        (["run", "x", "--workers", "abc"], "argument --workers: invalid int value: 'abc'"),
        (["run", "x", "--worker", "nope"], "config.worker='nope' is not allowed"),
        (["run", "x", "--workers", "99"], "above this server's limit 16"),
        ([], "usage: orchestrator"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(home, args, message):
    result = cli(home, *args)
    assert result.returncode == 2
    assert message in (result.stderr if args else result.stdout)
    assert not list((home / "workspace").glob("job_*"))


def test_a_bad_config_file_is_a_usage_error(tmp_path):
    (tmp_path / "config.yaml").write_text("workers:\n  max_worker: 3\n")
    result = cli(tmp_path, "config")
    assert result.returncode == 2
    assert "unknown key 'workers.max_worker'" in result.stderr


BROKEN_CONFIGS = {
    "not UTF-8": (b"api:\n  port: 8001  # caf\xe9\n", "is not UTF-8 text: byte 0xe9 on line 2"),
    "1000 deep": (b"api:\n  allowed_hosts: " + b"[" * 1000 + b"]" * 1000 + b"\n", "more than 32 levels deep"),
    "40 deep": (b"api:\n  allowed_hosts:\n" + b"".join(b"  " * (i + 2) + b"-\n" for i in range(40)), "more than 32 levels deep"),
    "lone surrogate": (b'api:\n  host: "a\\ud800"\n', "api.host contains a lone surrogate (\\ud800)"),
}
ENTRY_POINTS = {
    "config": [sys.executable, "-m", "orchestrator", "config"],
    "api_server.py": [sys.executable, str(ROOT / "api_server.py")],
    "quick-start.sh": [str(ROOT / "quick-start.sh"), "a request"],
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("broken", BROKEN_CONFIGS)
def test_a_config_yaml_that_is_not_utf8_or_nests_too_deep_is_one_error_line_and_exit_2(tmp_path, broken, entry):
    """Each was a traceback (UnicodeDecodeError, RecursionError) or, at 40 levels, a value error quoting it all."""
    if entry == "quick-start.sh" and not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("quick-start.sh needs the folder's .venv (./install.sh)")
    text, words = BROKEN_CONFIGS[broken]
    (tmp_path / "config.yaml").write_bytes(text)
    result = subprocess.run(ENTRY_POINTS[entry], cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'config.yaml'} ") and words in lines[0], lines


# -- recursion ------------------------------------------------------------------------


def test_a_compound_request_starts_a_child_job(home):
    # Given a request whose "backend with auth, orders and payments" part splits again
    run = cli(home, "run", SHOP)
    assert run.returncode == 0, run.stderr
    job_id = job_id_of(run)
    # Then its status shows the worker that recursed, with its child's results
    doc = json.loads(cli(home, "status", job_id, "--json").stdout)
    recursed = [t for t in doc["results"]["tasks"] if t["status"] == "recursive_success"]
    assert len(recursed) == 1
    assert recursed[0]["child_job_id"] == f"{job_id}-c1"
    assert len(recursed[0]["child_results"]) >= 2
    assert all(r["depth"] == 1 and r["status"] == "success" for r in recursed[0]["child_results"])
    assert (home / "workspace" / f"job_{job_id}" / "depth_1").is_dir()


# -- status ---------------------------------------------------------------------------


def test_status_prints_a_table_with_every_worker(finished):
    home, job_id = finished
    result = cli(home, "status", job_id)
    assert result.returncode == 0
    assert f"job {job_id}  COMPLETED  depth 0" in result.stdout
    for name in ("worker_1", "worker_2", "worker_3"):
        assert re.search(rf"^{name} +success ", result.stdout, re.M), name


def test_status_json(finished):
    home, job_id = finished
    doc = json.loads(cli(home, "status", job_id, "--json").stdout)
    assert doc["job_id"] == job_id and doc["status"] == "completed"
    assert doc["progress"]["succeeded"] == doc["progress"]["total"] == 3


@pytest.mark.parametrize(
    "job_id, message",
    [
        ("000000000000", "job 000000000000 not found"),
        ("../../etc", "invalid job id"),
        ("3F9A2C7B1D0E", "invalid job id"),
    ],
)
def test_status_of_a_bad_job_id_exits_2(finished, job_id, message):
    result = cli(finished[0], "status", job_id)
    assert result.returncode == 2
    assert message in result.stderr


# -- logs -----------------------------------------------------------------------------


def test_logs_prints_a_workers_log(finished):
    home, job_id = finished
    result = cli(home, "logs", job_id, "worker_1")
    assert result.returncode == 0
    assert "===== attempt 1/" in result.stdout
    assert "RESULT: wrote" in result.stdout


def test_logs_n_prints_the_last_lines(finished):
    home, job_id = finished
    result = cli(home, "logs", job_id, "worker_1", "-n", "2")
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[-1].startswith("===== attempt 1 exited with code 0")


def test_logs_with_a_negative_line_count_is_a_usage_error(finished):
    home, job_id = finished
    assert cli(home, "logs", job_id, "worker_1", "-n", "-1").returncode == 2


@pytest.mark.parametrize(
    "worker, message", [("worker_9", "worker depth_0_worker_9 not found"), ("../worker_1", "invalid worker id")]
)
def test_logs_of_an_unknown_worker_exits_2(finished, worker, message):
    home, job_id = finished
    result = cli(home, "logs", job_id, worker)
    assert result.returncode == 2
    assert message in result.stderr


def test_logs_follow_exits_once_the_worker_ends(tmp_path):
    # Given a job whose only worker takes a couple of seconds
    home = write_config(tmp_path, duration=2.0)
    run = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "x", "--tasks", "slow"],
        cwd=ROOT,
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        job_id = re.match(r"job ([0-9a-f]{12}):", run.stdout.readline()).group(1)
        # When its log is followed while it runs
        assert run.poll() is None
        result = cli(home, "logs", job_id, "depth_0_worker_1", "--follow", timeout=30)
    finally:
        run.communicate(timeout=30)
    # Then the whole attempt was printed, up to its end, and the command returned
    assert result.returncode == 0
    assert result.stdout.count("===== attempt 1/") == 1
    assert "===== attempt 1 exited with code 0" in result.stdout


# -- config ---------------------------------------------------------------------------


def test_config_prints_the_settings_without_the_api_key(home):
    result = cli(home, "config")
    assert result.returncode == 0
    assert API_KEY not in result.stdout
    data = yaml.safe_load(result.stdout)
    assert data["api"]["api_key"] == "(set)"
    assert data["orchestrator"]["worker"] == "simulated" and data["simulated"]["duration"] == 0.05
    assert result.stdout.startswith(f"# applied: defaults < {home.resolve() / 'config.yaml'}")


def test_config_flag_names_another_file(home, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("workers:\n  max_workers: 7\n")
    data = yaml.safe_load(cli(home, "--config", str(other), "config").stdout)
    assert data["workers"]["max_workers"] == 7
    assert data["api"]["api_key"] == ""  # home's config.yaml was not read


# -- the embedded API of `run` ---------------------------------------------------------


def test_the_embedded_api_closes_without_a_thread_traceback(engine, monkeypatch):
    # Given the waitress thread paused just before select() until the server is closed
    # (the window a quick usage error of `run` hits: select() then fails with EBADF)
    real_select, closed, errors, paused = wasyncore.select.select, threading.Event(), [], []

    def select_after_close(*args):
        if threading.current_thread().name == "waitress":
            paused.append(closed.wait(5))
        return real_select(*args)

    monkeypatch.setattr(wasyncore.select, "select", select_after_close)
    monkeypatch.setattr(threading, "excepthook", lambda hook_args: errors.append(hook_args.exc_value))
    running = embedded_server(engine, engine.settings)
    close_server = running.server.close
    monkeypatch.setattr(running.server, "close", lambda: (close_server(), closed.set()))
    # When `run` closes it
    running.close()
    # Then the thread ended quietly
    assert paused and paused[0] is True, "the race window was not reached"
    assert errors == [] and not running.thread.is_alive()


def test_run_with_the_readmes_plan_file_runs_the_graph_in_order(home, tmp_path):
    from .helpers.readme import PAGES, fences

    plan = next(code for page in PAGES for _, lang, code in fences(page) if lang == "json" and '"depends_on": ["db"]' in code)
    path = tmp_path / "plan.json"
    path.write_text(plan, encoding="utf-8")
    result, doc = run_json(home, "Build a todo app", "--plan", str(path), "--on-failure", "stop")
    assert result.returncode == 0, result.stderr
    assert doc["status"] == "completed", doc
    from orchestrator.workspace.layout import Workspace

    _, workers = Workspace(home / "workspace").load_tree(doc["job_id"])
    by_id = {w.task_id: w for w in workers}
    assert set(by_id) == {"db", "api", "ui", "docs"} and by_id["api"].depends_on == ["db"]
    assert by_id["db"].unblocked == ["api"] and sorted(by_id["api"].unblocked) == ["docs", "ui"]
    assert by_id["api"].started_at >= by_id["db"].ended_at
    assert min(by_id["ui"].started_at, by_id["docs"].started_at) >= by_id["api"].ended_at


def test_run_with_a_plan_file_that_is_not_a_list_says_what_it_expects(home, tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("just: words\n", encoding="utf-8")
    result = cli(home, "run", "x", "--plan", str(path))
    assert result.returncode != 0 and "expected a list of subtasks" in result.stderr
    path.write_text("- {id: a, task: x, depends_on: [a]}\n", encoding="utf-8")
    result = cli(home, "run", "x", "--plan", str(path))
    assert result.returncode != 0 and "depends on itself" in result.stderr
