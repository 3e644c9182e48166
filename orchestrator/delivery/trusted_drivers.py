"""The user's trusted merge drivers (``git.trusted_merge_drivers``), run on workers' files in the
workers' sandbox.

Every merge of the host refuses every ``merge.<name>.driver`` the user configured (git/drivers.py):
git never runs one in the user's checkout. For a path whose driver the user listed as trusted, the
merge hands the three versions to :class:`SandboxedDrivers`, which runs the driver's own command line
as git would (``sh -c``, ``%O %A %B %L %P`` filled in: git/drivers.expand) in an empty folder of the
tree's (``job_<root>/drivers/<run>/``) holding only those three files, in the sandbox a worker's gate
or resolver runs in (workers/confinement.py ``spec_at``: its network rules, hidden paths and the
workspace shown empty, and your repository's git dir too: a driver needs none, and it holds other
trees' branches), with the workers' caps (``limits`` at its spawn, the rest watched as a
worker's) and ``git.merge_driver_timeout``, no ORCHESTRATOR_* variable, its output appended to the
tree's ``logs/merge-drivers.log``. Exit 0: what it left in ``%A`` is the path's merged file, read
back as data (a regular file, never a link it made, no larger than the disk cap). Anything else
(an exit code, a signal, a cap, the timeout) leaves the path a conflict that says why. Where the
job's workers run unconfined (``workers.sandbox: off``, or a machine that cannot sandbox), a trusted
driver is not run either: it would run in the host.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
from dataclasses import replace
from pathlib import Path

from ..config import Settings
from ..git.drivers import DriverResult, DriverRun, expand
from ..models import JobRecord
from ..process.monitor import CAPPED
from ..process.runner import CommandNotFound, ProcessRunner, Wakeup, signal_name
from ..selection.scoring import wait_for
from ..workers.confinement import Confinement
from ..workers.environment import helper_env
from ..workspace.layout import Workspace

log = logging.getLogger("orchestrator.drivers")

LOG_NAME = "merge-drivers.log"  # in the tree's logs folder
FILES = (".merge_file_base", ".merge_file_ours", ".merge_file_theirs")  # %O %A %B, in its folder


class SandboxedDrivers:
    """``git.drivers.DriverRunner`` for the merges of ``job``'s tree (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        workspace: Workspace,
        runner: ProcessRunner,
        confinement: Confinement,
        job: JobRecord,
        cancel: Wakeup | None = None,
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.runner = runner
        self.confinement = confinement
        self.job = job
        self.cancel = cancel
        self.trusted = frozenset(settings.git.trusted_merge_drivers)

    def __call__(self, run: DriverRun) -> DriverResult:
        root = self.job.root_id
        home = self.workspace.job_dir(root) / "drivers" / secrets.token_hex(6)
        folder, tmp = home / "files", home / "tmp"
        try:
            folder.mkdir(parents=True)
            tmp.mkdir()
            for name, content in zip(FILES, (run.base, run.ours, run.theirs)):
                (folder / name).write_bytes(content)
            return self._run(run, folder, tmp)
        except OSError as exc:
            log.warning("job %s: merge driver %s could not be run", self.job.id, run.name, exc_info=True)
            return DriverResult(None, f"could not be run: {exc}")
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def _env(self, tmp: Path) -> dict[str, str]:
        return {**helper_env(self.settings, tmp), "GIT_TERMINAL_PROMPT": "0"}

    def _run(self, run: DriverRun, folder: Path, tmp: Path) -> DriverResult:
        root = self.job.root_id
        env = self._env(tmp)
        sandbox = self.confinement.spec_at(root, None, folder, tmp, self.job.config, env)
        if sandbox is None:
            return DriverResult(
                None,
                "not run: it is trusted (git.trusted_merge_drivers), but this job's workers run unconfined "
                "(workers.sandbox) and a trusted driver runs only in their sandbox",
            )
        if run.git_dir:  # three files in, one out: it needs no repository (other trees' branches are in yours)
            sandbox = replace(sandbox, emptied=(*sandbox.emptied, run.git_dir))
        command = expand(run.command, tuple(str(folder / name) for name in FILES), run)
        log_path = self.workspace.logs_dir(root) / LOG_NAME
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.append_log(log_path, f"===== merge driver {run.name} on {run.path!r} =====\n".encode())
        timeout = self.settings.git.merge_driver_timeout
        try:
            handle = self.runner.spawn(
                ["sh", "-c", command],
                cwd=folder,
                env=env,
                log_path=log_path,
                tag=f"{root}.driver-{secrets.token_hex(6)}",
                sandbox=sandbox,
                limits=self.confinement.limits(),  # a worker's caps: it runs on workers' files
            )
        except (CommandNotFound, OSError, ValueError) as exc:
            return DriverResult(None, f"could not start: {getattr(exc, 'strerror', None) or exc}")
        try:
            code, why = wait_for(self.runner, handle, timeout, self.cancel, self.confinement.watch(folder, tmp))
            self.runner.terminate(handle, grace=self.settings.workers.kill_grace)
            self.runner.sweep(handle.tag, handle.started_at)  # nothing it started outlives it
        finally:
            self.runner.release(handle)
        ended = why or f"exit code {code}"
        self.workspace.append_line(log_path, f"===== merge driver {run.name} on {run.path!r} ended: {ended} =====")
        if code is None and why.startswith(CAPPED):
            return DriverResult(None, f"was {why}")
        if code is None:
            return DriverResult(None, f"did not finish: {why.replace('the selection', 'the merge')}")
        if code != 0:
            return DriverResult(None, f"was killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}")
        return _merged(folder, self.confinement.limits().disk)


def _merged(folder: Path, cap: int) -> DriverResult:
    """What the driver left in ``%A``, read as data: a regular file (a link it made there is never
    followed), no larger than the disk cap (``cap`` bytes; 0: none)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        at = os.open(folder, flags | os.O_DIRECTORY)
    except OSError as exc:
        return DriverResult(None, f"left a folder that could not be read: {exc.strerror}")
    try:
        fd = os.open(FILES[1], flags | os.O_NONBLOCK, dir_fd=at)
    except OSError as exc:
        return DriverResult(None, f"left no merged file to read ({exc.strerror})")
    finally:
        os.close(at)
    with os.fdopen(fd, "rb") as merged:
        info = os.fstat(merged.fileno())
        if not stat.S_ISREG(info.st_mode):
            return DriverResult(None, "left a merged file that is not a regular file")
        if cap and info.st_size > cap:
            return DriverResult(None, f"left a merged file of {info.st_size} bytes, more than workers.max_disk_mb")
        data = merged.read(cap + 1) if cap else merged.read()
    if cap and len(data) > cap:
        return DriverResult(None, "left a merged file larger than workers.max_disk_mb")
    return DriverResult(data)


__all__ = ["LOG_NAME", "SandboxedDrivers"]
