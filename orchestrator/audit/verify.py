"""``./orchestrator.sh verify JOB``: a root job's RECORD.json against this folder's key, its logs
and the repository, naming each thing that no longer matches."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .record import CHAIN_START, FILE, chain_link, digest_of, file_digest, signed_message
from .signing_key import public_text


def verify(
    job_dir: Path,
    public_key: Ed25519PublicKey,
    ref_value: Callable[[str], str | None] | None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """(the record, what does not match: empty when everything does). ``ref_value`` reads a ref
    of the host repository (None: no repository to check the result against)."""
    path = job_dir / FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [
            f"{path} does not exist: the job has not ended, or ended before records were written, or its "
            "record could not be written (its notes say why: ./orchestrator.sh status JOB)"
        ]
    except (OSError, ValueError) as exc:
        return None, [f"{path} is not readable JSON: {exc}"]
    if not isinstance(record, dict) or not isinstance(record.get("signature"), dict):
        return None, [f"{path} has no signature: it is not a record this orchestrator wrote"]
    problems: list[str] = []
    signature = record["signature"]
    body = {k: v for k, v in record.items() if k != "signature"}
    ours = public_text(public_key)
    if signature.get("public_key") != ours:
        problems.append(f"signed by another key ({signature.get('public_key')}), not this workspace's ({ours})")
    digest = digest_of(body)
    if signature.get("digest") != digest:
        problems.append(f"the signature's digest ({signature.get('digest')}) is not the record's ({digest})")
    try:
        public_key.verify(base64.b64decode(str(signature.get("value", "")), validate=True), signed_message(digest))
    except (InvalidSignature, ValueError):
        problems.append("the signature does not match the record: RECORD.json was changed after it was signed")
    problems += _logs(job_dir, body)
    problems += _result(body, ref_value)
    return record, problems


def _logs(job_dir: Path, body: dict[str, Any]) -> list[str]:
    problems = []
    link = CHAIN_START
    entries = body.get("logs") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return ["logs: not a list of entries (the record was not written so)"]
    for entry in entries:
        relative = str(entry.get("path"))
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            problems.append(f"{relative}: not a path inside the job's folder")
            continue
        sha, size = file_digest(job_dir / relative)
        link = chain_link(link, relative, entry.get("sha256"))
        if entry.get("chain") != link:
            problems.append(f"{relative}: the digest chain breaks here (an entry was changed, added or removed)")
        if sha == entry.get("sha256"):
            continue
        if sha is None:
            problems.append(f"{relative}: gone (the record has sha256 {str(entry.get('sha256'))[:16]}…)")
        elif entry.get("sha256") is None:
            problems.append(f"{relative}: exists now, and did not when the record was written")
        else:
            problems.append(
                f"{relative}: changed ({size} bytes, sha256 {sha[:16]}…; the record: {entry.get('bytes')} bytes, "
                f"sha256 {str(entry.get('sha256'))[:16]}…)"
            )
    if body.get("log_chain") != link:
        problems.append("the log chain's end does not match the record's log_chain")
    return problems


def _result(body: dict[str, Any], ref_value: Callable[[str], str | None] | None) -> list[str]:
    result = body.get("result") or {}
    if not isinstance(result, dict):
        return ["result: not an object (the record was not written so)"]
    ref, commit = result.get("ref"), result.get("commit")
    if not ref or not commit:
        return []
    if ref_value is None:
        return [f"{ref}: no repository to check it in"]
    now = ref_value(str(ref))
    if now is None:
        return [f"{ref} is gone (the record: {commit})"]
    if now != commit:
        return [f"{ref} now points at {now}, the record says {commit}"]
    return []
