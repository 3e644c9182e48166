"""A sandboxed worker's way out with ``workers.sandbox_network: allow``.

The worker's sandbox has a network namespace of its own (bubblewrap's ``--unshare-net``): a loopback
and no route out, which also closes the host's abstract Unix sockets. Its one way out is the proxy
(network/proxy.py) this process runs, as Claude Code's and Codex's sandboxes do it:

* one folder of Unix sockets per attempt (:func:`open_egress`), listened on by the proxy: ``proxy.sock``
  speaks HTTP CONNECT, plain HTTP and SOCKS5; one socket per loopback endpoint the orchestrator names
  (this server's API, a kind's model server on 127.0.0.1) forwards raw to that endpoint;
* the folder shown in the sandbox at :data:`INSIDE` (its ``/run`` is an empty tmpfs), and the shim's
  bridge (process/shim.py) listening inside the namespace on 127.0.0.1:\\ :data:`PROXY_PORT` and on each
  loopback endpoint's own address and port, each connection carried to its socket: ``HTTPS_PROXY``
  and the API's URL work unchanged in the sandbox;
* every connection decided by the attempt's :class:`~orchestrator.network.policy.Policy`; every
  refusal, and every allowed host that could not be reached, written to the attempt's network record
  (``EgressPlan.record``: a file beside the worker's log that its sandbox cannot write, read by
  :func:`read_record` for its record's refusals), a refusal also told in the worker's log as an
  ``[orchestrator] network: refused`` line for whoever reads it.

A program that ignores the proxy variables finds no route ("Network is unreachable") and fails
closed: no connection leaves the namespace except through the proxy.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import direct
from .policy import Endpoint, Policy, endpoint_of_url, parse_entry
from .proxy import Listener, Outcome, Refusal, shared

log = logging.getLogger("orchestrator.network")

INSIDE = "/run/orchestrator-net"  # where an attempt's sockets are in its sandbox
PROXY_PORT = 3128  # the proxy's port on the sandbox's own loopback (another when an endpoint takes it)
REFUSED = "[orchestrator] network: refused "  # the log line's start, which workers/refusals.py reads
NOTE = "[orchestrator] network: "
_UNPRIVILEGED = 1024  # a network namespace's ip_unprivileged_port_start: the bridge listens at or above it
_LOG_EVERY = 10  # after this many refusals of one host, only every power of ten is logged
_SOCKET_PATH_MAX = 107  # sockaddr_un's sun_path, less its NUL

# What the worker's programs read to find the proxy: the usual variables in both cases (curl, git, pip,
# Python's urllib and requests, Go, Rust's reqwest, Node's undici with NODE_USE_ENV_PROXY), npm's, yarn
# berry's and pip's own.
_PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NPM_CONFIG_PROXY",
    "NPM_CONFIG_HTTPS_PROXY",
    "npm_config_proxy",
    "npm_config_https_proxy",
    "YARN_HTTP_PROXY",
    "YARN_HTTPS_PROXY",
    "PIP_PROXY",
)
_NO_PROXY = "localhost,127.0.0.1,::1"
# Every variable an attempt's environment gets with the proxy (``Egress.env``).
PROXY_VARIABLES = (*_PROXY_VARIABLES, "NO_PROXY", "no_proxy", "NODE_USE_ENV_PROXY")


@dataclass(frozen=True)
class EgressPlan:
    """What one sandboxed process tree may reach: the user's and its kind's host patterns (``allow``,
    workers.sandbox_allow's grammar) and the endpoints the orchestrator itself names (``always``: this
    server's API, the model endpoints of the kind's settings, each labelled), allowed whatever their
    address."""

    allow: tuple[str, ...] = ()
    always: tuple[Endpoint, ...] = ()
    record: str = ""  # the attempt's network record (a path no process of the attempt can write; "": none)

    def policy(self) -> Policy:
        """The compiled allow-list: one per distinct plan, shared (a Policy never changes after it is
        built, and every attempt of a kind has the same plan: compiling it twice an attempt cost more
        than the attempt's listeners took to open)."""
        return _compiled(tuple(self.allow), tuple(self.always))

    def forwarded(self) -> list[tuple[str, int]]:
        """The loopback endpoints among ``always`` and the allow entries that name one with its port
        (``127.0.0.1:4873``, ``localhost:5432``; IPv4 and ``localhost``), each reached in the sandbox at
        its own address and port: programs bypass a proxy for 127.0.0.1 (``NO_PROXY``), and get there."""
        return list(_forwarded(tuple(self.allow), tuple(self.always)))

    def to_dict(self) -> dict[str, Any]:
        return {"allow": list(self.allow), "always": [[e.host, e.port, e.label] for e in self.always], "record": self.record}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EgressPlan:
        return cls(
            allow=tuple(str(entry) for entry in data.get("allow", ())),
            always=tuple(Endpoint(str(e[0]), int(e[1]), str(e[2]) if len(e) > 2 else "") for e in data.get("always", ())),
            record=str(data.get("record") or ""),
        )


def plan_for(
    allow: Sequence[str],
    hosts: Sequence[str],
    urls: Iterable[str],
    *,
    api_url: str | None = None,
    labelled: Iterable[tuple[str, str]] = (),
) -> EgressPlan:
    """The plan of a worker whose kind reaches ``hosts`` (adapter.network_hosts), whose settings name
    the model ``urls``, whose CLI's own config named the ``labelled`` ones ((url, label): where) and
    which reaches this server at ``api_url`` (a URL that names no host is left out)."""
    always: list[Endpoint] = []
    named = [(api_url, "this server's API")] if api_url else []
    for url, label in [*named, *((url, "the model API its settings name") for url in urls), *labelled]:
        endpoint = endpoint_of_url(url)
        if endpoint is not None and all((e.host, e.port) != (endpoint.host, endpoint.port) for e in always):
            always.append(Endpoint(endpoint.host, endpoint.port, label))
    entries = [*allow, *(h for h in hosts if h not in allow)]
    return EgressPlan(tuple(entries), tuple(always))


@functools.lru_cache(maxsize=256)  # a server's distinct plans: one per worker kind and settings, a few
def _compiled(allow: tuple[str, ...], always: tuple[Endpoint, ...]) -> Policy:
    return Policy.parse(allow, always=always)  # (a ValueError is raised again each time: not cached)


@functools.lru_cache(maxsize=256)
def _forwarded(allow: tuple[str, ...], always: tuple[Endpoint, ...]) -> tuple[tuple[str, int], ...]:
    listed = [(r.value, r.port) for r in map(parse_entry, allow) if not r.deny and r.port is not None]
    found: list[tuple[str, int]] = []
    for host, port in [*((e.host, e.port) for e in always), *listed]:
        address = _loopback_v4(host)
        if address is not None and port is not None and (address, port) not in found:
            found.append((address, port))
    return tuple(found)


def _loopback_v4(host: str) -> str | None:
    if host.lower().rstrip(".") == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return str(address) if address.version == 4 and address.is_loopback else None


@dataclass
class Egress:
    """One attempt's listeners: their folder (bound at :data:`INSIDE`), the environment that points the
    worker's programs at them, and the shim's bridge line (``ADDRESS:PORT=SOCKET ...``)."""

    folder: Path
    listeners: list[Listener] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    bridge: str = ""  # "" without a namespace: nothing to carry in
    ports: list[int] = field(default_factory=list)  # the proxy's port, then each forwarded endpoint's

    def close(self) -> None:
        """Stop listening (an open tunnel ends with it; the proxy's loop does it soon, nobody waits)
        and remove the folder."""
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                listener.close(wait=False)
        self.listeners.clear()
        try:  # after the listeners, in the proxy's thread: the engine's thread does no file work for it
            shared().later(_remove_folder, self.folder)
        except RuntimeError:  # the proxy is stopped
            _remove_folder(self.folder)


def sockets_base() -> Path:
    """This user's folder of attempt socket folders: short (a socket's path has 107 bytes), private
    (0700, owned by this user, no link: another user's folder of that name in /tmp is refused).
    Checked once per process and place (:func:`_checked_base`)."""
    return _checked_base(tempfile.gettempdir(), os.getuid())


@functools.lru_cache(maxsize=4)
def _checked_base(tmp: str, uid: int) -> Path:
    base = Path(tmp) / f"orchestrator-net-{uid}"
    if len(str(base)) > 60:
        base = Path("/tmp") / f"orchestrator-net-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    found = os.lstat(base)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise OSError(f"{base} is not a private folder of this user's: remove it (the network proxy's sockets go there)")
    return base


def open_egress(plan: EgressPlan, *, key: str, log_path: Path | None, namespace: bool = True) -> Egress:
    """Listen for one attempt (``key``: its tag); refusals are appended to ``log_path``.

    ``namespace`` (bubblewrap: the attempt has a network namespace of its own): the proxy's Unix socket
    and one per forwarded endpoint, carried in by the shim's bridge. Without one (Landlock, Seatbelt:
    the worker shares the host's loopback, and the kernel lets it connect to listed TCP ports only): a
    proxy port on 127.0.0.1 of its own (``Egress.ports`` lists it and the forwarded endpoints' ports,
    the ports the worker's rules allow). What was opened is written beside (``plan.json``), so a
    restarted server listens again for an attempt it adopts (:func:`reopen_egress`)."""
    folder = _folder(key)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:  # a stale one (a crash): made afresh
        _remove_folder(folder)
        folder.mkdir(mode=0o700)
    except FileNotFoundError:  # the base was removed since it was checked (a cleaner of /tmp): made again
        _checked_base.cache_clear()
        folder = _folder(key)
        folder.mkdir(mode=0o700)
    taken = {port for address, port in plan.forwarded() if address == "127.0.0.1"}
    port = next(p for p in range(PROXY_PORT, PROXY_PORT + 100) if p not in taken) if namespace else 0
    egress = _listen(folder, plan, port, log_path, namespace)
    saved = {
        "plan": plan.to_dict(),
        "port": egress.ports[0] if not namespace else port,
        "namespace": namespace,
        "log": str(log_path) if log_path is not None else None,
    }
    try:  # (not durable: after a crash of the machine no attempt of before runs to listen for)
        fd = os.open(folder / "plan.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(saved).encode())
        finally:
            os.close(fd)
    except BaseException:
        egress.close()
        raise
    return egress


def reopen_egress(key: str) -> Egress | None:
    """Listen again for an attempt a previous server started (its sandbox shows the same folder, so
    new sockets there are its way out again; without a namespace, the same port if it is free); None
    when it had none or its port is taken."""
    folder = _folder(key)
    try:
        saved = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
        plan, port = EgressPlan.from_dict(saved["plan"]), int(saved["port"])
        log_path = Path(saved["log"]) if saved.get("log") else None
        return _listen(folder, plan, port, log_path, bool(saved.get("namespace", True)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_folder(folder: Path) -> None:
    """An attempt's socket folder: what is in it (its sockets and plan.json: no walk of a tree, which
    cost more than the listeners), then itself; anything else found there goes by ``shutil.rmtree``."""
    try:
        for name in os.listdir(folder):
            os.unlink(folder / name)
        os.rmdir(folder)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def _folder(key: str) -> Path:
    return sockets_base() / hashlib.sha256(key.encode()).hexdigest()[:16]


def _listen(folder: Path, plan: EgressPlan, port: int, log_path: Path | None, namespace: bool) -> Egress:
    egress = Egress(folder)
    try:
        policy = plan.policy()
        report = reporter(log_path, Path(plan.record) if plan.record else None)
        if namespace:
            egress.listeners.append(shared().open(policy, unix_path=str(folder / "proxy.sock"), on_refusal=report, wait=False))
        else:
            listener = shared().open(policy, tcp_port=port, on_refusal=report, wait=False)
            port = int(listener.port or 0)
            egress.listeners.append(listener)
        egress.ports = [port]
        lines = [f"127.0.0.1:{port}={INSIDE}/proxy.sock"]
        for address, target_port in plan.forwarded():
            egress.ports.append(target_port)
            if not namespace:
                continue  # reached on the host's loopback, at a port its rules allow
            if target_port < _UNPRIVILEGED:  # the sandbox has no capability to listen there
                _append(
                    log_path,
                    f"{NOTE}{address}:{target_port} is not shown in the sandbox (no port below "
                    f"{_UNPRIVILEGED} can be listened on there): reach it through HTTP_PROXY\n",
                )
                continue
            name = f"{address}-{target_port}.sock"
            path = str(folder / name)
            if len(path) > _SOCKET_PATH_MAX:
                raise OSError(f"the socket path {path} is too long for a Unix socket")
            target = Endpoint(address, target_port)
            egress.listeners.append(shared().open(policy, unix_path=path, target=target, on_refusal=report, wait=False))
            lines.append(f"{address}:{target_port}={INSIDE}/{name}")
        egress.bridge = " ".join(lines) if namespace else ""
        url = f"http://127.0.0.1:{port}"
        egress.env = {name: url for name in _PROXY_VARIABLES}
        egress.env.update({"NO_PROXY": _NO_PROXY, "no_proxy": _NO_PROXY, "NODE_USE_ENV_PROXY": "1"})
    except BaseException:
        egress.close()
        raise
    return egress


def reporter(log_path: Path | None, record_path: Path | None) -> Any:
    """The proxy's ``on_refusal`` (and network/direct.py's): an entry in the attempt's network record per refusal (or host not
    reached), and a line in the worker's log per refusal, the first ten of a host and then each power
    of ten (a worker retrying in a loop must not flood either)."""

    def report(refusal: Refusal) -> None:
        count = refusal.count
        if count > _LOG_EVERY and str(count).rstrip("0") != "1":
            return
        if refusal.outcome is Outcome.REFUSED:
            _append(log_path, f"{REFUSED}{_authority(refusal.host, refusal.port)}: {refusal.reason} ({count} so far)\n")
        entry = {"outcome": refusal.outcome.value, "host": refusal.host, "port": refusal.port, "reason": refusal.reason}
        _append(record_path, json.dumps({**entry, "count": count}) + "\n", create=True)

    return report


@dataclass(frozen=True)
class RecordEntry:
    """One entry of an attempt's network record: a destination refused, or allowed and not reached."""

    outcome: Outcome
    host: str
    port: int
    reason: str
    count: int

    @property
    def authority(self) -> str:
        return _authority(self.host, self.port)

    def line(self) -> str:
        """The entry as a person reads it."""
        if self.outcome is Outcome.REFUSED:
            return f"{REFUSED}{self.authority}: {self.reason} ({self.count} so far)"
        return f"{NOTE}allowed host {self.authority} could not be reached: {self.reason} ({self.count} so far)"


RECORD_MAX = 1 << 20  # bytes of a network record read (its entries are throttled per host)


def read_record(path: Path, start: int = 0) -> list[RecordEntry]:
    """The entries of the network record at ``path`` from byte ``start`` (none where it is missing);
    a line that is not an entry is skipped."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read(RECORD_MAX)
    except OSError:
        return []
    found = []
    for raw in data.splitlines():
        try:
            item = json.loads(raw)
            found.append(
                RecordEntry(
                    Outcome(item["outcome"]), str(item["host"]), int(item["port"]), str(item["reason"]), int(item["count"])
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return found


def record_size(path: Path) -> int:
    """Where the entries of an attempt starting now will begin in the record at ``path``."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _append(log_path: Path | None, line: str, *, create: bool = False) -> None:
    """``line`` at the end of the worker's log (appended as its own output is: never through a link),
    or of the network record (``create``: made where missing, private): as the direct-connection guard
    writes them (network/direct.py, which the supervisor imports with the standard library alone)."""
    if log_path is not None:
        direct.append(str(log_path), line, create=create)
