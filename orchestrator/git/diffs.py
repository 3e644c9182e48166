"""Unified diffs of a job's work: ``GET .../workers/<worker>/diff``,
``GET /api/v1/jobs/<id>/diff`` and ``python -m orchestrator diff``.

A worker's diff is its branch against its start point: the checkpoint its first attempt started
from (checkouts/worktree.py records it), else the merge-base of its branch with the tree's base. A job's
diff is, for a root job whose merge made a result commit, that commit against the base
(``source: "result"``); else its workers' diffs one after the other (``source: "workers"``),
each after a ``# worker ...`` line, which ``git apply`` skips as it skips an email's text.

Git runs with an argv list in the orchestrator's own repository (the one holding this folder,
or git.repo: never a path from a request), with commits taken from the records and checked to
be object ids. The output is read as a stream and capped at ``max_bytes`` (the rest is only
counted), so a huge diff costs the server no more memory than the cap. Binary files show as git
shows them by default ("Binary files a/x and b/x differ"); the user's diff drivers, textconv
filters, colours and prefixes are switched off so the text is a plain patch.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Protocol, TypedDict

from ..config import Isolation, Settings
from ..errors import Conflict
from ..models import JobRecord, WorkerRecord
from ..workspace.layout import Workspace
from .invocation import command
from .repository import GIT_TIMEOUT, GitError, find_host, git_env, run_git

DEFAULT_MAX_BYTES = 1 << 20  # what a request gets without ?max_bytes=
MAX_BYTES_CEILING = 16 << 20  # the most any request may ask for
CHUNK = 65536
_OBJECT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# A plain patch whatever the user's config says: no colour, no external diff or textconv, the
# usual a/ b/ prefixes, paths relative to the top, non-ASCII names as they are.
_DIFF = (
    "-c",
    "core.quotePath=false",
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "diff",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "-M",
)


# The API's diff bodies ("from" is a keyword, hence the call form).
DiffRange = TypedDict("DiffRange", {"branch": str, "from": str, "to": str})


class WorkerDiff(DiffRange):
    """``worker_diff``'s body."""

    job_id: str
    worker: str  # its key
    diff: str
    truncated: bool
    bytes: int  # the whole diff's size; ``diff`` holds at most max_bytes of it
    max_bytes: int


class DiffPart(DiffRange):
    """One worker's piece of a job's diff (``source: "workers"``)."""

    worker: str
    bytes: int


_JobDiffKeys = TypedDict(
    "_JobDiffKeys",
    {
        "job_id": str,
        "source": str,  # "result" or "workers"
        "from": str | None,
        "to": str | None,
        "diff": str,
        "truncated": bool,
        "bytes": int,
        "max_bytes": int,
    },
)


class JobDiff(_JobDiffKeys, total=False):
    """``job_diff``'s body: ``branch`` with ``source: "result"``, the lists with ``"workers"``."""

    branch: str | None  # the merge's result ref (None: its merge recorded no outcome)
    parts: list[DiffPart]
    pending: list[str]
    omitted: list[str]


class Reader(Protocol):
    """What the diffs read records through: the engine's Queries (live) or one on the workspace."""

    def get_job(self, job_id: str) -> JobRecord: ...

    def find_worker(self, job_id: str, depth: int | None, name: str) -> WorkerRecord: ...

    def snapshot(self, root_id: str, job_id: str | None = None) -> tuple[list[JobRecord], list[WorkerRecord]]: ...


def repository(settings: Settings, workspace: Workspace) -> Path:
    """The orchestrator's repository (the worktrees' host); Conflict with the reason when none."""
    host = find_host(settings.base_dir, workspace.root, settings.git.repo)
    if isinstance(host, str):
        raise Conflict(f"no git repository to read diffs from: {host}")
    return host.repo


def worker_diff(
    reader: Reader, settings: Settings, workspace: Workspace, job_id: str, worker: tuple[int | None, str], max_bytes: int
) -> WorkerDiff:
    """``{"job_id", "worker", "branch", "from", "to", "diff", "truncated", "bytes", "max_bytes"}``."""
    job = reader.get_job(job_id)
    record = reader.find_worker(job_id, worker[0], worker[1])
    _require_branches(reader.get_job(record.job_id) if record.job_id != job.id else job)
    repo = repository(settings, workspace)
    branch = branch_of(settings, record)
    old, new = _worker_range(repo, workspace, record, branch)
    data, total = capped_diff(repo, old, new, max_bytes)
    text, truncated = _text(data, total, max_bytes)
    return {
        "job_id": job_id,
        "worker": record.key,
        "branch": branch,
        "from": old,
        "to": new,
        "diff": text,
        "truncated": truncated,
        "bytes": total,
        "max_bytes": max_bytes,
    }


def job_diff(reader: Reader, settings: Settings, workspace: Workspace, job_id: str, max_bytes: int) -> JobDiff:
    """A job's diff: its result commit against the base when its merge made one (root job),
    else its workers' diffs in plan order. Once the cap is reached the remaining workers'
    diffs are not computed: they are listed in ``omitted`` and ``bytes`` counts the others.
    Workers that have not started have no branch yet: listed in ``pending``."""
    job = reader.get_job(job_id)
    _require_branches(job)
    repo = repository(settings, workspace)
    merge = job.merge
    result = merge.result_commit if merge is not None else None
    base = merge.base if merge is not None else None
    if (
        job.is_root
        and merge is not None
        and not merge.error
        and isinstance(result, str)
        and _is_id(result)
        and isinstance(base, str)
        and _is_id(base)
    ):
        for commit in (base, result):
            if _resolve(repo, commit) is None:
                raise Conflict(f"job {job.id}'s merge names commit {commit[:12]}, which the repository no longer has")
        data, total = capped_diff(repo, base, result, max_bytes)
        text, truncated = _text(data, total, max_bytes)
        return {
            "job_id": job.id,
            "source": "result",
            "from": base,
            "to": result,
            "branch": merge.result_ref,
            "diff": text,
            "truncated": truncated,
            "bytes": total,
            "max_bytes": max_bytes,
        }
    _, workers = reader.snapshot(job.root_id, job.id)
    own = sorted((w for w in workers if w.job_id == job.id), key=lambda w: w.index)
    pieces: list[bytes] = []
    parts: list[DiffPart] = []
    omitted: list[str] = []
    pending: list[str] = []
    left, total = max_bytes, 0
    for record in own:
        if not record.attempts:
            pending.append(record.key)
            continue
        if left <= 0:
            omitted.append(record.key)
            continue
        branch = branch_of(settings, record)
        old, new = _worker_range(repo, workspace, record, branch)
        head = f"# {record.key} ({branch}) {old[:12]}..{new[:12]}\n".encode()
        data, size = capped_diff(repo, old, new, max(0, left - len(head)))
        piece = head + data
        pieces.append(piece[:left])
        left -= len(piece)
        total += len(head) + size
        parts.append({"worker": record.key, "branch": branch, "from": old, "to": new, "bytes": size})
    text, truncated = _text(b"".join(pieces), total, max_bytes)
    truncated = truncated or bool(omitted)
    return {
        "job_id": job.id,
        "source": "workers",
        "from": None,
        "to": None,
        "parts": parts,
        "pending": pending,
        "omitted": omitted,
        "diff": text,
        "truncated": truncated,
        "bytes": total,
        "max_bytes": max_bytes,
    }


def capped_diff(repo: Path, old: str, new: str, max_bytes: int) -> tuple[bytes, int]:
    """``git diff old new`` in ``repo``: its first ``max_bytes`` bytes and its whole size. The
    rest of the output is read and counted, never kept."""
    for commit in (old, new):
        if not _is_id(commit):
            raise Conflict(f"{commit!r} is not a git object id")
    argv = command(repo, *_DIFF, old, new, "--")
    kept = bytearray()
    total = 0
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, env=git_env()) as proc:
            timer = threading.Timer(GIT_TIMEOUT, proc.kill)
            timer.start()
            try:
                assert proc.stdout is not None
                while chunk := proc.stdout.read(CHUNK):
                    total += len(chunk)
                    if len(kept) < max_bytes:
                        kept += chunk[: max_bytes - len(kept)]
            except BaseException:
                proc.kill()  # stop git rather than wait for it
                raise
            finally:
                timer.cancel()
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            said = errors.read(2000).decode("utf-8", "replace").strip()
            raise GitError(f"git diff {old[:12]} {new[:12]} failed (exit {code}): {said or 'killed after %gs' % GIT_TIMEOUT}")
    return bytes(kept), total


def branch_of(settings: Settings, record: WorkerRecord) -> str:
    """A worktree worker's branch: on its record once its work was committed; named as
    checkouts/worktree.py names it before that (a running worker's branch holds what is committed so far)."""
    return record.branch or f"{settings.git.branch_prefix}{record.root_id}/{record.name}"


def _worker_range(repo: Path, workspace: Workspace, record: WorkerRecord, branch: str) -> tuple[str, str]:
    """(start point, tip) of a worker's branch: its first attempt's checkpoint, else the
    merge-base with the tree's base; the branch as it stands, else the commit on record."""
    tip = _resolve(repo, f"refs/heads/{branch}") or (record.commit if _is_id(record.commit) else None)
    if tip is None:
        raise Conflict(f"worker {record.key}'s branch {branch} does not exist: it has not started, or its job was deleted")
    first = record.attempts[0].checkpoint if record.attempts else None
    if _is_id(first) and _resolve(repo, first or ""):
        return str(first), tip
    base = _tree_base(workspace, record.root_id)
    if base is not None:
        found = run_git(repo, "merge-base", base, tip, check=False)
        if found.returncode == 0 and _is_id(found.stdout.strip()):
            return found.stdout.strip(), tip
    raise Conflict(f"worker {record.key}'s start point is unknown: no checkpoint on record and no base commit for its tree")


def _tree_base(workspace: Workspace, root_id: str) -> str | None:
    """The commit the tree's root workers branched from (checkouts/worktree.py keeps it in the tree folder)."""
    try:
        text = workspace.tree_base_file(root_id).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text if _is_id(text) else None


def _resolve(repo: Path, name: str) -> str | None:
    done = run_git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}", check=False)
    found = done.stdout.strip()
    return found if done.returncode == 0 and _is_id(found) else None


def _require_branches(job: JobRecord) -> None:
    if job.config.isolation != Isolation.WORKTREE:
        raise Conflict(
            f"job {job.id} ran in isolation {job.config.isolation}: its workers have no git branches, so there is no diff "
            "(a job submitted with config.isolation 'worktree', or 'auto' in a git repository, has one)"
        )


def _text(data: bytes, total: int, max_bytes: int) -> tuple[str, bool]:
    """The kept bytes as text, cut back to the last whole line when the diff was cut."""
    truncated = total > len(data) or total > max_bytes
    if truncated:
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else b""
    return data.decode("utf-8", "replace"), truncated


def _is_id(value: object) -> bool:
    return isinstance(value, str) and _OBJECT_ID.match(value) is not None
