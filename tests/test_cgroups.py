"""A worker's whole tree is one unit for its caps and for stopping, with real processes.

Where this user may make cgroups (root on this cgroup v1 machine), the kernel holds the memory and
process caps and every process of the attempt is in its cgroup, tagless ones included; as an
ordinary user the caps are sampled (over the tag and the shim's descendants) and the record says
so. Each test asserts the label the machine allows, so it holds run either way.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.models import WorkerStatus
from orchestrator.process import procscan
from orchestrator.process.cgroups import Cgroup, ChildSetup, Confined, Enforcement, Limits, cgroup_name, hierarchies
from orchestrator.process.runner import ProcessRunner
from orchestrator.process.supervisor import SupervisorClient

from .conftest import only_worker, processes_with, run_job, sleep_marker, wait_until

pytestmark = pytest.mark.slow
MB = 1024 * 1024
BASES = hierarchies().bases
MEMORY = BASES["memory"][0].value if "memory" in BASES else "sampled"
PIDS = BASES["pids"][0].value if "pids" in BASES else "sampled"
IN_CGROUP = bool(BASES)
NO_CAPS = {"max_memory_mb": 0, "max_processes": 0, "max_log_mb": 0, "max_disk_mb": 0}


def shell_engine(make_engine, **caps):
    """Workers that run their task as a shell command, under ``caps``."""
    workers = {**NO_CAPS, "monitor_interval": 0.1, "kill_grace": 0.5, **caps}
    return make_engine(orchestrator={"worker": "command", "command": ["/bin/sh", "-c", "{task}"]}, workers=workers)


def stopped_by(engine, job, words):
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and worker.exit_reason.startswith(words), worker.exit_reason
    assert len(worker.attempts) == 1 and worker.attempts[0].end_reason == "cap", "a cap is not retried"
    return worker


def test_a_tagless_child_holding_memory_past_the_cap_is_stopped_and_labelled(make_engine):
    # Given a worker whose child drops its tag (env -i) and holds 400 MiB against a 200 MB cap
    engine = shell_engine(make_engine, max_memory_mb=200)
    hog = "env -i python3 -c 'x = bytearray(400 << 20); import time; time.sleep(60)'; echo parent went on"
    job = run_job(engine, "x", tasks=[hog], config={"max_retries": 2, "default_timeout": 60})
    # Then it is stopped by the memory cap, not retried, and the record says what held it
    worker = stopped_by(engine, job, "memory cap")
    assert worker.attempts[0].enforced.memory.value == MEMORY
    if MEMORY != "sampled":
        assert f"killed by the kernel at 200 MB (workers.max_memory_mb, {MEMORY})" in worker.exit_reason
        assert worker.peak_rss is None or worker.peak_rss <= 200 * MB
    else:
        assert "(workers.max_memory_mb, sampled)" in worker.exit_reason


def test_a_fork_bomb_is_held_at_the_cap_and_ends_with_a_process_cap(make_engine):
    # Given a worker forking 300 sleeping children as fast as it can, against a cap of 40
    engine = shell_engine(make_engine, max_processes=40)
    marker = sleep_marker(0)
    bomb = f"i=0; while [ $i -lt 300 ]; do sleep {marker} & i=$((i+1)); done; wait"
    job = run_job(engine, "x", tasks=[bomb], config={"max_retries": 2, "default_timeout": 60})
    # Then it ends with a process-cap reason (it does not sit at the cap until its timeout)
    worker = stopped_by(engine, job, "process cap")
    assert worker.attempts[0].enforced.processes.value == PIDS
    if PIDS != "sampled":
        assert f"a fork refused by the kernel at 40 processes and threads (workers.max_processes, {PIDS})" in worker.exit_reason
        assert (worker.peak_processes or 0) <= 40, "the kernel held it at pids.max (None: it ended before a sample)"
    assert wait_until(lambda: not processes_with(marker), timeout=5), "none of the bomb is left"


@pytest.mark.skipif(not IN_CGROUP, reason="sampled fallback: a tagless process that double-forks out of the tree is not found")
@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_tagless_double_forked_sleep_dies_with_its_worker(make_engine, how):
    # Given a worker that leaves a grandchild which drops its tag and its session, then waits
    engine = shell_engine(make_engine)
    marker = sleep_marker(1 if how == "timeout" else 2)
    task = f"(setsid env -u ORCHESTRATOR_TAG sleep {marker} &); sleep 60"
    job = engine.submission.submit("x", {"max_retries": 0, "default_timeout": 60 if how == "cancel" else 2}, [task])
    wait_until(lambda: processes_with(marker), timeout=20)
    # When its worker times out, or its job is cancelled
    if how == "cancel":
        engine.cancel(job.id)
    engine.queries.wait(job.id, 30)
    # Then the grandchild is gone too, and so is the attempt's cgroup
    worker = only_worker(engine, job)
    assert worker.status is (WorkerStatus.TIMEOUT if how == "timeout" else WorkerStatus.CANCELLED)
    assert wait_until(lambda: not processes_with(marker), timeout=5)
    assert hierarchies().find(cgroup_name(engine.worker_tag(worker))) is None


def test_a_fast_single_file_writer_stops_at_the_disk_cap(make_engine):
    # Given a worker writing one file as fast as it can, a 20 MB disk cap and a 5 MB log cap
    engine = shell_engine(make_engine, max_disk_mb=20, max_log_mb=5)
    writer = "python3 -c \"f = open('big', 'wb'); b = b'x' * (1 << 20); [f.write(b) for _ in range(2000)]\""
    job = run_job(engine, "x", tasks=[writer], config={"max_retries": 2, "default_timeout": 60})
    # Then the kernel refused the file past 20 MB (RLIMIT_FSIZE), and the worker ended by the disk cap
    worker = stopped_by(engine, job, "disk cap")
    enforced = worker.attempts[0].enforced
    assert enforced.disk.value == "sampled" and enforced.file_size == 20 * MB
    # and what it wrote was thrown away with its folder's reset (never left on disk, never committed)
    assert not (engine.workspace.job_dir(job.id) / worker.dir_path / "big").exists()


def test_a_fast_many_file_writer_stops_within_an_interval_of_the_disk_cap(make_engine):
    # Given a worker writing 1 MiB files as fast as it can against a 20 MB folder cap
    engine = shell_engine(make_engine, max_disk_mb=20, max_log_mb=5)
    writer = (
        "python3 -c \"b = b'x' * (1 << 20); [open(f'f{i}', 'wb').write(b) for i in range(2000)]; import time; time.sleep(30)\""
    )
    job = run_job(engine, "x", tasks=[writer], config={"max_retries": 2, "default_timeout": 60})
    worker = stopped_by(engine, job, "disk cap")
    # The bound is the cap plus one interval's writing (a printed figure: it depends on the disk's speed)
    seen = int(re.match(r"disk cap: (\d+) MB in its folder", worker.exit_reason).group(1))
    print(f"FIGURE disk_overshoot_many_files={seen - 20} MB over a 20 MB cap (interval 0.1 s)")
    assert 20 <= seen < 2000, "stopped before it wrote all it meant to"
    # and what it wrote was thrown away with its folder's reset (never left on disk, never committed)
    assert not list((engine.workspace.job_dir(job.id) / worker.dir_path).glob("f*"))


def test_a_fast_log_writer_stops_at_the_log_cap_exactly(make_engine):
    # Given a worker printing as fast as it can, a 20 MB log cap and a 5 MB disk cap: the log's
    # cap is the file-size limit, so the kernel holds the log there
    engine = shell_engine(make_engine, max_log_mb=20, max_disk_mb=5)
    job = run_job(engine, "x", tasks=["yes 0123456789abcdef0123456789abcdef"], config={"max_retries": 2, "default_timeout": 60})
    worker = stopped_by(engine, job, "log cap")
    assert worker.attempts[0].enforced.log.value == "file-size limit"
    size = (engine.workspace.job_dir(job.id) / worker.log_path).stat().st_size
    assert 20 * MB <= size <= 20 * MB + 4096, "the cap exactly, plus the orchestrator's own marker lines"


def test_the_status_document_says_which_enforcement_held_each_cap(make_engine):
    engine = shell_engine(make_engine, max_memory_mb=500, max_processes=100)
    job = run_job(engine, "x", tasks=["true"])
    (entry,) = [w for w in engine.queries.status_document(job.id)["results"]["tasks"]]
    assert entry["enforced"] == {"memory": MEMORY, "processes": PIDS, "log": "no cap", "disk": "no cap", "file_size": 0}


def test_a_restarted_runner_finds_a_running_attempt_by_its_tag_and_ends_it(tmp_path):
    # Given an attempt started with limits by one runner, whose tagless grandchild left its tree
    first = ProcessRunner()
    tag = f"restart-{os.getpid()}.worker_1.abcd"
    marker = sleep_marker(3)
    task = f"(setsid env -u ORCHESTRATOR_TAG sleep {marker} &); sleep 60"
    handle = first.spawn(
        ["/bin/sh", "-c", task],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "log",
        tag=tag,
        exit_file=tmp_path / "exit",
        limits=Limits(memory=300 * MB),
    )
    wait_until(lambda: processes_with(marker), timeout=20)
    # When another runner (a restarted server) adopts it and then ends it
    second = ProcessRunner()
    adopted = second.adopt(
        handle.pid,
        handle.start_id,
        tag=tag,
        started_at=handle.started_at,
        exit_file=tmp_path / "exit",
        limits=Limits(memory=300 * MB),
    )
    assert (adopted.cgroup is not None) is IN_CGROUP
    assert adopted.enforced.memory.value == MEMORY
    second.terminate(adopted, grace=0.2)
    first.wait(handle, 10)
    # Then with a cgroup, the grandchild went with it (without one, only what carries the tag does)
    if IN_CGROUP:
        assert wait_until(lambda: not processes_with(marker), timeout=5)
        assert hierarchies().find(cgroup_name(tag)) is None
    else:
        for pid in processes_with(marker):
            os.kill(pid, 9)


@pytest.mark.parametrize("supervised", [False, True], ids=["shim", "supervisor"])
def test_without_cgroups_a_confined_attempt_is_sampled_through_its_tree(tmp_path, monkeypatch, supervised):
    # Given a machine where no cgroup can be made (as for an ordinary user here)
    monkeypatch.setattr(hierarchies(), "_found", {})
    runner = ProcessRunner(supervisor=SupervisorClient(tmp_path / "sup") if supervised else None)
    task = "env -i python3 -c 'x = bytearray(60 << 20); import time; time.sleep(30)'"
    handle = runner.spawn(
        ["/bin/sh", "-c", task],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "log",
        tag=f"fallback-{os.getpid()}.w.abcd",
        exit_file=tmp_path / "exit",
        limits=Limits(memory=500 * MB),
    )
    try:
        assert handle.cgroup is None and handle.enforced.memory is Enforcement.SAMPLED
        from orchestrator.process.executor import LocalExecutor
        from orchestrator.process.monitor import Watched

        sampler = LocalExecutor(runner)
        watched = Watched(
            "w",
            handle.tag,
            handle.started_at,
            tmp_path / "log",
            tmp_path,
            lambda _: None,
            shim_pid=handle.shim_pid,
            pid=handle.pid,
        )
        # Then the tagless child's memory is counted (found as a descendant of the shim, or of the worker itself)
        sample = wait_until(lambda: (s := sampler.sample([watched])[handle.tag]).rss > 50 * MB and s, timeout=20)
        assert sample.enforced.memory is Enforcement.SAMPLED
    finally:
        runner.terminate(handle, grace=0.2)
        runner.close()
    assert not any(Path(f"/proc/{pid}").exists() for pid in Confined().tree("x", handle.pid))


def _joined(setup, script):
    """A shell running ``script`` in the attempt's cgroup (it joins as a worker's preexec does)."""
    import subprocess

    try:
        return subprocess.Popen(["/bin/sh", "-c", script], preexec_fn=setup, start_new_session=True)
    finally:
        for fd in setup.fds:
            os.close(fd)


@pytest.mark.skipif(not IN_CGROUP, reason="no cgroup for this user")
@pytest.mark.parametrize("caps", ["none", "capped"])
def test_an_ended_attempt_leaves_neither_its_cgroup_nor_a_tagless_process(caps):
    # Given an attempt's cgroup, with no caps (the memory hierarchy alone lists its processes on
    # v1) or with both, whose shell left a setsid'd sleep behind and exited
    limits = Limits() if caps == "none" else Limits(memory=300 * MB, processes=50)
    confined, tag, marker = Confined(), f"end-{caps}-{os.getpid()}", sleep_marker(4 + len(caps))
    cgroup, setup, enforced = confined.start(tag, limits, 1)
    assert cgroup is not None
    assert enforced.memory.value == ("no cap" if caps == "none" else MEMORY)
    assert enforced.processes.value == ("no cap" if caps == "none" else PIDS)
    _joined(setup, f"setsid sleep {marker} & exit 0").wait()
    (left,) = wait_until(lambda: processes_with(marker))
    assert left in cgroup.members()
    # When it ends, Then the sleep is killed and every directory of its cgroup is gone
    confined.end(tag)
    assert wait_until(lambda: not processes_with(marker), timeout=5)
    assert hierarchies().find(cgroup_name(tag)) is None
    # And an empty one (its processes all exited) is removed as well
    cgroup, setup, _ = confined.start(tag, limits, 1)
    _joined(setup, "exit 0").wait()
    confined.end(tag)
    assert hierarchies().find(cgroup_name(tag)) is None and cgroup.dirs == {}


@pytest.mark.skipif(PIDS == "sampled", reason="no pids cgroup for this user")
def test_a_refused_fork_is_still_told_after_the_emptied_cgroup_is_removed():
    # Given an attempt under a process cap of 3 whose shell forked past it, then exited
    from orchestrator.process.cgroups import cap_hit

    limits = Limits(processes=3)
    confined, tag = Confined(), f"refused-{os.getpid()}"
    cgroup, setup, enforced = confined.start(tag, limits, 0)
    _joined(setup, "for i in 1 2 3 4 5 6; do sleep 0.2 & done 2>/dev/null; wait").wait()
    # When its (now empty) cgroup is removed at its end
    confined.end(tag)
    assert cgroup.dirs == {} and hierarchies().find(cgroup_name(tag)) is None
    # Then the record still tells the kernel's refusal (read before the removal)
    assert cap_hit(limits, enforced, cgroup, 0, None).startswith("process cap: a fork refused by the kernel at 3")


def test_a_join_descriptor_is_opened_on_the_file_of_its_hierarchys_version(tmp_path):
    # Given an attempt's cgroup on a v1 hierarchy (its folder lists ``tasks`` beside
    # ``cgroup.procs``) and on a v2 one (``cgroup.procs`` alone), its version known from its making
    from orchestrator.process.cgroups import Cgroup, join_file

    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    for folder, names in ((v1, ("tasks", "cgroup.procs")), (v2, ("cgroup.procs",))):
        folder.mkdir()
        for name in names:
            (folder / name).write_text("")
    cgroup = Cgroup("c", {"memory": v1, "pids": v2}, {"memory": Enforcement.CGROUP_V1, "pids": Enforcement.CGROUP_V2})
    # When its child's join descriptors are opened (without looking for ``tasks``) and "0" written to each
    for fd in cgroup.join_fds():
        os.write(fd, b"0")
        os.close(fd)
    # Then v1's thread list and v2's process list got it, as join_file (which looks) names them
    assert (v1 / "tasks").read_text() == "0" and (v1 / "cgroup.procs").read_text() == ""
    assert (v2 / "cgroup.procs").read_text() == "0"
    assert {join_file(v1), join_file(v2)} == {v1 / "tasks", v2 / "cgroup.procs"}
    # And on this machine each hierarchy's own join file is the one its version names
    for version, base in BASES.values():
        assert join_file(base).name == ("tasks" if version is Enforcement.CGROUP_V1 else "cgroup.procs")


def _cgroups_of(pid: int, tid: int | None = None) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` (one thread's: ``task/<tid>``) as controller list -> path (v2's under "")."""
    found = {}
    where = Path(f"/proc/{pid}") / (f"task/{tid}/cgroup" if tid else "cgroup")
    for line in where.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        found[controllers] = path
    return found


@pytest.mark.skipif(not IN_CGROUP, reason="no cgroup for this user")
@pytest.mark.parametrize("supervised", [False, True], ids=["forked", "supervisor"])
def test_an_attempts_tree_is_told_gone_only_while_its_cgroup_holds_no_task(tmp_path, supervised):
    """``tree_gone`` lets a node tell an attempt's end before its sweep (cluster/attempt.py): it must
    never say gone while a process of the attempt runs (a daemonised child), nor without a cgroup."""
    client = SupervisorClient(tmp_path / "sup") if supervised else None
    runner = ProcessRunner(supervisor=client)
    cases = [("alone", "exit 0", Limits(memory=300 * MB, processes=50)), ("daemon", "sleep 30 & exit 0", Limits(memory=300 * MB))]
    cases.append(("uncapped", "exit 0", None))
    try:
        for name, script, limits in cases:
            tag = f"gone-{os.getpid()}-{int(supervised)}-{name}.w.abcd"
            handle = runner.spawn(
                ["/bin/sh", "-c", script],
                cwd=tmp_path,
                env={"PATH": os.environ["PATH"]},
                log_path=tmp_path / f"{name}.log",
                tag=tag,
                exit_file=tmp_path / f"{name}.exit",
                limits=limits,
            )
            assert runner.wait(handle, 30) == 0
            if name == "alone":  # (its shim a zombie a moment, until reaped)
                wait_until(lambda tag=tag: runner.tree_gone(tag), timeout=10, what="the emptied cgroup")
            else:
                time.sleep(0.3)
                assert not runner.tree_gone(tag), name  # the sleep runs on; without a cgroup, not known
            runner.sweep(tag, handle.started_at)
            runner.release(handle)
            assert not runner.tree_gone(tag) and not runner.tagged(tag)
    finally:
        runner.close()


@pytest.mark.skipif(not IN_CGROUP, reason="no cgroup for this user")
@pytest.mark.parametrize("supervised", [False, True], ids=["forked", "supervisor"])
def test_a_worker_is_born_in_its_cgroup_on_every_hierarchy_and_its_starter_goes_back(tmp_path, supervised):
    # Given a runner that starts workers by a fork of this threaded process, or through the
    # supervisor (which moves itself into the worker's cgroup around its spawn, through each
    # hierarchy's join file: v1's ``tasks`` moves the writing thread alone)
    import threading

    hold = threading.Event()
    company = threading.Thread(target=hold.wait, daemon=True)  # this process is not single-threaded
    company.start()
    client = SupervisorClient(tmp_path / "sup") if supervised else None
    runner = ProcessRunner(supervisor=client)
    tag = f"born-{os.getpid()}-{int(supervised)}.w.abcd"
    before = _cgroups_of(os.getpid())
    # When it starts a worker with caps on memory and processes
    handle = runner.spawn(
        ["/bin/sh", "-c", "sleep 30"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "log",
        tag=tag,
        exit_file=tmp_path / "exit",
        limits=Limits(memory=300 * MB, processes=50),
    )
    try:
        assert handle.cgroup is not None
        # Then the worker is in its attempt's cgroup on every hierarchy that holds a cap
        mine = _cgroups_of(handle.pid)
        for controller, version in handle.cgroup.versions.items():
            v2 = version is Enforcement.CGROUP_V2
            (path,) = [p for c, p in mine.items() if (c == "" if v2 else controller in c.split(","))]
            assert path.endswith(cgroup_name(tag)), (controller, mine)
        # And whoever started it is back where it was: this process's threads (the forked
        # path moves only the child), or the supervisor
        assert _cgroups_of(os.getpid()) == before
        assert _cgroups_of(os.getpid(), company.native_id) == before
        if client is not None:
            (supervisor,) = client.running()
            assert not any(cgroup_name(tag) in p for p in _cgroups_of(supervisor).values())
    finally:
        runner.terminate(handle, grace=0.2)
        runner.close()
        hold.set()


def _scans(monkeypatch) -> list[object]:
    """Every pass over the process table this test's runners make, by the tags they look for."""
    seen: list[object] = []
    real = procscan.scan

    def counted(wanted, since=0.0):
        seen.append(wanted)
        return real(wanted, since)

    monkeypatch.setattr(procscan, "scan", counted)
    return seen


def _left_behind(runner: ProcessRunner, tmp_path: Path, tag: str, marker: str, limits: Limits | None):
    """An attempt of ``tag`` whose shell leaves a setsid'd sleep carrying its tag, ended and reaped."""
    handle = runner.spawn(
        ["/bin/sh", "-c", f"setsid sleep {marker} & exit 0"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "log",
        tag=tag,
        exit_file=tmp_path / "exit",
        limits=limits,
    )
    assert runner.wait(handle, 20) == 0
    wait_until(lambda: processes_with(marker), timeout=5)
    return handle


@pytest.mark.skipif(not IN_CGROUP, reason="no cgroup for this user")
@pytest.mark.parametrize("supervised", [False, True], ids=["shim", "supervisor"])
def test_a_sweep_whose_cgroup_went_kills_what_it_held_without_a_scan_of_the_process_table(tmp_path, monkeypatch, supervised):
    # Given an attempt in a cgroup of its own that left a setsid'd sleep behind
    scans = _scans(monkeypatch)
    runner = ProcessRunner(supervisor=SupervisorClient(tmp_path / "sup") if supervised else None)
    tag, marker = f"swept-{os.getpid()}.w.{int(supervised)}", sleep_marker(20 + int(supervised))
    try:
        handle = _left_behind(runner, tmp_path, tag, marker, Limits(memory=300 * MB))
        # When it is swept
        runner.sweep(tag, handle.started_at)
    finally:
        runner.close()
    # Then the sleep is gone with the cgroup, which the kernel removed only empty: no scan was needed
    assert wait_until(lambda: not processes_with(marker), timeout=5)
    assert hierarchies().find(cgroup_name(tag)) is None
    assert scans == []


def test_a_sweep_without_a_cgroup_scans_the_process_table_for_its_tag(tmp_path, monkeypatch):
    # Given an attempt started with no cgroup (no caps asked) that left a setsid'd sleep carrying its tag
    scans = _scans(monkeypatch)
    runner = ProcessRunner()
    tag, marker = f"scanned-{os.getpid()}.w.1", sleep_marker(22)
    handle = _left_behind(runner, tmp_path, tag, marker, None)
    # When it is swept, Then the scan finds the sleep by its tag and kills it
    runner.sweep(tag, handle.started_at)
    assert len(scans) >= 1
    assert wait_until(lambda: not processes_with(marker), timeout=5)


@pytest.mark.skipif(not IN_CGROUP, reason="no cgroup for this user")
def test_a_sweep_whose_cgroup_would_not_go_still_scans_for_its_tag(tmp_path, monkeypatch):
    # Given an attempt in a cgroup that the kernel would not remove (as for a member that will not leave)
    scans = _scans(monkeypatch)
    runner = ProcessRunner()
    tag, marker = f"stuck-{os.getpid()}.w.1", sleep_marker(23)
    handle = _left_behind(runner, tmp_path, tag, marker, Limits(memory=300 * MB))
    cgroup = runner.confined.cgroup_of(tag)
    assert cgroup is not None
    kept = dict(cgroup.dirs)
    monkeypatch.setattr(cgroup, "remove", lambda: False)
    monkeypatch.setattr(cgroup, "drain", lambda: False)
    try:
        # When it is swept, Then the process table is scanned and the sleep killed by its tag
        runner.sweep(tag, handle.started_at)
        assert len(scans) >= 1
        assert wait_until(lambda: not processes_with(marker), timeout=5)
    finally:
        cgroup.dirs = kept
        Cgroup.remove(cgroup)


# -- spares (cgroups.Confined): an ended attempt's cgroup renamed for the next, on v1 -----------------
SPARES = IN_CGROUP and all(version is Enforcement.CGROUP_V1 for version, _ in BASES.values())


def _spares_of(owner: Confined | int) -> list[str]:
    """The spares of a runner's ``Confined`` (or of every runner of a process)."""
    from orchestrator.process.cgroups import SPARE

    prefixes = [owner.spare_prefix] if isinstance(owner, Confined) else [f"{SPARE}{owner}-", f"{SPARE}{owner}."]
    return [c.name for prefix in prefixes for c in hierarchies().find_prefix(prefix)]


def _inodes(cgroup) -> set[int]:
    return {os.stat(d).st_ino for d in cgroup.dirs.values()}


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_an_emptied_cgroup_is_renamed_for_the_next_attempt_under_the_same_limits_and_reads_fresh():
    # Given an attempt under both caps whose shell exited, its cgroup ended
    limits = Limits(memory=300 * MB, processes=50)
    confined, first, second = Confined(), f"reuse-a-{os.getpid()}", f"reuse-b-{os.getpid()}"
    cgroup, setup, _ = confined.start(first, limits, 1)
    inodes = _inodes(cgroup)
    _joined(setup, "exit 0").wait()
    confined.end(first)
    try:
        # Then it is no attempt's any more (its name is gone, the caller's object emptied) but a spare
        assert hierarchies().find(cgroup_name(first)) is None and cgroup.dirs == {}
        assert len(_spares_of(confined)) == 1
        # And no attempt's cgroup name is a spare's, so no sweep of attempts' cgroups by a tag prefix
        # (a restart's) takes one (not run here with the empty prefix: it would end other runs' attempts)
        from orchestrator.process.cgroups import SPARE

        assert not any(cgroup_name(tag).startswith(SPARE) for tag in ("", "spare-1", "+spare-1", SPARE, SPARE[13:]))
        # When the next attempt under the same limits starts
        again, setup, enforced = confined.start(second, limits, 1)
        # Then it runs in those same directories, renamed for it (found by its tag), the spare gone
        assert again is not None and _inodes(again) == inodes
        assert hierarchies().find(cgroup_name(second)) is not None and _spares_of(confined) == []
        assert enforced.memory.value == MEMORY and enforced.processes.value == PIDS
        # And its caps and counts are a fresh cgroup's: a fork past the cap is refused and counted once
        _joined(setup, "for i in $(seq 1 60); do sleep 0.3 & done 2>/dev/null; wait").wait()
        assert wait_until(again.empty, timeout=5) and again.counts().forks_refused >= 1
        # And a cgroup that refused a fork is never a spare: removed at its end, as any that is not fresh
        confined.end(second)
        assert hierarchies().find(cgroup_name(second)) is None and _spares_of(confined) == []
    finally:
        confined.end(second)
        confined.close()


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_a_cgroup_charged_memory_reclaim_cannot_drop_is_removed_not_kept(tmp_path):
    # Given an attempt whose shell left 8 MB of tmpfs charged to its cgroup
    from orchestrator.process.cgroups import SPARE_CHARGE

    limits = Limits(memory=300 * MB, processes=50)
    confined, tag = Confined(), f"left-charge-{os.getpid()}"
    shm = Path("/dev/shm") / f"orchestrator-test-{os.getpid()}"
    cgroup, setup, _ = confined.start(tag, limits, 1)
    try:
        _joined(setup, f"head -c {8 * MB} /dev/zero > {shm}").wait()
        assert cgroup.pinned() > SPARE_CHARGE
        # When it ends
        confined.end(tag)
        # Then its cgroup is removed, not kept as a spare
        assert hierarchies().find(cgroup_name(tag)) is None and _spares_of(confined) == []
    finally:
        shm.unlink(missing_ok=True)
        confined.close()


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_a_process_still_leaving_at_the_end_is_gone_before_its_cgroup_is_kept(monkeypatch):
    # Given an attempt whose last process is still leaving at its end (as a sandbox's launcher's init
    # is: here a process that exits 0.3 s after its attempt ended), reaped by its parent when it exits
    from orchestrator.process import cgroups

    limits = Limits(memory=300 * MB, processes=50)
    confined, tag = Confined(), f"leaving-{os.getpid()}"
    cgroup, setup, _ = confined.start(tag, limits, 1)
    removed: list[str] = []
    real_remove = cgroups.Cgroup.remove
    monkeypatch.setattr(cgroups.Cgroup, "remove", lambda self: removed.append(self.name) or real_remove(self))
    reads: list[str] = []
    real_read = cgroups._read
    monkeypatch.setattr(cgroups, "_read", lambda path: reads.append(os.path.basename(path)) or real_read(path))
    try:
        leaving = _joined(setup, "exec sleep 0.31")
        reaper = threading.Thread(target=leaving.wait)  # its parent reaps it, as the supervisor does
        reaper.start()
        assert not cgroup.empty()
        reads.clear()
        # When it ends
        confined.end(tag)
        # Then the cgroup is kept as a spare, not removed, and only once no task is left in it
        assert removed == [] and hierarchies().find(cgroup_name(tag)) is None
        spares = _spares_of(confined)
        assert len(spares) == 1
        spare = hierarchies().find(spares[0])
        assert spare is not None and spare.members() == [] and spare.empty()
        reaper.join()
        # And its members were listed to be killed, then waited for without listing them again while
        # they left (at most once more, if its reaper had not reaped it when it was first looked at)
        listings = reads.count("cgroup.procs") / len(set(cgroup.dirs.values()) or set(spare.dirs.values()))
        assert 1 <= listings <= 2, reads
    finally:
        confined.end(tag)
        confined.close()


def test_processes_left_are_killed_through_pidfds_and_waited_for_until_they_have_exited():
    # Given three sleeps (their parent, this test, reaps them) and the pid of one already gone
    from orchestrator.process.cgroups import _kill_and_wait

    sleeps = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    gone = subprocess.Popen(["true"])
    gone.wait()
    started = time.monotonic()
    # When they are killed and waited for, with ten seconds to spare
    _kill_and_wait([gone.pid] + [p.pid for p in sleeps], time.monotonic() + 10)
    # Then it returns once each has exited (a zombie until reaped), long before its deadline
    assert time.monotonic() - started < 5
    assert [p.wait(timeout=5) for p in sleeps] == [-9, -9, -9]
    # And a deadline already past waits for nothing, after the kill
    late = subprocess.Popen(["sleep", "30"])
    _kill_and_wait([late.pid], time.monotonic() - 1)
    assert late.wait(timeout=5) == -9


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_a_sleep_left_behind_is_killed_and_reaped_by_the_supervisor_before_its_cgroup_is_kept(tmp_path):
    # Given a supervised attempt under caps whose shell left a setsid'd sleep behind
    runner = ProcessRunner(supervisor=SupervisorClient(tmp_path / "sup"))
    tag, marker = f"left-{os.getpid()}.w.1", sleep_marker(24)
    try:
        handle = _left_behind(runner, tmp_path, tag, marker, Limits(memory=300 * MB, processes=50))
        assert processes_with(marker)
        # When it is swept
        runner.sweep(tag, handle.started_at)
        # Then the sleep is killed, and reaped by the supervisor (it inherits the orphans of its workers'
        # trees), so the cgroup is as a fresh one and kept as a spare
        assert not processes_with(marker)
        assert hierarchies().find(cgroup_name(tag)) is None and len(_spares_of(runner.confined)) == 1
    finally:
        runner.close()
    assert _spares_of(runner.confined) == []


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_an_attempt_found_empty_at_its_end_has_its_counts_read_once_and_its_cgroup_kept(monkeypatch):
    # Given an attempt under both caps whose shell exited, every file the cgroup's end reads counted
    from orchestrator.process import cgroups

    reads: list[str] = []
    real_read = cgroups._read
    monkeypatch.setattr(cgroups, "_read", lambda path: reads.append(os.path.basename(path)) or real_read(path))
    limits = Limits(memory=300 * MB, processes=50)
    confined, tag = Confined(), f"once-{os.getpid()}"
    cgroup, setup, enforced = confined.start(tag, limits, 1)
    try:
        _joined(setup, "exit 0").wait()
        assert wait_until(cgroup.empty, timeout=5)
        reads.clear()
        # When its end is judged (the runner's cap_hit once it ended) and its cgroup ended
        assert cgroups.cap_hit(limits, enforced, cgroup, 0, None, final=True) is None
        confined.end(tag)
        # Then it is a spare, and each of its files was read once: emptiness, the two kernel counts, the charge
        assert len(_spares_of(confined)) == 1
        assert sorted(reads) == sorted(["pids.current", "memory.oom_control", "pids.events", "memory.usage_in_bytes"])
    finally:
        confined.end(tag)
        confined.close()


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_a_fork_refused_after_the_end_was_judged_while_a_task_was_left_keeps_the_cgroup_from_being_a_spare():
    # Given an attempt under a process cap whose shell exited, leaving a child that waits, then forks past the cap
    from orchestrator.process.cgroups import cap_hit

    limits = Limits(memory=300 * MB, processes=4)
    confined, tag = Confined(), f"late-fork-{os.getpid()}"
    cgroup, setup, enforced = confined.start(tag, limits, 1)
    try:
        _joined(setup, "(sleep 0.5; for i in 1 2 3 4 5 6; do sleep 0.2 & done 2>/dev/null; wait) & exit 0").wait()
        # When its end is judged while that child is still in it: no cap yet
        assert cap_hit(limits, enforced, cgroup, 0, None, final=True) is None
        # And the child's forks are refused, and it ends, before the cgroup's end
        assert wait_until(lambda: cgroup.empty() and cgroup.counts().forks_refused >= 1, timeout=10)
        confined.end(tag)
        # Then the refused fork is read at the end: the cgroup is removed, not kept as a spare for another attempt
        assert hierarchies().find(cgroup_name(tag)) is None and _spares_of(confined) == []
    finally:
        confined.end(tag)
        confined.close()


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_a_crashed_servers_spares_are_removed_at_the_next_start_and_a_closing_runner_removes_its_own():
    import subprocess

    from orchestrator.process.cgroups import SPARE

    # Given a spare left by a server that is gone (a crash), and one of a server still running
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "30"])
    made = []
    try:
        for pid in (gone.pid, alive.pid):
            for _, base in BASES.values():
                (base / f"{SPARE}{pid}-1").mkdir(exist_ok=True)
                made.append(base / f"{SPARE}{pid}-1")
        # When a runner starts its first attempt
        confined, tag = Confined(), f"after-crash-{os.getpid()}"
        confined.start(tag, Limits(memory=300 * MB, processes=50), 1)
        # Then the gone server's spare is removed, the running one's kept
        assert _spares_of(gone.pid) == [] and _spares_of(alive.pid) == [f"{SPARE}{alive.pid}-1"]
        # And when the runner ends its attempt (a spare now) and closes, none of its spares is left
        confined.end(tag)
        assert len(_spares_of(confined)) == 1
        confined.close()
        assert _spares_of(confined) == []
    finally:
        alive.kill()
        alive.wait()
        for directory in made:
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_a_cgroup_charged_only_page_cache_it_can_drop_is_kept(tmp_path):
    # Given an attempt that wrote 8 MB to a file on disk: page cache, charged to its cgroup, which
    # the kernel reclaims under the next attempt's cap before it would kill anything
    from orchestrator.process.cgroups import SPARE_CHARGE

    confined, tag = Confined(), f"cache-{os.getpid()}"
    cgroup, setup, _ = confined.start(tag, Limits(memory=300 * MB, processes=50), 1)
    try:
        _joined(setup, f"head -c {8 * MB} /dev/zero > {tmp_path / 'file'}").wait()
        assert wait_until(cgroup.empty, timeout=5) and cgroup.pinned() <= SPARE_CHARGE
        assert int((cgroup.dirs["memory"] / "memory.usage_in_bytes").read_text()) > SPARE_CHARGE  # charged, all cache
        # When it ends, Then its cgroup is kept as a spare
        confined.end(tag)
        assert len(_spares_of(confined)) == 1
    finally:
        confined.close()


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_a_sandboxed_attempts_cgroup_is_kept_once_its_launcher_is_gone_and_serves_the_next(make_engine, monkeypatch):
    # Given workers in bubblewrap (whose launcher exits before its init inside is reaped) under a
    # memory and a process cap (a task counted until it is reaped), one at a time, each cgroup an attempt
    # starts in counted: made afresh, or a spare renamed
    engine = shell_engine(make_engine, max_memory_mb=300, max_processes=100, sandbox="on", sandbox_network="host", max_workers=1)
    started: list[str] = []
    real_reuse = Confined._reuse

    def reuse(self, name, key):
        found = real_reuse(self, name, key)
        started.append("spare" if found is not None else "made")
        return found

    monkeypatch.setattr(Confined, "_reuse", reuse)
    job = run_job(engine, "spares", tasks=["sleep 0.1", "sleep 0.1", "sleep 0.1"], timeout=60)
    assert job.status.value == "completed", job.status
    _, workers = engine.queries.snapshot(job.root_id)
    assert [w.sandbox for w in workers] == ["bubblewrap"] * 3
    # Then an ended attempt's cgroup was kept (its launcher's init gone, and reaped) and renamed for a
    # later attempt, where each was made afresh before (a start may come before the last one's end)
    assert started[0] == "made" and "spare" in started[1:], started


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def _sleep_in(cgroup: Cgroup) -> subprocess.Popen:
    """A ``sleep 30`` born in ``cgroup`` (the caller kills it), once the kernel lists it there."""
    setup = ChildSetup(cgroup.join_fds(), 0)
    try:
        sleeper = subprocess.Popen(["sleep", "30"], preexec_fn=setup)
    finally:
        for fd in setup.fds:
            os.close(fd)
    wait_until(lambda: cgroup.members() == [sleeper.pid], timeout=5)
    return sleeper


def test_a_spares_name_gives_its_server_by_pid_and_start_time():
    from orchestrator.process.cgroups import SPARE, spare_owner

    assert spare_owner(Confined().spare_prefix + "3") == (os.getpid(), procscan.process_start_id(os.getpid()))
    assert spare_owner(f"{SPARE}41-2-7") == (41, None)  # named by a server of before the start times
    assert spare_owner(f"{SPARE}x.1-2-7") is None and spare_owner("orchestrator-job.1") is None


@pytest.mark.skipif(not SPARES, reason="spares are v1's (v2 cannot rename a cgroup)")
def test_a_spare_goes_once_its_server_is_gone_by_pid_and_start_time_and_never_while_it_holds_a_process():
    import subprocess

    from orchestrator.process.cgroups import SPARE, remove_dead_spares

    # Given spares named as a runner names them (server pid and start time): one of this process, one
    # of an ended server whose pid this process has now (another start time), one of an ended server
    # that holds a process (no spare does: not the sweep's to kill)
    mine = Confined().spare_prefix + "1"
    assert mine.startswith(f"{SPARE}{os.getpid()}.{procscan.process_start_id(os.getpid())}-")
    reused = f"{SPARE}{os.getpid()}.1-1-1"
    gone = subprocess.Popen(["true"])
    gone.wait()
    holding = f"{SPARE}{gone.pid}.1-1-1"
    before = f"orchestrator-holding-{os.getpid()}"  # (a spare's name only once it holds its process: a
    # server of this user's starting meanwhile sweeps the spares of dead servers, as it should)
    made = [base / name for _, base in BASES.values() for name in (mine, reused, holding, before)]
    for directory in made[::4] + made[1::4] + made[3::4]:
        directory.mkdir()
    sleeper = None
    try:
        held = hierarchies().find(before)
        assert held is not None
        sleeper = _sleep_in(held)
        assert held.rename(holding)
        # When a server starts (or its first attempt does)
        remove_dead_spares()
        # Then the spare of the pid's earlier owner goes; this process's, and the one holding a process, stay
        assert hierarchies().find(reused) is None
        assert hierarchies().find(mine) is not None
        assert hierarchies().find(holding) is not None and sleeper.poll() is None
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        for directory in made:
            with contextlib.suppress(FileNotFoundError):
                wait_until(lambda d=directory: not (d / "cgroup.procs").read_text().split(), timeout=5)
                directory.rmdir()


@pytest.mark.skipif(not IN_CGROUP, reason="no cgroup this user may make")
def test_whether_a_cgroup_named_as_proc_names_it_holds_a_process_is_the_kernels_word(tmp_path):

    from orchestrator.process.cgroups import _own_cgroups, holds_processes

    # Given an attempt's cgroup, named as /proc/<pid>/cgroup names it (what a registration keeps)
    cgroup = hierarchies().create(f"orchestrator-holds-{os.getpid()}", Limits(memory=64 * MB, processes=20))
    assert cgroup is not None
    paths = hierarchies().proc_paths(cgroup)
    assert paths
    sleeper = None
    try:
        # Then empty it holds none; with a process in it, it holds one
        assert holds_processes(paths) is False
        sleeper = _sleep_in(cgroup)
        named = _own_cgroups(Path(f"/proc/{sleeper.pid}/cgroup").read_text())
        assert all(named[key] == path for key, path in paths.items())  # as the kernel names its process's
        assert holds_processes(paths) is True
        sleeper.kill()
        sleeper.wait()
        wait_until(lambda: holds_processes(paths) is False, timeout=5)
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        cgroup.remove()
    # And removed, it holds none; what cannot be told (a parent not there, a path that climbs out, a
    # hierarchy not mounted) is None, never False
    assert holds_processes(paths) is False
    assert holds_processes({k: v.rsplit("/", 1)[0] + "/no-such-parent/x" for k, v in paths.items()}) is None
    assert holds_processes({k: v + "/../.." for k, v in paths.items()}) is None
    assert holds_processes({"no-such-controller": "/x"}) is None
    assert holds_processes({}) is None


def test_a_reading_takes_its_keys_from_a_cgroup_file_whole_and_only_them(tmp_path):
    from orchestrator.process.cgroups import _RSS_KEYS, _picked

    # Given a memory.stat as v1 writes it: a key that begins another (rss, rss_huge), the first
    # line's key, the last line without its newline, a value that is no count
    stat = tmp_path / "memory.stat"
    stat.write_text("rss_huge 7\nrss 100\nmapped_file 5\nweird -3\ntotal_rss 400\ntotal_mapped_file 50")
    # Then each asked key has its own value, the others are not read, a missing one is absent
    assert _picked(stat, _RSS_KEYS) == {"rss": 100, "mapped_file": 5, "total_rss": 400, "total_mapped_file": 50}
    assert _picked(stat, ("weird", "rss_huge", "absent")) == {"rss_huge": 7}
    assert _picked(tmp_path / "gone", _RSS_KEYS) == {}
    # and the kernel's counts: v1's memory.oom_control, v2's memory.events, pids.events
    (tmp_path / "oom_control").write_text("oom_kill_disable 1\nunder_oom 0\noom_kill 3\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 2\noom_kill 4\noom_group_kill 9\n")
    (tmp_path / "pids.events").write_text("max 6\n")
    assert _picked(tmp_path / "oom_control", ("oom_kill",)) == {"oom_kill": 3}
    assert _picked(tmp_path / "memory.events", ("oom_kill",)) == {"oom_kill": 4}
    assert _picked(tmp_path / "pids.events", ("max",)) == {"max": 6}


@pytest.mark.skipif(not procscan.HAS_PROC, reason="/proc")
def test_a_process_cpu_is_read_from_its_stat_as_psutil_reads_it():
    import psutil

    # Given a process that burnt some CPU and reaped a child that burnt some too
    burn = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'sum(range(10**7))']); sum(range(10**7)); input()"
    proc = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        assert wait_until(
            lambda: procscan.cpu_seconds(proc.pid) > 0 and psutil.Process(proc.pid).cpu_times().children_user > 0, timeout=20
        )
        # Then one read of its stat says what psutil says (its own and its reaped children's)
        times = psutil.Process(proc.pid).cpu_times()
        expected = times.user + times.system + times.children_user + times.children_system
        assert procscan.cpu_seconds(proc.pid) == pytest.approx(expected, abs=0.05)
    finally:
        proc.kill()
        proc.communicate()
    assert procscan.cpu_seconds(proc.pid) == 0.0  # reaped: gone
