"""A merge driver the user trusts (``git.trusted_merge_drivers``) merges workers' files only in the
workers' sandbox, with their caps (delivery/trusted_drivers.py); one not listed never runs
(git/drivers.py). Real jobs of ``command`` workers in a host repository the test makes, the user's
``merge.evil.driver`` a real script that records who and where it ran and tries to get out: a file
outside its folder, the user's checkout, a loopback listener on a port no setting allows. Each
checks the user's repository is as it was. As root and as an ordinary user (tests/run_as_user.sh),
with bubblewrap and Landlock.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.git.drivers import DriverRun, expand
from orchestrator.process.backends import probe

from .conftest import run_job
from .helpers import nesting as nesting_helpers
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
served = nesting_helpers.served

W1_W2 = ["sed -i s/v2/w1/ app.py", "sed -i s/v2/w2/ app.py"]  # the same line, two ways: a conflict
MERGED = "# merged by evil\nprint('w1')\nline2\nprint('w2')\nline2\n"  # what the driver makes of app.py
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


@pytest.fixture
def host(tmp_path):
    host, folder = make_host(tmp_path)
    engines = []

    def make(**sections):
        engine = host_engine(folder, **sections)
        engines.append(engine)
        return engine

    yield host, folder, make
    for engine in engines:
        engine.shutdown(timeout=10)


@pytest.fixture
def listener():
    """A loopback TCP listener on a port no setting allows; ``accept`` must find nobody."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def reached(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


def evil_driver(host: Path, proof: Path, port: int, merge: str = "") -> Path:
    """The user's ``merge.evil.driver`` for every path (their committed ``* merge=evil``): a script
    that prints its uid and namespaces, tries to write ``proof/outside`` and the user's checkout and
    to reach the listener on ``port``, each said on its output, then merges (``merge``: instead, a
    shell line of its own)."""
    proof.mkdir(exist_ok=True)
    proof.chmod(0o777)  # an ordinary user's sandbox could write it if it got out
    script = host.parent / "evil-driver.sh"
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
    script.write_text(
        "#!/bin/sh\n"
        'echo "driver uid=$(id -u) mntns=$(readlink /proc/self/ns/mnt) userns=$(readlink /proc/self/ns/user)"\n'
        f"if echo ran > '{proof}/outside' 2>/dev/null; then echo 'canary: written'; else echo 'canary: refused'; fi\n"
        f"if echo ran > '{host}/pwned' 2>/dev/null; then echo 'host: written'; else echo 'host: refused'; fi\n"
        f'if \'{PYTHON}\' -c "{connect}" 2>/dev/null; then echo "listener: reached"; else echo "listener: refused"; fi\n'
        # Your git dir (other trees' branches, their commits): a driver merges three files, it needs none.
        f"if cat '{host}/.git/HEAD' >/dev/null 2>&1 || git -C '{host}' log --all >/dev/null 2>&1; then echo 'git dir: read'; "
        "else echo 'git dir: refused'; fi\n"
        + (merge or '{ echo "# merged by evil"; cat "$2" "$3"; } > "$2.new" && mv "$2.new" "$2"')
        + "\n"
    )
    script.chmod(0o755)
    git(host, "config", "merge.evil.driver", f"'{script}' %O %A %B")
    (host / ".gitattributes").write_text("* merge=evil\n")
    git(host, "add", ".gitattributes")
    git(host, "commit", "-qm", "attributes", "--no-verify", env=user_env())
    return script


def driver_log(engine, job) -> str:
    path = engine.workspace.logs_dir(job.root_id) / "merge-drivers.log"
    return path.read_text() if path.exists() else ""


def needs(backend: str) -> None:
    if not probe(backend=backend).available:
        pytest.skip(f"no {backend} sandbox here: {probe(backend=backend).reason}")


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_trusted_merge_driver_merges_the_workers_files_confined_in_the_sandbox(host, tmp_path, listener, backend):
    """Trusted: the driver runs, its merge is the result's app.py, and it ran confined: in the
    sandbox's mount namespace (bubblewrap), unable to write outside its folder or the user's
    checkout, unable to reach a loopback port nobody allowed; the user's repository unchanged."""
    needs(backend)
    host, folder, make = host
    proof = tmp_path / "proof"
    script = evil_driver(host, proof, listener.getsockname()[1])
    before = snapshot(host, folder)
    engine = make(
        workers={"max_retries": 0, "sandbox": "on", "sandbox_backend": backend}, git={"trusted_merge_drivers": ["evil"]}
    )
    job = run_job(engine, "x", tasks=W1_W2)
    outcome = job.merge.outcome
    said = driver_log(engine, job)
    assert outcome.merged == ("worker_1", "worker_2") and outcome.conflicts == (), (outcome, said)
    assert git(host, "show", f"{outcome.result_ref}:app.py") == MERGED
    assert f"driver uid={os.getuid()} " in said, said  # it ran, as the server's user
    if backend == "bubblewrap":
        assert f"mntns={os.readlink('/proc/self/ns/mnt')} " not in said, said  # in a mount namespace of its own
    assert "canary: refused" in said and "host: refused" in said and "listener: refused" in said, said
    assert "git dir: refused" in said, said
    assert "ended: exit code 0" in said, said
    assert not list(proof.iterdir()) and not (host / "pwned").exists() and not reached(listener)
    assert snapshot(host, folder) == before
    # The same script unconfined gets out each way: the proofs above can fail.
    (tmp_path / "o").write_text("x\n")
    done = subprocess.run([str(script), *(str(tmp_path / "o"),) * 3], capture_output=True, text=True, cwd=tmp_path)
    assert "canary: written" in done.stdout and "host: written" in done.stdout and "listener: reached" in done.stdout
    assert "git dir: read" in done.stdout
    assert (proof / "outside").exists() and reached(listener)


def test_an_untrusted_merge_driver_is_not_run_and_its_path_is_a_conflict_that_says_so(host, tmp_path, listener):
    host, folder, make = host
    proof = tmp_path / "proof"
    evil_driver(host, proof, listener.getsockname()[1])
    before = snapshot(host, folder)
    engine = make(workers={"max_retries": 0}, git={"trusted_merge_drivers": ["other"]})
    job = run_job(engine, "x", tasks=W1_W2)
    (conflict,) = job.merge.outcome.conflicts
    assert (conflict.path, conflict.kind) == ("app.py", "merge driver evil not run")
    assert job.merge.outcome.skipped == ("worker_2",)
    assert driver_log(engine, job) == "" and not list(proof.iterdir()) and not reached(listener)
    assert snapshot(host, folder) == before


def test_a_trusted_driver_is_not_run_where_the_workers_run_unconfined(host, tmp_path, listener):
    """workers.sandbox off: a trusted driver would run in the host, so it does not run at all."""
    host, folder, make = host
    proof = tmp_path / "proof"
    evil_driver(host, proof, listener.getsockname()[1])
    before = snapshot(host, folder)
    engine = make(workers={"max_retries": 0, "sandbox": "off"}, git={"trusted_merge_drivers": ["evil"]})
    job = run_job(engine, "x", tasks=W1_W2)
    (conflict,) = job.merge.outcome.conflicts
    assert conflict.kind.startswith("merge driver evil not run: it is trusted (git.trusted_merge_drivers), but this job's")
    assert driver_log(engine, job) == "" and not list(proof.iterdir()) and not reached(listener)
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
@pytest.mark.parametrize(
    ("merge", "caps", "kind"),
    [
        ("exit 3", {}, "merge driver evil exited with code 3"),
        # 20 MiB in its folder under a 5 MiB disk cap (no file-size limit: max_log_mb 0), held there.
        (
            'head -c 20971520 /dev/zero > "$2"; sleep 30',
            {"max_disk_mb": 5, "max_log_mb": 0, "monitor_interval": 0.2},
            "merge driver evil was stopped at a worker's cap",
        ),
        # Its merged file a link to a file only the server reads (hidden in the sandbox): never followed.
        ('ln -sf "$CONFIG" "$2"', {}, "merge driver evil left no merged file to read"),
    ],
    ids=["fails", "past-the-disk-cap", "a-link-to-the-config"],
)
def test_a_trusted_driver_that_fails_or_passes_a_cap_leaves_the_path_a_conflict_with_the_reason(
    host, tmp_path, listener, backend, merge, caps, kind
):
    needs(backend)
    host, folder, make = host
    (folder / "config.yaml").write_text("api:\n  api_key: the-admin-key\n")
    evil_driver(host, tmp_path / "proof", listener.getsockname()[1], merge=merge.replace("$CONFIG", str(folder / "config.yaml")))
    before = snapshot(host, folder)
    engine = make(
        workers={"max_retries": 0, "sandbox": "on", "sandbox_backend": backend, **caps},
        git={"trusted_merge_drivers": ["evil"], "merge_driver_timeout": 60},
    )
    job = run_job(engine, "x", tasks=W1_W2)
    (conflict,) = job.merge.outcome.conflicts
    assert conflict.path == "app.py" and conflict.kind.startswith(kind), (conflict, driver_log(engine, job))
    assert job.merge.outcome.skipped == ("worker_2",)
    assert "the-admin-key" not in git(host, "show", f"{job.merge.outcome.result_ref}:app.py")
    assert not (engine.workspace.job_dir(job.root_id) / "drivers").exists() or not any(
        (engine.workspace.job_dir(job.root_id) / "drivers").iterdir()
    )  # its folder is gone
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("value", [["ok", "two words"], "evil", [3], [""]])
def test_a_bad_trusted_merge_drivers_setting_is_refused_with_what_is_wrong(tmp_path, value):
    with pytest.raises(ConfigError) as caught:
        load_settings(base_dir=tmp_path, environ={}, overrides={"git": {"trusted_merge_drivers": value}})
    assert "git.trusted_merge_drivers" in caught.value.message and "merge driver name" in caught.value.message


def marking_filters(host: Path, proof: Path) -> None:
    """The user's filters and textconv, each a real program that leaves a marker in ``proof`` (where
    no sandbox lets it write) when it meets a worker's words (``WORDS``: the user's own files run
    through them too, as the orchestrator checks out the user's base) and then does its job:
    ``evil`` (clean, smudge) and a textconv on ``*.py``, ``proc`` (a long-running ``process``
    filter, as git-lfs installs one; it marks as it starts) on ``*.txt``."""
    proof.mkdir(exist_ok=True)
    proof.chmod(0o777)
    script = host.parent / "marking-filter.sh"
    mark = f'echo "$kind $(id -u) $PWD" > \'{proof}\'/"$kind-$$" 2>/dev/null'
    script.write_text(
        "#!/bin/sh\nkind=$1\nshift\n"
        f'if [ "$kind" = process ]; then {mark}; exec cat; fi\n'  # (git reads no handshake: the file goes unfiltered)
        'data=$(cat "$@"; echo x)\n'  # (no temporary file: in a sandbox /tmp is read-only)
        f"if printf '%s' \"$data\" | grep -qE '{WORDS}'; then {mark}; fi\n"
        "printf '%s' \"${data%x}\"\n"
    )
    script.chmod(0o755)
    for key, kind in (("filter.evil.clean", "clean"), ("filter.evil.smudge", "smudge"), ("diff.evil.textconv", "textconv")):
        git(host, "config", key, f"'{script}' {kind}")
    git(host, "config", "filter.proc.process", f"'{script}' process")
    (host / ".gitattributes").write_text("*.py filter=evil diff=evil\n*.txt filter=proc diff=evil\n")
    git(host, "add", ".gitattributes")
    git(host, "commit", "-qm", "attributes", "--no-verify", env=user_env())


WORDS = "w1|w2|one|two"  # what the workers write, and the user's files do not hold


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_no_filter_or_textconv_of_the_users_runs_in_the_host_on_the_workers_files(host, tmp_path, backend):
    """Every git the orchestrator runs in the host on workers' files: the result's merge (merge-tree,
    merge-file and hash-object of a ``theirs`` merge), a ``merge_into`` landing onto the checked-out
    branch (refused with the reason: a checkout runs smudge and process, git's check of what changed
    runs clean), the diffs a person reads (a worker's, the job's). None runs a filter or textconv:
    no marker; the workers' own git ran them in their sandbox, where the marker cannot be written."""
    needs(backend)
    from orchestrator.git import diffs

    host, folder, make = host
    proof = tmp_path / "proof"
    marking_filters(host, proof)
    before = snapshot(host, folder)  # (the test's own git status may run clean here: cleared below)
    for marker in proof.iterdir():
        marker.unlink()
    engine = make(workers={"max_retries": 0, "sandbox": "on", "sandbox_backend": backend})
    tasks = ["sed -i s/v2/w1/ app.py; echo one > a.txt", "sed -i s/v2/w2/ app.py; echo two > b.txt"]
    job = run_job(engine, "x", tasks=tasks, config={"merge_strategy": "theirs", "merge_into": "main"})
    outcome = job.merge.outcome
    assert outcome.merged == ("worker_1", "worker_2"), outcome
    assert git(host, "show", f"{outcome.result_ref}:app.py") == "print('w2')\nline2\n"
    assert git(host, "show", f"{outcome.result_ref}:a.txt") == "one\n"
    into = job.merge.into
    assert into is not None and into.moved is False, into
    assert "runs filters as files are checked out (filter.evil.clean, filter.evil.smudge, filter.proc.process)" in (
        into.refused or ""
    ), into
    worker = diffs.worker_diff(engine.queries, engine.settings, engine.workspace, job.id, (0, "worker_1"), 1 << 20)
    whole = diffs.job_diff(engine.queries, engine.settings, engine.workspace, job.id, 1 << 20)
    assert "+print('w1')" in worker["diff"] and "+one" in worker["diff"], worker
    assert "+print('w2')" in whole["diff"] and "+two" in whole["diff"], whole
    assert [p.read_text() for p in proof.iterdir()] == []
    assert snapshot(host, folder) == before
    # The same filters run when git itself reads these files in the host: the markers above could appear.
    for marker in proof.iterdir():
        marker.unlink()
    result = outcome.result_ref
    git(host, "cat-file", "--filters", f"{result}:app.py")
    git(host, "cat-file", "--textconv", f"{result}:app.py")
    (tmp_path / "w1.py").write_text("print('w1')\n")
    git(host, "hash-object", "--path=app.py", str(tmp_path / "w1.py"))
    git(host, "hash-object", "--path=x.txt", str(tmp_path / "w1.py"))
    assert {p.name.split("-")[0] for p in proof.iterdir()} == {"smudge", "textconv", "clean", "process"}


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_clean_filter_alone_keeps_a_checked_out_merge_into_branch_where_it_is(host, tmp_path, backend):
    """A ``clean`` filter (no smudge): git runs it on the checkout's files as it checks what changed
    (the landing's ``status``, the fast-forward's own check), which then hold the workers' work."""
    host, folder, make = host
    proof = tmp_path / "proof"
    marking_filters(host, proof)
    for key in ("filter.evil.smudge", "filter.proc.process", "diff.evil.textconv"):
        git(host, "config", "--unset", key)
    before = snapshot(host, folder)
    for marker in proof.iterdir():
        marker.unlink()
    needs(backend)
    engine = make(workers={"max_retries": 0, "sandbox": "on", "sandbox_backend": backend})
    job = run_job(engine, "x", tasks=["sed -i s/v2/w1/ app.py"], config={"merge_into": "main"})
    into = job.merge.into
    assert into is not None and into.moved is False, into
    assert "runs filters as files are checked out (filter.evil.clean)" in (into.refused or ""), into
    assert [p.read_text() for p in proof.iterdir()] == []
    assert snapshot(host, folder) == before


def test_a_drivers_command_line_is_filled_in_as_git_fills_it():
    run = DriverRun("evil", "", "a dir/it's.py", b"", b"", b"", marker_size=9)
    files = ("/f/.merge_file_base", "/f/.merge_file_ours", "/f/.merge_file_theirs")
    assert expand("drv %O %A %B %L %P %S %X %Y 100%% %Q", files, run) == (
        "drv /f/.merge_file_base /f/.merge_file_ours /f/.merge_file_theirs 9 'a dir/it'\"'\"'s.py' base ours theirs 100% %Q"
    )


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_child_jobs_merge_into_its_parents_branch_runs_a_trusted_driver_confined(served, tmp_path, listener, backend):
    """A child job's two workers add the same file two ways: its merge into the parent worker's
    branch (engine/nesting.py) needs the user's driver, which runs in the sandbox; the parent's
    checkout then holds the driver's merge, and so does the root's result."""
    needs(backend)
    host, folder, start = served
    proof = tmp_path / "proof"
    evil_driver(host, proof, listener.getsockname()[1])
    before = snapshot(host, folder)
    live = start(
        sandbox="on",
        sections={"workers": {"sandbox_backend": backend}, "git": {"trusted_merge_drivers": ["evil"]}},
    )
    doc, marker, child = nesting_helpers.run_tree(live, "parent: write a.txt=from a | write a.txt=from b")
    merged = "# merged by evil\nfrom a\nfrom b\n"
    assert marker["exit"] == 0 and child["status"] == "completed", (marker, child)
    assert marker["seen"]["a.txt"] == merged, marker
    assert doc["status"] == "completed", doc
    assert git(host, "show", f"orchestrator/{doc['job_id']}/result:a.txt") == merged
    said = driver_log(live.engine, live.engine.queries.get_job(doc["job_id"]))
    assert "canary: refused" in said and "host: refused" in said and "listener: refused" in said, said
    assert not list(proof.iterdir()) and not reached(listener)
    assert snapshot(host, folder) == before
