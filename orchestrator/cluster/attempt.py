"""What a node runs for one attempt: ``run(attempt_id, token)`` (attempts.RQ_FUNCTION), called by
RQ in the main thread of a node's worker process (cluster/node.py: NodeWorker forks no horse),
with only the attempt's id and fencing token.

It claims the attempt (its lease starts), verifies the spec the attempt's hash holds (signed by the
server, checked with the key the node's own config names: cluster/signing.py; a spec that fails is
refused, logged and reported ended ``REFUSED_CODE`` with the reason, and nothing of it runs), starts the worker with the same runner as a single
server (process/runner.py: the shim, its own process group, the exit file, and the tag of this run,
``AttemptSpec.run_tag``), tells the server it started, then until it ends: takes the server's
control messages (terminate: the kill ladder; read by one thread a node worker keeps, ``Controls``,
for the attempts its dequeue claims, or by a thread of the attempt's own for one ``run`` claims),
and every third of the lease renews the lease with a sample of the worker's process tree (the
server enforces the memory and process caps from it). A renewal that is refused (the attempt was
fenced: lost, cancelled or re-enqueued) or a Redis unreachable for longer than the lease ends the
worker: its result would be ignored anyway. At the end it sweeps its run's tag and reports the status
(retrying Redis for up to two leases; the exit file on the shared workspace stays the truth); the
report comes before the sweep when the run's cgroup already holds no task (``_run``).

The worker's environment is built from the NODE's settings (``workers.inherit_env`` etc.: its own
CLI credentials, never the server's), the spec's protocol variables, the secret file's API key,
and this node's own PATH, PYTHONPATH and interpreter.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import redis

from .. import protocol
from ..config import Settings
from ..process import supervisor
from ..process.backends import probe
from ..process.cgroups import Limits
from ..process.executor import LocalExecutor, Sample
from ..process.runner import CommandNotFound, ProcessHandle, ProcessRunner, Wakeup
from ..process.sandbox import SandboxSpec
from ..process.supervisor import SupervisorClient, SupervisorError
from ..workers.environment import add_helpers, base_env
from . import in_flight
from .connect import DRIVER, SOCKET_TIMEOUT
from .leases import NODE_OWN, AttemptSpec, ControlAction, Leases
from .names import Names
from .secret_file import read_secret_file
from .signing import REFUSED_CODE, Refused, SpecVerifier

log = logging.getLogger("orchestrator.node")

T = TypeVar("T")
CONTROL_WAIT = 1.0  # seconds one BLPOP on an attempt's control list blocks (its control thread's loop)
# Seconds one BLPOP on a node worker's control list blocks (Controls' kept thread; below the client's
# socket timeout): a push wakes it at once, so this bounds only how soon a dropped connection is seen.
WORKER_CONTROL_WAIT = 5.0


@dataclass
class NodeContext:
    """What ``run`` needs of the node that runs it; set by node.py before its pool forks."""

    name: str
    url: str  # carries the password: kept in memory only, never logged
    names: Names
    lease: float
    settings: Settings
    attempts_dir: Path  # its processes' attempts in flight (cluster/in_flight.py): what a node that finds it dead sweeps
    verifier: SpecVerifier  # the server's public key, from the node's own config: only what it signed runs
    # A private folder of this node's (not on the shared workspace): one name per attempt and token
    # it has taken (``_taken``), so a signed spec put back in Redis is not run twice here.
    seen_dir: Path
    stop: threading.Event = field(default_factory=threading.Event)
    # The folder of the node's own worker supervisor (process/supervisor.py), which starts its
    # attempts' shims without a fork of the RQ worker's process (None: each worker forks its own).
    supervisor_dir: Path | None = None


_node: NodeContext | None = None


def set_node(context: NodeContext | None) -> None:
    global _node
    _node = context


def node() -> NodeContext:
    if _node is None:
        raise RuntimeError(f"{__name__}.run is run by `python -m orchestrator node`, not by a bare RQ worker")
    return _node


def client_for(url: str) -> redis.Redis:
    """A node worker's client (``shared_ops``), telling Redis its version as ``connect`` does: left
    to redis-py, each new connection read the package's metadata for it (5-6 ms of CPU the first
    time in a process, about 1 ms after: 6-7 ms for the two a node worker opens)."""
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=5.0, health_check_interval=30, driver_info=DRIVER
    )


_shared: dict[tuple[int, str], Leases] = {}
_shared_lock = threading.Lock()


def shared_ops(ctx: NodeContext) -> Leases:
    """This process's protocol client for the node's Redis: one connection pool for the attempt's
    main thread and its control thread (whose blocking read takes a connection of its own from
    it) instead of a client each, and the scripts registered once; it stays open and authenticated
    from one attempt to the next. Keyed by pid: a forked process starts its own (redis-py also
    resets a pool inherited across a fork)."""
    key = (os.getpid(), ctx.url)
    with _shared_lock:
        found = _shared.get(key)
        if found is None or found.names != ctx.names:
            found = _shared[key] = Leases(client_for(ctx.url), ctx.names)
        return found


_supervisors: dict[tuple[int, Path], SupervisorClient] = {}


def supervisor_for(ctx: NodeContext) -> SupervisorClient | None:
    """This process's client of the node's supervisor (one connection kept from one attempt to the
    next), or None where the node has none or the platform cannot pass descriptors."""
    if ctx.supervisor_dir is None or not supervisor.supported():
        return None
    key = (os.getpid(), ctx.supervisor_dir)
    with _shared_lock:
        found = _supervisors.get(key)
        if found is None:
            found = _supervisors[key] = SupervisorClient(ctx.supervisor_dir)
        return found


_runners: dict[tuple[int, Path | None], ProcessRunner] = {}


def runner_for(ctx: NodeContext, *, supervised: bool = True) -> ProcessRunner:
    """This process's runner for its attempts (one at a time): kept from one attempt to the next,
    so an ended attempt's cgroup is the next one's (cgroups.Confined's spares: a rename, not a
    mkdir and its limits written per hierarchy) and the spares of dead processes are looked for
    once, not at each start. ``supervised``: started by the node's supervisor (else by a fork of
    this process: the fallback when that supervisor fails). A runner made per attempt kept its
    spare in a runner nobody used again: a cgroup left per attempt until the process died."""
    key = (os.getpid(), ctx.supervisor_dir if supervised else None)
    client = supervisor_for(ctx) if supervised else None
    with _shared_lock:
        found = _runners.get(key)
        if found is None:
            found = _runners[key] = ProcessRunner(sweep_gather=0.0, supervisor=client)
        return found


def close_runners() -> None:
    """This process's runners let go (their spare cgroups removed, the supervisor's connection
    closed): a node's worker leaving."""
    with _shared_lock:
        mine = [key for key in _runners if key[0] == os.getpid()]
        runners = [_runners.pop(key) for key in mine]
    for runner in runners:
        runner.close()


class Controls:
    """The server's control messages for the attempts one node worker claims (``Leases.take``
    with ``Names.worker_control``): one thread kept from one attempt to the next, blocked on the
    worker's control list, hands each terminate to the attempt it names while that attempt runs.
    A thread and a blocking read of its own per attempt (``_take_control``) cost a node about 0.6
    ms of CPU an attempt; a kept thread reading the attempt's own list would read the last
    attempt's list until its read timed out, so a terminate could wait. Here the server pushes to
    the list the claim named (``_TERMINATE``), and the claim moves there what came before it, so
    a terminate reaches the running attempt as soon as it is pushed, whenever that is.

    The worker runs one attempt at a time, and only attempts it claimed reach its list, so a
    message for no registered attempt is either for the one about to be registered (its claim
    moved it and the thread read it first: kept for ``register``) or for one that has ended
    (dropped at the next ``register``)."""

    def __init__(self, ops: Leases, key: str, grace: float) -> None:
        self.ops = ops
        self.key = key
        self.grace = grace  # a terminate's grace when its message names none (the node's kill_grace)
        self._lock = threading.Lock()
        self._current: dict[tuple[str, int], _Stop] = {}
        self._early: list[dict[str, object]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="control", daemon=True)
        self._thread.start()

    def register(self, attempt_id: str, token: int, stop: _Stop) -> None:
        """From here to ``unregister``, a terminate for this attempt and token requests ``stop``."""
        with self._lock:
            self._current = {(attempt_id, token): stop}
            early, self._early = [m for m in self._early if _names(m) == (attempt_id, token)], []
        for message in early:
            _obey(message, stop, self.grace)

    def unregister(self, attempt_id: str, token: int) -> None:
        with self._lock:
            self._current.pop((attempt_id, token), None)

    def close(self) -> None:
        """The thread stops after its read in course (a node worker's lives as long as it does)."""
        self._closed.set()

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                message = self.ops.next_control_on(self.key, WORKER_CONTROL_WAIT)
                if message:
                    self._deliver(message)
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(CONTROL_WAIT)
            except Exception:  # whatever the list holds, the thread goes on reading it
                log.exception("the control list %s could not be read; reading it again", self.key)
                time.sleep(CONTROL_WAIT)

    def _deliver(self, message: dict[str, object]) -> None:
        with self._lock:
            stop = self._current.get(_names(message))
            if stop is None:  # for the attempt about to be registered, or for one that has ended
                self._early = [*self._early[-15:], message]
        if stop is not None:
            _obey(message, stop, self.grace)


def _names(message: dict[str, object]) -> tuple[str, int]:
    """(attempt id, token) a control message is for."""
    try:
        return str(message.get("id")), int(message.get("token", -1))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "", -1


def _obey(message: dict[str, object], stop: _Stop, grace: float) -> None:
    """A terminate requests the attempt's stop (its kill ladder); anything else is ignored."""
    if message.get("action") != ControlAction.TERMINATE:
        return
    try:
        signum = int(message.get("signal") or signal.SIGTERM)  # type: ignore[call-overload]
        grace = float(message.get("grace", grace))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        signum = signal.SIGTERM
    stop.request(ControlAction.TERMINATE, signum, grace)


_controls: dict[tuple[int, str], Controls] = {}


def controls_for(ctx: NodeContext, key: str) -> Controls:
    """This process's reader of node worker list ``key`` (started with its first attempt, kept)."""
    ident = (os.getpid(), key)
    ops = shared_ops(ctx)  # (takes the lock itself)
    with _shared_lock:
        found = _controls.get(ident)
        if found is None:
            found = _controls[ident] = Controls(ops, key, ctx.settings.workers.kill_grace)
        return found


def worker_env(settings: Settings, spec: AttemptSpec, secret: dict[str, str], redis_url: str = "") -> dict[str, str]:
    """The worker's environment on this node: the node's base (its settings, its credentials),
    the spec's protocol variables and the secret ones, and this node's own paths. Never the
    node's way into Redis (whoever holds it reaches every node's queue): no ``REDIS*`` variable,
    and no variable holding the password of ``redis_url`` (the node's own)."""
    env = base_env(settings)
    password = urlsplit(redis_url).password if redis_url else None
    for name in [n for n, v in env.items() if n.upper().startswith("REDIS") or (password and password in v)]:
        del env[name]
    env.update({k: v for k, v in spec.env.items() if k not in NODE_OWN})
    env.update({k: v for k, v in secret.items() if k == protocol.API_KEY})
    add_helpers(env)
    return env


@dataclass
class _Sampled:
    tag: str
    started_at: float
    shim_pid: int | None
    pid: int | None


class _Stop:
    """Why the worker is being ended early, and how (first signal, grace); set from the control
    thread, a fenced renewal or the node's SIGTERM, read by the attempt's main loop."""

    def __init__(self, wake: Wakeup) -> None:
        self.wake = wake
        self.lock = threading.Lock()
        self.reason: str | None = None
        self.signal: int = signal.SIGTERM
        self.grace = 5.0
        self.report = True  # False: fenced, nobody wants its result

    def request(self, reason: str, signum: int, grace: float, *, report: bool = True) -> None:
        with self.lock:
            if self.reason is None:
                self.reason, self.signal, self.grace, self.report = reason, signum, grace, report
        self.wake.set()


def run(attempt_id: str, token: int) -> int | None:
    """Run one attempt to its end on this node; its status (None: not ours to run any more).

    From here to the end a SIGTERM (the node stopping, node.NodePool) asks this attempt to end by
    the kill ladder and report (before the spawn too: it is then ended as soon as it starts)."""
    return _attempt(attempt_id, token, None)


def run_claimed(attempt_id: str, token: int, raw: bytes | None, control: str = "") -> int | None:
    """``run`` for an attempt this node has already claimed, in the same round trip as it took
    its job off the queue (node.NodeWorker: Leases.take); ``raw``: its hash's spec, unverified;
    ``control``: the node worker's control list the claim named (its terminates come there)."""
    return _attempt(attempt_id, token, raw, claimed=True, control=control)


def _attempt(attempt_id: str, token: int, raw: bytes | None, *, claimed: bool = False, control: str = "") -> int | None:
    ctx = node()
    ops = shared_ops(ctx)
    wake = Wakeup()
    stop = _Stop(wake)
    controls = controls_for(ctx, control) if control else None
    if controls is not None:  # before anything: a terminate sent now ends it as soon as it starts
        controls.register(attempt_id, int(token), stop)
    grace = ctx.settings.workers.kill_grace
    previous = signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=stop.request, args=("node stopping", signal.SIGTERM, grace)).start()
    )
    try:
        if not claimed:
            raw = _retry(lambda: ops.claim(attempt_id, int(token), ctx.name, ctx.lease), ctx.lease)
            if raw is None:
                log.info("attempt %s (token %s) is not ours to run any more: skipped", attempt_id, token)
                return None
        try:
            spec = verified(ctx, raw, attempt_id, int(token))
        except Refused as exc:
            return _refuse(ctx, ops, attempt_id, int(token), str(exc))
        in_flight.begin(ctx.attempts_dir, attempt_id, spec.run_tag)  # worthless after a machine crash: no fsync
        try:
            return _run(ctx, ops, spec, stop, wake, control)
        finally:
            in_flight.end(ctx.attempts_dir)
    finally:
        if controls is not None:
            controls.unregister(attempt_id, int(token))
        signal.signal(signal.SIGTERM, previous)
        wake.close()  # a control thread still reading sees ``done`` at its next read (it is a daemon)


def verified(ctx: NodeContext, raw: bytes | None, attempt_id: str, token: int) -> AttemptSpec:
    """The attempt's spec if the server signed it for this attempt and token, and this node has
    not taken that attempt and token before; else :class:`Refused`."""
    spec = ctx.verifier.verify(raw, attempt_id, token)
    try:
        _taken(ctx.seen_dir, f"{attempt_id}-{token}")
    except FileExistsError:
        raise Refused(f"attempt {attempt_id} token {token} already ran on this node (a replay)") from None
    return spec


_seen_file: Path | None = None  # this process's file in its node's seen folder, which each taken name links to


def _taken(seen: Path, name: str) -> None:
    """``name`` marked taken in the node's folder ``seen``, by every process of the node at once: a hard
    link to one empty file there, made by the kernel only where no such name is (FileExistsError: it
    was taken before), as an exclusive creation would be, without an inode per attempt (on ext4
    without a journal a new one steps over every inode deleted in the last minutes: 0.2 ms here then,
    where a link costs 0.01). A file holding as many links as the file system allows is followed by
    another (EMLINK: 65,000 on ext4)."""
    global _seen_file
    while True:
        if _seen_file is None or _seen_file.parent != seen:
            _seen_file = seen / f".taken-{os.getpid()}-{os.urandom(4).hex()}"
            os.close(os.open(_seen_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        try:
            os.link(_seen_file, seen / name)
            return
        except OSError as exc:
            if exc.errno not in (errno.EMLINK, errno.ENOENT):  # (full of links, or removed: another file)
                raise
            _seen_file = None


def _refuse(ctx: NodeContext, ops: Leases, attempt_id: str, token: int, reason: str) -> int:
    """Run nothing of it: log why on this node and report it ended ``REFUSED_CODE`` with the reason
    (the server fails the attempt with it; an attempt nobody enqueued ends where it was written)."""
    note = f"refused by node {ctx.name}: {reason}"
    log.error("attempt %s (token %s) %s", attempt_id[:80], token, note)
    try:
        ops.finish(attempt_id, token, ctx.name, REFUSED_CODE, None, note)
    except (redis.RedisError, ValueError) as exc:
        log.warning("attempt %s: could not report its refusal (%s)", attempt_id[:80], exc)
    return REFUSED_CODE


def _run(ctx: NodeContext, ops: Leases, spec: AttemptSpec, stop: _Stop, wake: Wakeup, control: str = "") -> int | None:
    # One attempt per process at a time: its end's tag sweep has nobody to share a /proc scan
    # with, so it does not wait for company (the engine's runner waits SWEEP_GATHER). The shim is
    # started by the node's supervisor (a vfork of a small process, not a fork of this large one),
    # tied to this process by its lifeline; should the supervisor fail, by a fork of this one.
    runner = runner_for(ctx)
    secret = read_secret_file(spec.secret_env_file)
    log_path = Path(spec.log_path)
    exit_file = Path(spec.exit_file) if spec.exit_file else None
    w = ctx.settings.workers

    def spawn(runner: ProcessRunner) -> ProcessHandle:
        sandbox = None if spec.sandbox is None else SandboxSpec.from_dict(spec.sandbox, probe())
        if sandbox is not None and ctx.supervisor_dir is not None:  # its socket starts processes unconfined
            sandbox = replace(sandbox, hidden=(*sandbox.hidden, str(ctx.supervisor_dir)))
        return runner.spawn(
            list(spec.argv),
            cwd=Path(spec.cwd),
            env=worker_env(ctx.settings, spec, secret, ctx.url),
            log_path=log_path,
            tag=spec.run_tag,
            exit_file=exit_file,
            parent_death_signal=signal.SIGKILL,
            sandbox=sandbox,
            limits=Limits.from_mb(w.max_memory_mb, w.max_processes, w.max_log_mb, w.max_disk_mb),  # the node's own caps
        )

    try:
        try:
            handle = spawn(runner)
        except SupervisorError as exc:
            log.warning("attempt %s: the node's worker supervisor failed (%s): starting it directly", spec.id, exc)
            runner = runner_for(ctx, supervised=False)
            handle = spawn(runner)
    except (CommandNotFound, OSError, ValueError) as exc:
        code = 127 if isinstance(exc, CommandNotFound) else 126
        note = f"could not start the worker on node {ctx.name}: {exc.strerror if isinstance(exc, OSError) else exc}"
        _append(log_path, f"===== {note} =====\n")
        _report(ops, spec, ctx, code, None, note)
        return code
    grace = ctx.settings.workers.kill_grace
    try:
        if not _retry(
            lambda: ops.started(spec.id, spec.token, ctx.name, handle.pid, handle.start_id, handle.started_at), spec.lease
        ):
            stop.request("fenced", signal.SIGTERM, grace, report=False)  # re-enqueued since the claim
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # the renewals end it if Redis stays away for a lease
    done = threading.Event()
    if not control:  # else the node worker's kept thread reads its list (Controls)
        thread = threading.Thread(target=_take_control, args=(ctx, spec, stop, done), name=f"control-{spec.id}", daemon=True)
        thread.start()
    try:
        code = _watch(runner, handle, ops, ctx, spec, stop, wake, control)
    finally:
        done.set()
    exited_at = time.time()  # its end as this node saw it (the server records it: _report)
    cap = handle.cap_hit  # read before the sweep removes its cgroup
    # Its end is told once nothing of it runs: after the sweep, or before it where its cgroup
    # proves that already (the sweep then only removes the cgroup, off the server's way: the
    # server frees the worker's slot when it hears the end, as the local engine frees it before its sweep).
    gone = runner.tree_gone(spec.run_tag)
    if not gone:
        _sweep(runner, handle, spec)
    if not stop.report:
        log.info("attempt %s was fenced (lost, cancelled or re-enqueued): ended, result not reported", spec.id)
    else:
        note = stop.reason if stop.reason and stop.reason != ControlAction.TERMINATE else ""
        _report(ops, spec, ctx, code, handle.kill_rung, note, cap, exited_at)
    if gone:
        _sweep(runner, handle, spec)
    return code


def _sweep(runner: ProcessRunner, handle: ProcessHandle, spec: AttemptSpec) -> None:
    runner.sweep(spec.run_tag, handle.started_at)  # this run's processes, never another run's
    runner.release(handle)


def _watch(
    runner: ProcessRunner,
    handle: ProcessHandle,
    ops: Leases,
    ctx: NodeContext,
    spec: AttemptSpec,
    stop: _Stop,
    wake: Wakeup,
    control: str = "",
) -> int:
    """Wait for the worker, renewing the lease every third of it; run the kill ladder when asked."""
    sampler = LocalExecutor(runner)
    every = max(spec.lease / 3.0, 0.2)
    last_ok = time.monotonic()
    # The claim took this node's lease; the first renewal comes within a third of the shorter one.
    next_renew = time.monotonic() + max(min(spec.lease, ctx.lease) / 3.0, 0.2)
    while True:
        code = runner.wait(handle, max(0.0, next_renew - time.monotonic()), wake)
        if code is not None:
            return code
        if stop.reason is not None:
            runner.terminate(handle, grace=stop.grace, first_signal=stop.signal)
            return _code(handle)
        if time.monotonic() < next_renew:
            continue
        next_renew = time.monotonic() + every
        sample = sampler.sample([_Sampled(spec.run_tag, handle.started_at, handle.shim_pid, handle.pid)]).get(spec.run_tag)
        reading = sample_reading(sample) if sample else {}
        try:
            renewed = ops.renew(spec.id, spec.token, ctx.name, spec.lease, reading, handle.pid, control)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() - last_ok > spec.lease:
                log.warning("attempt %s: Redis unreachable for over a lease (%s): ending it", spec.id, exc)
                stop.request("Redis unreachable for longer than the lease", signal.SIGTERM, ctx.settings.workers.kill_grace)
            continue
        last_ok = time.monotonic()
        if not renewed:
            stop.request("fenced", signal.SIGTERM, ctx.settings.workers.kill_grace, report=False)


def sample_reading(sample: Sample) -> dict[str, object]:
    """What a renewal tells the server of the worker's tree (its caps are judged there)."""
    reading: dict[str, object] = {"rss": sample.rss, "processes": sample.processes, "cpu_seconds": sample.cpu_seconds}
    reading.update(oom_kills=sample.oom_kills, forks_refused=sample.forks_refused)
    if sample.enforced is not None:
        reading["enforced"] = sample.enforced.to_dict()
    return reading


def _take_control(ctx: NodeContext, spec: AttemptSpec, stop: _Stop, done: threading.Event) -> None:
    """The control thread: the server's terminate requests for this attempt (its own client:
    a blocking read must not hold the renewals' connection: the shared pool gives it another)."""
    ops = shared_ops(ctx)
    while not done.is_set() and stop.reason is None:
        try:
            message = ops.next_control(spec.id, CONTROL_WAIT)
        except (redis.ConnectionError, redis.TimeoutError):
            done.wait(CONTROL_WAIT)
            continue
        if message and _names(message)[1] == spec.token:
            _obey(message, stop, ctx.settings.workers.kill_grace)


def _code(handle: ProcessHandle) -> int:
    code = handle.poll()
    return -signal.SIGKILL if code is None else code


def _report(
    ops: Leases,
    spec: AttemptSpec,
    ctx: NodeContext,
    code: int,
    rung: str | None,
    note: str,
    cap: str | None = None,
    exited_at: float | None = None,
) -> None:
    try:
        if not _retry(lambda: ops.finish(spec.id, spec.token, ctx.name, code, rung, note, cap, exited_at), 2 * spec.lease):
            log.info("attempt %s: its end was not recorded (fenced: a late result)", spec.id)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("attempt %s: could not report its end (%s); its exit file holds the status", spec.id, exc)


def _retry(call: Callable[[], T], within: float) -> T:
    """``call`` again with backoff while Redis is unreachable, for up to ``within`` seconds."""
    deadline = time.monotonic() + within
    pause = 0.1
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def _append(path: Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line)
    except OSError:
        pass


__all__ = ["Controls", "NodeContext", "node", "run", "set_node", "worker_env"]
