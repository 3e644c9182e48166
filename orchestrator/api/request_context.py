"""Where a request finds the app's engine, settings and credentials: one name in
``app.extensions``, set by ``create_app`` and read by the views (so routes need not import app)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app, g

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..engine.core import Engine

EXTENSION = "orchestrator"


def extension() -> dict[str, Any]:
    return current_app.extensions[EXTENSION]


def engine() -> Engine:
    """The app's engine, typed: every view's call into it is checked."""
    found: Engine = extension()["engine"]
    return found


def settings() -> Settings:
    found: Settings = extension()["settings"]
    return found


def principal() -> Any:
    return g.principal
