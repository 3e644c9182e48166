"""Branch refs read from git's files backend, without starting git.

In the files backend (gitrepository-layout(5)) a ref is a loose file ``<common dir>/<ref>``
holding its object id, else a line of ``packed-refs``; git replaces either by a rename, so a
read sees the old value or the new one, never half of one. Loose before packed is git's own
order, and it is safe against ``git pack-refs`` (which writes ``packed-refs`` before it deletes
the loose files). Whatever is not that plain (another ref storage, a symbolic ref, a name git
would have to judge, a file that cannot be read) is left to git: :func:`read_refs` says None.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

from .repository import GitError, common_dir, is_plain_ref, plain_layout

OBJECT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # a SHA-1 or SHA-256 object id, whole (fullmatch)
_PACKED: dict[str, tuple[tuple[int, int, int], dict[str, str]]] = {}  # path -> (identity, refs)
_PACKED_GUARD = threading.Lock()


def read_refs(repo: str | Path, refs: Sequence[str]) -> dict[str, str] | None:
    """Each of ``refs`` (full names: ``refs/heads/...``) that exists -> its object id; None
    when the files cannot answer for all of them (ask git)."""
    if not plain_layout(str(repo)) or not all(ref.startswith("refs/") and is_plain_ref(ref) for ref in refs):
        return None
    try:
        common = common_dir(Path(repo))
    except (GitError, OSError):  # not a repository: git says so to whoever asks it
        return None
    found: dict[str, str] = {}
    packed: dict[str, str] | None = None
    for ref in refs:
        try:
            with open(common / ref, "rb") as file:
                text: bytes | None = file.read(200)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            text = None  # not loose (a folder: only names below it are)
        except OSError:
            return None
        if text is not None:
            value = text.decode("ascii", "replace").strip()
            if not OBJECT_ID.fullmatch(value):
                return None  # "ref: ..." (symbolic) or anything else: git's to read
            found[ref] = value
            continue
        if packed is None:
            packed = _packed(common / "packed-refs")
            if packed is None:
                return None
        if ref in packed:
            found[ref] = packed[ref]
    return found


def _packed(path: Path) -> dict[str, str] | None:
    """The refs of a ``packed-refs`` file ({} when there is none), parsed again only when the
    file was replaced; None when it cannot be read or parsed."""
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    with file:
        info = os.fstat(file.fileno())  # of the file read, not of a name that may be replaced meanwhile
        identity = (info.st_ino, info.st_size, info.st_mtime_ns)
        key = str(path)
        with _PACKED_GUARD:
            cached = _PACKED.get(key)
        if cached is not None and cached[0] == identity:
            return cached[1]
        try:
            text = file.read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    refs: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0] in "#^":  # the header; a peeled tag's object
            continue
        oid, _, name = line.partition(" ")
        if not OBJECT_ID.fullmatch(oid) or not name:
            return None
        refs[name] = oid
    with _PACKED_GUARD:
        if len(_PACKED) >= 64:
            _PACKED.clear()
        _PACKED[key] = (identity, refs)
    return refs
