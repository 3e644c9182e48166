"""What ``distributed.executor`` chooses: the executor that runs attempts and the path lock
table. Redis and RQ (about 24 MB and 0.2 s of imports) load only when it names rq, so a
single server never carries them."""

from __future__ import annotations

from ..checkouts.locks import LockTable, PathLocks
from ..clock import Clock
from ..config import ExecutorKind, Settings
from ..process import supervisor
from ..process.cgroups import Limits
from ..process.executor import Executor, LocalExecutor
from ..process.runner import ProcessRunner
from ..workspace.layout import Workspace


def make_executor(settings: Settings, runner: ProcessRunner | None = None) -> Executor:
    """The executor ``distributed.executor`` names: local processes, or nodes through Redis."""
    if settings.distributed.executor == ExecutorKind.RQ:
        from .executor import RQExecutor

        return RQExecutor(settings)
    w = settings.workers
    return LocalExecutor(runner, Limits.from_mb(w.max_memory_mb, w.max_processes, w.max_log_mb, w.max_disk_mb))


def executor_and_runner(
    settings: Settings, workspace: Workspace, runner: ProcessRunner | None = None, executor: Executor | None = None
) -> tuple[Executor, ProcessRunner]:
    """Where worker attempts run (``make_executor``; a test may inject either) and the runner of the
    server's helper commands (the AI planner, a judge): the local executor's. Without injected ones,
    local workers are started by the workspace's supervisor where it runs: no shim and no fork of the
    server per worker."""
    if runner is None and executor is None and settings.distributed.executor != ExecutorKind.RQ and supervisor.supported():
        runner = ProcessRunner(supervisor=supervisor.SupervisorClient(workspace.supervisor_dir))
    chosen = executor or make_executor(settings, runner)
    return chosen, chosen.local_runner() or runner or ProcessRunner()


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
