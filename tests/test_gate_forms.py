"""Gates as a user writes them: ``env``, ``cwd``, ``shell: true``, a test
runner that ran no test (``allow_no_tests``), and gate output made plain before a worker's
retry prompt reads it. Real gate processes in real worktrees of a repository made here (a real
pytest among them); every test that runs a job checks that the user's repository is as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.plaintext import plain
from orchestrator.quality.testruns import ran_no_tests
from orchestrator.reports.taskgraph import gate_summary

from .conftest import API_KEY, run_job, wait_until
from .helpers.gates import gate, gated, served  # noqa: F401 (gated, served: the fixtures)
from .helpers.worktree import snapshot, workers

pytestmark = pytest.mark.slow

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]  # the project's venv: pytest is there


def gate_output(engine, job, record) -> str:
    return (engine.workspace.job_dir(job.id) / record.gates[0].log_path).read_text()


# -- env and cwd ------------------------------------------------------------------------------------


def test_a_gates_env_reaches_a_real_python_that_imports_from_src_without_colour_forced(gated):  # noqa: F811 (the imported fixture)
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make(workers={"env": {"FORCE_COLOR": "1", "CLICOLOR_FORCE": "1"}})  # the worker's env forces colour
    task = "mkdir -p src/mylib && echo 'VALUE = 42' > src/mylib/__init__.py"
    probe = "import mylib, os; print('value', mylib.VALUE); print(sorted((k, v) for k, v in os.environ.items() if 'COLO' in k or k == 'TERM'))"
    imports = gate("imports", [sys.executable, "-c", probe], env={"PYTHONPATH": "src", "EXTRA": 7})
    job = run_job(engine, "x", tasks=[task], config={"gates": [imports], "max_retries": 0})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.SUCCESS, w1.exit_reason
    assert w1.gates[0].status == "passed" and job.config.gates[0]["env"] == {"PYTHONPATH": "src", "EXTRA": "7"}
    output = gate_output(engine, job, w1)
    assert "value 42\n" in output
    seen = "[('CARGO_TERM_COLOR', 'never'), ('CLICOLOR', '0'), ('NO_COLOR', '1'), ('PY_COLORS', '0'), ('TERM', 'dumb')]"
    assert seen in output  # FORCE_COLOR and CLICOLOR_FORCE are gone
    # Without the env the same gate fails: PYTHONPATH is what made the import work
    bare = gate("imports", [sys.executable, "-c", "import mylib"])
    job = run_job(engine, "x", tasks=[task], config={"gates": [bare], "max_retries": 0})
    (w1,) = workers(engine, job).values()
    assert w1.gates[0].status == "failed" and "ModuleNotFoundError" in gate_output(engine, job, w1)
    assert snapshot(host, folder) == before


def test_a_gate_runs_in_its_cwd_and_a_cwd_linking_out_of_the_checkout_is_refused(gated, tmp_path):  # noqa: F811 (the imported fixture)
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    task = "mkdir -p sub && printf '#!/bin/sh\\necho in \"$(pwd)\"\\n' > sub/check.sh && chmod +x sub/check.sh"
    job = run_job(engine, "x", tasks=[task], config={"gates": [gate("here", ["./check.sh"], cwd="./sub/")]})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.SUCCESS and job.config.gates[0]["cwd"] == "sub"
    # in its sandbox the checkout is at the repository's own path (the project view): its sub there
    top = host if w1.sandbox == "bubblewrap" else engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert f"in {top / 'sub'}\n" in gate_output(engine, job, w1) and list(job.merge.merged) == ["worker_1"]
    # A link the worker made that leads out of its checkout: not followed, the gate fails closed
    outside = tmp_path / "outside"
    outside.mkdir()
    link = f"ln -s '{outside}' out && echo a > a.txt"
    job = run_job(engine, "x", tasks=[link], config={"gates": [gate("here", ["touch", "gate-was-here"], cwd="out")]})
    (w1,) = workers(engine, job).values()
    (entry,) = w1.gates
    assert entry.status == "not_started" and entry.passed is False
    assert entry.reason == f"its cwd 'out' leads out of the worker's checkout (a symbolic link to {outside.resolve()}); refused"
    assert w1.status is WorkerStatus.FAILED and job.merge is None and list(outside.iterdir()) == []
    # A cwd that is not there
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": [gate("here", ["true"], cwd="nowhere")]})
    (w1,) = workers(engine, job).values()
    assert w1.gates[0].reason == "its cwd 'nowhere' is not a folder in the worker's checkout" and job.merge is None
    assert snapshot(host, folder) == before


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("cwd", "/etc", "is not a folder inside the worker's checkout"),
        ("cwd", "../..", "is not a folder inside the worker's checkout"),
        ("cwd", "sub/../../x", "is not a folder inside the worker's checkout"),
        ("cwd", "~/x", "is not a folder inside the worker's checkout"),
        ("env", {"bad-name": "1"}, "is not a variable name"),
        ("env", {"ORCHESTRATOR_API_KEY": "x"}, "are the orchestrator's own"),
        ("env", {"X": ["a"]}, "must be a string of at most 8192 characters"),
        ("env", ["PYTHONPATH=src"], "must be a mapping of at most 64 variables"),
        ("shell", "yes", "must be true or false"),
        ("allow_no_tests", 1, "must be true or false"),
    ],
)
def test_bad_env_cwd_shell_and_allow_no_tests_in_config_yaml_are_refused_naming_the_field(tmp_path, field, value, said):
    entry = {"name": "tests", "run": ["pytest"], field: value}
    with pytest.raises(ConfigError, match=said) as caught:
        load_settings(base_dir=tmp_path, environ={}, overrides={"tasks": {"gates": [entry]}})
    assert caught.value.message.startswith(f"tasks.gates[0].{field}")


# -- shell ------------------------------------------------------------------------------------------


def test_a_shell_gate_runs_its_command_line_with_a_pipeline_and_a_string_without_shell_is_refused(gated):  # noqa: F811 (the imported fixture)
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    line = "test -f a.txt && printf 'one\\ntwo\\n' | tr a-z A-Z && echo \"$((6 * 7))\""
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": [gate("pipe", line, shell=True)]})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.SUCCESS and w1.gates[0].status == "passed"
    output = gate_output(engine, job, w1)
    assert f"===== gate pipe: {line} (attempt 1, " in output and "ONE\nTWO\n42\n" in output
    failing = run_job(engine, "x", tasks=["true"], config={"gates": [gate("pipe", "false && true || exit 4", shell=True)]})
    assert workers(engine, failing)["worker_1"].gates[0].reason == "exit code 4"
    with pytest.raises(ConfigError, match=r"to run 'pytest -q' through /bin/sh, add shell: true"):
        engine.submission.submit("x", {"gates": [gate("tests", "pytest -q")]}, ["true"])
    with pytest.raises(ConfigError, match="must be one command line"):
        engine.submission.submit("x", {"gates": [gate("tests", ["pytest", "-q"], shell=True)]}, ["true"])
    assert snapshot(host, folder) == before


def test_a_shell_gate_from_a_request_needs_the_admin_key(served):  # noqa: F811 (the imported fixture)
    url, engine = served

    def post(config: dict, key: str = API_KEY) -> requests.Response:
        body = {"request": "x", "tasks": ["echo a > a.txt"], "config": config}
        return requests.post(url + "/api/v1/orchestrate", json=body, headers={"X-API-Key": key}, timeout=30)

    shell_gate = {"name": "sh", "run": "echo from the admin && true", "shell": True}
    root = engine.submission.submit("x", None, ["sleep 30"])
    wait_until(lambda: workers(engine, root)["worker_1"].attempts, what="worker_1 started")
    worker_key = engine.credentials.issue(root.id, root.id, "worker_1")
    answer = post({"gates": [shell_gate]}, worker_key)  # a worker (a model's request) may not set one
    assert answer.status_code == 403, answer.text
    assert answer.json()["message"].startswith("config.gates is for a root job only (the admin key)")
    engine.cancel(root.id)
    engine.queries.wait(root.id, 30)
    answer = post({"gates": [shell_gate]})  # the admin key may: its own configuration
    assert answer.status_code == 202, answer.text
    done = engine.queries.wait(answer.json()["job_id"], 60)
    (w1,) = workers(engine, done).values()
    assert w1.gates[0].status == "passed" and "from the admin\n" in gate_output(engine, done, w1)
    answer = post({"gates": [{"name": "sh", "run": "pytest -q"}]})
    assert answer.status_code == 422 and "add shell: true" in answer.json()["message"]


# -- a test run that ran no test --------------------------------------------------------------------


def test_a_real_pytest_that_ran_no_tests_fails_closed_unless_the_gate_allows_it(gated):  # noqa: F811 (the imported fixture)
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    task = "mkdir -p empty && echo 'x = 1' > empty/notatest.py"
    job = run_job(engine, "x", tasks=[task], config={"gates": [gate("tests", PYTEST, cwd="empty")], "max_retries": 0})
    (w1,) = workers(engine, job).values()
    (entry,) = w1.gates
    said = 'ran no tests (pytest: "no tests ran", exit code 5)'
    assert entry.status == "no_tests" and entry.exit_code == 5 and entry.passed is False
    assert entry.reason == f"{said}; set allow_no_tests: true on the gate if that is expected"
    assert w1.status is WorkerStatus.FAILED and w1.error == f"gate tests {entry.reason}" and job.merge is None
    final = engine.workspace.final_report(job.id).read_text()
    assert f"it ended failed: gate tests {said}" in final
    assert gate_summary(w1.gates) == "tests ran no tests (exit 5)"  # the task graph's words
    allowed = gate("tests", PYTEST, cwd="empty", allow_no_tests=True)
    job = run_job(engine, "x", tasks=[task], config={"gates": [allowed]})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.SUCCESS and job.status is JobStatus.COMPLETED
    assert w1.gates[0].status == "passed" and w1.gates[0].reason == f"{said}; allowed by allow_no_tests"
    # A pytest that ran a test is judged by its exit code alone
    with_test = task + " && echo 'def test_one(): assert True' > empty/test_one.py"
    job = run_job(engine, "x", tasks=[with_test], config={"gates": [gate("tests", PYTEST, cwd="empty")]})
    entry = workers(engine, job)["worker_1"].gates[0]
    assert entry.status == "passed" and entry.exit_code == 0 and entry.reason == ""
    assert snapshot(host, folder) == before


def real_pytest(folder: Path, *extra: str) -> str:
    run = subprocess.run([*PYTEST, *extra], cwd=folder, capture_output=True, text=True, env={"PY_COLORS": "1"})
    return run.stdout + run.stderr


def test_ran_no_tests_reads_the_runners_own_words(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "test_a.py").write_text("def test_a():\n    assert True\n")
    empty, some = real_pytest(tmp_path / "empty", "-v"), real_pytest(tmp_path / "some", "-v")
    assert "\x1b[" in empty  # pytest coloured it: the words are read from the plain text
    found = ran_no_tests(plain(empty))
    assert found is not None and found.runners == ("pytest",) and 5 in found.codes
    assert ran_no_tests(plain(some)) is None
    # The other runners' words, as they print them
    go_none = "?   \texample.com/a\t[no test files]\n?   \texample.com/b\t[no test files]\n"
    assert ran_no_tests(go_none).text == 'go test: "[no test files]"'
    assert ran_no_tests(go_none + "ok  \texample.com/c\t0.01s\n") is None
    cargo = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed\n\n   Doc-tests x\n\nrunning 0 tests\n"
    assert ran_no_tests(cargo).runners == ("cargo test",)
    assert ran_no_tests(cargo.replace("running 0 tests\n\ntest", "running 3 tests\n\ntest", 1)) is None
    jest = "No tests found, exiting with code 1\nRun with `--passWithNoTests` to exit with code 0\n"
    assert ran_no_tests(jest).codes == {0, 1}
    assert ran_no_tests("Ran 0 tests in 0.000s\n\nNO TESTS RAN\n").runners == ("unittest",)
    # Several runners in one shell gate: one that ran tests is enough
    assert ran_no_tests(go_none + "Ran 4 tests in 0.1s\n\nOK\n") is None
    assert ran_no_tests("all good\n") is None


# -- plain output ---------------------------------------------------------------------------------


def test_plain_drops_escape_sequences_and_progress_redraws():
    raw = (
        "\x1b[1;31mFAILED\x1b[0m test_a\r\n"
        "\x1b]0;my title\x07\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ text\n"
        "\x1bP1$r0m\x1b\\\x1b(Bdone\x1b=\n"
        "downloading 10%\rdownloading 55%\rdownloading 100%\r\n"
        "tab\there\x07\b\x9b2Kend"
    )
    assert plain(raw) == "FAILED test_a\nlink text\ndone\ndownloading 100%\ntab\there" + "end"


def test_coloured_gate_output_reaches_the_retry_prompt_and_the_report_plain(gated):  # noqa: F811 (the imported fixture)
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make(
        orchestrator={"worker": "command", "command": ["sh", "-c", 'test -s "$1" && echo a > a.txt', "sh", "{prompt_file}"]}
    )
    noisy = "printf '\\033[31mE   assert 1 == 2\\033[0m\\n\\033]0;title\\007checking 10%%\\rchecking 100%%\\n'; exit 1"
    config = {"gates": [gate("tests", ["sh", "-c", noisy])], "gates_retry": 1, "max_retries": 0}
    job = run_job(engine, "x", tasks=["write a"], config=config)
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.FAILED and len(w1.attempts) == 2
    assert "\x1b[31m" in gate_output(engine, job, w1)  # the gate's own log keeps what it wrote
    prompt = engine.workspace.prompt_path(job.id, 0, "worker_1").read_text()
    assert "The end of its output:\nE   assert 1 == 2\nchecking 100%\n" in prompt
    shown = prompt.split("The end of its output:", 1)[1]
    assert "\x1b" not in prompt and "\r" not in prompt and "checking 10%" not in shown
    final = engine.workspace.final_report(job.id).read_text()
    assert "\x1b" not in final and "gate tests failed: exit code 1" in final
    assert snapshot(host, folder) == before
