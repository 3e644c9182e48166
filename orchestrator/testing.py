"""Fakes for testing an engine without processes or real time: shipped, as dramatiq ships its StubBroker.

A user tests their own configuration and after-attempt steps on these: :class:`Rig` builds an
:class:`~orchestrator.engine.core.Engine` on a :class:`FakeExecutor` (which starts no process) and a
:class:`FakeClock` (on which a 30 s timeout takes no real time), :meth:`FakeExecutor.script`
says what each worker's attempts do, and :func:`no_processes` makes any real process start
fail, so a test cannot lean on one by mistake::

    from orchestrator.config import load_settings
    from orchestrator.testing import Rig, Script, no_processes

    def test_a_flaky_worker_is_retried(tmp_path):
        settings = load_settings("my-config.yaml", base_dir=tmp_path, environ={})
        with no_processes(), Rig(settings) as rig:
            rig.fake.script("worker_1", Script(exit=1), Script(exit=0))
            job = rig.run(["Write the docs"])
            assert job.status.value == "completed"
            assert len(rig.fake.attempts("worker_1")) == 2

``FakeExecutor`` keeps ``orchestrator.process.executor.Executor``'s promises (the project's contract
tests check it beside ``LocalExecutor``): it writes each attempt's output to the worker log,
writes the exit file the way the shim does ("exit N" / "signal S"), runs the kill ladder
(first signal, grace, SIGKILL) and reports the rung, and a restarted engine finds and adopts
what a "killed" one left running. What each attempt does is scripted per worker name with
:class:`Script`. Durations, timeouts, grace and backoffs are the clock's fake seconds.

``FakeClock(auto=True)`` (the default): a wait returns at once, moving time to its end (or to
the attempt's end, whichever is first), so a 30 s timeout takes no real time. Threads share
the clock; each only moves it forward. ``auto=False``: waits block (in real time) until the
test calls ``advance`` past their end or their wake-up is set, for scenarios that act while
a worker runs (cancel, tree deadline, resource caps, a restart).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from . import protocol
from .clock import Waitable
from .config import Settings
from .engine.core import Engine
from .models import JobRecord, WorkerRecord
from .process.backends import probe
from .process.cgroups import Enforced
from .process.executor import AttemptHandle, Sample, Sampled
from .process.procscan import Memory, machine_memory
from .process.runner import CommandNotFound, ProcessRunner, signal_name
from .process.sandbox import SandboxSpec
from .process.shim import Deadline, FoundAttempt, read_exit_file, reserve_exit_file

MONOTONIC_BASE = 1000.0
FAKE_PID_BASE = 5_000_000  # above Linux's pid_max (4194304): never a real process


class ServerKilled(BaseException):
    """Raised in a "killed" engine's threads: nothing more of theirs reaches the disk."""


class FakeClock:
    """Wall and monotonic time that move only when something waits (auto) or the test says so."""

    def __init__(self, *, auto: bool = True, start: float | None = None) -> None:
        self.auto = auto
        self._wall0 = time.time() if start is None else start
        self._elapsed = 0.0
        self._cond = threading.Condition()

    def time(self) -> float:
        return self._wall0 + self._elapsed

    def monotonic(self) -> float:
        return MONOTONIC_BASE + self._elapsed

    def release(self) -> None:
        """From now on waits return at once (auto), those blocked now included."""
        with self._cond:
            self.auto = True
            self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Move time forward (what a manual clock's waits wait for)."""
        with self._cond:
            self._elapsed += seconds
            self._cond.notify_all()

    def wait(self, wake: Waitable | None, timeout: float) -> bool:
        """Pause ``timeout`` fake seconds, or until ``wake`` is set (True then)."""
        return self.sleep_until(self.monotonic() + max(0.0, timeout), wake)

    def sleep_until(self, target: float, wake: Waitable | None = None) -> bool:
        """Until monotonic ``target``, or ``wake`` is set (True then). Auto: time jumps there."""
        if wake is not None and wake.is_set():
            return True
        with self._cond:
            if self.auto:
                self._elapsed = max(self._elapsed, target - MONOTONIC_BASE)
                return False
            while self.monotonic() < target:
                if wake is not None and wake.is_set():
                    return True
                if self.auto:  # released meanwhile
                    self._elapsed = max(self._elapsed, target - MONOTONIC_BASE)
                    break
                self._cond.wait(0.005)  # a Wakeup does not notify us: look at it often
        return False


@dataclass
class Script:
    """What one attempt does. Output lines go to the worker log at start, like a process's."""

    exit: int = 0
    output: list[str] = field(default_factory=lambda: ["done"])
    duration: float = 0.01  # fake seconds until it ends by itself
    hang: bool = False  # never ends by itself
    dies_by: int | None = None  # killed by this signal at the end of ``duration``
    ignores_first_signal: bool = False  # only the ladder's SIGKILL ends it
    exit_on_signal: int | None = None  # on the first signal it exits with this code (claude: 0 on SIGINT)
    spawn_error: str | None = None  # "missing" (CommandNotFound) or "oserror": it never starts
    children: list[list[str]] | None = None  # child jobs (each its tasks) it asks for, in turn, while it runs
    child_config: dict[str, Any] | None = None
    wait_for_children: bool = True  # block (as ``orchestrator-spawn --wait``) until each child job ends
    usage: Sample | None = None  # what ``sample`` reports while it runs
    vanishes: bool = False  # when the server is killed, dies leaving no exit file (lost)


def claude_result(
    cost: float | None = 0.01,
    *,
    text: str = "done",
    status: int | None = None,
    retry_after: float | None = None,
    error: bool = False,
) -> list[str]:
    """The stream-json lines claude prints (its adapter parses cost, failure class, retry-after)."""
    lines = [json.dumps({"type": "system", "subtype": "init", "session_id": "fake"})]
    if retry_after is not None:
        lines.append(
            json.dumps({"type": "system", "subtype": "api_retry", "error_status": status, "retry_delay_ms": retry_after * 1000})
        )
    result: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": error or status is not None,
        "result": text,
        "total_cost_usd": cost,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        "session_id": "fake",
    }
    if status is not None:
        result["api_error_status"] = status
    lines.append(json.dumps(result))
    return lines


@dataclass
class FakeHandle:
    """An attempt of the FakeExecutor (executor.AttemptHandle)."""

    pid: int
    tag: str
    started_at: float
    exit_file: Path | None
    log_path: Path
    script: Script
    env: dict[str, str]
    argv: list[str]
    ends_at: float  # monotonic; inf while it hangs
    start_id: str | None = "fake"
    kill_rung: str | None = None
    code: int | None = None
    ended_at: float | None = None
    signals: list[int] = field(default_factory=list)
    children: list[str] = field(default_factory=list)  # child job ids it started
    refusals: list[str] = field(default_factory=list)  # why a child job was refused
    node: str | None = None
    queued: bool = False
    lost: bool = False
    deadline_stop: str | None = None
    enforced: Enforced | None = None  # no cgroup, no limits: a fake process is held by nothing but the monitor
    cap_hit: str | None = None
    waited: bool = False
    waits: int = 0  # waits begun (their end already fixed): a manual clock may move on after one
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def id(self) -> str:
        return f"fake-{self.pid}"

    @property
    def shim_pid(self) -> int | None:
        return None  # a fake process has no shim

    @property
    def worker(self) -> str:
        return self.env.get(protocol.WORKER_ID, "")

    @property
    def attempt(self) -> int:
        return int(self.env.get(protocol.ATTEMPT, "1"))

    @property
    def exited(self) -> bool:
        return self.code is not None


def _fake(handle: AttemptHandle) -> FakeHandle:
    assert isinstance(handle, FakeHandle), f"not a FakeExecutor's attempt: {handle!r}"
    return handle


class FakeExecutor:
    """Scripted attempts in fake time; starts no process. ``engine`` (set by :class:`Rig`) is
    what a worker's child-job requests go to, as a real worker's go to the server's API."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.engine: Engine | None = None
        self.scripts: dict[str, list[Script]] = {}
        self.default = Script()
        self.handles: list[FakeHandle] = []
        self.sweeps: list[str] = []
        self.swept_prefixes: list[tuple[str, frozenset[str]]] = []
        self.strays: set[str] = set()  # tags of leftovers only a sweep ends
        self.killed_server = False
        self.generation = 0  # of servers: a thread of a killed one never gets through again
        self._thread_generation: dict[int, int] = {}
        self._pids = itertools.count(FAKE_PID_BASE)
        self._lock = threading.Lock()

    # -- scripting and reading back -------------------------------------------------
    def script(self, worker: str, *attempts: Script) -> None:
        """Attempt n of every worker called ``worker`` does ``attempts[n-1]`` (the last one after)."""
        self.scripts[worker] = list(attempts)

    def attempts(self, worker: str) -> list[FakeHandle]:
        """The attempts started so far of every worker called ``worker``, oldest first."""
        return [h for h in self.handles if h.worker == worker]

    def _script_for(self, worker: str, number: int) -> Script:
        found = self.scripts.get(worker)
        if not found:
            return self.default
        return found[min(number, len(found)) - 1]

    # -- the Executor interface -----------------------------------------------------------
    def start(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        tag: str,
        exit_file: Path | None = None,
        kind: str = "command",
        sandbox: SandboxSpec | None = None,
        deadline: Deadline | None = None,
    ) -> FakeHandle:
        """Start the attempt its worker's :class:`Script` describes (no process)."""
        self._check_alive()
        if not argv:
            raise ValueError("empty command")
        env = dict(env)
        script = self._script_for(env.get(protocol.WORKER_ID, ""), int(env.get(protocol.ATTEMPT, "1")))
        if script.spawn_error == "missing" or (os.sep in argv[0] and not os.path.exists(argv[0])):
            raise CommandNotFound(errno.ENOENT, f"No such file or directory: {argv[0]}", argv[0])
        if script.spawn_error == "oserror":
            raise PermissionError(errno.EACCES, f"Permission denied: {argv[0]}")
        if exit_file is not None:  # as the runner: a stale status never passes for this run's, and its room is made
            reserve_exit_file(exit_file)
        now = self.clock.monotonic()
        handle = FakeHandle(
            pid=next(self._pids),
            tag=tag,
            started_at=self.clock.time(),
            exit_file=exit_file,
            log_path=Path(log_path),
            script=script,
            env=env,
            argv=list(argv),
            ends_at=math.inf if script.hang else now + script.duration,
        )
        self._write(handle, "".join(line + "\n" for line in script.output))
        with self._lock:
            self.handles.append(handle)
        return handle

    def wait(self, handle: AttemptHandle, timeout: float | None, wake: Waitable | None = None) -> int | None:
        """Its exit status once it ended within ``timeout`` fake seconds, else None."""
        handle = _fake(handle)
        self._check_alive()
        if handle.code is not None:
            return handle.code
        if not handle.waited:
            handle.waited = True
            self._ask_for_children(handle)
        limit = math.inf if timeout is None else self.clock.monotonic() + timeout
        handle.waits += 1
        if handle.ends_at <= limit:
            self.clock.sleep_until(handle.ends_at, wake)
        elif limit < math.inf:
            self.clock.sleep_until(limit, wake)
        elif wake is None:
            raise AssertionError(f"{handle.worker}: waiting forever on an attempt that never ends")
        else:
            while not wake.is_set():
                self.clock.sleep_until(self.clock.monotonic() + 3600, wake)
        self._check_alive()
        if self.clock.monotonic() >= handle.ends_at:
            self._end(handle)
        return handle.code

    def withhold(self, handles: Sequence[AttemptHandle]) -> None:
        """Nothing: a fake attempt starts as it is started, never queued."""

    def terminate(self, handle: AttemptHandle, *, grace: float, first_signal: int = signal.SIGTERM) -> str:
        """The kill ladder in fake time; the rung that ended it ("none": it had ended)."""
        handle = _fake(handle)
        with handle.lock:
            if handle.kill_rung is not None:
                return handle.kill_rung
            if self.wait(handle, 0) is not None:
                self.sweeps.append(handle.tag)
                handle.kill_rung = "none"
                return handle.kill_rung
            handle.signals.append(first_signal)
            if handle.script.ignores_first_signal:
                self.clock.wait(None, grace)  # the whole grace passes
                handle.signals.append(signal.SIGKILL)
                rung, code = "SIGKILL", -signal.SIGKILL
            else:
                rung = signal_name(first_signal)
                exit_code = handle.script.exit_on_signal
                code = -first_signal if exit_code is None else exit_code
            self._end(handle, code)
            self.sweeps.append(handle.tag)
            handle.kill_rung = rung
            return rung

    def release(self, handle: AttemptHandle) -> None:
        """Nothing to free: a fake attempt holds no descriptor."""

    def adopt(self, pid: int | None, start_id: str | None, *, tag: str, started_at: float, exit_file: Path | None) -> FakeHandle:
        """The attempt a previous engine started, as ``runner.adopt`` finds it."""
        self._check_alive()
        for handle in self.handles:
            if handle.pid == pid and handle.tag == tag:
                return handle  # the same attempt (running, or ended while no server watched)
        # Not one we know: its status is what its exit file says (none: SIGKILL), as runner.adopt.
        found = read_exit_file(exit_file) if exit_file is not None else None
        code = -signal.SIGKILL if found is None else found
        ended = os.stat(exit_file).st_mtime if found is not None and exit_file is not None else self.clock.time()
        return FakeHandle(
            pid=pid or 0,
            tag=tag,
            started_at=started_at,
            exit_file=exit_file,
            log_path=Path(os.devnull),
            script=Script(),
            env={},
            argv=[],
            ends_at=0.0,
            start_id=start_id,
            code=code,
            ended_at=ended,
        )

    def find(self, tag_prefix: str) -> list[FoundAttempt]:
        """Attempts still running whose tag starts with ``tag_prefix``."""
        self._check_alive()
        found = []
        for handle in self.handles:
            if handle.code is None and self.clock.monotonic() >= handle.ends_at:
                self._end(handle)  # ended while no server watched: its shim wrote the exit file
            if handle.code is None and handle.tag.startswith(tag_prefix) and handle.exit_file is not None:
                found.append(
                    FoundAttempt(
                        pid=handle.pid,
                        tag=handle.tag,
                        start_id=handle.start_id,
                        exit_file=handle.exit_file,
                        attempt=handle.attempt,
                    )
                )
        return found

    def sample(self, attempts: Sequence[Sampled]) -> dict[str, Sample]:
        """The ``usage`` of each running attempt's :class:`Script`, by tag."""
        if self.killed_server:
            return {}  # (the killed server's monitor thread: nothing to measure, and nothing raised there)
        running = {h.tag: h.script.usage for h in self.handles if h.code is None and h.script.usage is not None}
        return {a.tag: running[a.tag] for a in attempts if a.tag in running}

    def sweep(self, tag: str, since: float = 0.0) -> None:
        """Record the sweep; a stray carrying ``tag`` is gone."""
        self._check_alive()
        self.sweeps.append(tag)
        self.strays.discard(tag)

    def sweep_prefix(self, prefix: str, *, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """End what carries a tag starting with ``prefix`` (not in ``keep``); how many."""
        self._check_alive()
        self.swept_prefixes.append((prefix, frozenset(keep)))
        killed = 0
        for handle in self.handles:
            if handle.code is None and handle.tag.startswith(prefix) and handle.tag not in keep:
                self._end(handle, -signal.SIGKILL)
                killed += 1
        for tag in [t for t in self.strays if t.startswith(prefix) and t not in keep]:
            self.strays.discard(tag)
            killed += 1
        return killed

    def nodes(self) -> None:
        """A single machine, like the local executor."""
        return None

    def memory(self) -> list[Memory]:
        """This machine's, like the local executor's."""
        return [machine_memory()]

    def queue_outage(self) -> float | None:
        """No queue, like the local executor."""
        return None

    def local_runner(self) -> ProcessRunner | None:
        return None  # no process: the planner gets a runner of its own

    def close(self) -> None:
        """Nothing: it runs nothing of its own."""

    # -- a server killed and restarted -------------------------------------------------------
    def kill_server(self) -> None:
        """The engine is killed (kill -9): its threads stop at their next call here, so
        nothing more of theirs reaches the disk; the attempts run on (their shims are not
        the server's children), except ``vanishes`` ones, which die leaving no exit file."""
        self.killed_server = True
        self.generation += 1
        for handle in self.handles:
            if handle.code is None and handle.script.vanishes:
                handle.code, handle.exit_file = -signal.SIGKILL, None

    def restart(self, engine: Engine) -> None:
        """A new engine on the same machine: calls are honoured again."""
        self.killed_server = False
        self.engine = engine

    def _check_alive(self) -> None:
        thread = threading.current_thread()
        if thread is threading.main_thread():
            return  # the test itself
        born = self._thread_generation.setdefault(thread.ident or 0, self.generation)
        if self.killed_server or born != self.generation:
            self._thread_generation.pop(thread.ident or 0, None)  # (a new thread may get its ident)
            raise ServerKilled()

    # -- what an attempt does ---------------------------------------------------------------
    def _end(self, handle: FakeHandle, code: int | None = None) -> None:
        """The attempt ends: its exit file is written as the shim writes it."""
        if handle.code is not None:
            return
        ended = self.clock.time()
        if code is None:  # by itself, at its scripted end (time may have moved on since: other threads)
            code = -handle.script.dies_by if handle.script.dies_by else handle.script.exit
            ended -= max(0.0, self.clock.monotonic() - handle.ends_at)
        handle.code, handle.ended_at = code, ended
        if handle.exit_file is not None:
            text = f"signal {-code}\n" if code < 0 else f"exit {code}\n"
            Path(handle.exit_file).write_text(text, encoding="ascii")
            os.utime(handle.exit_file, (handle.ended_at, handle.ended_at))  # written then, in fake time

    def _ask_for_children(self, handle: FakeHandle) -> None:
        """Start a child job through the engine, as a worker does through the API, and (with
        ``wait_for_children``) block until it ends, as ``orchestrator-spawn --wait`` does."""
        script = handle.script
        if not script.children or self.engine is None:
            return
        env = handle.env
        for tasks in script.children:
            try:
                child = self.engine.submission.submit(
                    f"child of {handle.worker}",
                    script.child_config,
                    list(tasks),
                    parent_job_id=env[protocol.JOB_ID],
                    parent_worker=env[protocol.WORKER_ID],
                )
            except Exception as exc:  # noqa: BLE001 - a refusal is what the worker reads and acts on
                handle.refusals.append(str(exc))
                self._write(handle, f"spawn refused: {exc}\n")
                continue
            handle.children.append(child.id)
            self._write(handle, f"started child job {child.id}\n")
            if script.wait_for_children:
                done = self.engine.queries.wait(child.id, 20)
                self._write(handle, f"child job {child.id} {done.status.value}\n")

    @staticmethod
    def _write(handle: FakeHandle, text: str) -> None:
        if not text:
            return
        fd = os.open(handle.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)


class Rig:
    """An engine on a :class:`FakeExecutor` and a :class:`FakeClock`, and the engines that
    replace it after a simulated crash (:meth:`restart`). ``engine_options`` go to each
    :class:`~orchestrator.engine.Engine` (``steps=[...]`` to test your own after-attempt steps).
    Use it as a context manager, or call :meth:`close`."""

    def __init__(self, settings: Settings, *, auto: bool = True, wait: float = 10.0, **engine_options: Any) -> None:
        self.settings = settings
        self.wait_seconds = wait  # real seconds a job may take before it counts as hung
        self.engine_options = engine_options
        self.clock = FakeClock(auto=auto)
        self.fake = FakeExecutor(self.clock)
        self.engines: list[Engine] = []
        self.engine = self.new_engine()

    def new_engine(self) -> Engine:
        """Another engine on the same settings, executor and clock (what a restart starts)."""
        engine = Engine(self.settings, executor=self.fake, clock=self.clock, **self.engine_options)
        self.fake.engine = engine
        self.engines.append(engine)
        return engine

    def submit(self, tasks: list[str] | None, config: Mapping[str, Any] | None = None, request: str = "job") -> JobRecord:
        """Submit a job of ``tasks`` (None: the planner splits ``request``) with a job ``config``."""
        return self.engine.submission.submit(request, dict(config) if config is not None else None, tasks)

    def wait(self, job: JobRecord) -> JobRecord:
        """The job once it ended; fails if it has not within ``wait`` real seconds."""
        done = self.engine.queries.wait(job.id, self.wait_seconds)
        assert done.status.terminal, f"job {job.id} still {done.status.value}"
        return done

    def run(self, tasks: list[str] | None, config: Mapping[str, Any] | None = None, request: str = "job") -> JobRecord:
        """Submit and wait: the ended job."""
        return self.wait(self.submit(tasks, config, request))

    def workers(self, job: JobRecord) -> dict[str, WorkerRecord]:
        """The job's own workers by name, as the engine reports them."""
        _, workers = self.engine.queries.snapshot(job.root_id)
        return {w.name: w for w in workers if w.job_id == job.id}

    def restart(self) -> Engine:
        """The server is killed (kill -9) and a new one starts on the same workspace and machine."""
        self.fake.kill_server()
        engine = self.new_engine()
        self.fake.restart(engine)
        self.engine = engine
        return engine

    def close(self) -> None:
        """Shut every engine of the rig down."""
        for engine in self.engines:
            engine.shutdown(timeout=5)

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@contextlib.contextmanager
def no_processes() -> Iterator[None]:
    """While inside, starting a process (``subprocess.Popen``, ``os.fork``, ``os.posix_spawn``)
    raises AssertionError: the claim "without starting a process" is enforced, not hoped for.
    The machine's sandbox probe (a process, run once per interpreter) runs first, as the first
    engine built would."""

    def refused(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("something tried to start a process inside testing.no_processes()")

    probe()
    names = [name for name in ("fork", "posix_spawn", "posix_spawnp") if hasattr(os, name)]
    saved = subprocess.Popen, {name: getattr(os, name) for name in names}
    subprocess.Popen = refused  # type: ignore[assignment,misc]
    for name in names:
        setattr(os, name, refused)
    try:
        yield
    finally:
        subprocess.Popen = saved[0]  # type: ignore[misc]
        for name, original in saved[1].items():
            setattr(os, name, original)
