"""A sandbox per worker attempt on macOS: Seatbelt (``/usr/bin/sandbox-exec``), what Claude Code's
sandbox-runtime and OpenAI's Codex use there. **Untested here**: this module is written and checked
on Linux (the profile's text and argv, tests/test_seatbelt.py); nothing in it has run on a Mac.

It gives one :class:`~orchestrator.process.sandbox.SandboxSpec` the same promises bubblewrap does
where Seatbelt can, as a profile in Apple's sandbox language (SBPL):

* ``(deny default)``, then the process tree's own needs: exec and fork (children inherit the
  profile), signals and process information within the same sandbox only, the sysctls and Mach
  services a CLI's runtime reads (:data:`SYSCTLS`, :data:`MACH_SERVICES`: each named for why);
* every file readable, except ``emptied`` folders (their own paths and ``kept`` readable again) and
  ``hidden`` paths (denied last, so nothing re-opens them);
* writes beneath ``writable`` and ``private`` only (and where a ``moved`` pair's writes land: its
  source), ``fixed`` files written in place only, ``readonly`` and ``hidden`` paths denied after
  those grants, and no folder above a protected path renamed, removed or made anew (a worker could
  otherwise move ``logs/`` away and put a link where the orchestrator's git appends);
* the network: ``host`` all of it, ``none`` nothing, ``allow`` only ``proxy_ports`` on loopback;
* no Unix socket of its own (``unix_sockets`` false): connecting to and binding any socket path is
  refused, except the name resolver's (``/private/var/run/mDNSResponder``) where the network is the
  host's. macOS has no abstract sockets, so the paths are all there is to close.

SBPL is last-match-wins between allow and deny, so each deny comes after the allow it narrows. Every
path reaches the profile as a ``-D NAME=path`` parameter, read there with ``(param "NAME")``: the
profile's text depends on how many paths of each kind there are, never on what they say, and no
path is ever parsed as SBPL. The few constant paths in the text are quoted by :func:`quote`.

What Seatbelt cannot do (docs/sandbox.md, "macOS: Seatbelt"): show a path at another path (no bind
mounts: no ``moved``/``shown`` view, no private overlay of state folders, no project view), show a
folder or file empty (emptied folders and hidden paths are refused, "Operation not permitted"), or
give a process tree a PID namespace (processes are found by their tag, as unconfined ones are).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..config import SandboxNetwork
from .sandbox import SandboxSpec

SANDBOX_EXEC = "/usr/bin/sandbox-exec"  # never one found on PATH: a planted sandbox-exec would run unconfined

# macOS's top-level links into /private. The kernel reports a path by its real name, so a rule must
# name /private/tmp to match a file reached as /tmp; each path is given in both forms.
PRIVATE_LINKS = ("/tmp", "/var", "/etc")

# What the runtimes of the CLIs read (Node's os.cpus() and os.totalmem(), Python's os.cpu_count() and
# platform, Go's and Rust's start-up, Java's CPU detection): hardware and OS identity, no other
# process's arguments. ``kern.proc.pid.`` serves a process's questions about itself (and, by pid, the
# name and owner of others: a PID namespace would hide them; Seatbelt cannot).
SYSCTLS = (
    "hw.activecpu",
    "hw.byteorder",
    "hw.cachelinesize",
    "hw.cputype",
    "hw.cpufamily",
    "hw.logicalcpu",
    "hw.logicalcpu_max",
    "hw.machine",
    "hw.memsize",
    "hw.model",
    "hw.ncpu",
    "hw.nperflevels",
    "hw.pagesize",
    "hw.physicalcpu",
    "hw.physicalcpu_max",
    "kern.argmax",
    "kern.hostname",
    "kern.maxfilesperproc",
    "kern.maxproc",
    "kern.ngroups",
    "kern.osproductversion",
    "kern.osrelease",
    "kern.ostype",
    "kern.osversion",
    "kern.usrstack64",
    "kern.version",
    "machdep.cpu.brand_string",
    "sysctl.proc_cputype",
    "vm.loadavg",
)
SYSCTL_PREFIXES = ("hw.optional.", "hw.perflevel", "kern.proc.pgrp.", "kern.proc.pid.")

# Mach services every sandbox may look up, each for a reason. Left out on purpose: the Keychain
# (com.apple.SecurityServer, securityd: a CLI's stored login there is the user's credential; give a
# worker its key by environment), launchservicesd, the window server, fonts and audio (no GUI).
MACH_SERVICES = (
    "com.apple.system.opendirectoryd.libinfo",  # getpwuid/getpwnam: git's identity, ssh, os.userInfo()
    "com.apple.system.opendirectoryd.membership",  # group membership (getgrouplist, id)
    "com.apple.bsd.dirhelper",  # confstr(_CS_DARWIN_USER_TEMP_DIR): the per-user temp folder's name
    "com.apple.cfprefsd.daemon",  # preferences, read only (user-preference-read): Foundation's tools
    "com.apple.cfprefsd.agent",
)
# With a network: verify a TLS certificate with the system's trust store (Go, Rust's native-tls and
# platform verifiers, curl), revocation, and the network configuration (resolvers, proxies).
NETWORK_MACH_SERVICES = (
    "com.apple.trustd.agent",
    "com.apple.ocspd",
    "com.apple.SystemConfiguration.configd",
    "com.apple.SystemConfiguration.DNSConfiguration",
    "com.apple.dnssd.service",
)
RESOLVER_SOCKET = "/private/var/run/mDNSResponder"  # getaddrinfo asks mDNSResponder over this socket

# Devices every process writes or controls whatever its paths: the null device, its terminal, its own
# descriptors reopened by name (/dev/stdout is /dev/fd/1; opening it duplicates the descriptor).
DEVICE_WRITES = ("/dev/null", "/dev/zero", "/dev/tty")
DEVICE_IOCTLS = ("/dev/null", "/dev/zero", "/dev/tty", "/dev/random", "/dev/urandom", "/dev/dtracehelper")


def quote(text: str) -> str:
    """``text`` as an SBPL string literal: in double quotes, backslash and double quote escaped, and
    any other character below space or DEL as a ``\\xHH`` escape (SBPL's reader is TinyScheme's)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def forms(path: str) -> list[str]:
    """The names a rule about ``path`` must match: as given (normalised) and as the kernel reports it
    (its real path, with ``/tmp``, ``/var``, ``/etc`` under ``/private``), each once."""
    given = os.path.normpath(os.path.abspath(path))
    out = [given]
    for name in (given, os.path.realpath(given)):
        for candidate in (name, _private(name)):
            if candidate not in out:
                out.append(candidate)
    return out


def _private(path: str) -> str:
    for link in PRIVATE_LINKS:
        if path == link or path.startswith(link + "/"):
            return "/private" + path
    return path


@dataclass
class _Params:
    """The ``-D`` parameters of one profile, in order, each named for its kind and number."""

    values: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def _name(self, kind: str, value: str) -> str:
        number = self.counts.get(kind, 0)
        self.counts[kind] = number + 1
        self.values.append((f"{kind}_{number}", value))
        return f"{kind}_{number}"

    def add(self, kind: str, paths: Iterable[str], *, files: bool = False) -> list[str]:
        """One ``(subpath (param ...))`` or ``(literal (param ...))`` filter per form of each path
        (a folder, or a path that does not exist yet, by subpath; a file, or any of ``files``, by literal)."""
        filters = []
        for name in dict.fromkeys(name for path in paths for name in forms(path)):
            matcher = "literal" if files or (os.path.lexists(name) and not os.path.isdir(name)) else "subpath"
            filters.append(f'({matcher} (param "{self._name(kind, name)}"))')
        return filters

    def add_literals(self, kind: str, paths: Iterable[str]) -> list[str]:
        """One ``(literal (param ...))`` per path, taken as given (already in every form)."""
        return [f'(literal (param "{self._name(kind, path)}"))' for path in dict.fromkeys(paths)]


def _rule(action: str, operations: str, filters: Sequence[str]) -> list[str]:
    if not filters:
        return []
    return [f"({action} {operations}", *(f"  {f}" for f in filters), ")"]


def _ancestors(protected: Iterable[str], roots: Iterable[str]) -> list[str]:
    """The folders above each protected path a write grant reaches (up to and including its root)."""
    roots = [r for path in roots for r in forms(path)]
    found: list[str] = []
    for path in protected:
        for name in forms(path):
            parent = os.path.dirname(name)
            while parent not in ("/", "") and any(_below(parent, [r]) for r in roots):
                if parent not in found:
                    found.append(parent)
                parent = os.path.dirname(parent)
    return found


def _below(path: str, folders: Iterable[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def _ports(proxy_ports: Sequence[int]) -> list[int]:
    out = []
    for port in proxy_ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"a proxy port must be a number from 1 to 65535, not {port!r}")
        if port not in out:
            out.append(port)
    return out


def _build(spec: SandboxSpec, proxy_ports: Sequence[int]) -> tuple[str, list[tuple[str, str]]]:
    """(the profile, its parameters)."""
    params = _Params()
    hidden = params.add("HIDDEN", spec.hidden)
    lines = ["(version 1)", "(deny default)", ""]
    lines += _process_rules()
    lines += _read_rules(spec, params, hidden)
    lines += _write_rules(spec, params, hidden)
    lines += _network_rules(spec, _ports(proxy_ports))
    return "\n".join(lines) + "\n", params.values


def _process_rules() -> list[str]:
    lines = [
        "; its own process tree: children inherit this profile; signals and process information",
        "; reach only processes in this same sandbox (not the server, not other workers)",
        "(allow process-exec)",
        "(allow process-fork)",
        "(allow signal (target same-sandbox))",
        "(allow process-info* (target same-sandbox))",
        "",
        "; what runtimes read of the machine (SYSCTLS in seatbelt.py says why each)",
    ]
    names = [f"(sysctl-name {quote(n)})" for n in SYSCTLS]
    names += [f"(sysctl-name-prefix {quote(p)})" for p in SYSCTL_PREFIXES]
    lines += _rule("allow", "sysctl-read", names)
    lines += _rule("allow", "mach-lookup", [f"(global-name {quote(n)})" for n in MACH_SERVICES])
    lines += [
        "(allow user-preference-read)",
        '(allow ipc-posix-shm-read* (ipc-posix-name-prefix "apple.cfprefs."))',
        "(allow ipc-posix-sem)  ; Python multiprocessing's locks",
        "",
        "; pseudo-terminals it opens itself (a CLI's shell tool), and the devices every process uses",
        "(allow pseudo-tty)",
        '(allow file-read* file-write* file-ioctl (literal "/dev/ptmx"))',
        '(allow file-read* file-write* (require-all (regex #"^/dev/ttys[0-9]+$") (extension "com.apple.sandbox.pty")))',
        '(allow file-ioctl (regex #"^/dev/ttys[0-9]+$"))',
    ]
    lines += _rule("allow", "file-write-data", [f"(literal {quote(p)})" for p in DEVICE_WRITES])
    lines += ['(allow file-write-data (regex #"^/dev/fd/[0-9]+$"))']
    lines += _rule("allow", "file-ioctl", [f"(literal {quote(p)})" for p in DEVICE_IOCTLS])
    return lines + [""]


def _own(spec: SandboxSpec) -> list[str]:
    """Every path the process's own sandbox opens: readable again inside an emptied folder."""
    pairs = [p for pair in (*spec.moved, *spec.shown) for p in pair]
    return [*spec.writable, *spec.private, *spec.fixed, *spec.readonly, *pairs]


def _read_rules(spec: SandboxSpec, params: _Params, hidden: list[str]) -> list[str]:
    lines = ["; reads: everything, less the emptied folders, less the hidden paths", "(allow file-read*)"]
    emptied = params.add("EMPTIED", spec.emptied)
    lines += _rule("deny", "file-read*", emptied)
    if emptied:
        # Not listable, but a folder inside can be looked up by name: realpath() and the lookup of the
        # paths below, made readable again next, lstat every folder on the way.
        lines += _rule("allow", "file-read-metadata", [f"(require-all (vnode-type DIRECTORY) {f})" for f in emptied])
        lines += _rule("allow", "file-read*", params.add("KEPT", spec.kept) + params.add("OWN", _own(spec)))
    lines += _rule("deny", "file-read*", hidden)
    return lines + [""]


def _write_rules(spec: SandboxSpec, params: _Params, hidden: list[str]) -> list[str]:
    # Seatbelt cannot bind one path at another: a ``moved`` pair's writes are granted where they land
    # (its source), never at its destination (the repository's own object store, its branch folder:
    # read-only to workers). The caller points the program at the source (GIT_OBJECT_DIRECTORY...).
    roots = [*spec.writable, *spec.private, *(source for source, _ in spec.moved)]
    lines = ["; writes: its own folders only", *_rule("allow", "file-write*", params.add("WRITABLE", roots))]
    fixed = params.add("FIXED", spec.fixed, files=True)
    if fixed:
        lines += ["; files it writes in place but never replaces, removes or turns into a link"]
        lines += _rule("deny", "file-write*", fixed) + _rule("allow", "file-write-data", fixed)
    lines += ["; read-only inside its own folders (after the grants above: the last match wins)"]
    lines += _rule("deny", "file-write*", params.add("READONLY", spec.readonly))
    lines += _rule("deny", "file-write*", hidden)
    protected = _ancestors([*spec.fixed, *spec.readonly, *spec.hidden], roots)
    if protected:
        lines += ["; no folder above a protected path is renamed, removed or made anew (a link there)"]
        lines += _rule("deny", "file-write-unlink file-write-create", params.add_literals("ABOVE", protected))
    return lines + [""]


def _network_rules(spec: SandboxSpec, ports: list[int]) -> list[str]:
    try:
        network = SandboxNetwork(spec.network)
    except ValueError:
        raise ValueError(f"unknown sandbox network {spec.network!r} (host, none or allow)") from None
    lines = [f"; network: {network.value}"]
    if network is SandboxNetwork.HOST:
        lines += ["(allow network*)", "(allow system-socket)"]
        lines += _rule("allow", "mach-lookup", [f"(global-name {quote(n)})" for n in NETWORK_MACH_SERVICES])
    elif network is SandboxNetwork.ALLOW:
        # Only the proxy on loopback ("localhost" matches 127.0.0.1 and ::1): names are resolved by the
        # proxy, so the resolver's socket stays closed (no lookups as a way out). trustd checks the
        # certificates of TLS tunnelled through the proxy (it may fetch a certificate's OCSP or issuer
        # URL itself: a way out this profile cannot close).
        lines += [f'(allow network-outbound (remote ip "localhost:{port}"))' for port in ports]
        if ports:
            lines += ['(allow mach-lookup (global-name "com.apple.trustd.agent"))']
    if spec.unix_sockets:
        lines += [
            "; Unix sockets: any path it can reach",
            "(allow system-socket (socket-domain AF_UNIX))",
            "(allow network-bind (local unix-socket))",
            "(allow network-outbound (remote unix-socket))",
        ]
    elif network is SandboxNetwork.HOST:
        lines += [
            "; no Unix socket but the name resolver's (after network*: the last match wins)",
            "(deny network-bind (local unix-socket))",
            "(deny network-outbound (remote unix-socket))",
            f"(allow network-outbound (remote unix-socket (path-literal {quote(RESOLVER_SOCKET)})))",
        ]
    return lines


def profile(spec: SandboxSpec, *, proxy_ports: Sequence[int] = ()) -> str:
    """The SBPL profile confining a process tree to ``spec`` (paths as ``(param ...)``: see :func:`argv`).
    ``proxy_ports``: the loopback ports of the network proxy, the only ones reachable with
    ``network: allow`` (none given: no network at all)."""
    return _build(spec, proxy_ports)[0]


def parameters(spec: SandboxSpec, *, proxy_ports: Sequence[int] = ()) -> list[tuple[str, str]]:
    """The (name, path) pairs :func:`profile` reads, in order."""
    return _build(spec, proxy_ports)[1]


def argv(spec: SandboxSpec, command: Sequence[str], *, proxy_ports: Sequence[int] = ()) -> list[str]:
    """sandbox-exec's argv running ``command`` confined to ``spec`` (an argv list; no shell):
    ``sandbox-exec -p PROFILE -D NAME=path ... -- command...``."""
    if not command:
        raise ValueError("no command to run in the sandbox")
    text, params = _build(spec, proxy_ports)
    out = [SANDBOX_EXEC, "-p", text]
    for name, value in params:
        out += ["-D", f"{name}={value}"]
    return [*out, "--", *command]


def available() -> bool:
    """Whether this machine has Seatbelt's ``sandbox-exec`` (macOS)."""
    return os.access(SANDBOX_EXEC, os.X_OK)
