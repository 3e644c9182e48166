"""The served API under attack: a fuzzer on its OpenAPI document, keys, body and rate limits, sockets.

Ids that become paths and links workers plant are in test_security_paths.py; shell and
option injection into worker CLIs in test_security_injection.py.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from orchestrator.api.auth import MAX_KEY_BYTES, Credentials

from .conftest import API_KEY, ROOT, fake_command, wait_until
from .helpers.security_paths import raw_request

pytestmark = pytest.mark.slow
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
needs_schemathesis = pytest.mark.skipif(
    not SCHEMATHESIS.exists() and not shutil.which("schemathesis"),
    reason="schemathesis is not installed (./install.sh --dev installs it)",
)


# -- schemathesis ------------------------------------------------------------------------
def run_schemathesis(live, key, tmp_path, *extra):
    """Every check over every operation; returns (exit code, summary, cases, 5xx count, unauthenticated 2xx count)."""
    events = tmp_path / f"schemathesis-{len(list(tmp_path.glob('schemathesis-*')))}.ndjson"
    # A task graph's cross-references (a depends_on naming an id no task has, a cycle) are not
    # something JSON Schema can say: for POST /orchestrate a 422 is also a right answer to a
    # schema-valid body (the graph's checks have tests of their own: test_graph_jobs.py).
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        '[[operations]]\ninclude-path = "/api/v1/orchestrate"\ninclude-method = "POST"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]\n'
    )
    out = subprocess.run(
        [
            str(SCHEMATHESIS if SCHEMATHESIS.exists() else shutil.which("schemathesis")),
            "--config-file",
            str(config),
            "run",
            f"{live.url}/openapi.json",
            "--url",
            live.url,
            "-H",
            f"X-API-Key: {key}",
            "--checks",
            "all",
            "--seed",
            "1",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(events),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = out.stdout[out.stdout.find("SUMMARY") :]
    generated, passed = (re.search(rf"(\d+) {word}", summary) for word in ("generated", "passed"))
    server_errors = bypasses = 0
    failures: list[str] = []
    for line in events.read_text().splitlines():
        recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
        for interaction in recorder.get("interactions", {}).values():
            status = (interaction.get("response") or {}).get("status_code", 0)
            sent_key = "X-API-Key" in interaction["request"].get("headers", {})
            server_errors += status >= 500
            bypasses += not sent_key and "/api/v1/" in interaction["request"]["uri"] and status < 400
        for case_id, checks in recorder.get("checks", {}).items():
            bypasses += sum(
                1 for c in checks if c["name"] in ("ignored_auth", "object_level_authorization") and c["status"] == "failure"
            )
            for check in (c for c in checks if c["status"] == "failure"):  # the request itself, for the assertion
                interaction = recorder.get("interactions", {}).get(case_id) or {}
                request, response = interaction.get("request") or {}, interaction.get("response") or {}
                failures.append(f"{check['name']}: {request.get('method')} {request.get('uri')} -> {response.get('status_code')}")
    counts = tuple(int(m.group(1)) if m else 0 for m in (generated, passed))
    return out.returncode, "\n".join(failures[:20]) + "\n" + summary, counts, server_errors, bypasses


@needs_schemathesis
# Five examples an operation, every check over each: 25 took 890 s on CI's loaded 2-core machine
# and 10 (3,400 cases) 427 s here idle, mostly hypothesis's generation and the server's new jobs
@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error_and_no_failure(make_live, tmp_path):
    # Given a real server whose long-polls are short, so generated waits come back fast
    live = make_live(api={"long_poll_max": 1, "rate_limit_failed_auth": 0}, simulated={"duration": 0.01})
    # When schemathesis runs every check over every operation with the admin key
    code, summary, (cases, passed), server_errors, bypasses = run_schemathesis(live, live.key, tmp_path, "--max-examples", "5")
    # Then it generated cases, every one passed, no answer was a 5xx and no request without a key got in
    print(summary[-800:])
    print(f"METRIC schemathesis_cases={cases} count")
    print(f"METRIC schemathesis_server_errors={server_errors} count")
    print(f"METRIC schemathesis_auth_bypasses={bypasses} count")
    assert code == 0, summary[:1500] + summary[-1500:]
    assert 100 <= cases <= 20_000 and cases == passed
    assert server_errors == 0 and bypasses == 0


@needs_schemathesis
@pytest.mark.timeout(900)
def test_schemathesis_with_a_worker_credential(make_live, tmp_path):
    # Given a running worker's credential (it may start child jobs and read only its own tree),
    # and another tree it must not reach
    live = make_live(
        api={"long_poll_max": 1, "rate_limit_failed_auth": 0, "rate_limit_worker": 0},
        orchestrator={"worker": "command", "command": fake_command()},
        recursion={"max_children_per_worker": 1000, "max_workers_per_root": 100_000},
    )
    job_id = live.submit(request="x", tasks=["hang"]).json()["job_id"]
    credential = _credential(live, job_id, "worker_1")
    # When schemathesis runs every check over every operation with it (child jobs' workers run the fake CLI)
    code, summary, (cases, passed), server_errors, bypasses = run_schemathesis(live, credential, tmp_path, "--max-examples", "10")
    live.call("POST", f"/api/v1/jobs/{job_id}/cancel")
    # Then nothing failed, nothing was a 5xx and nothing got past the credential's scope
    print(summary[-800:])
    print(f"METRIC schemathesis_worker_cases={cases} count")
    print(f"METRIC schemathesis_worker_server_errors={server_errors} count")
    print(f"METRIC schemathesis_worker_auth_bypasses={bypasses} count")
    assert code == 0, summary[:1500] + summary[-1500:]
    assert 100 <= cases <= 20_000 and cases == passed
    assert server_errors == 0 and bypasses == 0


# -- keys --------------------------------------------------------------------------------
def _credential(live, job_id, worker):
    wait_until(lambda: live.engine.worker_running(job_id, worker))
    return live.engine.credentials.issue(job_id.split("-")[0], job_id, worker)


def test_malformed_keys_are_401_or_refused_by_waitress_never_500(make_live):
    live = make_live(api={"rate_limit_failed_auth": 0})
    wrong_same_length = API_KEY[:-1] + ("x" if API_KEY[-1] != "x" else "y")
    keys = {
        "missing": None,
        "empty": b"",
        "wrong": b"wrong-key-0123456789",
        "wrong, same length": wrong_same_length.encode(),
        "prefix of the key": API_KEY[:-1].encode(),
        "key plus a byte": API_KEY.encode() + b"x",
        "non-ASCII UTF-8": "t\u00e9st-k\u00eby-\u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9".encode(),
        "raw high bytes": bytes(range(0x80, 0x100)),
        "latin-1 of the key with one letter swapped": API_KEY.replace("k", "\u00eb").encode("latin-1"),
        "forged worker key": b"wk.0123456789ab.worker_1." + b"0" * 40,
        "worker key, bad parts": b"wk.\xff\xfe.worker_1.x",
        f"{MAX_KEY_BYTES + 1} bytes": b"k" * (MAX_KEY_BYTES + 1),
        "1 MB": b"k" * (1 << 20),
    }
    answers = {}
    for what, key in keys.items():
        status, _, body = raw_request(live.url, "GET", "/api/v1/jobs", key=key)
        answers[what] = status
        # Then the server still answers the admin key after each one
        assert raw_request(live.url, "GET", "/api/v1/jobs")[0] == 200, what
    print(f"METRIC malformed_key_statuses={json.dumps(answers)} status")
    assert all(status in (400, 401, 431) for status in answers.values()), answers
    assert answers["1 MB"] in (400, 431) and sum(1 for s in answers.values() if s == 401) >= len(keys) - 2


def test_keys_are_compared_in_constant_time_on_bytes(monkeypatch):
    # Given a spy on hmac.compare_digest, the only comparison allowed for a secret
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    credentials = Credentials(API_KEY, lambda job, worker: True)
    worker_key = credentials.issue("0123456789ab", "0123456789ab", "worker_1")
    # When right, wrong, non-ASCII and worker keys are checked
    for key in (API_KEY, "x" * len(API_KEY), "t\u00e9st\u00ff", "short", worker_key, worker_key[:-1] + "0"):
        try:
            credentials.authenticate(key)
        except Exception:
            pass
    # Then every check went through compare_digest, always on bytes
    print(f"METRIC compare_digest_calls={len(calls)} count")
    assert 6 <= len(calls) <= 12 and set(calls) == {(bytes, bytes)}


def test_a_worker_credential_cannot_reach_another_tree_or_admin_routes(make_live):
    # Given a running worker's credential and a second, finished job tree
    live = make_live(orchestrator={"worker": "command", "command": fake_command()}, api={"long_poll_max": 1})
    mine = live.submit(request="x", tasks=["hang"]).json()["job_id"]
    other = live.submit(request="y", tasks=["ok 1"]).json()["job_id"]
    live.wait(other)
    cred = _credential(live, mine, "worker_1")
    routes = [
        ("GET", f"/api/v1/jobs/{other}"),
        ("GET", f"/api/v1/jobs/{other}/status"),
        ("GET", f"/api/v1/jobs/{other}/wait?timeout=0"),
        ("GET", f"/api/v1/jobs/{other}/report"),
        ("GET", f"/api/v1/jobs/{other}/events"),
        ("GET", f"/api/v1/jobs/{other}/workers/worker_1/log"),
        ("POST", f"/api/v1/jobs/{other}/cancel"),
        ("DELETE", f"/api/v1/jobs/{other}"),
        ("DELETE", f"/api/v1/jobs/{mine}"),
        ("POST", f"/api/v1/jobs/{mine}/cancel"),
        ("GET", "/api/v1/nodes"),
    ]
    if live.call("GET", "/metrics").status_code == 200:
        routes.append(("GET", "/metrics"))
    # When it calls each
    answers = {f"{m} {p}": raw_request(live.url, m, p, key=cred)[0] for m, p in routes}
    forged = raw_request(live.url, "GET", f"/api/v1/jobs/{mine}", key=cred[:-1] + ("0" if cred[-1] != "0" else "1"))[0]
    other_worker = raw_request(
        live.url, "GET", f"/api/v1/jobs/{other}", key=live.engine.credentials.issue(other, other, "worker_1")
    )[0]
    listed = live.call("GET", "/api/v1/jobs", key=cred).json()
    # Then each is a 403 (never a 500), a forged or finished worker's key is a 401, and it lists only its own tree
    print(f"METRIC worker_credential_refused={sum(s == 403 for s in answers.values())}/{len(answers)} count")
    assert set(answers.values()) == {403}, answers
    assert (forged, other_worker) == (401, 401)
    assert live.call("GET", f"/api/v1/jobs/{mine}", key=cred).status_code == 200
    assert [j["job_id"] for j in listed["jobs"]] == [mine]
    live.call("POST", f"/api/v1/jobs/{mine}/cancel")


# -- limits ------------------------------------------------------------------------------------
def test_body_cap_is_a_413_at_flask_and_at_waitress_both_from_config(tmp_path):
    from orchestrator.cli.server import start_in_thread
    from orchestrator.engine.core import Engine

    from .conftest import make_settings

    # Given two servers whose api.max_body_bytes differ
    caps = {}
    for cap in (4096, 8192):
        settings = make_settings(tmp_path / str(cap), api={"api_key": API_KEY, "max_body_bytes": cap})
        engine = Engine(settings)
        caps[cap] = (engine, start_in_thread(settings, engine, port=0))
    try:
        for cap, (_engine, server) in caps.items():
            waitress_cap = server.server.adj.max_request_body_size
            # Then waitress's cap follows the setting (above it, so Flask gets to answer in JSON) ...
            assert cap < waitress_cap <= 4 * cap + (1 << 20)

            def post(n, chunked=False, url=server.url):
                headers = {"Content-Type": b"application/json"}
                if chunked:
                    body = f"{n:x}".encode() + b"\r\n" + b"x" * n + b"\r\n0\r\n\r\n"
                    return raw_request(
                        url, "POST", "/api/v1/orchestrate", headers={**headers, "Transfer-Encoding": b"chunked"}, raw_body=body
                    )
                return raw_request(url, "POST", "/api/v1/orchestrate", headers=headers, body=b"x" * n)

            # ... and Flask's is the setting itself: the cap reaches the route (400, not JSON), cap + 1 is its
            # JSON 413, with a Content-Length or chunked
            assert post(cap)[0] == 400 and post(cap, chunked=True)[0] == 400
            for status, _head, body in (post(cap + 1), post(cap + 1, chunked=True)):
                assert status == 413 and json.loads(body)["error"] == "payload_too_large", body[:200]
            # Waitress: just under its cap still reaches Flask; its cap + 1 is stopped before Flask sees it
            under = post(waitress_cap - 1)
            over = post(waitress_cap + 1)
            assert under[0] == 413 and under[1]["content-type"] == "application/json"
            assert over[0] == 413 and over[1]["content-type"].startswith("text/plain") and b"exceeds max_body" in over[2]
            print(f"METRIC body_caps_{cap}=flask:{cap},waitress:{waitress_cap} bytes")
    finally:
        for engine, server in caps.values():
            engine.shutdown(timeout=10)
            server.close()


def test_past_each_rate_limit_is_a_429_with_retry_after(make_live):
    # Given low limits for the admin key, a worker credential and wrong keys
    live = make_live(
        orchestrator={"worker": "command", "command": fake_command()},
        api={"rate_limit_admin": 1, "rate_limit_worker": 1, "rate_limit_failed_auth": 1, "rate_burst": 3},
    )
    job_id = live.submit(request="x", tasks=["hang"]).json()["job_id"]
    cred = _credential(live, job_id, "worker_1")
    for what, key, setting, first in (
        ("admin", API_KEY, "api.rate_limit_admin", 200),
        ("worker", cred, "api.rate_limit_worker", 200),
        ("wrong key", "wrong-key-0123456789", "api.rate_limit_failed_auth", 401),
    ):
        # When a burst is spent (the admin key already spent one on the submission)
        answers = [raw_request(live.url, "GET", f"/api/v1/jobs/{job_id}/status", key=key) for _ in range(4)]
        statuses = [a[0] for a in answers]
        status, headers, body = answers[-1]
        # Then the next request is a 429 whose Retry-After is whole seconds, at least 1, at most 1/rate + 1,
        # and whose message names the setting
        retry_after = headers.get("retry-after", "")
        print(f"METRIC rate_limit_{what.replace(' ', '_')}_retry_after={retry_after} s")
        assert statuses[:2] == [first, first] and statuses[-1] == 429, (what, statuses)
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 2, retry_after
        assert setting in json.loads(body)["message"] and json.loads(body)["details"]["limit"] == setting
        # And after waiting that long the key works again
        time.sleep(int(retry_after))
        assert raw_request(live.url, "GET", f"/api/v1/jobs/{job_id}/status", key=key)[0] == first
    live.call("POST", f"/api/v1/jobs/{job_id}/cancel")


def _open_stream(live, path, key):
    """A stream held open (the response is read only as far as its headers), or a refusal."""
    return requests.get(live.url + path, headers={"X-API-Key": key}, stream=True, timeout=10)


def test_streams_and_long_polls_are_capped_per_credential_and_leave_threads_for_short_requests(make_live):
    # Given a server of 8 threads, 2 kept for short requests, at most 3 streams per credential,
    # and a running job of two workers
    live = make_live(
        orchestrator={"worker": "command", "command": fake_command()},
        api={"threads": 8, "reserved_threads": 2, "max_streams_per_key": 3, "long_poll_max": 30},
    )
    job_id = live.submit(request="x", tasks=["hang", "hang"]).json()["job_id"]
    first, second = (_credential(live, job_id, w) for w in ("worker_1", "worker_2"))
    events, progress = f"/api/v1/jobs/{job_id}/events", f"/api/v1/tasks/{job_id}/progress"
    held = []
    try:
        # When worker_1's credential holds its 3 (event streams and a task's progress stream)
        held += [_open_stream(live, path, first) for path in (events, progress, events)]
        assert [r.status_code for r in held] == [200] * 3
        # Then its next stream, or long-poll, is a 429 whose Retry-After is whole seconds and whose
        # message names the setting
        for refused in (_open_stream(live, events, first), live.call("GET", f"/api/v1/jobs/{job_id}/wait?timeout=1", key=first)):
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "5", refused.text
            assert refused.json()["details"]["limit"] == "api.max_streams_per_key"
            assert "api.max_streams_per_key" in refused.json()["message"]
        # And once its client leaves one stream (the server sees it at the next heartbeat) the slot is its again
        held.pop(1).close()
        held += [wait_until(lambda: _answered(_open_stream(live, events, first)), what="a freed slot")]
        # When worker_2 holds 3 too, all 6 stream threads are held: even the admin key's stream must wait
        held += [_open_stream(live, events, second) for _ in range(3)]
        assert [r.status_code for r in held] == [200] * 6
        refused = _open_stream(live, events, API_KEY)
        assert refused.status_code == 429 and refused.json()["details"]["limit"] == "api.reserved_threads"
        # Then the admin's list, /health and a worker's status still answer, on the kept threads
        # (before the cap, each waited for a stream to end: api.long_poll_max, past the 10 s timeout)
        for path, key in (("/api/v1/jobs", API_KEY), ("/health", API_KEY), (f"/api/v1/jobs/{job_id}/status", second)):
            assert requests.get(live.url + path, headers={"X-API-Key": key}, timeout=10).status_code == 200, path
    finally:
        for response in held:
            response.close()
        live.call("POST", f"/api/v1/jobs/{job_id}/cancel")


def _answered(response):
    """The response when it is a 200, else None (a 429 holds nothing: it is closed)."""
    if response.status_code == 200:
        return response
    response.close()
    return None


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_api_server_listens_on_loopback_only(tmp_path):
    # Given api_server.py started as its own process with a config that does not name a host
    port = _free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"api:\n  api_key: {API_KEY}\n  port: {port}\norchestrator:\n  workspace_root: {tmp_path / 'ws'}\n"
        f"logging:\n  log_dir: {tmp_path / 'logs'}\n"
    )
    # its own home, so it never claims this folder (one server per folder) nor writes its .server.json here
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}, "ORCHESTRATOR_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "api_server.py"), "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, timeout=30, what="api_server.py answering /health")
        # When its sockets are read from the process itself
        listening = [c for c in psutil.Process(proc.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        addresses = sorted({(c.laddr.ip, c.laddr.port) for c in listening})
        # Then it listens, and only on 127.0.0.1
        print(f"METRIC listening_sockets={len(listening)} count ({addresses})")
        assert addresses == [("127.0.0.1", port)], addresses
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
