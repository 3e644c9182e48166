"""Recursion composes with worktrees, with real git, a real repository made here,
a real server and real worker processes: a worktree worker's work is committed when it spawns (its
children start from it), and a child job's work is merged into the parent worker's branch and
checkout before its ``spawn --wait`` returns. The user's repository is snapshotted around each job."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.models import WorkerStatus

from .helpers import nesting as nesting_helpers
from .helpers.nesting import run_tree
from .helpers.resolving import fake_claude_resolver
from .helpers.worktree import git, snapshot

pytestmark = pytest.mark.slow

# The fixture this file shares with other test files (tests/helpers/nesting.py).
served = nesting_helpers.served


def parents(host: Path, commit: str) -> list[str]:
    return git(host, "rev-list", "--parents", "-n", "1", commit).split()[1:]


def squashed(host: Path, ref: str) -> set[str]:
    """The workers' commits squashed into ``ref`` (each named by an ``Orchestrator-Commit:`` trailer)."""
    return set(git(host, "log", "--format=%(trailers:key=Orchestrator-Commit,valueonly)", ref).split())


def test_two_children_s_work_is_in_the_parent_s_checkout_when_spawn_returns(served):
    host, folder, start = served
    before = snapshot(host, folder)
    live = start()
    doc, marker, child = run_tree(live, "parent: write a.txt=from a | write b.txt=from b")
    root_id = doc["job_id"]
    assert doc["status"] == "completed", doc
    (parent,) = doc["results"]["tasks"]
    assert parent["status"] == "recursive_success", parent
    # When spawn --wait returned, both children's files were in the parent's own checkout
    # and its checkout was clean (the merge is committed on its branch, not left in the index).
    assert marker["exit"] == 0, marker
    assert marker["seen"]["a.txt"] == "from a\n" and marker["seen"]["b.txt"] == "from b\n", marker
    assert marker["status"] == "", marker
    branch = f"orchestrator/{root_id}/worker_1"
    # The spawn output said what was merged into the parent's branch.
    assert f"### Merged into your branch {branch}" in marker["out"], marker["out"]
    assert "Merged (auto), now in your checkout: worker_1_1, worker_1_2" in marker["out"], marker["out"]
    # The parent's work before the spawn was committed first, and its children started from it.
    wt1 = live.engine.workspace.worker_dir(root_id, 1, "worker_1_1")
    assert (wt1 / "before_spawn.txt").read_text() == "the parent's work before its spawn\n"
    assert (wt1 / "a.txt.saw").read_text() == "True"
    children = {t["worker_id"]: t for t in child["results"]["tasks"]}
    spawn_commit = git(host, "rev-parse", f"{children['worker_1_1']['commit']}~1").strip()
    assert git(host, "log", "-1", "--format=%s", spawn_commit).strip() == (f"Work so far, as child job {root_id}-c1 starts")
    assert git(host, "show", f"{spawn_commit}:before_spawn.txt") == "the parent's work before its spawn\n"
    assert git(host, "rev-parse", f"{children['worker_1_2']['commit']}~1").strip() == spawn_commit
    # The parent's branch holds the children's work, one squashed commit each in plan order (each
    # naming the child's commit in a trailer), then its own last work.
    tip = git(host, "rev-parse", branch).strip()
    assert parent["commit"] == tip
    assert git(host, "log", "--merges", "--format=%H", branch) == ""
    merges = git(host, "log", "--grep=^Orchestrator-Commit: ", "--format=%H %s", branch).splitlines()
    assert [m.split(" ", 1)[1] for m in merges] == ["write b.txt=from b", "write a.txt=from a"]
    for name, (squashed, _) in zip(("worker_1_2", "worker_1_1"), (m.split(" ", 1) for m in merges)):
        assert children[name]["branch"] == f"orchestrator/{root_id}/{name}"
        body = git(host, "log", "-1", "--format=%b", squashed)
        assert f"Orchestrator-Commit: {children[name]['commit']}" in body and f"Orchestrator-Worker: {name}" in body
    assert len(parents(host, merges[0].split()[0])) == 1
    assert git(host, "show", f"{tip}:marker.json")  # the parent's own work after the spawn, committed
    assert {f["path"] for f in parent["files_changed"]} >= {"a.txt", "b.txt", "before_spawn.txt", "marker.json"}
    # The child job's record says how it was merged, into what; a note and the parent's log say it too.
    merge = child["merge"]
    assert merge["target"] == branch and merge["strategy"] == "auto" and merge["at"] > 0
    assert merge["merged"] == ["worker_1_1", "worker_1_2"] and merge["conflicts"] == [] and merge["skipped"] == []
    assert merge["result_ref"] == f"refs/heads/{branch}" and merge["result_commit"] == merges[0].split()[0]
    line = f"child job {root_id}-c1 merged into {branch} (auto): worker_1_1, worker_1_2"
    assert line in child["notes"]
    log = live.engine.workspace.worker_log(root_id, 0, "worker_1").read_text()
    assert f"[orchestrator] {line}" in log
    # On disk as well (a reader after a restart sees the same).
    assert live.engine.workspace.load_job(f"{root_id}-c1").merge.to_dict() == merge
    assert snapshot(host, folder) == before


def test_a_conflict_under_auto_is_reported_and_the_parent_s_branch_holds_only_the_clean_part(served):
    host, folder, start = served
    before = snapshot(host, folder)
    live = start()
    doc, marker, child = run_tree(
        live, "parent: write c.txt=clean | write app.py=print('two') | write app.py=print('three') | write b.txt=late"
    )
    root_id = doc["job_id"]
    branch = f"orchestrator/{root_id}/worker_1"
    assert doc["status"] == "completed" and marker["exit"] == 0, marker
    # worker_1_1 (c.txt) and worker_1_2 (app.py) merged; worker_1_3 conflicts with worker_1_2 on
    # app.py: the merge stops there, so worker_1_4 (b.txt, clean) is not merged either.
    assert marker["seen"]["c.txt"] == "clean\n" and marker["seen"]["app.py"] == "print('two')\n", marker
    assert marker["seen"]["b.txt"] is None and marker["status"] == "", marker
    merge = child["merge"]
    assert merge["merged"] == ["worker_1_1", "worker_1_2"] and merge["skipped"] == ["worker_1_3", "worker_1_4"]
    first = [c for c in merge["conflicts"] if not c["predicted"]]
    assert [(c["path"], c["workers"], c["kind"]) for c in first] == [("app.py", ["worker_1_2", "worker_1_3"], "content")]
    out = marker["out"]
    assert "Merged (auto), now in your checkout: worker_1_1, worker_1_2" in out, out
    assert "Conflict in app.py (worker_1_2, worker_1_3, 1 hunk(s)): not merged (merging stopped here)" in out, out
    assert (
        f"Not merged (their work stays on their branches; merge or redo it yourself): "
        f"orchestrator/{root_id}/worker_1_3, orchestrator/{root_id}/worker_1_4"
    ) in out, out
    stopped = "conflict in app.py (worker_1_2, worker_1_3, 1 hunk(s)): not merged (merging stopped here)"
    assert any(f"{stopped}; not merged: worker_1_3, worker_1_4" in n for n in child["notes"])
    # The parent's branch holds the clean part only (its own marker.json committed on top).
    tip = git(host, "rev-parse", branch).strip()
    assert git(host, "show", f"{tip}:app.py") == "print('two')\n"
    assert git(host, "show", f"{tip}:c.txt") == "clean\n"
    assert "b.txt" not in git(host, "ls-tree", "--name-only", tip).split()
    children = {t["worker_id"]: t for t in child["results"]["tasks"]}
    assert children["worker_1_2"]["commit"] in squashed(host, branch)
    assert children["worker_1_3"]["commit"] not in squashed(host, branch)  # not merged: still only on its own branch
    assert snapshot(host, folder) == before


def test_a_child_jobs_conflict_resolved_under_resolve_is_in_its_views_and_counts_toward_the_child(served, tmp_path):
    host, folder, start = served
    before = snapshot(host, folder)
    live = start(sections=fake_claude_resolver(tmp_path), merge_strategy="resolve")
    doc, marker, child = run_tree(live, "parent: write app.py=print('two') | write app.py=print('three')")
    root_id = doc["job_id"]
    assert doc["status"] == "completed" and marker["exit"] == 0, marker
    # The child's merge into its parent worker's branch kept both sides, by the resolver
    assert marker["seen"]["app.py"] == "print('two')\nprint('three')\n", marker
    (resolution,) = child["resolutions"]
    assert resolution["stage"] == "merge" and resolution["worker"] == "worker_1_2" and resolution["accepted"]
    assert child["merge"]["resolutions"][0]["cost_usd"] == pytest.approx(0.02)
    # Its cost is the child job's (its own rollup), and the root's tree counts it once
    child_row = next(r for r in doc["performance"]["jobs"] if r["job_id"] == f"{root_id}-c1")
    assert child_row["cost_usd"] == pytest.approx(0.02) and doc["tree"]["cost_usd"] == pytest.approx(0.02)
    assert doc["tree"]["resolver"] == {"resolutions": 1, "accepted": 1, "cost_usd": 0.02, "estimated": 1}
    final = live.engine.workspace.final_report(root_id).read_text()
    assert f"- Resolved: `worker_1_2`'s conflict in `app.py` (child job `{root_id}-c1`), by claude (fake-model)" in final
    assert snapshot(host, folder) == before


def test_a_commit_that_fails_at_the_spawn_refuses_it_and_no_child_starts(served):
    host, folder, start = served
    before = snapshot(host, folder)
    live = start(env={"LOCK_INDEX": "1"})
    doc, marker, _ = run_tree(live, "parent: write a.txt=a | write b.txt=b")
    root_id = doc["job_id"]
    assert marker["exit"] == 1, marker
    assert "could not be committed before starting its child job" in marker["err"], marker
    assert "no child job was started" in marker["err"] and "index.lock" in marker["err"], marker
    assert [j.id for j in live.engine.queries.list_jobs() if j.root_id == root_id] == [root_id]
    (parent,) = doc["results"]["tasks"]
    assert parent["status"] == WorkerStatus.SUCCESS.value and "child_job_ids" not in parent
    assert snapshot(host, folder) == before


def test_the_parent_s_edits_made_while_its_child_ran_are_committed_first_and_kept(served):
    # spawn without --wait: the parent edits a tracked file and adds one while its child runs;
    # when the child ends, that work is committed on the parent's branch, the child's work merged
    # on top, and the checkout holds both (clean: nothing left uncommitted, nothing lost).
    host, folder, start = served
    before = snapshot(host, folder)
    live = start()
    doc, marker, child = run_tree(live, "nowait: slow write a.txt=from a | slow write c.txt=from c")
    root_id = doc["job_id"]
    branch = f"orchestrator/{root_id}/worker_1"
    assert doc["status"] == "completed", doc
    assert marker["seen"] == {
        "a.txt": "from a\n",
        "after_spawn.txt": "written while the child ran\n",
        "app.py": "print('v2')\nline2\n# the parent's edit\n",
    }, marker
    assert marker["status"] == "" and marker["merge"]["merged"] == ["worker_1_1", "worker_1_2"], marker
    # The child started from the spawn commit: without what the parent wrote afterwards.
    wt1 = live.engine.workspace.worker_dir(root_id, 1, "worker_1_1")
    assert (wt1 / "a.txt.saw").read_text() == "True" and not (wt1 / "after_spawn.txt").exists()
    # On the parent's branch: its edits committed when the child ended, then the children merged onto that.
    merge = child["merge"]["result_commit"]
    first = git(host, "rev-parse", f"{merge}~2").strip()  # below worker_1_2's commit and worker_1_1's
    subject = git(host, "log", "-1", "--format=%s", first).strip()
    assert subject == f"Work so far, as child job {root_id}-c1 ends"
    assert git(host, "show", f"{first}:after_spawn.txt") == "written while the child ran\n"
    assert child["merge"]["base"] == first
    assert git(host, "merge-base", "--is-ancestor", merge, branch) == ""
    assert snapshot(host, folder) == before


def test_a_child_that_ends_after_its_parent_s_process_is_merged_and_the_parent_s_record_follows(served):
    host, folder, start = served
    before = snapshot(host, folder)
    live = start()
    doc, _, child = run_tree(live, "exit: slow write a.txt=from a | slow write c.txt=from c")
    root_id = doc["job_id"]
    branch = f"orchestrator/{root_id}/worker_1"
    (parent,) = doc["results"]["tasks"]
    assert doc["status"] == "completed" and parent["status"] == "recursive_success", doc
    tip = git(host, "rev-parse", branch).strip()
    # Its record was read after its process ended, then the merge moved its branch: it says so.
    assert child["merge"]["result_commit"] == tip and parent["commit"] == tip, (child["merge"], parent)
    made = ["a.txt", "a.txt.saw", "before_spawn.txt", "c.txt", "c.txt.saw", "marker.json"]
    assert sorted(f["path"] for f in parent["files_changed"]) == made and sorted(parent["files_created"]) == made
    on_disk = live.engine.workspace.load_worker(root_id, 0, "worker_1")
    assert on_disk.commit == tip
    wt = live.engine.workspace.worker_dir(root_id, 0, "worker_1")
    assert (wt / "a.txt").read_text() == "from a\n" and (wt / "c.txt").read_text() == "from c\n"
    assert git(wt, "status", "--porcelain") == ""
    assert snapshot(host, folder) == before


def test_a_parent_that_left_its_branch_gets_no_merge_and_is_told_why(served):
    host, folder, start = served
    before = snapshot(host, folder)
    # Unsandboxed: a sandbox pins a worktree's HEAD, so there no worker can leave its branch (test_hostile.py)
    live = start(env={"DETACH": "1"}, sandbox="off")
    doc, marker, child = run_tree(live, "parent: write a.txt=from a")
    root_id = doc["job_id"]
    branch = f"orchestrator/{root_id}/worker_1"
    assert doc["status"] == "completed" and marker["exit"] == 0, marker
    assert marker["seen"]["a.txt"] is None, marker  # nothing was brought into its checkout
    error = f"worker worker_1's checkout is not on its branch {branch} (it is on a detached HEAD); nothing was merged"
    assert child["merge"]["error"].startswith(error) and child["merge"]["skipped"] == ["worker_1_1"]
    assert f"### Merged into your branch {branch}\n\nNothing was merged: {error}" in marker["out"], marker["out"]
    assert f"orchestrator/{root_id}/worker_1_1" in child["merge"]["error"]  # the branch to merge by hand
    # Its branch did not move past the spawn commit's parent line: no merge commit on it.
    assert git(host, "log", "--merges", "--format=%H", branch) == ""
    assert snapshot(host, folder) == before


def test_three_levels_a_grandchild_s_work_reaches_the_root_worker_s_checkout(served):
    host, folder, start = served
    before = snapshot(host, folder)
    live = start()
    doc, marker, child = run_tree(live, "parent: mid a.txt | write b.txt=from b", depth=2)
    root_id = doc["job_id"]
    assert doc["status"] == "completed" and marker["exit"] == 0, marker
    # worker_1_1 started a job of its own; its children's files were in its checkout when its spawn
    # returned (it copied one), and all of it reached the root worker's checkout in turn.
    assert marker["seen"]["a.txt"] == "deep\n" and marker["seen"]["b.txt"] == "from b\n", marker
    wt = live.engine.workspace.worker_dir(root_id, 0, "worker_1")
    assert (wt / "a.txt.mid").read_text() == "deep\n" and (wt / "a.txt.2").read_text() == "deeper\n"
    grandchild = live.call("GET", f"/api/v1/jobs/{root_id}-c2/status").json()
    assert grandchild["merge"]["target"] == f"orchestrator/{root_id}/worker_1_1"
    assert grandchild["merge"]["merged"] == ["worker_1_1_1", "worker_1_1_2"]
    assert child["merge"]["target"] == f"orchestrator/{root_id}/worker_1"
    tip = git(host, "rev-parse", f"orchestrator/{root_id}/worker_1").strip()
    middle = f"orchestrator/{root_id}/worker_1_1"
    for name, into in (("worker_1_1_1", middle), ("worker_1_1_2", middle), ("worker_1_1", tip), ("worker_1_2", tip)):
        assert git(host, "rev-parse", f"orchestrator/{root_id}/{name}").strip() in squashed(host, into)
    assert snapshot(host, folder) == before
