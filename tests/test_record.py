"""A verifiable record of the run: RECORD.json, signed with the workspace's Ed25519 key when a root
job ends, and ``./orchestrator.sh verify`` naming whatever changed since (a log, the record, the
result branch, the key)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import protocol
from orchestrator.audit import signing_key as keys
from orchestrator.audit.record import FILE, masked, redacted_argv
from orchestrator.audit.verify import verify
from orchestrator.errors import NoSpace
from orchestrator.models import JobStatus
from orchestrator.webhooks.event_types import job_summary

from .conftest import run_job
from .helpers.disk import fill_command, small_filesystem
from .helpers.worktree import git, host_engine, make_host, snapshot, workers

ROOT = Path(__file__).resolve().parent.parent


def verify_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``./orchestrator.sh verify`` as a user runs it, in the orchestrator's folder."""
    code = "import sys; sys.path[0] = sys.argv.pop(1); from orchestrator.cli.main import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, str(ROOT), "verify", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, protocol.HOME: str(folder)},  # the folder the user copied (its config and workspace)
    )


@pytest.fixture
def finished(tmp_path):
    """A worktree job of two workers and a gate in a host repository, ended, and the host as it was before."""
    host, folder = make_host(tmp_path)
    before = snapshot(host, folder)
    gate = {"name": "has-files", "run": ["sh", "-c", "ls *.txt"]}
    engine = host_engine(folder, git={"isolation": "worktree"}, tasks={"gates": [gate]})
    try:
        job = run_job(engine, tasks=["echo one > a.txt", "echo two > b.txt"])
        found = workers(engine, job)
    finally:
        engine.shutdown(timeout=10)
    return host, folder, engine, job, found, before


@pytest.mark.slow
def test_a_finished_root_job_has_a_signed_record_that_verifies(finished):
    host, folder, engine, job, found, before = finished
    assert job.status is JobStatus.COMPLETED
    job_dir = engine.workspace.job_dir(job.id)
    record = json.loads((job_dir / FILE).read_text())
    # What ran: the request, the plan, every worker's attempts with their argv, gates with log digests, the merge
    assert record["request"] == "job" and record["status"] == "completed"
    assert [t["task"] for t in record["jobs"][0]["plan"]] == ["echo one > a.txt", "echo two > b.txt"]
    rows = {w["key"]: w for w in record["workers"]}
    one = rows["depth_0_worker_1"]
    assert one["attempts"][0]["argv"][:2] == ["sh", "-c"] and one["attempts"][0]["exit_code"] == 0
    assert one["commit"] == found["worker_1"].commit and one["gates"][0]["name"] == "has-files"
    assert one["gates"][0]["log"]["sha256"] and one["log"]["sha256"]
    assert record["result"]["commit"] == git(host, "rev-parse", record["result"]["ref"]).strip()
    assert {e["path"] for e in record["logs"]} >= {found["worker_1"].log_path, found["worker_2"].log_path}
    # Signed with the workspace's key, made with mode 0600 beside the records, never in the user's checkout
    key = keys.key_path(engine.workspace.root)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert record["signature"]["public_key"] == keys.public_text(keys.load(key).public_key())
    # The job record, the status document and the webhook event carry its digest
    loaded = engine.workspace.load_job(job.id)
    assert loaded.record_digest == record["signature"]["digest"]
    assert engine.queries.status_document(job.id)["record"]["digest"] == loaded.record_digest
    assert job_summary(loaded)["record_digest"] == loaded.record_digest
    done = verify_cli(folder, job.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"job {job.id}: RECORD.json verified: signed by this workspace's key" in done.stdout
    assert snapshot(host, folder) == before


@pytest.mark.slow
def test_verify_names_a_changed_log_a_moved_result_and_an_edited_record(finished):
    host, folder, engine, job, found, _ = finished
    job_dir = engine.workspace.job_dir(job.id)
    # A worker's log edited, a gate's log deleted
    log = job_dir / found["worker_1"].log_path
    log.write_text(log.read_text() + "a line added later\n")
    gate_log = job_dir / found["worker_2"].gates[0].log_path
    gate_log.unlink()
    # The result branch moved
    ref = json.loads((job_dir / FILE).read_text())["result"]["ref"]
    git(host, "update-ref", ref, f"{ref}~1")
    done = verify_cli(folder, job.id)
    assert done.returncode == 1
    assert "RECORD.json NOT verified" in done.stdout
    assert f"{found['worker_1'].log_path}: changed" in done.stdout
    assert f"{found['worker_2'].gates[0].log_path}: gone" in done.stdout
    assert f"{ref} now points at" in done.stdout
    assert "signature does not match" not in done.stdout  # the record itself is intact
    # The record edited: its status rewritten
    path = job_dir / FILE
    record = json.loads(path.read_text())
    record["status"] = "failed"
    path.write_text(json.dumps(record))
    assert "the signature does not match the record" in verify_cli(folder, job.id).stdout


@pytest.mark.slow
def test_a_record_signed_by_another_key_does_not_verify(finished):
    _, folder, engine, job, _, _ = finished
    key = keys.key_path(engine.workspace.root)
    old = key.read_bytes()
    key.unlink()
    keys.load_or_create(engine.workspace.root)  # a new key: the old record is not its
    assert key.read_bytes() != old
    done = verify_cli(folder, job.id)
    assert done.returncode == 1 and "signed by another key" in done.stdout
    assert "the signature does not match the record" in done.stdout


def test_verify_key_prints_the_public_key_and_bad_input_is_named(tmp_path):
    folder = tmp_path / "orch"
    folder.mkdir()
    (folder / "config.yaml").write_text("# the defaults: the workspace is ./workspace\n")
    shown = verify_cli(folder, "--key")
    assert shown.returncode == 0 and shown.stdout.startswith("ed25519:")
    assert shown.stdout.strip() == verify_cli(folder, "--key").stdout.strip()  # made once
    assert verify_cli(folder).returncode == 2
    missing = verify_cli(folder, "0123456789ab")
    assert missing.returncode != 0 and "0123456789ab" in missing.stderr + missing.stdout
    bad = verify_cli(folder, "../etc")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_full_disk_at_the_first_signing_leaves_no_key_and_the_next_signing_makes_one(tmp_path):
    """A full disk as the key is first written left a 0-byte key, and every later record failed on it:
    now the write fails whole, names the file, and leaves nothing; once there is room a key is made."""
    with small_filesystem(tmp_path / "fs", "64k") as fs:
        root = fs / "workspace"
        root.mkdir()
        subprocess.run(fill_command(fs / "fill"), check=True)
        path = keys.key_path(root)
        with pytest.raises(NoSpace) as raised:
            keys.load_or_create(root)
        assert raised.value.message.startswith(f"the signing key could not be written at {path}: No space left")
        assert [p for p in root.rglob("*") if not p.is_dir()] == []  # no 0-byte key, no temporary file
        (fs / "fill").unlink()
        made = keys.load_or_create(root)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert keys.public_text(keys.load(path).public_key()) == keys.public_text(made.public_key())
        assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "said"),
    [(b"", "is empty (0 bytes): its writing was cut short"), (b"-----BEGIN PRIVATE KEY-----\nbroken\n", "holds no readable key")],
)
def test_a_key_file_that_holds_no_key_is_named_with_its_fix_and_verify_prints_no_traceback(tmp_path, content, said):
    folder = tmp_path / "orch"
    folder.mkdir()
    (folder / "config.yaml").write_text("# the defaults: the workspace is ./workspace\n")
    path = keys.key_path(folder / "workspace")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)  # a 0-byte one: what a full disk at the first signing left
    with pytest.raises(keys.KeyUnusable, match=re.escape(said)):
        keys.load_or_create(folder / "workspace")
    shown = verify_cli(folder, "--key")
    assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr
    assert f"the signing key {path} " in shown.stderr and f"remove {path} and a new key is made" in shown.stderr
    as_json = verify_cli(folder, "--key", "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"] == "not_found"
    assert path.read_bytes() == content  # never replaced without a word: a damaged key may be restored
    path.unlink()  # as the message says
    assert verify_cli(folder, "--key").stdout.startswith("ed25519:")


@pytest.mark.slow
def test_with_a_zero_byte_key_verify_names_it_and_the_next_job_says_why_it_has_no_record(finished):
    _, folder, engine, job, _, _ = finished
    path = keys.key_path(engine.workspace.root)
    path.write_bytes(b"")  # what the old code left when the disk filled at the first signing
    done = verify_cli(folder, job.id)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"the signing key {path} is empty" in done.stderr and f"remove {path}" in done.stderr
    again = host_engine(folder, git={"isolation": "worktree"})
    try:
        second = run_job(again, tasks=["echo three > c.txt"])
    finally:
        again.shutdown(timeout=10)
    notes = again.workspace.load_job(second.id).notes
    assert not (again.workspace.job_dir(second.id) / FILE).exists()
    assert any(n.startswith(f"RECORD.json not written: the signing key {path} is empty") for n in notes), notes
    path.unlink()  # as the message says: verify --key makes a new one
    assert verify_cli(folder, "--key").stdout.startswith("ed25519:") and path.stat().st_size > 0
    unsigned = verify_cli(folder, second.id)
    assert unsigned.returncode == 1 and "Traceback" not in unsigned.stderr
    assert "RECORD.json does not exist" in unsigned.stdout and "its notes say why" in unsigned.stdout, unsigned.stdout


def test_verify_names_a_malformed_record_and_never_raises(tmp_path):
    """A record edited into shapes this orchestrator never writes (a log list that is an object, an
    entry that is a string, a result that is text, a log path naming the job's folder or a FIFO, a
    signature without its digest): each is a problem named, never a traceback, never a wait."""
    key = keys.load_or_create(tmp_path / "workspace")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    os.mkfifo(job_dir / "fifo")
    signature = {"public_key": keys.public_text(key.public_key()), "value": "", "digest": "sha256:0"}
    bodies = [
        {"logs": {"a": 1}},
        {"logs": ["x"]},
        {"result": "main"},
        {"logs": [{"path": "", "sha256": "0"}]},
        {"logs": [{"path": "fifo", "sha256": "0"}]},
    ]
    for body in bodies:
        (job_dir / FILE).write_text(json.dumps({**body, "signature": signature}))
        record, problems = verify(job_dir, key.public_key(), None)
        assert record is not None and problems, body
    (job_dir / FILE).write_text(json.dumps({"signature": {"public_key": signature["public_key"]}}))
    _, problems = verify(job_dir, key.public_key(), None)
    assert "the signature's digest (None) is not the record's" in problems[0]


def test_an_argv_keeps_no_prompt_and_no_secret_and_a_config_no_secret():
    prompt = "Build the thing carefully, with tests " * 3
    argv = ["codex", "exec", "--api-key", "sk-123", "-c", "model_providers.m.api_key=sk-456", "--", prompt]
    shown = redacted_argv(argv, prompt)
    assert shown[:6] == ["codex", "exec", "--api-key", "***", "-c", "model_providers.m.api_key=***"]
    assert shown[-1].startswith("<prompt: 114 bytes, sha256 ") and "Build" not in " ".join(shown)
    config = masked({"callback_url": "https://hooks.example/p?token=abc", "webhook_secret": "s3cret", "gates": [{"run": ["x"]}]})
    assert config == {"callback_url": "https://hooks.example", "webhook_secret": "***", "gates": [{"run": ["x"]}]}


@pytest.mark.slow
def test_a_folder_job_has_a_record_without_a_result_and_a_crashed_writes_leftover_goes(tmp_path, make_engine):
    engine = make_engine(orchestrator={"worker": "command", "command": ["sh", "-c", "{task}"]})
    job = run_job(engine, tasks=["echo one > a.txt", "exit 3"])
    job_dir = engine.workspace.job_dir(job.id)
    record = json.loads((job_dir / FILE).read_text())
    assert record["status"] == job.status.value == "partial"
    assert record["result"] == {"ref": None, "commit": None, "into": None}  # folder workers: no branches
    assert [w["status"] for w in record["workers"]] == ["success", "failed"]
    assert record["workers"][1]["attempts"][-1]["exit_code"] == 3
    # A write cut short by a crash leaves a temp file; the next record's write removes it
    leftover = job_dir / f".{FILE}.999.1.tmp"
    leftover.write_text("{")
    engine.results.record_result(job, job.status, job.ended_at)
    assert not leftover.exists() and json.loads((job_dir / FILE).read_text())["job_id"] == job.id


def test_a_log_s_digest_is_its_bytes_read_in_one_read_to_its_end(tmp_path, monkeypatch):
    """RECORD.json's digest of each log: sha256 and size of every byte, whatever the size (none, a few,
    exactly a read's 1 MB, past it); a small log in one read (fstat's size and a byte more tells its
    end), not a file object's reads, seek and ioctl; a folder, a FIFO, a link and a missing file: none."""
    import hashlib

    from orchestrator.audit import record as audit_record

    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(audit_record.os, "read", counting_read)
    for size in (0, 1, 700, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (5 << 19) + 3):
        data = os.urandom(size)
        path = tmp_path / f"log-{size}"
        path.write_bytes(data)
        reads.clear()
        assert audit_record.file_digest(path) == (hashlib.sha256(data).hexdigest(), size)
        assert sum(reads) >= size and len(reads) == (1 if size < 1 << 20 else 2 if size < 2 << 20 else 3), (size, reads)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "log-700")
    for name in ("folder", "fifo", "link", "missing"):
        assert audit_record.file_digest(tmp_path / name) == (None, None), name
