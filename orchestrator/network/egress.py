"""A sandboxed worker's way out with ``workers.sandbox_network: allow``.

The worker's sandbox has a network namespace of its own (bubblewrap's ``--unshare-net``): a loopback
and no route out, which also closes the host's abstract Unix sockets. Its one way out is the proxy
(network/proxy.py) this process runs, as Claude Code's and Codex's sandboxes do it:

* a folder of Unix sockets listened on by the proxy: ``proxy.sock`` speaks HTTP CONNECT, plain HTTP
  and SOCKS5; one socket per loopback endpoint the orchestrator names (this server's API, a kind's
  model server on 127.0.0.1) forwards raw to that endpoint. One folder per process, shared by every
  attempt with a cgroup of its own (:class:`_Shared`: an attempt is a registration, each connection
  its attempt's by the cgroup the kernel says its peer runs in, network/peer.py), where the kernel
  names a socket's peer by a pidfd; else one per attempt (:func:`open_egress`);
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
import fcntl
import functools
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import direct, peer
from .policy import Endpoint, Policy, endpoint_of_url, parse_entry
from .proxy import Listener, Outcome, Refusal, refuse, shared

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
    which reaches this server at ``api_url`` (a URL that names no host is left out). One per distinct
    set of arguments, shared (a plan never changes: every attempt of a kind asks for the same one)."""
    return _plan(tuple(allow), tuple(hosts), tuple(urls), api_url, tuple((str(url), str(label)) for url, label in labelled))


@functools.lru_cache(maxsize=256)  # a server's distinct plans: one per worker kind and settings, a few
def _plan(
    allow: tuple[str, ...],
    hosts: tuple[str, ...],
    urls: tuple[str, ...],
    api_url: str | None,
    labelled: tuple[tuple[str, str], ...],
) -> EgressPlan:
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
    """One attempt's way out: the folder of its sockets (bound at :data:`INSIDE`), the environment that
    points the worker's programs at them, and the shim's bridge line (``ADDRESS:PORT=SOCKET ...``).
    Its own listeners (``listeners``), or its registration on the shared ones (``registered``)."""

    folder: Path
    listeners: list[Listener] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    bridge: str = ""  # "" without a namespace: nothing to carry in
    ports: list[int] = field(default_factory=list)  # the proxy's port, then each forwarded endpoint's
    registered: _Registered | None = None  # on the shared doors (a cgroup of its own)

    def close(self) -> None:
        """Stop listening (an open tunnel ends with it; the proxy's loop does it soon, nobody waits)
        and remove the folder (shared: the registration, its end written in the registrations file; the shared folder stays)."""
        if self.registered is not None:
            self.registered.owner.unregister(self.registered)
            self.registered = None
            return
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


def _base_path(tmp: str, uid: int) -> Path:
    base = Path(tmp) / f"orchestrator-net-{uid}"
    return Path("/tmp") / f"orchestrator-net-{uid}" if len(str(base)) > 60 else base


@functools.lru_cache(maxsize=4)
def _checked_base(tmp: str, uid: int) -> Path:
    base = _base_path(tmp, uid)
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    found = os.lstat(base)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise OSError(f"{base} is not a private folder of this user's: remove it (the network proxy's sockets go there)")
    return base


def open_egress(
    plan: EgressPlan, *, key: str, log_path: Path | None, namespace: bool = True, cgroups: Mapping[str, str] | None = None
) -> Egress:
    """Listen for one attempt (``key``: its tag); refusals are appended to ``log_path``.

    ``cgroups`` (the attempt's own cgroup, as ``/proc/<pid>/cgroup`` names it: process/cgroups.py)
    with a namespace, where the kernel names a socket's peer by a pidfd (network/peer.py): no listener
    of its own, a registration on the shared doors of this process's folder (:class:`_Shared`), which
    tell its connections from others' by that cgroup. Else its own listeners, as follows.

    ``namespace`` (bubblewrap: the attempt has a network namespace of its own): the proxy's Unix socket
    and one per forwarded endpoint, carried in by the shim's bridge. Without one (Landlock, Seatbelt:
    the worker shares the host's loopback, and the kernel lets it connect to listed TCP ports only): a
    proxy port on 127.0.0.1 of its own (``Egress.ports`` lists it and the forwarded endpoints' ports,
    the ports the worker's rules allow). What was opened is written beside (``plan.json``), so a
    restarted server listens again for an attempt it adopts (:func:`reopen_egress`)."""
    if namespace and cgroups and peer.supported():
        return _SHARED.register(plan, key, log_path, dict(cgroups))
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
    port = _free_port(plan) if namespace else 0
    egress = _listen(folder, plan, port, log_path, namespace)
    saved = {
        "plan": plan.to_dict(),
        "port": egress.ports[0] if not namespace else port,
        "namespace": namespace,
        "log": str(log_path) if log_path is not None else None,
    }
    try:  # (not durable: after a crash of the machine no attempt of before runs to listen for)
        _write_private(folder / "plan.json", saved)
    except BaseException:
        egress.close()
        raise
    return egress


def reopen_egress(key: str) -> Egress | None:
    """Listen again for an attempt a previous server started (its sandbox shows the same folder, so
    new sockets there are its way out again; without a namespace, the same port if it is free); None
    when it had none or its port is taken. One registered on a shared folder is registered again,
    that folder's doors listened on again (its sandbox binds the folder: new sockets in it are seen):
    its registration is found in the registrations file of the server that made it (:class:`_Journal`),
    or a plan file of a server before those files."""
    again = _SHARED.reopen(key)
    if again is not None:
        return again
    shared_plan = _plan_file(key)
    if shared_plan.exists():
        return _SHARED.reopen_plan_file(key, shared_plan)
    folder = _folder(key)
    try:
        saved = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
        plan, port = EgressPlan.from_dict(saved["plan"]), int(saved["port"])
        log_path = Path(saved["log"]) if saved.get("log") else None
        return _listen(folder, plan, port, log_path, bool(saved.get("namespace", True)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_private(path: Path, saved: Mapping[str, Any]) -> None:
    """``saved`` as JSON in a new file only this user reads."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(saved).encode())
    finally:
        os.close(fd)


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


def forget_egress(key: str) -> None:
    """An attempt a previous server registered on its shared doors that ended while no server ran:
    its registration ended in that server's registrations file (or its plan file removed), so neither
    that file nor the shared folder it names is kept for it."""
    _SHARED.forget(key)
    with contextlib.suppress(OSError):
        os.unlink(_plan_file(key))


def _plan_file(key: str) -> Path:
    """A registered attempt's plan (on a shared folder) as a server before the registrations files
    wrote it (:class:`_Journal`), beside where its own folder would be: still read at a restart."""
    return sockets_base() / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")


def _bridge(
    plan: EgressPlan, port: int, log_path: Path | None, unshown: list[str] | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """The bridge's lines (``ADDRESS:PORT=SOCKET``, the proxy's first) and the forwarded endpoints
    they carry in; one below :data:`_UNPRIVILEGED` is told in the log (or its note put in ``unshown``)
    and left to the proxy."""
    lines = [f"127.0.0.1:{port}={INSIDE}/proxy.sock"]
    carried: list[tuple[str, int]] = []
    for address, target_port in plan.forwarded():
        if target_port < _UNPRIVILEGED:  # the sandbox has no capability to listen there
            note = (
                f"{NOTE}{address}:{target_port} is not shown in the sandbox (no port below "
                f"{_UNPRIVILEGED} can be listened on there): reach it through HTTP_PROXY\n"
            )
            if unshown is not None:
                unshown.append(note)
            else:
                _append(log_path, note)
            continue
        lines.append(f"{address}:{target_port}={INSIDE}/{_socket_name(address, target_port)}")
        carried.append((address, target_port))
    return lines, carried


@dataclass(frozen=True)
class _Parts:
    """What every attempt of one plan (less its record) and proxy port shares on the shared doors:
    the compiled policy, the bridge's line, the endpoints carried in and the notes of those that are
    not (each written in every such attempt's log), the ports, and the plan's part of its line in
    the registrations file."""

    policy: Policy
    bridge: str
    carried: tuple[Endpoint, ...]
    unshown: tuple[str, ...]
    ports: tuple[int, ...]
    plan_json: str  # ``"allow":[...],"always":[...]``


@functools.lru_cache(maxsize=256)  # a server's distinct plans: one per worker kind and settings, a few
def _parts(allow: tuple[str, ...], always: tuple[Endpoint, ...], port: int) -> _Parts:
    plan = EgressPlan(allow, always)
    unshown: list[str] = []
    lines, carried = _bridge(plan, port, None, unshown)
    listed = json.dumps(plan.to_dict())
    return _Parts(
        policy=plan.policy(),
        bridge=" ".join(lines),
        carried=tuple(Endpoint(address, target_port) for address, target_port in carried),
        unshown=tuple(unshown),
        ports=(port, *(p for _, p in plan.forwarded())),
        plan_json=listed[1 : listed.rindex(', "record"')],
    )


def _registration_line(
    key: str, parts: _Parts, record: str, port: int, log_path: Path | None, folder: Path, cgroups: Mapping[str, str]
) -> bytes:
    """An attempt's line in the registrations file: what :meth:`_Shared._registered_again` reads
    (``EgressPlan.to_dict``'s plan, its port, log, shared folder and cgroups), its plan's part made
    once per plan (:class:`_Parts`)."""
    text = _string(key)
    log_text = "null" if log_path is None else _string(str(log_path))
    return (
        f'{{"+":{text},"plan":{{{parts.plan_json},"record":{_string(record)}}},"port":{int(port)},'
        f'"log":{log_text},"shared":{_string(str(folder))},"cgroups":{json.dumps(cgroups)}}}\n'
    ).encode()


_string = json.encoder.encode_basestring_ascii  # a str as a JSON string (json.dumps' own, without its checks)


def _socket_name(address: str, port: int) -> str:
    return f"{address}-{port}.sock"


def _proxy_env(port: int) -> dict[str, str]:
    return dict(_proxy_variables(port))


@functools.lru_cache(maxsize=8)  # (a copy is handed out: the caller's to change)
def _proxy_variables(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    env = {name: url for name in _PROXY_VARIABLES}
    env.update({"NO_PROXY": _NO_PROXY, "no_proxy": _NO_PROXY, "NODE_USE_ENV_PROXY": "1"})
    return env


def _free_port(plan: EgressPlan) -> int:
    """The proxy's port on the sandbox's loopback: PROXY_PORT, unless a forwarded endpoint takes it."""
    return _free_port_of(tuple(plan.allow), tuple(plan.always))


@functools.lru_cache(maxsize=64)  # (as _forwarded: once per distinct plan, not per attempt)
def _free_port_of(allow: tuple[str, ...], always: tuple[Endpoint, ...]) -> int:
    taken = {port for address, port in _forwarded(allow, always) if address == "127.0.0.1"}
    return next(p for p in range(PROXY_PORT, PROXY_PORT + 100) if p not in taken)


@dataclass(eq=False)
class _Registered:
    """One attempt on the shared doors: the cgroups its processes run in, and its own listener per
    door its plan names (None: the proxy's; else the forwarded endpoint's), which never listens: it
    holds the attempt's policy, tally, reports and open connections."""

    cgroups: dict[str, str]
    doors: dict[Endpoint | None, Listener]
    owner: _Shared
    key: str  # its tag: its lines in the registrations file
    closed: bool = False


class _Throttle:
    """A warning at most every ``every`` seconds, with how many were held back."""

    def __init__(self, every: float = 10.0) -> None:
        self._every, self._last, self._held = every, 0.0, 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self._every and self._last:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        log.warning("%s%s", message, f" ({held} more since the last such line)" if held else "")


class _Shared:
    """This process's shared doors and the attempts registered on them.

    One folder per process (``shared-<pid>`` under :func:`sockets_base`, 0700), made once, holding
    ``proxy.sock`` and one socket per forwarded endpoint any attempt's bridge carries (made at the
    first that does), listened on by the proxy; each sandbox binds the whole folder at :data:`INSIDE`.
    An attempt is a dict entry (its cgroups -> its :class:`_Registered`) and a line in this process's
    registrations file (:class:`_Journal`), which a restarted server reads (:meth:`reopen`): such a
    server listens again at the same paths in the same folder, which the running sandboxes see (a bind
    of a directory shows what is made in it since).

    A connection's attempt is the one whose cgroups the kernel says its peer is in (network/peer.py);
    none, or a door that attempt's plan does not name, closes it (the second a refusal in its log)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_cgroup: dict[tuple[str, str], _Registered] = {}
        self._doors: dict[tuple[Path, Endpoint | None], Listener] = {}  # (folder, target): listening
        self._own: Path | None = None
        self._unknown = _Throttle()
        self._journal: _Journal | None = None
        self._journal_lock = threading.Lock()
        self._read: dict[str, tuple[tuple[int, int, int], dict[str, dict[str, Any]]]] = {}  # others' files, replayed
        self._read_lock = threading.RLock()  # (adopting threads at a restart read and end in them at once)
        # A sweep_dead(for_forks=True) ran in this process, or in the one it was forked from before it
        # forked it (a node's, cluster/node.py): it stands for the sweep of this process's first registration.
        self.swept_for_forks = False

    def register(self, plan: EgressPlan, key: str, log_path: Path | None, cgroups: dict[str, str]) -> Egress:
        return self._register(self._folder(), plan, key, _free_port(plan), log_path, cgroups)

    def reopen(self, key: str) -> Egress | None:
        """``key``'s registration by a previous server (the last registrations file that holds it),
        registered again here and ended in that file; None where no file holds it or it is not one
        of this user's shared folders."""
        with self._read_lock:
            found = next(((path, live[key]) for path, live in self._others() if key in live), None)
            if found is None:
                return None
            path, saved = found
            egress = self._registered_again(key, saved)
            if egress is not None:
                self._ended_in(path, [key])
            return egress

    def reopen_plan_file(self, key: str, path: Path) -> Egress | None:
        """As :meth:`reopen`, from the plan file a server before the registrations files wrote."""
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        egress = self._registered_again(key, saved) if isinstance(saved, dict) else None
        if egress is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return egress

    def forget(self, key: str) -> None:
        """``key``'s registration by a previous server ended in its file (the attempt is gone)."""
        with self._read_lock:
            for path, live in list(self._others()):
                if key in live:
                    self._ended_in(path, [key])

    def unregister(self, registered: _Registered) -> None:
        registered.closed = True
        for door in registered.doors.values():  # before the look below: a connection added since sees it (proxy._serve)
            door.closed = True
        with self._lock:
            for item in registered.cgroups.items():
                if self._by_cgroup.get(item) is registered:
                    del self._by_cgroup[item]
        journal = self._journal
        if journal is not None:
            try:  # (no wake-up of the proxy's loop: a line appended in the caller's thread)
                journal.end(registered.key)
            except OSError as exc:
                log.warning(
                    "network: the end of %s's registration could not be written in %s: %s", registered.key, journal.path, exc
                )
        busy = [door for door in registered.doors.values() if door._tasks]
        if busy:  # in the proxy's thread: its open connections end there
            with contextlib.suppress(RuntimeError):  # the proxy is stopped (and its connections with it)
                shared().later(_unregistered, busy)

    def _registered_again(self, key: str, saved: Mapping[str, Any]) -> Egress | None:
        try:
            plan, port = EgressPlan.from_dict(saved["plan"]), int(saved["port"])
            log_path = Path(saved["log"]) if saved.get("log") else None
            folder, cgroups = Path(saved["shared"]), {str(k): str(v) for k, v in dict(saved["cgroups"]).items()}
            if folder.parent != sockets_base() or not cgroups:
                return None
            return self._register(folder, plan, key, port, log_path, cgroups)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _register(
        self, folder: Path, plan: EgressPlan, key: str, port: int, log_path: Path | None, cgroups: dict[str, str]
    ) -> Egress:
        parts = _parts(plan.allow, plan.always, port)
        report = reporter(log_path, Path(plan.record) if plan.record else None)
        for note in parts.unshown:
            _append(log_path, note)
        proxy = shared()
        doors: dict[Endpoint | None, Listener] = {None: Listener(parts.policy, on_refusal=report, _proxy=proxy)}
        self._door(folder, None)
        for target in parts.carried:
            doors[target] = Listener(parts.policy, target=target, on_refusal=report, _proxy=proxy)
            self._door(folder, target)
        registered = _Registered(cgroups, doors, self, key)
        with self._lock:
            for item in cgroups.items():
                self._by_cgroup[item] = registered
        egress = Egress(folder, env=_proxy_env(port), bridge=parts.bridge, ports=list(parts.ports), registered=registered)
        line = _registration_line(key, parts, plan.record, port, log_path, folder, cgroups)
        try:  # (not durable: after a crash of the machine no attempt of before runs to listen for)
            self._own_journal().add(key, line)
        except BaseException:
            egress.close()
            raise
        return egress

    def _own_journal(self) -> _Journal:
        with self._journal_lock:
            if self._journal is None:
                self._journal = _Journal(sockets_base())
            return self._journal

    def _others(self) -> Iterator[tuple[Path, dict[str, dict[str, Any]]]]:
        """The registrations files of other servers (of this process's before it, and of others of
        this user's), each replayed: its live registrations by key. Read again only once changed."""
        base = sockets_base()
        own = self._journal.path.name if self._journal is not None else None
        try:
            names = sorted(os.listdir(base), reverse=True)
        except OSError:
            return
        for name in names:
            if not (name.startswith(_JOURNAL_PREFIX) and name.endswith(_JOURNAL_SUFFIX)) or name == own:
                continue
            path = base / name
            try:
                found = os.stat(path)
                stamp = (found.st_ino, found.st_size, found.st_mtime_ns)
                cached = self._read.get(name)
                if cached is None or cached[0] != stamp:
                    cached = self._read[name] = (stamp, _replay(path))
            except OSError:
                continue
            yield path, cached[1]

    def _ended_in(self, path: Path, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``keys``' ends appended to another server's registrations file (now ours: moved here, or
        ended), and that file removed once it holds nothing live and its server has ended. What it
        still holds live (the caller holds ``_read_lock``)."""
        live: dict[str, dict[str, Any]] = {}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return live
        try:
            _write_all(fd, b"".join(map(_ended_line, keys)))
            cached = self._read.get(path.name)
            if cached is not None:
                live = cached[1]
                for key in keys:
                    live.pop(key, None)
                found = os.fstat(fd)
                self._read[path.name] = ((found.st_ino, found.st_size, found.st_mtime_ns), live)
            else:
                live = _replay(path)
        except OSError:
            return live
        finally:
            os.close(fd)
        if not live:
            self._remove_unheld(path)
        return live

    def _remove_unheld(self, path: Path) -> None:
        """Another server's registrations file that holds nothing live, removed unless its server runs."""
        if not _held(path):
            with contextlib.suppress(OSError):
                os.unlink(path)
            self._read.pop(path.name, None)

    def _folder(self) -> Path:
        if self._own is None or not self._own.is_dir():
            base = sockets_base()
            folder = base / f"shared-{os.getpid()}"
            if self._own is not None or not self.swept_for_forks:
                self.sweep(base, keep=folder)
            # The registrations file first, held: a sweep tells a running server's folder by it.
            with self._journal_lock:  # (removed with the folder by a cleaner of /tmp: made again, its lines kept)
                if self._journal is None:
                    self._journal = _Journal(base)
                elif not self._journal.path.exists():
                    self._journal = _Journal(base, self._journal)
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
            found = os.lstat(folder)
            if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
                raise OSError(
                    f"{folder} is not a private folder of this user's: remove it (the network proxy's sockets go there)"
                )
            self._own = folder
        return self._own

    def sweep(self, base: Path, keep: Path) -> None:
        """What servers that have ended left here, gone: in the registrations file of each (its flock
        not held: :func:`_held`), the registrations whose attempt has ended (its cgroups removed or
        empty, as the kernel says: :func:`judge_attempts`) ended; such a file removed once it holds
        none; and the shared folders of ended servers that no live registration (or a plan file of
        before the files) names. An attempt still running keeps its line and its folder for the
        server that adopts it, whenever that is. At a server's start (:func:`sweep_dead`) and at its
        first registration (``keep``: its own folder), unless a sweep before a fork stands for that
        one (``sweep_dead``'s ``for_forks``)."""
        named: set[str] = set()
        ended: set[str] = set()  # the pids of the servers whose file is not held (before it goes)
        with self._read_lock:
            for path, live in list(self._others()):
                if not _held(path):
                    ended.add(path.name[len(_JOURNAL_PREFIX) :].partition("-")[0])
                    gone = [key for key, saved in live.items() if _ended_attempt(saved)]
                    if gone:
                        live = self._ended_in(path, gone)
                    elif not live:
                        self._remove_unheld(path)
                named.update(str(saved.get("shared")) for saved in live.values())
            # The folders this process listens in: an attempt it adopted keeps its dead server's, and
            # its line has moved into this process's own file, which ``_others`` leaves out. (Read under
            # ``_read_lock``, which an adoption holds from its doors opened to its old line ended.)
            with self._lock:
                named.update(str(folder) for folder, _ in self._doors)
        _sweep_leftovers(base)
        _sweep_shared(base, keep, named, ended)

    def _door(self, folder: Path, target: Endpoint | None) -> None:
        """The shared door of ``folder`` for ``target``, listening (opened at its first use, or again
        once the proxy closed it)."""
        with self._lock:
            door = self._doors.get((folder, target))
            if door is not None and not door.closed:
                return
            path = str(folder / ("proxy.sock" if target is None else _socket_name(target.host, target.port)))
            if len(path) > _SOCKET_PATH_MAX:
                raise OSError(f"the socket path {path} is too long for a Unix socket")
            self._doors[(folder, target)] = shared().open(
                _NOBODY, unix_path=path, target=target, wait=False, identify=functools.partial(self._identify, target)
            )

    def _identify(self, target: Endpoint | None, sock: Any) -> Listener | None:
        """The listener of the attempt whose cgroups ``sock``'s peer is in, at this door (the proxy's loop)."""
        found = peer.peer_cgroups(sock) or {}
        registered = None
        if found:
            with self._lock:
                registered = next((r for item in found.items() if (r := self._by_cgroup.get(item)) is not None), None)
        if registered is None or registered.closed or any(found.get(k) != v for k, v in registered.cgroups.items()):
            where = "the proxy" if target is None else _authority(target.host, target.port)
            self._unknown.warn(
                f"network: a connection to {where} from a process in no running attempt's cgroup was closed "
                "(a process that left its attempt's cgroup, or one of no attempt)"
            )
            return None
        door = registered.doors.get(target)
        if door is None and target is not None:
            refuse(registered.doors[None], target.host, target.port, "not an endpoint this worker's plan names")
        return door


_NOBODY = Policy.parse(())  # a shared door's own policy: it allows nothing (each connection is its attempt's)
_SHARED = _Shared()


AttemptRuns = Callable[[Mapping[str, str]], bool | None]  # an attempt's cgroups -> whether a process of it runs
_attempt_runs: AttemptRuns | None = None  # (judge_attempts) None: no registration is judged ended


def judge_attempts(runs: AttemptRuns) -> None:
    """How this process tells whether the attempt of a dead server's registration still runs: ``runs``
    reads its cgroups (as ``/proc/<pid>/cgroup`` names them) and says True, False (no process of it
    left: removed or empty, the kernel's word) or None (cannot tell: kept). The process layer's
    (process/cgroups.py ``holds_processes``, handed down by the runner: this layer reads no cgroupfs);
    until it is given, a sweep ends no registration."""
    global _attempt_runs
    _attempt_runs = runs


def sweep_dead(runs: AttemptRuns, *, for_forks: bool = False) -> None:
    """At a server's start (process/runner.py ``sweep_dead_servers``): what servers of this user's that have ended left in the
    sockets folder, gone (:meth:`_Shared.sweep`, the attempts judged by ``runs``: :func:`judge_attempts`);
    nothing made where there is none yet.

    ``for_forks``: a node's, before it forks its workers (and again before it forks one to replace
    one that died): this sweep stands for the one at the first registration of this process and of
    those it forks from now on, each of which would otherwise replay every registrations file again
    (about 8 ms of CPU each: 5% of three 8-slot nodes' CPU in a 300-worker run)."""
    judge_attempts(runs)
    if _base_path(tempfile.gettempdir(), os.getuid()).is_dir():
        base = sockets_base()
        _SHARED.sweep(base, keep=base / f"shared-{os.getpid()}")
    if for_forks:  # (once it has swept: one that failed leaves each process its own)
        _SHARED.swept_for_forks = True


def _ended_attempt(saved: Mapping[str, Any]) -> bool:
    """Whether the attempt of a registration (a line of a dead server's file) has ended, as the kernel
    says: its cgroups removed or empty (no process of it runs: each was born in them and cannot leave
    them). One whose cgroups cannot be read, or where no judge was given, is kept."""
    cgroups, runs = saved.get("cgroups"), _attempt_runs
    if not isinstance(cgroups, dict) or not cgroups or runs is None:
        return False
    return runs({str(k): str(v) for k, v in cgroups.items()}) is False


def _sweep_leftovers(base: Path) -> None:
    """A registrations file's rewrite (``_Journal._compact``) that its server's death cut short: held
    by that server while it is made, so one not held is a dead server's, and goes."""
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            if name.startswith(_JOURNAL_PREFIX) and name.endswith(_JOURNAL_SUFFIX + ".new") and not _held(base / name):
                with contextlib.suppress(OSError):
                    os.unlink(base / name)


def _sweep_shared(base: Path, keep: Path, named: set[str], ended: set[str]) -> None:
    """Remove the shared folders (``shared-<pid>``) of servers that have ended and that neither
    ``named`` (the live registrations of other servers' files) nor an attempt's plan file of before
    those names. A server makes its registrations file, held, before its folder: a folder whose pid
    has a file held is a running server's; one whose files are none held (or were found so by this
    sweep, ``ended``, which removed them) an ended server's, whatever process has its pid now. One
    with no file at all is a server's of before the files (or one in its first moments): ended when
    its pid runs no more."""
    try:
        names = os.listdir(base)
        for name in names:
            if name.endswith(".json"):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    named.add(str(json.loads((base / name).read_text(encoding="utf-8")).get("shared")))
    except OSError:
        return
    for name in names:
        folder = base / name
        pid = name.removeprefix("shared-")
        if folder == keep or not name.startswith("shared-") or not pid.isdigit() or str(folder) in named:
            continue
        files = list(base.glob(f"{_JOURNAL_PREFIX}{pid}-*{_JOURNAL_SUFFIX}"))
        if any(map(_held, files)) or (not files and pid not in ended and _alive(int(pid))):
            continue
        _remove_folder(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unregistered(busy: list[Listener]) -> None:
    """In the proxy's thread: an unregistered attempt's open connections ended."""
    for door in busy:
        for task in list(door._tasks):
            task.cancel()


_JOURNAL_PREFIX = "registrations-"
_JOURNAL_SUFFIX = ".jsonl"
_COMPACT_AT = 1 << 18  # bytes: a registrations file this long, more than half of it ended, is rewritten


class _Journal:
    """This process's registrations file (``registrations-<pid>-<random>.jsonl`` under
    :func:`sockets_base`, 0600): a line appended per registration on the shared doors (its key, plan,
    port, log, shared folder and cgroups) and one per its end, where a file per attempt cost a
    creation and an unlink each (0.1-0.2 ms of the server's CPU). A restarted server replays the files
    of the servers before it (:meth:`_Shared.reopen`), registers each attempt it adopts again (in its
    own file) and appends its end to the old one, which goes once it holds nothing live. Rewritten
    with its live lines alone (a new file renamed over it) when it has grown long and is mostly ended.
    Not durable, as the plan files were not: after a crash of the machine no attempt of before runs.

    The file is held by an exclusive ``flock`` for the process's life, so whether its server has ended
    is the kernel's word (:func:`_held`), not a pid that can be reused."""

    def __init__(self, base: Path, before: _Journal | None = None) -> None:
        self.path = base / f"{_JOURNAL_PREFIX}{os.getpid()}-{os.urandom(4).hex()}{_JOURNAL_SUFFIX}"
        self._lock = threading.Lock()
        self._live: dict[str, bytes] = {}  # key -> its line
        self._live_bytes = 0
        self._fd = _held_file(self.path)
        self._size = 0
        self._next: _Journal | None = None  # the file that replaced this one (``_moved_to``)
        if before is not None:
            before._moved_to(self)

    def _moved_to(self, after: _Journal) -> None:
        """This file's live lines written into ``after`` (new: no other thread has it yet), its
        descriptor closed, and every later line sent there, in one step under its lock. A thread that
        took this journal before it was replaced (``_Shared.unregister`` reads it unlocked) must never
        write through the closed number: the next open in the process gets it, and a sandboxed git's
        seccomp memfd written so gave bubblewrap a program cut short ("Invalid seccomp data")."""
        with self._lock:
            after._live = dict(self._live)
            after._live_bytes = self._live_bytes
            if after._live:
                data = b"".join(after._live.values())
                _write_all(after._fd, data)
                after._size = len(data)
            self._close()
            self._next = after

    def add(self, key: str, line: bytes) -> None:
        """``key``'s registration (its line, :func:`_registration_line`), appended."""
        with self._lock:
            after = self._next
            if after is None:
                _write_all(self._fd, line)
                self._size += len(line)
                self._live_bytes += len(line) - len(self._live.get(key, b""))
                self._live[key] = line
                return
        after.add(key, line)

    def end(self, key: str) -> None:
        with self._lock:
            after = self._next
            if after is None:
                self._end(key)
                return
        after.end(key)

    def _end(self, key: str) -> None:
        """``end`` in this file (its lock held)."""
        line = self._live.pop(key, None)
        if line is None:
            return
        self._live_bytes -= len(line)
        ended = _ended_line(key)
        _write_all(self._fd, ended)
        self._size += len(ended)
        if self._size > _COMPACT_AT and self._live_bytes * 2 < self._size:
            self._compact()

    def _compact(self) -> None:
        """The live lines alone, in a new file renamed over this one (a reader sees either whole)."""
        fresh = self.path.with_name(self.path.name + ".new")
        data = b"".join(self._live.values())
        try:
            fd = _held_file(fresh, replace=True)
        except OSError as exc:
            log.warning("network: %s could not be compacted: %s", self.path, exc)
            return
        try:
            _write_all(fd, data)
            os.rename(fresh, self.path)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(fresh)
            log.warning("network: %s could not be compacted: %s", self.path, exc)
            return
        self._close()
        self._fd, self._size = fd, len(data)

    def _close(self) -> None:
        """Its descriptor closed, and forgotten: a late write fails on -1, never lands in a reused number."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1


def _held_file(path: Path, *, replace: bool = False) -> int:
    """A new private file at ``path`` for appending, held by this process's exclusive ``flock``."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if replace else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _held(path: Path) -> bool:
    """Whether a live process holds the registrations file at ``path`` (its server runs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True  # (cannot tell: kept)
    finally:
        os.close(fd)
    return False


def _replay(path: Path) -> dict[str, dict[str, Any]]:
    """The live registrations of the file at ``path`` by key (a line cut short by a crash is skipped)."""
    live: dict[str, dict[str, Any]] = {}
    with path.open("rb") as f:
        data = f.read()
    for raw in data.splitlines():
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        if "+" in item:
            live[str(item["+"])] = item
        elif "-" in item:
            live.pop(str(item["-"]), None)
    return live


def _ended_line(key: str) -> bytes:
    """``json.dumps({"-": key})``'s line, by its string encoder alone (5.6 us -> 0.8 a line)."""
    return f'{{"-": {_string(key)}}}\n'.encode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
        egress.ports = [port, *(p for _, p in plan.forwarded())]
        if namespace:  # each forwarded endpoint a socket of its own; without, reached on the host's loopback
            lines, carried = _bridge(plan, port, log_path)
            for address, target_port in carried:
                path = str(folder / _socket_name(address, target_port))
                if len(path) > _SOCKET_PATH_MAX:
                    raise OSError(f"the socket path {path} is too long for a Unix socket")
                target = Endpoint(address, target_port)
                egress.listeners.append(shared().open(policy, unix_path=path, target=target, on_refusal=report, wait=False))
            egress.bridge = " ".join(lines)
        egress.env = _proxy_env(port)
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
