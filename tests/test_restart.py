"""A job that finished under an earlier server run, read through a later one."""

from __future__ import annotations

import time

import pytest
import requests

from orchestrator.cli.server import start_in_thread
from orchestrator.engine.core import Engine

from .conftest import API_KEY, make_settings

pytestmark = pytest.mark.slow


def test_events_of_a_job_finished_under_an_earlier_server_run_end_at_once(tmp_path):
    settings = make_settings(tmp_path, api={"api_key": API_KEY, "host": "127.0.0.1", "port": 0})
    engine = Engine(settings)
    server = start_in_thread(settings, engine, port=0)
    job = engine.submission.submit("finish before the restart", None, ["one", "two"])
    assert engine.queries.wait(job.id, 30).status.value == "completed"
    engine.shutdown(timeout=10)
    server.close()
    engine = Engine(settings)  # a new server run over the same workspace: its event log is empty
    server = start_in_thread(settings, engine, port=0)
    try:
        started = time.monotonic()
        with requests.get(
            f"{server.url}/api/v1/jobs/{job.id}/events", headers={"X-API-Key": API_KEY}, stream=True, timeout=30
        ) as answer:
            body = answer.text  # the stream ends by itself
        assert time.monotonic() - started < 3  # was 15 s
        assert body.rstrip().endswith(f'event: end\ndata: {{"job_id": "{job.id}", "status": "completed"}}')
    finally:
        engine.shutdown(timeout=10)
        server.close()
