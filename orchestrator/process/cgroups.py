"""Control groups: one per worker attempt, so its whole tree is one unit for limits and for stopping.

The only module that writes /sys/fs/cgroup. A process joins its attempt's cgroup before it execs
(``Cgroup.join_fds``: the parent opens the join files, the child writes "0" to them
in its preexec), so everything it forks is in it, whatever it does with its session, process
group or environment. The kernel then holds the memory cap (``memory.max`` / v1
``memory.limit_in_bytes``, swap included where memsw exists) and the process cap (``pids.max``,
which counts threads as well as processes), and the cgroup lists every process to sample or kill.

Where each controller comes from, per controller: cgroup v2 when the server's own v2 cgroup can
have ``memory`` / ``pids`` enabled for children and is writable (a delegated subtree, or the root
of a container's cgroup namespace); else the v1 hierarchy of that controller when writable (root
on a v1 machine); else none, and that cap is sampled (process/monitor.py), which the record says. An
attempt's cgroup is ``orchestrator-<tag>`` under the server's own cgroup, so a restarted server
(started the same way) finds a running attempt's cgroup again from its tag.

Spares (``Confined``): on v1, an ended attempt's cgroup that is proven fresh again (no member once
what was left is killed and gone, a sandbox's launcher still leaving included; no OOM kill, no refused fork, at most SPARE_CHARGE of memory charged that reclaim cannot drop) is renamed
``orchestrator+spare-<server pid>.<its start>-<runner>-<n>`` and renamed to the next attempt's name under the same
limits: a rename where a mkdir, the limits' writes and an rmdir were (about half of an attempt's
cgroup cost). No attempt's name can be a spare's, so no sweep or restart takes one for an attempt's; a
server removes its spares when it closes, and one that starts removes those of servers that are
gone (``remove_dead_spares``: empty, and their server's pid and start time no longer a running
process's). v2 cannot rename a cgroup (EPERM): there each attempt's is made and removed as before.

Whether a cgroup named as ``/proc/<pid>/cgroup`` names it still holds a process is
``holds_processes``: how a dead server's network registrations are judged (network/egress.py).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import re
import resource
import select
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..outcomes import Enforced, Enforcement
from .procscan import descendants, process_alive, process_start_id

log = logging.getLogger("orchestrator.cgroups")

MB = 1024 * 1024
PREFIX = "orchestrator-"  # an attempt's cgroup: PREFIX + its tag (made safe for a file name)
CONTROLLERS = ("memory", "pids")
KILL_ROUNDS = 50  # passes of "SIGKILL every member" before giving up on a cgroup (forks race the kill)
REMOVE_WAIT = 2.0  # seconds to wait for killed members to leave before rmdir gives up
REAP_WAIT = 0.02  # seconds a spare waits for its exited tasks to be reaped (``Cgroup.drain``)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# An emptied attempt's cgroup kept for the next one: SPARE + "<server pid>.<start>-<runner>-<n>". No attempt's
# name starts so (cgroup_name makes "+" "_"), so no sweep of attempts' cgroups by a prefix takes one.
SPARE = "orchestrator+spare-"
MAX_SPARES = 64  # spares one runner keeps (about its concurrency: an attempt's end gives one, a start takes one)
SPARE_CHARGE = 1 * MB  # most memory an emptied cgroup may hold that reclaim cannot drop (tmpfs...) and be kept


@dataclass(frozen=True)
class Limits:
    """The caps one attempt runs under, in bytes and processes (0: no cap)."""

    memory: int = 0
    processes: int = 0
    log: int = 0
    disk: int = 0

    @classmethod
    def from_mb(cls, memory_mb: int, processes: int, log_mb: int, disk_mb: int) -> Limits:
        """From the settings' units (workers.max_memory_mb, max_processes, max_log_mb, max_disk_mb)."""
        return cls(memory_mb * MB, processes, log_mb * MB, disk_mb * MB)

    @property
    def file_size(self) -> int:
        """The RLIMIT_FSIZE the attempt runs under (0: none). It holds every file the worker
        writes, so it is the larger of the disk and log caps (a smaller one would refuse the
        other's legitimate writes), and only when both are set (an uncapped one would be
        capped by it). The log is appended to, so the log cap holds its whole size."""
        return max(self.disk, self.log) if self.disk and self.log else 0


def enforced_for(limits: Limits, cgroup: Cgroup | None) -> Enforced:
    """What holds each of ``limits`` when the attempt runs in ``cgroup`` (None: no cgroup)."""

    def by_cgroup(cap: int, controller: str) -> Enforcement:
        if not cap:
            return Enforcement.NONE
        if cgroup is not None and controller in cgroup.versions:
            return cgroup.versions[controller]
        return Enforcement.SAMPLED

    size = limits.file_size
    # The log is held by the file-size limit only where that limit is the log cap itself; the
    # folder's total is always summed by the monitor (RLIMIT_FSIZE bounds each file, not the sum).
    log_by = Enforcement.NONE if not limits.log else Enforcement.FILE_SIZE if size == limits.log else Enforcement.SAMPLED
    return Enforced(
        memory=by_cgroup(limits.memory, "memory"),
        processes=by_cgroup(limits.processes, "pids"),
        log=log_by,
        disk=Enforcement.SAMPLED if limits.disk else Enforcement.NONE,
        file_size=size,
    )


def join_file(directory: Path | str) -> Path:
    """The file a process writes "0" to in order to move itself into ``directory``'s cgroup.
    On a v1 hierarchy its ``tasks``, which moves the writing thread alone: the writers are a
    forked child before its exec and the single-threaded supervisor around a spawn, so the
    thread that starts the worker is the one moved, and the kernel skips its global
    thread-group lock, whose write side waits out an RCU grace period whenever no migration
    happened in the last one (7-16 ms here, on a third or more of the spawns that follow a quiet
    moment; ``tasks``: 0.2 ms). On v2 (no ``tasks``) its ``cgroup.procs``."""
    tasks = Path(directory) / "tasks"
    return tasks if tasks.exists() else Path(directory) / "cgroup.procs"


def _join_path(directory: Path, version: Enforcement) -> str:
    """``join_file`` of a cgroup whose version is known, without looking: a v1 hierarchy always has
    ``tasks`` and a v2 one never does (a look per attempt's start was a path built and a failed stat)."""
    return f"{directory}/tasks" if version is Enforcement.CGROUP_V1 else f"{directory}/cgroup.procs"


@dataclass(frozen=True)
class Usage:
    """One reading of a cgroup: its members, their memory (each page once) and the kernel's counts."""

    pids: tuple[int, ...] = ()
    rss: int = 0  # bytes: anonymous plus mapped file pages (no page cache it could drop)
    oom_kills: int = 0  # processes the kernel's OOM killer ended at the memory cap
    forks_refused: int = 0  # forks (and clones) refused at pids.max


@dataclass
class Cgroup:
    """One attempt's cgroup: a directory per controller, all named ``name``."""

    name: str
    dirs: dict[str, Path]  # controller -> its directory (v2: the same directory for both)
    versions: dict[str, Enforcement]  # controller -> CGROUP_V2 or CGROUP_V1
    last: Usage = field(default_factory=Usage)  # the latest reading (kept after removal)
    # The controllers whose kernel counts (OOM kills, refused forks) are read: those holding a cap
    # (an uncapped one's counts say nothing of this attempt's caps); all for a cgroup found again.
    counted: frozenset[str] = frozenset(CONTROLLERS)
    # ``last``'s kernel counts were read after a read found no task left in it (``counts(final=True)``):
    # they are the last there will be (nothing joins an emptied attempt's cgroup but a writer of
    # cgroupfs, which could as well put a process anywhere), so its end reads them no more.
    settled: bool = False

    def join_fds(self) -> list[int]:
        """Descriptors on each hierarchy's join file (``join_file``), opened in the parent: a child
        writes "0" to each (``join``) before it execs. The caller closes them after the fork."""
        paths = {_join_path(d, self.versions[c]) for c, d in self.dirs.items()}
        return [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in sorted(paths)]

    def members(self) -> list[int]:
        """The processes in the cgroup, every hierarchy's list read (what is killed: each process is in
        all of them, but a writer of cgroupfs could have split one off)."""
        found: set[int] = set()
        for directory in set(self.dirs.values()):
            found.update(_procs(directory))
        return sorted(found)

    def usage(self) -> Usage:
        """Read the cgroup now (also kept as ``last``, which outlives the cgroup): its processes from one
        hierarchy's list, as ``empty`` reads one (the same processes are in each, bar a writer of cgroupfs)."""
        one = self.dirs.get("pids") or next(iter(self.dirs.values()), None)
        pids = tuple(sorted(_procs(one))) if one is not None else ()
        rss = 0
        memory = self.dirs.get("memory")
        if memory is not None:
            stat = _picked(memory / "memory.stat", _RSS_KEYS)
            if self.versions["memory"] is Enforcement.CGROUP_V2:
                rss = stat.get("anon", 0) + stat.get("file_mapped", 0)
            else:
                rss = stat.get("total_rss", stat.get("rss", 0)) + stat.get("total_mapped_file", stat.get("mapped_file", 0))
        return self._keep(pids, rss)

    def counts(self, final: bool = False) -> Usage:
        """The kernel's counts read now (what ``kernel_breach`` judges), with the latest reading's
        members and memory: no member list, no memory.stat (also kept as ``last``). ``final``: its
        attempt has ended, so whether it is empty is read first; when it is, these counts are the
        last (``settled``) and its end (``remove``, ``Confined.end``'s spare) does not read them again."""
        if self.settled:
            return self.last
        empty = final and self.empty()
        current = self._keep(self.last.pids, self.last.rss)
        self.settled = empty and bool(self.dirs)
        return current

    def _keep(self, pids: tuple[int, ...], rss: int) -> Usage:
        """A reading of ``pids`` and ``rss`` with the kernel's counts read now (kept as ``last``)."""
        oom = refused = 0
        memory = self.dirs.get("memory") if "memory" in self.counted else None
        if memory is not None:
            events = "memory.events" if self.versions["memory"] is Enforcement.CGROUP_V2 else "memory.oom_control"
            oom = _picked(f"{memory}/{events}", ("oom_kill",)).get("oom_kill", 0)
        pids_dir = self.dirs.get("pids") if "pids" in self.counted else None
        if pids_dir is not None:
            refused = _picked(f"{pids_dir}/pids.events", ("max",)).get("max", 0)
        current = Usage(pids, rss, max(oom, self.last.oom_kills), max(refused, self.last.forks_refused))
        if self.dirs:
            self.last = current
        return current

    def kill(self) -> int:
        """SIGKILL every member until none is left (they may be forking); how many were signalled."""
        for controller, directory in self.dirs.items():
            kill_file = directory / "cgroup.kill"
            if self.versions[controller] is Enforcement.CGROUP_V2 and kill_file.exists():
                with contextlib.suppress(OSError):
                    _write(kill_file, "1")
        killed = 0
        for _ in range(KILL_ROUNDS):
            pids = self.members()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            time.sleep(0.005)
        return killed

    def drain(self) -> bool:
        """Kill what is left, wait (up to REMOVE_WAIT, as ``remove`` would) until no member is left,
        then briefly (REAP_WAIT) until no task is counted either: True when none is. A member left at a
        sandboxed attempt's end is its launcher's init still leaving its namespaces; once gone it is
        still counted until its parent reaps it (the supervisor, a subreaper, at once; without one, the
        machine's init, maybe seconds later: then the cgroup is not fresh, and ``remove`` takes it).

        Told by ``empty`` (one count read), not by the member lists: on v1 each list is built and
        sorted by the kernel at every read (four times a count's CPU for two hierarchies). The members
        listed are signalled and waited for through pidfds (``_kill_and_wait``): no list is read
        again while they leave, only once they have, for a child one forked before its kill."""
        deadline = time.monotonic() + REMOVE_WAIT
        while not self.empty():
            if time.monotonic() > deadline:
                return False
            members = self.members()
            if not members:
                return self._reaped()
            _kill_and_wait(members, deadline)
            time.sleep(0.001)  # their parent reaps them (the supervisor, a subreaper: at once)
        return True

    def _reaped(self) -> bool:
        """With no member left, whether the tasks it still counts (exited, not yet reaped by their
        parent) go within REAP_WAIT: its count read at growing intervals, not its members (none is
        left to fork, and a zombie is in no member list)."""
        until = time.monotonic() + REAP_WAIT
        pause = 0.0005
        while True:
            time.sleep(pause)
            if self.empty():
                return True
            if time.monotonic() > until:
                return False
            pause = min(pause * 2, 0.004)

    def remove(self) -> bool:
        """Read the kernel's counts a last time (kept in ``last``), kill what is left and remove
        its directories; False if one stays (a member that would not leave in REMOVE_WAIT: a
        later sweep tries again). The kernel refuses to remove a cgroup that still has a
        process (EBUSY), so an empty one (the usual end: its worker has exited) is removed at
        once, without listing or signalling its members; one that is not is killed first. Counts
        read final already (``settled``) are not read again."""
        if not self.settled:
            self._keep((), 0)
        gone = True
        for directory in set(self.dirs.values()):
            deadline = time.monotonic() + REMOVE_WAIT
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("could not remove cgroup %s: %s", directory, exc)
                        gone = False
                        break
                    if self.kill():
                        self._keep((), 0)  # after its members are gone: every count is in
                    else:
                        time.sleep(0.01)  # none left to signal: the last ones are still leaving
        self.dirs = {}
        return gone

    def rename(self, name: str) -> bool:
        """Rename every directory to ``name`` (v1 only; v2 refuses, EPERM); a stale cgroup of that
        name (its attempt never swept) is removed first. False when a directory could not be
        renamed: ``dirs`` then says where each one is, for ``remove``."""
        moved: dict[Path, Path] = {}
        ok = True
        for directory in set(self.dirs.values()):
            target = directory.with_name(name)
            try:
                try:
                    os.rename(directory, target)
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EBUSY):
                        raise
                    Cgroup(name, {"stale": target}, {"stale": Enforcement.CGROUP_V1}).remove()
                    os.rename(directory, target)
            except OSError as exc:
                log.info("could not rename cgroup %s to %s (%s): made afresh instead", directory, name, exc)
                ok = False
                continue
            moved[directory] = target
        self.dirs = {c: moved.get(d, d) for c, d in self.dirs.items()}
        if ok:
            self.name = name
        return ok

    def empty(self) -> bool:
        """No process in it, told by one cheap read where it can be: ``pids.current`` (every task, a
        zombie until reaped; no list built) where it has a pids directory, else the member list.
        An attempt's processes join all its hierarchies together and their children inherit them;
        only a writer of cgroupfs (root, unconfined) could split them, and such a writer can put a
        process in any cgroup, spare or not, so reading each hierarchy would prove nothing more."""
        pids = self.dirs.get("pids")
        if pids is None:
            return not self.members()
        try:
            return _read(f"{pids}/pids.current").strip() == "0"
        except OSError:
            return False

    def pinned(self) -> int:
        """Bytes still charged to its memory controller that reclaim cannot drop: tmpfs and shared
        memory (no swap is given), unevictable pages, anonymous memory (none once empty). Page cache
        is not counted: the kernel drops it under the next attempt's cap before it kills anything.
        0 without a memory controller; unreadable (or a kernel without these counts): too much."""
        memory = self.dirs.get("memory")
        if memory is None:
            return 0
        v2 = self.versions["memory"] is Enforcement.CGROUP_V2
        try:  # all it is charged, when small, bounds it: one number read, not memory.stat's forty (a fifth the CPU)
            charged = int(_read(f"{memory}/{'memory.current' if v2 else 'memory.usage_in_bytes'}"))
        except (OSError, ValueError):
            charged = SPARE_CHARGE + 1
        if charged <= SPARE_CHARGE:
            return charged
        keys = ("anon", "shmem", "unevictable") if v2 else ("total_rss", "total_shmem", "total_unevictable")
        stat = _picked(f"{memory}/memory.stat", keys)
        if not all(key in stat for key in keys):
            return SPARE_CHARGE + 1
        return sum(stat[key] for key in keys)


_CGROUP = (Enforcement.CGROUP_V1, Enforcement.CGROUP_V2)


def kernel_breach(usage: Usage, limits: Limits, enforced: Enforced) -> str | None:
    """The cap the kernel held this attempt at, as a sentence; None when it held none."""
    if usage.oom_kills and enforced.memory in _CGROUP:
        return f"memory cap: killed by the kernel at {limits.memory / MB:.0f} MB (workers.max_memory_mb, {enforced.memory.value})"
    if usage.forks_refused and enforced.processes in _CGROUP:
        return (
            f"process cap: a fork refused by the kernel at {limits.processes} processes and threads "
            f"(workers.max_processes, {enforced.processes.value})"
        )
    return None


DISK_CAP = "disk cap"  # how every disk cap's reason starts: the engine throws such a worker's files away


def file_size_breach(log_size: int, limits: Limits) -> str:
    """Why a worker killed by SIGXFSZ stopped: the log reached the file-size limit, or another file did."""
    size = limits.file_size
    if limits.log and log_size >= size:
        return f"log cap: the log reached the file-size limit of {size / MB:.0f} MB (workers.max_log_mb, file-size limit)"
    return f"{DISK_CAP}: a file reached the file-size limit of {size / MB:.0f} MB (workers.max_disk_mb, file-size limit)"


def _kill_and_wait(pids: list[int], deadline: float) -> None:
    """SIGKILL each of ``pids`` through a pidfd opened first (the process waited for is the one
    signalled, whatever its pid becomes after) and wait without polling until each has exited, or until
    ``deadline``. Where a pidfd cannot be had (a kernel before 5.3), killed by pid, and a short sleep."""
    fds: list[int] = []
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue  # gone since it was listed
            except OSError:
                kill_all([pid], signal.SIGKILL)
                time.sleep(0.002)
                continue
            fds.append(fd)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        waiting = len(fds)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(max(1, int(left * 1000))):
                poller.unregister(fd)
                waiting -= 1
    finally:
        for fd in fds:
            os.close(fd)


def kill_all(pids: list[int], signum: int) -> None:
    """``signum`` to each of ``pids``; "already gone" is success."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def cap_hit(
    limits: Limits, enforced: Enforced, cgroup: Cgroup | None, code: int | None, log_path: Path | None, final: bool = False
) -> str | None:
    """The cap the kernel held an attempt at: its cgroup's OOM kills or refused forks (read now,
    or as last read before the cgroup was removed), or its death by SIGXFSZ at the file-size limit.
    ``final``: the attempt has ended (``Cgroup.counts``: read as the last counts when it is empty)."""
    if cgroup is not None and (enforced.memory in _CGROUP or enforced.processes in _CGROUP):
        found = kernel_breach(cgroup.counts(final) if cgroup.dirs else cgroup.last, limits, enforced)
        if found:
            return found
    if code == -signal.SIGXFSZ and limits.file_size:
        try:
            log_size = os.stat(log_path).st_size if log_path is not None else 0
        except OSError:
            log_size = 0
        return file_size_breach(log_size, limits)
    return None


@dataclass(frozen=True)
class ChildSetup:
    """What a confined worker's child does between fork and exec (its preexec): join its cgroup
    (write "0" to each join file the parent opened: it moves the writer), then lower
    RLIMIT_FSIZE. Only system calls: it runs in a forked copy of a threaded server."""

    fds: list[int]
    file_size: int  # bytes (0: none)

    def __call__(self) -> None:
        for fd in self.fds:
            os.write(fd, b"0")
        if self.file_size:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size, self.file_size))


class Confined:
    """The attempts one process runner confines, by tag: their cgroups and how their caps are held."""

    def __init__(self) -> None:
        self._cgroups: dict[str, Cgroup] = {}
        self._enforced: dict[str, Enforced] = {}
        self._made: dict[str, _LimitsKey] = {}  # tag -> the limits of the cgroup this runner made it (spares' key)
        self._spares: dict[_LimitsKey, list[Cgroup]] = {}  # the module's docstring: emptied cgroups, by their limits
        self._lock = threading.Lock()
        self._serial = 0
        self.spare_prefix = f"{SPARE}{_this_server()}-{next(_RUNNERS)}-"  # its spares' names: this prefix and a number
        self._cleared = False  # the spares of servers that are gone removed (at the first start)

    def start(self, tag: str, limits: Limits, own: int = 0) -> tuple[Cgroup | None, ChildSetup, Enforced]:
        """The cgroup an attempt carrying ``tag`` runs in (None where the machine allows none), its
        child's setup (the caller closes ``setup.fds`` once the child is started) and what holds
        its caps. ``own``: the orchestrator's processes (the shim) it holds besides the worker's.
        A spare under the same limits is renamed for it where there is one, else one is made."""
        key = (limits.memory, limits.processes, own)
        name = cgroup_name(tag)
        cgroup = self._reuse(name, key) or hierarchies().create(name, limits, own)
        if cgroup is not None:
            self._made[tag] = key
        return (
            cgroup,
            ChildSetup(cgroup.join_fds() if cgroup is not None else [], limits.file_size),
            self._keep(tag, limits, cgroup),
        )

    def adopt(self, tag: str, limits: Limits) -> tuple[Cgroup | None, Enforced]:
        """A running attempt a previous server started: its cgroup, found again by its tag."""
        cgroup = hierarchies().find(cgroup_name(tag))
        return cgroup, self._keep(tag, limits, cgroup)

    def _keep(self, tag: str, limits: Limits, cgroup: Cgroup | None) -> Enforced:
        enforced = self._enforced[tag] = enforced_for(limits, cgroup)
        if cgroup is not None:
            self._cgroups[tag] = cgroup
        return enforced

    def cgroup_of(self, tag: str) -> Cgroup | None:
        return self._cgroups.get(tag)

    def enforced_of(self, tag: str) -> Enforced | None:
        return self._enforced.get(tag)

    def tree(self, tag: str, shim: int) -> list[int]:
        """The processes of the attempt carrying ``tag``: its cgroup's, whatever their session or
        environment; without a cgroup, the descendants of its shim ``shim`` (a tagless child is
        found while it stays in the tree; one that double-forks out of it is not)."""
        cgroup = self._cgroups.get(tag)
        return cgroup.members() if cgroup is not None else descendants([shim])[shim]

    def end(self, tag: str) -> bool:
        """Kill every process in the cgroup of ``tag`` (this runner's, or one found by name) and remove
        it; one this runner made that is fresh again is kept as a spare instead (``_keep_spare``).
        Either way its kernel counts are read first (``Cgroup.last``) and its ``dirs`` emptied.
        True when that proves the attempt's tree gone: it had a cgroup, and it is now a spare (no
        task left in it) or the kernel removed every directory of it, which it does only for an
        empty one. Every process of the attempt was born in it (the child joins before it execs), so
        none is left outside but one that moved itself to another cgroup, which takes write access
        to the cgroup file system. Counts already read final (``Cgroup.settled``) are not read again."""
        self._enforced.pop(tag, None)
        key = self._made.pop(tag, None)
        cgroup = self._cgroups.pop(tag, None) or hierarchies().find(cgroup_name(tag))
        if cgroup is None or not cgroup.dirs:
            return False
        if key is not None and self._keep_spare(cgroup, key):
            return True
        return cgroup.remove()

    def close(self) -> None:
        """Remove the spares (a server's end; a crash leaves them to the next server's first start)."""
        with self._lock:
            spares = [cgroup for pool in self._spares.values() for cgroup in pool]
            self._spares.clear()
        for cgroup in spares:
            cgroup.remove()

    def _reuse(self, name: str, key: _LimitsKey) -> Cgroup | None:
        """A spare under limits ``key``, renamed ``name``; None when there is none (or it could not be renamed)."""
        with self._lock:
            clear = not self._cleared
            self._cleared = True
            pool = self._spares.get(key)
            spare = pool.pop() if pool else None
        if clear and not _dead_spares_removed_for_forks:
            remove_dead_spares()
        if spare is None:
            return None
        if spare.rename(name):
            return spare
        spare.remove()  # under whatever names its directories have now
        return None

    def _keep_spare(self, cgroup: Cgroup, key: _LimitsKey) -> bool:
        """Keep an ended attempt's cgroup as a spare if it is as a fresh one would be: v1 (renamable),
        every kernel count read (no uncapped controller's left unread) and zero, no member (what was
        left killed and gone, ``drain``), at most
        SPARE_CHARGE pinned (``pinned``); its counts are kept in ``last`` as ``remove`` keeps them. The caller's
        object is emptied (``dirs``), as after ``remove``: the spare is a new object."""
        if cgroup.counted != frozenset(cgroup.dirs) or any(v is not Enforcement.CGROUP_V1 for v in cgroup.versions.values()):
            return False
        # (counts read final at its attempt's end, ``Cgroup.settled``: found empty then, and read no more).
        # One with a task left is emptied first, as ``remove`` would: a sandbox's launcher still leaving.
        if not cgroup.settled and not cgroup.drain():
            return False
        with self._lock:
            if sum(len(pool) for pool in self._spares.values()) >= MAX_SPARES:
                return False
            self._serial += 1
            serial = self._serial
        final = cgroup.last if cgroup.settled else cgroup._keep((), 0)
        if final.oom_kills or final.forks_refused or cgroup.pinned() > SPARE_CHARGE:
            return False
        spare = Cgroup(cgroup.name, dict(cgroup.dirs), dict(cgroup.versions), counted=cgroup.counted)
        if not spare.rename(f"{self.spare_prefix}{serial}"):
            cgroup.dirs = spare.dirs  # removed by the caller, under whatever names they have now
            return False
        cgroup.dirs = {}
        with self._lock:
            self._spares.setdefault(key, []).append(spare)
        return True

    def end_prefix(self, prefix: str, keep: frozenset[str]) -> int:
        """``end`` every cgroup whose tag starts with ``prefix``, but those of ``keep``; how many processes they held."""
        spared = {cgroup_name(tag) for tag in keep}
        killed = 0
        for cgroup in hierarchies().find_prefix(cgroup_name(prefix)):
            if cgroup.name not in spared:
                killed += len(cgroup.members())
                cgroup.remove()
        return killed


_RUNNERS = itertools.count(1)  # tells apart the spares of one process's runners
_LimitsKey = tuple[int, int, int]  # (memory, processes, own): what a spare's limits were written for


def _this_server() -> str:
    """This process as a spare's name gives its server: "<pid>.<start>" (process_start_id: another
    process that reuses the pid is told apart); a spare named by a server of before has its pid alone."""
    return f"{os.getpid()}.{process_start_id(os.getpid()) or ''}"


def remove_dead_spares(*, for_forks: bool = False) -> int:
    """Remove the spares of servers that are gone (a crash leaves its own; no tag names one, so
    nothing mistakes them): those that hold no process and whose server, the pid and start time
    their name gives, no longer runs (a reused pid is another process). How many. Run at a server's
    start (process/runner.py ``sweep_dead_servers``) and at its first attempt's start (``Confined._reuse``).
    ``for_forks``: a node's, before it forks its workers (cluster/node.py): it stands for the one at
    the first attempt's start of this process and of those it forks from now on."""
    global _dead_spares_removed_for_forks
    removed = 0
    for cgroup in hierarchies().find_prefix(SPARE):
        owner = spare_owner(cgroup.name)
        if owner is None or process_alive(*owner) or cgroup.members():
            continue
        if cgroup.remove():
            removed += 1
    if for_forks:
        _dead_spares_removed_for_forks = True
    return removed


_dead_spares_removed_for_forks = False  # (remove_dead_spares) in this process or the one that forked it


def spare_owner(name: str) -> tuple[int, str | None] | None:
    """The server a spare's ``name`` gives: its pid and start time (None for a spare named by a
    server of before the start times); None where ``name`` is no spare's."""
    if not name.startswith(SPARE):
        return None
    pid, _, start = name[len(SPARE) :].partition("-")[0].partition(".")
    return (int(pid), start or None) if pid.isdigit() else None


def cgroup_name(tag: str) -> str:
    """The cgroup of the attempt carrying ``tag``: one character for one, so a tag prefix is a name prefix."""
    return PREFIX + _UNSAFE.sub("_", tag)


class Hierarchies:
    """Where this process may make cgroups, per controller (found once, on first use)."""

    def __init__(self, proc: Path = Path("/proc/self")) -> None:
        self._proc = proc
        self._found: dict[str, tuple[Enforcement, Path]] | None = None
        self._own: dict[str, str] = {}  # hierarchy -> this process's cgroup path ("" the v2 one)
        self._mounts: list[tuple[str, str, str, str]] | None = None  # the cgroup mounts (``_directory``), read once

    @property
    def bases(self) -> dict[str, tuple[Enforcement, Path]]:
        """controller -> (version, the directory attempt cgroups are made in)."""
        if self._found is None:
            self._found = self._find()
            if not self._found:
                log.info("no writable memory or pids cgroup for workers: their caps are sampled (workers.monitor_interval)")
        return self._found

    def create(self, name: str, limits: Limits, own: int = 0) -> Cgroup | None:
        """A fresh cgroup ``name`` holding ``limits`` (``own``: processes of the orchestrator's own,
        such as the shim, that it holds besides the worker's); None where none can be made.

        One directory per hierarchy (v2: one for both controllers). A v1 ``pids`` hierarchy is
        skipped when there is no process cap and the memory one was made: that one already lists
        every process of the attempt (to sample and to kill), and an uncapped ``pids.max`` holds
        nothing, so the record's words are the same ("no cap")."""
        dirs: dict[str, Path] = {}
        versions: dict[str, Enforcement] = {}
        made: dict[Path, Path] = {}  # base -> the directory made in it
        for controller, (version, base) in self.bases.items():
            if base in made:  # v2: both controllers in one directory
                dirs[controller], versions[controller] = made[base], version
                continue
            if controller == "pids" and not limits.processes and "memory" in dirs:
                continue
            directory = base / name
            try:
                try:
                    directory.mkdir()
                except FileExistsError:  # a stale one (its attempt was never swept): ended first
                    Cgroup(name, {controller: directory}, {controller: version}).remove()
                    directory.mkdir()
            except OSError as exc:
                log.warning("could not make cgroup %s (%s): the %s cap is sampled", directory, exc, controller)
                continue
            made[base] = dirs[controller] = directory
            versions[controller] = version
        if not dirs:
            return None
        capped = {"memory": limits.memory, "pids": limits.processes}
        cgroup = Cgroup(name, dirs, versions, counted=frozenset(c for c in dirs if capped[c]))
        try:
            _set_limits(cgroup, limits, own)
        except OSError as exc:
            log.warning("could not set the limits of cgroup %s (%s): its caps are sampled", name, exc)
            cgroup.remove()
            return None
        return cgroup

    def proc_paths(self, cgroup: Cgroup) -> dict[str, str]:
        """How ``/proc/<pid>/cgroup`` names ``cgroup`` to this process, per hierarchy ("" the v2 one,
        else the v1 controller's): what tells its processes from any other's (the shared egress
        listener, network/egress.py). Empty when its hierarchies are unknown."""
        found: dict[str, str] = {}
        for controller, version in cgroup.versions.items():
            key = "" if version is Enforcement.CGROUP_V2 else controller
            own = self._own.get(key)
            if own is None or controller not in cgroup.dirs:
                return {}
            found[key] = own.rstrip("/") + "/" + cgroup.name
        return found

    def holds_processes(self, paths: Mapping[str, str]) -> bool | None:
        """Whether the cgroup ``paths`` names (``proc_paths``' form: hierarchy -> its path as
        ``/proc/<pid>/cgroup`` names it) holds a process, in the kernel's words: False once each of
        its directories is removed (its parent is still there) or holds none, True while one holds
        one, None where this process cannot tell (a hierarchy not mounted here, a path that leaves its
        mount, a file it cannot read). What a caller cannot prove empty it keeps (network/egress.py:
        a registration of a dead server's whose attempt may still run)."""
        if not paths:
            return None
        for key, path in paths.items():
            directory = self._directory(key, path)
            if directory is None:
                return None
            try:
                if key == "":  # v2: whether it or a cgroup below it holds a process
                    if "populated 0" not in _read(directory / "cgroup.events").splitlines():
                        return True
                    continue
                if _read(directory / "cgroup.procs").split() or any(entry.is_dir() for entry in os.scandir(directory)):
                    return True  # (a v1 cgroup made below it: not read, kept)
            except FileNotFoundError:
                if not directory.parent.is_dir():
                    return None
            except OSError:
                return None
        return False

    def _directory(self, key: str, path: str) -> Path | None:
        """Where this process sees the cgroup ``path`` of hierarchy ``key`` ("" the v2 one, else a v1
        controller's), as ``/proc/<pid>/cgroup`` names it; None where no mount shows it (or it is a
        hierarchy's root, or its path climbs out)."""
        if self._mounts is None:
            try:
                self._mounts = _cgroup_mounts(_read(self._proc / "mountinfo"))
            except OSError:
                self._mounts = []
        for fstype, root, point, options in self._mounts:
            if (fstype == "cgroup2") if key == "" else (fstype == "cgroup" and key in options.split(",")):
                relative = _relative(path, root)
                if not relative or ".." in relative.split("/"):
                    return None
                return Path(point) / relative
        return None

    def find(self, name: str) -> Cgroup | None:
        """The existing cgroup ``name`` (a restarted server's handle on a running attempt's)."""
        dirs = {c: base / name for c, (_, base) in self.bases.items() if (base / name).is_dir()}
        return Cgroup(name, dirs, {c: self.bases[c][0] for c in dirs}) if dirs else None

    def find_prefix(self, prefix: str) -> Iterator[Cgroup]:
        """Existing cgroups whose name starts with ``prefix``."""
        names: set[str] = set()
        for _, base in self.bases.values():
            with contextlib.suppress(OSError):
                names.update(entry.name for entry in os.scandir(base) if entry.is_dir() and entry.name.startswith(prefix))
        for name in sorted(names):
            found = self.find(name)
            if found is not None:
                yield found

    def _find(self) -> dict[str, tuple[Enforcement, Path]]:
        try:
            own = _own_cgroups(_read(self._proc / "cgroup"))
            mounts = _cgroup_mounts(_read(self._proc / "mountinfo"))
        except OSError:
            return {}
        self._own = own
        found: dict[str, tuple[Enforcement, Path]] = {}
        v2 = _v2_base(own, mounts)
        for controller in CONTROLLERS:
            if v2 is not None and controller in v2[1]:
                found[controller] = (Enforcement.CGROUP_V2, v2[0])
                continue
            base = _v1_base(controller, own, mounts)
            if base is not None:
                found[controller] = (Enforcement.CGROUP_V1, base)
        return found


def _set_limits(cgroup: Cgroup, limits: Limits, own: int) -> None:
    # (paths as strings: each attempt's start writes these, and a pathlib join costs more than the write)
    memory, pids = cgroup.dirs.get("memory"), cgroup.dirs.get("pids")
    if memory is not None and limits.memory:
        if cgroup.versions["memory"] is Enforcement.CGROUP_V2:
            _write(f"{memory}/memory.max", str(limits.memory))
            with contextlib.suppress(OSError):  # no swap accounting: the memory limit still holds
                _write(f"{memory}/memory.swap.max", "0")
        else:
            _write(f"{memory}/memory.limit_in_bytes", str(limits.memory))
            with contextlib.suppress(FileNotFoundError):  # swap accounting: the cap holds memory plus swap, so swap is no way out
                _write(f"{memory}/memory.memsw.limit_in_bytes", str(limits.memory))
    if pids is not None and limits.processes:
        _write(f"{pids}/pids.max", str(limits.processes + own))


def _v2_base(own: dict[str, str], mounts: list[tuple[str, str, str, str]]) -> tuple[Path, set[str]] | None:
    """The server's own v2 cgroup when attempts can be made in it with controllers, and which."""
    path = own.get("")
    for fstype, root, point, _ in mounts:
        if fstype != "cgroup2" or path is None:
            continue
        base = Path(point) / _relative(path, root)
        try:
            enabled = set(_read(base / "cgroup.subtree_control").split())
            available = set(_read(base / "cgroup.controllers").split())
        except OSError:
            return None
        wanted = [c for c in CONTROLLERS if c in available and c not in enabled]
        if wanted:
            with contextlib.suppress(OSError):  # EBUSY: the cgroup has processes of its own (not the root)
                _write(base / "cgroup.subtree_control", " ".join("+" + c for c in wanted))
                enabled.update(wanted)
        usable = {c for c in CONTROLLERS if c in enabled}
        if usable and os.access(base, os.W_OK):
            return base, usable
        return None
    return None


def _v1_base(controller: str, own: dict[str, str], mounts: list[tuple[str, str, str, str]]) -> Path | None:
    path = own.get(controller)
    for fstype, root, point, options in mounts:
        if fstype == "cgroup" and path is not None and controller in options.split(","):
            base = Path(point) / _relative(path, root)
            return base if base.is_dir() and os.access(base, os.W_OK) else None
    return None


def _own_cgroups(text: str) -> dict[str, str]:
    """controller -> this process's cgroup path, from /proc/self/cgroup ("" is the v2 one)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


def _cgroup_mounts(text: str) -> list[tuple[str, str, str, str]]:
    """(type, root, mount point, super options) of each cgroup mount in /proc/self/mountinfo."""
    found = []
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields, rest = before.split(), after.split()
        if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            found.append((rest[0], fields[3], fields[4].replace("\\040", " "), rest[2]))
    return found


def _relative(path: str, root: str) -> str:
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return path.lstrip("/")


# What a reading's memory takes of memory.stat (v2's names, then v1's), which has some seventy lines.
_RSS_KEYS = ("anon", "file_mapped", "total_rss", "rss", "total_mapped_file", "mapped_file")


def _picked(path: Path | str, keys: tuple[str, ...]) -> dict[str, int]:
    """``keys``' values in a "key value" per line file (memory.stat, memory.events, pids.events):
    those it holds; {} when unreadable. Each key found in the text, not every line parsed: the
    monitor reads memory.stat, some seventy lines on v1, for every running worker each interval."""
    try:
        text = "\n" + _read(path)
    except OSError:
        return {}
    found: dict[str, int] = {}
    for key in keys:
        at = text.find(f"\n{key} ")
        if at >= 0:
            start = at + len(key) + 2
            end = text.find("\n", start)
            value = text[start:] if end < 0 else text[start:end]
            if value.isdigit():
                found[key] = int(value)
    return found


def _procs(directory: Path) -> list[int]:
    """The processes one hierarchy's directory lists (none when it cannot be read: gone)."""
    try:
        return [int(x) for x in _read(directory / "cgroup.procs").split()]
    except OSError:
        return []


_READ = 4096  # bytes a cgroup file's read asks for at a time (a read allocates what it asks for)


def _read(path: Path | str) -> str:
    """The whole of a cgroup (or /proc) file. Such files are made by the kernel's seq_file, whose
    read fills the buffer unless the file ends first: a short read is its end, and the usual
    small file (a count, a few keyed lines) takes one read, not a second to see nothing more."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunk = os.read(fd, _READ)
        if len(chunk) < _READ:
            return chunk.decode(errors="replace")
        chunks = [chunk]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def _write(path: Path | str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def holds_processes(paths: Mapping[str, str]) -> bool | None:
    """``Hierarchies.holds_processes`` in this process's view of the machine's cgroups."""
    return hierarchies().holds_processes(paths)


@functools.lru_cache(maxsize=1)
def hierarchies() -> Hierarchies:
    """This process's view of the machine's cgroups (one per process)."""
    return Hierarchies()


__all__ = [
    "Cgroup",
    "Enforced",
    "Enforcement",
    "Hierarchies",
    "Limits",
    "Usage",
    "cgroup_name",
    "enforced_for",
    "hierarchies",
    "holds_processes",
    "remove_dead_spares",
    "spare_owner",
    "ChildSetup",
    "Confined",
    "cap_hit",
    "kill_all",
    "file_size_breach",
    "kernel_breach",
]
