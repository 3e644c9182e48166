"""What a worker's commit holds is data the orchestrator's git in the host repository only merges,
measures and checks: a merge driver of the user's never runs on it outside a sandbox
(git/drivers.py), a blob larger than the worker's caps is refused however small it compresses, and
a tree git fsck would refuse (a ``.gitmodules`` that runs a command) never gets a branch
(git/tree_checks.py). Real jobs of ``command`` workers in a host repository the test makes
(helpers.worktree.make_host); each checks the user's repository is as it was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.git import merging, tree_checks
from orchestrator.models import WorkerStatus
from orchestrator.outcomes import RefusalKind
from orchestrator.process.backends import probe

from .conftest import run_job
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env, workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SANDBOXES = ["bubblewrap", "landlock", "off"]  # workers.sandbox on under each backend, and off


def sandboxing(sandbox: str) -> dict[str, str]:
    """The workers settings for one of SANDBOXES (a backend this machine lacks: skipped)."""
    if sandbox == "off":
        return {"sandbox": "off"}
    if not probe(backend=sandbox).available:
        pytest.skip(f"no {sandbox} sandbox here: {probe(backend=sandbox).reason}")
    return {"sandbox": "on", "sandbox_backend": sandbox}


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


def evil_driver(host: Path, canary: Path, attributes: bool = True) -> None:
    """The user's ``merge.evil.driver``: a script that writes ``canary`` wherever it runs, named for
    every path by the user's own committed ``.gitattributes`` (as npm-merge-driver installs one;
    ``attributes=False``: by none of the user's)."""
    script = host.parent / "evil-driver.sh"
    script.write_text(f'#!/bin/sh\necho "ran on $*" >> \'{canary}\'\ncp "$3" "$2"\nexit 0\n')
    script.chmod(0o755)
    git(host, "config", "merge.evil.driver", f"'{script}' %O %A %B")
    if not attributes:
        return
    (host / ".gitattributes").write_text("* merge=evil\n")
    git(host, "add", ".gitattributes")
    git(host, "commit", "-qm", "attributes", "--no-verify", env=user_env())


@pytest.mark.parametrize("strategy", ["auto", "theirs"])
def test_a_merge_driver_of_the_users_never_runs_on_the_workers_files_in_the_host(host, tmp_path, strategy):
    """Two workers change the same line of app.py, each also writing ``* merge=evil`` to .gitattributes
    and ``merge.renormalize`` being on (so git would read the merged trees' attributes): the merge
    of the result needs the user's driver for app.py; it is not run, and the conflict says so."""
    host, folder, make = host
    canary = tmp_path / "canary"
    evil_driver(host, canary)
    git(host, "config", "merge.renormalize", "true")
    before = snapshot(host, folder)
    engine = make(workers={"max_retries": 0})
    plant = "printf '* merge=evil\\n*.py merge=evil\\n' > .gitattributes; "
    job = run_job(
        engine,
        "x",
        tasks=[plant + "sed -i s/v2/w1/ app.py", plant + "sed -i s/v2/w2/ app.py"],
        config={"merge_strategy": strategy},
    )
    assert not canary.exists(), canary.read_text()
    outcome = job.merge.outcome
    (conflict,) = [c for c in outcome.conflicts if c.path == "app.py"]
    assert conflict.kind == "merge driver evil not run", outcome.conflicts
    if strategy == "theirs":  # the later worker's file whole: no text merge where the user set a driver
        assert outcome.merged == ("worker_1", "worker_2")
        assert git(host, "show", f"{outcome.result_ref}:app.py") == "print('w2')\nline2\n"
    else:
        assert outcome.skipped == ("worker_2",), outcome
    assert snapshot(host, folder) == before
    # git itself, with the same config, runs the driver: the test's driver is real.
    done = subprocess.run(
        ["git", "-C", str(host), "merge-tree", "--write-tree", *[w.branch for w in workers(engine, job).values()]],
        capture_output=True,
    )
    assert canary.exists() and done.returncode == 0


def test_attributes_a_worker_wrote_name_no_merge_driver_even_with_renormalize_on(host, tmp_path):
    """merge.renormalize makes git read the merged trees' .gitattributes, which only the workers wrote here."""
    host, folder, make = host
    canary = tmp_path / "canary"
    evil_driver(host, canary, attributes=False)
    git(host, "config", "merge.renormalize", "true")
    before = snapshot(host, folder)
    engine = make(workers={"max_retries": 0})
    plant = "printf '* merge=evil\\n' > .gitattributes; "
    job = run_job(engine, "x", tasks=[plant + "sed -i s/v2/w1/ app.py", plant + "sed -i s/v2/w2/ app.py"])
    assert not canary.exists(), canary.read_text()
    (conflict,) = job.merge.outcome.conflicts
    assert (conflict.path, conflict.kind) == ("app.py", "content")  # git's own merge: no driver named it
    assert snapshot(host, folder) == before


def test_predicted_conflicts_name_a_merge_driver_the_merge_did_not_run(host, tmp_path):
    host, folder, make = host
    canary = tmp_path / "canary"
    evil_driver(host, canary)
    engine = make(workers={"max_retries": 0})
    job = run_job(engine, "x", tasks=["sed -i s/v2/w1/ app.py", "sed -i s/v2/w2/ app.py"], config={"merge_strategy": "manual"})
    branches = [(w.name, w.branch) for w in sorted(workers(engine, job).values(), key=lambda w: w.name)]
    (conflict,) = merging.predict_conflicts(host, "main", branches)
    assert conflict.kind == "merge driver evil not run" and conflict.predicted
    assert not canary.exists()


# A 20 MiB blob of zeros (20 KB as an object) staged without its file ever being in the checkout.
BIG = 20 << 20
STAGE_BIG = (
    f"oid=$(head -c {BIG} /dev/zero | git hash-object -w --stdin) && git update-index --add --cacheinfo 100644,$oid,zeros.bin"
    " && git update-index --skip-worktree zeros.bin && echo small > small.txt"
)


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_compressed_blob_past_the_disk_cap_is_refused_by_its_inflated_size_and_never_lands(host, sandbox):
    host, folder, make = host
    before = git(host, "rev-parse", "main")
    engine = make(workers={"max_retries": 0, "max_disk_mb": 5, **sandboxing(sandbox)})
    job = run_job(engine, "x", tasks=["echo ok > ok.txt", STAGE_BIG], config={"merge_into": "main"})
    by_name = workers(engine, job)
    big = by_name["worker_2"]
    assert big.status is WorkerStatus.FAILED, (big.status, big.error)
    assert "new files hold 20.0 MiB (inflated), more than the disk cap of 5.0 MiB (workers.max_disk_mb)" in (big.error or ""), (
        big.error
    )
    if sandbox != "off":  # its branch move refused: in the orchestrator's record of refusals, not read from its log
        recorded = [r for r in big.refusals if r.kind is RefusalKind.ORCHESTRATOR]
        assert recorded and recorded[0].recorded and "disk cap" in recorded[0].line, big.refusals
    assert by_name["worker_1"].status is WorkerStatus.SUCCESS
    assert job.merge.outcome.merged == ("worker_1",)
    assert git(host, "rev-parse", "main") != before  # the landing went through, with worker_1's work alone
    assert (host / "ok.txt").read_text() == "ok\n" and not (host / "zeros.bin").exists()
    assert "zeros.bin" not in git(host, "ls-tree", "-r", "--name-only", job.merge.outcome.result_ref)


def test_a_file_past_the_file_size_limit_is_named_by_its_inflated_size(tmp_path):
    """The file-size limit (the larger of max_disk_mb and max_log_mb, both set) holds each new file;
    each object counts once, and a file the base had already counts for nothing."""
    repo, _ = make_host(tmp_path)
    base = git(repo, "rev-parse", "HEAD").strip()
    zeros = (
        subprocess.run(
            ["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=b"\0" * (3 << 20), capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )
    for name in ("a.bin", "b.bin"):  # the same object twice
        git(repo, "update-index", "--add", "--cacheinfo", f"100644,{zeros},{name}")
    tree = git(repo, "write-tree").strip()
    commit = git(repo, "commit-tree", tree, "-p", base, "-m", "big", env=user_env()).strip()
    assert tree_checks.commit_problem(repo, base, commit, tree_checks.BlobLimits(file=2 << 20)) == (
        "file 'a.bin' holds 3.0 MiB (inflated), more than the file-size limit of 2.0 MiB (workers.max_disk_mb, workers.max_log_mb)"
    )
    assert tree_checks.commit_problem(repo, base, commit, tree_checks.BlobLimits(file=4 << 20, total=4 << 20)) == ""
    assert tree_checks.commit_problem(repo, base, commit, tree_checks.BlobLimits(total=2 << 20)).startswith(
        "its new files hold 3.0 MiB"
    )
    assert tree_checks.commit_problem(repo, commit, commit, tree_checks.BlobLimits(file=1)) == ""


def planted_gitmodules(proof: Path) -> str:
    """A worker's task: a ``.gitmodules`` whose submodule runs a command on ``git submodule update``."""
    body = f'[submodule \\"x\\"]\\n\\tpath = x\\n\\turl = https://example.com/x\\n\\tupdate = !touch {proof}\\n'
    return f'printf "{body}" > .gitmodules; echo w > w.txt'


def fsck(host: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(host), "fsck", "--strict", "--no-progress"], capture_output=True, text=True)


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_gitmodules_that_runs_a_command_is_refused_with_the_reason(host, tmp_path, sandbox):
    host, folder, make = host
    proof = tmp_path / "updated"
    before = snapshot(host, folder)
    engine = make(workers={"max_retries": 0, **sandboxing(sandbox)})
    job = run_job(engine, "x", tasks=[planted_gitmodules(proof), "echo a > a.txt"])
    by_name = workers(engine, job)
    planted = by_name["worker_1"]
    assert planted.status is WorkerStatus.FAILED, (planted.status, planted.error)
    # The reason quotes the worker's command up to tree_checks.QUOTED_COMMAND characters: all of it
    # where pytest's folder is short (root's), its start where it is long (an ordinary user's, run_as_user.sh)
    quoted = f"!touch {proof}"[: tree_checks.QUOTED_COMMAND]
    reason = f"submodule 'x' runs a command on update ({quoted!r}; git fsck: gitmodulesUpdate)"
    assert reason in (planted.error or ""), f"{reason}\nnot in the worker's error:\n{planted.error}"
    assert job.merge.outcome.merged == ("worker_2",)
    assert ".gitmodules" not in git(host, "ls-tree", "-r", "--name-only", job.merge.outcome.result_ref)
    assert not proof.exists()
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_the_repository_passes_git_fsck_after_jobs_deleted_or_not_whatever_their_workers_planted(host, tmp_path, backend):
    """Sandboxed workers (git fsck's promise needs them: unconfined, a worker writes the store itself):
    a planted ``.gitmodules``, a tree named ``.GIT`` it made by hand on a branch it made, a 20 MiB
    blob of zeros past the disk cap, plain work; one job kept, one deleted with all its branches."""
    host, folder, make = host
    engine = make(workers={"max_retries": 0, "max_disk_mb": 5, **sandboxing(backend)})
    maker = tmp_path / "dotgit_tree.py"  # a tree holding ".GIT", which git's own commands never write
    maker.write_text("import sys\nsys.stdout.buffer.write(b'100644 .GIT\\0' + bytes.fromhex(sys.argv[1]))\n")
    dotgit = (
        f"blob=$(echo x | git hash-object -w --stdin) && tree=$('{sys.executable}' '{maker}' $blob"
        " | git hash-object -t tree -w --stdin --literally) && git commit-tree $tree -m bad > /dev/null; echo d > d.txt"
    )
    tasks = [planted_gitmodules(tmp_path / "updated"), STAGE_BIG, dotgit, "sed -i s/v2/w/ app.py"]
    kept = run_job(engine, "kept", tasks=tasks)
    deleted = run_job(engine, "deleted", tasks=tasks)
    assert [w.status for w in sorted(workers(engine, kept).values(), key=lambda w: w.name)] == [
        WorkerStatus.FAILED,
        WorkerStatus.FAILED,
        WorkerStatus.SUCCESS,
        WorkerStatus.SUCCESS,
    ]
    # The plant was made, and refused: the store is every worker's, so the tree's log says so, not
    # the log of whichever worker's take found it (its branch names no such object).
    logs = engine.workspace.orchestrator_log(kept.root_id).read_text()
    assert "a tree git fsck refuses: entry '.GIT' is a .git on some file system" in logs, logs
    told = "".join(engine.workspace.worker_log(kept.root_id, 0, f"worker_{n}").read_text() for n in range(1, 5))
    assert "'.GIT'" not in told, told
    engine.delete(deleted.id, all_branches=True)
    done = fsck(host)
    assert done.returncode == 0 and "error" not in done.stdout + done.stderr and "broken" not in done.stdout + done.stderr, (
        done.stdout + done.stderr
    )
