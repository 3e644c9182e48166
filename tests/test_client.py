"""OrchestratorClient against a mocked server (``responses``): bodies, paths, errors, retries, SSE."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import requests
import responses
from responses import matchers

from orchestrator.api.client import TERMINAL, OrchestratorClient, _parse_sse
from orchestrator.errors import (
    AuthenticationError,
    ConfigError,
    Conflict,
    JobNotFound,
    OrchestratorError,
    RateLimited,
    RecursionLimit,
    ServerUnreachable,
    ValidationError,
)

URL = "http://orch.test:8000"
KEY = "secret-key-123"
API = f"{URL}/api/v1"
# The original spec's Python example (shortened), the README this orchestrator was first described by
SPEC_REQUEST = "Create a ML pipeline with preprocessing, training, and evaluation"


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_API_URL", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_API_KEY", raising=False)
    with OrchestratorClient(api_url=URL + "/", api_key=KEY, retries=2, backoff=0.001) as c:
        yield c


def error(status, code, message, **extra):
    return {"status": status, "json": {"error": code, "message": message, **extra}}


# --- construction ---------------------------------------------------------------


def test_env_var_construction(monkeypatch, rsps):
    monkeypatch.setenv("ORCHESTRATOR_API_URL", URL + "/")
    monkeypatch.setenv("ORCHESTRATOR_API_KEY", "env-key")
    rsps.get(f"{URL}/health", json={"status": "ok"}, match=[matchers.header_matcher({"X-API-Key": "env-key"})])
    with OrchestratorClient(backoff=0.001) as c:
        assert c.api_url == URL
        assert c.health() == {"status": "ok"}


def test_missing_url_raises_validation_error(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_API_URL", raising=False)
    monkeypatch.setenv("ORCHESTRATOR_API_KEY", "k")
    with pytest.raises(ValidationError, match="ORCHESTRATOR_API_URL") as info:
        OrchestratorClient()
    assert "ORCHESTRATOR_API_KEY" not in str(info.value)


def test_missing_key_raises_validation_error(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="ORCHESTRATOR_API_KEY"):
        OrchestratorClient(api_url=URL)


def test_url_without_scheme_is_rejected():
    with pytest.raises(ValidationError, match="http://"):
        OrchestratorClient(api_url="localhost:8000", api_key=KEY)


def test_repr_hides_key(client):
    assert KEY not in repr(client)


@pytest.mark.slow
def test_import_is_light():
    code = (
        "import sys, orchestrator.api.client; print(sorted({'flask', 'jinja2', 'yaml', 'psutil', 'werkzeug'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- orchestrate ----------------------------------------------------------------


def test_orchestrate_the_original_spec_example(client, rsps):
    reply = {"job_id": "job-1", "status": "pending", "root_job_id": "job-1", "depth": 0, "urls": {}}
    rsps.post(
        f"{API}/orchestrate",
        status=202,
        json=reply,
        match=[
            matchers.json_params_matcher(
                {"request": SPEC_REQUEST, "config": {"max_workers": 4, "enable_recursion": True}}, strict_match=True
            ),
            matchers.header_matcher({"X-API-Key": KEY}),
        ],
    )
    result = client.orchestrate(request=SPEC_REQUEST, max_workers=4, enable_recursion=True)
    assert result == reply
    assert (result["job_id"], result["status"]) == ("job-1", "pending")


def test_orchestrate_omits_none_and_merges_config(client, rsps):
    rsps.post(f"{API}/orchestrate", status=202, json={"job_id": "j", "status": "pending"})
    client.orchestrate(
        "x",
        max_recursion_depth=None,
        default_timeout=60,
        tasks=["a", "b"],
        config={"max_workers": 1, "model": "m"},
        max_workers=3,
        worker="simulated",
    )
    body = json.loads(rsps.calls[0].request.body)
    assert body == {
        "request": "x",
        "config": {"max_workers": 3, "model": "m", "default_timeout": 60, "worker": "simulated"},
        "tasks": ["a", "b"],
    }


def test_orchestrate_without_options_sends_empty_config(client, rsps):
    rsps.post(f"{API}/orchestrate", status=202, json={"job_id": "j", "status": "pending"})
    client.orchestrate("x")
    assert json.loads(rsps.calls[0].request.body) == {"request": "x", "config": {}}


# --- simple routes --------------------------------------------------------------


def test_status_path(client, rsps):
    rsps.get(f"{API}/jobs/job-1/status", json={"job_id": "job-1", "status": "running"})
    assert client.status("job-1")["status"] == "running"


def test_job_id_is_escaped_in_path(client, rsps):
    rsps.get(f"{API}/jobs/..%2Fetc/status", json={"status": "running"})
    client.status("../etc")
    assert rsps.calls[0].request.path_url == "/api/v1/jobs/..%2Fetc/status"


def test_list_jobs_params(client, rsps):
    rsps.get(
        f"{API}/jobs",
        json={"jobs": [], "total": 0, "limit": 10, "offset": 5},
        match=[matchers.query_param_matcher({"status": "running", "limit": "10", "offset": "5"})],
    )
    assert client.list_jobs(status="running", limit=10, offset=5)["total"] == 0


def test_list_jobs_defaults_omit_status(client, rsps):
    rsps.get(f"{API}/jobs", json={"jobs": []}, match=[matchers.query_param_matcher({"limit": "50", "offset": "0"})])
    client.list_jobs()


def test_cancel_posts(client, rsps):
    rsps.post(f"{API}/jobs/job-1/cancel", json={"job_id": "job-1", "status": "cancelled"})
    assert client.cancel("job-1")["status"] == "cancelled"


def test_delete_returns_none(client, rsps):
    rsps.delete(f"{API}/jobs/job-1", status=204)
    assert client.delete("job-1") is None
    assert rsps.calls[0].request.method == "DELETE"


def test_logs_path_tail_and_utf8(client, rsps):
    rsps.get(
        f"{API}/jobs/job-1/workers/worker_1/log",
        body="line é\nlast\n".encode(),
        content_type="text/plain",
        match=[matchers.query_param_matcher({"tail": "20"})],
    )
    assert client.logs("job-1", "worker_1", tail=20) == "line é\nlast\n"


def test_logs_without_tail(client, rsps):
    rsps.get(f"{API}/jobs/job-1/workers/w/log", body="all", match=[matchers.query_param_matcher({})])
    assert client.logs("job-1", "w") == "all"


def test_report_name_param(client, rsps):
    rsps.get(
        f"{API}/jobs/j/report",
        body="# Final",
        content_type="text/markdown",
        match=[matchers.query_param_matcher({"name": "final"})],
    )
    rsps.get(
        f"{API}/jobs/j/report",
        body="# Level 0",
        content_type="text/markdown",
        match=[matchers.query_param_matcher({"name": "level_0"})],
    )
    assert client.report("j") == "# Final"
    assert client.report("j", name="level_0") == "# Level 0"


# --- errors ---------------------------------------------------------------------


def test_401_authentication_error_with_server_message(client, rsps):
    rsps.get(f"{API}/jobs/j/status", **error(401, "unauthorized", "Send the key in the X-API-Key header"))
    with pytest.raises(AuthenticationError, match="X-API-Key header") as info:
        client.status("j")
    assert info.value.status_code == 401
    assert KEY not in str(info.value)


def test_404_job_not_found(client, rsps):
    rsps.get(f"{API}/jobs/nope/status", **error(404, "job_not_found", "No job nope", details={"job_id": "nope"}))
    with pytest.raises(JobNotFound) as info:
        client.status("nope")
    assert info.value.details == {"job_id": "nope"}


def test_409_conflict(client, rsps):
    rsps.post(f"{API}/jobs/j/cancel", **error(409, "conflict", "job j already completed"))
    with pytest.raises(Conflict, match="already completed"):
        client.cancel("j")


def test_422_config_error(client, rsps):
    rsps.post(f"{API}/orchestrate", **error(422, "invalid_config", "max_workers must be 1..64"))
    with pytest.raises(ConfigError, match="max_workers") as info:
        client.orchestrate("x", max_workers=0)
    assert type(info.value) is ConfigError


def test_422_recursion_limit(client, rsps):
    rsps.post(f"{API}/orchestrate", **error(422, "recursion_limit", "depth 3 reached"))
    with pytest.raises(RecursionLimit, match="depth 3"):
        client.orchestrate("x")


def test_429_rate_limited_with_retry_after(rsps):
    rsps.get(f"{API}/jobs", headers={"Retry-After": "7"}, **error(429, "rate_limited", "slow down"))
    with OrchestratorClient(URL, KEY, rate_limit_retries=0) as c, pytest.raises(RateLimited) as info:
        c.list_jobs()
    assert info.value.retry_after == 7.0
    assert info.value.status_code == 429
    assert len(rsps.calls) == 1


def test_non_json_error_falls_back_by_status(client, rsps):
    rsps.get(f"{API}/jobs/j/status", status=404, body="<html>Not Found</html>", content_type="text/html")
    with pytest.raises(JobNotFound, match="Not Found"):
        client.status("j")


def test_unknown_code_keeps_code(client, rsps):
    rsps.get(f"{API}/jobs", **error(400, "brand_new_code", "something new"))
    with pytest.raises(OrchestratorError) as info:
        client.list_jobs()
    assert type(info.value) is OrchestratorError
    assert info.value.code == "brand_new_code"


@pytest.fixture
def sleeps(monkeypatch):
    """The client's sleeps, recorded instead of slept (only the client modules see the fake clock:
    the rules' in calls.py, the event stream's in client.py)."""
    import types

    import orchestrator.api.calls
    import orchestrator.api.client

    slept = []
    fake = types.SimpleNamespace(sleep=slept.append, monotonic=time.monotonic, time=time.time)
    for module in (orchestrator.api.calls, orchestrator.api.client):
        monkeypatch.setattr(module, "time", fake)
    return slept


def limited(seconds=None, limit="api.rate_limit_worker"):
    headers = {} if seconds is None else {"Retry-After": str(seconds)}
    return {
        "headers": headers,
        **error(429, "rate_limited", f"too many requests ({limit})", details={"limit": limit, "rate": 20}),
    }


def test_429_waits_what_retry_after_says_then_succeeds(client, rsps, sleeps):
    # Given a server that refuses once and asks for 2 seconds
    rsps.get(f"{API}/jobs", **limited(2))
    rsps.get(f"{API}/jobs", json={"jobs": [], "total": 0})
    # Then the client sleeps exactly that long and returns the answer
    assert client.list_jobs()["total"] == 0
    assert sleeps == [2.0] and len(rsps.calls) == 2


def test_429_on_a_post_is_sent_again(client, rsps, sleeps):
    # A 429 is decided before the server does anything, so even a submission may be repeated
    rsps.post(f"{API}/orchestrate", **limited(1))
    rsps.post(f"{API}/orchestrate", status=202, json={"job_id": "j", "status": "pending"})
    assert client.orchestrate("x")["job_id"] == "j"
    assert sleeps == [1.0]


def test_429_gives_up_after_rate_limit_retries_naming_the_limit(rsps, sleeps):
    # Given a server that keeps refusing with Retry-After: 1
    rsps.get(f"{API}/jobs/j/status", **limited(1))
    # When a client allows two waits
    with OrchestratorClient(URL, KEY, rate_limit_retries=2) as c, pytest.raises(RateLimited) as info:
        c.status("j")
    # Then it waited twice, asked three times, and the error names the limit and the waits
    assert sleeps == [1.0, 1.0] and len(rsps.calls) == 3
    message = str(info.value)
    assert "api.rate_limit_worker" in message and "2 wait(s) totalling 2.0s" in message and "rate_limit_retries=2" in message
    assert (
        info.value.status_code == 429 and info.value.retry_after == 1.0 and info.value.details["limit"] == "api.rate_limit_worker"
    )


def test_429_asking_longer_than_max_retry_after_is_raised_at_once(rsps, sleeps):
    rsps.get(f"{API}/jobs", **limited(120, "api.rate_limit_admin"))
    with OrchestratorClient(URL, KEY, max_retry_after=60) as c, pytest.raises(RateLimited, match="max_retry_after=60s") as info:
        c.list_jobs()
    assert sleeps == [] and len(rsps.calls) == 1 and "api.rate_limit_admin" in str(info.value)


def test_429_without_retry_after_backs_off_and_stays_bounded(rsps, sleeps):
    # Given a 429 with no Retry-After (a proxy's, say) and no limit named
    rsps.get(f"{API}/jobs", status=429, body="Too Many Requests", content_type="text/plain")
    with OrchestratorClient(URL, KEY, backoff=0.5, rate_limit_retries=3) as c, pytest.raises(RateLimited) as info:
        c.list_jobs()
    # Then it waited the growing backoff (plus at most 25% jitter) three times, then named "the server's rate limit"
    assert len(sleeps) == 3 and len(rsps.calls) == 4
    for delay, base in zip(sleeps, (0.5, 1.0, 2.0)):
        assert base <= delay <= base * 1.25
    assert "the server's rate limit" in str(info.value)


def test_429_retry_after_as_an_http_date(client, rsps, sleeps):
    import email.utils

    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    rsps.get(f"{API}/jobs", headers={"Retry-After": when}, **error(429, "rate_limited", "later"))
    rsps.get(f"{API}/jobs", json={"total": 0})
    client.list_jobs()
    assert len(sleeps) == 1 and 27 <= sleeps[0] <= 30


@pytest.mark.parametrize("bad", [{"rate_limit_retries": -1}, {"max_retry_after": -1}])
def test_rate_limit_options_are_validated(bad):
    with pytest.raises(ValidationError, match="rate_limit_retries >= 0"):
        OrchestratorClient(URL, KEY, **bad)


@pytest.mark.slow
def test_a_real_server_with_a_low_rate_is_waited_out(make_live):
    # Given a real server whose admin key may make 2 requests at once, then 1 a second
    live = make_live(api={"rate_limit_admin": 1, "rate_burst": 2})
    codes = []
    with requests.Session() as session:
        session.hooks["response"].append(lambda resp, *args, **kwargs: codes.append(resp.status_code))
        client = OrchestratorClient(live.url, live.key, session=session)
        # When four requests are made back to back
        started = time.monotonic()
        totals = [client.list_jobs()["total"] for _ in range(4)]
        elapsed = time.monotonic() - started
    # Then all four succeed: the last two each waited out one 429 of Retry-After: 1
    print(f"METRIC client_429_waited={codes.count(429)} count")
    print(f"METRIC client_rate_limited_elapsed={elapsed:.2f} s")
    assert totals == [0] * 4
    assert codes == [200, 200, 429, 200, 429, 200]
    assert 1.9 <= elapsed <= 8


@pytest.mark.slow
def test_a_real_server_limit_is_named_when_the_client_gives_up(make_live):
    live = make_live(api={"rate_limit_admin": 0.2, "rate_burst": 1})
    client = OrchestratorClient(live.url, live.key, max_retry_after=2)
    client.health()  # public: not counted
    client.list_jobs()
    started = time.monotonic()
    with pytest.raises(RateLimited, match=r"api\.rate_limit_admin.*max_retry_after=2s") as info:
        client.list_jobs()
    # The server asked for 5s (1 token at 0.2/s), over the 2s the client accepts: raised without sleeping
    elapsed = time.monotonic() - started
    print(f"METRIC client_429_give_up_elapsed={elapsed:.3f} s")
    assert 0 <= elapsed < 1 and info.value.retry_after == 5.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_4xx_never_retried(client, rsps, status):
    rsps.get(f"{API}/jobs/j/status", status=status, json={"error": "x", "message": "m"})
    with pytest.raises(OrchestratorError):
        client.status("j")
    assert len(rsps.calls) == 1


def test_non_json_502_retried_then_raised(client, rsps):
    rsps.get(f"{API}/jobs/j/status", status=502, body="Bad Gateway", content_type="text/plain")
    with pytest.raises(OrchestratorError, match="Bad Gateway") as info:
        client.status("j")
    assert info.value.status_code == 502
    assert len(rsps.calls) == 3  # retries=2


def test_503_then_200_succeeds_after_retry(client, rsps):
    rsps.get(f"{API}/jobs/j/status", **error(503, "unavailable", "busy"))
    rsps.get(f"{API}/jobs/j/status", json={"status": "running"})
    assert client.status("j") == {"status": "running"}
    assert len(rsps.calls) == 2


def test_get_connection_error_retried_then_unreachable(client, rsps):
    rsps.get(f"{API}/jobs/j/status", body=requests.ConnectionError("connection reset"))
    with pytest.raises(ServerUnreachable) as info:
        client.status("j")
    assert len(rsps.calls) == 3
    message = str(info.value)
    assert URL in message and "python api_server.py" in message and "quick-start.sh" in message
    assert KEY not in message


def test_get_timeout_retried(client, rsps):
    rsps.get(f"{API}/jobs", body=requests.ReadTimeout("slow"))
    rsps.get(f"{API}/jobs", json={"jobs": []})
    assert client.list_jobs() == {"jobs": []}
    assert len(rsps.calls) == 2


def test_post_not_retried_after_send(client, rsps):
    """A dropped connection or read timeout may mean the job exists: never resend."""
    rsps.post(f"{API}/orchestrate", body=requests.ReadTimeout("no answer"))
    with pytest.raises(ServerUnreachable, match="not retried"):
        client.orchestrate("x")
    assert len(rsps.calls) == 1


def test_post_not_retried_on_5xx(client, rsps):
    rsps.post(f"{API}/orchestrate", **error(503, "unavailable", "shutting down"))
    with pytest.raises(OrchestratorError, match="shutting down"):
        client.orchestrate("x")
    assert len(rsps.calls) == 1


def test_post_retried_when_connection_refused(client, rsps):
    refused = requests.ConnectionError("refused")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    rsps.post(f"{API}/orchestrate", body=refused)
    rsps.post(f"{API}/orchestrate", status=202, json={"job_id": "j", "status": "pending"})
    assert client.orchestrate("x")["job_id"] == "j"
    assert len(rsps.calls) == 2


def test_real_refused_connection_is_pre_send():
    """No mock: a closed port gives urllib3's NewConnectionError, which allows a POST retry."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    calls = []

    class CountingSession(requests.Session):
        def request(self, *args, **kwargs):
            calls.append(args)
            return super().request(*args, **kwargs)

    with CountingSession() as session:
        c = OrchestratorClient(f"http://127.0.0.1:{port}", KEY, retries=1, backoff=0.001, timeout=2, session=session)
        with pytest.raises(ServerUnreachable, match=f"127.0.0.1:{port}.*python api_server.py"):
            c.orchestrate("x")
    assert len(calls) == 2


def test_redirect_not_followed(client, rsps):
    rsps.get(f"{API}/jobs", status=302, headers={"Location": "http://elsewhere.test/api/v1/jobs"})
    with pytest.raises(OrchestratorError, match="redirected"):
        client.list_jobs()
    assert len(rsps.calls) == 1


# --- wait -----------------------------------------------------------------------


def test_wait_repeats_long_poll_until_terminal(client, rsps):
    url = f"{API}/jobs/j/wait"
    for status in ("running", "running", "completed"):
        rsps.get(url, json={"job_id": "j", "status": status})
    doc = client.wait("j", poll=30)
    assert doc["status"] == "completed"
    assert len(rsps.calls) == 3
    assert all(call.request.params == {"timeout": "30"} for call in rsps.calls)


def test_wait_long_poll_never_exceeds_remaining(client, rsps):
    rsps.get(f"{API}/jobs/j/wait", json={"status": "completed"})
    client.wait("j", timeout=5, poll=30)
    assert 4 < float(rsps.calls[0].request.params["timeout"]) <= 5


def test_wait_overall_timeout_returns_last_document(client, rsps):
    seen = []

    def callback(request):
        seen.append(request.params["timeout"])
        return 200, {}, json.dumps({"job_id": "j", "status": "running", "n": len(seen)})

    rsps.add_callback(responses.GET, f"{API}/jobs/j/wait", callback=callback)
    doc = client.wait("j", timeout=0.05, poll=0.01)
    assert doc["status"] == "running"
    assert doc["n"] == len(seen) >= 2
    assert all(float(t) <= 0.01 for t in seen)


def test_orchestrate_and_wait(client, rsps):
    rsps.post(
        f"{API}/orchestrate",
        status=202,
        json={"job_id": "j", "status": "pending"},
        match=[matchers.json_params_matcher({"request": "x", "config": {"max_workers": 2}})],
    )
    rsps.get(f"{API}/jobs/j/wait", json={"job_id": "j", "status": "partial"})
    assert client.orchestrate_and_wait("x", max_workers=2, wait_timeout=10)["status"] == "partial"


def test_terminal_statuses():
    assert TERMINAL == {"completed", "partial", "failed", "cancelled"}


# --- events ---------------------------------------------------------------------

FIRST_STREAM = (
    ": connected\n\n"
    'id: 1\nevent: job\ndata: {"job_id": "j", "status": "running"}\n\n'
    ": keep-alive\n"
    'id: 2\nevent: worker\ndata: {"worker": "w1",\ndata:  "status": "success"}\n\n'
    'id: 3\nevent: job\ndata: {"status": "cut off"}\n'  # no blank line: never dispatched
)
SECOND_STREAM = 'id: 4\r\nevent: end\r\ndata: {"status": "completed"}\r\n\r\n'


def test_events_parses_and_reconnects_with_last_event_id(client, rsps):
    seen_ids = []

    def callback(request):
        seen_ids.append(request.headers.get("Last-Event-ID"))
        if len(seen_ids) > 2:  # fail fast instead of reconnecting forever
            return 404, {}, json.dumps({"error": "job_not_found", "message": "too many connections"})
        body = FIRST_STREAM if len(seen_ids) == 1 else SECOND_STREAM
        return 200, {"Content-Type": "text/event-stream"}, body

    rsps.add_callback(responses.GET, f"{API}/jobs/j/events", callback=callback)
    events = list(client.events("j"))
    assert events == [
        {"id": 1, "event": "job", "data": {"job_id": "j", "status": "running"}},
        {"id": 2, "event": "worker", "data": {"worker": "w1", "status": "success"}},
        {"id": 4, "event": "end", "data": {"status": "completed"}},
    ]
    assert seen_ids == [None, "2"]


def test_events_resume_from_given_id_and_stop_after_end(client, rsps):
    seen_ids = []

    def callback(request):
        seen_ids.append(request.headers.get("Last-Event-ID"))
        if len(seen_ids) > 1:
            return 404, {}, json.dumps({"error": "job_not_found", "message": "too many connections"})
        return 200, {"Content-Type": "text/event-stream"}, SECOND_STREAM + "id: 5\ndata: {}\n\n"

    rsps.add_callback(responses.GET, f"{API}/jobs/j/events", callback=callback)
    assert [e["id"] for e in client.events("j", last_event_id=3)] == [4]
    assert seen_ids == ["3"]


def test_events_error_is_mapped(client, rsps):
    rsps.get(f"{API}/jobs/nope/events", **error(404, "job_not_found", "No job nope"))
    with pytest.raises(JobNotFound):
        next(client.events("nope"))


def test_parse_sse_rules():
    lines = ["data: plain text", "data", "", "event: x", "", "id: 9", "data: 1", "", "data: 2", ""]
    assert list(_parse_sse(lines)) == [
        {"id": None, "event": "message", "data": "plain text\n"},
        {"id": 9, "event": "message", "data": 1},
        {"id": 9, "event": "message", "data": 2},
    ]


def test_wait_rides_out_a_server_restart(client, rsps):
    """A worker waiting on its child job survives its server being down for a while (a
    restarted server re-adopts the worker): connection errors are waited out, not raised."""
    down = requests.ConnectionError("connection refused")
    for _ in range(5):  # more than the client's own retries (2): a real outage
        rsps.get(f"{API}/jobs/abc123abc123/wait", body=down)
    rsps.get(f"{API}/jobs/abc123abc123/wait", json={"job_id": "abc123abc123", "status": "completed"})
    started = time.monotonic()
    doc = client.wait("abc123abc123", timeout=30, poll=1)
    assert doc["status"] == "completed"
    assert 0.1 <= time.monotonic() - started < 10


def test_wait_gives_up_after_a_long_outage(client, rsps):
    rsps.get(f"{API}/jobs/abc123abc123/wait", body=requests.ConnectionError("connection refused"))
    started = time.monotonic()
    with pytest.raises(ServerUnreachable):
        client.wait("abc123abc123", timeout=30, poll=1, outage=0.5)
    assert 0.5 <= time.monotonic() - started < 5
