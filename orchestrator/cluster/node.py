"""``python -m orchestrator node``: one machine's share of a cluster (``distributed.executor: rq``).

A node checks which worker kinds it really has (their programs on its PATH, from its own
settings), waits for the server's workspace marker and refuses to start unless it sees the
server's workspace at the same path, then runs an RQ ``WorkerPool`` of ``--slots`` workers on the
queues of its kinds. Each RQ job is ``(attempt id, token)`` for attempt.run (attempts.RQ_FUNCTION),
named ``<attempt id>-<token>``: a worker's own dequeue takes it off RQ's queue and claims the
attempt in one round trip (Leases.take), by the attempt's hash, without fetching RQ's job; a
job that names no attempt goes RQ's way, where any function but attempt.run is refused (a job in
Redis never runs arbitrary code). A heartbeat thread
publishes the node (registry.publish) every third of the lease.

Processes die with the node where Linux allows: the pool's workers with the node (PR_SET_PDEATHSIG,
SIGKILL: each sets it in ``NodeWorker.__init__`` and checks its parent after); each attempt with
the worker that runs it (in process: no RQ work horse, see ``NodeWorker``) by its lifeline, a pipe
whose write end that worker alone holds. The attempts are started by the node's own worker
supervisor (process/supervisor.py, its folder a private temporary one, hidden from sandboxed
workers): a vfork or fork of a small process instead of a fork of the ~60 MB worker process per
attempt. For an unconfined attempt the supervisor holds the lifeline itself: it refuses the start if
the lifeline has closed, kills the command's process group once it closes, and the command dies
with the supervisor (PR_SET_PDEATHSIG). A sandboxed attempt's shim holds it (process/shim.py), inside
the sandbox, and its command dies with the shim. The supervisor leaves once no worker process is
connected and no attempt runs, so with the node. A worker's own descendants do not die with it; so
each attempt in flight is a file under
``<workspace>/.cluster/nodes/<host>/<name>.attempts/`` (its tag), beside ``<name>.json`` (the node's
pid and start id), and a node starting on the same host sweeps the tags of every node there whose
process is dead (never a live sibling's), then deletes its files.

A clean stop (SIGTERM, SIGINT) takes no more work, runs the kill ladder on the running attempts
and reports each ended (so the server retries or fails it at once instead of waiting for its
lease), then takes the node out of the registry.

A Redis error in RQ's heartbeats while an attempt runs is logged, not fatal (``NodeWorker``), so
running attempts survive a Redis restart, and the pool restarts any worker that quit while idle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import redis
from rq import Worker
from rq.exceptions import DequeueTimeout, NoSuchJobError, StopRequested
from rq.job import Job
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_pool import WorkerPool

from .. import __version__
from ..config import Settings, load_settings
from ..errors import ConfigError
from ..process.prctl import set_parent_death_signal
from ..process.procscan import machine_memory, process_alive, process_start_id
from ..process.runner import ProcessRunner, sweep_dead_servers
from ..workers.adapters import ADAPTERS, get_adapter
from ..workers.roles import not_installed
from ..workspace.filesystem import atomic_write
from . import attempt, in_flight, registry
from .connect import connect, redacted
from .leases import RQ_FUNCTION, SERIALIZER
from .marker import Marker, check_marker, server_marker
from .names import ID, PROTOCOL_VERSION, Names
from .signing import SpecVerifier, verify_key_path

log = logging.getLogger("orchestrator.node")

MONITOR_INTERVAL = 2  # seconds
JOB_TTL = 3600  # seconds a taken RQ job outlives a worker that died before deleting it (RQ's failure_ttl here)
NODES_DIR = Path(".cluster") / "nodes"  # under the shared workspace: <host>/<name>.json and <name>.attempts/


def kind_problem(settings: Settings, kind: str) -> str:
    """Why this node cannot run ``kind`` ("" when it can)."""
    if kind not in ADAPTERS:
        return f"unknown kind (known: {', '.join(ADAPTERS)})"
    if get_adapter(kind).configured_program(settings) == "":
        return ""  # not set here: the argv comes from the server's setting; a missing program fails that attempt (127)
    return not_installed(settings, kind)


class NodeClaim(TypedDict, total=False):
    """``<name>.json`` in the host's nodes folder: the node that holds the name (its process, by pid
    and start), and its supervisor's folder, for the sweep of a dead node."""

    name: str
    pid: int
    start_id: str | None
    supervisor_dir: str


class NodeOptions(NamedTuple):
    """What the command line and ``distributed`` say this node is: checked before anything starts."""

    url: str
    lease: float
    slots: int
    host: str
    name: str
    prefix: str
    kinds: list[str]  # the wanted kinds that can run here


def node_options(args: argparse.Namespace, settings: Settings) -> NodeOptions:
    """The node's options, each checked (a ConfigError names the flag and the fix); a wanted kind
    that cannot run here is left out with a warning, and none left is an error."""
    d = settings.distributed
    lease = float(args.lease if args.lease is not None else d.lease)
    if lease < 1:
        raise ConfigError(f"--lease {lease} is too short: give 1 second or more", key="--lease")
    slots = args.slots if args.slots is not None else (os.cpu_count() or 1)
    if slots < 1:
        raise ConfigError(f"--slots {slots}: give 1 or more", key="--slots")
    host = socket.gethostname()
    name = args.name or f"{host}-{os.getpid()}"
    if not ID.match(name):
        raise ConfigError(f"--name {name[:60]!r} is not a valid node name (letters, digits, _ . : -)", key="--name")
    prefix = args.prefix or d.queue_prefix
    if not ID.match(prefix):
        raise ConfigError(f"--prefix {prefix[:60]!r} is not a valid prefix (letters, digits, _ . : -)", key="--prefix")
    wanted = [k.strip() for k in args.kinds.split(",") if k.strip()]
    kinds = []
    for kind in wanted:
        problem = kind_problem(settings, kind)
        if problem:
            log.warning("node %s: not taking kind %s: %s", name, kind, problem)
        else:
            kinds.append(kind)
    if not kinds:
        raise ConfigError(
            f"node {name}: none of the kinds {', '.join(wanted) or '(none)'} can run here (see above)", key="--kinds"
        )
    return NodeOptions(args.redis or d.redis_url, lease, slots, host, name, prefix, kinds)


def _server_marker(client: redis.Redis, names: Names, name: str) -> Marker:
    """The server's marker once it is there, refused (ConfigError) when it runs another protocol or
    ``check_marker`` finds it unfit."""
    marker = wait_for_marker(client, names, name)
    if marker.protocol != PROTOCOL_VERSION:
        raise ConfigError(
            f"node {name} (orchestrator {__version__}, protocol {PROTOCOL_VERSION}) is refused by the server "
            f"(orchestrator {marker.version or 'unknown'}, protocol {marker.protocol}): run the same version of "
            "orchestrator on the server and its nodes",
            key="--prefix",
        )
    refused = check_marker(marker)
    if refused:
        raise ConfigError(f"node {name} refuses to start: {refused}", key="--redis")
    return marker


def cmd_node(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    settings = load_settings(args.config)
    url, lease, slots, host, name, prefix, kinds = node_options(args, settings)
    names = Names(prefix)
    client = connect(url, setting="--redis" if args.redis else "distributed.redis_url")
    marker = _server_marker(client, names, name)
    # The server's key, from this node's own config (never from Redis); read once the server has
    # started (it writes the key at its first start).
    verifier = SpecVerifier.from_file(verify_key_path(settings))
    here = Path(marker.workspace) / NODES_DIR / host
    here.mkdir(parents=True, exist_ok=True)
    swept = sweep_dead_nodes(here)
    if swept:
        log.info("node %s: swept what dead nodes on this host left: %s", name, ", ".join(swept))
    # What dead servers (and dead node workers) of this user's left, once here for every worker this
    # node forks: each would sweep at its first attempt otherwise (NodePool.start_worker).
    sweep_dead_servers(for_forks=True)
    supervisor_dir = Path(tempfile.mkdtemp(prefix=f"orchestrator-node-{name}-"))  # this machine's own disk, mode 0700
    own = claim_name(here, name, supervisor_dir)
    seen_dir = Path(tempfile.mkdtemp(prefix=f"orchestrator-node-{name}-seen-"))  # this machine's own disk, mode 0700
    ctx = attempt.NodeContext(
        name=name,
        url=url,
        names=names,
        lease=lease,
        settings=settings,
        attempts_dir=own,
        verifier=verifier,
        seen_dir=seen_dir,
        supervisor_dir=supervisor_dir,
    )
    attempt.set_node(ctx)
    info = registry.NodeInfo(
        name=name,
        host=host,
        pid=os.getpid(),
        kinds=kinds,
        slots=slots,
        started_at=time.time(),
        version=__version__,
        protocol=PROTOCOL_VERSION,
    )
    beat = threading.Thread(target=_heartbeat, args=(client, names, info, lease, own, ctx.stop), name="heartbeat", daemon=True)
    registry.publish(client, names, _refresh(info, own), lease)
    beat.start()
    log.info(
        "node %s: taking %s (%d slots) from %s, prefix %s, workspace %s",
        name,
        ", ".join(kinds),
        slots,
        redacted(url),
        prefix,
        marker.workspace,
    )
    pool = NodePool(
        [names.queue(k) for k in kinds],
        connection=client,
        num_workers=slots,
        worker_class=NodeWorker,
        serializer=SERIALIZER,
        attempts_dir=own,
    )
    try:
        pool.start(logging_level="WARNING")
    finally:
        ctx.stop.set()
        beat.join(5)
        try:
            registry.forget(client, names, name)
        except redis.RedisError as exc:
            log.warning("node %s: could not leave the registry (%s); it expires in %.0f s", name, exc, lease)
        _remove_own(here, name)
        shutil.rmtree(supervisor_dir, ignore_errors=True)  # its supervisor leaves with the last attempt
        shutil.rmtree(seen_dir, ignore_errors=True)
    log.info("node %s: stopped", name)
    return 0


def wait_for_marker(client: redis.Redis, names: Names, name: str) -> Marker:
    """The server's workspace marker, waiting (and saying so once) until a server has written it."""
    said = False
    while True:
        found = server_marker(client, names)
        if found is not None:
            return found
        if not said:
            log.info("node %s: waiting for a server with prefix %s to start (its workspace marker)", name, names.prefix)
            said = True
        time.sleep(0.5)


def claim_name(here: Path, name: str, supervisor_dir: Path | None = None) -> Path:
    """Write ``<name>.json`` (this process, and its supervisor's folder, for the sweep of a dead
    node); refuse a name a live node on this host holds."""
    owner = here / f"{name}.json"
    found = _read(owner)
    if found and found.get("pid") != os.getpid() and process_alive(int(found.get("pid", 0)), found.get("start_id")):
        raise ConfigError(
            f"a node named {name} already runs on this host (pid {found['pid']}): give another --name", key="--name"
        )
    record: NodeClaim = {"name": name, "pid": os.getpid(), "start_id": process_start_id(os.getpid())}
    if supervisor_dir is not None:
        record["supervisor_dir"] = str(supervisor_dir)
    atomic_write(owner, json.dumps(record).encode())
    attempts = here / f"{name}.attempts"
    attempts.mkdir(exist_ok=True)
    return attempts


def sweep_dead_nodes(here: Path) -> list[str]:
    """Kill what the in-flight attempts of this host's dead nodes left (by tag), and forget those
    nodes' files. A tag that a live node runs now (a retry on a sibling) is left alone."""
    dead: list[tuple[Path, Path]] = []
    live_tags: set[str] = set()
    for owner in sorted(here.glob("*.json")):
        found = _read(owner)
        pid = int(found.get("pid", 0)) if found else 0
        attempts = here / f"{owner.stem}.attempts"
        if pid and process_alive(pid, found.get("start_id") if found else None):
            live_tags.update(tag for tag, _ in _in_flight(attempts))
        else:
            dead.append((owner, attempts))
            folder = found.get("supervisor_dir") if found else None
            if isinstance(folder, str) and Path(folder).name.startswith("orchestrator-node-"):
                shutil.rmtree(folder, ignore_errors=True)  # its supervisor left (or leaves) with its last attempt
    runner = ProcessRunner()
    swept = []
    for owner, attempts in dead:
        for tag, since in _in_flight(attempts):
            if tag not in live_tags:
                runner.sweep(tag, since)
                swept.append(tag)
        for path in attempts.glob("*") if attempts.is_dir() else []:
            path.unlink(missing_ok=True)
        if attempts.is_dir():
            attempts.rmdir()
        owner.unlink(missing_ok=True)
    return swept


def _in_flight(attempts: Path) -> list[tuple[str, float]]:
    """(tag, a second before its start) of each attempt in flight in ``attempts`` (a node's folder)."""
    return [(found.tag, found.started_at - 1.0) for found in in_flight.read_all(attempts)]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_own(here: Path, name: str) -> None:
    attempts = here / f"{name}.attempts"
    if attempts.is_dir():
        for path in attempts.glob("*"):
            path.unlink(missing_ok=True)
        attempts.rmdir()
    (here / f"{name}.json").unlink(missing_ok=True)


def _refresh(info: registry.NodeInfo, attempts: Path) -> registry.NodeInfo:
    info.attempts = sorted(found.id for found in in_flight.read_all(attempts))
    info.running = len(info.attempts)
    memory = machine_memory()
    info.memory_total, info.memory_available = memory.total, memory.available
    info.heartbeat_at = time.time()
    return info


def _heartbeat(
    client: redis.Redis, names: Names, info: registry.NodeInfo, lease: float, attempts: Path, stop: threading.Event
) -> None:
    """Publish the node every third of the lease until it stops; a Redis outage is said once."""
    failing = False
    while not stop.wait(lease / 3.0):
        try:
            registry.publish(client, names, _refresh(info, attempts), lease)
        except redis.RedisError as exc:
            if not failing:
                log.warning("node %s: Redis unreachable (%s); running attempts go on, retrying", info.name, exc)
            failing = True
            continue
        if failing:
            log.info("node %s: Redis is back", info.name)
        failing = False


class NodeWorker(Worker):
    """An RQ worker that runs attempt.run only, in its own process (no work horse), dies with its
    node, and lets a Redis outage pass while it runs an attempt.

    RQ's ``Worker`` forks a horse per job (about 15 ms of CPU a job more than running it in
    process, bench/bench_rq_worker.py). The attempt needs none of what the fork protects: the worker
    command already runs in a process of its own (its own group, the tag), dying with this worker
    (by its lifeline), which dies with the node; attempts have no RQ timeout (the
    server's timeout and the lease end them, so there is no death penalty to enforce); a crash of
    attempt.run's Python is an exception RQ records, and a crash of the process (a segfault) is a
    dead worker the pool replaces, its attempt's processes dying with it as a horse's did. What the
    monitoring parent did besides waiting, the worker's heartbeat every ``MONITOR_INTERVAL``, a
    thread does here; the attempt's lease renewals and control stay attempt.run's own. Nor does it
    keep RQ's records of a job's run (its execution, the started registry, its status and result):
    nothing reads them, and the job is deleted at its end (``result_ttl=0``); the attempt's hash
    is the truth (attempts.py), and a node that dies mid-attempt is found by its lease. Nor does
    it use RQ's dequeue (a blocking move, the job's fetch and decoding, its worker state, then the
    claim: four round trips): ``dequeue_job_and_maintain_ttl`` takes and claims in one. While an
    attempt runs it owns SIGTERM (the node's stop: the kill ladder, then its end reported), and the
    pool's SIGINT only asks the worker to stop after it."""

    # An idle worker retries an unreachable Redis with doubling pauses; RQ caps them at 60 s, which
    # would leave a node idle up to a minute after Redis is back.
    max_connection_wait_time = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        parent = os.getppid()
        set_parent_death_signal(signal.SIGKILL)  # this worker (and so its attempt) dies with the node
        if os.getppid() != parent:  # the node died before the line above
            os._exit(1)
        # How often the worker writes RQ's heartbeats while it runs an attempt (RQ: 30 s).
        kwargs.setdefault("job_monitoring_interval", MONITOR_INTERVAL)
        super().__init__(*args, **kwargs)
        self._outage = False
        self._attempting = False
        self._suspension_read: float | None = None  # monotonic time RQ's suspension key was last read
        self._running = threading.Event()  # set while an attempt runs: the heartbeat thread beats
        self._beater: threading.Thread | None = None

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's loop; when it ends (the worker leaves), its attempts' runner goes with it: the spare
        cgroups it kept are removed now, not when another process's runner next looks for a dead one's."""
        try:
            return super().work(*args, **kwargs)
        finally:
            attempt.close_runners()

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's ``rq suspend`` honoured within ``MONITOR_INTERVAL``: RQ reads its key before every
        job (a round trip an attempt); here at most once per interval."""
        read = self._suspension_read
        if read is not None and time.monotonic() - read < MONITOR_INTERVAL:
            return
        super().check_for_suspension(burst)
        self._suspension_read = time.monotonic()

    def _start_scheduler(self, *args: Any, **kwargs: Any) -> None:
        """No RQ scheduler process: attempts are never scheduled for later."""
        return None

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> tuple[Any, Any] | None:
        """A dequeue of our own: one round trip takes the first job off this worker's queues and
        claims its attempt (Leases.take: the attempt's hash says what to run, so RQ's job is
        neither fetched nor decoded); when every queue is empty, a blocking move (RQ's own, onto
        the queue's intermediate list) waits for one, and the same round trip claims it. Returns
        (``_Claimed``, queue) for ``execute_job``; a job that is not an attempt's (Leases.take
        says "rq") goes RQ's own way (fetched as a ``Job``, refused by ``execute_job``)."""
        if max_idle_time is not None:  # not a node's (it never gives one): RQ's own dequeue
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        node = attempt.node()
        ops = attempt.shared_ops(node)
        lists = [(q.key, q.intermediate_queue_key) for q in self._ordered_queues]
        try:  # where the server's terminates for its claims go ("": each attempt reads its own list)
            control = ops.names.worker_control(self.name)
        except ValueError:  # a worker name no Redis key of ours may hold (RQ's pool names them by uuid)
            control = ""
        wait = 1.0
        popped: tuple[str, int] | None = None
        while True:
            try:
                self.heartbeat()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                self._attempting = True  # a stop now waits for the claim's answer (a claimed attempt then runs)
                try:
                    taken = ops.take(self.key, lists, node.name, node.lease, Job.redis_job_namespace_prefix, popped, control)
                finally:
                    self._attempting, popped = False, None
                queue = self._ordered_queues[taken.queue] if taken is not None else None
                if taken is not None and taken.what == "claimed":
                    self._state = WorkerStatus.BUSY  # (the script wrote it to RQ's worker hash)
                    return _Claimed(taken.job_id, *taken.attempt, taken.spec, control), queue
                if taken is not None and taken.what == "rq":
                    found = self._rq_job(taken.job_id, queue)
                    if found is not None:
                        return found, queue
                    continue
                if taken is not None:  # stale: not this token's to run any more
                    log.info("worker %s: RQ job %s is no attempt's to run any more: skipped", self.name, taken.job_id)
                    continue
                self._state = WorkerStatus.IDLE
                if self._stop_requested or timeout is None:  # stopping, or burst mode with nothing left
                    return None
                popped = self._wait_for_job(lists, timeout)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.log.error("Worker %s: could not connect to Redis: %s; retrying in %d seconds", self.name, exc, wait)
                time.sleep(wait)
                wait = min(wait * self.exponential_backoff_factor, self.max_connection_wait_time)
            except (StopRequested, DequeueTimeout):  # RQ's own ways out of a dequeue
                raise
            except Exception:  # whatever Redis holds, the worker goes on serving (it logs what failed)
                log.exception("worker %s: taking a job failed; going on", self.name)
                time.sleep(wait)

    def _wait_for_job(self, lists: list[tuple[str, str]], timeout: int) -> tuple[str, int] | None:
        """Block until a job is pushed on one of the queues (RQ's way: a single queue's job moves
        onto its intermediate list, so a worker killed before its claim leaves it there for RQ's
        maintenance, not nowhere); the job's id and its queue's index, or None at the timeout."""
        if len(lists) == 1 and self.get_redis_server_version() >= (6, 2, 0):
            found = self.connection.blmove(lists[0][0], lists[0][1], timeout)
            return (_text(found), 0) if found is not None else None
        got = self.connection.blpop([key for key, _ in lists], timeout)
        if got is None:
            return None
        key, job = _text(got[0]), _text(got[1])
        return job, [k for k, _ in lists].index(key)

    def _rq_job(self, job_id: str, queue: Any) -> Any:
        """The ``Job`` of a job that is not an attempt's (``execute_job`` refuses it); None when it
        no longer exists."""
        try:
            return self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # no such job, or one RQ cannot read: refused, the worker goes on
            if not isinstance(exc, NoSuchJobError):
                log.error("worker %s: RQ job %s refused: it does not read as a job (%s)", self.name, job_id[:80], exc)
            self.connection.lrem(queue.intermediate_queue_key, 1, job_id)
            return None

    def execute_job(self, job: Any, queue: Any) -> None:
        if isinstance(job, _Claimed):  # taken and claimed by our dequeue
            self._run_claimed(job)
            return
        if job.func_name != RQ_FUNCTION:
            why = f"refused: this node runs {RQ_FUNCTION} only, not {str(job.func_name)[:200]!r}"
            self.log.error("job %s %s", job.id, why)
            execution = self.prepare_execution(job)
            self.handle_job_failure(job, queue=queue, exc_string=why, execution=execution)
            return
        # RQ's own lifecycle around a job (its execution record, the started registry, the job's
        # status and heartbeats, the success bookkeeping, the job's deletion: some 50 commands
        # in some 20 round trips) is bookkeeping nobody reads here: the attempt's hash is the
        # protocol's truth (attempts.py). One round trip takes the job off RQ's intermediate
        # queue and marks this worker busy; one deletes the job after (``result_ttl=0``).
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.expire(job.key, JOB_TTL)  # read by nobody from here on: gone even if this worker dies
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            pipe.execute()
        with self._beating():
            try:
                attempt.run(*job.args)  # in this process's main thread
            except Exception:  # a bug in attempt.run: RQ records it as it did (the failed job registry)
                self.log.exception("job %s failed", job.id)
                execution = self.prepare_execution(job)
                self.handle_job_failure(job, queue=queue, exc_string=traceback.format_exc(), execution=execution)
                return
        try:
            self.connection.delete(job.key)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # its attempt has ended and told so (or will)
            log.warning("worker %s: could not delete RQ job %s (%s)", self.name, job.id, exc)

    def _run_claimed(self, job: _Claimed) -> None:
        with self._beating():
            try:
                attempt.run_claimed(job.attempt_id, job.token, job.spec, job.control)  # in this process's main thread
            except Exception:  # a bug in attempt.run: logged (RQ's job was deleted at the claim)
                self.log.exception("attempt %s (RQ job %s) failed", job.attempt_id, job.id)

    @contextlib.contextmanager
    def _beating(self) -> Iterator[None]:
        """While an attempt runs: RQ's worker heartbeat from the worker's heartbeat thread (started with
        its first attempt and kept: one started and joined per attempt put two thread switches on
        each attempt's way), and a stop waits for the attempt's end (``_attempting``)."""
        self._attempting = True
        self._running.set()
        if self._beater is None:
            self._beater = threading.Thread(target=self._beat, name="rq-heartbeat", daemon=True)
            self._beater.start()
        try:
            yield
        finally:
            self._attempting = False
            self._running.clear()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's worker heartbeat (its key's TTL, minutes) in one round trip instead of three, and
        at most once per ``MONITOR_INTERVAL`` when RQ's loop asks for one (before and after each
        dequeue and after each job: three a job)."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return
        if timeout is None and self.last_heartbeat is not None:
            if (now() - self.last_heartbeat).total_seconds() < MONITOR_INTERVAL:
                return
        with self.connection.pipeline() as pipe:
            super().heartbeat(timeout, pipeline=pipe)
            pipe.execute()

    def _beat(self) -> None:
        """Every ``job_monitoring_interval`` while an attempt runs; idle between attempts."""
        while self._running.wait():
            time.sleep(self.job_monitoring_interval)
            if not self._running.is_set():
                continue
            try:
                self.heartbeat(self.job_monitoring_interval + 60)
            except (redis.ConnectionError, redis.TimeoutError) as exc:  # the attempt goes on
                if not self._outage:
                    log.warning("worker %s: Redis unreachable (%s); its attempt goes on", self.name, exc)
                self._outage = True
            except Exception as exc:  # RQ's bookkeeping only: the attempt goes on whatever it says
                log.debug("worker %s: RQ heartbeat failed (%s)", self.name, exc)
            else:
                self._outage = False

    def request_stop(self, signum: Any, frame: Any) -> None:
        """Stop after the running attempt (warm) without taking SIGTERM from it."""
        if self._attempting:
            self._stop_requested = True
            return
        super().request_stop(signum, frame)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class _Claimed:
    """An attempt ``NodeWorker``'s dequeue claimed with its RQ job (``id``), which it deleted;
    ``spec``: its hash's, unverified (attempt.run_claimed verifies it before anything)."""

    id: str
    attempt_id: str
    token: int
    spec: bytes | None
    control: str = ""  # the worker's control list the claim named (Names.worker_control)


class NodePool(WorkerPool):
    """RQ's pool, whose stop also ends the running attempts (their workers run the kill ladder
    on SIGTERM and report the end) instead of waiting for them, and which clears what a dead worker
    left before it forks its replacement."""

    def __init__(self, *args: Any, attempts_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attempts_dir = attempts_dir
        self._told: set[int] = set()  # workers already asked to end their attempt
        self._started = False  # the first workers forked: any more replace one that died

    def start_workers(self, *args: Any, **kwargs: Any) -> None:
        super().start_workers(*args, **kwargs)
        self._started = True

    def start_worker(self, *args: Any, **kwargs: Any) -> None:
        """A worker forked; one that replaces a dead one after a sweep here of what dead servers and
        workers left (a dead worker's registrations, shared folder, spare cgroups), which the node's
        forked workers do not sweep at their first attempt (``sweep_dead_servers``'s ``for_forks``)."""
        if self._started:
            sweep_dead_servers(for_forks=True)
        super().start_worker(*args, **kwargs)

    def request_stop(self, signum: Any = None, frame: Any = None) -> None:
        if self.status == self.Status.STOPPED:
            return
        log.info("node: stopping (signal %s): taking no more work, ending the running attempts", signum)
        super().request_stop(signum, frame)
        self._end_attempts()

    def all_workers_have_stopped(self) -> bool:
        self._end_attempts()  # one claimed just as the stop came: its worker is told too
        return super().all_workers_have_stopped()

    def _end_attempts(self) -> None:
        """SIGTERM each running attempt's worker (once): it runs the kill ladder and reports the end."""
        for found in in_flight.read_all(self.attempts_dir):
            pid = found.pid
            if pid and pid not in self._told:
                self._told.add(pid)
                try:
                    os.kill(pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
