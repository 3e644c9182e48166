"""A Redis connection from ``distributed.redis_url`` (or a node's ``--redis``), checked at once,
with errors that say what is wrong and where to fix it, and never show the password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from redis.driver_info import DriverInfo

from ..errors import ConfigError

SOCKET_TIMEOUT = 10.0  # seconds a command may take; blocking reads pass their own, longer ones
# What each new connection tells Redis of its client (CLIENT SETINFO), its version given: left to
# redis-py, each connection reads the package's metadata for it, about 1 ms of CPU a connection
# (a node's pool makes several per worker process it forks).
DRIVER = DriverInfo(lib_version=redis.__version__)


def redacted(url: str) -> str:
    """``url`` with its password (and user) replaced by ``***``: safe for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL that does not parse>"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(url: str, *, setting: str = "distributed.redis_url") -> redis.Redis:
    """A client for ``url`` that has answered a PING. ``setting`` is named in errors (the config
    key, or a node's --redis)."""
    shown = redacted(url)
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
            driver_info=DRIVER,
        )
    except ValueError as exc:
        raise ConfigError(f"{setting} is not a Redis URL ({shown}): {exc}", key=setting) from None
    try:
        client.ping()
    except redis.AuthenticationError:
        said = (
            "requires a password: add it to" if urlsplit(url).password is None else "refused the password: set the right one in"
        )
        raise ConfigError(f"Redis at {shown} {said} {setting} (redis://:PASSWORD@HOST:PORT/DB)", key=setting) from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise ConfigError(
                f"Redis at {shown} requires a password: add it to {setting} (redis://:PASSWORD@HOST:PORT/DB)", key=setting
            ) from None
        raise ConfigError(f"Redis at {shown} answered an error: {exc}", key=setting) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise ConfigError(
            f"cannot reach Redis at {shown}: {str(exc).rstrip('.')}. Start redis-server there, or fix {setting}", key=setting
        ) from None
    return client
