"""Merging workers' branches into a job's result branch, without touching any working tree.

Every merge is computed in the object store: ``git merge-tree`` for the tree (git >= 2.38),
and every commit written one way, by ``objects.CommitWriter``: the bytes ``git commit-tree`` would
write (``objects.commit_body``), as a loose object written by Python where the repository is
plain, sha1 and git's default object config, so the next merge waits for no process; else one
``git hash-object -t commit --stdin-paths`` process writes them all; and, for ``theirs``, ``git merge-file --theirs`` on the conflicting blobs in
a temporary directory plus a temporary index file to write the resolved tree. The user's index, working trees and stash are never written.

The result holds one commit per merged worker, whose only parent is the result so far: the
worker's gated work squashed, so none of its other commits (an attempt whose commit failed a
gate, before ``gates_retry`` gave it another) is an ancestor of the result; the worker's own
branch keeps its whole history. Each commit names its source in an ``Orchestrator-Commit:``
trailer (how a merge that starts from a graph job's integration branch knows who is in it). A
worker whose work adds nothing to the result gets no commit and is listed as ``unchanged``,
never as merged.

The result ref moves once, at the end, by an atomic ``update-ref`` with its old value checked
(see job_refs, which also holds ``advance`` and ``delete_job_refs``): a crash before that leaves
only unreferenced objects, and the merge runs again. Its commits are deterministic (by the user,
commits.identity_of, dated the newest input's committer date), so running the same merge twice
gives the same commit and moves nothing. ``manual`` merges nothing and removes a result branch an
earlier merge made (``removed``), so the branch never holds work the record does not list.

Disjoint branches that all descend from the base (the common case: workers on separate files)
need no merge to know the answer; where Python may write loose objects, the same chain of trees
and commits is written by it (``objects``) instead of a merge-tree per branch; elsewhere those
branches are merged one by one, as any others.

git 2.39 has neither ``merge-tree --merge-base`` nor ``-X``: the sequential merge needs no
explicit base (each step merges the result so far with the next branch, whose merge base git
finds), and ``theirs`` is resolved per hunk by ``merge-file --theirs``, the same rule as
``git merge -X theirs``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .. import failpoints
from ..config import MergeStrategy
from ..errors import ConfigError, ValidationError
from ..outcomes import FileConflict, Integrated, MergeOutcome, Resolution, WorkerChanges
from . import conflicts as conflict_text
from . import drivers as merge_drivers
from .commits import Identity, Source, identity_of, squashed_in
from .invocation import GitFailed, command, git_bytes, git_env, run_git
from .job_refs import (
    branch_ref,
    is_ancestor,
    job_prefix,
    read_commits,
    ref_value,
    remove_ref,
    resolve_all,
    resolve_remembered,
    update_ref,
)
from .objects import CommitWriter, LooseObjects, commit_body, loose_objects, tree_body, tree_entries, tree_record
from .repository import common_dir, git_version

T = TypeVar("T")
MIN_GIT = (2, 38)
STRATEGIES = tuple(member.value for member in MergeStrategy)
# git's file modes, as git prints them (``diff-tree --raw``, ``ls-files --stage``, merge-tree's stages):
# git's own protocol, not a choice of ours.
GIT_NO_FILE = "000000"  # the side of a change where the path does not exist (added or deleted)
GIT_REGULAR_FILES = ("100644", "100755")  # a regular file, and an executable one


@dataclass(frozen=True)
class Conflicted:
    """A worker's commit that conflicts with the result so far, as ``merge_strategy: resolve``
    hands it to a resolver (delivery/resolving.py), which answers with a ``Resolution``: its
    ``tree`` (accepted) becomes the worker's commit on ``head``; refused, the worker is left out."""

    worker: str
    commit: str  # the worker's commit being merged
    head: str  # the result so far
    conflicts: tuple[FileConflict, ...]
    earlier: tuple[str, ...]  # the workers already in ``head``


Resolver = Callable[[Conflicted], Resolution]


class GitTooOld(ConfigError):
    """The installed git lacks a feature the orchestrator needs."""


def require_git(repo: str | Path = ".") -> None:
    """GitTooOld unless the installed git can merge in the object store (asked once per process)."""
    found = git_version()
    if found is None:
        raise GitTooOld("git is not installed: merging needs git >= 2.38; install it or set git.isolation: folder")
    if found[:2] < MIN_GIT:
        raise GitTooOld(
            f"git {'.'.join(map(str, found))} is too old: merging needs git >= {'.'.join(map(str, MIN_GIT))} "
            "(for 'git merge-tree --write-tree'); install a newer git or set git.isolation: folder"
        )


def changed_files(repo: str | Path, base: str, commits: list[str]) -> dict[str, dict[str, tuple[str, str] | None]]:
    """commit -> {path: (mode, blob) it has there, None when it deleted it} against ``base``, for
    all commits in one ``diff-tree --stdin``. Each line is "<commit> <base>" (a commit and the
    parent to compare it with): each diff is headed by its commit, its "new" side the commit's."""
    lines = "".join(f"{c} {base}\n" for c in commits)
    out = run_git(repo, "diff-tree", "--stdin", "-r", "--raw", "-z", "--no-renames", "--no-abbrev", input=lines).stdout
    found: dict[str, dict[str, tuple[str, str] | None]] = {c: {} for c in commits}
    tokens = iter(filter(None, out.split("\0")))
    current: dict[str, tuple[str, str] | None] = {}
    for token in tokens:
        if token.startswith(":"):
            _, mode, _, blob, _ = token[1:].split(" ")
            current[next(tokens)] = None if mode == GIT_NO_FILE else (mode, blob)
        elif token in found:
            current = found[token]
    return found


# -- merge-tree ---------------------------------------------------------------------------------


@dataclass
class _TreeMerge:
    tree: str
    stages: dict[str, dict[int, tuple[str, str]]]  # path -> stage -> (mode, blob)
    refused: dict[str, str] = field(default_factory=dict)  # path -> the user's merge driver it needed, not run
    failed: dict[str, str] = field(default_factory=dict)  # path -> why the trusted driver run for it did not merge it

    @property
    def clean(self) -> bool:
        return not self.stages


def _parse_merges(tokens: list[str], batch: bool) -> list[_TreeMerge]:
    merges, i = [], 0
    while i < len(tokens) and tokens[i] != "":
        if batch:
            i += 1  # the per-merge status; the stage entries say the same
        merge = _TreeMerge(tokens[i], {})
        i += 1
        while i < len(tokens) and tokens[i] != "":
            info, _, path = tokens[i].partition("\t")
            mode, blob, stage = info.split()
            merge.stages.setdefault(path, {})[int(stage)] = (mode, blob)
            i += 1
        i += 1  # the empty token closing the section
        merges.append(merge)
    return merges


def _with_refusals(repo: str | Path, drivers: merge_drivers.MergeDrivers, merges: list[_TreeMerge]) -> list[_TreeMerge]:
    """``merges`` with each conflicting path that needed a merge driver of the user's (refused:
    git/drivers.py) marked with its name."""
    conflicting = {path for merge in merges for path in merge.stages}
    refused = drivers.refused(repo, sorted(conflicting)) if conflicting else {}
    for merge in merges:
        merge.refused = {path: refused[path] for path in merge.stages if path in refused}
    return merges


def _with_drivers(
    repo: str | Path, drivers: merge_drivers.MergeDrivers, merge: _TreeMerge, runner: merge_drivers.DriverRunner | None
) -> _TreeMerge:
    """``merge`` with each path whose driver the user trusts (``git.trusted_merge_drivers``) merged
    by that driver, run by ``runner`` (in the workers' sandbox; None: no driver runs): its file
    taken for the path, which is then no conflict; a driver that fails leaves the path conflicted,
    with why (``failed``). Only a path with two files: git runs no driver on a deletion or a link."""
    wanted = {p: name for p, name in merge.refused.items() if runner is not None and name in runner.trusted}
    settled = []
    for path, name in sorted(wanted.items()):
        stages = merge.stages[path]
        if runner is None or not _text_files(stages):
            continue
        base, ours, theirs = (git_bytes(repo, "cat-file", "blob", stages[s][1]) if s in stages else b"" for s in (1, 2, 3))
        command = drivers.commands.get(name, "")
        done = runner(merge_drivers.DriverRun(name, command, path, base, ours, theirs, git_dir=str(common_dir(Path(repo)))))
        if done.merged is None:
            merge.failed[path] = done.reason
            continue
        # --no-filters: the merged file is stored as the driver wrote it (no clean filter of the user's runs)
        blob = git_bytes(repo, "hash-object", "-w", "--no-filters", "--stdin", input=done.merged).decode().strip()
        mode = stages[3][0] if 1 in stages and stages[1][0] == stages[2][0] else stages[2][0]  # who changed it, as git
        settled.append(f"{mode} {blob}\t{path}\n")
        del merge.stages[path], merge.refused[path]
    if settled:
        with tempfile.TemporaryDirectory(prefix="orchestrator-merge-") as scratch:
            env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            run_git(repo, "read-tree", merge.tree, env=env)
            run_git(repo, "update-index", "--index-info", input="".join(settled), env=env)
            merge.tree = run_git(repo, "write-tree", env=env).stdout.strip()
    return merge


def _merge_tree(repo: str | Path, ours: str, theirs: str, runner: merge_drivers.DriverRunner | None = None) -> _TreeMerge:
    drivers = merge_drivers.configured(repo)
    argv = ("merge-tree", "--write-tree", "-z", "--no-messages", ours, theirs)
    done = run_git(repo, *argv, check=False, env=drivers.env())
    if done.returncode not in (0, 1):
        raise GitFailed(["merge-tree", "--write-tree", ours, theirs], done.returncode, done.stderr)
    merge = _with_refusals(repo, drivers, _parse_merges(done.stdout.split("\0") + [""], batch=False))[0]
    return _with_drivers(repo, drivers, merge, runner)


class _ChainedMerges:
    """``_merge_tree`` for a chain of merges, each of which needs the commit made from the one
    before: one ``git merge-tree --stdin`` process a merge (git 2.39 prints a merge's result
    only when it exits), but the next one is started while this one merges, so the merge waits
    for no process start. ``more=False`` on the last merge: no process is started for nothing."""

    ARGV = ("merge-tree", "--stdin", "-z", "--no-messages")

    def __init__(
        self,
        repo: str | Path,
        meanwhile: Callable[[], object] = lambda: None,
        runner: merge_drivers.DriverRunner | None = None,
    ) -> None:
        self.repo = repo
        self.meanwhile = meanwhile  # called while each merge runs (the commit writer's preparation)
        self.runner = runner  # the user's trusted merge drivers, run in the sandbox (None: none runs)
        self.spare: subprocess.Popen[str] | None = None

    @functools.cached_property
    def drivers(self) -> merge_drivers.MergeDrivers:
        """The user's merge drivers, each refused in these merges (read once, at the first start)."""
        return merge_drivers.configured(self.repo)

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            command(self.repo, *self.ARGV),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,  # as run_git reads it
            env=git_env(self.drivers.env()),
        )

    def warm(self) -> None:
        if self.spare is None:
            self.spare = self._start()

    def merge(self, ours: str, theirs: str, more: bool) -> _TreeMerge:
        process, self.spare = self.spare or self._start(), None
        assert process.stdin is not None
        try:  # this merge starts now; the next process starts while it merges
            process.stdin.write(f"{ours} {theirs}\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass  # git has exited: its exit code and stderr say why, below
        if more:
            self.spare = self._start()
        self.meanwhile()
        out, err = process.communicate()
        if process.returncode not in (0, 1) or not out:
            raise GitFailed(["merge-tree", "--write-tree", ours, theirs], process.returncode, err)
        merge = _with_refusals(self.repo, self.drivers, _parse_merges(out.split("\0"), batch=True))[0]
        return _with_drivers(self.repo, self.drivers, merge, self.runner)

    def close(self) -> None:
        """End the spare process, if any (on end of input it merges nothing and exits)."""
        process, self.spare = self.spare, None
        if process is not None:
            process.communicate("")


def _merge_trees(repo: str | Path, pairs: list[tuple[str, str]]) -> list[_TreeMerge]:
    """Many merges in one git process (``merge-tree --stdin``)."""
    if not pairs:
        return []
    lines = "".join(f"{a} {b}\n" for a, b in pairs)
    drivers = merge_drivers.configured(repo)
    done = run_git(repo, "merge-tree", "--stdin", "-z", "--no-messages", input=lines, check=False, env=drivers.env())
    if done.returncode not in (0, 1):
        raise GitFailed(["merge-tree", "--stdin"], done.returncode, done.stderr)
    return _with_refusals(repo, drivers, _parse_merges(done.stdout.split("\0"), batch=True))


def _kind_in(merge: _TreeMerge, path: str) -> str:
    """What kind of conflict ``path`` is in ``merge``: a merge driver of the user's it needed and did
    not get (git/drivers.py), or one it trusted that failed, else git's kind (``_kind``)."""
    if path in merge.failed:
        return merge_drivers.FAILED.format(name=merge.refused[path], why=merge.failed[path])
    if path in merge.refused:
        return merge_drivers.NOT_RUN.format(name=merge.refused[path])
    return _kind(merge.stages[path])


def _kind(stages: dict[int, tuple[str, str]]) -> str:
    have = set(stages)
    if {2, 3} <= have:
        return "content" if 1 in have else "add/add"
    return "modify/delete" if 2 in have else "delete/modify"


def _write_stages(repo: str | Path, stages: dict[int, tuple[str, str]], scratch: Path) -> None:
    for stage, name in ((1, "base"), (2, "ours"), (3, "theirs")):
        (scratch / name).write_bytes(git_bytes(repo, "cat-file", "blob", stages[stage][1]) if stage in stages else b"")


def _merge_file(repo: str | Path, scratch: Path, *options: str) -> int:
    """``git merge-file`` on the files in ``scratch`` (outside every working tree), result in
    ``scratch/ours``; its exit code is the number of conflicting hunks, > 127 for binary files."""
    files = [str(scratch / name) for name in ("ours", "base", "theirs")]
    return run_git(repo, "merge-file", "-q", *options, *files, check=False).returncode


def _text_files(stages: dict[int, tuple[str, str]]) -> bool:
    """Both sides are regular files (not a submodule's commit, not a symbolic link)."""
    return {2, 3} <= set(stages) and all(mode in GIT_REGULAR_FILES for mode, _ in stages.values())


def _count_hunks(repo: str | Path, stages: dict[int, tuple[str, str]]) -> int:
    if not _text_files(stages):
        return 1
    with tempfile.TemporaryDirectory(prefix="orchestrator-merge-") as scratch:
        _write_stages(repo, stages, Path(scratch))
        code = _merge_file(repo, Path(scratch))
    return 1 if code > 127 else max(code, 1)


def _theirs_blob(repo: str | Path, stages: dict[int, tuple[str, str]], scratch: Path) -> str:
    """The path's content with every conflicting hunk taken from the later side (binary: theirs whole)."""
    if not _text_files(stages):
        return stages[3][1]
    _write_stages(repo, stages, scratch)
    if _merge_file(repo, scratch, "--theirs") != 0:
        return stages[3][1]
    # --no-filters: a clean filter of the user's would run on the merged content, outside a sandbox.
    return run_git(repo, "hash-object", "-w", "--no-filters", "--", str(scratch / "ours")).stdout.strip()


def _resolve_theirs(repo: str | Path, merge: _TreeMerge) -> tuple[str, dict[str, int]]:
    """The merge's tree with every conflicting hunk taken from the later side ("theirs"), and
    the hunks per path. Written through a temporary index file: the user's index is untouched."""
    hunks: dict[str, int] = {}
    lines = []
    with tempfile.TemporaryDirectory(prefix="orchestrator-merge-") as scratch_dir:
        scratch = Path(scratch_dir)
        for path, stages in sorted(merge.stages.items()):
            if 3 not in stages:  # the later worker deleted it
                hunks[path] = 1
                lines.append(f"0 {'0' * len(merge.tree)}\t{path}")  # (a null id of the repository's hash)
                continue
            if 2 not in stages:  # deleted before, changed by the later worker
                hunks[path] = 1
                lines.append(f"{stages[3][0]} {stages[3][1]}\t{path}")
                continue
            if path in merge.refused:  # the user's driver merges it, not git's text merge: the later side whole
                hunks[path] = 1
                lines.append(f"{stages[3][0]} {stages[3][1]}\t{path}")
                continue
            hunks[path] = _count_hunks(repo, stages)
            blob = _theirs_blob(repo, stages, scratch)
            lines.append(f"{stages[3][0]} {blob}\t{path}")
        env = {"GIT_INDEX_FILE": str(scratch / "index")}
        run_git(repo, "read-tree", merge.tree, env=env)
        run_git(repo, "update-index", "--index-info", input="".join(line + "\n" for line in lines), env=env)
        tree = run_git(repo, "write-tree", env=env).stdout.strip()
    return tree, hunks


@contextlib.contextmanager
def _writing(repo: str | Path) -> Iterator[CommitWriter]:
    """A writer of squashed commits outside a merge's loop, written as every commit of a merge is
    (``commit_body``'s bytes: each id depends only on its inputs, the date is fixed); closed at the
    end, its process killed if the block failed."""
    writer = CommitWriter(repo, objects=lambda: loose_objects(repo))
    try:
        yield writer
    except BaseException:
        writer.close(kill=True)
        raise
    writer.close()


@dataclass(frozen=True)
class _Chain:
    """What each commit of a disjoint merge's chain says besides its tree and parent: its message
    (its worker's source's), who wrote it and when (the same for all)."""

    root_id: str
    strategy: MergeStrategy
    sources: Mapping[str, Source]
    into: str | None
    who: Identity
    when: str

    def message(self, worker: str) -> str:
        return self.sources[worker].message(self.root_id, self.strategy, self.into)


def _disjoint_objects(
    repo: str | Path,
    objects: Path | None,
    base: str,
    commits: list[tuple[str, str, str]],
    files: dict[str, dict[str, tuple[str, str] | None]],
    chain: _Chain,
    descend: Callable[[], bool] = lambda: True,
) -> tuple[str, list[str], list[str]] | None:
    """``_disjoint_merge``'s commits, and their trees, written by Python (``LooseObjects``) in
    ``objects``: the trees the per-branch loop's merges give (each tree the one before with the
    branch's files set or removed, a folder left empty removed; modes as git writes them in a
    tree), with no process but one ``cat-file --batch`` for the base's folders that change. None:
    no ``objects`` folder, or a path this cannot name (a newline in it, not UTF-8): branch by branch."""
    if objects is None:
        return None
    try:
        changes = [[(tuple(p.encode().split(b"/")), e) for p, e in sorted(files[c].items())] for _, _, c in commits]
    except UnicodeEncodeError:
        return None
    folders = sorted({parts[:n] for change in changes for parts, _ in change for n in range(len(parts))})
    if any(b"\n" in part for folder in folders for part in folder):
        return None
    loose = LooseObjects(objects)
    loose.prepare_later(sum(1 for change in changes if change))  # while git reads: a file for each commit
    try:
        return _write_disjoint(repo, loose, base, commits, changes, folders, chain, descend)
    except OSError:
        return None  # Python could not write there (a folder it may not write, say): branch by branch
    finally:
        with contextlib.suppress(OSError):
            loose.close()


def _write_disjoint(
    repo: str | Path,
    loose: LooseObjects,
    base: str,
    commits: list[tuple[str, str, str]],
    changes: list[list[tuple[tuple[bytes, ...], tuple[str, str] | None]]],
    folders: list[tuple[bytes, ...]],
    chain: _Chain,
    descend: Callable[[], bool],
) -> tuple[str, list[str], list[str]] | None:
    names = b"".join(b"%s:%s\n" % (base.encode(), b"/".join(folder)) for folder in folders)
    out = git_bytes(repo, "cat-file", "--batch", input=names)
    trees: dict[tuple[bytes, ...], dict[bytes, bytes]] = {}
    at = 0
    for folder in folders:
        end = out.index(b"\n", at)
        header, at = out[at:end].split(b" "), end + 1
        if header[-1] == b"missing":
            if folder and folder[-1] in trees[folder[:-1]]:
                return None  # a submodule there in the base, say
            trees[folder] = {}  # a folder a branch makes
            continue
        if len(header) != 3 or header[1] != b"tree":
            return None
        size = int(header[2])
        trees[folder] = tree_entries(out[at : at + size])
        at += size + 1
    if not descend():
        return None  # nothing written: the loop merges them
    merged: list[str] = []
    unchanged: list[str] = []
    head = base
    for (worker, _, _), change in zip(commits, changes):
        if not change:
            unchanged.append(worker)
            continue
        dirty: set[tuple[bytes, ...]] = set()
        for parts, entry in change:
            folder = parts[:-1]
            if entry is None:
                trees[folder].pop(parts[-1], None)
            else:
                trees[folder][parts[-1]] = tree_record(entry[0], parts[-1], entry[1])
            dirty.update(folder[:n] for n in range(len(folder) + 1))
        for folder in sorted(dirty, key=len, reverse=True):  # the deepest first: a folder's id goes in its parent
            entries = trees[folder]
            if not folder:
                tree = loose.write("tree", tree_body(entries))
            elif entries:
                trees[folder[:-1]][folder[-1]] = tree_record("40000", folder[-1], loose.write("tree", tree_body(entries)))
            else:
                trees[folder[:-1]].pop(folder[-1], None)
        head = loose.write("commit", commit_body(tree, head, chain.message(worker), chain.when, chain.who))
        merged.append(worker)
    return head, merged, unchanged


def _disjoint_merge(
    repo: str | Path,
    base: str,
    commits: list[tuple[str, str, str]],
    files: dict[str, dict[str, tuple[str, str] | None]],
    chain: _Chain,
    objects: Callable[[], Path | None] | None = None,
) -> tuple[str, list[str], list[str]] | None:
    """The same chain of commits the per-branch loop makes, written by Python (``_disjoint_objects``)
    where ``objects`` gives a folder, when the loop's answer is known without merging: every
    branch descends from the base and no two branches touch the same path (or a file and a folder
    of the same name). Then each commit's tree is the base plus the branches' changes so far.
    None: not that case, or Python may not write there: merge branch by branch."""
    owner: dict[str, str] = {}
    for _, _, commit in commits:
        for path in files[commit]:
            if owner.setdefault(path, commit) != commit:
                return None
    for path in owner:
        parts = path.split("/")
        if any("/".join(parts[:n]) in owner for n in range(1, len(parts))):
            return None
    refs = [branch_ref(branch) for _, branch, _ in commits]

    def descend() -> bool:  # every branch a ref that descends from the base
        listed = run_git(repo, "for-each-ref", f"--contains={base}", "--format=%(refname) %(objectname)", *refs).stdout
        return not {f"{ref} {commit}" for ref, (_, _, commit) in zip(refs, commits)} - set(listed.splitlines())

    folder = objects() if objects is not None else None
    if folder is None:
        return None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge") as pool:  # git checks the branches meanwhile
        descending = pool.submit(descend).result
        done = _disjoint_objects(repo, folder, base, commits, files, chain, descending)
    return done if done and descending() else None


# -- the merge ----------------------------------------------------------------------------------


class _WhatChanged:
    """What each worker changed against the base (``changed_files``) and who the commits are by
    (``identity_of``), and where Python may write the commits (``loose_objects``): read at once,
    or, when ``background`` (any merge but ``manual``), on two threads while the first branches
    merge (or the fast path waits for what it needs); each is waited for where it is first needed."""

    def __init__(self, repo: str | Path, base: str, inputs: list[tuple[str, str, str]], background: bool) -> None:
        self.inputs = list(inputs)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="merge") if background else None
        self._files = self._later(changed_files, repo, base, [c for _, _, c in inputs])
        self._who: Future[Identity] | None = None
        self._objects: Future[Path | None] | None = None
        self.repo = repo

    def _later(self, function: Callable[..., T], *args: Any) -> Future[T]:
        if self.pool is not None:
            return self.pool.submit(function, *args)
        done: Future[T] = Future()
        done.set_result(function(*args))
        return done

    def want_identity(self) -> None:
        if self._who is None:
            self._who = self._later(identity_of, self.repo)

    def want_objects(self) -> None:
        if self._objects is None:
            self._objects = self._later(loose_objects, self.repo)

    @functools.cached_property
    def objects(self) -> Path | None:
        """Where the commits are written by Python (``loose_objects``); None: by git."""
        self.want_objects()
        assert self._objects is not None
        return self._objects.result()

    @functools.cached_property
    def files(self) -> dict[str, dict[str, tuple[str, str] | None]]:
        return self._files.result()

    @functools.cached_property
    def changes(self) -> dict[str, WorkerChanges]:
        return {w: WorkerChanges(w, b, c, tuple(sorted(self.files[c]))) for w, b, c in self.inputs}

    @property
    def comparison(self) -> tuple[WorkerChanges, ...]:
        return tuple(self.changes[w] for w, _, _ in self.inputs)

    @functools.cached_property
    def who(self) -> Identity:
        self.want_identity()
        assert self._who is not None
        return self._who.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _touched_by(changes: dict[str, WorkerChanges], workers: list[str], path: str) -> list[str]:
    return [w for w in workers if path in changes[w].files]


def _conflicts(
    repo: str | Path,
    merge: _TreeMerge,
    changes: dict[str, WorkerChanges],
    earlier: list[str],
    worker: str,
    hunks: dict[str, int] | None = None,
    resolved_by: str = "",
    predicted: bool = False,
) -> list[FileConflict]:
    """The merge's conflicting paths as reported: a file that met a folder of its name is moved
    by git to ``<path>~<side>``; the report names ``<path>`` and the kind "file/folder"."""
    found = []
    for path, stages in sorted(merge.stages.items()):
        shown, kind = path, _kind_in(merge, path)
        stem, tilde, side = path.rpartition("~")
        touched = {p for w in (*earlier, worker) for p in changes[w].files}
        if tilde and "/" not in side and path not in touched and stem in touched:
            shown, kind = stem, "file/folder"
        count = hunks[path] if hunks is not None else _count_hunks(repo, stages)
        involved = (*_touched_by(changes, earlier, shown), worker)
        found.append(FileConflict(shown, involved, count, kind, resolved_by, predicted))
    return found


@dataclass(frozen=True)
class MergeRequest:
    """What ``merge_branches`` merges: ``branches`` ((worker, branch), in plan order) onto ``base``
    with ``strategy``, into ``target`` (a branch under ``<prefix><root id>/``; default
    ``<prefix><root id>/result``). A child job's merge names its parent worker's branch
    (engine/nesting.py). ``onto``: the commit the merges start from instead of ``base`` (a graph
    job's integration branch, which already holds the workers squashed into it as they passed their
    gates: each of those counts as merged, and only the rest is merged onto it); what each worker
    changed is still told against ``base``. ``commits``: worker -> the commit of its to merge
    instead of its branch's tip (its gated commit, quality/gates.py). ``tasks``, ``credits``: worker
    -> its subtask (its commit's subject), the AI that did its work (its ``Co-authored-by:``).
    ``fast_path=False`` forces one merge-tree per branch even when the changes are disjoint (tests
    compare the two). ``move=False``: the result's commits are written and the outcome names the
    last, but no ref moves (a candidate the caller gates first: delivery/result_gate.py)."""

    base: str
    branches: Sequence[tuple[str, str]]
    strategy: MergeStrategy  # (a str of one's value is taken and made one; any other is a ValidationError)
    prefix: str
    root_id: str
    target: str | None = None
    onto: str | None = None
    commits: Mapping[str, str] = field(default_factory=dict)
    tasks: Mapping[str, str] = field(default_factory=dict)
    credits: Mapping[str, str | None] = field(default_factory=dict)
    fast_path: bool = True
    drivers: merge_drivers.DriverRunner | None = None  # runs the user's trusted merge drivers (None: none runs)
    move: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValidationError(f"merge strategy {str(self.strategy)!r} is not one of {', '.join(STRATEGIES)}")
        object.__setattr__(self, "strategy", MergeStrategy(self.strategy))

    @property
    def under(self) -> str:
        """The job's branch prefix, ``<prefix><root id>/``: every ref the merge may write is below it."""
        return job_prefix(self.prefix, self.root_id)

    def destination(self) -> tuple[str, str | None]:
        """The full ref the result goes to, and the branch ``target`` names (None: the job's own
        result branch). ValidationError for a target outside the job's branches (``under``)."""
        under = self.under
        if self.target is None:
            return under + "result", None
        target = branch_ref(self.target)
        if not target.startswith(under):
            raise ValidationError(f"refusing to merge into {target}: only branches under {under} belong to job {self.root_id}")
        return target, target.removeprefix("refs/heads/")

    def sources(self, inputs: list[tuple[str, str, str]]) -> dict[str, Source]:
        """Worker -> what its squashed commit's message says, for ``inputs`` (worker, branch, commit)."""
        return {w: Source(w, b, c, self.tasks.get(w, ""), self.credits.get(w)) for w, b, c in inputs}


@dataclass(frozen=True)
class _Inputs:
    """What a merge read before merging: the base's commit and tree, each worker's commit (worker,
    branch, commit), the newest input's time and the result ref's commit (None: no such ref)."""

    base: str
    base_tree: str
    inputs: list[tuple[str, str, str]]
    newest: int
    old: str | None


def _read_inputs(repo: str | Path, request: MergeRequest, target: str) -> _Inputs:
    """The base, the workers' commits and the result ref, in one read; ValidationError for a name
    that is no commit."""
    names = [request.base, *(request.commits.get(worker) or branch for worker, branch in request.branches)]
    *infos, current = read_commits(repo, [*names, target])
    known = []
    for name, info in zip(names, infos):
        if info is None:
            raise ValidationError(f"{name!r} is not a commit in {repo}: check the branch name ('git branch --list')")
        known.append(info)
    inputs = [(worker, branch, info.oid) for (worker, branch), info in zip(request.branches, known[1:])]
    newest = max(info.time for info in known)
    return _Inputs(known[0].oid, known[0].tree, inputs, newest, current.oid if current else None)


def merge_branches(repo: str | Path, request: MergeRequest, resolver: Resolver | None = None) -> MergeOutcome:
    """Merge the request's branches (see MergeRequest), one squashed commit per worker whose work
    adds something; see the module docstring. ``resolver``: ``resolve``'s, asked for each
    conflicting worker in turn (refused: that worker alone is left out, in ``skipped``, and the
    merge goes on with the next); without one, ``resolve`` stops at the first conflict as ``auto``."""
    strategy = request.strategy
    require_git(repo)
    under = request.under
    target, into = request.destination()
    any_merge = bool(request.branches) and strategy != MergeStrategy.MANUAL
    # The per-branch loop's processes: the first merge-tree starts now when the loop is certain,
    # while the names are read; the one that writes every commit, while the first merge runs.
    chained = _ChainedMerges(repo, runner=request.drivers)
    if any_merge and not request.fast_path:
        chained.warm()
    try:
        read = _read_inputs(repo, request, target)
    except BaseException:
        chained.close()
        raise
    told = _WhatChanged(repo, read.base, read.inputs, background=any_merge)
    writer = CommitWriter(repo, objects=lambda: told.objects)
    chained.meanwhile = writer.start  # while the first merge runs: git's writer, when it writes the commits
    try:
        if strategy == MergeStrategy.MANUAL:
            return _manual(repo, request, read, told.comparison, target, removable=into is None)
        told.want_identity()
        told.want_objects()
        run = _Merge(repo, request, read, told, writer, into)
        run.merge(chained, resolver)
    except BaseException:
        writer.close(kill=True)
        raise
    finally:
        chained.close()
        told.close()
    writer.close()
    comparison = told.comparison
    failpoints.hit("merge_before_update_ref")
    if request.move and run.head != read.old:
        update_ref(repo, target, run.head, read.old, under=under)
    return run.outcome(target, comparison)


def _manual(
    repo: str | Path, request: MergeRequest, read: _Inputs, comparison: tuple[WorkerChanges, ...], target: str, removable: bool
) -> MergeOutcome:
    """``manual``: nothing merged; the conflicts the branches would meet predicted and the command
    that merges them told. An earlier merge's result branch goes (``removable``: the job's own, not
    a named target): the branch never holds work this record does not list."""
    branches, old = request.branches, read.old
    tips = read_commits(repo, [b for _, b in branches])  # a branch's name where its tip is the commit merged
    named = [(w, b if tip and tip.oid == c else c) for (w, b), tip, (_, _, c) in zip(branches, tips, read.inputs)]
    report = predict_conflicts(repo, request.base, named)
    command = " && ".join(f"git merge {b}" for _, b in named)
    kept_in = remove_ref(repo, target, old, under=request.under) if removable and old else None
    removed = bool(removable and old and kept_in is None)
    left = tuple(w for w, _, _ in read.inputs)
    return MergeOutcome(
        request.strategy, read.base, target, None, (), left, report, comparison, command, (), old, removed, kept_in
    )


class _Merge:
    """One merge's run past its reads: the result so far (``head``, its ``tree``), and what became
    of each worker: merged (a commit on the result, or already in it), unchanged (nothing to add),
    skipped (a conflict), with the conflicts met and the resolutions asked for."""

    def __init__(
        self, repo: str | Path, request: MergeRequest, read: _Inputs, told: _WhatChanged, writer: CommitWriter, into: str | None
    ) -> None:
        self.repo, self.request, self.told, self.writer, self.into = repo, request, told, writer, into
        self.base, self.inputs = read.base, read.inputs
        self.sources = request.sources(read.inputs)
        # Every commit of the job carries the newest input's date: a re-run makes the same ids.
        self.when = f"{read.newest} +0000"
        self.head, self.tree = read.base, read.base_tree
        self.already: set[str] = set()  # workers' commits squashed into ``onto`` already
        self.merged: list[str] = []
        self.unchanged: list[str] = []
        self.skipped: list[str] = []
        self.conflicts: list[FileConflict] = []
        self.resolutions: list[Resolution] = []

    def merge(self, chained: _ChainedMerges, resolver: Resolver | None) -> None:
        """Every worker merged onto the result, or until a conflict stops the merge: the fast path's
        commits at once where it applies, then the per-branch loop (``chained``'s merge-trees)."""
        self._start(chained)
        for index in range(len(self.inputs)):
            if not self._one(chained, index, resolver):
                break

    def _start(self, chained: _ChainedMerges) -> None:
        """From ``onto`` when asked (no fast path then); else, disjoint branches all in one go
        where the fast path applies (``_disjoint_merge``). What is left for the loop: ``inputs``."""
        fast_path, onto = self.request.fast_path, self.request.onto
        if onto is not None:
            start = read_commits(self.repo, [onto])[0]
            if start is None:
                raise ValidationError(f"{onto!r} is not a commit in {self.repo}")
            self.head, self.tree, fast_path = start.oid, start.tree, False
            self.already = squashed_in(self.repo, self.base, self.head)
        if fast_path:
            told, request = self.told, self.request
            chain = _Chain(request.root_id, request.strategy, self.sources, self.into, told.who, self.when)
            fast = _disjoint_merge(self.repo, self.base, self.inputs, told.files, chain, lambda: told.objects)
            if fast:
                self.head, self.merged, self.unchanged = fast
                self.inputs = []  # all merged at once
        if self.inputs:
            chained.warm()

    def _one(self, chained: _ChainedMerges, index: int, resolver: Resolver | None) -> bool:
        """Merge the ``index``-th worker onto the result; False: the merge stops here."""
        worker, _, commit = self.inputs[index]
        # Squashed in as it passed its gates, or merged with its history (an older version's branch)
        if commit in self.already or (self.request.onto is not None and is_ancestor(self.repo, commit, self.head)):
            (self.merged if self.told.files[commit] else self.unchanged).append(worker)
            return True
        result = chained.merge(self.head, commit, more=index + 1 < len(self.inputs))
        tree = result.tree
        if result.clean and tree == self.tree:  # nothing the result does not hold already
            self.unchanged.append(worker)
            return True
        if not result.clean:
            strategy, earlier = self.request.strategy, list(self.merged)
            if strategy == MergeStrategy.RESOLVE and resolver is not None:
                resolved = self._resolve(result, worker, commit, earlier, resolver)
                if resolved is None:
                    return True  # refused: this worker alone is left out, the merge goes on
                tree = resolved
            elif strategy in (MergeStrategy.AUTO, MergeStrategy.RESOLVE):
                self._stop(result, index, earlier)
                return False
            else:
                tree, hunks = _resolve_theirs(self.repo, result)
                self.conflicts += _conflicts(self.repo, result, self.told.changes, earlier, worker, hunks, resolved_by=worker)
        message = self.sources[worker].message(self.request.root_id, self.request.strategy, self.into)
        self.head, self.tree = self.writer.commit(tree, self.head, message, self.when, self.told.who), tree
        self.merged.append(worker)
        return True

    def _resolve(self, result: _TreeMerge, worker: str, commit: str, earlier: list[str], resolver: Resolver) -> str | None:
        """``resolve``: the resolver's tree for the conflicting worker; None when it refused (the
        worker is skipped, its conflicts marked refused)."""
        found = _conflicts(self.repo, result, self.told.changes, earlier, worker)
        done = resolver(Conflicted(worker, commit, self.head, tuple(found), tuple(earlier)))
        self.resolutions.append(done)
        if not done.accepted or done.tree is None:
            self.conflicts += [dataclasses.replace(c, refused=True) for c in found]
            self.skipped.append(worker)
            return None
        self.conflicts += [dataclasses.replace(c, resolved_by=conflict_text.RESOLVER) for c in found]
        return done.tree

    def _stop(self, result: _TreeMerge, index: int, earlier: list[str]) -> None:
        """``auto`` (or ``resolve`` with no resolver) at the first conflict: this worker and the rest
        are skipped, and what each of the rest would conflict on against the result is predicted."""
        worker, changes = self.inputs[index][0], self.told.changes
        self.conflicts += _conflicts(self.repo, result, changes, earlier, worker)
        self.skipped = [w for w, _, _ in self.inputs[index:]]
        self.conflicts += _predict_rest(self.repo, self.head, self.inputs[index + 1 :], changes, self.merged)

    def outcome(self, target: str, comparison: tuple[WorkerChanges, ...]) -> MergeOutcome:
        """The merge's outcome, once its result is at ``target``."""
        return MergeOutcome(
            self.request.strategy,
            self.base,
            target,
            self.head,
            tuple(self.merged),
            tuple(self.skipped),
            tuple(self.conflicts),
            comparison,
            f"git merge {target.removeprefix('refs/heads/')}",
            tuple(self.unchanged),
            resolutions=tuple(self.resolutions),
        )


def integrate(
    repo: str | Path,
    ref: str,
    start: str,
    source: Source,
    strategy: MergeStrategy,
    *,
    prefix: str,
    root_id: str,
    resolver: Resolver | None = None,
    drivers: merge_drivers.DriverRunner | None = None,
    move: bool = True,
) -> Integrated:
    """Squash ``source.commit`` (the worker's gated commit) into ``ref``, a job's integration
    branch, made at ``start`` when it does not exist yet: one commit on the branch's tip (never a
    fast-forward to the worker's own history); ``auto`` leaves the branch where it is on a
    conflict (``merged`` False, the conflicts named); ``theirs`` takes the worker's side of each
    conflicting hunk; ``resolve`` asks ``resolver`` (refused, or none: as ``auto``, with its
    resolution). ``drivers``: runs the user's trusted merge drivers (git/drivers.py). The caller
    holds the tree's merge lock. ``move=False``: the commit is written and returned, the branch
    not moved (a candidate its caller gates first, then moves)."""
    worker, branch, commit = source.worker, source.branch, source.commit
    if strategy not in (MergeStrategy.AUTO, MergeStrategy.THEIRS, MergeStrategy.RESOLVE):
        raise ValidationError(f"a task graph merges with auto, theirs or resolve, not {str(strategy)!r}")
    require_git(repo)
    under = job_prefix(prefix, root_id)
    target = branch_ref(ref)
    old = ref_value(repo, target)
    head = old or resolve_remembered(repo, start)
    conflicts: list[FileConflict] = []
    resolution: Resolution | None = None
    already = commit == head or is_ancestor(repo, commit, head)  # the same commit needs no git
    added = not (already or commit in squashed_in(repo, start, head))  # (else: already in, or no new work)
    if not added:
        new = head
    else:
        result = _merge_tree(repo, head, commit, drivers)
        tree = result.tree
        if not result.clean:
            files = changed_files(repo, head, [commit])[commit]
            changes = {worker: WorkerChanges(worker, branch, commit, tuple(sorted(files)))}
            if strategy == MergeStrategy.THEIRS:
                tree, hunks = _resolve_theirs(repo, result)
                conflicts = _conflicts(repo, result, changes, [], worker, hunks, resolved_by=worker)
            else:
                found = _conflicts(repo, result, changes, [], worker)
                done = resolver(Conflicted(worker, commit, head, tuple(found), ())) if resolver is not None else None
                if done is None or not done.accepted or done.tree is None:
                    return Integrated(target, old, False, tuple(found), resolution=done)
                tree, resolution = done.tree, done
                conflicts = [dataclasses.replace(c, resolved_by=conflict_text.RESOLVER) for c in found]
        when = f"{max(info.time for info in read_commits(repo, [head, commit]) if info)} +0000"
        message = source.message(root_id, strategy, target.removeprefix("refs/heads/"))
        with _writing(repo) as writer:
            new = writer.commit(tree, head, message, when, identity_of(repo))
    if move and new != old:
        update_ref(repo, target, new, old, under=under)
    return Integrated(target, new, True, tuple(conflicts), added=added, resolution=resolution)


def pick(
    repo: str | Path,
    ref: str,
    since: str,
    source: Source,
    strategy: MergeStrategy,
    *,
    prefix: str,
    root_id: str,
    drivers: merge_drivers.DriverRunner | None = None,
    move: bool = True,
) -> Integrated:
    """What ``source.commit`` adds to ``since`` (an ancestor of it: the worker's work already in ``ref``)
    squashed onto ``ref``'s tip as one commit, as a cherry-pick would: a continue round's work on a
    result that holds the worker's earlier work. git 2.39's merge-tree takes no merge base, so a
    stand-in commit (the tip's tree, ``since`` its parent) makes ``since`` the merge's base. ``theirs``
    takes the round's side of a conflicting hunk; any other strategy leaves ``ref`` alone on one.
    ``move=False``: the commit is written and returned, ``ref`` not moved (a candidate to gate first)."""
    worker, branch, commit = source.worker, source.branch, source.commit
    require_git(repo)
    target = branch_ref(ref)
    old = ref_value(repo, target)
    head = read_commits(repo, [old])[0] if old else None
    if old is None or head is None:
        raise ValidationError(f"{target} does not exist in {repo}: merge the job first")
    when = f"{max(info.time for info in read_commits(repo, [old, commit]) if info)} +0000"
    who = identity_of(repo)
    with _writing(repo) as writer:  # the stand-in and the round's commit
        stand_in = writer.commit(head.tree, since, "stand-in", when, who)
        result = _merge_tree(repo, stand_in, commit, drivers)
        tree, conflicts = result.tree, []
        if not result.clean:
            files = changed_files(repo, since, [commit])[commit]
            changes = {worker: WorkerChanges(worker, branch, commit, tuple(sorted(files)))}
            if strategy != MergeStrategy.THEIRS:
                return Integrated(target, old, False, tuple(_conflicts(repo, result, changes, [], worker)))
            tree, hunks = _resolve_theirs(repo, result)
            conflicts = _conflicts(repo, result, changes, [], worker, hunks, resolved_by=worker)
        if tree == head.tree:
            return Integrated(target, old, True, tuple(conflicts), added=False)
        new = writer.commit(tree, old, source.message(root_id, strategy, target.removeprefix("refs/heads/")), when, who)
        if move:
            update_ref(repo, target, new, old, under=job_prefix(prefix, root_id))
        return Integrated(target, new, True, tuple(conflicts))


def _predict_rest(
    repo: str | Path, head: str, rest: list[tuple[str, str, str]], changes: dict[str, WorkerChanges], merged: list[str]
) -> list[FileConflict]:
    """What each branch after the first conflict would conflict on against the clean result."""
    found = []
    for (worker, _, _), result in zip(rest, _merge_trees(repo, [(head, c) for _, _, c in rest])):
        found += _conflicts(repo, result, changes, merged, worker, predicted=True)
    return found


def predict_conflicts(repo: str | Path, base: str, branches: list[tuple[str, str]]) -> tuple[FileConflict, ...]:
    """Pairwise: every pair of workers whose branches conflict, per file (one ``merge-tree``
    process for all pairs); touches no working tree and moves no ref."""
    require_git(repo)
    _, *oids = resolve_all(repo, [base, *(branch for _, branch in branches)])
    commits = [(worker, oid) for (worker, _), oid in zip(branches, oids)]
    pairs = [(i, j) for i in range(len(commits)) for j in range(i + 1, len(commits))]
    results = _merge_trees(repo, [(commits[i][1], commits[j][1]) for i, j in pairs])
    found = []
    for (i, j), result in zip(pairs, results):
        for path, stages in sorted(result.stages.items()):
            found.append(
                FileConflict(
                    path, (commits[i][0], commits[j][0]), _count_hunks(repo, stages), _kind_in(result, path), predicted=True
                )
            )
    return tuple(found)
