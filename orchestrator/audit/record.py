"""``RECORD.json``: what a root job's tree ran and why, signed, written when the tree ends (and again
after each ``merge``).

It holds the request, the effective config (secrets masked), each job's plan, every worker's
attempts (kind, model, argv without the prompt or secrets, exit status, cost, commits), every
gate's command, result and log digest, every merge (strategy, commits, conflicts, what was left
out), the candidates' scores and the judge's answers, and the result commit. Every worker and gate
log is listed with its SHA-256, and the list is chained (each link hashes the one before, the
file's path and its digest). The body (everything but ``signature``) is serialised canonically
(sorted keys, no spaces, UTF-8); its SHA-256 is the record's digest, which the signature (Ed25519,
keys.py) covers and which the job record, the status document and the webhook events carry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..models import JobRecord, WorkerRecord

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT = "orchestrator.record/1"
FILE = "RECORD.json"
CHAIN_START = "0" * 64
_SECRET_NAME = re.compile(r"(secret|token|password|passwd|api[_-]?key|auth)", re.I)
MASK = "***"


def canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def digest_of(body: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def file_digest(path: Path) -> tuple[str | None, int | None]:
    """(sha256 hex, bytes) of a file, or (None, None) when it is not there; read without following a link."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None, None
    h = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def chain_link(previous: str, path: str, sha256: str | None) -> str:
    return hashlib.sha256(f"{previous}\n{path}\n{sha256 or 'missing'}".encode()).hexdigest()


def masked(value: Any, key: str = "") -> Any:
    """A config value as the record keeps it: secrets by name masked, a URL reduced to its origin."""
    if key and _SECRET_NAME.search(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, Mapping):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v, key) for v in value]
    if isinstance(value, str) and key.endswith("url") and value:
        parts = urlsplit(value)
        return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return value


def redacted_argv(argv: Sequence[str], prompt: str) -> list[str]:
    """An attempt's argv for the record: the prompt (wherever it stands) as its size and digest,
    a secret's value (``--api-key X``, ``api_key=X``) masked."""
    out: list[str] = []
    hide_next = False
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:16] if prompt else ""
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
        elif prompt and prompt in arg and len(prompt) > 16:
            out.append(arg.replace(prompt, f"<prompt: {len(prompt.encode())} bytes, sha256 {digest}…>"))
        elif "=" in arg and _SECRET_NAME.search(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=" + MASK)
        else:
            out.append(arg)
            hide_next = arg.startswith("-") and bool(_SECRET_NAME.search(arg)) and "=" not in arg
    return out


def build(
    root: JobRecord,
    jobs: Sequence[JobRecord],
    workers: Sequence[WorkerRecord],
    job_dir: Path,
    *,
    status: str,
    ended_at: float | None,
) -> dict[str, Any]:
    """The record's body (unsigned) for a root job's tree."""
    logs: list[dict[str, Any]] = []
    link = CHAIN_START

    def listed(relative: str | None) -> dict[str, Any] | None:
        nonlocal link
        if not relative:
            return None
        sha, size = file_digest(job_dir / relative)
        link = chain_link(link, relative, sha)
        entry = {"path": relative, "sha256": sha, "bytes": size, "chain": link}
        logs.append(entry)
        return {"path": relative, "sha256": sha}

    ordered = sorted(workers, key=lambda w: (w.depth, w.job_id, w.index))
    worker_rows = []
    for w in ordered:
        worker_rows.append(
            {
                "key": w.key,
                "job_id": w.job_id,
                "task_id": w.task_id,
                "task": w.task,
                "kind": w.kind,
                "model": w.model,
                "role": w.role,
                "status": w.status.value,
                "exit_reason": w.exit_reason,
                "attempts": [
                    {
                        "number": a.number,
                        "started_at": a.started_at,
                        "ended_at": a.ended_at,
                        "argv": a.argv,
                        "exit_code": a.exit_code,
                        "signal": a.signal,
                        "end_reason": a.end_reason,
                        "failure_class": a.failure_class,
                        "node": a.node,
                        "checkpoint": a.checkpoint,
                    }
                    for a in w.attempts
                ],
                "cost_usd": w.cost_usd,
                "cost_basis": w.cost_basis,
                "cost_note": w.cost_note,
                "tokens_in": w.tokens_in,
                "tokens_out": w.tokens_out,
                "branch": w.branch,
                "commit": w.commit,
                "gated_commit": w.gated_commit,
                "integrated": w.integrated.to_dict() if w.integrated is not None else None,
                "log": listed(w.log_path),
                "gates": [{**g.to_dict(), "log": listed(g.log_path)} for g in w.gates],
                "candidate": w.candidate,
                "selected": w.selected,
                "score": w.score,
            }
        )
    job_rows = [
        {
            "id": j.id,
            "parent_job_id": j.parent_job_id,
            "parent_worker": j.parent_worker,
            "depth": j.depth,
            "request": j.request,
            "status": j.status.value if j.id != root.id else status,
            "config": masked(j.config.to_dict()),
            "planner": j.planner,
            "planner_cost_usd": j.planner_cost_usd,
            "goal": j.goal,
            "plan": [{"task": t, **(j.nodes[i].to_dict() if i < len(j.nodes) else {})} for i, t in enumerate(j.tasks)],
            "merge": j.merge.to_dict() if j.merge is not None else None,
            "selections": j.selections,
            "start_commit": j.start_commit,
        }
        for j in sorted(jobs, key=lambda j: (j.depth, j.id))
    ]
    merge = root.merge
    return {
        "format": FORMAT,
        "job_id": root.id,
        "request": root.request,
        "status": status,
        "created_at": root.created_at,
        "started_at": root.started_at,
        "ended_at": ended_at,
        "result": {
            "ref": merge.result_ref if merge is not None else None,
            "commit": merge.result_commit if merge is not None else None,
            "into": merge.into.to_dict() if merge is not None and merge.into is not None else None,
        },
        "jobs": job_rows,
        "workers": worker_rows,
        "logs": logs,
        "log_chain": link,
    }


def sign(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The record as written: the body and its signature over the body's canonical bytes."""
    from .keys import public_text  # cryptography: imported by the first record, not by every worker

    data = canonical(body)
    return {
        **body,
        "signature": {
            "algorithm": "ed25519",
            "public_key": public_text(key.public_key()),
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "value": base64.b64encode(key.sign(data)).decode(),
        },
    }


def write(job_dir: Path, record: Mapping[str, Any]) -> Path:
    """RECORD.json in the job's folder, atomically (a reader sees the old record or the new one)."""
    path = job_dir / FILE
    temp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    with temp.open("w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    return path
