"""The on-disk layout of job trees: every path in the workspace is built here.

    workspace/job_<root>/
        depth_<d>/worker_<name>/        a worker's directory (its cwd); a worktree outside the workspace
                                        where no project view shows it: a link to it (workspace/checkout_place.py)
        depth_<d>/worker_<name>_recursive -> worker_<name>   (marker: it started child jobs)
        depth_<d>/LEVEL_<d>_REPORT.md
        logs/orchestrator.log           job-tree events, one line each
        logs/depth_<d>_<worker>.log     a worker's stdout+stderr, every attempt
        reports/                        aggregated reports and pictures
        state/jobs/<job id>.json        job records (the orchestrator's bookkeeping)
        state/workers/depth_<d>_<worker>.json
        state/prompts/depth_<d>_<worker>.txt
        state/exits/depth_<d>_<worker>.<attempt>   exit status, written by the worker's shim
        state/checkouts_at              where its worktrees live when outside the workspace (workspace/checkout_place.py)
        state/stages.jsonl              the stages after the workers' agents: started, verdict (workspace/stages.py)
        state/tmp/depth_<d>_<worker>/   a worker's TMPDIR (emptied when it ends, gone with the tree)
        state/tmp/.spare-<pid>-<n>/     an ended worker's emptied TMPDIR, set aside for its tree's next worker
        state/caches/<tool>/            the tree's private package caches (workers/caches.py), gone with the tree
        depth_<d>/shared_<job id>.md    a job's shared context block (workers/sharedcontext.py)
        FINAL_RESULT.md, CANDIDATES_<task id>.md   the reports (a child job's task's candidates:
                                        depth_<d>/CANDIDATES_<job id>_<task id>.md)
    workspace/.index/jobs.sqlite3       the job index's SQLite file (index/)
    workspace/.webhooks/deliveries/     the webhooks' outbox (webhooks/outbox.py)
    workspace/.deleting/job_<root>.<what>/   a tree being deleted, set aside (prune.delete_tree)

Bookkeeping lives under ``state/``, never in a worker's directory, so ``files_created`` can list
everything a worker directory holds. How bytes reach the disk is workspace/filesystem.py's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NO_SPACE_ERRNOS, InvalidId, JobNotFound, NoSpace, RefusedPath, WorkerNotFound, WorkspaceError
from ..models import JobRecord, WorkerRecord
from .filesystem import (
    NO_LINK_NO_BLOCK,
    atomic_write,
    atomic_write_many,
    durable_rename,
    encoded_blocks,
    open_regular,
    open_regular_fd,
    real_path,
    read_range,
    remove_folders,
    spread_subfolders,
    write_all,
)
from .ids import ROOT_ID_RE, root_of, validate_job_id, validate_worker_name, worker_key

MAX_FILES_LISTED = 10_000
SPARE_TMP = ".spare-"  # state/tmp/.spare-<pid>-<n>: an emptied TMPDIR a later worker of the tree takes by a rename
DELETING = ".deleting"  # trees set aside to be deleted: no listing looks in it (root_ids wants job_<id>)


@dataclass(frozen=True)
class WorkerPaths:
    """Every path of one worker, built once (``Workspace.worker_paths``)."""

    key: str  # depth_<d>_<name>
    dir: Path  # its directory (its cwd)
    log: Path  # its stdout+stderr, every attempt
    record: Path  # state/workers/<key>.json
    prompt: Path  # state/prompts/<key>.txt
    tmp: Path  # its TMPDIR
    exits: Path  # the folder of its attempts' exit files
    network: Path  # state/workers/<key>.network.jsonl: what its proxy refused it (network/egress.py), out of its sandbox's reach
    # state/workers/<key>.refusals.jsonl: what the orchestrator would not take from its sandbox
    # (workers/refusals.py record), out of its sandbox's reach: never read from its log, which it writes too
    refusals: Path

    def exit_file(self, attempt: int) -> Path:
        return self.exits / f"{self.key}.{int(attempt)}"


@dataclass(frozen=True)
class _TreeDirs:
    """The folders of one job tree, built once per tree."""

    job: Path
    state: Path
    logs: Path
    orchestrator_log: Path
    jobs: Path
    workers: Path
    prompts: Path
    exits: Path
    tmp: Path
    depths: dict[int, Path]

    @classmethod
    def under(cls, job: Path) -> _TreeDirs:
        state, logs = job / "state", job / "logs"
        return cls(
            job=job,
            state=state,
            logs=logs,
            orchestrator_log=logs / "orchestrator.log",
            jobs=state / "jobs",
            workers=state / "workers",
            prompts=state / "prompts",
            exits=state / "exits",
            tmp=state / "tmp",
            depths={},
        )

    def depth(self, depth: int) -> Path:
        found = self.depths.get(depth)
        if found is None:
            found = self.depths.setdefault(depth, self.job / f"depth_{depth}")
        return found


def index_database(root: Path) -> Path:
    """The job index's SQLite file: in a dot folder, where no listing of trees looks."""
    return root / ".index" / "jobs.sqlite3"


def webhook_deliveries(root: Path) -> Path:
    """The webhooks' outbox: a file per delivery."""
    return root / ".webhooks" / "deliveries"


def candidates_report(job: JobRecord, task_id: str) -> str:
    """A task's CANDIDATES file, relative to the root job's folder: a child job's carries its id,
    since task ids are unique only within a job."""
    if job.is_root:
        return f"CANDIDATES_{task_id}.md"
    return f"depth_{job.depth}/CANDIDATES_{job.id}_{task_id}.md"


def _empty_folder(path: Path) -> bool:
    """True when the folder at ``path`` holds no entry (one listing; OSError when it cannot be listed)."""
    with os.scandir(path) as entries:
        return next(entries, None) is None


def read_json(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return json.loads(handle.read())


class Workspace:
    """The job trees under one workspace root."""

    def __init__(self, root: Path | str, *, durable: bool = True) -> None:
        self.root = Path(root).resolve()
        self.durable = durable
        # Paths built once: every ``/`` of a Path costs microseconds, and a worker's run reads its
        # dozen paths over and over (its thread, the monitor, its records), so the folders of a
        # tree and the paths of its workers are cached. Caches are cleared when full, so a
        # long-running server's stay small; a path is the same however often it is rebuilt.
        self._trees: dict[str, _TreeDirs] = {}
        self._workers: dict[tuple[str, int, str], WorkerPaths] = {}
        # Each tree's emptied TMPDIRs set aside by ``release_worker_tmp`` for ``make_worker_tmp`` (names in
        # its state/tmp). In memory only: what a crash leaves there is an empty folder that goes with the tree.
        self._spare_tmps: dict[str, list[str]] = {}
        self._spares_lock = threading.Lock()
        self._spare_count = 0
        self._tmp_made: tuple[int, int, int] | None = None  # the owner, group and mode of a TMPDIR this process made

    # -- layout -------------------------------------------------------------
    @property
    def supervisor_dir(self) -> Path:
        """The workers' supervisor's socket and lock (process/supervisor.py): mode 0700, hidden from sandboxes."""
        return self.root / ".supervisor"

    def _tree(self, root_id: str) -> _TreeDirs:
        found = self._trees.get(root_id)
        if found is None:
            if not isinstance(root_id, str) or not ROOT_ID_RE.fullmatch(root_id):
                raise InvalidId(f"invalid root job id {root_id!r}")
            if len(self._trees) >= 4096:
                self._trees.clear()
            found = self._trees[root_id] = _TreeDirs.under(self.root / f"job_{root_id}")
        return found

    def worker_paths(self, root_id: str, depth: int, name: str) -> WorkerPaths:
        """Every path of one worker (its directory, log, record, prompt, TMPDIR, exit files)."""
        found = self._workers.get((root_id, depth, name))
        if found is None:
            tree = self._tree(root_id)
            depth = int(depth)
            key = worker_key(depth, validate_worker_name(name))
            found = WorkerPaths(
                key=key,
                dir=tree.depth(depth) / name,
                log=tree.logs / f"{key}.log",
                record=tree.workers / f"{key}.json",
                prompt=tree.prompts / f"{key}.txt",
                tmp=tree.tmp / key,
                exits=tree.exits,
                network=tree.workers / f"{key}.network.jsonl",
                refusals=tree.workers / f"{key}.refusals.jsonl",
            )
            if len(self._workers) >= 2048:
                self._workers.clear()
            self._workers[(root_id, depth, name)] = found
        return found

    def job_dir(self, root_id: str) -> Path:
        return self._tree(root_id).job

    def tree_base_file(self, root_id: str) -> Path:
        """Git isolation: the commit a tree's root workers branched from (checkouts/worktree.py writes it;
        landing and diffs read it), kept so a restarted server uses the same base."""
        return self.job_dir(root_id) / "git_base"

    def tree_checkouts_file(self, root_id: str) -> Path:
        """Where a tree's worktrees live when outside the workspace (workspace/checkout_place.py), written at its
        first such worktree, so a changed git.checkouts_root or a restart finds them where they are."""
        return self._tree(root_id).state / "checkouts_at"

    def depth_dir(self, root_id: str, depth: int) -> Path:
        return self._tree(root_id).depth(int(depth))

    def shared_block(self, root_id: str, depth: int, job_id: str) -> Path:
        """A job's shared context block, in its depth folder (child jobs share a depth folder)."""
        return self.depth_dir(root_id, depth) / f"shared_{validate_job_id(job_id)}.md"

    def worker_dir(self, root_id: str, depth: int, name: str) -> Path:
        return self.worker_paths(root_id, depth, name).dir

    def recursive_marker(self, root_id: str, depth: int, name: str) -> Path:
        return self.depth_dir(root_id, depth) / f"{validate_worker_name(name)}_recursive"

    def logs_dir(self, root_id: str) -> Path:
        return self._tree(root_id).logs

    def worker_log(self, root_id: str, depth: int, name: str) -> Path:
        return self.worker_paths(root_id, depth, name).log

    def orchestrator_log(self, root_id: str) -> Path:
        return self._tree(root_id).orchestrator_log

    def reports_dir(self, root_id: str) -> Path:
        return self.job_dir(root_id) / "reports"

    def level_report(self, root_id: str, depth: int) -> Path:
        return self.depth_dir(root_id, depth) / f"LEVEL_{int(depth)}_REPORT.md"

    def final_report(self, root_id: str) -> Path:
        return self.job_dir(root_id) / "FINAL_RESULT.md"

    def timeline_svg(self, root_id: str) -> Path:
        """The tree's Gantt picture, written with FINAL_RESULT.md (which links to it)."""
        return self.reports_dir(root_id) / "timeline.svg"

    def state_dir(self, root_id: str) -> Path:
        return self._tree(root_id).state

    def job_record_path(self, job_id: str) -> Path:
        return self._tree(root_of(job_id)).jobs / f"{job_id}.json"

    def worker_record_path(self, root_id: str, depth: int, name: str) -> Path:
        return self.worker_paths(root_id, depth, name).record

    def exit_file(self, root_id: str, depth: int, name: str, attempt: int) -> Path:
        """Where a worker's shim writes one attempt's exit status (it outlives the server)."""
        return self.worker_paths(root_id, depth, name).exit_file(attempt)

    def planning_dir(self) -> Path:
        """A scratch folder for one AI planning call (the job tree does not exist yet)."""
        path = self.root / ".planning" / secrets.token_hex(6)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def worker_tmp(self, root_id: str, depth: int, name: str) -> Path:
        """A worker's TMPDIR: private, outside its directory, emptied when it ends."""
        return self.worker_paths(root_id, depth, name).tmp

    def make_worker_tmp(self, root_id: str, depth: int, name: str) -> Path:
        """A worker's TMPDIR, there and empty when it had none (kept as it is when it has one: a worker re-adopted
        after a restart, a retry). An ended worker's emptied TMPDIR that its tree set aside is taken by a rename, so a
        tree makes about as many TMPDIRs as it runs workers at once, not one per worker: on ext4 without a journal each
        new inode, and each freed one, costs every later creation (``release_worker_tmp``)."""
        path = self.worker_tmp(root_id, depth, name)
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                return path
        except FileNotFoundError:
            pass
        else:  # something else there: as before, mkdir says what
            path.mkdir(parents=True, exist_ok=True)
            return path
        while (spare := self._take_spare_tmp(root_id)) is not None:
            try:
                if self._as_made(spare):
                    os.rename(spare, path)
                    return path
            except OSError:
                pass  # gone (its tree's TMPDIRs removed): nothing to take
        path.mkdir(parents=True, exist_ok=True)
        if self._tmp_made is None:
            made = os.lstat(path)
            self._tmp_made = (made.st_uid, made.st_gid, stat.S_IMODE(made.st_mode))
        return path

    def _as_made(self, spare: Path) -> bool:
        """A spare is taken only as a new TMPDIR would be: a folder of this process's owner, group and mode with no
        entry and no extended attribute (no ACL its last worker set). Any other is left for its tree's end."""
        found = os.lstat(spare)
        if not stat.S_ISDIR(found.st_mode) or (found.st_uid, found.st_gid, stat.S_IMODE(found.st_mode)) != self._tmp_made:
            return False
        return not os.listxattr(spare, follow_symlinks=False) and _empty_folder(spare)

    def release_worker_tmp(self, root_id: str, depth: int, name: str) -> None:
        """A worker ended (its processes swept): what it left in its TMPDIR goes now; an empty one is set aside
        for the next worker of its tree (``make_worker_tmp``), and all go when the tree ends. Not removed one by
        one: on ext4 without a journal each inode freed mid-run slows every later file creation for minutes."""
        path = self.worker_tmp(root_id, depth, name)
        try:
            left = not _empty_folder(path)
        except OSError:
            return
        if left:
            shutil.rmtree(path, ignore_errors=True)
            return
        with self._spares_lock:
            self._spare_count += 1
            spare = f"{SPARE_TMP}{os.getpid()}-{self._spare_count}"
        try:
            os.rename(path, path.parent / spare)
        except OSError:
            return  # it stays where it is until its tree ends, as an empty TMPDIR always did
        with self._spares_lock:
            self._spare_tmps.setdefault(root_id, []).append(spare)

    def _take_spare_tmp(self, root_id: str) -> Path | None:
        with self._spares_lock:
            spares = self._spare_tmps.get(root_id)
            if not spares:
                return None
            return self._tree(root_id).tmp / spares.pop()

    def tree_caches(self, root_id: str) -> Path:
        """A tree's private package caches (npm, pip, go...: workers/caches.py): written by all its
        workers, setups and gates, never by another tree's; kept until the tree is deleted."""
        return self._tree(root_id).state / "caches"

    def tree_objects(self, root_id: str) -> Path:
        """A tree's sandboxed git object store (git/worker_objects.py): what its workers' git writes,
        written by its workers, resolvers and gates only, never read by another tree's; goes with the tree."""
        return self._tree(root_id).state / "git-objects"

    def tree_git_dirs(self, root_id: str) -> Path:
        """The git dirs of a tree's sandboxed workers where no mount shows them a view (Landlock:
        git/worker_gitdir.py), one per worktree; written by those workers, goes with the tree."""
        return self._tree(root_id).state / "git-dirs"

    def tree_packed_refs(self, root_id: str) -> Path:
        """The repository's packed-refs as a tree's sandboxes see it: without other trees' branches
        (git/worker_refs.py), written at each sandbox's start."""
        return self._tree(root_id).state / "packed-refs"

    def remove_tree_tmp(self, root_id: str) -> None:
        """A tree ended: all its workers' TMPDIRs and its spares go, at once (most are empty: ``release_worker_tmp``)."""
        with self._spares_lock:
            self._spare_tmps.pop(root_id, None)
        remove_folders(self._tree(root_id).tmp)

    def prompt_path(self, root_id: str, depth: int, name: str) -> Path:
        return self.worker_paths(root_id, depth, name).prompt

    def relative(self, root_id: str, path: Path) -> str:
        """A path inside a job folder, relative to it (portable in reports and records)."""
        # Paths' strings are normal (no "." part, no doubled or trailing "/"): a prefix of whole parts
        # is ``relative_to``'s answer, without its parsing (two a worker as its job is made).
        inside, folder = os.fspath(path), os.fspath(self.job_dir(root_id))
        if inside.startswith(folder) and inside[len(folder) : len(folder) + 1] == "/" and len(inside) > len(folder) + 1:
            return inside[len(folder) + 1 :]
        return str(path.relative_to(folder))

    def contains(self, path: Path) -> bool:
        """True when ``path`` resolves inside the workspace root (symlinks followed)."""
        try:
            path.resolve().relative_to(self.root)
        except (ValueError, OSError):
            return False
        return True

    # -- creation -----------------------------------------------------------
    def check_writable(self) -> None:
        """Fail early, with the fix, when the workspace cannot take a job."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            spread_subfolders(self.root)
            probe = self.root / f".probe-{os.getpid()}-{secrets.token_hex(3)}"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as exc:
            raise WorkspaceError(
                f"workspace {self.root} is not writable ({exc.strerror or exc}). "
                "Fix its permissions or free disk space, or set orchestrator.workspace_root in config.yaml.",
                path=str(self.root),
            ) from None

    def create_job_tree(self, root_id: str) -> Path:
        """Make a new root job's folders; on failure remove what was made."""
        job_dir = self.job_dir(root_id)
        try:
            job_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise WorkspaceError(f"job folder {job_dir} already exists; not touching it") from None
        except OSError as exc:
            raise WorkspaceError(
                f"cannot create job folder {job_dir}: {exc.strerror or exc}. "
                "Check the workspace's permissions and free space (orchestrator.workspace_root).",
            ) from None
        try:
            spread_subfolders(job_dir)
            (job_dir / "state").mkdir()
            spread_subfolders(job_dir / "state")
            for sub in ("logs", "reports", "state/jobs", "state/workers", "state/prompts", "state/exits"):
                (job_dir / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise WorkspaceError(
                f"cannot create job folder {job_dir}: {exc.strerror or exc}. "
                "Check the workspace's permissions and free space (orchestrator.workspace_root).",
            ) from None
        return job_dir

    def remove_job_tree(self, root_id: str) -> None:
        shutil.rmtree(self.job_dir(root_id), ignore_errors=True)

    def set_aside(self, root_id: str, what: str) -> Path | None:
        """Move a root's folder, in one durable rename, to ``.deleting/job_<root>.<what>``, where no
        listing looks (``what``: what else its deletion removes, for a restart to finish it the
        same way). From here the tree is deleted. None when its folder is gone already."""
        job_dir = self.job_dir(root_id)
        aside = self.root / DELETING / f"{job_dir.name}.{what}"
        aside.parent.mkdir(exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)  # an earlier deletion of this very tree, cut short
        with contextlib.suppress(FileNotFoundError):
            durable_rename(job_dir, aside, durable=self.durable)
            return aside
        return None

    def set_aside_trees(self) -> list[tuple[str, str, Path]]:
        """The deletions a crash cut short: (root id, what, folder), as ``set_aside`` left them."""
        folder = self.root / DELETING
        names = [p.name[4:].partition(".") for p in folder.glob("job_*")]
        return [(root, what, folder / f"job_{root}.{what}") for root, _, what in names if ROOT_ID_RE.fullmatch(root) and what]

    def create_worker_dir(self, root_id: str, depth: int, name: str) -> Path:
        path = self.worker_dir(root_id, depth, name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mark_recursive(self, root_id: str, depth: int, name: str) -> None:
        """A visible marker beside the worker's folder; the folder itself is not renamed (it is a cwd)."""
        marker = self.recursive_marker(root_id, depth, name)
        with contextlib.suppress(OSError):
            marker.symlink_to(name, target_is_directory=True)

    # -- records ------------------------------------------------------------
    def save_job(self, job: JobRecord) -> None:
        self.save_job_dict(job.id, job.to_dict())

    def save_job_dict(self, job_id: str, data: dict[str, Any]) -> None:
        self._write_json(self.job_record_path(job_id), data)

    def save_worker(self, worker: WorkerRecord) -> None:
        self.save_worker_dict(worker.root_id, worker.depth, worker.name, worker.to_dict())

    def save_worker_dict(self, root_id: str, depth: int, name: str, data: dict[str, Any]) -> None:
        self._write_json(self.worker_record_path(root_id, depth, name), data)

    def load_job(self, job_id: str) -> JobRecord:
        path = self.job_record_path(validate_job_id(job_id))
        try:
            return JobRecord.from_dict(read_json(path))
        except FileNotFoundError:
            raise JobNotFound(f"job {job_id} not found in {self.root}") from None

    def load_worker(self, root_id: str, depth: int, name: str) -> WorkerRecord:
        path = self.worker_record_path(root_id, depth, name)
        try:
            return WorkerRecord.from_dict(read_json(path))
        except FileNotFoundError:
            pass
        jobs, workers = self.load_tree(root_id)
        for worker in workers:
            if worker.depth == depth and worker.name == name:
                return worker
        raise WorkerNotFound(f"worker {worker_key(depth, name)} not found in job tree {root_id}")

    def pending_worker(self, job: JobRecord, index: int) -> WorkerRecord:
        """The record of a job's worker that has not started: derived from the job record alone,
        so submitting a job writes one file, not one per worker."""
        name = job.worker_names[index - 1]
        node = job.nodes[index - 1] if len(job.nodes) >= index else None
        return WorkerRecord(
            job_id=job.id,
            root_id=job.root_id,
            name=name,
            index=index,
            depth=job.depth,
            task=job.tasks[index - 1],
            goal=job.goal,
            kind=node.kind if node and node.kind else job.config.worker,  # its role's kind (roles.apply_roles) wins
            created_at=job.created_at,
            dir_path=self.relative(job.root_id, self.worker_dir(job.root_id, job.depth, name)),
            log_path=self.relative(job.root_id, self.worker_log(job.root_id, job.depth, name)),
            **(node.worker_fields() if node else {}),
        )

    def load_tree(self, root_id: str) -> tuple[list[JobRecord], list[WorkerRecord]]:
        """Every job and worker record of a root's tree (temp files ignored); workers that
        never started are derived from their job's record."""
        jobs, walk = self.walk_tree(root_id)
        workers = list(walk)
        workers.sort(key=lambda w: (w.depth, w.created_at, w.index))
        return jobs, workers

    def walk_tree(self, root_id: str) -> tuple[list[JobRecord], Iterator[WorkerRecord]]:
        """``load_tree``'s records, its workers read one at a time as the iterator is drawn, in no
        order (the pending ones last): a reader that keeps none of them (the job index's rows of
        a tree at its end) never holds a 10,000-worker tree whole. A record that cannot be read
        raises from the iterator."""
        state = self.state_dir(root_id)
        jobs = [JobRecord.from_dict(read_json(p)) for p in _records(state / "jobs")]
        jobs.sort(key=lambda j: (j.depth, j.created_at, j.id))
        return jobs, self._walk_workers(jobs, _records(state / "workers"))

    def _walk_workers(self, jobs: list[JobRecord], paths: Iterator[Path]) -> Iterator[WorkerRecord]:
        written: set[tuple[str, str]] = set()
        for path in paths:
            worker = WorkerRecord.from_dict(read_json(path))
            written.add((worker.job_id, worker.name))
            yield worker
        for job in jobs:
            for index, name in enumerate(job.worker_names, 1):
                if (job.id, name) not in written:
                    yield self.pending_worker(job, index)

    def root_ids(self) -> list[str]:
        """Every root job folder in the workspace, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        with os.scandir(self.root) as entries:  # closed even when a folder vanishes under the scan
            for entry in entries:
                if entry.name.startswith("job_") and ROOT_ID_RE.fullmatch(entry.name[4:]) and entry.is_dir(follow_symlinks=False):
                    found.append((entry.stat().st_mtime, entry.name[4:]))
        return [root for _, root in sorted(found, reverse=True)]

    def files_in(self, directory: Path) -> list[str]:
        """Files under a worker directory, relative to it; links are listed, never followed."""
        found: list[str] = []
        if real_path(directory) != os.path.abspath(directory) or not directory.is_dir():
            return found  # a worker that swapped its folder (or a parent) for a link does not get the target listed
        for base, dirs, files in os.walk(directory, followlinks=False):
            rel = os.path.relpath(base, directory)
            for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(base, d))):
                found.append(name if rel == "." else os.path.join(rel, name))
                if len(found) >= MAX_FILES_LISTED:
                    return sorted(found)
            dirs.sort()
        return sorted(found)

    def append_line(self, path: Path, line: str) -> None:
        self.append_log(path, (line if line.endswith("\n") else line + "\n").encode("utf-8"))

    def append_log(self, path: Path, data: bytes, *, own_line: bool = False) -> int:
        """Append to a log; returns the offset where ``data`` starts. With ``own_line``, ``data``
        starts a line of its own: a newline goes first when the log's last line lacks one (a
        worker's output), read through the same descriptor. A link, FIFO or device a worker
        planted in the log's place is unlinked (its target is never written) and the log starts
        afresh."""
        mode = os.O_RDWR if own_line else os.O_WRONLY
        for _ in range(2):
            try:
                fd = os.open(path, mode | os.O_APPEND | os.O_CREAT | NO_LINK_NO_BLOCK, 0o644)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENXIO):
                    raise
                fd = -1
            found = os.fstat(fd) if fd >= 0 else None
            if found is not None and stat.S_ISREG(found.st_mode):
                try:
                    # Where it starts: the size its fstat gave (as good as a seek to the end, which the
                    # O_APPEND write does not wait on either; one system call fewer per line).
                    offset = found.st_size
                    if own_line and offset > 0 and os.pread(fd, 1, offset - 1) != b"\n":
                        data = b"\n" + data
                        offset += 1
                    write_all(fd, data)
                finally:
                    os.close(fd)
                return offset
            if fd >= 0:
                os.close(fd)
            os.unlink(path)
        raise RefusedPath(f"cannot append to {path.name}: something keeps replacing it")

    def log_event(self, root_id: str, message: str) -> None:
        self.append_line(self.orchestrator_log(root_id), event_line(message))

    def append_lines(self, path: Path, lines: list[str]) -> None:
        """Several lines appended in one write (``append_log``: one open, a planted link refused)."""
        self.append_log(path, "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode("utf-8"))

    def find_line_in_log(self, path: Path, marker: bytes, max_bytes: int = 64 << 20) -> tuple[int, bytes] | None:
        """(offset, line) of the last line starting with ``marker`` among a log's last
        ``max_bytes``, or None. A link planted in the log's place has no lines."""
        try:
            found = open_regular_fd(path)
        except (RefusedPath, OSError):
            return None
        if found is None:
            return None
        fd, size = found
        start = max(0, size - max_bytes)
        try:
            data = read_range(fd, start, size)
        except OSError:
            return None
        finally:
            os.close(fd)
        at = data.rfind(b"\n" + marker)
        if at >= 0:
            begin = at + 1
        elif start == 0 and data.startswith(marker):
            begin = 0
        else:
            return None
        end = data.find(b"\n", begin)
        return start + begin, data[begin : end if end >= 0 else len(data)]

    def read_tail(self, path: Path, lines: int = 20, max_bytes: int = 64 * 1024) -> str:
        """The last lines of a log, reading at most ``max_bytes`` from its end (a planted link reads as empty)."""
        return "\n".join(self.read_from(path, 0, max_bytes).splitlines()[-lines:])

    def read_from(self, path: Path, offset: int, max_bytes: int) -> str:
        """Up to ``max_bytes`` of a log from ``offset``, keeping the end (a result is at the end).
        A link planted in the log's place reads as empty: its target never becomes a worker's output."""
        try:
            found = open_regular_fd(path)
        except RefusedPath:
            return ""
        if found is None:
            return ""
        fd, size = found
        try:  # plain fd calls: this runs once per worker on the engine's busy threads
            data = read_range(fd, max(offset, size - max_bytes), size)
        finally:
            os.close(fd)
        return data.decode("utf-8", errors="replace")

    def write_text(self, path: Path, text: str | Iterable[str]) -> None:
        """Atomically; ``text`` may come in pieces, streamed to the file in blocks of ~64 KB."""
        self._write_bytes(path, text.encode("utf-8") if isinstance(text, str) else encoded_blocks(text))

    def save_json_together(self, items: list[tuple[Path, dict[str, Any]]]) -> None:
        """Several records at once (``atomic_write_many``): as durable as each written alone,
        with the syncs shared. Raises NoSpace or WorkspaceError as ``_write_bytes`` does."""
        try:
            atomic_write_many([(path, _json_bytes(data)) for path, data in items], durable=self.durable)
        except OSError as exc:
            raise _write_error(f"{len(items)} records", exc) from None

    def _write_json(self, path: Path, data: dict[str, Any]) -> None:
        self._write_bytes(path, _json_bytes(data))

    def _write_bytes(self, path: Path, data: bytes | Iterable[bytes]) -> None:
        try:
            atomic_write(path, data, durable=self.durable)
        except OSError as exc:
            raise _write_error(str(path), exc) from None


def event_line(message: str, now: float | None = None) -> str:
    """A plain line of a tree's orchestrator.log: its UTC time (``now``, else the clock's), then ``message``."""
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z {message}"


def _json_bytes(data: dict[str, Any]) -> bytes:
    # Compact: json's C encoder is used only without indent (several times faster).
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _write_error(what: str, exc: OSError) -> WorkspaceError:
    """What a failed write of ``what`` raises: NoSpace for a full disk (or quota), else WorkspaceError."""
    kind = NoSpace if exc.errno in NO_SPACE_ERRNOS else WorkspaceError
    return kind(f"cannot write {what}: {exc.strerror or exc}. Check free space and permissions.")


def _records(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return iter(())
    with os.scandir(folder) as found:  # a list: the scan is closed even when a caller stops at a bad record
        return iter([folder / e.name for e in found if e.name.endswith(".json") and not e.name.startswith(".")])


def read_served(
    workspace: Workspace, path: Path, *, offset: int = 0, tail_lines: int = 0, max_bytes: int = 4 << 20
) -> tuple[bytes, int]:
    """Read a log or report for the API without following a link a worker may have planted:
    the path must resolve inside the workspace and the file itself is opened with O_NOFOLLOW.
    Returns (data, the offset just past it): a follower goes on from there, and a line written
    while this read ran is never both in this answer and in the next."""
    if not workspace.contains(path.parent):
        raise RefusedPath(f"refusing to serve {path.name}: it is outside the workspace")
    handle = open_regular(path)
    if handle is None:
        return b"", 0
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if tail_lines:
            begin = max(0, size - max_bytes)
            handle.seek(begin)
            data = handle.read(size - begin)  # not past the size measured: that is where a follower resumes
            lines = data.splitlines(keepends=True)[-tail_lines:]
            return b"".join(lines), begin + len(data)
        start = min(offset, size)
        begin = max(start, size - max_bytes) if offset == 0 else start
        handle.seek(begin)
        data = handle.read(min(max_bytes, size - begin))
        return data, begin + len(data)
