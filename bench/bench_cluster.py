"""Cluster benchmark: the rq executor with three nodes on this machine against the local
executor, in one run.

    .venv/bin/python bench/bench_cluster.py [--workers 1000] [--slots 8] [--handoffs 50] [--lease 30] [--json PATH]

A real ``redis-server`` (Debian's package, started by the bench on a free 127.0.0.1 port with a
password, stopped at the end), a real server (``server.start_in_thread`` on 127.0.0.1, as
bench_api.py's ``Live``) and, for rq, three ``python -m orchestrator node`` processes with
``--slots`` slots each, all on this machine and one workspace. Workers are the ``command`` kind
running bench_api.py's ``worker.sh``.

(a) throughput: one root job of ``--workers`` ``noop`` workers (each prints the time and exits),
    ``3 x --slots`` at a time (the sum of the nodes' slots; the local executor gets the same
    concurrency). Wall time from submit to the job's end, workers per second, and the slot-time
    each worker costs (wall x concurrency / workers: the worker's own run plus the executor's
    overhead per worker). The ratio rq / local is the cost of running the attempts through Redis
    and nodes instead of this server's own processes. The CPU per worker of the server, the nodes
    and the worker supervisors (with the shims, sandboxes and workers they reaped; in sessions of
    their own, so neither of the others counts them), and of all of them together.
(b) child hand-off from a node-run worker: bench_api.py's (a1) and (a2), a worker that starts
    ``--handoffs`` child jobs one after another through the API (its Python client: POST, then
    long-poll wait): spawn call -> the child's worker running (on a node: claimed, started and
    heard by the server), child end -> parent resumes. p50/p99, rq against local.

A measurement, not a test: exit 0 whatever the figures, 1 when a check fails (a job not
completing, a worker not recorded on a node, a hand-off missing). Talks to 127.0.0.1 only;
every wait is bounded; temp folders are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_api import CheckFailed, Live, bench_handoff, ms, pct  # noqa: E402
from bench.bench_cluster_protocol import Redis  # noqa: E402
from bench.bench_graph import load_average  # noqa: E402
from orchestrator.cluster import registry  # noqa: E402
from orchestrator.cluster.connect import connect  # noqa: E402
from orchestrator.cluster.names import Names  # noqa: E402
from orchestrator.models import JobStatus  # noqa: E402

NODES = 3
TARGET_EXTRA_SLOT_MS = 100.0  # issue 26: a worker attempt on a node costs at most this much slot time beyond local
TARGET_SPAWN_RATIO = 2.0  # issue 26: spawn -> child running on rq at most this times local (p50)


class Nodes:
    """Three node processes of the bench's (each its own process group), stopped at the end."""

    def __init__(self, base: Path, url: str, prefix: str, slots: int, lease: float, workspace: Path) -> None:
        self.url, self.prefix = url, prefix
        self.procs: list[subprocess.Popen[bytes]] = []
        config = base / "node-config.yaml"
        # The node's own settings: the command kind's program is the bench worker (same path as the
        # server's), and the server's workspace, where the node finds the key the attempts are signed with.
        command = [str(base / "bin" / "worker.sh"), "{task}"]
        config.write_text(yaml.safe_dump({"orchestrator": {"command": command, "workspace_root": str(workspace)}}))
        for i in range(NODES):
            argv = [sys.executable, "-m", "orchestrator", "--config", str(config), "node", "--redis", url]
            argv += ["--prefix", prefix, "--name", f"bench-{i + 1}", "--kinds", "command", "--slots", str(slots)]
            argv += ["--lease", str(lease)]
            out = open(base / f"node-{i + 1}.out", "wb")  # noqa: SIM115 (closed with the process)
            self.procs.append(
                subprocess.Popen(
                    argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            out.close()
        deadline = time.monotonic() + 60
        client, names = connect(url), Names(prefix)
        while time.monotonic() < deadline:
            alive = [n for n in registry.read(client, names) if n.alive]
            if len(alive) == NODES:
                return
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise CheckFailed(f"a node exited: {(base / 'node-1.out').read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        raise CheckFailed("the nodes did not register within 60 s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def tree_cpu(pid: int) -> float:
    """CPU seconds a live process tree has used: each live process's own, plus what the ones it
    has reaped used (an RQ worker reaps its attempts' shims or sandbox launchers)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


# Where a node's supervisor lives: its own temp folder (cluster/node.py), named for the node (``Nodes``).
NODE_SUPERVISOR = "orchestrator-node-bench-"
RUN_STARTED = time.time()  # this run's nodes' supervisors start after it


def supervisors_cpu(base: Path) -> dict[int, float]:
    """CPU seconds of each live worker supervisor of this run, by pid, with what it reaped (its
    shims, sandboxes and workers): the server's (its folder under ``base``) and the nodes' (their
    own temp folders, started since ``RUN_STARTED``). Each runs in a session of its own, so no
    one's ``tree_cpu`` counts it (process/supervisor.py)."""
    found: dict[int, float] = {}
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        argv = proc.info.get("cmdline") or []
        if "orchestrator.process.supervisor" not in " ".join(argv):
            continue
        ours = any(arg.startswith(str(base)) for arg in argv)
        node = any(NODE_SUPERVISOR in arg for arg in argv) and (proc.info.get("create_time") or 0) >= RUN_STARTED
        if ours or node:
            found[proc.pid] = tree_cpu(proc.pid)
    return found


def since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the supervisors of ``after`` used since ``before`` (one that started since: all of
    its own; one that left in between is not counted, an idle one's leaving)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


PHASES = (("enqueued_at", "claimed_at"), ("claimed_at", "started_at"), ("started_at", "ended_at"))


def redis_phases(url: str, prefix: str, attempt_ids: list[str]) -> dict[str, Any]:
    """Redis commands per attempt since the last reset (INFO commandstats, the scripts' own
    commands included) and, from the attempts' hashes (kept ENDED_TTL after their end), the p50
    of each hop a node's attempt goes through: enqueued -> claimed (waiting for a node's
    worker), claimed -> started (the spawn), started -> ended (the worker's own run)."""
    client, names = connect(url), Names(prefix)
    stats: dict[str, dict[str, int]] = client.info("commandstats")  # type: ignore[assignment]
    commands = sum(v["calls"] for v in stats.values())
    pipe = client.pipeline(transaction=False)
    for attempt_id in attempt_ids:
        pipe.hmget(names.attempt(attempt_id), [k for pair in PHASES for k in pair])
    rows = [[float(x) if x else None for x in row] for row in pipe.execute()]
    phases = {}
    for i, (a, b) in enumerate(PHASES):
        hops = [row[2 * i + 1] - row[2 * i] for row in rows if row[2 * i] is not None and row[2 * i + 1] is not None]
        phases[f"{a[:-3]} -> {b[:-3]}"] = statistics.median(hops) if hops else None
    return {"commands_per_attempt": commands / max(1, len(attempt_ids)), "phases_p50": phases}


def run_noops(
    live: Live,
    base: Path,
    count: int,
    concurrency: int,
    node_pids: list[int],
    redis_url: str = "",
    prefix: str = "",
    redis_pid: int | None = None,
) -> dict[str, Any]:
    engine = live.engine
    if redis_url:
        connect(redis_url).config_resetstat()
    nodes_before = sum(tree_cpu(pid) for pid in node_pids)
    redis_before = tree_cpu(redis_pid) if redis_pid else 0.0  # (a child of this process too: told apart)
    server_before = tree_cpu(os.getpid()) - nodes_before - redis_before  # this process started the nodes: they are in its tree
    supervisors_before = supervisors_cpu(base)
    started = time.monotonic()
    job = engine.submission.submit("benchmark: no-op workers", {"max_workers": concurrency}, ["noop"] * count)
    done = engine.queries.wait(job.id, timeout=max(120.0, count * 0.5))
    wall = time.monotonic() - started
    nodes_cpu = sum(tree_cpu(pid) for pid in node_pids) - nodes_before
    redis_cpu = (tree_cpu(redis_pid) if redis_pid else 0.0) - redis_before
    server_cpu = tree_cpu(os.getpid()) - nodes_before - nodes_cpu - redis_before - redis_cpu - server_before
    # (The supervisors, this server's or the nodes', with their shims and workers: in sessions of their own.)
    supervisors = since(supervisors_before, supervisors_cpu(base))
    if done.status is not JobStatus.COMPLETED:
        engine.cancel(job.id)
        raise CheckFailed(f"(a) job {job.id} ended {done.status.value}")
    _, workers = engine.queries.snapshot(job.id)
    on_nodes: dict[str, int] = {}
    for worker in workers:
        on_nodes[worker.node or "this server"] = on_nodes.get(worker.node or "this server", 0) + 1
    n = len(workers)
    ids = [w.attempts[-1].pid_start for w in workers if w.attempts and w.attempts[-1].pid_start]
    protocol = redis_phases(redis_url, prefix, [i for i in ids if i]) if redis_url else None
    return {
        "redis": protocol,
        "wall": wall,
        "workers": n,
        "per_second": n / wall,
        "slot_seconds": wall * concurrency / n,
        "server_cpu_per_worker": server_cpu / n,
        "nodes_cpu_per_worker": nodes_cpu / n,
        "supervisors_cpu_per_worker": supervisors / n,
        "redis_cpu_per_worker": redis_cpu / n,
        "on": on_nodes,
    }


def settings_for(executor: str, args: argparse.Namespace, url: str, prefix: str) -> dict[str, dict[str, Any]]:
    concurrency = NODES * args.slots
    extra: dict[str, dict[str, Any]] = {
        "workers": {
            "max_workers_limit": max(16, concurrency),
            "global_max_workers": max(64, concurrency),
            "sandbox": args.sandbox,
        },
        "recursion": {"max_workers_per_root": max(300, args.workers + 10, args.handoffs + 10)},
        "git": {"isolation": "folder"},
        "orchestrator": {"max_tasks": max(100, args.workers)},
    }
    if executor == "rq":
        extra["distributed"] = {"executor": "rq", "redis_url": url, "queue_prefix": prefix, "lease": args.lease}
    return extra


def one_executor(executor: str, args: argparse.Namespace, redis: Redis) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{executor}-"))
    prefix = f"bench{secrets.token_hex(3)}"
    live = None
    nodes = None
    try:
        live = Live(base, args.handoffs, settings_for(executor, args, redis.url, prefix))
        if executor == "rq":
            nodes = Nodes(base, redis.url, prefix, args.slots, args.lease, live.settings.workspace_root)
        print(f"{executor}: (a) {args.workers} no-op workers ...", flush=True)
        pids = [p.pid for p in nodes.procs] if nodes else []
        noops = run_noops(
            live, base, args.workers, NODES * args.slots, pids, redis.url if nodes else "", prefix, redis.process.pid
        )
        if executor == "rq" and ("this server" in noops["on"] or len(noops["on"]) != NODES):
            raise CheckFailed(f"(a) workers were not spread over the {NODES} nodes: {noops['on']}")
        print(f"{executor}: (b) {args.handoffs} child hand-offs ...", flush=True)
        handoff = bench_handoff(live, args.handoffs, "api")
        return {"noops": noops, "handoff": handoff}
    finally:
        if live is not None:
            live.close()
        if nodes is not None:
            nodes.stop()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000, help="no-op workers in (a) (default 1000)")
    parser.add_argument("--slots", type=int, default=8, help="slots per node; the local executor gets 3x this (default 8)")
    parser.add_argument("--handoffs", type=int, default=50, help="child hand-offs in (b) (default 50)")
    parser.add_argument("--lease", type=float, default=30.0, help="distributed.lease (default 30)")
    parser.add_argument(
        "--sandbox",
        choices=("auto", "off"),
        default="auto",
        help="workers.sandbox of both sides (default auto: bubblewrap where the machine has it; off: unconfined workers)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    if not (1 <= args.workers <= 20000 and 1 <= args.slots <= 64 and 1 <= args.handoffs <= 250 and 3 <= args.lease <= 3600):
        parser.error("out of range: workers 1-20000, slots 1-64, handoffs 1-250, lease 3-3600")
    print(
        f"bench_cluster: {args.workers} no-op workers and {args.handoffs} hand-offs, local vs rq on {NODES} nodes x "
        f"{args.slots} slots, workers.sandbox {args.sandbox}; nproc={os.cpu_count()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-redis-"))
    redis = Redis(folder, "everysec")
    print(f"{redis.version}; load average before: {load_average()}")
    results: dict[str, Any] = {}
    try:
        for executor in ("local", "rq"):
            results[executor] = one_executor(executor, args, redis)
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        return 1
    finally:
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)

    local, rq = results["local"], results["rq"]
    print(f"\n(a) {args.workers} no-op workers, {NODES * args.slots} at a time")
    for name in ("local", "rq"):
        n = results[name]["noops"]
        print(
            f"  {name:5}: wall {n['wall']:.2f} s, {n['per_second']:.1f} workers/s, "
            f"{n['slot_seconds'] * 1000:.1f} ms of a slot per worker; CPU per worker: server "
            f"{n['server_cpu_per_worker'] * 1000:.1f} ms, nodes {n['nodes_cpu_per_worker'] * 1000:.1f} ms, "
            f"supervisors with their shims and workers {n['supervisors_cpu_per_worker'] * 1000:.1f} ms, "
            f"Redis {n['redis_cpu_per_worker'] * 1000:.1f} ms; on {n['on']}"
        )
    together = {
        name: sum(results[name]["noops"][f"{part}_cpu_per_worker"] for part in ("server", "nodes", "supervisors", "redis"))
        for name in ("local", "rq")
    }
    print(
        f"  CPU per worker of every process of the run together: local {together['local'] * 1000:.1f} ms, "
        f"rq {together['rq'] * 1000:.1f} ms (rq's extra {(together['rq'] - together['local']) * 1000:.1f} ms)"
    )
    protocol = rq["noops"]["redis"]
    hops = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in protocol["phases_p50"].items() if v is not None)
    print(f"  rq: {protocol['commands_per_attempt']:.1f} Redis commands per attempt; p50 {hops}")
    ratio = rq["noops"]["wall"] / local["noops"]["wall"]
    overhead = (rq["noops"]["slot_seconds"] - local["noops"]["slot_seconds"]) * 1000
    print(f"  ratio rq/local (wall): {ratio:.2f}x; the rq executor's extra cost per worker: {overhead:.1f} ms of a slot")
    print(f"\n(b) child hand-off ({args.handoffs})")
    figures: dict[str, Any] = {
        "sandbox": args.sandbox,
        "noops_ratio": ratio,
        "noops_overhead_ms": overhead,
        "cpu_together_ms": {name: cpu * 1000 for name, cpu in together.items()},
    }
    for name in ("local", "rq"):
        h = results[name]["handoff"]
        spawn, back = h["spawn_to_child"], h["child_to_parent"]
        print(
            f"  {name:5}: spawn -> child running p50 {ms(pct(spawn, 50))}, p99 {ms(pct(spawn, 99))}; "
            f"child end -> parent resumes p50 {ms(pct(back, 50))}, p99 {ms(pct(back, 99))}"
        )
        print(
            f"         of which p50: the POST -> child created {ms(pct(h['t0_to_created'], 50))}, "
            f"child created -> its attempt started {ms(pct(h['created_to_started'], 50))}"
        )
        figures[f"{name}_spawn_p50"] = pct(spawn, 50)
        figures[f"{name}_spawn_p99"] = pct(spawn, 99)
        figures[f"{name}_resume_p50"] = pct(back, 50)
        figures[f"{name}_resume_p99"] = pct(back, 99)
        figures[f"{name}_noops"] = results[name]["noops"]
    local_p50 = statistics.median(local["handoff"]["spawn_to_child"])
    rq_p50 = statistics.median(rq["handoff"]["spawn_to_child"])
    print(f"  ratio rq/local (spawn -> child running, p50): {rq_p50 / local_p50:.2f}x")
    # The child's "running" is its attempt's start as the engine records it: the moment before
    # its spawn on both sides (locally the engine's clock, on a node the node's, kept between the
    # enqueue and the server hearing "started"). Its first output line's clock is the same point
    # on both sides too, past the spawn.
    for name in ("local", "rq"):
        proc = results[name]["handoff"]["spawn_to_process"]
        figures[f"{name}_process_p50"] = pct(proc, 50) if proc else None
        if proc:
            print(
                f"  {name:5}: spawn -> the child's process running (its first line) p50 {ms(pct(proc, 50))}, p99 {ms(pct(proc, 99))}"
            )
    local_proc, rq_proc = figures["local_process_p50"], figures["rq_process_p50"]
    if local_proc and rq_proc:
        print(f"  ratio rq/local (spawn -> the child's process running, p50): {rq_proc / local_proc:.2f}x")
    met = lambda ok: "met" if ok else "not met"  # noqa: E731
    print(
        f"RESULT rq executor's extra slot time per worker = {overhead:.1f} ms (target <= {TARGET_EXTRA_SLOT_MS:.0f} ms) "
        f"{met(overhead <= TARGET_EXTRA_SLOT_MS)}; rq/local wall {ratio:.2f}x; node CPU per worker "
        f"{rq['noops']['nodes_cpu_per_worker'] * 1000:.1f} ms"
    )
    print(
        f"RESULT rq/local spawn -> child running p50 = {rq_p50 / local_p50:.2f}x "
        f"({ms(rq_p50)} against {ms(local_p50)}; target <= {TARGET_SPAWN_RATIO:.0f}x) {met(rq_p50 <= TARGET_SPAWN_RATIO * local_p50)}"
    )
    if local_proc and rq_proc:
        print(
            f"RESULT rq/local spawn -> the child's process running p50 = {rq_proc / local_proc:.2f}x "
            f"({ms(rq_proc)} against {ms(local_proc)}; target <= {TARGET_SPAWN_RATIO:.0f}x) "
            f"{met(rq_proc <= TARGET_SPAWN_RATIO * local_proc)}"
        )
    print(f"load average after: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
