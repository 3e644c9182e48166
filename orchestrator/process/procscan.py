"""Reading the process table: which processes carry an orchestrator tag, whether a pid is still
the process it was, how much memory it holds. Nothing here signals a process (process/runner.py does).

Every worker carries a unique ``ORCHESTRATOR_TAG`` in its environment and its descendants
inherit it, so one pass over the process table finds a worker's whole tree, even a grandchild
that left its process group. Linux: /proc, read by plain fd calls. Elsewhere (macOS): psutil.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import protocol

TAG_VAR = protocol.TAG
_TAG_ENTRY = f"{TAG_VAR}=".encode()
_PROC = Path("/proc")
HAS_PROC = _PROC.is_dir()  # Linux: asked once, not at every look at a pid (a stat each time)
_ENDED = (b"Z", b"X")  # a zombie (ended, not yet reaped), or dead
_STAT_READ = 4096  # more than /proc/<pid>/stat ever holds (one line: a 16-byte name and 52 numbers)
# /proc/<pid> inodes are stamped with a coarse clock (a few ms); allow for it.
INODE_CLOCK_SLACK = 0.1
# A process inside execve shows an empty environment between the switch to its new image and the
# laying out of that image's (a few microseconds; longer when it is preempted there): such a
# process is read again after each of these pauses (seconds) before it is taken for one without.
EXEC_PAUSES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat's flags: a kernel thread, which has no environment at all


@dataclass
class TaggedProcess:
    """A live process carrying a tag; ``environ`` and ``argv`` only when asked for (``details``)."""

    pid: int
    tag: str
    environ: dict[str, str] | None = None
    argv: list[str] | None = None


def scan(wanted: Callable[[str], bool], since: float = 0.0) -> dict[str, list[int]]:
    """One pass over the process table: for each tag that ``wanted`` accepts, the live
    (non-zombie) processes carrying it. ``since``: when the oldest process looked for started;
    processes older than that cannot carry its tag and are skipped cheaply."""
    found: dict[str, list[int]] = {}
    for proc in tagged_processes(wanted, since):
        found.setdefault(proc.tag, []).append(proc.pid)
    return found


def tagged_processes(wanted: Callable[[str], bool], since: float = 0.0, *, details: bool = False) -> Iterator[TaggedProcess]:
    """Every other live process whose tag ``wanted`` accepts, with its environment and argv
    when ``details``. The one walk over the process table: ``scan`` and the runner's shim
    search are built on it."""
    if HAS_PROC:
        host = _pid_namespace("self")
        sandboxes: dict[str, str] = {}  # a sandbox's PID namespace -> the tag of the worker it confines
        untagged: list[tuple[str, bytes]] = []
        for name, data in _environs(since):
            tag = tag_in(data)
            if tag is None:
                untagged.append((name, data))
                continue
            if not wanted(tag) or _is_zombie(name):
                continue
            namespace = _pid_namespace(name)
            if namespace is not None and namespace != host:
                sandboxes.setdefault(namespace, tag)
            yield _found(name, tag, data, details)
        # A process in a worker's sandbox that dropped its tag (env -i) is still that worker's.
        for name, data in untagged if sandboxes else ():
            tag = sandboxes.get(_pid_namespace(name) or "")
            if tag is not None and not _is_zombie(name):
                yield _found(name, tag, data, details)
        return
    import psutil

    me = os.getpid()
    for proc in psutil.process_iter():
        try:
            if proc.pid == me:
                continue
            environ = proc.environ()
            tag = environ.get(TAG_VAR)
            if tag is None or not wanted(tag) or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            yield TaggedProcess(proc.pid, tag, environ, proc.cmdline()) if details else TaggedProcess(proc.pid, tag)
        except (psutil.Error, OSError):
            continue


def _found(name: str, tag: str, data: bytes, details: bool) -> TaggedProcess:
    if not details:
        return TaggedProcess(int(name), tag)
    env = dict(item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)
    environ = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in env.items()}
    return TaggedProcess(int(name), tag, environ, _cmdline(int(name)))


def _pid_namespace(pid: str) -> str | None:
    """The PID namespace a process lives in (``pid:[4026531836]``), None when it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def tag_in(environ: bytes) -> str | None:
    """The tag in a NUL-separated environment (its first ``ORCHESTRATOR_TAG=`` entry, the one
    getenv returns), or None."""
    at = 0
    while (at := environ.find(_TAG_ENTRY, at)) >= 0:
        if at == 0 or environ[at - 1] == 0:
            end = environ.find(b"\0", at)
            return environ[at + len(_TAG_ENTRY) : end if end >= 0 else len(environ)].decode(errors="replace")
        at += 1
    return None


def read_small(path: str | Path) -> bytes:
    """A whole small file (/proc entries; an exit file, whose time is wanted too: ``read_small_stamped``) by plain fd calls. Not open(): a file
    object adds an fstat, an isatty and seeks, and each of those syscalls hands the GIL to
    another thread, which costs a busy server far more than the syscall."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO in a file's place never blocks
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def read_small_stamped(path: str | Path) -> tuple[bytes, float]:
    """A whole small regular file (an exit file) and its modification time, by one descriptor: open,
    read, fstat, close. The fstat comes after the read, so the time is never older than the bytes
    read, and it ends the read when the file holds no more than was read (``read_small``'s second,
    empty read spared); a file that grew meanwhile, or is no regular file, is read on to its end."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO in a file's place never blocks
    try:
        chunks = [os.read(fd, 65536)]
        while True:
            info = os.fstat(fd)
            if not chunks[-1] or (stat.S_ISREG(info.st_mode) and info.st_size == sum(len(c) for c in chunks)):
                return b"".join(chunks), info.st_mtime
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)


def _stat_fields(stat: bytes) -> list[bytes]:
    """The fields of a ``/proc/<pid>/stat`` line from its state on ([0] state, [1] parent, [2] process
    group, [6] flags, [11:15] CPU ticks, [19] start time). The command name before them is in
    parentheses and may hold spaces and parentheses itself: the line's last ")" ends it."""
    return stat[stat.rfind(b")") + 2 :].split()


def process_start_id(pid: int) -> str | None:
    """When the kernel started ``pid`` (clock ticks since boot, from /proc; psutil elsewhere):
    with the pid, it names one process for good, even after the pid is reused."""
    try:
        stat = read_small(f"/proc/{pid}/stat")
        return _stat_fields(stat)[19].decode()
    except (OSError, IndexError):
        pass
    if HAS_PROC:
        return None
    try:
        import psutil

        return repr(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - gone, or no permission: unknown
        return None


def process_alive(pid: int, start_id: str | None) -> bool:
    """Whether ``pid`` still runs (not a zombie) and, when ``start_id`` is known, is the same process."""
    if HAS_PROC:
        found = look(pid)  # one read of its stat: its state and its start time both
        return found is not None and found.running(start_id)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start_id is None or process_start_id(pid) == start_id


@dataclass(frozen=True)
class ProcStat:
    """What one read of ``/proc/<pid>/stat`` says of a process (``look``)."""

    state: bytes  # R, S, D, Z, X...
    parent: int
    start_id: str  # its kernel start time, as process_start_id gives it

    def running(self, start_id: str | None) -> bool:
        """Whether it runs (not a zombie) and is the process ``start_id`` names (``process_alive``)."""
        return self.state not in _ENDED and (start_id is None or self.start_id == start_id)

    def zombie_of(self, start_id: str | None) -> int | None:
        """Its parent while it is a zombie and the process ``start_id`` names (``zombie_of``), else None."""
        if self.state != b"Z" or (start_id is not None and self.start_id != start_id):
            return None
        return self.parent


def look(pid: int) -> ProcStat | None:
    """``pid``'s state, parent and start time from one read of ``/proc/<pid>/stat`` (Linux); None
    when it is gone (reaped) or its stat cannot be read. The file is one line, far under a page:
    one read takes it whole (``read_small``'s second read, only to find its end, cost a syscall a look)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, _STAT_READ)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = _stat_fields(stat)
    if len(fields) < 20 or not fields[1].isdigit():
        return None
    return ProcStat(state=fields[0], parent=int(fields[1]), start_id=fields[19].decode())


def sandbox_machinery(pid: int, *, bridged: bool = False, start_id: str | None = None) -> bool:
    """Whether ``pid`` is a sandbox's own init or the shim it runs (pid 1 or 2 of a PID namespace one
    level below this one: process/sandbox.py), or, ``bridged`` (workers.sandbox_network: allow), the
    network bridge the shim forks before the worker (pid 3: the worker cannot have it), which a
    worker's caps do not count. (The bridge's forks per connection count: the worker made them.)
    ``start_id``: the process's (``process_times``), which its answer is kept under: a process's pid
    in its namespace never changes, so the monitor reads each one's once, not every interval."""
    inner = _namespace_pid(pid, start_id)
    return inner in (b"1", b"2") or (bridged and inner == b"3")


_NAMESPACE_PIDS: dict[int, tuple[str, bytes]] = {}  # pid -> (its start id, its pid one namespace below or b"")
_NAMESPACE_PIDS_KEPT = 4096  # then forgotten all at once (most are of processes long gone)


def _namespace_pid(pid: int, start_id: str | None) -> bytes:
    """``pid``'s pid in the PID namespace one level below this one (b"" for none, or when it is gone),
    kept by ``start_id`` (a pid reused since is another process, read afresh)."""
    known = _NAMESPACE_PIDS.get(pid) if start_id is not None else None
    if known is not None and known[0] == start_id:
        return known[1]
    try:
        status = read_small(f"/proc/{pid}/status")
    except OSError:
        return b""
    at = status.find(b"\nNSpid:")
    ids = status[at + 7 : status.find(b"\n", at + 1)].split() if at >= 0 else []
    inner = ids[1] if len(ids) == 2 else b""
    if start_id is not None:
        if len(_NAMESPACE_PIDS) >= _NAMESPACE_PIDS_KEPT:
            _NAMESPACE_PIDS.clear()
        _NAMESPACE_PIDS[pid] = (start_id, inner)
    return inner


def descendants(roots: list[int]) -> dict[int, list[int]]:
    """For each pid in ``roots``, its live descendants, from one pass over the process table
    (parent links, not tags: a child that dropped its tag is still found while it is in the tree)."""
    children: dict[int, list[int]] = {}
    if HAS_PROC:
        with os.scandir(_PROC) as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    stat = read_small(f"/proc/{entry.name}/stat")
                except OSError:
                    continue
                fields = _stat_fields(stat)
                if fields[:1] not in ([b"Z"], [b"X"]):
                    children.setdefault(int(fields[1]), []).append(int(entry.name))
    found = {}
    for root in roots:
        tree, todo = [], list(children.get(root, []))
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        found[root] = tree
    return found


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live (non-zombie) member. A zombie member is dead: once
    orphaned, only pid 1 reaps it, at its own pace (a sandbox's init, whose launcher exits before it is
    reaped, can linger there for seconds). Without /proc, True (the caller asks the kernel first)."""
    if not HAS_PROC:
        return True
    return next(_group_members(pgid), None) is not None


def group_takes(pgid: int, signum: int) -> bool:
    """Whether a live member of process group ``pgid`` would take ``signum`` now: it does not ignore it
    (it catches it, or dies of it). A sandbox's launcher and init ignore the kill ladder's signals, and so
    does the shim inside until it has set its handlers (process/shim.py): a signal sent before then is lost.
    True when it cannot tell (no /proc) and when the group has no live member (nothing to wait for)."""
    if not HAS_PROC:
        return True
    bit = 1 << (signum - 1)
    members = 0
    for pid in _group_members(pgid):
        members += 1
        try:
            status = read_small(f"/proc/{pid}/status")
        except OSError:
            continue  # gone since the scan
        at = status.find(b"\nSigIgn:")
        if at < 0 or not int(status[at + 8 : status.index(b"\n", at + 1)].strip(), 16) & bit:
            return True
    return members == 0


def _group_members(pgid: int) -> Iterator[int]:
    """The live (non-zombie) members of process group ``pgid``, from a scan of /proc."""
    wanted = str(pgid).encode()
    with os.scandir(_PROC) as entries:
        names = [entry.name for entry in entries if entry.name.isdigit()]
    for name in names:
        try:
            stat = read_small(f"/proc/{name}/stat")
        except OSError:
            continue
        fields = _stat_fields(stat)
        if len(fields) > 2 and fields[2] == wanted and fields[0] not in (b"Z", b"X"):
            yield int(name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process and of the children it has reaped (0 when gone)."""
    times = process_times(pid)
    return times[0] if times is not None else 0.0


def process_times(pid: int) -> tuple[float, str | None] | None:
    """``pid``'s CPU (``cpu_seconds``) and its start id (``process_start_id``); None when it is gone.
    On Linux from one read of its stat (psutil reads it twice a process, and the monitor asks for
    every process of every running worker each interval); elsewhere its CPU alone."""
    if not HAS_PROC:
        return _psutil_cpu_seconds(pid), None
    try:
        stat = read_small(f"/proc/{pid}/stat")
        fields = _stat_fields(stat)
        cpu = sum(int(ticks) for ticks in fields[11:15]) / _CLOCK_TICKS  # utime, stime, cutime, cstime
        return cpu, fields[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def _psutil_cpu_seconds(pid: int) -> float:
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return 0.0
    return times.user + times.system + times.children_user + times.children_system


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 when it is gone)."""
    try:
        return int(read_small(f"/proc/{pid}/statm").split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Memory:
    """One machine's memory as last read: this one (``name`` None), or a node's from its heartbeat."""

    total: int  # bytes
    available: int  # bytes new processes may take without swapping (Linux's MemAvailable)
    name: str | None = None
    kinds: frozenset[str] | None = None  # the worker kinds it runs; None: every kind

    def runs(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds


def machine_memory() -> Memory:
    """This machine's memory: its total, and what new processes may take without swapping
    (Linux: /proc/meminfo's MemAvailable, free memory plus reclaimable cache, 50 us to read where
    psutil takes 160; elsewhere psutil's figure). Read through a descriptor kept open
    (``_meminfo_head``): admission reads it every dispatch pass."""
    try:
        fields = dict(line.split(b":", 1) for line in _meminfo_head().splitlines()[:3] if b":" in line)
        return Memory(int(fields[b"MemTotal"].split()[0]) * 1024, int(fields[b"MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError, IndexError):
        import psutil

        found = psutil.virtual_memory()
        return Memory(int(found.total), int(found.available))


_MEMINFO_HEAD = 256  # bytes of /proc/meminfo that hold its first three lines (MemTotal, MemFree, MemAvailable)
_meminfo: list[int] = []  # the descriptor kept on /proc/meminfo, once opened
_MEMINFO_LOCK = threading.Lock()


def _meminfo_head() -> bytes:
    """The first lines of /proc/meminfo, as the kernel writes them now: a read at offset 0 makes the
    file afresh, so one descriptor kept open (close-on-exec) serves every reading, without an open
    and a close each time (each system call hands the GIL to another thread)."""
    if not _meminfo:
        fd = os.open("/proc/meminfo", os.O_RDONLY | os.O_CLOEXEC)
        with _MEMINFO_LOCK:
            if _meminfo:
                os.close(fd)  # (another thread opened it first)
            else:
                _meminfo.append(fd)
    return os.pread(_meminfo[0], _MEMINFO_HEAD, 0)


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (None when it is gone)."""
    try:
        stat = read_small(f"/proc/{pid}/stat")
    except OSError:
        return None
    return int(_stat_fields(stat)[1])


def zombie_of(pid: int, start_id: str | None) -> int | None:
    """The parent of ``pid`` while it is a zombie (ended, not yet reaped) and the process ``start_id``
    names; None otherwise (running, reaped, or another process now)."""
    found = look(pid)
    return None if found is None else found.zombie_of(start_id)


def _is_zombie(pid: str) -> bool:
    try:
        stat = read_small(f"/proc/{pid}/stat")
    except OSError:
        return True
    return _stat_fields(stat)[:1] in ([b"Z"], [b"X"])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = read_small(f"/proc/{pid}/cmdline")
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


_MADE: dict[str, tuple[int, float]] = {}  # pid -> (inode, when it was made), as the last scan saw it
_MADE_LOCK = threading.Lock()


def _environs(since: float = 0.0) -> Iterator[tuple[str, bytes]]:
    """(pid, environment) of every other process started since ``since`` (all of them with 0).

    A /proc/<pid> inode is made when the pid is first looked up, so one made before
    ``since`` belongs to a process that existed before the tagged worker started and
    cannot be its descendant: its environment is not read. When that inode was made is
    asked once per process: the listing gives each entry's inode number for free, and
    while it is unchanged the same process holds the pid. (Environments are always read
    afresh: a process seen between its fork and its exec still shows its parent's.)"""
    me = str(os.getpid())
    cutoff = since - INODE_CLOCK_SLACK if since else 0.0
    with _MADE_LOCK:
        known = dict(_MADE)
    now: dict[str, tuple[int, float]] = {}
    blank: list[str] = []  # showed an empty environment: read again once the others are (_settled)
    with os.scandir(_PROC) as entries:
        listing = [(entry.name, entry.inode()) for entry in entries if entry.name.isdigit() and entry.name != me]
    for name, inode in listing:
        if cutoff:
            look = known.get(name)
            if look is None or look[0] != inode:
                try:
                    look = (inode, os.stat(f"/proc/{name}").st_ctime)
                except OSError:
                    continue
            now[name] = look
            if look[1] < cutoff:
                continue
        data = _environ(name)
        if data:
            yield name, data
        elif data is not None and _may_be_executing(name):
            blank.append(name)
    if cutoff:
        with _MADE_LOCK:
            _MADE.clear()
            _MADE.update(now)
    yield from _settled(blank)


def _may_be_executing(pid: str) -> bool:
    """Whether a process that showed an empty environment may be inside execve: neither a kernel
    thread nor ended (a zombie's environment is gone with its memory)."""
    try:
        found = read_small(f"/proc/{pid}/stat")
    except OSError:
        return False
    fields = _stat_fields(found)
    try:
        return fields[0] not in _ENDED and not int(fields[6]) & _PF_KTHREAD
    except (IndexError, ValueError):
        return True


def _settled(blank: list[str]) -> Iterator[tuple[str, bytes]]:
    """The environments of processes that showed none, read again after each of EXEC_PAUSES: one
    caught inside execve shows its own by then, so a sweep never misses a worker's process for
    exec'ing at the moment it looked. What still shows none was started without one."""
    for pause in EXEC_PAUSES:
        if not blank:
            return
        time.sleep(pause)
        still: list[str] = []
        for name in blank:
            data = _environ(name)
            if data:
                yield name, data
            elif data is not None:
                still.append(name)
        blank = still
    for name in blank:
        yield name, b""


def _environ(pid: str) -> bytes | None:
    """A process's environment as the kernel shows it now; None when it is gone or unreadable."""
    try:
        return read_small(f"/proc/{pid}/environ")
    except OSError:
        return None
