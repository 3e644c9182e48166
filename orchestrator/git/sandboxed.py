"""Git on a checkout a worker can write, run inside that worker's sandbox.

A worker writes its checkout and its worktree's git dir (the index, ``config.worktree``, ``info/``,
nested repositories), and whatever git reads there acts with the rights of the process git runs in:
an index entry named ``../../config.yaml`` reads a file outside the checkout, a relative
``core.hooksPath``, an fsmonitor in a nested repository's config or a ``python -m`` filter runs code.
So the orchestrator's own git on such a checkout (the commit of the work, a reset before a retry, a
gate's restore, a child job's merge brought into it, a resolution's ``add``) runs in the worker's
sandbox: it reads only what the worker could read, and it writes where the worker's own commits
write (the workers' object store, the worker's view of its branch). The orchestrator then takes
that as it takes a worker's own commits, checked (git/worker_objects.py, git/worker_refs.py).

Unconfined (this machine cannot sandbox, or ``workers.sandbox: off``), the same git runs outside
with the same pins: the worker could run anything itself there, so there is no deputy to fool.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..process import backends
from ..process.sandbox import SandboxSpec, refusals, seccomp_program
from . import invocation, repository
from .repository import GIT_TIMEOUT, GitError

# invocation's pins (no hook, fsmonitor or submodule recursion) and repository's (no gc, no signing, paths as
# written), and no maintenance either: this git is not started through invocation.
PINNED_CONFIG = (*invocation.PINNED_CONFIG, *repository.PINNED_CONFIG, "-c", "maintenance.auto=false")
# What the git gets of the server's environment: no credential of the server's (a filter git runs
# is the worker's code), the user's global config (their filters, git-lfs), no system config.
_KEPT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL")
_PINNED_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **invocation.IDENTITY_ENV}

# The commit of what a worker left, in one sandbox: everything (.gitignore respected), less the
# files the bootstrap copied in (a ``.env``: their paths on stdin), committed if anything is staged.
# A fixed script: the message and the git options are its arguments, never part of its text.
_COMMIT = """
message=$1; spare=$2; shift 2
git "$@" add -A -- . || exit
if [ "$spare" = 1 ]; then git "$@" reset -q --pathspec-from-file=- --pathspec-file-nul || exit; fi
git "$@" commit -q --no-verify --no-gpg-sign -m "$message" >/dev/null && exit 0
status=$?
git "$@" diff --cached --quiet && exit 0  # nothing was staged: nothing to commit
exit $status
"""


_GIT_PATHS = frozenset({"GIT_DIR", "GIT_COMMON_DIR", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"})


@dataclass(frozen=True)
class CheckoutGit:
    """Git on the checkout at ``directory``, in ``sandbox`` (None: unconfined, outside)."""

    directory: Path
    sandbox: SandboxSpec | None

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = GIT_TIMEOUT,
    ) -> subprocess.CompletedProcess[bytes]:
        """``git -C directory <pins> args``; GitError when it fails and ``check``."""
        return self._run(["git", "-C", str(self.directory), *PINNED_CONFIG, *args], stdin, env, check, timeout)

    def text(self, *args: str, check: bool = True) -> str:
        """``run``'s output as text (invocation.text: a name that is not UTF-8 is shown, not an error)."""
        return invocation.text(self.run(*args, check=check).stdout)

    def commit_all(self, message: str, spare: list[str], env: Mapping[str, str]) -> None:
        """Commit everything in the checkout but ``spare`` (paths relative to its top), if anything
        is left to commit; the branch HEAD names moves (in a sandbox: its view of it)."""
        argv = ["sh", "-c", _COMMIT, "sh", message, "1" if spare else "0", "-C", str(self.directory), *PINNED_CONFIG]
        stdin = b"".join(os.fsencode(path) + b"\0" for path in spare) if spare else None
        self._run(argv, stdin, env, True, GIT_TIMEOUT)

    def _run(
        self, argv: list[str], stdin: bytes | None, env: Mapping[str, str] | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        seccomp: int | None = None
        if self.sandbox is not None:
            # Not the CLI's state overlays (git needs none); dies with this server.
            spec = replace(self.sandbox, private=(), die_with_parent=True, chdir=str(self.directory))
            argv = backends.argv(spec, argv)
            seccomp = _worker_filter(spec)
            if seccomp is not None:  # the worker's own program (the shim's): a filter git runs is the worker's code
                at = argv.index("--")
                argv[at:at] = ["--seccomp", str(seccomp)]
        environment = {k: v for k, v in os.environ.items() if k in _KEPT}
        environment.update(_PINNED_ENV)
        environment.update(env or {})
        if self.sandbox is not None and self.sandbox.project is not None:
            # A project view shows the repository's git dir elsewhere (process/sandbox.py ProjectView).
            view = self.sandbox.project
            environment.update({k: view.at(v) for k, v in environment.items() if k in _GIT_PATHS})
        if self.sandbox is not None:  # Landlock: where git writes objects, without a bind (process/landlock.py)
            environment.update(backends.environment(self.sandbox))
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                env=environment,
                timeout=timeout,
                pass_fds=(seccomp,) if seccomp is not None else (),
            )
        except FileNotFoundError as exc:
            raise GitError(f"cannot run git on {self.directory}: {exc}") from None
        except subprocess.TimeoutExpired:
            raise GitError(f"git {' '.join(argv[-3:])} on {self.directory} took more than {timeout:g}s") from None
        else:
            if seccomp is not None and done.returncode != 0 and b"seccomp" in done.stderr:
                done.stderr += _described(seccomp, spec).encode()
        finally:
            if seccomp is not None:
                os.close(seccomp)
        if check and done.returncode != 0:
            where = " in the worker's sandbox" if self.sandbox is not None else ""
            raise GitError(f"{_named(argv)}{where} failed (exit {done.returncode}): {invocation.text(done.stderr).strip()[:500]}")
        return done


def _worker_filter(spec: SandboxSpec) -> int | None:
    """A descriptor holding the worker's seccomp program (process/sandbox.py: no reaching into another
    process; ``socket(AF_UNIX)`` refused unless the setting opens it), for the backend's ``--seccomp``;
    None where there is no program here."""
    found = seccomp_program(refusals(spec))
    if found is None:
        return None
    fd = os.memfd_create(_MEMFD, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        if os.write(fd, found[2]) != len(found[2]):
            raise GitError("the worker's seccomp program could not be written whole")
        # Sealed: a write through a stale descriptor number elsewhere in this process fails there
        # (EPERM) instead of cutting the program bubblewrap reads short.
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _described(fd: int, spec: SandboxSpec) -> str:
    """What the ``--seccomp`` descriptor held after bubblewrap refused it, for the error: whose file
    the number is now, where its offset stands and whether its bytes are the program's. bubblewrap
    reads from the descriptor's offset to its end, so a program read short is another file at that
    number (closed by a thread that did not own it, and reused), or this memfd read or moved meanwhile."""
    found = seccomp_program(refusals(spec))
    program = found[2] if found is not None else b""
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:
        name = f"unreadable ({exc.strerror})"
    try:
        offset, size = os.lseek(fd, 0, os.SEEK_CUR), os.fstat(fd).st_size
        same = os.pread(fd, len(program) + 1, 0) == program
    except OSError as exc:
        return f"\n(its --seccomp descriptor {fd}, {name}: {exc.strerror})"
    ours = name.startswith(f"/memfd:{_MEMFD} ")
    return (
        f"\n(its --seccomp descriptor {fd}: {name if not ours else 'the program memfd'}, at offset {offset} of {size} "
        f"bytes, {'the program' if same else 'not the program'} of {len(program)} bytes)"
    )


_MEMFD = "orchestrator-seccomp"  # the program's memfd, by name (``_described`` tells it from another file)


def _named(argv: list[str]) -> str:
    """The git subcommand an argv runs, for a message (its pins and the sandbox's options left out)."""
    if "sh" in argv:
        return "git commit of the checkout"
    rest = argv[argv.index("git") :] if "git" in argv else argv
    words = [a for a in rest[1:] if not a.startswith("-") and "=" not in a and "/" not in a]
    return "git " + " ".join(words[:2])


__all__ = ["PINNED_CONFIG", "CheckoutGit"]
