"""A sandbox per worker attempt: bubblewrap (Debian's ``bubblewrap``, what Claude Code uses on Linux).

What a sandboxed process and everything it starts get:

* the whole file system read-only (``--ro-bind / /``), except the paths of its :class:`SandboxSpec`:
  its checkout, its TMPDIR, the git metadata its worktree needs (the workers' object store bound
  over the repository's, which it sees read-only: git/worker_objects.py), its exit file, the user's
  ``workers.sandbox_writable``; its CLI's state folders as a private overlay (reads see the user's
  files, writes go to a tmpfs that ends with the attempt: the user's real folders never change);
* ``workers.sandbox_hidden`` (the orchestrator's ``config.yaml`` and key files by default) replaced by
  an empty file or folder;
* the host's runtime folders (``/run``, ``/var/run``, ``$XDG_RUNTIME_DIR``, ``/tmp/.X11-unix`` and the
  like: :data:`RUNTIME_DIRS`) and the orchestrator's workspace shown empty (``emptied``: a read-only
  tmpfs, mounted before every bind, so the process's own paths below are bound back in), the file
  name resolution needs (``/etc/resolv.conf``'s target where it links into ``/run``) kept;
* its checkout also at the repository's own path, its cwd there (:class:`ProjectView`), where the
  checkout is a linked worktree of a repository the orchestrator lies in or beside;
* no Unix socket of its own making (``unix_sockets`` false, the default): the shim installs a seccomp
  filter before the worker starts (:func:`worker_filter`) under which ``socket(AF_UNIX)`` fails
  with EPERM, so neither the host's path sockets (a read-only bind does not stop ``connect()``) nor
  its abstract ones (no path at all) can be reached; ``socketpair`` stays allowed (Node's and
  Python's child-process pipes); under the same filter, whatever the setting, no ``ptrace``,
  ``process_vm_readv``/``writev`` nor ``pidfd_getfd`` (the shim and its bridge hold what the worker is
  refused; the bridge is also not dumpable), and with a restricted network no socket but Unix, netlink,
  TCP and (in its own namespace) UDP: no MPTCP, SCTP, raw or packet socket (:class:`Refusals`);
* its own PID namespace (``--unshare-pid``): it sees and can signal only its own processes, and
  when the namespace's init dies the kernel kills every process in it, whatever it did with its
  session, process group or environment: the tree is one unit;
* no capabilities (``--cap-drop ALL``: as root, bubblewrap would otherwise keep them, and a root
  worker could remount); a network namespace of its own unless ``workers.sandbox_network: host`` (``allow``: the
  proxy's sockets carried in by the shim, network/egress.py; ``none``: nothing).

The shim (process/runner.py) runs inside the sandbox, so the exit file it writes records the worker's own
wait status; bubblewrap's launcher is the process the runner started (the session leader) and it
ignores the kill ladder's catchable signals (process/runner.py), so SIGTERM reaches the worker while the
launcher waits to report it. Nothing here starts a process: process/backends.py probes the machine, and
starts a process under a spec by its backend.

macOS: Seatbelt (``sandbox-exec``, process/seatbelt.py), the same spec as a profile, untested on this project's machines.
"""

from __future__ import annotations

import functools
import os
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config.schema import SandboxBackend as Backend  # the settings' closed choices, re-exported
from ..config.schema import SandboxMode as SandboxMode
from ..config.schema import SandboxNetwork as SandboxNetwork
from ..network.egress import INSIDE as EGRESS_INSIDE
from ..network.egress import EgressPlan
from ..network.egress import sockets_base as egress_base

PROBE_TIMEOUT = 10.0  # seconds a probe's start may take (NFS or autofs roots have taken 20-30 s)


@dataclass(frozen=True)
class Support:
    """Whether this machine can sandbox, with which backend, and if not, why (a sentence a user can
    act on). ``bwrap``: bubblewrap's path where it starts (None elsewhere, Landlock's case too)."""

    bwrap: str | None
    reason: str = ""
    overlay: bool = False  # bubblewrap >= 0.8 with overlayfs: state folders get a private overlay
    backend: Backend | None = None  # None with ``bwrap``: bubblewrap (existing callers pass the path alone)
    landlock_abi: int = 0  # the kernel's Landlock ABI (0: none)
    bwrap_reason: str = ""  # why bubblewrap does not apply, where Landlock does

    def __post_init__(self) -> None:
        if self.backend is None and self.bwrap is not None:
            object.__setattr__(self, "backend", Backend.BUBBLEWRAP)

    @property
    def available(self) -> bool:
        return self.backend is not None


@dataclass(frozen=True)
class ProjectView:
    """A worker's checkout shown at the repository's own path (``top``, the user's tree there unseen),
    its cwd there too: tools that walk upwards for their configuration (pytest's rootdir, conftest.py,
    Cargo and uv workspaces, tsconfig) stop at the project's, not at a folder around the workspace,
    and an editable install or any absolute path into the repository reaches the worker's files.

    bubblewrap takes each bind's source from the host's view, so what is bound below ``top`` after the
    checkout is the user's: ``kept`` (the orchestrator's folder, its Python, the host's environment
    folders) are bound back read-only at their paths. In the view ``top/.git`` is the checkout's
    ``.git`` file, so the repository's git dir is shown read-only at ``git[1]`` instead (a mount point
    in the emptied workspace), every bind below it lands there (:meth:`at`), and ``pointer`` (a file
    ``gitdir: <there>``) is shown as the checkout's ``.git`` at both of its paths."""

    checkout: str
    top: str
    kept: tuple[str, ...] = ()
    git: tuple[str, str] | None = None  # (the common git dir, where the view shows it)
    pointer: str | None = None

    def at(self, path: str) -> str:
        """Where a bind below the repository's git dir lands in the view (else ``path``)."""
        if self.git is not None and _below(path, [self.git[0]]):
            return self.git[1] + path[len(self.git[0]) :]
        return path

    def place(self, path: str) -> str:
        """``path`` in the checkout as seen at the repository's path (the process's cwd)."""
        if _below(path, [self.checkout]):
            return self.top + path[len(self.checkout) :]
        return path

    def source(self, path: str) -> str:
        """The host's path of what the view shows at ``path``: below the repository's path the
        checkout's file, but for ``kept`` (bound back from the host, at the same path); the checkout
        at its workspace path is itself."""
        if _below(path, [self.checkout, *self.kept]) or not _below(path, [self.top]):
            return path
        return self.checkout + path[len(self.top) :]

    def clean_args(self) -> list[str]:
        """``git clean`` options that keep the mount points of ``kept`` in the checkout (in use: busy)."""
        return [arg for path in self.kept for arg in ("-e", "/" + _glob_escape(path[len(self.top) + 1 :]) + "/")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkout": self.checkout,
            "top": self.top,
            "kept": list(self.kept),
            "git": list(self.git) if self.git is not None else None,
            "pointer": self.pointer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectView:
        git = data.get("git")
        return cls(
            checkout=str(data["checkout"]),
            top=str(data["top"]),
            kept=tuple(str(p) for p in data.get("kept", ())),
            git=(str(git[0]), str(git[1])) if git else None,
            pointer=data.get("pointer"),
        )


def _glob_escape(name: str) -> str:
    """``name`` as a gitignore pattern that matches only itself."""
    return "".join("\\" + c if c in "\\*?[" else c for c in name)


def _same(path: str) -> str:
    return path


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed process tree may write and see. Paths are absolute; a path that does
    not exist is left out (bubblewrap refuses to bind one)."""

    bwrap: str
    writable: tuple[str, ...] = ()
    private: tuple[str, ...] = ()  # state folders: a private overlay where supported, else writable
    # Bound over themselves after ``writable``, inside it: files the process may write in place but
    # never replace (a mount point cannot be unlinked, renamed over or turned into a symlink), and
    # paths it may only read. The orchestrator runs git outside the sandbox on what a worker left in
    # its worktree's git metadata: a planted HEAD, ``.git`` pointer or reflog link would act there.
    fixed: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    # (source, destination) pairs bound after ``fixed``: ``moved`` writable, ``shown`` read-only (the
    # workers' object store is bound over the repository's, which is shown read-only elsewhere).
    moved: tuple[tuple[str, str], ...] = ()
    shown: tuple[tuple[str, str], ...] = ()
    network: SandboxNetwork = SandboxNetwork.HOST
    overlay: bool = False
    die_with_parent: bool = False  # a cluster node's attempts: the tree dies with the node
    chdir: str | None = None
    # An empty regular file shown in place of each hidden file (bound read-only: it reads empty and a
    # write fails). Not /dev/null: bubblewrap's binds are nodev, so it would read "Permission denied".
    empty: str | None = None
    # Folders shown empty (a tmpfs, read-only once the binds below it are made): mounted before every
    # bind, so the process's own paths inside are bound back in. ``kept``: paths under them bound back
    # read-only (what name resolution needs from /run).
    emptied: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    # Of ``emptied``, the folders the server found by their real path once (the host's runtime folders
    # and the proxy's socket base at its decision, its resolved workspace): no ``realpath`` of them per
    # start. None is a worker's to write (root's, or the user's alone), so none becomes a link under a
    # running server; whether each still is a folder is looked at per start. Not sent to a node.
    real: frozenset[str] = field(default=frozenset(), compare=False)
    unix_sockets: bool = False  # False: socket(AF_UNIX) refused inside (the shim's seccomp filter)
    # The project view (:class:`ProjectView`): the checkout also shown at the repository's own path.
    project: ProjectView | None = None
    # ``network`` allow: what the proxy lets it reach (network/egress.py), and the folder of its
    # attempt's proxy sockets, set by the runner that listens on them (shown at EGRESS_INSIDE).
    egress: EgressPlan | None = None
    egress_dir: str | None = None
    # Without a network namespace (Landlock): the TCP ports it may connect to, its proxy's and the
    # forwarded endpoints' (set by the runner with the listeners); None: no such rule.
    egress_ports: tuple[int, ...] | None = None
    # Landlock with a restricted network: the descriptor its launcher sends the listener of its
    # connect() filter over (network/direct.py decides and records its direct connections), and the
    # record where those refusals go (``allow``: its egress plan's; ``none``: this). None: not watched.
    connect_guard: int | None = None
    network_record: str = ""
    # What confines it: bubblewrap (``bwrap`` its path), or Landlock (process/landlock.py: the same
    # spec as access rules; ``landlock_abi`` the kernel's, what the rules may name).
    backend: Backend = Backend.BUBBLEWRAP
    landlock_abi: int = 0
    # Without mounts (Landlock): where its git finds its own git dir, index and work tree
    # (git/worker_gitdir.py), as environment variables; none under bubblewrap, which binds a view.
    git_env: tuple[tuple[str, str], ...] = ()

    def with_writable(self, *paths: str | Path) -> SandboxSpec:
        return self.replaced(writable=(*self.writable, *(str(p) for p in paths)))

    def replaced(self, **changes: Any) -> SandboxSpec:
        """This spec with ``changes``: what ``dataclasses.replace`` makes, without running ``__init__``
        over its 30 fields (an attempt's start copies it four times: its worker's paths, its way out,
        its exit file, its cwd; 14 us a copy by ``replace`` at load 18, 2.5 us so). The same record:
        the class has no ``__post_init__`` and its fields are values taken as given (a name that is no
        field is a TypeError, as with ``replace``)."""
        unknown = changes.keys() - _SPEC_FIELDS
        if unknown:
            raise TypeError(f"SandboxSpec has no field {', '.join(sorted(unknown))}")
        copy = object.__new__(SandboxSpec)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def bubblewrap_argv(self, command: Sequence[str]) -> list[str]:
        """bubblewrap's argv running ``command`` in this sandbox (a list; no shell). Every backend's
        launch, this one's included, is process/backends.py's ``argv``."""
        out = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        out += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--cap-drop", "ALL"]
        if self.network is not SandboxNetwork.HOST:  # allow: its loopback, and the proxy's sockets bound in
            out.append("--unshare-net")
        if self.die_with_parent:
            out.append("--die-with-parent")
        view = self.project
        at = view.at if view is not None else _same
        if view is not None:  # before the workspace is emptied: the folders bound back hold it
            out += ["--bind", view.checkout, view.top]
            for path in _existing(view.kept):
                out += ["--ro-bind", path, path]
        emptied = _folders(self.emptied, self.real)
        # Folders of the repository's git dir shown empty land where the view shows it, once it is bound.
        git_dir = [view.git[0]] if view is not None and view.git is not None else []
        in_git = [p for p in emptied if _below(p, git_dir)]
        for path in emptied:
            if path not in in_git:
                out += ["--tmpfs", path]
        kept = _existing(self.kept)  # (looked at once: both passes below bind what exists)
        for path in kept:
            if not _below(path, git_dir):
                out += ["--ro-bind", path, path]
        if self.network is SandboxNetwork.ALLOW and self.egress_dir is not None:
            out += ["--ro-bind", self.egress_dir, EGRESS_INSIDE]
        if view is not None and view.git is not None:
            out += ["--ro-bind", view.git[0], view.git[1]]
        for path in in_git:
            out += ["--tmpfs", at(path)]
        for path in kept:
            if _below(path, git_dir):  # a sibling's worktree retired since: gone, nothing to show
                out += ["--ro-bind-try", path, at(path)]
        for path in _existing(self.private):
            if self.overlay and os.path.isdir(path):
                out += ["--overlay-src", path, "--tmp-overlay", path]
            else:
                out += ["--bind", path, at(path)]
        for path in _existing(self.writable):
            out += ["--bind", path, at(path)]
        for path in _existing(self.fixed):
            out += ["--bind", path, at(path)]
        for source, destination in self.moved:
            out += ["--bind", source, at(destination)]
        for source, destination in self.shown:
            out += ["--ro-bind", source, at(destination)]
        for path in _existing(self.readonly):
            if view is not None and view.pointer is not None and path == view.checkout + "/.git":
                # The checkout's ``.git`` names its git dir where the view shows it, at both paths.
                out += ["--ro-bind", view.pointer, path, "--ro-bind", view.pointer, view.top + "/.git"]
            else:
                out += ["--ro-bind", path, at(path)]
        bound = [*self.kept, *self.private, *self.writable, *self.fixed, *self.readonly]
        bound += [destination for _, destination in (*self.moved, *self.shown)]
        for path in _existing(self.hidden):
            if _below(path, emptied) and not _below(path, bound):
                continue  # already empty: a mount point there would show its name
            if view is not None and _below(path, [view.top]) and not _below(path, view.kept):
                continue  # the worker's own checkout there, not the file hidden
            if os.path.isdir(path):
                out += ["--tmpfs", path, "--remount-ro", path]
            else:
                out += ["--ro-bind", self.empty or "/dev/null", path]
        for path in emptied:  # after the binds below it: they are mounts of their own and stay as bound
            out += ["--remount-ro", at(path)]
        if self.chdir:
            out += ["--chdir", view.place(self.chdir) if view is not None else self.chdir]
        out.append("--")
        out += list(command)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (a cluster node receives it in the attempt's job)."""
        return {
            "writable": list(self.writable),
            "private": list(self.private),
            "fixed": list(self.fixed),
            "readonly": list(self.readonly),
            "hidden": list(self.hidden),
            "moved": [list(pair) for pair in self.moved],
            "shown": [list(pair) for pair in self.shown],
            "network": self.network.value,
            "empty": self.empty,
            "emptied": list(self.emptied),
            "kept": list(self.kept),
            "unix_sockets": self.unix_sockets,
            "project": self.project.to_dict() if self.project is not None else None,
            "egress": self.egress.to_dict() if self.egress is not None else None,
            "backend": self.backend.value,
            "git_env": [list(pair) for pair in self.git_env],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], support: Support) -> SandboxSpec:
        """The spec a server sent, on this machine (a node): its backend where the node has it."""
        backend = Backend(data.get("backend", Backend.BUBBLEWRAP.value))
        if not support.available:
            raise ValueError(f"this machine cannot sandbox workers: {support.reason}")
        if backend is Backend.BUBBLEWRAP and support.bwrap is None:
            raise ValueError(
                f"the server confines workers with bubblewrap, which this machine cannot start: {support.bwrap_reason}"
            )
        if backend is Backend.LANDLOCK and support.landlock_abi < 1:
            raise ValueError("the server confines workers with Landlock, which this machine's kernel lacks")
        return cls(
            bwrap=support.bwrap or "",
            backend=backend,
            landlock_abi=support.landlock_abi,
            writable=tuple(str(p) for p in data.get("writable", ())),
            private=tuple(str(p) for p in data.get("private", ())),
            fixed=tuple(str(p) for p in data.get("fixed", ())),
            readonly=tuple(str(p) for p in data.get("readonly", ())),
            hidden=tuple(str(p) for p in data.get("hidden", ())),
            moved=_pairs(data.get("moved", ())),
            shown=_pairs(data.get("shown", ())),
            network=SandboxNetwork(data.get("network", SandboxNetwork.HOST.value)),
            overlay=support.overlay,
            empty=data.get("empty"),
            emptied=tuple(str(p) for p in data.get("emptied", ())),
            kept=tuple(str(p) for p in data.get("kept", ())),
            unix_sockets=bool(data.get("unix_sockets", False)),
            project=ProjectView.from_dict(data["project"]) if data.get("project") else None,
            egress=EgressPlan.from_dict(data["egress"]) if data.get("egress") else None,
            git_env=_pairs(data.get("git_env", ())),
        )


_SPEC_FIELDS = frozenset(f.name for f in fields(SandboxSpec))


def _pairs(data: Iterable[Sequence[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(source), str(destination)) for source, destination in data)


def _folders(paths: Iterable[str], real_already: frozenset[str] = frozenset()) -> list[str]:
    """The folders to show empty: each existing one by its real path (``/var/run`` is often a link to
    ``/run``; a tmpfs mounted on a link would land where the link points from the sandbox's setup
    root), once, and none inside another (already empty there). ``real_already``: paths known to be
    their own real path (:attr:`SandboxSpec.real`)."""
    found: list[str] = []
    for path in paths:
        real = path if path in real_already else os.path.realpath(path)
        if os.path.isdir(real) and real != "/" and real not in found:
            found.append(real)
    return [p for p in found if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in found)]


def _below(path: str, folders: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``folders`` or inside one (by name)."""
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def _existing(paths: Iterable[str]) -> list[str]:
    """Each path once, in order, if it exists; nested duplicates are kept (a deeper bind re-opens
    a path below a hidden or private one on purpose)."""
    seen: set[str] = set()
    out = []
    for path in paths:
        if path not in seen and os.path.lexists(path):
            seen.add(path)
            out.append(path)
    return out


# The host's runtime folders: its services' sockets (the Docker daemon's, the system and session buses,
# systemd's, ssh-agent's and gpg-agent's under $XDG_RUNTIME_DIR, X11's), shown empty in every sandbox.
RUNTIME_DIRS = ("/run", "/var/run", "/tmp/.X11-unix", "/tmp/.ICE-unix", "/tmp/.XIM-unix", "/tmp/.font-unix")


def runtime_view(
    environ: Mapping[str, str] | None = None,
    folders: Sequence[str] = RUNTIME_DIRS,
    resolver: Sequence[str] = ("/etc/resolv.conf",),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(emptied, kept): the runtime ``folders`` shown empty (and ``$XDG_RUNTIME_DIR``), and what under
    them stays readable: the file ``/etc/resolv.conf`` links to (systemd-resolved's
    ``/run/systemd/resolve/stub-resolv.conf``, NetworkManager's, resolvconf's), else no name resolves."""
    environ = os.environ if environ is None else environ
    emptied = [*folders]
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        emptied.append(runtime)
    found = _folders(emptied)
    kept = []
    for path in resolver:
        real = os.path.realpath(path)
        if real != path and _below(real, found) and os.path.exists(real):
            kept.append(real)
    return tuple(found), tuple(kept)


# seccomp (Linux): the programs that hold for everything in a sandbox the worker can reach. The shim
# installs the worker's on itself once its network bridge is forked (process/shim.py), so the worker
# and the shim it could otherwise attach to hold it; Landlock's launcher installs the sandbox's on
# itself (process/landlock.py), git run in a sandbox gets the worker's (git/sandboxed.py). Per
# architecture the process runs as (AUDIT_ARCH_*): the system calls that make a socket, socket(family,
# type, protocol) and, for 32-bit x86 programs, socketcall(SYS_SOCKET, ...), whose arguments cannot be
# seen (they are behind a pointer), so every socketcall socket is refused where sockets are filtered
# (glibc calls socket itself since Linux 4.3); and those that reach into another process (ptrace,
# process_vm_readv/writev, pidfd_getfd), always refused: a worker attached to its shim or its bridge,
# which run without its Unix-socket refusal, had their sockets. Any other architecture's calls are allowed.
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK = 1, 2, 10, 16
_SOCK_STREAM, _SOCK_DGRAM = 1, 2
_IPPROTO_TCP, _IPPROTO_UDP = 6, 17
_SOCK_TYPE_MASK = 0xF  # the type without SOCK_NONBLOCK and SOCK_CLOEXEC
_X32 = 0x40000000


@dataclass(frozen=True)
class _Arch:
    """One audit architecture's system call numbers: the socket makers, and those that reach into
    another process (ptrace, process_vm_readv, process_vm_writev, pidfd_getfd)."""

    sockets: tuple[int, ...]
    socketcalls: tuple[int, ...]
    reaching: tuple[int, ...]


_FILTERS: dict[str, tuple[int, int, dict[int, _Arch]]] = {
    # machine: (prctl, seccomp, {audit arch: its numbers}); x32 numbers carry _X32 (its own ptrace and
    # process_vm_* numbers: 521, 539, 540).
    "x86_64": (
        157,
        317,
        {
            0xC000003E: _Arch((41, _X32 | 41), (), (101, 310, 311, 438, *(_X32 | n for n in (521, 539, 540, 438)))),
            0x40000003: _Arch((359,), (102,), (26, 347, 348, 438)),
        },
    ),
    "aarch64": (
        167,
        277,
        {0xC00000B7: _Arch((198,), (), (117, 270, 271, 438)), 0x40000028: _Arch((281,), (), (26, 376, 377, 438))},
    ),
    "riscv64": (167, 277, {0xC00000F3: _Arch((198,), (), (117, 270, 271, 438))}),
}
_EPERM = 1


@dataclass(frozen=True)
class Refusals:
    """What a seccomp program refuses besides reaching into another process: ``socket(AF_UNIX)``
    (``unix``); with ``network``, every family but Unix, netlink and IP, and of IP every socket but
    TCP (protocol 0 or IPPROTO_TCP: not MPTCP, SCTP, raw), and UDP too unless ``datagrams`` (a
    network namespace of its own: its UDP reaches nothing but its own loopback)."""

    unix: bool = True
    network: bool = False
    datagrams: bool = False


def refusals(spec: SandboxSpec, *, unix: bool = True) -> Refusals:
    """What ``spec``'s programs refuse (``unix`` False: the sandbox's own, which its bridge runs under)."""
    restricted = spec.network is not SandboxNetwork.HOST
    own_namespace = spec.backend is Backend.BUBBLEWRAP
    return Refusals(unix=unix and not spec.unix_sockets, network=restricted, datagrams=restricted and own_namespace)


def _bpf(arches: Mapping[int, _Arch], refused: Refusals) -> bytes:
    """A classic BPF seccomp program: EPERM for the reaching calls, for the sockets ``refused`` names
    and, where any socket is refused, for every ``socketcall(SYS_SOCKET)``; else allow. Assembled with
    labels; jumps are relative, forward."""
    ld, jeq, ret, and_ = 0x20, 0x15, 0x06, 0x54  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K, BPF_ALU|AND|K
    allow, deny = 0x7FFF0000, 0x00050000 | _EPERM  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO
    nr, arch, arg0, arg1, arg2 = 0, 4, 16, 24, 32  # struct seccomp_data offsets (the arguments' low 32 bits: little-endian)
    filtered = refused.unix or refused.network
    code: list[tuple[int, str | None, int]] = []  # (opcode, label jumped to when equal, k)
    labels: dict[str, int] = {}

    def label(name: str) -> None:
        labels[name] = len(code)

    code.append((ld, None, arch))
    code += [(jeq, f"arch{i}", audit) for i, audit in enumerate(arches)]
    code.append((ret, None, allow))
    for i, numbers in enumerate(arches.values()):
        label(f"arch{i}")
        code.append((ld, None, nr))
        code += [(jeq, "deny", n) for n in numbers.reaching]
        if filtered:
            code += [(jeq, "socket", n) for n in numbers.sockets] + [(jeq, "deny", n) for n in numbers.socketcalls]
        code.append((ret, None, allow))
    if filtered:
        label("socket")
        code.append((ld, None, arg0))
        if refused.unix:
            code.append((jeq, "deny", _AF_UNIX))
        if refused.network:
            code += [(jeq, "allow", _AF_UNIX), (jeq, "allow", _AF_NETLINK), (jeq, "ip", _AF_INET), (jeq, "ip", _AF_INET6)]
            code.append((ret, None, deny))
            label("ip")
            code += [(ld, None, arg1), (and_, None, _SOCK_TYPE_MASK), (jeq, "stream", _SOCK_STREAM)]
            if refused.datagrams:
                code.append((jeq, "datagram", _SOCK_DGRAM))
            code.append((ret, None, deny))
            label("stream")
            code += [(ld, None, arg2), (jeq, "allow", 0), (jeq, "allow", _IPPROTO_TCP), (ret, None, deny)]
            if refused.datagrams:
                label("datagram")
                code += [(ld, None, arg2), (jeq, "allow", 0), (jeq, "allow", _IPPROTO_UDP), (ret, None, deny)]
        label("allow")
        code.append((ret, None, allow))
    label("deny")
    code.append((ret, None, deny))
    program = [(op, labels[to] - at - 1 if to is not None else 0, k) for at, (op, to, k) in enumerate(code)]
    assert all(0 <= jt < 256 for _, jt, _ in program), "a seccomp jump past 255 instructions"
    return b"".join(struct.pack("=HBBI", op, jt, 0, k) for op, jt, k in program)


@functools.lru_cache(maxsize=8)
def seccomp_program(refused: Refusals) -> tuple[int, int, bytes] | None:
    """(prctl's number, seccomp's, the program) here; None: not Linux, or an architecture not listed."""
    if not sys.platform.startswith("linux"):
        return None
    found = _FILTERS.get(os.uname().machine)
    if found is None:
        return None
    prctl, seccomp, arches = found
    return prctl, seccomp, _bpf(arches, refused)


# connect() per architecture (native and 32-bit; socketcall's connect is not seen: Landlock still decides it).
_CONNECTS: dict[str, dict[int, tuple[int, ...]]] = {
    "x86_64": {0xC000003E: (42, _X32 | 42), 0x40000003: (362,)},
    "aarch64": {0xC00000B7: (203,), 0x40000028: (283,)},
    "riscv64": {0xC00000F3: (203,)},
}
_USER_NOTIF = 0x7FC00000  # SECCOMP_RET_USER_NOTIF


@functools.lru_cache(maxsize=1)
def connect_filter() -> bytes | None:
    """The program that hands every ``connect()`` to the orchestrator (a seccomp user notification:
    network/direct.py decides and records a Landlock worker's direct connections); None where there is none."""
    if not sys.platform.startswith("linux") or os.uname().machine not in _CONNECTS:
        return None
    ld, jeq, ret = 0x20, 0x15, 0x06
    allow = 0x7FFF0000
    code: list[tuple[int, int, int, int]] = [(ld, 0, 0, 4)]  # (opcode, jump if equal, if not, k): the arch
    for arch, numbers in _CONNECTS[os.uname().machine].items():
        # this arch: load nr; each connect number jumps to the notify return; else allow. Another arch: skip the block.
        code.append((jeq, 0, len(numbers) + 3, arch))
        code.append((ld, 0, 0, 0))
        code += [(jeq, len(numbers) - i, 0, n) for i, n in enumerate(numbers)]
        code += [(ret, 0, 0, allow), (ret, 0, 0, _USER_NOTIF)]
    code.append((ret, 0, 0, allow))
    return b"".join(struct.pack("=HBBI", op, jt, jf, k) for op, jt, jf, k in code)


_SENDMSG = {"x86_64": 46, "aarch64": 211, "riscv64": 211}


def connect_guard_words(fd: int) -> str | None:
    """What the perl shim needs to hand a bubblewrap worker's connect() calls to the orchestrator
    (network/direct.py): "FD PRCTL SECCOMP SENDMSG HEX" (the descriptor the listener is sent over, the
    system calls' numbers, the program); None where there is no such program."""
    return _guard_words(fd)


@functools.lru_cache(maxsize=4)  # (the same words for every attempt: the filter and the numbers are the machine's)
def _guard_words(fd: int) -> str | None:
    program, found = connect_filter(), _FILTERS.get(os.uname().machine)
    if program is None or found is None:
        return None
    return f"{fd} {found[0]} {found[1]} {_SENDMSG[os.uname().machine]} {program.hex()}"


def worker_filter(spec: SandboxSpec) -> str | None:
    """What the perl shim installs for a worker of ``spec``: "PRCTL SECCOMP HEX" (the two system calls'
    numbers and the program's bytes); None where it cannot (not Linux, or an architecture not listed:
    the sandbox then leaves Unix sockets open, and says so)."""
    return _filter_words(refusals(spec))


@functools.lru_cache(maxsize=8)  # (one per distinct Refusals: its words made once, not per attempt)
def _filter_words(refused: Refusals) -> str | None:
    found = seccomp_program(refused)
    return None if found is None else f"{found[0]} {found[1]} {found[2].hex()}"


@dataclass(frozen=True)
class Decision:
    """Whether workers run sandboxed, and the one-line note every root job carries saying so (or why not)."""

    spec: SandboxSpec | None
    note: str = ""


# What the Landlock backend gives up against bubblewrap, in one sentence: the start-up note's and doctor's
# summary of the rows marked "no" in docs/sandbox.md's per-backend table (the anchor below is that table's).
LANDLOCK_TABLE = "docs/sandbox.md#where-bubblewrap-cannot-start-landlock"
LANDLOCK_GIVES_UP = (
    "this mode cannot hide a readable file; not held here as under bubblewrap: "
    "private CLI state folders, the project view (what leads a gate to your checkout fails it instead), a PID namespace"
)
# With workers.sandbox_network: allow, what Landlock's port rules do not hold.
LANDLOCK_ALLOW_GIVES_UP = (
    "an address filter (its rules name ports: an IP literal at an allowed port passes the proxy), a listener of its own"
)


def landlock_gives_up(network: SandboxNetwork) -> str:
    """The one line a Landlock sandbox's start-up note ends with: what it does not hold, and where the table is."""
    extra = f", {LANDLOCK_ALLOW_GIVES_UP}" if network is SandboxNetwork.ALLOW else ""
    return f"{LANDLOCK_GIVES_UP}{extra} (the table: {LANDLOCK_TABLE})"


def decide(mode: SandboxMode, support: Support, *, network: SandboxNetwork) -> Decision:
    """``workers.sandbox`` against what the machine can: on and unavailable is a refusal (a
    ValueError the caller turns into its ConfigError); auto and unavailable runs unconfined, saying so."""
    if mode is SandboxMode.OFF:
        return Decision(None, "workers run unconfined (workers.sandbox: off): any worker can write anywhere you can")
    if not support.available:
        if mode is SandboxMode.ON:
            raise ValueError(f"workers.sandbox is on, but {support.reason}")
        return Decision(
            None,
            f"workers run unconfined: {support.reason}; any worker can write anywhere you can "
            "(set workers.sandbox: on to refuse to run without it)",
        )
    where = {
        SandboxNetwork.NONE: "no network",
        SandboxNetwork.HOST: "the host's network",
        SandboxNetwork.ALLOW: "network through the orchestrator's proxy to the allowed hosts only",
    }[network]
    emptied, kept = runtime_view()
    writes = (
        "each writes only its own checkout, its TMPDIR, its CLI's state and its job tree's package caches; your working "
        "tree, refs and stash are read-only to them"
    )
    if support.backend is Backend.LANDLOCK:
        abi = support.landlock_abi
        if network is not SandboxNetwork.HOST and abi < 4:
            raise ValueError(
                f"workers.sandbox_network is {network.value}, but bubblewrap cannot start here ({support.bwrap_reason}) "
                f"and this kernel's Landlock (ABI {abi}) cannot restrict the network (ABI 4, Linux 6.7, can): enable "
                "bubblewrap, or set workers.sandbox_network: host"
            )
        spec = SandboxSpec(
            bwrap="",
            network=network,
            emptied=emptied,
            kept=kept,
            real=frozenset(emptied),
            backend=Backend.LANDLOCK,
            landlock_abi=abi,
        )
        return Decision(
            spec,
            f"workers run sandboxed (Landlock ABI {abi}, {support.bwrap_reason}; {where}): {writes} (workers.sandbox); "
            + landlock_gives_up(network),
        )
    if support.backend is Backend.SEATBELT:
        spec = SandboxSpec(
            bwrap="", network=network, emptied=emptied, kept=kept, real=frozenset(emptied), backend=Backend.SEATBELT
        )
        return Decision(
            spec,
            f"workers run under macOS's Seatbelt (sandbox-exec; {where}), a profile of the same promises that this "
            "project has not tested on a Mac: no PID namespace, no private copy of a CLI's state folders, no project "
            "view (docs/sandbox.md)",
        )
    assert support.bwrap is not None
    if network is SandboxNetwork.ALLOW:  # other attempts' proxy sockets are not a worker's to see
        emptied = (*emptied, *_folders([str(egress_base())]))
    return Decision(
        SandboxSpec(
            bwrap=support.bwrap, network=network, overlay=support.overlay, emptied=emptied, kept=kept, real=frozenset(emptied)
        ),
        f"workers run sandboxed (bubblewrap, {where}): {writes} (workers.sandbox)",
    )


@dataclass(frozen=True)
class Paths:
    """What one worker's sandbox opens, gathered by the engine (who knows the checkout) and the adapter."""

    writable: list[Path] = field(default_factory=list)
    private: list[Path] = field(default_factory=list)
    fixed: list[Path] = field(default_factory=list)
    readonly: list[Path] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)
    shown: list[tuple[Path, Path]] = field(default_factory=list)
    emptied: list[Path] = field(default_factory=list)  # folders shown empty (what of other trees the git dir holds)
    kept: list[Path] = field(default_factory=list)  # paths in them bound back read-only


def for_worker(
    base: SandboxSpec,
    paths: Paths,
    *,
    extra_writable: Sequence[str],
    hidden: Sequence[str],
    emptied: Sequence[str] = (),
    kept: Sequence[str] = (),
    **changes: Any,
) -> SandboxSpec:
    """``base`` (the server's decision) opened for one worker; ``emptied`` and ``kept`` after ``paths``',
    ``changes`` the spec's other fields (one copy of the spec made, not two)."""
    return base.replaced(
        writable=(*(str(p) for p in paths.writable), *(_expanded(x) for x in extra_writable)),
        private=tuple(str(p) for p in paths.private),
        fixed=tuple(str(p) for p in paths.fixed),
        readonly=tuple(str(p) for p in paths.readonly),
        moved=tuple((str(a), str(b)) for a, b in paths.moved),
        shown=tuple((str(a), str(b)) for a, b in paths.shown),
        hidden=tuple(_expanded(x) for x in hidden),
        emptied=(*base.emptied, *(str(p) for p in paths.emptied), *emptied),
        kept=(*base.kept, *(str(p) for p in paths.kept), *kept),
        **changes,
    )


def _expanded(path: str) -> str:
    """``path`` with ``~`` expanded, as a normal path (``str(Path(path).expanduser())``), made once per path
    and home folder: the paths given here are the settings' and the workspace's, the same for every worker."""
    return _expanded_at(path, os.environ.get("HOME"))


@functools.lru_cache(maxsize=1024)
def _expanded_at(path: str, home: str | None) -> str:
    return str(Path(path).expanduser())
