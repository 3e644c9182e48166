"""Ids that become paths, and links a worker plants: raw HTTP against a real server.

Requests go over a plain socket so that no client library normalises ``..``,
percent escapes, NUL bytes or non-ASCII in the request target. The file system
outside the workspace is fingerprinted before and after; nothing may change.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from .conftest import ROOT
from .helpers.security_paths import raw_request

pytestmark = pytest.mark.slow
REFUSED = range(400, 500)


def fs_snapshot(*roots: Path) -> dict[str, tuple]:
    """path -> (size, mtime_ns, sha256) for files, link target for links, mtime for folders.
    Links are recorded, never followed; a folder's mtime moves when an entry is added or removed."""
    seen: dict[str, tuple] = {}
    for root in roots:
        items = [root] if root.is_file() else []
        if root.is_dir():
            for base, dirs, files in os.walk(root, followlinks=False):
                dirs[:] = [d for d in dirs if d not in (".git", ".venv", "__pycache__", ".pytest_cache")]
                items.append(Path(base))
                items += [Path(base) / name for name in files + [d for d in dirs if os.path.islink(os.path.join(base, d))]]
        for path in items:
            st = os.lstat(path)
            if os.path.islink(path):
                seen[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[str(path)] = ("dir", st.st_mtime_ns)
            elif not stat.S_ISREG(st.st_mode):  # the workers' supervisor's socket: no content to read
                seen[str(path)] = ("special", stat.S_IFMT(st.st_mode), st.st_ino)
            else:
                seen[str(path)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return seen


def make_canary(base: Path) -> Path:
    """A tree next to the workspace that a traversal would reach: an etc/passwd, a job-like folder."""
    canary = base / "canary"
    (canary / "etc").mkdir(parents=True)
    (canary / "etc" / "passwd").write_text("root:x:0:0:canary:/root:/bin/sh\n")
    (canary / "job_000000000000" / "state").mkdir(parents=True)
    (canary / "job_000000000000" / "FINAL_RESULT.md").write_text("canary report\n")
    (canary / "secret.txt").write_text("CANARY-SECRET\n")
    return canary


def repo_files() -> list[Path]:
    """The repository's own top-level files and test fixtures (not code others are editing now)."""
    return [p for p in ROOT.iterdir() if p.is_file()] + [ROOT / "tests" / "fixtures"]


# -- path traversal ------------------------------------------------------------------------
def _payloads(valid: str) -> list[str]:
    """Request-target segments, sent as they are: percent escapes stay escapes, non-ASCII is raw UTF-8."""
    fullwidth = valid.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789abcdef"})
    cyrillic = "\u0430" + valid[1:]  # Cyrillic a in an otherwise valid hex id
    return [
        "..",
        ".",
        "../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2e%2e",
        "%2e%2e%2f",
        "..%2f",
        "%252e%252e%252f",
        "..%5c..%5cetc%5cpasswd",
        "/etc/passwd",
        "%2fetc%2fpasswd",
        "%2f%2e%2e%2fcanary",
        "..%2f..%2fcanary%2fsecret.txt",
        f"..%2fjob_{valid}",
        f"job_{valid}",
        "%00",
        f"{valid}%00",
        f"{valid}%00.json",
        f"%00{valid}",
        f"{valid}%0a",
        f"{valid}%0d%0a",
        f"{valid}%20",
        f"{valid}%09",
        "a" * 10240,
        valid * 854,
        "\uff0e\uff0e",
        quote("\uff0e\uff0e/\uff0e\uff0e/etc/passwd", safe=""),
        "\u2024\u2024",
        quote("\u2024\u2024/", safe=""),
        cyrillic,
        quote(cyrillic, safe=""),
        "\u0435" * 12,
        fullwidth,
        quote(fullwidth, safe=""),
        f"{valid}%2f..%2f..",
        f"{valid}-c0",
        f"{valid}-c1%2f..%2f..",
        f"{valid}-c01",
        valid.upper(),
        f"{valid}.",
        f" {valid}".replace(" ", "%20"),
        f"{valid};%20rm%20-rf%20x",
        "%7e",
        "*",
    ]


def _worker_payloads(valid_worker: str) -> list[str]:
    return [
        *_payloads("0" * 12),
        f"depth_0_..%2f..%2f{valid_worker}",
        f"{valid_worker}%00",
        f"{valid_worker}%0a",
        f"depth_0_{valid_worker}%2f..%2f..%2flogs",
        "depth_-1_worker_1",
        "depth_0001_worker_1",
        "worker_01",
        "worker_1_0",
        "worker_\uff11",
        quote("worker_\uff11", safe=""),
        "depth_\u0661_worker_1",
        "w\u043erker_1",
    ]


def _targets(doc: dict, job_id: str) -> list[tuple[str, str, str]]:
    """(method, request target, what was attacked) for every id of every route in the served document."""
    cases = []
    for template, ops in doc["paths"].items():
        if "{job_id}" not in template and "{worker}" not in template:
            continue
        for method, _op in ops.items():
            query = "?timeout=0" if template.endswith("/wait") else ""
            for payload in _payloads(job_id):
                cases.append(
                    (
                        method.upper(),
                        template.replace("{job_id}", payload).replace("{worker}", "worker_1") + query,
                        f"job_id={payload[:40]}",
                    )
                )
            if "{worker}" in template:
                for payload in _worker_payloads("worker_1"):
                    cases.append(
                        (
                            method.upper(),
                            template.replace("{job_id}", job_id).replace("{worker}", payload),
                            f"worker={payload[:40]}",
                        )
                    )
            if template.endswith("/report"):
                for payload in _payloads(job_id) + ["final%00", "level_0%2f..%2f..", "level_%EF%BC%90", "level_0%0a"]:
                    cases.append(("GET", template.replace("{job_id}", job_id) + f"?name={payload}", f"name={payload[:40]}"))
    return cases


def test_every_id_in_every_route_refuses_traversal_and_touches_no_file(make_live, tmp_path):
    # Given a finished job (which a DELETE that slipped through would remove) and a canary tree beside the workspace
    live = make_live(api={"long_poll_max": 1, "rate_limit_failed_auth": 0}, simulated={"duration": 0.01})
    job_id = live.submit(request="x", tasks=["a", "b"]).json()["job_id"]
    live.wait(job_id)
    # The job index re-reads a tree from disk when its root job ends, on its own writer thread:
    # a listing waits for that writer (and its read takes SQLite's read mark) before the snapshot.
    assert live.call("GET", "/api/v1/jobs").status_code == 200
    canary = make_canary(tmp_path)
    roots = [tmp_path, *repo_files(), Path("/etc/passwd"), Path("/etc/hostname")]
    before = fs_snapshot(*roots)
    doc = live.call("GET", "/openapi.json").json()
    cases = _targets(doc, job_id)
    # When every route's ids carry every traversal, encoding trick and look-alike, over a raw socket
    answers = [(method, target, what, *raw_request(live.url, method, target)[::2]) for method, target, what in cases]
    # Then every one is refused with a 4xx, no body leaks a canary, and no file anywhere changed
    wrong = [(m, t[:90], s) for m, t, _, s, _ in answers if s not in REFUSED]
    leaks = [(m, t[:90]) for m, t, _, _, body in answers if b"CANARY" in body or b"root:x:0" in body]
    refused = len(answers) - len(wrong)
    print(f"METRIC path_traversal_cases={len(answers)} count")
    print(f"METRIC path_traversal_refused_share={100 * refused / len(answers):.1f} %")
    assert 400 <= len(answers) <= 5000 and {m for m, *_ in answers} >= {"GET", "POST", "DELETE"}
    assert not wrong, wrong[:20]
    assert not leaks, leaks
    assert fs_snapshot(*roots) == before
    assert live.call("GET", f"/api/v1/jobs/{job_id}").status_code == 200
    assert (canary / "secret.txt").read_text() == "CANARY-SECRET\n"


# -- planted symlinks -------------------------------------------------------------------------
PLANTER = r"""
import os, sys
mode, target, outside = sys.argv[1], sys.argv[2], sys.argv[3]
here = os.environ["ORCHESTRATOR_WORKER_DIR"]
log = os.path.join(here, "..", "..", "logs", "depth_%s_%s.log" % (os.environ["ORCHESTRATOR_DEPTH"], os.environ["ORCHESTRATOR_WORKER_ID"]))
os.symlink(target, "leak.txt")
os.symlink(outside, "leakdir")
os.unlink(log)
os.symlink(target, log)
if mode == "swapdir":
    os.rename(here, here + "_moved")
    os.symlink(outside, here)
print("planted " + mode, flush=True)
sys.exit(3 if mode == "fail" else 0)
"""


def _get_everything(live, job_id: str) -> list:
    """Every GET the API offers about a job: status, wait, reports, events, logs in each form, lists."""
    doc = live.call("GET", "/openapi.json").json()
    paths = ["/api/v1/jobs", f"/api/v1/jobs/{job_id}/report?name=final", f"/api/v1/jobs/{job_id}/report?name=level_0"]
    for template, ops in doc["paths"].items():
        if "get" in ops and "{job_id}" in template:
            for worker in ("worker_1", "worker_2", "worker_3", "depth_0_worker_1"):
                for query in ("", "?tail=5", "?offset=0", "?follow=1", "?timeout=1"):
                    paths.append(template.replace("{job_id}", job_id).replace("{worker}", worker) + query)
    return [(path, raw_request(live.url, "GET", path)) for path in dict.fromkeys(paths)]


def test_links_a_worker_plants_are_never_followed(make_live, tmp_path):
    # Given a secret outside the workspace and command workers that link to it from their folder,
    # replace their own log with a link to it, and (worker_3) swap their whole folder for a link
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("TOP-SECRET-a1b2c3d4e5\n")
    (outside / "only_outside_name.txt").write_text("x\n")
    command = [sys.executable, "-c", PLANTER, "{task}", str(secret), str(outside)]
    # Unsandboxed: a sandbox refuses the planting (its log and its folder's place are read-only); here the server must cope
    workers = {"max_retries": 0, "sandbox": "off"}
    live = make_live(api={"long_poll_max": 1}, orchestrator={"worker": "command", "command": command}, workers=workers)
    before = fs_snapshot(outside)
    job_id = live.submit(request="x", tasks=["plant", "fail", "swapdir"]).json()["job_id"]
    done = live.wait(job_id)
    ws = live.engine.workspace
    # When every read the API offers is made; then again once a straggler has planted links and a
    # FIFO where the server's own logs and reports are
    first = _get_everything(live, job_id)
    ws.worker_log(job_id, 0, "worker_1").unlink()
    ws.worker_log(job_id, 0, "worker_1").symlink_to(secret)
    ws.worker_log(job_id, 0, "worker_2").unlink()
    os.mkfifo(ws.worker_log(job_id, 0, "worker_2"))
    for report in (ws.final_report(job_id), ws.level_report(job_id, 0)):
        report.unlink()
        report.symlink_to(secret)
    second = _get_everything(live, job_id)
    # Then none fails with a server error, none carries the secret or a name only the outside folder has,
    # and the planted files are refused with a 403
    answers = first + second
    errors = [(path, status) for path, (status, _, _) in answers if status >= 500]
    leaked = [path for path, (_, _, body) in answers if b"TOP-SECRET" in body or b"only_outside_name" in body]
    refused = {path: status for path, (status, _, _) in second if status == 403}
    print(f"METRIC symlink_reads={len(answers)} count")
    print(f"METRIC symlink_leaks={len(leaked)} count")
    assert len(answers) >= 60 and not errors, errors
    assert not leaked, leaked
    assert {
        f"/api/v1/jobs/{job_id}/workers/worker_1/log",
        f"/api/v1/jobs/{job_id}/workers/worker_2/log?follow=1",
        f"/api/v1/jobs/{job_id}/report?name=final",
        f"/api/v1/jobs/{job_id}/report?name=level_0",
    } <= set(refused), refused
    files = {task["worker_id"]: task["files_created"] for task in done["results"]["tasks"]}
    assert "leak.txt" in files["worker_1"] and files["worker_3"] == [], files
    # And deleting the job unlinks the links, never their targets: the outside folder is untouched
    assert live.call("DELETE", f"/api/v1/jobs/{job_id}").status_code == 204
    assert not ws.job_dir(job_id).exists()
    assert secret.read_text() == "TOP-SECRET-a1b2c3d4e5\n"
    assert fs_snapshot(outside) == before


def test_look_alike_digits_in_parameters_are_refused_not_crashed(make_live):
    # Given a finished job; str.isdigit() is true for "²" and "０", and int("²") raises
    live = make_live(api={"long_poll_max": 1}, simulated={"duration": 0.01})
    job_id = live.submit(request="x", tasks=["a"]).json()["job_id"]
    live.wait(job_id)
    base = f"/api/v1/jobs/{job_id}"
    targets = [f"{base}/report?name=level_{d}" for d in ("%C2%B2", "%EF%BC%90", "%D9%A0")]
    targets += [f"{base}/workers/worker_1/log?{p}={d}" for p in ("tail", "offset") for d in ("%C2%B2", "%EF%BC%91")]
    targets += [f"/api/v1/jobs?{p}=%C2%B2" for p in ("limit", "offset")] + [f"{base}/events?last_event_id=%C2%B2"]
    # When each goes to the server, and a Last-Event-ID header carries the raw UTF-8 bytes
    statuses = [raw_request(live.url, "GET", t)[0] for t in targets]
    statuses.append(raw_request(live.url, "GET", f"{base}/events", headers={"Last-Event-ID": "²".encode()})[0])
    # Then every one is a 400 naming the parameter, never a 500 from int()
    print(f"METRIC lookalike_digit_refused={statuses.count(400)}/{len(statuses)} count")
    assert statuses == [400] * len(statuses), list(zip(targets, statuses))
