"""Webhook benchmark: delivery latency on loopback, and the engine's throughput with a
receiver that hangs against no webhooks, in one run.

    .venv/bin/python bench/bench_webhooks.py [--events 200] [--workers 200] [--concurrency 16] [--repeat 3] [--json PATH]

Latency: a real Engine (worker kind ``command`` running ``true``, ``isolation: folder``) with one
endpoint subscribed to ``*`` on a threaded ``http.server`` on 127.0.0.1 that answers 200 at once.
Jobs of one task run one after another until ``--events`` deliveries have arrived (each job makes
two: job.started, job.completed). A delivery's latency is its arrival at the receiver (the
handler's first line, ``time.time()``) minus its event's ``time`` (the payload's: when the engine
published the event): the sink's derivation and outbox file under the engine's lock, the lane's
wake-up, signing and the HTTP request. The target: p99 <= 50 ms.

Throughput: one job of ``--workers`` workers running ``false`` (each ends failed with
``max_retries: 0``, so each one makes a worker.failed delivery: the most the sink is asked to
do), ``--concurrency`` at a time, wall time from ``Submission.submit`` until ``Queries.wait`` returns it
terminal. Three ways, alternating in each round: no webhooks; every event to a receiver that
accepts the connection and never answers (``timeout`` 30 s: its lane is stuck on the first
delivery for the whole round, the rest pile up in the outbox); and a receiver that answers at
once. The target: the hanging receiver's wall within noise of no webhooks (the median ratio
near 1.0).

A measurement, not a test: exit 0 whatever the figures (1 only when a check fails: a job not
ending as expected, a delivery missing or badly signed). Workspaces are temp folders, removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_graph import load_average  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"
TARGET_P99 = 0.050


class CheckFailed(Exception):
    pass


@dataclass
class Receiver:
    """A loopback receiver: records (arrival, payload) and checks each signature."""

    arrivals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    bad: int = 0

    def start(self) -> ThreadingHTTPServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as most receivers

            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers[TIMESTAMP_HEADER]
                if self.headers[SIGNATURE_HEADER] != sign(SECRET, stamp, body):
                    outer.bad += 1
                outer.arrivals.append((arrived, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def hanging_listener() -> tuple[socket.socket, str]:
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


def make_engine(folder: Path, concurrency: int, url: str | None, command: str, timeout: float = 10.0) -> Engine:
    endpoints = [{"url": url, "events": ["*"], "secret": SECRET, "timeout": timeout}] if url else []
    settings = load_settings(
        base_dir=folder,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": [command], "planner": "heuristic", "max_tasks": 10_000},
            "workers": {"max_workers": concurrency, "max_retries": 0, "global_max_workers": concurrency},
            "recursion": {"max_workers_per_root": 10_000},
            "git": {"isolation": "folder"},
            "webhooks": {"endpoints": endpoints, "max_attempts": 3},
        },
    )
    return Engine(settings)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))
    return ordered[min(len(ordered), rank) - 1]


def measure_latency(events: int, folders: list[Path]) -> list[float]:
    receiver = Receiver()
    server = receiver.start()
    folder = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    folders.append(folder)
    engine = make_engine(folder, 4, f"http://127.0.0.1:{server.server_port}/hook", "true")
    try:
        while len(receiver.arrivals) < events:
            job = engine.submission.submit("latency", None, ["one"])
            if engine.queries.wait(job.id, 60).status.value != "completed":
                raise CheckFailed(f"job {job.id} did not complete")
            deadline = time.monotonic() + 10
            while sum(1 for _, p in receiver.arrivals if p["job"]["id"] == job.id) < 2:
                if time.monotonic() > deadline:
                    raise CheckFailed(f"the deliveries of job {job.id} did not arrive in 10 s")
                time.sleep(0.001)
    finally:
        engine.shutdown(timeout=10)
        server.shutdown()
        server.server_close()
    if receiver.bad:
        raise CheckFailed(f"{receiver.bad} deliveries with a bad signature")
    return [arrived - payload["time"] for arrived, payload in receiver.arrivals[:events]]


def one_round(way: str, workers: int, concurrency: int, folders: list[Path]) -> float:
    folder = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    folders.append(folder)
    listener: socket.socket | None = None
    server: ThreadingHTTPServer | None = None
    url = None
    if way == "hanging receiver":
        listener, url = hanging_listener()
    elif way == "answering receiver":
        server = Receiver().start()
        url = f"http://127.0.0.1:{server.server_port}/hook"
    engine = make_engine(folder, concurrency, url, "false", timeout=30.0)
    try:
        tasks = [f"t{i}" for i in range(workers)]
        started = time.perf_counter()
        job = engine.submission.submit("throughput", {"max_workers": concurrency}, tasks)
        done = engine.queries.wait(job.id, 600)
        wall = time.perf_counter() - started
        if done.status.value != "failed":  # every worker runs `false`
            raise CheckFailed(f"{way}: job {job.id} ended {done.status.value}, expected failed")
        if url is not None and engine.webhooks.deliveries()[1] != workers + 2:
            raise CheckFailed(f"{way}: {engine.webhooks.deliveries()[1]} deliveries, expected {workers + 2}")
        return wall
    finally:
        engine.shutdown(timeout=10)
        if listener is not None:
            listener.close()
        if server is not None:
            server.shutdown()
            server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200, help="deliveries timed for the latency (default 200)")
    parser.add_argument("--workers", type=int, default=200, help="workers in the throughput job (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="workers alive at once (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput rounds per way (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    if min(args.events, args.workers, args.concurrency, args.repeat) < 1:
        parser.error("--events, --workers, --concurrency and --repeat must be at least 1")
    print(
        f"bench_webhooks: latency over {args.events} deliveries; throughput of {args.workers} workers (`false`), "
        f"{args.concurrency} at a time, {args.repeat} round(s) per way"
    )
    print(f"machine: nproc={os.cpu_count()}, load average {load_average()}")
    folders: list[Path] = []
    ways = ("no webhooks", "hanging receiver", "answering receiver")
    walls: dict[str, list[float]] = {w: [] for w in ways}
    try:
        latency = measure_latency(args.events, folders)
        for r in range(1, args.repeat + 1):
            for way in ways:
                walls[way].append(one_round(way, args.workers, args.concurrency, folders))
                print(f"  round {r}/{args.repeat} {way:<20} wall {walls[way][-1]:7.3f} s", flush=True)
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        return 1
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    p50, p99 = percentile(latency, 0.50), percentile(latency, 0.99)
    print()
    print(f"delivery latency (event to receiver), {len(latency)} deliveries:")
    print(f"  p50 {p50 * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms   max {max(latency) * 1000:7.2f} ms")
    median = {w: statistics.median(v) for w, v in walls.items()}
    print(f"throughput, median wall of {args.repeat} round(s):")
    for way in ways:
        print(f"  {way:<20} {median[way]:7.3f} s   {args.workers / median[way]:8.1f} workers/s")
    ratio = median["hanging receiver"] / median["no webhooks"]
    met = "met" if p99 <= TARGET_P99 else "not met"
    print(
        f"RESULT latency p50 {p50 * 1000:.2f} ms p99 {p99 * 1000:.2f} ms (target p99 <= 50 ms: {met}); "
        f"wall with a hanging receiver / without webhooks = {ratio:.2f}x"
    )
    if args.json:
        figures = {"latency_s": latency, "p50_s": p50, "p99_s": p99, "walls_s": walls, "ratio_hanging": ratio}
        Path(args.json).write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
