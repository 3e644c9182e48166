"""The environment an AI CLI starts from (a worker, or the AI planner), as the server's owner
chose it in ``workers.inherit_env``, ``workers.env_passthrough`` and ``workers.env``."""
from __future__ import annotations

import os
from pathlib import Path

from . import protocol
from .config import Settings

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
SPAWN_BIN = str(Path(__file__).resolve().parent / "bin")  # holds orchestrator-spawn


def base_env(settings: Settings) -> dict[str, str]:
    """The environment an AI CLI (a worker, or the AI planner) starts from: the server's whole
    environment (workers.inherit_env) or only the variables in workers.env_passthrough, then
    workers.env; never the server's own ORCHESTRATOR_* variables; PATH always set (the
    server's, unless workers.env sets one)."""
    w = settings.workers
    source = os.environ
    env = dict(source) if w.inherit_env else {name: source[name] for name in w.env_passthrough if name in source}
    for name in [n for n in env if n.startswith(protocol.PREFIX)]:
        del env[name]  # never leak a parent's identity or settings into a worker
    env.update(w.env)
    env.setdefault("PATH", source.get("PATH", os.defpath))
    return env
