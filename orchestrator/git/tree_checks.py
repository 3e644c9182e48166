"""What a tree a worker wrote may hold before the repository takes it, and what a worker's commit may
add before a branch points at it.

A tree's entries are checked by ``git fsck``'s rules (:func:`tree_problem`): no empty name, no name
with a slash, no ``.`` or ``..``, no ``.git`` in any spelling a file system folds to it (case,
NTFS's trailing dots and spaces and ``git~1``, HFS's ignorable characters), no ``.gitmodules``,
``.gitattributes`` or ``.gitignore`` that is a symbolic link, entries sorted once each, modes git
writes. git 2.39 itself does not refuse ``..`` in an index entry, so a worker's index could name a
file outside its checkout; a tree made from it is refused here, whoever's git made it.

A tree's ``.gitmodules`` file is checked as git fsck checks it (:func:`gitmodules_problem`): a
submodule whose ``update`` runs a command (``!cmd``) is refused, so the repository still passes
``git fsck`` (and a push to a remote that checks objects) after any job.

A commit may add a submodule (a gitlink) only where its base had one (:func:`added_gitlinks`): a
nested repository in a worker's checkout is its own data, never a repository the orchestrator's git
would enter.

A commit's new files count against the worker's caps as they are, inflated (:func:`commit_problem`): a
200 MiB file of zeros is a 0.2 MB object, which a worker can stage without ever writing the file
(``git update-index --skip-worktree``), and a landing would write it whole into the user's checkout.
Sizes come from ``cat-file --batch-check``, which reads an object's header, never its content.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .. import defences
from .invocation import git_bytes, run_git

MAX_TREE = 32 << 20  # bytes of one tree object the check reads; a larger one is refused
_MODES = {b"100644", b"100755", b"100664", b"120000", b"40000", b"160000"}
_DIRECTORY = b"40000"
_GITLINK = "160000"
_LINK = b"120000"
# Code points HFS+ ignores when it compares names (git's is_hfs_dotgit): ".g\u200cit" is ".git" there.
_IGNORED = {*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF}
_NO_LINKS = (".gitmodules", ".gitattributes", ".gitignore", ".mailmap")


def tree_problem(body: bytes, width: int) -> str:
    """Why the tree whose content is ``body`` (object ids of ``width`` bytes) may not enter the
    repository, or "" when git fsck's rules hold for every entry."""
    at, previous = 0, b""
    while at < len(body):
        space = body.find(b" ", at)
        end = body.find(b"\0", space + 1) if space >= 0 else -1
        if space < 0 or end < 0 or end + 1 + width > len(body):
            return "a tree entry is cut short"
        mode, name = body[at:space], body[space + 1 : end]
        at = end + 1 + width
        why = _name_problem(name, mode)
        if why:
            return why
        if mode not in _MODES:
            return f"entry {_shown(name)} has mode {mode.decode('ascii', 'replace')!r}, which git does not write"
        key = name + b"/" if mode == _DIRECTORY else name
        if previous and (key == previous or name == previous.rstrip(b"/")):
            return f"entry {_shown(name)} is in the tree twice"
        if previous and key < previous:
            return f"entry {_shown(name)} is out of git's order"
        previous = key
    return ""


def _name_problem(name: bytes, mode: bytes) -> str:
    if not name:
        return "an entry has an empty name"
    if b"/" in name:
        return f"entry {_shown(name)} has a slash in its name"
    if name in (b".", b".."):
        return f"an entry is named {_shown(name)}"
    folded = _folded(name)
    if folded in (".git", "git~1"):
        return f"entry {_shown(name)} is a .git on some file system"
    if mode == _LINK and folded in _NO_LINKS:
        return f"entry {_shown(name)} is a symbolic link"
    if mode == _DIRECTORY and _is_gitmodules(name):
        return f"entry {_shown(name)} is a folder (git fsck: gitmodulesBlob)"
    return ""


def _is_gitmodules(name: bytes) -> bool:
    """A name some file system reads as ``.gitmodules`` (git's is_hfs/is_ntfs_dotgitmodules, roughly:
    any case, HFS's ignorable code points, NTFS's trailing dots and spaces and its short name)."""
    folded = _folded(name)
    return folded == ".gitmodules" or (folded.startswith("gitmod~") and folded[7:].isdigit())


def gitmodules_blobs(body: bytes, width: int) -> list[bytes]:
    """The objects (raw ids) a tree whose content is ``body`` holds as a ``.gitmodules`` file: git
    fsck checks each as a submodule configuration (:func:`gitmodules_problem`)."""
    found, at = [], 0
    while at < len(body):
        space = body.find(b" ", at)
        end = body.find(b"\0", space + 1) if space >= 0 else -1
        if space < 0 or end < 0:
            break
        if body[at:space] != _DIRECTORY and _is_gitmodules(body[space + 1 : end]):
            found.append(body[end + 1 : end + 1 + width])
        at = end + 1 + width
    return found


MAX_GITMODULES = 1 << 20  # bytes of a .gitmodules a worker may commit (a real one is a few hundred)
QUOTED_COMMAND = 80  # characters of a submodule's ``update = !command`` a refusal quotes (the worker's words)


def gitmodules_problem(repo: str | Path, content: bytes) -> str:
    """Why git fsck refuses ``content`` as a ``.gitmodules`` (its gitmodules* checks: a submodule
    ``update = !command``, a ``url`` or ``path`` git would read as an option, a name that climbs with
    ``..``, a file git cannot parse), or "" when it takes it. Parsed by ``git config --file`` (no
    include followed), which runs nothing."""
    if len(content) > MAX_GITMODULES:
        return f"a .gitmodules larger than {MAX_GITMODULES >> 20} MiB"
    done = run_git(
        repo,
        "config",
        "-z",
        "--no-includes",
        "--file",
        "/dev/stdin",
        "--list",
        input=content.decode("utf-8", "surrogateescape"),
        check=False,
    )
    if done.returncode != 0:
        return "a .gitmodules git cannot parse (git fsck: gitmodulesParse)"
    for entry in filter(None, done.stdout.split("\0")):
        key, _, value = entry.partition("\n")
        section, _, rest = key.partition(".")
        name, _, variable = rest.rpartition(".")
        if section != "submodule" or not name:
            continue
        if ".." in name.replace("\\", "/").split("/"):
            return f"a .gitmodules whose submodule name {name!r} climbs out with '..' (git fsck: gitmodulesName)"
        if variable == "update" and value.strip().startswith("!"):
            return f"a .gitmodules whose submodule {name!r} runs a command on update ({value[:QUOTED_COMMAND]!r}; git fsck: gitmodulesUpdate)"
        if variable in ("url", "path") and value.startswith("-"):
            return f"a .gitmodules whose submodule {name!r} has a {variable} git would read as an option (git fsck: gitmodules{variable.capitalize()})"
    return ""


def _folded(name: bytes) -> str:
    """``name`` as case-insensitive file systems compare it: lower case, HFS's ignorable code points
    dropped, NTFS's trailing dots and spaces cut."""
    text = name.decode("utf-8", "replace")
    text = "".join(c for c in text if ord(c) not in _IGNORED)
    return unicodedata.normalize("NFC", text).lower().rstrip(". ")


def _shown(name: bytes) -> str:
    return repr(name.decode("utf-8", "backslashreplace"))


@dataclass(frozen=True)
class _Change:
    """One path ``diff-tree`` says a commit changed against its base: its old and new mode, its new object."""

    old_mode: str
    new_mode: str
    new: str
    path: str


def _changes(repo: str | Path, base: str, commit: str) -> list[_Change]:
    out = run_git(repo, "diff-tree", "-r", "-z", "--raw", "--no-renames", "--no-abbrev", base, commit).stdout
    fields = out.split("\0")
    found = []
    for i in range(0, len(fields) - 1, 2):
        meta = fields[i].lstrip(":").split(" ")
        if len(meta) >= 4:
            found.append(_Change(meta[0], meta[1], meta[3], fields[i + 1]))
    return found


def added_gitlinks(repo: str | Path, base: str, commit: str) -> list[str]:
    """The paths where ``commit`` has a submodule (a gitlink) and ``base`` had none."""
    return [c.path for c in _changes(repo, base, commit) if c.new_mode == _GITLINK and c.old_mode != _GITLINK]


@dataclass(frozen=True)
class BlobLimits:
    """What a worker's commit may add, in bytes (0: no limit): ``file``, one file (the worker's
    file-size limit); ``total``, all its new files together (its disk cap)."""

    file: int = 0
    total: int = 0

    def __bool__(self) -> bool:
        return bool(self.file or self.total)


UNLIMITED = BlobLimits()


def commit_problem(repo: str | Path, base: str, commit: str, limits: BlobLimits) -> str:
    """Why ``commit`` may not be taken for what the files it adds or changes against ``base`` hold:
    more than ``limits`` allow (:func:`_oversized`), or a ``.gitmodules`` git fsck refuses
    (:func:`_gitmodules_changed`); "" when neither."""
    changes = _changes(repo, base, commit)
    return _oversized(repo, changes, limits) or _gitmodules_changed(repo, changes)


def _oversized(repo: str | Path, changes: list[_Change], limits: BlobLimits) -> str:
    """Why ``changes`` add more than ``limits`` allow (each new or changed file at its inflated
    size, each object once), or "" when they do not."""
    if not limits or defences.off("inflated_size"):  # (the hostile suite's switch: orchestrator/defences.py)
        return ""
    new: dict[str, str] = {}  # object -> the first path that holds it
    for change in changes:
        if change.new_mode not in (_GITLINK, "000000"):
            new.setdefault(change.new, change.path)
    if not new:
        return ""
    out = run_git(
        repo, "cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)", input="".join(f"{o}\n" for o in new)
    )
    sizes = {}
    for line in out.stdout.splitlines():
        oid, kind, size = (line.split(" ") + ["", ""])[:3]
        if kind == "blob" and size.isdigit():
            sizes[oid] = int(size)
    largest = max(sizes, key=lambda oid: sizes[oid], default=None)
    if largest is not None and limits.file and sizes[largest] > limits.file:
        return (
            f"file {_shown(new[largest].encode())} holds {_mb(sizes[largest])} (inflated), more than the file-size limit "
            f"of {_mb(limits.file)} (workers.max_disk_mb, workers.max_log_mb)"
        )
    total = sum(sizes.values())
    if limits.total and total > limits.total:
        return f"its new files hold {_mb(total)} (inflated), more than the disk cap of {_mb(limits.total)} (workers.max_disk_mb)"
    return ""


def _gitmodules_changed(repo: str | Path, changes: list[_Change]) -> str:
    """Why a ``.gitmodules`` file among ``changes`` fails git fsck's checks (:func:`gitmodules_problem`),
    or "" when none does."""
    for change in changes:
        if change.new_mode in (_GITLINK, "000000") or not _is_gitmodules(change.path.rpartition("/")[2].encode()):
            continue
        size = run_git(repo, "cat-file", "-s", change.new, check=False).stdout.strip()
        if not size.isdigit() or int(size) > MAX_GITMODULES:
            return (
                f"file {_shown(change.path.encode())} is no .gitmodules git fsck takes (larger than {MAX_GITMODULES >> 20} MiB)"
            )
        why = gitmodules_problem(repo, git_bytes(repo, "cat-file", "blob", change.new))
        if why:
            return f"file {_shown(change.path.encode())} is {why}"
    return ""


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


__all__ = [
    "MAX_TREE",
    "UNLIMITED",
    "BlobLimits",
    "added_gitlinks",
    "commit_problem",
    "gitmodules_blobs",
    "gitmodules_problem",
    "tree_problem",
]
