"""The typed records of the seams between features (an attempt's enforcement, a selection and its
rows, a publishing, a step's updates): each one's ``to_dict`` is the JSON the dicts they replaced
gave, key for key and in order, and ``from_dict`` loads a record written before they existed."""

from __future__ import annotations

import json

from orchestrator.config.choice import CandidateSpec
from orchestrator.models import Attempt, JobRecord, TaskNode, WorkerRecord
from orchestrator.outcomes import (
    Enforced,
    Enforcement,
    GateResult,
    PublishRecord,
    PullRequestRecord,
    RankingRow,
    SelectionRecord,
)
from orchestrator.quality.steps import StepUpdates
from orchestrator.selection import Selection

# An attempt as the server wrote it (GET /jobs/{id} and the worker's record file) before
# ``enforced`` was typed: its caps' enforcement as a plain dict.
OLD_ATTEMPT = {
    "number": 1,
    "started_at": 100.0,
    "ended_at": 103.5,
    "pid": 4242,
    "pid_start": "8812",
    "exit_code": 0,
    "signal": None,
    "end_reason": "exit",
    "kill_rung": None,
    "log_offset": 0,
    "failure_class": None,
    "retry_after": None,
    "checkpoint": None,
    "node": None,
    "enforced": {"memory": "cgroup v2", "processes": "sampled", "log": "file-size limit", "disk": "no cap", "file_size": 1048576},
    "argv": ["claude", "-p"],
    "duration": 3.5,
}


def test_an_old_attempt_loads_with_its_enforcement_typed_and_writes_the_same_json():
    """An attempt's record from before: its ``enforced`` becomes an Enforced, and the JSON it
    writes again is the one it was read from, byte for byte."""
    attempt = Attempt.from_dict(OLD_ATTEMPT)
    assert attempt.enforced == Enforced(
        memory=Enforcement.CGROUP_V2,
        processes=Enforcement.SAMPLED,
        log=Enforcement.FILE_SIZE,
        disk=Enforcement.NONE,
        file_size=1048576,
    )
    assert json.dumps(attempt.to_dict()) == json.dumps(OLD_ATTEMPT)


def test_an_attempt_without_enforcement_keeps_its_null():
    """Not known (no handle, or a record before caps were recorded): null, as before."""
    data = OLD_ATTEMPT | {"enforced": None}
    assert Attempt.from_dict(data).enforced is None
    assert Attempt.from_dict(data).to_dict() == data
    older = {k: v for k, v in OLD_ATTEMPT.items() if k != "enforced"}
    assert Attempt.from_dict(older).to_dict()["enforced"] is None


def test_step_updates_set_only_what_a_step_set():
    """A step's updates reach the record through ``apply``: a field no step set keeps the record's
    value; the gates' commit and results go together (a None commit too: a folder worker's);
    an empty trespass list clears the last attempt's."""
    record = WorkerRecord(job_id="j", root_id="j", name="worker_1", index=1, depth=0, task="t", kind="simulated")
    record.gated_commit, record.trespass = "old", ["src/x.py"]
    gate = GateResult("unit", True, "passed", True, 0, 1.0, "logs/g.log", None, "exit code 0")
    StepUpdates().apply(record)
    assert (record.gated_commit, record.gates, record.trespass) == ("old", [], ["src/x.py"])
    updates = StepUpdates()
    updates.gated(None, [gate])
    updates.trespass = []
    assert updates.changed
    updates.apply(record)
    assert (record.gated_commit, record.gates, record.trespass, record.integrated) == (None, [gate], [], None)


# A root job's ``publish`` as publishing wrote it before it was typed: pushed, and a pull request opened.
OLD_PUBLISH = {
    "at": 1700000000.5,
    "remote": "origin",
    "branch": "orchestrator/job_ab12",
    "commit": "c" * 40,
    "pushed": True,
    "error": None,
    "pull_request": {"forge": "github", "number": 1, "url": "https://forge.example/pull/1", "action": "opened", "base": "main"},
}


def test_a_publish_record_round_trips_its_json():
    """Pushed with a pull request, and failed before anything was pushed (no branch, no pull request)."""
    record = PublishRecord.from_dict(OLD_PUBLISH)
    assert record.pushed and record.pull_request == PullRequestRecord(
        "github", 1, "https://forge.example/pull/1", "opened", "main"
    )
    assert json.dumps(record.to_dict()) == json.dumps(OLD_PUBLISH)
    failed = {"at": 5.0, "remote": "origin", "branch": None, "commit": None, "pushed": False}
    failed |= {"error": "nothing to publish: the job has no result commit (merge it first)", "pull_request": None}
    assert json.dumps(PublishRecord.from_dict(failed).to_dict()) == json.dumps(failed)


def test_an_old_job_record_loads_its_publish_typed_and_writes_it_back():
    """A job's record on disk with a publish dict: typed on load, the same JSON on save."""
    data = JobRecord(id="ab12", root_id="ab12", request="r").to_dict() | {"publish": OLD_PUBLISH}
    job = JobRecord.from_dict(json.loads(json.dumps(data)))
    assert isinstance(job.publish, PublishRecord) and job.publish.branch == "orchestrator/job_ab12"
    assert json.dumps(job.to_dict()) == json.dumps(data)
    assert JobRecord.from_dict(data | {"publish": None}).publish is None


ROW = {
    "worker": "worker_2",
    "kind": "claude",
    "model": "sonnet",
    "eligible": True,
    "score": 93.94,
    "parts": {"gates_passed": 20.0, "diff_lines": 15.0},
    "measures": {"gates_passed": 1.0, "diff_lines": 10, "coverage": "n/a", "scoring_command": "ok"},
    "rank": 1,
    "reason": "won the judge's knockout; best score 93.94: gates_passed 20/20, diff_lines 15/15",
}
OUT = ROW | {"worker": "worker_1", "eligible": False, "score": None, "parts": {}, "measures": {}, "rank": None}
# A task's selection under ``select: judge`` as engine/choosing.py wrote it before it was typed.
OLD_SELECTION = {
    "task_id": "t1",
    "select": "judge",
    "candidates": ["worker_1", "worker_2", "worker_3"],
    "at": 1700000100.25,
    "winner": "worker_2",
    "reason": "won the judge's knockout of 2 eligible in 1 round(s); final: the judge picked worker_2 in both orders",
    "ranking": [ROW, ROW | {"worker": "worker_3", "rank": 2, "score": 61.2}, OUT],
    "judge": {
        "kind": "claude",
        "model": None,
        "matches": [
            {
                "round": 1,
                "a": "worker_2",
                "b": "worker_3",
                "orders": [
                    {
                        "shown": ["worker_2", "worker_3"],
                        "answer": '{"winner": "A", "reasons": "smaller"}',
                        "parsed": "A",
                        "reasons": "smaller",
                        "cost_usd": 0.003,
                        "problem": None,
                    },
                    {
                        "shown": ["worker_3", "worker_2"],
                        "answer": "",
                        "parsed": None,
                        "reasons": "",
                        "cost_usd": None,
                        "problem": "empty",
                    },
                ],
                "winner": "worker_2",
                "reason": "the judge picked worker_2 in both orders",
                "fallback": False,
            },
            {
                "round": 2,
                "a": "worker_2",
                "b": None,
                "orders": [],
                "winner": "worker_2",
                "reason": "a bye (odd one out)",
                "fallback": False,
            },
        ],
    },
    "cost_usd": 0.003,
}
# The job was cancelled before the chooser ran: no cost key, no time.
OLD_CANCELLED = {
    "task_id": "t2",
    "select": "best",
    "candidates": ["worker_4", "worker_5"],
    "at": None,
    "winner": None,
    "reason": "the job was cancelled before a winner was chosen",
    "ranking": [],
    "judge": None,
}
# The chooser raised: only the decision's own keys.
OLD_FAILED = {"winner": None, "reason": "the selection failed: boom", "ranking": [], "judge": None}


def test_a_selection_round_trips_each_shape_it_was_written_in():
    """A judged selection (rows, matches, answers), a cancelled one and a failed one: typed, and
    written back as the same JSON, keys in the same order."""
    for data in (OLD_SELECTION, OLD_CANCELLED, OLD_FAILED):
        record = SelectionRecord.from_dict(json.loads(json.dumps(data)))
        assert json.dumps(record.to_dict()) == json.dumps(data)
    judged = SelectionRecord.from_dict(OLD_SELECTION)
    assert judged.ranking[0] == RankingRow.from_dict(ROW) and judged.ranking[2].rank is None
    assert judged.judge is not None and judged.judge.matches[0].orders[0].shown == ("worker_2", "worker_3")
    assert judged.judge.matches[1].b is None and judged.cost_usd == 0.003


def test_the_chooser_s_decision_becomes_the_record_the_engine_keeps():
    """``Selection.record`` adds the task, the rule and the candidates; its dict is the old
    ``meta | selection.to_dict()`` (``at`` set by the engine afterwards)."""
    row = RankingRow.from_dict(ROW)
    chosen = Selection("worker_2", "best score 93.94 of 1 eligible", [row], None, None)
    record = chosen.record("t1", "best", ["worker_2"])
    record.at = 7.0
    meta = {"task_id": "t1", "select": "best", "candidates": ["worker_2"], "at": 7.0}
    assert json.dumps(record.to_dict()) == json.dumps(meta | chosen.to_dict())


def test_an_old_record_loads_its_selections_and_its_candidates_scores():
    """A job's and a candidate's records from before: typed on load, the same JSON on save; the
    judge's cost still counts."""
    job_data = JobRecord(id="ab12", root_id="ab12", request="r").to_dict() | {
        "selections": {"t1": OLD_SELECTION, "t2": OLD_CANCELLED}
    }
    job = JobRecord.from_dict(json.loads(json.dumps(job_data)))
    assert job.selections["t1"].winner == "worker_2" and job.judge_cost_usd == 0.003
    assert json.dumps(job.to_dict()) == json.dumps(job_data)
    worker = WorkerRecord(job_id="ab12", root_id="ab12", name="worker_2", index=2, depth=0, task="t", kind="claude")
    worker_data = worker.to_dict() | {"candidate": 2, "selected": True, "score": ROW}
    loaded = WorkerRecord.from_dict(json.loads(json.dumps(worker_data)))
    assert loaded.score == RankingRow.from_dict(ROW)
    assert json.dumps(loaded.to_dict()) == json.dumps(worker_data)


def test_a_task_node_keeps_its_candidates_as_specs_and_writes_the_same_json():
    """An explicit task's candidates (before the plan is expanded) are CandidateSpecs; its node's
    JSON is the one written before, and a node from before candidates loads with none."""
    data = {
        "id": "t1",
        "depends_on": [],
        "role": None,
        "owns": [],
        "kind": None,
        "model": None,
        "candidates": [
            {"kind": "claude", "model": "sonnet", "timeout": None, "context": None},
            {"kind": "codex", "model": None, "timeout": 600.0, "context": {"style": "terse"}},
        ],
        "candidate": None,
        "timeout": None,
        "context": None,
    }
    node = TaskNode.from_dict(data)
    assert node.candidates[1] == CandidateSpec("codex", None, 600.0, {"style": "terse"})
    assert json.dumps(node.to_dict()) == json.dumps(data)
    assert TaskNode.from_dict({"id": "t1", "depends_on": ["t0"]}).candidates == []
