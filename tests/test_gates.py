"""Quality gates, closed by default: real gate processes in real worktrees of a
repository made here, the merge that follows them (only a gated commit of a worker whose
required gates passed), the feedback loop of ``gates_retry``, and bad gate settings refused
through the real API and config.yaml. Every test that runs a job checks that the user's
repository is as it was."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import requests

from orchestrator.config import load_settings
from orchestrator.config.job import JobConfig
from orchestrator.errors import ConfigError, Forbidden
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.outcomes import GateResult
from orchestrator.quality.gates import applicable, gate_log, merge_block, merge_commit, step_block
from orchestrator.quality.steps import PASS, Step, StepContext, Verdict
from orchestrator.reports.status_document import merge_lines

from .conftest import API_KEY, run_job, wait_until
from .helpers import gates as gates_helpers
from .helpers.gates import gate
from .helpers.worktree import git, snapshot, workers

# The fixtures this file shares with other test files (tests/helpers/gates.py).
gated = gates_helpers.gated
served = gates_helpers.served

pytestmark = pytest.mark.slow


def result_tree(host: Path, job_id: str) -> list[str]:
    return git(host, "ls-tree", "-r", "--name-only", f"orchestrator/{job_id}/result").split()


def is_ancestor(host: Path, commit: str, of: str) -> bool:
    import subprocess

    return subprocess.run(["git", "-C", str(host), "merge-base", "--is-ancestor", commit, of]).returncode == 0


def merged_into(host: Path, commit: str, of: str) -> bool:
    """``commit``'s work is squashed into ``of``: a commit of its history names it (``Orchestrator-Commit:``)."""
    return commit in git(host, "log", "--format=%(trailers:key=Orchestrator-Commit,valueonly)", of).split()


def kept_out(host: Path, commit: str, of: str) -> bool:
    """Neither in ``of``'s history nor squashed into it."""
    return not is_ancestor(host, commit, of) and not merged_into(host, commit, of)


def alive(pid: int) -> bool:
    """A live process (not a zombie) with this pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- the regression: a required gate failed, and the work was merged anyway ------------------------


def test_a_failing_required_gate_blocks_the_merge_and_the_result_lacks_that_workers_commit(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    check = gate("check", ["sh", "-c", "echo checking; test ! -e bad.txt || { echo bad.txt is here >&2; exit 3; }"])
    job = run_job(engine, "x", tasks=["echo ok > ok.txt", "echo bad > bad.txt"], config={"gates": [check], "max_retries": 0})
    w1, w2 = (workers(engine, job)[n] for n in ("worker_1", "worker_2"))
    assert w1.status is WorkerStatus.SUCCESS and w2.status is WorkerStatus.FAILED
    assert w2.exit_reason == "step gates failed: gate check failed: exit code 3"
    # The worker's entry records the gate and the commit it judged
    (entry,) = w2.gates
    assert entry.to_dict() == {
        "name": "check",
        "required": True,
        "status": "failed",
        "passed": False,
        "exit_code": 3,
        "duration": entry.duration,
        "log_path": "logs/depth_0_worker_2.gate_check.log",
        "commit": w2.commit,
        "reason": "exit code 3",
        "output_tail": "checking\nbad.txt is here",  # the end of its output, kept where it did not pass
    }
    assert w2.gated_commit == w2.commit and isinstance(entry.duration, float)
    assert (
        w1.gates[0].status == "passed"
        and "output_tail" not in w1.gates[0].to_dict()
        and w1.gates[0].commit == w1.gated_commit == w1.commit
    )
    # Its output is in its own log, beside the worker's; a line per gate in the worker's log
    log = engine.workspace.job_dir(job.id) / entry.log_path
    assert (
        log == gate_log(engine.workspace, w2, "check") and log.parent == (engine.workspace.job_dir(job.id) / w2.log_path).parent
    )
    text = log.read_text()
    assert "checking" in text and "bad.txt is here" in text and "===== gate check failed: exit code 3 =====" in text
    worker_log = (engine.workspace.job_dir(job.id) / w2.log_path).read_text()
    assert "[orchestrator] gate check failed in " in worker_log and "may not be merged" in worker_log
    assert "[orchestrator] gate check passed in " in (engine.workspace.job_dir(job.id) / w1.log_path).read_text()
    # Fail closed: worker_2's commit is on its branch but not in the result
    merge = job.merge
    assert merge.merged == ("worker_1",) and merge.left_out == (
        {"worker": "worker_2", "reason": "it ended failed: gate check failed: exit code 3"},
    )
    result = merge.result_commit
    assert git(host, "rev-parse", w2.branch).strip() == w2.commit
    assert kept_out(host, w2.commit, result) and merged_into(host, w1.commit, result)
    assert "ok.txt" in result_tree(host, job.id) and "bad.txt" not in result_tree(host, job.id)
    assert any(n.endswith("; left out: worker_2 (it ended failed: gate check failed: exit code 3)") for n in job.notes)
    assert job.status is JobStatus.PARTIAL
    shown = merge_lines({"job_id": job.id, "merge": merge.to_dict()})  # the status document's shape
    assert shown[0].endswith("(auto: 1 merged, 1 left out)")
    final = engine.workspace.final_report(job.id).read_text()
    assert "- Left out: `worker_2` (it ended failed: gate check failed: exit code 3)" in final and "Skipped: none" in final
    assert "           left out: worker_2 (it ended failed: gate check failed: exit code 3)" in shown
    assert snapshot(host, folder) == before


def test_a_gate_whose_program_is_missing_fails_closed_as_not_started(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    missing = gate("lint", ["no-such-linter-7f3a", "--check"])
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": [missing], "gates_retry": 2})
    (w1,) = workers(engine, job).values()
    (entry,) = w1.gates
    assert entry.status == "not_started" and entry.passed is False and entry.exit_code is None
    assert entry.reason == "'no-such-linter-7f3a' was not found on the worker's PATH"
    # not retried (the worker cannot install the server's programs), not merged
    assert w1.status is WorkerStatus.FAILED and len(w1.attempts) == 1
    assert w1.exit_reason == "step gates failed: gate lint not_started: 'no-such-linter-7f3a' was not found on the worker's PATH"
    assert job.merge is None and any(n.startswith("nothing merged: every worker was left out: worker_1 (") for n in job.notes)
    assert snapshot(host, folder) == before


def test_a_gate_past_its_timeout_has_its_process_group_killed_and_fails_closed(gated, tmp_path):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make(workers={"sandbox": "off"})  # the gate's pids as the host sees them (a sandbox has its own)
    pids = [tmp_path / "in_group.pid", tmp_path / "own_session.pid"]
    script = 'sleep 300 & echo $! > "$1"; setsid sleep 301 & echo $! > "$2"; wait'
    slow = gate("slow", ["sh", "-c", script, "sh", *map(str, pids)], timeout=1)
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": [slow], "max_retries": 0})
    (w1,) = workers(engine, job).values()
    (entry,) = w1.gates
    assert entry.status == "timeout" and entry.exit_code is None and entry.passed is False
    assert entry.reason == "timed out after 1s; its process group was killed" and 1.0 <= entry.duration < 10
    assert w1.status is WorkerStatus.FAILED and job.merge is None
    for pid in [int(path.read_text()) for path in pids]:  # the sleep in its group, and the one that left it (its tag)
        wait_until(lambda pid=pid: not alive(pid), timeout=5, what=f"gate process {pid} gone")
    assert snapshot(host, folder) == before


def test_a_gate_that_is_not_required_is_recorded_and_the_work_is_merged(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    advisory = gate("style", ["sh", "-c", "echo too long; exit 1"], required=False)
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": [advisory]})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.SUCCESS and job.status is JobStatus.COMPLETED
    assert w1.gates[0].status == "failed" and w1.gates[0].required is False and w1.gates[0].exit_code == 1
    assert list(job.merge.merged) == ["worker_1"] and job.merge.left_out == ()
    assert "it is not required" in (engine.workspace.job_dir(job.id) / w1.log_path).read_text()
    assert snapshot(host, folder) == before


def test_the_first_required_failure_stops_the_gates_and_what_a_gate_wrote_is_never_committed(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make(workers={"sandbox": "off"})  # a sandboxed gate cannot move its worktree's HEAD; unconfined, it is undone
    gates = [
        gate(
            "dirty",
            [
                "sh",
                "-c",
                "echo junk > junk.txt; echo x >> app.py; echo kept > .env; echo y > more.txt; git add -A"
                " && git -c user.name=g -c user.email=g@x commit -qm junk --no-verify && git checkout -q --detach"
                " && echo z >> app.py && echo w > untracked.txt",
            ],
        ),
        gate("fails", ["false"]),
        gate("never", ["sh", "-c", "echo ran > ../never_ran.txt"]),
    ]
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": gates, "max_retries": 0})
    (w1,) = workers(engine, job).values()
    assert [g.name for g in w1.gates] == ["dirty", "fails"]  # "never" did not run, and says so in the log
    assert "gate(s) never not run" in (engine.workspace.job_dir(job.id) / w1.log_path).read_text()
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert not (wt.parent / "never_ran.txt").exists()
    # The worktree is back on the gated commit: tracked and untracked changes gone, ignored files kept
    assert w1.gates[0].status == "passed"
    assert git(wt, "status", "--porcelain") == "" and not (wt / "junk.txt").exists() and not (wt / "untracked.txt").exists()
    assert git(wt, "rev-parse", "HEAD").strip() == w1.gated_commit == w1.commit
    assert git(wt, "symbolic-ref", "HEAD").strip() == "refs/heads/" + w1.branch  # the gate's commit and detach undone
    assert git(host, "rev-parse", w1.branch).strip() == w1.gated_commit
    assert (wt / ".env").read_text() == "kept\n"
    assert git(host, "show", f"{w1.commit}:app.py") == "print('v2')\nline2\n"
    assert snapshot(host, folder) == before


# -- only the gated commit, and only after the gates ran ----------------------------------------------


def test_a_worker_that_ended_without_its_gates_running_is_not_merged(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make(steps=False)  # its workers end without any gate run: success, a commit, no gated commit
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": [gate("tests", ["true"])]})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.SUCCESS and w1.commit and w1.gated_commit is None and w1.gates == []
    assert job.merge is None
    assert "nothing merged: every worker was left out: worker_1 (its gates never ran (no gated commit))" in job.notes
    assert not git(host, "for-each-ref", f"refs/heads/orchestrator/{job.id}/result")
    assert snapshot(host, folder) == before


def test_a_commit_added_after_the_gates_ran_is_not_merged(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=["echo a > a.txt", "echo b > b.txt"], config={"gates": [gate("tests", ["true"])]})
    w1 = workers(engine, job)["worker_1"]
    gated_commit = w1.gated_commit
    assert gated_commit == w1.commit and list(job.merge.merged) == ["worker_1", "worker_2"]
    # Something commits on worker_1's branch after its gates judged it
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    (wt / "late.txt").write_text("not gated\n")
    git(wt, "add", "late.txt")
    git(wt, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "late", "--no-verify")
    late = git(wt, "rev-parse", "HEAD").strip()
    assert late != gated_commit and git(host, "rev-parse", w1.branch).strip() == late
    merge = engine.merge(job.id, strategy="theirs")  # merged again (a new strategy: a new merge)
    result = merge["result_commit"]
    assert merge["merged"] == ["worker_1", "worker_2"] and merge["left_out"] == []
    assert merged_into(host, gated_commit, result) and kept_out(host, late, result)
    assert "late.txt" not in result_tree(host, job.id) and {"a.txt", "b.txt"} <= set(result_tree(host, job.id))
    assert [c["commit"] for c in merge["changes"] if c["worker"] == "worker_1"] == [gated_commit]
    assert snapshot(host, folder) == before


# -- gates_retry: the failing gate's output in the next prompt ----------------------------------------


def test_gates_retry_gives_a_command_worker_the_gate_output_and_its_second_attempt_passes(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    # The worker writes whatever value the latest "expected value:" line of its prompt file gives
    # (none on its first attempt); the gate prints the value it wants, computed, so the value is in
    # its output and not in its command.
    worker = 'v=$(sed -n "s/^expected value: //p" "$1" | tail -n 1); echo "${v:-unknown}" > value.txt'
    engine = make(orchestrator={"worker": "command", "command": ["sh", "-c", worker, "sh", "{prompt_file}"]})
    check = gate("tests", ["sh", "-c", 'grep -qx 42 value.txt || { echo "expected value: $((6 * 7))"; exit 1; }'])
    job = run_job(engine, "x", tasks=["write the value"], config={"gates": [check], "gates_retry": 1, "max_retries": 0})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.SUCCESS, w1.exit_reason
    assert len(w1.attempts) == 2 and w1.attempts[0].failure_class == "feedback"
    assert w1.gates[0].status == "passed" and w1.gated_commit == w1.commit
    assert git(host, "show", f"{w1.commit}:value.txt") == "42\n"
    assert git(host, "show", f"orchestrator/{job.id}/result:value.txt") == "42\n"
    # The result holds one commit of worker_1's, its gated work: the first attempt's commit, which
    # failed the gate, is on the worker's branch but no ancestor of the result (a `git merge` of
    # the result never brings in a commit that fails the user's tests).
    failed_try = w1.attempts[1].checkpoint  # the second attempt went on from the first one's commit
    result = f"orchestrator/{job.id}/result"
    assert failed_try and git(host, "show", f"{failed_try}:value.txt") == "unknown\n"
    assert is_ancestor(host, failed_try, w1.branch) and kept_out(host, failed_try, result)
    assert git(host, "rev-list", "--parents", f"{job.merge.base}..{result}").split()[1:] == [job.merge.base]
    assert merged_into(host, w1.gated_commit, result)
    subject = git(host, "log", "-1", "--format=%s", result).strip()
    assert subject == "write the value"
    prompt = engine.workspace.prompt_path(job.id, 0, "worker_1").read_text()
    assert 'did not pass the required quality gate "tests" (exit code 1)' in prompt and "\nexpected value: 42\n" in prompt
    log = (engine.workspace.job_dir(job.id) / "logs/depth_0_worker_1.gate_tests.log").read_text()
    assert log.count("===== gate tests: ") == 2 and "===== gate tests failed: exit code 1 =====" in log
    assert snapshot(host, folder) == before


def test_without_gates_retry_a_failed_gate_fails_the_worker_at_once(gated):
    host, folder, make = gated
    engine = make()
    job = run_job(engine, "x", tasks=["true"], config={"gates": [gate("tests", ["false"])], "max_retries": 2})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.FAILED and len(w1.attempts) == 1 and w1.error == "gate tests failed: exit code 1"


def test_final_result_shows_the_failing_gates_output_not_the_workers_log(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    failing = gate("tests", ["sh", "-c", "echo 'FAILED test_sum: expected 3, got 2' >&2; exit 1"])
    job = run_job(engine, "x", tasks=["echo worker chatter line"], config={"gates": [failing]})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.FAILED and w1.error == "gate tests failed: exit code 1"
    failures = engine.workspace.final_report(job.id).read_text().split("## Failures", 1)[1].split("\n## ", 1)[0]
    # The gate that failed it, its exit code and its output's tail, not the worker's own log
    assert "- Failing gate: `tests`, failed with exit code 1" in failures, failures
    tail = failures.split("Last lines of the gate's output", 1)[1]
    assert "FAILED test_sum: expected 3, got 2" in tail and "worker chatter line" not in tail, failures
    assert snapshot(host, folder) == before


def test_gates_from_config_yaml_run_in_a_folder_job_too_without_a_commit(gated):
    host, folder, make = gated
    seen = "test -e key.txt && env | grep -c ^ORCHESTRATOR_API_URL= && env | grep -c ^ORCHESTRATOR_API_KEY=; exit 0"
    engine = make(api=True, tasks={"gates": [gate("seen", ["sh", "-c", seen])]})
    job = run_job(engine, "x", tasks=["env | grep -c ^ORCHESTRATOR_API_KEY= > key.txt"], config={"isolation": "folder"})
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.SUCCESS and w1.gated_commit is None
    assert w1.gates[0].status == "passed" and w1.gates[0].output_tail is None and w1.gates[0].commit is None
    log = (engine.workspace.job_dir(job.id) / w1.gates[0].log_path).read_text()
    # the worker held its credential; its gate ran in its environment (its API URL) without it
    assert (engine.workspace.worker_dir(job.id, 0, "worker_1") / "key.txt").read_text() == "1\n"
    assert "\n1\n0\n" in log


# -- which gates apply ------------------------------------------------------------------------------------


def test_roles_and_when_changed_choose_the_gates_that_apply():
    gates = [
        {"name": "lint", "run": ["x"], "required": True, "timeout": 60.0, "roles": [], "when_changed": []},
        {"name": "tests", "run": ["x"], "required": True, "timeout": 60.0, "roles": [], "when_changed": ["src/**"]},
        {"name": "ui", "run": ["x"], "required": True, "timeout": 60.0, "roles": ["frontend"], "when_changed": []},
        {"name": "docs", "run": ["x"], "required": True, "timeout": 60.0, "roles": [], "when_changed": []},
    ]
    src = [{"path": "src/a.py", "change": "modified"}]
    readme = [{"path": "README.md", "change": "modified"}]
    moved = [{"path": "lib/a.py", "change": "renamed", "from": "src/a.py"}]

    def names(role_name, role, files):
        return [g["name"] for g in applicable(gates, role_name, role, files)]

    assert names(None, None, src) == ["lint", "tests", "docs"]  # no role: every gate without roles
    assert names(None, None, readme) == ["lint", "docs"]  # when_changed: only when a matching path changed
    assert names(None, None, moved) == ["lint", "tests", "docs"]  # a rename's old path counts
    backend = {"gates": ["lint", "tests"]}
    assert names("backend", backend, src) == ["lint", "tests"]  # its role's gates list names them
    assert names("frontend", {"gates": ["lint"]}, readme) == ["lint", "ui"]  # a gate naming its role applies too
    assert names("custom", {"gates": []}, readme) == ["lint", "docs"]  # a role without a gates list: all
    many = [{"path": f"f{i}.txt", "change": "added"} for i in range(500)]  # a cut list: when_changed applies
    assert names(None, None, many) == ["lint", "tests", "docs"]


def test_merge_block_names_why_a_worker_may_not_be_merged():
    tests = {"name": "tests", "run": ["x"], "required": True, "timeout": 60.0, "roles": [], "when_changed": []}
    lint = {**tests, "name": "lint", "required": False}
    job = JobRecord("j1", "j1", "x", config=JobConfig().replace(gates=[tests, lint]))
    ok = {"name": "tests", "required": True, "status": "passed", "passed": True, "commit": "c1", "reason": ""}
    worker = WorkerRecord(
        "j1",
        "j1",
        "worker_1",
        1,
        0,
        "t",
        "command",
        status=WorkerStatus.SUCCESS,
        commit="c2",
        gated_commit="c1",
        gates=[GateResult.from_dict(ok)],
    )
    assert merge_block(worker, job) is None and merge_commit(worker) == "c1"  # the gated commit, not the tip
    assert merge_block(dataclasses.replace(worker, status=WorkerStatus.FAILED, error="boom"), job) == "it ended failed: boom"
    assert merge_block(dataclasses.replace(worker, gated_commit=None, gates=[]), job) == "its gates never ran (no gated commit)"
    assert merge_block(dataclasses.replace(worker, gates=[]), job) == "required gate tests never ran"
    failed = {**ok, "status": "timeout", "passed": False, "reason": "timed out after 60s"}
    assert (
        merge_block(dataclasses.replace(worker, gates=[GateResult.from_dict(failed)]), job)
        == "required gate tests did not pass: timed out after 60s"
    )
    stale = {**ok, "commit": "c0"}
    assert (
        merge_block(dataclasses.replace(worker, gates=[GateResult.from_dict(stale)]), job)
        == "gate tests judged commit c0, not the gated commit"
    )
    # a job without gates: an ok worker merges at its tip; a failed one never
    plain = JobRecord("j2", "j2", "x")
    bare = dataclasses.replace(worker, gated_commit=None, gates=[])
    assert merge_block(bare, plain) is None and merge_commit(bare) == "c2"
    assert merge_block(dataclasses.replace(bare, status=WorkerStatus.TIMEOUT), plain) == "it ended timeout"


# -- bad gate settings: 422 naming the field, 403 from a worker's credential ------------------------------


def test_bad_gates_in_config_yaml_are_refused_naming_the_field(tmp_path):
    for body, key, said in (
        ('[{name: tests, run: "pytest -q"}]', "tasks.gates[0].run", "must be a command as a non-empty list of strings"),
        ("[{name: tests, run: [pytest, 3]}]", "tasks.gates[0].run", "must be a command as a non-empty list of strings"),
        ("[{name: tests, run: [pytest], timeout: 0}]", "tasks.gates[0].timeout", "must be a number of seconds from 1 to 86400"),
        ("[{name: tests, run: [pytest], timeout: 100000}]", "tasks.gates[0].timeout", "from 1 to 86400"),
    ):
        (tmp_path / "config.yaml").write_text(f"tasks:\n  gates: {body}\n")
        with pytest.raises(ConfigError, match=said) as caught:
            load_settings(base_dir=tmp_path, environ={})
        assert caught.value.message.startswith(key)


def test_bad_gates_in_a_request_are_422_naming_the_field_and_a_worker_may_not_set_gates(served):
    url, engine = served

    def post(config: dict, key: str = API_KEY) -> requests.Response:
        body = {"request": "x", "tasks": ["true"], "config": config}
        return requests.post(url + "/api/v1/orchestrate", json=body, headers={"X-API-Key": key}, timeout=30)

    for gates, key, said in (
        ([{"name": "tests", "run": "pytest -q"}], "gates[0].run", "must be a command as a non-empty list of strings"),
        ([{"name": "tests", "run": ["pytest", None]}], "gates[0].run", "must be a command as a non-empty list of strings"),
        ([{"name": "tests", "run": ["pytest"], "timeout": 0.5}], "gates[0].timeout", "from 1 to 86400"),
        ([{"name": "tests", "run": ["pytest"], "timeout": "10"}], "gates[0].timeout", "from 1 to 86400"),
    ):
        answer = post({"gates": gates})
        assert answer.status_code == 422, answer.text
        assert key in answer.json()["message"] and said in answer.json()["message"], answer.json()
    root = engine.submission.submit("x", None, ["sleep 30"])
    wait_until(lambda: workers(engine, root)["worker_1"].attempts, what="worker_1 started")
    worker_key = engine.credentials.issue(root.id, root.id, "worker_1")
    for config in ({"gates": []}, {"gates_retry": 5}, {"gates": [{"name": "tests", "run": ["true"]}]}):
        answer = post(config, worker_key)
        assert answer.status_code == 403, answer.text
        assert "is for a root job only (the admin key)" in answer.json()["message"]
    with pytest.raises(Forbidden):
        engine.submission.submit("y", {"gates": []}, ["true"], parent_job_id=root.id, parent_worker="worker_1")
    engine.cancel(root.id)
    engine.queries.wait(root.id, 30)
    answer = post({"gates": [{"name": "ok", "run": ["true"], "timeout": 86400}]})  # the admin key may
    assert answer.status_code == 202, answer.text
    assert engine.queries.get_job(answer.json()["job_id"]).config.gates[0]["timeout"] == 86400.0


def test_a_gate_killed_by_a_signal_is_crashed_and_fails_closed(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"gates": [gate("segv", ["sh", "-c", "kill -SEGV $$"])]})
    (w1,) = workers(engine, job).values()
    (entry,) = w1.gates
    assert entry.status == "crashed" and entry.exit_code == -11 and entry.reason == "killed by signal SIGSEGV"
    assert w1.status is WorkerStatus.FAILED and job.merge is None
    assert snapshot(host, folder) == before


def test_cancelling_the_job_stops_a_running_gate_and_nothing_is_merged(gated, tmp_path):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make(workers={"sandbox": "off"})  # the gate's pid as the host sees it (a sandbox has its own)
    pid_file = tmp_path / "gate.pid"
    slow = gate("slow", ["sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pid_file)])
    job = engine.submission.submit("x", {"gates": [slow]}, ["echo a > a.txt"])
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the gate started")
    pid = int(pid_file.read_text())
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 30)
    (w1,) = workers(engine, done).values()
    # the worker ends cancelled (not failed), so its job does, and a cancelled job is not merged
    assert w1.status is WorkerStatus.CANCELLED and done.status is JobStatus.CANCELLED
    assert w1.exit_reason == "cancelled while step gates ran (gate slow cancelled: the worker was cancelled while the gate ran)"
    assert w1.gates[0].status == "cancelled" and w1.gates[0].reason == "the worker was cancelled while the gate ran"
    assert not alive(pid) and done.merge is None
    assert snapshot(host, folder) == before


def test_a_child_job_under_the_roots_gates_merges_only_its_gated_workers_into_the_parents_branch(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    check = gate("check", ["sh", "-c", "test ! -e bad.txt"])
    root = engine.submission.submit("x", {"gates": [check], "max_retries": 0}, ["sleep 30"])
    wait_until(lambda: workers(engine, root)["worker_1"].attempts, what="worker_1 started")
    # the child job inherits the root's gates (it may not set its own: 403, tested above)
    child = engine.submission.submit(
        "y", None, ["echo ok > ok.txt", "echo bad > bad.txt"], parent_job_id=root.id, parent_worker="worker_1"
    )
    done = engine.queries.wait(child.id, 30)
    filled = {"shell": False, "env": {}, "cwd": "", "allow_no_tests": False, "required": True, "timeout": 600.0}
    assert done.config.gates == [check | filled | {"roles": [], "when_changed": []}]
    kids = {w.name: w for w in engine.queries.snapshot(root.id)[1] if w.job_id == child.id}
    good, bad = (kids[n] for n in sorted(kids))
    assert good.status is WorkerStatus.SUCCESS and bad.status is WorkerStatus.FAILED and bad.gates[0].status == "failed"
    assert list(done.merge.merged) == [good.name] and [w["worker"] for w in done.merge.left_out] == [bad.name]
    parent_branch = f"orchestrator/{root.id}/worker_1"
    files = git(host, "ls-tree", "-r", "--name-only", parent_branch).split()
    assert "ok.txt" in files and "bad.txt" not in files
    assert kept_out(host, bad.commit, parent_branch) and merged_into(host, good.gated_commit, parent_branch)
    assert any("; left out: " + bad.name in n for n in done.notes)
    engine.cancel(root.id)
    engine.queries.wait(root.id, 30)
    assert snapshot(host, folder) == before


def test_a_relative_gate_program_runs_from_the_workers_directory_and_spent_gates_retries_fail_closed(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make()
    task = "printf '#!/bin/sh\\necho in \"$(pwd)\"\\nexit 1\\n' > check.sh && chmod +x check.sh"
    config = {"gates": [gate("own", ["./check.sh"])], "gates_retry": 1, "max_retries": 0}
    job = run_job(engine, "x", tasks=[task], config=config)
    (w1,) = workers(engine, job).values()
    assert w1.status is WorkerStatus.FAILED and len(w1.attempts) == 2
    assert w1.exit_reason.endswith("; no retries left for step gates (1)") and "gate own failed: exit code 1" in w1.exit_reason
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    log = (engine.workspace.job_dir(job.id) / w1.gates[0].log_path).read_text()
    where = host if w1.sandbox == "bubblewrap" else wt  # sandboxed: the checkout at the repository's own path
    assert log.count(f"in {where}\n") == 2 and job.merge is None
    assert snapshot(host, folder) == before


class Probe(Step):
    """A step after the gates (where an integration merge runs): what step_block says there."""

    name = "probe"

    def __init__(self) -> None:
        self.said: list[str | None] = []

    def run(self, ctx: StepContext) -> Verdict:
        self.said.append(step_block(ctx))
        return PASS


def test_a_later_step_sees_the_gates_verdict_before_the_record_has_it(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    probe = Probe()
    engine = make(then=(probe,))
    config = {"gates": [gate("tests", ["true"]), gate("style", ["false"], required=False)]}
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config=config)
    assert probe.said == [None] and list(job.merge.merged) == ["worker_1"]
    # without the gate step before it, the same worker may not be merged
    late = Probe()
    bare = make(steps=False, then=(late,))
    job = run_job(bare, "x", tasks=["echo a > a.txt"], config=config)
    assert late.said == ["its gates never ran (no gated commit)"] and job.merge is None
    assert snapshot(host, folder) == before


def test_in_a_graph_a_failing_required_gate_skips_the_dependents_and_its_commit_is_never_integrated(gated):
    host, folder, make = gated
    before = snapshot(host, folder)
    engine = make(integrate=True)
    tasks = [
        {"id": "db", "task": "echo db > db.txt"},
        {"id": "api", "task": "echo bad > bad.txt", "depends_on": ["db"]},
        {"id": "ui", "task": "echo ui > ui.txt", "depends_on": ["api"]},
    ]
    check = gate("check", ["sh", "-c", "test ! -e bad.txt || { echo bad.txt is here; exit 1; }"])
    job = run_job(engine, "graph", tasks=tasks, config={"gates": [check], "max_retries": 0, "isolation": "worktree"})
    by_task = {w.task_id: w for w in workers(engine, job).values()}
    assert by_task["db"].status is WorkerStatus.SUCCESS and by_task["db"].integrated.merged is True
    api = by_task["api"]
    assert api.status is WorkerStatus.FAILED and api.gates[0].status == "failed" and api.integrated is None
    assert by_task["ui"].status is WorkerStatus.SKIPPED and "dependency api failed" in by_task["ui"].exit_reason
    result = f"orchestrator/{job.id}/result"
    assert kept_out(host, api.commit, result) and merged_into(host, by_task["db"].gated_commit, result)
    names = result_tree(host, job.id)
    assert "db.txt" in names and "bad.txt" not in names and "ui.txt" not in names
    assert [w["worker"] for w in job.merge.left_out] == [api.name]
    assert snapshot(host, folder) == before
