"""Nothing runs twice across a server's kill -9, at any stage after a worker's agent.

A real server process (api_server.py) on 127.0.0.1, in a folder inside a real repository made here,
command workers (``sh -c``) and gates that are real commands. Each test stops the server with
SIGKILL at a named point inside one stage (orchestrator/failpoints.py: the server kills itself
there), restarts it, and counts the runs: the worker's agent and every gate append a line to a
counter file outside the checkout each time they run. After the restart the agent has run once;
a stage that reached its verdict before the kill has run once (its verdict is reused); the stage
the kill cut off has run exactly once more and its record and the logs say so; the job ends as it
would have; the user's repository (branch, index, files, stash, refs outside orchestrator/) is as
it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from .. import mock_forge_server
from ..conftest import API_KEY, wait_until
from ..helpers.worktree_crash import Server, host_state, make_repo
from ..test_worktree import git
from .conftest import alive, tagged_alive

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

RERUN = "re-run: the server stopped during it"


class Stages:
    """One host repository, its orchestrator folder, a server and the counter files."""

    def __init__(self, tmp: Path, *, git_extra: str = "", extra: str = "") -> None:
        self.tmp = tmp
        self.host, self.folder = make_repo(tmp)
        self.marks = tmp / "marks"
        self.marks.mkdir()
        self.server = Server(self.folder, writable=self.marks)
        (self.folder / "config.yaml").write_text(
            f'api:\n  api_key: "{API_KEY}"\n  port: {self.server.port}\n  rate_limit_worker: 0\n'
            'orchestrator:\n  worker: "command"\n  command: ["sh", "-c", "{task}"]\n'
            "workers:\n  max_workers: 4\n  kill_grace: 1\n  retry_backoff: 0.05\n"
            f"  sandbox_writable: [{json.dumps(str(self.marks))}]\n"
            f"git:\n  isolation: worktree\n{git_extra}{extra}"
        )
        self.receiving = ""  # the branch named to receive the result (merge_into): the one ref that may move
        self.before = self.state()
        self.root = ""

    def state(self) -> dict[str, object]:
        """The user's repository as a job must leave it (host_state), but the receiving branch's tip."""
        found = host_state(self.host, self.folder, self.tmp)
        if self.receiving:
            found["refs"] = [r for r in found["refs"] if not r.startswith(f"refs/heads/{self.receiving} ")]  # type: ignore[attr-defined]
        return found

    def receive_into(self, branch: str) -> None:
        """The user's branch ``branch`` (made at main, not checked out) receives the result."""
        git(self.host, "branch", branch, "main")
        self.receiving = branch
        self.before = self.state()

    def count(self, name: str) -> str:
        """A shell command that appends a line to counter ``name`` (outside every checkout)."""
        return f"echo run >> {self.marks / name}"

    def runs(self, name: str) -> int:
        path = self.marks / name
        return len(path.read_text().splitlines()) if path.exists() else 0

    def start_until_killed(self, failpoint: str, request: dict) -> None:
        """Start the server with ``failpoint`` set, submit ``request``, and see it kill itself there."""
        self.server.env["ORCHESTRATOR_FAILPOINTS"] = failpoint
        self.server.start()
        answer = self.server.call("POST", "/api/v1/orchestrate", json=request)
        assert answer.status_code == 202, answer.text
        self.root = answer.json()["job_id"]
        assert self.server.process is not None
        assert self.server.process.wait(90) == -signal.SIGKILL  # it stopped at the failpoint
        self.server.env.pop("ORCHESTRATOR_FAILPOINTS")

    def restart_until_done(self) -> dict:
        """A server without failpoints takes the tree over and sees it to its end; the job's record."""
        assert self.state() == self.before  # the kill itself touched nothing
        self.server.start()
        return wait_until(
            lambda: (
                (job := self.server.call("GET", f"/api/v1/jobs/{self.root}").json())["status"]
                in ("completed", "partial", "failed")
                and job
            ),
            timeout=120,
            what="the job ends after the restart",
        )

    def job(self) -> dict:
        """The root job's record on disk."""
        path = self.folder / "workspace" / f"job_{self.root}" / "state" / "jobs" / f"{self.root}.json"
        return json.loads(path.read_text())

    def worker(self, name: str = "worker_1") -> dict:
        return self.server.records(self.root)[name]

    def log(self, name: str = "") -> str:
        logs = self.folder / "workspace" / f"job_{self.root}" / "logs"
        return (logs / (f"depth_0_{name}.log" if name else "orchestrator.log")).read_text()

    def result_files(self) -> list[str] | None:
        """The files of the job's result branch; None when it has none."""
        ref = f"refs/heads/orchestrator/{self.root}/result"
        if not git(self.host, "for-each-ref", ref).strip():
            return None
        return git(self.host, "ls-tree", "--name-only", ref).split()

    def close(self) -> None:
        self.server.stop()
        for pid in tagged_alive(f"{self.root or 'none'}."):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stages(tmp_path):
    made: list[Stages] = []

    def make(**kwargs: str) -> Stages:
        made.append(Stages(tmp_path, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _gate(name: str, run: str) -> dict:
    return {"name": name, "run": run, "shell": True, "required": True, "timeout": 60}


def test_a_kill_during_a_failing_gate_reruns_that_gate_once_and_never_the_agent(stages):
    s = stages()
    gates = [
        _gate("lint", s.count("lint")),
        _gate("tests", f"{s.count('tests')}; echo scratch > gate_scratch.txt; sleep 2; echo broken; exit 1"),
    ]
    task = f"{s.count('agent')}; echo work > work.txt"
    s.start_until_killed("gate_running.tests=1", {"request": "x", "tasks": [task], "config": {"gates": gates, "max_retries": 1}})
    wait_until(lambda: s.runs("tests") == 1, timeout=30, what="the cut-off gate really started")
    done = s.restart_until_done()
    assert done["status"] == "failed"
    assert (s.runs("agent"), s.runs("lint"), s.runs("tests")) == (1, 1, 2)
    rec = s.worker()
    assert len(rec["attempts"]) == 1 and rec["attempts"][0]["exit_code"] == 0  # the agent's exit is its own
    assert rec["status"] == "failed" and rec["exit_reason"] == "step gates failed: gate tests failed: exit code 1"
    assert [(g["name"], g["status"], g.get("restart")) for g in rec["gates"]] == [
        ("lint", "passed", "reused"),
        ("tests", "failed", "rerun"),
    ]
    assert f"gate tests {RERUN}" in s.log("worker_1") and f"depth_0_worker_1: gate tests {RERUN}" in s.log()
    assert "gate_scratch.txt" not in git(s.host, "ls-tree", "--name-only", rec["branch"])
    assert s.result_files() is None  # a failed worker is not merged: no result
    assert s.state() == s.before


def test_a_kill_during_a_passing_gate_reruns_that_gate_once_and_keeps_the_others_verdicts(stages):
    s = stages()
    gates = [
        _gate("lint", s.count("lint")),
        _gate("tests", f"{s.count('tests')}; echo scratch > gate_scratch.txt; sleep 2"),
        _gate("docs", s.count("docs")),
    ]
    task = f"{s.count('agent')}; echo work > work.txt"
    s.start_until_killed("gate_running.tests=1", {"request": "x", "tasks": [task], "config": {"gates": gates, "max_retries": 1}})
    wait_until(lambda: s.runs("tests") == 1, timeout=30, what="the cut-off gate really started")
    done = s.restart_until_done()
    assert done["status"] == "completed"
    assert (s.runs("agent"), s.runs("lint"), s.runs("tests"), s.runs("docs")) == (1, 1, 2, 1)
    rec = s.worker()
    assert len(rec["attempts"]) == 1 and rec["status"] == "success"
    assert [(g["name"], g["status"], g.get("restart")) for g in rec["gates"]] == [
        ("lint", "passed", "reused"),
        ("tests", "passed", "rerun"),
        ("docs", "passed", None),
    ]
    assert f"gate tests {RERUN}" in s.log("worker_1")
    # What the cut-off gate wrote in the worktree is not the worker's work.
    assert git(s.host, "ls-tree", "--name-only", rec["branch"]).split() == ["app.py", "notes.md", "tools", "work.txt"]
    assert rec["gated_commit"] == rec["commit"] == git(s.host, "rev-parse", rec["branch"]).strip()
    assert "work.txt" in s.result_files() and "gate_scratch.txt" not in s.result_files()
    assert s.state() == s.before


def test_a_kill_after_the_gates_passed_runs_none_of_them_again(stages):
    s = stages()
    gates = [_gate("lint", s.count("lint")), _gate("tests", s.count("tests"))]
    task = f"{s.count('agent')}; echo work > work.txt"
    s.start_until_killed("before_final_record=1", {"request": "x", "tasks": [task], "config": {"gates": gates}})
    done = s.restart_until_done()
    assert done["status"] == "completed"
    assert (s.runs("agent"), s.runs("lint"), s.runs("tests")) == (1, 1, 1)
    rec = s.worker()
    assert len(rec["attempts"]) == 1 and rec["status"] == "success"
    assert [(g["name"], g.get("restart")) for g in rec["gates"]] == [("lint", "reused"), ("tests", "reused")]
    assert RERUN not in s.log("worker_1")
    assert "work.txt" in s.result_files()
    assert s.state() == s.before


# -- the job's stages: landing (merge_into), publishing --------------------------------------------


def _reflog(repo: Path, ref: str) -> list[str]:
    """The updates of ``ref`` in ``repo``'s reflog (newest first): one per time it moved."""
    return git(repo, "reflog", "show", "--format=%H", ref, "--").split()


def _job_notes(s: Stages) -> list[str]:
    return s.server.call("GET", f"/api/v1/jobs/{s.root}").json()["notes"]


def test_a_kill_during_the_landing_reruns_it_once_and_merge_into_follows_the_result(stages):
    s = stages(extra="  merge_into: release\n")
    s.receive_into("release")
    tasks = [f"{s.count('agent')}; echo one > one.txt", f"{s.count('agent')}; echo two > two.txt"]
    s.start_until_killed("landing_before_into=1", {"request": "x", "tasks": tasks})
    result = f"refs/heads/orchestrator/{s.root}/result"
    assert len(_reflog(s.host, result)) == 1  # the landing made its result, then the stop came
    release = git(s.host, "rev-parse", "release").strip()
    assert release == git(s.host, "rev-parse", "main").strip()  # merge_into not reached
    done = s.restart_until_done()
    assert done["status"] == "completed" and s.runs("agent") == 2
    # Landed once more, and once only: one landing's note in the tree's log (the first never got to its note).
    assert s.log().count("merged 2 worker(s) into") == 1, s.log()
    assert git(s.host, "rev-parse", "release").strip() == git(s.host, "rev-parse", result).strip()
    assert sorted(s.result_files() or []) == ["app.py", "notes.md", "one.txt", "tools", "two.txt"]
    assert f"landing {RERUN}" in _job_notes(s) and f"landing {RERUN}" in s.log()
    assert s.state() == s.before  # nothing but the branch named to receive the result moved


def test_a_kill_after_the_landing_moved_merge_into_but_before_its_verdict_lands_again_to_the_same_commit(stages):
    s = stages(extra="  merge_into: release\n")
    s.receive_into("release")
    s.start_until_killed("after_landing=1", {"request": "x", "tasks": [f"{s.count('agent')}; echo one > one.txt"]})
    result = f"refs/heads/orchestrator/{s.root}/result"
    landed = git(s.host, "rev-parse", result).strip()
    assert git(s.host, "rev-parse", "release").strip() == landed  # its work was done; its verdict not recorded
    done = s.restart_until_done()
    assert done["status"] == "completed" and s.runs("agent") == 1
    # Cut off before its verdict, it ran once more (two landings' lines), safely: the same result
    # commit, merge_into already there, no ref moved again.
    assert s.log().count("merged 1 worker(s) into") == 2 and f"landing {RERUN}" in s.job()["notes"]
    assert _reflog(s.host, result) == [landed] and _reflog(s.host, "refs/heads/release")[0] == landed
    assert len(_reflog(s.host, "refs/heads/release")) == 2  # made at main, moved once to the result
    merge = s.job()["merge"]
    assert merge["result_commit"] == landed and merge["into"]["moved"] is True, merge  # "release is already at ..."
    assert s.state() == s.before


def test_a_kill_after_the_landing_and_the_push_runs_neither_again(stages, tmp_path):
    remote = _remote_counting_pushes(tmp_path)
    s = stages(extra="  merge_into: release\n  push: origin\n")
    git(s.host, "remote", "add", "origin", str(remote))
    s.receive_into("release")
    tasks = [f"{s.count('agent')}; echo one > one.txt"]
    s.start_until_killed("before_final_job=1", {"request": "x", "tasks": tasks})
    result = f"refs/heads/orchestrator/{s.root}/result"
    landed = git(s.host, "rev-parse", result).strip()
    assert git(s.host, "rev-parse", "release").strip() == landed and s.runs("pushes") == 1  # both done before the stop
    done = s.restart_until_done()
    assert done["status"] == "completed" and s.runs("agent") == 1
    assert _reflog(s.host, result) == [landed] and git(s.host, "rev-parse", "release").strip() == landed
    # Each ran once: one landing's line and one push's line in the tree's log, both from before the stop.
    assert s.log().count("merged 1 worker(s) into") == 1 and s.log().count(f"pushed orchestrator/{s.root}/result to") == 1
    assert s.runs("pushes") == 1 and git(remote, "rev-parse", f"orchestrator/{s.root}/result").strip() == landed
    job = s.server.call("GET", f"/api/v1/jobs/{s.root}").json()
    assert job["merge"]["result_commit"] == landed and job["merge"]["into"]["moved"] is True
    assert job["publish"]["pushed"] is True and job["publish"]["commit"] == landed
    notes = job["notes"]
    assert any("landing: its verdict from before the server's restart is kept" in n for n in notes)
    assert any("publish: its verdict from before the server's restart is kept" in n for n in notes)
    assert not any(RERUN in n for n in notes)
    assert s.state() == s.before


def _running_with(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (a path of this test's own)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(text in part for part in proc.info["cmdline"] or ()) and alive(proc.pid):
                found.append(proc.pid)
    return found


def _remote_counting_pushes(tmp: Path) -> Path:
    """A bare repository whose own post-receive hook counts the pushes that moved a ref in it."""
    remote = tmp / "remote.git"
    git(tmp, "init", "-q", "--bare", str(remote))
    hook = remote / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\necho push >> {tmp / 'marks' / 'pushes'}\n")
    hook.chmod(0o755)
    return remote


def test_a_kill_during_the_publication_reruns_it_once_safely(stages, tmp_path):
    forge = mock_forge_server.start()
    try:
        remote = _remote_counting_pushes(tmp_path)
        s = stages(
            extra=(
                "  push: origin\n  pull_request: github\n"
                f"  forge_api_url: {forge.url}\n  forge_repo: me/app\n  forge_token_env: TEST_FORGE_TOKEN\n"
            )
        )
        s.server.env["TEST_FORGE_TOKEN"] = "ghp_mocktoken0123456789abcdef"
        git(s.host, "remote", "add", "origin", str(remote))
        s.before = s.state()
        s.start_until_killed("publish_pushed=1", {"request": "x", "tasks": [f"{s.count('agent')}; echo one > one.txt"]})
        result = git(s.host, "rev-parse", f"orchestrator/{s.root}/result").strip()
        assert s.runs("pushes") == 1 and not forge.calls  # pushed, then the stop before the pull request
        done = s.restart_until_done()
        assert done["status"] == "completed" and s.runs("agent") == 1
        # The publication ran once more: the same commit pushed again moved nothing, one pull request opened.
        assert s.runs("pushes") == 1 and git(remote, "rev-parse", f"orchestrator/{s.root}/result").strip() == result
        assert [c.method for c in forge.calls] == ["GET", "POST"] and list(forge.pulls) == [1]
        job = s.server.call("GET", f"/api/v1/jobs/{s.root}").json()
        assert job["publish"]["pushed"] is True and job["publish"]["pull_request"]["number"] == 1
        assert f"publish {RERUN}" in job["notes"] and f"publish {RERUN}" in s.log()
        assert s.log().count(f"pushed orchestrator/{s.root}/result to origin") == 1  # the first never got to its line
        assert not any(f"landing {RERUN}" in n for n in job["notes"])  # the landing had its verdict: kept
        assert s.state() == s.before
    finally:
        mock_forge_server.stop(forge)


def test_a_kill_during_a_candidates_scoring_reruns_only_that_scoring(stages):
    s = stages()
    # The second scoring of all (worker_2's first) hangs: the stop comes in it, and the restart must
    # kill it rather than let it finish beside its re-run ("<id>.done" counts the runs that finished).
    mine = f'{s.marks}/score_"$(cat id.txt)"'
    score = [
        "sh",
        "-c",
        f"n=$(cat {s.marks}/scorings 2>/dev/null | wc -l); echo run >> {s.marks}/scorings; echo run >> {mine}; "
        f'if [ "$n" = 1 ]; then sleep 30; fi; echo done >> {mine}.done; echo \'{{"tests_passed": 3}}\'',
    ]
    (s.folder / "config.yaml").write_text(
        (s.folder / "config.yaml").read_text() + f"candidates:\n  attempts: 2\nscoring:\n  command: {json.dumps(score)}\n"
    )
    s.before = s.state()
    # Each candidate's checkout says which it is (the scoring command sees the checkout at the project's path).
    task = f"{s.count('agent')}; echo one > one.txt; mktemp -u candidate_XXXXXXXX > id.txt"
    s.start_until_killed("scoring_running.worker_2=1", {"request": "x", "tasks": [task]})
    ids = {name: git(s.host, "show", f"orchestrator/{s.root}/{name}:id.txt").strip() for name in ("worker_1", "worker_2")}
    wait_until(lambda: s.runs(f"score_{ids['worker_2']}") == 1, timeout=30, what="the cut-off scoring really started")
    done = s.restart_until_done()
    assert done["status"] == "completed"
    scored = (s.runs(f"score_{ids['worker_1']}"), s.runs(f"score_{ids['worker_2']}"))
    assert s.runs("agent") == 2 and scored == (1, 2)  # two candidates' agents, once each
    assert (s.runs(f"score_{ids['worker_1']}.done"), s.runs(f"score_{ids['worker_2']}.done")) == (1, 1)
    # The cut-off one was killed at the restart, not left to finish beside its re-run.
    assert _running_with(str(s.marks)) == [] and tagged_alive(f"{s.root}.") == []
    job = s.job()
    notes = job["notes"]
    assert "scoring of worker_1: its measures from before the server's restart are kept" in notes
    assert f"scoring of worker_2 {RERUN}" in notes and f"scoring of worker_2 {RERUN}" in s.log()
    ranking = {row["worker"]: row for row in job["selections"]["t1"]["ranking"]}
    assert {w: r["measures"]["tests_passed"] for w, r in ranking.items()} == {"worker_1": 3, "worker_2": 3}
    assert sum(1 for r in s.server.records(s.root).values() if r.get("selected")) == 1
    assert "one.txt" in (s.result_files() or [])
    assert s.state() == s.before


def test_a_kill_during_a_conflicts_resolver_reruns_it_once_and_nothing_else(stages):
    s = stages()
    resolver = ["sh", "-c", f"{s.count('resolver')}; sleep 1; printf \"print('both')\\n\" > app.py"]
    (s.folder / "config.yaml").write_text(
        (s.folder / "config.yaml").read_text()
        + f"  merge_strategy: resolve\n  resolver_kind: command\n  resolver_command: {json.dumps(resolver)}\n"
    )
    s.before = s.state()
    tasks = [f"{s.count('agent')}; sed -i s/v1/{name}/ app.py" for name in ("w1", "w2")]  # the same line: a conflict
    s.start_until_killed("resolver_running=1", {"request": "x", "tasks": tasks})
    wait_until(lambda: s.runs("resolver") == 1, timeout=30, what="the cut-off resolver really started")
    done = s.restart_until_done()
    assert done["status"] == "completed"
    assert (s.runs("agent"), s.runs("resolver")) == (2, 2)  # the resolver cut off ran once more; no worker again
    assert git(s.host, "show", f"orchestrator/{s.root}/result:app.py") == "print('both')\n"
    (resolution,) = s.server.call("GET", f"/api/v1/jobs/{s.root}/conflicts").json()["resolutions"]
    assert resolution["accepted"] and [a["number"] for a in resolution["attempts"]] == [1], resolution
    assert f"resolver attempt 1 {RERUN}" in s.log("worker_2") and f"resolver attempt 1 {RERUN}" in s.log()
    assert f"landing {RERUN}" in s.job()["notes"]
    assert s.state() == s.before
