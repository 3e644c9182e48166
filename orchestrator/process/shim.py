"""The shim every worker runs under (like containerd's per-container shim or podman's conmon): its
script, the exit file it writes, and how a restarted server finds a shim still running.

A worker's shim lives in the worker's session (or its sandbox), not the server's, so a worker's
result survives the server being killed; process/runner.py starts it, this module says what it is.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import protocol
from . import procscan
from .procscan import process_start_id

# The shim records the worker's true wait status in its exit file: "exit N" (it exited with N)
# or "signal S" (killed by signal S). A shell cannot tell those apart ($? is 128+S for a signal
# death and also for an exit with 128+S: the Gemini CLI exits 147 for an HTTP 403), so the shim
# is a few lines of Perl (Essential on Debian as perl-base, shipped with macOS; it starts in
# about 2 ms, Python in 16), which gets the real status from waitpid. It re-raises nothing and
# exits 128+S for a signal death (what a shell would report); the runner reads the true status
# from the exit file. Its handlers are no-op subs, never IGNORE: a caught signal is reset to its
# default by exec, so the same signal, sent to the whole group, still reaches the worker, while
# the shim lives on to record how the worker ended. argv: SHIM_NAME, the exit file, the worker's
# argv (run by exec, never parsed by a shell). The script loads no module: each would cost every
# worker milliseconds. (Perl retries a waitpid that a caught signal interrupts by itself; the loop
# covers PERL_SIGNALS=unsafe in the user's environment.)
#
# LIFELINE (a cluster node's sandboxed attempts, and any a node starts by a fork of its own: an unconfined
# one started by the node's supervisor has no shim, the supervisor holds its lifeline): the read end of a pipe whose write end only the spawning
# process holds; it reads as closed once every thread of that process is gone. Parent-death
# signals chain a node's processes to it (node, RQ worker running the attempt, bubblewrap's
# launcher, its namespace's init, the shim, the worker), but each link is set by the child after it
# starts, and the kernel sends it when the parent's forking thread ends, while the process's other
# threads may still hold its files: a parent killed in between leaves the rest running with no
# parent to die with, a worker outliving its node. bubblewrap's init sets its own only after it has
# forked the shim, so the whole sandbox setup is such a window (the node-death e2e test's kill lands
# there: its attempt has just told the server it started). So the shim looks at the lifeline before
# starting the worker (already closed: the worker is never started, and no exit file says it ran),
# and then watches it while the worker runs: once it reads as closed, the shim kills its process
# group (the worker with it) and writes no exit file, whichever link failed to fire.
#
# SECCOMP (a sandboxed worker): prctl's and seccomp's system call numbers and a BPF program
# (process/sandbox.py's worker_filter: Unix sockets refused unless workers.sandbox_unix_sockets, no
# ptrace, process_vm_* nor pidfd_getfd), which the shim installs on itself (PR_SET_NO_NEW_PRIVS, then
# SECCOMP_SET_MODE_FILTER) once its bridge is forked and before it forks the worker: in the sandbox, so
# nothing outside is filtered, before any of the worker's code runs, and over the shim too (unfiltered,
# a worker attached to it, or wrote its memory through /proc, and made the sockets refused to itself).
# The bridge, which needs its Unix sockets, is made not dumpable instead.
#
# GUARD (a sandboxed worker under bubblewrap with a restricted network: sandbox.connect_guard_words):
# "FD PRCTL SECCOMP SENDMSG HEX". The shim's child installs the program (after SECCOMP) with a listener
# (SECCOMP_FILTER_FLAG_NEW_LISTENER), sends the listener over descriptor FD (inherited through
# bubblewrap) to the orchestrator, which decides each connect() of the worker (network/direct.py),
# and closes both before the exec: no process of the worker holds them.
#
# Perl starts in its own environment (SHIM_START_ENV): no PERL5OPT (a user's -M would load a module
# into the shim, or fail it), LC_ALL=C (else it reads ~13 locale files at start: ~0.3 ms of the
# ~2 ms it costs per worker) and a fixed hash seed (no /dev/urandom reads; the shim hashes nothing
# that comes from outside). The runner keeps the worker's own values of these under SHIM_STASH +
# name, and the shim puts them back (or removes what the worker did not have) before the exec.
#
# DEADLINE ("EPOCH GRACE", whole seconds; the perl shim's only): the backstop for the attempt's timeout
# while no server watches it (stopped, killed, restarting); the supervisor keeps the same for the
# unconfined workers it runs without a shim. A server stops an attempt at its timeout itself; this
# deadline (a Deadline, below) comes kill_grace and a margin later, so a live server's ladder has
# ended the worker by then. Past it with the worker still running, the shim sends SIGTERM to its
# process group (itself included: its handler is a no-op), then SIGKILL to the worker GRACE seconds
# later, and writes "deadline shim" as its exit file's second line; once the worker has ended, what
# is left of its group is killed with the shim (``kill 9, 0``, after the exit file is written). Its
# clock is alarm(): the blocking wait stays as it is (Perl runs the handler and waits on), the
# lifeline's select sees EINTR and goes on. ALRM keeps a handler (never IGNORE), so a SIGALRM sent to
# the group still reaches the worker; one that comes early finds the deadline not yet passed and sets
# the alarm again.
#
# STARTING: a signal sent to the group before the worker's exec would be caught by those handlers (in
# the shim, or in its fork's child, which inherits them until the exec) and lost: a terminate landing
# while the worker starts left it running until the ladder's SIGKILL. The handlers remember the last
# signal caught, and the child, once it has set the signals back to their defaults (Perl dispatches a
# signal caught before then to the old handler as it does), re-raises it: the worker ends by it as
# if it had started. (The shell shim cannot: a signal in its fork's window is lost there.)
SHIM_SIGNALS = "HUP INT QUIT TERM USR1 USR2 ALRM PIPE"
# BRIDGE (workers.sandbox_network: allow): "ADDRESS:PORT=SOCKET ..." (network/egress.py). In a network
# namespace of its own the worker's only way out is the orchestrator's proxy, listening on Unix
# sockets bound into the sandbox. The shim listens on each ADDRESS:PORT of the namespace's loopback
# (before the worker starts: it never finds the port closed) and forks the bridge, which accepts and
# forks once per connection to carry its bytes to SOCKET and back (half-closes passed on). It runs
# outside the worker's seccomp filter (its connect() to the socket is the one AF_UNIX use allowed), not dumpable, in
# a process group of its own, which the shim kills once the worker has ended: bubblewrap's init
# waits for every process of the namespace, so a bridge left running would keep the sandbox open. Builtins only, numbers for the constants
# (AF_INET 2, AF_UNIX 1, SOCK_STREAM 1, SOL_SOCKET 1, SO_REUSEADDR 2, IPPROTO_TCP 6, TCP_NODELAY 1):
# no module is loaded.
BRIDGE = (
    "sub pump { my ($a, $b) = @_; my %e; while (keys(%e) < 2) { my $r = ''; for ($a, $b) { vec($r, fileno($_), 1) = 1 unless $e{$_} }\n"
    " my $n = select($r, undef, undef, undef); if ($n < 0) { next if $! == 4; return }\n"
    " for ([$a, $b], [$b, $a]) { my ($f, $t) = @$_; next if $e{$f} || !vec($r, fileno($f), 1);\n"
    "  my $got = sysread($f, my $d, 65536); if (!$got) { next if !defined $got && $! == 4; $e{$f} = 1; shutdown($t, 1); next }\n"
    "  my $o = 0; while ($o < $got) { my $w = syswrite($t, $d, $got - $o, $o); if (!defined $w) { next if $! == 4; return } $o += $w } } } }\n"
    "my $k; if (defined $x) { my @l;\n"
    " for (split / /, $x) { my ($h, $q, $u) = /^([0-9.]+):(\\d+)=(.+)$/ or next; my $s;\n"
    "  unless (socket($s, 2, 1, 0) && setsockopt($s, 1, 2, pack('i', 1)) && bind($s, pack('S n C4 x8', 2, $q, split(/\\./, $h))) && listen($s, 128)) {\n"
    # The proxy's own port (the first): no way out without it, so no worker; an endpoint's: the rest serve.
    '   if (!@l) { print STDERR "orchestrator-shim: cannot listen on $h:$q in the sandbox: $!: the worker is not started\\n";\n'
    "    my $o; if (open($o, '+<', $f) || open($o, '>', $f)) { print $o \"exit 126\\n\"; truncate($o, tell($o)); close $o } exit 126 }\n"
    '   print STDERR "orchestrator-shim: cannot listen on $h:$q in the sandbox: $!: reach it through HTTP_PROXY\\n"; next }\n'
    "  push @l, [$s, $u] }\n"
    ' $k = fork; defined $k or die "orchestrator-shim: cannot fork: $!\\n";\n'
    # Its group made by both sides (the child may not have run yet when a short worker has ended and
    # the group is killed: a bridge that set its group only after that outlived its worker).
    " setpgrp($k, $k) if $k;\n"
    # Not dumpable (prctl PR_SET_DUMPABLE 0): the worker, without capabilities, cannot reach into it
    # (/proc/PID/mem, ptrace, pidfd_getfd), while it keeps the Unix sockets the worker's filter refuses.
    " if (!$k) { setpgrp(0, 0); syscall((split / /, $u)[0] + 0, 4, 0, 0, 0, 0) if $u;\n"
    "  $SIG{CHLD} = 'IGNORE'; my $m = ''; vec($m, fileno($_->[0]), 1) = 1 for @l;\n"
    "  while (1) { my $r = $m; next if select($r, undef, undef, undef) < 0;\n"
    "   for my $e (@l) { next unless vec($r, fileno($e->[0]), 1); my $c; accept($c, $e->[0]) or next; my $f = fork;\n"
    "    if (defined $f && !$f) { close $_->[0] for @l; setsockopt($c, 6, 1, pack('i', 1)); my $v;\n"
    "     exit 0 unless socket($v, 1, 1, 0) && connect($v, pack('S a*', 1, $e->[1])); pump($c, $v); exit 0 }\n"
    "    close $c } } }\n"
    " close $_->[0] for @l }\n"
)

SHIM_START_ENV: dict[str, str | None] = {"PERL5OPT": None, "LC_ALL": "C", "PERL_HASH_SEED": "0"}
# The parts of the script that run only with their variable set (the keys after SHIM_STASH). Perl
# compiles all of a script at each start, about 1 ms of CPU here for the parts a shim without a
# sandbox's network or filter never runs (a node's attempt, a sandbox with the host's network):
# ``perl_shim`` leaves out each part whose variable the shim's start does not set, a part that
# would not have run.
SHIM_PARTS = ("PDEATHSIG", "SECCOMP", "GUARD", "DEADLINE", "LIFELINE", "BRIDGE")


@functools.lru_cache(maxsize=64)
def perl_shim(parts: frozenset[str] = frozenset(SHIM_PARTS)) -> str:
    """The perl shim's script with the parts ``parts`` names (SHIM_PARTS; ``shim_parts`` of the
    environment it starts in): all of them, by default."""

    def part(name: str, text: str, instead: str = "") -> str:
        return text if name in parts else instead

    return (
        "shift; my $f = shift;\n"
        f"my $j; $SIG{{$_}} = sub {{ $j = $_[0] }} for qw({SHIM_SIGNALS});\n"  # $j: STARTING above
        f"for (qw({' '.join(SHIM_START_ENV)})) {{ my $k = '{protocol.SHIM_STASH}' . $_;"
        " if (exists $ENV{$k}) { $ENV{$_} = delete $ENV{$k} } else { delete $ENV{$_} } }\n"
        f"my $d = delete $ENV{{'{protocol.SHIM_STASH}PDEATHSIG'}};\n"  # "SYSCALL SIGNAL": a node's worker dies with its shim
        f"my $u = delete $ENV{{'{protocol.SHIM_STASH}SECCOMP'}};\n"  # "PRCTL SECCOMP HEX": sandbox.worker_filter
        f"my $q = delete $ENV{{'{protocol.SHIM_STASH}GUARD'}};\n"  # "FD PRCTL SECCOMP SENDMSG HEX": sandbox.connect_guard_words
        f"my $t = delete $ENV{{'{protocol.SHIM_STASH}DEADLINE'}}; my ($w, $z) = (0, 0);\n"  # "EPOCH GRACE" (DEADLINE above)
        # A node's lifeline (LIFELINE above): readable with nothing written means its writer is gone.
        f"my $l = delete $ENV{{'{protocol.SHIM_STASH}LIFELINE'}}; my ($g, $m);\n"
        + part(
            "LIFELINE",
            "if (defined $l) { $m = ''; vec($m, $l, 1) = 1; my $r = $m;"
            ' if (select($r, undef, undef, 0) > 0) { print STDERR "orchestrator-shim: the node process that started it is gone:'
            ' the worker is not started\\n"; exit 125 }'
            " open($g, '<&=', $l) or undef $g; $SIG{CHLD} = sub {} }\n",  # a handler: the worker's end interrupts the select below
        )
        # A sandbox without a network of its own (BRIDGE below): the bridge listens before the worker starts.
        + f"my $x = delete $ENV{{'{protocol.SHIM_STASH}BRIDGE'}};\n"
        + part("BRIDGE", BRIDGE, "my $k;\n")
        # The worker's seccomp filter (SECCOMP above), on the shim itself once its bridge is forked: it holds
        # for the worker and everything it starts, and for the shim it could otherwise attach to. A filter
        # that cannot be installed starts no worker.
        + part(
            "SECCOMP",
            "if ($u) { my ($n, $c, $h) = split / /, $u; my $b = pack('H*', $h);"
            " unless (syscall($n + 0, 38, 1, 0, 0, 0) == 0 && syscall($c + 0, 1, 0, pack('S x![P] P', length($b) / 8, $b)) == 0) {"
            ' print STDERR "orchestrator-shim: cannot install the sandbox seccomp filter: $!: the worker is not started\\n";'
            " kill 9, -$k if $k; my $o; if (open($o, '+<', $f) || open($o, '>', $f)) { print $o \"exit 126\\n\"; truncate($o, tell($o)); close $o }"
            " exit 126 } }\n",
        )
        + "my $p = fork;\n"
        'defined $p or die "orchestrator-shim: cannot fork: $!\\n";\n'
        + part(
            "PDEATHSIG", "if (!$p && $d) { my ($n, $s) = split / /, $d; syscall($n + 0, 1, $s + 0) }\n"
        )  # prctl(PR_SET_PDEATHSIG, s)
        # Its connect() calls handed to the orchestrator (GUARD below): the filter's listener sent out, closed here.
        + part(
            "GUARD",
            "if (!$p && $q) { my ($o, $n, $c, $s, $h) = split / /, $q; my $b = pack('H*', $h); my $one = 'l'; my ($iov, $cm, $msg);\n"
            " my $k = syscall($n + 0, 38, 1, 0, 0, 0) == 0 ? syscall($c + 0, 1, 8, pack('S x![P] P', length($b) / 8, $b)) : -1;\n"
            " if ($k >= 0) { $iov = pack('P Q', $one, 1); $cm = pack('Q i i i x4', 20, 1, 1, $k); $msg = pack('Q L x4 P Q P Q i x4', 0, 0, $iov, 1, $cm, 24, 0) }\n"
            " unless ($k >= 0 && syscall($s + 0, $o + 0, $msg, 0) == 1) {"
            ' print STDERR "orchestrator-shim: cannot hand its connections to the orchestrator: $!: the worker is not started\\n"; exit 126 }\n'
            " for my $e ($k, $o) { open(my $y, '+<&=', $e) and close $y } }\n",
        )
        # STARTING above: the group's signals back to their defaults, and one caught since the shim began re-raised.
        + f"if (!$p) {{ close $g if $g; $SIG{{$_}} = 'DEFAULT' for qw({SHIM_SIGNALS}); kill $j, $$ if $j;"
        ' exec {$ARGV[0]} @ARGV; print STDERR "orchestrator-shim: cannot run $ARGV[0]: $!\\n"; exit 127 }\n'
        # The deadline's alarm (DEADLINE above; $z: 1 once SIGTERM went out, 2 once SIGKILL did).
        + part(
            "DEADLINE",
            "if (defined $t) { ($t, $w) = split / /, $t; $SIG{ALRM} = sub { my $n = $t - time; if ($n > 0) { alarm($n); return }\n"
            " if ($z) { $z = 2; kill 9, $p; return } $z = 1; $t = time + $w;\n"
            " print STDERR \"orchestrator-shim: the attempt's deadline passed with no server stopping it: SIGTERM to the worker,"
            ' SIGKILL in ${w}s\\n"; kill 15, 0; alarm($w > 0 ? $w : 1) }; $SIG{ALRM}->() }\n',
        )
        # A lifeline is watched while the worker runs (waitpid WNOHANG = 1; the timeout covers a worker
        # ending between the two calls): its end kills the shim's process group, the worker with it.
        # (A select that fails otherwise than EINTR falls back to the plain wait: no busy loop.)
        + part(
            "LIFELINE",
            "if ($g) { while (waitpid($p, 1) == 0) { my $r = $m; my $n = select($r, undef, undef, 0.25); if ($n > 0) {"
            ' print STDERR "orchestrator-shim: the node process that started it is gone: the worker is killed\\n"; kill 9, 0 }'
            " elsif ($n < 0 && $! != 4) { 1 while waitpid($p, 0) < 0 && $! == 4; last } } }\nelse ",
        )
        + "{ 1 while waitpid($p, 0) < 0 && $! == 4 }\n"  # EINTR (4 on Linux, macOS, the BSDs): $!{EINTR} would load Errno.pm, 3 ms
        # The bridge's group (it and its connections) ends with the worker, and is gone before the shim
        # ends: bubblewrap's launcher returns once the shim has, and a connection still dying then was a
        # live process of the worker's tag after its sandbox had ended. The shim, a child subreaper by
        # then (prctl 36), is given the bridge's orphans when the bridge dies, and reaps the whole group.
        + "my $s = $?; alarm(0) if defined $t;\n"
        "if ($k) { syscall((split / /, $u)[0] + 0, 36, 1, 0, 0, 0) if $u; kill 9, -$k; 1 while waitpid(-$k, 0) > 0 || $! == 4 }\n"
        "exit 255 if $s == -1;\n"
        "my $sig = $s & 127;\n"
        # Over the room reserved at its spawn (reserve_exit_file), then cut to the line: no new block
        # is needed, so the status is written on a full disk too.
        "my $h; if (open($h, '+<', $f) || open($h, '>', $f)) {"
        ' print $h ($sig ? "signal $sig\\n" : \'exit \' . ($s >> 8) . "\\n"), ($z ? "deadline shim\\n" : \'\');'
        " truncate($h, tell($h)); close $h }\n"
        "kill 9, 0 if $z;\n"  # stopped at its deadline: the rest of its group ends with the shim (DEADLINE above)
        "exit($sig ? 128 + $sig : $s >> 8);\n"
    )


PERL_SHIM = perl_shim()  # every part: what tests and benchmarks start


def shim_parts(env: dict[str, str]) -> frozenset[str]:
    """The parts (SHIM_PARTS) a shim starting with ``env`` runs: those whose variable it sets."""
    return frozenset(name for name in SHIM_PARTS if protocol.SHIM_STASH + name in env)


# Without Perl: a shell shim, which records $? as an exit code and never signals itself. There a
# worker killed by signal N reads as "exited with 128+N" (the shell cannot know better).
# (``1<>`` writes over the reserved room without truncating it: the padding after the line stays.)
SHIM_SCRIPT = f'f=$1; shift; trap : {SHIM_SIGNALS}; "$@"; r=$?; printf \'exit %s\\n\' "$r" 1<>"$f"; exit "$r"'
SHIM_NAME = "orchestrator-shim"  # the shim's first argument: how it shows in ps, and how a restarted server knows it
SHELL = "/bin/sh"


def find_perl() -> str | None:
    """The Perl the shim runs under (the system's first: a user's perlbrew on PATH may be slow
    to start), or None when the machine has none (then the shell shim is used)."""
    for candidate in ("/usr/bin/perl", shutil.which("perl")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


PERL = find_perl()


# An exit file is made at its attempt's spawn holding this much room (newlines, which read as "no
# status yet"): its writer overwrites it in place (no block to allocate: a workspace whose disk a
# worker filled still gets its status), and a restart that finds the file knows the attempt began.
# (Room for the longest it holds: "signal 15" and "deadline supervisor", DEADLINE_MARK's line.)
EXIT_ROOM = b"\n" * 32
# The exit file's second line when the worker's keeper stopped it at its Deadline (no server had):
# this word and which keeper, a key of DEADLINE_KEEPERS.
DEADLINE_MARK = "deadline"
DEADLINE_KEEPERS = {"shim": "its shim", "supervisor": "its workspace's supervisor"}


@dataclass(frozen=True)
class Deadline:
    """When an attempt's keeper stops it if no server has (DEADLINE in the comment above): at ``at``
    (seconds since the epoch) SIGTERM to its process group, SIGKILL ``grace`` seconds later. The
    engine sets it kill_grace and a margin after its own timeout: the backstop for a server that is
    stopped, killed or restarting, never the first to act for a live one."""

    at: float
    grace: float

    def shim_value(self) -> str:
        """The perl shim's form: whole seconds (its clock is ``time`` and ``alarm``), never early."""
        return f"{math.ceil(self.at)} {math.ceil(self.grace)}"


@dataclass(frozen=True)
class ExitStatus:
    """What an exit file says: the worker's status (Popen's convention: negative, killed by that
    signal), and who stopped it at its deadline, in words (DEADLINE_MARK; None: nothing did)."""

    code: int
    stopped_by: str | None = None
    written: float | None = field(default=None, compare=False)  # the file's time, read with it (None: not known)


def reserve_exit_file(path: Path) -> None:
    """Make ``path`` an attempt's exit file holding no status yet and the room for one (EXIT_ROOM).
    Raises OSError (ENOSPC on a full disk) when it cannot, leaving no file (a restart would take one
    for an attempt that began): the attempt must not start without it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        if os.write(fd, EXIT_ROOM) != len(EXIT_ROOM):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    except OSError:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


@dataclass
class FoundAttempt:
    """A live attempt found by its tag (its shim, or its worker under the supervisor), e.g. one
    spawned just before a server was killed, and the file its status goes to."""

    pid: int
    tag: str
    start_id: str | None
    exit_file: Path
    attempt: int | None


def find_shims(tag_prefix: str) -> list[FoundAttempt]:
    """Live shims whose tag starts with ``tag_prefix``: the process table is the truth about
    what runs, whatever the records managed to say before a crash."""
    found = []
    for proc in procscan.tagged_processes(lambda tag: tag.startswith(tag_prefix), details=True):
        pid, tag, env, argv = proc.pid, proc.tag, proc.environ or {}, proc.argv or []
        if len(argv) < 6 or argv[1] not in ("-c", "-e") or argv[3] != SHIM_NAME:
            continue  # a worker or its descendant, not the shim (of this server or an earlier one)
        attempt = env.get(protocol.ATTEMPT, "")
        found.append(
            FoundAttempt(
                pid=pid,
                tag=tag,
                start_id=process_start_id(pid),
                exit_file=Path(argv[4]),
                attempt=int(attempt) if attempt.isdigit() else None,
            )
        )
    return found


def read_exit_file(path: Path) -> int | None:
    """The status a shim recorded (``read_exit``'s code), or None when there is none."""
    found = read_exit(path)
    return None if found is None else found.code


def read_exit(path: Path) -> ExitStatus | None:
    """The status a shim recorded, in Popen's convention (negative: killed by that signal);
    None when there is none or it is incomplete (the shim was killed while writing it), or the file
    holds only the room its spawn reserved (EXIT_ROOM: the attempt began, and has told nothing yet).

    The one reader of exit files. ``exit N`` / ``signal S`` is what the shim writes, with a second
    line ``deadline shim`` (DEADLINE_MARK) when it stopped the worker at its deadline (files from
    before have none); a
    bare number is a file from an earlier server's shell shim, which wrote ``$?`` and re-raised
    129-192 on itself as signals: it reads as that server meant it. (A bare number could not
    be the new format: "147" meant SIGSTOP then and would mean exit 147 now.)"""
    try:
        data, written = procscan.read_small_stamped(path)
        text = data.decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.rstrip("\n").split("\n")  # (the shell shim leaves what it did not write over of the room)
    mark, _, keeper = lines[1].partition(" ") if len(lines) == 2 else (DEADLINE_MARK, "", "")
    if not text.endswith("\n") or not lines[0] or len(lines) > 2 or mark != DEADLINE_MARK:
        return None
    if len(lines) == 2 and keeper not in DEADLINE_KEEPERS:
        return None
    word, _, number = lines[0].partition(" ")
    if not number:
        word, number = "old", word
    if not number.isdigit() or len(number) > 3 or int(number) > 255:
        return None
    code = int(number)
    if word == "exit":
        found = code
    elif word == "signal" and code > 0:
        found = -code
    elif word == "old":
        found = -(code - 128) if 128 < code < 193 else code
    else:
        return None
    return ExitStatus(found, DEADLINE_KEEPERS[keeper] if len(lines) == 2 else None, written)
