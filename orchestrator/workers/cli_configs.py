"""A CLI's own config files as the server found them at its start: where a model endpoint the user
configured there (codex's ``[model_providers.X] base_url``, opencode's provider ``baseURL``: a local
gateway, a company proxy) is taken from for a sandboxed worker's network (``workers.sandbox_network:
allow``).

Those files are in folders the workers write (``CODEX_HOME``, opencode's XDG config folder): what one
says now may be a worker's planting, so it never opens a host. The copy read when the server starts,
before any of its workers ran, does (:class:`CliConfigs`). A job whose CLI's file now names an endpoint
its workers may not reach (the file changed since the start, or ``workers.env`` moved the CLI's folder)
is refused at submission (:func:`check_reachable`), naming the setting that opens it: its workers would
only have waited on a refused connection until their timeout.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from ..network.policy import SETTING, Endpoint, Policy, endpoint_of_url, normal_host
from .adapters import kinds
from .adapters.base import Adapter, ConfigEndpoint
from .environment import base_env

log = logging.getLogger("orchestrator.workers")

MAX_BYTES = 1 << 20  # of one config file read (a CLI's config is a few kilobytes)


class CliConfigs:
    """Each kind's config files (``Adapter.config_files``) as they were when :meth:`take` read them:
    a path to its text, or to None where there was no file."""

    def __init__(self, texts: Mapping[Path, str | None]) -> None:
        self.texts = dict(texts)

    @classmethod
    def take(cls, settings: Settings) -> CliConfigs:
        """Read every kind's files where a worker's environment (``base_env``) puts them, now."""
        env = base_env(settings)
        texts: dict[Path, str | None] = {}
        for kind in kinds():
            try:
                files = kind.adapter().config_files(env)
            except Exception:  # one kind's failure must not stop the server: its endpoints stay unknown
                log.warning("reading %s's config files failed", kind.name, exc_info=True)
                continue
            for path in files:
                texts.setdefault(path, read_config(path))
        return cls(texts)

    def endpoints(self, adapter: Adapter, env: Mapping[str, str]) -> list[ConfigEndpoint]:
        """The endpoints ``adapter``'s files named at the start, those a worker with ``env`` reads
        (a file the snapshot does not hold, or did not find, names none)."""
        texts = {p: t for p in adapter.config_files(env) if (t := self.texts.get(p)) is not None}
        return adapter.config_endpoints(texts) if texts else []


def read_config(path: Path) -> str | None:
    """``path``'s text (its first :data:`MAX_BYTES`), or None where it cannot be read."""
    try:
        with path.open("rb") as f:
            return f.read(MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return None


def live_endpoints(adapter: Adapter, env: Mapping[str, str]) -> list[ConfigEndpoint]:
    """The endpoints ``adapter``'s files name now: what its CLI will dial. Never to open a host
    (a worker may have written them), only to refuse a job whose CLI would be refused."""
    texts = {p: t for p in adapter.config_files(env) if (t := read_config(p)) is not None}
    return adapter.config_endpoints(texts) if texts else []


@dataclass(frozen=True)
class Unreachable:
    """A model endpoint a CLI's config names that its workers' proxy would refuse, and why."""

    kind: str
    endpoint: Endpoint
    source: str
    reason: str

    def message(self) -> str:
        authority = (
            f"[{self.endpoint.host}]:{self.endpoint.port}"
            if ":" in self.endpoint.host
            else f"{self.endpoint.host}:{self.endpoint.port}"
        )
        return (
            f"{self.kind}'s {self.source} names the model endpoint {authority}, which its sandboxed workers may not reach "
            f"({self.reason}): the orchestrator takes a CLI's endpoint from that file only as it was when the server "
            f'started (its folder is one workers write). Add "{authority}" to {SETTING} in config.yaml, '
            "or restart the server to take the file as it is now"
        )


def unreachable(kind: str, endpoints: Sequence[ConfigEndpoint], policy: Policy) -> list[Unreachable]:
    """Those of ``endpoints`` ``policy`` refuses (by name; an IP literal by its address too)."""
    found: list[Unreachable] = []
    for named in endpoints:
        endpoint = endpoint_of_url(named.url)
        if endpoint is None:
            continue
        verdict = policy.check_name(endpoint.host, endpoint.port)
        key = normal_host(endpoint.host)
        if verdict.allowed and key is not None and _is_literal(key):
            verdict = policy.check_address(key, endpoint.port, key)
        if not verdict.allowed:
            found.append(Unreachable(kind, Endpoint(key or endpoint.host, endpoint.port), named.source, verdict.reason))
    return found


def check_reachable(kind: str, endpoints: Sequence[ConfigEndpoint], policy: Policy) -> None:
    """A ConfigError (422, key ``workers.sandbox_allow``) naming each endpoint ``policy`` refuses."""
    refused = unreachable(kind, endpoints, policy)
    if refused:
        raise ConfigError("; ".join(r.message() for r in refused), key=SETTING)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
