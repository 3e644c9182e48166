"""Hostile workers ("bad input and attacks"): real processes, a real host repository with
the orchestrator's folder inside it, worktree isolation, ``command`` workers running
tests/hostile_worker.py, and the real sandbox (bubblewrap).

For each attack: what refused or stopped it and in how long (a table printed at the end of the
run), and the host snapshot unchanged. With ``workers.sandbox: off`` the same attacks succeed:
asserted, so what docs/sandbox.md says is not protected is proven. The core (writes outside, git on
the host, a child that drops its tag) also runs on a real node under the rq executor. Root and an
ordinary user see the same results here (run as both: see docs/sandbox.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from orchestrator.models import JobRecord, WorkerRecord, WorkerStatus
from orchestrator.process.backends import probe
from orchestrator.process.cgroups import hierarchies

from .conftest import only_worker, processes_with, wait_until
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

needs_bwrap = pytest.mark.usefixtures("backend")  # a sandboxed test: run under each backend the machine offers
BACKENDS = ("bubblewrap", "landlock")
HERE = Path(__file__).resolve().parent
WORKER = HERE / "hostile_worker.py"
SECRET = "hostile-suite-api-key-0123456789abcdef"
KILL_GRACE = 1.0
ROWS: list[tuple[str, str, str, str, str]] = []  # mode, attack, outcome, how long, host unchanged


@pytest.fixture(scope="module", autouse=True)
def table(request):
    """Print what refused or stopped each attack, and in how long, once the module's tests ran."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if not ROWS or reporter is None or capture is None:
        return
    user = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    widths = [max(len(r[i]) for r in [*ROWS, HEADER]) for i in range(5)]
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(f"hostile workers ({user}): what refused or stopped each attack, and in how long")
        for line in [HEADER, tuple("-" * w for w in widths), *ROWS]:
            reporter.write_line(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    if os.environ.get("HOSTILE_TABLE"):  # a file to keep the table in (bench/README.md quotes one run)
        with open(os.environ["HOSTILE_TABLE"], "a", encoding="utf-8") as out:
            out.writelines(" | ".join(line) + "\n" for line in ROWS)


HEADER = ("mode", "attack", "outcome", "how long", "host unchanged")


def row(mode: str, attack: str, outcome: str, seconds: float | None, unchanged: bool) -> None:
    took = "" if seconds is None else (f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s")
    ROWS.append((mode, attack, outcome, took, "yes" if unchanged else "NO"))


@dataclass
class Arena:
    """A host repository on branch ``dev`` (so ``main`` can be moved) with a stash, an untracked
    file, the orchestrator's folder holding an API key in config.yaml, a HOME of the test's, and a
    process of the test's standing for the server (the workers must not be able to kill it)."""

    host: Path
    folder: Path
    home: Path
    targets: Path
    decoy: subprocess.Popen
    pids_file: Path
    tmp: Path
    engines: list = field(default_factory=list)
    backend: str = "auto"  # workers.sandbox_backend: the backend fixture's, for a sandboxed test

    def engine(self, sandbox: str, **sections: dict):
        workers = {
            "sandbox": sandbox,
            "sandbox_backend": self.backend,
            "max_retries": 0,
            "kill_grace": KILL_GRACE,
            "default_timeout": 60,
            "env": {"HOME": str(self.home), **IDENTITY},
            **sections.pop("workers", {}),
        }
        engine = host_engine(self.folder, workers=workers, **sections)
        self.engines.append(engine)
        return engine

    def task(self, *groups: str) -> str:
        return f"'{sys.executable}' '{WORKER}' '{self.targets}' {' '.join(groups)}"

    def snapshot(self) -> dict[str, object]:
        """helpers.worktree.snapshot, plus the index as a tree, ignored files and $HOME."""
        found = snapshot(self.host, self.folder)
        found["write_tree"] = git(self.host, "write-tree")
        found["ignored"] = git(self.host, "status", "--porcelain", "--ignored")
        found["home"] = (self.home / ".bashrc").read_text()
        return found


IDENTITY = {"GIT_AUTHOR_NAME": "W", "GIT_AUTHOR_EMAIL": "w@x", "GIT_COMMITTER_NAME": "W", "GIT_COMMITTER_EMAIL": "w@x"}


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each sandbox backend this machine offers (skipped only where it truly lacks it); the engine runs
    with ``workers.sandbox_backend`` pinned to it (for Landlock: bubblewrap is not used, as where it cannot start)."""
    found = probe(backend=request.param)
    if not found.available:
        pytest.skip(f"no {request.param} here: {found.reason}")
    request.getfixturevalue("arena").backend = request.param
    return request.param


@pytest.fixture
def arena(tmp_path):
    host, folder = make_host(tmp_path)
    git(host, "checkout", "-q", "-b", "dev")
    (host / "app.py").write_text("print('stashed')\n")
    git(host, "stash", "push", "-q", "-m", "the user's stash", env=user_env())
    (host / "notes.txt").write_text("untracked notes\n")
    (folder / "config.yaml").write_text(f"api:\n  api_key: {SECRET}\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the user's\n")
    decoy = subprocess.Popen(["sleep", "300"], start_new_session=True)
    # In a folder of its own made now: under Landlock, a file made later directly in a folder on the way
    # to the emptied workspace (tmp_path) is unreadable (docs/sandbox.md), one in a folder that exists is not
    (tmp_path / "shared").mkdir()
    pids_file = tmp_path / "shared" / "pids.json"
    targets = tmp_path / "targets.json"
    spec = {"host": str(host), "folder": str(folder), "secret": SECRET, "server": os.getpid(), "sibling": "worker_4"}
    spec |= {"pids_file": str(pids_file), "hog_mb": 400, "disk_mb": 600, "log_mb": 300}
    targets.write_text(json.dumps(spec))
    made = Arena(host, folder, home, targets, decoy, pids_file, tmp_path)
    yield made
    for engine in made.engines:
        engine.shutdown(timeout=10)
    decoy.kill()
    decoy.wait()


def lines(engine, job: JobRecord, name: str) -> dict[str, dict]:
    """The HOSTILE lines of a worker's log: attack -> what happened."""
    text = engine.workspace.worker_log(job.root_id, 0, name).read_text(errors="replace")
    found = {}
    for line in text.splitlines():
        if line.startswith("HOSTILE "):
            got = json.loads(line.removeprefix("HOSTILE "))
            found[got["name"]] = got
    return found


def lines_of(engine, job: JobRecord, name: str) -> list[str]:
    """A worker's whole log, line by line (what an assertion shows when its HOSTILE lines are missing)."""
    return engine.workspace.worker_log(job.root_id, 0, name).read_text(errors="replace").splitlines()


def worker(engine, job: JobRecord, name: str) -> WorkerRecord:
    return engine.queries.find_worker(job.id, 0, name)


def duration(record: WorkerRecord) -> float:
    attempt = record.attempts[-1]
    return (attempt.ended_at or time.time()) - attempt.started_at


def sleepers(marker: str) -> list[int]:
    """Live processes running ``sleep <marker>`` (a child that dropped its tag: found by its argv)."""
    return processes_with(f"sleep\x00{marker}\x00")


def victim_pid(engine, job: JobRecord) -> int:
    """The host pid of the sibling worker's ``sleep`` once it runs."""

    def running() -> int | None:
        record = worker(engine, job, "worker_4")
        if record.status is not WorkerStatus.RUNNING:
            return None
        for pid in engine.runner.tagged(engine.worker_tag(record)):
            try:
                if psutil.Process(pid).cmdline()[:1] == ["sleep"]:
                    return pid
            except psutil.Error:
                continue
        return None

    return wait_until(running, 20, "the sibling worker's sleep")


def drops_its_tag(marker: str) -> str:
    """A task whose child leaves its session and its environment (``setsid env -i``), then sleeps
    with ``marker`` as its argument; the task ends only once the child has dropped its tag (it made a
    file from the tagless shell), so the end-of-attempt sweep never meets it still carrying the tag
    (it did under load: ``setsid`` not yet replaced by ``env -i``, which the sweep rightly killed)."""
    return (
        'f="${TMPDIR:-/tmp}/dropped.$$"; '
        f'setsid env -i sh -c \'touch "$1"; exec sleep {marker}\' sh "$f" </dev/null >/dev/null 2>&1 & '
        'n=0; until [ -e "$f" ] || [ $n -ge 1500 ]; do sleep 0.02; n=$((n+1)); done; echo dropped its tag'
    )


def run_attacks(arena: Arena, engine, mode: str) -> dict:
    """One job of six workers: writes outside, reads and kills, git on the host, a sibling that
    sleeps (the writes' and kills' target), a child that drops its tag, and a legit commit."""
    marker = f"{random.randint(3000, 9000)}.{random.randint(100, 999)}"
    tasks = [
        arena.task("writes"),
        arena.task("reads", "kills"),
        arena.task("git"),
        "exec sleep 5",
        drops_its_tag(marker),
        "echo mine > mine.txt && git add mine.txt && git commit -q --no-verify -m 'the worker commits' && echo more > more.txt",
    ]
    before = arena.snapshot()
    job = engine.submission.submit("hostile", {"max_workers": 6}, tasks)
    sleeping = victim_pid(engine, job)
    # Made aside and renamed in: the worker polls for the file, and one seen empty, mid-write,
    # read as no JSON and ended its kills unreported
    aside = arena.pids_file.with_suffix(".part")
    aside.write_text(json.dumps({"the server (a stand-in)": arena.decoy.pid, "a sibling worker": sleeping}))
    aside.replace(arena.pids_file)
    dropper = wait_until(lambda: (w := worker(engine, job, "worker_5")).status.terminal and w, 30, "the tag-dropper's end")
    ended = dropper.attempts[-1].ended_at or time.time()
    held = mode != "off" and (arena.backend != "landlock" or bool(hierarchies().bases))  # a PID namespace, or a cgroup
    alive = wait_until(lambda: (not sleepers(marker) or not held) and time.time(), KILL_GRACE + 5, "its child gone")
    done = engine.queries.wait(job.id, 120)
    assert done.status.terminal, f"job still {done.status.value}"
    seen = {}
    for name in ("worker_1", "worker_2", "worker_3"):
        seen.update(lines(engine, job, name))
    gone = max(0.0, alive - ended)
    return {"job": job, "before": before, "after": arena.snapshot(), "seen": seen, "marker": marker, "gone": gone}


def record_rows(mode: str, seen: dict, unchanged: bool) -> None:
    for name, got in seen.items():
        outcome = "done" if got["done"] else f"refused: {got['detail']}"
        row(mode, name, outcome if got["done"] else outcome[:70], got["ms"] / 1000, unchanged)


# -- the sandbox on ----------------------------------------------------------------------------
# In its sandbox the repository's own path is the worker's checkout (process/sandbox.py ProjectView): these
# write and commit its own work there, on its own branch; the user's tree is proven unchanged from outside.
# The orchestrator's folder is tracked by the arena's repository: the worker's own copy of it is there too.
AT_HOST_PATH = {
    "write host tracked file",
    "write host new file",
    "git add -A (host index)",
    "git commit (host)",
    "write config.yaml",
}
# Under Landlock every git a worker runs is told its own git dir, index and work tree (git/worker_gitdir.py):
# git on the user's repository (``git -C <host>``) acts on those, its own, and the user's repository is proven
# unchanged from outside. (``git stash drop`` finds no stash there: its git dir holds no reflog of yours.)
ON_OWN_GIT_DIR = {
    "git branch -f main HEAD~1",
    "git update-ref refs/heads/x HEAD",
    "git checkout -b y",
    "git add -A (host index)",
    "git commit (host)",
}


@needs_bwrap
def test_a_sandboxed_worker_is_refused_everything_outside_its_checkout_and_the_host_is_as_it_was(arena):
    engine = arena.engine("on")
    got = run_attacks(arena, engine, "on")
    job, seen = got["job"], got["seen"]
    unchanged = got["after"] == got["before"]
    record_rows("sandbox on", seen, unchanged)
    expected = {
        "write host tracked file",
        "write host new file",
        "write $HOME",
        "write config.yaml",
        "write workspace state",
        "write sibling worktree",
        "read config.yaml",
        "see the server's pid",
        "kill the server (a stand-in)",
        "kill a sibling worker",
        "git branch -f main HEAD~1",
        "git update-ref refs/heads/x HEAD",
        "git stash drop",
        "git checkout -b y",
        "git add -A (host index)",
        "git commit (host)",
    }
    assert set(seen) == expected
    landlock = arena.backend == "landlock"
    # Landlock: no project view (the host's path is the user's tree, read-only; its git there is its own git
    # dir's) and no PID namespace (it sees every process; its signals stay in its own domain: ABI 6's scope)
    done = {"see the server's pid", *ON_OWN_GIT_DIR} if landlock else AT_HOST_PATH
    assert {name for name, g in seen.items() if g["done"]} == done, seen
    # hidden: bound over by /dev/null, which the sandbox's nodev mount makes unreadable (EACCES), not empty; or,
    # the folder being tracked, the worker's own checkout's copy (as committed, without the key). Landlock:
    # refused ("Permission denied"), the user's file at that path.
    detail = seen["read config.yaml"]["detail"]
    assert detail == "PermissionError: Permission denied" or (
        not landlock and detail.startswith("OSError: config.yaml reads as ") and detail.endswith(" bytes, no API key")
    ), detail
    refused = "PermissionError" if landlock else "ProcessLookupError"  # another domain / not in its PID namespace
    assert refused in seen["kill a sibling worker"]["detail"]
    assert refused in seen["kill the server (a stand-in)"]["detail"] or not landlock
    # Proven from outside, not from what the worker said:
    assert unchanged, {k: (got["before"][k], got["after"][k]) for k in got["before"] if got["before"][k] != got["after"][k]}
    assert SECRET in (arena.folder / "config.yaml").read_text()  # hidden from the worker, not changed
    assert arena.decoy.poll() is None
    sibling = worker(engine, job, "worker_4")
    assert sibling.status is WorkerStatus.SUCCESS, sibling.exit_reason
    assert "PLANTED" not in git(arena.host, "show", f"{sibling.commit}:app.py")
    for record in engine.queries.snapshot(job.root_id)[1]:
        assert "PLANTED" not in engine.workspace.job_dir(job.id).joinpath("state", "workers", f"{record.key}.json").read_text()
    # The child that dropped its tag (setsid env -i) dies with its attempt's PID namespace; under Landlock
    # (none) with its attempt's cgroup where there is one, and outlives it where there is none.
    if not landlock:
        assert not sleepers(got["marker"])
        row("sandbox on", "setsid env -i sleep & exit", "killed with its PID namespace", got["gone"], unchanged)
    elif hierarchies().bases:
        assert not sleepers(got["marker"])
        row("landlock", "setsid env -i sleep & exit", "killed with its attempt's cgroup", got["gone"], unchanged)
    else:
        survivors = sleepers(got["marker"])
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        assert survivors, "no cgroup and no PID namespace: it outlives its attempt (docs/sandbox.md)"
        row("landlock", "setsid env -i sleep & exit", "survives its attempt (no cgroup here)", None, unchanged)
    # A worker's own commit in its worktree still works, and its files land on its branch.
    legit = worker(engine, job, "worker_6")
    assert legit.status is WorkerStatus.SUCCESS, engine.workspace.worker_log(job.root_id, 0, "worker_6").read_text()
    assert "the worker commits" in git(arena.host, "log", "--format=%s", legit.branch)
    assert {"mine.txt", "more.txt"} <= set(git(arena.host, "ls-tree", "--name-only", legit.commit).split())
    row("sandbox on", "a commit in its own worktree", "works: on its branch", duration(legit), unchanged)


def test_with_the_sandbox_off_the_same_attacks_succeed(arena):
    """What is not protected without the sandbox (workers.sandbox: off): everything above."""
    engine = arena.engine("off")
    got = run_attacks(arena, engine, "off")
    job, seen = got["job"], got["seen"]
    held = bool(hierarchies().bases)  # where the attempt gets a cgroup (root here), it holds the tree even unconfined
    try:
        if held:
            wait_until(lambda: not sleepers(got["marker"]), 5, "the tag-dropping child killed with its cgroup")
        else:
            survivors = wait_until(lambda: sleepers(got["marker"]), 5, "the tag-dropping child")
            time.sleep(1.0)
            assert sleepers(got["marker"]) == survivors, "it outlives its attempt"
    finally:
        for pid in sleepers(got["marker"]):
            os.kill(pid, signal.SIGKILL)
    unchanged = got["after"] == got["before"]
    record_rows("sandbox off", seen, unchanged)
    fate = "killed with its attempt's cgroup" if held else "survives its attempt"
    row("sandbox off", "setsid env -i sleep & exit", fate, None, unchanged)
    assert [name for name, g in seen.items() if not g["done"]] == [], seen
    assert not unchanged
    assert got["after"]["stash"] == "" and "PLANTED" in (arena.host / "app.py").read_text()
    assert "PLANTED" in (arena.home / ".bashrc").read_text() and "PLANTED" in (arena.folder / "config.yaml").read_text()
    assert arena.decoy.wait(5) == -signal.SIGKILL
    assert worker(engine, job, "worker_4").status is not WorkerStatus.SUCCESS  # its sleep was killed


# A shell's loop (each child a small ``sleep``, so the process cap, not the memory cap, is what it meets).
BOMB = (
    "i=0; while [ $i -lt 2000 ]; do sleep 120 & i=$((i+1)); "
    '[ $((i % 50)) -eq 0 ] && echo "HOSTILE-PROGRESS forks=$i" >&2; done; wait'
)


# -- caps: what stops a tree that grows -------------------------------------------------------
@needs_bwrap
def test_a_sandboxed_tree_past_its_caps_is_stopped_and_nothing_of_it_survives(arena):
    """A bounded fork bomb against max_processes, memory past max_memory_mb (tagged, and with its
    tag dropped), a file past max_disk_mb and a log past max_log_mb, as fast as each can."""
    caps = {"max_processes": 50, "max_memory_mb": 200, "max_disk_mb": 20, "max_log_mb": 5, "monitor_interval": 0.25}
    engine = arena.engine("on", workers=caps)
    before = arena.snapshot()
    tasks = {
        "fork bomb (2,000 sleeps) vs max_processes 50": BOMB,
        "hold 400 MB vs max_memory_mb 200": arena.task("hog"),
        "hold 400 MB, tag dropped (env -i)": f"exec env -i {arena.task('hog')}",
        "write 600 MB vs max_disk_mb 20": arena.task("disk"),
        "log 300 MB vs max_log_mb 5": arena.task("flood"),
    }
    timeout = 15.0
    job = engine.submission.submit("caps", {"max_workers": 5, "default_timeout": timeout}, list(tasks.values()))
    done = engine.queries.wait(job.id, 120)
    assert done.status.terminal
    unchanged = arena.snapshot() == before
    for i, attack in enumerate(tasks, start=1):
        record = worker(engine, job, f"worker_{i}")
        log = engine.workspace.worker_log(job.root_id, 0, record.name)
        progress = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("HOSTILE-PROGRESS")]
        reached = progress[-1].removeprefix("HOSTILE-PROGRESS ") if progress else "-"
        outcome = f"{record.status.value}: {record.exit_reason or record.attempts[-1].end_reason}; reached {reached}"
        # A worker the kernel stops before the monitor's first sample (a fork bomb at pids.max, in
        # well under monitor_interval) has no sampled peaks: None, not 0
        peak = "not sampled" if record.peak_rss is None else f"{record.peak_processes} procs, {record.peak_rss / 2**20:.0f} MB"
        outcome += f"; peak {peak}; log {log.stat().st_size / 2**20:.1f} MB"
        row("sandbox on", attack, outcome, duration(record), unchanged)
        assert record.status is not WorkerStatus.SUCCESS, outcome
        assert duration(record) < timeout + KILL_GRACE + 5, outcome
        assert engine.runner.tagged(engine.worker_tag(record)) == []
    hogs = [p.pid for p in psutil.process_iter(["cmdline"]) if str(arena.targets) in " ".join(p.info["cmdline"] or [])]
    assert hogs == [], "a process of the job outlived it"
    assert unchanged


# -- holes: git the orchestrator runs outside the sandbox, on what a worker left --------------
def planted_job(arena: Arena, engine, script: str) -> tuple[JobRecord, dict, dict]:
    attack = arena.tmp / "attack.sh"
    attack.write_text(script)
    before = arena.snapshot()
    job = engine.submission.submit("plant", {"max_workers": 1}, [f"sh '{attack}'; echo change > changed.txt"])
    assert engine.queries.wait(job.id, 60).status.terminal
    return job, before, arena.snapshot()


@needs_bwrap
def test_a_worker_cannot_point_its_head_at_the_users_branch_for_the_orchestrators_commit(arena):
    """HEAD is the worktree's own file, but the orchestrator commits the worker's work outside the
    sandbox: a HEAD pointing at main would have that commit move the user's main."""
    engine = arena.engine("on")
    job, before, after = planted_job(arena, engine, "git symbolic-ref HEAD refs/heads/main\n")
    if arena.backend == "landlock":
        # Its git's HEAD is its own git dir's (git/worker_gitdir.py): the worker moves that copy, and the
        # orchestrator's commit, in its sandbox, is on its branch again (HEAD written anew): main stays
        assert after == before
        done = only_worker(engine, job)
        assert done.status is WorkerStatus.SUCCESS and done.commit, done.exit_reason
        assert git(arena.host, "show", f"{done.commit}:changed.txt").strip() == "change"
        assert git(arena.host, "rev-parse", f"refs/heads/{done.branch}").strip() == done.commit
        row("landlock", "point HEAD at main", "its own git dir's HEAD moved; its work committed on its branch", None, True)
        return
    # git writes HEAD.lock and renames it over HEAD: a mount point cannot be renamed over
    assert (
        "unable to write symref for HEAD: Device or resource busy"
        in engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    )
    assert after == before
    row("sandbox on", "point HEAD at main", "refused: HEAD pinned (EBUSY)", None, after == before)


@needs_bwrap
def test_a_worker_cannot_swap_its_git_pointer_for_a_repository_whose_config_runs_a_command(arena):
    """core.fsmonitor in a repository of the worker's own would run when the orchestrator's
    ``git add -A`` looks at the worktree: unconfined, with the user's rights."""
    escaped = arena.tmp / "escaped"
    evil = arena.tmp / "evil.sh"
    evil.write_text(f"#!/bin/sh\necho unconfined > '{escaped}'\n")
    evil.chmod(0o755)
    script = (
        "admin=$(git rev-parse --absolute-git-dir)\n"
        'git init -q "$TMPDIR/own" && git -C "$TMPDIR/own" config core.fsmonitor ' + f"'{evil}'\n"
        'echo "gitdir: $TMPDIR/own/.git" > .git || rm -f .git || echo refused-pointer\n'
        'echo "$TMPDIR/own/.git" > "$admin/commondir" || echo refused-commondir\n'
    )
    job, before, after = planted_job(arena, engine := arena.engine("on"), script)
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    # Landlock: the pointer and commondir are writable (their folders are), but the git that reads them
    # runs in the worker's sandbox: its fsmonitor runs confined, never with the user's rights
    assert ("refused-pointer" in log and "refused-commondir" in log) or arena.backend == "landlock"
    assert not escaped.exists()
    assert after == before
    row("sandbox on", "own .git pointer with core.fsmonitor", "refused: pointer pinned", None, after == before)


@needs_bwrap
def test_a_worker_cannot_turn_a_reflog_into_a_link_to_a_file_of_the_users(arena, backend):
    """git appends to a reflog through a symbolic link: the orchestrator's commit would write the host's files."""
    script = (
        "admin=$(git rev-parse --absolute-git-dir); common=$(git rev-parse --git-common-dir); branch=$(git symbolic-ref HEAD)\n"
        f'ln -sf "{arena.host}/app.py" "$common/logs/$branch" || echo refused-branch-log\n'
        f'ln -sf "{arena.host}/.env" "$admin/logs/HEAD" || echo refused-head-log\n'
        f'ln -sf "{arena.host}/notes.txt" "$common/logs/$branch-next" || echo refused-new-log\n'
    )
    engine = arena.engine("on")
    job, before, after = planted_job(arena, engine, script)
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    # Landlock: its git dir is its own (git/worker_gitdir.py), whose logs/HEAD is writable with its folder
    # (its branch's reflog folder is not made yet): the link is made there, and removed before the
    # orchestrator's git in its sandbox (which appends to it) runs; no git outside reads that git dir
    pinned = ("branch", "new") if arena.backend == "landlock" else ("branch", "head", "new")
    assert all(f"refused-{what}-log" in log for what in pinned), log
    if arena.backend == "landlock":
        own = engine.workspace.tree_git_dirs(job.root_id)
        assert f"{own}/" in log and "refused-head-log" not in log, log  # made, in its own git dir
        assert not [p for p in own.rglob("*") if p.is_symlink() and "logs" in p.parts], list(own.rglob("*"))
        assert only_worker(engine, job).status is WorkerStatus.SUCCESS
    assert after == before
    outcome = "refused: reflogs pinned" if arena.backend != "landlock" else "its own logs/HEAD link removed before git ran"
    row("sandbox on", "reflog as a link to a host file", outcome, None, after == before)


@needs_bwrap
def test_a_worker_cannot_make_its_branch_a_link_to_the_users_branch(arena):
    script = (
        'common=$(git rev-parse --git-common-dir); branch=$(git symbolic-ref HEAD)\nln -sf refs/heads/main "$common/$branch"\n'
    )
    engine = arena.engine("on")
    _, before, after = planted_job(arena, engine, script)
    row(
        "sandbox on",
        "its branch ref as a link to main",
        "undone before the commit" if after == before else "NOT refused: main moved",
        None,
        after == before,
    )
    assert after == before


@needs_bwrap
def test_a_worker_cannot_delete_the_hosts_history(arena):
    """The repository's object store is read-only to a worker: its own commits write a store of its
    own (git/worker_objects.py), and what it deletes, there or through its alternates, is its own."""
    script = (
        'common=$(git rev-parse --git-common-dir)\necho "seen $(git rev-list --count HEAD) commits"\n'
        '{ echo "$common/objects"; cat "$common/objects/info/alternates"; } > "$TMPDIR/stores"\n'
        "while IFS= read -r store; do\n"
        '  echo "objects in a store: $(find "$store" -type f -path "*/[0-9a-f][0-9a-f]/*" | wc -l)"\n'
        '  find "$store" -type f -path "*/[0-9a-f][0-9a-f]/*" -delete 2>/dev/null || echo refused-delete\n'
        'done < "$TMPDIR/stores"\n'
    )
    history = git(arena.host, "rev-list", "--count", "HEAD").strip()
    engine = arena.engine("on")
    job, before, after = planted_job(arena, engine, script)
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    assert f"seen {history} commits" in log and "refused-delete" in log, log  # it saw the history, and could not delete it
    intact = subprocess.run(["git", "-C", str(arena.host), "fsck", "--no-dangling"], capture_output=True).returncode == 0
    row("sandbox on", "delete the object store", "refused" if intact else "NOT refused: history gone", None, intact)
    assert intact and after == before
    assert only_worker(engine, job).status is WorkerStatus.SUCCESS  # its own work still landed


@needs_bwrap
def test_a_worker_that_commits_and_packs_itself_has_its_commits_checked_into_the_repository(arena):
    """A worker's own commits (aider's, a CLI's ``git commit``) and a ``git gc`` of them live in its
    own store until the orchestrator checks them into the repository's; one it forged is left out."""
    commit = "git -c user.name=W -c user.email=w@x commit -q --no-verify -m"  # (the host's pre-commit hook fails)
    script = (
        f"echo one > own.txt && git add own.txt && {commit} 'own commit' && echo committed\n"
        "git repack -adq && echo packed\n"
        f"echo two > own2.txt && git add own2.txt && {commit} 'own second' && echo committed-loose\n"
    )
    engine = arena.engine("on")
    job, before, after = planted_job(arena, engine, script)
    worker = only_worker(engine, job)
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    assert {"committed", "packed", "committed-loose"} <= set(log.splitlines()), log
    assert worker.status is WorkerStatus.SUCCESS, log
    subjects = git(arena.host, "log", "--format=%s", str(worker.commit)).splitlines()
    assert subjects[1:3] == ["own second", "own commit"]  # above them, the orchestrator's commit of changed.txt
    assert subprocess.run(["git", "-C", str(arena.host), "fsck", "--no-dangling"], capture_output=True).returncode == 0
    assert after == before


@needs_bwrap
def test_committing_workers_whose_git_walks_every_branch_see_their_own_and_land(arena):
    """Three workers commit at once and run a git that walks every branch (``log --all``,
    ``repack -a``): it works (their objects are in one store, git/worker_objects.py), each sees its
    own branch and no sibling's (its view of the tree's branches, git/worker_refs.py), and each
    one's commit lands on its real branch."""
    commit = "git -c user.name=W -c user.email=w@x commit -q --no-verify -m"
    # Landlock: a worker reads only the siblings' worktrees there when it starts, so its ``repack -ad``
    # may drop a later sibling's commit not yet taken (docs/sandbox.md names it); there, a repack that
    # deletes nothing (seen: the third worker's commit replaced by the orchestrator's own of its files)
    repack = "git repack -adq" if arena.backend == "bubblewrap" else "git repack -q"
    script = (
        f"od -An -N8 -tx1 /dev/urandom > mine.txt && git add mine.txt && {commit} mine && sleep 1\n"
        'git log --all --format=%s | grep -c "^mine$" | sed "s/^/mine seen: /"\n'
        f"{repack} 2>/dev/null && echo packed\n"
    )
    attack = arena.tmp / "siblings.sh"
    attack.write_text(script)
    engine = arena.engine("on")
    before = arena.snapshot()
    job = engine.submission.submit("three", {"max_workers": 3}, [f"sh '{attack}'"] * 3)
    assert engine.queries.wait(job.id, 60).status.terminal
    _, workers = engine.queries.snapshot(job.id)
    logs = [engine.workspace.worker_log(job.root_id, 0, w.name).read_text() for w in workers]
    assert all(w.status is WorkerStatus.SUCCESS for w in workers), logs
    # Landlock: its git dir lists its tree's worktrees at their tips (git/worker_gitdir.py: so that its gc
    # keeps what they committed), so ``log --all`` walks its siblings' commits too; never their branches
    seen = ("mine seen: 1",) if arena.backend == "bubblewrap" else ("mine seen: 1", "mine seen: 2", "mine seen: 3")
    assert all(any(s in log for s in seen) and "packed" in log for log in logs), logs
    assert all(git(arena.host, "log", "-1", "--format=%s", str(w.commit)).strip() == "mine" for w in workers)
    assert subprocess.run(["git", "-C", str(arena.host), "fsck", "--no-dangling"], capture_output=True).returncode == 0
    assert arena.snapshot() == before


@needs_bwrap
def test_eight_workers_committing_at_once_have_every_object_taken_and_no_false_alarm(arena):
    """Eight sibling workers commit at once (two commits each, the second after a ``git gc`` of the
    first: their git packs and prunes what is in the shared store while siblings' takes run), three
    jobs in a row: every commit lands, the repository is whole, and no worker's log says an object
    was "not taken" (issue 47, item 6: sibling takes had moved what another take had listed)."""
    commit = "git -c user.name=W -c user.email=w@x commit -q --no-verify -m"
    # Landlock: a worker's git reads only the siblings' worktrees it was granted at its start (all of them
    # only while no other tree has a worktree: rounds 2 and 3 have), so a gc there may drop the commits of a
    # sibling started after it (docs/sandbox.md: a gap); there its git packs what it has, deleting nothing.
    pack = "git gc -q --prune=now" if arena.backend == "bubblewrap" else "git repack -q"
    script = (
        f"od -An -N8 -tx1 /dev/urandom > one.txt && git add one.txt && {commit} one\n"
        f"{pack} 2>/dev/null; echo packed\n"
        f"od -An -N8 -tx1 /dev/urandom > two.txt && git add two.txt && {commit} two && echo committed\n"
    )
    attack = arena.tmp / "eight.sh"
    attack.write_text(script)
    engine = arena.engine("on")
    before = arena.snapshot()
    for round in range(3):
        job = engine.submission.submit(f"eight {round}", {"max_workers": 8}, [f"sh '{attack}'"] * 8)
        assert engine.queries.wait(job.id, 120).status.terminal
        _, workers = engine.queries.snapshot(job.id)
        logs = {w.name: engine.workspace.worker_log(job.root_id, 0, w.name).read_text() for w in workers}
        assert len(workers) == 8 and all(w.status is WorkerStatus.SUCCESS for w in workers), logs
        assert all("committed" in log and "not taken" not in log for log in logs.values()), logs
        for w in workers:
            assert git(arena.host, "log", "--format=%s", str(w.commit)).splitlines()[:2] == ["two", "one"]
        assert subprocess.run(["git", "-C", str(arena.host), "fsck", "--no-dangling"], capture_output=True).returncode == 0
    assert arena.snapshot() == before


FORGE = """import os, subprocess, sys, zlib
def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
oid, store = git("rev-parse", "HEAD:app.py"), git("rev-parse", "--git-path", "objects")
body = b"FORGED\\n"
os.makedirs(os.path.join(store, oid[:2]), exist_ok=True)
with open(os.path.join(store, oid[:2], oid[2:]), "wb") as out:
    out.write(zlib.compress(b"blob %d\\0" % len(body) + body))
said = git("cat-file", "blob", oid)
open(os.path.join(store, "info", "alternates"), "w").close()  # its store no longer reads the repository's
print("planted", oid, "its own git reads:", said, flush=True)
"""


@needs_bwrap
def test_a_worker_of_one_tree_cannot_plant_an_object_that_another_trees_git_reads(arena):
    """Issue 48, item 2. A worker writes, in the store its git writes, a loose object under the name
    of ``HEAD:app.py`` with other content (git does not hash a loose object it reads), empties that
    store's alternates, and stays.
    A worker of another tree then reads that blob through its git and commits what it read: it reads
    the repository's app.py, not the forgery, and its tree's branch holds the real file. Each tree
    has a store of its own (git/worker_objects.py); with one for the repository, the other tree's
    git searched the forger's store first and committed the forged content."""
    forge = arena.tmp / "forge.py"
    forge.write_text(FORGE)
    engine = arena.engine("on")
    before = arena.snapshot()
    real = git(arena.host, "show", "HEAD:app.py")
    forger = engine.submission.submit("forger", {"max_workers": 1}, [f"'{sys.executable}' '{forge}' && sleep 60"])
    forger_log = engine.workspace.worker_log(forger.root_id, 0, "worker_1")
    said = wait_until(
        lambda: forger_log.exists() and "planted" in forger_log.read_text() and forger_log.read_text(), 30, "the plant"
    )
    assert "its own git reads: FORGED" in said, said  # the forgery works where it was written
    reader = engine.submission.submit("reader", {"max_workers": 1}, ["git cat-file blob $(git rev-parse HEAD:app.py) > seen.txt"])
    assert engine.queries.wait(reader.id, 60).status.terminal
    engine.cancel(forger.id)
    assert engine.queries.wait(forger.id, 30).status.terminal
    read = only_worker(engine, reader)
    assert read.status is WorkerStatus.SUCCESS and read.commit
    seen = git(arena.host, "show", f"{read.commit}:seen.txt")
    row("sandbox on", "plant an object another tree reads", "read the real one" if seen == real else "FORGED read", None, True)
    assert seen == real and "FORGED" not in seen
    assert subprocess.run(["git", "-C", str(arena.host), "fsck", "--no-dangling"], capture_output=True).returncode == 0
    assert arena.snapshot() == before


LOOK = """git for-each-ref --format='ref: %(refname)'
git log --all --format='subject: %s'
git worktree list --porcelain | sed 's/^/worktree: /'
git reflog show --all --format='reflog: %gs' 2>/dev/null
common=$(cd "$(sed 's/^gitdir: //' .git)" && cd "$(cat commondir)" && pwd)
ls -R "$common/refs" "$common/logs" "$common/worktrees" 2>&1 | sed 's/^/direct: /'
sed 's/^/direct: /' "$common/packed-refs" 2>&1
env -u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE git for-each-ref --format='unset: %(refname)' 2>&1
env -u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE git log --all --format='unset: %s' 2>&1
echo looked
"""


@needs_bwrap
def test_a_worker_sees_through_git_no_other_trees_branches_commits_or_worktrees(arena):
    """Issue 48, item 8. Two trees ran before (the first's branches then packed, as a user's
    ``git gc`` packs them; the second's loose), each with a commit of its worker's own. A worker of a
    third tree lists every ref, walks every branch (``git log --all``, which walks other worktrees'
    HEADs too), lists the worktrees and the reflogs, through git and reading the repository's git dir
    itself, and with git's variables unset: under bubblewrap it sees the user's branches and
    its own, nothing of the other trees. Under bubblewrap their ref folders, reflogs and worktrees'
    git dirs are shown empty and packed-refs without them (git/worker_refs.py); Landlock cannot show
    a folder of the git dir empty, so there the repository's git dir is not granted and the worker's
    git is told a git dir of its own (git/worker_gitdir.py). With the git dir shared, 14 lines of the
    other trees were seen under Landlock."""
    engine = arena.engine("on")
    commit = "git -c user.name=W -c user.email=w@x commit -q --no-verify -m"
    others = []
    for n in (1, 2):
        job = engine.submission.submit(
            f"other {n}", {"max_workers": 1}, [f"echo {n} > own.txt && git add own.txt && {commit} other-tree-{n}-subject"]
        )
        assert engine.queries.wait(job.id, 60).status.terminal
        assert only_worker(engine, job).status is WorkerStatus.SUCCESS
        others.append(job.root_id)
        if n == 1:
            git(arena.host, "pack-refs", "--all")
    assert any(others[0] in line for line in (arena.host / ".git" / "packed-refs").read_text().splitlines())
    look = arena.tmp / "look.sh"
    look.write_text(LOOK)
    before = arena.snapshot()
    job = engine.submission.submit("looker", {"max_workers": 1}, [f"sh '{look}'"])
    assert engine.queries.wait(job.id, 60).status.terminal
    log = engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text()
    assert "looked" in log and "ref: refs/heads/main" in log and "ref: refs/heads/dev" in log, log
    assert f"ref: refs/heads/orchestrator/{job.root_id}/worker_1" in log, log  # its own
    leaked = [line for line in log.splitlines() if any(o in line for o in others) or "other-tree-" in line]
    row("sandbox on", "read other trees' branches through git", f"{len(leaked)} lines of them seen", None, True)
    assert leaked == [], log
    if arena.backend == "landlock":  # its worktree's real git dir leads to a git dir it cannot read: git fails
        assert "unset: refs/heads/main" not in log and "Permission denied" in log, log
    assert only_worker(engine, job).status is WorkerStatus.SUCCESS
    assert arena.snapshot() == before


GATE_LOOK = """git rev-parse HEAD | sed 's/^/head: /'
git for-each-ref --format='ref: %(refname)'
git log --all --format='subject: %s'
git worktree list --porcelain | sed 's/^/worktree: /'
git reflog show --all --format='reflog: %gs' 2>/dev/null
common=$(cd "$(sed 's/^gitdir: //' .git)" && cd "$(cat commondir)" && pwd)
ls -R "$common/refs" "$common/logs" "$common/worktrees" 2>&1 | sed 's/^/direct: /'
sed 's/^/direct: /' "$common/packed-refs" 2>&1
cat "$common"/worktrees/*/HEAD 2>&1 | sed 's/^/direct: /'
env -u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE git for-each-ref --format='unset: %(refname)' 2>&1
env -u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE git log --all --format='unset: %s' 2>&1
echo looked
"""


@needs_bwrap
def test_the_result_gate_sees_through_git_no_other_trees_branches_commits_or_worktrees(arena):
    """Issue 48, item 8, for the result gate (delivery/result_gate.py), which runs the project's gates,
    worker-written code, in a detached worktree of the merged candidate. Two bystander trees, each a
    worktree on its branch with a commit whose subject is a secret (the first's branch then packed);
    the gate lists every ref, walks every branch, lists the worktrees and reflogs, through git, reading
    the repository's git dir itself, and with git's variables unset: it sees its own HEAD at the
    candidate and nothing of the other trees. Under Landlock its git is told a git dir of its own
    (git/worker_gitdir.py, detached), the repository's not granted; with the git dir shared, the
    bystanders' branches, subjects and worktrees were all seen there."""
    from orchestrator.config import load_settings
    from orchestrator.delivery.result_gate import ResultGate
    from orchestrator.models import JobStatus
    from orchestrator.workspace.layout import Workspace

    root = "a1b2c3d4e5f6"
    settings = load_settings(
        base_dir=arena.folder, environ={}, overrides={"workers": {"sandbox": "on", "sandbox_backend": arena.backend}}
    )
    workspace = Workspace(settings.base_dir / "workspace")
    secrets_seen = []
    bystanders = []
    for n in (1, 2):
        other = f"0bbe{n}0bbe{n}0b"
        place = workspace.job_dir(other) / "worker_1"
        git(arena.host, "worktree", "add", "-q", "-b", f"orchestrator/{other}/worker_1", str(place), "main")
        secret = f"bystander-{n}-secret-{random.randint(0, 1 << 30)}"
        (place / "b.txt").write_text(secret)
        git(place, "add", "b.txt")
        git(place, "commit", "-q", "--no-verify", "-m", secret, env=user_env())
        secrets_seen.append(secret)
        bystanders.append(other)
        if n == 1:
            git(arena.host, "pack-refs", "--all")
    assert bystanders[0] in (arena.host / ".git" / "packed-refs").read_text()
    candidate = git(arena.host, "rev-parse", "main").strip()
    job = JobRecord(id=root, root_id=root, request="x", status=JobStatus.COMPLETED, worker_names=["w1"])
    job.config = dataclasses.replace(
        job.config, gates=[{"name": "look", "run": ["sh", "-c", GATE_LOOK], "required": True, "timeout": 60}]
    )
    record = WorkerRecord(root, root, "w1", 1, 0, "task", "command", status=WorkerStatus.SUCCESS)
    gate = ResultGate(settings=settings, workspace=workspace, repo=arena.host, job=job, workers=[record])
    spec = gate.confinement.spec_at(root, None, gate.tree, gate.tmp, job.config)
    assert spec is not None and spec.backend.value == arena.backend
    before = arena.snapshot()
    try:
        verdict = gate.judge(["w1"], candidate)
    finally:
        gate.close()
    log = (workspace.logs_dir(root) / f"{root}.result_gate_look.log").read_text(errors="replace")
    assert verdict.passed, (verdict, log)
    assert "looked" in log and f"head: {candidate}" in log and "ref: refs/heads/main" in log, log
    leaked = [line for line in log.splitlines() if any(o in line for o in [*bystanders, *secrets_seen])]
    row("sandbox on", "the result gate reads other trees' branches", f"{len(leaked)} lines of them seen", None, True)
    assert leaked == [], log
    if arena.backend == "landlock":  # its worktree's real git dir leads to a git dir it cannot read: git fails
        assert "unset: refs/heads/main" not in log and "Permission denied" in log, log
    assert arena.snapshot() == before


@needs_bwrap
def test_a_hostile_resolver_is_confined_as_a_worker_and_its_refused_resolution_leaves_the_host_as_it_was(arena):
    """merge_strategy resolve: the resolver runs worker-written code's sandbox too (delivery/resolving.py)."""
    resolver = [sys.executable, str(WORKER), str(arena.targets), "writes", "git"]
    engine = arena.engine("on", git={"resolver_kind": "command", "resolver_command": resolver, "resolver_retries": 0})
    before = arena.snapshot()
    same_line = "sed -i s/v2/{}/ app.py"
    job = engine.submission.submit("resolve", {"merge_strategy": "resolve"}, [same_line.format("w1"), same_line.format("w2")])
    done = engine.queries.wait(job.id, 120)
    (resolution,) = done.merge.outcome.resolutions
    assert not resolution.accepted and resolution.reason == "conflict markers are left in: app.py"
    log = engine.workspace.job_dir(job.id) / resolution.attempts[0].log_path
    seen = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("HOSTILE "):
            got = json.loads(line.removeprefix("HOSTILE "))
            seen[got["name"]] = got
    assert {"write host tracked file", "write config.yaml", "git branch -f main HEAD~1", "git stash drop"} <= set(seen), seen
    # Its own merge worktree there; under Landlock its git's ref moves land in its git dir of its own (the host's unchanged)
    done_here = AT_HOST_PATH | ON_OWN_GIT_DIR if arena.backend == "landlock" else AT_HOST_PATH
    assert {name for name, g in seen.items() if g["done"]} <= done_here, seen
    unchanged = arena.snapshot() == before
    row("sandbox on", "a resolver's writes and git", "refused: its resolution refused", None, unchanged)
    assert unchanged


# -- what a worker sees: the host's sockets, the rest of the workspace ----------------------------
def listeners(arena: Arena) -> tuple[socket.socket, socket.socket, str, str]:
    """A path socket (where the worker can see it, read-only) and an abstract one, both of the host,
    both listening: the stand-ins for the Docker socket and the session bus."""
    path = str(arena.tmp / "host-service.sock")
    abstract = f"orchestrator-hostile-{os.getpid()}-{random.randint(0, 1 << 30)}"
    made = []
    for address in (path, "\0" + abstract):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(8)
        listener.setblocking(False)
        made.append(listener)
    return made[0], made[1], path, abstract


def reached(listener: socket.socket) -> bool:
    """Whether anything connected to ``listener`` (the proof from outside, not the worker's word)."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def retarget(arena: Arena, **more: str) -> None:
    data = json.loads(arena.targets.read_text())
    arena.targets.write_text(json.dumps({**data, **more}))


@needs_bwrap
@pytest.mark.parametrize("unix_sockets", [False, True], ids=["default", "sandbox_unix_sockets"])
def test_a_sandboxed_worker_reaches_no_host_unix_socket_and_inherits_no_agent(arena, monkeypatch, unix_sockets):
    """Issue 36 item 6. A read-only bind does not stop ``connect()``: by default ``socket(AF_UNIX)``
    is refused in the sandbox (a seccomp filter), so neither socket is reached, and the agent and bus
    variables are not inherited; ``socketpair`` still works. With ``workers.sandbox_unix_sockets: true``
    (and SSH_AUTH_SOCK named in env_passthrough) the same worker reaches both: what the setting opens."""
    path_listener, abstract_listener, path, abstract = listeners(arena)
    with path_listener, abstract_listener:
        monkeypatch.setenv("SSH_AUTH_SOCK", path)
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={path}")
        retarget(arena, unix_path=path, unix_abstract=abstract)
        settings = {"sandbox_unix_sockets": True, "env_passthrough": ["SSH_AUTH_SOCK"]} if unix_sockets else {}
        engine = arena.engine("on", workers=settings)
        before = arena.snapshot()
        job = engine.submission.submit("sockets", {"max_workers": 1}, [arena.task("sockets")])
        assert engine.queries.wait(job.id, 60).status.terminal
        seen = lines(engine, job, "worker_1")
        unchanged = arena.snapshot() == before
        record_rows("sandbox on" + (", unix_sockets" if unix_sockets else ""), seen, unchanged)
        assert unchanged
        assert set(seen) == {
            "connect a host path socket",
            "connect a host abstract socket",
            "use the inherited SSH_AUTH_SOCK",
            "socketpair (child-process pipes)",
            "list /run",
        }, lines_of(engine, job, "worker_1")
        assert seen["socketpair (child-process pipes)"]["done"], seen
        if unix_sockets and arena.backend == "landlock":
            # Landlock's scope (ABI 6) keeps abstract sockets outside the worker's domain out of reach even so
            assert seen["connect a host path socket"]["done"] and seen["use the inherited SSH_AUTH_SOCK"]["done"], seen
            assert seen["connect a host abstract socket"]["detail"] == "PermissionError: Operation not permitted", seen
            assert reached(path_listener) and not reached(abstract_listener)
        elif unix_sockets:
            assert seen["connect a host path socket"]["done"], seen
            assert seen["use the inherited SSH_AUTH_SOCK"]["done"], seen
            assert reached(path_listener)
            # An abstract socket belongs to a network namespace: the worker's own (sandbox_network: allow) holds none of the host's.
            assert not seen["connect a host abstract socket"]["done"] and not reached(abstract_listener), seen
        else:
            refused = [seen[name] for name in ("connect a host path socket", "connect a host abstract socket")]
            assert [g["detail"] for g in refused] == ["PermissionError: Operation not permitted"] * 2, seen
            assert "no SSH_AUTH_SOCK nor DBUS_SESSION_BUS_ADDRESS" in seen["use the inherited SSH_AUTH_SOCK"]["detail"]
            assert not reached(path_listener) and not reached(abstract_listener)
        assert not seen["list /run"]["done"], seen  # the host's runtime folders are empty either way


@needs_bwrap
def test_a_sandboxed_worker_sees_no_other_tree_of_the_workspace_nor_the_outbox(arena):
    """Issue 36 item 7. Another tree's log and job record (its tasks), the webhook outbox (a waiting job's signed
    approval links, as the real outbox writes them), the job index and a sibling worker's record:
    none is in the worker's sandbox, whose workspace shows its own tree only."""
    from orchestrator.webhooks.approval_links import links as approval_links
    from orchestrator.webhooks.outbox import Delivery, Outbox

    engine = arena.engine("on")
    other_secret = f"tree-a-secret-{random.randint(0, 1 << 30)}"
    first = engine.submission.submit("tree a", {"max_workers": 1}, [f"echo {other_secret}; echo {other_secret} > a.txt"])
    assert engine.queries.wait(first.id, 60).status.terminal
    workspace = engine.workspace
    other_log = workspace.worker_log(first.root_id, 0, "worker_1")
    other_record = workspace.job_record_path(first.id)
    assert other_secret in other_log.read_text() and other_secret in other_record.read_text()
    signed = approval_links(SECRET, first.id, time.time(), 3600)
    outbox = Outbox(workspace.root, keep=10)
    body = json.dumps({"type": "job.waiting", "links": signed})
    outbox.add(
        Delivery("dlv_hostile", "evt_hostile", "job.waiting", "http://127.0.0.1:9/", "endpoint", first.id, body, time.time())
    )
    outbox_file = outbox.folder / "dlv_hostile.json"
    index_file = workspace.root / ".index" / "jobs.sqlite3"
    retarget(
        arena,
        workspace=str(workspace.root),
        other_log=str(other_log),
        other_record=str(other_record),
        other_secret=other_secret,
        outbox_file=str(outbox_file),
        index=str(index_file),
        go_file=str(go := arena.tmp / "go"),
    )
    before = arena.snapshot()
    second = engine.submission.submit("tree b", {"max_workers": 2}, ["sleep 1", arena.task("snoops")])
    sibling = workspace.worker_record_path(second.root_id, 0, "worker_1")
    retarget(arena, sibling_record=str(sibling))
    wait_until(sibling.exists, 20, "the sibling's record")
    go.touch()
    assert engine.queries.wait(second.id, 60).status.terminal
    seen = lines(engine, second, "worker_2")
    unchanged = arena.snapshot() == before
    record_rows("sandbox on", seen, unchanged)
    assert set(seen) == {
        "read another tree's log",
        "read another tree's record",
        "read the outbox's signed links",
        "read the job index",
        "read a sibling worker's record",
        "list the workspace",
    }, lines_of(engine, second, "worker_2")
    assert [name for name, g in seen.items() if g["done"]] == [], seen
    # bubblewrap shows the workspace empty; Landlock refuses what it holds ("Permission denied")
    gone = "PermissionError" if arena.backend == "landlock" else "FileNotFoundError"
    for name in ("read another tree's log", "read the outbox's signed links", "read a sibling worker's record"):
        assert seen[name]["detail"].startswith(gone), seen[name]
    # All of it is there outside: hidden from the worker, not missing.
    assert "token=" in outbox_file.read_text() and index_file.exists() and sibling.exists()
    assert unchanged
    mine = worker(engine, second, "worker_2")
    assert mine.status is WorkerStatus.SUCCESS, lines_of(engine, second, "worker_2")


# -- on a node ------------------------------------------------------------------------------------
@needs_bwrap
def test_on_a_node_under_the_rq_executor_the_attempt_is_confined_the_same(arena, redis_server, unique_prefix):
    """The sandbox travels in the attempt (AttemptSpec.sandbox) and the node confines it: writes
    outside, git on the host, a tag-dropping child and the host's Unix sockets, on a real node
    against a real redis-server."""
    from .cluster_fixtures import start_node, stop_all

    path_listener, abstract_listener, path, abstract = listeners(arena)
    retarget(arena, unix_path=path, unix_abstract=abstract)

    distributed = {"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix, "lease": 3}
    engine = arena.engine("on", distributed=distributed)  # the server first: its marker
    # A node builds a worker's environment from its own settings (never the server's workers.env)
    own = {"orchestrator": {"command": ["sh", "-c", "{task}"]}, "workers": {"env": {"HOME": str(arena.home), **IDENTITY}}}
    start_node(
        redis_server.url, unique_prefix, name="n1", kinds="command", slots=4, lease=3, config=own, folder=arena.tmp / "node"
    )
    marker = f"{random.randint(3000, 9000)}.{random.randint(100, 999)}"
    tasks = [
        arena.task("writes"),
        arena.task("git"),
        drops_its_tag(marker),
        "echo mine > mine.txt && git add mine.txt && git commit -q --no-verify -m 'the worker commits'",
        arena.task("sockets"),
    ]
    try:
        before = arena.snapshot()
        job = engine.submission.submit("hostile on a node", {"max_workers": 5}, tasks)
        assert engine.queries.wait(job.id, 120).status.terminal
        # Landlock has no PID namespace: only a cgroup (root here) ends a child that dropped its tag
        held = arena.backend != "landlock" or bool(hierarchies().bases)
        if held:
            gone = wait_until(lambda: not sleepers(marker) and time.time(), KILL_GRACE + 5, "the tag-dropping child gone")
        else:
            assert wait_until(lambda: sleepers(marker), 5, "the tag-dropping child"), "it outlives its attempt here"
            gone = time.time()
        dropper = worker(engine, job, "worker_3")
        after = arena.snapshot()
    finally:
        stop_all()
        for pid in sleepers(marker):
            os.kill(pid, signal.SIGKILL)
    seen = {**lines(engine, job, "worker_1"), **lines(engine, job, "worker_2")}
    record_rows("node (rq), on", seen, after == before)
    row(
        "node (rq), on",
        "setsid env -i sleep & exit",
        "killed with its PID namespace"
        if arena.backend != "landlock"
        else "killed with its cgroup"
        if held
        else "survives (no cgroup)",
        gone - (dropper.attempts[-1].ended_at or gone),
        after == before,
    )
    assert all(w.node == "n1" for w in engine.queries.snapshot(job.root_id)[1])
    ran = {n: (worker(engine, job, n).exit_reason, lines_of(engine, job, n)[-3:]) for n in ("worker_1", "worker_2")}
    done = ON_OWN_GIT_DIR if arena.backend == "landlock" else AT_HOST_PATH  # Landlock: no project view, the user's tree read-only
    assert len(seen) == 12 and {name for name, g in seen.items() if g["done"]} == done, (seen, ran)
    assert after == before
    legit = worker(engine, job, "worker_4")
    assert legit.status is WorkerStatus.SUCCESS and "the worker commits" in git(arena.host, "log", "--format=%s", legit.branch)
    sockets = lines(engine, job, "worker_5")
    record_rows("node (rq), on", sockets, after == before)
    with path_listener, abstract_listener:
        assert not reached(path_listener) and not reached(abstract_listener)
    refused = [sockets[n]["detail"] for n in ("connect a host path socket", "connect a host abstract socket")]
    assert refused == ["PermissionError: Operation not permitted"] * 2, sockets
    assert sockets["socketpair (child-process pipes)"]["done"] and not sockets["list /run"]["done"], sockets
