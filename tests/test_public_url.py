"""api.public_url (the address workers and outgoing links use) and api.allow_remote (binding
beyond loopback), on a real waitress server on 127.0.0.1; refusals happen before any bind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from orchestrator.cli.server import build, check_bind, embedded_server, start_in_thread
from orchestrator.engine.core import Engine
from orchestrator.errors import ConfigError

from .conftest import API_KEY, ROOT, fake_command, make_settings, run_job, wait_until
from .helpers.webhooks import endpoint, hooks, receivers  # noqa: F401 (receivers: the fixture)
from .redisserver import free_port

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def serve(tmp_path):
    """A real server on 127.0.0.1 at a port chosen first (so public_url can name it)."""
    started = []

    def factory(port: int, **sections):
        api = {"api_key": API_KEY, "host": "127.0.0.1", "port": port, **sections.pop("api", {})}
        settings = make_settings(tmp_path, api=api, **sections)
        engine = Engine(settings)
        server = start_in_thread(settings, engine, port=port)
        started.append((server, engine))
        return server, engine

    yield factory
    for server, engine in started:
        engine.shutdown(timeout=10)
        server.close()


@pytest.mark.slow
def test_workers_and_webhook_links_use_public_url(serve, receivers):  # noqa: F811 (the imported fixture)
    # Given a server on 127.0.0.1 whose public address is another name for it (as a node would use)
    port = free_port()
    public = f"http://localhost:{port}"
    hook = receivers()
    server, engine = serve(
        port,
        api={"public_url": public + "/"},
        orchestrator={"worker": "command", "command": fake_command()},
        **hooks(endpoint(hook, ["job.completed"])),
    )
    assert server.url == f"http://127.0.0.1:{port}"  # where it listens (and .server.json's URL) is unchanged
    # When a job runs a worker that prints its protocol variables
    job = run_job(engine, tasks=["env"])
    assert job.status.value == "completed", job.error
    worker = engine.queries.find_worker(job.id, 0, "worker_1")
    # Then the worker was given the public address (without the trailing slash)
    told = json.loads(worker.output.strip().splitlines()[-1])
    assert told["ORCHESTRATOR_API_URL"] == public
    # And the links the server sends out name the public address, and work there
    wait_until(lambda: hook.requests, what="the job.completed delivery")
    links = json.loads(hook.requests[0]["body"])["links"]
    assert links["status"] == f"{public}/api/v1/jobs/{job.id}/status"
    assert requests.get(links["status"], headers={"X-API-Key": API_KEY}, timeout=30).status_code == 200


@pytest.mark.slow
def test_without_public_url_workers_get_the_address_the_server_listens_on(serve):
    server, engine = serve(free_port())
    assert engine.api_url == server.url


@pytest.mark.slow
def test_public_urls_host_passes_the_host_guard_and_others_do_not(serve):
    # Given a server behind a TLS proxy that forwards with the public name in the Host header
    server, _ = serve(free_port(), api={"public_url": "https://Orch.Example.Internal:8443/"})
    health = server.url + "/health"
    # When requests arrive with that Host, or another name, then only the public name passes
    assert requests.get(health, headers={"Host": "orch.example.internal:8443"}, timeout=30).status_code == 200
    refused = requests.get(health, headers={"Host": "evil.example:8443"}, timeout=30)
    assert refused.status_code == 400 and "api.allowed_hosts" in refused.json()["message"]


@pytest.mark.slow
def test_the_embedded_server_of_orchestrator_run_keeps_its_workers_on_loopback(tmp_path):
    # `orchestrator run` serves its own workers on an ephemeral loopback port: public_url cannot name it
    settings = make_settings(tmp_path, api={"api_key": API_KEY, "public_url": "https://orch.example.internal"})
    engine = Engine(settings)
    server = embedded_server(engine, settings)
    try:
        assert engine.api_url == server.url and server.url.startswith("http://127.0.0.1:")
    finally:
        engine.shutdown(timeout=10)
        server.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.10.5", "orch.example.internal"])
def test_an_address_other_machines_reach_is_refused_without_allow_remote(tmp_path, host):
    settings = make_settings(tmp_path, api={"api_key": API_KEY, "host": host, "port": free_port()})
    with pytest.raises(ConfigError) as refused:
        build(settings)  # refused before the engine exists or anything is bound
    message = str(refused.value)
    assert "api.allow_remote" in message and "TLS" in message and "api.api_key" in message
    assert refused.value.details.get("key") == "api.allow_remote"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_addresses_need_no_setting(host):
    check_bind(host, allow_remote=False)


def test_allow_remote_lets_any_address_through():
    for host in ("0.0.0.0", "::", "", "192.168.10.5"):
        check_bind(host, allow_remote=True)


@pytest.mark.slow
def test_api_server_py_with_a_public_host_exits_naming_the_setting(tmp_path):
    # Given api_server.py asked to bind every interface, with no api.allow_remote
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"api:\n  api_key: {API_KEY}\n  port: {port}\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}, "ORCHESTRATOR_HOME": str(tmp_path)}
    # When it starts, then it exits at once with the reason and the setting, and never listened
    out = subprocess.run(
        [sys.executable, str(ROOT / "api_server.py"), "--config", str(config), "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "api.allow_remote: true" in out.stderr and "TLS" in out.stderr
    assert "listening" not in out.stdout and not (tmp_path / ".server.json").exists()
