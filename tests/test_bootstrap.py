"""The bootstrap of a worktree with real git, real repositories made here and
real workers through the engine: ``.worktreeinclude`` copies, a port per worker, ``git.setup``
before the first attempt (once, killed at its timeout), ``git.teardown`` at cleanup. The host is
snapshotted around each job: the bootstrap reads from it and never writes to it."""

from __future__ import annotations

import os
import socket
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.checkouts.bootstrap import MAX_KEPT, PortPool, SetupFailed, _escape, bindable, ignored_made
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.git.sandboxed import CheckoutGit
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.reports.status_document import job_status

from .conftest import observed, run_job, wait_until
from .helpers.worktree import git, snapshot, user_env, workers

pytestmark = pytest.mark.slow

RANGE = "45100-45199"


def _log(engine, job, name="worker_1") -> str:
    return engine.workspace.worker_log(job.id, 0, name).read_text(errors="replace")


def _add_ignored(host, folder):
    """Ignored files of every kind in the host, and a .worktreeinclude naming some of them."""
    (host / ".gitignore").write_text(".env\n*.local\ncache.bin\nsp ace/\n.setup-*\nnode_modules/\n")
    git(host, "add", ".gitignore")
    git(host, "commit", "-q", "--no-verify", "-m", "ignores", env=user_env())
    (host / "config").mkdir()
    (host / "config" / "app.local").write_text("APP=1\n")
    (host / "config" / "run.local").write_text("#!/bin/sh\n")
    (host / "config" / "run.local").chmod(0o750)
    (host / "config" / "out.local").symlink_to("/etc/hostname")  # leads out of the repository
    (host / "config" / "in.local").symlink_to("app.local")  # stays inside
    (host.parent / "elsewhere").write_text("outside\n")
    (host / "config" / "up.local").symlink_to("../../elsewhere")  # relative, and out of the repository
    (host / "cache.bin").write_text("not included\n")
    (host / "sp ace").mkdir()
    (host / "sp ace" / "my secret.env").write_text("spaced\n")
    (host / "notes.txt").write_text("untracked, not ignored\n")
    (host / ".worktreeinclude").write_text(".env\nconfig/*.local\nsp ace/\nnotes.txt\nlate.secret\n")
    # ignored by an uncommitted .gitignore line: the worktree (the base commit's .gitignore) would not ignore it
    (host / "late.secret").write_text("late\n")
    with open(host / ".gitignore", "a") as f:
        f.write("late.secret\n")


def test_worktreeinclude_copies_the_hosts_ignored_matching_files_which_are_never_committed(hosted):
    host, folder, make = hosted
    _add_ignored(host, folder)
    before = snapshot(host, folder)
    engine = make()
    # worker_2 even stops ignoring what was copied: the orchestrator's commit still leaves it out
    unignore = "printf '.setup-*\\n' > .gitignore && echo w2 > b.txt"
    job = run_job(engine, "x", tasks=["cat .env > seen.txt && echo more >> .env && echo w1 > a.txt", unignore])
    assert job.status is JobStatus.COMPLETED, [w.error for w in workers(engine, job).values()]
    for name in ("worker_1", "worker_2"):
        wt = engine.workspace.worker_dir(job.id, 0, name)
        # Each worktree has the included ignored files, with their content and modes
        assert (wt / "config" / "app.local").read_text() == "APP=1\n"
        assert stat.S_IMODE((wt / "config" / "run.local").stat().st_mode) == 0o750
        assert (wt / "sp ace" / "my secret.env").read_text() == "spaced\n"
        assert os.readlink(wt / "config" / "in.local") == "app.local"  # a link inside the repository, as a link
        # ... and nothing else: not a non-matching ignored file, not an unignored one, no link out
        assert not (wt / "cache.bin").exists() and not (wt / "notes.txt").exists()
        assert not os.path.lexists(wt / "config" / "out.local") and not os.path.lexists(wt / "config" / "up.local")
        assert not (wt / "late.secret").exists()  # the worktree's .gitignore does not ignore it
        log = _log(engine, job, name)
        assert "late.secret not copied: the worktree's checkout does not ignore it" in log
        assert "out.local not copied: it is a link that leads out of the repository" in log
    w1 = workers(engine, job)["worker_1"]
    wt1 = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert (wt1 / "seen.txt").read_text() == "SECRET=1\n" and (wt1 / ".env").read_text() == "SECRET=1\nmore\n"
    # The copies stay ignored: the orchestrator's commit took the worker's files and none of them
    committed = git(host, "ls-tree", "-r", "--name-only", w1.commit).split("\n")
    assert "a.txt" in committed and "seen.txt" in committed
    assert not {".env", "config/app.local", "config/run.local", "config/in.local", "sp ace/my secret.env"} & set(committed)
    assert {f["path"] for f in w1.files_changed} == {"a.txt", "seen.txt"}
    w2 = workers(engine, job)["worker_2"]
    assert {f["path"] for f in w2.files_changed} == {".gitignore", "b.txt"}  # and no copied file
    assert snapshot(host, folder) == before  # the host's own .env is untouched


def test_without_a_worktreeinclude_nothing_is_copied(hosted):
    host, folder, make = hosted
    engine = make()
    job = run_job(engine, "x", tasks=["true"])
    assert job.status is JobStatus.COMPLETED
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert not (wt / ".env").exists() and ".worktreeinclude" not in _log(engine, job)


def test_a_worktree_with_nothing_copied_and_no_setup_makes_no_sandbox_for_its_bootstrap(hosted, monkeypatch):
    """The bootstrap runs git in the worker's sandbox only on what a copy or a setup left; with
    neither there is no git to run, so no sandbox is worked out for it (each costs the tree's ref
    view, its worktrees' scan, the proxy's plan): the worker's own attempt makes the one it runs in."""
    from orchestrator.workers.confinement import Confinement

    host, folder, make = hosted
    before = snapshot(host, folder)
    callers: list[str] = []
    real_spec = Confinement.spec

    def spec(self, *args, **kwargs):
        callers.append(sys._getframe(1).f_globals["__name__"])
        return real_spec(self, *args, **kwargs)

    monkeypatch.setattr(Confinement, "spec", spec)
    engine = make()
    job = run_job(engine, "x", tasks=["true", "true"], config={"isolation": "worktree"})
    assert job.status is JobStatus.COMPLETED
    assert callers.count("orchestrator.engine.attempts") == 2, callers  # each worker's attempt: its sandbox
    assert "orchestrator.checkouts.bootstrap" not in callers, callers
    assert snapshot(host, folder) == before


SETUP = (
    'echo "$ORCHESTRATOR_PORT $ORCHESTRATOR_WORKER_DIR $PWD" > .setup-env; echo ran >> "$RUNS"; '
    "echo made > setup-made.txt; mkdir -p node_modules/pkg && echo js > node_modules/pkg/index.js; echo setup says hi"
)
# Attempt 1 records what it saw and fails; the retry (reset to the checkpoint) records it again.
TASK = (
    'cat .setup-env setup-made.txt node_modules/pkg/index.js > "saw_$ORCHESTRATOR_ATTEMPT.txt"; '
    'echo "$ORCHESTRATOR_PORT" > port.txt; echo junk > junk.txt; [ "$ORCHESTRATOR_ATTEMPT" = 2 ]'
)


def test_setup_runs_once_before_the_first_attempt_with_the_port_and_its_work_survives_a_retry(hosted, tmp_path):
    host, folder, make = hosted
    (host / ".gitignore").write_text(".env\n.setup-*\nnode_modules/\n")
    git(host, "commit", "-q", "--no-verify", "-am", "ignores", env=user_env())
    runs = observed(tmp_path) / "runs"
    before = snapshot(host, folder)
    engine = make(
        git={"setup": ["sh", "-c", SETUP], "port_range": RANGE},
        workers={"env": {"RUNS": str(runs)}, "sandbox_writable": [str(runs.parent)]},
    )
    job = run_job(engine, "x", tasks=[TASK], config={"max_retries": 1})
    w = workers(engine, job)["worker_1"]
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert w.status is WorkerStatus.SUCCESS and len(w.attempts) == 2, w.error
    assert runs.read_text() == "ran\n"  # once, not on the retry
    # The setup saw the worker's port and directory, ran in the worktree, and the worker saw its files
    port = w.port
    assert port is not None and 45100 <= port <= 45199
    where = host if w.sandbox == "bubblewrap" else wt  # sandboxed, it works at the repository's own path
    seen = f"{port} {wt} {where}\nmade\njs\n"
    assert (wt / "saw_2.txt").read_text() == seen
    assert (wt / "port.txt").read_text() == f"{port}\n"  # the worker's ORCHESTRATOR_PORT
    log = _log(engine, job)
    assert "setup says hi" in log and "setup: sh -c" in log
    assert "attempt 2 starts from checkpoint" in log  # the retry was reset, and the setup's work survived it
    assert not (wt / "saw_1.txt").exists()  # attempt 1's work went with the reset
    # The setup's unignored file is committed first (attempt 0), so it is the checkpoint; node_modules stays ignored
    assert "Orchestrator-Attempt: 0" in git(host, "log", "--format=%B", w.commit)
    assert w.attempts[0].checkpoint == w.attempts[1].checkpoint == git(host, "rev-parse", f"{w.commit}~1").strip()
    assert "node_modules/pkg/index.js" not in git(host, "ls-tree", "-r", "--name-only", w.commit)
    doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    assert doc["results"]["tasks"][0]["port"] == port
    assert engine.checkout._worktree_for().bootstrap.ports.held() == {}  # released at cleanup
    assert snapshot(host, folder) == before


def test_four_workers_at_once_get_four_distinct_ports_in_the_range_and_their_copies(hosted):
    host, folder, make = hosted
    (host / ".worktreeinclude").write_text(".env\n")
    before = snapshot(host, folder)
    engine = make(git={"port_range": RANGE}, workers={"max_workers": 4, "global_max_workers": 4})
    task = 'echo "$ORCHESTRATOR_PORT" > port.txt; cat .env >> port.txt; sleep 0.5'
    job = run_job(engine, "x", tasks=[task] * 4, config={"max_workers": 4})
    ws = workers(engine, job)
    assert job.status is JobStatus.COMPLETED, [w.error for w in ws.values()]
    ports = {w.port for w in ws.values()}
    assert len(ports) == 4 and all(45100 <= p <= 45199 for p in ports)
    for name, w in ws.items():
        assert (engine.workspace.worker_dir(job.id, 0, name) / "port.txt").read_text() == f"{w.port}\nSECRET=1\n"
        assert ".env" not in git(host, "ls-tree", "-r", "--name-only", w.commit)
    assert snapshot(host, folder) == before
    starts = sorted(a.started_at for w in ws.values() for a in w.attempts)
    ends = sorted(a.ended_at for w in ws.values() for a in w.attempts)
    assert starts[-1] < ends[0]  # the four really held their ports at once


def test_a_range_without_a_free_port_fails_the_worker_before_any_attempt(hosted):
    host, folder, make = hosted
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        engine = make(git={"port_range": f"{port}-{port}"})
        job = run_job(engine, "x", tasks=["echo ran > ran.txt"], config={"max_retries": 2})
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.FAILED and w.attempts == []
    assert w.exit_reason.startswith(f"no free port in git.port_range {port}-{port}") and "widen git.port_range" in w.error


def _busy_first_of_three() -> tuple[socket.socket, int]:
    """A listening socket on a port whose two neighbours are free, below the kernel's ephemeral range
    (an ephemeral port's neighbours are handed to other tests' connections at any moment)."""
    for low in range(20_000, 32_000, 7):
        busy = socket.socket()
        try:
            busy.bind(("127.0.0.1", low))
        except OSError:
            busy.close()
            continue
        busy.listen()
        if all(bindable(low + i) for i in (1, 2)):
            return busy, low
        busy.close()
    raise AssertionError("no three free consecutive ports on 127.0.0.1 between 20000 and 32000")


def test_the_port_pool_skips_ports_held_by_live_workers_or_in_use_and_reuses_released_ones():
    busy, taken = _busy_first_of_three()
    with busy:
        pool = PortPool(f"{taken}-{taken + 2}")
        a, b = pool.reserve("a"), pool.reserve("b")
        assert {a, b} == {taken + 1, taken + 2} and pool.reserve("a") == a
        with pytest.raises(SetupFailed, match="no free port in git.port_range"):
            pool.reserve("c")
        pool.release("a")
        assert pool.reserve("c") == a and pool.held() == {"b": b, "c": a}


@pytest.mark.parametrize(
    ("setup", "reason", "said"),
    [
        (["sh", "-c", "echo about to fail; echo oops >&2; exit 7"], "setup failed: exit code 7", "oops"),
        (["no-such-program-bootstrap"], "setup failed: 'no-such-program-bootstrap' was not found", "setup: no-such"),
        # a flood of output is capped in the log (its head and tail kept)
        (["sh", "-c", "yes 0123456789 | head -c 300000; exit 1"], "setup failed: exit code 1", "bytes of output left out"),
    ],
)
def test_a_failing_setup_fails_the_worker_with_its_output_in_the_log_and_no_attempt(hosted, setup, reason, said):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(git={"setup": setup, "port_range": RANGE})
    job = run_job(engine, "x", tasks=["echo ran > ran.txt"], config={"max_retries": 2})
    w = workers(engine, job)["worker_1"]
    assert job.status is JobStatus.FAILED and w.status is WorkerStatus.FAILED
    assert w.exit_reason.startswith(reason) and w.error.startswith(reason)
    assert w.attempts == []  # no attempt, no retry
    assert said in _log(engine, job) and len(_log(engine, job)) < 70_000
    assert not (engine.workspace.worker_dir(job.id, 0, "worker_1") / "ran.txt").exists()
    assert engine.checkout._worktree_for().bootstrap.ports.held() == {}
    assert snapshot(host, folder) == before


# These read the setup's pids from inside it and look for them on the host: unconfined, where the pid
# is the host's (in a sandbox it is its PID namespace's). The sandboxed setup: test_sandbox.py.
UNCONFINED_GRACE = {"kill_grace": 0.3, "sandbox": "off"}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_hanging_setup_is_killed_at_its_timeout_with_its_whole_process_group(hosted):
    host, folder, make = hosted
    hang = "echo $$ > .setup-pid; sleep 300 & echo $! > .setup-child; echo started; wait"
    (host / ".gitignore").write_text(".env\n.setup-*\n")
    git(host, "commit", "-q", "--no-verify", "-am", "ignores", env=user_env())
    engine = make(git={"setup": ["sh", "-c", hang], "setup_timeout": 1, "port_range": RANGE}, workers=UNCONFINED_GRACE)
    started = time.monotonic()
    job = run_job(engine, "x", tasks=["echo ran > ran.txt"], config={"max_retries": 2})
    assert time.monotonic() - started < 15
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.FAILED and w.attempts == []
    assert w.exit_reason.startswith("setup failed: timed out after 1s (git.setup_timeout)")
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    leader, child = int((wt / ".setup-pid").read_text()), int((wt / ".setup-child").read_text())
    wait_until(lambda: _gone(leader) and _gone(child), timeout=5, what="the setup's processes gone")
    in_group = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.info["pid"]) == leader and not _gone(proc.info["pid"]):
                in_group.append(proc.info["pid"])
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    assert in_group == []
    assert "started" in _log(engine, job)


def test_teardown_runs_at_cleanup_with_the_port_and_its_failure_is_only_logged(hosted, tmp_path):
    host, folder, make = hosted
    out = observed(tmp_path) / "torn"
    teardown = ["sh", "-c", 'echo "$ORCHESTRATOR_WORKER_ID $ORCHESTRATOR_PORT $PWD" >> "$OUT"; echo teardown bye; exit 5']
    engine = make(
        git={"teardown": teardown, "port_range": RANGE}, workers={"env": {"OUT": str(out)}, "sandbox_writable": [str(out.parent)]}
    )
    job = run_job(engine, "x", tasks=["echo ok > ok.txt", "exit 3"])
    ws = workers(engine, job)
    assert ws["worker_1"].status is WorkerStatus.SUCCESS and ws["worker_2"].status is WorkerStatus.FAILED
    lines = sorted(out.read_text().splitlines())
    # (Sandboxed, it works at the repository's own path: process/sandbox.py ProjectView.)
    at = {n: host if w.sandbox == "bubblewrap" else engine.workspace.worker_dir(job.id, 0, n) for n, w in ws.items()}
    assert lines == sorted(f"{n} {w.port} {at[n]}" for n, w in ws.items())
    log = _log(engine, job)
    assert "teardown bye" in log and "teardown failed: exit code 5 (the worker's outcome stands)" in log
    assert engine.checkout._worktree_for().bootstrap.ports.held() == {}


def test_a_folder_worker_gets_no_port(hosted):
    host, folder, make = hosted
    engine = make(git={"port_range": RANGE})
    job = run_job(engine, "x", tasks=['echo "${ORCHESTRATOR_PORT-none}" > port.txt'], config={"isolation": "folder"})
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.SUCCESS and w.port is None
    assert (engine.workspace.worker_dir(job.id, 0, "worker_1") / "port.txt").read_text() == "none\n"


@pytest.mark.parametrize("bad", ["41000", "41000-", "a-b", "42000-41000", "80-90", "41000-70000"])
def test_a_bad_port_range_is_refused_at_config_load_naming_the_key(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"git\.port_range=.* is not valid: expected") as raised:
        load_settings(base_dir=tmp_path, environ={}, overrides={"git": {"port_range": bad}})
    assert raised.value.details["key"] == "git.port_range"


def test_a_kept_path_is_escaped_to_match_only_itself():
    assert _escape("we*ird[1]/.env") == "we\\*ird\\[1]/.env" and _escape("trailing ") == "trailing\\ "


def test_cancelling_a_job_stops_its_workers_setup_at_once(hosted):
    host, folder, make = hosted
    (host / ".gitignore").write_text(".env\n.setup-*\n")
    git(host, "commit", "-q", "--no-verify", "-am", "ignores", env=user_env())
    hang = "echo $$ > .setup-pid; exec sleep 300"
    engine = make(git={"setup": ["sh", "-c", hang], "setup_timeout": 120, "port_range": RANGE}, workers=UNCONFINED_GRACE)
    job = engine.submission.submit("x", {"max_retries": 2}, ["echo ran > ran.txt"])
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    wait_until(lambda: (wt / ".setup-pid").exists() and (wt / ".setup-pid").read_text().strip(), what="the setup started")
    started = time.monotonic()
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 20)
    assert done.status is JobStatus.CANCELLED and time.monotonic() - started < 10
    w = workers(engine, done)["worker_1"]
    assert w.status is WorkerStatus.CANCELLED and w.attempts == [] and w.exit_reason == "cancelled during its setup"
    wait_until(lambda: _gone(int((wt / ".setup-pid").read_text())), timeout=5, what="the setup killed")


def test_a_restarted_server_re_attaching_a_worktree_takes_its_port_back_and_does_not_run_setup_again(hosted, tmp_path):
    from orchestrator.checkouts.worktree import WorktreeCheckout

    host, folder, make = hosted
    runs = observed(tmp_path) / "runs"
    setup = ["sh", "-c", 'echo "$ORCHESTRATOR_PORT" >> "$RUNS"']
    engine = make(
        git={"setup": setup, "port_range": RANGE}, workers={"env": {"RUNS": str(runs)}, "sandbox_writable": [str(runs.parent)]}
    )
    job = run_job(engine, "x", tasks=["true"])
    w = workers(engine, job)["worker_1"]
    assert runs.read_text() == f"{w.port}\n" and w.attempts
    # When a new server (a new checkout over the same workspace) re-attaches the worktree
    old_port = w.port
    again = WorktreeCheckout(engine.workspace, engine.settings, host)
    with socket.socket() as squatter:  # the worker's process may still hold its port: it is taken back all the same
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        assert again.prepare(w, engine.queries.get_job(job.id)) == engine.workspace.worker_dir(job.id, 0, "worker_1")
    # Then the setup did not run again and the worker keeps its port
    assert runs.read_text() == f"{old_port}\n" and w.port == old_port
    assert again.bootstrap.ports.held() == {f"{job.id}/depth_0_worker_1": old_port}
    again.cleanup(w, True)
    assert again.bootstrap.ports.held() == {}
    # A bootstrap a crash cut short (no mark that it ended, no attempt yet) is run again
    git_dir = Path(git(engine.workspace.worker_dir(job.id, 0, "worker_1"), "rev-parse", "--absolute-git-dir").strip())
    (git_dir / "orchestrator-setup-done").unlink()
    w.attempts = []
    WorktreeCheckout(engine.workspace, engine.settings, host).prepare(w, engine.queries.get_job(job.id))
    assert runs.read_text().splitlines() == [str(old_port), str(w.port)]


def test_a_reset_keeps_many_ignored_paths_by_their_top_level_folder(tmp_path):
    repo = tmp_path / "r"
    (repo / "build" / "deep").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("*.o\n")
    for i in range(MAX_KEPT + 1):
        (repo / "build" / "deep" / f"{i}.o").write_text("")
    (repo / "one.o").write_text("")
    assert ignored_made(CheckoutGit(repo, None)) == ["build/", "one.o"]


def test_sixteen_workers_bootstrap_at_once(hosted):
    host, folder, make = hosted
    (host / ".worktreeinclude").write_text(".env\n")
    before = snapshot(host, folder)
    setup = ["sh", "-c", 'echo "$ORCHESTRATOR_PORT" > setup.txt']  # not ignored: committed as attempt 0
    engine = make(git={"setup": setup, "port_range": RANGE}, workers={"max_workers": 16, "global_max_workers": 16})
    job = run_job(engine, "many", tasks=[f"cat .env > f{i}.txt" for i in range(16)], config={"max_workers": 16}, timeout=120)
    ws = workers(engine, job)
    assert job.status is JobStatus.COMPLETED, {n: w.error for n, w in ws.items() if w.error}
    assert len({w.port for w in ws.values()}) == 16
    for w in ws.values():
        assert git(host, "show", f"{w.commit}:setup.txt") == f"{w.port}\n"
        assert git(host, "show", f"{w.commit}:f{w.index - 1}.txt") == "SECRET=1\n"
    assert snapshot(host, folder) == before


def test_what_the_setup_leaves_running_serves_the_worker_and_is_stopped_at_its_cleanup(hosted):
    host, folder, make = hosted
    (host / ".gitignore").write_text(".env\n.setup-*\n")
    git(host, "commit", "-q", "--no-verify", "-am", "ignores", env=user_env())
    daemon = ["sh", "-c", "sleep 300 > /dev/null 2>&1 & echo $! > .setup-daemon"]
    engine = make(git={"setup": daemon, "port_range": RANGE}, workers={"sandbox": "off"})
    job = run_job(engine, "x", tasks=['kill -0 "$(cat .setup-daemon)" && echo alive > alive.txt'])
    w = workers(engine, job)["worker_1"]
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert w.status is WorkerStatus.SUCCESS and (wt / "alive.txt").read_text() == "alive\n"
    wait_until(lambda: _gone(int((wt / ".setup-daemon").read_text())), timeout=5, what="the daemon stopped")
    assert "stopped 1 process(es) that the setup or teardown left running" in _log(engine, job)
