"""Git objects written by Python, byte for byte as git writes them: where a merge needs many
commits (or, on the disjoint fast path, trees) one after another, each waits for no process.

``loose_objects`` says whether a repository's objects may be written so (sha1 ids and git's
default loose format, nothing in its config that changes where or how git writes one); where
not, ``CommitWriter`` has one long-lived ``git hash-object`` write them. The tree helpers read and
write a tree object's entries in git's format and order (gitformat-tree, as ``mktree`` writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

from .commits import Identity
from .invocation import GitFailed, command, git_env, run_git
from .repository import common_dir


def commit_body(tree: str, parent: str, message: str, when: str, who: Identity) -> bytes:
    """The bytes of a merge's commit (``CommitWriter``): what ``git commit-tree`` writes for the same inputs, its headers, then the message verbatim."""
    ident = who.ident(when)
    return f"tree {tree}\nparent {parent}\nauthor {ident}\ncommitter {ident}\n\n{message}".encode()


# Config that changes where or how git writes a loose object (its id's hash, the files' mode, an
# fsync, the compression): with any of it set, git writes the loop's commits (``loose_objects``).
_OBJECT_CONFIG = r"^(extensions\..*|core\.(sharedrepository|fsync.*|createobject|loosecompression|compression))$"
_PLAIN_EXTENSIONS = {"extensions.worktreeconfig", "extensions.partialclone", "extensions.preciousobjects", "extensions.noop"}


def loose_objects(repo: str | Path) -> Path | None:
    """The repository's objects folder when its commits can be written as git writes a loose
    object by default (``LooseObjects``): sha1 ids, no shared-repository modes, no fsync, no
    other compression or creation mode. None: anything else (git then writes them)."""
    done = run_git(repo, "config", "-z", "--get-regexp", _OBJECT_CONFIG, check=False)
    if done.returncode not in (0, 1):  # 1: none of it is set
        return None
    for entry in filter(None, done.stdout.split("\0")):
        key, _, value = entry.partition("\n")
        if not (key in _PLAIN_EXTENSIONS or (key == "extensions.objectformat" and value.strip().lower() == "sha1")):
            return None
    objects = common_dir(Path(repo)) / "objects"
    return objects if objects.is_dir() else None


class LooseObjects:
    """Objects written in the ``objects`` folder as git writes a loose object by default
    (write_loose_object): "<kind> <size>\\0<body>", its sha1 the id, deflated at zlib level 1
    into a ``tmp_obj_*`` file of mode 0444 (less the umask), renamed to ``xx/<rest of the id>`` (as
    ``core.createObject=rename`` does), no fsync; a loose object already there only has its date
    refreshed (freshen_loose_object). Creating a file is the slow part (0.2-0.7 ms on a busy
    disk): ``prepare`` makes the next one beforehand (while a merge runs), ``prepare_later`` many
    on a thread, in ``objects`` itself, where git's own temporary files go too; ``close`` removes
    those no object took. A crash leaves at most ``tmp_obj_*`` files, which ``git gc`` removes
    as it removes git's."""

    FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

    def __init__(self, objects: Path) -> None:
        self.objects = objects
        self.temps: list[tuple[int, Path]] = []
        self.thread: threading.Thread | None = None

    def _new(self) -> tuple[int, Path]:
        path = self.objects / f"tmp_obj_{secrets.token_hex(4)}"
        return os.open(path, self.FLAGS, 0o444), path

    def prepare(self) -> None:
        if not self.temps:
            self.temps.append(self._new())

    def prepare_later(self, count: int) -> None:
        def make() -> None:
            with contextlib.suppress(OSError):  # the writes make their own
                for _ in range(count):
                    self.temps.append(self._new())

        self.thread = threading.Thread(target=make, name="merge-objects", daemon=True)
        self.thread.start()

    def write(self, kind: str, body: bytes) -> str:
        data = f"{kind} {len(body)}\0".encode() + body
        oid = hashlib.sha1(data).hexdigest()
        path = self.objects / oid[:2] / oid[2:]
        with contextlib.suppress(OSError):
            os.utime(path)
            return oid
        try:
            fd, temp = self.temps.pop()
        except IndexError:
            fd, temp = self._new()
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(zlib.compress(data, 1))
            try:
                os.replace(temp, path)
            except FileNotFoundError:  # no xx/ folder yet
                os.makedirs(path.parent, 0o777, exist_ok=True)
                os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return oid

    def close(self) -> None:
        """Remove the files made beforehand that no object took."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        while self.temps:
            fd, temp = self.temps.pop()
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)


class CommitWriter:
    """``_commit`` for many commits. Where ``objects`` gives the repository's objects folder
    (``loose_objects``), each commit is written by Python (``LooseObjects``): the bytes
    ``commit-tree`` writes (``commit_body``), so the same id, with no process to wait for.
    Otherwise one git process writes them all: a long-lived ``git hash-object -t commit -w
    --stdin-paths`` reads each commit's bytes (written to a file in a temporary folder) and
    prints its id as soon as the object is written (loose, as ``commit-tree`` writes it).
    ``start`` starts that process when git writes the commits (else the first commit does);
    ``close`` ends it (killed when the merge fails midway: every object it wrote is complete, and
    none is referenced before the ref moves)."""

    def __init__(self, repo: str | Path, objects: Callable[[], Path | None] = lambda: None) -> None:
        self.repo = repo
        self.objects = objects
        self.loose: LooseObjects | None = None
        self.by_git = False
        self.process: subprocess.Popen[bytes] | None = None
        self.scratch: tempfile.TemporaryDirectory[str] | None = None
        self.error = ""
        self.count = 0

    def _loose(self) -> LooseObjects | None:
        if self.loose is None and not self.by_git:  # asked once: the answer holds for the writer's life
            objects = self.objects()
            if objects is None:
                self.by_git = True
            else:
                self.loose = LooseObjects(objects)
        return self.loose

    def _to_git(self) -> None:
        """Python could not write there (a folder it may not write, say): git writes the rest, and
        says what is wrong in its own words if it cannot either."""
        if self.loose is not None:
            with contextlib.suppress(OSError):
                self.loose.close()
        self.loose, self.by_git = None, True

    def start(self) -> None:
        """Make ready for the next commit (called while a merge runs)."""
        if (loose := self._loose()) is not None:
            try:
                loose.prepare()
                return
            except OSError:
                self._to_git()
        if self.process is None:
            self.scratch = tempfile.TemporaryDirectory(prefix="orchestrator-commit-")
            argv = command(self.repo, "hash-object", "-t", "commit", "-w", "--no-filters", "--stdin-paths")
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=git_env()
            )

    def commit(self, tree: str, parent: str, message: str, when: str, who: Identity) -> str:
        if (loose := self._loose()) is not None:
            try:
                return loose.write("commit", commit_body(tree, parent, message, when, who))
            except OSError:
                self._to_git()
        self.start()
        process = self.process
        assert self.scratch is not None and process is not None and process.stdin is not None and process.stdout is not None
        # A new file each time: truncating one ext4 holds data in (auto_da_alloc) is flushed on close.
        self.count += 1
        body = Path(self.scratch.name) / f"commit{self.count}"
        body.write_bytes(commit_body(tree, parent, message, when, who))
        try:
            process.stdin.write(f"{body}\n".encode())
            process.stdin.flush()
        except BrokenPipeError:
            pass  # git has exited: its stderr says why, below
        line = process.stdout.readline().decode().strip()
        if len(line) < 40:
            self.close(kill=True)
            raise GitFailed(["hash-object", "-t", "commit", "-w", "--stdin-paths"], -1, "no commit id: " + self.error)
        return line

    def close(self, kill: bool = False) -> None:
        """End the process (``kill``: at once) and remove the temporary files."""
        if self.loose is not None:
            with contextlib.suppress(OSError):
                self.loose.close()
        process, self.process = self.process, None
        if process is not None:
            if kill:
                process.kill()
            _, stderr = process.communicate()
            self.error = stderr.decode("utf-8", "replace")
            if process.returncode != 0 and not kill:
                raise GitFailed(["hash-object", "-t", "commit", "-w", "--stdin-paths"], process.returncode, self.error)
        if self.scratch is not None:
            self.scratch.cleanup()
            self.scratch = None


def tree_entries(body: bytes) -> dict[bytes, bytes]:
    """A tree object's entries: name -> its record in the tree ("<mode> <name>\\0<20-byte id>")."""
    entries, at = {}, 0
    while at < len(body):
        space = body.index(b" ", at)
        nul = body.index(b"\0", space)
        entries[body[space + 1 : nul]] = body[at : nul + 21]
        at = nul + 21
    return entries


def tree_record(mode: str, name: bytes, oid: str) -> bytes:
    """A tree entry, its mode as git writes it in a tree (octal, no leading 0: "40000" a folder)."""
    return b"%o %s\0%s" % (int(mode, 8), name, bytes.fromhex(oid))


def tree_body(entries: dict[bytes, bytes]) -> bytes:
    """A tree object's bytes, its entries in git's order (a folder's name compared as if it ended in "/")."""
    return b"".join(entries[n] for n in sorted(entries, key=lambda n: n + b"/" if entries[n][:6] == b"40000 " else n))
