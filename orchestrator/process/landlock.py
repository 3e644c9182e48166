"""The sandbox where bubblewrap cannot start: Landlock (the kernel's access rules; no binary, no
namespaces), computed from the same :class:`~orchestrator.process.sandbox.SandboxSpec` bubblewrap's
argv is built from, and applied by a launcher of a few lines of Perl that restricts itself and execs.

What a Landlock-confined process may do (docs/sandbox.md, "Where bubblewrap cannot start"):

* **write** (every right, beneath): ``writable``, ``private`` (no overlay: the real state folders, as
  below bubblewrap 0.9), ``fixed``, each ``moved`` pair's destination (a CLI's scratch folder, the
  tree's ref folder), the character devices a program writes (:data:`DEVICES`);
* **read and execute** everything else, but ``hidden`` paths and ``emptied`` folders: Landlock only
  allows, so ``/`` is granted child by child, and on the way to each refused path each sibling is
  granted instead of the parent (:func:`partition`); the paths bound back in (``kept``, ``readonly``
  and the writable ones) are granted by rules of their own. A file made later directly in a
  partitioned folder is unreadable; a hidden file reads "Permission denied", not empty;
* **the workers' object store**, not the repository's: a ``moved`` pair whose destination is also
  ``shown`` elsewhere is a folder bubblewrap binds over one it shows read-only (git/worker_objects.py).
  Without mounts the source is granted and git is told (:func:`environment`): ``GIT_OBJECT_DIRECTORY``
  the workers' store, ``GIT_ALTERNATE_OBJECT_DIRECTORIES`` the repository's, which stays read-only;
* **the network** of the host, or only the TCP ports of :func:`connect_ports` (ABI 4: Landlock's
  TCP rules, with a seccomp program that refuses every socket they do not cover: UDP, MPTCP, SCTP, raw,
  packet, and every family but Unix, netlink and IP: process/sandbox.py's :class:`Refusals`);
* **signal** and reach abstract Unix sockets only within its own domain (ABI 6 scopes);
* hold **no capability**, even as root (its launcher empties the bounding set and every other set
  before it runs anything): Landlock's rules leave a root process's CAP_SYS_PTRACE free to read another
  process's memory and environment, and CAP_SYS_MODULE, CAP_SYS_BOOT or CAP_NET_ADMIN to the kernel;
* **a git dir of its own** in place of the repository's, which its rules leave out, for a worker and
  for a detached worktree's process (a resolver, the result gate: its HEAD at the candidate): ``git_env``
  (git/worker_gitdir.py) names it, its index and work tree, for :func:`environment` too.

Given up against bubblewrap: no mount view (no project view; ``readonly`` and
``fixed`` entries inside a writable folder stay writable), and no PID namespace (the process tree is
tracked by its tag and cgroup, as an unconfined worker's).
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .sandbox import (
    _SENDMSG,
    PROBE_TIMEOUT,
    Refusals,
    SandboxNetwork,
    SandboxSpec,
    _existing,
    _folders,
    connect_filter,
    seccomp_program,
)
from .shim import PERL

NAME = "orchestrator-landlock"  # the launcher's first argument: how it shows in ps and in its messages
CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446  # system call numbers, the same on every architecture
_VERSION = 1  # LANDLOCK_CREATE_RULESET_VERSION
_PR_SET_NO_NEW_PRIVS = 38

# File system rights by the ABI that introduced them (LANDLOCK_ACCESS_FS_*).
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1, 2, 4, 8
_ABI1_FS = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
# The rights a rule on a file (not a folder) may hold.
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
BIND_TCP, CONNECT_TCP = 1, 2  # LANDLOCK_ACCESS_NET_* (ABI 4)
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2  # LANDLOCK_SCOPE_* (ABI 6)

# Character devices a program opens for writing: /dev/null (node writes it), /dev/zero and /dev/full,
# its terminal and pseudo-terminals (a CLI's shell tool opens a pty), and POSIX shared memory
# (Python's multiprocessing locks live in /dev/shm; it is the host's, not a private one as in bubblewrap).
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/ptmx", "/dev/pts", "/dev/shm")

# The launcher: argv NAME FS NET SCOPE READ FLAGS PRCTL SECCOMP CAPSET LAST, then options, then "--" and the
# command (run by exec, never by a shell). FS/NET/SCOPE: the handled rights (the ABI's); READ: the
# rights of a read rule; FLAGS: "O_PATH|O_CLOEXEC O_NOFOLLOW"; PRCTL/SECCOMP/CAPSET: the system calls'
# numbers here; LAST: the highest capability (root drops them all). Options: -w PATH (every right
# beneath), -r PATH (read), -p PATH (read, not following a link: a partitioned folder's entry), -c PORT (TCP connect allowed), -s HEX and --seccomp FD (a
# seccomp program, installed after the restriction), -n "FD SENDMSG HEX" (a seccomp program of user
# notifications installed last, its listener sent over descriptor FD with sendmsg, then both closed:
# network/direct.py), -k (die with the parent), -d DIR (chdir). A
# rule's path that does not exist is skipped; a rule on a file keeps the file rights only. Any failure
# starts nothing (exit 126). Loads no module (each would cost every worker milliseconds).
LAUNCHER = (
    "shift; my ($fs, $net, $scope, $read, $flags, $prctl, $sc, $capset, $last) = splice(@ARGV, 0, 9);"
    " my ($open, $nofollow) = split / /, $flags;\n"
    'sub fail { print STDERR "' + NAME + ': $_[0]: $!: the command is not started\\n"; exit 126 }\n'
    "my $attr = $scope ? pack('QQQ', $fs, $net, $scope) : $net ? pack('QQ', $fs, $net) : pack('Q', $fs);\n"
    "my $rs = syscall(444, $attr, length($attr), 0); $rs >= 0 or fail('landlock_create_ruleset');\n"
    "my ($dir, $kill, $guard, @bpf);\n"
    "while (@ARGV && $ARGV[0] ne '--') { my $o = shift @ARGV;\n"
    " if ($o eq '-k') { $kill = 1; next }\n"
    ' my $v = shift @ARGV; defined $v or fail("$o without its value");\n'
    " if ($o eq '-d') { $dir = $v }\n"
    " elsif ($o eq '-n') { $guard = $v }\n"
    " elsif ($o eq '-s') { push @bpf, pack('H*', $v) }\n"
    " elsif ($o eq '--seccomp') { open(my $h, '<&=', $v) or fail(\"seccomp descriptor $v\"); my $b = '';"
    " 1 while sysread($h, $b, 65536, length $b); close $h; push @bpf, $b }\n"
    " elsif ($o eq '-c') { syscall(445, $rs, 2, pack('QQ', 2, $v), 0) == 0 or fail(\"TCP port $v\") }\n"
    " elsif ($o eq '-w' || $o eq '-r' || $o eq '-p') {\n"
    "  my $h; unless (sysopen($h, $v, $open | ($o eq '-p' ? $nofollow : 0))) { next if $! == 2; fail($v) }\n"
    "  my $a = $o eq '-w' ? $fs : $read; $a &= " + str(FILE_RIGHTS) + " unless -d $h;\n"
    "  syscall(445, $rs, 1, pack('QL', $a & $fs, fileno($h)), 0) == 0 or fail(\"the rule for $v\"); close $h }\n"
    ' else { fail("unknown option $o") } }\n'
    "shift @ARGV; @ARGV or fail('no command');\n"
    "syscall($prctl, " + str(_PR_SET_NO_NEW_PRIVS) + ", 1, 0, 0, 0) == 0 or fail('PR_SET_NO_NEW_PRIVS');\n"
    "syscall($prctl, 1, 9, 0, 0, 0) == 0 or fail('PR_SET_PDEATHSIG') if $kill;\n"
    # As root: no capability (as under bubblewrap): Landlock lets CAP_SYS_PTRACE read another process's
    # memory and environment, and leaves CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_NET_ADMIN... unchecked.
    "if ($> == 0) { for my $i (0 .. $last) { my $c = $i + 0;"
    ' syscall($prctl, 24, $c, 0, 0, 0) == 0 or fail("dropping capability $c") }\n'
    " syscall($prctl, 47, 4, 0, 0, 0);\n"  # PR_CAP_AMBIENT_CLEAR_ALL (before Linux 4.3: none to clear)
    " my $head = pack('L i', 0x20080522, 0); my $none = pack('L6', (0) x 6);"
    " syscall($capset, $head, $none) == 0 or fail('capset') }\n"
    "syscall(446, $rs, 0) == 0 or fail('landlock_restrict_self');\n"
    "for my $b (@bpf) { syscall($sc, 1, 0, pack('S x![P] P', length($b) / 8, $b)) == 0 or fail('seccomp') }\n"
    "if (defined $guard) { my ($to, $sendmsg, $hex) = split / /, $guard; my $b = pack('H*', $hex);\n"
    " my $l = syscall($sc, 1, 8, pack('S x![P] P', length($b) / 8, $b)); $l >= 0 or fail('seccomp listener');\n"
    " my $one = 'l'; my $iov = pack('P Q', $one, 1); my $cmsg = pack('Q i i i x4', 20, 1, 1, $l);\n"
    " my $msg = pack('Q L x4 P Q P Q i x4', 0, 0, $iov, 1, $cmsg, length($cmsg), 0);\n"
    " syscall($sendmsg + 0, $to + 0, $msg, 0) == 1 or fail('sending the seccomp listener');\n"
    " for my $fd ($l, $to) { open(my $h, '+<&=', $fd) or fail(\"descriptor $fd\"); close $h } }\n"
    'if (defined $dir) { chdir($dir) or fail("chdir $dir") }\n'
    'exec {$ARGV[0]} @ARGV; fail("cannot run $ARGV[0]");\n'
)
_SYSCALLS = {"x86_64": (157, 317, 126), "aarch64": (167, 277, 91), "riscv64": (167, 277, 91)}  # (prctl, seccomp, capset)


@functools.cache
def last_capability() -> int:
    """The highest capability this kernel knows (each is dropped from a root process's bounding set)."""
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40  # CAP_CHECKPOINT_RESTORE, Linux 5.9; a number the kernel does not know fails the launch


def abi() -> int:
    """The kernel's Landlock ABI (0: none, or not enabled at boot: ``lsm=`` lacks landlock)."""
    if os.uname().machine not in _SYSCALLS:
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return max(0, int(libc.syscall(CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION))))
    except (OSError, AttributeError):
        return 0


def starts(version: int) -> tuple[bool, str]:
    """Whether the launcher confines ``true`` here (Perl present, the kernel lets it); why not."""
    if PERL is None:
        return False, "it needs Perl for its launcher (Debian: perl-base), and there is none"
    spec = SandboxSpec(bwrap="", landlock_abi=version, emptied=("/run",))
    try:
        done = subprocess.run(
            argv(spec, ["true"]), capture_output=True, text=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]


def handled_fs(version: int) -> int:
    """Every file system right ABI ``version`` knows (all handled: what no rule grants is refused)."""
    rights = _ABI1_FS
    for since, right in ((2, REFER), (3, TRUNCATE), (5, IOCTL_DEV)):
        if version >= since:
            rights |= right
    return rights


def connect_ports(spec: SandboxSpec) -> tuple[int, ...] | None:
    """The TCP ports a process of ``spec`` may connect to (None: the network is not restricted):
    with ``allow``, its proxy's port and the forwarded endpoints' (network/egress.py, set by the
    runner that listens on them; none for a process without listeners, such as git's)."""
    if spec.network is SandboxNetwork.NONE:
        return ()
    if spec.network is SandboxNetwork.ALLOW:
        return tuple(spec.egress_ports or ())
    return None


@dataclass
class Rules:
    """What one Landlock domain grants: folders and files beneath which every right (``write``) or
    reading and running (``read``; ``partitioned``: entries of a folder granted one by one, whose
    links are not followed), and the TCP ports it may connect to (None: the network unrestricted)."""

    write: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    partitioned: list[str] = field(default_factory=list)
    ports: tuple[int, ...] | None = None


def rules(spec: SandboxSpec, ports: tuple[int, ...] | None = None) -> Rules:
    """``spec`` as Landlock rules (``ports``: the TCP ports allowed; None: :func:`connect_ports`)."""
    refused = [*_folders(spec.emptied), *(os.path.realpath(p) for p in _existing(spec.hidden))]
    redirected = _redirected(spec)
    moved = [source if (source, destination) == redirected else destination for source, destination in spec.moved]
    write = [*spec.private, *spec.writable, *spec.fixed, *moved, *DEVICES]
    return Rules(
        write=_absolute(write),
        read=_absolute([*spec.kept, *spec.readonly]),
        partitioned=partition("/", refused),
        ports=connect_ports(spec) if ports is None else ports,
    )


def partition(root: str, refused: Sequence[str]) -> list[str]:
    """The paths to grant reading beneath so that everything under ``root`` is readable but
    ``refused`` (real paths): ``root`` itself if nothing refused lies below it, else each of its
    entries, recursively on the way to each refused path (links skipped: a link needs no rule, and
    its target is granted where it lies)."""
    if any(root == r for r in refused):
        return []
    inside = [r for r in refused if r.startswith(root.rstrip("/") + "/")]
    if not inside:
        return [root]
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []  # unreadable: nothing granted beneath it
    out: list[str] = []
    for entry in entries:
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            out += partition(entry.path, inside)
        elif entry.path not in inside:
            out.append(entry.path)
    return out


def argv(spec: SandboxSpec, command: Sequence[str]) -> list[str]:
    """The launcher's argv running ``command`` confined by ``spec``'s rules."""
    if PERL is None:
        raise ValueError("the Landlock sandbox needs Perl for its launcher")
    found = rules(spec)
    version = spec.landlock_abi
    ports = found.ports
    net = BIND_TCP | CONNECT_TCP if ports is not None and version >= 4 else 0
    if ports is not None and version < 4:
        raise ValueError(f"Landlock ABI {version} cannot restrict the network (ABI 4, Linux 6.7, can)")
    scope = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if version >= 6 else 0
    prctl, seccomp, capset = _SYSCALLS.get(os.uname().machine, (0, 0, 0))
    flags = f"{os.O_PATH | os.O_CLOEXEC} {os.O_NOFOLLOW}"
    header = [str(handled_fs(version)), str(net), str(scope), str(READ), flags, str(prctl), str(seccomp), str(capset)]
    header.append(str(last_capability()))
    out = [PERL, "-e", LAUNCHER, NAME, *header]
    for letter, paths in (("-p", found.partitioned), ("-r", found.read), ("-w", found.write)):
        for path in dict.fromkeys(paths):
            out += [letter, path]
    for port in ports or ():
        out += ["-c", str(port)]
    # The sandbox's own program, for everything in it: no reaching into another process, and with the
    # network restricted by its rules no socket they do not cover (UDP, MPTCP, SCTP, raw, packet).
    program = seccomp_program(Refusals(unix=False, network=ports is not None))
    if program is None and ports is not None:
        raise ValueError(f"no seccomp program for {os.uname().machine}: the network cannot be restricted")
    if program is not None:
        out += ["-s", program[2].hex()]
    if spec.connect_guard is not None and ports is not None:  # its connect() calls to network/direct.py
        guard = connect_filter()
        if guard is None:
            raise ValueError(f"no seccomp program for {os.uname().machine}: direct connections cannot be watched")
        out += ["-n", f"{spec.connect_guard} {_SENDMSG[os.uname().machine]} {guard.hex()}"]
    if spec.die_with_parent:
        out.append("-k")
    if spec.chdir:
        out += ["-d", spec.chdir]
    return [*out, "--", *command]


def environment(spec: SandboxSpec) -> dict[str, str]:
    """Where the git of a process of ``spec`` writes objects: the workers' store (git/worker_objects.py),
    reading the repository's as an alternate, which stays read-only; and, for a worker's worktree, its
    own git dir, index and work tree (``git_env``: git/worker_gitdir.py). Empty without them. (Every
    git the process runs, on any repository, uses them.)"""
    found = _redirected(spec)
    if found is None:
        return dict(spec.git_env)
    store, real = found
    return {**dict(spec.git_env), "GIT_OBJECT_DIRECTORY": store, "GIT_ALTERNATE_OBJECT_DIRECTORIES": real}


def _redirected(spec: SandboxSpec) -> tuple[str, str] | None:
    """The ``moved`` pair bound over a folder that is ``shown`` elsewhere (the workers' object store
    over the repository's), which no rule can express: its source is written in its place."""
    shown = {source for source, _ in spec.shown}
    return next(((s, d) for s, d in spec.moved if d in shown), None)


def _absolute(paths: Iterable[str]) -> list[str]:
    """Each path once, if absolute (a relative one would be read against the launcher's cwd)."""
    return [p for p in dict.fromkeys(paths) if os.path.isabs(p)]


__all__ = ["DEVICES", "LAUNCHER", "NAME", "Rules", "abi", "argv", "connect_ports", "environment", "partition", "rules"]
