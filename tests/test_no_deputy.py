"""The orchestrator is no deputy of its workers: what a worker writes (its checkout, its worktree's
git dir, index and config, the names it chooses) is data, never configuration, code or a path for
git the orchestrator runs (git/sandboxed.py, git/tree_checks.py, git/invocation.py's pins).

Real bubblewrap, a real host repository (helpers.worktree.make_host) with the orchestrator's folder
in it, ``command`` workers that plant what an attacker would, and a proof folder outside every
sandbox: a planted command that ran outside writes there (in a sandbox it cannot). Each test checks
the proof folder is empty and the host is as it was (or, with ``merge_into``, moved only as asked).
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.models import JobRecord, WorkerStatus
from orchestrator.process.backends import probe

from .conftest import only_worker, run_job
from .helpers import nesting as nesting_helpers
from .helpers.resolving import BOTH_SIDES
from .helpers.worktree import git, host_engine, make_host, snapshot, user_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
served = nesting_helpers.served  # a real server whose command workers start child jobs
needs_bwrap = pytest.mark.skipif(not probe().available, reason=f"no sandbox here: {probe().reason}")
SECRET = "no-deputy-api-key-0123456789abcdef"

# Writes a NUL-free git index (version 2) holding the worktree's entries plus one whose name climbs out
# of the checkout to the orchestrator's config.yaml: git 2.39's update-index refuses such a name, its
# index reader does not. argv: the index's path, the name to plant.
PLANT_INDEX = r"""
import hashlib, struct, subprocess, sys
index, planted = sys.argv[1], sys.argv[2].encode()
listed = subprocess.run(["git", "ls-files", "-s", "-z"], capture_output=True, check=True).stdout
entries = []
for line in filter(None, listed.split(b"\0")):
    meta, name = line.split(b"\t", 1)
    mode, sha, _ = meta.split(b" ")
    entries.append((int(mode, 8), sha.decode(), name))
entries.append((0o100644, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391", planted))
body = b"DIRC" + struct.pack(">II", 2, len(entries))
for mode, sha, name in sorted(entries, key=lambda e: e[2]):
    entry = struct.pack(">10I", 0, 0, 0, 0, 0, 0, mode, 0, 0, 0) + bytes.fromhex(sha) + struct.pack(">H", len(name)) + name
    body += entry + b"\0" * (8 - len(entry) % 8)
open(index, "wb").write(body + hashlib.sha1(body).digest())
"""


# git on a repository of the worker's own making: under Landlock every git it runs is told its own git dir
# (git/worker_gitdir.py), so an attacker drops those variables first (a no-op under bubblewrap)
NESTED = "env -u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE git"


@pytest.fixture(params=["bubblewrap", "landlock"])
def deputy(tmp_path, request):
    """A host repository, the orchestrator's folder in it with an API key in its config.yaml, a proof
    folder, and ``evil``: a command that writes ``proof/<its first argument>`` wherever it runs. Each
    test runs under each sandbox backend the machine offers (``workers.sandbox_backend`` pinned)."""
    if not probe(backend=request.param).available:
        pytest.skip(f"no {request.param} sandbox here: {probe(backend=request.param).reason}")
    host, folder = make_host(tmp_path)
    (folder / "config.yaml").write_text(f"api:\n  api_key: {SECRET}\n")  # (uncommitted: never in an object)
    proof = tmp_path / "proof"
    proof.mkdir()
    evil = tmp_path / "evil.sh"
    evil.write_text(f'#!/bin/sh\necho "ran outside the sandbox: $0 $*" > \'{proof}\'/"$(basename "$1")"\n')
    evil.chmod(0o755)
    engines = []

    def make(**sections):
        workers = {"sandbox": "on", "max_retries": 0, "sandbox_backend": request.param, **sections.pop("workers", {})}
        engine = host_engine(folder, workers=workers, **sections)
        engines.append(engine)
        return engine

    make.backend = request.param  # type: ignore[attr-defined]
    yield host, folder, proof, evil, make
    for engine in engines:
        engine.shutdown(timeout=10)


def python_m_filter(host: Path, *kinds: str) -> None:
    """The host's ``*.nb`` files run through a filter ``python -m stripper`` (``kinds``: clean, smudge),
    as nbstripout installs one: ``-m`` finds the module in the folder git runs in."""
    for kind in kinds:
        git(host, "config", f"filter.strip.{kind}", f"'{sys.executable}' -m stripper")
    (host / ".gitattributes").write_text("*.nb filter=strip\n")
    git(host, "add", "-A")
    git(host, "commit", "-qm", "attributes", "--no-verify", env=user_env())


def every_object(host: Path) -> bytes:
    """Every object of the host repository's store, as ``cat-file --batch`` prints them."""
    return subprocess.run(
        ["git", "-C", str(host), "cat-file", "--batch-all-objects", "--batch"], capture_output=True, check=True
    ).stdout


def ran(proof: Path) -> list[str]:
    return sorted(p.read_text().strip() for p in proof.iterdir())


def log_of(engine, job: JobRecord) -> str:
    return engine.workspace.worker_log(job.root_id, 0, "worker_1").read_text(errors="replace")


@needs_bwrap
def test_an_index_entry_that_climbs_out_of_the_checkout_reads_nothing_and_is_never_committed(deputy, tmp_path):
    host, folder, proof, evil, make = deputy
    plant = tmp_path / "plant_index.py"
    plant.write_text(PLANT_INDEX)
    before = snapshot(host, folder)
    engine = make()
    # From the checkout to the folder's config.yaml: workspace/job_<id>/depth_0/worker_1 under bubblewrap; under
    # Landlock the checkout lives outside the folder (git.checkouts_root), its climb computed where it runs.
    climb = (
        "../../../../config.yaml"
        if make.backend == "bubblewrap"
        else f"$('{sys.executable}' -c 'import os, sys; print(os.path.relpath(sys.argv[1]))' '{folder / 'config.yaml'}')"
    )
    task = f"'{sys.executable}' '{plant}' \"$(git rev-parse --git-path index)\" \"{climb}\" && echo work > work.txt"
    job = run_job(engine, "x", tasks=[task])
    worker = only_worker(engine, job)
    # bubblewrap: the hidden config.yaml reads empty, and the tree's check refuses the ".." entry;
    # Landlock: it cannot be read at all ("Permission denied"), so git's add fails first. Neither commits.
    said = "was not committed" if make.backend == "bubblewrap" else 'config.yaml"): Permission denied'
    assert worker.status is WorkerStatus.FAILED and said in (worker.error or ""), (worker.error, log_of(engine, job))
    assert SECRET.encode() not in every_object(host)
    fsck = subprocess.run(["git", "-C", str(host), "fsck", "--no-dangling"], capture_output=True, text=True)
    assert "hasDotdot" not in fsck.stdout + fsck.stderr
    assert snapshot(host, folder) == before


@needs_bwrap
def test_a_nested_repository_whose_config_runs_a_command_runs_nothing_outside_and_is_not_committed(deputy):
    host, folder, proof, evil, make = deputy
    before = snapshot(host, folder)
    engine = make()
    task = (
        f"{NESTED} init -q sub && {NESTED} -C sub config core.fsmonitor '{evil} nested' && echo x > sub/f && {NESTED} -C sub add f"
        f" && {NESTED} -C sub -c user.name=a -c user.email=a@x commit -qm s && git add sub; echo work > work.txt"
    )
    job = run_job(engine, "x", tasks=[task])
    worker = only_worker(engine, job)
    assert ran(proof) == []
    # Landlock: the nested repository's objects went to the workers' store (GIT_OBJECT_DIRECTORY holds for
    # every git the worker runs), so git cannot read it as a repository at all. Neither commits it.
    said = "nested repository" if make.backend == "bubblewrap" else "failed in submodule sub"
    assert worker.status is WorkerStatus.FAILED and said in (worker.error or ""), worker.error
    assert snapshot(host, folder) == before


@needs_bwrap
def test_a_config_worktree_the_worker_wrote_runs_nothing_outside(deputy):
    host, folder, proof, evil, make = deputy
    git(host, "config", "extensions.worktreeConfig", "true")  # as git sparse-checkout sets it
    before = snapshot(host, folder)
    engine = make()
    task = f"printf '[core]\\n\\tfsmonitor = {evil} worktree-config\\n' > \"$(git rev-parse --git-dir)/config.worktree\"; echo y > y.txt"
    job = run_job(engine, "x", tasks=[task])
    worker = only_worker(engine, job)
    assert ran(proof) == []
    assert worker.status is WorkerStatus.SUCCESS and worker.files_created == ["y.txt"], worker.error
    assert snapshot(host, folder) == before


@needs_bwrap
def test_hooks_a_worker_wrote_under_a_relative_hooks_path_run_neither_at_its_gates_nor_at_a_landing(deputy):
    """husky sets ``core.hooksPath=.husky/_``: relative, so in a worktree it names the worker's files, and
    after a landing with ``merge_into`` the user's checkout holds them too."""
    host, folder, proof, evil, make = deputy
    git(host, "checkout", "--", "tools/orch/config.yaml")  # a clean checkout: the landing goes through it
    git(host, "config", "core.hooksPath", ".husky/_")
    engine = make()
    hooks = "pre-commit post-commit post-checkout post-merge post-rewrite reference-transaction pre-merge-commit"
    task = (
        f"mkdir -p .husky/_ && for h in {hooks}; do printf '#!/bin/sh\\nexec {evil} hook-%s\\n' $h > .husky/_/$h;"
        " chmod +x .husky/_/$h; done; echo w > w.txt"
    )
    config = {"merge_into": "main", "gates": [{"name": "ok", "run": ["true"]}]}
    job = run_job(engine, "x", tasks=[task], config=config)
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.SUCCESS and [g.status for g in worker.gates] == ["passed"], worker.error
    assert job.merge.into.moved is True, job.merge.into  # the landing went through the user's checkout
    assert (host / ".husky" / "_" / "post-merge").is_file() and git(host, "status", "--porcelain") == ""
    assert ran(proof) == []


@needs_bwrap
def test_a_filter_of_the_users_that_resolves_a_module_from_the_checkout_runs_the_workers_module_only_in_its_sandbox(
    deputy, tmp_path
):
    """nbstripout installs ``python -m nbstripout`` as a clean filter: ``-m`` searches the folder git runs in.
    The worker's module runs, in the sandbox: it can neither write outside nor reach a host socket."""
    host, folder, proof, evil, make = deputy
    python_m_filter(host, "clean")
    name = f"orchestrator-deputy-{secrets.token_hex(4)}"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("\0" + name)  # an abstract socket of the host's (a session bus, say)
    listener.listen(4)
    listener.setblocking(False)
    module = tmp_path / "stripper.py"
    module.write_text(
        "import socket, subprocess, sys\n"
        f"subprocess.run([{str(evil)!r}, 'filter'])\n"
        "try:\n"
        f"    socket.socket(socket.AF_UNIX).connect({chr(0) + name!r})\n"
        "except OSError:\n"
        "    pass\n"
        "sys.stdout.write(sys.stdin.read())\n"
    )
    before = snapshot(host, folder)
    engine = make()
    job = run_job(engine, "x", tasks=[f"cp '{module}' stripper.py; echo cell > x.nb"])
    worker = only_worker(engine, job)
    assert ran(proof) == []
    with listener, pytest.raises(BlockingIOError):
        listener.accept()  # no one connected
    assert worker.status is WorkerStatus.SUCCESS and sorted(worker.files_created) == ["stripper.py", "x.nb"], worker.error
    assert snapshot(host, folder) == before


@needs_bwrap
def test_a_smudge_filter_of_the_users_runs_a_workers_module_only_in_a_sandbox_when_its_work_is_checked_out(deputy, tmp_path):
    """The resolver's worktree checks out the result so far, a worker's files with it: a ``python -m``
    smudge filter there finds the worker's module in the folder git runs in."""
    host, folder, proof, evil, make = deputy
    python_m_filter(host, "smudge")
    resolver = tmp_path / "resolver.py"
    resolver.write_text(BOTH_SIDES)
    before = snapshot(host, folder)
    engine = make(git={"resolver_command": [sys.executable, str(resolver), "{prompt_file}"], "resolver_kind": "command"})
    module = f"import subprocess, sys\\nsubprocess.run(['{evil}', 'smudge'])\\nsys.stdout.write(sys.stdin.read())\\n"
    first = f'printf "{module}" > stripper.py; echo cell > x.nb; sed -i s/v2/w1/ app.py'
    job = run_job(engine, "x", tasks=[first, "sed -i s/v2/w2/ app.py"], config={"merge_strategy": "resolve"})
    (resolution,) = job.merge.outcome.resolutions
    assert resolution.accepted, resolution
    assert ran(proof) == []
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("sandbox", ["on", "off"])
def test_names_that_are_not_utf8_or_hold_a_carriage_return_are_committed_and_shown_as_they_are(deputy, sandbox):
    host, folder, proof, evil, make = deputy
    if sandbox == "on" and not probe().available:
        pytest.skip(f"no sandbox here: {probe().reason}")
    before = snapshot(host, folder)
    engine = make(workers={"sandbox": sandbox})
    task = "printf x > \"$(printf 'caf\\351.txt')\"; printf y > \"$(printf 'a\\rb.txt')\""
    job = run_job(engine, "x", tasks=[task])
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.SUCCESS, worker.error
    assert sorted(worker.files_created) == ["a\rb.txt", "caf\\xe9.txt"]
    listed = subprocess.run(
        ["git", "-C", str(host), "ls-tree", "-z", "--name-only", worker.commit or ""], capture_output=True, check=True
    ).stdout.split(b"\0")
    assert b"caf\xe9.txt" in listed and b"a\rb.txt" in listed
    assert snapshot(host, folder) == before


# What every worker of the canary plants in its checkout and its worktree's git dir before it works:
# $1 the command that leaves proof, $2 the filter module to copy in.
CANARY = r"""
evil=$1; module=$2
admin=$(git rev-parse --git-dir)
printf '[core]\n\tfsmonitor = %s fsmonitor\n' "$evil" > "$admin/config.worktree"
mkdir -p "$admin/info" .husky/_
echo '* filter=strip diff=evil' > "$admin/info/attributes"
for h in pre-commit post-commit post-checkout post-merge post-rewrite reference-transaction pre-merge-commit; do
  printf '#!/bin/sh\nexec %s hook-%s\n' "$evil" "$h" > .husky/_/$h; chmod +x .husky/_/$h
done
cp "$module" stripper.py
echo "cell $$" > "cell-$$.nb"
echo '*.nb filter=strip diff=evil' >> .gitattributes
printf '[submodule "s"]\n\tpath = s\n\turl = ../s\n' > .gitmodules
printf x > "$(printf 'odd\rname\351-%s' $$)"
"""


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_canary_worker_that_plants_every_git_file_it_can_reach_runs_nothing_outside_through_a_whole_tree(
    served, tmp_path, backend
):
    """Each worker of a tree (a parent and its child job's two workers) plants hooks, a filter module,
    attributes, config.worktree, .gitmodules and odd names; the tree runs gates, child jobs merged
    into the parent's checkout, a landing with merge_into, and a second server on the same folder.
    Nothing ran outside: no proof, no connection to the host's socket, the host as it was but
    for what merge_into may move (and here, with filters in the user's checkout, did not)."""
    if not probe(backend=backend).available:
        pytest.skip(f"no {backend} sandbox here: {probe(backend=backend).reason}")
    host, folder, start = served
    pinned = {"workers": {"sandbox_backend": backend}}
    proof = tmp_path / "proof"
    proof.mkdir()
    evil = tmp_path / "evil.sh"
    evil.write_text(f'#!/bin/sh\necho "ran outside the sandbox: $*" > \'{proof}\'/"$(basename "$1")"\n')
    evil.chmod(0o755)
    name = f"orchestrator-canary-{secrets.token_hex(4)}"
    module = tmp_path / "stripper.py"
    module.write_text(
        "import socket, subprocess, sys\n"
        f"subprocess.run([{str(evil)!r}, 'filter-' + str(len(sys.argv))])\n"
        "try:\n"
        f"    socket.socket(socket.AF_UNIX).connect({chr(0) + name!r})\n"
        "except OSError:\n"
        "    pass\n"
        "sys.stdout.write(sys.stdin.read())\n"
    )
    plant = tmp_path / "plant.sh"
    plant.write_text(CANARY)
    wrapper = tmp_path / "plant-here.sh"
    wrapper.write_text(f"exec sh '{plant}' '{evil}' '{module}'\n")
    git(host, "config", "extensions.worktreeConfig", "true")
    git(host, "config", "core.hooksPath", ".husky/_")
    git(host, "config", "diff.evil.textconv", f"'{evil}' textconv")
    python_m_filter(host, "clean", "smudge")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("\0" + name)
    listener.listen(8)
    listener.setblocking(False)
    before = snapshot(host, folder)
    live = start(env={"PLANT": str(wrapper)}, sandbox="on", sections=pinned)
    config = {"merge_into": "main", "gates": [{"name": "ok", "run": ["true"]}]}
    doc, marker, child = nesting_helpers.run_tree(live, "parent: write a.txt=from a | write b.txt=from b", **config)
    assert marker["exit"] == 0 and child["status"] == "completed", (marker, child)
    assert doc["status"] == "completed", doc
    root = live.engine.queries.get_job(doc["job_id"])
    assert root.merge is not None and root.merge.into is not None and root.merge.into.moved is False
    assert "runs filters as files are checked out" in (root.merge.into.refused or "")
    result = git(host, "ls-tree", "-r", "--name-only", f"orchestrator/{doc['job_id']}/result").split("\n")
    assert {"a.txt", "b.txt", "stripper.py", ".husky/_/post-merge"} <= set(result)
    start(sandbox="on", sections=pinned)  # a second server on the same folder: its start-up reads the workspace and the worktrees
    assert ran(proof) == []
    with listener, pytest.raises(BlockingIOError):
        listener.accept()
    assert snapshot(host, folder) == before


@needs_bwrap
def test_on_a_node_under_the_rq_executor_what_a_worker_plants_runs_nothing_outside_either(
    deputy, tmp_path, redis_server, unique_prefix
):
    """The attempt runs on a node; the orchestrator's git on its checkout is the server's, in the
    worker's sandbox all the same: a filter module, a nested repository with an fsmonitor, odd names."""
    from .cluster_fixtures import start_node, stop_all

    host, folder, proof, evil, make = deputy
    python_m_filter(host, "clean")
    module = tmp_path / "stripper.py"
    module.write_text(f"import subprocess, sys\nsubprocess.run([{str(evil)!r}, 'filter'])\nsys.stdout.write(sys.stdin.read())\n")
    before = snapshot(host, folder)
    distributed = {"executor": "rq", "redis_url": redis_server.url, "queue_prefix": unique_prefix, "lease": 3}
    engine = make(distributed=distributed)
    own = {"orchestrator": {"command": ["sh", "-c", "{task}"]}}
    start_node(
        redis_server.url, unique_prefix, name="n1", kinds="command", slots=3, lease=3, config=own, folder=tmp_path / "node"
    )
    tasks = [
        f"cp '{module}' stripper.py; echo cell > x.nb",
        f"{NESTED} init -q sub && {NESTED} -C sub config core.fsmonitor '{evil} nested' && echo x > sub/f && {NESTED} -C sub add f"
        f" && {NESTED} -C sub -c user.name=a -c user.email=a@x commit -qm s && git add sub",
        "printf x > \"$(printf 'caf\\351.txt')\"",
    ]
    try:
        job = run_job(engine, "x", tasks=tasks, config={"max_workers": 3}, timeout=120)
    finally:
        stop_all()
    workers = {w.name: w for w in engine.queries.snapshot(job.root_id)[1]}
    assert ran(proof) == []
    assert workers["worker_1"].status is WorkerStatus.SUCCESS and workers["worker_1"].node, workers["worker_1"]
    nested = "nested repository" if make.backend == "bubblewrap" else "failed in submodule sub"  # (as on the server)
    assert workers["worker_2"].status is WorkerStatus.FAILED and nested in (workers["worker_2"].error or "")
    assert workers["worker_3"].files_created == ["caf\\xe9.txt"]
    assert snapshot(host, folder) == before
