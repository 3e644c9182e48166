"""``merge_strategy: resolve``: a resolver worker resolves each conflict in a worktree with the
merge in progress, and its resolution is kept only when no conflict marker is left and the
required gates pass on the merged tree. Real git, a real host repository made here, real worker
and resolver processes (a ``command`` resolver: a script that keeps both sides); the host's
snapshot is checked after every job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import pytest

from orchestrator.audit import signing_key as audit_keys
from orchestrator.audit.verify import verify
from orchestrator.delivery.resolving import markers_left
from orchestrator.git import merging
from orchestrator.models import JobStatus
from orchestrator.outcomes import MergeOutcome, Resolution
from orchestrator.reports.status_document import job_status, status_table

from .conftest import observed, processes_with, run_job, wait_until
from .helpers import nesting as nesting_helpers
from .helpers.landing import result_of
from .helpers.nesting import run_tree
from .helpers.resolving import BOTH_SIDES, FAKE_CLAUDE, PRICE, fake_claude_resolver
from .helpers.worktree import git, snapshot, user_env
from .helpers.worktree_crash import Server, host_state, make_repo

pytestmark = pytest.mark.slow

# The fixture this file shares with tests/test_nesting.py (tests/helpers/nesting.py).
served = nesting_helpers.served

SAME_LINE = "sed -i s/v2/{}/ app.py"  # every worker that runs it rewrites line 1 of app.py
GATE = {"name": "check", "run": ["sh", "-c", "grep -q print app.py"], "required": True}


def resolver_script(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "resolver.py"
    script.write_text(body)
    return [sys.executable, str(script), "{prompt_file}"]


def resolve_config(command: list[str], **git_more: object) -> dict:
    return {"git": {"resolver_command": command, "resolver_kind": "command", **git_more}}


def show(host: Path, rev: str, path: str) -> str:
    return git(host, "show", f"{rev}:{path}")


def test_a_conflict_resolved_by_a_command_resolver_is_regated_and_lands_with_both_sides(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(**resolve_config(resolver_script(tmp_path, BOTH_SIDES)))
    tasks = [SAME_LINE.format("w1"), SAME_LINE.format("w2"), "echo c > c.txt"]
    job = run_job(engine, "x", tasks=tasks, config={"merge_strategy": "resolve", "gates": [GATE]})
    merge = job.merge
    assert job.status is JobStatus.COMPLETED, job.notes
    assert list(merge.merged) == ["worker_1", "worker_2", "worker_3"] and merge.skipped == ()
    (resolution,) = merge.outcome.resolutions
    assert resolution.accepted and resolution.worker == "worker_2" and resolution.files == ("app.py",)
    assert resolution.resolver == "command" and len(resolution.attempts) == 1
    assert [(g.name, g.status) for g in resolution.gates] == [("check", "passed")]
    assert [(c.path, c.resolved_by) for c in merge.conflicts] == [("app.py", "resolver")]
    result = result_of(host, job.id)
    assert show(host, result, "app.py") == "print('w1')\nprint('w2')\nline2\n"
    assert show(host, result, "c.txt") == "c\n"
    # Its log, its prompt (both subtasks, the file, both diffs), and no worktree left behind.
    log = engine.workspace.job_dir(job.id) / resolution.attempts[0].log_path
    assert "resolved ['app.py']" in log.read_text()
    prompt = (engine.workspace.job_dir(job.id) / "resolve" / "depth_0_worker_2" / "prompt_1.md").read_text()
    assert "sed -i s/v2/w1/ app.py" in prompt and "sed -i s/v2/w2/ app.py" in prompt and "- app.py" in prompt
    assert "+print('w1')" in prompt and "+print('w2')" in prompt
    assert "/resolve/" not in git(host, "worktree", "list")
    assert any(
        "the conflict of worker_2 in app.py was resolved by command in attempt 1; gates passed: check" in n for n in job.notes
    )
    assert snapshot(host, folder) == before


def test_a_resolve_merge_needs_no_git_identity_of_the_user_s(hosted, tmp_path, monkeypatch):
    # A server account with no user.name/user.email anywhere (a HOME of its own, no global config):
    # git refuses even a merge that commits nothing without one, so the resolver's worktree
    # merge runs with the worktree side's pinned identity, as every other git call of a job does.
    host, folder, make = hosted
    before = snapshot(host, folder)
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    for name, value in {"HOME": str(nobody), "GIT_CONFIG_GLOBAL": str(nobody / "none"), "GIT_CONFIG_NOSYSTEM": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    assert subprocess.run(["git", "-C", str(host), "var", "GIT_COMMITTER_IDENT"], capture_output=True).returncode != 0
    engine = make(**resolve_config(resolver_script(tmp_path, BOTH_SIDES)))
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "resolve"})
    (resolution,) = job.merge.outcome.resolutions
    assert resolution.accepted and list(job.merge.merged) == ["worker_1", "worker_2"], job.notes
    assert show(host, result_of(host, job.id), "app.py") == "print('w1')\nprint('w2')\nline2\n"
    assert snapshot(host, folder) == before


def test_a_resolution_shows_in_every_view_and_its_estimated_cost_counts_in_the_trees(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(**fake_claude_resolver(tmp_path))
    tasks = [SAME_LINE.format("w1"), SAME_LINE.format("w2"), "echo c > c.txt"]
    job = run_job(engine, "x", tasks=tasks, config={"merge_strategy": "resolve", "gates": [GATE]})
    assert job.status is JobStatus.COMPLETED, job.notes
    (resolution,) = job.merge.outcome.resolutions
    assert resolution.accepted and resolution.resolver == "claude (fake-model)"
    assert resolution.cost_usd == pytest.approx(0.02) and resolution.cost_basis == "estimated"
    assert job.resolver_cost_usd == pytest.approx(0.02)
    log_path = resolution.attempts[0].log_path
    # The status document: the job's resolutions, the merge's, and the resolver's share of the tree's cost
    jobs, workers = engine.queries.snapshot(job.id)
    doc = job_status(job.id, jobs, workers, engine.workspace.job_dir(job.id))
    (shown,) = doc["resolutions"]
    assert shown["stage"] == "merge" and shown["worker"] == "worker_2" and shown["files"] == ["app.py"]
    assert shown["accepted"] and len(shown["attempts"]) == 1 and shown["cost_basis"] == "estimated"
    assert [(g["name"], g["status"]) for g in shown["gates"]] == [("check", "passed")]
    assert doc["merge"]["resolutions"] == [{k: v for k, v in shown.items() if k != "stage"}]
    assert doc["tree"]["resolver"] == {"resolutions": 1, "accepted": 1, "cost_usd": 0.02, "estimated": 1}
    assert doc["tree"]["cost_usd"] == pytest.approx(0.02)  # the shell workers report none
    assert doc["performance"]["jobs"][0]["cost_usd"] == pytest.approx(0.02)  # the job's own rollup
    # check-status's text: a line per resolution, and the cost line says the resolver's is estimated
    table = status_table(doc)
    assert "resolved:  worker_2 in app.py by claude (fake-model) (gates passed: check; 1 attempt, $0.0200 estimated)" in table
    assert "cost:      $0.0200 (conflict resolver $0.0200, estimated for 1 of 1)" in table
    # FINAL_RESULT.md: a Resolutions subsection under the conflicts, with the log; the cost counts it
    final = engine.workspace.final_report(job.id).read_text()
    assert "#### Resolutions" in final.split("| `app.py` |")[1]
    assert (
        "- Resolved: `worker_2`'s conflict in `app.py`, by claude (fake-model), 1 attempt, gates: `check` passed, "
        f"$0.0200 (estimated): resolved by claude (fake-model) in attempt 1; gates passed: check. Log: [`{log_path}`]({log_path})"
    ) in final
    assert "; conflict resolvers $0.0200, estimated from a price table for 1 of 1 resolutions, included)" in final
    # GET /jobs/{id}/conflicts: each predicted conflict with its resolution, and the job's resolutions
    answer = engine.conflicts(job.id)
    (conflict,) = answer["conflicts"]
    assert conflict["path"] == "app.py" and conflict["workers"] == ["worker_1", "worker_2"]
    assert conflict["resolution"] == shown and answer["resolutions"] == [shown]
    # RECORD.json carries the resolution with the merge
    record = json.loads((engine.workspace.job_dir(job.id) / "RECORD.json").read_text())
    assert record["jobs"][0]["merge"]["resolutions"] == doc["merge"]["resolutions"]
    # ... and the resolver's log in its digest chain: a changed byte is named by verify
    assert log_path in [entry["path"] for entry in record["logs"]]
    job_dir = engine.workspace.job_dir(job.id)
    key = audit_keys.load_or_create(engine.workspace.root).public_key()

    def ref(name: str) -> str | None:
        return git(host, "rev-parse", "--verify", "-q", name).strip() or None

    assert verify(job_dir, key, ref)[1] == []
    with (job_dir / log_path).open("a") as log:
        log.write("edited later\n")
    assert [p for p in verify(job_dir, key, ref)[1] if log_path in p], verify(job_dir, key, ref)[1]
    assert snapshot(host, folder) == before


def test_a_graphs_integration_resolution_counts_once_toward_its_job_and_shows_as_integration(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(**fake_claude_resolver(tmp_path))
    tasks = [
        {"id": "a", "task": SAME_LINE.format("w1")},
        {"id": "b", "task": SAME_LINE.format("w2")},
        {"id": "c", "task": "echo c > c.txt", "depends_on": ["a", "b"]},
    ]
    job = run_job(engine, "x", tasks=tasks, config={"merge_strategy": "resolve", "gates": [GATE]})
    assert job.status is JobStatus.COMPLETED, job.notes
    jobs, workers = engine.queries.snapshot(job.id)
    made = [(w.name, r) for w in workers if (r := w.integration_resolution) is not None]
    ((name, resolution),) = made  # whichever of worker_1 and worker_2 integrated second
    assert resolution.accepted and resolution.cost_usd == pytest.approx(0.02) and name in ("worker_1", "worker_2")
    assert job.merge.outcome.resolutions == () and job.resolver_cost_usd is None  # its merge onto the integration: no conflict
    doc = job_status(job.id, jobs, workers, engine.workspace.job_dir(job.id))
    assert [(r["stage"], r["worker"], r["accepted"]) for r in doc["resolutions"]] == [("integration", name, True)]
    # counted once: toward the job (its own rollup), not the worker's own cost
    assert doc["tree"]["cost_usd"] == pytest.approx(0.02) and doc["tree"]["resolver"]["cost_usd"] == 0.02
    assert doc["performance"]["jobs"][0]["cost_usd"] == pytest.approx(0.02)
    assert all(w.cost_usd is None for w in workers)
    assert f"resolved:  {name} in app.py by claude (fake-model) (integration) (gates passed: check" in status_table(doc)
    final = engine.workspace.final_report(job.id).read_text()
    assert f"- Resolved: `{name}`'s conflict in `app.py` (merging into its job's integration branch)" in final
    assert engine.conflicts(job.id)["resolutions"] == doc["resolutions"]
    assert snapshot(host, folder) == before


def test_a_restarted_server_counts_the_resolvers_cost_in_the_trees_budget(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    sections = fake_claude_resolver(tmp_path)
    engine = make(**sections)
    tasks = [
        {"id": "a", "task": SAME_LINE.format("w1")},
        {"id": "b", "task": SAME_LINE.format("w2")},
        {"id": "c", "task": "echo c > c.txt", "depends_on": ["a", "b"]},
    ]
    config = {"merge_strategy": "resolve", "gates": [GATE], "approval": "before_merge"}
    job = engine.submission.submit("x", config, tasks)
    wait_until(lambda: engine.queries.get_job(job.id).status is JobStatus.WAITING, timeout=60)
    assert engine.tables.tree_cost[job.id] == pytest.approx(0.02)  # the integration's resolver, as it ran
    engine.shutdown(timeout=10)
    # When a new server takes the waiting tree over, its cost is restored from the records
    again = make(**sections)
    again.takeover.recover()
    assert again.queries.get_job(job.id).status is JobStatus.WAITING
    assert again.tables.tree_cost[job.id] == pytest.approx(0.02)
    assert snapshot(host, folder) == before


def test_a_resolution_that_leaves_a_marker_is_refused_retried_and_the_worker_left_out_while_the_rest_merge(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(**resolve_config(resolver_script(tmp_path, "print('did nothing')\n"), resolver_retries=1))
    tasks = [SAME_LINE.format("w1"), SAME_LINE.format("w2"), "echo c > c.txt"]
    job = run_job(engine, "x", tasks=tasks, config={"merge_strategy": "resolve"})
    merge = job.merge
    assert list(merge.merged) == ["worker_1", "worker_3"] and list(merge.skipped) == ["worker_2"]
    (resolution,) = merge.outcome.resolutions
    assert not resolution.accepted and resolution.tree is None
    assert resolution.reason == "conflict markers are left in: app.py"
    assert [a.refused for a in resolution.attempts] == ["conflict markers are left in: app.py"] * 2
    second = (engine.workspace.job_dir(job.id) / "resolve" / "depth_0_worker_2" / "prompt_2.md").read_text()
    assert "Your last attempt was refused: conflict markers are left in: app.py" in second
    result = result_of(host, job.id)
    assert show(host, result, "app.py") == "print('w1')\nline2\n" and show(host, result, "c.txt") == "c\n"
    assert [(c.path, c.resolved_by) for c in merge.conflicts] == [("app.py", "")]
    jobs, workers = engine.queries.snapshot(job.id)
    table = status_table(job_status(job.id, jobs, workers, engine.workspace.job_dir(job.id)))
    assert "refused:   worker_2 in app.py by command (2 attempts): conflict markers are left in: app.py" in table
    final = engine.workspace.final_report(job.id).read_text()
    assert "- Refused: `worker_2`'s conflict in `app.py`, by command, 2 attempts: conflict markers are left in: app.py." in final
    assert snapshot(host, folder) == before


def test_a_resolution_a_required_gate_fails_on_is_refused_with_the_gate_named(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    wipe = "open('app.py', 'w').write('nothing here\\n')\n"  # no marker left, but the gate's print is gone
    engine = make(**resolve_config(resolver_script(tmp_path, wipe), resolver_retries=0))
    job = run_job(
        engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "resolve", "gates": [GATE]}
    )
    (resolution,) = job.merge.outcome.resolutions
    assert not resolution.accepted and list(job.merge.skipped) == ["worker_2"]
    assert resolution.reason.startswith("gate check failed on the merged tree: exit code 1")
    assert [(g.name, g.status, g.required) for g in resolution.gates] == [("check", "failed", True)]
    assert show(host, result_of(host, job.id), "app.py") == "print('w1')\nline2\n"
    assert snapshot(host, folder) == before


def test_a_resolver_that_fails_or_cannot_start_is_refused_with_why(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(**resolve_config(resolver_script(tmp_path, "import sys; print('no'); sys.exit(3)\n"), resolver_retries=0))
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "resolve"})
    (resolution,) = job.merge.outcome.resolutions
    assert resolution.reason.startswith("the resolver exited with code 3") and resolution.attempts[0].exit_code == 3
    engine = make(**resolve_config(["/nonexistent/resolver"], resolver_retries=0))
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "resolve"})
    (resolution,) = job.merge.outcome.resolutions
    assert "not found" in resolution.reason and list(job.merge.skipped) == ["worker_2"]
    assert snapshot(host, folder) == before


def test_a_resolver_runs_under_the_workers_caps(hosted, tmp_path):
    """The resolver runs on workers' work, so it gets a worker's caps: with no file past 1 MB
    (workers.max_log_mb, max_disk_mb), its 3 MB scratch file is refused at 1 MB, which is its disk
    cap, and so is its resolution, the cap named."""
    host, folder, make = hosted
    big = (
        "import os, sys\n"
        "try:\n"
        "    open(os.path.join(os.environ['TMPDIR'], 'big'), 'wb').write(b'x' * 3_000_000)\n"
        "except OSError as exc:\n"
        "    print('big file refused:', exc.strerror)\n"
        "    sys.exit(3)\n"
    )
    caps = {"max_log_mb": 1, "max_disk_mb": 1}
    engine = make(**resolve_config(resolver_script(tmp_path, big + BOTH_SIDES), resolver_retries=0), workers=caps)
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "resolve"})
    (resolution,) = job.merge.outcome.resolutions
    assert resolution.reason.startswith("the resolver was stopped at a worker's cap: disk cap: 1 MB"), resolution
    assert "(workers.max_disk_mb, sampled)" in resolution.reason, resolution


def test_resolve_without_a_resolver_stops_at_the_first_conflict_as_auto(repo_with_conflict):
    host, base, branches = repo_with_conflict
    outcome = merging.merge_branches(host, merging.MergeRequest(base, branches, "resolve", prefix="orchestrator/", root_id="j1"))
    assert list(outcome.merged) == ["w1"] and list(outcome.skipped) == ["w2", "w3"] and outcome.resolutions == ()


def test_a_resolver_is_asked_per_conflict_and_its_tree_becomes_the_workers_commit(repo_with_conflict):
    host, base, branches = repo_with_conflict
    asked: list[merging.Conflicted] = []

    def resolver(at: merging.Conflicted) -> Resolution:
        asked.append(at)
        tree = git(host, "rev-parse", f"{at.commit}^{{tree}}").strip()  # the worker's side whole
        return Resolution(at.worker, tuple(c.path for c in at.conflicts), "fake", True, "taken", tree=tree)

    outcome = merging.merge_branches(
        host, merging.MergeRequest(base, branches, "resolve", prefix="orchestrator/", root_id="j1"), resolver=resolver
    )
    assert [(a.worker, a.earlier, [c.path for c in a.conflicts]) for a in asked] == [("w2", ("w1",), ["app.py"])]
    assert list(outcome.merged) == ["w1", "w2", "w3"] and outcome.skipped == ()
    assert show(host, str(outcome.result_commit), "app.py") == "print('w2')\nline2\n"
    again = MergeOutcome.from_dict(outcome.to_dict())
    assert again.resolutions == outcome.resolutions


def test_markers_are_found_and_an_underline_both_sides_had_is_not_one() -> None:
    assert markers_left(b"a\n<<<<<<< HEAD\nb\n", [b"a\n"])
    assert markers_left(b">>>>>>> theirs\n", [])
    assert markers_left(b"x\n=======\ny\n", [b"x\n", b"y\n"])
    assert not markers_left(b"Title\n=======\ntext\n", [b"Title\n=======\n", b"Title\n=======\nold\n"])
    assert not markers_left(b"a <<<<<<< b\n", [])


@pytest.fixture
def repo_with_conflict(tmp_path: Path) -> tuple[Path, str, list[tuple[str, str]]]:
    """Three branches off one base: w1 and w2 rewrite line 1 of app.py, w3 adds c.txt."""
    from .helpers.worktree import make_host

    host, _ = make_host(tmp_path)
    base = git(host, "rev-parse", "HEAD").strip()
    made = []
    for worker, files in (
        ("w1", {"app.py": "print('w1')\nline2\n"}),
        ("w2", {"app.py": "print('w2')\nline2\n"}),
        ("w3", {"c.txt": "c\n"}),
    ):
        branch = f"orchestrator/j1/{worker}"
        git(host, "branch", branch, base)
        env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / f"index-{worker}")}
        git(host, "read-tree", base, env=env)
        for path, text in files.items():
            blob = subprocess.run(
                ["git", "-C", str(host), "hash-object", "-w", "--stdin"], input=text, capture_output=True, text=True, check=True
            ).stdout.strip()
            git(host, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = git(host, "write-tree", env=env).strip()
        commit = git(host, "commit-tree", tree, "-p", base, "-m", "work", env=user_env()).strip()
        git(host, "update-ref", f"refs/heads/{branch}", commit)
        made.append((worker, branch))
    return host, base, made


def test_a_shutdown_stops_a_running_resolver_and_leaves_no_process(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    marker = f"{os.getpid()}.{time.monotonic_ns() % 100000}"
    engine = make(**resolve_config(["sleep", marker], resolver_timeout=300, resolver_retries=0))
    job = engine.submission.submit("x", {"merge_strategy": "resolve"}, [SAME_LINE.format("w1"), SAME_LINE.format("w2")])
    wait_until(lambda: processes_with(f"sleep\x00{marker}\x00"), 30, "the resolver running")
    started = time.monotonic()
    engine.shutdown(timeout=20)
    assert time.monotonic() - started < 60  # not the resolver's 300 s
    wait_until(lambda: not processes_with(f"sleep\x00{marker}\x00"), 10, "the resolver gone")
    done = wait_until(lambda: (j := engine.queries.get_job(job.id)).merge is not None and j, 20, "the merge recorded")
    (resolution,) = done.merge.outcome.resolutions
    assert not resolution.accepted and resolution.reason.startswith("the resolver did not finish: cancelled")
    assert list(done.merge.skipped) == ["worker_2"]
    assert snapshot(host, folder) == before


# A parent worker (tests/helpers/nesting.py WORKER) whose child job's two workers rewrite app.py whole.
CHILD_CONFLICT = "parent: write app.py=print('two') | write app.py=print('three')"


def test_a_child_job_s_conflict_is_resolved_into_its_parent_worker_s_branch(served, tmp_path):
    host, folder, start = served
    before = snapshot(host, folder)
    live = start(resolver_kind="command", resolver_command=resolver_script(tmp_path, BOTH_SIDES))
    doc, marker, child = run_tree(live, CHILD_CONFLICT, merge_strategy="resolve")
    root_id = doc["job_id"]
    branch = f"orchestrator/{root_id}/worker_1"
    assert doc["status"] == "completed" and marker["exit"] == 0, marker
    # The child job's merge record: both workers merged into the parent's branch, the second by its resolution.
    merge = live.engine.workspace.load_job(f"{root_id}-c1").merge
    assert merge is not None and merge.target == branch and merge.outcome.strategy == "resolve", merge
    assert list(merge.merged) == ["worker_1_1", "worker_1_2"] and merge.skipped == (), merge
    (resolution,) = merge.outcome.resolutions
    assert resolution.accepted and resolution.worker == "worker_1_2" and resolution.files == ("app.py",), resolution
    assert resolution.resolver == "command" and [a.exit_code for a in resolution.attempts] == [0]
    assert [(c.path, c.workers, c.resolved_by) for c in merge.conflicts] == [("app.py", ("worker_1_1", "worker_1_2"), "resolver")]
    assert child["merge"]["resolutions"][0]["accepted"] is True  # the status document shows the same
    # Its prompt (under the tree's folder, keyed by the child's depth) names both children's subtasks.
    prompt = live.engine.workspace.job_dir(root_id) / "resolve" / "depth_1_worker_1_2" / "prompt_1.md"
    assert "write app.py=print('two')" in prompt.read_text() and "write app.py=print('three')" in prompt.read_text()
    # Both sides are in the parent's checkout when its spawn returned, and on its branch.
    both = "print('two')\nprint('three')\n"
    assert marker["seen"]["app.py"] == both and marker["status"] == "", marker
    assert "Conflict in app.py (worker_1_1, worker_1_2, 1 hunk(s)): resolved by a resolver worker" in marker["out"]
    told = "the conflict of worker_1_2 in app.py was resolved by command in attempt 1"
    assert told.capitalize() in marker["out"] and any(told in n for n in child["notes"]), marker["out"]
    assert git(host, "show", f"{branch}:app.py") == both
    assert git(host, "merge-base", "--is-ancestor", merge.result_commit, branch) == ""
    assert "/resolve/" not in git(host, "worktree", "list")
    assert snapshot(host, folder) == before


def test_a_child_job_s_resolution_that_leaves_a_marker_leaves_that_worker_out_of_its_parent_s_branch(served, tmp_path):
    host, folder, start = served
    before = snapshot(host, folder)
    live = start(
        resolver_kind="command", resolver_command=resolver_script(tmp_path, "print('did nothing')\n"), resolver_retries=0
    )
    doc, marker, child = run_tree(live, CHILD_CONFLICT, merge_strategy="resolve")
    root_id = doc["job_id"]
    branch = f"orchestrator/{root_id}/worker_1"
    assert doc["status"] == "completed" and marker["exit"] == 0, marker
    merge = live.engine.workspace.load_job(f"{root_id}-c1").merge
    assert merge is not None and list(merge.merged) == ["worker_1_1"] and list(merge.skipped) == ["worker_1_2"], merge
    (resolution,) = merge.outcome.resolutions
    assert not resolution.accepted and resolution.tree is None
    assert resolution.reason == "conflict markers are left in: app.py"
    assert [a.refused for a in resolution.attempts] == ["conflict markers are left in: app.py"]
    assert [(c.path, c.resolved_by, bool(c.refused)) for c in merge.conflicts] == [("app.py", "", True)]
    # The parent was told, and its branch holds the first side only, no marker; the other stays on its own branch.
    out = marker["out"]
    assert "Conflict in app.py (worker_1_1, worker_1_2, 1 hunk(s)): not merged (the resolver's resolution was refused)" in out
    assert f"Not merged (their work stays on their branches; merge or redo it yourself): {branch}_2" in out, out
    why = "worker_1_2 was left out: its conflict in app.py was not resolved (conflict markers are left in: app.py)"
    assert why.capitalize() in out and any(why in n for n in child["notes"]), out
    assert marker["seen"]["app.py"] == "print('two')\n" and marker["status"] == "", marker
    assert git(host, "show", f"{branch}:app.py") == "print('two')\n"
    assert git(host, "show", f"{branch}_2:app.py") == "print('three')\n"
    assert snapshot(host, folder) == before


def test_the_pull_requests_body_counts_the_resolvers_and_their_cost() -> None:
    from orchestrator.delivery.publishing import summary
    from orchestrator.models import JobRecord
    from orchestrator.outcomes import FileConflict, MergeRecord, ResolverAttempt

    attempt = ResolverAttempt(1, 0, 1.5, 0.25, "estimated", "", "logs/depth_0_worker_2.resolve.log")
    accepted = Resolution("worker_2", ("app.py",), "claude", True, "resolved", (attempt,), tree="t")
    refused = Resolution("worker_3", ("app.py",), "claude", False, "markers", (attempt,))
    conflicts = tuple(FileConflict("app.py", (w, "worker_1"), 1, "content") for w in ("worker_2", "worker_3"))
    outcome = MergeOutcome(
        "resolve", "b", "refs/heads/r", "c", ("worker_1", "worker_2"), ("worker_3",), conflicts, (), "git merge r"
    )
    job = JobRecord(
        id="j", root_id="j", request="r", merge=MergeRecord.of(dataclasses_replace(outcome, resolutions=(accepted, refused)), 1.0)
    )
    text = summary(job, [])
    assert "- Merge: resolve, 2 merged, 2 conflicts, 1 of 2 resolved by a resolver" in text
    assert "- Cost: $0.5000" in text


def test_merge_into_moves_with_every_conflict_resolved_and_stays_when_one_was_refused(hosted, tmp_path):
    host, folder, make = hosted
    git(host, "branch", "release")
    start = git(host, "rev-parse", "release").strip()
    before = snapshot(host, folder)
    tasks = [SAME_LINE.format("w1"), SAME_LINE.format("w2")]
    config = {"merge_strategy": "resolve", "merge_into": "release"}
    engine = make(**resolve_config(resolver_script(tmp_path, "print('did nothing')\n"), resolver_retries=0))
    job = run_job(engine, "x", tasks=tasks, config=config)
    into = job.merge.into
    assert not into.moved and "a conflict's resolution was refused" in into.refused
    assert git(host, "rev-parse", "release").strip() == start
    (tmp_path / "second").mkdir()
    engine = make(**resolve_config(resolver_script(tmp_path / "second", BOTH_SIDES)))
    job = run_job(engine, "x", tasks=tasks, config=config)
    assert job.merge.into.moved and git(host, "rev-parse", "release").strip() == result_of(host, job.id)
    after = snapshot(host, folder)
    assert {**after, "refs": [r for r in after["refs"] if "release" not in r]} == {
        **before,
        "refs": [r for r in before["refs"] if "release" not in r],
    }


def test_cancelling_the_tree_stops_a_child_jobs_resolver_and_the_tree_ends_without_it(served):
    """A child job's merge runs its resolver before the child ends, and so before its parent and the
    root can: the root's cancel must stop it, not wait out its timeout."""
    host, folder, start = served
    before = snapshot(host, folder)
    marker = f"{os.getpid()}.{time.monotonic_ns() % 100000}"
    live = start(resolver_kind="command", resolver_command=["sleep", marker], resolver_timeout=300, resolver_retries=0)
    request = {"max_recursion_depth": 1, "merge_strategy": "resolve"}
    root_id = live.submit(request="tree", tasks=[CHILD_CONFLICT], config=request).json()["job_id"]
    wait_until(lambda: processes_with(f"sleep\x00{marker}\x00"), 60, "the child's resolver running")
    assert live.call("POST", f"/api/v1/jobs/{root_id}/cancel").status_code == 200
    doc = nesting_helpers.wait(live, root_id, timeout=60)  # not the resolver's 300 s
    assert doc["status"] == "cancelled"
    wait_until(lambda: not processes_with(f"sleep\x00{marker}\x00"), 10, "the resolver gone")
    merge = live.engine.workspace.load_job(f"{root_id}-c1").merge
    (resolution,) = merge.outcome.resolutions
    assert not resolution.accepted and resolution.reason.startswith("the resolver did not finish: cancelled"), resolution
    assert snapshot(host, folder) == before


def test_an_auto_job_that_stopped_at_a_conflict_is_merged_again_with_resolve(hosted, tmp_path):
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(**resolve_config(resolver_script(tmp_path, BOTH_SIDES)))
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2"), "echo c > c.txt"])
    assert list(job.merge.skipped) == ["worker_2", "worker_3"]  # auto: stopped at the conflict
    merge = engine.merge(job.id, strategy="resolve")
    assert merge is not None and merge["strategy"] == "resolve" and merge["skipped"] == []
    assert [r["accepted"] for r in merge["resolutions"]] == [True]
    result = result_of(host, job.id)
    assert show(host, result, "app.py") == "print('w1')\nprint('w2')\nline2\n" and show(host, result, "c.txt") == "c\n"
    assert snapshot(host, folder) == before


def test_a_conflict_already_settled_is_not_asked_again_when_the_job_is_merged_again(hosted, tmp_path):
    """A settled conflict (the same worker's commit on the same result so far, by the same
    resolver) takes its resolution from the tree's ledger: the resolver is paid for once."""
    host, folder, make = hosted
    before = snapshot(host, folder)
    runs = observed(tmp_path) / "runs"
    counting = f"open({str(runs)!r}, 'a').write('run\\n')\n" + BOTH_SIDES
    engine = make(**resolve_config(resolver_script(tmp_path, counting)), workers={"sandbox_writable": [str(runs.parent)]})
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "resolve"})
    (first,) = job.merge.outcome.resolutions
    assert first.accepted and runs.read_text() == "run\n"
    merge = engine.merge(job.id, strategy="resolve")
    assert merge is not None and merge["skipped"] == [] and runs.read_text() == "run\n"  # no second run
    assert merge["resolutions"] == [first.to_dict()]
    assert show(host, result_of(host, job.id), "app.py") == "print('w1')\nprint('w2')\nline2\n"
    assert snapshot(host, folder) == before


def test_a_stale_entry_of_an_earlier_resolvers_worktree_does_not_block_the_next(hosted, tmp_path):
    """A server killed mid-resolution leaves git's entry of the resolver's worktree (its folder may
    be gone too): the re-merge's resolver makes it again."""
    host, folder, make = hosted
    before = snapshot(host, folder)
    engine = make(**resolve_config(resolver_script(tmp_path, BOTH_SIDES)))
    job = run_job(engine, "x", tasks=[SAME_LINE.format("w1"), SAME_LINE.format("w2")], config={"merge_strategy": "auto"})
    tree = engine.workspace.job_dir(job.id) / "resolve" / "depth_0_worker_2" / "tree"
    base = git(host, "rev-parse", "HEAD").strip()
    git(host, "worktree", "add", "-q", "--detach", str(tree), base)  # as a killed resolution left it
    for path in sorted(tree.rglob("*"), reverse=True):  # its folder gone, its entry still registered
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    tree.rmdir()
    merge = engine.merge(job.id, strategy="resolve")
    assert merge is not None and [r["accepted"] for r in merge["resolutions"]] == [True], merge["resolutions"]
    assert "/resolve/" not in git(host, "worktree", "list")
    assert snapshot(host, folder) == before


def test_a_server_killed_during_a_resolutions_checks_checks_it_again_without_running_the_resolver_again(tmp_path):
    """A kill during a resolve merge ran the resolver again after a restart, also after its first
    run had finished and only the checks of its resolution were cut off (issue 47: its time and
    cost were in no record at first; then it was recorded, and run again all the same)."""
    # Given a real server whose resolve merge has a finished resolver run ($0.02, estimated) and a
    # required gate running on its resolution (it waits, the first time)
    host, folder = make_repo(tmp_path)
    seen = observed(tmp_path)
    fake = tmp_path / "fake-claude"
    counting = f"open({str(seen / 'runs')!r}, 'a').write('run\\n')\n" + BOTH_SIDES
    fake.write_text(FAKE_CLAUDE.format(python=sys.executable, both=counting))
    fake.chmod(0o755)
    mark = seen / "gate-started"
    # (A resolution's gate by its TMPDIR: sandboxed, its cwd is the repository's own path.)
    gate = f'case "$TMPDIR" in */resolve/*) [ -e {mark} ] || {{ touch {mark}; sleep 60; }};; esac; grep -q print app.py'
    server = Server(folder, writable=seen)
    config = folder / "config.yaml"
    text = config.read_text().replace("orchestrator:\n", f"orchestrator:\n  claude_command: {json.dumps(str(fake))}\n")
    text = text.replace("workers:\n", f"workers:\n  prices: {{fake-model: {json.dumps(PRICE)}}}\n")
    config.write_text(text + "  resolver_kind: claude\n  resolver_model: fake-model\n")  # git: is its last section
    before = host_state(host, folder, tmp_path)
    server.start()
    try:
        tasks = [SAME_LINE.replace("v2", "v1").format(name) for name in ("w1", "w2")]
        body = {"merge_strategy": "resolve", "gates": [GATE | {"run": ["sh", "-c", gate]}]}
        answer = server.call("POST", "/api/v1/orchestrate", json={"request": "x", "tasks": tasks, "config": body})
        assert answer.status_code == 202, answer.text
        root = answer.json()["job_id"]
        wait_until(mark.exists, timeout=120, what="the gate on the resolution started")
        # When the server is killed then, and started again
        server.kill()
        server.start()
        status = wait_until(
            lambda: (s := server.call("GET", f"/api/v1/jobs/{root}/status").json())["status"] not in ("running", "pending") and s,
            timeout=120,
            what="the job ended after the restart",
        )
        resolutions = server.call("GET", f"/api/v1/jobs/{root}/conflicts").json()["resolutions"]
        (resolution,) = resolutions
        (first,) = resolution["attempts"]  # the run before the kill is in the record, with its time and cost
        assert first["number"] == 1 and first["cost_usd"] == pytest.approx(0.02) and first["cost_basis"] == "estimated"
        assert first["seconds"] > 0 and first["exit_code"] == 0 and first["refused"] == "", first
        # Then the resolver did not run again: its resolution's checks ran once more, and accepted it
        assert (seen / "runs").read_text() == "run\n", status
        assert resolution["accepted"] and resolution["cost_usd"] == pytest.approx(0.02), resolution
        said = "the checks of resolver attempt 1 re-run: the server stopped during it; the resolver is not run again"
        assert said in (folder / "workspace" / f"job_{root}" / "logs" / "depth_0_worker_2.log").read_text()
        assert said in (folder / "workspace" / f"job_{root}" / "logs" / "orchestrator.log").read_text()
    finally:
        server.kill()
    assert host_state(host, folder, tmp_path) == before
