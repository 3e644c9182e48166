"""A job's shared context block (what Kage Bunshin, a sibling orchestrator, called its SharedContextStore
in its phase 2 summary).

Every worker of a job (a job's siblings, and a task's candidates) reads the same first part of its
prompt: the request and the job's goal, a summary of the repository, the job's subtasks with their
ids (one line per task, however many candidates run it), the project's own conventions and what
the orchestrator expects of every worker (prompts.render_shared_context renders it). It is written
**once**, at the job's first worker's start, as ``depth_<n>/shared_<job id>.md`` in the tree's
folder (atomically, never rewritten: a restarted server reads it back), and every worker's prompt
starts with exactly its bytes, so a model service's prompt cache reuses it across the job's
workers (the anthropic kind marks it, through ``ORCHESTRATOR_SHARED_CONTEXT``).

The repository summary, capped: a worktree job's is read with git at the job's base (a child job's
``start_commit``, else the tree's base commit), never from a worker's edits; a folder job's is the
folder the orchestrator runs in (``settings.base_dir``, the workspace left out): its top-level
layout and the names of its key files. Conventions: AGENTS.md, CLAUDE.md and CONTRIBUTING.md at
the top of that same tree, each capped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..config import Isolation, Settings
from ..git.invocation import GitFailed, git_bytes, run_git
from ..models import JobRecord
from ..workspace.layout import Workspace
from .prompts import SPAWN_COMMAND, PlanTask, SharedText, render_shared_context

log = logging.getLogger("orchestrator.sharedcontext")

CONVENTION_FILES = ("AGENTS.md", "CLAUDE.md", "CONTRIBUTING.md")
CONVENTION_CHARS = 4000  # of each convention file; past it the block says where the rest is
TOP_ENTRIES = 40  # top-level entries the summary names
KEY_FILES = 30  # key files the summary names
KEY_DEPTH = 2  # how deep key files are looked for (``packages/app/package.json``)
# Files that say what a project is and how it builds, by exact name (any case) or name prefix.
KEY_NAMES = frozenset(
    name.lower()
    for name in (
        "AGENTS.md",
        "CLAUDE.md",
        "CONTRIBUTING.md",
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "tox.ini",
        "noxfile.py",
        "Pipfile",
        "package.json",
        "tsconfig.json",
        "deno.json",
        "Cargo.toml",
        "go.mod",
        "Makefile",
        "CMakeLists.txt",
        "Justfile",
        "Dockerfile",
        "Gemfile",
        "pom.xml",
        "build.gradle",
        "build.gradle.kts",
        "composer.json",
        "mix.exs",
        ".pre-commit-config.yaml",
    )
)
KEY_PREFIXES = ("readme", "license", "requirements", "docker-compose")
FOLDER_ENTRIES = 5000  # a folder job's walk stops there (it reads KEY_DEPTH levels, not the whole tree)
GIT_TIMEOUT = 30.0
WHAT_EVERY_WORKER_DOES = "\n## What every worker does\n"  # shared_context.md.j2's heading before its own texts  # seconds for one git read (a huge repository's ls-tree)


@dataclass(frozen=True)
class SharedBlock:
    """A job's block as written: where it is (absolute) and its text (``SharedText``'s)."""

    path: Path
    shared: SharedText


def block_path(workspace: Workspace, job: JobRecord) -> Path:
    """The job's block: ``depth_<n>/shared_<job id>.md`` in the tree's folder."""
    return workspace.shared_block(job.root_id, job.depth, job.id)


class SharedContexts:
    """The blocks of the jobs whose workers start: made once per job, read back after a restart.
    Thread-safe (a job's workers start on pool threads at once); keeps the recent ones in memory."""

    KEPT = 256  # blocks held in memory; past that the cache starts afresh

    def __init__(self, workspace: Workspace, settings: Settings) -> None:
        self.workspace = workspace
        self.settings = settings
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._made: dict[str, SharedBlock] = {}

    def block(self, job: JobRecord, *, spawn: bool, directory: Path | None = None) -> SharedBlock:
        """``job``'s block: the one on disk, else made now and written. ``spawn``: whether any of
        its workers may start child jobs (the how-to is then in it). ``directory``: a worktree
        job's checkout (any of its workers'), where git reads the repository at the job's base."""
        with self._lock:
            found = self._made.get(job.id)
            if found is not None:
                return found
            one = self._locks.setdefault(job.id, threading.Lock())
        with one:  # one maker per job; the others wait for its file
            with self._lock:
                found = self._made.get(job.id)
            if found is None:
                found = self._read_or_make(job, spawn, directory)
                with self._lock:
                    if len(self._made) >= self.KEPT:
                        self._made.clear()
                    self._made[job.id] = found
                    self._locks.pop(job.id, None)
            return found

    def _read_or_make(self, job: JobRecord, spawn: bool, directory: Path | None) -> SharedBlock:
        path = block_path(self.workspace, job)
        if not path.is_file():
            text = self.render(job, spawn=spawn, directory=directory)
            write_once(path, text)
        text = path.read_text(encoding="utf-8")
        return SharedBlock(path, SharedText(text, spawn=spawn and tells_spawn(text)))

    def render(self, job: JobRecord, *, spawn: bool, directory: Path | None = None) -> str:
        """The block's text for ``job`` (no write)."""
        worktree = job.config.isolation == Isolation.WORKTREE
        names: list[str] | None = None
        where: str | None = None
        read: Callable[[str], str | None] | None = None
        if worktree:
            commit = self._base(job, directory)
            if directory is not None and commit:
                repo, base = directory, commit
                names = _git_names(repo, base)
                where = f"A git repository; the job's workers branch from commit {base[:12]}"
                read = lambda name: _git_file(repo, base, name)  # noqa: E731
        else:
            top = Path(self.settings.base_dir)
            names = _folder_names(top, exclude=self.workspace.root)
            where = f"The folder the orchestrator runs in, {top} (for reading: your own work goes in your folder)"
            read = (lambda name: _folder_file(top, name)) if names is not None else None
        repository = summarize(names, where) if names and where else None
        conventions = []
        if read is not None and names:
            present = set(names)
            for name in (n for n in CONVENTION_FILES if n in present):  # one git read per file there is
                text = read(name)
                if text is not None and text.strip():
                    conventions.append((name, cap_text(text.strip(), CONVENTION_CHARS, name)))
        return render_shared_context(
            job_id=job.id,
            request=job.request,
            goal=job.goal,
            tasks=plan_tasks(job),
            depth=job.depth,
            worktree=worktree,
            spawn=spawn,
            graph=any(n.depends_on for n in job.nodes),
            repository=repository,
            conventions=conventions,
        )

    def _base(self, job: JobRecord, directory: Path | None) -> str | None:
        """The commit a worktree job's workers start from: a child job's parent's commit, else
        the tree's base (checkouts/worktree.py writes it at the first worker's checkout), else what the
        checkout at hand holds."""
        if job.start_commit:
            return job.start_commit
        saved = self.workspace.tree_base_file(job.root_id)
        with contextlib.suppress(OSError):
            return saved.read_text(encoding="utf-8").strip() or None
        if directory is None:
            return None
        done = run_git(directory, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False, timeout=GIT_TIMEOUT)
        return done.stdout.strip() or None if done.returncode == 0 else None


def tells_spawn(text: str) -> bool:
    """Whether a block (read back: written by this server, or by one before a restart) holds the
    child-job how-to: after its last "What every worker does" heading, past every user-given text."""
    tail = text[text.rfind(WHAT_EVERY_WORKER_DOES) :] if WHAT_EVERY_WORKER_DOES in text else ""
    return f"\n    {SPAWN_COMMAND}\n" in tail


def plan_tasks(job: JobRecord) -> list[PlanTask]:
    """The job's subtasks for the block, in plan order, one per task id (a task's candidates are
    one task): ``{"id", "text", "after"}``. Records without nodes number them ``t1``, ``t2``..."""
    nodes = job.nodes if len(job.nodes) == len(job.tasks) else []
    found: list[PlanTask] = []
    seen: set[str] = set()
    for position, text in enumerate(job.tasks, 1):
        node = nodes[position - 1] if nodes else None
        task_id = node.id if node is not None else f"t{position}"
        if task_id in seen:
            continue
        seen.add(task_id)
        found.append({"id": task_id, "text": text, "after": list(node.depends_on) if node is not None else []})
    return found


def summarize(names: Sequence[str], where: str) -> str:
    """The top-level layout (folders with how many files each holds) and the key files' names,
    from a tree's paths (``git ls-files`` style, ``/``-separated; a folder walk's also names its
    folders, ending in ``/``, and its files only KEY_DEPTH levels down: then no counts), capped."""
    folders: dict[str, int] = {}
    files: list[str] = []
    keys: list[str] = []
    walked = any(name.endswith("/") for name in names)
    for name in names:
        parts = PurePosixPath(name).parts
        if not parts:
            continue
        if name.endswith("/"):
            folders.setdefault(parts[0], 0)
            continue
        if len(parts) == 1:
            files.append(parts[0])
        else:
            folders[parts[0]] = folders.get(parts[0], 0) + 1
        base = parts[-1].lower()
        if len(parts) <= KEY_DEPTH and (base in KEY_NAMES or base.startswith(KEY_PREFIXES)):
            keys.append(name)
    if walked:
        entries = [f"{folder}/" for folder in sorted(folders)]
        lines = [f"{where}."]
    else:
        entries = [f"{folder}/ ({n} file{'s' if n != 1 else ''})" for folder, n in sorted(folders.items())]
        lines = [f"{where}: {len(names)} file{'s' if len(names) != 1 else ''}."]
    entries += sorted(files)
    if entries:
        lines.append("")
        lines.append("Top level: " + ", ".join(entries[:TOP_ENTRIES]) + _more(len(entries), TOP_ENTRIES) + ".")
    if keys:
        lines.append("")
        lines.append("Key files: " + ", ".join(keys[:KEY_FILES]) + _more(len(keys), KEY_FILES) + ".")
    return "\n".join(lines)


def cap_text(text: str, limit: int, name: str) -> str:
    """``text`` cut to ``limit`` characters (at a line end when there is one), saying so."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if "\n" in cut[limit // 2 :]:
        cut = cut[: cut.rindex("\n")]
    return f"{cut.rstrip()}\n\n(... cut here: the rest is in {name}, {len(text) - len(cut)} more characters)"


def write_once(path: Path, text: str) -> bool:
    """Write ``path`` whole and only if it is not there (a temp file linked into place: no
    reader sees half of it, and a second writer never replaces the first). True: written here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return True


def _more(total: int, shown: int) -> str:
    return f", and {total - shown} more" if total > shown else ""


def _git_names(directory: Path, commit: str) -> list[str] | None:
    try:
        data = git_bytes(directory, "ls-tree", "-r", "-z", "--name-only", "--full-tree", commit, "--")
    except (GitFailed, OSError):
        log.warning("shared context: cannot list the repository at %s", commit, exc_info=True)
        return None
    return [name.decode("utf-8", "replace") for name in data.split(b"\0") if name]


def _git_file(directory: Path, commit: str, name: str) -> str | None:
    try:
        return git_bytes(directory, "cat-file", "blob", f"{commit}:{name}").decode("utf-8", "replace")
    except (GitFailed, OSError):
        return None


def _folder_names(top: Path, exclude: Path) -> list[str] | None:
    """The files of ``top`` down to KEY_DEPTH levels, at most FOLDER_ENTRIES of them (hidden
    entries and ``exclude`` left out), sorted; None: unreadable."""
    skip = exclude.resolve()
    found: list[str] = []
    try:
        for name in _walk(top, top, skip, 1):
            found.append(name)
            if len(found) >= FOLDER_ENTRIES:
                break
    except OSError:
        return None
    return sorted(found)


def _walk(top: Path, folder: Path, skip: Path, level: int) -> Iterator[str]:
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if path.resolve() == skip:
                    continue
                yield path.relative_to(top).as_posix() + "/"  # (an empty folder is still part of the layout)
                if level < KEY_DEPTH:
                    with contextlib.suppress(OSError):
                        yield from _walk(top, path, skip, level + 1)
            elif entry.is_file(follow_symlinks=False):
                yield path.relative_to(top).as_posix()


def _folder_file(top: Path, name: str) -> str | None:
    path = top / name
    try:
        if not path.is_file() or path.stat().st_size > 1_000_000:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
