"""Outgoing webhooks and callbacks (orchestrator/webhooks/): real receivers on 127.0.0.1 (a
threaded http.server per test), real engines, a real waitress server, and a killed process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.config import JobConfig, job_config, load_settings
from orchestrator.errors import ConfigError, Forbidden
from orchestrator.events import Event
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.outcomes import FileConflict, GateResult, MergeOutcome, MergeRecord
from orchestrator.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from orchestrator.webhooks.event_types import Seen, job_types, worker_types

from .conftest import ROOT, make_settings, run_job, wait_until
from .helpers import webhooks as webhooks_helpers
from .helpers.dashboard import browser  # noqa: F401 (the fixture: headless Chromium)
from .helpers.readme import snippet
from .helpers.webhooks import SECRET, Receiver, endpoint, hooks

# The fixture this file shares with other test files (tests/helpers/webhooks.py).
receivers = webhooks_helpers.receivers


def readme_check():
    """The documented receiver check (verify_delivery, docs/api.md), run as the user would copy it."""
    code = snippet("webhook-check")
    assert "def verify_delivery" in code
    space: dict = {}
    exec(code, space)  # noqa: S102 (the documented snippet itself)
    return space


# -- signatures, order, the payload -------------------------------------------------------------
@pytest.mark.slow
def test_deliveries_are_signed_in_order_and_pass_the_documented_check(make_engine, receivers):
    receiver = receivers()
    engine = make_engine(**hooks(endpoint(receiver)))
    job = run_job(engine, "build it", tasks=["a", "b"])
    wait_until(lambda: len(receiver.requests) >= 2, what="two deliveries")
    time.sleep(0.2)  # nothing more comes
    assert receiver.types() == ["job.started", "job.completed"]
    check = readme_check()
    seen: set = set()
    for got in receiver.requests:
        headers = {k.lower(): v for k, v in got["headers"].items()}
        assert check["verify_delivery"](SECRET, headers, got["body"], seen) is True
        payload = json.loads(got["body"])
        assert payload["delivery_id"] == headers["x-orchestrator-delivery"]
        assert payload["job"]["id"] == job.id and payload["job"]["request"] == "build it"
        assert payload["job"]["tasks"] == 2
        assert payload["links"]["status"].endswith(f"/api/v1/jobs/{job.id}/status")
        assert SECRET not in got["body"].decode()
    assert json.loads(receiver.requests[-1]["body"])["job"]["status"] == "completed"


@pytest.mark.slow
def test_forged_and_replayed_deliveries_are_rejected_by_the_documented_check(make_engine, receivers):
    receiver = receivers()
    engine = make_engine(**hooks(endpoint(receiver, ["job.completed"])))
    run_job(engine)
    wait_until(lambda: receiver.requests, what="a delivery")
    got = receiver.requests[0]
    headers = {k.lower(): v for k, v in got["headers"].items()}
    verify = readme_check()["verify_delivery"]
    assert verify(SECRET, headers, got["body"], set()) is True
    forged = got["body"].replace(b'"completed"', b'"failed"')
    assert forged != got["body"] and verify(SECRET, headers, forged, set()) is False  # body changed
    assert verify("another-secret-0123456789", headers, got["body"], set()) is False  # wrong key
    seen: set = set()
    assert verify(SECRET, headers, got["body"], seen) is True
    assert verify(SECRET, headers, got["body"], seen) is False  # the same delivery again: a replay
    old = str(int(time.time()) - 600)  # an old request re-signed by someone holding the secret is still late
    stale = {**headers, "x-orchestrator-timestamp": old, "x-orchestrator-signature": sign(SECRET, old, got["body"])}
    assert verify(SECRET, stale, got["body"], set()) is False
    moved = {**headers, "x-orchestrator-timestamp": str(int(headers["x-orchestrator-timestamp"]) + 1)}
    assert verify(SECRET, moved, got["body"], set()) is False  # a timestamp not the one signed


# -- retries -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_receiver_answering_500_twice_gets_the_event_three_times_with_one_delivery_id(make_engine, receivers):
    receiver = receivers(answers=[500, 500])
    engine = make_engine(**hooks(endpoint(receiver, ["job.completed"])))
    run_job(engine)
    wait_until(lambda: len(receiver.requests) >= 3, what="three tries")
    ids = {r["headers"]["X-Orchestrator-Delivery"] for r in receiver.requests}
    bodies = {r["body"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1 and len(bodies) == 1
    wait_until(lambda: engine.webhooks.deliveries()[0][0]["status"] == "delivered", what="delivered")
    (row,), total = engine.webhooks.deliveries()
    assert total == 1 and row["attempts"] == 3 and row["last_status"] == 200 and row["delivery_id"] in ids
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:])]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # backoff 0.05, doubled


@pytest.mark.slow
def test_a_4xx_is_not_retried(make_engine, receivers):
    receiver = receivers(answers=[404, 404, 404])
    engine = make_engine(**hooks(endpoint(receiver, ["job.completed"])))
    run_job(engine)
    wait_until(lambda: engine.webhooks.deliveries()[0] and engine.webhooks.deliveries()[0][0]["status"] == "failed")
    time.sleep(0.4)  # twice backoff_max: a retry would have come
    assert len(receiver.requests) == 1
    (row,), _ = engine.webhooks.deliveries()
    assert row["attempts"] == 1 and row["last_status"] == 404 and "HTTP 404" in row["last_error"]


def test_a_network_error_is_retried_up_to_max_attempts(make_engine):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = {"url": f"http://127.0.0.1:{port}/hook", "events": ["job.completed"], "secret": SECRET}
    engine = make_engine(**hooks(down, max_attempts=3))
    run_job(engine)
    wait_until(lambda: engine.webhooks.deliveries()[0] and engine.webhooks.deliveries()[0][0]["status"] == "failed")
    (row,), _ = engine.webhooks.deliveries()
    assert row["attempts"] == 3 and row["last_status"] is None
    assert "ConnectionError" in row["last_error"] and "max_attempts" in row["last_error"]


# -- the outbox survives a kill -----------------------------------------------------------------
KILLED_SERVER = (
    """
import json, os, signal, sys, time
from pathlib import Path
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine
base, url = Path(sys.argv[1]), sys.argv[2]
settings = load_settings(base_dir=base, environ={}, overrides={
    "orchestrator": {"worker": "simulated"}, "simulated": {"duration": 0.05},
    "webhooks": {"endpoints": [{"url": url, "secret": %r}], "backoff": 0.05, "backoff_max": 0.1, "max_attempts": 100},
})
engine = Engine(settings)
job = engine.submission.submit("killed with its webhooks undelivered", None, ["a", "b"])
assert engine.queries.wait(job.id, 60).status.value == "completed"
time.sleep(0.3)  # a few tries at the receiver, which is down
rows, total = engine.webhooks.deliveries()
assert total == 2 and all(r["status"] == "pending" for r in rows) and max(r["attempts"] for r in rows) >= 2, rows
print(json.dumps(sorted(r["delivery_id"] for r in rows)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    % SECRET
)


@pytest.mark.slow
def test_a_killed_server_delivers_its_outbox_after_a_restart(tmp_path):
    """The engine runs in a subprocess that SIGKILLs itself with both deliveries pending
    (its receiver is down); an engine restarted on the same workspace delivers them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_SERVER, str(tmp_path), url], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pending = json.loads(done.stdout.strip().splitlines()[-1])
    on_disk = sorted(p.stem for p in (tmp_path / "workspace" / ".webhooks" / "deliveries").glob("dlv_*.json"))
    assert on_disk == pending
    for path in (tmp_path / "workspace" / ".webhooks" / "deliveries").glob("dlv_*.json"):
        assert SECRET not in path.read_text()  # the outbox names the endpoint by URL, never its secret
    receiver = Receiver(port=port)
    try:
        settings = load_settings(base_dir=tmp_path, environ={}, overrides=hooks({"url": url, "secret": SECRET}, max_attempts=100))
        from orchestrator.engine.core import Engine

        engine = Engine(settings)
        try:
            wait_until(lambda: len(receiver.requests) >= 2, what="the outbox delivered after the restart")
            assert sorted(r["headers"]["X-Orchestrator-Delivery"] for r in receiver.requests) == pending
            assert receiver.types() == ["job.started", "job.completed"]  # in the order they happened
            wait_until(lambda: all(r["status"] == "delivered" for r in engine.webhooks.deliveries()[0]))
        finally:
            engine.shutdown(timeout=10)
    finally:
        receiver.close()


def test_the_outbox_keeps_the_newest_finished_deliveries(tmp_path):
    from orchestrator.webhooks.outbox import Delivery, Outbox, new_id

    outbox = Outbox(tmp_path, keep=10)
    made = [
        Delivery(new_id("dlv", time.time()), "e", "job.completed", "http://h/x", "endpoint", "j", "{}", 0.0) for _ in range(15)
    ]
    for delivery in made:
        outbox.add(delivery)
    waiting = made[0]  # the oldest stays pending: never dropped
    for delivery in made[1:]:
        delivery.state = "delivered"
        outbox.save(delivery)
    kept = sorted(p.stem for p in outbox.folder.glob("*.json"))
    assert kept == sorted([waiting.delivery_id] + [d.delivery_id for d in made[-10:]])
    rows, total = outbox.page(None, 100, 0)
    assert total == 11 and [r["delivery_id"] for r in rows] == sorted(kept, reverse=True)
    again = Outbox(tmp_path, keep=10)  # a restart: the pending one is sent again, the rest listed
    assert [d.delivery_id for d in again.load()] == [waiting.delivery_id]
    assert again.page("delivered", 100, 0)[1] == 10


# -- a receiver that hangs -----------------------------------------------------------------------
@pytest.mark.slow
def test_a_hanging_receiver_delays_neither_jobs_nor_other_receivers(make_engine, receivers):
    hanging, fast = receivers(hang=True), receivers()
    engine = make_engine(**hooks(endpoint(hanging, timeout=20), endpoint(fast)))
    started = time.monotonic()
    for n in range(3):
        run_job(engine, f"job {n}", tasks=["a", "b"])
    took = time.monotonic() - started
    wait_until(lambda: len(fast.requests) >= 6, what="the fast receiver's six deliveries")
    assert len(hanging.requests) == 1  # its lane is stuck on the first one, for up to its timeout
    # Each of its six deliveries would hold a job up to 20 s (its timeout): well under that for all three
    assert took < 15, f"three jobs took {took:.1f}s with a hanging receiver"

    def pending():
        rows, _ = engine.webhooks.deliveries(status="pending")
        return rows if {r["url"] for r in rows} == {hanging.url} else None

    # The fast receiver's last answer may be a moment from being recorded: only the hanging lane stays
    rows = wait_until(pending, what="only the hanging receiver's deliveries pending")
    assert len(rows) == 6
    hanging.release.set()  # the receiver answers: the rest follow, in order
    wait_until(lambda: len(hanging.requests) >= 6, what="the hanging receiver's backlog")
    assert hanging.types() == fast.types()


# -- which types, from which engine events ---------------------------------------------------------
def _event(type_, status, message=""):
    return Event(seq=1, time=time.time(), type=type_, root_id="r", job_id="r", status=status, message=message)


def test_types_derived_from_the_engine_events():
    seen = Seen()
    job = JobRecord(id="r", root_id="r", request="x", status=JobStatus.RUNNING, started_at=100.0)
    resumed = JobRecord(id="q", root_id="q", request="x", status=JobStatus.RUNNING, started_at=99.0)
    assert job_types(seen, resumed, _event("job", "running"), since=100.0) == []  # started before a restart
    assert job_types(seen, job, _event("job", "running", "planned"), since=100.0) == ["job.started"]
    assert job_types(seen, job, _event("job", "running", "task a: selected")) == []
    assert job_types(seen, job, _event("job", "waiting")) == ["job.waiting"]
    assert job_types(seen, job, _event("job", "waiting")) == []  # still waiting: told once
    job.merge = MergeRecord.of(MergeOutcome("auto", "b", "refs/heads/x", "abc", ("w1",), (), (), (), ""), 1.0)
    assert job_types(seen, job, _event("job", "completed")) == ["merge.completed", "job.completed"]
    assert job_types(seen, job, _event("job", "completed", "merged again")) == []  # the same merge
    conflict = FileConflict("a", ("w1",), 1, "content")
    job.merge = MergeRecord.of(MergeOutcome("auto", "b", "refs/heads/x", "def", ("w1",), (), (conflict,), (), ""), 2.0)
    assert job_types(seen, job, _event("job", "completed", "merged again")) == ["merge.conflicted"]
    worker = WorkerRecord(
        job_id="r", root_id="r", name="w1", index=1, depth=0, task="t", kind="command", status=WorkerStatus.FAILED
    )
    worker.gates = [GateResult.from_dict({"name": "tests", "required": True, "passed": False, "status": "failed"})]
    assert worker_types(seen, job, worker, _event("worker", "failed")) == ["worker.failed", "gate.failed"]
    assert worker_types(seen, job, worker, _event("worker", "failed")) == []
    other = WorkerRecord(
        job_id="r", root_id="r", name="w2", index=1, depth=0, task="t", kind="command", status=WorkerStatus.TIMEOUT
    )
    other.gates = [GateResult.from_dict({"name": "lint", "required": False, "passed": False, "status": "failed"})]
    assert worker_types(seen, job, other, _event("worker", "timeout")) == ["worker.failed"]
    third = WorkerRecord(
        job_id="r", root_id="r", name="w3", index=1, depth=0, task="t", kind="command", status=WorkerStatus.SUCCESS
    )
    assert worker_types(seen, job, third, _event("worker", "success", "selected for task t (best)")) == ["candidate.selected"]
    assert worker_types(seen, job, third, _event("worker", "success", "not selected for task t (best)")) == []
    # Exited 0, but a child job it started did not complete: told once, as its own type.
    short = WorkerRecord(
        job_id="r", root_id="r", name="w4", index=1, depth=0, task="t", kind="command", status=WorkerStatus.CHILD_INCOMPLETE
    )
    assert worker_types(seen, job, short, _event("worker", "child_incomplete")) == ["worker.child_incomplete"]
    assert worker_types(seen, job, short, _event("worker", "child_incomplete")) == []


@pytest.mark.slow
def test_a_failed_command_worker_sends_worker_failed(make_engine, receivers):
    from .conftest import fake_command

    receiver = receivers()
    engine = make_engine(
        orchestrator={"worker": "command", "command": fake_command()},
        workers={"max_retries": 0},
        **hooks(endpoint(receiver, ["worker.failed", "job.failed", "job.partial"])),
    )
    run_job(engine, tasks=["fail 3", "ok"])
    wait_until(lambda: len(receiver.requests) >= 2, what="worker.failed and the job's end")
    assert receiver.types() == ["worker.failed", "job.partial"]
    failed = json.loads(receiver.requests[0]["body"])
    assert failed["worker"]["status"] == "failed" and failed["job"]["status"] == "running"


# -- settings and callbacks ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, says",
    [
        ({"url": "ftp://host/x", "secret": SECRET}, "only http:// and https://"),
        ({"url": "http://user:pw@host/x", "secret": SECRET}, "no user:password@"),
        ({"url": "http://host/x", "secret": SECRET, "events": ["job.done"]}, "unknown event 'job.done'"),
        ({"url": "http://host/x", "secret": "short-secret"}, "at least 16 characters"),
        ({"url": "http://host/x", "secret": SECRET, "timeout": 0}, "timeout"),
        ({"url": "http://host/x", "secret": SECRET, "retries": 3}, "unknown key(s) retries"),
    ],
)
def test_bad_endpoints_are_refused_naming_the_key_never_the_secret(tmp_path, bad, says):
    with pytest.raises(ConfigError) as caught:
        load_settings(base_dir=tmp_path, environ={}, overrides={"webhooks": {"endpoints": [bad]}})
    assert says in caught.value.message and "webhooks.endpoints[0]" in caught.value.message
    assert bad["secret"] not in caught.value.message and bad["secret"] not in json.dumps(caught.value.to_dict())


def test_secrets_never_shown_by_config_or_repr(tmp_path):
    settings = make_settings(
        tmp_path, webhooks={"endpoints": [{"url": "http://h/x", "secret": SECRET}], "callback_secret": SECRET}
    )
    assert SECRET not in repr(settings) and SECRET not in json.dumps(settings.public_dict())
    assert settings.public_dict()["webhooks"]["endpoints"][0]["url"] == "http://h/x"
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            "ORCHESTRATOR__WEBHOOKS__ENDPOINTS": json.dumps([{"url": "http://h/x", "secret": SECRET}]),
            "ORCHESTRATOR__WEBHOOKS__CALLBACK_SECRET": SECRET,
        },
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "http://h/x" in out.stdout and SECRET not in out.stdout + out.stderr


def test_callback_url_is_checked_and_a_root_jobs_only(tmp_path):
    settings = make_settings(tmp_path, webhooks={"allowed_callback_hosts": ["hooks.example.com"], "callback_secret": SECRET})
    cfg, _ = job_config(settings, {"callback_url": "https://hooks.example.com/wait/1"})
    assert cfg.callback_url == "https://hooks.example.com/wait/1"
    with pytest.raises(ConfigError, match="webhooks.allowed_callback_hosts"):
        job_config(settings, {"callback_url": "https://evil.example.com/x"})
    with pytest.raises(ConfigError, match="only http:// and https://"):
        job_config(settings, {"callback_url": "file:///etc/passwd"})
    with pytest.raises(Forbidden, match="root job only"):
        job_config(settings, {"callback_url": "https://hooks.example.com/x"}, parent=cfg)
    child, _ = job_config(settings, {}, parent=cfg)
    assert child.callback_url == ""
    unsigned = make_settings(tmp_path, webhooks={"allowed_callback_hosts": ["hooks.example.com"]})
    with pytest.raises(ConfigError, match="webhooks.callback_secret"):
        job_config(unsigned, {"callback_url": "https://hooks.example.com/x"})
    assert JobConfig.from_dict({"max_workers": 2}).callback_url == ""  # a record from before callbacks


def test_a_callback_host_allows_its_schemes_port_unless_its_entry_names_another(tmp_path):
    """A listed host allowed a callback to any of its ports: its SSH port, this API's own."""
    allowed = ["hooks.example.com", "n8n.internal:5678", "any.example.com:*", "[::1]:8080"]
    settings = make_settings(tmp_path, webhooks={"allowed_callback_hosts": allowed, "callback_secret": SECRET})
    for url in (
        "https://hooks.example.com/x",
        "https://hooks.example.com:443/x",
        "http://hooks.example.com/x",
        "http://n8n.internal:5678/webhook",
        "http://any.example.com:22/x",
        "http://[::1]:8080/x",
    ):
        assert job_config(settings, {"callback_url": url})[0].callback_url == url
    for url, fix in (
        ("https://hooks.example.com:22/x", "hooks.example.com:22"),
        ("http://hooks.example.com:8000/x", "hooks.example.com:8000"),
        ("https://hooks.example.com:80/x", "hooks.example.com:80"),
        ("http://n8n.internal/webhook", "n8n.internal:80"),
        ("http://[::1]:8000/x", "[::1]:8000"),
    ):
        with pytest.raises(ConfigError) as info:
            job_config(settings, {"callback_url": url})
        assert f"Add {fix} there" in info.value.message and "webhooks.allowed_callback_hosts" in info.value.message, url


@pytest.mark.parametrize(
    "entry", ["hooks.example.com:0", "hooks.example.com:70000", "hooks.example.com:ssh", "https://hooks.example.com", ""]
)
def test_a_malformed_allowed_callback_host_is_a_config_error_naming_it(tmp_path, entry):
    with pytest.raises(ConfigError, match=r"webhooks\.allowed_callback_hosts\[1\].*HOST:PORT"):
        make_settings(tmp_path, webhooks={"allowed_callback_hosts": ["fine.example.com", entry]})


# -- through the API (a real waitress server) ------------------------------------------------------
@pytest.mark.slow
def test_callbacks_and_the_deliveries_route_on_a_live_server(make_live, receivers):
    endpoint_receiver, callback_receiver = receivers(), receivers()
    live = make_live(
        **hooks(
            endpoint(endpoint_receiver, ["job.completed"]),
            allowed_callback_hosts=[f"127.0.0.1:{callback_receiver.server.server_port}"],
            callback_secret="callback-secret-0123456789",
        )
    )
    refused = live.call("POST", "/api/v1/orchestrate", json={"request": "x", "config": {"callback_url": "http://example.com/x"}})
    assert refused.status_code == 422 and "webhooks.allowed_callback_hosts" in refused.json()["message"]
    # the allowed host on another port (here this API's own) is refused too
    own = live.call("POST", "/api/v1/orchestrate", json={"request": "x", "config": {"callback_url": f"{live.url}/api/v1/jobs"}})
    assert (
        own.status_code == 422
        and f"port {live.url.rsplit(':', 1)[1]} of host '127.0.0.1' is not allowed" in own.json()["message"]
    )
    answer = live.submit(request="with a callback", config={"callback_url": callback_receiver.url}).json()
    live.wait(answer["job_id"])
    wait_until(lambda: callback_receiver.requests and endpoint_receiver.requests, what="the callback and the endpoint")
    got = callback_receiver.requests[0]
    stamp, body = got["headers"][TIMESTAMP_HEADER], got["body"]
    assert got["headers"][SIGNATURE_HEADER] == sign("callback-secret-0123456789", stamp, body)
    payload = json.loads(body)
    assert payload["type"] == "job.completed" and payload["job"]["id"] == answer["job_id"]
    assert payload["links"]["status"] == f"{live.url}/api/v1/jobs/{answer['job_id']}/status"
    assert live.call("GET", payload["links"]["status"].removeprefix(live.url)).status_code == 200
    wait_until(lambda: live.call("GET", "/api/v1/webhooks/deliveries?status=delivered").json()["total"] == 2)
    listing = live.call("GET", "/api/v1/webhooks/deliveries?limit=1")
    assert listing.status_code == 200
    data = listing.json()
    assert data["total"] == 2 and len(data["deliveries"]) == 1 and data["limit"] == 1
    row = data["deliveries"][0]
    assert row["status"] == "delivered" and row["attempts"] == 1 and row["last_status"] == 200
    assert {r["target"] for r in live.call("GET", "/api/v1/webhooks/deliveries").json()["deliveries"]} == {
        "endpoint",
        "callback",
    }
    text = live.call("GET", "/api/v1/webhooks/deliveries").text
    assert SECRET not in text and "callback-secret" not in text and "body" not in json.loads(text)["deliveries"][0]
    assert live.call("GET", "/api/v1/webhooks/deliveries?status=nope").status_code == 400
    assert live.call("GET", "/api/v1/webhooks/deliveries?status=").status_code == 400  # as the OpenAPI enum says
    assert live.call("GET", "/api/v1/webhooks/deliveries", key="wrong").status_code == 401
    assert "/api/v1/webhooks/deliveries" in live.call("GET", "/openapi.json").json()["paths"]


@pytest.mark.slow
def test_a_request_cannot_add_an_endpoint(make_live):
    live = make_live()
    answer = live.call("POST", "/api/v1/orchestrate", json={"request": "x", "config": {"webhooks": [{"url": "http://a/b"}]}})
    assert answer.status_code == 422 and "unknown config key(s): webhooks" in answer.json()["message"]


def test_no_webhooks_no_outbox(make_engine):
    engine = make_engine()
    run_job(engine)
    assert not (Path(engine.workspace.root) / ".webhooks").exists()
    assert engine.webhooks.deliveries() == ([], 0)


@pytest.mark.slow
def test_the_dashboard_shows_the_deliveries(make_live, receivers, browser):  # noqa: F811
    """The jobs page's webhook panel, in headless Chromium (skipped without it, as test_dashboard)."""
    from .helpers.dashboard import sign_in, wait_for

    receiver = receivers(answers=[404])
    live = make_live(**hooks(endpoint(receiver, ["job.completed"])))
    live.wait(live.submit(request="shown on the dashboard").json()["job_id"])
    wait_until(lambda: live.engine.webhooks.deliveries()[0] and live.engine.webhooks.deliveries()[0][0]["status"] == "failed")
    sign_in(browser, live.url + "/")
    wait_for(browser, lambda: browser.find_element("id", "hooks").is_displayed(), "the webhook panel")
    wait_for(browser, lambda: browser.find_elements("css selector", "#hooks-body tr"), "a delivery row")
    text = browser.find_element("css selector", "#hooks-body tr").text
    assert "job.completed" in text and receiver.url in text and "failed" in text and "HTTP 404" in text


@pytest.mark.slow
def test_a_job_waiting_for_approval_sends_job_waiting_and_its_end_once_approved(make_engine, receivers):
    """Items 1 and 3 together: a root job with approval: before_merge stops in ``waiting`` and the
    receiver is told (job.waiting); once approved it ends and the receiver hears that too."""
    from orchestrator.models import JobStatus

    from .conftest import fake_command

    receiver = receivers()
    engine = make_engine(
        orchestrator={"worker": "command", "command": fake_command()},
        api={"api_key": "test-admin-key-0123456789abcdef"},
        **hooks(endpoint(receiver, ["job.waiting", "job.completed"])),
    )
    job = engine.submission.submit("x", {"approval": "before_merge"}, ["ok"])
    wait_until(lambda: engine.queries.get_job(job.id).status is JobStatus.WAITING, what="the job waiting for approval")
    wait_until(lambda: len(receiver.requests) >= 1, what="job.waiting delivered")
    assert receiver.types() == ["job.waiting"]
    waiting = json.loads(receiver.requests[0]["body"])
    assert waiting["job"]["status"] == "waiting"
    # The payload carries the job's signed approve and reject links (approval.py), never the key.
    assert {"approve", "reject"} <= set(waiting["links"])
    assert engine.settings.api.api_key.encode() not in receiver.requests[0]["body"]
    approve = waiting["links"]["approve"]
    assert f"/approval/{job.id}/approve?" in approve and "token=" in approve
    # Signed as it is sent, never in the outbox's files (issue 36 item 7: a worker that read one
    # approved another tree's job): the file holds the link unsigned, the receiver a valid one.
    from urllib.parse import parse_qs, urlsplit

    from orchestrator.webhooks.approval_links import check_link, link_secret
    from orchestrator.workspace.layout import webhook_deliveries

    query = parse_qs(urlsplit(approve).query)
    check_link(link_secret(engine.settings.api.api_key), job.id, "approve", query["expires"][0], query["token"][0], time.time())
    files = [path.read_text() for path in webhook_deliveries(engine.workspace.root).glob("*.json")]
    assert files and not any(query["token"][0] in text for text in files)
    assert any("token=unsigned-approve" in text for text in files)
    engine.approvals.decide(job.id, "approve", "looks right")
    assert engine.queries.wait(job.id, 30).status is JobStatus.COMPLETED
    wait_until(lambda: len(receiver.requests) >= 2, what="job.completed delivered")
    assert receiver.types() == ["job.waiting", "job.completed"]
