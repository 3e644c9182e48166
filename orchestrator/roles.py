"""Roles (issue 13 item 4): a task's ``role`` names a prompt preamble, an optional worker kind and
model, allowed tools, and the gates that apply to its workers. The shipped six
(config.quality.DEFAULT_ROLES) are merged with ``tasks.roles`` from config.yaml."""

from __future__ import annotations

from typing import Any

from .config import Settings
from .config.quality import roles_with_defaults


def role_table(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every role this server knows, by name."""
    return roles_with_defaults(settings.tasks.roles)


def role_of(settings: Settings, name: str | None) -> dict[str, Any] | None:
    return role_table(settings).get(name) if name else None
