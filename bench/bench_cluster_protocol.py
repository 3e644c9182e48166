"""The attempt protocol's cost on one Redis (the cluster's "design limits"): how many attempts per
second one Redis carries through the whole protocol, how many lease renewals, and what that
implies for the concurrent attempts one Redis can lease.

    .venv/bin/python bench/bench_cluster_protocol.py [--attempts 2000] [--threads 8] [--renews 3]
        [--renew-seconds 3] [--lease 30] [--aof everysec|always|no] [--json PATH]

A real ``redis-server`` (Debian's package) started by the bench in a temporary folder on a free
127.0.0.1 port, with a password, stopped at the end; nothing else is contacted. ``--aof`` is its
append-only file's fsync policy (``everysec``, what examples/cluster/redis.conf recommends;
``always``, what the tests use; ``no``: no persistence).

One **attempt** is the protocol's whole life, with the calls the server and a node make
(orchestrator/cluster/leases.py), each one round trip: the server's ``new_token`` and
``enqueue`` (the attempt's hash, then RQ's ``enqueue_call`` of ``(id, token)``); RQ's
``dequeue_any`` and the job's deletion (the least a node's RQ worker does; RQ's own Worker adds
its registries and heartbeats on top); the node's ``claim``, ``started``, ``--renews`` renewals
and ``finish``; the server's ``next_events`` (the started and ended events) and ``forget``.

* single client: one thread runs attempts one after the other;
* ``--threads``: that many threads run attempts at once (the server and node sides of each in
  the same thread), while one more thread reads the events, as the server's one reader does;
* renewals: ``--threads`` threads renew the leases of claimed attempts for ``--renew-seconds``;
* memory: Redis's ``used_memory`` grown by 1,000 queued attempts (each one's hash and RQ job).

Besides the client's rate (on a small machine the Python client, not Redis, is the bottleneck)
it measures the redis-server process's own CPU time per attempt and per renewal: Redis runs
commands on one core, so ``1 / CPU per operation`` is what one Redis could carry with a faster
or more numerous client. The implied limits: a node renews each running attempt every third of
``distributed.lease`` (cluster/leases.py), so at ``--lease`` seconds each running attempt costs
``3 / lease`` renewals per second.

It prints ``figure: value unit`` lines. A measurement, not a test: exit 0 whatever the figures
(1 when a check fails: an attempt not ending in state ``ended``, an event missing).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_graph import load_average  # noqa: E402
from orchestrator import protocol  # noqa: E402
from orchestrator.cluster.connect import connect  # noqa: E402
from orchestrator.cluster.leases import SERIALIZER, AttemptSpec, Leases  # noqa: E402
from orchestrator.cluster.names import Names  # noqa: E402

KIND = "command"
NODE = "bench-node"


class CheckFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    """A redis-server of the bench's own on 127.0.0.1 (its start as tests/redisserver.py's)."""

    def __init__(self, folder: Path, aof: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench_cluster_protocol: redis-server is not installed (Debian: apt-get install redis-server)")
        self.folder = folder
        self.password = secrets.token_hex(12)
        self.port = free_port()
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)]
        argv += ["--requirepass", self.password, "--save", "", "--daemonize", "no", "--logfile", str(folder / "redis.log")]
        argv += ["--appendonly", "no"] if aof == "no" else ["--appendonly", "yes", "--appendfsync", aof]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"redis-server exited: {(folder / 'redis.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not listen within 20 s") from None
                time.sleep(0.05)
        self.ps = psutil.Process(self.process.pid)
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        """Seconds of CPU (user + system) redis-server has used so far."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Timed:
    count: int
    wall: float
    redis_cpu: float

    @property
    def rate(self) -> float:
        return self.count / self.wall

    @property
    def cpu_us(self) -> float:
        return self.redis_cpu / self.count * 1e6


def measure(redis: Redis, count: int, run: Callable[[], int | None]) -> Timed:
    connect(redis.url).config_resetstat()
    cpu, start = redis.cpu(), time.perf_counter()
    done = run()
    wall = time.perf_counter() - start
    return Timed(done if done is not None else count, wall, redis.cpu() - cpu)


def commands(redis: Redis, per: int) -> list[tuple[str, float, float]]:
    """(command, calls per ``per``, microseconds per call) since the last reset, by total time:
    Redis's own accounting (INFO commandstats)."""
    stats = connect(redis.url).info("commandstats")
    rows = [(name.removeprefix("cmdstat_"), v["calls"] / per, float(v["usec_per_call"])) for name, v in stats.items()]
    return sorted((r for r in rows if r[0] not in ("config|resetstat", "info")), key=lambda r: -r[1] * r[2])


def spec(ops: Leases, attempt_id: str, lease: float) -> AttemptSpec:
    """A spec the size of a real one (an AI CLI's argv and the protocol's variables)."""
    folder = f"/srv/orchestrator/workspace/job_0123456789ab/depth_0/{attempt_id}"
    env = {name: f"value-of-{name.lower()}" for name in (protocol.JOB_ID, protocol.ROOT_JOB_ID, protocol.WORKER_ID)}
    env.update({protocol.DEPTH: "0", protocol.MAX_RECURSION_DEPTH: "3", protocol.API_URL: "https://orchestrator.internal:8443"})
    return AttemptSpec(
        id=attempt_id,
        token=ops.new_token(),
        kind=KIND,
        tag=f"orch.0123456789ab.{attempt_id}",
        argv=["claude", "-p", "x" * 400, "--output-format", "stream-json", "--verbose"],
        cwd=folder,
        env=env,
        log_path=f"/srv/orchestrator/workspace/job_0123456789ab/logs/depth_0_{attempt_id}.log",
        exit_file=f"/srv/orchestrator/workspace/job_0123456789ab/state/exits/{attempt_id}.1",
        lease=lease,
    )


class Protocol:
    """One client's view: the server's and a node's calls on the same Redis and prefix."""

    def __init__(self, url: str, names: Names, lease: float, renews: int) -> None:
        self.ops = Leases(connect(url), names)
        self.queue = self.ops.queue(KIND)
        self.lease = lease
        self.renews = renews

    def run_attempt(self, attempt_id: str) -> None:
        """Enqueue .. finish: everything but the server's reading of the events."""
        from rq import Queue

        ops = self.ops
        s = spec(ops, attempt_id, self.lease)
        ops.enqueue(s, self.queue)
        found = Queue.dequeue_any([self.queue], None, connection=ops.client, serializer=SERIALIZER)
        if found is None:
            raise CheckFailed(f"{attempt_id}: its RQ job was not in the queue")
        job, _ = found
        job_id, token = job.args
        claimed = ops.claim(job_id, token, NODE, self.lease)
        if claimed is None or AttemptSpec.from_json(claimed).id != job_id:  # with threads, another's job may come first
            raise CheckFailed(f"{job_id}: the claim was refused")
        ops.started(job_id, token, NODE, 4242, "123")
        for _ in range(self.renews):
            if not ops.renew(job_id, token, NODE, self.lease, {"rss": 123456789, "cpu": 1.5}):
                raise CheckFailed(f"{job_id}: a renewal was fenced")
        if not ops.finish(job_id, token, NODE, 0, None):
            raise CheckFailed(f"{job_id}: the finish was fenced")
        job.delete()

    def settle(self, events: list[dict[str, Any]]) -> int:
        """The server's side of the ended events: check the attempt's state, then forget it."""
        ended = 0
        for event in events:
            if event.get("event") == "ended":
                record = self.ops.read(event["id"])
                if not record or record.get("state") != "ended":
                    raise CheckFailed(f"{event['id']}: state {record and record.get('state')!r}, not ended")
                self.ops.forget(event["id"])
                ended += 1
        return ended


def single(url: str, names: Names, args: argparse.Namespace) -> Callable[[], int]:
    client = Protocol(url, names, args.lease, args.renews)
    client.run_attempt("warmup")  # Redis learns the scripts now (EVALSHA's first miss), not in the figures
    client.settle(client.ops.next_events(5))

    def run() -> int:
        for i in range(args.attempts):
            client.run_attempt(f"s{i}")
            events = client.ops.next_events(5)
            while len(events) < 2:  # started, ended: one BLPOP usually takes both
                more = client.ops.next_events(5)
                if not more:
                    raise CheckFailed(f"s{i}: its events did not all arrive")
                events += more
            client.settle(events)
        return args.attempts

    return run


def threaded(url: str, names: Names, args: argparse.Namespace) -> Callable[[], int]:
    clients = [Protocol(url, names, args.lease, args.renews) for _ in range(args.threads)]
    reader = Protocol(url, names, args.lease, args.renews)
    per_thread = args.attempts // args.threads
    total = per_thread * args.threads
    errors: list[BaseException] = []

    def node(n: int) -> None:
        try:
            for i in range(per_thread):
                clients[n].run_attempt(f"t{n}.{i}")
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    def run() -> int:
        threads = [threading.Thread(target=node, args=(n,), daemon=True) for n in range(args.threads)]
        for thread in threads:
            thread.start()
        ended = 0
        deadline = time.monotonic() + max(60.0, total * 0.05)
        while ended < total:
            if errors:
                raise CheckFailed(f"a thread failed: {errors[0]}")
            if time.monotonic() > deadline:
                raise CheckFailed(f"only {ended} of {total} ended events arrived")
            ended += reader.settle(reader.ops.next_events(1))
        for thread in threads:
            thread.join()
        return total

    return run


def renewals(url: str, names: Names, args: argparse.Namespace) -> Callable[[], int]:
    clients = [Protocol(url, names, args.lease, args.renews) for _ in range(args.threads)]
    held: list[list[AttemptSpec]] = []
    for n, client in enumerate(clients):  # each thread renews 16 claimed attempts in turn
        mine = []
        for i in range(16):
            s = spec(client.ops, f"r{n}.{i}", args.lease)
            client.ops.record(s)
            if client.ops.claim(s.id, s.token, NODE, args.lease) is None:
                raise CheckFailed(f"{s.id}: the claim was refused")
            mine.append(s)
        held.append(mine)
    counts = [0] * args.threads

    def node(n: int, stop: float) -> None:
        ops, mine = clients[n].ops, held[n]
        while time.perf_counter() < stop:
            for s in mine:
                if not ops.renew(s.id, s.token, NODE, args.lease, {"rss": 123456789, "cpu": 1.5}):
                    raise CheckFailed(f"{s.id}: a renewal was fenced")
            counts[n] += len(mine)

    def run() -> int:
        stop = time.perf_counter() + args.renew_seconds
        threads = [threading.Thread(target=node, args=(n, stop), daemon=True) for n in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.renew_seconds + 30)
        return sum(counts)

    return run


def memory_per_queued(url: str, names: Names, args: argparse.Namespace, count: int = 1000) -> float:
    """Bytes of Redis memory one queued attempt holds (its hash and its RQ job), from INFO memory."""
    client = Protocol(url, names, args.lease, args.renews)
    before = int(client.ops.client.info("memory")["used_memory"])
    for i in range(count):
        client.ops.enqueue(spec(client.ops, f"m{i}", args.lease), client.queue)
    used = int(client.ops.client.info("memory")["used_memory"]) - before
    client.queue.empty()
    for i in range(count):
        client.ops.forget(f"m{i}")
    return used / count


def figure(name: str, value: float, unit: str, figures: dict[str, Any]) -> None:
    figures[name] = {"value": round(value, 3), "unit": unit}
    shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    print(f"{name}: {shown} {unit}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=2000, help="attempts per measurement (default 2000)")
    parser.add_argument("--threads", type=int, default=8, help="client threads at once (default 8)")
    parser.add_argument("--renews", type=int, default=3, help="lease renewals per attempt (default 3)")
    parser.add_argument("--renew-seconds", type=float, default=3.0, help="how long the renewal measurement runs (default 3)")
    parser.add_argument("--lease", type=float, default=30.0, help="distributed.lease for the implied limits (default 30)")
    parser.add_argument(
        "--aof", choices=("everysec", "always", "no"), default="everysec", help="Redis's appendfsync (default everysec)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.attempts < args.threads or args.threads < 1 or args.renews < 0:
        parser.error("--attempts must be at least --threads, --threads at least 1, --renews not negative")

    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    redis = Redis(folder, args.aof)
    figures: dict[str, Any] = {}
    try:
        print(f"bench_cluster_protocol: {redis.version.split(' sha=')[0]}, appendonly {args.aof}, 127.0.0.1:{redis.port}")
        print(f"machine: nproc={os.cpu_count()}, load average {load_average()}; {args.renews} renewals per attempt", flush=True)
        prefix = f"bench{secrets.token_hex(3)}"
        one = measure(redis, args.attempts, single(redis.url, Names(prefix + "a"), args))
        one_commands = commands(redis, one.count)
        many = measure(redis, args.attempts, threaded(redis.url, Names(prefix + "b"), args))
        renew = measure(redis, 0, renewals(redis.url, Names(prefix + "c"), args))
        figure("attempts per second, single client", one.rate, "attempts/s", figures)
        figure(f"attempts per second, {args.threads} threads", many.rate, "attempts/s", figures)
        figure("attempt latency, single client", one.wall / one.count * 1000, "ms", figures)
        figure("redis-server CPU per attempt", statistics.fmean([one.cpu_us, many.cpu_us]), "us", figures)
        print("redis commands per attempt (single client), by Redis's time in them (INFO commandstats):")
        for name, calls, usec in one_commands[:8]:
            print(f"  {name:<20} {calls:5.2f} calls  {usec:7.2f} us per call")
        figures["commands per attempt"] = {name: [round(calls, 2), usec] for name, calls, usec in one_commands}
        figure("redis commands per attempt", sum(c for _, c, _ in one_commands), "calls", figures)
        figure("redis time inside commands per attempt", sum(c * u for _, c, u in one_commands), "us", figures)
        figure(f"renewals per second, {args.threads} threads", renew.rate, "renewals/s", figures)
        figure("redis-server CPU per renewal", renew.cpu_us, "us", figures)
        cpu_attempt = statistics.fmean([one.cpu_us, many.cpu_us]) / 1e6
        per_attempt = 3.0 / args.lease  # renewals per second of one running attempt
        figure("redis memory per queued attempt", memory_per_queued(redis.url, Names(prefix + "d"), args), "bytes", figures)
        print(f"implied limits at distributed.lease={args.lease:g} s (a renewal every {args.lease / 3:g} s per running attempt):")
        figure("  concurrent attempts leased, at the measured renewal rate", renew.rate / per_attempt, "attempts", figures)
        figure(
            "  concurrent attempts leased, one Redis core saturated",
            1.0 / (renew.cpu_us / 1e6) / per_attempt,
            "attempts",
            figures,
        )
        figure("  attempts started and ended per second, one Redis core saturated", 1.0 / cpu_attempt, "attempts/s", figures)
        print(
            f"RSS of redis-server at the end: {redis.ps.memory_info().rss / 2**20:.1f} MiB; load average after: {load_average()}"
        )
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "figures": figures}, indent=2))
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}", flush=True)
        return 1
    finally:
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
