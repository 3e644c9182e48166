"""Git isolation with real git and real repositories made here: a worktree
and branch per worker, its commits, what changed, checkpoints on a retry, and the safety rule
that the user's branch, index, files, stash list and refs outside the prefix never change."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from orchestrator.checkouts.worktree import checkpoints
from orchestrator.errors import ConfigError
from orchestrator.git.commits import identity_of
from orchestrator.git.repository import GitError, add_worktree, repo_op, run_git
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.interpreter import PACKAGE_PARENT
from orchestrator.reports.status_document import job_status
from orchestrator.workers.environment import worker_prompt

from .conftest import explain, only_in_their_worktrees, run_job, three_files_in_worktrees, wait_until
from .helpers.worktree import PREFIX, git, host_engine, make_host, snapshot, user_env, workers

pytestmark = pytest.mark.slow


def test_a_job_in_auto_mode_works_in_worktrees_commits_and_leaves_the_host_as_it_was(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    job = run_job(
        engine,
        "edit",
        tasks=[
            "echo added >> app.py && echo new > new.txt && echo x > .env.local",
            "mv app.py main.py && rm tools/orch/config.yaml && echo local > .env",
            "true",
        ],
    )
    assert job.status is JobStatus.COMPLETED, [w.error for w in workers(engine, job).values()]
    assert job.config.isolation == "worktree"
    assert any(n.startswith("isolation auto: worktree, because") and "is a git repository" in n for n in job.notes)
    w1, w2, w3 = (workers(engine, job)[f"worker_{i}"] for i in (1, 2, 3))
    # Each worker's usual folder is a worktree on its own branch, from the base (HEAD)
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert (wt / ".git").is_file() and w1.branch == f"orchestrator/{job.id}/worker_1"
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD").strip() == w1.branch
    # Its work is committed by the orchestrator (hooks skipped), with the trailers, as the user
    # git names in the host (test_commits.py: the host's identity, else the orchestrator's)
    message = git(host, "log", "-1", "--format=%B%n%an <%ae>", w1.commit)
    assert "Orchestrator-Job: " + job.id in message and "Orchestrator-Worker: worker_1" in message
    who = identity_of(host)
    assert "Orchestrator-Attempt: 1" in message and message.strip().endswith(f"{who.name} <{who.email}>")
    assert git(host, "rev-parse", w1.branch).strip() == w1.commit
    assert git(host, "show", f"{w1.commit}:app.py") == "print('v2')\nline2\nadded\n"
    # What changed, how (added / modified / deleted / renamed), and a diffstat
    assert {(f["path"], f["change"]) for f in w1.files_changed} == {
        ("app.py", "modified"),
        ("new.txt", "added"),
        (".env.local", "added"),
    }
    assert w1.files_created == [".env.local", "new.txt"] and "3 files changed" in w1.diffstat
    assert {(f["path"], f["change"]) for f in w2.files_changed} == {("main.py", "renamed"), ("tools/orch/config.yaml", "deleted")}
    assert ".env" not in git(host, "ls-tree", "-r", "--name-only", w2.commit)  # .gitignore is respected
    assert w3.diffstat == "no changes" and w3.files_changed == [] and w3.commit == git(host, "rev-parse", "main").strip()
    # Shown in the status JSON and the reports' worker rows
    doc = job_status(job.id, *engine.queries.snapshot(job.root_id), engine.workspace.job_dir(job.id))
    tasks = {t["worker_id"]: t for t in doc["results"]["tasks"]}
    assert tasks["worker_1"]["branch"] == w1.branch and tasks["worker_1"]["commit"] == w1.commit
    assert tasks["worker_3"]["diffstat"] == "no changes"
    final = engine.workspace.final_report(job.id).read_text()
    assert f"`{w1.branch}`: 3 files changed" in final
    # and the host is exactly as it was
    assert snapshot(host, folder) == before


def test_the_prompt_names_the_branch_and_the_worker_runs_the_folders_own_package(hosted):
    host, folder, make = hosted
    # The folder is committed in the host, so each worktree holds a copy of it: put a package
    # named orchestrator at the worktree's root, where a cwd-first import would find it.
    (host / "orchestrator").mkdir()
    (host / "orchestrator" / "__init__.py").write_text("raise SystemExit('the copy in the worktree ran')\n")
    git(host, "add", "-A")
    git(host, "commit", "-q", "--no-verify", "-m", "copy", env=user_env())
    engine = make()
    script = (
        'echo "$PYTHONPATH" > pythonpath.txt; command -v orchestrator-spawn > spawn_path.txt; '
        "orchestrator-spawn --help > spawn_help.txt 2>&1; echo $? >> spawn_help.txt"
    )
    job = run_job(engine, "env", tasks=[script])
    w = workers(engine, job)["worker_1"]
    wt = engine.workspace.worker_dir(job.id, 0, "worker_1")
    assert (wt / "orchestrator" / "__init__.py").exists()  # the copy is there
    assert PACKAGE_PARENT not in (wt / "pythonpath.txt").read_text()  # the user's PYTHONPATH, not ours
    assert (wt / "spawn_path.txt").read_text().strip() == str(
        Path(PACKAGE_PARENT) / "orchestrator" / "bin" / "orchestrator-spawn"
    )
    assert "the copy in the worktree ran" not in (wt / "spawn_help.txt").read_text()
    assert w.status is WorkerStatus.SUCCESS
    prompt = worker_prompt(engine.workspace, w, job, api_url=None, template=None)
    assert f"a checkout of the repository on branch `orchestrator/{job.id}/worker_1`" in prompt
    assert "You need not commit" in prompt


def test_include_uncommitted_starts_from_a_snapshot_and_never_touches_index_tree_or_stash(hosted):
    host, folder, make = hosted
    (host / "app.py").write_text("uncommitted\n")
    (host / "staged.txt").write_text("staged\n")
    git(host, "add", "staged.txt")
    git(host, "stash", "list")
    before = snapshot(host, folder)
    engine = make(git={"include_uncommitted": True})
    job = run_job(engine, "see", tasks=["cat app.py staged.txt > seen.txt"])
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.SUCCESS
    assert git(host, "show", f"{w.commit}:seen.txt") == "uncommitted\nstaged\n"
    assert snapshot(host, folder) == before
    assert git(host, "stash", "list") == ""


def test_a_cancelled_job_and_a_deleted_one_leave_the_host_as_it_was_and_delete_removes_its_branches(hosted):
    host, folder, make = hosted
    git(host, "branch", "orchestrator-not-ours")  # outside the prefix: never touched
    git(host, "branch", "orchestrator/otherjob/worker_1")  # another job's: never touched
    before = snapshot(host, folder)
    engine = make()
    job = engine.submission.submit("x", {"max_workers": 1}, ["echo a > a.txt; sleep 30", "true"])
    wait_until(lambda: (engine.workspace.worker_dir(job.id, 0, "worker_1") / "a.txt").exists(), what="the worker wrote")
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 20)
    assert done.status is JobStatus.CANCELLED
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.CANCELLED and [f["path"] for f in w.files_changed] == ["a.txt"]  # partial work kept
    assert snapshot(host, folder) == before
    engine.delete(job.id)
    assert snapshot(host, folder) == before
    assert git(host, "for-each-ref", "--format=%(refname)", f"{PREFIX}{job.id}/") == ""
    assert git(host, "for-each-ref", "--format=%(refname)", "refs/heads/orchestrator/otherjob/") != ""
    assert len(git(host, "worktree", "list", "--porcelain").strip().split("\n\n")) == 1


def test_a_failed_attempt_is_committed_and_its_retry_starts_from_the_checkpoint(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    task = "if [ -e partial.txt ]; then echo saw > retry_saw_it.txt; fi; echo p > partial.txt; exit 3"
    job = run_job(engine, "x", tasks=[task], config={"max_retries": 1})
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.FAILED and len(w.attempts) == 2
    # The retry did not see attempt 1's file (reset to the checkpoint), and its own work is committed
    assert [f["path"] for f in w.files_changed] == ["partial.txt"]
    log = engine.workspace.worker_log(job.id, 0, "worker_1").read_text()
    assert "attempt 2 starts from checkpoint" in log
    base = git(host, "rev-parse", "main").strip()
    assert [a.checkpoint for a in w.attempts] == [base, base]  # each attempt's, recorded
    listed = checkpoints(w)  # what GET .../workers/worker_1/checkpoints answers
    assert listed["isolation"] == "worktree" and listed["branch"] == w.branch
    assert [(c["attempt"], c["checkpoint"], c["started_from"]) for c in listed["checkpoints"]] == [
        (1, base, "base"),
        (2, base, "reset"),
    ]
    attempts = git(host, "log", "-g", "--format=%B", w.branch)
    assert "Orchestrator-Attempt: 1" in attempts and "Orchestrator-Attempt: 2" in git(host, "log", "-1", "--format=%B", w.branch)
    assert snapshot(host, folder) == before


def test_sixteen_workers_create_worktrees_and_commit_at_once_without_a_lock_failure(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(workers={"max_workers": 16, "global_max_workers": 16})
    job = run_job(engine, "many", tasks=[f"echo {i} > file_{i}.txt" for i in range(16)], config={"max_workers": 16}, timeout=120)
    ws = workers(engine, job)
    assert job.status is JobStatus.COMPLETED, {n: w.error for n, w in ws.items() if w.error}
    assert len({w.commit for w in ws.values()}) == 16
    assert all(w.files_created == [f"file_{w.index - 1}.txt"] for w in ws.values())
    assert snapshot(host, folder) == before


def test_repository_level_operations_retry_on_a_held_git_lock(tmp_path):
    host, _ = make_host(tmp_path)
    lock = host / ".git" / "refs" / "heads" / "orchestrator" / "x.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    release = threading.Timer(0.5, lock.unlink)
    release.start()
    try:
        with pytest.raises(Exception, match="lock"):
            run_git(host, "update-ref", "refs/heads/orchestrator/x", "HEAD")
        repo_op(host, host, "update-ref", "refs/heads/orchestrator/x", "HEAD")  # waits for the lock instead of failing
        assert git(host, "rev-parse", "orchestrator/x") == git(host, "rev-parse", "HEAD")
    finally:
        release.join()


def test_a_new_worktree_is_what_git_worktree_add_makes_and_a_failed_checkout_leaves_none(tmp_path):
    """add_worktree checks out outside the repository's lock (git's own two steps, split): the
    result is the same as ``git worktree add``'s, and a checkout that fails (here a required
    smudge filter) leaves no worktree behind, as git's own does."""
    host, _ = make_host(tmp_path)
    head = git(host, "rev-parse", "HEAD").strip()
    made, plain = tmp_path / "made wt", tmp_path / "plain wt"
    add_worktree(host, made, "orchestrator/a", head)
    git(host, "worktree", "add", "-q", "--no-track", "-b", "orchestrator/b", str(plain), head)
    for tree in (made, plain):
        assert git(tree, "status", "--porcelain", "--untracked-files=all") == ""
        assert git(tree, "ls-files", "-s") == git(host, "ls-tree", "-r", "--format=%(objectmode) %(objectname) 0\t%(path)", head)
    assert sorted(p.name for p in made.iterdir()) == sorted(p.name for p in plain.iterdir())
    assert git(made, "symbolic-ref", "HEAD") == "refs/heads/orchestrator/a\n"
    listed = git(host, "worktree", "list", "--porcelain")
    assert "locked" not in listed and str(made) in listed
    # an existing branch, checked out again (a restart after a crash)
    git(host, "worktree", "remove", "--force", str(made))
    add_worktree(host, made, "orchestrator/a", None)
    assert git(made, "rev-parse", "HEAD") == head + "\n" and git(made, "status", "--porcelain") == ""

    (host / ".gitattributes").write_text("*.bin filter=boom\n")
    (host / "data.bin").write_text("x\n")
    git(host, "add", ".gitattributes", "data.bin")
    git(host, "commit", "-qm", "filtered", "--no-verify", env=user_env())
    git(host, "config", "filter.boom.smudge", "false")
    git(host, "config", "filter.boom.required", "true")
    broken = tmp_path / "broken"
    with pytest.raises(GitError, match="reset"):
        add_worktree(host, broken, "orchestrator/c", git(host, "rev-parse", "HEAD").strip())
    assert not broken.exists()
    assert str(broken) not in git(host, "worktree", "list", "--porcelain")


def test_a_worktree_being_checked_out_is_neither_locked_nor_prunable(tmp_path):
    """While its checkout runs, a new worktree's entry has no lock to remove later (a ``git
    worktree list`` that saw a lock a moment before it went fails reading it) and its folder's
    ``.git`` is already there, so a ``git worktree prune`` meanwhile keeps it."""
    host, _ = make_host(tmp_path)
    head = git(host, "rev-parse", "HEAD").strip()
    tree, seen = tmp_path / "wt", {}

    def checkout(argv: list[str], env: dict[str, str]) -> None:
        admin = Path(env["GIT_DIR"])
        seen["lock"] = (admin / "locked").exists()
        git(host, "worktree", "prune")
        seen["kept"] = admin.is_dir()
        seen["listed"] = git(host, "worktree", "list", "--porcelain")
        run_git(tree, *argv, head, env=env)

    add_worktree(host, tree, "orchestrator/t/w", head, checkout=checkout)
    assert seen["lock"] is False and seen["kept"] is True
    assert f"worktree {tree}\n" in seen["listed"] and "locked" not in seen["listed"] and "prunable" not in seen["listed"]
    assert git(tree, "rev-parse", "HEAD").strip() == head and git(tree, "status", "--porcelain") == ""


def test_sixteen_worktrees_made_at_once_while_git_lists_them_never_fail_and_each_is_whole(tmp_path):
    """Made side by side with no repository lock: each entry comes into .git/worktrees in one
    rename, so a ``git worktree list`` running meanwhile never meets a half-made one (git's own
    concurrent ``worktree add`` runs fail on exactly that), and every worktree is complete."""
    host, _ = make_host(tmp_path)
    head = git(host, "rev-parse", "HEAD").strip()
    stop, failures = threading.Event(), []

    def lister() -> None:
        while not stop.is_set():
            done = run_git(host, "worktree", "list", "--porcelain", check=False)
            if done.returncode:
                failures.append(done.stderr)

    watching = threading.Thread(target=lister)
    watching.start()
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            add_worktree(host, tmp_path / "wt" / f"worker_{i}", f"orchestrator/t/w{i}", head)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        adders = [threading.Thread(target=add, args=(i,)) for i in range(16)]
        for t in adders:
            t.start()
        for t in adders:
            t.join()
    finally:
        stop.set()
        watching.join()
    assert errors == [] and failures == []
    listed = git(host, "worktree", "list", "--porcelain")
    for i in range(16):
        tree = tmp_path / "wt" / f"worker_{i}"
        assert f"worktree {tree}\n" in listed
        assert git(tree, "symbolic-ref", "HEAD") == f"refs/heads/orchestrator/t/w{i}\n"
        assert git(tree, "rev-parse", "HEAD").strip() == head and git(tree, "status", "--porcelain") == ""
    assert "locked" not in listed and "prunable" not in listed
    assert not list((host / ".git").glob("orchestrator-adding-*"))
    git(host, "worktree", "remove", str(tmp_path / "wt" / "worker_3"))  # git's own removal knows them
    assert str(tmp_path / "wt" / "worker_3") not in git(host, "worktree", "list", "--porcelain")


@pytest.mark.parametrize(
    "setting",
    [("extensions.worktreeConfig", "true"), ("core.sparseCheckout", "true")],
    ids=["worktree-config", "sparse-checkout"],
)
def test_a_repository_whose_worktrees_need_more_than_the_usual_files_gets_git_worktree_add(tmp_path, setting):
    """Where git's own ``worktree add`` copies the main worktree's per-worktree config or
    sparse patterns, it is what makes the worktree: the result is git's."""
    host, _ = make_host(tmp_path)
    head = git(host, "rev-parse", "HEAD").strip()
    git(host, "config", *setting)
    if setting[0] == "extensions.worktreeConfig":
        git(host, "config", "core.repositoryformatversion", "1")
        git(host, "config", "--worktree", "user.name", "from the main worktree")
    else:
        (host / ".git" / "info").mkdir(exist_ok=True)
        (host / ".git" / "info" / "sparse-checkout").write_text("/*\n")
    made, plain = tmp_path / "made", tmp_path / "plain"
    add_worktree(host, made, "orchestrator/a", head)
    git(host, "worktree", "add", "-q", "--no-track", "-b", "orchestrator/b", str(plain), head)
    admin = {tree: Path(git(tree, "rev-parse", "--absolute-git-dir").strip()) for tree in (made, plain)}
    assert sorted(p.name for p in admin[made].iterdir() if p.name != "logs") == sorted(
        p.name for p in admin[plain].iterdir() if p.name != "logs"
    )
    assert admin[made].name == "made"  # git named it (repository's own entries carry a hash)
    assert git(made, "status", "--porcelain") == "" and git(made, "rev-parse", "HEAD").strip() == head


def test_a_detached_head_base_works_and_stays_detached(hosted):
    host, folder, make = hosted
    git(host, "checkout", "-q", "--detach", "HEAD")
    before = snapshot(host, folder)
    engine = make(git={"isolation": "worktree"})
    job = run_job(engine, "x", tasks=["cat app.py > seen.txt"])
    w = workers(engine, job)["worker_1"]
    assert git(host, "show", f"{w.commit}:seen.txt") == "print('v2')\nline2\n"
    # and a base that is not HEAD (an older commit, by name)
    engine.shutdown(timeout=10)
    older = make(git={"base": "HEAD~1"})
    job = run_job(older, "x", tasks=["cat app.py > seen.txt"])
    w = workers(older, job)["worker_1"]
    assert git(host, "show", f"{w.commit}:seen.txt") == "print('v1')\n"
    assert snapshot(host, folder) == before


def test_simulated_workers_write_their_files_in_their_worktrees_and_nowhere_else(hosted_at_root):
    host, folder, make = hosted_at_root
    before = snapshot(host, folder)
    engine = make(orchestrator={"worker": "simulated"}, simulated={"recurse": False})
    job = run_job(engine, "x", tasks=["Write the parser", "Write the lexer", "Write the docs"])
    found = workers(engine, job)
    assert found["worker_1"].files_changed == [{"path": "write_the_parser.md", "change": "added"}]
    assert "write_the_parser.md" in git(host, "ls-tree", "--name-only", found["worker_1"].branch)
    assert [w.files_changed[0]["path"] for _, w in sorted(found.items())] == [
        "write_the_parser.md",
        "write_the_lexer.md",
        "write_the_docs.md",
    ]
    only_in_their_worktrees(hosted_at_root, engine, job, before, explain(engine, job))


def test_command_workers_write_their_files_in_their_worktrees_and_nowhere_else(hosted_at_root):
    # "Write a.txt" writes a.txt (its task as its content) by a path relative to its cwd
    command = ["sh", "-c", 'printf "%s\\n" "$1" > "${1##* }"', "sh", "{task}"]
    three_files_in_worktrees(hosted_at_root, None, orchestrator={"worker": "command", "command": command})


def test_a_host_that_is_not_a_git_repository_falls_back_to_folders_with_a_note(tmp_path):
    engine = host_engine(tmp_path)
    try:
        job = run_job(engine, "x", tasks=["echo a > a.txt"])
        assert job.config.isolation == "folder"
        assert any(n.startswith("isolation auto: folder, because") and "not inside a git work tree" in n for n in job.notes)
        w = workers(engine, job)["worker_1"]
        assert w.files_created == ["a.txt"] and w.branch is None
        with pytest.raises(ConfigError, match="isolation worktree is not possible: .* not inside a git work tree"):
            engine.submission.submit("x", {"isolation": "worktree"}, ["true"])
    finally:
        engine.shutdown(timeout=10)


def test_a_workspace_the_host_does_not_ignore_is_refused_and_auto_falls_back(hosted):
    host, folder, make = hosted
    (folder / ".gitignore").write_text("")
    engine = make()
    job = run_job(engine, "x", tasks=["true"])
    assert job.config.isolation == "folder" and any("not ignored" in n for n in job.notes)
    with pytest.raises(ConfigError, match="not ignored by it"):
        engine.submission.submit("x", {"isolation": "worktree"}, ["true"])


def test_a_request_chooses_its_isolation_and_never_a_repository(hosted):
    host, folder, make = hosted
    engine = make()
    job = run_job(engine, "x", tasks=["echo a > a.txt"], config={"isolation": "folder"})
    assert job.config.isolation == "folder" and workers(engine, job)["worker_1"].branch is None
    for key in ("repo", "git_repo"):
        with pytest.raises(ConfigError, match="unknown config key"):
            engine.submission.submit("x", {key: str(host)}, ["true"])
    with pytest.raises(ConfigError, match="isolation"):
        engine.submission.submit("x", {"isolation": "elsewhere"}, ["true"])
    assert json.loads(json.dumps(job.config.to_dict()))["isolation"] == "folder"


def test_a_child_jobs_workers_branch_from_their_parent_workers_branch(hosted):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make()
    root = engine.submission.submit("x", {"max_workers": 2}, ["sleep 30"])
    wait_until(lambda: workers(engine, root)["worker_1"].attempts, what="worker_1 started (its worktree made)")
    parent_tip = git(host, "rev-parse", f"orchestrator/{root.id}/worker_1").strip()
    child = engine.submission.submit("y", None, ["echo c > child.txt"], parent_job_id=root.id, parent_worker="worker_1")
    assert engine.queries.wait(child.id, 30).status is JobStatus.COMPLETED
    w = {x.name: x for x in engine.queries.snapshot(root.id)[1]}["worker_1_1"]
    assert w.branch == f"orchestrator/{root.id}/worker_1_1" and w.depth == 1
    assert git(host, "rev-parse", f"{w.commit}~1").strip() == parent_tip  # forked from the parent's branch
    assert w.files_changed == [{"path": "child.txt", "change": "added"}]
    engine.cancel(root.id)
    engine.queries.wait(root.id, 30)
    assert snapshot(host, folder) == before


def test_a_retry_after_a_timeout_keeps_the_partial_work(hosted):
    host, folder, make = hosted
    engine = make(workers={"retry_on_timeout": True})
    job = run_job(engine, "x", tasks=["echo x >> kept.txt; sleep 30"], config={"default_timeout": 0.5, "max_retries": 1})
    w = workers(engine, job)["worker_1"]
    assert w.status is WorkerStatus.TIMEOUT and len(w.attempts) == 2
    assert git(host, "show", f"{w.commit}:kept.txt") == "x\nx\n"  # attempt 2 went on from attempt 1's file
    assert "attempt 2 keeps attempt 1's work (timeout)" in engine.workspace.worker_log(job.id, 0, "worker_1").read_text()
    first = w.attempts[0].checkpoint
    assert (
        first == git(host, "rev-parse", "main").strip()
        and git(host, "rev-parse", f"{w.attempts[1].checkpoint}~1").strip() == first
    )
    assert [c["started_from"] for c in checkpoints(w)["checkpoints"]] == ["base", "kept"]


def test_git_missing_or_too_old_is_said_in_the_note_or_the_error(hosted, monkeypatch):
    from orchestrator.checkouts import isolated
    from orchestrator.git import repository

    host, folder, make = hosted
    engine = make()
    for version, said in (
        (None, "git is not installed"),
        ((2, 16, 1), "git 2.16.1 is older than 2.17, the least worktree isolation needs"),
    ):
        monkeypatch.setattr(repository, "git_version", lambda v=version: v)
        isolation, note = isolated.resolve_isolation(engine.settings, engine.workspace.root, "auto")
        assert isolation == "folder" and note == f"isolation auto: folder, because {said}"
        with pytest.raises(ConfigError, match=f"isolation worktree is not possible: {said}"):
            isolated.resolve_isolation(engine.settings, engine.workspace.root, "worktree")


def test_a_folder_the_host_never_committed_works_too_and_git_status_stays_the_same(tmp_path):
    host = tmp_path / "plain"
    folder = host / "orch"
    folder.mkdir(parents=True)
    git(host, "init", "-q", "-b", "main")
    (host / "a.txt").write_text("a\n")
    git(host, "add", "a.txt")
    git(host, "commit", "-qm", "one", env=user_env())
    (folder / ".gitignore").write_text("/workspace/*\n")  # untracked, and still read by git
    before = snapshot(host, folder)
    assert "? orch/.gitignore" in before["status"]
    engine = host_engine(folder)
    try:
        job = run_job(engine, "x", tasks=["echo b >> a.txt"])
        w = workers(engine, job)["worker_1"]
        assert job.config.isolation == "worktree" and w.files_changed == [{"path": "a.txt", "change": "modified"}]
        # the folder is not in the checkout: at most the project view's empty mount point for it
        mount = engine.workspace.worker_dir(job.id, 0, "worker_1") / "orch"
        assert not mount.exists() or not any(mount.iterdir())
    finally:
        engine.shutdown(timeout=10)
    assert snapshot(host, folder) == before


def test_the_checkpoints_route_answers_for_a_worker_and_refuses_an_unknown_one(make_live):
    # A real server (its workspace is not in a git repository: a folder worker, which has none)
    live = make_live()
    job_id = live.submit(request="x", tasks=["one"]).json()["job_id"]
    live.wait(job_id)
    got = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/checkpoints")
    assert got.status_code == 200, got.text
    assert got.json() == {
        "job_id": job_id,
        "worker": "depth_0_worker_1",
        "isolation": "folder",
        "branch": None,
        "checkpoints": [],
    }
    assert live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_9/checkpoints").status_code == 404
    assert live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/checkpoints", key="wrong-key-0123456789").status_code == 401
