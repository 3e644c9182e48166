"""What ``distributed.executor`` chooses: the executor that runs attempts and the path lock
table. Redis and RQ (about 24 MB and 0.2 s of imports) load only when it names rq, so a
single server never carries them."""

from __future__ import annotations

from ..checkouts.locks import LockTable, PathLocks
from ..clock import Clock
from ..config import ExecutorKind, Settings
from ..process.cgroups import Limits
from ..process.executor import Executor, LocalExecutor
from ..process.runner import ProcessRunner


def make_executor(settings: Settings, runner: ProcessRunner | None = None) -> Executor:
    """The executor ``distributed.executor`` names: local processes, or nodes through Redis."""
    if settings.distributed.executor == ExecutorKind.RQ:
        from .executor import RQExecutor

        return RQExecutor(settings)
    w = settings.workers
    return LocalExecutor(runner, Limits.from_mb(w.max_memory_mb, w.max_processes, w.max_log_mb, w.max_disk_mb))


def path_locks(clock: Clock, settings: Settings) -> LockTable:
    """The engine's lock table: in Redis when ``distributed.executor`` is rq, else in memory."""
    if settings.distributed.executor != ExecutorKind.RQ:
        return PathLocks(clock, settings.tasks)
    from .connect import connect, redacted
    from .locks import RedisPathLocks
    from .names import Names

    url = settings.distributed.redis_url
    return RedisPathLocks(
        connect(url), Names(settings.distributed.queue_prefix), clock, settings.tasks, where=redacted(url), owns_client=True
    )
