"""Job ids and worker names: how they are made, checked (ids become paths) and parsed.

A root job's id is 12 hex digits; a child job's is its root's plus ``-c<n>``, so any job's
folder is found without an index. A worker's name is ``worker_<n>[_<n>...]``, and its key in a
tree (file names, logs) ``depth_<d>_<name>``.
"""

from __future__ import annotations

import re
import secrets

from ..errors import InvalidId

ROOT_ID_RE = re.compile(r"[0-9a-f]{12}")
JOB_ID_RE = re.compile(r"(?P<root>[0-9a-f]{12})(?:-c(?P<n>[1-9][0-9]{0,6}))?")
WORKER_NAME_RE = re.compile(r"worker(?:_[1-9][0-9]{0,6}){1,40}")


def new_root_id() -> str:
    return secrets.token_hex(6)


def child_job_id(root_id: str, number: int) -> str:
    """Child ids carry their root, so any job's folder is found without an index."""
    return f"{root_id}-c{number}"


def validate_job_id(job_id: object) -> str:
    """Return the id if it is one of ours, else raise InvalidId (ids become paths)."""
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        shown = repr(job_id)[:80]
        raise InvalidId(
            f"invalid job id {shown}: expected 12 hex digits, optionally followed by -c<number> (e.g. 3f9a2c7b1d0e or 3f9a2c7b1d0e-c2)"
        )
    return job_id


def validate_worker_name(name: object) -> str:
    if not isinstance(name, str) or not WORKER_NAME_RE.fullmatch(name):
        shown = repr(name)[:80]
        raise InvalidId(f"invalid worker id {shown}: expected worker_<n>[_<n>...], e.g. worker_2 or worker_2_1")
    return name


def root_of(job_id: str) -> str:
    match = JOB_ID_RE.fullmatch(validate_job_id(job_id))
    assert match is not None
    return match.group("root")


def worker_key(depth: int, name: str) -> str:
    return f"depth_{depth}_{name}"


def parse_worker_ref(ref: str) -> tuple[int | None, str]:
    """``depth_1_worker_2_1`` -> (1, "worker_2_1"); ``worker_2_1`` -> (None, "worker_2_1")."""
    if not isinstance(ref, str):
        raise InvalidId(f"invalid worker id {ref!r}: expected worker_<n>[_<n>...] or depth_<d>_worker_<n>...")
    match = re.fullmatch(r"depth_([0-9]{1,3})_(.+)", ref)
    if match:
        return int(match.group(1)), validate_worker_name(match.group(2))
    return None, validate_worker_name(ref)
