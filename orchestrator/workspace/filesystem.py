"""How files reach the disk: atomic writes, durable ones (fdatasync, then the folder's fsync,
shared by writers renaming into the same folder at once), and ext4's allocation hint for
folders of many subfolders; and how a file a worker could have replaced is read (never through
a link, never blocking on a FIFO). Nothing here knows the workspace layout (workspace/layout.py does)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import stat
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import RefusedPath
from .groupsync import GroupCommit

# Logs and reports sit where workers can write: never open one through a link, and never
# block a server thread on a FIFO a worker put in a log's place.
NO_LINK_NO_BLOCK = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_DIR_SYNCS: dict[str, GroupCommit[str]] = {}
_DIR_SYNCS_LOCK = threading.Lock()


def _fsync_dir_grouped(path: Path | str) -> None:
    """Fsync a folder; writers renaming into the same folder at once share one fsync."""
    key = os.fspath(path)
    with _DIR_SYNCS_LOCK:
        syncer = _DIR_SYNCS.get(key)
        if syncer is None:
            if len(_DIR_SYNCS) > 1024:  # callers in flight keep their own reference
                _DIR_SYNCS.clear()

            def sync(_batch: list[str]) -> None:
                _fsync_dir(path)

            syncer = _DIR_SYNCS[key] = GroupCommit(sync)
    syncer(key)


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written. Plain fd calls, not a file object: opening
    one adds an fstat, a seek and an isatty, and each syscall hands the GIL to another thread."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The objects of an append-only JSON-lines file, in order; none when it does not exist. A line
    that is not a whole object (cut short by a kill mid-append) is skipped: that write never happened."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return found


def atomic_write(path: Path, data: bytes | Iterable[bytes], *, durable: bool = True, mode: int = 0o666) -> None:
    """Write via a temp file in the same folder and rename, so no reader sees half a file.
    ``data`` may come in chunks (a big report is streamed, never held whole).

    With ``durable`` the file and then its folder are fsynced, so the rename
    survives a crash of the machine too, not just of the process. ``mode`` (less the umask) is
    the new file's: 0o600 for a file holding secrets (config.yaml).
    """
    # Not mkstemp: its 0600 is too private for reports; O_EXCL with 0666 lets the umask decide.
    tmp = _temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            for chunk in (data,) if isinstance(data, bytes) else data:
                write_all(fd, chunk)
            if durable:
                _fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir_grouped(path.parent)


def atomic_write_many(items: list[tuple[Path, bytes]], *, durable: bool = True, mode: int = 0o666) -> None:
    """``atomic_write`` for several files at once, as durable as one each: every temp file written,
    then the writeback of each started and each fdatasynced (waiting on I/O already under way),
    then each renamed, then each folder fsynced once. A file is renamed only once every file's
    data is on disk; on an error the temp files not yet renamed are removed and it is raised
    (the files already renamed are whole: each holds the new data, synced)."""
    pending: list[tuple[str, Path]] = []
    try:
        fds: list[int] = []
        try:
            for path, data in items:
                tmp = _temp_path(path)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                fds.append(fd)
                pending.append((tmp, path))
                write_all(fd, data)
            if durable:
                for fd in fds:  # every file's writeback started at once: each fdatasync then finds its I/O under way
                    _start_writeback(fd)
                for fd in fds:
                    _fdatasync(fd)
        finally:
            for fd in fds:
                os.close(fd)
        while pending:
            tmp, path = pending[0]
            os.replace(tmp, path)
            pending.pop(0)
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    if durable:
        for folder in dict.fromkeys(os.path.dirname(path) for path, _ in items):
            _fsync_dir_grouped(folder)


def remove_folders(path: Path) -> None:
    """Remove ``path``, a folder of folders most of which are empty (a tree's TMPDIRs), and all in it;
    errors ignored, as ``shutil.rmtree(ignore_errors=True)``. Each entry is first removed by one
    ``rmdir`` through the folder's descriptor, which removes an empty folder only (never a file, a
    link or its target, nor a folder with anything in it); ``shutil.rmtree`` then takes what is left,
    never following a link. Where ``rmtree`` alone opened, inspected and listed each folder (about
    eight calls), an empty one costs one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | NO_LINK_NO_BLOCK | os.O_CLOEXEC)
    except OSError:  # gone, or a link in its place: rmtree below says nothing and follows nothing
        fd = -1
    if fd >= 0 and os.rmdir in os.supports_dir_fd:
        try:
            for name in os.listdir(fd):
                with contextlib.suppress(OSError):  # not empty, not a folder: rmtree's
                    os.rmdir(name, dir_fd=fd)
        except OSError:
            pass
    if fd >= 0:
        os.close(fd)
    shutil.rmtree(path, ignore_errors=True)


def durable_rename(source: Path, target: Path, *, durable: bool = True) -> None:
    """``os.rename``; with ``durable`` both folders are then fsynced, so that a crash of the
    machine, not only of the process, finds the entry at ``target`` and not at ``source``."""
    os.rename(source, target)
    if not durable:
        return
    _fsync_dir(target.parent)
    if source.parent != target.parent:
        _fsync_dir(source.parent)


def encoded_blocks(pieces: Iterable[str], size: int = 1 << 16) -> Iterator[bytes]:
    """``pieces`` of text, UTF-8 encoded in blocks of about ``size`` characters (a streamed write)."""
    block: list[str] = []
    length = 0
    for piece in pieces:
        block.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(block).encode("utf-8")
            block, length = [], 0
    if block:
        yield "".join(block).encode("utf-8")


# ext2/3/4's "top of a directory hierarchy" flag (chattr +T): the Orlov allocator puts each new
# subfolder of such a folder in a block group of its own choosing instead of next to its parent.
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def spread_subfolders(path: Path) -> bool:
    """Mark ``path`` so its subfolders go to block groups of their own (ext2/3/4; elsewhere
    nothing happens and False is returned). Why: a record rewrite frees an inode, and ext4
    without a journal makes every later file creation in that block group step over each inode
    freed in the last minutes, one by one. Job trees and their state folders in groups of their
    own keep one tree's churn (or an old tree's deletion) from slowing every other's creations."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
        flags = int.from_bytes(buf[:4], sys.byteorder)
        if not flags & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, (flags | _FS_TOPDIR_FL).to_bytes(4, sys.byteorder) + bytes(4))
        return True
    except OSError:  # not ext2/3/4 (ENOTTY, EOPNOTSUPP), or not allowed: the layout is the same
        return False
    finally:
        os.close(fd)


def _temp_path(path: Path) -> str:
    """Where ``path`` is written before its rename: beside it (the same file system), hidden, unique.
    (String work, not pathlib's: a settling pass names one per record.)"""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")


def _start_writeback(fd: int) -> None:
    """Start writing the file's dirty pages out, without waiting (Linux: POSIX_FADV_DONTNEED starts
    the writeback of what is dirty and drops only what is clean); a no-op where there is none."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _fdatasync(fd: int) -> None:
    """fdatasync where there is one: it still flushes a new file's size, skips its times."""
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _fsync_dir(path: Path | str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_O_PATH = getattr(os, "O_PATH", 0)  # Linux: a descriptor that only names a file (no read, no FIFO open)


def real_path(path: str | os.PathLike[str]) -> str:
    """``os.path.realpath(path)`` found by the kernel in one lookup: the name /proc gives a
    descriptor opened on it. realpath walks the path in Python with an lstat per component, which a
    worker's end paid several times over. A path that cannot be opened that way (missing, no
    O_PATH or /proc, a name the kernel marks deleted) is resolved by ``os.path.realpath`` itself."""
    if _O_PATH:
        try:
            fd = os.open(path, _O_PATH | os.O_CLOEXEC)
        except OSError:
            return os.path.realpath(path)
        try:
            found = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            found = ""
        finally:
            os.close(fd)
        if found.startswith("/") and not found.endswith(" (deleted)"):
            return found
    return os.path.realpath(path)


def open_regular_fd(path: Path) -> tuple[int, int] | None:
    """(fd, size) of a regular file opened for reading without following a link; None when it
    does not exist. Raises RefusedPath for a link, a FIFO or a device (reading one could block
    a server thread)."""
    try:
        fd = os.open(path, os.O_RDONLY | NO_LINK_NO_BLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RefusedPath(f"refusing to serve {path.name}: {exc.strerror} (is it a symlink?)") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RefusedPath(f"refusing to serve {path.name}: not a regular file")
    return fd, info.st_size


def read_range(fd: int, start: int, end: int) -> bytes:
    """Bytes ``start``..``end`` of an open file (fewer if it is shorter), by pread."""
    chunks = []
    while start < end:
        chunk = os.pread(fd, end - start, start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
    return b"".join(chunks)


def open_regular(path: Path) -> BinaryIO | None:
    """``open_regular_fd`` as a file object."""
    found = open_regular_fd(path)
    return None if found is None else os.fdopen(found[0], "rb")


# How a folder a worker may write is opened: a folder only, never through a link at its last name.
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_at(folder: int, name: str) -> None:
    """``name`` in the open folder ``folder`` removed, a folder with everything in it, never
    following a link (a folder another process may write: one of its folders turned into a link
    must not have the link's target emptied). What cannot be removed is left."""
    try:
        os.unlink(name, dir_fd=folder)
        return
    except IsADirectoryError:
        pass
    except OSError:
        return
    try:
        inner = os.open(name, FOLDER_FLAGS, dir_fd=folder)
    except OSError:
        return
    try:
        for entry in os.scandir(inner):
            remove_at(inner, entry.name)
    finally:
        os.close(inner)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=folder)
