"""Diffs of a job's work: the worker and job diff routes on a real waitress
server over a real host repository made here, command workers editing files in their
worktrees; the size cap, the errors, the scopes of keys, the client and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.api.client import OrchestratorClient
from orchestrator.errors import Conflict
from orchestrator.git.diffs import DEFAULT_MAX_BYTES, MAX_BYTES_CEILING
from orchestrator.outcomes import MergeRecord

from .conftest import API_KEY, ROOT, wait_until
from .helpers import diffs as diffs_helpers
from .helpers.diffs import EVIL
from .helpers.worktree import git, snapshot

# The fixture this file shares with other test files (tests/helpers/diffs.py).
hosted_live = diffs_helpers.hosted_live

pytestmark = pytest.mark.slow


TASKS = [
    "printf 'print(1)\\n' >> app.py && printf '%s\\n' \"$EVIL\" > 'evil <img src=x onerror=alert(2)>.txt'",
    "printf 'two\\n' > two.txt && printf '\\000\\001\\002binary' > blob.bin",
    "true",
]


def run_tree(live, tasks=TASKS, **config):
    """Run a worktree job to its end. Whatever merge its end made (landing.py) is dropped from the
    engine's record, so the job's diff is its workers' (a test that wants a merge sets one)."""
    job_id = live.submit(request="edit the app", tasks=tasks, config={"isolation": "worktree", **config}).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed", [t["error"] for t in doc["results"]["tasks"]]
    with live.engine.tables.locked():
        live.engine.queries._jobs[job_id].merge = None
    return job_id, {t["worker_id"]: t for t in doc["results"]["tasks"]}


def test_a_workers_diff_is_its_branch_against_its_start_point(hosted_live, monkeypatch):
    make, host, folder = hosted_live
    monkeypatch.setenv("EVIL", EVIL)
    before = snapshot(host, folder)
    live = make()
    job_id, tasks = run_tree(live)
    got = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/diff")
    assert got.status_code == 200, got.text
    doc = got.json()
    # Its branch against the commit its first attempt started from (the base: main's tip)
    assert doc["worker"] == "depth_0_worker_1" and doc["branch"] == tasks["worker_1"]["branch"]
    assert doc["from"] == git(host, "rev-parse", "main").strip() and doc["to"] == tasks["worker_1"]["commit"]
    assert doc["truncated"] is False and doc["bytes"] == len(doc["diff"].encode()) and doc["max_bytes"] == DEFAULT_MAX_BYTES
    # It is git's own diff of those two commits, byte for byte, the untrusted name and text as they are
    assert doc["diff"] == git(host, "diff", "--no-color", doc["from"], doc["to"])
    assert "+print(1)" in doc["diff"] and f"+{EVIL}" in doc["diff"]
    assert "diff --git a/evil <img src=x onerror=alert(2)>.txt b/evil <img src=x onerror=alert(2)>.txt" in doc["diff"]
    # A binary file shows as git shows it
    two = live.call("GET", f"/api/v1/jobs/{job_id}/workers/depth_0_worker_2/diff").json()
    assert "Binary files /dev/null and b/blob.bin differ" in two["diff"] and "+two" in two["diff"]
    # A worker that changed nothing has an empty diff
    three = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_3/diff").json()
    assert three["diff"] == "" and three["from"] == three["to"] and three["bytes"] == 0
    # And a text diff applies: in a clone at the start point, git apply gives the worker's tree
    clone = host.parent / "clone"
    git(host.parent, "clone", "-q", str(host), str(clone))
    git(clone, "checkout", "-q", doc["from"])
    subprocess.run(["git", "-C", str(clone), "apply", "--index"], input=doc["diff"].encode(), check=True)
    assert git(clone, "write-tree").strip() == git(host, "rev-parse", f"{doc['to']}^{{tree}}").strip()
    assert snapshot(host, folder) == before  # reading diffs touches nothing of the user's


def test_a_jobs_diff_is_its_workers_diffs_in_turn_until_a_merge_made_a_result(hosted_live, monkeypatch):
    make, host, folder = hosted_live
    monkeypatch.setenv("EVIL", "plain")
    live = make()
    job_id, tasks = run_tree(live, tasks=[TASKS[0], "printf 'two\\n' > two.txt", "true"])
    doc = live.call("GET", f"/api/v1/jobs/{job_id}/diff").json()
    # No merge on record: the concatenation, said so, each part after a line naming its worker
    assert doc["source"] == "workers" and doc["from"] is None and doc["to"] is None
    assert [p["worker"] for p in doc["parts"]] == ["depth_0_worker_1", "depth_0_worker_2", "depth_0_worker_3"]
    w1 = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/diff").json()
    assert doc["diff"].index("# depth_0_worker_1 (") < doc["diff"].index(w1["diff"]) < doc["diff"].index("# depth_0_worker_2 (")
    assert doc["bytes"] == len(doc["diff"].encode()) and not doc["truncated"] and doc["omitted"] == [] == doc["pending"]
    # The whole concatenation applies at the base (disjoint files): git apply skips the worker lines
    clone = host.parent / "clone"
    git(host.parent, "clone", "-q", str(host), str(clone))
    subprocess.run(["git", "-C", str(clone), "apply", "--index"], input=doc["diff"].encode(), check=True)
    assert (clone / "two.txt").read_text() == "two\n" and (clone / "app.py").read_text().endswith("print(1)\n")
    # Once the job's merge made a result commit (landing records it in JobRecord.merge), the job's
    # diff is that commit against the base
    base = git(host, "rev-parse", "main").strip()
    result = tasks["worker_2"]["commit"]  # any commit: what the merge would have made
    engine = live.engine
    with engine.tables.locked():
        engine.queries._jobs[job_id].merge = MergeRecord.from_dict(
            {"strategy": "auto", "base": base, "result_commit": result, "result_ref": "x"}
        )
    merged = live.call("GET", f"/api/v1/jobs/{job_id}/diff").json()
    assert merged["source"] == "result" and merged["from"] == base and merged["to"] == result
    assert merged["diff"] == git(host, "diff", "--no-color", base, result)
    # A merge naming a commit the repository does not have is a 409 saying so, not a 500
    with engine.tables.locked():
        engine.queries._jobs[job_id].merge = MergeRecord.from_dict(
            {"strategy": "auto", "base": base, "result_commit": "f" * 40, "result_ref": "x"}
        )
    gone = live.call("GET", f"/api/v1/jobs/{job_id}/diff")
    assert gone.status_code == 409 and "no longer has" in gone.json()["message"]


def test_the_size_cap_cuts_at_a_line_says_so_and_counts_the_whole(hosted_live):
    make, host, folder = hosted_live
    live = make()
    job_id, _ = run_tree(live, tasks=["seq 1 20000 > numbers.txt", "seq 1 5000 > more.txt"])
    whole = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/diff").json()
    assert whole["truncated"] is False and whole["bytes"] > 100_000
    cut = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/diff?max_bytes=1000").json()
    assert cut["truncated"] is True and cut["max_bytes"] == 1000 and cut["bytes"] == whole["bytes"]
    assert whole["diff"].startswith(cut["diff"]) and 900 < len(cut["diff"]) <= 1000 and cut["diff"].endswith("\n")
    # The job's diff shares one budget: past it, the other workers' diffs are left out and named
    job = live.call("GET", f"/api/v1/jobs/{job_id}/diff?max_bytes=2000").json()
    assert job["truncated"] is True and len(job["diff"].encode()) <= 2000 and job["omitted"] == ["depth_0_worker_2"]
    # Bad caps are refused naming the parameter, never a 500
    for bad in ("0", "-1", "x", "%C2%B2", str(MAX_BYTES_CEILING + 1)):
        for path in (f"/api/v1/jobs/{job_id}/diff", f"/api/v1/jobs/{job_id}/workers/worker_1/diff"):
            answer = live.call("GET", f"{path}?max_bytes={bad}")
            assert answer.status_code == 400 and "max_bytes=" in answer.json()["message"], (bad, answer.text)
    assert live.call("GET", f"/api/v1/jobs/{job_id}/diff?max_bytes={MAX_BYTES_CEILING}").status_code == 200


def test_a_folder_job_has_no_diff_and_unknown_ids_are_refused(hosted_live):
    make, host, folder = hosted_live
    live = make()
    job_id = live.submit(request="x", tasks=["echo hi > a.txt"], config={"isolation": "folder"}).json()["job_id"]
    live.wait(job_id)
    for path in (f"/api/v1/jobs/{job_id}/diff", f"/api/v1/jobs/{job_id}/workers/worker_1/diff"):
        answer = live.call("GET", path)
        assert (
            answer.status_code == 409
            and "isolation folder" in answer.json()["message"]
            and "no git branches" in answer.json()["message"]
        )
    assert live.call("GET", "/api/v1/jobs/0123456789ab/diff").status_code == 404
    assert live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_9/diff").status_code == 404
    for bad in ("worker_01", "depth_0_..%2f..%2fworker_1", "worker_1%00"):  # raw ones: test_security_paths
        assert live.call("GET", f"/api/v1/jobs/{job_id}/workers/{bad}/diff").status_code in (400, 404)
    assert live.call("GET", "/api/v1/jobs/..%2f..%2fetc/diff").status_code in (400, 404)


def test_keys_no_key_is_401_a_worker_reads_its_own_tree_never_another(hosted_live, tmp_path):
    make, host, folder = hosted_live
    live = make()
    gate = tmp_path / "gate"
    # worker_1 stages a file and waits: its diff shows only what the orchestrator committed (nothing yet)
    hang = f"echo mine > mine.txt; git add -A >/dev/null; while [ ! -e '{gate}' ]; do sleep 0.05; done"
    other_id, _ = run_tree(live, tasks=["echo other > other.txt"])
    job_id = live.submit(request="x", tasks=[hang, "echo done > done.txt"], config={"isolation": "worktree"}).json()["job_id"]
    try:
        wait_until(lambda: live.engine.worker_running(job_id, "worker_1"))
        wait_until(lambda: live.engine.queries.find_worker(job_id, 0, "worker_2").status.terminal)
        cred = live.engine.credentials.issue(job_id, job_id, "worker_1")
        assert live.call("GET", f"/api/v1/jobs/{job_id}/diff", key="").status_code == 401
        assert live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_2/diff", key="wrong-key-0123456789").status_code == 401
        # A worker may read its own tree's diffs (as it reads its logs), a running one's too
        mine = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_2/diff", key=cred)
        assert mine.status_code == 200 and "+done" in mine.json()["diff"]
        running = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/diff", key=cred).json()
        assert running["branch"] == f"orchestrator/{job_id}/worker_1" and running["diff"] == ""  # nothing committed yet
        partial = live.call("GET", f"/api/v1/jobs/{job_id}/diff", key=cred).json()
        assert [p["worker"] for p in partial["parts"]] == ["depth_0_worker_1", "depth_0_worker_2"]
        # and never another tree's
        for path in (f"/api/v1/jobs/{other_id}/diff", f"/api/v1/jobs/{other_id}/workers/worker_1/diff"):
            refused = live.call("GET", path, key=cred)
            assert refused.status_code == 403 and "cannot access job" in refused.json()["message"]
    finally:
        gate.touch()
        live.wait(job_id)


def test_the_client_and_the_cli_print_the_diff_from_a_real_server(hosted_live, monkeypatch):
    make, host, folder = hosted_live
    monkeypatch.setenv("EVIL", "plain")
    live = make()
    job_id, tasks = run_tree(live)
    client = OrchestratorClient(api_url=live.url, api_key=API_KEY)
    one = client.diff(job_id, "worker_2")
    assert one["worker"] == "depth_0_worker_2" and "+two" in one["diff"]
    assert client.diff(job_id)["source"] == "workers"
    cut = client.diff(job_id, "worker_2", max_bytes=50)
    assert cut["truncated"] and cut["max_bytes"] == 50
    with pytest.raises(Conflict):
        client.diff(live.submit(request="x", tasks=["true"], config={"isolation": "folder"}).json()["job_id"])
    # The CLI of this folder (its config names the server's port and key) prints plain diff text
    port = live.url.rsplit(":", 1)[1]
    (folder / "config.yaml").write_text(f"api:\n  api_key: {API_KEY}\n  port: {port}\n")
    env = {**os.environ, "ORCHESTRATOR_HOME": str(folder), "PYTHONPATH": str(ROOT)}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, env=env, cwd=tmp_cwd(host), timeout=60
        )

    plain = cli("diff", job_id, "--worker", "worker_2")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == one["diff"] and plain.stderr == ""
    as_json = cli("diff", job_id, "--json")
    assert json.loads(as_json.stdout)["source"] == "workers"
    short = cli("diff", job_id, "--worker", "worker_2", "--max-bytes", "50")
    assert short.returncode == 0 and "diff truncated" in short.stderr and len(short.stdout) <= 50
    assert "must be a whole number from 1" in cli("diff", job_id, "--max-bytes", "0").stderr
    # An unknown worker: the server's 404, exit code 2
    missing = cli("diff", job_id, "--worker", "worker_9")
    assert missing.returncode == 2 and "worker_9" in missing.stderr
    # With the server gone, the CLI reads the records and the repository itself: the same text
    live.server.close()
    offline = cli("diff", job_id, "--worker", "worker_2")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == one["diff"]


def tmp_cwd(host: Path) -> str:
    return str(host.parent)
