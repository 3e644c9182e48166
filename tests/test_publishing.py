"""Results people can take: a root job's result branch pushed to ``git.push``'s remote (a local bare
repository here) and a draft pull request opened, then updated on a re-merge, on a loopback mock of
GitHub's and GitLab's pull-request endpoints; a failed push or pull request recorded, never the
job's failure, and retried by ``publish``; the token never written anywhere."""

from __future__ import annotations

import pytest

from orchestrator.cli.progress import closing_lines
from orchestrator.models import JobStatus
from orchestrator.reports.status_document import status_table

from . import mock_forge_server
from .conftest import run_job
from .helpers.worktree import git, host_engine, make_host, snapshot

TOKEN = "ghp_mocktoken0123456789abcdef"
pytestmark = pytest.mark.slow


@pytest.fixture
def forge():
    server = mock_forge_server.start()
    yield server
    mock_forge_server.stop(server)


@pytest.fixture
def hosted_remote(tmp_path, monkeypatch):
    """A host repository with a bare repository as its remote ``origin``, and the forge token in
    the server's environment."""
    host, folder = make_host(tmp_path)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(host, "remote", "add", "origin", str(remote))
    monkeypatch.setenv("TEST_FORGE_TOKEN", TOKEN)
    return host, folder, remote


def publishing_engine(folder, forge, **git_settings):
    settings = {
        "isolation": "worktree",
        "push": "origin",
        "pull_request": "github",
        "forge_api_url": forge.url,
        "forge_repo": "me/app",
        "forge_token_env": "TEST_FORGE_TOKEN",
        **git_settings,
    }
    return host_engine(folder, git=settings)


def no_token_anywhere(folder):
    for path in (folder / "workspace").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_root_jobs_result_is_pushed_and_proposed_as_a_draft_then_updated_on_a_re_merge(hosted_remote, forge):
    host, folder, remote = hosted_remote
    before = snapshot(host, folder)
    engine = publishing_engine(folder, forge)
    try:
        job = run_job(engine, "Add two files", tasks=["echo one > a.txt", "echo two > b.txt"])
        assert job.status is JobStatus.COMPLETED
        done = job.publish.to_dict()
        # The result branch is on the remote, at the result commit
        assert done["pushed"] and done["error"] is None and done["remote"] == "origin"
        assert git(remote, "rev-parse", f"refs/heads/{done['branch']}").strip() == job.merge.result_commit == done["commit"]
        # A draft pull request from it into the checked-out branch, with the run's summary and the token in a header only
        (post,) = [c for c in forge.calls if c.method == "POST"]
        assert post.path == "/repos/me/app/pulls" and post.headers["authorization"] == f"Bearer {TOKEN}"
        assert post.body["draft"] is True and post.body["head"] == done["branch"] and post.body["base"] == "main"
        assert "- Workers: 2 of 2 succeeded" in post.body["body"] and "Add two files" in post.body["body"]
        assert f"`./orchestrator.sh verify {job.id}`" in post.body["body"]  # the record's digest, to check it
        assert done["pull_request"] == {
            "forge": "github",
            "number": 1,
            "url": "https://forge.example/pull/1",
            "action": "opened",
            "base": "main",
        }
        # A re-merge (another strategy) pushes the same branch again and updates the same pull request
        engine.merge(job.id, strategy="theirs")
        again = engine.queries.get_job(job.id).publish.to_dict()
        assert again["pushed"] and again["pull_request"]["action"] == "updated" and again["pull_request"]["number"] == 1
        assert [c.method for c in forge.calls].count("POST") == 1 and forge.calls[-1].method == "PATCH"
        assert len(forge.pulls) == 1
    finally:
        engine.shutdown(timeout=10)
    no_token_anywhere(folder)
    assert engine.workspace.load_job(job.id).publish.to_dict()["pull_request"]["number"] == 1  # on disk
    assert engine.queries.status_document(job.id)["publish"]["pull_request"]["action"] == "updated"
    assert snapshot(host, folder) == before  # the user's checkout, index, stash and refs: untouched


def surfaces(engine, job_id: str) -> dict[str, str]:
    """What a user reads about a job: status/check-status's table, watch's and quick-start's closing
    lines, the job's notes, FINAL_RESULT.md."""
    doc = engine.queries.status_document(job_id)
    return {
        "status table": status_table(doc),
        "closing lines": "\n".join(closing_lines(doc)),
        "notes": "\n".join(doc["notes"]),
        "FINAL_RESULT.md": engine.workspace.final_report(job_id).read_text(),
    }


def test_the_pull_request_is_on_every_surface_its_body_says_the_final_status_and_files_are_counted(hosted_remote, forge):
    host, folder, remote = hosted_remote
    before = snapshot(host, folder)
    engine = publishing_engine(folder, forge)
    try:
        # Given a request ending with a colon, and a worker that adds, modifies and deletes a file
        job = run_job(engine, "Change the app:", tasks=["echo new > new.txt && echo v3 > app.py && rm .gitignore"])
        assert job.status is JobStatus.COMPLETED
        # Then the pull request's title has no trailing colon and its body the job's final status
        (post,) = [c for c in forge.calls if c.method == "POST"]
        assert post.body["title"] == "orchestrator: Change the app"
        assert post.body["body"].startswith(f"## orchestrator job `{job.id}`: completed\n")
        shown = surfaces(engine, job.id)
        doc = engine.queries.status_document(job.id)
    finally:
        engine.shutdown(timeout=10)
    # And its URL is on every surface, in the same words
    for surface, text in shown.items():
        assert "https://forge.example/pull/1 (opened, into main)" in text, surface
    # And the worker's files are counted added, modified and deleted (not "0": none was only created)
    (task,) = doc["results"]["tasks"]
    assert task["files"] == "+1 ~1 -1"
    (row,) = [line for line in shown["status table"].splitlines() if line.startswith("worker_1 ")]
    assert " +1 ~1 -1 " in row
    assert "| +1 ~1 -1 (" in shown["FINAL_RESULT.md"]
    assert snapshot(host, folder) == before


def test_a_failed_pull_request_is_recorded_not_the_jobs_failure_and_publish_retries_it(hosted_remote, forge):
    host, folder, remote = hosted_remote
    forge.fail = [(422, {"message": "Validation Failed", "errors": [{"message": "base is not a branch"}]})]
    engine = publishing_engine(folder, forge)
    try:
        job = run_job(engine, tasks=["echo one > a.txt"])
        assert job.status is JobStatus.COMPLETED  # whatever the forge said
        assert job.publish.to_dict()["pushed"] and job.publish.to_dict()["pull_request"] is None
        assert job.publish.to_dict()["error"] == (
            f"github pull request: GET {forge.url}/repos/me/app/pulls answered 422: Validation Failed; base is not a branch"
        )
        # Why it failed is on every surface a user reads, not only in the status JSON
        for surface, text in surfaces(engine, job.id).items():
            assert "not published: github pull request: GET" in text and "base is not a branch" in text, surface
        found = engine.publish(job.id)  # ./orchestrator.sh publish JOB
        assert found["error"] is None and found["pull_request"]["action"] == "opened"
    finally:
        engine.shutdown(timeout=10)
    no_token_anywhere(folder)


def test_a_push_that_fails_or_would_overwrite_anothers_work_is_refused_and_said(hosted_remote, forge, tmp_path):
    host, folder, remote = hosted_remote
    engine = publishing_engine(folder, forge, push="nowhere")
    try:
        job = run_job(engine, tasks=["echo one > a.txt"])
        assert job.status is JobStatus.COMPLETED
        assert not job.publish.to_dict()["pushed"] and job.publish.to_dict()["error"].startswith(
            "git push nowhere failed: no remote named 'nowhere'"
        )
        assert forge.calls == []  # no pull request for a branch that was not pushed
    finally:
        engine.shutdown(timeout=10)
    # Someone else's commit on the remote's branch: the lease refuses to overwrite it
    engine = publishing_engine(folder, forge, pull_request="none")
    try:
        job = run_job(engine, tasks=["echo two > b.txt"])
        branch = job.publish.to_dict()["branch"]
        assert job.publish.to_dict()["pushed"]
        other = git(host, "commit-tree", "-m", "someone else's", f"{job.merge.result_commit}^{{tree}}").strip()
        git(host, "push", "-q", "origin", f"{other}:refs/heads/{branch}", "--force")
        engine.merge(job.id, strategy="theirs")
        refused = engine.queries.get_job(job.id).publish.to_dict()
        assert not refused["pushed"] and "stale info" in refused["error"], refused["error"]
        assert git(remote, "rev-parse", f"refs/heads/{branch}").strip() == other  # their work stays
    finally:
        engine.shutdown(timeout=10)


def test_gitlab_gets_a_draft_merge_request(hosted_remote, forge):
    host, folder, remote = hosted_remote
    engine = publishing_engine(folder, forge, pull_request="gitlab", forge_repo="group/app", pull_request_base="main")
    try:
        job = run_job(engine, tasks=["echo one > a.txt"])
    finally:
        engine.shutdown(timeout=10)
    (post,) = [c for c in forge.calls if c.method == "POST"]
    assert post.path == "/projects/group%2Fapp/merge_requests" and post.headers["private-token"] == TOKEN
    assert post.body["title"].startswith("Draft: orchestrator: ") and post.body["target_branch"] == "main"
    assert (
        job.publish.to_dict()["pull_request"]["action"] == "opened" and job.publish.to_dict()["pull_request"]["forge"] == "gitlab"
    )


def test_without_the_token_there_is_no_pull_request_and_it_says_which_variable(hosted_remote, forge, monkeypatch):
    host, folder, remote = hosted_remote
    monkeypatch.delenv("TEST_FORGE_TOKEN")
    engine = publishing_engine(folder, forge)
    try:
        job = run_job(engine, tasks=["echo one > a.txt"])
    finally:
        engine.shutdown(timeout=10)
    assert job.publish.to_dict()["pushed"] and forge.calls == []
    assert (
        job.publish.to_dict()["error"]
        == "no pull request: TEST_FORGE_TOKEN is not set in the server's environment (git.forge_token_env)"
    )


def test_the_publish_route_retries_through_the_api_and_names_a_missing_setting(hosted_remote, forge):
    from orchestrator.api.client import OrchestratorClient
    from orchestrator.cli.server import start_in_thread
    from orchestrator.errors import ConfigError

    host, folder, remote = hosted_remote
    key = "k" * 32
    engine = publishing_engine(folder, forge, pull_request="none")
    engine.settings = engine.settings.replace(api={"api_key": key, "host": "127.0.0.1", "port": 0})
    server = start_in_thread(engine.settings, engine, port=0)
    try:
        job = run_job(engine, tasks=["echo one > a.txt"])
        git(remote, "update-ref", "-d", f"refs/heads/{job.publish.to_dict()['branch']}")  # gone from the remote: publish again
        client = OrchestratorClient(server.url, key)
        answer = client.publish(job.id)
        assert answer["job_id"] == job.id and answer["publish"]["pushed"] and answer["publish"]["error"] is None
        assert git(remote, "rev-parse", f"refs/heads/{job.publish.to_dict()['branch']}").strip() == job.merge.result_commit
    finally:
        server.close()
        engine.shutdown(timeout=10)
    plain = host_engine(folder, git={"isolation": "worktree"})
    try:
        with pytest.raises(ConfigError, match="set git.push to a remote"):
            plain.publish(job.id)
    finally:
        plain.shutdown(timeout=10)
