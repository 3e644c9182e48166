"""Crash points for the chaos tests, in the manner of FreeBSD's and TiKV's fail points.

``ORCHESTRATOR_FAILPOINTS="after_spawn=0.3,after_record=0.1"`` makes this process SIGKILL
itself when it reaches a named point, with that probability: the only way to kill a server
reliably in the narrow window between starting a worker and recording it. Unset (always,
outside the chaos tests), ``hit`` is one dict lookup. Workers never inherit the variable
(the engine strips ``ORCHESTRATOR*`` from their environment).
"""

from __future__ import annotations

import os
import random
import signal

from . import protocol

VARIABLE = protocol.FAILPOINTS


def _parse(text: str) -> dict[str, float]:
    points = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, chance = item.partition("=")
        points[name] = float(chance or 1)
    return points


_POINTS = _parse(os.environ.get(VARIABLE, ""))


def hit(name: str) -> None:
    """SIGKILL this process here, with the configured probability of the point ``name``."""
    chance = _POINTS.get(name)
    if chance and random.random() < chance:
        os.kill(os.getpid(), signal.SIGKILL)
