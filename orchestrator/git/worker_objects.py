"""Sandboxed workers' objects: their commits never write the repository's object store.

Inside a worker's sandbox (process/sandbox.py, workers/confinement.py) the repository's
``objects`` folder is its job tree's own store (``state/git-objects`` in the tree's folder of the
workspace: Workspace.tree_objects), bound in its place, writable; the real store is shown
read-only at ``.git/orchestrator-host-objects`` (an empty folder outside), and the tree's store's
``info/alternates`` names it, so git reads every object the repository has and writes new ones (a
worker's ``git add``, its commits, a ``git repack``) into its tree's store. A worker that deletes
objects deletes only what its tree wrote; the repository's history cannot go.

The store is one per job tree (a root job and its child jobs: one tree, as its branches are): a
worker's git reads the objects of its siblings' un-merged commits (``git log --all``), never what a
worker of another tree wrote. A store every tree wrote, searched first by every tree's git, let one
tree plant a loose object under the name of another's file (git does not hash a loose object it
reads) and have that tree commit it (issue 48, item 2). A child job shares its parent's tree: its
branches merge into its parent worker's, so nothing would be kept from the tree that a second store
could keep, and its parent worker's git reads its child's commits as a sibling's. Under Landlock
(no mounts) git is told the tree's store by its path (process/landlock.py): the alternates line,
relative, then leads to an empty folder beside the store (:func:`prepare`), and the real store comes
by ``GIT_ALTERNATE_OBJECT_DIRECTORIES``.

Before the orchestrator runs git on a worktree outside the sandbox (its commit of the worker's
work, a reset, a resolver's result), :func:`take` moves what is in its tree's store into the
real one, each object checked: a loose object's content must hash to its name, and a pack is
read by ``git index-pack --strict``, which names each object by its content and checks it as git
fsck does. A tree must also hold only names git fsck accepts (git/tree_checks.py). An object that
fails is left out, named, and removed, so a worker can plant nothing under a name it did not earn;
the git that then needs it fails and says which object is missing. An object listed that is gone
when it is read was not refused: another take moved it, or the worker's own git packed it (a
``git gc``'s ``prune-packed``; the pack is taken). Takes of one store run one at a time in this
process (:func:`_one_at_a_time`): every take lists the whole store, its siblings' new objects too, and
two at once each found what the other had just moved (the false "not taken" of issue 47, item 6).
Whatever else is in the store (git's temporary files, anything a worker put there) is removed once
nothing has written it for :data:`GRACE` seconds: the store holds objects on their way in, nothing else (it counts against no
worker's disk cap otherwise, and it would grow for ever).

Before stores were per tree, one lay in the repository's git dir (``.git/orchestrator-objects``,
:func:`stores_at`): checkouts/retiring.py takes what it holds and removes it once no job uses it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import os
import re
import secrets
import stat
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import defences
from ..workspace.filesystem import FOLDER_FLAGS, remove_at
from .invocation import GitFailed, command, git_bytes, git_env, run_git
from .repository import common_dir_of, linked_git_dir
from .tree_checks import MAX_GITMODULES, MAX_TREE, gitmodules_blobs, gitmodules_problem, tree_problem

WORKERS_OBJECTS = "orchestrator-objects"  # in the repository's git dir: the one store all trees shared, before
SHOWN_AT = "orchestrator-host-objects"  # in the same dir: where the sandbox shows the real one
_KINDS = {b"blob", b"tree", b"commit", b"tag"}
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # (a FIFO planted there must not block)
_HEX = re.compile(r"[0-9a-f]+")
_OBJECTS = re.compile(r"[0-9a-f]{2}|pack")  # the folders of a store that hold objects
_OID_IN_TEXT = re.compile(r"\b[0-9a-f]{40}(?:[0-9a-f]{24})?\b")  # a SHA-1 or SHA-256 object id
GRACE = 60.0  # seconds a name that is no object may stay unwritten before it is removed (a git's temporary file)
_CHUNK = 1 << 16
_HEAD = 64  # inflated bytes that hold any object's header (kind, size, NUL)


@dataclass(frozen=True)
class Stores:
    """A repository's two stores: ``workers`` (a job tree's: the sandbox binds it over ``host``) and
    ``shown_at``, where the sandbox shows ``host`` read-only."""

    workers: Path
    host: Path
    shown_at: Path


@dataclass
class Taken:
    """What :func:`take` moved into the repository's store, and what it refused (with why)."""

    objects: int = 0
    packs: int = 0
    refused: list[str] = field(default_factory=list)


def stores_at(common: Path) -> Stores:
    """The one store every tree of the repository whose (common) git dir is ``common`` shared before
    stores were per tree (what checkouts/retiring.py takes and removes), and where the sandbox shows
    the real store."""
    return Stores(common / WORKERS_OBJECTS, common / "objects", common / SHOWN_AT)


def tree_stores(store: Path, common: Path) -> Stores:
    """The stores of a job tree whose own store is ``store`` (Workspace.tree_objects), in the
    repository whose (common) git dir is ``common``."""
    return Stores(store, common / "objects", common / SHOWN_AT)


def stores_of(directory: Path, store: Path) -> Stores | None:
    """The stores of the linked worktree at ``directory``, of the job tree whose store is ``store``
    (None: not a linked worktree)."""
    private = linked_git_dir(directory)
    common = common_dir_of(private) if private is not None else None
    return tree_stores(store, common) if common is not None else None


def prepare(stores: Stores) -> None:
    """Make a tree's store (once per tree): its alternates name the real store where the sandbox
    shows it, and the real store's own alternates, made absolute (a relative one is relative to
    the real folder, which inside the sandbox is somewhere else). The shown store is named relative
    to where the sandbox binds the tree's store (the repository's ``objects``, its sibling): a
    project view shows the git dir at another path (process/sandbox.py ProjectView), where an
    absolute name would point into the checkout. Where git is told the store's own path (Landlock)
    that name leads beside it, to an empty folder made here (else every git there says the
    alternate is missing)."""
    stores.shown_at.mkdir(exist_ok=True)
    (stores.workers.parent / SHOWN_AT).mkdir(parents=True, exist_ok=True)
    alternates = stores.workers / "info" / "alternates"
    lines = [f"../{SHOWN_AT}"]
    with contextlib.suppress(OSError):
        for line in (stores.host / "info" / "alternates").read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                lines.append(str((stores.host / line.strip()).resolve()))
    text = "".join(f"{line}\n" for line in lines)
    with contextlib.suppress(OSError):
        if alternates.read_text(encoding="utf-8") == text:
            return
    alternates.parent.mkdir(parents=True, exist_ok=True)
    temp = alternates.with_name(f"alternates.{secrets.token_hex(4)}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, alternates)


def take(directory: Path, repo: Path, store: Path) -> Taken:
    """Move what the sandboxed workers of a job tree wrote into its store (``store``) into the real
    one of ``directory``'s repository (``repo`` names it for git), checking every object; the moved
    ones leave the tree's store, so a second call moves only what is new (a sibling's objects go
    along: they are checked the same, and a commit of a worker that is not merged is garbage as it
    would have been). Nothing to do (no store, or an empty one) costs a listing.

    Workers may still run, and the store is theirs to write: every step goes through a folder
    opened without following a link (a folder of it turned into a link to another repository's
    objects would otherwise have them moved here, and deleted there)."""
    stores = stores_of(directory, store)
    return Taken() if stores is None else take_from(stores, repo)


# Why each object lately refused was: every worker of a tree writes one store, and a take
# moves all of it, so a worker's object is often refused by a sibling's take; the worker whose
# branch then names a missing object is told why from here (git/worker_refs.py), not the sibling.
_REFUSED: collections.OrderedDict[str, str] = collections.OrderedDict()
_REFUSED_KEPT = 4096


def _remember_refused(oid: str, why: str) -> None:
    with _HELD_GUARD:
        _REFUSED[oid] = why
        _REFUSED.move_to_end(oid)
        while len(_REFUSED) > _REFUSED_KEPT:
            _REFUSED.popitem(last=False)


def refused_earlier(text: str) -> list[str]:
    """ "OID: why" for each object id in ``text`` (git's words on a missing object) that a take of
    this process refused, newest memory first kept."""
    with _HELD_GUARD:
        return [f"{oid}: {_REFUSED[oid]}" for oid in dict.fromkeys(_OID_IN_TEXT.findall(text)) if oid in _REFUSED]


_HELD: dict[str, threading.Lock] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def _one_at_a_time(store: Path) -> Iterator[None]:
    """Held while this process takes from ``store``: sibling workers' takes (each holds only its own
    worktree's lock) would otherwise move what the other had listed."""
    with _HELD_GUARD:
        held = _HELD.setdefault(os.path.abspath(store), threading.Lock())
    with held:
        yield


def take_from(stores: Stores, repo: Path) -> Taken:
    """:func:`take`, for the stores of ``repo`` given as they are (no worktree to find them from)."""
    with _one_at_a_time(stores.workers):
        return _take_store(stores, repo)


def _take_store(stores: Stores, repo: Path) -> Taken:
    taken = Taken()
    try:
        store = os.open(stores.workers, FOLDER_FLAGS)
    except OSError:
        return taken  # none (no worker of this repository was sandboxed), or a link: nothing taken
    try:
        names = [e.name for e in os.scandir(store) if _OBJECTS.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
        _sweep(store, lambda name: name in names or name == "info")
        _sweep_info(store)
        algorithm = _algorithm(repo) if names else "sha1"
        gitmodules = _Gitmodules(store, repo, algorithm)
        for name in sorted(names, key=lambda name: name != "pack"):  # packs first: a loose tree's .gitmodules may be in one
            try:
                folder = os.open(name, FOLDER_FLAGS, dir_fd=store)
            except OSError:
                continue  # gone, or turned into a link meanwhile
            try:
                if name == "pack":
                    _take_packs(folder, repo, taken)
                else:
                    _take_folder(folder, name, stores.host, gitmodules, taken)
            finally:
                os.close(folder)
    finally:
        os.close(store)
    return taken


@dataclass(frozen=True)
class _Gitmodules:
    """The check of a loose tree's ``.gitmodules`` files (git/tree_checks.py), each read from the
    workers' store (its content hashed to its name) or else from the repository."""

    store: int
    repo: Path
    algorithm: str

    def problem(self, tree_body: bytes, width: int) -> str:
        """Why a tree whose content is ``tree_body`` may not enter the repository for a ``.gitmodules``
        it holds ("": none, or each passes git fsck's checks)."""
        for raw in gitmodules_blobs(tree_body, width):
            oid = raw.hex()
            content = self._read(oid)
            if content is None:
                return f"its .gitmodules {oid} is in neither store"
            why = gitmodules_problem(self.repo, content)
            if why:
                return f"it holds {why}"
        return ""

    def _read(self, oid: str) -> bytes | None:
        source = -1
        with contextlib.suppress(OSError):  # each step without following a link (a worker's store)
            folder = os.open(oid[:2], FOLDER_FLAGS, dir_fd=self.store)
            try:
                source = os.open(oid[2:], _FILE, dir_fd=folder)
            finally:
                os.close(folder)
        if source >= 0:
            try:
                return _inflated_blob(source, oid, self.algorithm)
            finally:
                os.close(source)
        try:
            return git_bytes(self.repo, "cat-file", "blob", oid)
        except GitFailed:
            return None


def _inflated_blob(source: int, oid: str, algorithm: str) -> bytes | None:
    """The body of the loose blob open at ``source`` if it hashes to ``oid`` and is no larger than a
    ``.gitmodules`` may be (a larger one is returned cut at one byte past it, which the check refuses)."""
    inflate = zlib.decompressobj()
    digest = hashlib.new(algorithm)
    data = bytearray()
    try:
        while not inflate.eof and (chunk := os.read(source, _CHUNK)):
            piece = inflate.decompress(chunk, MAX_GITMODULES + _HEAD + 1 - len(data))
            digest.update(piece)
            data.extend(piece)
            if len(data) > MAX_GITMODULES + _HEAD:
                break
    except (OSError, zlib.error):
        return None
    end = data.find(b"\0")
    if end < 0 or not data.startswith(b"blob "):
        return None
    if len(data) > MAX_GITMODULES + _HEAD:
        return bytes(data[end + 1 :])  # too large: refused as such, whatever it holds
    if not inflate.eof or digest.hexdigest() != oid:
        return None
    return bytes(data[end + 1 :])


def remove(stores: Stores, repo: Path) -> Taken | None:
    """Remove the workers' store and the folder the sandbox shows the real one at, once no
    sandboxed worker of the repository can need them (the caller knows): what the store still
    holds is taken into the real store first, checked (a branch of the orchestrator's may point at
    a commit only there), then both folders go. None: there was no store. The next sandboxed worker
    makes them again (:func:`prepare`)."""
    if not stores.workers.is_dir() and not stores.shown_at.is_dir():
        return None
    taken = take_from(stores, repo) if stores.workers.is_dir() and not stores.workers.is_symlink() else Taken()
    parent = os.open(stores.workers.parent, FOLDER_FLAGS)
    try:
        for folder in (stores.workers, stores.shown_at):
            remove_at(parent, folder.name)  # a link is unlinked, never followed
    finally:
        os.close(parent)
    return taken


def _take_folder(folder: int, prefix: str, host: Path, gitmodules: _Gitmodules, taken: Taken) -> None:
    algorithm = gitmodules.algorithm
    width = hashlib.new(algorithm).digest_size * 2

    def an_object(name: str) -> bool:
        return len(prefix + name) == width and bool(_HEX.fullmatch(name))

    _sweep(folder, an_object)  # git's own temporary files left behind, or anything else
    for entry in os.scandir(folder):
        oid = prefix + entry.name
        if not an_object(entry.name):
            continue
        why = _take_loose(folder, entry.name, oid, host, gitmodules)
        if why:
            taken.refused.append(f"{oid}: {why}")
            _remember_refused(oid, why)
        elif why is not None:
            taken.objects += 1


@functools.lru_cache(maxsize=64)
def _algorithm(repo: Path) -> str:
    """The repository's object hash (fixed when it is made, so asked once per process)."""
    done = run_git(repo, "rev-parse", "--show-object-format", check=False)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() in ("sha1", "sha256") else "sha1"


def _take_loose(folder: int, name: str, oid: str, host: Path, gitmodules: _Gitmodules) -> str | None:
    """One loose object, checked as it is copied to a temporary file in the real store, then
    linked into place; "" when moved, None when it was gone by the time it was read (nothing to
    take), else why it was refused (it stays in the workers' store)."""
    target = host / oid[:2] / oid[2:]
    try:
        source = os.open(name, _FILE, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    temp = host / f"tmp_obj_{secrets.token_hex(4)}"
    try:
        if not stat.S_ISREG(os.fstat(source).st_mode):
            return "not a regular file"
        if target.exists():
            _unlink(name, folder)  # the repository has it already
            return ""
        why = _copy_checked(source, temp, oid, gitmodules)
        if why:
            _unlink(name, folder)  # not the object it is named: never taken, so not kept either
            return why
        target.parent.mkdir(mode=0o777, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # written meanwhile: the same bytes by name
            os.link(temp, target)
        _unlink(name, folder)
        return ""
    except OSError as exc:
        return f"not moved ({exc.strerror})"
    finally:
        os.close(source)
        _unlink(temp)


def _copy_checked(source: int, temp: Path, oid: str, gitmodules: _Gitmodules) -> str:
    """Copy ``source`` to ``temp`` as it is, inflating it on the way to check it: git's
    "<kind> <size>\\0<body>" whose hash is ``oid``. "" when it is that object, else why not.
    Inflated a bounded piece at a time: a small file that inflates to gigabytes costs no memory."""
    inflate = zlib.decompressobj()
    digest = hashlib.new(gitmodules.algorithm)
    kept = bytearray()  # the first bytes inflated (the header is in them), all of a tree's
    total = 0

    def feed(data: bytes) -> None:
        nonlocal total
        digest.update(data)
        tree = (bytes(kept[:5]) + data[:5]).startswith(b"tree ")
        room = (MAX_TREE + _HEAD if tree else _HEAD) - len(kept)
        if room > 0:
            kept.extend(data[:room])
        total += len(data)

    with open(temp, "xb") as out:
        os.fchmod(out.fileno(), 0o444)
        try:
            while not inflate.eof and (chunk := os.read(source, _CHUNK)):
                out.write(chunk)
                feed(inflate.decompress(chunk, _CHUNK))
                while inflate.unconsumed_tail and not inflate.eof:
                    feed(inflate.decompress(inflate.unconsumed_tail, _CHUNK))
        except zlib.error:
            return "not a zlib stream"
        if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail or os.read(source, 1):
            return "not one whole zlib stream"
    end = kept.find(b"\0")
    kind, _, size = bytes(kept[: max(end, 0)]).partition(b" ")
    if end < 0 or kind not in _KINDS or not size.isdigit() or int(size) != total - end - 1:
        return "not a git object"
    if digest.hexdigest() != oid and not defences.off("object_check"):  # (the hostile suite's switch)
        return f"its content is object {digest.hexdigest()}, not the one it is named"
    if kind == b"tree":
        if total > len(kept):
            return f"a tree larger than {MAX_TREE >> 20} MiB"
        body = bytes(kept[end + 1 :])
        why = tree_problem(body, digest.digest_size) or gitmodules.problem(body, digest.digest_size)
        return f"a tree git fsck refuses: {why}" if why else ""
    return ""


def _take_packs(folder: int, repo: Path, taken: Taken) -> None:
    """Each finished pack (its index written: git renames the index last) read by ``git
    index-pack``, which names every object by its content and writes a pack and index of its own."""
    names = set(os.listdir(folder))
    indexes = sorted(n for n in names if n.startswith("pack-") and n.endswith(".idx"))
    stems = {n.removesuffix(".idx") for n in indexes}
    _sweep(folder, lambda name: name.partition(".")[0] in stems)  # a pack never finished, or anything else
    for index in indexes:
        stem = index.removesuffix(".idx")
        try:
            source = os.open(f"{stem}.pack", _FILE, dir_fd=folder)
        except FileNotFoundError:
            continue  # gone since it was listed: nothing to take
        except OSError as exc:
            taken.refused.append(f"{stem}.pack: cannot be read ({exc.strerror})")
            continue
        try:
            done = subprocess.run(
                command(repo, "index-pack", "--strict", "--stdin", "--fix-thin"),
                stdin=source,
                capture_output=True,
                env=git_env(),
                check=False,
            )
        finally:
            os.close(source)
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()
            taken.refused.append(f"{stem}.pack: git index-pack refused it ({' '.join(why[-2:]) or done.returncode})")
            for name in names:
                if name.startswith(f"{stem}."):
                    _unlink(name, folder)
            continue
        taken.packs += 1
        for name in names:
            if name.startswith(f"{stem}."):
                _unlink(name, folder)


def _sweep(folder: int, keep: Callable[[str], bool]) -> None:
    """Remove each name in ``folder`` that ``keep`` refuses and nothing wrote for :data:`GRACE` seconds
    (a git running in a sandbox now may be writing a temporary file there)."""
    stale = time.time() - GRACE
    for entry in os.scandir(folder):
        if keep(entry.name):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_mtime < stale:
                remove_at(folder, entry.name)


def _sweep_info(store: int) -> None:
    """The store's ``info`` folder holds its alternates (made by :func:`prepare`) and nothing else."""
    try:
        info = os.open("info", FOLDER_FLAGS, dir_fd=store)
    except OSError:
        return
    try:
        _sweep(info, lambda name: name == "alternates")
    finally:
        os.close(info)


def _unlink(path: str | Path, folder: int | None = None) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path, dir_fd=folder)


__all__ = ["SHOWN_AT", "WORKERS_OBJECTS", "Stores", "Taken", "prepare", "stores_at", "stores_of", "take", "tree_stores"]
