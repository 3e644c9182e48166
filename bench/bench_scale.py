"""Scale benchmark: no-op workers through the paths users take, at two sizes in one run.

    .venv/bin/python bench/bench_scale.py [--sizes 1000,10000] [--paths cli,api,tree] [--json PATH]

Each path runs at every size (default ``--sizes 370,1000``: a quick run of a minute
or two; the issue's figures use ``--sizes 1000,10000``), on a fresh temp folder
with its own ``config.yaml`` and workspace, workers of the ``command`` kind, 16 at once:

* cli: ``python -m orchestrator --config CFG run REQUEST --tasks t1 .. tN --workers 16``
  as a user types it, its output read from a pipe (one line per worker state, the non-TTY
  view); with ``--tty`` on a pseudo-terminal instead (the tree redrawn in place). Command
  ``["true"]``. Timed from the process start to its exit; peak RSS from ``wait4``.
* api: a real ``api_server.py`` on a free 127.0.0.1 port; ``POST /api/v1/orchestrate``
  with N explicit tasks, and a dashboard-like follower reading ``GET /api/v1/jobs/ID/events``
  to its ``end`` event (reconnecting with Last-Event-ID, as EventSource does). Timed from
  the POST to the ``end`` event. Server peak RSS from /proc/PID/status (VmHWM).
* tree: the same server; one root job whose workers start child jobs with
  ``orchestrator-spawn --wait``: 10 root workers, each one child job of 9 workers, each
  of those one child job of (N - 100) / 90 workers (N = 1000: 10 + 90 + 900; N = 10000:
  10 + 90 + 9900): depth 3 (levels 0, 1, 2). Timed from the POST to the ``end`` event.

After a cli or tree run, the tree is loaded from the workspace and FINAL_RESULT.md rendered
again in this process (what the engine does when the tree ends), against a plain Jinja
template of an N-row table (name, status, duration, task) rendered in the same run.

Per-worker cost = wall / N. The figures the issue's targets are about (printed as RESULT lines):
per-worker cost at the largest size / at the smallest (<= 1.2x), the server's peak RSS
(<= 200 MB), FINAL_RESULT.md render / plain Jinja table (<= 3x).

A measurement, not a test: exit 0 whatever the figures, 1 when a run did not do what it was
asked (a job not completed, a worker missing). Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pty
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PY = sys.executable
CONCURRENCY = 16
TARGET_GROWTH = 1.2  # per-worker cost at the largest size / at the smallest
TARGET_RSS_MB = 200.0
TARGET_RENDER = 3.0  # FINAL_RESULT.md render / plain Jinja N-row table

TREE_SH = """\
#!/bin/sh
# A bench worker: at depth 0 and 1 it starts one child job and waits for it; deeper it is a no-op.
n=0
case "$ORCHESTRATOR_DEPTH" in
  0) count=9 ;;
  1) count=%(leaves)d ;;
  *) exit 0 ;;
esac
set --
while [ "$n" -lt "$count" ]; do n=$((n + 1)); set -- "$@" "d$((ORCHESTRATOR_DEPTH + 1)) no-op $n"; done
exec orchestrator-spawn --wait --json --workers %(conc)d "$@" >/dev/null
"""


class CheckFailed(Exception):
    """A run did not do what it was asked."""


def uptime() -> str:
    try:
        return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load n/a"


def thread_stacks_mb(pid: int) -> float:
    """Resident memory of a process's thread stacks: its anonymous mappings of exactly the
    default stack size (ulimit -s), read from /proc/PID/smaps."""
    import resource

    stack_kb = resource.getrlimit(resource.RLIMIT_STACK)[0] // 1024
    total = 0
    size = 0
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                if line.startswith("Size:"):
                    size = int(line.split()[1])
                elif line.startswith("Rss:") and size == stack_kb:
                    total += int(line.split()[1])
    except OSError:
        return float("nan")
    return total / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(base: Path, n: int, command: list[str], key: str = "", port: int = 0) -> Path:
    import yaml

    doc = {
        "orchestrator": {
            "workspace_root": str(base / "workspace"),
            "worker": "command",
            "command": command,
            "planner": "heuristic",
            "max_tasks": max(n, 100),
        },
        "workers": {
            "max_workers": CONCURRENCY,
            "max_workers_limit": CONCURRENCY,
            "global_max_workers": CONCURRENCY,
            "max_retries": 0,
        },
        "recursion": {"max_depth": 3, "max_depth_limit": 3, "max_workers_per_root": max(n, 100), "max_children_per_worker": 3},
        # Every parent waiting on a child job (orchestrator-spawn --wait) holds a request thread
        # in a long-poll: the tree has 100 such parents at once, so 24 threads would starve the
        # children's own POSTs. The limit on worker requests is off, as in bench_api.py.
        "api": {"host": "127.0.0.1", "port": port, "api_key": key, "threads": 160, "rate_limit_worker": 0.0},
    }
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def bench_env(base: Path) -> dict[str, str]:
    """The environment of a bench process: this checkout on the path, ``base`` as its home (its
    server record goes there, never beside a server the user runs from this folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    return {**env, "PYTHONPATH": str(ROOT), "ORCHESTRATOR_HOME": str(base)}


def check_tree(base: Path, root_id: str, n: int) -> tuple[list[Any], list[Any]]:
    """The finished tree from the workspace: every job completed, n workers, all successful."""
    from orchestrator.workspace.layout import Workspace

    jobs, workers = Workspace(base / "workspace").load_tree(root_id)
    bad = [w.key for w in workers if w.status.value not in ("success", "recursive_success")]
    if len(workers) != n or bad or any(j.status.value != "completed" for j in jobs):
        raise CheckFailed(
            f"{root_id}: {len(workers)} workers (expected {n}), {len(bad)} not success "
            f"({', '.join(bad[:5])}), jobs {sorted({j.status.value for j in jobs})} (folder {base})"
        )
    return jobs, workers


# -- (a) the CLI ---------------------------------------------------------------------------
def run_cli(n: int, tty: bool, keep: list[Path]) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-scale-cli-"))
    keep.append(base)
    cfg = write_config(base, n, ["true"])
    argv = [
        PY,
        "-m",
        "orchestrator",
        "--config",
        str(cfg),
        "run",
        f"scale bench: {n} no-op workers",
        "--workers",
        str(CONCURRENCY),
        "--tasks",
        *[f"no-op {i}" for i in range(1, n + 1)],
    ]
    env = {**bench_env(base), "COLUMNS": "120", "LINES": "40"}
    out = bytearray()
    start = time.perf_counter()
    if tty:
        master, slave = pty.openpty()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=base)
        os.close(slave)
        while True:  # drain the terminal as a terminal emulator would
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                out += chunk[-4096:]
                del out[:-8192]
            elif proc.poll() is not None:
                break
        os.close(master)
    else:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=base
        )
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read(65536), b""):  # type: ignore[union-attr]
            out += chunk
            del out[:-8192]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = out.decode(errors="replace")
    if proc.returncode != 0:
        raise CheckFailed(f"cli run of {n} exited {proc.returncode}: {tail[-800:]}")
    roots = [p.name[4:] for p in (base / "workspace").iterdir() if p.is_dir() and p.name.startswith("job_")]
    if len(roots) != 1:
        raise CheckFailed(f"cli run of {n}: {len(roots)} job folders in {base}/workspace")
    jobs, workers = check_tree(base, roots[0], n)
    span = (jobs[0].ended_at or 0) - jobs[0].created_at
    return {
        "wall_s": wall,
        "job_s": span,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        **time_render(jobs, workers),
    }


# -- (b), (c) the API server ---------------------------------------------------------------------
class Server:
    """A real api_server.py with its own folder, config and workspace."""

    def __init__(self, n: int, command: list[str], keep: list[Path], prefix: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=prefix))
        keep.append(self.base)
        self.key = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = write_config(self.base, n, command, self.key, self.port)
        env = bench_env(self.base)
        self.log = open(self.base / "server.out", "wb")
        self.proc = subprocess.Popen(
            [PY, str(ROOT / "api_server.py"), "--config", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.base,
        )
        import requests

        self.http = requests.Session()
        self.http.trust_env = False  # loopback only, never through a proxy
        self.http.headers["X-API-Key"] = self.key
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(f"api_server.py exited {self.proc.returncode}: see {self.base / 'server.out'}")
            try:
                if self.http.get(f"{self.url}/health", timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise CheckFailed(f"api_server.py did not answer /health in 60 s (see {self.base / 'server.out'})")

    def start_sampling(self) -> None:
        """Sample the server's thread count and RSS every 0.2 s (the most threads seen, and the
        RSS then): what its peak RSS is made of."""
        self.peak_threads, self.rss_at_peak_threads = 0, 0.0
        self._sampling = threading.Event()

        self.peak_rss_sampled, self.threads_at_peak_rss, self.peak_rss_at = 0.0, 0, 0.0
        self.stacks_mb, self.stacks_at = 0.0, 0
        started = time.monotonic()

        def sample() -> None:
            while not self._sampling.wait(0.2):
                try:
                    status = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
                except (OSError, ValueError):
                    return
                threads, rss = int(status["Threads"]), int(status["VmRSS"].split()[0]) / 1024
                if threads > self.peak_threads:
                    self.peak_threads, self.rss_at_peak_threads = threads, rss
                    if threads >= self.stacks_at + 50:  # what the threads' stacks hold (smaps costs a few ms)
                        self.stacks_mb, self.stacks_at = thread_stacks_mb(self.proc.pid), threads
                if rss > self.peak_rss_sampled:
                    self.peak_rss_sampled, self.threads_at_peak_rss = rss, threads
                    self.peak_rss_at = time.monotonic() - started

        threading.Thread(target=sample, daemon=True).start()

    def stop_sampling(self) -> dict[str, float]:
        self._sampling.set()
        return {
            "peak_threads": self.peak_threads,
            "rss_at_peak_threads_mb": self.rss_at_peak_threads,
            "peak_rss_sampled_mb": self.peak_rss_sampled,
            "threads_at_peak_rss": self.threads_at_peak_rss,
            "peak_rss_at_s": self.peak_rss_at,
            "stacks_mb": self.stacks_mb,
            "stacks_at_threads": self.stacks_at,
        }

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def submit(self, request: str, tasks: list[str]) -> str:
        answer = self.http.post(
            f"{self.url}/api/v1/orchestrate",
            timeout=120,
            json={"request": request, "tasks": tasks, "config": {"max_workers": CONCURRENCY}},
        )
        if answer.status_code != 202:
            raise CheckFailed(f"POST /orchestrate answered {answer.status_code}: {answer.text[:500]}")
        return str(answer.json()["job_id"])

    def follow(self, job_id: str, timeout: float) -> tuple[int, str]:
        """Read the job's event stream to its ``end`` (reconnecting with Last-Event-ID, as a
        browser's EventSource does). Returns (events read, final status)."""
        last, count = "0", 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.http.get(
                f"{self.url}/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last}, stream=True, timeout=(5, 60)
            ) as answer:
                answer.raise_for_status()
                kind = ""
                for raw in answer.iter_lines(chunk_size=None, decode_unicode=True):
                    if raw.startswith("id: "):
                        last = raw[4:]
                    elif raw.startswith("event: "):
                        kind = raw[7:]
                    elif raw.startswith("data: "):
                        data = json.loads(raw[6:])
                        if kind == "end":
                            return count, str(data["status"])
                        count += 1
        raise CheckFailed(f"the event stream of {job_id} did not end in {timeout:.0f} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.http.close()


def run_api(n: int, keep: list[Path]) -> dict[str, Any]:
    server = Server(n, ["true"], keep, "bench-scale-api-")
    try:
        cpu0 = server.cpu_s()
        start = time.perf_counter()
        job_id = server.submit(f"scale bench: {n} no-op workers", [f"no-op {i}" for i in range(1, n + 1)])
        events, status = server.follow(job_id, timeout=max(600.0, n * 0.2))
        wall = time.perf_counter() - start
        cpu = server.cpu_s() - cpu0
        rss = server.peak_rss_mb()
    finally:
        server.close()
    if status != "completed":
        raise CheckFailed(f"api job {job_id} ended {status}")
    check_tree(server.base, job_id, n)
    return {"wall_s": wall, "events": events, "peak_rss_mb": rss, "cpu_s": cpu}


def tree_shape(n: int) -> int:
    """Workers per depth-2 job so that 10 + 10*9 + 90*leaves == n."""
    if n < 190 or (n - 100) % 90:
        raise SystemExit(f"tree size {n}: must be 100 + 90 * k workers (k >= 1), e.g. 1000 or 10000")
    return (n - 100) // 90


def run_tree(n: int, keep: list[Path]) -> dict[str, Any]:
    leaves = tree_shape(n)
    script_dir = Path(tempfile.mkdtemp(prefix="bench-scale-sh-"))
    keep.append(script_dir)
    script = script_dir / "tree_worker.sh"
    script.write_text(TREE_SH % {"leaves": leaves, "conc": CONCURRENCY}, encoding="utf-8")
    server = Server(n, ["/bin/sh", str(script)], keep, "bench-scale-tree-")
    try:
        cpu0 = server.cpu_s()
        server.start_sampling()
        start = time.perf_counter()
        job_id = server.submit(f"scale bench: a tree of {n} workers", [f"d0 no-op {i}" for i in range(1, 11)])
        events, status = server.follow(job_id, timeout=max(900.0, n * 0.3))
        wall = time.perf_counter() - start
        cpu = server.cpu_s() - cpu0
        rss = server.peak_rss_mb()
        threads = server.stop_sampling()
    finally:
        server.close()
    if status != "completed":
        raise CheckFailed(f"tree job {job_id} ended {status} (folder {server.base})")
    jobs, workers = check_tree(server.base, job_id, n)
    if len(jobs) != 101 or max(w.depth for w in workers) != 2:
        raise CheckFailed(f"tree job {job_id}: {len(jobs)} jobs (expected 101), depth {max(w.depth for w in workers)}")
    render = time_render(jobs, workers)
    return {"wall_s": wall, "events": events, "peak_rss_mb": rss, "cpu_s": cpu, **render, **threads}


PLAIN_TABLE = """\
| worker | status | duration | task |
| --- | --- | --- | --- |
{% for w in workers %}| {{ w.name }} | {{ w.status }} | {{ w.duration }} | {{ w.task }} |
{% endfor %}"""


def time_render(jobs: list[Any], workers: list[Any], rounds: int = 5) -> dict[str, float]:
    """Best of ``rounds``: FINAL_RESULT.md for the tree, the timeline SVG, and a plain Jinja
    table of the same number of rows (the baseline)."""
    import jinja2

    from orchestrator import reports

    rows = [{"name": w.key, "status": w.status.value, "duration": f"{w.duration or 0:.1f}s", "task": w.task} for w in workers]
    template = jinja2.Environment(autoescape=False).from_string(PLAIN_TABLE)
    root = next(j for j in jobs if j.is_root)
    best = {"final_s": float("inf"), "svg_s": float("inf"), "plain_s": float("inf")}
    for _ in range(rounds):
        t0 = time.perf_counter()
        template.render(workers=rows)
        t1 = time.perf_counter()
        reports.render_final_report(root, jobs, workers, log_tails={}, timeline_svg="reports/timeline.svg")
        t2 = time.perf_counter()
        reports.render_timeline_svg(jobs, workers)
        t3 = time.perf_counter()
        best = {
            "plain_s": min(best["plain_s"], t1 - t0),
            "final_s": min(best["final_s"], t2 - t1),
            "svg_s": min(best["svg_s"], t3 - t2),
        }
    return best


# -- reporting --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="370,1000",
        help="worker counts, comma-separated (default 370,1000; the issue's: 1000,10000; tree sizes must be 100 + 90k)",
    )
    parser.add_argument("--paths", default="cli,api,tree", help="which paths to run: cli, api, tree (default all)")
    parser.add_argument("--tty", action="store_true", help="run the cli path on a pseudo-terminal (the live tree view)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp folders")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not sizes or min(sizes) < 1 or max(sizes) > 10_000:
        parser.error("--sizes: whole numbers from 1 to 10000 (the most explicit tasks one job takes)")
    if set(paths) - {"cli", "api", "tree"}:
        parser.error("--paths: a comma-separated subset of cli,api,tree")
    if "tree" in paths:
        for n in sizes:
            tree_shape(n)

    print(
        f"bench_scale: sizes {sizes}, paths {paths}, {CONCURRENCY} workers at once"
        f"{', cli on a pseudo-terminal' if args.tty else ''}"
    )
    print(
        f"machine: nproc={os.cpu_count()}, {platform.system()} {platform.release()}, Python {platform.python_version()}, {uptime()}"
    )
    runners = {
        "cli": lambda n: run_cli(n, args.tty, keep),
        "api": lambda n: run_api(n, keep),
        "tree": lambda n: run_tree(n, keep),
    }
    figures: dict[str, dict[int, dict[str, Any]]] = {p: {} for p in paths}
    keep: list[Path] = []
    try:
        for path in paths:
            for n in sizes:
                load = uptime()
                fig = runners[path](n)
                fig["load_before"] = load
                fig["load_after"] = uptime()
                figures[path][n] = fig
                extra = "".join(f"  {k} {fig[k]:.3f}s" for k in ("job_s", "final_s", "svg_s", "plain_s") if k in fig)
                if "peak_threads" in fig:
                    extra += (
                        f"  threads at most {fig['peak_threads']} (RSS then {fig['rss_at_peak_threads_mb']:.1f} MB);"
                        f" sampled RSS at most {fig['peak_rss_sampled_mb']:.1f} MB at {fig['peak_rss_at_s']:.1f} s"
                        f" ({fig['threads_at_peak_rss']} threads then); thread stacks {fig['stacks_mb']:.1f} MB"
                        f" at {fig['stacks_at_threads']} threads"
                    )
                print(
                    f"  {path:<5}{n:>7} workers  {fig['wall_s']:8.2f} s  {fig['wall_s'] / n * 1000:7.2f} ms/worker"
                    f"  cpu {fig['cpu_s']:7.2f} s  peak RSS {fig['peak_rss_mb']:6.1f} MB{extra}  ({load} -> {fig['load_after']})",
                    flush=True,
                )
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        args.keep = True
        return 1
    finally:
        for base in keep:
            if args.keep:
                print(f"kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)

    print()
    small, large = sizes[0], sizes[-1]
    for path in paths:
        a, b = figures[path][small], figures[path][large]
        growth = (b["wall_s"] / large) / (a["wall_s"] / small)
        verdict = "met" if growth <= TARGET_GROWTH else "not met"
        print(f"RESULT {path}: ms/worker at {large} / at {small} = {growth:.2f}x (target <= {TARGET_GROWTH:.1f}x) {verdict}")
        if "job_s" in b:
            print(f"       {path} (job span only, without start-up): {(b['job_s'] / large) / (a['job_s'] / small):.2f}x")
    for path in ("api", "tree"):
        if path in figures:
            rss = figures[path][large]["peak_rss_mb"]
            print(
                f"RESULT {path}: server peak RSS at {large} = {rss:.1f} MB (target <= {TARGET_RSS_MB:.0f} MB) "
                f"{'met' if rss <= TARGET_RSS_MB else 'not met'}"
            )
    for path in paths:
        fig = figures[path][large]
        if "final_s" not in fig:
            continue
        r = fig["final_s"] / fig["plain_s"]
        print(
            f"RESULT {path}: FINAL_RESULT.md render {fig['final_s'] * 1000:.0f} ms / plain Jinja {large}-row table "
            f"{fig['plain_s'] * 1000:.0f} ms = {r:.2f}x (target <= {TARGET_RENDER:.0f}x) {'met' if r <= TARGET_RENDER else 'not met'}"
            f"; timeline.svg {fig['svg_s'] * 1000:.0f} ms"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": sizes, "figures": figures}, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
