"""A subtask run as several candidates through the real engine: real command
workers in real worktrees of a repository made here, real gates, the selection of a winner and
its merge (only the winner's work reaches the result branch; the others stay as branches), and
the user's repository as it was."""

from __future__ import annotations

import pytest

from orchestrator.models import JobStatus, WorkerStatus

from .conftest import run_job
from .helpers.candidates import TESTS_GATE, THREE
from .helpers.worktree import git, snapshot, workers

pytestmark = pytest.mark.slow


def test_best_merges_the_small_passing_candidate_and_keeps_the_others_as_branches(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(tasks={"gates": [TESTS_GATE]})
    job = run_job(engine, "feature", tasks=[{"id": "feat", "task": THREE}], config={"attempts": 3})
    found = workers(engine, job)
    assert sorted(found) == ["worker_1", "worker_2", "worker_3"]
    assert [found[n].candidate for n in sorted(found)] == [1, 2, 3]
    assert {w.task_id for w in found.values()} == {"feat"}
    assert found["worker_1"].status is WorkerStatus.FAILED
    selection = job.selections["feat"].to_dict()
    assert selection["winner"] == "worker_3", selection
    assert selection["candidates"] == ["worker_1", "worker_2", "worker_3"]
    assert [found[n].selected for n in sorted(found)] == [False, False, True]
    assert job.status is JobStatus.COMPLETED, job.error
    result = f"orchestrator/{job.id}/result"
    assert git(host, "show", f"{result}:feature.txt").strip() == "small"
    assert "extra.txt" not in git(host, "ls-tree", "-r", "--name-only", result).split()
    branches = git(host, "branch", "--list", f"orchestrator/{job.id}/*", "--format=%(refname:short)").split()
    assert {f"orchestrator/{job.id}/worker_{i}" for i in (1, 2, 3)} <= set(branches)
    assert snapshot(host, folder) == before


def test_cheapest_fastest_and_first_passing(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(tasks={"gates": [TESTS_GATE]})
    fastest = run_job(engine, "feature", tasks=[{"id": "f", "task": THREE}], config={"attempts": 3, "select": "fastest"})
    assert fastest.selections["f"].winner == "worker_2"
    slow = (
        'case "$ORCHESTRATOR_WORKER_ID" in worker_1) exit 1;; worker_2) echo two > feature.txt;; '
        "worker_3) sleep 30; echo three > feature.txt;; esac"
    )
    confinement = engine.choosing.confinement
    spec, built = confinement.spec, []

    def spied(record, *args, **kwargs):
        built.append(record.name)
        return spec(record, *args, **kwargs)

    confinement.spec = spied  # type: ignore[method-assign]
    first = run_job(engine, "feature", tasks=[{"id": "f", "task": slow}], config={"attempts": 3, "select": "first_passing"})
    found = workers(engine, first)
    assert first.selections["f"].winner == "worker_2"
    # only the eligible one's sandbox: worker_1's worktree was its retry's while the choice was made
    assert built == ["worker_2"]
    assert found["worker_3"].status is WorkerStatus.CANCELLED
    assert found["worker_3"].duration < 20
    assert first.status is JobStatus.COMPLETED
    assert snapshot(host, folder) == before


def test_a_graph_task_with_candidates_delivers_its_winner_to_its_dependents(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(tasks={"gates": [TESTS_GATE]})
    tasks = [
        {"id": "feat", "task": THREE, "candidates": ["command", "command", "command"]},
        {"id": "use", "task": 'test "$(cat feature.txt)" = small && echo used > used.txt', "depends_on": ["feat"]},
    ]
    job = run_job(engine, "graph", tasks=tasks)
    found = workers(engine, job)
    assert job.selections["feat"].winner == "worker_3"
    assert found["worker_4"].status is WorkerStatus.SUCCESS, found["worker_4"].exit_reason
    assert found["worker_3"].unblocked == ["use"]
    assert job.status is JobStatus.COMPLETED
    assert git(host, "show", f"orchestrator/{job.id}/result:used.txt").strip() == "used"
    assert snapshot(host, folder) == before


def test_no_passing_candidate_fails_the_task_and_skips_its_dependents(hosted):
    host, folder, make = hosted
    engine = make()
    tasks = [{"id": "a", "task": "exit 3"}, {"id": "b", "task": "true", "depends_on": ["a"]}]
    job = run_job(engine, "graph", tasks=tasks, config={"attempts": 2, "max_retries": 0})
    found = workers(engine, job)
    assert job.selections["a"].winner is None
    assert found["worker_3"].status is WorkerStatus.SKIPPED
    assert "dependency a has no winner" in found["worker_3"].exit_reason
    assert job.status is JobStatus.FAILED


def test_folder_candidates_of_the_simulated_kind(tmp_path):
    from orchestrator.config import load_settings
    from orchestrator.engine.core import Engine

    settings = load_settings(
        base_dir=tmp_path, environ={}, overrides={"simulated": {"duration": 0.05}, "git": {"isolation": "folder"}}
    )
    engine = Engine(settings)
    try:
        job = run_job(engine, "Build a thing", tasks=["one", "two"], config={"attempts": 2, "worker": "simulated"})
        found = workers(engine, job)
        assert len(found) == 4
        assert sorted(job.selections) == ["t1", "t2"]
        assert job.status is JobStatus.COMPLETED
        assert sum(1 for w in found.values() if w.selected) == 2
    finally:
        engine.shutdown(timeout=10)


def test_a_cancelled_candidates_job_ends_cancelled_with_no_winner_and_delete_removes_every_branch(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = engine.submission.submit("feature", {"attempts": 2}, [{"id": "f", "task": "sleep 30"}])
    import time

    deadline = time.monotonic() + 20
    while not all(w.status is WorkerStatus.RUNNING for w in workers(engine, job).values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 30)
    assert done.status is JobStatus.CANCELLED
    assert done.selections["f"].winner is None and "cancelled" in done.selections["f"].reason
    engine.delete(job.id, all_branches=True)
    assert git(host, "branch", "--list", f"orchestrator/{job.id}/*").strip() == ""
    assert snapshot(host, folder) == before


@pytest.mark.parametrize(
    ("config", "tasks", "said"),
    [
        ({"candidates": ["codex"]}, None, "candidate worker kind codex is not installed here"),
        ({"candidates": ["nosuch"]}, None, "is not a worker kind this server can run"),
        ({"attempts": 2, "select": "judge"}, None, "select: judge needs a judge"),
        ({"attempts": 2, "select": "judge", "judge": {"kind": "command"}}, None, "is not an AI kind"),
        ({"attempts": 2, "select": "judge", "judge": {"kind": "codex"}}, None, "codex is not installed here"),
        ({"candidates": [{"kind": "command", "timeout": 99999}]}, None, "above this server's limit"),
        (None, [{"task": "x", "candidates": [{"kind": "command", "size": 1}]}], "unknown key(s) size"),
        ({"candidates": [{"kind": "command", "context": "text"}]}, None, "context must be a JSON object"),
    ],
)
def test_candidates_that_could_never_run_are_refused_at_submission(tmp_path, config, tasks, said):
    from orchestrator.config import load_settings
    from orchestrator.engine.core import Engine
    from orchestrator.errors import OrchestratorError

    overrides = {"orchestrator": {"worker": "command", "command": ["true"], "codex_command": "no-such-codex-here"}}
    engine = Engine(load_settings(base_dir=tmp_path, environ={}, overrides=overrides))
    try:
        with pytest.raises(OrchestratorError) as caught:
            engine.submission.submit("x", config, tasks or ["one"])
        assert said in str(caught.value), caught.value
        assert caught.value.http_status == 422
    finally:
        engine.shutdown(timeout=5)


def marked(*markers: str) -> str:
    """A task whose candidate k writes feature.txt holding markers[k-1] (its diff line ``+# MARK``)."""
    cases = " ".join(f"worker_{i}) printf '# {m}\\n' > feature.txt;;" for i, m in enumerate(markers, 1))
    return f'case "$ORCHESTRATOR_WORKER_ID" in {cases} esac'


@pytest.mark.real_cli
def test_a_judge_through_the_real_claude_cli_picks_the_winner_that_is_merged(hosted, monkeypatch, tmp_path):
    import re

    from .conftest import find_cli
    from .mock_model_server import MockModelServer, Text, prompt_text

    claude = find_cli("claude")
    if claude is None:
        pytest.skip("claude CLI not installed (run tests/install_cli.sh)")
    preferred = ["GOOD", "FINE", "PLAIN"]

    def judge(body):
        a, b = re.findall(r"^\+# (\w+)$", prompt_text(body), re.M)[:2]
        label = "A" if preferred.index(a) < preferred.index(b) else "B"
        return Text(f'```json\n{{"winner": "{label}", "reasons": "{[a, b][label == "B"]} handles the edge cases"}}\n```')

    host, folder, make = hosted
    before = snapshot(host, folder)
    with MockModelServer(judge, lifetime=240) as mock:
        home = tmp_path / "home"
        home.mkdir()
        for name, value in {**mock.client_env(), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")}.items():
            monkeypatch.setenv(name, value)
        engine = make(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"], "claude_command": claude})
        config = {"attempts": 3, "select": "judge", "judge": {"kind": "claude", "model": "judge-model"}}
        job = run_job(engine, "feature", tasks=[{"id": "f", "task": marked("PLAIN", "GOOD", "FINE")}], config=config, timeout=240)
    selection = job.selections["f"].to_dict()
    assert selection["winner"] == "worker_2", selection
    assert all(not m["fallback"] for m in selection["judge"]["matches"]), selection["judge"]
    assert selection["cost_usd"] and job.judge_cost_usd == selection["cost_usd"]
    assert git(host, "show", f"orchestrator/{job.id}/result:feature.txt").strip() == "# GOOD"
    assert snapshot(host, folder) == before


@pytest.mark.real_cli
def test_a_judge_answering_garbage_falls_back_to_best_and_the_job_says_so(hosted, monkeypatch, tmp_path):
    from .conftest import find_cli
    from .mock_model_server import MockModelServer, Text

    claude = find_cli("claude")
    if claude is None:
        pytest.skip("claude CLI not installed (run tests/install_cli.sh)")
    host, folder, make = hosted
    with MockModelServer(lambda body: Text("They both look fine to me."), lifetime=240) as mock:
        home = tmp_path / "home"
        home.mkdir()
        for name, value in {**mock.client_env(), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")}.items():
            monkeypatch.setenv(name, value)
        engine = make(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"], "claude_command": claude})
        config = {"attempts": 2, "select": "judge", "judge": {"kind": "claude"}}
        task = 'case "$ORCHESTRATOR_WORKER_ID" in worker_1) seq 1 50 > f.txt;; worker_2) echo one > f.txt;; esac'
        job = run_job(engine, "feature", tasks=[{"id": "f", "task": task}], config=config, timeout=240)
    selection = job.selections["f"].to_dict()
    (match,) = selection["judge"]["matches"]
    assert match["fallback"] is True and "unusable" in match["reason"], match
    assert selection["winner"] == "worker_2"  # best's pick: the smaller diff
    assert job.status is JobStatus.COMPLETED
