"""A worker's start through the orchestrator, against the floors of the same work: a bare Popen
pool, GNU parallel, bubblewrap alone, and GNU parallel running bubblewrap.

    bash bench/setup.sh && .venv/bin/python bench/bench_engine.py [--jobs 1000] [--concurrency 16] [--repeat 3]

Each method runs ``--jobs`` no-op processes (``true``), at most ``--concurrency`` at once,
``--repeat`` times interleaved; the table shows each method's median wall time.

* orchestrator: one job of ``jobs`` explicit subtasks on the ``command`` worker kind with command
  ``["true"]``, on a fresh temp workspace, default settings (sandboxed where bubblewrap runs, its
  own network namespace with the proxy's bridge: ``workers.sandbox_network: allow``). Wall time
  from ``Submission.submit`` until ``Queries.wait`` returns the job terminal: every record (fsync'd), a
  log per worker, orchestrator.log, the reports. The workspace is checked after each run
  (FINAL_RESULT.md, ``jobs`` records and logs, every worker ``success``); a failed check exits 1.
* bare Popen: ``jobs`` x ``subprocess.Popen(["true"]).wait()`` on ``concurrency`` threads.
* GNU parallel: ``parallel -jN true`` fed ``jobs`` lines.
* orch. no sandbox: the orchestrator with ``workers.sandbox: off``: the engine's own cost.
* bubblewrap alone: the Popen pool, each process the default sandbox's bubblewrap argv
  (process/sandbox.py, with ``--unshare-net``) around ``true``: the sandbox's own floor.
* parallel-bwrap: GNU parallel running that same argv: the peer doing the sandboxed run's work.
* sandbox floor: bubblewrap alone with the Perl shim inside (what records the exit status).
* orch. host net: the orchestrator with ``workers.sandbox_network: host`` (no namespace, no bridge).
* sandbox-runtime: Anthropic's ``@anthropic-ai/sandbox-runtime`` (pinned in bench/package.json,
  installed by bench/setup.sh) on its documented path, from node (bench/sandbox_runtime_noop.mjs):
  ``initialize`` once with an allow-list like the default's, then ``wrapWithSandbox("true")`` and
  ``spawn`` at the same concurrency; the peer doing a sandboxed start's work. ``n/a`` without node.
* tmpfs (diagnostic, when /dev/shm is a tmpfs): the orchestrator with its workspace there.

Before the runs and after them, the CPU a new file costs under the workspaces' folder (300 empty
files): on an ext4 without a journal each new file steps over the inodes deleted in the last minutes
(the kernel's ``recently_deleted``), so that cost, and the orchestrator's CPU with it, depends on
what ran before; the line says so where it finds such a file system.

Each run's CPU is also read for the whole machine (/proc/stat, over the method's whole run, its
start-up and end included): every process of the method, the orchestrator's server, supervisor,
shims, sandboxes and proxy or a peer's own, which a move of work from one process to another does
not hide (a column of the table, and DIAGNOSTIC lines against the peers). It counts whatever else
runs: run the benchmark alone.

Targets (RESULT lines): sandboxed <= 0.60x sandbox-runtime; without
the sandbox <= 1.00x GNU parallel; the server's CPU per worker <= 3.0 ms in every mode. The retired
targets (sandboxed <= 1.50x bubblewrap alone and <= 1.00x parallel-bwrap, unsandboxed <= 4.00x bare
Popen, allow <= 1.10x host) stay as DIAGNOSTIC lines. The CPU time of
the engine's process per worker (every thread; not the workers', not the supervisor's) is
printed for the sandboxed and unsandboxed runs. A measurement, not a test: exit 0 whatever the
ratios, 1 only when a correctness check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.config import load_settings  # noqa: E402
from orchestrator.engine.core import Engine  # noqa: E402
from orchestrator.process import backends, sandbox, shim  # noqa: E402

TARGET = 1.00  # orchestrator wall / GNU parallel's (running the same thing: true, or the bubblewrap argv)
TARGET_POPEN = 4.00  # orchestrator without the sandbox / bare Popen pool wall
TARGET_SANDBOXED = 1.50  # orchestrator (sandboxed, the default) / bubblewrap alone
TARGET_ALLOW = 1.10  # sandbox_network allow / host, the sandboxed default row
TARGET_SANDBOX_RUNTIME = 0.60  # orchestrator (sandboxed, the default) / Anthropic's sandbox-runtime
TARGET_SERVER_CPU_MS = 3.0  # the engine's process's CPU per worker, in every mode
SANDBOX_RUNTIME_SCRIPT = Path(__file__).resolve().parent / "sandbox_runtime_noop.mjs"
SANDBOX_RUNTIME_PACKAGE = Path(__file__).resolve().parent / "node_modules" / "@anthropic-ai" / "sandbox-runtime"


class CheckFailed(Exception):
    """A method did not do what it was asked (a worker failed, a report is missing, ...)."""


# -- the three methods ------------------------------------------------------------
def orchestrator_settings(base_dir: Path, jobs: int, concurrency: int, sandbox: str = "auto", network: str = "allow"):
    return load_settings(
        base_dir=base_dir,
        environ={},
        overrides={
            "orchestrator": {"worker": "command", "command": ["true"], "max_tasks": max(jobs, 100)},
            "workers": {
                "max_workers": concurrency,
                "max_workers_limit": max(concurrency, 16),
                "global_max_workers": concurrency,
                "max_retries": 0,
                "sandbox": sandbox,
                "sandbox_network": network,
            },
            "recursion": {"max_workers_per_root": max(jobs, 100)},
        },
    )


def run_orchestrator(
    jobs: int,
    concurrency: int,
    workspaces: list[Path],
    parent: str | None = None,
    sandbox: str = "auto",
    network: str = "allow",
    server_cpu: list[float] | None = None,
) -> float:
    """One timed job; its temp folder is appended to ``workspaces`` for the caller to remove, the
    CPU time the engine's process spent on it (every thread; not the workers') to ``server_cpu``.

    The folders are removed only after the last run: deleting ~7000 files right
    before the next run slows that run's file creation on some file systems (ext4
    without a journal skips recently deleted inodes one by one), which would charge
    the benchmark's own clean-up to the orchestrator."""
    base = Path(tempfile.mkdtemp(prefix="bench-orch-", dir=parent))
    workspaces.append(base)
    engine = Engine(orchestrator_settings(base, jobs, concurrency, sandbox, network))
    try:
        tasks = [f"noop {i}" for i in range(jobs)]
        cpu = time.process_time()
        start = time.perf_counter()
        job = engine.submission.submit("benchmark: no-op workers", {"max_workers": concurrency}, tasks)
        done = engine.queries.wait(job.id, timeout=max(600.0, jobs * 1.0))
        wall = time.perf_counter() - start
        if server_cpu is not None:
            server_cpu.append(time.process_time() - cpu)
        if not done.status.terminal:
            raise CheckFailed(f"orchestrator: job {job.id} still {done.status.value} after the wait timeout")
        check_orchestrator_workspace(engine, job.id, jobs, done.status.value)
    finally:
        engine.shutdown(timeout=30)
    return wall


def check_orchestrator_workspace(engine: Engine, job_id: str, jobs: int, status: str) -> None:
    ws = engine.workspace
    job_dir = ws.job_dir(job_id)
    problems = []
    if status != "completed":
        problems.append(f"job status is {status}, expected completed")
    for path in (ws.final_report(job_id), ws.level_report(job_id, 0), ws.orchestrator_log(job_id), ws.job_record_path(job_id)):
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"missing or empty: {path.relative_to(job_dir)}")
    records = sorted((ws.state_dir(job_id) / "workers").glob("depth_0_worker_*.json"))
    logs = sorted(ws.logs_dir(job_id).glob("depth_0_worker_*.log"))
    if len(records) != jobs:
        problems.append(f"{len(records)} worker records on disk, expected {jobs}")
    if len(logs) != jobs:
        problems.append(f"{len(logs)} worker logs on disk, expected {jobs}")
    not_ok = []
    for path in records:
        data = json.loads(path.read_bytes())
        if data.get("status") != "success":
            not_ok.append(f"{path.stem}={data.get('status')}")
    if not_ok:
        problems.append(f"{len(not_ok)} worker(s) not success: {', '.join(not_ok[:5])}")
    if problems:
        raise CheckFailed("orchestrator: " + "; ".join(problems) + f" (workspace {job_dir})")


def run_popen(jobs: int, concurrency: int) -> float:
    """A minimal Python pool: ``concurrency`` threads, each doing Popen + wait.

    (A single-threaded loop reaping with os.wait measured ~15% slower on 2 cores:
    the threads let two forks proceed at once.)"""

    def one(_: int) -> int:
        return subprocess.Popen(["true"]).wait()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        codes = list(pool.map(one, range(jobs)))
    wall = time.perf_counter() - start
    failed = sum(1 for c in codes if c != 0)
    if failed:
        raise CheckFailed(f"bare Popen: {failed} of {jobs} processes failed")
    return wall


def sandbox_floor_argv(folder: Path, i: int, *, shimmed: bool = True) -> list[str] | None:
    """What a sandboxed worker's start is, started bare: bubblewrap with the orchestrator's own
    protections (process/sandbox.py builds the argv; a network namespace of its own, as the
    default ``workers.sandbox_network: allow`` gives it) around the shim that records the exit
    status (without ``shimmed``: none), around ``true``; None when this machine cannot sandbox."""
    support = backends.probe()
    if support.bwrap is None or shim.PERL is None:
        return None
    exit_file = folder / f"exit.{i}"
    spec = sandbox.SandboxSpec(
        bwrap=support.bwrap, writable=(str(folder),), chdir=str(folder), network=sandbox.SandboxNetwork.ALLOW
    )
    return spec.bubblewrap_argv(
        [shim.PERL, "-e", shim.PERL_SHIM, shim.SHIM_NAME, str(exit_file), "true"] if shimmed else ["true"]
    )


def run_sandbox_floor(jobs: int, concurrency: int, *, shimmed: bool = True) -> float:
    """The Popen pool of run_popen, each process a sandboxed start (``sandbox_floor_argv``)."""
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-floor-") as tmp:
        folder = Path(tmp)
        argvs = [sandbox_floor_argv(folder, i, shimmed=shimmed) for i in range(jobs)]

        def one(i: int) -> int:
            argv = argvs[i]
            assert argv is not None
            return subprocess.Popen(argv).wait()

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            codes = list(pool.map(one, range(jobs)))
        wall = time.perf_counter() - start
        written = sum(1 for i in range(jobs) if shimmed and (folder / f"exit.{i}").read_text().strip() == "exit 0")
    if any(codes) or written != (jobs if shimmed else 0):
        raise CheckFailed(f"sandbox floor: {sum(1 for c in codes if c)} failed, {written} of {jobs} exit files say exit 0")
    return wall


def run_parallel(jobs: int, concurrency: int, command: list[str] | None = None) -> float:
    """GNU parallel running ``command`` (default ``true``) ``jobs`` times: ``-N0`` adds no argument
    from its input line, ``-q`` quotes the command's words for the shell it starts."""
    lines = "".join(f"{i}\n" for i in range(1, jobs + 1)).encode()
    argv = (
        ["parallel", f"-j{concurrency}", "true"] if command is None else ["parallel", f"-j{concurrency}", "-N0", "-q", *command]
    )
    start = time.perf_counter()
    proc = subprocess.run(argv, input=lines, capture_output=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise CheckFailed(f"GNU parallel exited {proc.returncode}: {err}")
    return wall


def run_parallel_bwrap(jobs: int, concurrency: int) -> float:
    """GNU parallel starting what "bubblewrap alone" starts (the same argv around ``true``): the
    peer doing the sandboxed run's work."""
    with tempfile.TemporaryDirectory(prefix="bench-parallel-bwrap-") as tmp:
        argv = sandbox_floor_argv(Path(tmp), 0, shimmed=False)
        assert argv is not None
        return run_parallel(jobs, concurrency, argv)


def sandbox_runtime_available() -> tuple[str | None, str]:
    """(the installed sandbox-runtime's version, "") or (None, why its row cannot run here)."""
    if shutil.which("node") is None:
        return None, "node not found (sandbox-runtime is a node package)"
    try:
        version = json.loads((SANDBOX_RUNTIME_PACKAGE / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return None, "@anthropic-ai/sandbox-runtime not installed in bench/node_modules (run: bash bench/setup.sh)"
    missing = [tool for tool in ("bwrap", "socat", "rg") if shutil.which(tool) is None]
    if missing:
        return None, f"sandbox-runtime needs {', '.join(missing)} (run: bash bench/setup.sh)"
    return str(version), ""


def run_sandbox_runtime(jobs: int, concurrency: int, node_cpu: list[float] | None = None) -> float:
    """bench/sandbox_runtime_noop.mjs: sandbox-runtime initialized once, then ``jobs`` wrapped
    ``true`` spawned from node, ``concurrency`` at once. Its own clock (first wrap to last exit,
    not the initialize); node's CPU for the same span goes to ``node_cpu``."""
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-runtime-") as tmp:
        proc = subprocess.run(
            ["node", str(SANDBOX_RUNTIME_SCRIPT), str(jobs), str(concurrency), tmp],
            cwd=SANDBOX_RUNTIME_SCRIPT.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=max(600.0, jobs * 1.0),
        )
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        figures = json.loads(lines[-1])
    except (IndexError, ValueError):
        err = proc.stderr.decode(errors="replace").strip()[-800:]
        raise CheckFailed(f"sandbox-runtime: exited {proc.returncode} without its figures: {err}") from None
    if proc.returncode != 0 or figures.get("failed"):
        raise CheckFailed(f"sandbox-runtime: {figures.get('failed')} of {jobs} wrapped commands failed (exit {proc.returncode})")
    if node_cpu is not None:
        node_cpu.append(float(figures["cpu_s"]))
    return float(figures["wall_s"])


def parallel_available() -> str | None:
    """GNU parallel's version line, or None (missing, or moreutils' different `parallel`)."""
    if not shutil.which("parallel"):
        return None
    try:
        out = subprocess.run(["parallel", "--version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.decode(errors="replace").splitlines()[:1]
    return first[0] if first and "GNU parallel" in first[0] else None


def tmpfs_dir() -> str | None:
    """/dev/shm when it is a tmpfs and the default workspaces are not on one already: the
    diagnostic run that tells the file system's share of the orchestrator's time."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or not os.access(shm, os.W_OK):
        return None
    if " on tmpfs " not in filesystem_of(shm) or " on tmpfs " in filesystem_of(tempfile.gettempdir()):
        return None
    return shm


def _mount_of(path: str) -> tuple[str, str, str] | None:
    """(device, mount point, type) of the file system holding ``path``, from /proc/mounts (the longest
    matching mount point), or None where /proc does not say."""
    try:
        mounts = [line.split()[:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    real = os.path.realpath(path)
    best = max(
        (m for m in mounts if len(m) == 3 and (real == m[1] or real.startswith(m[1].rstrip("/") + "/"))),
        key=lambda m: len(m[1]),
        default=None,
    )
    return (best[0], best[1], best[2]) if best else None


def filesystem_of(path: str) -> str:
    """``/tmp on ext4 (/dev/vda, mounted at /)``, or just the path."""
    found = _mount_of(path)
    return f"{path} on {found[2]} ({found[0]}, mounted at {found[1]})" if found else path


def journal_of(path: str) -> bool | None:
    """Whether the ext4 file system holding ``path`` keeps a journal (its device has a /proc/fs/jbd2
    entry, ``<device>-<journal inode>``); None for another file system or where /proc does not say.
    Without one, ext4 steps over every inode deleted in the last minutes at each file it creates
    (``recently_deleted``), so what ran before charges the orchestrator's CPU per worker."""
    found = _mount_of(path)
    if found is None or found[2] != "ext4" or not found[0].startswith("/"):
        return None
    device = os.path.basename(os.path.realpath(found[0]))
    try:
        journals = os.listdir("/proc/fs/jbd2")
    except FileNotFoundError:
        return False  # no journaled file system is mounted
    except OSError:
        return None
    return any(name.rpartition("-")[0] == device for name in journals)


def creation_cpu_ms(parent: str, kept: list[Path], files: int = 300) -> float:
    """This thread's CPU per file made (created empty and closed) in a fresh folder under ``parent``:
    what the file system charges each of the few files a worker's run makes. The folder joins
    ``kept``, removed with the workspaces after the last run (a deletion now would charge the runs)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-creation-", dir=parent))
    kept.append(folder)
    start = time.thread_time()
    for i in range(files):
        os.close(os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.thread_time() - start) / files * 1000


def creation_words(parent: str, cost: float) -> str:
    """The file creation probe's line: its cost, and why it moves on an ext4 without a journal."""
    words = f"file creation under {parent}: {cost:.3f} ms of CPU a new file"
    if journal_of(parent) is False:
        words += (
            " (ext4 without a journal: each new file steps over the inodes deleted in the last minutes,"
            " so this figure, and the orchestrator's CPU with it, depends on what ran before)"
        )
    return words


def mountinfo() -> list[tuple[str, str, str, list[str]]]:
    """This process's mounts from /proc/self/mountinfo: (the folder of its file system mounted,
    its mount point, its type, its super options). Raises OSError where /proc does not say."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mine, _, fs = line.partition(" - ")
        mine_f, fs_f = mine.split(), fs.split()
        if len(mine_f) >= 5 and len(fs_f) >= 3:
            mounts.append((mine_f[3], mine_f[4], fs_f[0], fs_f[2].split(",")))
    return mounts


def memory_hierarchy_v1(mounts: list[tuple[str, str, str, list[str]]] | None = None) -> str | None:
    """The mount point of the cgroup v1 memory hierarchy where this process sees it whole (not a
    container's part of it); None without one, or "" where it sees a part only. ``mounts``:
    ``mountinfo()``, where the caller read it."""
    found = next((m for m in mounts or mountinfo() if m[2] == "cgroup" and "memory" in m[3]), None)
    if found is None:
        return None
    return found[1] if found[0] == "/" else ""


def removed_memory_cgroups() -> int | None:
    """Memory cgroups the kernel still keeps after their removal: removed while page cache was
    charged to them, they stay until that cache is reclaimed. None where it cannot be told. On
    cgroup v2 the root's ``cgroup.stat`` counts them; on v1, /proc/cgroups counts every memory
    cgroup, live or removed, and the live ones are the folders of the memory hierarchy, where this
    process sees it whole (``memory_hierarchy_v1``)."""
    try:
        mounts = mountinfo()
        v1 = memory_hierarchy_v1(mounts)
        if v1 is None:
            v2 = next((m for m in mounts if m[2] == "cgroup2" and m[0] == "/"), None)
            if v2 is None:
                return None
            stat = Path(v2[1], "cgroup.stat").read_text()
            return next(int(line.split()[1]) for line in stat.splitlines() if line.startswith("nr_dying_descendants "))
        if not v1:
            return None
        counted = next(
            int(f[2]) for f in (line.split() for line in Path("/proc/cgroups").read_text().splitlines()) if f[0] == "memory"
        )
        live = sum(1 for _ in os.walk(v1))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return max(0, counted - live)


def machine_busy_s() -> float | None:
    """The CPU seconds the whole machine has spent busy since it booted (/proc/stat: user, nice,
    system, irq and softirq of every CPU; not idle, iowait or steal); None where /proc does not say.
    The difference over a run is every process's CPU in it: the orchestrator's server, supervisor,
    shims, sandboxes and proxy, or a peer's processes, with whatever else ran (run it alone)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        if fields[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    except (OSError, ValueError, IndexError):
        return None
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def removed_cgroups_words(found: int | None) -> str:
    """The removed memory cgroups probe's line."""
    if found is None:
        return "memory cgroups kept after their removal: n/a"
    return (
        f"memory cgroups kept after their removal: {found} (each stays until the page cache charged to it is"
        " reclaimed; root's `sync; echo 3 > /proc/sys/vm/drop_caches` frees them, and the runs after"
        " that ran cheaper here: bench/README.md, 29 Nov)"
    )


# -- reporting -----------------------------------------------------------------------
def load_text() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: a figure needs its load)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, timeout=30).stdout.decode().strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="no-op processes per method (default 1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="processes alive at once (default 16)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each method, interleaved; the median is reported (default 3)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument(
        "--only",
        choices=(
            "orchestrator",
            "popen",
            "parallel",
            "tmpfs",
            "host-network",
            "unsandboxed",
            "sandbox-floor",
            "bwrap-alone",
            "parallel-bwrap",
            "sandbox-runtime",
        ),
        action="append",
        help="run only this method (repeatable; for profiling)",
    )
    parser.add_argument(
        "--no-tmpfs", action="store_true", help="skip the diagnostic orchestrator run with its workspace on /dev/shm"
    )
    parser.add_argument("--keep", action="store_true", help="keep the orchestrator's temp workspaces")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.repeat < 1:
        parser.error("--jobs, --concurrency and --repeat must be at least 1")
    if args.concurrency > 1024 or args.jobs > 10_000:
        parser.error("the orchestrator accepts at most 1024 workers at once and 10000 tasks per job")

    shm = tmpfs_dir()
    parent = tempfile.gettempdir()  # where the workspaces go
    can_sandbox = sandbox_floor_argv(Path(parent), 0) is not None
    default = [
        "orchestrator",
        "popen",
        "parallel",
        "unsandboxed",
        *(["bwrap-alone", "parallel-bwrap", "sandbox-floor", "host-network", "sandbox-runtime"] if can_sandbox else []),
    ]
    methods = args.only or [*default, *(["tmpfs"] if shm and not args.no_tmpfs else [])]
    version = parallel_available() if {"parallel", "parallel-bwrap"} & set(methods) else None
    nproc = os.cpu_count()
    print(f"bench_engine: {args.jobs} no-op jobs (`true`), {args.concurrency} at a time, {args.repeat} run(s) each, interleaved")
    print(f"machine: nproc={nproc}, {platform.system()} {platform.release()}, Python {platform.python_version()}")
    if "orchestrator" in methods:
        print(f"orchestrator workspaces: {filesystem_of(parent)} (set TMPDIR to move them)")
    if "parallel" in methods:
        print(f"GNU parallel: {version or 'not found'}")
    srt_version, srt_missing = sandbox_runtime_available() if "sandbox-runtime" in methods else (None, "")
    if srt_version:
        print(f"sandbox-runtime: @anthropic-ai/sandbox-runtime {srt_version}, node {node_version()}")
    print(f"load average at the start: {load_text()}")

    walls: dict[str, list[float]] = {m: [] for m in methods}
    machine_cpu: dict[str, list[float]] = {m: [] for m in methods}  # every process's CPU over each run
    skipped: dict[str, str] = {}
    for method in ("parallel", "parallel-bwrap"):
        if method in methods and version is None:
            skipped[method] = "GNU parallel not installed (run: bash bench/setup.sh)"
    if "sandbox-runtime" in methods and srt_version is None:
        skipped["sandbox-runtime"] = srt_missing
    if "tmpfs" in methods and shm is None:
        skipped["tmpfs"] = "no writable tmpfs at /dev/shm, or the workspaces are on tmpfs already"
    elif "tmpfs" in methods:
        print(f"diagnostic run: the same orchestrator job with its workspace on {filesystem_of(shm)}")
    cpu: dict[str, list[float]] = {
        m: [] for m in ("orchestrator", "unsandboxed", "host-network", "tmpfs")
    }  # the engine's process, per orchestrator run
    node_cpu: list[float] = []  # sandbox-runtime's node process, per run (not its sandboxes')
    runners = {
        "orchestrator": lambda: run_orchestrator(args.jobs, args.concurrency, workspaces, server_cpu=cpu["orchestrator"]),
        "popen": lambda: run_popen(args.jobs, args.concurrency),
        "parallel": lambda: run_parallel(args.jobs, args.concurrency),
        "tmpfs": lambda: run_orchestrator(args.jobs, args.concurrency, workspaces, parent=shm, server_cpu=cpu["tmpfs"]),
        "host-network": lambda: run_orchestrator(
            args.jobs, args.concurrency, workspaces, network="host", server_cpu=cpu["host-network"]
        ),
        "unsandboxed": lambda: run_orchestrator(
            args.jobs, args.concurrency, workspaces, sandbox="off", server_cpu=cpu["unsandboxed"]
        ),
        "sandbox-floor": lambda: run_sandbox_floor(args.jobs, args.concurrency),
        "bwrap-alone": lambda: run_sandbox_floor(args.jobs, args.concurrency, shimmed=False),
        "parallel-bwrap": lambda: run_parallel_bwrap(args.jobs, args.concurrency),
        "sandbox-runtime": lambda: run_sandbox_runtime(args.jobs, args.concurrency, node_cpu),
    }
    if not can_sandbox:
        for method in ("host-network", "sandbox-floor", "bwrap-alone", "parallel-bwrap", "sandbox-runtime"):
            if method in methods:
                skipped[method] = "this machine cannot sandbox workers (bubblewrap or perl missing): every run is unsandboxed"
    workspaces: list[Path] = []
    creation = {"start": creation_cpu_ms(parent, workspaces)}
    print(creation_words(parent, creation["start"]))
    removed_cgroups = {"start": removed_memory_cgroups()}
    print(removed_cgroups_words(removed_cgroups["start"]))
    try:
        for r in range(1, args.repeat + 1):
            for method in methods:
                if method in skipped:
                    continue
                busy = machine_busy_s()
                wall = runners[method]()
                after = machine_busy_s()
                walls[method].append(wall)
                if busy is not None and after is not None:
                    machine_cpu[method].append(after - busy)
                print(
                    f"  run {r}/{args.repeat} {method:<15} {wall:8.3f} s  {wall / args.jobs * 1000:7.3f} ms/job"
                    f"  (load {load_text()})",
                    flush=True,
                )
        creation["end"] = creation_cpu_ms(parent, workspaces)
        print(f"file creation under {parent} after the runs: {creation['end']:.3f} ms of CPU a new file")
        removed_cgroups["end"] = removed_memory_cgroups()
        print(f"after the runs, {removed_cgroups_words(removed_cgroups['end'])}")
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}")
        args.keep = True  # leave the evidence
        return 1
    finally:
        for base in workspaces:
            if args.keep:
                print(f"kept orchestrator workspace {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)

    median = {m: statistics.median(v) if v else None for m, v in walls.items()}
    par, pop = median.get("parallel"), median.get("popen")
    labels = {
        "orchestrator": "orchestrator",
        "popen": "bare Popen",
        "parallel": "GNU parallel",
        "tmpfs": "orch. on tmpfs",
        "host-network": "orch. host net",
        "unsandboxed": "orch. no sandbox",
        "sandbox-floor": "sandbox floor",
        "bwrap-alone": "bubblewrap alone",
        "parallel-bwrap": "parallel-bwrap",
        "sandbox-runtime": "sandbox-runtime",
    }
    print()
    print(
        f"{'method':<17}{'wall s':>10}{'ms/job':>10}{'x parallel':>12}{'x Popen':>10}{'CPU ms/job':>12}"
        f"   (median of {args.repeat}; CPU: the whole machine's)"
    )
    for method in methods:
        if method in skipped:
            print(f"{labels[method]:<17}  SKIPPED: {skipped[method]}")
            continue
        wall = median[method]
        used = f"{statistics.median(machine_cpu[method]) / args.jobs * 1000:.3f}" if machine_cpu[method] else "n/a"
        print(
            f"{labels[method]:<17}{wall:>10.3f}{wall / args.jobs * 1000:>10.3f}{ratio(wall, par):>12}{ratio(wall, pop):>10}"
            f"{used:>12}"
        )
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak_mb = peak_kb / (1024 * 1024) if sys.platform == "darwin" else peak_kb / 1024
    print()
    print(f"peak RSS of this process: {peak_mb:.1f} MiB; nproc: {nproc}; load average at the end: {load_text()}")
    orch, off = median.get("orchestrator"), median.get("unsandboxed")
    alone, par_bwrap = median.get("bwrap-alone"), median.get("parallel-bwrap")
    results = [
        ("orchestrator (sandboxed, the default)/sandbox-runtime", orch, median.get("sandbox-runtime"), TARGET_SANDBOX_RUNTIME),
        ("orchestrator without the sandbox/parallel", off, par, TARGET),
    ]
    for name, a, b, target in results:
        if a is not None and b:
            print(f"RESULT {name} = {a / b:.2f}x (target <= {target:.2f}x) {'met' if a / b <= target else 'not met'}")
        else:
            print(f"RESULT {name} = n/a (a row was not run or was skipped) (target <= {target:.2f}x)")
    for method in ("orchestrator", "host-network", "unsandboxed"):
        if cpu.get(method):
            per = statistics.median(cpu[method]) / args.jobs * 1000
            verdict = "met" if per <= TARGET_SERVER_CPU_MS else "not met"
            print(
                f"RESULT server CPU per worker ({labels[method]}) = {per:.2f} ms (the engine's process, every thread)"
                f" (target <= {TARGET_SERVER_CPU_MS:.1f} ms) {verdict}"
            )
    if cpu.get("tmpfs") and cpu.get("orchestrator"):
        on_tmpfs, here = (statistics.median(cpu[m]) / args.jobs * 1000 for m in ("tmpfs", "orchestrator"))
        print(
            f"DIAGNOSTIC server CPU per worker on tmpfs = {on_tmpfs:.2f} ms against {here:.2f} ms under {parent}"
            f" (the file system's share: {here - on_tmpfs:.2f} ms)"
        )
    if node_cpu:
        per = statistics.median(node_cpu) / args.jobs * 1000
        print(f"DIAGNOSTIC sandbox-runtime's node process CPU per command = {per:.2f} ms (its proxies and spawns, not bwrap's)")
    for name, a, b in (
        ("orchestrator (sandboxed, the default)/sandbox-runtime", "orchestrator", "sandbox-runtime"),
        ("orchestrator without the sandbox/parallel", "unsandboxed", "parallel"),
    ):
        if machine_cpu.get(a) and machine_cpu.get(b):
            mine, theirs = (statistics.median(machine_cpu[m]) / args.jobs * 1000 for m in (a, b))
            print(
                f"DIAGNOSTIC the machine's CPU per job, every process, {name} = {mine:.2f} ms / {theirs:.2f} ms"
                f" = {mine / theirs:.2f}x"
            )
    retired = [
        ("orchestrator (sandboxed, the default)/bubblewrap alone", orch, alone, TARGET_SANDBOXED),
        ("orchestrator (sandboxed)/parallel-bwrap", orch, par_bwrap, TARGET),
        ("orchestrator without the sandbox/Popen", off, pop, TARGET_POPEN),
        ("orchestrator (sandbox_network allow)/(host)", orch, median.get("host-network"), TARGET_ALLOW),
    ]
    for name, a, b, target in retired:
        if a is not None and b:
            print(f"DIAGNOSTIC {name} = {a / b:.2f}x (retired target <= {target:.2f}x)")
    floor = median.get("sandbox-floor")
    if floor is not None and alone:
        print(f"DIAGNOSTIC sandbox floor/bubblewrap alone = {floor / alone:.2f}x (the shim inside bubblewrap)")
    if orch is not None and floor:
        print(f"DIAGNOSTIC orchestrator/sandbox floor = {orch / floor:.2f}x (what the engine adds to a sandboxed start)")
    on_tmpfs = median.get("tmpfs")
    if on_tmpfs is not None and par:
        share = f"; the file system took {1 - on_tmpfs / orch:.0%} of the orchestrator's wall" if orch else ""
        print(
            f"DIAGNOSTIC orchestrator on tmpfs/parallel = {on_tmpfs / par:.2f}x{share} (not the result: "
            "the result is the workspace where users keep it)"
        )

    if args.json:
        doc = {
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "nproc": nproc,
            "python": platform.python_version(),
            "parallel_version": version,
            "runs_s": walls,
            "median_s": median,
            "ms_per_job": {m: (w / args.jobs * 1000 if w is not None else None) for m, w in median.items()},
            "ratio_to_parallel": {m: (w / par if w is not None and par else None) for m, w in median.items()},
            "ratio_to_popen": {m: (w / pop if w is not None and pop else None) for m, w in median.items()},
            "skipped": skipped,
            "peak_rss_mib": round(peak_mb, 1),
            "target": TARGET,
            "target_popen": TARGET_POPEN,
            "target_sandboxed": TARGET_SANDBOXED,
            "server_cpu_s": cpu,
            "sandbox_runtime_version": srt_version,
            "sandbox_runtime_node_cpu_s": node_cpu,
            "load_average_end": load_text(),
            "file_creation_ms": creation,
            "removed_memory_cgroups": removed_cgroups,
            "machine_cpu_s": machine_cpu,
            "workspace_filesystem": filesystem_of(parent),
            "workspace_journal": journal_of(parent),
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
