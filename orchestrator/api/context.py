"""Where a request finds the app's engine, settings and credentials: one name in
``app.extensions``, set by ``create_app`` and read by the views (so routes need not import app)."""

from __future__ import annotations

from typing import Any

from flask import current_app, g

EXTENSION = "orchestrator"


def extension() -> dict[str, Any]:
    return current_app.extensions[EXTENSION]


def principal() -> Any:
    return g.principal
