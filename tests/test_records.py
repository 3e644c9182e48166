"""Records that travel between features as dataclasses: each loads the JSON the code wrote
before it was a dataclass, and writes it back byte for byte."""

from __future__ import annotations

import json

from orchestrator.config import JobConfig
from orchestrator.config.choice import CandidateSpec, parse_candidates
from orchestrator.delivery import approval, landing
from orchestrator.models import Approval, JobRecord, JobStatus, TaskNode, WorkerRecord
from orchestrator.outcomes import GateResult, Integrated, IntegrationRecord, MergeRecord
from orchestrator.quality import gates
from orchestrator.selection.candidates import specs_for


def _same(text: str, dumped: object) -> None:
    assert json.dumps(dumped, ensure_ascii=False, separators=(",", ":")) == text


def test_approval_old_shape_round_trips() -> None:
    # What JobRecord.to_dict()["approval"] was on disk as a dict (a rejected job).
    text = '{"state":"rejected","earned":"completed","waiting_since":100.5,"decided_at":130.0,"note":null,"reason":"no tests"}'
    record = Approval.from_dict(json.loads(text))
    assert record.state == "rejected" and record.reason == "no tests"
    _same(text, record.to_dict())
    job = JobRecord.from_dict({"id": "j", "root_id": "j", "request": "r", "approval": json.loads(text)})
    assert job.approval == record
    assert json.dumps(job.to_dict()["approval"], separators=(",", ":")) == text
    assert JobRecord.from_dict({"id": "j", "root_id": "j", "request": "r"}).approval is None  # older records
    assert Approval.from_dict({"state": "waiting", "later": 1}).earned is None  # unknown keys dropped, missing defaulted


def test_approval_decisions_keep_the_shape() -> None:
    job = JobRecord(id="j", root_id="j", request="r", status=JobStatus.WAITING)
    job.approval = approval.waiting(JobStatus.PARTIAL, 5.0)
    assert job.approval.to_dict() == {
        "state": "waiting",
        "earned": "partial",
        "waiting_since": 5.0,
        "decided_at": None,
        "note": None,
        "reason": None,
    }
    status, record, _ = approval.decision(job, "approve", "fine", 9.0)
    assert status is JobStatus.PARTIAL
    assert list(record.to_dict().items()) == [
        ("state", "approved"),
        ("earned", "partial"),
        ("waiting_since", 5.0),
        ("decided_at", 9.0),
        ("note", "fine"),
        ("reason", None),
    ]
    status, record, _ = approval.decision(job, "reject", "no", 9.0)
    assert status is JobStatus.FAILED and record.reason == "no" and record.note is None


# What landing.py and nesting.py wrote in JobRecord.merge before it had a type: a root's landing
# (into a named branch, a worker left out), a root's merge that raised, a child job's merge that failed.
ROOT_MERGE = (
    '{"strategy":"auto","base":"b1","result_ref":"refs/heads/orchestrator/j/result","result_commit":"c9",'
    '"merged":["worker_1"],"skipped":["worker_2"],"unchanged":["worker_3"],'
    '"conflicts":[{"path":"a.py","workers":["worker_1","worker_2"],"hunks":2,"kind":"content","resolved_by":"","predicted":false}],'
    '"changes":[{"worker":"worker_1","branch":"orchestrator/j/worker_1","commit":"c1","files":["a.py"]}],'
    '"command":"git merge orchestrator/j/result","previous":null,"removed":false,"kept_in":null,"at":12.5,'
    '"into":{"branch":"main","moved":false,"refused":"main was left alone","command":"git switch main","message":""},'
    '"left_out":[{"worker":"worker_4","reason":"its gates failed"}]}'
)
FAILED_MERGE = '{"strategy":"theirs","error":"stale lock file","at":3.0}'
CHILD_MERGE = (
    '{"strategy":"auto","base":"","result_ref":"refs/heads/orchestrator/j/worker_1","result_commit":null,'
    '"merged":[],"skipped":["worker_1"],"unchanged":[],"conflicts":[],"changes":[],"command":"",'
    '"previous":null,"removed":false,"kept_in":null,"at":7.0,"target":"orchestrator/j/worker_1","left_out":[],'
    '"error":"not on its branch"}'
)


def test_merge_record_old_shapes_round_trip() -> None:
    for text in (ROOT_MERGE, FAILED_MERGE, CHILD_MERGE):
        record = MergeRecord.from_dict(json.loads(text))
        _same(text, record.to_dict())
    root = MergeRecord.from_dict(json.loads(ROOT_MERGE))
    assert root.outcome is not None and root.outcome.conflicts[0].workers == ("worker_1", "worker_2")
    assert root.into is not None and not root.into.moved and root.left_out[0]["worker"] == "worker_4"
    assert landing.describe(root) == (
        "merge auto stopped at a conflict in: a.py (worker_1, worker_2); merged 1 worker(s) into orchestrator/j/result, "
        "skipped worker_2; take what merged with: git merge orchestrator/j/result; no changes from worker_3 (not merged); "
        "left out: worker_4 (its gates failed); main was left alone (run: git switch main)"
    )
    failed = MergeRecord.from_dict(json.loads(FAILED_MERGE))
    assert failed.outcome is None and failed.strategy == "theirs" and failed.error == "stale lock file"
    child = MergeRecord.from_dict(json.loads(CHILD_MERGE))
    assert child.target == "orchestrator/j/worker_1" and child.into is None and child.error == "not on its branch"
    # A landing's record from before ``unchanged``, ``into`` and ``left_out``: it loads, with defaults.
    old = json.loads(ROOT_MERGE)
    for key in ("unchanged", "into", "left_out"):
        del old[key]
    loaded = MergeRecord.from_dict(old)
    assert loaded.outcome is not None and loaded.outcome.unchanged == () and loaded.into is None and loaded.left_out == ()


# An entry of WorkerRecord.gates as GateStep wrote it, and a WorkerRecord.integrated as IntegrateStep did.
GATE = (
    '{"name":"tests","required":true,"status":"failed","passed":false,"exit_code":1,"duration":0.25,'
    '"log_path":"logs/depth_0_worker_1.gate_tests.log","commit":"c1","reason":"exit code 1"}'
)
INTEGRATED = (
    '{"ref":"orchestrator/j/result","commit":null,"merged":false,'
    '"conflicts":[{"path":"a.py","workers":["worker_2"],"hunks":1,"kind":"content","resolved_by":"","predicted":false}],'
    '"at":4.5,"reason":"conflicts with work already merged into orchestrator/j/result in: a.py"}'
)


def test_gate_result_old_shape_round_trips() -> None:
    result = GateResult.from_dict(json.loads(GATE))
    assert result.status == "failed" and result.exit_code == 1 and not result.passed
    _same(GATE, result.to_dict())
    record = WorkerRecord.from_dict(
        {
            "name": "worker_1",
            "job_id": "j",
            "root_id": "j",
            "task": "t",
            "index": 1,
            "depth": 0,
            "kind": "simulated",
            "gates": [json.loads(GATE)],
        }
    )
    assert record.gates[0] == result
    assert "(exit code 1)" in gates.feedback({"name": "tests", "run": ["pytest"]}, result, "boom")


def test_integration_record_old_shape_round_trips() -> None:
    record = IntegrationRecord.from_dict(json.loads(INTEGRATED))
    assert not record.integrated.merged and record.integrated.conflicts[0].path == "a.py" and record.at == 4.5
    _same(INTEGRATED, record.to_dict())
    merged = IntegrationRecord(Integrated("orchestrator/j/result", "c2", True), 5.0)
    _same('{"ref":"orchestrator/j/result","commit":"c2","merged":true,"conflicts":[],"at":5.0,"reason":null}', merged.to_dict())


# A candidate as config/choice.py stored it in a job's config and an explicit task's node.
CANDIDATE = '{"kind":"codex","model":"o3","timeout":600,"context":{"focus":"speed"}}'


def test_candidate_spec_old_shape_round_trips() -> None:
    spec = CandidateSpec.from_dict(json.loads(CANDIDATE))
    assert spec == CandidateSpec("codex", "o3", 600, {"focus": "speed"})
    _same(CANDIDATE, spec.to_dict())
    assert parse_candidates(["claude", json.loads(CANDIDATE)]) == [
        {"kind": "claude", "model": None, "timeout": None, "context": None},
        json.loads(CANDIDATE),
    ]
    node = TaskNode.from_dict({"id": "t1", "candidates": [json.loads(CANDIDATE)]})
    assert specs_for(node, JobConfig()) == [spec]
    assert specs_for(TaskNode(id="t1"), JobConfig(attempts=2)) == [CandidateSpec(), CandidateSpec()]


# A job's and a worker's record as the code wrote them to disk while JobRecord.merge, WorkerRecord.gates and
# WorkerRecord.integrated held dicts (workspace/layout.py's json.dumps): they load into the typed fields and
# dump back byte for byte.
JOB_JSON = (
    '{"id":"j","root_id":"j","request":"r","depth":0,"parent_job_id":null,"parent_worker":null,"status":"partial","'
    'config":{"max_workers":5,"default_timeout":300.0,"max_retries":2,"execution_mode":"native","enable_recursion":'
    'true,"max_recursion_depth":3,"max_children_per_worker":3,"worker":"auto","planner":"auto","max_cost_usd":0.0,"'
    'sandbox":"auto","isolation":"auto","merge_strategy":"auto","resolver_kind":"","resolver_model":"","merge_into":"","approval":"none","gates":[],"gates'
    '_retry":0,"on_failure":"skip","ownership":"enforce","candidates":[],"attempts":1,"select":"best","judge":{},"c'
    'allback_url":""},"tasks":["a","b"],"goal":null,"planner":"","planner_cost_usd":null,"planner_tokens_in":null,"'
    'planner_tokens_out":null,"worker_names":["worker_1"],"created_at":1.0,"started_at":2.0,"ended_at":14.0,"error"'
    ':null,"notes":[],"child_seq":0,"merge":{"strategy":"auto","base":"b1","result_ref":"refs/heads/orchestrator/j/'
    'result","result_commit":"c9","merged":["worker_1"],"skipped":["worker_2"],"unchanged":["worker_3"],"conflicts"'
    ':[{"path":"a.py","workers":["worker_1","worker_2"],"hunks":2,"kind":"content","resolved_by":"","predicted":fal'
    'se}],"changes":[{"worker":"worker_1","branch":"orchestrator/j/worker_1","commit":"c1","files":["a.py"]}],"comm'
    'and":"git merge orchestrator/j/result","previous":null,"removed":false,"kept_in":null,"at":12.5,"into":{"branc'
    'h":"main","moved":false,"refused":"main was left alone","command":"git switch main","message":""},"left_out":['
    '{"worker":"worker_4","reason":"its gates failed"}]},"start_commit":null,"nodes":[],"integration":"refs/heads/o'
    'rchestrator/j/result","selections":{},"approval":null,"record_digest":null,"publish":null,"duration":12.0}'
)

WORKER_JSON = (
    '{"job_id":"j","root_id":"j","name":"worker_1","index":1,"depth":0,"task":"a","kind":"command","status":"failed'
    '","attempts":[],"created_at":1.0,"started_at":2.0,"ended_at":4.0,"waiting":null,"exit_reason":"","error":null,'
    '"failure_class":null,"output":"","files_created":[],"branch":"orchestrator/j/worker_1","commit":"c1","files_ch'
    'anged":[],"diffstat":null,"no_changes":null,"port":null,"child_job_ids":[],"cost_usd":null,"cost_basis":null,"cost_note":null,"tokens_in":null,"t'
    'okens_out":null,"peak_rss":null,"peak_processes":null,"cpu_seconds":null,"log_path":"","dir_path":"","goal":nu'
    'll,"task_id":"a","depends_on":[],"role":null,"owns":[],"model":null,"gates":[{"name":"tests","required":true,"'
    'status":"failed","passed":false,"exit_code":1,"duration":0.25,"log_path":"logs/depth_0_worker_1.gate_tests.log'
    '","commit":"c1","reason":"exit code 1"},{"name":"lint","required":false,"status":"passed","passed":true,"exit_'
    'code":0,"duration":0.25,"log_path":"logs/depth_0_worker_1.gate_tests.log","commit":"c1","reason":""}],"gated_c'
    'ommit":"c1","trespass":[],"integrated":{"ref":"orchestrator/j/result","commit":null,"merged":false,"conflicts"'
    ':[{"path":"a.py","workers":["worker_2"],"hunks":1,"kind":"content","resolved_by":"","predicted":false}],"at":4'
    '.5,"reason":"conflicts with work already merged into orchestrator/j/result in: a.py"},"unblocked":[],"candidat'
    'e":null,"selected":null,"score":null,"timeout":null,"prompt_bytes":null,"shared_prompt_bytes":null,"tokens_cac'
    'he_read":null,"node":null,"sandbox":null,"duration":2.0,"worker_id":"worker_1"}'
)


def test_job_and_worker_records_written_before_the_typed_fields_round_trip() -> None:
    job = JobRecord.from_dict(json.loads(JOB_JSON))
    assert isinstance(job.merge, MergeRecord) and job.merge.into is not None and job.merge.merged == ("worker_1",)
    assert job.merge == MergeRecord.from_dict(json.loads(ROOT_MERGE))
    _same(JOB_JSON, job.to_dict())
    _same(JOB_JSON, job.copy().to_dict())
    worker = WorkerRecord.from_dict(json.loads(WORKER_JSON))
    assert [type(g) for g in worker.gates] == [GateResult, GateResult] and worker.gates[1].name == "lint"
    assert isinstance(worker.integrated, IntegrationRecord) and not worker.integrated.merged
    _same(WORKER_JSON, worker.to_dict())
    _same(WORKER_JSON, worker.copy().to_dict())
    # A record without them (older, or not merged yet) still loads, with the empty values
    bare = JobRecord.from_dict({"id": "j", "root_id": "j", "request": "r", "merge": None})
    assert bare.merge is None and bare.to_dict()["merge"] is None
    plain = WorkerRecord.from_dict({k: v for k, v in json.loads(WORKER_JSON).items() if k not in ("gates", "integrated")})
    assert plain.gates == [] and plain.integrated is None


def test_a_slotted_record_copy_refuses_a_class_its_init_would_change() -> None:
    # Given slotted records whose __init__ would not rebuild the same record from its fields
    from dataclasses import dataclass, field

    import pytest

    from orchestrator.models import _shallow

    @dataclass(slots=True)
    class Derived:
        a: int
        b: int = field(init=False, default=0)

    @dataclass(slots=True)
    class Normalised:
        a: int

        def __post_init__(self) -> None:
            self.a = abs(self.a)

    # When each is copied, Then the copy is refused with the reason, never made different
    for record in (Derived(1), Normalised(-1)):
        with pytest.raises(TypeError, match="must take every field and do nothing else"):
            _shallow(record)
    # And the worker record's copy is a field-for-field equal, distinct record
    worker = WorkerRecord.from_dict(json.loads(WORKER_JSON))
    copied = _shallow(worker)
    assert copied == worker and copied is not worker and copied.attempts is worker.attempts
