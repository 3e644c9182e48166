"""Records that travel between features as dataclasses: each loads the JSON the code wrote
before it was a dataclass, and writes it back byte for byte."""

from __future__ import annotations

import json

from orchestrator.models import Approval, JobRecord, JobStatus
from orchestrator.quality import approval


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
