"""What a tree a worker wrote may hold before the repository takes it, and what a worker's commit may
add before a branch points at it.

A tree's entries are checked by ``git fsck``'s rules (:func:`tree_problem`): no empty name, no name
with a slash, no ``.`` or ``..``, no ``.git`` in any spelling a file system folds to it (case,
NTFS's trailing dots and spaces and ``git~1``, HFS's ignorable characters), no ``.gitmodules``,
``.gitattributes`` or ``.gitignore`` that is a symbolic link, entries sorted once each, modes git
writes. git 2.39 itself does not refuse ``..`` in an index entry, so a worker's index could name a
file outside its checkout; a tree made from it is refused here, whoever's git made it.

A commit may add a submodule (a gitlink) only where its base had one (:func:`added_gitlinks`): a
nested repository in a worker's checkout is its own data, never a repository the orchestrator's git
would enter.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from .gitcmd import run_git

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
    return ""


def _folded(name: bytes) -> str:
    """``name`` as case-insensitive file systems compare it: lower case, HFS's ignorable code points
    dropped, NTFS's trailing dots and spaces cut."""
    text = name.decode("utf-8", "replace")
    text = "".join(c for c in text if ord(c) not in _IGNORED)
    return unicodedata.normalize("NFC", text).lower().rstrip(". ")


def _shown(name: bytes) -> str:
    return repr(name.decode("utf-8", "backslashreplace"))


def added_gitlinks(repo: str | Path, base: str, commit: str) -> list[str]:
    """The paths where ``commit`` has a submodule (a gitlink) and ``base`` had none."""
    out = run_git(repo, "diff-tree", "-r", "-z", "--raw", "--no-renames", "--no-abbrev", base, commit).stdout
    fields = out.split("\0")
    found = []
    for i in range(0, len(fields) - 1, 2):
        meta, path = fields[i], fields[i + 1]
        modes = meta.lstrip(":").split(" ")
        if len(modes) >= 2 and modes[1] == _GITLINK and modes[0] != _GITLINK:
            found.append(path)
    return found


__all__ = ["MAX_TREE", "added_gitlinks", "tree_problem"]
