"""Helpers of tests/test_gates.py, used by other test files too."""

from __future__ import annotations

import pytest

from orchestrator.api.auth import Credentials
from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.delivery.integration import IntegrateStep
from orchestrator.engine.core import Engine
from orchestrator.quality.gates import GateStep
from orchestrator.workspace.layout import Workspace

from ..conftest import API_KEY
from .worktree import make_host


def gate(name: str, run: list[str], **more) -> dict:
    return {"name": name, "run": run, **more}


@pytest.fixture
def gated(tmp_path):
    """A host repository (helpers.worktree.make_host) and a factory of engines in its folder whose
    after-attempt steps are ``[GateStep]``; ``steps=False`` makes one without it; ``integrate``: IntegrateStep after it
    (as the engine's default steps end); ``then``: steps after those."""
    host, folder = make_host(tmp_path)
    engines = []

    def factory(steps: bool = True, api: bool = False, then: tuple = (), integrate: bool = False, **sections: dict) -> Engine:
        overrides = {
            "workers": {"retry_backoff": 0.05, "retry_backoff_max": 0.2, "kill_grace": 0.5, "default_timeout": 30},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
        }
        for name, values in sections.items():
            overrides.setdefault(name, {}).update(values)
        settings = load_settings(base_dir=folder, environ={}, overrides=overrides)
        workspace = Workspace(settings.workspace_root)
        serving = {"api_url": "http://127.0.0.1:9", "credentials": Credentials(API_KEY, lambda j, w: True)} if api else {}
        chosen = [GateStep(settings, workspace)] if steps else []
        chosen += [IntegrateStep(settings, workspace)] if integrate else []  # the gates, then the integration merge
        engine = Engine(settings, workspace=workspace, steps=[*chosen, *then], **serving)
        engines.append(engine)
        return engine

    yield host, folder, factory
    for engine in engines:
        engine.shutdown(timeout=10)


@pytest.fixture
def served(tmp_path):
    host, folder = make_host(tmp_path)
    settings = load_settings(
        base_dir=folder,
        environ={},
        overrides={
            "workers": {"kill_grace": 0.5, "default_timeout": 30},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
        },
    )
    engine = Engine(settings)
    server = start_in_thread(settings, engine, port=0)
    yield server.url, engine
    engine.shutdown(timeout=10)
    server.close()
