"""Where a sandboxed worker may connect: ``workers.sandbox_allow``, checked once per connection.

One entry of the list is one destination:

* ``api.anthropic.com``: that host name, any port; ``github.com:443``: that port only;
* ``*.npmjs.org``: any subdomain of npmjs.org (``registry.npmjs.org``, ``a.b.npmjs.org``), not
  ``npmjs.org`` itself: list it too if it is wanted; ``*`` (or ``*:443``): any public host;
* an IP literal, ``203.0.113.5``, ``127.0.0.1:4000``, ``::1`` or ``[::1]:8080`` (an IPv6 address with
  a port goes in brackets); a network, ``10.1.0.0/16`` or ``fd00::/8`` (no port);
* ``!`` before any of these makes it a deny entry: a destination a deny entry matches is refused,
  whatever allows it (deny entries win, the orchestrator's own endpoints included).

Host names compare case-insensitively, a trailing dot ignored; only ASCII names are taken (an
internationalized name in its ``xn--`` form). An invalid entry raises ValueError naming the entry,
what is wrong and a valid example.

A name is checked as asked (:meth:`Policy.check_name`), then each address it resolves to
(:meth:`Policy.check_address`): an address that is not public (private, loopback, link-local such as
the cloud metadata service 169.254.169.254, CGNAT, multicast, reserved, an IPv4 one wrapped in
IPv6) or that is one of this machine's own is refused unless the host as asked is one of the
endpoints the orchestrator itself names (:class:`Endpoint`: its API, a worker kind's model server)
or an allow entry names it literally (its host name, its IP, a network holding it). A wildcard never
opens such an address: a public name whose DNS answer is 10.0.0.5 (DNS rebinding) stays refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

SETTING = "workers.sandbox_allow"
OWN_ADDRESSES_TTL = 60.0  # seconds this machine's addresses are cached (interfaces come and go rarely)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The addresses that are not the public internet, with how a refusal names them (first match wins).
_SPECIAL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("a loopback address", ("127.0.0.0/8", "::1/128")),
    ("an unspecified address", ("0.0.0.0/8", "::/128")),  # connect(0.0.0.0) reaches this machine
    ("a private address", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("a link-local address", ("169.254.0.0/16", "fe80::/10")),
    ("a shared (CGNAT) address", ("100.64.0.0/10",)),
    ("a multicast address", ("224.0.0.0/4", "ff00::/8")),
    ("a reserved address", ("192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4", "::/96", "100::/64", "fec0::/10")),
)
_SPECIAL_NETWORKS: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), label) for label, nets in _SPECIAL for net in nets
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")


@dataclass(frozen=True)
class Endpoint:
    """A destination the orchestrator itself names (its own API, a worker kind's model endpoint):
    always allowed, private or loopback addresses included. ``label`` is the reason a log shows."""

    host: str
    port: int
    label: str = ""


@dataclass(frozen=True)
class Verdict:
    """A decision and its reason: a short phrase for the worker's log."""

    allowed: bool
    reason: str


class Kind(str, Enum):
    """What an entry names."""

    NAME = "name"  # api.anthropic.com
    SUBDOMAINS = "subdomains"  # *.npmjs.org
    ANY = "any"  # *
    ADDRESS = "address"  # 203.0.113.5
    NETWORK = "network"  # 10.1.0.0/16


@dataclass(frozen=True)
class Rule:
    """One parsed entry. ``value``: the name, the domain under a wildcard, or the canonical address."""

    entry: str
    deny: bool
    kind: Kind
    value: str = ""
    port: int | None = None
    network: Network | None = None

    def fits(self, port: int) -> bool:
        return self.port is None or self.port == port


@dataclass
class _Rules:
    """One side's entries, indexed so a check is a few dict lookups (it runs per connection)."""

    names: dict[str, list[Rule]] = field(default_factory=dict)
    subdomains: dict[str, list[Rule]] = field(default_factory=dict)
    anywhere: list[Rule] = field(default_factory=list)
    addresses: dict[str, list[Rule]] = field(default_factory=dict)
    networks: list[Rule] = field(default_factory=list)

    def add(self, rule: Rule) -> None:
        if rule.kind is Kind.NAME:
            self.names.setdefault(rule.value, []).append(rule)
        elif rule.kind is Kind.SUBDOMAINS:
            self.subdomains.setdefault(rule.value, []).append(rule)
        elif rule.kind is Kind.ANY:
            self.anywhere.append(rule)
        elif rule.kind is Kind.ADDRESS:
            self.addresses.setdefault(rule.value, []).append(rule)
        else:
            self.networks.append(rule)

    def by_name(self, key: str, ip: Address | None, port: int) -> Rule | None:
        """The first rule matching the host as asked (a name, or an IP literal)."""
        if ip is not None:
            hit = self.literally(key, ip, port)
        else:
            hit = _first(self.names.get(key), port)
            labels = key.split(".")
            for i in range(1, len(labels)):
                hit = hit or _first(self.subdomains.get(".".join(labels[i:])), port)
        return hit or _first(self.anywhere, port)

    def literally(self, key: str, ip: Address, port: int) -> Rule | None:
        """The first rule naming this host or address itself (no wildcard)."""
        hit = _first(self.names.get(key), port) or _first(self.addresses.get(_canonical(ip)), port)
        bare = _unwrapped(ip)
        return hit or next((r for r in self.networks if r.network is not None and (bare in r.network or ip in r.network)), None)


def _first(rules: list[Rule] | None, port: int) -> Rule | None:
    return next((r for r in rules if r.fits(port)), None) if rules else None


class Policy:
    """A worker's allow-list, compiled. Build it with :meth:`parse`; checks are pure and fast."""

    def __init__(self, rules: Sequence[Rule], always: Sequence[Endpoint], own_addresses: Callable[[], Iterable[str]]) -> None:
        self.rules = tuple(rules)
        self.always = tuple(always)
        self._allow, self._deny = _Rules(), _Rules()
        for rule in self.rules:
            (self._deny if rule.deny else self._allow).add(rule)
        self._always: dict[tuple[str, int], Endpoint] = {}
        for endpoint in self.always:
            key = normal_host(endpoint.host)
            if key is None or not 0 < endpoint.port < 65536:
                raise ValueError(f"not a valid endpoint: {endpoint.host}:{endpoint.port}")
            self._always.setdefault((key, endpoint.port), endpoint)
        self._own = own_addresses

    @classmethod
    def parse(
        cls,
        entries: Sequence[str],
        *,
        always: Sequence[Endpoint] = (),
        own_addresses: Callable[[], set[str]] | None = None,
    ) -> Policy:
        """The policy of ``entries`` (``workers.sandbox_allow``); ValueError on the first invalid one."""
        if isinstance(entries, str):
            raise ValueError(f'{SETTING} must be a list of destinations, not one string (for example ["{entries}"])')
        return cls([parse_entry(e) for e in entries], always, own_addresses or own_machine_addresses)

    def check_name(self, host: str, port: int) -> Verdict:
        """The decision on ``host`` as asked, before it is resolved: deny entries, then the
        orchestrator's endpoints, then allow entries."""
        key = normal_host(host)
        if key is None:
            return Verdict(False, "not a valid host name")
        ip = _ip(key)
        denied = self._deny.by_name(key, ip, port)
        if denied is not None:
            return Verdict(False, f'denied by "{denied.entry}"')
        endpoint = self._always.get((key, port))
        if endpoint is not None:
            return Verdict(True, _label(endpoint))
        allowed = self._allow.by_name(key, ip, port)
        if allowed is not None:
            return Verdict(True, f'allowed by "{allowed.entry}"')
        return Verdict(False, f"not in {SETTING}")

    def check_address(self, host: str, port: int, address: str) -> Verdict:
        """The decision on one address ``host`` resolved to (the name itself passed ``check_name``)."""
        key = normal_host(host) or host
        ip = _ip(address)
        if ip is None:
            return Verdict(False, f"not an IP address ({address})")
        denied = self._deny.literally("", ip, port)
        if denied is not None:
            return Verdict(False, f'denied by "{denied.entry}"')
        endpoint = self._always.get((key, port))
        if endpoint is not None:
            return Verdict(True, _label(endpoint))
        kind = special(ip) or (_OWN_LABEL if _canonical(ip) in self._own_set() else None)
        if kind is None:
            return Verdict(True, "a public address")
        listed = self._allow.literally(key, ip, port)
        if listed is not None:
            return Verdict(True, f'allowed by "{listed.entry}"')
        return Verdict(False, f"{kind} ({address}) that {SETTING} does not list")

    def entries(self) -> list[str]:
        """The effective list, one line per rule, as ``doctor`` prints it."""
        lines = [f"allow {_shown(r)}" for r in self.rules if not r.deny]
        if not lines:
            lines.append(f"allow nothing ({SETTING} is empty)")
        lines += [f"deny {_shown(r).removeprefix('!')}" for r in self.rules if r.deny]
        lines += [f"always {_authority(e.host, e.port)} ({_label(e)})" for e in self.always]
        lines.append("implicit: private, loopback, link-local and this machine's addresses: denied unless listed")
        return lines

    def _own_set(self) -> set[str]:
        own = set()
        for text in self._own():
            ip = _ip(text)
            if ip is not None:
                own.add(_canonical(ip))
        return own


_OWN_LABEL = "one of this machine's addresses"


def parse_entry(entry: str) -> Rule:
    """One entry of ``workers.sandbox_allow`` (the grammar is the module's docstring)."""
    if not isinstance(entry, str):
        raise ValueError(f'{SETTING}: {entry!r}: an entry must be a string (for example "api.anthropic.com")')
    text = entry.strip()
    deny = text.startswith("!")
    body = text[1:].strip() if deny else text

    def bad(what: str, example: str) -> ValueError:
        return ValueError(f'{SETTING}: "{entry}": {what} (for example "{example}")')

    if not body:
        raise (
            bad('a deny entry needs a destination after "!"', "!evil.example.com")
            if deny
            else bad("an entry cannot be empty", "api.anthropic.com")
        )
    if not body.isascii():
        raise bad("only ASCII host names are taken; write an internationalized name in its xn-- form", "xn--bcher-kva.example")
    if "://" in body:
        raise bad("a destination is a host, not a URL", "github.com:443")
    if "/" in body:
        return _network_rule(text, deny, body, bad)
    host, port = _split_port(body, bad)
    if host == "*":
        return Rule(text, deny, Kind.ANY, "*", port)
    if "*" in host:
        if not host.startswith("*.") or "*" in host[2:] or normal_host(host[2:]) is None or _ip(host[2:]) is not None:
            raise bad('a wildcard must be "*" or "*.domain"', "*.npmjs.org")
        return Rule(text, deny, Kind.SUBDOMAINS, normal_host(host[2:]) or "", port)
    ip = _ip(host)
    if ip is not None:
        return Rule(text, deny, Kind.ADDRESS, _canonical(ip), port)
    key = normal_host(host)
    if key is None:
        raise bad('not a valid host name: letters, digits, "-" and "_" in labels between dots', "api.anthropic.com")
    return Rule(text, deny, Kind.NAME, key, port)


def _split_port(body: str, bad: Callable[[str, str], ValueError]) -> tuple[str, int | None]:
    """``host`` and its port (None: any) from ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or bare ``v6``."""
    if body.startswith("["):
        inner, _, rest = body[1:].partition("]")
        ip = _ip(inner)
        if ip is None or ip.version != 6 or (rest and not rest.startswith(":")):
            raise bad("an address in brackets must be IPv6", "[::1]:8080")
        return inner, _port(rest[1:], bad) if rest else None
    if body.count(":") > 1:
        if _ip(body) is None:
            raise bad("not a valid IPv6 address (one with a port goes in brackets)", "[::1]:8080")
        return body, None
    host, colon, port = body.partition(":")
    return host, _port(port, bad) if colon else None


def _port(text: str, bad: Callable[[str, str], ValueError]) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise bad("the port must be a number from 1 to 65535", "github.com:443")
    return int(text)


def _network_rule(text: str, deny: bool, body: str, bad: Callable[[str, str], ValueError]) -> Rule:
    address, _, prefix = body.partition("/")
    if ":" in prefix:
        raise bad("a network takes no port", "10.1.0.0/16")
    if address.startswith("["):
        raise bad("an IPv6 network is written without brackets", "fd00::/8")
    if _ip(address) is None:
        raise bad("a destination is a host or a network, not a URL", "github.com:443")
    try:
        network = ipaddress.ip_network(body, strict=False)
    except ValueError:
        raise bad("not a valid network", "10.1.0.0/16") from None
    if str(network.network_address) != str(ipaddress.ip_address(address)):
        raise bad("the network's host bits must be zero", str(network))
    return Rule(text, deny, Kind.NETWORK, str(network), None, network)


def normal_host(host: str) -> str | None:
    """``host`` as the policy compares it: lowercase, no trailing dot, an IP literal canonical and
    without brackets; None when it is neither a host name nor an IP literal."""
    if host.startswith("[") and host.endswith("]"):
        ip = _ip(host[1:-1])
        return str(ip) if ip is not None and ip.version == 6 else None
    ip = _ip(host)
    if ip is not None:
        return str(ip)
    name = host.lower()
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253 or not name.isascii():
        return None
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return None  # the last check: "10.0.0" or "1.2.3.256" looks like an address and is not one
    return name


def special(ip: Address) -> str | None:
    """How a refusal names ``ip`` when it is not a public address (an IPv4 one wrapped in IPv6
    judged by what it wraps), else None."""
    for candidate in (ip, _unwrapped(ip)):
        for network, label in _SPECIAL_NETWORKS:
            if candidate.version == network.version and candidate in network:
                return label
    return None


def _unwrapped(ip: Address) -> Address:
    """The IPv4 address an IPv6 one carries (mapped ``::ffff:a.b.c.d``, NAT64, 6to4), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def _canonical(ip: Address) -> str:
    """The text two forms of one address share (no IPv6 scope, IPv4 unwrapped)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    return str(_unwrapped(ip))


def _ip(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _label(endpoint: Endpoint) -> str:
    return endpoint.label or f"an endpoint of the orchestrator's ({_authority(endpoint.host, endpoint.port)})"


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _shown(rule: Rule) -> str:
    notes = {Kind.NAME: "any port", Kind.SUBDOMAINS: f"subdomains of {rule.value}, not {rule.value} itself"}
    if rule.kind is Kind.ANY:
        return f"{rule.entry} (any public host)"
    note = notes.get(rule.kind) if rule.port is None or rule.kind is Kind.SUBDOMAINS else None
    return f"{rule.entry} ({note})" if note else rule.entry


_own_lock = threading.Lock()
_own_cache: tuple[float, set[str]] = (float("-inf"), set())


def own_machine_addresses() -> set[str]:
    """Every address of this machine's interfaces (psutil), cached for :data:`OWN_ADDRESSES_TTL`."""
    global _own_cache
    with _own_lock:
        at, found = _own_cache
        if time.monotonic() - at < OWN_ADDRESSES_TTL:
            return found
        import psutil

        found = set()
        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family in (socket.AF_INET, socket.AF_INET6):
                    found.add(address.address.split("%", 1)[0])
        _own_cache = (time.monotonic(), found)
        return found


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def endpoint_of_url(url: str) -> Endpoint | None:
    """The host and port ``url`` connects to (http, https, ws, wss); None for another scheme or no host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return Endpoint(parts.hostname, port or _DEFAULT_PORTS[scheme])
