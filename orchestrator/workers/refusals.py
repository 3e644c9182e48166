"""What the system refused a worker, from records the worker cannot write: the orchestrator's own
(:func:`record`: an object of its sandbox not taken into the repository, a branch move left undone, a
link of its git dir undone) and its network record (network/egress.py: what its proxy refused it and
the allowed hosts it could not reach; under Landlock, network/direct.py: a direct connection to a port
not allowed; :func:`add_network`). Those alone are its refusals.

What its log says it was refused (:func:`scan`: the sandbox's and the kernel's refusals its CLI printed,
"Read-only file system", EROFS, "Permission denied" on a path outside its own folders, a git ref it
could not lock, no route out) has no record outside it: bubblewrap's read-only binds and Landlock's file
rules keep none here (Landlock's audit of denials needs the kernel's audit on and a reader with
CAP_AUDIT_READ). The worker writes its log, so those lines are its own words, which any program can
print without trying anything: they are kept apart (``Refusals.said``), shown as its words, never
counted as refusals; and no ``[orchestrator] ...`` line of the log is read at all.

A worker whose every write outside its checkout was refused may still have done its subtask, and is
``success`` then; its refusals are shown beside that status on every surface, so a reviewer learns
what the agent tried. The log is the worker's own writing, so the summary is bounded however much it
printed: distinct (kind, path) pairs up to :data:`MAX_SHOWN` of each kind of source, each line cut to
:data:`MAX_LINE`, and a count of every matching line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..network.egress import RecordEntry
from ..outcomes import Refusal, RefusalKind

MAX_SHOWN = 20  # distinct refusals kept on a worker's record
MAX_LINE = 300  # characters of a refused line kept
CHUNK = 1 << 20  # bytes read at a time
_LINE_CAP = 4096  # bytes of one line looked at (a line without an end is cut there)
_KNOWN = 4096  # lines whose reading is remembered during one scan

# The words each kind is found by (bytes: the log is read as written, never decoded whole).
_WORDS: tuple[tuple[RefusalKind, bytes], ...] = (
    (RefusalKind.READ_ONLY, rb"Read-only file system|\bEROFS\b"),
    (
        RefusalKind.GIT_REF,
        rb"cannot lock ref|unable to update (?:local )?ref|failed to update ref|could not (?:write|delete) reference"
        rb"|cannot force update the branch|Could not drop stash entry",
    ),
    (RefusalKind.PERMISSION, rb"Permission denied|\bEACCES\b|Operation not permitted|\bEPERM\b"),
)
# A program that ignored the proxy variables, in a sandbox with no route out (bubblewrap), or whose
# connection its Landlock rules refused (EACCES, as Node, urllib and urllib3 report it): it failed closed.
_NO_ROUTE = re.compile(rb"Network is unreachable|\bENETUNREACH\b|connect EACCES|(?:urlopen error|new connection:) \[Errno 13\]")
# Where a line may hold one: plain words only, which the regex engine finds at C speed (a log of
# 100 MB is read in well under a second); each line found is then read by ``classify``.
_ANY = re.compile(
    rb"Read-only file system|EROFS|Permission denied|EACCES|Operation not permitted|EPERM|lock ref|update (?:local )?ref"
    rb"|reference|force update|drop stash|Network is unreachable|ENETUNREACH"
)
_KINDS = [(kind, re.compile(words)) for kind, words in _WORDS]
_QUOTED = re.compile(r"""['"`‘“](/[^'"`’”\n]+)['"’”]""")
_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"`:,;()\[\]{}<>]+")


@dataclass
class Refusals:
    """A worker's refusals (``shown``, ``total``: from the records it cannot write) and what its log
    says it was refused (``said``, ``said_total``: its own words, never counted as refusals): of each,
    the first :data:`MAX_SHOWN` distinct ones (by kind and path, or line where no path is named), and
    how many there were."""

    shown: list[Refusal] = field(default_factory=list)
    total: int = 0
    said: list[Refusal] = field(default_factory=list)
    said_total: int = 0
    _seen: set[tuple[bool, str, str]] = field(default_factory=set, repr=False)

    def copy(self) -> Refusals:
        """Another one holding the same (its entries are never changed in place: ``add`` replaces them)."""
        return Refusals(list(self.shown), self.total, list(self.said), self.said_total, set(self._seen))

    def add(self, found: Refusal) -> None:
        """Count ``found`` (a refusal if ``recorded``, else the worker's words); keep it unless one of
        its kind on its path (or, naming none, its line) is kept. A host refused again replaces its
        line: the latest says how many times."""
        kept = self.shown if found.recorded else self.said
        if found.recorded:
            self.total += 1
        else:
            self.said_total += 1
        key = (found.recorded, found.kind.value, found.path if found.path is not None else found.line)
        if key in self._seen:
            if found.kind is RefusalKind.NETWORK and found.path is not None:
                kept[:] = [found if (r.kind, r.path) == (found.kind, found.path) else r for r in kept]
            return
        if len(kept) < MAX_SHOWN:
            self._seen.add(key)
            kept.append(found)


def scan(log: Path, allowed: Sequence[Path] = (), start: int = 0, into: Refusals | None = None) -> Refusals:
    """The refusals in ``log`` from byte ``start`` on (added to ``into``, after what it holds).
    ``allowed``: the folders the worker may write (its checkout, its TMPDIR): a "Permission denied" on
    a path inside them is a file's own mode, not a refusal of the sandbox. A log that cannot be read has none."""
    found = Refusals() if into is None else into
    roots = [str(p).rstrip("/") + "/" for p in allowed]
    known: dict[bytes, Refusal | None] = {}  # a line read before (a flood repeats a few lines)
    with contextlib.suppress(OSError):
        fd = _open_log(log)
        try:
            _lines(_read_lines(fd, start, roots, found, known)[1], roots, found, known)
        finally:
            os.close(fd)
    return found


def _open_log(log: Path) -> int:
    """A descriptor to read ``log`` by (as ``open(log, "rb")``, a folder refused, without its file object)."""
    return os.open(log, os.O_RDONLY | os.O_CLOEXEC)


def _size(fd: int) -> int:
    """The size of the file open at ``fd``: IsADirectoryError for a folder, as a file object's open says."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory")
    return info.st_size


@dataclass
class LogRead:
    """How far a worker's log has been read for what it says it was refused (``said``: its words up
    to ``offset``, the byte after its last whole line then), so a later read of the same log goes on
    from there rather than reading it all again (:func:`scan_more`). ``roots``: its own folders, as
    ``scan``'s ``allowed`` (the same for every read of one worker's end)."""

    said: Refusals
    offset: int
    roots: tuple[str, ...]


def scan_more(log: Path, allowed: Sequence[Path], since: LogRead | None = None) -> tuple[Refusals, LogRead]:
    """What ``log`` says the worker was refused (``Refusals.said`` and ``said_total``; nothing recorded),
    read on from ``since`` (its whole log without one, or when it is shorter than ``since`` read:
    rewritten; not opened when it is as long as ``since`` read), and where this read stopped. The words after its last whole line (one still being
    written) are in the result, not in the returned ``LogRead``: the next read reads them whole."""
    if since is not None:
        try:
            unchanged = os.stat(log).st_size == since.offset
        except OSError:
            unchanged = False
        if unchanged:  # nothing after its last whole line read: no more to say (one stat, not a read)
            return since.said.copy(), since
    roots = since.roots if since is not None else tuple(str(p).rstrip("/") + "/" for p in allowed)
    said, offset = (since.said.copy(), since.offset) if since is not None else (Refusals(), 0)
    known: dict[bytes, Refusal | None] = {}
    tail = b""
    try:
        fd = _open_log(log)  # (a plain descriptor: one fstat, where a file object makes two)
        try:
            size = _size(fd)
            if size < offset:  # rewritten since (a worker's own log): read whole
                said, offset = Refusals(), 0
            offset, tail = _read_lines(fd, offset, list(roots), said, known, size)
        finally:
            os.close(fd)
    except OSError:
        pass
    progress = LogRead(said.copy(), offset, roots)
    _lines(tail, list(roots), said, known)
    return said, progress


def _read_lines(
    fd: int,
    start: int,
    roots: list[str],
    found: Refusals,
    known: dict[bytes, Refusal | None],
    size: int | None = None,
) -> tuple[int, bytes]:
    """Read ``fd`` from ``start`` up to ``size`` (its size now if None), each whole line into
    ``found``; the byte after the last whole line, and what follows it (a line without its end,
    its last _LINE_CAP bytes). What is written after ``size`` is the next read's."""
    carry = b""
    at = end = start  # where the next chunk starts; the byte after the last whole line
    size = _size(fd) if size is None else size
    while at < size:
        # (what is there, not CHUNK: a read allocates the size it asks for, and most logs are small)
        chunk = os.pread(fd, min(size - at, CHUNK), at)
        if not chunk:
            break
        data = carry + chunk  # (``carry`` ends where ``chunk`` begins)
        cut = data.rfind(b"\n") + 1
        if cut:
            end = at - len(carry) + cut
        at += len(chunk)
        data, carry = data[:cut], data[cut:][-_LINE_CAP:]
        _lines(data, roots, found, known)
    return end, carry


def _lines(data: bytes, roots: list[str], found: Refusals, known: dict[bytes, Refusal | None]) -> None:
    end = 0
    for hit in _ANY.finditer(data):
        if hit.start() < end:
            continue  # the same line again
        begin = data.rfind(b"\n", 0, hit.start()) + 1
        end = data.find(b"\n", hit.end())
        end = len(data) if end < 0 else end
        raw = data[begin : min(end, begin + _LINE_CAP)]
        if raw in known:
            refusal = known[raw]
        else:
            refusal = classify(raw.decode("utf-8", "replace").strip(), roots)
            if len(known) >= _KNOWN:
                known.clear()
            known[raw] = refusal
        if refusal is not None:
            found.add(refusal)


def classify(line: str, roots: Sequence[str] = ()) -> Refusal | None:
    """The refusal ``line`` tells of, or None (a "Permission denied" inside the worker's own folders)."""
    shown = line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
    if line.startswith("[orchestrator] "):
        return None  # the orchestrator's refusals are in its record (:func:`record`), never read from the log
    raw = line.encode("utf-8", "replace")
    if _NO_ROUTE.search(raw):
        return Refusal(RefusalKind.NETWORK, None, shown)
    for kind, words in _KINDS:
        hit = words.search(raw)
        if hit is None:
            continue
        path = _path_near(line, len(raw[: hit.start()].decode("utf-8", "replace")))
        if kind is RefusalKind.PERMISSION and (path is None or _inside(path, roots)):
            return None
        return Refusal(kind, path, shown)
    return None


def add_network(found: Refusals, entries: Sequence[RecordEntry]) -> None:
    """The network record's ``entries`` (network/egress.py) as refusals: kind ``network``, HOST:PORT
    as the path, the entry's own words (a host refused again keeps its latest count)."""
    for entry in entries:
        found.add(Refusal(RefusalKind.NETWORK, entry.authority[:MAX_LINE], entry.line()[:MAX_LINE], recorded=True))


RECORD_MAX = 1 << 20  # bytes of the orchestrator's record read (it writes a line per thing refused)


def record(path: Path, line: str) -> None:
    """Note in the worker's record at ``path`` (WorkerPaths.refusals, which its sandbox cannot write)
    that the orchestrator refused it ``line`` (what it would not take from its sandbox)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": RefusalKind.ORCHESTRATOR.value, "line": line[:MAX_LINE]}) + "\n")


def add_recorded(found: Refusals, path: Path) -> None:
    """The orchestrator's record at ``path`` (:func:`record`) as refusals of kind ``orchestrator``;
    none where it is missing, a line that is not an entry skipped."""
    try:
        with path.open("rb", buffering=0) as f:
            data = f.read(min(os.fstat(f.fileno()).st_size, RECORD_MAX))  # (not RECORD_MAX: a read allocates what it asks for)
    except OSError:
        return
    for raw in data.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            item = json.loads(raw)
            found.add(Refusal(RefusalKind(item["kind"]), None, str(item["line"])[:MAX_LINE], recorded=True))


def _path_near(line: str, at: int) -> str | None:
    """The absolute path a refused line names: a quoted one (the last before its words, else the
    first after); else, in ``sh: 1: cannot create /a b/c: Read-only file system``, the field just
    before the words from its first ``/`` (names hold spaces); else a bare path near the words."""
    paths = [(m.start(1), m.group(1)) for m in _QUOTED.finditer(line)]
    if not paths:
        head = line[:at]
        if head.endswith(": "):
            field = head[:-2].rsplit(": ", 1)[-1]
            start = 0 if field.startswith("/") else field.find(" /") + 1
            if start or field.startswith("/"):
                return field[start:][:MAX_LINE]
        paths = [(m.start(), m.group(0).rstrip(".")) for m in _PATH.finditer(line)]
    before = [p for s, p in paths if s < at]
    chosen = before[-1] if before else (paths[0][1] if paths else None)
    return chosen[:MAX_LINE] if chosen else None


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path.rstrip("/") + "/" == root or path.startswith(root) for root in roots)
