"""``RECORD.json``: what a root job's tree ran and why, signed, written when the tree ends (and again
after each ``merge``).

It holds the request, the effective config (secrets masked), each job's plan, every worker's
attempts (kind, model, argv without the prompt or secrets, exit status, cost, commits), every
gate's command, result and log digest, every merge (strategy, commits, conflicts, what was left
out), the candidates' scores and the judge's answers, and the result commit. Every worker and gate
log is listed with its SHA-256, and the list is chained (each link hashes the one before, the
file's path and its digest). The body (everything but ``signature``) is serialised canonically
(sorted keys, no spaces, UTF-8) and written as those bytes, one line; its SHA-256 is the record's
digest, which the signature (Ed25519, keys.py, over the format and the digest) covers and which
the job record, the status document and the webhook events carry.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import stat
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..models import JobRecord, WorkerRecord, tree_resolutions

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT = "orchestrator-record/1"
FILE = "RECORD.json"
CHAIN_START = "0" * 64
_SECRET_NAME = re.compile(r"(secret|token|password|passwd|api[_-]?key|auth)", re.I)
MASK = "***"


def canonical(body: Mapping[str, Any]) -> bytes:
    return _canonical_value(body)


def digest_of(body: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def file_digest(path: Path) -> tuple[str | None, int | None]:
    """(sha256 hex, bytes) of a file, or (None, None) when it is not there or no regular file (a
    folder, a FIFO: never waited on); read without following a link."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, None
        h = hashlib.sha256()
        size = 0
        # Plain reads of what fstat says is left, and a byte more (a file object's reader added a
        # seek, an ioctl, a second fstat and an empty read at the end, and allocated 1 MB a read):
        # a short read at or past that size is the file's end, so a worker's log is one read. A
        # file still growing is read on to its end, as before; an empty read always ends it.
        while True:
            want = min(max(st.st_size - size, 0) + 1, 1 << 20)
            chunk = os.read(fd, want)
            h.update(chunk)
            size += len(chunk)
            if not chunk or (len(chunk) < want and size >= st.st_size):
                return h.hexdigest(), size
    finally:
        os.close(fd)


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


def _resolver_logs(jobs: Sequence[JobRecord], workers: Sequence[WorkerRecord]) -> list[str]:
    """The logs of merge_strategy resolve's resolvers and of the gates run on their resolutions, in
    ``tree_resolutions``' order (each file once)."""
    found = tree_resolutions(jobs, workers)
    paths = [p for r in found for p in (*(a.log_path for a in r.attempts), *(g.log_path for g in r.gates)) if p]
    return list(dict.fromkeys(paths))


def _log_entries(
    workers: Sequence[WorkerRecord], job_dir: Path, more: Sequence[str] = ()
) -> list[tuple[str, str | None, int | None, str]]:
    """Every worker and gate log, in the workers' order, then ``more`` (the resolvers'): (path,
    sha256, bytes, the chain's link); tuples, not dicts: a 10,000-worker tree holds them all while
    its record is written."""
    entries = []
    link = CHAIN_START
    for relative in itertools.chain((p for w in workers for p in (w.log_path, *(g.log_path for g in w.gates))), more):
        if not relative:
            continue
        sha, size = file_digest(job_dir / relative)
        link = chain_link(link, relative, sha)
        entries.append((relative, sha, size, link))
    return entries


def _logs_json(entries: Sequence[tuple[str, str | None, int | None, str]]) -> bytes:
    return b"[" + b",".join(_canonical_value({"bytes": n, "chain": c, "path": p, "sha256": h}) for p, h, n, c in entries) + b"]"


def _worker_row(w: WorkerRecord, digests: Mapping[str, str | None]) -> dict[str, Any]:
    return {
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
        "log": {"path": w.log_path, "sha256": digests.get(w.log_path)} if w.log_path else None,
        "gates": [{**g.to_dict(), "log": {"path": g.log_path, "sha256": digests.get(g.log_path)}} for g in w.gates],
        "candidate": w.candidate,
        "selected": w.selected,
        "score": w.score.to_dict() if w.score is not None else None,
    }


def _job_row(j: JobRecord, status: str) -> dict[str, Any]:
    return {
        "id": j.id,
        "parent_job_id": j.parent_job_id,
        "parent_worker": j.parent_worker,
        "depth": j.depth,
        "request": j.request,
        "status": status,
        "config": masked(j.config.to_dict()),
        "planner": j.planner,
        "planner_cost_usd": j.planner_cost_usd,
        "goal": j.goal,
        "plan": [{"task": t, **(j.nodes[i].to_dict() if i < len(j.nodes) else {})} for i, t in enumerate(j.tasks)],
        "merge": j.merge.to_dict() if j.merge is not None else None,
        "selections": {task: s.to_dict() for task, s in j.selections.items()},
        "start_commit": j.start_commit,
    } | ({"checks": j.checks.to_dict()} if j.checks is not None else {})  # its pull request's checks (engine/pr_checks.py)


def write_signed(
    root: JobRecord,
    jobs: Sequence[JobRecord],
    workers: Sequence[WorkerRecord],
    job_dir: Path,
    key: Ed25519PrivateKey,
    *,
    status: str,
    ended_at: float | None,
) -> str:
    """Write the tree's RECORD.json, signed; returns its digest. The body is written as its canonical
    bytes, one worker at a time (a 10,000-worker tree's record is never held whole), hashed as it
    goes, then the signature (over the format and the digest) closes the object."""
    from .signing_key import public_text  # cryptography: imported by the first record, not by every worker

    ordered = sorted(workers, key=lambda w: (w.depth, w.job_id, w.index))
    by_depth = sorted(jobs, key=lambda j: (j.depth, j.id))
    logs = _log_entries(ordered, job_dir, _resolver_logs(by_depth, ordered))
    digests = {path: sha for path, sha, _, _ in logs}
    merge = root.merge
    small: dict[str, Any] = {
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
        "jobs": [_job_row(j, status if j.id == root.id else j.status.value) for j in sorted(jobs, key=lambda j: (j.depth, j.id))],
        "log_chain": logs[-1][3] if logs else CHAIN_START,
    }
    path = job_dir / FILE
    for stale in job_dir.glob(f".{FILE}.*.tmp"):  # a write a crash cut short (a reader only ever sees RECORD.json)
        stale.unlink(missing_ok=True)
    temp = path.with_name(f".{FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
    h = hashlib.sha256()
    with temp.open("wb") as f:

        def put(data: bytes) -> None:
            h.update(data)
            f.write(data)

        put(b"{")
        for i, name in enumerate(sorted([*small, "logs", "workers"])):
            put((b"," if i else b"") + json.dumps(name).encode() + b":")
            if name == "logs":
                put(_logs_json(logs))
                continue
            if name != "workers":
                put(_canonical_value(small[name]))
                continue
            put(b"[")
            for n, w in enumerate(ordered):
                put((b"," if n else b"") + _canonical_value(_worker_row(w, digests)))
            put(b"]")
        h.update(b"}")
        digest = "sha256:" + h.hexdigest()
        signature = {
            "algorithm": "ed25519",
            "public_key": public_text(key.public_key()),
            "digest": digest,
            "value": base64.b64encode(key.sign(signed_message(digest))).decode(),
        }
        f.write(b',"signature":' + _canonical_value(signature) + b"}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    return digest


def signed_message(digest: str) -> bytes:
    """What the signature covers: the record's format and its body's digest."""
    return f"{FORMAT}\n{digest}".encode()


def _canonical_value(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
